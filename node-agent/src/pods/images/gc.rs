//! Image garbage collection, as the kubelet's image GC manager does it: when the image
//! filesystem is at least `--image-gc-high-threshold` percent used (default 85), images no
//! container uses (Docker's containers, running or not, on any node sharing the daemon) are
//! removed, least recently used first, until the usage would be below
//! `--image-gc-low-threshold` (default 80). Images first seen less than `imageMinimumGCAge`
//! (2 minutes) ago stay (they may have just been pulled for a pod), and so does the pinned
//! sandbox image. A high threshold of 100 turns collection off. When not enough could be
//! freed, the node gets a Warning event `FreeDiskSpaceFailed`.
//!
//! One difference from the kubelet, whose container runtime belongs to it alone: the Docker
//! daemon keelson uses is often the host's own, holding images that are none of the node's
//! business. So only images some pod container of this node was created from (seen while the
//! agent runs) are ever removed; images other users pulled are never touched.
//!
//! Sources: kubernetes `pkg/kubelet/images/image_gc_manager.go` (`GarbageCollect`,
//! `freeSpace`, `detectImages`, `byLastUsedAndDetected`, the event wording),
//! `pkg/kubelet/apis/config/v1beta1/defaults.go` (the defaults),
//! `pkg/kubelet/apis/config/validation/validation.go` (threshold checks).

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use k8s_openapi::jiff::Timestamp;

use crate::pods::runtime::RuntimeError;

/// `imageGCHighThresholdPercent`'s default.
pub const DEFAULT_HIGH_THRESHOLD: u8 = 85;
/// `imageGCLowThresholdPercent`'s default.
pub const DEFAULT_LOW_THRESHOLD: u8 = 80;
/// `imageMinimumGCAge`'s default.
pub const DEFAULT_MINIMUM_AGE: Duration = Duration::from_secs(120);
/// How often images are looked at (the kubelet's `ImageGCPeriod`).
pub const PERIOD: Duration = Duration::from_secs(300);

/// When and how far images are collected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Collect from this percentage of the image filesystem used; 100: never.
    pub high_threshold: u8,
    /// Collect down to this percentage.
    pub low_threshold: u8,
    /// Images seen for less than this stay.
    pub minimum_age: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            high_threshold: DEFAULT_HIGH_THRESHOLD,
            low_threshold: DEFAULT_LOW_THRESHOLD,
            minimum_age: DEFAULT_MINIMUM_AGE,
        }
    }
}

/// Image GC thresholds the kubelet's configuration validation refuses (its wording).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// `--image-gc-high-threshold` above 100.
    #[error(
        "invalid configuration: imageGCHighThresholdPercent (--image-gc-high-threshold) {high} \
         must be between 0 and 100, inclusive"
    )]
    HighOutOfRange {
        /// The value given.
        high: u8,
    },
    /// `--image-gc-low-threshold` above 100.
    #[error(
        "invalid configuration: imageGCLowThresholdPercent (--image-gc-low-threshold) {low} \
         must be between 0 and 100, inclusive"
    )]
    LowOutOfRange {
        /// The value given.
        low: u8,
    },
    /// The low threshold not below the high one.
    #[error(
        "invalid configuration: imageGCLowThresholdPercent (--image-gc-low-threshold) {low} \
         must be less than imageGCHighThresholdPercent (--image-gc-high-threshold) {high}"
    )]
    LowNotBelowHigh {
        /// The low threshold.
        low: u8,
        /// The high threshold.
        high: u8,
    },
}

impl Policy {
    /// The policy, checked as the kubelet checks its configuration.
    pub fn new(high: u8, low: u8, minimum_age: Duration) -> Result<Self, PolicyError> {
        if high > 100 {
            return Err(PolicyError::HighOutOfRange { high });
        }
        if low > 100 {
            return Err(PolicyError::LowOutOfRange { low });
        }
        if low >= high {
            return Err(PolicyError::LowNotBelowHigh { low, high });
        }
        Ok(Self {
            high_threshold: high,
            low_threshold: low,
            minimum_age,
        })
    }

