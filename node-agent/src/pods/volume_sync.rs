//! Keeps the configMap, secret, downwardAPI and projected volumes of running pods up to date,
//! as the kubelet does with its watch-based ConfigMap/Secret manager: each ConfigMap and Secret
//! a pod on this node reads is watched on its own (a `metadata.name` field selector, all the
//! Node authorizer lets a node list or watch), and a change rewrites the volumes that read it
//! through [`atomic_writer`] (a new `..data` swapped in; nothing written when the files are
//! the same). A change of the pod's labels or annotations rewrites its downward API files the
//! same way. Objects marked `immutable` stop being watched once seen.
//!
//! Only volumes the pod worker has already set up (their `..data` link exists) are rewritten;
//! the worker's own periodic resync stays as the fallback. A container that mounts a single
//! file through `subPath` keeps the file it started with, as in Kubernetes: its bind mount
//! holds the old timestamped directory's file. Service-account tokens in projected volumes
//! are the worker's ([`super::tokens`]); a rewrite here keeps the token file as it is.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    path::{Path, PathBuf},
    sync::Arc,
};

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Volume};
use kube::{
    Api, Client,
    runtime::{WatchStreamExt as _, watcher},
};
use tokio::{sync::mpsc, task::JoinHandle};

use super::{
    Ctx,
    atomic_writer::{self, DATA_DIR, Payload},
    projection::{self, DEFAULT_MODE, KeyKind, ObjectData, Resolved},
    volume_error::MountError,
};

/// A ConfigMap or Secret: namespace, kind, name.
pub type ObjectKey = (String, KeyKind, String);

/// What is known of a watched object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Known {
    /// The object does not exist.
    Absent,
    /// Its data (ConfigMap `data` and `binaryData`; Secret `data`).
    Present(ObjectData),
}

/// Whether the kubelet keeps `volume` up to date after the pod starts.
pub fn is_synced(volume: &Volume) -> bool {
    volume.config_map.is_some()
        || volume.secret.is_some()
        || volume.downward_api.is_some()
        || volume.projected.is_some()
}

/// The ConfigMaps and Secrets (kind, name) the pod's volumes read.
pub fn referenced(pod: &Pod) -> BTreeSet<(KeyKind, String)> {
    let mut found = BTreeSet::new();
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        if let Some(cm) = &volume.config_map {
            found.insert((KeyKind::ConfigMap, cm.name.clone()));
        }
        if let Some(secret) = &volume.secret {
            let name = secret.secret_name.clone().unwrap_or_default();
            found.insert((KeyKind::Secret, name));
        }
        for source in volume
            .projected
            .iter()
            .flat_map(|p| p.sources.iter().flatten())
        {
            if let Some(cm) = &source.config_map {
                found.insert((KeyKind::ConfigMap, cm.name.clone()));
            }
            if let Some(secret) = &source.secret {
                found.insert((KeyKind::Secret, secret.name.clone()));
            }
        }
    }
    found
}

/// The objects of one namespace as known, and the token files a projected volume has now.
struct View<'a> {
    objects: &'a BTreeMap<(KeyKind, String), Known>,
    tokens: &'a BTreeMap<usize, Vec<u8>>,
}

impl Resolved for View<'_> {
    fn object(&self, kind: KeyKind, name: &str) -> Result<Option<ObjectData>, MountError> {
        Ok(match self.objects.get(&(kind, name.to_owned())) {
            Some(Known::Present(data)) => Some(data.clone()),
            Some(Known::Absent) | None => None,
        })
    }

    fn token(&mut self, index: usize) -> Result<Vec<u8>, MountError> {
        Ok(self.tokens.get(&index).cloned().unwrap_or_default())
    }
}

