//! Node-pressure eviction, as the kubelet's eviction manager does it: every pass it looks at the
//! node's signals and at each pod's local storage; a pod whose `emptyDir` outgrew its
//! `sizeLimit` (or whose containers outgrew their `ephemeral-storage` limits) is evicted at once,
//! and while a hard threshold is crossed one pod is evicted per pass, chosen by the kubelet's
//! ranking for the starved resource. Critical pods (static, mirror, priority of
//! `system-cluster-critical` and above) are never evicted. Eviction stops the pod's containers
//! with no grace period and reports the pod `Failed` with reason `Evicted` (see
//! [`crate::pods::evict`]).
//!
//! The decisions here are pure ([`thresholds_met`], [`rank`], [`local_storage_violation`],
//! [`node_low_message`]); [`run`] gathers usage from Docker and the pods' directories and acts.
//!
//! Sources: kubernetes `pkg/kubelet/eviction/helpers.go` (ranking functions, message formats,
//! `thresholdsMet` with minimum reclaim, `byEvictionPriority`), `eviction_manager.go`
//! (`synchronize`, `localStorageEviction`, `evictPod`), `pkg/kubelet/types/pod_update.go`
//! (`IsCriticalPod`).

use std::{
    cmp::Ordering,
    collections::{BTreeMap, BTreeSet, HashMap},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use k8s_openapi::{
    api::core::v1::{Container, Pod},
    apimachinery::pkg::api::resource::Quantity as QuantityObject,
};
use keelson_api::quantity::{Format, Quantity};

use super::pressure::{
    Amount, Observations, SignalList, ThresholdError, Thresholds, parse_signal_amounts,
};

/// How often the eviction manager looks (the kubelet's monitoring interval).
pub const MONITORING_INTERVAL: Duration = Duration::from_secs(10);
/// Priorities from here up are critical (`system-cluster-critical`); such pods stay.
pub const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// What a crossed threshold starves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// `memory.available`, `allocatableMemory.available`.
    Memory,
    /// `nodefs.available`, `imagefs.available`, `containerfs.available`.
    EphemeralStorage,
    /// The `*.inodesFree` signals.
    Inodes,
    /// `pid.available`.
    Pids,
}

impl Resource {
    /// The resource a signal measures, if the kubelet reclaims it.
    pub fn of_signal(signal: &str) -> Option<Self> {
        match signal {
            "memory.available" | "allocatableMemory.available" => Some(Self::Memory),
            "nodefs.available" | "imagefs.available" | "containerfs.available" => {
                Some(Self::EphemeralStorage)
            }
            "nodefs.inodesFree" | "imagefs.inodesFree" | "containerfs.inodesFree" => {
                Some(Self::Inodes)
            }
            "pid.available" => Some(Self::Pids),
            _ => None,
        }
    }

    /// The name the kubelet's messages use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::EphemeralStorage => "ephemeral-storage",
            Self::Inodes => "inodes",
            Self::Pids => "pids",
        }
    }

    /// How quantities of this resource are written (bytes in binary suffixes, counts in
    /// decimal ones).
    fn format(self) -> Format {
        match self {
            Self::Memory | Self::EphemeralStorage => Format::BinarySI,
            Self::Inodes | Self::Pids => Format::DecimalSI,
        }
    }
}

/// Parses `--eviction-minimum-reclaim` (`memory.available=0Mi,nodefs.available=500Mi`).
pub fn parse_minimum_reclaim(text: &str) -> Result<Thresholds, ThresholdError> {
    parse_signal_amounts(text, SignalList::MinimumReclaim)
}

/// The signals whose threshold is crossed now, plus those crossed in the previous pass that
/// have not yet recovered by their minimum reclaim (`available < threshold + minimum`), ordered
/// as the kubelet picks them: memory first.
pub fn thresholds_met(
    thresholds: &Thresholds,
    minimum_reclaim: &Thresholds,
    observed: &Observations,
    previously: &BTreeSet<String>,
) -> Vec<String> {
    let mut met: Vec<String> = thresholds
        .iter()
        .filter_map(|(signal, amount)| {
            let (available, capacity) = observed.get(signal)?;
            let mut quantity = amount.of(*capacity);
            if previously.contains(signal)
                && let Some(extra) = minimum_reclaim.get(signal)
            {
                quantity += extra.of(*capacity);
            }
            (*available < quantity).then(|| signal.clone())
        })
        .collect();
    met.sort_by_key(|s| Resource::of_signal(s) != Some(Resource::Memory));
    met
}

