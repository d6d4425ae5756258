//! The worker's decisions that need no IO: container names and labels, which instance of a
//! container is the newest, restart back-off, grace periods, the sandbox's configuration and
//! the Events' shape. The worker only carries them out.

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use bollard::models::{ContainerCreateBody, HostConfig};
use k8s_openapi::{
    api::core::v1::{Container, EphemeralContainer, Event, EventSource, ObjectReference, Pod},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
    jiff::Timestamp,
};

use crate::pods::{
    dns::{ClusterDnsConfig, pod_domainname, pod_hostname},
    runtime::{
        LABEL_ATTEMPT, LABEL_CONTAINER, LABEL_POD_NAME, LABEL_POD_NAMESPACE, LABEL_POD_UID,
        LABEL_ROLE, Observed,
    },
    security,
};

/// The role label of ephemeral containers.
pub(super) const EPHEMERAL: &str = "ephemeral";

/// An ephemeral container as the container the worker runs: the fields they share (an
/// ephemeral container has no ports, probes, resources or lifecycle hooks; the API server
/// refuses them).
pub(super) fn ephemeral_as_container(debug: &EphemeralContainer) -> Container {
    Container {
        name: debug.name.clone(),
        image: debug.image.clone(),
        image_pull_policy: debug.image_pull_policy.clone(),
        command: debug.command.clone(),
        args: debug.args.clone(),
        working_dir: debug.working_dir.clone(),
        env: debug.env.clone(),
        env_from: debug.env_from.clone(),
        volume_mounts: debug.volume_mounts.clone(),
        volume_devices: debug.volume_devices.clone(),
        security_context: debug.security_context.clone(),
        stdin: debug.stdin,
        stdin_once: debug.stdin_once,
        tty: debug.tty,
        termination_message_path: debug.termination_message_path.clone(),
        termination_message_policy: debug.termination_message_policy.clone(),
        ..Container::default()
    }
}

/// Kubernetes' default termination grace period.
pub(super) const DEFAULT_GRACE: i64 = 30;

/// Which pod a worker runs: what names, labels and events carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PodRef {
    pub(super) uid: String,
    pub(super) name: String,
    pub(super) namespace: String,
}

impl PodRef {
    /// The runtime's name of attempt `attempt` of `container` (the kubelet's
    /// `k8s_<container>_<pod>_<namespace>_<uid>_<attempt>`).
    pub(super) fn container_name(&self, container: &str, attempt: u32) -> String {
        format!(
            "k8s_{container}_{}_{}_{}_{attempt}",
            self.name, self.namespace, self.uid
        )
    }

    /// The labels a container of this pod carries (how the agent finds it again).
    pub(super) fn labels(
        &self,
        container: &str,
        role: &str,
        attempt: u32,
    ) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_POD_UID.to_owned(), self.uid.clone()),
            (LABEL_POD_NAME.to_owned(), self.name.clone()),
            (LABEL_POD_NAMESPACE.to_owned(), self.namespace.clone()),
            (LABEL_CONTAINER.to_owned(), container.to_owned()),
            (LABEL_ROLE.to_owned(), role.to_owned()),
            (LABEL_ATTEMPT.to_owned(), attempt.to_string()),
        ])
    }

    /// The kubelet's `CrashLoopBackOff` waiting message.
    pub(super) fn crash_loop_message(&self, delay: Duration, container: &str) -> String {
        format!(
            "back-off {}s restarting failed container={container} pod={}_{}({})",
            delay.as_secs(),
            self.name,
            self.namespace,
            self.uid
        )
    }

    /// The kubelet's `BackOff` event message.
    pub(super) fn back_off_event(&self, container: &str) -> String {
        format!(
            "Back-off restarting failed container {container} in pod {}_{}({})",
            self.name, self.namespace, self.uid
        )
    }
}

/// Whether an init container is a sidecar (`restartPolicy: Always`).
pub(super) fn is_sidecar(container: &Container) -> bool {
    container.restart_policy.as_deref() == Some("Always")
}

/// The newest instance of each container name, with the one before it.
pub(super) fn latest_by_name(
    observed: &[Observed],
) -> BTreeMap<&str, (Observed, Option<Observed>)> {
    let mut by_name: BTreeMap<&str, Vec<&Observed>> = BTreeMap::new();
    for c in observed.iter().filter(|c| c.role != "sandbox") {
        by_name.entry(c.name.as_str()).or_default().push(c);
    }
    by_name
        .into_iter()
        .map(|(name, mut list)| {
            list.sort_by_key(|c| std::cmp::Reverse(c.attempt));
            (name, (list[0].clone(), list.get(1).map(|c| (*c).clone())))
        })
        .collect()
}

