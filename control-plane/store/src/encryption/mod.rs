//! Encryption at rest, as kube-apiserver's `--encryption-provider-config` does it.
//!
//! [`EncryptedStore`] wraps any [`Store`]: values of the resources an [`EncryptionConfig`]
//! names (Secrets, by default) are encrypted on `create`/`update` and decrypted on every read
//! (`get`, `list`, `delete`'s previous value, `watch` events and their previous values). The
//! stored form is Kubernetes' own, so an etcd written by kube-apiserver with the same keys reads
//! here and the other way round:
//!
//! `k8s:enc:aesgcm:v1:<key name>:` + 12-byte random nonce + AES-GCM ciphertext and tag, with
//! the store key (`/registry/secrets/<ns>/<name>`) as authenticated data, so a value copied to
//! another key does not decrypt.
//!
//! A value without the `k8s:enc:` prefix is read as it is (data written before encryption was
//! turned on; it is encrypted the next time it is written). A value naming a key the
//! configuration lacks, or whose authentication fails, is [`StoreError::Transform`].

mod config;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt as _;
use ring::{
    aead::{Aad, NONCE_LEN, Nonce},
    rand::{SecureRandom, SystemRandom},
};

use config::{AesGcmKey, Provider};
pub use config::{ConfigError, EncryptionConfig};

use crate::{
    Deleted, KeyValue, ListOptions, ListResult, Revision, Store, StoreError, WatchEvent,
    WatchStream,
};

/// What every encrypted value starts with (any provider).
const ENCRYPTED: &[u8] = b"k8s:enc:";
/// The prefix of AES-GCM values, before the key name.
const AES_GCM: &[u8] = b"k8s:enc:aesgcm:v1:";
/// AES-GCM's tag length.
const TAG_LEN: usize = 16;

/// Why a value could not be encrypted or decrypted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransformError {
    /// The value names an AES-GCM key the configuration does not have.
    #[error("no aesgcm key named {name:?} in the encryption configuration")]
    UnknownKey {
        /// The key name in the value's prefix.
        name: String,
    },
    /// The value was written by a provider keelson does not read (aescbc, secretbox, kms).
    #[error("the value is encrypted by a provider keelson does not read ({prefix})")]
    UnsupportedProvider {
        /// The value's prefix up to the provider version.
        prefix: String,
    },
    /// The value is cut short or its prefix is not closed.
    #[error("the stored data was shorter than the required size")]
    Truncated,
    /// AES-GCM authentication failed: the value was changed, or moved from another key.
    #[error("message authentication failed for aesgcm key {name:?}")]
    Authentication {
        /// The key name.
        name: String,
    },
    /// No randomness for a nonce.
    #[error("cannot generate a nonce")]
    Random,
}

impl EncryptionConfig {
    fn rule_for(&self, key: &str) -> Option<&config::Rule> {
        self.rules
            .iter()
            .find(|rule| rule.prefixes.iter().any(|p| key.starts_with(p.as_str())))
    }

    /// The stored form of `value` at store key `key`: encrypted by the first provider of the
    /// entry that governs `key`, unchanged if none does (or that provider is `identity`).
    pub fn encrypt(&self, key: &str, value: Bytes) -> Result<Bytes, TransformError> {
        let Some(rule) = self.rule_for(key) else {
            return Ok(value);
        };
        match rule.providers.first() {
            Some(Provider::AesGcm(keys)) => match keys.first() {
                Some(aes) => seal(aes, key, &value),
                None => Ok(value),
            },
            Some(Provider::Identity) | None => Ok(value),
        }
    }

    /// The plain value of stored `value` at store key `key`. A value without the `k8s:enc:`
    /// prefix is returned as it is; an AES-GCM value is opened with the key it names, looked up
    /// in the entry that governs `key` and then in every entry.
    pub fn decrypt(&self, key: &str, value: Bytes) -> Result<Bytes, TransformError> {
        if !value.starts_with(ENCRYPTED) {
            return Ok(value);
        }
        let Some(rest) = value.strip_prefix(AES_GCM) else {
            let prefix: Vec<u8> = value
                .iter()
                .copied()
                .take(40)
                .take_while(|b| b.is_ascii_graphic())
                .collect();
            let prefix = String::from_utf8_lossy(&prefix);
            let prefix = match prefix.match_indices(':').nth(3) {
                Some((end, _)) => prefix[..end].to_owned(),
                None => prefix.into_owned(),
            };
            return Err(TransformError::UnsupportedProvider { prefix });
        };
        let colon = rest
            .iter()
            .position(|b| *b == b':')
            .ok_or(TransformError::Truncated)?;
        let name = String::from_utf8_lossy(&rest[..colon]).into_owned();
        let sealed = &rest[colon + 1..];
        let aes = self
            .rule_for(key)
            .and_then(|rule| named_key(&rule.providers, &name))
            .or_else(|| {
                self.rules
                    .iter()
                    .find_map(|rule| named_key(&rule.providers, &name))
            })
            .ok_or_else(|| TransformError::UnknownKey { name: name.clone() })?;
        open(aes, key, sealed)
    }

