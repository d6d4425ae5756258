//! The DaemonSet decisions against the cases of Kubernetes' `daemon_controller_test.go`,
//! `update_test.go` and `daemonset_util_test.go`, as a user sees them: which nodes get a pod,
//! which pods go, what the status says.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{
    api::{
        apps::v1::DaemonSet,
        core::v1::{Node, Pod},
    },
    apimachinery::pkg::util::intstr::IntOrString,
};
use serde_json::{Value, json};

use super::plan::*;

const NOW: i64 = 1_000_000;

fn ds(extra_spec: Value) -> DaemonSet {
    let mut spec = json!({
        "selector": {"matchLabels": {"app": "d"}},
        "template": {
            "metadata": {"labels": {"app": "d"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}
        },
        "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}
    });
    merge(&mut spec, extra_spec);
    serde_json::from_value(json!({
        "metadata": {"name": "d", "namespace": "default", "uid": "u1", "generation": 1},
        "spec": spec
    }))
    .expect("a DaemonSet")
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

fn node(name: &str, labels: Value, taints: Value) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": taints}
    }))
    .expect("a Node")
}

fn plain(name: &str) -> Node {
    node(name, json!({}), json!([]))
}

/// A pod of the DaemonSet: on `node` (bound or only pinned), of revision `hash`, in `phase`,
/// ready or not, created at `created`.
fn pod(name: &str, node: &str, bound: bool, hash: &str, phase: &str, ready: bool) -> Pod {
    pod_at(name, node, bound, hash, phase, ready, 100)
}

fn pod_at(
    name: &str,
    node: &str,
    bound: bool,
    hash: &str,
    phase: &str,
    ready: bool,
    created: i64,
) -> Pod {
    let ts = |s: i64| jiff::Timestamp::from_second(s).expect("a time").to_string();
    let mut spec = json!({
        "containers": [{"name": "c", "image": "busybox"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchFields": [
                {"key": "metadata.name", "operator": "In", "values": [node]}
            ]}]
        }}}
    });
    if bound {
        spec["nodeName"] = json!(node);
    }
    serde_json::from_value(json!({
        "metadata": {
            "name": name,
            "creationTimestamp": ts(created),
            "labels": {"app": "d", REVISION_HASH_LABEL: hash}
        },
        "spec": spec,
        "status": {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"},
                            "lastTransitionTime": ts(created)}]
        }
    }))
    .expect("a Pod")
}

fn names(list: &[String]) -> Vec<&str> {
    list.iter().map(String::as_str).collect()
}

#[test]
fn default_tolerations_are_added_once_and_replace_matching_ones() {
    let mut spec: k8s_openapi::api::core::v1::PodSpec = serde_json::from_value(json!({
        "containers": [],
        "tolerations": [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
             "tolerationSeconds": 30},
            {"key": "dedicated", "operator": "Equal", "value": "x", "effect": "NoSchedule"}
        ]
    }))
    .expect("a PodSpec");
    add_default_tolerations(&mut spec);
    add_default_tolerations(&mut spec);
    let got: Vec<(String, String, Option<i64>)> = spec
        .tolerations
        .iter()
        .flatten()
        .map(|t| {
            (
                t.key.clone().unwrap_or_default(),
                t.effect.clone().unwrap_or_default(),
                t.toleration_seconds,
            )
        })
        .collect();
    let want: Vec<(String, String, Option<i64>)> = [
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("dedicated", "NoSchedule"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ]
    .iter()
    .map(|(k, e)| ((*k).to_owned(), (*e).to_owned(), None))
    .collect();
    assert_eq!(got, want);

    let mut host: k8s_openapi::api::core::v1::PodSpec =
        serde_json::from_value(json!({"containers": [], "hostNetwork": true})).expect("spec");
    add_default_tolerations(&mut host);
    let keys: Vec<&str> = host
        .tolerations
        .iter()
        .flatten()
        .filter_map(|t| t.key.as_deref())
        .collect();
    assert_eq!(keys.len(), 7);
    assert_eq!(keys[6], "node.kubernetes.io/network-unavailable");
}

