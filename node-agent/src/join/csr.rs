//! The node's client certificate through the `certificates.k8s.io/v1` CertificateSigningRequest
//! API, as the kubelet gets it (`pkg/kubelet/certificate/bootstrap`): a new ECDSA P-256 key, a
//! CSR for `system:node:<name>` in `system:nodes` to the
//! [`KUBELET_CLIENT_SIGNER`](keelson_api::bootstrap_token::KUBELET_CLIENT_SIGNER), named after a
//! digest of the key and the subject so that a retry with the same key finds its own request,
//! then a watch until it is approved and issued, denied or failed.

use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use futures_util::TryStreamExt as _;
use k8s_openapi::{
    ByteString,
    api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestSpec},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use kube::{
    Api,
    api::{PostParams, WatchParams},
    core::WatchEvent,
};
use rcgen::PublicKeyData as _;
use sha2::{Digest as _, Sha512_256};

/// The group every node's user is in.
pub const NODES_GROUP: &str = "system:nodes";
/// The user-name prefix of nodes (`system:node:<name>`).
pub const NODE_USER_PREFIX: &str = "system:node:";
/// The usages a node's ECDSA client certificate asks for.
pub const USAGES: [&str; 2] = ["digital signature", "client auth"];
/// The usages a node's ECDSA serving certificate asks for (the kubelet's, for a non-RSA key).
pub const SERVING_USAGES: [&str; 2] = ["digital signature", "server auth"];

/// A fresh key and the PKCS#10 request for a node's client certificate.
pub struct NodeRequest {
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
    /// The CSR, PEM.
    pub csr_pem: String,
    /// The CertificateSigningRequest's name (`node-csr-<digest>`).
    pub name: String,
    /// The signer asked.
    pub signer: &'static str,
    /// The usages asked for.
    pub usages: &'static [&'static str],
}

/// A new ECDSA P-256 key and a CSR with CN `system:node:<node>`, O `system:nodes`.
pub fn node_request(node: &str) -> anyhow::Result<NodeRequest> {
    request_for(
        node,
        Vec::new(),
        keelson_api::bootstrap_token::KUBELET_CLIENT_SIGNER,
        &USAGES,
    )
}

/// A new ECDSA P-256 key and a CSR for the node's serving certificate: CN
/// `system:node:<node>`, O `system:nodes`, and `names` (DNS names or IP addresses) as its
/// subjectAltNames, for the `kubernetes.io/kubelet-serving` signer.
pub fn serving_request(node: &str, names: Vec<String>) -> anyhow::Result<NodeRequest> {
    request_for(
        node,
        names,
        keelson_api::bootstrap_token::KUBELET_SERVING_SIGNER,
        &SERVING_USAGES,
    )
}

fn request_for(
    node: &str,
    names: Vec<String>,
    signer: &'static str,
    usages: &'static [&'static str],
) -> anyhow::Result<NodeRequest> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .context("generating an ECDSA P-256 key")?;
    let common_name = format!("{NODE_USER_PREFIX}{node}");
    let mut params =
        rcgen::CertificateParams::new(names).context("building the certificate request")?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, NODES_GROUP);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name.as_str());
    let csr = params
        .serialize_request(&key)
        .context("signing the certificate request")?;
    let csr_pem = csr.pem().context("encoding the certificate request")?;
    let name = digested_name(
        &key.subject_public_key_info(),
        &common_name,
        &[NODES_GROUP],
        usages,
    );
    Ok(NodeRequest {
        key_pem: key.serialize_pem(),
        csr_pem,
        name,
        signer,
        usages,
    })
}

/// The CSR name the kubelet derives from what it asks for: `node-csr-` and the unpadded
/// URL-safe base64 of a SHA-512/256 over the public key (SubjectPublicKeyInfo DER), the common
/// name, the organizations and the usages, each base64-encoded and followed by `|` (which
/// base64 never yields, so two different inputs never hash the same stream). The same key and
/// subject always give the same name, so a retried join finds its earlier request.
pub fn digested_name(
    public_key_der: &[u8],
    common_name: &str,
    organizations: &[&str],
    usages: &[&str],
) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut hash = Sha512_256::new();
    let mut write = |data: &[u8]| {
        hash.update(b64.encode(data));
        hash.update(b"|");
    };
    write(public_key_der);
    write(common_name.as_bytes());
    for org in organizations {
        write(org.as_bytes());
    }
    for usage in usages {
        write(usage.as_bytes());
    }
    format!("node-csr-{}", b64.encode(hash.finalize()))
}

impl std::fmt::Debug for NodeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key stays out of logs.
        f.debug_struct("NodeRequest")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The CertificateSigningRequest object for `request`.
pub fn csr_object(request: &NodeRequest) -> CertificateSigningRequest {
    CertificateSigningRequest {
        metadata: ObjectMeta {
            name: Some(request.name.clone()),
            ..ObjectMeta::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(request.csr_pem.clone().into_bytes()),
            signer_name: request.signer.to_owned(),
            usages: Some(request.usages.iter().map(|u| (*u).to_owned()).collect()),
            ..CertificateSigningRequestSpec::default()
        },
        status: None,
    }
}

