//! CSR signing: approved requests for the `kubernetes.io/kube-apiserver-client-kubelet` and
//! `kubernetes.io/kubelet-serving` signers get a certificate from the cluster CA in `status.certificate` (Kubernetes'
//! `pkg/controller/certificates/signer`). The certificate lives `min(spec.expirationSeconds,
//! --cluster-signing-duration)`, starts 5 minutes in the past for clock skew, ends no later than
//! the CA, and carries the subject and usages the request asked for. A request the signer must
//! refuse gets a `Failed` condition (reason `SignerValidationFailure`) instead.

use std::{sync::Arc, time::Duration};

use k8s_openapi::{
    ByteString,
    api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestCondition},
    apimachinery::pkg::apis::meta::v1::Time,
};
use keelson_api::bootstrap_token::{KUBELET_CLIENT_SIGNER, KUBELET_SERVING_SIGNER};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{Controller, controller::Action, watcher},
};
use rcgen::{
    CertificateSigningRequestParams, ExtendedKeyUsagePurpose, Issuer, KeyPair, KeyUsagePurpose,
};
use serde_json::json;

use crate::{ApiContext, Result, csrapproving};

/// Kubernetes' `--cluster-signing-duration` default: one year.
pub const DEFAULT_SIGNING_DURATION: Duration = Duration::from_secs(8760 * 3600);
/// How far back certificates start, for clocks that lag.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// The cluster CA, as the signer uses it.
pub struct CertificateAuthority {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
    ca_not_after: jiff::Timestamp,
    /// The longest lifetime a certificate gets (`--cluster-signing-duration`).
    pub max_duration: Duration,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("ca_not_after", &self.ca_not_after)
            .field("max_duration", &self.max_duration)
            .finish_non_exhaustive()
    }
}

/// Why the CA cannot be used or a request cannot be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The CA certificate or key is unusable.
    #[error("the cluster CA cannot sign: {reason}")]
    Ca {
        /// What is wrong.
        reason: String,
    },
    /// The request is not one this signer issues (the message goes into the `Failed`
    /// condition).
    #[error("{0}")]
    Invalid(String),
}

impl CertificateAuthority {
    /// The CA from its PEM certificate and PKCS#8 key.
    pub fn new(ca_pem: &str, ca_key_pem: &str, max_duration: Duration) -> Result<Self, SignError> {
        let ca = |reason: String| SignError::Ca { reason };
        let key = KeyPair::from_pem(ca_key_pem).map_err(|e| ca(e.to_string()))?;
        let issuer = Issuer::from_ca_cert_pem(ca_pem, key).map_err(|e| ca(e.to_string()))?;
        let (_, pem) =
            x509_parser::pem::parse_x509_pem(ca_pem.as_bytes()).map_err(|e| ca(e.to_string()))?;
        let cert = pem.parse_x509().map_err(|e| ca(e.to_string()))?;
        let ca_not_after = jiff::Timestamp::from_second(cert.validity().not_after.timestamp())
            .map_err(|e| ca(e.to_string()))?;
        Ok(Self {
            ca_pem: ca_pem.to_owned(),
            issuer,
            ca_not_after,
            max_duration,
        })
    }

    /// The CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The validity window a certificate requested for `expiration_seconds` gets at `now`.
    pub fn window(
        &self,
        expiration_seconds: Option<i32>,
        now: jiff::Timestamp,
    ) -> (jiff::Timestamp, jiff::Timestamp) {
        let requested = expiration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map(Duration::from_secs);
        let lifetime = requested.map_or(self.max_duration, |r| r.min(self.max_duration));
        let not_after = now
            .checked_add(lifetime)
            .unwrap_or(self.ca_not_after)
            .min(self.ca_not_after);
        let not_before = now.checked_sub(BACKDATE).unwrap_or(now);
        (not_before, not_after)
    }

    /// Signs the approved `csr` at `now`: the PEM certificate.
    pub fn sign(
        &self,
        csr: &CertificateSigningRequest,
        now: jiff::Timestamp,
    ) -> Result<String, SignError> {
        if csr.spec.signer_name == KUBELET_SERVING_SIGNER {
            csrapproving::kubelet_serving_request(&csr.spec).map_err(SignError::Invalid)?;
        } else {
            csrapproving::kubelet_client_node(&csr.spec).map_err(SignError::Invalid)?;
        }
        let pem = std::str::from_utf8(&csr.spec.request.0)
            .map_err(|_| SignError::Invalid("the request is not PEM text".into()))?;
        let mut request = CertificateSigningRequestParams::from_pem(pem)
            .map_err(|e| SignError::Invalid(format!("cannot parse the request: {e}")))?;
        let (not_before, not_after) = self.window(csr.spec.expiration_seconds, now);
        let params = &mut request.params;
        params.not_before = offset(not_before)?;
        params.not_after = offset(not_after)?;
        params.is_ca = rcgen::IsCa::ExplicitNoCa;
        params.use_authority_key_identifier_extension = true;
        params.key_usages.clear();
        params.extended_key_usages.clear();
        for usage in csr.spec.usages.as_deref().unwrap_or_default() {
            match usage.as_str() {
                "digital signature" => params.key_usages.push(KeyUsagePurpose::DigitalSignature),
                "key encipherment" => params.key_usages.push(KeyUsagePurpose::KeyEncipherment),
                "client auth" => params
                    .extended_key_usages
                    .push(ExtendedKeyUsagePurpose::ClientAuth),
                "server auth" => params
                    .extended_key_usages
                    .push(ExtendedKeyUsagePurpose::ServerAuth),
                other => return Err(SignError::Invalid(format!("usage {other:?} not allowed"))),
            }
        }
        let cert = request.signed_by(&self.issuer).map_err(|e| SignError::Ca {
            reason: e.to_string(),
        })?;
        Ok(cert.pem())
    }
}

