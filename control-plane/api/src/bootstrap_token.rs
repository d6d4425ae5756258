//! Bootstrap tokens, kubeadm's way of letting a new node join: the token format, the detached
//! JWS that signs `kube-public/cluster-info`, and the CA public-key pin a joining node checks.
//!
//! Everything here is pure (no IO, no clock: callers pass `now`), so the API server's
//! authenticator, the `bootstrapsigner` and `tokencleaner` controllers, `token create` and the
//! node agent's `join` share one reading of the protocol. Checked against Kubernetes'
//! `k8s.io/cluster-bootstrap` (`token/api/types.go`, `token/jws/jws.go`, `token/util`,
//! `secret/util`) and kubeadm's `util/pubkeypin`.
//!
//! A token is `<id>.<secret>`: six then sixteen characters of `[a-z0-9]`. It lives in the Secret
//! `kube-system/bootstrap-token-<id>` of type [`SECRET_TYPE`], whose string data holds
//! `token-id`, `token-secret`, an optional RFC 3339 `expiration`, and the `usage-bootstrap-*`
//! flags (only the exact value `"true"` turns one on).

use std::{collections::BTreeMap, fmt, str::FromStr};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ring::{digest, hmac};

/// The Secret type of bootstrap tokens.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// Bootstrap-token Secrets are named this prefix plus the token id, in `kube-system`.
pub const SECRET_PREFIX: &str = "bootstrap-token-";
/// The namespace bootstrap-token Secrets live in.
pub const SECRET_NAMESPACE: &str = "kube-system";
/// The ConfigMap (in [`KUBE_PUBLIC`]) whose `kubeconfig` key tells a joining node where the
/// cluster is and which CA it uses.
pub const CLUSTER_INFO: &str = "cluster-info";
/// The key of [`CLUSTER_INFO`] holding the kubeconfig.
pub const KUBECONFIG_KEY: &str = "kubeconfig";
/// The namespace anyone may read [`CLUSTER_INFO`] in.
pub const KUBE_PUBLIC: &str = "kube-public";
/// [`CLUSTER_INFO`] keys named this prefix plus a token id hold the detached JWS of the
/// kubeconfig value, signed with that token.
pub const JWS_PREFIX: &str = "jws-kubeconfig-";
/// The group every bootstrap-token user is in.
pub const BOOTSTRAP_GROUP: &str = "system:bootstrappers";
/// Bootstrap-token users are named this prefix plus the token id.
pub const BOOTSTRAP_USER_PREFIX: &str = "system:bootstrap:";
/// The signer of kubelet (node agent) client certificates.
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The signer of kubelet (node agent) serving certificates, which the API server verifies when
/// it connects to a node for logs, exec, attach, port-forward and proxying.
pub const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";

/// Secret data key: the token id.
pub const TOKEN_ID_KEY: &str = "token-id";
/// Secret data key: the token secret.
pub const TOKEN_SECRET_KEY: &str = "token-secret";
/// Secret data key: when the token expires (RFC 3339, UTC).
pub const EXPIRATION_KEY: &str = "expiration";
/// Secret data key: what the token is for, for people.
pub const DESCRIPTION_KEY: &str = "description";
/// Secret data key: comma-separated groups besides [`BOOTSTRAP_GROUP`].
pub const EXTRA_GROUPS_KEY: &str = "auth-extra-groups";
/// Secret data key: `"true"` lets the token sign [`CLUSTER_INFO`].
pub const USAGE_SIGNING_KEY: &str = "usage-bootstrap-signing";
/// Secret data key: `"true"` lets the token authenticate to the API.
pub const USAGE_AUTHENTICATION_KEY: &str = "usage-bootstrap-authentication";

