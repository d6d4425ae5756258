use super::*;
use k8s_openapi::{api::core::v1::PodCondition, apimachinery::pkg::apis::meta::v1::Time};
use serde_json::json;

const NOW: i64 = 1_000_000;

fn set(extra: serde_json::Value) -> StatefulSet {
    let mut value = json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "set-uid", "generation": 4},
        "spec": {
            "replicas": 3,
            "serviceName": "nginx",
            "selector": {"matchLabels": {"app": "nginx"}},
            "podManagementPolicy": "OrderedReady",
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
            "template": {
                "metadata": {"labels": {"app": "nginx"}},
                "spec": {"containers": [{"name": "c", "image": "new"}]}
            }
        }
    });
    merge(&mut value, extra);
    serde_json::from_value(value).expect("a StatefulSet")
}

fn merge(target: &mut serde_json::Value, patch: serde_json::Value) {
    match (target, patch) {
        (serde_json::Value::Object(t), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (t, p) => *t = p,
    }
}

fn revision(name: &str, image: &str) -> Revision {
    Revision {
        name: name.to_owned(),
        template: serde_json::from_value(json!({
            "metadata": {"labels": {"app": "nginx"}},
            "spec": {"containers": [{"name": "c", "image": image}]}
        }))
        .expect("a template"),
    }
}

fn old() -> Revision {
    revision("web-old", "old")
}

fn new() -> Revision {
    revision("web-new", "new")
}

/// A pod of the set: `state` is `ready`, `pending`, `notready`, `failed` or `terminating`.
fn pod(ordinal: i32, rev: &str, state: &str) -> Pod {
    let (phase, ready) = match state {
        "ready" | "terminating" => ("Running", true),
        "notready" => ("Running", false),
        "failed" => ("Failed", false),
        _ => ("Pending", false),
    };
    Pod {
        metadata: ObjectMeta {
            name: Some(format!("web-{ordinal}")),
            uid: Some(format!("pod-uid-{ordinal}")),
            labels: Some(BTreeMap::from([(REVISION_LABEL.into(), rev.into())])),
            deletion_timestamp: (state == "terminating")
                .then(|| Time(jiff::Timestamp::from_second(NOW).expect("time"))),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some(phase.into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: if ready { "True" } else { "False" }.into(),
                last_transition_time: Some(Time(
                    jiff::Timestamp::from_second(NOW - 5).expect("time"),
                )),
                ..PodCondition::default()
            }]),
            ..Default::default()
        }),
    }
}

