//! ES256 JSON Web Tokens (RFC 7515 compact serialization) with the control plane's P-256 key:
//! what kube-apiserver's `jwtTokenGenerator` writes and its `jwtTokenAuthenticator` checks,
//! restricted to the one algorithm keelson signs with.

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use ring::{
    rand::SystemRandom,
    signature::{
        ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _,
        UnparsedPublicKey,
    },
};
use rustls::pki_types::{PrivatePkcs8KeyDer, pem::PemObject as _};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// The DER prefix of a P-256 SubjectPublicKeyInfo (id-ecPublicKey, prime256v1, a 66-byte BIT
/// STRING); the uncompressed point follows.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// The JWS algorithm of every token keelson signs.
pub const ALGORITHM: &str = "ES256";

/// Why the signing key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The PEM holds no PKCS#8 private key.
    #[error("the service-account key is not a PEM PKCS#8 private key")]
    Pem,
    /// The key is not an ECDSA P-256 key.
    #[error("the service-account key is not an ECDSA P-256 key ({0})")]
    Key(String),
}

/// The signing key and what is derived from it.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
    /// kube's key id: base64url (unpadded) SHA-256 of the DER SubjectPublicKeyInfo.
    kid: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// The key in `pem` (PKCS#8 `PRIVATE KEY`, as `sa.key` holds it).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes()).map_err(|_| KeyError::Pem)?;
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            der.secret_pkcs8_der(),
            &rng,
        )
        .map_err(|e| KeyError::Key(e.to_string()))?;
        let mut spki = P256_SPKI_PREFIX.to_vec();
        spki.extend_from_slice(pair.public_key().as_ref());
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(&spki));
        Ok(Self { pair, rng, kid })
    }

    /// The key id tokens name in their header and the JWKS publishes.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK (RFC 7518 `EC`, `P-256`), as `/openid/v1/jwks` lists it.
    pub fn jwk(&self) -> Value {
        let point = self.pair.public_key().as_ref();
        // An uncompressed point: 0x04, then x and y of 32 bytes each.
        let coordinates = point.get(1..).unwrap_or_default();
        let (x, y) = coordinates.split_at(coordinates.len() / 2);
        json!({
            "use": "sig",
            "kty": "EC",
            "kid": self.kid,
            "crv": "P-256",
            "alg": ALGORITHM,
            "x": URL_SAFE_NO_PAD.encode(x),
            "y": URL_SAFE_NO_PAD.encode(y),
        })
    }

    /// `claims` signed: `header.payload.signature`, each base64url without padding.
    pub fn sign(&self, claims: &Value) -> Result<String, ring::error::Unspecified> {
        let header = json!({"alg": ALGORITHM, "kid": self.kid});
        let mut token = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.pair.sign(&self.rng, token.as_bytes())?;
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature.as_ref()));
        Ok(token)
    }

    /// Whether `signature` is this key's over `message`.
    fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.pair.public_key().as_ref())
            .verify(message, signature)
            .is_ok()
    }
}

/// A token split into its parts, its claims read but not yet trusted.
#[derive(Debug)]
pub struct Unverified<'a> {
    signed: &'a str,
    header: Value,
    signature: Vec<u8>,
    /// The payload.
    pub claims: Value,
}

/// `token` as a compact JWS with JSON header and payload, or `None` when it is not one (then
/// it is some other authenticator's token).
pub fn parse(token: &str) -> Option<Unverified<'_>> {
    let (signed, signature) = token.rsplit_once('.')?;
    let (header, payload) = signed.split_once('.')?;
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part).ok();
    let header: Value = serde_json::from_slice(&decode(header)?).ok()?;
    let claims: Value = serde_json::from_slice(&decode(payload)?).ok()?;
    (header.is_object() && claims.is_object()).then_some(())?;
    Some(Unverified {
        signed,
        header,
        signature: decode(signature)?,
        claims,
    })
}

impl Unverified<'_> {
    /// Whether the token is ES256 and `key` signed it.
    pub fn verify(&self, key: &SigningKey) -> Result<(), &'static str> {
        if self.header.get("alg").and_then(Value::as_str) != Some(ALGORITHM) {
            return Err("the token is not signed with ES256");
        }
        if key.verifies(self.signed.as_bytes(), &self.signature) {
            Ok(())
        } else {
            Err("the token's signature does not verify with the service-account key")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A new P-256 key.
    fn key() -> SigningKey {
        let pem = rcgen::KeyPair::generate().expect("key").serialize_pem();
        SigningKey::from_pem(&pem).expect("a P-256 key")
    }

    #[test]
    fn tokens_verify_with_their_key_only() {
        let (a, b) = (key(), key());
        let token = a.sign(&json!({"sub": "x"})).expect("sign");
        let parsed = parse(&token).expect("a JWS");
        assert_eq!(parsed.claims["sub"], "x");
        assert_eq!(parsed.header["kid"], a.kid());
        assert_eq!(parsed.verify(&a), Ok(()));
        assert!(parsed.verify(&b).is_err());
        // One byte of the payload changed.
        let mut tampered = token.clone().into_bytes();
        let at = token.find('.').expect("dot") + 3;
        tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(tampered).expect("ascii");
        assert!(parse(&tampered).is_none_or(|t| t.verify(&a).is_err()));
        assert!(parse("abcdef.0123456789abcdef").is_none());
    }

    #[test]
    fn the_key_id_is_the_hash_of_the_public_key_der() {
        use rcgen::PublicKeyData as _;
        let pair = rcgen::KeyPair::generate().expect("key");
        let key = SigningKey::from_pem(&pair.serialize_pem()).expect("key");
        let expected = URL_SAFE_NO_PAD.encode(Sha256::digest(pair.subject_public_key_info()));
        assert_eq!(key.kid(), expected);
        let jwk = key.jwk();
        assert_eq!(jwk["kty"], "EC");
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(jwk["x"].as_str().expect("x"))
                .expect("b64")
                .len(),
            32
        );
    }
}
