//! The kubelet's Summary API (`k8s.io/kubelet/pkg/apis/stats/v1alpha1`, the CPU and memory
//! part) built from two samples, and the same numbers as the kubelet's `/metrics/resource`.

use std::{collections::BTreeMap, fmt::Write as _};

use k8s_openapi::jiff::Timestamp;
use serde::{Serialize, Serializer};

use super::cgroup::Usage;

/// A pod as the summary names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PodRef {
    /// The pod's name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Its uid.
    pub uid: String,
}

/// One running container in a sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSample {
    /// The runtime's container id (a restarted container is a new one).
    pub id: String,
    /// The pod it belongs to.
    pub pod: PodRef,
    /// Its name in the pod spec.
    pub name: String,
    /// The pod's sandbox: counted in the pod, not listed as a container.
    pub sandbox: bool,
    /// When it started.
    pub started: Option<Timestamp>,
    /// What its cgroup read.
    pub usage: Usage,
}

/// Everything read at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// When.
    pub time: Timestamp,
    /// The node (the root cgroup); `None` when it could not be read.
    pub node: Option<Usage>,
    /// Every running container whose cgroup could be read.
    pub containers: Vec<ContainerSample>,
}

fn rfc3339<S: Serializer>(time: &Timestamp, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(time)
}

fn rfc3339_opt<S: Serializer>(time: &Option<Timestamp>, serializer: S) -> Result<S::Ok, S::Error> {
    match time {
        Some(t) => serializer.collect_str(t),
        None => serializer.serialize_none(),
    }
}

/// `CPUStats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuStats {
    /// When the sample was taken.
    #[serde(serialize_with = "rfc3339")]
    pub time: Timestamp,
    /// The average rate over the last sampling window, in billionths of a core; absent until
    /// two samples saw the cgroup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage_nano_cores: Option<u64>,
    /// Cumulative CPU time, in core-nanoseconds.
    pub usage_core_nano_seconds: u64,
}

/// `MemoryStats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStats {
    /// When the sample was taken.
    #[serde(serialize_with = "rfc3339")]
    pub time: Timestamp,
    /// Everything charged to the cgroup.
    pub usage_bytes: u64,
    /// Usage less inactive file pages.
    pub working_set_bytes: u64,
    /// Anonymous memory.
    pub rss_bytes: u64,
}

/// `ContainerStats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStats {
    /// The container's name in the pod spec.
    pub name: String,
    /// When it started.
    #[serde(
        serialize_with = "rfc3339_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub start_time: Option<Timestamp>,
    /// CPU.
    pub cpu: CpuStats,
    /// Memory.
    pub memory: MemoryStats,
}

/// `PodStats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    /// The pod.
    pub pod_ref: PodRef,
    /// Its containers (not the sandbox), by name.
    pub containers: Vec<ContainerStats>,
    /// The sum over its containers and sandbox.
    pub cpu: CpuStats,
    /// The sum over its containers and sandbox.
    pub memory: MemoryStats,
}

/// `NodeStats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    /// The node's name.
    pub node_name: String,
    /// The root cgroup's CPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    /// The root cgroup's memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
}

/// `Summary`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// The node.
    pub node: NodeStats,
    /// Its pods, by namespace and name.
    pub pods: Vec<PodStats>,
}

/// The rate between two cumulative CPU readings `dt` apart, in nanocores; `None` when the
/// counter went backwards (a different cgroup) or no time passed.
pub fn nano_cores(previous: u64, latest: u64, dt_ns: i128) -> Option<u64> {
    let used = i128::from(latest.checked_sub(previous)?);
    if dt_ns <= 0 {
        return None;
    }
    u64::try_from(used * 1_000_000_000 / dt_ns).ok()
}

fn stats(
    time: Timestamp,
    usage: Usage,
    previous: Option<(Timestamp, u64)>,
) -> (CpuStats, MemoryStats) {
    let rate = previous.and_then(|(then, cpu)| {
        let dt = time.as_nanosecond() - then.as_nanosecond();
        nano_cores(cpu, usage.cpu_ns, dt)
    });
    (
        CpuStats {
            time,
            usage_nano_cores: rate,
            usage_core_nano_seconds: usage.cpu_ns,
        },
        MemoryStats {
            time,
            usage_bytes: usage.memory.usage,
            working_set_bytes: usage.memory.working_set,
            rss_bytes: usage.memory.rss,
        },
    )
}

