//! The node agent's serving certificate, issued by the cluster CA, as the kubelet gets it with
//! `--rotate-server-certificates` (`pkg/kubelet/certificate/kubelet.go`): a CSR for
//! `system:node:<name>` with the node's name and addresses as subjectAltNames to the
//! `kubernetes.io/kubelet-serving` signer, kept in `<dir>/kubelet-server-current.pem` (the
//! certificate, then its key) and renewed at a jittered 70-90% of its lifetime.
//!
//! The kubelet endpoint starts with a self-signed certificate and presents the issued one from
//! the next TLS handshake on ([`ServingCertificate`] is the rustls resolver). The API server
//! verifies node agents against the cluster CA, so until a certificate is issued (the control
//! plane approves a node's request for its own names) `kubectl logs`/`exec` to this node fail
//! with a certificate error that names the cause.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::Duration,
};

use anyhow::{Context as _, anyhow};
use rustls::{
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, pem::PemObject as _},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};

use super::{csr, files, rotate};

/// The file the certificate and key are kept in (the kubelet's name for it).
pub const FILE_NAME: &str = "kubelet-server-current.pem";
/// How long one request waits for its certificate before it is looked at again.
const ISSUE_WAIT: Duration = Duration::from_secs(5 * 60);
/// The pause after a failed attempt.
const RETRY_PAUSE: Duration = Duration::from_secs(30);
/// The longest single sleep before the deadline is looked at again.
const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// The certificate the kubelet endpoint presents; replaced while it serves.
pub struct ServingCertificate {
    current: RwLock<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for ServingCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.write_str("ServingCertificate(..)")
    }
}

impl ServingCertificate {
    /// A fresh self-signed certificate for `names`, until the CA issues one.
    pub fn self_signed(names: Vec<String>) -> anyhow::Result<Self> {
        let certified =
            rcgen::generate_simple_self_signed(names).context("a self-signed certificate")?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            certified.signing_key.serialize_der(),
        ));
        let chain = vec![certified.cert.der().clone()];
        Ok(Self {
            current: RwLock::new(certified_key(chain, &key)?),
        })
    }

    /// Presents the PEM chain `cert_pem` with `key_pem` from the next handshake on.
    pub fn replace(&self, cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<()> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow!("the serving certificate is not PEM: {e}"))?;
        anyhow::ensure!(!chain.is_empty(), "no serving certificate in the PEM");
        let key = PrivateKeyDer::from_pem_slice(key_pem)
            .map_err(|e| anyhow!("the serving key is not PEM: {e}"))?;
        let key = certified_key(chain, &key)?;
        match self.current.write() {
            Ok(mut current) => *current = key,
            Err(poisoned) => *poisoned.into_inner() = key,
        }
        Ok(())
    }
}

impl ResolvesServerCert for ServingCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        })
    }
}

fn certified_key(
    chain: Vec<CertificateDer<'static>>,
    key: &PrivateKeyDer<'_>,
) -> anyhow::Result<Arc<CertifiedKey>> {
    let signer = rustls::crypto::ring::sign::any_supported_type(key)
        .map_err(|e| anyhow!("the serving key: {e}"))?;
    let certified = CertifiedKey::new(chain, signer);
    certified
        .keys_match()
        .map_err(|e| anyhow!("the serving key does not match the certificate: {e}"))?;
    Ok(Arc::new(certified))
}

/// What a kept certificate covers and when it is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// notBefore, Unix seconds.
    pub not_before: i64,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    /// Its DNS and IP subjectAltNames, as text.
    pub names: Vec<String>,
    /// Whether it signed itself (not issued by a CA).
    pub self_signed: bool,
}