fn offset(t: jiff::Timestamp) -> Result<time::OffsetDateTime, SignError> {
    time::OffsetDateTime::from_unix_timestamp(t.as_second()).map_err(|e| SignError::Ca {
        reason: e.to_string(),
    })
}

/// What the signer does with a request: nothing, sign it, or mark it failed.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Not ours, not approved, already issued or failed.
    Skip,
    /// Issue a certificate.
    Sign,
}

/// Whether the signer acts on `csr`: approved, of this signer, no certificate and not failed.
pub fn decide(csr: &CertificateSigningRequest) -> Decision {
    let status = csr.status.as_ref();
    let has = |t: &str| {
        status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == t && c.status == "True"))
    };
    let issued = status
        .and_then(|s| s.certificate.as_ref())
        .is_some_and(|c| !c.0.is_empty());
    let ours = [KUBELET_CLIENT_SIGNER, KUBELET_SERVING_SIGNER];
    if !ours.contains(&csr.spec.signer_name.as_str())
        || !has("Approved")
        || has("Denied")
        || has("Failed")
        || issued
    {
        Decision::Skip
    } else {
        Decision::Sign
    }
}

struct Ctx {
    client: Client,
    settings: Arc<crate::BootstrapSettings>,
}

/// Runs the controller with the cluster CA of `settings`.
pub async fn run(client: Client, settings: Arc<crate::BootstrapSettings>) -> anyhow::Result<()> {
    let api = Api::<CertificateSigningRequest>::all(client.clone());
    let controller = Controller::new(api, watcher::Config::default());
    let ctx = Arc::new(Ctx { client, settings });
    crate::drive("csrsigning", controller.run(reconcile, crate::retry, ctx)).await;
    Ok(())
}

