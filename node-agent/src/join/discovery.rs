//! Token discovery as kubeadm does it (`cmd/kubeadm/app/discovery/token`): read the
//! `cluster-info` ConfigMap of `kube-public` without verifying the server (anyone may read it),
//! check that its `kubeconfig` is signed with the bootstrap token (`jws-kubeconfig-<token id>`),
//! that the CA it names has the hash given with `--ca-cert-hash`, then read it again over TLS
//! trusting only that CA and check that both reads agree.

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use k8s_openapi::api::core::v1::ConfigMap;
use keelson_api::bootstrap_token::{
    self, BootstrapToken, BootstrapTokenError, CLUSTER_INFO, JWS_PREFIX, KUBE_PUBLIC,
};

/// How long one discovery request may take to connect or to answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// What discovery established about the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterInfo {
    /// The cluster CA bundle, PEM, as cluster-info carries it.
    pub ca_pem: Vec<u8>,
    /// The same certificates, DER.
    pub ca_der: Vec<Vec<u8>>,
    /// The `kubeconfig` value the checks were made on.
    pub kubeconfig: String,
}

/// Parses `--ca-cert-hash`: `sha256:` and 64 hex digits (either case), returned lower-case.
pub fn parse_ca_cert_hash(text: &str) -> Result<String, super::FlagError> {
    let hex = text.strip_prefix("sha256:").unwrap_or("");
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(super::FlagError::CaCertHash {
            text: text.to_owned(),
        });
    }
    Ok(format!("sha256:{}", hex.to_ascii_lowercase()))
}

/// Checks a cluster-info ConfigMap read from `server`: signed by `token`, a kubeconfig with
/// exactly one cluster whose CA matches `ca_cert_hash`.
pub fn verify(
    server: &str,
    config_map: &ConfigMap,
    token: &BootstrapToken,
    ca_cert_hash: &str,
) -> anyhow::Result<ClusterInfo> {
    let data = config_map.data.clone().unwrap_or_default();
    let kubeconfig = data.get("kubeconfig").ok_or_else(|| {
        anyhow!("{server}: the {KUBE_PUBLIC}/{CLUSTER_INFO} ConfigMap has no `kubeconfig` key")
    })?;
    let signature = data
        .get(&format!("{JWS_PREFIX}{}", token.id))
        .ok_or_else(|| {
            anyhow!(
                "the token ID is not known to {server}: no signature in {CLUSTER_INFO} \
             (expired or deleted token?)"
            )
        })?;
    bootstrap_token::verify_detached(token, kubeconfig.as_bytes(), signature).map_err(|error| {
        match error {
            BootstrapTokenError::SignatureMismatch { .. } => anyhow!(
                "{CLUSTER_INFO} from {server} is not signed with this token's secret \
                 (wrong secret, or cluster-info was altered on the way)"
            ),
            other => anyhow!("{CLUSTER_INFO} from {server}: {other}"),
        }
    })?;
    let parsed = kube::config::Kubeconfig::from_yaml(kubeconfig)
        .map_err(|e| anyhow!("{CLUSTER_INFO} from {server}: its kubeconfig: {e}"))?;
    let [named] = parsed.clusters.as_slice() else {
        bail!(
            "{CLUSTER_INFO} from {server}: its kubeconfig names {} clusters, not one",
            parsed.clusters.len()
        );
    };
    let ca_b64 = named
        .cluster
        .as_ref()
        .and_then(|c| c.certificate_authority_data.as_deref())
        .ok_or_else(|| {
            anyhow!(
                "{CLUSTER_INFO} from {server}: its kubeconfig carries no certificate-authority-data"
            )
        })?;
    let ca_pem = base64::engine::general_purpose::STANDARD
        .decode(ca_b64.trim())
        .map_err(|e| anyhow!("{CLUSTER_INFO} from {server}: certificate-authority-data: {e}"))?;
    let ca_der = pem_certificates(&ca_pem)
        .with_context(|| format!("{CLUSTER_INFO} from {server}: certificate-authority-data"))?;
    let mut hashes = Vec::with_capacity(ca_der.len());
    for der in &ca_der {
        hashes.push(bootstrap_token::ca_cert_hash(der).map_err(|e| anyhow!("{e}"))?);
    }
    // As kubeadm: the pin may match any certificate of the bundle.
    if !hashes.iter().any(|hash| hash == ca_cert_hash) {
        bail!(
            "the cluster CA's hash is {}, not the --ca-cert-hash given",
            hashes.join(", ")
        );
    }
    Ok(ClusterInfo {
        ca_pem,
        ca_der,
        kubeconfig: kubeconfig.clone(),
    })
}

