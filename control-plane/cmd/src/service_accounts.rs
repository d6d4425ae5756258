//! The service-account signing key (`DATA_DIR/pki/sa.key`, `sa.pub`: created once, shared by
//! every control plane that shares the PKI directory, as the CA is) and the flags of
//! kube-apiserver that shape service-account tokens.

use std::path::Path;

use anyhow::Context as _;
use keelson_apiserver::auth::serviceaccount::{DEFAULT_ISSUER, ServiceAccountTokens};
use rcgen::KeyPair;

use crate::pki::write_private;

/// kube-apiserver's service-account token flags.
#[derive(Debug, clap::Args)]
pub(crate) struct ServiceAccountArgs {
    /// The issuer (`iss`) of service-account tokens, and the issuer OIDC discovery
    /// (/.well-known/openid-configuration) names.
    #[arg(long, env = "KEELSON_SERVICE_ACCOUNT_ISSUER", default_value = DEFAULT_ISSUER)]
    pub(crate) service_account_issuer: String,
    /// The audiences the API accepts tokens for, comma-separated; tokens requested without an
    /// audience get these [default: the issuer].
    #[arg(long, env = "KEELSON_API_AUDIENCES", value_delimiter = ',')]
    pub(crate) api_audiences: Vec<String>,
    /// The longest lifetime a TokenRequest is granted; longer requests are shortened (e.g.
    /// `24h`) [default: no limit].
    #[arg(long, env = "KEELSON_SERVICE_ACCOUNT_MAX_TOKEN_EXPIRATION",
          value_parser = crate::args::parse_duration)]
    pub(crate) service_account_max_token_expiration: Option<std::time::Duration>,
    /// The `jwks_uri` of the discovery document [default: ISSUER's scheme and host +
    /// /openid/v1/jwks].
    #[arg(long, env = "KEELSON_SERVICE_ACCOUNT_JWKS_URI")]
    pub(crate) service_account_jwks_uri: Option<String>,
    /// Pod tokens asked for with the admission's 3607 s live a year (and warn after 3607 s),
    /// as kube-apiserver does by default, so clients that never reload keep working.
    #[arg(long, env = "KEELSON_SERVICE_ACCOUNT_EXTEND_TOKEN_EXPIRATION", default_value_t = true,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub(crate) service_account_extend_token_expiration: bool,
}

/// The private key (PKCS#8 PEM) in `dir/sa.key`, creating it (ECDSA P-256) and `dir/sa.pub`
/// on first use.
pub(crate) fn load_or_create_key(dir: &Path) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let (key_path, pub_path) = (dir.join("sa.key"), dir.join("sa.pub"));
    if key_path.is_file() {
        return std::fs::read_to_string(&key_path)
            .with_context(|| format!("cannot read {}", key_path.display()));
    }
    let key = KeyPair::generate().context("cannot generate the service-account key")?;
    write_private(&key_path, key.serialize_pem().as_bytes())?;
    write_private(&pub_path, key.public_key_pem().as_bytes())?;
    tracing::info!(dir = %dir.display(), "created the service-account signing key");
    Ok(key.serialize_pem())
}

impl ServiceAccountArgs {
    /// The token settings with the key of `pki_dir`.
    pub(crate) fn tokens(&self, pki_dir: &Path) -> anyhow::Result<ServiceAccountTokens> {
        let key = load_or_create_key(pki_dir)?;
        let max = self
            .service_account_max_token_expiration
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        Ok(
            ServiceAccountTokens::new(&key, self.service_account_issuer.clone())
                .with_context(|| format!("{}/sa.key", pki_dir.display()))?
                .with_api_audiences(self.api_audiences.clone())
                .with_max_expiration_seconds(max)
                .with_extend_expiration(self.service_account_extend_token_expiration)
                .with_jwks_uri(self.service_account_jwks_uri.clone()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_created_once_and_shared() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = load_or_create_key(dir.path()).expect("create");
        let second = load_or_create_key(dir.path()).expect("load");
        assert_eq!(first, second);
        assert!(
            std::fs::read_to_string(dir.path().join("sa.pub"))
                .expect("sa.pub")
                .starts_with("-----BEGIN PUBLIC KEY-----")
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("sa.key"))
            .expect("sa.key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        ServiceAccountTokens::new(&first, DEFAULT_ISSUER).expect("a usable key");
    }
}