/// What a pod uses, as measured this pass. Bytes for memory and disk.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodUsage {
    /// Working set per container name.
    pub memory: BTreeMap<String, i64>,
    /// Writable layer plus logs per container name.
    pub rootfs: BTreeMap<String, i64>,
    /// Bytes used per local volume (emptyDir) name.
    pub volumes: BTreeMap<String, i64>,
    /// Files in the pod's local volumes (its inode use).
    pub inodes: i64,
    /// Processes of the pod.
    pub processes: i64,
}

impl PodUsage {
    /// The pod's working set.
    pub fn memory_total(&self) -> i64 {
        self.memory.values().sum()
    }

    /// The pod's local ephemeral storage: writable layers, logs and local volumes.
    pub fn disk_total(&self) -> i64 {
        self.rootfs.values().sum::<i64>() + self.volumes.values().sum::<i64>()
    }
}

/// A quantity from the API as a number (0 when absent or unparsable).
fn number(q: Option<&QuantityObject>) -> i64 {
    q.and_then(|q| Quantity::try_from(q).ok())
        .map_or(0, |q| q.value())
}

fn container_request(container: &Container, resource: &str) -> Option<QuantityObject> {
    let r = container.resources.as_ref()?;
    r.requests
        .as_ref()
        .and_then(|m| m.get(resource))
        .or_else(|| r.limits.as_ref().and_then(|m| m.get(resource)))
        .cloned()
}

/// The pod's request of `resource` (`memory`, `ephemeral-storage`) as the kubelet computes it:
/// the app containers and sidecars together, at least any regular init container, plus the
/// pod overhead.
pub fn pod_request(pod: &Pod, resource: &str) -> i64 {
    let Some(spec) = pod.spec.as_ref() else {
        return 0;
    };
    let of = |c: &Container| number(container_request(c, resource).as_ref());
    let mut sidecars = 0;
    let mut init_peak = 0;
    for c in spec.init_containers.iter().flatten() {
        if c.restart_policy.as_deref() == Some("Always") {
            sidecars += of(c);
        } else {
            init_peak = init_peak.max(sidecars + of(c));
        }
    }
    let apps: i64 = spec.containers.iter().map(of).sum::<i64>() + sidecars;
    apps.max(init_peak) + number(spec.overhead.as_ref().and_then(|o| o.get(resource)))
}

/// The pod's priority (`spec.priority`, 0 when unset).
pub fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// Whether the kubelet never evicts `pod`: a static pod (its `kubernetes.io/config.source` is
/// not the API server), a mirror pod, or priority `system-cluster-critical` and above.
pub fn is_critical(pod: &Pod) -> bool {
    let annotations = pod.metadata.annotations.as_ref();
    let annotation = |key: &str| annotations.and_then(|a| a.get(key));
    let static_pod = annotation("kubernetes.io/config.source").is_some_and(|s| s != "api");
    static_pod
        || annotation("kubernetes.io/config.mirror").is_some()
        || priority(pod) >= SYSTEM_CRITICAL_PRIORITY
}

/// True before false (the kubelet's `cmpBool`).
fn first_if(a: bool, b: bool) -> Ordering {
    b.cmp(&a)
}

/// Orders `pods` (with their usage; `None`: no stats, which goes first) for eviction under
/// pressure on `resource`, first to evict first:
/// - memory: usage above requests first, then lower priority, then larger usage above request;
/// - pids: lower priority, then more processes;
/// - disk and inodes: usage above requests first, then lower priority, then larger usage
///   above the ephemeral-storage request.
pub fn rank(resource: Resource, pods: &mut [(&Pod, Option<&PodUsage>)]) {
    let usage = |u: &PodUsage| match resource {
        Resource::Memory => u.memory_total(),
        Resource::EphemeralStorage => u.disk_total(),
        Resource::Inodes => u.inodes,
        Resource::Pids => u.processes,
    };
    let request = |p: &Pod| match resource {
        Resource::Memory => pod_request(p, "memory"),
        Resource::EphemeralStorage => pod_request(p, "ephemeral-storage"),
        // The kubelet compares inodes against the (absent) inode request: zero.
        Resource::Inodes | Resource::Pids => 0,
    };
    pods.sort_by(|(p1, u1), (p2, u2)| {
        let (p1, p2): (&Pod, &Pod) = (p1, p2);
        let (u1, u2): (&PodUsage, &PodUsage) = match (u1, u2) {
            (Some(u1), Some(u2)) => (u1, u2),
            _ => return first_if(u1.is_none(), u2.is_none()),
        };
        let by_priority = priority(p1).cmp(&priority(p2));
        if resource == Resource::Pids {
            return by_priority.then_with(|| usage(u2).cmp(&usage(u1)));
        }
        let over1 = usage(u1) > request(p1);
        let over2 = usage(u2) > request(p2);
        first_if(over1, over2)
            .then(by_priority)
            .then_with(|| (usage(u2) - request(p2)).cmp(&(usage(u1) - request(p1))))
    });
}

