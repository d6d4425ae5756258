use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt as _;

use super::{EncryptedStore, EncryptionConfig, TransformError};
use crate::{EventKind, ListOptions, SqliteOptions, SqliteStore, Store, StoreError};

const KEY_1: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes
const KEY_2: &str = "c2Vjb25kIGtleSBvZiAzMiBieXRlcyBmb3IgdGVzdHM="; // 32 bytes
const KEY_16: &str = "MDEyMzQ1Njc4OWFiY2RlZg=="; // 16 bytes
const SECRET: &str = "/registry/secrets/default/db";
const PLAIN: &[u8] = br#"{"kind":"Secret","data":{"password":"aHVudGVyMg=="}}"#;

/// A configuration for Secrets whose providers are `providers` (YAML list items, indented).
fn config(providers: &str) -> Arc<EncryptionConfig> {
    let text = format!(
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  \
         - resources: [secrets]\n    providers:\n{providers}"
    );
    Arc::new(EncryptionConfig::from_yaml(&text).unwrap_or_else(|e| panic!("{e}: {text}")))
}

fn aesgcm(keys: &[(&str, &str)]) -> String {
    let mut text = "      - aesgcm:\n          keys:\n".to_owned();
    for (name, secret) in keys {
        text.push_str(&format!(
            "            - name: {name}\n              secret: {secret}\n"
        ));
    }
    text
}

const IDENTITY: &str = "      - identity: {}\n";

async fn sqlite() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("state.db"), SqliteOptions::default())
        .await
        .expect("open SQLite");
    (Arc::new(store), dir)
}

async fn raw(store: &dyn Store, key: &str) -> Bytes {
    store
        .get(key, None)
        .await
        .expect("get")
        .expect("the key exists")
        .value
}

fn transform_error(error: StoreError) -> TransformError {
    match error {
        StoreError::Transform { source, .. } => source,
        other => panic!("expected a transform error, got {other:?}"),
    }
}

#[tokio::test]
async fn secrets_round_trip_and_are_stored_in_kubernetes_form() {
    let (inner, _dir) = sqlite().await;
    let store = EncryptedStore::new(Arc::clone(&inner), config(&aesgcm(&[("k1", KEY_1)])));
    let revision = store
        .create(SECRET, Bytes::from_static(PLAIN))
        .await
        .expect("create");

    let stored = raw(inner.as_ref(), SECRET).await;
    let prefix = b"k8s:enc:aesgcm:v1:k1:";
    assert!(stored.starts_with(prefix), "{stored:?}");
    // Prefix, 12-byte nonce, ciphertext as long as the value, 16-byte tag.
    assert_eq!(stored.len(), prefix.len() + 12 + PLAIN.len() + 16);
    assert!(!stored.windows(8).any(|w| w == b"aHVudGVy"), "{stored:?}");

    let got = store.get(SECRET, None).await.expect("get").expect("exists");
    assert_eq!((got.value.as_ref(), got.mod_revision), (PLAIN, revision));
    let listed = store
        .list("/registry/secrets/", ListOptions::default())
        .await
        .expect("list");
    assert_eq!(listed.items[0].value.as_ref(), PLAIN);

    // Two writes of one value differ (random nonces).
    store
        .update(SECRET, Bytes::from_static(PLAIN), revision)
        .await
        .expect("update");
    assert_ne!(raw(inner.as_ref(), SECRET).await, stored);
    let deleted = store.delete(SECRET, None).await.expect("delete");
    assert_eq!(deleted.previous.value.as_ref(), PLAIN);
}

#[tokio::test]
async fn other_resources_stay_plain() {
    let (inner, _dir) = sqlite().await;
    let store = EncryptedStore::new(Arc::clone(&inner), config(&aesgcm(&[("k1", KEY_1)])));
    let key = "/registry/configmaps/default/settings";
    store
        .create(key, Bytes::from_static(b"{}"))
        .await
        .expect("create");
    assert_eq!(raw(inner.as_ref(), key).await.as_ref(), b"{}");
}

#[tokio::test]
async fn a_changed_or_moved_ciphertext_is_an_error_not_a_value() {
    let (inner, _dir) = sqlite().await;
    let store = EncryptedStore::new(Arc::clone(&inner), config(&aesgcm(&[("k1", KEY_1)])));
    store
        .create(SECRET, Bytes::from_static(PLAIN))
        .await
        .expect("create");
    let stored = raw(inner.as_ref(), SECRET).await;

    let mut tampered = stored.to_vec();
    let last = tampered.len() - 20;
    tampered[last] ^= 1;
    let other = "/registry/secrets/default/tampered";
    inner
        .create(other, Bytes::from(tampered))
        .await
        .expect("create");
    // The intact ciphertext under another key: the key is authenticated data.
    let moved = "/registry/secrets/default/moved";
    inner.create(moved, stored.clone()).await.expect("create");
    let truncated = "/registry/secrets/default/truncated";
    inner
        .create(truncated, stored.slice(..30))
        .await
        .expect("create");

    for key in [other, moved] {
        let error = store.get(key, None).await.expect_err(key);
        assert_eq!(
            error.to_string(),
            format!("unable to transform key {key:?}")
        );
        assert_eq!(
            transform_error(error).to_string(),
            "message authentication failed for aesgcm key \"k1\""
        );
    }
    let error = transform_error(store.get(truncated, None).await.expect_err("truncated"));
    assert_eq!(
        error.to_string(),
        "the stored data was shorter than the required size"
    );
    // A list that meets a bad value fails as a whole rather than hide it.
    let error = store
        .list("/registry/secrets/", ListOptions::default())
        .await
        .expect_err("list");
    assert!(matches!(error, StoreError::Transform { .. }), "{error:?}");
}

