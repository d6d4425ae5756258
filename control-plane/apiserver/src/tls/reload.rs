//! A serving certificate that can be replaced while the server runs: the TLS configuration asks
//! [`ServingCertificate`] for the certificate at every handshake, so a renewed one is used by
//! new connections at once and open connections keep theirs.

use std::sync::{Arc, RwLock};

use rustls::{
    RootCertStore, ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
};

use super::TlsError;

/// The current serving certificate and key.
#[derive(Debug)]
pub struct ServingCertificate {
    current: RwLock<Arc<CertifiedKey>>,
    provider: Arc<CryptoProvider>,
}

fn certified(
    provider: &CryptoProvider,
    cert_chain: &[u8],
    key: &[u8],
) -> Result<CertifiedKey, TlsError> {
    let pem = |what, cause: rustls::pki_types::pem::Error| TlsError::Pem {
        what,
        cause: cause.to_string(),
    };
    let chain = CertificateDer::pem_slice_iter(cert_chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem("serving certificate", e))?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            what: "serving certificate",
            cause: "no CERTIFICATE block".to_owned(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| pem("serving key", e))?;
    let signing = provider.key_provider.load_private_key(key)?;
    let certified = CertifiedKey::new(chain, signing);
    // A certificate with another certificate's key would fail every handshake.
    certified.keys_match()?;
    Ok(certified)
}

impl ServingCertificate {
    /// Replaces the certificate new handshakes present with `cert_chain`/`key` (PEM).
    pub fn swap(&self, cert_chain: &[u8], key: &[u8]) -> Result<(), TlsError> {
        let next = Arc::new(certified(&self.provider, cert_chain, key)?);
        match self.current.write() {
            Ok(mut current) => *current = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
        Ok(())
    }
}

impl ResolvesServerCert for ServingCertificate {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let current = match self.current.read() {
            Ok(current) => current,
            Err(poisoned) => poisoned.into_inner(),
        };
        Some(Arc::clone(&current))
    }
}

/// [`super::server_config`] with a serving certificate [`ServingCertificate::swap`] can
/// replace.
pub fn reloadable_server_config(
    cert_chain: &[u8],
    key: &[u8],
    client_ca: &[u8],
) -> Result<(Arc<ServerConfig>, Arc<ServingCertificate>), TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let serving = Arc::new(ServingCertificate {
        current: RwLock::new(Arc::new(certified(&provider, cert_chain, key)?)),
        provider: Arc::clone(&provider),
    });
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(client_ca) {
        roots.add(ca.map_err(|e| TlsError::Pem {
            what: "client CA",
            cause: e.to_string(),
        })?)?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(serving.clone());
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(config), serving))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issue(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("self-signed");
        (cert.pem(), key.serialize_pem())
    }

    fn presented(serving: &ServingCertificate) -> Vec<u8> {
        let current = serving.current.read().expect("lock");
        current.cert[0].to_vec()
    }

    #[test]
    fn a_swapped_certificate_is_presented_and_a_bad_one_refused() {
        let (a_cert, a_key) = issue("a.example");
        let (b_cert, b_key) = issue("b.example");
        let (_, serving) =
            reloadable_server_config(a_cert.as_bytes(), a_key.as_bytes(), a_cert.as_bytes())
                .expect("config");
        let der = |pem: &str| {
            CertificateDer::from_pem_slice(pem.as_bytes())
                .expect("PEM")
                .to_vec()
        };
        assert_eq!(presented(&serving), der(&a_cert));
        assert!(serving.swap(b"garbage", b_key.as_bytes()).is_err());
        assert!(
            serving.swap(b_cert.as_bytes(), a_key.as_bytes()).is_err(),
            "a key of another certificate"
        );
        assert_eq!(
            presented(&serving),
            der(&a_cert),
            "a failed swap keeps the old one"
        );
        serving
            .swap(b_cert.as_bytes(), b_key.as_bytes())
            .expect("swap");
        assert_eq!(presented(&serving), der(&b_cert));
    }
}
