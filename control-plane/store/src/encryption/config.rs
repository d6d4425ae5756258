//! Kubernetes' `EncryptionConfiguration` file (`apiserver.config.k8s.io/v1`), the subset keelson
//! reads: the `aesgcm` and `identity` providers.
//!
//! ```yaml
//! apiVersion: apiserver.config.k8s.io/v1
//! kind: EncryptionConfiguration
//! resources:
//!   - resources: [secrets]
//!     providers:
//!       - aesgcm:
//!           keys:
//!             - name: key1
//!               secret: <32 random bytes, base64>
//!       - identity: {}
//! ```
//!
//! Each entry's first provider (for `aesgcm` its first key) writes; every provider of the entry
//! reads. A resource is governed by the first entry that lists it.

use std::path::Path;

use base64::Engine as _;
use ring::{
    aead::{AES_128_GCM, AES_256_GCM, LessSafeKey, UnboundKey},
    rand::{SecureRandom, SystemRandom},
};
use serde::Deserialize;
use serde::de::IgnoredAny;

/// The API version keelson reads.
pub const API_VERSION: &str = "apiserver.config.k8s.io/v1";
/// The kind keelson reads.
pub const KIND: &str = "EncryptionConfiguration";
/// The AES key lengths (bytes) keelson accepts. Kubernetes also takes 24 (AES-192), which
/// `ring` does not offer.
const AES_KEY_SIZES: [usize; 2] = [16, 32];

/// Why an encryption configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the encryption configuration {path}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The text is not an `EncryptionConfiguration` document.
    #[error("the encryption configuration is not valid YAML of its kind")]
    Parse {
        /// The parser's error.
        #[source]
        source: serde_saphyr::Error,
    },
    /// A field has a value keelson refuses, in Kubernetes' `field: message` form.
    #[error("{field}: {message}")]
    Invalid {
        /// The field path, e.g. `resources[0].providers[0].aesgcm.keys[0].secret`.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// Generating a key failed (no system randomness).
    #[error("cannot generate a random key")]
    Random,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

/// The document as written.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct File {
    api_version: String,
    kind: String,
    #[serde(default)]
    resources: Vec<ResourceEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceEntry {
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    providers: Vec<ProviderEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderEntry {
    aesgcm: Option<KeysEntry>,
    identity: Option<IgnoredAny>,
    aescbc: Option<IgnoredAny>,
    secretbox: Option<IgnoredAny>,
    kms: Option<IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysEntry {
    #[serde(default)]
    keys: Vec<KeyEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    #[serde(default)]
    name: String,
    #[serde(default)]
    secret: String,
}

/// One AES-GCM key with its name (the name is stored in the clear in front of each value).
pub(super) struct AesGcmKey {
    pub(super) name: String,
    pub(super) key: LessSafeKey,
}

/// A provider: how values are written, and which stored values it reads.
pub(super) enum Provider {
    /// Plaintext.
    Identity,
    /// AES-GCM; the first key encrypts, every key decrypts.
    AesGcm(Vec<AesGcmKey>),
}

/// One `resources` entry: the store key prefixes it governs and its providers in order.
pub(super) struct Rule {
    pub(super) resources: Vec<String>,
    pub(super) prefixes: Vec<String>,
    pub(super) providers: Vec<Provider>,
}

/// A validated encryption configuration with its keys ready for use. `Debug` names the keys,
/// never their secrets. The default governs nothing: values are written as they are, and a
/// stored encrypted value is an error naming its key.
#[derive(Default)]
pub struct EncryptionConfig {
    pub(super) rules: Vec<Rule>,
}

impl std::fmt::Debug for EncryptionConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.summary())
    }
}

