//! Bootstrap tokens as kubeadm uses them to join a node (stand-in of the shared module; the
//! control plane's side owns the full version).
//!
//! A token is `ID.SECRET` (`[a-z0-9]{6}.[a-z0-9]{16}`). The control plane signs the
//! `kubeconfig` of the `cluster-info` ConfigMap in `kube-public` with every token (a detached
//! HS256 JWS keyed by the secret, `kid` the token ID, stored as `jws-kubeconfig-<ID>`), so that a
//! joining node that knows the token can trust that kubeconfig's CA, which it then also checks
//! against the CA hash it was given (`sha256:` + the hex SHA-256 of the CA's
//! SubjectPublicKeyInfo, DER).

use std::fmt;

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

/// The `type` of a bootstrap token Secret.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// The name of a bootstrap token Secret is this prefix and the token ID.
pub const SECRET_PREFIX: &str = "bootstrap-token-";
/// The ConfigMap in [`KUBE_PUBLIC`] whose `kubeconfig` key names the cluster and its CA.
pub const CLUSTER_INFO: &str = "cluster-info";
/// The namespace anyone may read [`CLUSTER_INFO`] in.
pub const KUBE_PUBLIC: &str = "kube-public";
/// The key of a token's signature in [`CLUSTER_INFO`] is this prefix and the token ID.
pub const JWS_PREFIX: &str = "jws-kubeconfig-";
/// The group of every bootstrap token's user.
pub const BOOTSTRAP_GROUP: &str = "system:bootstrappers";
/// The signer of kubelets' client certificates.
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";

const ID_LEN: usize = 6;
const SECRET_LEN: usize = 16;

/// Why a token, a signature or a certificate was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BootstrapTokenError {
    /// The text is not `[a-z0-9]{6}.[a-z0-9]{16}`.
    #[error("a bootstrap token must look like abcdef.0123456789abcdef")]
    Malformed,
    /// The detached JWS does not have the form `HEADER..SIGNATURE`.
    #[error("the signature is not a detached JWS (HEADER..SIGNATURE)")]
    MalformedSignature,
    /// The signature was not made with this token over this payload.
    #[error("the signature does not match the token")]
    SignatureMismatch,
    /// The certificate is not DER X.509.
    #[error("the CA certificate cannot be parsed: {reason}")]
    Certificate {
        /// What the parser said.
        reason: String,
    },
}

/// A bootstrap token: its public ID and its secret.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    /// The public part (`[a-z0-9]{6}`).
    pub id: String,
    /// The secret part (`[a-z0-9]{16}`).
    pub secret: String,
}

impl fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret stays out of logs.
        write!(f, "BootstrapToken({}.<redacted>)", self.id)
    }
}

impl fmt::Display for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.id, self.secret)
    }
}

impl std::str::FromStr for BootstrapToken {
    type Err = BootstrapTokenError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (id, secret) = text.split_once('.').ok_or(BootstrapTokenError::Malformed)?;
        let valid = |part: &str, len: usize| {
            part.len() == len
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        };
        if !valid(id, ID_LEN) || !valid(secret, SECRET_LEN) {
            return Err(BootstrapTokenError::Malformed);
        }
        Ok(Self {
            id: id.to_owned(),
            secret: secret.to_owned(),
        })
    }
}

/// HMAC-SHA256 (RFC 2104) of `message` under `key`.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// The detached JWS (`HEADER..SIGNATURE`, RFC 7515 appendix F) of `payload` signed with HS256
/// under the token's secret, the token ID as `kid`.
pub fn sign_detached(token: &BootstrapToken, payload: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(format!(r#"{{"alg":"HS256","kid":"{}"}}"#, token.id));
    let payload = b64.encode(payload);
    let signing_input = format!("{header}.{payload}");
    let signature = hmac_sha256(token.secret.as_bytes(), signing_input.as_bytes());
    format!("{header}..{}", b64.encode(signature))
}

/// Checks that `jws` is [`sign_detached`] of `payload` with `token`.
pub fn verify_detached(
    token: &BootstrapToken,
    payload: &[u8],
    jws: &str,
) -> Result<(), BootstrapTokenError> {
    let mut parts = jws.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(header), Some(""), Some(signature), None)
            if !header.is_empty() && !signature.is_empty() => {}
        _ => return Err(BootstrapTokenError::MalformedSignature),
    }
    let expected = sign_detached(token, payload);
    // Compared in full whatever differs first.
    let same = expected.len() == jws.len()
        && expected
            .bytes()
            .zip(jws.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        Err(BootstrapTokenError::SignatureMismatch)
    }
}