#[test]
fn which_nodes_run_a_daemon_pod() {
    let taint = |key: &str, effect: &str| json!([{"key": key, "value": "x", "effect": effect}]);
    let cases: Vec<(&str, Value, Node, (bool, bool))> = vec![
        ("any node", json!({}), plain("a"), (true, true)),
        (
            "nodeName elsewhere",
            json!({"template": {"spec": {"nodeName": "b"}}}),
            plain("a"),
            (false, false),
        ),
        (
            "nodeSelector matches",
            json!({"template": {"spec": {"nodeSelector": {"disk": "ssd"}}}}),
            node("a", json!({"disk": "ssd"}), json!([])),
            (true, true),
        ),
        (
            "nodeSelector does not match",
            json!({"template": {"spec": {"nodeSelector": {"disk": "ssd"}}}}),
            node("a", json!({"disk": "hdd"}), json!([])),
            (false, false),
        ),
        (
            "required affinity does not match",
            json!({"template": {"spec": {"affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z1"]}]}
            ]}}}}}}),
            node("a", json!({"zone": "z2"}), json!([])),
            (false, false),
        ),
        (
            "untolerated NoSchedule: no new pod, the running one stays",
            json!({}),
            node("a", json!({}), taint("dedicated", "NoSchedule")),
            (false, true),
        ),
        (
            "untolerated NoExecute: the pod goes",
            json!({}),
            node("a", json!({}), taint("dedicated", "NoExecute")),
            (false, false),
        ),
        (
            "PreferNoSchedule is no obstacle",
            json!({}),
            node("a", json!({}), taint("dedicated", "PreferNoSchedule")),
            (true, true),
        ),
        (
            "tolerated NoSchedule",
            json!({"template": {"spec": {"tolerations": [
                {"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}]}}}),
            node("a", json!({}), taint("dedicated", "NoSchedule")),
            (true, true),
        ),
        (
            "default tolerations: unschedulable and not-ready NoExecute",
            json!({}),
            node(
                "a",
                json!({}),
                json!([
                    {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"},
                    {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}
                ]),
            ),
            (true, true),
        ),
        (
            "not-ready NoSchedule is not a default toleration",
            json!({}),
            node(
                "a",
                json!({}),
                json!([{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}]),
            ),
            (false, true),
        ),
    ];
    for (what, spec, node, want) in cases {
        assert_eq!(node_should_run(&node, &ds(spec)), want, "{what}");
    }
}

#[test]
fn pods_are_pinned_by_a_node_name_affinity_term() {
    let ds = ds(json!({"template": {"spec": {"affinity": {"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["old"]}]}
        ]},
        "preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 1, "preference": {"matchExpressions": [{"key": "k", "operator": "Exists"}]}}
        ]
    }}}}}));
    let template = pod_template(&ds, "h1");
    let mut spec = template.spec.expect("spec");
    spec.affinity = Some(pin_to_node(spec.affinity.take(), "n2"));
    let affinity = serde_json::to_value(&spec.affinity).expect("json");
    assert_eq!(
        affinity["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"],
        json!({"nodeSelectorTerms": [{"matchFields": [
            {"key": "metadata.name", "operator": "In", "values": ["n2"]}
        ]}]})
    );
    assert_eq!(
        affinity["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"],
        json!(1)
    );
    assert_eq!(spec.node_name, None, "the scheduler binds the pod");
    let labels = template.metadata.expect("meta").labels.expect("labels");
    assert_eq!(
        labels.get(REVISION_HASH_LABEL).map(String::as_str),
        Some("h1")
    );
    assert_eq!(spec.tolerations.map(|t| t.len()), Some(6));

    let pinned = pod("p", "n2", false, "h1", "Pending", false);
    assert_eq!(target_node(&pinned).as_deref(), Some("n2"));
    let bound = pod("p", "n3", true, "h1", "Running", true);
    assert_eq!(target_node(&bound).as_deref(), Some("n3"));
}

#[test]
fn template_generation_labels_pods_when_the_server_keeps_one() {
    let mut set = ds(json!({}));
    assert_eq!(template_generation(&set), None);
    set.metadata.annotations = Some(BTreeMap::from([(
        TEMPLATE_GENERATION_ANNOTATION.to_owned(),
        "3".to_owned(),
    )]));
    let labels = pod_template(&set, "h")
        .metadata
        .and_then(|m| m.labels)
        .unwrap_or_default();
    assert_eq!(
        labels.get(TEMPLATE_GENERATION_LABEL).map(String::as_str),
        Some("3")
    );
    let mut old = pod("p", "a", true, "other", "Running", true);
    assert!(!is_pod_updated(&old, "h", Some(3)));
    old.metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(TEMPLATE_GENERATION_LABEL.to_owned(), "3".to_owned());
    assert!(is_pod_updated(&old, "h", Some(3)));
    assert!(is_pod_updated(
        &pod("p", "a", true, "h", "Running", true),
        "h",
        None
    ));
}

#[test]
fn every_eligible_node_gets_one_pod() {
    let set = ds(json!({}));
    let nodes = vec![
        plain("a"),
        plain("b"),
        node(
            "c",
            json!({}),
            json!([{"key": "k", "effect": "NoSchedule"}]),
        ),
        plain("d"),
    ];
    let pods = vec![
        pod_at("a-old", "a", true, "h", "Running", true, 100),
        pod_at("a-new", "a", true, "h", "Running", true, 200),
        pod("b-1", "b", true, "h", "Failed", false),
        pod("c-1", "c", true, "h", "Running", true),
        pod("gone-1", "gone", false, "h", "Pending", false),
        pod("gone-2", "gone2", true, "h", "Running", true),
    ];
    let by_node = pods_by_node(&pods);
    let placement = manage(&set, &nodes, &by_node, "h", NOW);
    assert_eq!(names(&placement.create_on), ["d"], "the node without a pod");
    assert_eq!(
        names(&placement.delete),
        ["a-new", "gone-1"],
        "the younger of two pods, and an unbound pod for a node that is gone"
    );
    assert_eq!(placement.failed, [("b".to_owned(), "b-1".to_owned())]);

    // A NoExecute taint evicts the daemon pod; a node with only a terminating pod waits.
    let mut terminating = pod("a-1", "a", true, "h", "Running", true);
    terminating.metadata.deletion_timestamp = terminating.metadata.creation_timestamp.clone();
    let nodes = vec![
        node("a", json!({}), json!([])),
        node("b", json!({}), json!([{"key": "k", "effect": "NoExecute"}])),
    ];
    let pods = vec![terminating, pod("b-1", "b", true, "h", "Running", true)];
    let placement = manage(&set, &nodes, &pods_by_node(&pods), "h", NOW);
    assert_eq!(placement.create_on, Vec::<String>::new());
    assert_eq!(names(&placement.delete), ["b-1"]);
}

#[test]
fn surge_keeps_an_old_pod_until_the_new_one_is_available() {
    let set =
        ds(json!({"updateStrategy": {"rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}}));
    let nodes = vec![plain("a"), plain("b")];
    let pods = vec![
        pod_at("a-old", "a", true, "h0", "Running", true, 100),
        pod_at("a-new", "a", true, "h1", "Running", false, 200),
        pod_at("b-old", "b", true, "h0", "Running", true, 100),
        pod_at("b-new", "b", true, "h1", "Running", true, 200),
    ];
    let placement = manage(&set, &nodes, &pods_by_node(&pods), "h1", NOW);
    assert_eq!(names(&placement.delete), ["b-old"]);
}

#[test]
fn rolling_update_without_surge_stays_within_max_unavailable() {
    let nodes = vec![plain("a"), plain("b"), plain("c")];
    // (maxUnavailable, pods) -> pods deleted
    let cases: Vec<(Value, Vec<Pod>, Vec<&str>)> = vec![
        (
            json!(1),
            vec![
                pod("a-0", "a", true, "h0", "Running", true),
                pod("b-0", "b", true, "h0", "Running", true),
                pod("c-0", "c", true, "h0", "Running", true),
            ],
            vec!["a-0"],
        ),
        (
            json!(2),
            vec![
                pod("a-0", "a", true, "h0", "Running", true),
                pod("b-0", "b", true, "h0", "Running", true),
                pod("c-0", "c", true, "h0", "Running", true),
            ],
            vec!["a-0", "b-0"],
        ),
        (
            // A new pod not yet available uses up the budget.
            json!(1),
            vec![
                pod("a-1", "a", true, "h1", "Running", false),
                pod("b-0", "b", true, "h0", "Running", true),
                pod("c-0", "c", true, "h0", "Running", true),
            ],
            vec![],
        ),
        (
            // Once it is available, the next old one goes.
            json!(1),
            vec![
                pod("a-1", "a", true, "h1", "Running", true),
                pod("b-0", "b", true, "h0", "Running", true),
                pod("c-0", "c", true, "h0", "Running", true),
            ],
            vec!["b-0"],
        ),
        (
            // Unavailable old pods are replaced whatever the budget.
            json!(1),
            vec![
                pod("a-1", "a", true, "h1", "Running", false),
                pod("b-0", "b", true, "h0", "Running", false),
                pod("c-0", "c", true, "h0", "Running", true),
            ],
            vec!["b-0"],
        ),
        (
            // A percentage is rounded up: 34% of 3 nodes is 2.
            json!("34%"),
            vec![
                pod("a-0", "a", true, "h0", "Running", true),
                pod("b-0", "b", true, "h0", "Running", true),
                pod("c-0", "c", true, "h0", "Running", true),
            ],
            vec!["a-0", "b-0"],
        ),
        (
            // 0 and 0 means one at a time.
            json!(0),
            vec![
                pod("a-0", "a", true, "h0", "Running", true),
                pod("b-0", "b", true, "h0", "Running", true),
                pod("c-0", "c", true, "h0", "Running", true),
            ],
            vec!["a-0"],
        ),
    ];
    for (max_unavailable, pods, want) in cases {
        let set =
            ds(json!({"updateStrategy": {"rollingUpdate": {"maxUnavailable": max_unavailable}}}));
        let (delete, create) = rolling_update(&set, &nodes, &pods_by_node(&pods), "h1", NOW);
        assert_eq!(names(&delete), want, "maxUnavailable {max_unavailable}");
        assert!(create.is_empty());
    }
}

#[test]
fn rolling_update_with_surge_starts_new_pods_beside_old_ones() {
    let nodes = vec![plain("a"), plain("b"), plain("c")];
    let set =
        ds(json!({"updateStrategy": {"rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}}));
    let all_old = vec![
        pod("a-0", "a", true, "h0", "Running", true),
        pod("b-0", "b", true, "h0", "Running", true),
        pod("c-0", "c", true, "h0", "Running", true),
    ];
    let (delete, create) = rolling_update(&set, &nodes, &pods_by_node(&all_old), "h1", NOW);
    assert!(delete.is_empty());
    assert_eq!(names(&create), ["a"]);

    let surging = vec![
        pod("a-0", "a", true, "h0", "Running", true),
        pod("a-1", "a", true, "h1", "Running", false),
        pod("b-0", "b", true, "h0", "Running", true),
        pod("c-0", "c", true, "h0", "Running", false),
    ];
    let (delete, create) = rolling_update(&set, &nodes, &pods_by_node(&surging), "h1", NOW);
    assert!(delete.is_empty());
    assert_eq!(
        names(&create),
        ["c"],
        "an unavailable old pod is replaced at once"
    );

    let done_on_a = vec![
        pod("a-0", "a", true, "h0", "Running", true),
        pod("a-1", "a", true, "h1", "Running", true),
        pod("b-0", "b", true, "h0", "Running", true),
        pod("c-0", "c", true, "h0", "Running", true),
    ];
    let (delete, create) = rolling_update(&set, &nodes, &pods_by_node(&done_on_a), "h1", NOW);
    assert_eq!(names(&delete), ["a-0"]);
    assert_eq!(names(&create), ["b"]);
}

#[test]
fn status_counts_what_kubectl_rollout_status_reads() {
    let set = ds(json!({"minReadySeconds": 30}));
    let nodes = vec![
        plain("a"),
        plain("b"),
        plain("c"),
        plain("d"),
        node(
            "e",
            json!({}),
            json!([{"key": "k", "effect": "NoSchedule"}]),
        ),
    ];
    let pods = vec![
        pod_at("a-1", "a", true, "h1", "Running", true, NOW - 100),
        pod_at("b-1", "b", true, "h1", "Running", true, NOW - 10),
        pod_at("c-0", "c", true, "h0", "Running", false, NOW - 100),
        pod_at("e-0", "e", true, "h0", "Running", true, NOW - 100),
    ];
    let counts = status(&set, &nodes, &pods_by_node(&pods), "h1", NOW);
    assert_eq!(
        counts,
        Counts {
            desired: 4,
            current: 3,
            misscheduled: 1,
            ready: 2,
            updated: 2,
            available: 1,
            unavailable: 3,
        }
    );
}

#[test]
fn scaled_values_round_up() {
    let cases = [
        (IntOrString::Int(2), 10, 2),
        (IntOrString::String("10%".into()), 3, 1),
        (IntOrString::String("50%".into()), 3, 2),
        (IntOrString::String("100%".into()), 4, 4),
        (IntOrString::String("0%".into()), 4, 0),
        (IntOrString::String("x".into()), 4, 0),
    ];
    for (value, total, want) in cases {
        assert_eq!(scaled(Some(&value), total), want, "{value:?} of {total}");
    }
    assert_eq!(scaled(None, 4), 0);
    assert!(!allows_surge(&ds(json!({}))));
    assert!(allows_surge(&ds(
        json!({"updateStrategy": {"rollingUpdate": {"maxSurge": "10%"}}})
    )));
    assert!(!allows_surge(&ds(
        json!({"updateStrategy": {"type": "OnDelete", "rollingUpdate": {"maxSurge": 1}}})
    )));
}

#[test]
fn failed_pods_are_replaced_with_a_doubling_back_off() {
    let mut backoff = Backoff::default();
    assert_eq!(backoff.waiting("k", 0), None);
    backoff.next("k", 0);
    assert_eq!(backoff.waiting("k", 500), Some(Duration::from_secs(1)));
    assert_eq!(backoff.waiting("k", 1000), None);
    backoff.next("k", 1000);
    assert_eq!(backoff.waiting("k", 2500), Some(Duration::from_secs(2)));
    assert_eq!(backoff.waiting("k", 3000), None);
    backoff.next("k", 3000);
    assert_eq!(backoff.waiting("k", 6000), Some(Duration::from_secs(4)));
    // Idle for more than 30 minutes: forgotten, and the delay starts over.
    backoff.gc(3000 + 30 * 60 * 1000 + 1);
    assert_eq!(backoff.waiting("k", 3000), None);
    backoff.next("k", 10_000_000);
    assert_eq!(
        backoff.waiting("k", 10_000_500),
        Some(Duration::from_secs(1))
    );
}