impl EncryptionConfig {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_yaml(&text)
    }

    /// Parses and validates a configuration, with Kubernetes' rules for the parts keelson
    /// supports; `aescbc`, `secretbox` and `kms` providers are refused by name.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let file: File =
            serde_saphyr::from_str(text).map_err(|source| ConfigError::Parse { source })?;
        if file.api_version != API_VERSION {
            return Err(invalid(
                "apiVersion",
                format!("{:?} is not {API_VERSION:?}", file.api_version),
            ));
        }
        if file.kind != KIND {
            return Err(invalid("kind", format!("{:?} is not {KIND:?}", file.kind)));
        }
        if file.resources.is_empty() {
            return Err(invalid("resources", "at least one resources is required"));
        }
        let rules = file
            .resources
            .into_iter()
            .enumerate()
            .map(|(i, entry)| rule(i, entry))
            .collect::<Result<_, _>>()?;
        Ok(Self { rules })
    }

    /// A new configuration for Secrets with one random 32-byte AES-GCM key, as YAML (what the
    /// control plane writes on first start). Its key name carries random hex, so two control
    /// planes that each made their own key name them differently.
    pub fn generate_yaml() -> Result<String, ConfigError> {
        let random = SystemRandom::new();
        let mut secret = [0u8; 32];
        random.fill(&mut secret).map_err(|_| ConfigError::Random)?;
        let mut tag = [0u8; 4];
        random.fill(&mut tag).map_err(|_| ConfigError::Random)?;
        let name = format!(
            "key-{}",
            tag.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
        let secret = base64::engine::general_purpose::STANDARD.encode(secret);
        Ok(format!(
            "apiVersion: {API_VERSION}\n\
             kind: {KIND}\n\
             resources:\n  \
               - resources:\n      \
                   - secrets\n    \
                 providers:\n      \
                   - aesgcm:\n          \
                       keys:\n            \
                         - name: {name}\n              \
                           secret: {secret}\n      \
                   - identity: {{}}\n"
        ))
    }

    /// The same keys for reading only: every entry writes plaintext (`identity` first), the
    /// way Kubernetes documents to decrypt a cluster's data.
    #[must_use]
    pub fn decrypt_only(mut self) -> Self {
        for rule in &mut self.rules {
            rule.providers.retain(|p| !matches!(p, Provider::Identity));
            rule.providers.insert(0, Provider::Identity);
        }
        self
    }

    /// One line for the log: each entry's resources and providers, key names only.
    pub fn summary(&self) -> String {
        self.rules
            .iter()
            .map(|rule| {
                let providers = rule
                    .providers
                    .iter()
                    .map(|p| match p {
                        Provider::Identity => "identity".to_owned(),
                        Provider::AesGcm(keys) => format!(
                            "aesgcm[{}]",
                            keys.iter()
                                .map(|k| k.name.as_str())
                                .collect::<Vec<_>>()
                                .join(",")
                        ),
                    })
                    .collect::<Vec<_>>()
                    .join(" ");
                format!("{}: {providers}", rule.resources.join(","))
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn rule(index: usize, entry: ResourceEntry) -> Result<Rule, ConfigError> {
    let at = format!("resources[{index}]");
    if entry.resources.is_empty() {
        return Err(invalid(
            format!("{at}.resources"),
            format!("at least one {at}.resources is required"),
        ));
    }
    let mut prefixes = Vec::new();
    for (j, resource) in entry.resources.iter().enumerate() {
        if entry.resources[..j].contains(resource) {
            return Err(invalid(
                format!("{at}.resources"),
                "the same resource cannot be specified multiple times",
            ));
        }
        prefixes.extend(resource_prefixes(resource).map_err(|message| {
            invalid(
                format!("{at}.resources[{j}]"),
                format!("{resource:?}: {message}"),
            )
        })?);
    }
    if entry.providers.is_empty() {
        return Err(invalid(
            format!("{at}.providers"),
            format!("at least one {at}.providers is required"),
        ));
    }
    let providers = entry
        .providers
        .into_iter()
        .enumerate()
        .map(|(j, p)| provider(&format!("{at}.providers[{j}]"), p))
        .collect::<Result<_, _>>()?;
    Ok(Rule {
        resources: entry.resources,
        prefixes,
        providers,
    })
}

/// The store key prefixes of a resource as the config names it: `secrets` (core),
/// `leases.coordination.k8s.io` (a built-in group: stored without the group, as Kubernetes
/// does), `widgets.example.com` (a custom resource: stored under its group), `*.*` (all).
fn resource_prefixes(resource: &str) -> Result<Vec<String>, String> {
    if resource.to_lowercase() != resource {
        return Err("resource name should not contain capital letters".into());
    }
    if resource == "*.*" {
        return Ok(vec!["/registry/".into()]);
    }
    if resource.contains('*') {
        return Err("keelson supports `*.*` (every resource) but no other wildcard".into());
    }
    let (plural, group) = resource.split_once('.').unwrap_or((resource, ""));
    if plural.is_empty() {
        return Err("not a resource name".into());
    }
    if group == "extensions" {
        return Err("'extensions' group has been removed and cannot be used for encryption".into());
    }
    let built_in = !group.contains('.') || group.ends_with(".k8s.io");
    Ok(vec![if built_in {
        format!("/registry/{plural}/")
    } else {
        format!("/registry/{group}/{plural}/")
    }])
}

fn provider(at: &str, entry: ProviderEntry) -> Result<Provider, ConfigError> {
    let named = [
        ("aesgcm", entry.aesgcm.is_some()),
        ("identity", entry.identity.is_some()),
        ("aescbc", entry.aescbc.is_some()),
        ("secretbox", entry.secretbox.is_some()),
        ("kms", entry.kms.is_some()),
    ];
    match named.iter().filter(|(_, set)| *set).count() {
        0 => {
            return Err(invalid(
                at,
                "provider does not contain any of the expected providers: AESGCM, Identity",
            ));
        }
        1 => {}
        _ => {
            return Err(invalid(
                at,
                "more than one provider specified in a single element, should split into \
                 different list elements",
            ));
        }
    }
    if let Some(keys) = entry.aesgcm {
        return aes_gcm(&format!("{at}.aesgcm.keys"), keys.keys).map(Provider::AesGcm);
    }
    if entry.identity.is_some() {
        return Ok(Provider::Identity);
    }
    let name = named
        .iter()
        .find(|(_, set)| *set)
        .map_or("", |(name, _)| *name);
    Err(invalid(
        format!("{at}.{name}"),
        format!("the {name} provider is not supported by keelson (aesgcm and identity are)"),
    ))
}

fn aes_gcm(at: &str, keys: Vec<KeyEntry>) -> Result<Vec<AesGcmKey>, ConfigError> {
    if keys.is_empty() {
        return Err(invalid(at, "at least one keys is required"));
    }
    let mut out: Vec<AesGcmKey> = Vec::with_capacity(keys.len());
    for (k, key) in keys.into_iter().enumerate() {
        let at = format!("{at}[{k}]");
        if key.name.is_empty() {
            return Err(invalid(
                format!("{at}.name"),
                "name is a mandatory field for a key",
            ));
        }
        // The name ends at the next ':' in a stored value's prefix.
        if key.name.contains(':') {
            return Err(invalid(
                format!("{at}.name"),
                "a key name must not contain ':'",
            ));
        }
        if out.iter().any(|o| o.name == key.name) {
            return Err(invalid(
                format!("{at}.name"),
                format!("duplicate key name {:?}", key.name),
            ));
        }
        if key.secret.is_empty() {
            return Err(invalid(
                format!("{at}.secret"),
                "secret is a mandatory field for a key",
            ));
        }
        let secret = base64::engine::general_purpose::STANDARD
            .decode(key.secret.trim())
            .map_err(|_| invalid(format!("{at}.secret"), "secrets must be base64 encoded"))?;
        let algorithm = match secret.len() {
            16 => &AES_128_GCM,
            32 => &AES_256_GCM,
            other => {
                return Err(invalid(
                    format!("{at}.secret"),
                    format!(
                        "secret is not of the expected length, got {other}, expected one of \
                         {AES_KEY_SIZES:?}"
                    ),
                ));
            }
        };
        let unbound = UnboundKey::new(algorithm, &secret)
            .map_err(|_| invalid(format!("{at}.secret"), "not a valid AES key"))?;
        out.push(AesGcmKey {
            name: key.name,
            key: LessSafeKey::new(unbound),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(providers: &str) -> String {
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\n\
             resources:\n  - resources: [secrets]\n    providers:\n{providers}"
        )
    }

    const KEY_32: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

    #[test]
    fn refuses_what_kubernetes_refuses_with_its_wording() {
        let cases = [
            (
                config(
                    "      - aesgcm:\n          keys:\n            - name: k1\n              secret: c2hvcnQ=\n",
                ),
                "resources[0].providers[0].aesgcm.keys[0].secret: secret is not of the expected length, got 5, expected one of [16, 32]",
            ),
            (
                config(
                    "      - aesgcm:\n          keys:\n            - name: k1\n              secret: '***'\n",
                ),
                "resources[0].providers[0].aesgcm.keys[0].secret: secrets must be base64 encoded",
            ),
            (
                config("      - aesgcm:\n          keys: []\n"),
                "resources[0].providers[0].aesgcm.keys: at least one keys is required",
            ),
            (
                config(&format!(
                    "      - aesgcm:\n          keys:\n            - name: a:b\n              secret: {KEY_32}\n"
                )),
                "resources[0].providers[0].aesgcm.keys[0].name: a key name must not contain ':'",
            ),
            (
                config("      - aescbc:\n          keys: []\n"),
                "resources[0].providers[0].aescbc: the aescbc provider is not supported by keelson (aesgcm and identity are)",
            ),
            (
                config("      - identity: {}\n        aesgcm:\n          keys: []\n"),
                "resources[0].providers[0]: more than one provider specified in a single element, should split into different list elements",
            ),
            (
                config("      - {}\n"),
                "resources[0].providers[0]: provider does not contain any of the expected providers: AESGCM, Identity",
            ),
            (
                config("").replace("[secrets]", "['*.']") + "      - identity: {}\n",
                "resources[0].resources[0]: \"*.\": keelson supports `*.*` (every resource) but no other wildcard",
            ),
            (
                config("      - identity: {}\n").replace("v1\n", "v2\n"),
                "apiVersion: \"apiserver.config.k8s.io/v2\" is not \"apiserver.config.k8s.io/v1\"",
            ),
        ];
        for (text, want) in cases {
            let error = EncryptionConfig::from_yaml(&text).expect_err(&text);
            assert_eq!(error.to_string(), want, "{text}");
        }
    }

    #[test]
    fn maps_resources_to_store_prefixes() {
        for (resource, want) in [
            ("secrets", "/registry/secrets/"),
            ("leases.coordination.k8s.io", "/registry/leases/"),
            ("deployments.apps", "/registry/deployments/"),
            ("widgets.example.com", "/registry/example.com/widgets/"),
            ("*.*", "/registry/"),
        ] {
            assert_eq!(resource_prefixes(resource), Ok(vec![want.to_owned()]));
        }
    }

    #[test]
    fn a_generated_configuration_reads_back_with_one_32_byte_key() {
        let text = EncryptionConfig::generate_yaml().expect("generate");
        let config = EncryptionConfig::from_yaml(&text).expect(&text);
        let summary = config.summary();
        assert!(
            summary.starts_with("secrets: aesgcm[key-") && summary.ends_with("] identity"),
            "{summary}"
        );
        let other = EncryptionConfig::generate_yaml().expect("generate");
        assert_ne!(text, other, "each generated key is new");
    }
}