/// The summary of `latest`, with CPU rates against `previous`: a container's rate needs the
/// same container (id) in both; a pod's needs the same set of containers in both (a restart
/// in between starts a new counter).
pub fn summary(node_name: &str, previous: Option<&Sample>, latest: &Sample) -> Summary {
    let time = latest.time;
    let before = |id: &str| {
        let p = previous?;
        let c = p.containers.iter().find(|c| c.id == id)?;
        Some((p.time, c.usage.cpu_ns))
    };
    let mut pods: BTreeMap<(&str, &str), (&PodRef, Vec<&ContainerSample>)> = BTreeMap::new();
    for c in &latest.containers {
        pods.entry((c.pod.namespace.as_str(), c.pod.name.as_str()))
            .or_insert_with(|| (&c.pod, Vec::new()))
            .1
            .push(c);
    }
    let pods = pods
        .into_values()
        .map(|(pod, members)| {
            let total = members
                .iter()
                .fold(Usage::default(), |sum, c| sum.plus(c.usage));
            let then: Option<Vec<(Timestamp, u64)>> =
                members.iter().map(|c| before(&c.id)).collect();
            let pod_before = then.and_then(|list| {
                let at = list.first()?.0;
                Some((at, list.iter().map(|(_, cpu)| cpu).sum::<u64>()))
            });
            let (cpu, memory) = stats(time, total, pod_before);
            let mut containers: Vec<ContainerStats> = members
                .iter()
                .filter(|c| !c.sandbox)
                .map(|c| {
                    let (cpu, memory) = stats(time, c.usage, before(&c.id));
                    ContainerStats {
                        name: c.name.clone(),
                        start_time: c.started,
                        cpu,
                        memory,
                    }
                })
                .collect();
            containers.sort_by(|a, b| a.name.cmp(&b.name));
            PodStats {
                pod_ref: pod.clone(),
                containers,
                cpu,
                memory,
            }
        })
        .collect();
    let node_before = previous.and_then(|p| Some((p.time, p.node?.cpu_ns)));
    let (cpu, memory) = match latest.node {
        Some(usage) => {
            let (cpu, memory) = stats(time, usage, node_before);
            (Some(cpu), Some(memory))
        }
        None => (None, None),
    };
    Summary {
        node: NodeStats {
            node_name: node_name.to_owned(),
            cpu,
            memory,
        },
        pods,
    }
}

/// One sample of the exposition: labels (name, value), value, time in milliseconds.
type Point<'a> = (Vec<(&'static str, &'a str)>, f64, Option<i64>);

/// One metric family of the exposition: name, help, type and its samples.
struct Family<'a> {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    samples: Vec<Point<'a>>,
}