/// The steps as short strings: `create web-1@web-new`, `delete web-2 (Update)`, `claims web-0`.
fn steps(plan: &Plan) -> Vec<String> {
    plan.steps
        .iter()
        .map(|s| match s {
            Step::Create { pod, .. } => format!(
                "create {}@{}",
                pod.metadata.name.as_deref().unwrap_or_default(),
                revision_of(pod)
            ),
            Step::EnsureClaims { claims } => format!(
                "claims {}",
                claims
                    .iter()
                    .filter_map(|c| c.metadata.name.clone())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            Step::Delete { name, reason } => format!("delete {name} ({reason:?})"),
        })
        .collect()
}

#[test]
fn ordinals_parse_only_the_sets_own_names() {
    let cases = [
        ("web", "web-0", Some(0)),
        ("web", "web-12", Some(12)),
        ("web", "web-x", None),
        ("web", "web-", None),
        ("web", "webby-1", None),
        ("web-a", "web-a-3", Some(3)),
        ("web", "web-a-3", None),
    ];
    for (set_name, pod, want) in cases {
        assert_eq!(ordinal_of(set_name, pod), want, "{set_name} / {pod}");
    }
}

#[test]
fn ordered_ready_creates_one_pod_at_a_time_in_order() {
    let set = set(json!({}));
    let (cur, upd) = (new(), new());
    let cases: Vec<(Vec<Pod>, Vec<&str>)> = vec![
        (vec![], vec!["create web-0@web-new"]),
        (vec![pod(0, "web-new", "pending")], vec![]),
        (vec![pod(0, "web-new", "notready")], vec![]),
        (
            vec![pod(0, "web-new", "ready")],
            vec!["create web-1@web-new"],
        ),
        (
            vec![pod(0, "web-new", "ready"), pod(1, "web-new", "ready")],
            vec!["create web-2@web-new"],
        ),
        // A missing predecessor is created first, whatever exists after it.
        (
            vec![pod(1, "web-new", "ready")],
            vec!["create web-0@web-new"],
        ),
        (
            vec![
                pod(0, "web-new", "failed"),
                pod(1, "web-new", "ready"),
                pod(2, "web-new", "ready"),
            ],
            vec!["delete web-0 (Finished)"],
        ),
    ];
    for (pods, want) in cases {
        let plan = decide(&set, &cur, &upd, 0, &pods, NOW);
        assert_eq!(steps(&plan), want, "pods {:?}", names(&pods));
    }
}

fn names(pods: &[Pod]) -> Vec<String> {
    pods.iter()
        .map(|p| {
            format!(
                "{}:{}",
                p.metadata.name.as_deref().unwrap_or(""),
                pods::phase(p)
            )
        })
        .collect()
}

#[test]
fn parallel_creates_and_removes_everything_at_once() {
    let set = set(json!({"spec": {"podManagementPolicy": "Parallel", "replicas": 3}}));
    let plan = decide(
        &set,
        &new(),
        &new(),
        0,
        &[pod(1, "web-new", "pending")],
        NOW,
    );
    assert_eq!(
        steps(&plan),
        ["create web-0@web-new", "create web-2@web-new"]
    );
    let set =
        super::tests::set(json!({"spec": {"podManagementPolicy": "Parallel", "replicas": 1}}));
    let pods = [
        pod(0, "web-new", "ready"),
        pod(1, "web-new", "notready"),
        pod(2, "web-new", "ready"),
    ];
    assert_eq!(
        steps(&decide(&set, &new(), &new(), 0, &pods, NOW)),
        ["delete web-2 (ScaleDown)", "delete web-1 (ScaleDown)"]
    );
}

#[test]
fn ordered_scale_down_removes_the_highest_ordinal_first_one_at_a_time() {
    let set = set(json!({"spec": {"replicas": 1}}));
    let ready = [
        pod(0, "web-new", "ready"),
        pod(1, "web-new", "ready"),
        pod(2, "web-new", "ready"),
    ];
    assert_eq!(
        steps(&decide(&set, &new(), &new(), 0, &ready, NOW)),
        ["delete web-2 (ScaleDown)"]
    );
    let terminating = [
        pod(0, "web-new", "ready"),
        pod(1, "web-new", "ready"),
        pod(2, "web-new", "terminating"),
    ];
    assert!(
        decide(&set, &new(), &new(), 0, &terminating, NOW)
            .steps
            .is_empty(),
        "waits for web-2 to go"
    );
    // An unhealthy condemned pod blocks, unless it is the first unhealthy one.
    let unhealthy_low = [
        pod(0, "web-new", "ready"),
        pod(1, "web-new", "notready"),
        pod(2, "web-new", "ready"),
    ];
    assert_eq!(
        steps(&decide(&set, &new(), &new(), 0, &unhealthy_low, NOW)),
        ["delete web-2 (ScaleDown)"]
    );
    let unhealthy_high = [
        pod(0, "web-new", "ready"),
        pod(1, "web-new", "ready"),
        pod(2, "web-new", "notready"),
    ];
    assert_eq!(
        steps(&decide(&set, &new(), &new(), 0, &unhealthy_high, NOW)),
        ["delete web-2 (ScaleDown)"]
    );
    let two_unhealthy = [
        pod(0, "web-new", "ready"),
        pod(1, "web-new", "notready"),
        pod(2, "web-new", "notready"),
    ];
    assert!(
        decide(&set, &new(), &new(), 0, &two_unhealthy, NOW)
            .steps
            .is_empty()
    );
}

#[test]
fn rolling_update_goes_from_the_highest_ordinal_down_to_the_partition() {
    let all_old = [
        pod(0, "web-old", "ready"),
        pod(1, "web-old", "ready"),
        pod(2, "web-old", "ready"),
    ];
    let set0 = set(json!({}));
    assert_eq!(
        steps(&decide(&set0, &old(), &new(), 0, &all_old, NOW)),
        ["delete web-2 (Update)"]
    );
    // The deleted pod comes back at the update revision.
    let recreate = [pod(0, "web-old", "ready"), pod(1, "web-old", "ready")];
    assert_eq!(
        steps(&decide(&set0, &old(), &new(), 0, &recreate, NOW)),
        ["create web-2@web-new"]
    );
    // Each waits for the one above to be ready again.
    let waiting = [
        pod(0, "web-old", "ready"),
        pod(1, "web-old", "ready"),
        pod(2, "web-new", "notready"),
    ];
    assert!(
        decide(&set0, &old(), &new(), 0, &waiting, NOW)
            .steps
            .is_empty()
    );
    let next = [
        pod(0, "web-old", "ready"),
        pod(1, "web-old", "ready"),
        pod(2, "web-new", "ready"),
    ];
    assert_eq!(
        steps(&decide(&set0, &old(), &new(), 0, &next, NOW)),
        ["delete web-1 (Update)"]
    );
    // With partition 2, only web-2 is updated; a deleted web-1 comes back at the old revision.
    let set2 = set(json!({"spec": {"updateStrategy": {"rollingUpdate": {"partition": 2}}}}));
    assert!(
        decide(&set2, &old(), &new(), 0, &next, NOW)
            .steps
            .is_empty()
    );
    let gap = [pod(0, "web-old", "ready"), pod(2, "web-new", "ready")];
    assert_eq!(
        steps(&decide(&set2, &old(), &new(), 0, &gap, NOW)),
        ["create web-1@web-old"]
    );
    // OnDelete never deletes for an update; a deleted pod comes back updated.
    let on_delete =
        set(json!({"spec": {"updateStrategy": {"type": "OnDelete", "rollingUpdate": null}}}));
    assert!(
        decide(&on_delete, &old(), &new(), 0, &all_old, NOW)
            .steps
            .is_empty()
    );
    assert_eq!(
        steps(&decide(&on_delete, &old(), &new(), 0, &recreate, NOW)),
        ["create web-2@web-new"]
    );
}

#[test]
fn status_counts_and_completes_the_rollout() {
    let set = set(json!({}));
    let mid = [
        pod(0, "web-old", "ready"),
        pod(1, "web-new", "notready"),
        pod(2, "web-new", "ready"),
    ];
    let plan = decide(&set, &old(), &new(), 1, &mid, NOW);
    let s = &plan.status;
    assert_eq!(
        (
            s.replicas,
            s.ready_replicas,
            s.available_replicas,
            s.current_replicas,
            s.updated_replicas
        ),
        (3, Some(2), Some(2), Some(1), Some(2))
    );
    assert_eq!(s.current_revision.as_deref(), Some("web-old"));
    assert_eq!(s.update_revision.as_deref(), Some("web-new"));
    assert_eq!(s.observed_generation, Some(4));
    assert_eq!(s.collision_count, Some(1));

    let done = [
        pod(0, "web-new", "ready"),
        pod(1, "web-new", "ready"),
        pod(2, "web-new", "ready"),
    ];
    let s = decide(&set, &old(), &new(), 0, &done, NOW).status;
    assert_eq!(s.current_revision.as_deref(), Some("web-new"));
    assert_eq!((s.current_replicas, s.updated_replicas), (Some(3), Some(3)));

    // minReadySeconds: ready 5 s ago is not yet available for 10.
    let slow = super::tests::set(json!({"spec": {"minReadySeconds": 10}}));
    let plan = decide(&slow, &new(), &new(), 0, &[pod(0, "web-new", "ready")], NOW);
    assert_eq!(plan.status.available_replicas, Some(0));
    assert!(plan.waiting_for_available);
    assert!(
        plan.steps.is_empty(),
        "web-1 waits for web-0 to be available"
    );
}

#[test]
fn pods_carry_their_identity_and_claims() {
    let set = set(json!({"spec": {
        "ordinals": {"start": 5},
        "replicas": 1,
        "volumeClaimTemplates": [{
            "metadata": {"name": "data", "labels": {"tier": "db"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
        }],
        "template": {"spec": {
            "containers": [{"name": "c", "image": "new"}],
            "volumes": [{"name": "data", "emptyDir": {}}, {"name": "cache", "emptyDir": {}}]
        }}
    }}));
    let update = Revision {
        name: "web-new".into(),
        template: set.spec.as_ref().expect("spec").template.clone(),
    };
    let plan = decide(&set, &update, &update, 0, &[], NOW);
    let [Step::Create { pod, claims }] = &plan.steps[..] else {
        panic!("one create: {:?}", steps(&plan));
    };
    assert_eq!(pod.metadata.name.as_deref(), Some("web-5"));
    let labels = pod.metadata.labels.clone().expect("labels");
    assert_eq!(
        labels.get(POD_NAME_LABEL).map(String::as_str),
        Some("web-5")
    );
    assert_eq!(labels.get(POD_INDEX_LABEL).map(String::as_str), Some("5"));
    assert_eq!(
        labels.get(REVISION_LABEL).map(String::as_str),
        Some("web-new")
    );
    assert_eq!(labels.get("app").map(String::as_str), Some("nginx"));
    let spec = pod.spec.as_ref().expect("spec");
    assert_eq!(spec.hostname.as_deref(), Some("web-5"));
    assert_eq!(spec.subdomain.as_deref(), Some("nginx"));
    let volumes: Vec<(String, Option<String>)> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| {
            (
                v.name.clone(),
                v.persistent_volume_claim
                    .as_ref()
                    .map(|c| c.claim_name.clone()),
            )
        })
        .collect();
    assert_eq!(
        volumes,
        [
            ("data".to_owned(), Some("data-web-5".to_owned())),
            ("cache".to_owned(), None)
        ]
    );
    let owner = &pod.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("StatefulSet", "set-uid", Some(true))
    );
    let [claim] = &claims[..] else {
        panic!("one claim");
    };
    assert_eq!(claim.metadata.name.as_deref(), Some("data-web-5"));
    assert_eq!(claim.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(
        claim.metadata.labels,
        Some(BTreeMap::from([
            ("app".into(), "nginx".into()),
            ("tier".into(), "db".into())
        ]))
    );
    // A pending pod gets its missing claims created again.
    let pending = pod_named("web-5", "Pending");
    let plan = decide(&set, &update, &update, 0, &[pending], NOW);
    assert_eq!(steps(&plan), ["claims data-web-5"]);
}

fn pod_named(name: &str, phase: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        status: Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some(phase.into()),
            ..Default::default()
        }),
        ..Pod::default()
    }
}