/// Where a CertificateSigningRequest stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CsrState {
    /// Neither decided nor issued yet (or approved, the certificate not yet issued).
    Pending,
    /// Approved and issued: the PEM certificate.
    Issued(Vec<u8>),
    /// Denied by an approver: its reason and message.
    Denied(String),
    /// The signer failed: its reason and message.
    Failed(String),
}

/// The state of `csr` by its conditions and certificate (as client-go's
/// `csr.WaitForCertificate` reads them).
pub fn csr_state(csr: &CertificateSigningRequest) -> CsrState {
    let Some(status) = &csr.status else {
        return CsrState::Pending;
    };
    let detail = |c: &k8s_openapi::api::certificates::v1::CertificateSigningRequestCondition| {
        let reason = c.reason.as_deref().unwrap_or("");
        match c.message.as_deref().filter(|m| !m.is_empty()) {
            Some(message) if !reason.is_empty() => format!("{reason}: {message}"),
            Some(message) => message.to_owned(),
            None if reason.is_empty() => "no reason given".to_owned(),
            None => reason.to_owned(),
        }
    };
    let conditions = status.conditions.as_deref().unwrap_or_default();
    if let Some(denied) = conditions.iter().find(|c| c.type_ == "Denied") {
        return CsrState::Denied(detail(denied));
    }
    if let Some(failed) = conditions.iter().find(|c| c.type_ == "Failed") {
        return CsrState::Failed(detail(failed));
    }
    let approved = conditions.iter().any(|c| c.type_ == "Approved");
    match &status.certificate {
        Some(cert) if approved && !cert.0.is_empty() => CsrState::Issued(cert.0.clone()),
        _ => CsrState::Pending,
    }
}

/// Creates the CertificateSigningRequest for `request` (or finds the same request already
/// there) and waits up to `timeout` for its certificate (PEM).
pub async fn request_certificate(
    client: kube::Client,
    request: &NodeRequest,
    timeout: Duration,
) -> anyhow::Result<Vec<u8>> {
    let api: Api<CertificateSigningRequest> = Api::all(client);
    let object = csr_object(request);
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.is_already_exists() => {
            let existing = api
                .get(&request.name)
                .await
                .with_context(|| format!("reading CertificateSigningRequest {}", request.name))?;
            if existing.spec.request != object.spec.request {
                bail!(
                    "CertificateSigningRequest {} already exists with another request",
                    request.name
                );
            }
        }
        Err(kube::Error::Api(status)) if status.code == 401 => bail!(
            "the API server refused the credentials (401 Unauthorized) creating \
             CertificateSigningRequest {}: expired or deleted token?",
            request.name
        ),
        Err(error) => {
            return Err(anyhow!(crate::error_chain(&error)))
                .with_context(|| format!("creating CertificateSigningRequest {}", request.name));
        }
    }
    tracing::debug!(csr = %request.name, "waiting for the node's client certificate");
    tokio::time::timeout(timeout, wait_issued(&api, &request.name))
        .await
        .map_err(|_| {
            anyhow!(
                "CertificateSigningRequest {} was not approved and issued within {}s \
                 (is the control plane's CSR approver running? `kubectl certificate approve {}`)",
                request.name,
                timeout.as_secs(),
                request.name
            )
        })?
}

