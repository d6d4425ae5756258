//! Renewal of the node's client certificate while `run` runs, as the kubelet's certificate
//! manager does it (`pkg/kubelet/certificate`, client-go `util/certificate`): once the
//! certificate in the kubeconfig passes a jittered 70-90% of its lifetime, a new key and a CSR
//! made with the current credentials (a node may ask for its own certificate), the wait for the
//! certificate, then the kubeconfig (or the files it points at) rewritten atomically.
//!
//! The running agent's client presents the new certificate from its next connection on
//! ([`identity`](super::identity): a rustls client-certificate resolver over shared state), so
//! nothing restarts. A kubeconfig whose client certificate is not a node's (an admin's, or a
//! token) is left alone.

use std::{
    path::{Path, PathBuf},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;

use super::{csr, discovery, files, identity::SwappableIdentity};
use std::sync::Arc;

/// How long one renewal attempt waits for its certificate.
const ISSUE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// The pause between failed renewal attempts.
const RETRY_PAUSE: Duration = Duration::from_secs(60);
/// The longest single sleep before the deadline is looked at again (a suspended host's clock
/// jumps).
const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// The node client certificate a kubeconfig holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCertificate {
    /// The node's name (the CN without `system:node:`).
    pub node: String,
    /// notBefore, Unix seconds.
    pub not_before: i64,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    /// Where the certificate and key are kept.
    pub location: Location,
}

/// Where a kubeconfig keeps its client certificate and key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// Inline (`client-certificate-data`, `client-key-data`).
    Inline,
    /// In files (`client-certificate`, `client-key`), absolute paths.
    Files {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
}

/// When to renew a certificate valid from `not_before` to `not_after` (Unix seconds): at
/// 70% + `jitter` × 20% of its lifetime (`jitter` in [0, 1)), so nodes that joined together do
/// not all renew at once.
pub fn rotation_deadline(not_before: i64, not_after: i64, jitter: f64) -> i64 {
    let lifetime = (not_after - not_before).max(0);
    // 70% exactly in integers, the jittered fifth on top.
    let jittered = (lifetime / 5) as f64 * jitter.clamp(0.0, 1.0);
    not_before + lifetime * 7 / 10 + jittered as i64
}

/// A number in [0, 1) that differs between processes (the standard library's per-process
/// random hash keys).
pub(crate) fn jitter() -> f64 {
    use std::hash::BuildHasher as _;
    let random = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
    (random >> 11) as f64 / (1u64 << 53) as f64
}

/// Now, Unix seconds.
pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// A client certificate chain and its key, PEM.
pub struct Identity {
    /// The certificate chain.
    pub cert_pem: Vec<u8>,
    /// The private key.
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.write_str("Identity(..)")
    }
}