/// The wait before restart number `restarts` of a container that ran for `ran`: none for the
/// first restart or after a run longer than twice `max`, else `initial` doubling per restart,
/// at most `max` (the kubelet's crash-loop back-off).
pub(super) fn restart_delay(
    restarts: u32,
    ran: Duration,
    initial: Duration,
    max: Duration,
) -> Duration {
    if restarts <= 1 || ran > max * 2 {
        return Duration::ZERO;
    }
    let factor = 1u32 << (restarts - 2).min(16);
    (initial * factor).min(max)
}

/// What is left of `delay` at `now` for a container that ended at `ended` (`None`: all of it
/// has passed); `None` when it may restart now.
pub(super) fn back_off_left(
    delay: Duration,
    ended: Option<Timestamp>,
    now: Timestamp,
) -> Option<Duration> {
    let since = ended
        .map(|f| now.duration_since(f).unsigned_abs())
        .unwrap_or(delay);
    (since < delay).then(|| delay - since)
}

/// The grace period of a container stop that is not the pod's deletion (a failed probe, a
/// failed postStart hook, a sidecar after the app containers ended).
pub(super) fn spec_grace(pod: &Pod) -> Duration {
    Duration::from_secs(
        pod.spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(DEFAULT_GRACE)
            .max(0)
            .unsigned_abs(),
    )
}

/// The grace period of the pod's deletion, in seconds: the deletion's own, else the spec's.
pub(super) fn deletion_grace(pod: &Pod) -> i64 {
    pod.metadata
        .deletion_grace_period_seconds
        .or_else(|| pod.spec.as_ref()?.termination_grace_period_seconds)
        .unwrap_or(DEFAULT_GRACE)
        .max(0)
}