/// Lists then watches the named CSR until it is issued, denied or failed (the watch restarts
/// from the current state whenever the server ends it).
async fn wait_issued(api: &Api<CertificateSigningRequest>, name: &str) -> anyhow::Result<Vec<u8>> {
    let done = |state: CsrState| -> Option<anyhow::Result<Vec<u8>>> {
        match state {
            CsrState::Pending => None,
            CsrState::Issued(cert) => Some(Ok(cert)),
            CsrState::Denied(why) => Some(Err(anyhow!(
                "CertificateSigningRequest {name} was denied: {why}"
            ))),
            CsrState::Failed(why) => Some(Err(anyhow!(
                "CertificateSigningRequest {name} failed: {why}"
            ))),
        }
    };
    let params = WatchParams::default()
        .fields(&format!("metadata.name={name}"))
        .timeout(290);
    loop {
        let current = api
            .get(name)
            .await
            .map_err(|e| anyhow!(crate::error_chain(&e)))
            .with_context(|| format!("reading CertificateSigningRequest {name}"))?;
        if let Some(result) = done(csr_state(&current)) {
            return result;
        }
        let version = current.metadata.resource_version.unwrap_or_default();
        let stream = match api.watch(&params, &version).await {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(error = %crate::error_chain(&error), "watching the CSR; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        let mut stream = std::pin::pin!(stream);
        loop {
            match stream.try_next().await {
                Ok(Some(WatchEvent::Added(csr) | WatchEvent::Modified(csr))) => {
                    if let Some(result) = done(csr_state(&csr)) {
                        return result;
                    }
                }
                Ok(Some(WatchEvent::Deleted(_))) => {
                    bail!("CertificateSigningRequest {name} was deleted before it was issued")
                }
                Ok(Some(WatchEvent::Bookmark(_))) => {}
                // The stream ended, expired or broke: start over from a fresh read.
                Ok(Some(WatchEvent::Error(_)) | None) | Err(_) => break,
            }
        }
        // Bounds the loop's pace when the server keeps ending watches at once.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::certificates::v1::{
        CertificateSigningRequestCondition, CertificateSigningRequestStatus,
    };

    use super::*;

    #[test]
    fn digest_name_is_stable_per_key_and_subject() {
        let key = b"public key bytes";
        let name = digested_name(key, "system:node:a", &[NODES_GROUP], &USAGES);
        assert!(name.starts_with("node-csr-"), "{name}");
        // 32 bytes of SHA-512/256 in unpadded base64.
        assert_eq!(name.len(), "node-csr-".len() + 43);
        assert_eq!(
            name,
            digested_name(key, "system:node:a", &[NODES_GROUP], &USAGES)
        );
        let others = [
            digested_name(b"another key", "system:node:a", &[NODES_GROUP], &USAGES),
            digested_name(key, "system:node:b", &[NODES_GROUP], &USAGES),
            digested_name(key, "system:node:a", &[], &USAGES),
            digested_name(key, "system:node:a", &[NODES_GROUP], &["client auth"]),
            // The delimiter keeps `CN:ab,O:c` apart from `CN:a,O:bc`.
            digested_name(key, "system:node:", &["asystem:nodes"], &USAGES),
        ];
        for other in others {
            assert_ne!(name, other);
        }
    }

    #[test]
    fn request_names_its_subject_signer_and_usages() {
        let request = node_request("worker-1").expect("request");
        let object = csr_object(&request);
        assert_eq!(
            object.spec.signer_name,
            "kubernetes.io/kube-apiserver-client-kubelet"
        );
        assert_eq!(
            object.spec.usages,
            Some(vec![
                "digital signature".to_owned(),
                "client auth".to_owned()
            ])
        );
        let pem = String::from_utf8(object.spec.request.0).expect("utf-8");
        assert!(pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        let der = rustls_pki_der(&pem);
        let (_, csr) = <x509_parser::certification_request::X509CertificationRequest<'_> as
            x509_parser::prelude::FromDer<'_, _>>::from_der(&der)
                .expect("a PKCS#10 request");
        let subject = csr.certification_request_info.subject.to_string();
        assert_eq!(subject, "O=system:nodes, CN=system:node:worker-1");
        // The name is the digest of this very key.
        let spki = csr.certification_request_info.subject_pki.raw;
        assert_eq!(
            request.name,
            digested_name(spki, "system:node:worker-1", &[NODES_GROUP], &USAGES)
        );
        // A second request has a new key, so a new name.
        assert_ne!(
            node_request("worker-1").expect("request").name,
            request.name
        );
    }

    fn rustls_pki_der(pem: &str) -> Vec<u8> {
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .expect("base64")
    }

    fn with_conditions(
        conditions: &[(&str, &str, &str)],
        cert: &[u8],
    ) -> CertificateSigningRequest {
        CertificateSigningRequest {
            status: Some(CertificateSigningRequestStatus {
                certificate: (!cert.is_empty()).then(|| ByteString(cert.to_vec())),
                conditions: Some(
                    conditions
                        .iter()
                        .map(
                            |(type_, reason, message)| CertificateSigningRequestCondition {
                                type_: (*type_).to_owned(),
                                reason: Some((*reason).to_owned()),
                                message: Some((*message).to_owned()),
                                status: "True".to_owned(),
                                ..CertificateSigningRequestCondition::default()
                            },
                        )
                        .collect(),
                ),
            }),
            ..CertificateSigningRequest::default()
        }
    }

    #[test]
    fn csr_states() {
        let cases = [
            (with_conditions(&[], b""), CsrState::Pending),
            (
                with_conditions(&[("Approved", "AutoApproved", "ok")], b""),
                CsrState::Pending,
            ),
            (
                with_conditions(&[("Approved", "AutoApproved", "ok")], b"PEM"),
                CsrState::Issued(b"PEM".to_vec()),
            ),
            (with_conditions(&[], b"PEM"), CsrState::Pending),
            (
                with_conditions(&[("Denied", "NotMine", "node name taken")], b""),
                CsrState::Denied("NotMine: node name taken".to_owned()),
            ),
            (
                with_conditions(&[("Failed", "SignerError", "")], b""),
                CsrState::Failed("SignerError".to_owned()),
            ),
            (CertificateSigningRequest::default(), CsrState::Pending),
        ];
        for (csr, expected) in cases {
            assert_eq!(csr_state(&csr), expected, "{:?}", csr.status);
        }
    }
}