#[test]
fn claim_owner_references_follow_the_retention_policy() {
    let pod = pod(2, "web-new", "ready");
    let owners =
        |when_deleted: &str, when_scaled: &str, in_range: bool, refs: &[OwnerReference]| {
            let set = set(json!({"spec": {"persistentVolumeClaimRetentionPolicy": {
            "whenDeleted": when_deleted, "whenScaled": when_scaled}}}));
            claim_owners(&set, &pod, in_range, refs)
                .iter()
                .map(|r| format!("{}/{}:{}", r.kind, r.name, r.controller == Some(true)))
                .collect::<Vec<_>>()
        };
    let cases: [(&str, &str, bool, Vec<&str>); 8] = [
        ("Retain", "Retain", true, vec![]),
        ("Retain", "Retain", false, vec![]),
        ("Delete", "Retain", true, vec!["StatefulSet/web:true"]),
        ("Delete", "Retain", false, vec!["StatefulSet/web:true"]),
        ("Retain", "Delete", true, vec![]),
        ("Retain", "Delete", false, vec!["Pod/web-2:true"]),
        ("Delete", "Delete", true, vec!["StatefulSet/web:true"]),
        ("Delete", "Delete", false, vec!["Pod/web-2:true"]),
    ];
    for (deleted, scaled, in_range, want) in cases {
        assert_eq!(
            owners(deleted, scaled, in_range, &[]),
            want,
            "whenDeleted {deleted}, whenScaled {scaled}, in range {in_range}"
        );
    }
    // Stale references to the set are replaced; others kept; a foreign controller wins.
    let stale = OwnerReference {
        api_version: "apps/v1".into(),
        kind: "StatefulSet".into(),
        name: "web".into(),
        uid: "old-set".into(),
        controller: None,
        block_owner_deletion: None,
    };
    let other = OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: "keep".into(),
        uid: "cm".into(),
        controller: None,
        block_owner_deletion: None,
    };
    assert_eq!(
        owners("Delete", "Retain", true, &[stale.clone(), other.clone()]),
        ["ConfigMap/keep:false", "StatefulSet/web:true"]
    );
    assert_eq!(
        owners("Retain", "Retain", true, &[stale, other.clone()]),
        ["ConfigMap/keep:false"]
    );
    let foreign = OwnerReference {
        controller: Some(true),
        ..other
    };
    assert_eq!(
        owners("Delete", "Delete", true, &[foreign]),
        ["ConfigMap/keep:true"]
    );
}