/// A quantity as the kubelet prints it (canonical form).
fn show(value: i64, format: Format) -> String {
    Quantity::new(value, format).to_string()
}

/// A canonical quantity from the API (`0` when absent).
fn show_object(q: Option<&QuantityObject>) -> String {
    q.and_then(|q| Quantity::try_from(q).ok())
        .map_or_else(|| "0".to_owned(), |q| q.to_string())
}

/// The eviction message for pressure on `signal`'s resource, in the kubelet's words: the
/// starved resource, the threshold and what was available, then each container using more
/// memory or disk than it requested.
pub fn node_low_message(
    signal: &str,
    threshold: &Amount,
    observed: (i64, i64),
    pod: &Pod,
    usage: Option<&PodUsage>,
) -> String {
    let Some(resource) = Resource::of_signal(signal) else {
        return String::new();
    };
    let (available, capacity) = observed;
    let mut message = format!(
        "The node was low on resource: {}. Threshold quantity: {}, available: {}. ",
        resource.name(),
        show(threshold.of(capacity), resource.format()),
        show(available, resource.format()),
    );
    let Some(usage) = usage else {
        return message;
    };
    let Some(spec) = pod.spec.as_ref() else {
        return message;
    };
    let per_container = match resource {
        Resource::Memory => &usage.memory,
        Resource::EphemeralStorage => &usage.rootfs,
        Resource::Inodes | Resource::Pids => return message,
    };
    for container in spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
    {
        let Some(used) = per_container.get(&container.name) else {
            continue;
        };
        let request = container
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|m| m.get(resource.name()));
        if *used > number(request) {
            message.push_str(&format!(
                "Container {} was using {}, request is {}, has larger consumption of {}. ",
                container.name,
                show(*used, Format::BinarySI),
                show_object(request),
                resource.name(),
            ));
        }
    }
    message
}

/// Why `pod` must go for its own local storage, in the kubelet's words, checked in its order:
/// an `emptyDir` above its `sizeLimit`, the pod above the sum of its containers'
/// `ephemeral-storage` limits, a container above its own limit.
pub fn local_storage_violation(pod: &Pod, usage: &PodUsage) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    for volume in spec.volumes.iter().flatten() {
        let Some(limit) = volume
            .empty_dir
            .as_ref()
            .and_then(|e| e.size_limit.as_ref())
        else {
            continue;
        };
        let Ok(limit) = Quantity::try_from(limit) else {
            continue;
        };
        let used = usage.volumes.get(&volume.name);
        if limit.value() > 0 && used.is_some_and(|u| *u > limit.value()) {
            return Some(format!(
                "Usage of EmptyDir volume {:?} exceeds the limit {:?}. ",
                volume.name,
                limit.to_string()
            ));
        }
    }
    let limit = |c: &Container| {
        c.resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get("ephemeral-storage"))
            .and_then(|q| Quantity::try_from(q).ok())
    };
    let limits: Vec<Quantity> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .filter_map(limit)
        .collect();
    if let Some(first) = limits.first() {
        let total = limits[1..]
            .iter()
            .try_fold(*first, |sum, q| sum.checked_add(*q))
            .unwrap_or(*first);
        if usage.disk_total() > total.value() {
            return Some(format!(
                "Pod ephemeral local storage usage exceeds the total limit of containers {total}. "
            ));
        }
    }
    for container in &spec.containers {
        let Some(limit) = limit(container).filter(|q| q.value() != 0) else {
            continue;
        };
        if usage
            .rootfs
            .get(&container.name)
            .is_some_and(|u| *u > limit.value())
        {
            return Some(format!(
                "Container {} exceeded its local ephemeral storage limit {:?}. ",
                container.name,
                limit.to_string()
            ));
        }
    }
    None
}

/// Whether a pod still counts for eviction: not finished, not being deleted.
pub fn is_active(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    !matches!(phase, Some("Succeeded" | "Failed")) && pod.metadata.deletion_timestamp.is_none()
}