/// Reads the validity and names of the first certificate in `pem`.
pub fn inspect(pem: &[u8]) -> anyhow::Result<Kept> {
    let (_, block) =
        x509_parser::pem::parse_x509_pem(pem).map_err(|e| anyhow!("not a PEM block: {e}"))?;
    let cert = block
        .parse_x509()
        .map_err(|e| anyhow!("not a certificate: {e}"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => {
                    names.push((*dns).to_owned());
                }
                x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*bytes) {
                        names.push(std::net::Ipv4Addr::from(v4).to_string());
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*bytes) {
                        names.push(std::net::Ipv6Addr::from(v6).to_string());
                    }
                }
                _ => {}
            }
        }
    }
    Ok(Kept {
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        names,
        self_signed: cert.subject() == cert.issuer(),
    })
}

/// What to do with the kept certificate at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Present it, and renew it at this time (Unix seconds).
    Use {
        /// When to renew.
        renew_at: i64,
    },
    /// Present it (still valid) but ask for a new one now: its renewal time has passed.
    UseAndRenew,
    /// Ask for a certificate now; the kept one (if any) cannot be presented.
    Request,
}

/// Decides about `kept` for a node whose names are `wanted`: a CA-issued certificate, valid now,
/// naming all of `wanted`, is presented until `70% + jitter × 20%` of its lifetime.
pub fn plan(kept: Option<&Kept>, wanted: &[String], now: i64, jitter: f64) -> Plan {
    let Some(kept) = kept else {
        return Plan::Request;
    };
    let covers = wanted.iter().all(|w| kept.names.contains(w));
    if kept.self_signed || !covers || now < kept.not_before || now >= kept.not_after {
        return Plan::Request;
    }
    let renew_at = rotate::rotation_deadline(kept.not_before, kept.not_after, jitter);
    if now >= renew_at {
        Plan::UseAndRenew
    } else {
        Plan::Use { renew_at }
    }
}

/// Keeps the endpoint's certificate issued and current, for node `node` with `names`.
#[derive(Debug)]
pub struct Rotation {
    /// The node's name.
    pub node: String,
    /// DNS names and IP addresses the certificate must name.
    pub names: Vec<String>,
    /// Where [`FILE_NAME`] is kept.
    pub dir: PathBuf,
    /// The endpoint's certificate.
    pub certificate: Arc<ServingCertificate>,
}