/// The files `volume` of `pod` should hold now, from the objects as known and the current
/// token files of a projected volume (by source index). `None`: not a volume kept up to date,
/// or an object it reads is not known yet (nothing to decide on).
pub fn desired(
    volume: &Volume,
    pod: &Pod,
    host_ip: &str,
    objects: &BTreeMap<(KeyKind, String), Known>,
    tokens: &BTreeMap<usize, Vec<u8>>,
) -> Option<Result<Payload, MountError>> {
    let pod_ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .unwrap_or_default();
    let known = |kind, name: &str| objects.get(&(kind, name.to_owned()));
    let mut view = View { objects, tokens };
    if let Some(cm) = &volume.config_map {
        let data = known(KeyKind::ConfigMap, &cm.name)?;
        Some(projection::object_payload(
            KeyKind::ConfigMap,
            &cm.name,
            present(data),
            cm.items.as_deref(),
            projection::mode(cm.default_mode, DEFAULT_MODE),
            cm.optional == Some(true),
        ))
    } else if let Some(secret) = &volume.secret {
        let name = secret.secret_name.clone().unwrap_or_default();
        let data = known(KeyKind::Secret, &name)?;
        Some(projection::object_payload(
            KeyKind::Secret,
            &name,
            present(data),
            secret.items.as_deref(),
            projection::mode(secret.default_mode, DEFAULT_MODE),
            secret.optional == Some(true),
        ))
    } else if let Some(downward) = &volume.downward_api {
        Some(projection::downward_payload(
            downward.items.as_deref().unwrap_or_default(),
            pod,
            projection::mode(downward.default_mode, DEFAULT_MODE),
            pod_ip,
            host_ip,
        ))
    } else if let Some(projected) = &volume.projected {
        for source in projected.sources.iter().flatten() {
            if let Some(cm) = &source.config_map {
                known(KeyKind::ConfigMap, &cm.name)?;
            }
            if let Some(secret) = &source.secret {
                known(KeyKind::Secret, &secret.name)?;
            }
        }
        Some(projection::projected_files(
            projected, pod, pod_ip, host_ip, &mut view,
        ))
    } else {
        None
    }
}

fn present(known: &Known) -> Option<&ObjectData> {
    match known {
        Known::Present(data) => Some(data),
        Known::Absent => None,
    }
}

/// Whether a new version of the pod changes what its downward API files may show.
fn metadata_changed(old: &Pod, new: &Pod) -> bool {
    old.metadata.labels != new.metadata.labels
        || old.metadata.annotations != new.metadata.annotations
}

/// What the sync task hears.
enum Message {
    /// A pod bound to this node, as the API has it now.
    Pod(Box<Pod>),
    /// The pod is gone.
    Forget(String),
    /// A watched object's state.
    Object {
        key: ObjectKey,
        known: Known,
        immutable: bool,
    },
}

/// Aborts a background task when dropped.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The handle the pod loop feeds; the sync stops when it is dropped.
pub struct VolumeSync {
    tx: mpsc::UnboundedSender<Message>,
    _task: AbortOnDrop,
}

impl std::fmt::Debug for VolumeSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeSync").finish_non_exhaustive()
    }
}

impl VolumeSync {
    /// Starts the sync for the pods of `ctx`'s node.
    pub fn start(ctx: Arc<Ctx>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let state = State {
            client: ctx.client.clone(),
            data_dir: ctx.config.data_dir.clone(),
            host_ip: ctx.config.host_ip.to_string(),
            tx: tx.clone(),
            pods: HashMap::new(),
            objects: HashMap::new(),
            watches: HashMap::new(),
            immutable: HashSet::new(),
        };
        let task = tokio::spawn(state.run(rx));
        Self {
            tx,
            _task: AbortOnDrop(task),
        }
    }

    /// Notes the pod's current version (passed through, for the caller's next step).
    pub fn observe(&self, pod: Pod) -> Pod {
        let synced = pod
            .spec
            .as_ref()
            .is_some_and(|s| s.volumes.iter().flatten().any(is_synced));
        if synced {
            let _ = self.tx.send(Message::Pod(Box::new(pod.clone())));
        }
        pod
    }

    /// Forgets pod `uid` (deleted, or no longer bound here).
    pub fn forget(&self, uid: &str) {
        let _ = self.tx.send(Message::Forget(uid.to_owned()));
    }
}

/// A pod kept up to date, with the last failure per volume (logged once).
struct Entry {
    pod: Pod,
    errors: HashMap<String, String>,
}