/// The CA pin of a DER certificate: `sha256:` and the lower-case hex SHA-256 of its
/// SubjectPublicKeyInfo (as `kubeadm token create --print-join-command` prints it).
pub fn ca_cert_hash(cert_der: &[u8]) -> Result<String, BootstrapTokenError> {
    use std::fmt::Write as _;
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).map_err(|e| {
        BootstrapTokenError::Certificate {
            reason: e.to_string(),
        }
    })?;
    let digest = Sha256::digest(cert.public_key().raw);
    let mut text = String::with_capacity(7 + 64);
    text.push_str("sha256:");
    for byte in digest {
        let _ = write!(text, "{byte:02x}");
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> BootstrapToken {
        "abcdef.0123456789abcdef".parse().expect("valid token")
    }

    #[test]
    fn token_parsing() {
        let cases = [
            ("abcdef.0123456789abcdef", true),
            ("abcdef0123456789abcdef", false),
            ("ABCDEF.0123456789abcdef", false),
            ("abcde.0123456789abcdef", false),
            ("abcdef.0123456789abcde", false),
            ("abcdef.0123456789abcdef.", false),
            ("abcdef.0123456789abcdeg0", false),
            ("", false),
        ];
        for (text, ok) in cases {
            let parsed = text.parse::<BootstrapToken>();
            assert_eq!(parsed.is_ok(), ok, "{text:?}: {parsed:?}");
            if let Ok(token) = parsed {
                assert_eq!(token.to_string(), text);
            } else {
                assert_eq!(
                    parsed.err().map(|e| e.to_string()).as_deref(),
                    Some("a bootstrap token must look like abcdef.0123456789abcdef")
                );
            }
        }
    }

    #[test]
    fn secret_not_in_debug() {
        assert_eq!(
            format!("{:?}", token()),
            "BootstrapToken(abcdef.<redacted>)"
        );
    }

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn jws_round_trip_and_tampering() {
        let payload = b"apiVersion: v1\nkind: Config\n";
        let jws = sign_detached(&token(), payload);
        assert!(
            jws.starts_with("eyJhbGciOiJIUzI1NiIsImtpZCI6ImFiY2RlZiJ9.."),
            "{jws}"
        );
        let other: BootstrapToken = "abcdef.fedcba9876543210".parse().expect("valid");
        type Case<'a> = (
            &'a BootstrapToken,
            &'a [u8],
            &'a str,
            Result<(), BootstrapTokenError>,
        );
        let cases: [Case<'_>; 5] = [
            (&token(), payload, &jws, Ok(())),
            (
                &token(),
                b"apiVersion: v1\nkind: Config\n# evil\n",
                &jws,
                Err(BootstrapTokenError::SignatureMismatch),
            ),
            (
                &other,
                payload,
                &jws,
                Err(BootstrapTokenError::SignatureMismatch),
            ),
            (
                &token(),
                payload,
                "abc",
                Err(BootstrapTokenError::MalformedSignature),
            ),
            (
                &token(),
                payload,
                "a.b.c",
                Err(BootstrapTokenError::MalformedSignature),
            ),
        ];
        for (token, payload, jws, expected) in cases {
            assert_eq!(verify_detached(token, payload, jws), expected, "{jws}");
        }
    }
    /// A P-256 CA made with `openssl req -x509`; its pin computed once with
    /// `openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | sha256sum`.
    const CA_DER_BASE64: &str = "MIIBfzCCASWgAwIBAgIURMC2UjR8omCDTG32oPWnu1EcfCIwCgYIKoZIzj0EAwIwFTETMBEGA1UEAwwKa3ViZXJuZXRlczAeFw0yNjEyMDYxOTE3NDlaFw0zNjEyMDMxOTE3NDlaMBUxEzARBgNVBAMMCmt1YmVybmV0ZXMwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAAQFvyceHJlLl4xUi8BEMhmUc0ELxRkoF9ejeBADkK2SNAwhoVps2aWrmzdSCaGjZCsTp+oY+h18AiwN58tBNMgto1MwUTAdBgNVHQ4EFgQUhIFiaLxkcjyGSPgKW2XXOTnIgJ4wHwYDVR0jBBgwFoAUhIFiaLxkcjyGSPgKW2XXOTnIgJ4wDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBFAiAvaXTXwc4P+WvuLdhpKBF6nehHljw1K0byR2RmY5RXHQIhALLT+rF8JCJib0wPWhWyEI9sAM8JUNlLoYaM7GaMJlqa";

    #[test]
    fn ca_hash_matches_openssl() {
        let der = base64::engine::general_purpose::STANDARD
            .decode(CA_DER_BASE64)
            .expect("base64");
        assert_eq!(
            ca_cert_hash(&der).as_deref(),
            Ok("sha256:204fa77036e5bc4c16d889019f73d0c42762c22fb41b2358c4fbab009a4f22fd")
        );
        assert!(matches!(
            ca_cert_hash(b"not a certificate"),
            Err(BootstrapTokenError::Certificate { .. })
        ));
    }
}