impl Rotation {
    /// Runs until the process stops: presents the kept certificate if it is good, otherwise
    /// (and when it is due) asks for a new one.
    pub async fn run(self, client: kube::Client) {
        let path = self.dir.join(FILE_NAME);
        let jitter = rotate::jitter();
        let mut pending: Option<csr::NodeRequest> = None;
        // Bounded by the process: every pass sleeps at least RETRY_PAUSE or until a deadline.
        loop {
            let kept = read_kept(&path);
            let decided = plan(
                kept.as_ref().map(|(k, _)| k),
                &self.names,
                rotate::now(),
                jitter,
            );
            if let (Plan::Use { .. } | Plan::UseAndRenew, Some((_, pem))) = (&decided, &kept)
                && let Err(error) = self.certificate.replace(pem, pem)
            {
                tracing::warn!(error = %error, path = %path.display(), "the kept serving certificate is unusable");
            }
            if let Plan::Use { renew_at } = decided {
                let wait = u64::try_from(renew_at - rotate::now()).unwrap_or(0);
                tokio::time::sleep(Duration::from_secs(wait).min(MAX_SLEEP)).await;
                continue;
            }
            let request = match pending.take() {
                Some(request) => request,
                None => match csr::serving_request(&self.node, self.names.clone()) {
                    Ok(request) => request,
                    Err(error) => {
                        tracing::warn!(error = %format!("{error:#}"), "cannot make a serving certificate request");
                        tokio::time::sleep(RETRY_PAUSE).await;
                        continue;
                    }
                },
            };
            match csr::request_certificate(client.clone(), &request, ISSUE_WAIT).await {
                Ok(cert_pem) => {
                    let mut content = cert_pem.clone();
                    if !content.ends_with(b"\n") {
                        content.push(b'\n');
                    }
                    content.extend_from_slice(request.key_pem.as_bytes());
                    if let Err(error) = store(&path, content) {
                        tracing::warn!(error = %format!("{error:#}"), "cannot keep the serving certificate");
                    }
                    match self
                        .certificate
                        .replace(&cert_pem, request.key_pem.as_bytes())
                    {
                        Ok(()) => tracing::info!(
                            csr = %request.name,
                            names = ?self.names,
                            "the kubelet endpoint serves a certificate from the cluster CA"
                        ),
                        Err(error) => {
                            tracing::warn!(error = %format!("{error:#}"), "the issued serving certificate is unusable");
                        }
                    }
                }
                Err(error) => {
                    let message = format!("{error:#}");
                    tracing::warn!(error = %message, "no serving certificate yet");
                    // A request still pending is waited for again rather than made anew, so a
                    // slow approver does not see a new request every few minutes.
                    if message.contains("was not approved and issued within") {
                        pending = Some(request);
                    }
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
    }
}

fn read_kept(path: &Path) -> Option<(Kept, Vec<u8>)> {
    let pem = std::fs::read(path).ok()?;
    let kept = inspect(&pem).ok()?;
    Some((kept, pem))
}

fn store(path: &Path, content: Vec<u8>) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    files::write_atomically(&[files::NewFile {
        path: path.to_owned(),
        content,
        mode: 0o600,
    }])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(names: &[&str], self_signed: bool) -> Kept {
        Kept {
            not_before: 1000,
            not_after: 2000,
            names: names.iter().map(|n| (*n).to_owned()).collect(),
            self_signed,
        }
    }

    #[test]
    fn a_kept_certificate_is_used_only_when_issued_current_and_naming_the_node() {
        let wanted = vec!["n1".to_owned(), "10.0.0.7".to_owned()];
        let good = kept(&["n1", "10.0.0.7", "127.0.0.1"], false);
        let cases = [
            ("nothing kept", None, 1500, Plan::Request),
            ("good", Some(&good), 1500, Plan::Use { renew_at: 1800 }),
            ("due", Some(&good), 1850, Plan::UseAndRenew),
            ("expired", Some(&good), 2000, Plan::Request),
            ("not yet valid", Some(&good), 999, Plan::Request),
        ];
        for (case, kept, now, expected) in cases {
            assert_eq!(plan(kept, &wanted, now, 0.5), expected, "{case}");
        }
        let moved = kept(&["n1", "10.0.0.8"], false);
        assert_eq!(
            plan(Some(&moved), &wanted, 1500, 0.5),
            Plan::Request,
            "a new address"
        );
        let own = kept(&["n1", "10.0.0.7"], true);
        assert_eq!(
            plan(Some(&own), &wanted, 1500, 0.5),
            Plan::Request,
            "self-signed"
        );
    }

    #[test]
    fn inspect_reads_names_and_issuer() {
        let certified =
            rcgen::generate_simple_self_signed(vec!["n1".to_owned(), "10.0.0.7".to_owned()])
                .expect("cert");
        let kept = inspect(certified.cert.pem().as_bytes()).expect("parses");
        assert_eq!(kept.names, ["n1", "10.0.0.7"]);
        assert!(kept.self_signed);
        assert!(kept.not_after > kept.not_before);
        // And the resolver takes a PEM chain and key that belong together, and refuses others.
        let serving = ServingCertificate::self_signed(vec!["n1".to_owned()]).expect("self-signed");
        let key = certified.signing_key.serialize_pem();
        serving
            .replace(certified.cert.pem().as_bytes(), key.as_bytes())
            .expect("a matching pair");
        let other = rcgen::generate_simple_self_signed(vec!["x".to_owned()]).expect("cert");
        assert!(
            serving
                .replace(
                    certified.cert.pem().as_bytes(),
                    other.signing_key.serialize_pem().as_bytes()
                )
                .is_err()
        );
    }
}