    /// Whether images are ever collected.
    pub fn enabled(&self) -> bool {
        self.high_threshold < 100
    }

    /// How many bytes to free on a filesystem with `available` of `capacity` bytes: none
    /// below the high threshold, else enough to reach the low one.
    pub fn bytes_to_free(&self, capacity: i64, available: i64) -> Option<i64> {
        if !self.enabled() || capacity <= 0 {
            return None;
        }
        let used_percent = 100 - available.saturating_mul(100) / capacity;
        (used_percent >= i64::from(self.high_threshold))
            .then(|| capacity.saturating_mul(100 - i64::from(self.low_threshold)) / 100 - available)
    }
}

/// An image as the runtime lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// Its id (`sha256:...`).
    pub id: String,
    /// Its names (`repo:tag`).
    pub tags: Vec<String>,
    /// Bytes.
    pub size: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    first_detected: Timestamp,
    last_used: Timestamp,
    size: i64,
    /// A pod container of this node was created from it (only those are collected).
    ours: bool,
}

/// When each image was first seen and last used, across passes.
#[derive(Debug, Default)]
pub struct Tracker {
    records: HashMap<String, Record>,
}

impl Tracker {
    /// Takes in the runtime's images at `now`: new ones are first detected now, those in use
    /// were used now, and records of images that are gone are dropped.
    pub fn detect(&mut self, images: &[Image], in_use: &HashSet<String>, now: Timestamp) {
        self.records
            .retain(|id, _| images.iter().any(|image| image.id == *id));
        for image in images {
            let record = self.records.entry(image.id.clone()).or_insert(Record {
                first_detected: now,
                last_used: Timestamp::UNIX_EPOCH,
                size: image.size,
                ours: false,
            });
            record.size = image.size;
            if in_use.contains(&image.id) {
                record.last_used = now;
            }
        }
    }

    /// Marks the images pod containers of this node were created from as the node's own (for
    /// as long as the image exists): only those are ever chosen.
    pub fn claim(&mut self, used_by_pods: &HashSet<String>) {
        for (id, record) in &mut self.records {
            record.ours |= used_by_pods.contains(id);
        }
    }

    /// The images to remove at `now` to free `bytes`: the node's own, not used now, not `pinned` and
    /// seen for at least the minimum age, least recently used first (ties: first detected
    /// first), until their sizes add up to `bytes`. Also returns what they add up to.
    pub fn choose(
        &self,
        bytes: i64,
        now: Timestamp,
        minimum_age: Duration,
        pinned: &HashSet<String>,
    ) -> (Vec<String>, i64) {
        let mut candidates: Vec<(&String, &Record)> = self
            .records
            .iter()
            .filter(|(id, r)| r.ours && r.last_used < now && !pinned.contains(*id))
            .filter(|(_, r)| now.duration_since(r.first_detected).unsigned_abs() >= minimum_age)
            .collect();
        candidates.sort_by(|(a_id, a), (b_id, b)| {
            (a.last_used, a.first_detected, a_id).cmp(&(b.last_used, b.first_detected, b_id))
        });
        let mut chosen = Vec::new();
        let mut freed = 0i64;
        for (id, record) in candidates {
            if freed >= bytes {
                break;
            }
            chosen.push(id.clone());
            freed += record.size;
        }
        (chosen, freed)
    }

    fn forget(&mut self, id: &str) {
        self.records.remove(id);
    }
}

/// What image garbage collection needs of the container runtime.
pub(crate) trait ImageStore {
    /// The images.
    async fn images(&self) -> Result<Vec<Image>, RuntimeError>;
    /// The ids of images some container (running or not) was created from.
    async fn in_use(&self) -> Result<HashSet<String>, RuntimeError>;
    /// The ids of images this node's pod containers (running or not) were created from.
    async fn used_by_pods(&self) -> Result<HashSet<String>, RuntimeError>;
    /// The ids of images never removed (the sandbox image).
    async fn pinned(&self) -> HashSet<String>;
    /// Removes an image (each of its names, then what is left).
    async fn remove(&self, image: &Image) -> Result<(), RuntimeError>;
    /// The image filesystem's capacity and available bytes.
    fn filesystem(&self) -> Option<(i64, i64)>;
}