/// Whether any of the pod's containers has an `ephemeral-storage` limit or any emptyDir a
/// `sizeLimit`: its local storage is measured every pass.
pub fn has_local_limits(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    spec.volumes
        .iter()
        .flatten()
        .any(|v| v.empty_dir.as_ref().is_some_and(|e| e.size_limit.is_some()))
        || spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .any(|c| {
                c.resources
                    .as_ref()
                    .and_then(|r| r.limits.as_ref())
                    .is_some_and(|l| l.contains_key("ephemeral-storage"))
            })
}

/// Settings of the eviction manager.
#[derive(Debug, Clone, Default)]
pub struct EvictionSettings {
    /// `--eviction-hard`.
    pub hard: Thresholds,
    /// `--eviction-minimum-reclaim`.
    pub minimum_reclaim: Thresholds,
    /// The filesystem of `nodefs` (the agent's data directory).
    pub nodefs: PathBuf,
    /// The filesystem of `imagefs` (Docker's root directory).
    pub imagefs: PathBuf,
}

/// What the eviction manager and image garbage collection take from the flags.
#[derive(Debug, Clone, Default)]
pub struct Housekeeping {
    /// `--eviction-minimum-reclaim`.
    pub minimum_reclaim: Thresholds,
    /// `--image-gc-high-threshold`, `--image-gc-low-threshold`.
    pub image_gc: crate::pods::images::gc::Policy,
}

/// The eviction manager and image garbage collection for the node's pods, to be run (both
/// run until the process stops).
pub fn start(
    ctx: &Arc<crate::pods::Ctx>,
    pods: crate::pods::evict::PodManager,
    resources: &super::pressure::NodeResources,
    housekeeping: Housekeeping,
    docker: bollard::Docker,
) -> (
    impl std::future::Future<Output = anyhow::Result<()>> + use<>,
    impl std::future::Future<Output = ()> + use<>,
) {
    let settings = EvictionSettings {
        hard: resources.reservations.eviction_hard.clone(),
        minimum_reclaim: housekeeping.minimum_reclaim,
        nodefs: resources.nodefs.clone(),
        imagefs: resources.imagefs.clone(),
    };
    (
        run(ctx.clone(), pods, settings, docker.clone()),
        crate::pods::images::gc::run(
            ctx.clone(),
            docker,
            housekeeping.image_gc,
            resources.imagefs.clone(),
        ),
    )
}

/// Bytes and files below `dir` (not following symlinks, not crossing into other mounts'
/// accounting: a tmpfs emptyDir counts what it holds).
pub fn disk_usage(dir: &Path) -> (i64, i64) {
    let mut bytes = 0i64;
    let mut files = 0i64;
    let mut stack = vec![dir.to_path_buf()];
    // Bounded: a pathological tree stops being walked after a million entries.
    let mut budget = 1_000_000u32;
    while let Some(next) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.flatten() {
            budget = budget.saturating_sub(1);
            if budget == 0 {
                return (bytes, files);
            }
            let Ok(meta) = entry.metadata() else { continue };
            files += 1;
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                use std::os::unix::fs::MetadataExt as _;
                // Allocated blocks, as `du` counts them (sparse files count what they hold).
                bytes += i64::try_from(meta.blocks().saturating_mul(512)).unwrap_or(i64::MAX);
            }
        }
    }
    (bytes, files)
}