/// The node client certificate of the kubeconfig at `path` (its current context's user) and its
/// key, or None when it has none or the certificate is not a node's.
pub fn node_certificate(path: &Path) -> anyhow::Result<Option<(NodeCertificate, Identity)>> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)
        .map_err(|e| anyhow!("reading {}: {}", path.display(), crate::error_chain(&e)))?;
    let user_name = kubeconfig
        .current_context
        .as_deref()
        .and_then(|current| kubeconfig.contexts.iter().find(|c| c.name == current))
        .and_then(|c| c.context.as_ref())
        .map(|c| c.user.clone());
    let user = match user_name {
        Some(Some(name)) => kubeconfig.auth_infos.iter().find(|u| u.name == name),
        _ => kubeconfig.auth_infos.first(),
    }
    .and_then(|u| u.auth_info.as_ref());
    let Some(user) = user else { return Ok(None) };
    let dir = path.parent().unwrap_or(Path::new("/"));
    let b64 = base64::engine::general_purpose::STANDARD;
    let (pem, key_pem, location) = if let Some(data) = &user.client_certificate_data {
        let pem = b64
            .decode(data.trim())
            .map_err(|e| anyhow!("{}: client-certificate-data: {e}", path.display()))?;
        let key = inline_key(path)?;
        (pem, key, Location::Inline)
    } else if let (Some(cert), Some(key)) = (&user.client_certificate, &user.client_key) {
        let cert = dir.join(cert);
        let pem = std::fs::read(&cert).with_context(|| format!("reading {}", cert.display()))?;
        let key = dir.join(key);
        let key_pem = std::fs::read(&key).with_context(|| format!("reading {}", key.display()))?;
        (pem, key_pem, Location::Files { cert, key })
    } else {
        return Ok(None);
    };
    let der = discovery::pem_certificates(&pem)
        .with_context(|| format!("{}: the client certificate", path.display()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der[0])
        .map_err(|e| anyhow!("{}: the client certificate: {e}", path.display()))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default();
    let Some(node) = cn.strip_prefix(csr::NODE_USER_PREFIX) else {
        return Ok(None);
    };
    let found = NodeCertificate {
        node: node.to_owned(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        location,
    };
    Ok(Some((
        found,
        Identity {
            cert_pem: pem,
            key_pem,
        },
    )))
}

/// The inline `client-key-data` of the kubeconfig at `path` (read as plain YAML: kube keeps
/// the key in a secret type), decoded. One user with inline data is expected, as `join` writes.
fn inline_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let data = text
        .lines()
        .filter_map(|line| line.trim_start().strip_prefix("client-key-data:"))
        .map(str::trim)
        .next()
        .ok_or_else(|| anyhow!("{}: no client-key-data", path.display()))?;
    base64::engine::general_purpose::STANDARD
        .decode(data.trim_matches('"'))
        .map_err(|e| anyhow!("{}: client-key-data: {e}", path.display()))
}