const ID_LEN: usize = 6;
const SECRET_LEN: usize = 16;
/// The token alphabet.
const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// Why a token, a signature, a certificate or a pin is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BootstrapTokenError {
    /// The text is not `<6 chars>.<16 chars>` of `[a-z0-9]`. The text itself is not kept: it may
    /// be a mistyped secret.
    #[error("the bootstrap token does not match the format [a-z0-9]{{6}}.[a-z0-9]{{16}}")]
    InvalidToken,
    /// The JWS is not `<header>..<signature>` (a detached compact serialization).
    #[error("the JWS is not a detached compact serialization (header..signature)")]
    MalformedJws,
    /// The JWS does not match the payload and the token.
    #[error("the JWS signature does not match the content and the token {token_id}")]
    SignatureMismatch {
        /// The id of the token the signature was checked with.
        token_id: String,
    },
    /// The certificate's DER does not parse.
    #[error("cannot parse the CA certificate: {reason}")]
    Certificate {
        /// The parser's explanation.
        reason: String,
    },
    /// A CA pin is not `sha256:<64 hex digits>`.
    #[error("the CA certificate hash {value:?} is not of the form sha256:<64 hex digits>")]
    InvalidCaCertHash {
        /// The pin as given.
        value: String,
    },
    /// An `auth-extra-groups` entry does not start with `system:bootstrappers:`.
    #[error(
        "bootstrap group {group:?} is invalid (must match system:bootstrappers:[a-z0-9:-]{{0,255}}[a-z0-9])"
    )]
    InvalidExtraGroup {
        /// The group as written.
        group: String,
    },
}

/// A bootstrap token `<id>.<secret>`. `Debug` shows the id only.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    /// The public part: six characters of `[a-z0-9]`.
    pub id: String,
    /// The private part: sixteen characters of `[a-z0-9]`.
    pub secret: String,
}

impl fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BootstrapToken")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl fmt::Display for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.id, self.secret)
    }
}

fn token_chars(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Whether `id` is a valid token id (`[a-z0-9]{6}`).
pub fn is_token_id(id: &str) -> bool {
    token_chars(id, ID_LEN)
}

impl FromStr for BootstrapToken {
    type Err = BootstrapTokenError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (id, secret) = s.split_once('.').ok_or(BootstrapTokenError::InvalidToken)?;
        if !token_chars(id, ID_LEN) || !token_chars(secret, SECRET_LEN) {
            return Err(BootstrapTokenError::InvalidToken);
        }
        Ok(Self {
            id: id.to_owned(),
            secret: secret.to_owned(),
        })
    }
}

impl BootstrapToken {
    /// A fresh token from a source of random bytes (callers pass the system's CSPRNG). Bytes
    /// that would bias the alphabet are skipped; the source is asked at most 4096 times, which a
    /// uniform source exhausts with probability far below 2^-1000.
    pub fn from_random(mut next_byte: impl FnMut() -> u8) -> Self {
        // 252 = 7 * 36: bytes at or above it would make the first characters likelier.
        let mut chars = String::with_capacity(ID_LEN + SECRET_LEN);
        for _ in 0..4096 {
            if chars.len() == ID_LEN + SECRET_LEN {
                break;
            }
            let byte = next_byte();
            if byte < 252 {
                chars.push(char::from(ALPHABET[usize::from(byte % 36)]));
            }
        }
        while chars.len() < ID_LEN + SECRET_LEN {
            chars.push('0');
        }
        let secret = chars.split_off(ID_LEN);
        Self { id: chars, secret }
    }

    /// The name of the Secret that stores this token (`bootstrap-token-<id>`).
    pub fn secret_name(&self) -> String {
        format!("{SECRET_PREFIX}{}", self.id)
    }

    /// The user this token authenticates as (`system:bootstrap:<id>`).
    pub fn user_name(&self) -> String {
        format!("{BOOTSTRAP_USER_PREFIX}{}", self.id)
    }
}

