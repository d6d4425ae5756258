//! The kubelet Summary API in, `metrics.k8s.io/v1beta1` objects out (`NodeMetrics`,
//! `PodMetrics`, as `k8s.io/metrics/pkg/apis/metrics/v1beta1/types.go` defines them and
//! metrics-server fills them): pure functions.

use keelson_api::quantity::{Format, Quantity};
use serde_json::{Map, Value, json};

/// The group version served.
pub(crate) const API_VERSION: &str = "metrics.k8s.io/v1beta1";

/// The window every usage is averaged over: the node agent's sampling period (it computes
/// `usageNanoCores` between its last two samples, 10 s apart, as cAdvisor does), written as
/// Go's `time.Duration` prints it.
pub(crate) const WINDOW: &str = "10s";

/// CPU in cores from nanocores, as metrics-server writes it (`resource.NewScaledQuantity(n,
/// -9)`, canonical: `123456n`, `12m`, `2`).
pub(crate) fn cpu(nano_cores: u64) -> String {
    Quantity::parse(&format!("{nano_cores}n")).map_or_else(|_| "0".to_owned(), |q| q.to_string())
}

/// Memory in bytes as metrics-server writes it (a BinarySI quantity: `1234Ki`, `5Mi`, plain
/// bytes when not a whole number of KiB, and decimal below 1 KiB: `1k`).
pub(crate) fn memory(bytes: u64) -> String {
    Quantity::new(i64::try_from(bytes).unwrap_or(i64::MAX), Format::BinarySI).to_string()
}

/// A `metav1.Time` (RFC 3339 in whole seconds) from the summary's time, which may carry a
/// fraction.
pub(crate) fn time(text: &str) -> Option<String> {
    let t: jiff::Timestamp = text.parse().ok()?;
    jiff::Timestamp::from_second(t.as_second())
        .ok()
        .map(|t| t.to_string())
}

/// `usage` of a summary's `cpu` and `memory`: `None` unless both have their numbers (a
/// container seen in only one sample has no CPU rate yet).
fn usage(stats: &Value) -> Option<(Value, String)> {
    let nano_cores = stats.pointer("/cpu/usageNanoCores")?.as_u64()?;
    let working_set = stats.pointer("/memory/workingSetBytes")?.as_u64()?;
    let at = time(stats.pointer("/cpu/time")?.as_str()?)?;
    Some((
        json!({"cpu": cpu(nano_cores), "memory": memory(working_set)}),
        at,
    ))
}

fn metadata(object: &Value, now: &str, namespaced: bool) -> Value {
    let mut meta = Map::new();
    meta.insert("name".to_owned(), object["metadata"]["name"].clone());
    if namespaced {
        meta.insert(
            "namespace".to_owned(),
            object["metadata"]["namespace"].clone(),
        );
    }
    meta.insert("creationTimestamp".to_owned(), json!(now));
    if let Some(labels) = object
        .pointer("/metadata/labels")
        .filter(|l| l.as_object().is_some_and(|m| !m.is_empty()))
    {
        meta.insert("labels".to_owned(), labels.clone());
    }
    Value::Object(meta)
}

/// The `NodeMetrics` of `node` from its kubelet's summary; `None` while the summary has no
/// CPU rate or memory for the node.
pub(crate) fn node_metrics(node: &Value, summary: &Value, now: &str) -> Option<Value> {
    let (usage, timestamp) = usage(summary.get("node")?)?;
    Some(json!({
        "kind": "NodeMetrics",
        "apiVersion": API_VERSION,
        "metadata": metadata(node, now, false),
        "timestamp": timestamp,
        "window": WINDOW,
        "usage": usage,
    }))
}

/// The summary's entry for `pod` (by namespace and name; by uid too when both have one).
pub(crate) fn pod_stats<'a>(summary: &'a Value, pod: &Value) -> Option<&'a Value> {
    let namespace = pod.pointer("/metadata/namespace")?.as_str()?;
    let name = pod.pointer("/metadata/name")?.as_str()?;
    let uid = pod.pointer("/metadata/uid").and_then(Value::as_str);
    summary.get("pods")?.as_array()?.iter().find(|p| {
        let reference = &p["podRef"];
        reference["namespace"] == namespace
            && reference["name"] == name
            && match (uid, reference["uid"].as_str()) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    })
}

/// The `PodMetrics` of `pod` from its entry in the summary: every container needs CPU and
/// memory, else the pod is left out as metrics-server leaves out a partial pod.
pub(crate) fn pod_metrics(pod: &Value, stats: &Value, now: &str) -> Option<Value> {
    let containers = stats.get("containers")?.as_array()?;
    if containers.is_empty() {
        return None;
    }
    let mut timestamp = None;
    let mut out = Vec::with_capacity(containers.len());
    for c in containers {
        let (usage, at) = usage(c)?;
        timestamp.get_or_insert(at);
        out.push(json!({"name": c.get("name")?, "usage": usage}));
    }
    Some(json!({
        "kind": "PodMetrics",
        "apiVersion": API_VERSION,
        "metadata": metadata(pod, now, true),
        "timestamp": timestamp?,
        "window": WINDOW,
        "containers": out,
    }))
}

