//! What the control plane puts around its store: encryption at rest (`--secrets-encryption`,
//! `--encryption-provider-config`) and TLS to etcd (`--etcd-cafile`, `--etcd-certfile`,
//! `--etcd-keyfile`, kube-apiserver's flag names).

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context, bail};
use keelson_store::{EncryptedStore, EncryptionConfig, EtcdTls, Store};

use crate::args::Args;

/// How long the first request to etcd may take before the control plane gives up.
const ETCD_PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where `--secrets-encryption` keeps its key: next to the CA, since the control planes of one
/// cluster share `pki/` (and must share this key to read each other's Secrets).
pub(crate) fn generated_config_path(args: &Args) -> PathBuf {
    args.data_dir.join("pki").join("encryption-config.yaml")
}

/// The encryption configuration the flags ask for:
/// - `--encryption-provider-config FILE`: that file;
/// - `--secrets-encryption` (the default): `DATA_DIR/pki/encryption-config.yaml`, written with
///   one new random key (mode 0600) when missing, also in a data directory that has state
///   already (its Secrets stay readable and are encrypted when next written);
/// - `--secrets-encryption=false`: that file's keys for reading only, if it exists; else none.
pub(crate) fn encryption_config(args: &Args) -> anyhow::Result<EncryptionConfig> {
    if let Some(path) = &args.encryption_provider_config {
        return EncryptionConfig::load(path)
            .with_context(|| format!("--encryption-provider-config {}", path.display()));
    }
    let path = generated_config_path(args);
    if !args.secrets_encryption {
        return Ok(if path.is_file() {
            EncryptionConfig::load(&path)?.decrypt_only()
        } else {
            EncryptionConfig::default()
        });
    }
    if !path.exists() {
        let text = EncryptionConfig::generate_yaml()?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        crate::pki::write_private(&path, text.as_bytes())?;
        tracing::info!(path = %path.display(), "wrote a new key for encrypting Secrets");
    }
    Ok(EncryptionConfig::load(&path)?)
}

/// `store` behind the encryption configuration of the flags.
pub(crate) fn encrypt(args: &Args, store: Arc<dyn Store>) -> anyhow::Result<Arc<dyn Store>> {
    let config = encryption_config(args)?;
    tracing::info!(config = %config.summary(), "encryption at rest");
    Ok(Arc::new(EncryptedStore::new(store, Arc::new(config))))
}

/// TLS to etcd from `--etcd-cafile`, `--etcd-certfile` and `--etcd-keyfile`; `None` for plain
/// `http://` endpoints. Mixed or inconsistent settings are refused before any connection.
pub(crate) fn etcd_tls(args: &Args) -> anyhow::Result<Option<EtcdTls>> {
    let https = args
        .etcd_endpoints
        .iter()
        .filter(|e| e.starts_with("https://"))
        .count();
    let read = |path: &PathBuf, flag: &str| {
        std::fs::read(path).with_context(|| format!("cannot read {flag} {}", path.display()))
    };
    let Some(ca) = &args.etcd_cafile else {
        if https > 0 {
            bail!(
                "the etcd endpoints use https: give --etcd-cafile (the CA of etcd's serving \
                 certificates), and --etcd-certfile and --etcd-keyfile if etcd checks clients"
            );
        }
        if args.etcd_certfile.is_some() {
            bail!("--etcd-certfile needs --etcd-cafile (the CA of etcd's serving certificates)");
        }
        return Ok(None);
    };
    if https != args.etcd_endpoints.len() {
        bail!(
            "--etcd-cafile needs https:// etcd endpoints, not {:?}",
            args.etcd_endpoints
        );
    }
    let client = match (&args.etcd_certfile, &args.etcd_keyfile) {
        (Some(cert), Some(key)) => {
            Some((read(cert, "--etcd-certfile")?, read(key, "--etcd-keyfile")?))
        }
        _ => None,
    };
    Ok(Some(EtcdTls {
        ca_pem: read(ca, "--etcd-cafile")?,
        client,
    }))
}

/// Fails with one line unless etcd answers a request within [`ETCD_PROBE_TIMEOUT`]: etcd-client
/// connects lazily, so a refused TLS handshake (no client certificate, the wrong CA) shows
/// only at the first request.
pub(crate) async fn probe_etcd(
    store: &dyn Store,
    endpoints: &[String],
    tls: Option<&EtcdTls>,
) -> anyhow::Result<()> {
    let without_certificate = if tls.is_some_and(|tls| tls.client.is_none()) {
        " without a client certificate (--etcd-certfile, --etcd-keyfile)"
    } else {
        ""
    };
    match tokio::time::timeout(ETCD_PROBE_TIMEOUT, store.current_revision()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(anyhow::Error::new(error).context(format!(
            "cannot use etcd at {endpoints:?}{without_certificate}"
        ))),
        Err(_) => bail!(
            "cannot use etcd at {endpoints:?}: no answer within {} s",
            ETCD_PROBE_TIMEOUT.as_secs()
        ),
    }
}