#[tokio::test]
async fn the_first_key_encrypts_and_every_key_decrypts() {
    let (inner, _dir) = sqlite().await;
    let old = EncryptedStore::new(Arc::clone(&inner), config(&aesgcm(&[("old", KEY_1)])));
    let revision = old
        .create(SECRET, Bytes::from_static(PLAIN))
        .await
        .expect("create");

    // Rotation: the new key first, the old one still listed.
    let rotated = EncryptedStore::new(
        Arc::clone(&inner),
        config(&aesgcm(&[("new", KEY_2), ("old", KEY_1)])),
    );
    let got = rotated
        .get(SECRET, None)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(got.value.as_ref(), PLAIN);
    rotated
        .update(SECRET, got.value, revision)
        .await
        .expect("rewrite");
    assert!(
        raw(inner.as_ref(), SECRET)
            .await
            .starts_with(b"k8s:enc:aesgcm:v1:new:")
    );

    // Once the old key is dropped, values still under it fail naming it.
    let other = "/registry/secrets/default/other";
    old.create(other, Bytes::from_static(PLAIN))
        .await
        .expect("create");
    let new_only = EncryptedStore::new(Arc::clone(&inner), config(&aesgcm(&[("new", KEY_2)])));
    assert_eq!(
        new_only
            .get(SECRET, None)
            .await
            .expect("get")
            .expect("exists")
            .value
            .as_ref(),
        PLAIN
    );
    let error = transform_error(new_only.get(other, None).await.expect_err("old key gone"));
    assert_eq!(
        error.to_string(),
        "no aesgcm key named \"old\" in the encryption configuration"
    );
}

#[tokio::test]
async fn plaintext_reads_and_identity_first_writes_plaintext() {
    let (inner, _dir) = sqlite().await;
    // Written before encryption was turned on.
    inner
        .create(SECRET, Bytes::from_static(PLAIN))
        .await
        .expect("create");
    let encrypting = EncryptedStore::new(
        Arc::clone(&inner),
        config(&(aesgcm(&[("k1", KEY_16)]) + IDENTITY)),
    );
    let got = encrypting
        .get(SECRET, None)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(got.value.as_ref(), PLAIN);
    encrypting
        .update(SECRET, got.value, got.mod_revision)
        .await
        .expect("rewrite");
    assert!(
        raw(inner.as_ref(), SECRET)
            .await
            .starts_with(b"k8s:enc:aesgcm:v1:k1:")
    );

    // Decrypting: identity first writes plaintext, the key still reads.
    let decrypting = EncryptedStore::new(
        Arc::clone(&inner),
        config(&(IDENTITY.to_owned() + &aesgcm(&[("k1", KEY_16)]))),
    );
    let got = decrypting
        .get(SECRET, None)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(got.value.as_ref(), PLAIN);
    decrypting
        .update(SECRET, got.value, got.mod_revision)
        .await
        .expect("rewrite");
    assert_eq!(raw(inner.as_ref(), SECRET).await.as_ref(), PLAIN);
}

#[tokio::test]
async fn other_providers_values_are_refused_by_name() {
    let (inner, _dir) = sqlite().await;
    let store = EncryptedStore::new(Arc::clone(&inner), config(&aesgcm(&[("k1", KEY_1)])));
    inner
        .create(
            SECRET,
            Bytes::from_static(b"k8s:enc:aescbc:v1:key1:\x00\x01\x02"),
        )
        .await
        .expect("create");
    let error = transform_error(store.get(SECRET, None).await.expect_err("aescbc"));
    assert_eq!(
        error.to_string(),
        "the value is encrypted by a provider keelson does not read (k8s:enc:aescbc:v1)"
    );
}

#[tokio::test]
async fn watch_events_carry_decrypted_values_and_previous_values() {
    let (inner, _dir) = sqlite().await;
    let store = EncryptedStore::new(Arc::clone(&inner), config(&aesgcm(&[("k1", KEY_1)])));
    let start = store.current_revision().await.expect("revision");
    let created = store
        .create(SECRET, Bytes::from_static(b"one"))
        .await
        .expect("create");
    store
        .update(SECRET, Bytes::from_static(b"two"), created)
        .await
        .expect("update");
    store.delete(SECRET, None).await.expect("delete");

    let mut watch = store
        .watch("/registry/secrets/", start)
        .await
        .expect("watch");
    let mut seen = Vec::new();
    for _ in 0..3 {
        let event = tokio::time::timeout(std::time::Duration::from_secs(5), watch.next())
            .await
            .expect("an event within 5 s")
            .expect("the watch goes on")
            .expect("a decrypted event");
        seen.push((event.kind, event.value, event.prev_value));
    }
    let b = |s: &'static str| Bytes::from_static(s.as_bytes());
    assert_eq!(
        seen,
        [
            (EventKind::Added, b("one"), None),
            (EventKind::Modified, b("two"), Some(b("one"))),
            (EventKind::Deleted, b("two"), Some(b("two"))),
        ]
    );
}