/// Escapes a label value for the text format (backslash, double quote, newline).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The kubelet's `/metrics/resource` (Prometheus text format 0.0.4) for `summary`: each sample
/// with its reading's time in milliseconds, families in name order, labels in name order, as
/// the kubelet's registry writes them. `error` sets `resource_scrape_error` (and the
/// deprecated `scrape_error`) to 1.
pub fn exposition(summary: Option<&Summary>, error: bool) -> String {
    let ms = |t: &Timestamp| Some(t.as_millisecond());
    let seconds = |ns: u64| ns as f64 / 1e9;
    let mut node_cpu = Vec::new();
    let mut node_memory = Vec::new();
    let mut container_cpu = Vec::new();
    let mut container_memory = Vec::new();
    let mut container_start = Vec::new();
    let mut pod_cpu = Vec::new();
    let mut pod_memory = Vec::new();
    if let Some(summary) = summary {
        if let Some(cpu) = &summary.node.cpu {
            node_cpu.push((vec![], seconds(cpu.usage_core_nano_seconds), ms(&cpu.time)));
        }
        if let Some(memory) = &summary.node.memory {
            node_memory.push((vec![], memory.working_set_bytes as f64, ms(&memory.time)));
        }
        for pod in &summary.pods {
            let pod_labels = vec![
                ("namespace", pod.pod_ref.namespace.as_str()),
                ("pod", pod.pod_ref.name.as_str()),
            ];
            for c in &pod.containers {
                let labels = vec![
                    ("container", c.name.as_str()),
                    ("namespace", pod.pod_ref.namespace.as_str()),
                    ("pod", pod.pod_ref.name.as_str()),
                ];
                container_cpu.push((
                    labels.clone(),
                    seconds(c.cpu.usage_core_nano_seconds),
                    ms(&c.cpu.time),
                ));
                container_memory.push((
                    labels.clone(),
                    c.memory.working_set_bytes as f64,
                    ms(&c.memory.time),
                ));
                if let Some(started) = &c.start_time {
                    container_start.push((labels, started.as_nanosecond() as f64 / 1e9, None));
                }
            }
            pod_cpu.push((
                pod_labels.clone(),
                seconds(pod.cpu.usage_core_nano_seconds),
                ms(&pod.cpu.time),
            ));
            pod_memory.push((
                pod_labels,
                pod.memory.working_set_bytes as f64,
                ms(&pod.memory.time),
            ));
        }
    }
    let error = if error { 1.0 } else { 0.0 };
    let families = [
        Family {
            name: "container_cpu_usage_seconds_total",
            help: "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
            kind: "counter",
            samples: container_cpu,
        },
        Family {
            name: "container_memory_working_set_bytes",
            help: "[STABLE] Current working set of the container in bytes",
            kind: "gauge",
            samples: container_memory,
        },
        Family {
            name: "container_start_time_seconds",
            help: "[STABLE] Start time of the container since unix epoch in seconds",
            kind: "gauge",
            samples: container_start,
        },
        Family {
            name: "node_cpu_usage_seconds_total",
            help: "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
            kind: "counter",
            samples: node_cpu,
        },
        Family {
            name: "node_memory_working_set_bytes",
            help: "[STABLE] Current working set of the node in bytes",
            kind: "gauge",
            samples: node_memory,
        },
        Family {
            name: "pod_cpu_usage_seconds_total",
            help: "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
            kind: "counter",
            samples: pod_cpu,
        },
        Family {
            name: "pod_memory_working_set_bytes",
            help: "[STABLE] Current working set of the pod in bytes",
            kind: "gauge",
            samples: pod_memory,
        },
        Family {
            name: "resource_scrape_error",
            help: "[STABLE] 1 if there was an error while getting container metrics, 0 otherwise",
            kind: "gauge",
            samples: vec![(vec![], error, None)],
        },
        Family {
            name: "scrape_error",
            help: "[ALPHA] (Deprecated since 1.29.0) 1 if there was an error while getting \
                   container metrics, 0 otherwise",
            kind: "gauge",
            samples: vec![(vec![], error, None)],
        },
    ];
    let mut out = String::new();
    for family in families.iter().filter(|f| !f.samples.is_empty()) {
        let _ = writeln!(out, "# HELP {} {}", family.name, family.help);
        let _ = writeln!(out, "# TYPE {} {}", family.name, family.kind);
        for (labels, value, time) in &family.samples {
            out.push_str(family.name);
            if !labels.is_empty() {
                let pairs: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                    .collect();
                let _ = write!(out, "{{{}}}", pairs.join(","));
            }
            let _ = write!(out, " {value}");
            if let Some(ms) = time {
                let _ = write!(out, " {ms}");
            }
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::cgroup::Memory;
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(seconds).expect("a valid time")
    }

    fn container(
        id: &str,
        pod: &str,
        name: &str,
        cpu_ns: u64,
        working_set: u64,
    ) -> ContainerSample {
        ContainerSample {
            id: id.to_owned(),
            pod: PodRef {
                name: pod.to_owned(),
                namespace: "default".to_owned(),
                uid: format!("uid-{pod}"),
            },
            name: name.to_owned(),
            sandbox: name == "POD",
            started: Some(at(1_700_000_000)),
            usage: Usage {
                cpu_ns,
                memory: Memory {
                    usage: working_set + 1000,
                    working_set,
                    rss: working_set / 2,
                },
            },
        }
    }

    fn node(cpu_ns: u64) -> Option<Usage> {
        Some(Usage {
            cpu_ns,
            memory: Memory {
                usage: 8_000_000_000,
                working_set: 3_000_000_000,
                rss: 1_000_000_000,
            },
        })
    }

    #[test]
    fn nano_cores_over_a_window() {
        let cases = [
            (
                "half a core over 10 s",
                0,
                5_000_000_000,
                10_000_000_000,
                Some(500_000_000),
            ),
            ("idle", 7, 7, 10_000_000_000, Some(0)),
            ("counter went back", 9, 7, 10_000_000_000, None),
            ("no time passed", 0, 7, 0, None),
        ];
        for (what, previous, latest, dt, want) in cases {
            assert_eq!(nano_cores(previous, latest, dt), want, "{what}");
        }
    }

    #[test]
    fn summary_rates_need_the_same_container_in_both_samples() {
        let previous = Sample {
            time: at(1_700_000_100),
            node: node(100_000_000_000),
            containers: vec![
                container("s1", "web", "POD", 1_000_000, 100),
                container("a1", "web", "app", 2_000_000_000, 1000),
                container("old", "db", "main", 9_000_000_000, 1000),
            ],
        };
        let latest = Sample {
            time: at(1_700_000_110),
            node: node(120_000_000_000),
            containers: vec![
                container("s1", "web", "POD", 1_000_000, 100),
                container("a1", "web", "app", 4_000_000_000, 3000),
                // db's container restarted: a new id, a new counter.
                container("new", "db", "main", 500_000_000, 2000),
            ],
        };
        let summary = summary("n1", Some(&previous), &latest);
        let json = serde_json::to_value(&summary).expect("serializes");
        assert_eq!(json["node"]["nodeName"], "n1");
        assert_eq!(json["node"]["cpu"]["usageNanoCores"], 2_000_000_000u64);
        assert_eq!(
            json["node"]["cpu"]["usageCoreNanoSeconds"],
            120_000_000_000u64
        );
        assert_eq!(json["node"]["cpu"]["time"], "2023-11-14T22:15:10Z");
        assert_eq!(json["node"]["memory"]["workingSetBytes"], 3_000_000_000u64);
        assert_eq!(json["node"]["memory"]["usageBytes"], 8_000_000_000u64);
        // Pods by namespace and name: db before web.
        let pods = json["pods"].as_array().expect("pods");
        assert_eq!(
            pods[0]["podRef"],
            serde_json::json!({"name": "db", "namespace": "default", "uid": "uid-db"})
        );
        assert_eq!(
            pods[0]["cpu"].get("usageNanoCores"),
            None,
            "restarted: no rate yet"
        );
        assert_eq!(pods[0]["containers"][0]["cpu"].get("usageNanoCores"), None);
        assert_eq!(pods[0]["containers"][0]["memory"]["workingSetBytes"], 2000);
        let web = &pods[1];
        assert_eq!(
            web["containers"].as_array().map(Vec::len),
            Some(1),
            "no sandbox entry"
        );
        assert_eq!(web["containers"][0]["name"], "app");
        assert_eq!(web["containers"][0]["startTime"], "2023-11-14T22:13:20Z");
        assert_eq!(web["containers"][0]["cpu"]["usageNanoCores"], 200_000_000);
        assert_eq!(web["cpu"]["usageNanoCores"], 200_000_000, "sandbox idle");
        assert_eq!(
            web["memory"]["workingSetBytes"], 3100,
            "sandbox counted in the pod"
        );
    }

    #[test]
    fn the_first_sample_has_no_rates() {
        let latest = Sample {
            time: at(1_700_000_000),
            node: node(5),
            containers: vec![container("a", "web", "app", 5, 10)],
        };
        let json = serde_json::to_value(summary("n1", None, &latest)).expect("serializes");
        assert_eq!(json["node"]["cpu"].get("usageNanoCores"), None);
        assert_eq!(json["node"]["cpu"]["usageCoreNanoSeconds"], 5);
        assert_eq!(
            json["pods"][0]["containers"][0]["memory"]["workingSetBytes"],
            10
        );
    }

    #[test]
    fn resource_metrics_in_the_kubelet_text_format() {
        let latest = Sample {
            time: Timestamp::from_millisecond(1_700_000_000_123).expect("time"),
            node: node(12_500_000_000),
            containers: vec![
                container("s", "web", "POD", 1_000_000, 100),
                container("a", "web", "app\"x", 2_000_000_000, 1000),
            ],
        };
        let summary = summary("n1", None, &latest);
        let text = exposition(Some(&summary), false);
        let expected = "\
# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container=\"app\\\"x\",namespace=\"default\",pod=\"web\"} 2 1700000000123
# HELP container_memory_working_set_bytes [STABLE] Current working set of the container in bytes
# TYPE container_memory_working_set_bytes gauge
container_memory_working_set_bytes{container=\"app\\\"x\",namespace=\"default\",pod=\"web\"} 1000 1700000000123
# HELP container_start_time_seconds [STABLE] Start time of the container since unix epoch in seconds
# TYPE container_start_time_seconds gauge
container_start_time_seconds{container=\"app\\\"x\",namespace=\"default\",pod=\"web\"} 1700000000
# HELP node_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the node in core-seconds
# TYPE node_cpu_usage_seconds_total counter
node_cpu_usage_seconds_total 12.5 1700000000123
# HELP node_memory_working_set_bytes [STABLE] Current working set of the node in bytes
# TYPE node_memory_working_set_bytes gauge
node_memory_working_set_bytes 3000000000 1700000000123
# HELP pod_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the pod in core-seconds
# TYPE pod_cpu_usage_seconds_total counter
pod_cpu_usage_seconds_total{namespace=\"default\",pod=\"web\"} 2.001 1700000000123
# HELP pod_memory_working_set_bytes [STABLE] Current working set of the pod in bytes
# TYPE pod_memory_working_set_bytes gauge
pod_memory_working_set_bytes{namespace=\"default\",pod=\"web\"} 1100 1700000000123
# HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise
# TYPE resource_scrape_error gauge
resource_scrape_error 0
# HELP scrape_error [ALPHA] (Deprecated since 1.29.0) 1 if there was an error while getting container metrics, 0 otherwise
# TYPE scrape_error gauge
scrape_error 0
";
        assert_eq!(text, expected);
        let failed = exposition(None, true);
        assert!(failed.contains("\nresource_scrape_error 1\n"), "{failed}");
        assert!(!failed.contains("node_cpu"), "{failed}");
    }
}
