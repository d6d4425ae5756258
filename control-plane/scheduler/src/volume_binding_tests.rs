use super::*;
use k8s_openapi::api::core::v1::Node;
use serde_json::{Value, json};

fn from<T: k8s_openapi::serde::de::DeserializeOwned>(value: Value) -> Arc<T> {
    Arc::new(serde_json::from_value(value).unwrap())
}

fn node(name: &str) -> NodeInfo {
    NodeInfo::from_node(
        &serde_json::from_value::<Node>(json!({
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
            "spec": {},
            "status": {"conditions": [{"type": "Ready", "status": "True"}],
                       "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}},
        }))
        .unwrap(),
    )
}

fn pod(claims: &[&str]) -> Pod {
    let volumes: Vec<Value> = claims
        .iter()
        .map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}], "volumes": volumes},
    }))
    .unwrap()
}

fn claim(name: &str, class: &str, extra: Value) -> Arc<PersistentVolumeClaim> {
    let mut value = json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {"storageClassName": class, "accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "1Gi"}}},
    });
    if let (Some(base), Value::Object(extra)) = (value.as_object_mut(), extra) {
        for (key, v) in extra {
            if let (Some(Value::Object(inner)), Value::Object(v)) = (base.get_mut(&key), &v) {
                inner.extend(v.clone());
            } else {
                base.insert(key, v);
            }
        }
    }
    from(value)
}

fn snapshot() -> Snapshot {
    Snapshot {
        claims: vec![
            claim(
                "bound",
                "local-path",
                json!({"spec": {"volumeName": "pvc-1"}}),
            ),
            claim("fresh", "local-path", json!({})),
            claim("immediate", "fast", json!({})),
            claim(
                "chosen",
                "local-path",
                json!({"metadata": {"annotations": {ANN_SELECTED_NODE: "b"}}}),
            ),
        ],
        volumes: vec![from(json!({
            "metadata": {"name": "pvc-1"},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                     "hostPath": {"path": "/x"}, "storageClassName": "local-path",
                     "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                         {"key": "kubernetes.io/hostname", "operator": "In", "values": ["b"]}]}]}}},
        }))],
        classes: vec![
            from(
                json!({"metadata": {"name": "local-path"}, "provisioner": "keelson.io/local-path",
                        "volumeBindingMode": "WaitForFirstConsumer"}),
            ),
            from(json!({"metadata": {"name": "fast"}, "provisioner": "x"})),
        ],
    }
}

#[test]
fn claims_decide_the_node() {
    let nodes = [node("a"), node("b"), node("c")];
    let snapshot = snapshot();
    let cases = [
        (
            vec!["missing"],
            Placement::Unschedulable(
                "0/3 nodes are available: persistentvolumeclaim \"missing\" not found.".into(),
            ),
        ),
        (
            vec!["immediate"],
            Placement::Unschedulable(
                "0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims.".into(),
            ),
        ),
        // Bound to a volume pinned to b: only b, whatever the turn.
        (vec!["bound"], Placement::Node("b".into())),
        (vec!["chosen"], Placement::Node("b".into())),
        (vec!["fresh", "bound"], Placement::Node("b".into())),
    ];
    for (claims, want) in cases {
        for turn in 0..3 {
            assert_eq!(
                place_with(
                    &pod(&claims),
                    &nodes,
                    &NamespaceLabels::new(),
                    turn,
                    &snapshot
                ),
                want,
                "{claims:?} turn {turn}"
            );
        }
    }
    // A fresh local-path claim goes anywhere.
    let placed: std::collections::BTreeSet<String> = (0..3)
        .map(|turn| {
            format!(
                "{:?}",
                place_with(
                    &pod(&["fresh"]),
                    &nodes,
                    &NamespaceLabels::new(),
                    turn,
                    &snapshot
                )
            )
        })
        .collect();
    assert_eq!(placed.len(), 3, "{placed:?}");
    // Without b, a pod whose volume lives on b fits nowhere.
    assert_eq!(
        place_with(
            &pod(&["bound"]),
            &nodes[..1],
            &NamespaceLabels::new(),
            0,
            &snapshot
        ),
        Placement::Unschedulable(
            "0/1 nodes are available: 1 node(s) had volume node affinity conflict.".into()
        )
    );
}

#[test]
fn only_unselected_waiting_claims_are_annotated() {
    let snapshot = snapshot();
    assert_eq!(
        claims_to_select(&pod(&["fresh", "chosen", "bound"]), &snapshot),
        (vec!["fresh".to_owned()], true)
    );
    assert_eq!(
        claims_to_select(&pod(&["bound"]), &snapshot),
        (Vec::new(), false)
    );
    assert_eq!(
        claim_names(&pod(&["a", "b"])),
        vec!["a".to_owned(), "b".to_owned()]
    );
}