/// The DER certificates of a PEM bundle (at least one).
pub fn pem_certificates(pem: &[u8]) -> anyhow::Result<Vec<Vec<u8>>> {
    let mut certs = Vec::new();
    for block in x509_parser::pem::Pem::iter_from_buffer(pem) {
        let block = block.map_err(|e| anyhow!("not PEM: {e}"))?;
        if block.label == "CERTIFICATE" {
            certs.push(block.contents);
        }
    }
    if certs.is_empty() {
        bail!("no PEM certificate in it");
    }
    Ok(certs)
}

/// Reads cluster-info from `server`, unverified (`trusted` None) or trusting only `trusted`.
/// cluster-info read from `server`, `None` while it does not exist (a control plane that has
/// just started publishes it within seconds).
async fn fetch(server: &str, trusted: Option<&[Vec<u8>]>) -> anyhow::Result<Option<ConfigMap>> {
    let uri: hyper::Uri = server
        .parse()
        .map_err(|e| anyhow!("--server {server:?}: {e}"))?;
    let mut config = kube::Config::new(uri);
    config.connect_timeout = Some(REQUEST_TIMEOUT);
    config.read_timeout = Some(REQUEST_TIMEOUT);
    config.write_timeout = Some(REQUEST_TIMEOUT);
    match trusted {
        Some(ca) => config.root_cert = Some(ca.to_vec()),
        None => config.accept_invalid_certs = true,
    }
    let client = kube::Client::try_from(config)
        .map_err(|e| anyhow!("building a client for {server}: {}", crate::error_chain(&e)))?;
    let api: kube::Api<ConfigMap> = kube::Api::namespaced(client, KUBE_PUBLIC);
    api.get_opt(CLUSTER_INFO)
        .await
        .map_err(|error| match error {
            kube::Error::Api(status) => anyhow!(
                "{server} refused to show {KUBE_PUBLIC}/{CLUSTER_INFO} ({} {}): {}",
                status.code,
                status.reason,
                status.message
            ),
            other if trusted.is_some() => anyhow!(
                "{server} failed verification with the cluster CA from {CLUSTER_INFO}: {}",
                root_cause(&other)
            ),
            other => anyhow!("cannot reach {server}: {}", root_cause(&other)),
        })
}

/// The innermost cause of `error` (the layers above it repeat each other for a failed
/// connection: `client error (Connect): client error (Connect): tcp connect error: ...`).
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    std::iter::successors(Some(error), |e| e.source())
        .last()
        .map_or_else(String::new, ToString::to_string)
}