/// What a collection pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Bytes wanted (0: under the high threshold).
    pub wanted: i64,
    /// Image ids removed.
    pub removed: Vec<String>,
    /// Bytes of the removed images.
    pub freed: i64,
}

impl Outcome {
    /// The `FreeDiskSpaceFailed` event message when less than wanted could be freed.
    pub fn failure(&self) -> Option<String> {
        (self.freed < self.wanted).then(|| {
            format!(
                "Failed to garbage collect required amount of images. Attempted to free {} bytes, but only found {} bytes eligible to free.",
                self.wanted, self.freed
            )
        })
    }
}

/// One pass: detect images, and when the filesystem is over the high threshold remove what
/// [`Tracker::choose`] picks (a removal that fails is skipped, as the kubelet goes on).
pub(crate) async fn collect<S: ImageStore>(
    store: &S,
    tracker: &mut Tracker,
    policy: &Policy,
    now: Timestamp,
) -> Result<Outcome, RuntimeError> {
    let images = store.images().await?;
    let in_use = store.in_use().await?;
    tracker.detect(&images, &in_use, now);
    tracker.claim(&store.used_by_pods().await?);
    let Some((capacity, available)) = store.filesystem() else {
        return Ok(Outcome::default());
    };
    let Some(wanted) = policy.bytes_to_free(capacity, available) else {
        return Ok(Outcome::default());
    };
    let pinned = store.pinned().await;
    let (chosen, _) = tracker.choose(wanted, now, policy.minimum_age, &pinned);
    let mut outcome = Outcome {
        wanted,
        ..Outcome::default()
    };
    for id in chosen {
        let Some(image) = images.iter().find(|i| i.id == id) else {
            continue;
        };
        match store.remove(image).await {
            Ok(()) => {
                tracing::info!(image = %id, tags = ?image.tags, size = image.size, "image garbage collected");
                outcome.freed += image.size;
                outcome.removed.push(id.clone());
                tracker.forget(&id);
            }
            Err(error) => {
                let error = crate::error_chain(&error);
                tracing::warn!(image = %id, %error, "removing an unused image");
            }
        }
    }
    Ok(outcome)
}

/// Docker as the image store.
pub(crate) struct Docker<'a> {
    /// The daemon.
    pub docker: &'a bollard::Docker,
    /// Docker's root directory (the image filesystem).
    pub root: &'a std::path::Path,
    /// The sandbox image (pinned).
    pub sandbox_image: &'a str,
    /// The node's name (its pod containers carry it as a label).
    pub node: &'a str,
}

impl Docker<'_> {
    /// The images of the containers (running or not) carrying `label`, or of all of them.
    async fn container_images(
        &self,
        label: Option<String>,
    ) -> Result<HashSet<String>, RuntimeError> {
        let options = bollard::query_parameters::ListContainersOptions {
            all: true,
            filters: label.map(|label| HashMap::from([("label".to_owned(), vec![label])])),
            ..Default::default()
        };
        let list = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|source| RuntimeError::Docker {
                what: "listing containers".into(),
                source,
            })?;
        Ok(list.into_iter().filter_map(|c| c.image_id).collect())
    }
}

