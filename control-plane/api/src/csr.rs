//! PKCS#10 certificate requests as `CertificateSigningRequest.spec.request` carries them: one
//! PEM `CERTIFICATE REQUEST` block whose self-signature must verify (Kubernetes'
//! `pkg/apis/certificates` validation), and the facts the approver and signer decide on.

use ring::signature;
use x509_parser::{
    certification_request::X509CertificationRequest, oid_registry, prelude::FromDer as _,
};

/// Why a request is refused; the wording is what `spec.request` errors say.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CsrError {
    /// Not one PEM block of type `CERTIFICATE REQUEST`.
    #[error("PEM block type must be CERTIFICATE REQUEST")]
    NotPem,
    /// The DER inside does not parse.
    #[error("x509: malformed certificate request: {reason}")]
    Malformed {
        /// The parser's explanation.
        reason: String,
    },
    /// The self-signature does not verify, or uses an algorithm keelson does not check.
    #[error("x509: invalid signature: {reason}")]
    Signature {
        /// What failed.
        reason: &'static str,
    },
}

/// What a parsed, self-signed request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCsr {
    /// The subject's common names (Kubernetes reads the first as the user).
    pub common_names: Vec<String>,
    /// The subject's organizations (the groups).
    pub organizations: Vec<String>,
    /// Whether the request asks for any subjectAltName (DNS, IP, email or URI).
    pub has_subject_alt_names: bool,
    /// The DNS subjectAltNames asked for.
    pub dns_names: Vec<String>,
    /// The IP subjectAltNames asked for.
    pub ip_addresses: Vec<std::net::IpAddr>,
    /// How many email subjectAltNames it asks for.
    pub email_addresses: usize,
    /// How many URI subjectAltNames it asks for.
    pub uris: usize,
    /// The DER of the request.
    pub der: Vec<u8>,
}

/// Parses `pem` (the decoded `spec.request`) and checks its self-signature.
pub fn parse_pem(pem: &[u8]) -> Result<ParsedCsr, CsrError> {
    let (rest, block) = x509_parser::pem::parse_x509_pem(pem).map_err(|_| CsrError::NotPem)?;
    if block.label != "CERTIFICATE REQUEST" {
        return Err(CsrError::NotPem);
    }
    // Kubernetes takes the first block; trailing text is ignored as pem.Decode does.
    let _ = rest;
    let der = block.contents;
    let (_, csr) = X509CertificationRequest::from_der(&der).map_err(|e| CsrError::Malformed {
        reason: e.to_string(),
    })?;
    verify_self_signature(&csr)?;
    let info = &csr.certification_request_info;
    let strings = |oid: &oid_registry::Oid<'_>| {
        info.subject
            .iter_by_oid(oid)
            .filter_map(|a| a.as_str().ok().map(str::to_owned))
            .collect::<Vec<_>>()
    };
    let (cn, org) = (
        oid_registry::OID_X509_COMMON_NAME,
        oid_registry::OID_X509_ORGANIZATION_NAME,
    );
    let common_names = strings(&cn);
    let organizations = strings(&org);
    let (mut dns_names, mut ip_addresses, mut email_addresses, mut uris, mut others) =
        (Vec::new(), Vec::new(), 0, 0, 0);
    for extension in csr.requested_extensions().into_iter().flatten() {
        let x509_parser::extensions::ParsedExtension::SubjectAlternativeName(san) = extension
        else {
            continue;
        };
        for name in &san.general_names {
            use x509_parser::extensions::GeneralName;
            match name {
                GeneralName::DNSName(dns) => dns_names.push((*dns).to_owned()),
                GeneralName::IPAddress(bytes) => match ip_of(bytes) {
                    Some(ip) => ip_addresses.push(ip),
                    None => others += 1,
                },
                GeneralName::RFC822Name(_) => email_addresses += 1,
                GeneralName::URI(_) => uris += 1,
                _ => others += 1,
            }
        }
    }
    let has_subject_alt_names =
        !dns_names.is_empty() || !ip_addresses.is_empty() || email_addresses + uris + others > 0;
    Ok(ParsedCsr {
        common_names,
        organizations,
        has_subject_alt_names,
        dns_names,
        ip_addresses,
        email_addresses,
        uris,
        der,
    })
}