/// `<kind>List` of `items`.
pub(crate) fn list(kind: &str, items: Vec<Value>) -> Value {
    json!({
        "kind": format!("{kind}List"),
        "apiVersion": API_VERSION,
        "metadata": {},
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_as_metrics_server_writes_them() {
        let cpus = [
            (0, "0"),
            (123_456, "123456n"),
            (12_000_000, "12m"),
            (12_500_000, "12500u"),
            (1_000_000_000, "1"),
            (2_250_000_000, "2250m"),
        ];
        for (nano_cores, want) in cpus {
            assert_eq!(cpu(nano_cores), want, "{nano_cores} nanocores");
        }
        let memories = [
            (0, "0"),
            // Below 1024 Go's canonical form switches to DecimalSI.
            (1000, "1k"),
            (1_263_616, "1234Ki"),
            (5 * 1024 * 1024, "5Mi"),
            (1_234_567, "1234567"),
        ];
        for (bytes, want) in memories {
            assert_eq!(memory(bytes), want, "{bytes} bytes");
        }
    }

    #[test]
    fn times_in_whole_seconds() {
        assert_eq!(
            time("2023-11-14T22:13:20.123456789Z").as_deref(),
            Some("2023-11-14T22:13:20Z")
        );
        assert_eq!(time("yesterday"), None);
    }

    fn summary() -> Value {
        json!({
            "node": {"nodeName": "n1",
                     "cpu": {"time": "2023-11-14T22:13:20.5Z", "usageNanoCores": 250_000_000u64,
                             "usageCoreNanoSeconds": 9_000_000_000u64},
                     "memory": {"time": "2023-11-14T22:13:20.5Z", "workingSetBytes": 2_147_483_648u64,
                                "usageBytes": 4_000_000_000u64}},
            "pods": [
                {"podRef": {"name": "web", "namespace": "shop", "uid": "u1"},
                 "containers": [
                    {"name": "app", "cpu": {"time": "2023-11-14T22:13:20.5Z", "usageNanoCores": 1_500_000,
                                            "usageCoreNanoSeconds": 5},
                     "memory": {"time": "2023-11-14T22:13:20.5Z", "workingSetBytes": 10_485_760}},
                    {"name": "sidecar", "cpu": {"time": "2023-11-14T22:13:20.5Z", "usageNanoCores": 0,
                                                "usageCoreNanoSeconds": 5},
                     "memory": {"time": "2023-11-14T22:13:20.5Z", "workingSetBytes": 1_000_000}}]},
                {"podRef": {"name": "new", "namespace": "shop", "uid": "u2"},
                 "containers": [
                    {"name": "app", "cpu": {"time": "2023-11-14T22:13:20.5Z", "usageCoreNanoSeconds": 5},
                     "memory": {"time": "2023-11-14T22:13:20.5Z", "workingSetBytes": 1}}]}
            ]
        })
    }

    #[test]
    fn node_metrics_carry_the_node_labels_and_usage() {
        let node = json!({"metadata": {"name": "n1", "labels": {"kubernetes.io/os": "linux"}}});
        let got = node_metrics(&node, &summary(), "2023-11-14T22:14:00Z");
        assert_eq!(
            got,
            Some(json!({
                "kind": "NodeMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
                "metadata": {"name": "n1", "creationTimestamp": "2023-11-14T22:14:00Z",
                             "labels": {"kubernetes.io/os": "linux"}},
                "timestamp": "2023-11-14T22:13:20Z", "window": "10s",
                "usage": {"cpu": "250m", "memory": "2Gi"},
            }))
        );
        let no_rate = json!({"node": {"cpu": {"time": "2023-11-14T22:13:20Z"},
                                      "memory": {"workingSetBytes": 1}}});
        assert_eq!(node_metrics(&node, &no_rate, "now"), None);
    }

    #[test]
    fn pod_metrics_need_every_container() {
        let pod =
            json!({"metadata": {"name": "web", "namespace": "shop", "uid": "u1", "labels": {}}});
        let summary = summary();
        let stats = pod_stats(&summary, &pod).expect("found by name and uid");
        assert_eq!(
            pod_metrics(&pod, stats, "2023-11-14T22:14:00Z"),
            Some(json!({
                "kind": "PodMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
                "metadata": {"name": "web", "namespace": "shop", "creationTimestamp": "2023-11-14T22:14:00Z"},
                "timestamp": "2023-11-14T22:13:20Z", "window": "10s",
                "containers": [
                    {"name": "app", "usage": {"cpu": "1500u", "memory": "10Mi"}},
                    {"name": "sidecar", "usage": {"cpu": "0", "memory": "1000000"}},
                ],
            }))
        );
        let new = json!({"metadata": {"name": "new", "namespace": "shop", "uid": "u2"}});
        let stats = pod_stats(&summary, &new).expect("found");
        assert_eq!(pod_metrics(&new, stats, "now"), None, "no CPU rate yet");
        let recreated = json!({"metadata": {"name": "web", "namespace": "shop", "uid": "u9"}});
        assert_eq!(
            pod_stats(&summary, &recreated),
            None,
            "another pod of that name"
        );
    }
}