/// How long discovery waits for the token's signature to appear in cluster-info: the control
/// plane's bootstrap signer adds it within seconds of `token create` (kubeadm keeps polling
/// for the same reason). A token that stays unsigned is unknown, expired or deleted.
const SIGNATURE_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// Discovery: the unverified read (polled until the token's signature is there, at most
/// [`SIGNATURE_WAIT`]), the checks, then the verified read that must agree.
pub async fn discover(
    server: &str,
    token: &BootstrapToken,
    ca_cert_hash: &str,
) -> anyhow::Result<ClusterInfo> {
    let signature_key = format!("{JWS_PREFIX}{}", token.id);
    let deadline = tokio::time::Instant::now() + SIGNATURE_WAIT;
    let missing = || {
        anyhow!(
            "{server} has no {KUBE_PUBLIC}/{CLUSTER_INFO} ConfigMap (is it a keelson control \
             plane with the bootstrapsigner controller?)"
        )
    };
    let insecure = loop {
        let read = fetch(server, None).await?;
        let signed = read
            .as_ref()
            .and_then(|read| read.data.as_ref())
            .is_some_and(|data| data.contains_key(&signature_key));
        if signed || tokio::time::Instant::now() >= deadline {
            break read.ok_or_else(missing)?;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    };
    let info = verify(server, &insecure, token, ca_cert_hash)?;
    let secure = fetch(server, Some(&info.ca_der))
        .await?
        .ok_or_else(missing)?;
    let again = secure.data.as_ref().and_then(|data| data.get("kubeconfig"));
    if again != Some(&info.kubeconfig) {
        bail!(
            "{CLUSTER_INFO} from {server} changed between the unverified and the verified read; \
             try again"
        );
    }
    tracing::debug!(
        server,
        ca = ca_cert_hash,
        "cluster CA verified by token and hash"
    );
    Ok(info)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn ca() -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("cert");
        let hash = bootstrap_token::ca_cert_hash(cert.der()).expect("hash");
        (cert.pem(), hash)
    }

    fn kubeconfig(ca_pem: &str) -> String {
        let data = base64::engine::general_purpose::STANDARD.encode(ca_pem);
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: \"\"\n  cluster:\n    \
             certificate-authority-data: {data}\n    server: https://10.0.0.1:6443\n"
        )
    }

    fn config_map(entries: &[(&str, &str)]) -> ConfigMap {
        ConfigMap {
            data: Some(
                entries
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect::<BTreeMap<_, _>>(),
            ),
            ..ConfigMap::default()
        }
    }

    #[test]
    fn verification_table() {
        let server = "https://10.0.0.1:6443";
        let token: BootstrapToken = "abcdef.0123456789abcdef".parse().expect("token");
        let other: BootstrapToken = "abcdef.ffffffffffffffff".parse().expect("token");
        let (ca_pem, hash) = ca();
        let (_, other_hash) = ca();
        let good = kubeconfig(&ca_pem);
        let signed = bootstrap_token::sign_detached(&token, good.as_bytes());
        let tampered = good.replace("10.0.0.1", "10.6.6.6");
        let cases: Vec<(ConfigMap, &BootstrapToken, &str, Option<String>)> = vec![
            (
                config_map(&[("kubeconfig", &good), ("jws-kubeconfig-abcdef", &signed)]),
                &token,
                &hash,
                None,
            ),
            (
                config_map(&[("kubeconfig", &good)]),
                &token,
                &hash,
                Some(
                    "the token ID is not known to https://10.0.0.1:6443: no signature in \
                     cluster-info (expired or deleted token?)"
                        .to_owned(),
                ),
            ),
            (
                config_map(&[("kubeconfig", &good), ("jws-kubeconfig-abcdef", &signed)]),
                &other,
                &hash,
                Some(
                    "cluster-info from https://10.0.0.1:6443 is not signed with this token's \
                     secret (wrong secret, or cluster-info was altered on the way)"
                        .to_owned(),
                ),
            ),
            (
                config_map(&[
                    ("kubeconfig", &tampered),
                    ("jws-kubeconfig-abcdef", &signed),
                ]),
                &token,
                &hash,
                Some(
                    "cluster-info from https://10.0.0.1:6443 is not signed with this token's \
                     secret (wrong secret, or cluster-info was altered on the way)"
                        .to_owned(),
                ),
            ),
            (
                config_map(&[("kubeconfig", &good), ("jws-kubeconfig-abcdef", &signed)]),
                &token,
                &other_hash,
                Some(format!(
                    "the cluster CA's hash is {hash}, not the --ca-cert-hash given"
                )),
            ),
            (
                config_map(&[("jws-kubeconfig-abcdef", &signed)]),
                &token,
                &hash,
                Some(
                    "https://10.0.0.1:6443: the kube-public/cluster-info ConfigMap has no \
                     `kubeconfig` key"
                        .to_owned(),
                ),
            ),
        ];
        for (i, (cm, token, pin, refusal)) in cases.into_iter().enumerate() {
            let got = verify(server, &cm, token, pin).map(|info| {
                assert_eq!(info.ca_pem, ca_pem.as_bytes());
                assert_eq!(info.ca_der.len(), 1);
            });
            assert_eq!(got.err().map(|e| format!("{e:#}")), refusal, "case {i}");
        }
    }

    #[test]
    fn ca_cert_hash_flag() {
        let hex = "204fa77036e5bc4c16d889019f73d0c42762c22fb41b2358c4fbab009a4f22fd";
        let cases = [
            (format!("sha256:{hex}"), Ok(format!("sha256:{hex}"))),
            (
                format!("sha256:{}", hex.to_uppercase()),
                Ok(format!("sha256:{hex}")),
            ),
            (
                hex.to_owned(),
                Err(format!(
                    "--ca-cert-hash must look like sha256:<64 hex digits>, not \"{hex}\""
                )),
            ),
            (
                "sha256:abc".to_owned(),
                Err(
                    "--ca-cert-hash must look like sha256:<64 hex digits>, not \"sha256:abc\""
                        .to_owned(),
                ),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(
                parse_ca_cert_hash(&text).map_err(|e| e.to_string()),
                expected,
                "{text}"
            );
        }
    }
}