/// An IP subjectAltName's 4 or 16 bytes as an address.
fn ip_of(bytes: &[u8]) -> Option<std::net::IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        _ => None,
    }
}

fn verify_self_signature(csr: &X509CertificationRequest<'_>) -> Result<(), CsrError> {
    let algorithm = &csr.signature_algorithm.algorithm;
    let spki = &csr.certification_request_info.subject_pki;
    let verifier: &dyn signature::VerificationAlgorithm =
        if *algorithm == oid_registry::OID_SIG_ECDSA_WITH_SHA256 {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok());
            if curve == Some(oid_registry::OID_EC_P256) {
                &signature::ECDSA_P256_SHA256_ASN1
            } else {
                &signature::ECDSA_P384_SHA256_ASN1
            }
        } else if *algorithm == oid_registry::OID_SIG_ECDSA_WITH_SHA384 {
            &signature::ECDSA_P384_SHA384_ASN1
        } else if *algorithm == oid_registry::OID_PKCS1_SHA256WITHRSA {
            &signature::RSA_PKCS1_2048_8192_SHA256
        } else if *algorithm == oid_registry::OID_PKCS1_SHA384WITHRSA {
            &signature::RSA_PKCS1_2048_8192_SHA384
        } else if *algorithm == oid_registry::OID_PKCS1_SHA512WITHRSA {
            &signature::RSA_PKCS1_2048_8192_SHA512
        } else if *algorithm == oid_registry::OID_SIG_ED25519 {
            &signature::ED25519
        } else {
            return Err(CsrError::Signature {
                reason: "unsupported signature algorithm",
            });
        };
    signature::UnparsedPublicKey::new(verifier, &spki.subject_public_key.data)
        .verify(
            csr.certification_request_info.raw,
            &csr.signature_value.data,
        )
        .map_err(|_| CsrError::Signature {
            reason: "the self-signature does not verify",
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -subj
    /// "/O=system:nodes/CN=system:node:n1"`, made once.
    const NODE_CSR: &str = include_str!("csr/testdata/node.csr");

    #[test]
    fn node_requests_parse_with_their_subject() {
        let parsed = parse_pem(NODE_CSR.as_bytes()).expect("a valid request");
        assert_eq!(parsed.common_names, ["system:node:n1"]);
        assert_eq!(parsed.organizations, ["system:nodes"]);
        assert!(!parsed.has_subject_alt_names);
        assert!(parsed.dns_names.is_empty() && parsed.ip_addresses.is_empty());
    }

    #[test]
    fn serving_requests_list_their_alt_names() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["n1".to_owned(), "10.0.0.7".to_owned()])
                .expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "system:node:n1");
        params.subject_alt_names.push(rcgen::SanType::Rfc822Name(
            "a@example.com".try_into().expect("email"),
        ));
        let pem = params
            .serialize_request(&key)
            .expect("request")
            .pem()
            .expect("pem");
        let parsed = parse_pem(pem.as_bytes()).expect("a valid request");
        assert!(parsed.has_subject_alt_names);
        assert_eq!(parsed.dns_names, ["n1"]);
        assert_eq!(parsed.ip_addresses, [std::net::IpAddr::from([10, 0, 0, 7])]);
        assert_eq!((parsed.email_addresses, parsed.uris), (1, 0));
    }

    #[test]
    fn bad_requests_are_refused_with_kubernetes_wording() {
        assert_eq!(parse_pem(b"garbage"), Err(CsrError::NotPem));
        let cert = NODE_CSR.replace("CERTIFICATE REQUEST", "CERTIFICATE");
        assert_eq!(parse_pem(cert.as_bytes()), Err(CsrError::NotPem));
        // Flip one byte of the signature (the end of the base64 body).
        let mut lines: Vec<String> = NODE_CSR.lines().map(str::to_owned).collect();
        let last_body = lines.len() - 2;
        let line = &mut lines[last_body];
        let flipped = if line.starts_with('A') { 'B' } else { 'A' };
        line.replace_range(0..1, &flipped.to_string());
        let tampered = lines.join("\n");
        let error = parse_pem(tampered.as_bytes()).expect_err("tampered");
        assert!(
            matches!(
                error,
                CsrError::Signature { .. } | CsrError::Malformed { .. }
            ),
            "{error}"
        );
    }
}