    fn decrypt_kv(&self, kv: KeyValue) -> Result<KeyValue, StoreError> {
        let value = self
            .decrypt(&kv.key, kv.value)
            .map_err(transform(&kv.key))?;
        Ok(KeyValue { value, ..kv })
    }

    fn decrypt_event(&self, event: WatchEvent) -> Result<WatchEvent, StoreError> {
        let value = self
            .decrypt(&event.key, event.value)
            .map_err(transform(&event.key))?;
        let prev_value = event
            .prev_value
            .map(|prev| self.decrypt(&event.key, prev))
            .transpose()
            .map_err(transform(&event.key))?;
        Ok(WatchEvent {
            value,
            prev_value,
            ..event
        })
    }
}

/// The AES-GCM key called `name` among `providers`.
fn named_key<'a>(providers: &'a [Provider], name: &str) -> Option<&'a AesGcmKey> {
    providers
        .iter()
        .filter_map(|p| match p {
            Provider::AesGcm(keys) => Some(keys.iter()),
            Provider::Identity => None,
        })
        .flatten()
        .find(|k| k.name == name)
}

fn transform(key: &str) -> impl FnOnce(TransformError) -> StoreError + '_ {
    move |source| StoreError::Transform {
        key: key.to_owned(),
        source,
    }
}

/// `prefix || nonce || ciphertext || tag`.
fn seal(aes: &AesGcmKey, key: &str, value: &[u8]) -> Result<Bytes, TransformError> {
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| TransformError::Random)?;
    let mut out =
        Vec::with_capacity(AES_GCM.len() + aes.name.len() + 1 + NONCE_LEN + value.len() + TAG_LEN);
    out.extend_from_slice(AES_GCM);
    out.extend_from_slice(aes.name.as_bytes());
    out.push(b':');
    out.extend_from_slice(&nonce);
    let body = out.len();
    out.extend_from_slice(value);
    let mut sealed = out.split_off(body);
    aes.key
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(key.as_bytes()),
            &mut sealed,
        )
        // Only a value longer than AES-GCM's limit (64 GiB) fails.
        .map_err(|_| TransformError::Truncated)?;
    out.extend_from_slice(&sealed);
    Ok(Bytes::from(out))
}

fn open(aes: &AesGcmKey, key: &str, sealed: &[u8]) -> Result<Bytes, TransformError> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(TransformError::Truncated);
    }
    let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| TransformError::Truncated)?;
    let mut buffer = ciphertext.to_vec();
    let plain = aes
        .key
        .open_in_place(nonce, Aad::from(key.as_bytes()), &mut buffer)
        .map_err(|_| TransformError::Authentication {
            name: aes.name.clone(),
        })?;
    let len = plain.len();
    buffer.truncate(len);
    Ok(Bytes::from(buffer))
}

/// A [`Store`] that encrypts the values an [`EncryptionConfig`] governs on the way into an
/// inner store and decrypts every value on the way out.
#[derive(Debug)]
pub struct EncryptedStore {
    inner: Arc<dyn Store>,
    config: Arc<EncryptionConfig>,
}

impl EncryptedStore {
    /// Wraps `inner` with `config`.
    pub fn new(inner: Arc<dyn Store>, config: Arc<EncryptionConfig>) -> Self {
        Self { inner, config }
    }
}

#[async_trait]
impl Store for EncryptedStore {
    async fn create(&self, key: &str, value: Bytes) -> Result<Revision, StoreError> {
        let value = self.config.encrypt(key, value).map_err(transform(key))?;
        self.inner.create(key, value).await
    }

    async fn get(
        &self,
        key: &str,
        revision: Option<Revision>,
    ) -> Result<Option<KeyValue>, StoreError> {
        self.inner
            .get(key, revision)
            .await?
            .map(|kv| self.config.decrypt_kv(kv))
            .transpose()
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected_mod_revision: Revision,
    ) -> Result<Revision, StoreError> {
        let value = self.config.encrypt(key, value).map_err(transform(key))?;
        self.inner.update(key, value, expected_mod_revision).await
    }

    async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<Revision>,
    ) -> Result<Deleted, StoreError> {
        let deleted = self.inner.delete(key, expected_mod_revision).await?;
        Ok(Deleted {
            previous: self.config.decrypt_kv(deleted.previous)?,
            ..deleted
        })
    }

    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResult, StoreError> {
        let listed = self.inner.list(prefix, options).await?;
        let items = listed
            .items
            .into_iter()
            .map(|kv| self.config.decrypt_kv(kv))
            .collect::<Result<_, _>>()?;
        Ok(ListResult { items, ..listed })
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        let config = Arc::clone(&self.config);
        let events = self.inner.watch(prefix, from_revision).await?;
        Ok(Box::pin(events.map(move |event| {
            event.and_then(|event| config.decrypt_event(event))
        })))
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.inner.compact(revision).await
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        self.inner.current_revision().await
    }
}

#[cfg(test)]
mod tests;
