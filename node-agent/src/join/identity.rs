//! A kube client whose TLS client certificate can be replaced while it runs: the rustls
//! configuration kube would build, with its client-certificate resolver swapped for one that
//! reads shared state. New connections present the current certificate (TLS session resumption
//! is off, as a resumed session keeps its first identity); connections already open keep the one
//! they were made with (it stays valid: rotation happens well before expiry).

use std::sync::{Arc, RwLock};

use anyhow::{Context as _, anyhow};
use kube::client::ConfigExt as _;
use rustls::{
    client::ResolvesClientCert,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    sign::CertifiedKey,
};

/// The client certificate and key new TLS connections present.
pub struct SwappableIdentity {
    current: RwLock<Arc<CertifiedKey>>,
}

impl std::fmt::Debug for SwappableIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.write_str("SwappableIdentity(..)")
    }
}

impl SwappableIdentity {
    /// An identity from a PEM certificate chain and a PEM private key.
    pub fn new(cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<Self> {
        Ok(Self {
            current: RwLock::new(certified_key(cert_pem, key_pem)?),
        })
    }

    /// Presents `cert_pem` with `key_pem` from the next connection on.
    pub fn replace(&self, cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<()> {
        let key = certified_key(cert_pem, key_pem)?;
        match self.current.write() {
            Ok(mut current) => *current = key,
            Err(poisoned) => *poisoned.into_inner() = key,
        }
        Ok(())
    }

    fn get(&self) -> Arc<CertifiedKey> {
        match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl ResolvesClientCert for SwappableIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.get())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The rustls form of a PEM certificate chain and key (checked to belong together).
fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> anyhow::Result<Arc<CertifiedKey>> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("the client certificate is not PEM: {e}"))?;
    anyhow::ensure!(!chain.is_empty(), "no client certificate in the PEM");
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| anyhow!("the client key is not PEM: {e}"))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| anyhow!("the client key: {e}"))?;
    let certified = CertifiedKey::new(chain, signer);
    certified
        .keys_match()
        .map_err(|e| anyhow!("the client key does not match the certificate: {e}"))?;
    Ok(Arc::new(certified))
}

/// A client for `config` (its server, CA, connect timeout, retries of 429/503/504, headers and
/// auth, as kube builds it) that authenticates with `identity` instead of the config's own
/// client certificate. Unlike kube's own client it sets no write timeout on connections.
pub fn client(
    config: &kube::Config,
    identity: Arc<SwappableIdentity>,
) -> anyhow::Result<kube::Client> {
    let mut tls = config
        .rustls_client_config()
        .map_err(|e| anyhow!("the TLS configuration: {}", crate::error_chain(&e)))?;
    tls.client_auth_cert_resolver = identity;
    // A resumed TLS session keeps the identity of the handshake it resumes: without resumption
    // every new connection presents the current certificate.
    tls.resumption = rustls::client::Resumption::disabled();
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(config.connect_timeout);
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let https = match &config.tls_server_name {
        Some(name) => builder
            .with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(
                name.clone()
                    .try_into()
                    .with_context(|| format!("tls-server-name {name:?}"))?,
            ))
            .enable_http1()
            .wrap_connector(http),
        None => builder.enable_http1().wrap_connector(http),
    };
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(https);
    let auth = config
        .auth_layer()
        .map_err(|e| anyhow!("the kubeconfig's credentials: {}", crate::error_chain(&e)))?;
    let headers = config
        .extra_headers_layer()
        .map_err(|e| anyhow!("the kubeconfig's headers: {}", crate::error_chain(&e)))?;
    let service = tower::ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.default_retry.then(|| {
            tower::retry::RetryLayer::new(kube::client::retry::RetryPolicy::server_retry())
        }))
        .option_layer(auth)
        .layer(headers)
        .map_err(tower::BoxError::from)
        .service(client);
    Ok(kube::Client::new(service, config.default_namespace.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(cn: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.self_signed(&key).expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn replace_changes_what_new_connections_present() {
        let (cert_a, key_a) = pair("system:node:a");
        let (cert_b, key_b) = pair("system:node:a");
        let identity = SwappableIdentity::new(cert_a.as_bytes(), key_a.as_bytes()).expect("a");
        let first = identity.resolve(&[], &[]).expect("a certificate");
        identity
            .replace(cert_b.as_bytes(), key_b.as_bytes())
            .expect("b");
        let second = identity.resolve(&[], &[]).expect("a certificate");
        assert_ne!(first.cert[0], second.cert[0]);
        // A key of another certificate is refused and the current one stays.
        let error = identity
            .replace(cert_a.as_bytes(), key_b.as_bytes())
            .expect_err("mismatch");
        assert!(
            format!("{error:#}").starts_with("the client key does not match"),
            "{error:#}"
        );
        assert_eq!(
            identity.resolve(&[], &[]).expect("cert").cert[0],
            second.cert[0]
        );
    }
}