struct State {
    client: Client,
    data_dir: PathBuf,
    host_ip: String,
    tx: mpsc::UnboundedSender<Message>,
    pods: HashMap<String, Entry>,
    objects: HashMap<ObjectKey, Known>,
    watches: HashMap<ObjectKey, AbortOnDrop>,
    immutable: HashSet<ObjectKey>,
}

fn namespace(pod: &Pod) -> String {
    pod.metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into())
}

impl State {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Message>) {
        while let Some(message) = rx.recv().await {
            match message {
                Message::Pod(pod) => self.pod(*pod),
                Message::Forget(uid) => {
                    if self.pods.remove(&uid).is_some() {
                        self.update_watches();
                    }
                }
                Message::Object {
                    key,
                    known,
                    immutable,
                } => self.object(key, known, immutable),
            }
        }
    }

    fn pod(&mut self, pod: Pod) {
        let Some(uid) = pod.metadata.uid.clone() else {
            return;
        };
        match self.pods.get_mut(&uid) {
            Some(entry) => {
                let resync = metadata_changed(&entry.pod, &pod);
                let refs_changed = referenced(&entry.pod) != referenced(&pod);
                entry.pod = pod;
                if refs_changed {
                    self.update_watches();
                }
                if resync {
                    self.resync(&uid);
                }
            }
            None => {
                self.pods.insert(
                    uid,
                    Entry {
                        pod,
                        errors: HashMap::new(),
                    },
                );
                self.update_watches();
            }
        }
    }

    fn object(&mut self, key: ObjectKey, known: Known, immutable: bool) {
        if immutable && self.immutable.insert(key.clone()) {
            // As the kubelet: an immutable object cannot change, so its watch can go.
            self.watches.remove(&key);
        }
        if self.objects.get(&key) == Some(&known) {
            return;
        }
        self.objects.insert(key.clone(), known);
        let readers: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, e)| {
                namespace(&e.pod) == key.0 && referenced(&e.pod).contains(&(key.1, key.2.clone()))
            })
            .map(|(uid, _)| uid.clone())
            .collect();
        for uid in readers {
            self.resync(&uid);
        }
    }

    /// Starts a watch for every object a pod reads and stops those no pod reads any more.
    fn update_watches(&mut self) {
        let wanted: HashSet<ObjectKey> = self
            .pods
            .values()
            .flat_map(|e| {
                let ns = namespace(&e.pod);
                referenced(&e.pod)
                    .into_iter()
                    .map(move |(kind, name)| (ns.clone(), kind, name))
            })
            .collect();
        self.watches.retain(|key, _| wanted.contains(key));
        self.objects.retain(|key, _| wanted.contains(key));
        self.immutable.retain(|key| wanted.contains(key));
        for key in wanted {
            if self.watches.contains_key(&key) || self.immutable.contains(&key) {
                continue;
            }
            let task = tokio::spawn(watch_object(
                self.client.clone(),
                key.clone(),
                self.tx.clone(),
            ));
            self.watches.insert(key, AbortOnDrop(task));
        }
    }

    /// Rewrites the pod's volumes that the worker has set up, where their files changed.
    fn resync(&mut self, uid: &str) {
        let Some(entry) = self.pods.get_mut(uid) else {
            return;
        };
        let pod = &entry.pod;
        if pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_ref())
            .is_none()
        {
            // Not started yet: the worker's first mount writes the files.
            return;
        }
        let ns = namespace(pod);
        let objects: BTreeMap<(KeyKind, String), Known> = self
            .objects
            .iter()
            .filter(|(key, _)| key.0 == ns)
            .map(|(key, known)| ((key.1, key.2.clone()), known.clone()))
            .collect();
        let dir = self.data_dir.join("pods").join(uid).join("volumes");
        for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            let target = dir.join(&volume.name);
            if !is_synced(volume) || std::fs::symlink_metadata(target.join(DATA_DIR)).is_err() {
                continue;
            }
            let tokens = current_tokens(volume, &target);
            let Some(payload) = desired(volume, pod, &self.host_ip, &objects, &tokens) else {
                continue;
            };
            let result = payload.and_then(|payload| {
                let written = atomic_writer::write(&target, &payload)?;
                if written {
                    super::fs_group::apply(pod, &target, true).map_err(|source| {
                        MountError::Io {
                            action: "applying fsGroup ownership to",
                            path: target.clone(),
                            source,
                        }
                    })?;
                }
                Ok(written)
            });
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            match result {
                Ok(written) => {
                    entry.errors.remove(&volume.name);
                    if written {
                        tracing::info!(pod = %name, namespace = %ns, volume = %volume.name, "volume updated");
                    }
                }
                Err(error) => {
                    // The files stay as they were, as the kubelet leaves them.
                    let error = crate::error_chain(&error);
                    if entry.errors.get(&volume.name) != Some(&error) {
                        tracing::warn!(pod = %name, namespace = %ns, volume = %volume.name, %error, "updating volume");
                        entry.errors.insert(volume.name.clone(), error);
                    }
                }
            }
        }
    }
}