/// `kubeconfig` (text) with its inline client certificate and key replaced.
pub fn replace_inline(kubeconfig: &str, cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<String> {
    let b64 = |data: &[u8]| base64::engine::general_purpose::STANDARD.encode(data);
    let replacements = [
        ("client-certificate-data:", b64(cert_pem)),
        ("client-key-data:", b64(key_pem)),
    ];
    let mut found = [0usize; 2];
    let mut out = String::with_capacity(kubeconfig.len() + 64);
    for line in kubeconfig.lines() {
        let trimmed = line.trim_start();
        match replacements
            .iter()
            .position(|(key, _)| trimmed.starts_with(key))
        {
            Some(i) => {
                let indent = &line[..line.len() - trimmed.len()];
                out.push_str(&format!(
                    "{indent}{} {}\n",
                    replacements[i].0, replacements[i].1
                ));
                found[i] += 1;
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    if found != [1, 1] {
        bail!("the kubeconfig does not hold exactly one inline client certificate and key");
    }
    Ok(out)
}

/// Renews the node's client certificate of one kubeconfig while the agent runs.
#[derive(Debug)]
pub struct Rotation {
    path: PathBuf,
    current: NodeCertificate,
    identity: Arc<SwappableIdentity>,
}

/// The API client for `run` from `config`, read from the kubeconfig at `path`: when that holds
/// a node client certificate, a client presenting it through a swappable identity, with the
/// [`Rotation`] that renews it; otherwise kube's own client and no rotation.
pub fn client(
    config: kube::Config,
    path: &Path,
) -> anyhow::Result<(kube::Client, Option<Rotation>)> {
    let Some((current, pems)) = node_certificate(path)? else {
        tracing::info!(kubeconfig = %path.display(),
            "no node client certificate in the kubeconfig: it is not rotated");
        let client = kube::Client::try_from(config)
            .map_err(|e| anyhow!("building the API client: {}", crate::error_chain(&e)))?;
        return Ok((client, None));
    };
    let identity = Arc::new(
        SwappableIdentity::new(&pems.cert_pem, &pems.key_pem)
            .with_context(|| path.display().to_string())?,
    );
    let client = super::identity::client(&config, identity.clone())?;
    let rotation = Rotation {
        path: path.to_owned(),
        current,
        identity,
    };
    Ok((client, Some(rotation)))
}

impl Rotation {
    /// Starts renewing at once (tests).
    #[cfg(test)]
    pub(crate) async fn run_now(self, client: kube::Client) -> anyhow::Result<()> {
        self.run_from(client, Some(now())).await
    }

    /// Renews the certificate whenever it passes its rotation deadline, through `client` (the
    /// one [`client`] returned, which presents it), for as long as the agent runs. Fails only
    /// once the certificate has expired without a renewal.
    pub async fn run(self, client: kube::Client) -> anyhow::Result<()> {
        self.run_from(client, None).await
    }

    /// [`Rotation::run`], the first renewal due at `first_due` (Unix seconds) when given.
    async fn run_from(
        mut self,
        client: kube::Client,
        first_due: Option<i64>,
    ) -> anyhow::Result<()> {
        let mut first_due = first_due;
        loop {
            let due = first_due.take().unwrap_or_else(|| {
                rotation_deadline(self.current.not_before, self.current.not_after, jitter())
            });
            tracing::info!(node = %self.current.node, expires = self.current.not_after,
                rotation_due = due, in_seconds = due - now(), "node client certificate: next rotation");
            loop {
                let left = due - now();
                if left <= 0 {
                    break;
                }
                let nap = Duration::from_secs(u64::try_from(left).unwrap_or(0)).min(MAX_SLEEP);
                tokio::time::sleep(nap).await;
            }
            let pems = loop {
                match renew(client.clone(), &self.path, &self.current).await {
                    Ok(pems) => break pems,
                    Err(error) if now() >= self.current.not_after => {
                        return Err(error.context(format!(
                            "the node's client certificate expired at {} (Unix time) and could \
                             not be renewed",
                            self.current.not_after
                        )));
                    }
                    Err(error) => {
                        tracing::warn!(error = %format!("{error:#}"),
                            "renewing the node client certificate; retrying");
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                }
            };
            self.identity.replace(&pems.cert_pem, &pems.key_pem)?;
            self.current = match node_certificate(&self.path)? {
                Some((current, _)) => current,
                None => bail!("{}: the renewed certificate is gone", self.path.display()),
            };
            tracing::info!(kubeconfig = %self.path.display(), expires = self.current.not_after,
                "node client certificate renewed; new connections present it");
        }
    }
}

/// One renewal: key, CSR, certificate, files. Returns the new certificate and key.
async fn renew(
    client: kube::Client,
    path: &Path,
    current: &NodeCertificate,
) -> anyhow::Result<Identity> {
    let request = csr::node_request(&current.node)?;
    let cert_pem = csr::request_certificate(client, &request, ISSUE_TIMEOUT).await?;
    let key_pem = request.key_pem.as_bytes();
    // Usable before it is written: a bad certificate leaves the files as they were.
    SwappableIdentity::new(&cert_pem, key_pem).context("the issued certificate")?;
    tracing::info!(csr = %request.name, "node client certificate issued");
    match &current.location {
        Location::Inline => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let mode = std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(path)
                    .with_context(|| format!("reading {}", path.display()))?
                    .permissions(),
            ) & 0o777;
            files::write_atomically(&[files::NewFile {
                path: path.to_owned(),
                content: replace_inline(&text, &cert_pem, key_pem)?.into_bytes(),
                mode,
            }])?;
        }
        Location::Files { cert, key } => files::write_atomically(&[
            files::NewFile {
                path: key.clone(),
                content: key_pem.to_vec(),
                mode: 0o600,
            },
            files::NewFile {
                path: cert.clone(),
                content: cert_pem.clone(),
                mode: 0o644,
            },
        ])?,
    }
    Ok(Identity {
        cert_pem,
        key_pem: key_pem.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_within_70_to_90_percent() {
        let (start, end) = (1_000, 1_000 + 365 * 24 * 3600);
        let cases = [
            (0.0, 1_000 + 22_075_200),
            (0.5, 1_000 + 25_228_800),
            (0.999_999_9, 1_000 + 28_382_399),
        ];
        for (jitter, expected) in cases {
            assert_eq!(rotation_deadline(start, end, jitter), expected, "{jitter}");
        }
        for _ in 0..100 {
            let due = rotation_deadline(start, end, jitter());
            let fraction = (due - start) as f64 / (end - start) as f64;
            assert!((0.7..0.9).contains(&fraction), "{fraction}");
        }
        // An already-invalid certificate is due at once.
        assert_eq!(rotation_deadline(5, 1, 0.5), 5);
    }

    #[test]
    fn inline_replacement() {
        let kubeconfig = files::render_kubeconfig(
            "https://h:6443",
            b"CA",
            "system:node:n",
            &files::Credentials::Certificate {
                cert_pem: b"OLD CERT",
                key_pem: b"OLD KEY",
            },
        );
        let renewed = replace_inline(&kubeconfig, b"NEW CERT", b"NEW KEY").expect("replaced");
        let expected = kubeconfig
            .replace("T0xEIENFUlQ=", "TkVXIENFUlQ=")
            .replace("T0xEIEtFWQ==", "TkVXIEtFWQ==");
        assert_eq!(renewed, expected);
        assert_ne!(renewed, kubeconfig);
        let token = files::render_kubeconfig(
            "https://h:6443",
            b"CA",
            "u",
            &files::Credentials::Token("t"),
        );
        assert!(replace_inline(&token, b"C", b"K").is_err());
    }

    #[test]
    fn finds_the_node_certificate_inline_and_in_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "system:node:worker-1");
        params.not_before = rcgen::date_time_ymd(2026, 1, 1);
        params.not_after = rcgen::date_time_ymd(2027, 1, 1);
        let cert = params.self_signed(&key).expect("cert");
        let inline = dir.path().join("inline.kubeconfig");
        let text = files::render_kubeconfig(
            "https://h:6443",
            cert.pem().as_bytes(),
            "system:node:worker-1",
            &files::Credentials::Certificate {
                cert_pem: cert.pem().as_bytes(),
                key_pem: key.serialize_pem().as_bytes(),
            },
        );
        std::fs::write(&inline, &text).expect("write");
        let (found, pems) = node_certificate(&inline)
            .expect("read")
            .expect("a node cert");
        assert_eq!(pems.key_pem, key.serialize_pem().as_bytes());
        assert_eq!(found.node, "worker-1");
        assert_eq!(found.location, Location::Inline);
        assert_eq!(found.not_before, 1_767_225_600);
        assert_eq!(found.not_after, 1_798_761_600);

        std::fs::write(dir.path().join("client.crt"), cert.pem()).expect("write");
        let by_file = text
            .replace(
                &text
                    .lines()
                    .find(|l| l.contains("client-certificate-data"))
                    .expect("line")
                    .to_owned(),
                "    client-certificate: client.crt",
            )
            .replace(
                &text
                    .lines()
                    .find(|l| l.contains("client-key-data"))
                    .expect("line")
                    .to_owned(),
                "    client-key: client.key",
            );
        let files_path = dir.path().join("files.kubeconfig");
        std::fs::write(&files_path, by_file).expect("write");
        std::fs::write(dir.path().join("client.key"), key.serialize_pem()).expect("write");
        let (found, _) = node_certificate(&files_path)
            .expect("read")
            .expect("a node cert");
        assert_eq!(
            found.location,
            Location::Files {
                cert: dir.path().join("client.crt"),
                key: dir.path().join("client.key"),
            }
        );

        // An admin's certificate is not rotated.
        let mut admin = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        admin
            .distinguished_name
            .push(rcgen::DnType::CommonName, "kubernetes-admin");
        let admin = admin.self_signed(&key).expect("cert");
        let admin_text = files::render_kubeconfig(
            "https://h:6443",
            b"CA",
            "admin",
            &files::Credentials::Certificate {
                cert_pem: admin.pem().as_bytes(),
                key_pem: b"K",
            },
        );
        let admin_path = dir.path().join("admin.kubeconfig");
        std::fs::write(&admin_path, admin_text).expect("write");
        assert!(node_certificate(&admin_path).expect("read").is_none());
    }
}