/// Measures what `pod` uses: its local volumes, memory, processes and writable layers.
async fn measure(ctx: &crate::pods::Ctx, docker: &bollard::Docker, pod: &Pod) -> PodUsage {
    use futures_util::StreamExt as _;
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let mut usage = PodUsage::default();
    let volumes_dir = ctx.config.data_dir.join("pods").join(&uid).join("volumes");
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        if volume.empty_dir.is_some() {
            let (bytes, files) = disk_usage(&volumes_dir.join(&volume.name));
            usage.volumes.insert(volume.name.clone(), bytes);
            usage.inodes += files;
        }
    }
    let Ok(containers) = ctx.runtime.list_pod(&uid).await else {
        return usage;
    };
    for c in containers.iter().filter(|c| c.role != "sandbox") {
        let options = bollard::query_parameters::InspectContainerOptions { size: true };
        if let Ok(inspect) = docker.inspect_container(&c.id, Some(options)).await {
            let logs = inspect
                .log_path
                .as_deref()
                .and_then(|p| std::fs::metadata(p).ok())
                .map_or(0, |m| i64::try_from(m.len()).unwrap_or(i64::MAX));
            let rootfs = inspect.size_rw.unwrap_or(0);
            *usage.rootfs.entry(c.name.clone()).or_default() += rootfs + logs;
        }
        if !c.running {
            continue;
        }
        let options = bollard::query_parameters::StatsOptions {
            stream: false,
            one_shot: true,
        };
        let mut stream = std::pin::pin!(docker.stats(&c.id, Some(options)));
        if let Some(Ok(stats)) = stream.next().await {
            if let Some(memory) = stats.memory_stats {
                // The working set: usage minus inactive file pages (cgroup v2's
                // `inactive_file`, v1's `total_inactive_file`).
                let inactive = memory.stats.as_ref().and_then(|s| {
                    s.get("inactive_file")
                        .or_else(|| s.get("total_inactive_file"))
                        .copied()
                });
                let used = memory
                    .usage
                    .unwrap_or(0)
                    .saturating_sub(inactive.unwrap_or(0));
                *usage.memory.entry(c.name.clone()).or_default() +=
                    i64::try_from(used).unwrap_or(i64::MAX);
            }
            if let Some(current) = stats.pids_stats.and_then(|p| p.current) {
                usage.processes += i64::try_from(current).unwrap_or(i64::MAX);
            }
        }
    }
    usage
}

/// Runs the eviction manager until the process stops: every [`MONITORING_INTERVAL`] it
/// evicts pods over their local storage limits, then, while a hard threshold is crossed, the
/// first pod of the kubelet's ranking that is not critical.
pub async fn run(
    ctx: Arc<crate::pods::Ctx>,
    pods: crate::pods::evict::PodManager,
    settings: EvictionSettings,
    docker: bollard::Docker,
) -> anyhow::Result<()> {
    let mut previously: BTreeSet<String> = BTreeSet::new();
    let mut ticker = tokio::time::interval(MONITORING_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let observed = super::pressure::observe(&settings.nodefs, &settings.imagefs);
        ctx.pressures.set(
            super::pressure::conditions(&observed, &settings.hard)
                .iter()
                .filter(|(_, holds, ..)| *holds)
                .map(|(condition, ..)| *condition)
                .collect(),
        );
        let met = thresholds_met(
            &settings.hard,
            &settings.minimum_reclaim,
            &observed,
            &previously,
        );
        previously = met.iter().cloned().collect();
        let active: Vec<Pod> = pods
            .active_pods()
            .await
            .into_iter()
            .filter(is_active)
            .collect();
        let mut usage: HashMap<String, PodUsage> = HashMap::new();
        for pod in &active {
            if met.is_empty() && !has_local_limits(pod) {
                continue;
            }
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            usage.insert(uid, measure(&ctx, &docker, pod).await);
        }
        // Local storage limits first; when they evict anything, that is this pass's work.
        let mut evicted_any = false;
        for pod in &active {
            let uid = pod.metadata.uid.as_deref().unwrap_or_default();
            let Some(message) = usage.get(uid).and_then(|u| local_storage_violation(pod, u)) else {
                continue;
            };
            if is_critical(pod) {
                tracing::warn!(pod = %pod_name(pod), "cannot evict a critical pod");
                continue;
            }
            pods.evict(pod, message).await;
            evicted_any = true;
        }
        if evicted_any {
            continue;
        }
        let Some((signal, resource)) = met
            .iter()
            .find_map(|s| Resource::of_signal(s).map(|r| (s.clone(), r)))
        else {
            continue;
        };
        let (Some(threshold), Some(observation)) =
            (settings.hard.get(&signal), observed.get(&signal))
        else {
            continue;
        };
        tracing::info!(
            resource = resource.name(),
            %signal,
            available = observation.0,
            "eviction threshold met: attempting to reclaim"
        );
        let mut ranked: Vec<(&Pod, Option<&PodUsage>)> = active
            .iter()
            .map(|p| (p, usage.get(p.metadata.uid.as_deref().unwrap_or_default())))
            .collect();
        rank(resource, &mut ranked);
        let Some((victim, victim_usage)) = ranked.into_iter().find(|(p, _)| !is_critical(p)) else {
            tracing::warn!(%signal, "eviction thresholds are met, but no pod can be evicted");
            continue;
        };
        let message = node_low_message(&signal, threshold, *observation, victim, victim_usage);
        pods.evict(victim, message).await;
    }
}

fn pod_name(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

#[cfg(test)]
#[path = "eviction_tests.rs"]
mod tests;