/// The JWS protected header kube's go-jose writes: its keys in sorted order, no spaces.
fn jws_header(token_id: &str) -> String {
    let header = format!(r#"{{"alg":"HS256","kid":"{token_id}"}}"#);
    URL_SAFE_NO_PAD.encode(header)
}

/// The HMAC key: the secret, zero-padded to 32 bytes as Kubernetes does (go-jose refuses
/// shorter HS256 keys).
fn hmac_key(token: &BootstrapToken) -> hmac::Key {
    let mut key = token.secret.as_bytes().to_vec();
    if key.len() < 32 {
        key.resize(32, 0);
    }
    hmac::Key::new(hmac::HMAC_SHA256, &key)
}

/// The detached JWS (RFC 7515 appendix F) of `payload` signed with `token`: HS256, `kid` = the
/// token id, `<b64url header>..<b64url signature>` — byte for byte what Kubernetes'
/// bootstrap signer writes into `cluster-info`.
pub fn sign_detached(token: &BootstrapToken, payload: &[u8]) -> String {
    let header = jws_header(&token.id);
    let signing_input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(payload));
    let tag = hmac::sign(&hmac_key(token), signing_input.as_bytes());
    format!("{header}..{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

/// Checks a detached JWS of `payload` against `token`. Like Kubernetes, only the exact header
/// [`sign_detached`] writes is accepted; the signature is compared in constant time.
pub fn verify_detached(
    token: &BootstrapToken,
    payload: &[u8],
    jws: &str,
) -> Result<(), BootstrapTokenError> {
    let mismatch = || BootstrapTokenError::SignatureMismatch {
        token_id: token.id.clone(),
    };
    let (header, signature) = jws
        .split_once("..")
        .filter(|(h, s)| !h.is_empty() && !s.is_empty() && !s.contains('.'))
        .ok_or(BootstrapTokenError::MalformedJws)?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| BootstrapTokenError::MalformedJws)?;
    if header != jws_header(&token.id) {
        return Err(mismatch());
    }
    let signing_input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(payload));
    hmac::verify(&hmac_key(token), signing_input.as_bytes(), &signature).map_err(|_| mismatch())
}

/// kubeadm's CA pin: `sha256:` and the lowercase hex SHA-256 of the certificate's
/// SubjectPublicKeyInfo (DER), which survives re-issuing the CA with the same key.
pub fn ca_cert_hash(cert_der: &[u8]) -> Result<String, BootstrapTokenError> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).map_err(|e| {
        BootstrapTokenError::Certificate {
            reason: e.to_string(),
        }
    })?;
    let digest = digest::digest(&digest::SHA256, cert.public_key().raw);
    Ok(format!("sha256:{}", hex(digest.as_ref())))
}

/// Normalizes a pin as kubeadm accepts it (`sha256:` in any case, 64 hex digits in any case)
/// to the form [`ca_cert_hash`] returns.
pub fn parse_ca_cert_hash(pin: &str) -> Result<String, BootstrapTokenError> {
    let invalid = || BootstrapTokenError::InvalidCaCertHash {
        value: pin.to_owned(),
    };
    let (format, value) = pin.split_once(':').ok_or_else(invalid)?;
    if !format.eq_ignore_ascii_case("sha256")
        || value.len() != 64
        || !value.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(invalid());
    }
    Ok(format!("sha256:{}", value.to_ascii_lowercase()))
}

fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Whether a token Secret's `expiration` is past at `now`. No `expiration` never expires; one
/// that does not parse as RFC 3339 counts as expired, as in Kubernetes.
pub fn has_expired(data: &BTreeMap<String, String>, now: jiff::Timestamp) -> bool {
    match data.get(EXPIRATION_KEY) {
        None => false,
        Some(text) => text
            .parse::<jiff::Timestamp>()
            .map_or(true, |expiry| expiry <= now),
    }
}

/// Whether a usage flag (`usage-bootstrap-signing`, `usage-bootstrap-authentication`) is on: the
/// exact value `"true"`.
pub fn usage_enabled(data: &BTreeMap<String, String>, key: &str) -> bool {
    data.get(key).is_some_and(|v| v == "true")
}

/// The groups a token Secret authenticates as: [`BOOTSTRAP_GROUP`] and each entry of
/// `auth-extra-groups` (trimmed, empty ones skipped), sorted and without duplicates. An extra
/// group outside `system:bootstrappers:` makes the token unusable.
pub fn groups(data: &BTreeMap<String, String>) -> Result<Vec<String>, BootstrapTokenError> {
    let mut groups = std::collections::BTreeSet::from([BOOTSTRAP_GROUP.to_owned()]);
    for group in data
        .get(EXTRA_GROUPS_KEY)
        .map(String::as_str)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|g| !g.is_empty())
    {
        if !valid_extra_group(group) {
            return Err(BootstrapTokenError::InvalidExtraGroup {
                group: group.to_owned(),
            });
        }
        groups.insert(group.to_owned());
    }
    Ok(groups.into_iter().collect())
}

/// `system:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]`.
fn valid_extra_group(group: &str) -> bool {
    let Some(rest) = group.strip_prefix("system:bootstrappers:") else {
        return false;
    };
    let ok_char = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    rest.len() <= 256
        && rest.bytes().last().is_some_and(ok_char)
        && rest.bytes().all(|b| ok_char(b) || b == b':' || b == b'-')
}