async fn reconcile(csr: Arc<CertificateSigningRequest>, ctx: Arc<Ctx>) -> Result<Action> {
    if decide(&csr) == Decision::Skip {
        return Ok(Action::await_change());
    }
    let name = csr.name_any();
    let api = Api::<CertificateSigningRequest>::all(ctx.client.clone());
    let status = match ctx.settings.ca.sign(&csr, jiff::Timestamp::now()) {
        Ok(pem) => {
            tracing::info!(
                csr = name,
                signer = csr.spec.signer_name,
                "issued a certificate"
            );
            json!({"status": {"certificate": ByteString(pem.into_bytes())}})
        }
        Err(SignError::Invalid(message)) => {
            let mut conditions = csr
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            let now = Time(jiff::Timestamp::now());
            conditions.push(CertificateSigningRequestCondition {
                type_: "Failed".into(),
                status: "True".into(),
                reason: Some("SignerValidationFailure".into()),
                message: Some(message.clone()),
                last_update_time: Some(now.clone()),
                last_transition_time: Some(now),
            });
            tracing::info!(csr = name, message, "refused to sign");
            json!({"status": {"conditions": conditions}})
        }
        Err(error) => return Err(crate::Error::Invalid(error.to_string())),
    };
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .action(|| format!("write the status of CertificateSigningRequest {name}"))?;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::certificates::v1::{
        CertificateSigningRequestSpec, CertificateSigningRequestStatus,
    };
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa};

    use super::*;

    const NODE_CSR: &str = include_str!("testdata/node-n1.csr");

    fn ca(max: Duration) -> CertificateAuthority {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "test-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.not_after = rcgen::date_time_ymd(2040, 1, 1);
        let cert = params.self_signed(&key).expect("self-signed");
        CertificateAuthority::new(&cert.pem(), &key.serialize_pem(), max).expect("a usable CA")
    }

    fn approved(expiration_seconds: Option<i32>) -> CertificateSigningRequest {
        CertificateSigningRequest {
            spec: CertificateSigningRequestSpec {
                request: ByteString(NODE_CSR.as_bytes().to_vec()),
                signer_name: KUBELET_CLIENT_SIGNER.into(),
                usages: Some(vec!["digital signature".into(), "client auth".into()]),
                expiration_seconds,
                ..Default::default()
            },
            status: Some(CertificateSigningRequestStatus {
                conditions: Some(vec![CertificateSigningRequestCondition {
                    type_: "Approved".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                certificate: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn lifetime_is_the_shorter_of_request_and_flag() {
        let now: jiff::Timestamp = "2030-01-01T00:00:00Z".parse().expect("time");
        let ca = ca(DEFAULT_SIGNING_DURATION);
        let at = |s: &str| s.parse::<jiff::Timestamp>().expect("time");
        let cases = [
            (None, "2030-12-31T23:55:00Z", "2031-01-01T00:00:00Z"),
            (Some(600), "2029-12-31T23:55:00Z", "2030-01-01T00:10:00Z"),
            (
                Some(i32::MAX),
                "2029-12-31T23:55:00Z",
                "2031-01-01T00:00:00Z",
            ),
        ];
        for (seconds, before, after) in cases {
            let (nb, na) = ca.window(seconds, now);
            assert_eq!(nb, at("2029-12-31T23:55:00Z"), "{seconds:?}");
            assert_eq!(na, at(after), "{seconds:?} {before}");
        }
        let minutes = self::ca(Duration::from_secs(15 * 60));
        assert_eq!(
            minutes.window(Some(3600), now).1,
            at("2030-01-01T00:15:00Z")
        );
        // Never past the CA's own end.
        assert_eq!(
            ca.window(None, at("2039-06-01T00:00:00Z")).1,
            at("2040-01-01T00:00:00Z")
        );
    }

    #[test]
    fn signs_approved_kubelet_client_requests() {
        let ca = ca(DEFAULT_SIGNING_DURATION);
        let now = jiff::Timestamp::now();
        let csr = approved(Some(3600));
        assert_eq!(decide(&csr), Decision::Sign);
        let pem = ca.sign(&csr, now).expect("signed");
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("PEM");
        let cert = block.parse_x509().expect("a certificate");
        assert_eq!(
            cert.subject().to_string(),
            "O=system:nodes, CN=system:node:n1"
        );
        assert_eq!(cert.issuer().to_string(), "CN=test-ca");
        let lifetime =
            cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert_eq!(lifetime, 3600 + 300);
        let eku = cert.extended_key_usage().expect("parses").expect("present");
        assert!(eku.value.client_auth && !eku.value.server_auth);

        let mut server = approved(None);
        server.spec.usages = Some(vec!["server auth".into()]);
        assert!(matches!(ca.sign(&server, now), Err(SignError::Invalid(_))));
    }

    #[test]
    fn signs_serving_certificates_with_their_names() {
        let ca = ca(DEFAULT_SIGNING_DURATION);
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params =
            CertificateParams::new(vec!["n1".to_owned(), "10.0.0.7".to_owned()]).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "system:nodes");
        params
            .distinguished_name
            .push(DnType::CommonName, "system:node:n1");
        let pem = params
            .serialize_request(&key)
            .expect("request")
            .pem()
            .expect("pem");
        let mut csr = approved(None);
        csr.spec.signer_name = KUBELET_SERVING_SIGNER.into();
        csr.spec.request = ByteString(pem.into_bytes());
        csr.spec.usages = Some(vec!["digital signature".into(), "server auth".into()]);
        assert_eq!(decide(&csr), Decision::Sign);
        let signed = ca.sign(&csr, jiff::Timestamp::now()).expect("signed");
        let (_, block) = x509_parser::pem::parse_x509_pem(signed.as_bytes()).expect("PEM");
        let cert = block.parse_x509().expect("a certificate");
        let eku = cert.extended_key_usage().expect("parses").expect("present");
        assert!(eku.value.server_auth && !eku.value.client_auth);
        let san = cert
            .subject_alternative_name()
            .expect("parses")
            .expect("present");
        let names: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            names,
            ["DNSName(n1)", "IPAddress(0a:00:00:07)"],
            "{names:?}"
        );
        // A client request sent to the serving signer is refused with Kubernetes' words.
        let mut client = approved(None);
        client.spec.signer_name = KUBELET_SERVING_SIGNER.into();
        client.spec.usages = Some(vec!["digital signature".into(), "server auth".into()]);
        match ca.sign(&client, jiff::Timestamp::now()) {
            Err(SignError::Invalid(message)) => {
                assert_eq!(message, "DNS or IP subjectAltName is required");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn skips_what_is_not_its_to_sign() {
        let mut pending = approved(None);
        pending.status = None;
        let mut issued = approved(None);
        if let Some(s) = issued.status.as_mut() {
            s.certificate = Some(ByteString(b"x".to_vec()));
        }
        let mut other = approved(None);
        other.spec.signer_name = "example.com/signer".into();
        for csr in [pending, issued, other] {
            assert_eq!(decide(&csr), Decision::Skip);
        }
    }
}