impl ImageStore for Docker<'_> {
    async fn images(&self) -> Result<Vec<Image>, RuntimeError> {
        let list = self
            .docker
            .list_images(Some(bollard::query_parameters::ListImagesOptions::default()))
            .await
            .map_err(|source| RuntimeError::Docker {
                what: "listing images".into(),
                source,
            })?;
        Ok(list
            .into_iter()
            .map(|i| Image {
                id: i.id,
                tags: i
                    .repo_tags
                    .into_iter()
                    .filter(|t| t != "<none>:<none>")
                    .collect(),
                size: i.size,
            })
            .collect())
    }

    async fn in_use(&self) -> Result<HashSet<String>, RuntimeError> {
        self.container_images(None).await
    }

    async fn used_by_pods(&self) -> Result<HashSet<String>, RuntimeError> {
        let label = format!("{}={}", crate::pods::runtime::LABEL_NODE, self.node);
        self.container_images(Some(label)).await
    }

    async fn pinned(&self) -> HashSet<String> {
        self.docker
            .inspect_image(self.sandbox_image)
            .await
            .ok()
            .and_then(|i| i.id)
            .into_iter()
            .collect()
    }

    async fn remove(&self, image: &Image) -> Result<(), RuntimeError> {
        // Never forced: Docker refuses to remove what a container still uses.
        let names: Vec<&str> = if image.tags.is_empty() {
            vec![image.id.as_str()]
        } else {
            image.tags.iter().map(String::as_str).collect()
        };
        for name in names {
            self.docker
                .remove_image(
                    name,
                    Some(bollard::query_parameters::RemoveImageOptions::default()),
                    None,
                )
                .await
                .map_err(|source| RuntimeError::Docker {
                    what: "removing an image".into(),
                    source,
                })?;
        }
        Ok(())
    }

    fn filesystem(&self) -> Option<(i64, i64)> {
        let s = nix::sys::statvfs::statvfs(self.root).ok()?;
        let block = i64::try_from(s.fragment_size()).ok()?;
        Some((
            i64::try_from(s.blocks()).ok()? * block,
            i64::try_from(s.blocks_available()).ok()? * block,
        ))
    }
}

/// Runs image garbage collection every [`PERIOD`] until the process stops (idle when the
/// policy never collects).
pub async fn run(
    ctx: std::sync::Arc<crate::pods::Ctx>,
    docker: bollard::Docker,
    policy: Policy,
    root: std::path::PathBuf,
) {
    if !policy.enabled() {
        tracing::info!("image garbage collection is off (--image-gc-high-threshold 100)");
        return std::future::pending().await;
    }
    let mut tracker = Tracker::default();
    let mut ticker = tokio::time::interval(PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let store = Docker {
            docker: &docker,
            root: &root,
            sandbox_image: &ctx.config.sandbox_image,
            node: &ctx.config.node_name,
        };
        match collect(&store, &mut tracker, &policy, Timestamp::now()).await {
            Ok(outcome) => {
                if let Some(message) = outcome.failure() {
                    tracing::warn!(%message, "image garbage collection");
                    node_event(&ctx, "FreeDiskSpaceFailed", message);
                }
            }
            Err(error) => {
                let error = crate::error_chain(&error);
                tracing::warn!(%error, "image garbage collection");
            }
        }
    }
}

/// A Warning event about this node (what `kubectl describe node` lists).
fn node_event(ctx: &crate::pods::Ctx, reason: &str, message: String) {
    use k8s_openapi::{
        api::core::v1::{Event, EventSource, ObjectReference},
        apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
    };
    let node = ctx.config.node_name.clone();
    let now = Time(Timestamp::now());
    let event = Event {
        metadata: ObjectMeta {
            name: Some(format!("{node}.{:x}", Timestamp::now().as_nanosecond())),
            namespace: Some("default".into()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            kind: Some("Node".into()),
            name: Some(node.clone()),
            uid: Some(node.clone()),
            ..ObjectReference::default()
        },
        reason: Some(reason.into()),
        message: Some(message),
        type_: Some("Warning".into()),
        source: Some(EventSource {
            component: Some("kubelet".into()),
            host: Some(node.clone()),
        }),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        reporting_component: Some("keelson-node-agent".into()),
        reporting_instance: Some(node),
        ..Event::default()
    };
    let api: kube::Api<Event> = kube::Api::namespaced(ctx.client.clone(), "default");
    tokio::spawn(async move {
        if let Err(error) = api.create(&kube::api::PostParams::default(), &event).await {
            tracing::debug!(%error, "posting a node event");
        }
    });
}

#[cfg(test)]
#[path = "gc_tests.rs"]
mod tests;