/// The token files a projected volume has now, by source index (kept as they are).
fn current_tokens(volume: &Volume, target: &Path) -> BTreeMap<usize, Vec<u8>> {
    let mut tokens = BTreeMap::new();
    for (index, source) in volume
        .projected
        .iter()
        .flat_map(|p| p.sources.iter().flatten())
        .enumerate()
    {
        if let Some(token) = &source.service_account_token
            && let Ok(data) = std::fs::read(target.join(DATA_DIR).join(&token.path))
        {
            tokens.insert(index, data);
        }
    }
    tokens
}

/// ConfigMap data as volume files (`binaryData` beside `data`).
fn config_map_known(cm: ConfigMap) -> (Known, bool) {
    let immutable = cm.immutable == Some(true);
    (Known::Present(super::spec::config_map_bytes(cm)), immutable)
}

/// Secret data as volume files.
fn secret_known(secret: Secret) -> (Known, bool) {
    let immutable = secret.immutable == Some(true);
    let mut data: ObjectData = secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    for (k, v) in secret.string_data.unwrap_or_default() {
        data.insert(k, v.into_bytes());
    }
    (Known::Present(data), immutable)
}

/// Watches one object by name and reports each state of it until aborted.
async fn watch_object(client: Client, key: ObjectKey, tx: mpsc::UnboundedSender<Message>) {
    let (ns, kind, name) = key.clone();
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    match kind {
        KeyKind::ConfigMap => {
            let api: Api<ConfigMap> = Api::namespaced(client, &ns);
            follow(api, config, key, tx, config_map_known).await;
        }
        KeyKind::Secret => {
            let api: Api<Secret> = Api::namespaced(client, &ns);
            follow(api, config, key, tx, secret_known).await;
        }
    }
}

async fn follow<K>(
    api: Api<K>,
    config: watcher::Config,
    key: ObjectKey,
    tx: mpsc::UnboundedSender<Message>,
    convert: fn(K) -> (Known, bool),
) where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let mut events = watcher::watcher(api, config).default_backoff().boxed();
    let mut listed = false;
    let send = |known: Known, immutable: bool| {
        tx.send(Message::Object {
            key: key.clone(),
            known,
            immutable,
        })
        .is_ok()
    };
    while let Some(event) = events.next().await {
        let sent = match event {
            Ok(watcher::Event::Init) => {
                listed = false;
                true
            }
            Ok(watcher::Event::InitApply(object) | watcher::Event::Apply(object)) => {
                listed = true;
                let (known, immutable) = convert(object);
                send(known, immutable)
            }
            Ok(watcher::Event::Delete(_)) => send(Known::Absent, false),
            Ok(watcher::Event::InitDone) if !listed => send(Known::Absent, false),
            Ok(watcher::Event::InitDone) => true,
            Err(error) => {
                tracing::debug!(object = %key.2, %error, "watching a volume's object");
                true
            }
        };
        if !sent {
            return;
        }
    }
}

#[cfg(test)]
#[path = "volume_sync_tests.rs"]
mod tests;