/// The token a Secret stores, if it is a well-formed bootstrap-token Secret named after its id:
/// `data` is its string data (base64-decoded `data` merged with `stringData`).
pub fn token_of_secret(name: &str, data: &BTreeMap<String, String>) -> Option<BootstrapToken> {
    let id = data.get(TOKEN_ID_KEY)?;
    let secret = data.get(TOKEN_SECRET_KEY)?;
    let token: BootstrapToken = format!("{id}.{secret}").parse().ok()?;
    (name.strip_prefix(SECRET_PREFIX) == Some(token.id.as_str())).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(s: &str) -> BootstrapToken {
        s.parse().expect("a valid token")
    }

    #[test]
    fn tokens_parse_only_in_kubernetes_format() {
        let cases: &[(&str, bool)] = &[
            ("abcdef.0123456789abcdef", true),
            ("07401b.f395accd246ae52d", true),
            ("abcdef.0123456789abcde", false),
            ("abcdef.0123456789abcdefg", false),
            ("abcde.0123456789abcdef", false),
            ("ABCDEF.0123456789abcdef", false),
            ("abcdef:0123456789abcdef", false),
            ("abcdef.0123456789abcd-f", false),
            ("abcdef.0123456789abcdef\n", false),
            ("abcdef..123456789abcdef", false),
            ("", false),
        ];
        for (text, ok) in cases {
            assert_eq!(text.parse::<BootstrapToken>().is_ok(), *ok, "{text:?}");
        }
        let t = token("abcdef.0123456789abcdef");
        assert_eq!(t.id, "abcdef");
        assert_eq!(t.to_string(), "abcdef.0123456789abcdef");
        assert_eq!(t.secret_name(), "bootstrap-token-abcdef");
        assert_eq!(t.user_name(), "system:bootstrap:abcdef");
    }

    #[test]
    fn debug_hides_the_secret() {
        let shown = format!("{:?}", token("abcdef.0123456789abcdef"));
        assert!(shown.contains("abcdef"), "{shown}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
    }

    #[test]
    fn random_tokens_are_valid_and_skip_biased_bytes() {
        let mut bytes = [255u8, 252, 0, 1, 35, 36, 71, 251].into_iter().cycle();
        let t = BootstrapToken::from_random(|| bytes.next().unwrap_or(0));
        assert_eq!(t.id, "01z0zz");
        assert!(t.to_string().parse::<BootstrapToken>().is_ok(), "{t}");
        let stuck = BootstrapToken::from_random(|| 255);
        assert!(stuck.to_string().parse::<BootstrapToken>().is_ok());
    }

    #[test]
    fn detached_jws_matches_kubernetes_and_round_trips() {
        let t = token("abcdef.abcdef0123456789");
        let payload = b"apiVersion: v1\nkind: Config\n";
        let jws = sign_detached(&t, payload);
        // The protected header kube writes: {"alg":"HS256","kid":"abcdef"}.
        assert!(
            jws.starts_with("eyJhbGciOiJIUzI1NiIsImtpZCI6ImFiY2RlZiJ9.."),
            "{jws}"
        );
        assert_eq!(jws.matches('.').count(), 2);
        assert_eq!(verify_detached(&t, payload, &jws), Ok(()));

        let mismatch = Err(BootstrapTokenError::SignatureMismatch {
            token_id: "abcdef".into(),
        });
        assert_eq!(
            verify_detached(&t, b"apiVersion: v1\nkind: Config \n", &jws),
            mismatch
        );
        let other_secret = token("abcdef.abcdef0123456788");
        assert_eq!(verify_detached(&other_secret, payload, &jws), mismatch);
        let other_id = token("abcdeg.abcdef0123456789");
        assert!(verify_detached(&other_id, payload, &jws).is_err());
        for garbled in ["", "abc", "a.b.c", "..", "eyJ..!!"] {
            assert_eq!(
                verify_detached(&t, payload, garbled),
                Err(BootstrapTokenError::MalformedJws),
                "{garbled:?}"
            );
        }
    }

    #[test]
    fn jws_signature_is_hmac_over_zero_padded_secret() {
        // Independent of sign_detached: HMAC-SHA256 keyed with the secret padded to 32 bytes.
        let t = token("abcdef.abcdef0123456789");
        let payload = b"x";
        let header = "eyJhbGciOiJIUzI1NiIsImtpZCI6ImFiY2RlZiJ9";
        let mut key = b"abcdef0123456789".to_vec();
        key.resize(32, 0);
        let tag = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, &key),
            format!("{header}.eA").as_bytes(),
        );
        assert_eq!(
            sign_detached(&t, payload),
            format!("{header}..{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
        );
        // Computed once with Python's hmac module, independently of ring.
        assert_eq!(
            sign_detached(&t, payload),
            "eyJhbGciOiJIUzI1NiIsImtpZCI6ImFiY2RlZiJ9..QwgHESrx-C72y6T7sUyas7E1eeHfiwgpjUxiLur3t4U"
        );
    }

    /// A fixed P-256 certificate and the pin computed once with
    /// `openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | sha256sum`.
    const CA_PEM: &str = include_str!("bootstrap_token/testdata/ca.pem");
    const CA_PIN: &str = include_str!("bootstrap_token/testdata/ca.pin");

    #[test]
    fn ca_cert_hash_is_the_spki_sha256_openssl_computes() {
        let body: String = CA_PEM.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .expect("base64 PEM body");
        assert_eq!(ca_cert_hash(&der).as_deref(), Ok(CA_PIN.trim()));
        assert!(matches!(
            ca_cert_hash(b"not a certificate"),
            Err(BootstrapTokenError::Certificate { .. })
        ));
    }

    #[test]
    fn ca_cert_hash_pins_parse_as_kubeadm_accepts_them() {
        let hex64 = "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(
            parse_ca_cert_hash(&format!("SHA256:{hex64}")),
            Ok(format!("sha256:{}", hex64.to_ascii_lowercase()))
        );
        for bad in [
            hex64.to_owned(),
            format!("md5:{hex64}"),
            "sha256:abc".into(),
        ] {
            assert!(parse_ca_cert_hash(&bad).is_err(), "{bad}");
        }
    }

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn expiry_usages_and_groups_follow_kubernetes() {
        let now: jiff::Timestamp = "2026-12-06T12:00:00Z".parse().expect("time");
        let cases: &[(Option<&str>, bool)] = &[
            (None, false),
            (Some("2026-12-06T12:00:01Z"), false),
            (Some("2026-12-06T13:00:00+02:00"), true),
            (Some("2026-12-06T11:59:59Z"), true),
            (Some("tomorrow"), true),
        ];
        for (expiration, expired) in cases {
            let d = expiration.map_or_else(BTreeMap::new, |e| data(&[(EXPIRATION_KEY, e)]));
            assert_eq!(has_expired(&d, now), *expired, "{expiration:?}");
        }
        assert!(usage_enabled(
            &data(&[(USAGE_SIGNING_KEY, "true")]),
            USAGE_SIGNING_KEY
        ));
        assert!(!usage_enabled(
            &data(&[(USAGE_SIGNING_KEY, "True")]),
            USAGE_SIGNING_KEY
        ));
        assert_eq!(
            groups(&data(&[(
                EXTRA_GROUPS_KEY,
                " system:bootstrappers:worker,,system:bootstrappers:a-b:c "
            )])),
            Ok(vec![
                "system:bootstrappers".to_owned(),
                "system:bootstrappers:a-b:c".into(),
                "system:bootstrappers:worker".into(),
            ])
        );
        for bad in [
            "system:masters",
            "system:bootstrappers:",
            "system:bootstrappers:x-",
        ] {
            assert_eq!(
                groups(&data(&[(EXTRA_GROUPS_KEY, bad)])),
                Err(BootstrapTokenError::InvalidExtraGroup {
                    group: bad.to_owned()
                }),
                "{bad}"
            );
        }
    }

    #[test]
    fn secrets_name_their_token() {
        let d = data(&[
            (TOKEN_ID_KEY, "abcdef"),
            (TOKEN_SECRET_KEY, "0123456789abcdef"),
        ]);
        assert_eq!(
            token_of_secret("bootstrap-token-abcdef", &d),
            Some(token("abcdef.0123456789abcdef"))
        );
        assert_eq!(token_of_secret("bootstrap-token-abcdeg", &d), None);
        assert_eq!(
            token_of_secret("bootstrap-token-abcdef", &data(&[(TOKEN_ID_KEY, "abcdef")])),
            None
        );
    }
}