/// The sandbox container: a pause process from `image` that sleeps until the pod ends (it is
/// killed, not asked), holding the pod's network namespace (the node's with `host_network`),
/// hostname, sysctls and `resolv` bind.
pub(super) fn sandbox_body(
    pod: &Pod,
    at: &PodRef,
    image: String,
    host_network: bool,
    dns: Option<&ClusterDnsConfig>,
    resolv: String,
) -> ContainerCreateBody {
    ContainerCreateBody {
        image: Some(image),
        entrypoint: Some(vec!["sleep".into()]),
        cmd: Some(vec!["2147483647".into()]),
        hostname: (!host_network).then(|| pod_hostname(pod, &at.name)),
        domainname: (!host_network)
            .then(|| pod_domainname(pod, &at.namespace, dns))
            .flatten(),
        host_config: Some(HostConfig {
            network_mode: Some(if host_network { "host" } else { "none" }.into()),
            binds: Some(vec![resolv]),
            sysctls: security::sandbox_sysctls(pod),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    }
}

/// What an Event about the pod says.
#[derive(Debug, Clone, Copy)]
pub(super) struct EventText<'a> {
    /// The container it is about (its field path), if any.
    pub(super) container: Option<&'a str>,
    /// `Normal` or `Warning`.
    pub(super) kind: &'a str,
    /// The reason (`Started`, `BackOff`, ...).
    pub(super) reason: &'a str,
}

/// An Event about `pod` from the kubelet on `node` (what `kubectl describe` lists), at `now`.
pub(super) fn pod_event(
    pod: &Pod,
    uid: &str,
    node: &str,
    text: EventText<'_>,
    message: String,
    now: Timestamp,
) -> Event {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let nanos = now.as_nanosecond();
    let now = Time(now);
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{name}.{nanos:x}")),
            namespace: Some(namespace.clone()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Pod".into()),
            name: Some(name),
            namespace: Some(namespace),
            uid: Some(uid.to_owned()),
            resource_version: pod.metadata.resource_version.clone(),
            field_path: text.container.map(|c| format!("spec.containers{{{c}}}")),
        },
        reason: Some(text.reason.to_owned()),
        message: Some(message),
        type_: Some(text.kind.to_owned()),
        source: Some(EventSource {
            component: Some("kubelet".into()),
            host: Some(node.to_owned()),
        }),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        reporting_component: Some("keelson-node-agent".into()),
        reporting_instance: Some(node.to_owned()),
        ..Event::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> PodRef {
        PodRef {
            uid: "u1".into(),
            name: "web".into(),
            namespace: "shop".into(),
        }
    }

    #[test]
    fn restarts_back_off_from_the_second_doubling_to_the_cap() {
        let s = Duration::from_secs;
        let (initial, max) = (s(10), s(300));
        let cases = [
            (1, s(0), 0),
            (2, s(0), 10),
            (3, s(1), 20),
            (4, s(1), 40),
            (7, s(1), 300),
            (40, s(1), 300),
            // A run longer than twice the cap resets the back-off.
            (5, s(601), 0),
            (5, s(600), 80),
        ];
        for (restarts, ran, want) in cases {
            assert_eq!(
                restart_delay(restarts, ran, initial, max),
                s(want),
                "restart {restarts} after {ran:?}"
            );
        }
    }

    #[test]
    fn back_off_counts_from_the_end_of_the_run() {
        let now = Timestamp::from_second(1_000).expect("time");
        let ago = |secs: i64| Some(Timestamp::from_second(1_000 - secs).expect("time"));
        let s = Duration::from_secs;
        assert_eq!(back_off_left(s(10), ago(3), now), Some(s(7)));
        assert_eq!(back_off_left(s(10), ago(10), now), None);
        assert_eq!(back_off_left(s(10), None, now), None);
        assert_eq!(back_off_left(Duration::ZERO, ago(0), now), None);
    }

    #[test]
    fn names_labels_and_messages_read_as_the_kubelet_writes_them() {
        let at = at();
        assert_eq!(at.container_name("app", 2), "k8s_app_web_shop_u1_2");
        let labels = at.labels("app", "init", 3);
        assert_eq!(labels[LABEL_ATTEMPT], "3");
        assert_eq!(labels[LABEL_ROLE], "init");
        assert_eq!(labels[LABEL_POD_UID], "u1");
        assert_eq!(
            at.crash_loop_message(Duration::from_secs(20), "app"),
            "back-off 20s restarting failed container=app pod=web_shop(u1)"
        );
        assert_eq!(
            at.back_off_event("app"),
            "Back-off restarting failed container app in pod web_shop(u1)"
        );
    }

    #[test]
    fn the_newest_instance_comes_with_the_one_before() {
        let c = |name: &str, role: &str, attempt| Observed {
            id: format!("{name}{attempt}"),
            name: name.into(),
            role: role.into(),
            attempt,
            running: false,
            created_only: false,
            created: 0,
        };
        let observed = [
            c("app", "app", 0),
            c("app", "app", 2),
            c("app", "app", 1),
            c("POD", "sandbox", 0),
            c("init", "init", 0),
        ];
        let latest = latest_by_name(&observed);
        assert_eq!(latest.keys().copied().collect::<Vec<_>>(), ["app", "init"]);
        let (newest, before) = &latest["app"];
        assert_eq!(newest.id, "app2");
        assert_eq!(before.as_ref().map(|b| b.id.as_str()), Some("app1"));
        assert_eq!(latest["init"].1, None);
    }

    #[test]
    fn ephemeral_containers_run_as_plain_containers() {
        let debug = EphemeralContainer {
            name: "dbg".into(),
            image: Some("keelson/busybox:1".into()),
            command: Some(vec!["sh".into()]),
            stdin: Some(true),
            tty: Some(true),
            target_container_name: Some("app".into()),
            ..EphemeralContainer::default()
        };
        let container = ephemeral_as_container(&debug);
        assert_eq!(container.name, "dbg");
        assert_eq!(container.image.as_deref(), Some("keelson/busybox:1"));
        assert_eq!(container.command, Some(vec!["sh".to_owned()]));
        assert_eq!((container.stdin, container.tty), (Some(true), Some(true)));
        assert!(container.readiness_probe.is_none() && container.ports.is_none());
    }

    #[test]
    fn grace_periods_default_to_thirty_seconds() {
        let mut pod = Pod::default();
        assert_eq!(spec_grace(&pod), Duration::from_secs(30));
        assert_eq!(deletion_grace(&pod), 30);
        pod.spec = Some(k8s_openapi::api::core::v1::PodSpec {
            termination_grace_period_seconds: Some(-5),
            ..Default::default()
        });
        assert_eq!(spec_grace(&pod), Duration::ZERO);
        pod.metadata.deletion_grace_period_seconds = Some(7);
        assert_eq!(deletion_grace(&pod), 7);
    }

    #[test]
    fn the_sandbox_sleeps_in_the_pods_namespaces() {
        let pod = Pod::default();
        let body = sandbox_body(
            &pod,
            &at(),
            "pause:1".into(),
            false,
            None,
            "/r:/etc/resolv.conf:ro".into(),
        );
        assert_eq!(body.entrypoint, Some(vec!["sleep".to_owned()]));
        assert_eq!(body.hostname.as_deref(), Some("web"));
        let host = body.host_config.expect("host config");
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(host.binds, Some(vec!["/r:/etc/resolv.conf:ro".to_owned()]));
        let body = sandbox_body(&pod, &at(), "pause:1".into(), true, None, String::new());
        assert_eq!(body.hostname, None);
        let host = body.host_config.expect("host config");
        assert_eq!(host.network_mode.as_deref(), Some("host"));
    }

    #[test]
    fn events_name_the_container_and_the_kubelet() {
        let mut pod = Pod::default();
        pod.metadata.name = Some("web".into());
        let now = Timestamp::from_second(1_700_000_000).expect("time");
        let text = EventText {
            container: Some("app"),
            kind: "Warning",
            reason: "BackOff",
        };
        let event = pod_event(&pod, "u1", "n1", text, "m".into(), now);
        assert_eq!(event.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(
            event.involved_object.field_path.as_deref(),
            Some("spec.containers{app}")
        );
        assert_eq!(event.source.and_then(|s| s.host).as_deref(), Some("n1"));
        assert_eq!(event.type_.as_deref(), Some("Warning"));
    }
}
