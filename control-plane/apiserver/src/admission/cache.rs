//! The admission configuration of a server (webhook configurations, admission policies and
//! their bindings), read from the store once per change and followed by watches.

use std::sync::{
    Arc, Weak,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use futures_util::StreamExt as _;
use k8s_openapi::api::admissionregistration::v1 as admissionregistration;
use keelson_store::{ListOptions, Store};
use serde::de::DeserializeOwned;

use super::{
    GROUP,
    matching::{self, Hook},
    policy,
};
use crate::{ApiError, object::decode_kv, registry};

/// The resources the admission configuration is read from (plural, kind).
pub(super) const CONFIGURATIONS: &[(&str, &str)] = &[
    (
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
    ),
    (
        "validatingwebhookconfigurations",
        "ValidatingWebhookConfiguration",
    ),
    ("validatingadmissionpolicies", "ValidatingAdmissionPolicy"),
    (
        "validatingadmissionpolicybindings",
        "ValidatingAdmissionPolicyBinding",
    ),
];

/// The webhooks of the stored configurations, in calling order.
#[derive(Debug, Default)]
pub(super) struct Snapshot {
    /// The [`Webhooks::generation`] it was read at.
    generation: u64,
    pub(super) mutating: Vec<Hook>,
    pub(super) validating: Vec<Hook>,
    /// The ValidatingAdmissionPolicies with their bindings.
    pub(super) policies: Vec<policy::PolicyHook>,
}

/// The cached webhook configurations of a server.
#[derive(Debug)]
pub struct Webhooks {
    snapshot: tokio::sync::RwLock<Option<Arc<Snapshot>>>,
    /// Counts the changes of the configurations: a snapshot of an older generation is read
    /// again before use.
    generation: AtomicU64,
    /// Whether store watches keep `generation` up to date.
    watching: AtomicBool,
    /// Serialises re-reads.
    loading: tokio::sync::Mutex<()>,
}

impl Default for Webhooks {
    fn default() -> Self {
        Self {
            snapshot: tokio::sync::RwLock::new(None),
            generation: AtomicU64::new(0),
            watching: AtomicBool::new(false),
            loading: tokio::sync::Mutex::new(()),
        }
    }
}

fn configurations<T: DeserializeOwned>(
    items: &[keelson_store::KeyValue],
) -> Result<Vec<T>, ApiError> {
    let mut out = Vec::with_capacity(items.len());
    for kv in items {
        let value = decode_kv(kv)?;
        match serde_json::from_value(value) {
            Ok(configuration) => out.push(configuration),
            Err(error) => tracing::warn!(key = kv.key, %error, "unreadable webhook configuration"),
        }
    }
    Ok(out)
}

impl Webhooks {
    /// Marks the configurations as changed: the next admission reads them again.
    pub(crate) fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The cached snapshot, if it is of the current generation.
    async fn current(&self) -> Option<Arc<Snapshot>> {
        let generation = self.generation.load(Ordering::SeqCst);
        self.snapshot
            .read()
            .await
            .as_ref()
            .filter(|s| s.generation == generation)
            .map(Arc::clone)
    }

    /// The current webhooks: cached, or read from the store when they may have changed.
    pub(super) async fn snapshot(
        self: &Arc<Self>,
        store: &Arc<dyn Store>,
    ) -> Result<Arc<Snapshot>, ApiError> {
        if let Some(snapshot) = self.current().await {
            return Ok(snapshot);
        }
        let _loading = self.loading.lock().await;
        if let Some(snapshot) = self.current().await {
            return Ok(snapshot);
        }
        // Taken before reading: a change during the read makes this snapshot outdated at once.
        let generation = self.generation.load(Ordering::SeqCst);
        let read = |plural: &'static str| async move {
            let resource = registry::find(GROUP, "v1", plural).ok_or_else(ApiError::no_route)?;
            store
                .list(&resource.prefix(), ListOptions::default())
                .await
                .map_err(|e| ApiError::from_store(e, resource, ""))
        };
        let mutating = read("mutatingwebhookconfigurations").await?;
        let validating = read("validatingwebhookconfigurations").await?;
        let policies = read("validatingadmissionpolicies").await?;
        let bindings = read("validatingadmissionpolicybindings").await?;
        let snapshot = Arc::new(Snapshot {
            generation,
            mutating: matching::mutating_hooks(configurations::<
                admissionregistration::MutatingWebhookConfiguration,
            >(&mutating.items)?),
            validating: matching::validating_hooks(configurations::<
                admissionregistration::ValidatingWebhookConfiguration,
            >(&validating.items)?),
            policies: policy::policy_hooks(
                configurations(&policies.items)?,
                configurations(&bindings.items)?,
            ),
        });
        *self.snapshot.write().await = Some(Arc::clone(&snapshot));
        if !self.watching.swap(true, Ordering::SeqCst) {
            let from = [&mutating, &validating, &policies, &bindings]
                .iter()
                .map(|l| l.revision)
                .min()
                .unwrap_or(mutating.revision);
            for (plural, _) in CONFIGURATIONS {
                if let Some(resource) = registry::find(GROUP, "v1", plural) {
                    tokio::spawn(watch(
                        Arc::clone(store),
                        resource.prefix(),
                        from,
                        Arc::downgrade(self),
                    ));
                }
            }
        }
        Ok(snapshot)
    }
}

/// Marks `webhooks` stale on every change under `prefix` (writes by other API servers on
/// the same store); when the watch ends, marks them stale and lets the next read restart it.
async fn watch(store: Arc<dyn Store>, prefix: String, from: i64, webhooks: Weak<Webhooks>) {
    let stream = store.watch(&prefix, from).await;
    drop(store);
    if let Ok(mut stream) = stream {
        while let Some(event) = stream.next().await {
            let Some(webhooks) = webhooks.upgrade() else {
                return;
            };
            webhooks.invalidate();
            if event.is_err() {
                break;
            }
        }
    }
    if let Some(webhooks) = webhooks.upgrade() {
        webhooks.watching.store(false, Ordering::SeqCst);
        webhooks.invalidate();
    }
}
