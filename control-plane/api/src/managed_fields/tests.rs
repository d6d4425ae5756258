use serde_json::{Value, json};

use super::entries::unix_seconds;
use super::*;

const T0: &str = "2024-05-01T10:00:00Z";
const T1: &str = "2024-05-01T11:00:00Z";
const T2: &str = "2024-05-01T12:00:00Z";

fn update<'a>(manager: &'a str, api_version: &'a str, time: &'a str) -> Update<'a> {
    Update {
        manager,
        api_version,
        time,
        subresource: None,
        has_status: false,
        // Replaced by the object's own in `record_update` below.
        schema: SchemaRef::deduced(),
    }
}

/// [`super::record_update`] with the schema of `new`'s kind.
fn record_update(old: Option<&Value>, new: &mut Value, update: &Update<'_>) {
    let kind = new["kind"].as_str().unwrap_or_default().to_owned();
    let schema = SchemaRef::of(update.api_version, &kind);
    super::record_update(old, new, &Update { schema, ..*update });
}

fn entries(object: &Value) -> &Value {
    object
        .pointer("/metadata/managedFields")
        .unwrap_or_else(|| panic!("no managedFields in {object}"))
}

fn entry(manager: &str, api_version: &str, time: &str, fields: Value) -> Value {
    json!({
        "manager": manager, "operation": "Update", "apiVersion": api_version, "time": time,
        "fieldsType": "FieldsV1", "fieldsV1": fields,
    })
}

/// A Deployment as `kubectl create deployment web --image=nginx --port=80` leaves it after
/// defaulting.
fn deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {
            "name": "web", "namespace": "default", "uid": "u-1", "resourceVersion": "7",
            "generation": 1, "creationTimestamp": T0, "labels": {"app": "web"},
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
                "spec": {
                    "containers": [{
                        "name": "nginx", "image": "nginx",
                        "ports": [{"containerPort": 80, "protocol": "TCP"}],
                        "terminationMessagePath": "/dev/termination-log",
                        "terminationMessagePolicy": "File", "imagePullPolicy": "Always",
                    }],
                    "restartPolicy": "Always", "terminationGracePeriodSeconds": 30,
                    "dnsPolicy": "ClusterFirst", "securityContext": {},
                    "schedulerName": "default-scheduler",
                },
            },
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
            },
            "revisionHistoryLimit": 10, "progressDeadlineSeconds": 600,
        },
        "status": {},
    })
}

fn deployment_fields() -> Value {
    json!({
        "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
        "f:spec": {
            "f:progressDeadlineSeconds": {}, "f:replicas": {}, "f:revisionHistoryLimit": {},
            "f:selector": {},
            "f:strategy": {
                "f:rollingUpdate": {".": {}, "f:maxSurge": {}, "f:maxUnavailable": {}},
                "f:type": {},
            },
            "f:template": {
                "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                "f:spec": {
                    "f:containers": {
                        "k:{\"name\":\"nginx\"}": {
                            ".": {}, "f:image": {}, "f:imagePullPolicy": {}, "f:name": {},
                            "f:ports": {
                                ".": {},
                                "k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {
                                    ".": {}, "f:containerPort": {}, "f:protocol": {},
                                },
                            },
                            "f:resources": {}, "f:terminationMessagePath": {},
                            "f:terminationMessagePolicy": {},
                        },
                    },
                    "f:dnsPolicy": {}, "f:restartPolicy": {}, "f:schedulerName": {},
                    "f:securityContext": {}, "f:terminationGracePeriodSeconds": {},
                },
            },
        },
    })
}

fn created_deployment() -> Value {
    let mut object = deployment();
    let create = Update {
        has_status: true,
        ..update("kubectl-create", "apps/v1", T0)
    };
    record_update(None, &mut object, &create);
    object
}

#[test]
fn create_of_a_deployment_owns_every_field_set_with_kubes_exact_fields_v1() {
    let object = created_deployment();
    assert_eq!(
        entries(&object),
        &json!([entry("kubectl-create", "apps/v1", T0, deployment_fields())])
    );
    assert_eq!(fields_v1(&deployment()), deployment_fields());
}

fn config_map(data: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cm", "namespace": "default", "uid": "u-2", "labels": {"team": "a"}},
        "data": data,
    })
}

fn created_config_map() -> Value {
    let mut object = config_map(json!({"a": "1", "b": "2"}));
    record_update(None, &mut object, &update("creator", "v1", T0));
    object
}

#[test]
fn an_update_by_another_manager_moves_the_changed_field_to_it() {
    let old = created_config_map();
    let mut new = old.clone();
    new["data"]["a"] = json!("changed");
    new["data"]["c"] = json!("3");
    record_update(Some(&old), &mut new, &update("kubectl-edit", "v1", T1));
    assert_eq!(
        entries(&new),
        &json!([
            entry(
                "creator",
                "v1",
                T0,
                json!({
                    "f:data": {".": {}, "f:b": {}},
                    "f:metadata": {"f:labels": {".": {}, "f:team": {}}},
                })
            ),
            entry(
                "kubectl-edit",
                "v1",
                T1,
                json!({"f:data": {"f:a": {}, "f:c": {}}})
            ),
        ])
    );
}

#[test]
fn removed_fields_leave_their_owner_and_give_the_remover_nothing() {
    let old = created_config_map();
    let mut new = old.clone();
    new["data"].as_object_mut().map(|data| data.remove("b"));
    new["metadata"]
        .as_object_mut()
        .map(|meta| meta.remove("labels"));
    record_update(Some(&old), &mut new, &update("kubectl-edit", "v1", T1));
    assert_eq!(
        entries(&new),
        &json!([entry(
            "creator",
            "v1",
            T0,
            json!({"f:data": {".": {}, "f:a": {}}})
        )])
    );
}

#[test]
fn the_writers_own_entry_is_merged_and_gets_the_new_time() {
    let old = created_config_map();
    let mut new = old.clone();
    new["data"]["z"] = json!("26");
    record_update(Some(&old), &mut new, &update("creator", "v1", T1));
    assert_eq!(
        entries(&new),
        &json!([entry(
            "creator",
            "v1",
            T1,
            json!({
                "f:data": {".": {}, "f:a": {}, "f:b": {}, "f:z": {}},
                "f:metadata": {"f:labels": {".": {}, "f:team": {}}},
            })
        )])
    );
}

#[test]
fn a_no_op_update_leaves_managed_fields_as_they_were() {
    let old = created_deployment();
    let mut new = old.clone();
    new["metadata"]["managedFields"] = Value::Null;
    let edit = Update {
        has_status: true,
        ..update("kubectl-edit", "apps/v1", T2)
    };
    record_update(Some(&old), &mut new, &edit);
    assert_eq!(new, old);
}

fn pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default", "uid": "u-3"},
        "spec": {
            "containers": [
                {"name": "web", "image": "nginx:1", "env": [{"name": "A", "value": "1"}]},
                {"name": "log", "image": "busybox"},
            ],
        },
    })
}

fn created_pod() -> Value {
    let mut object = pod();
    let create = Update {
        has_status: true,
        ..update("creator", "v1", T0)
    };
    record_update(None, &mut object, &create);
    object
}

#[test]
fn keyed_list_items_are_owned_item_by_item() {
    let old = created_pod();
    assert_eq!(
        entries(&old)[0]["fieldsV1"],
        json!({"f:spec": {"f:containers": {
            "k:{\"name\":\"log\"}": {".": {}, "f:image": {}, "f:name": {}, "f:resources": {}},
            "k:{\"name\":\"web\"}": {
                ".": {}, "f:image": {}, "f:name": {}, "f:resources": {},
                "f:env": {".": {}, "k:{\"name\":\"A\"}": {".": {}, "f:name": {}, "f:value": {}}},
            },
        }}})
    );
    let mut new = old.clone();
    new["spec"]["containers"][0]["image"] = json!("nginx:2");
    new["spec"]["containers"][1] = json!({"name": "sidecar", "image": "envoy"});
    let edit = Update {
        has_status: true,
        ..update("editor", "v1", T1)
    };
    record_update(Some(&old), &mut new, &edit);
    assert_eq!(
        entries(&new),
        &json!([
            entry(
                "creator",
                "v1",
                T0,
                json!({"f:spec": {"f:containers": {
                    "k:{\"name\":\"web\"}": {
                        ".": {}, "f:name": {}, "f:resources": {},
                        "f:env": {
                            ".": {},
                            "k:{\"name\":\"A\"}": {".": {}, "f:name": {}, "f:value": {}},
                        },
                    },
                }}})
            ),
            entry(
                "editor",
                "v1",
                T1,
                json!({"f:spec": {"f:containers": {
                    "k:{\"name\":\"sidecar\"}": {
                        ".": {}, "f:image": {}, "f:name": {}, "f:resources": {},
                    },
                    "k:{\"name\":\"web\"}": {"f:image": {}},
                }}})
            ),
        ])
    );
}

#[test]
fn set_lists_are_owned_value_by_value() {
    let mut old = config_map(json!({}));
    old["metadata"]["finalizers"] = json!(["a"]);
    record_update(None, &mut old, &update("creator", "v1", T0));
    assert_eq!(
        entries(&old)[0]["fieldsV1"],
        json!({"f:metadata": {
            "f:finalizers": {".": {}, "v:\"a\"": {}},
            "f:labels": {".": {}, "f:team": {}},
        }})
    );
    let mut new = old.clone();
    new["metadata"]["finalizers"] = json!(["a", "b"]);
    record_update(Some(&old), &mut new, &update("controller", "v1", T1));
    assert_eq!(
        entries(&new)[1],
        entry(
            "controller",
            "v1",
            T1,
            json!({"f:metadata": {"f:finalizers": {"v:\"b\"": {}}}})
        )
    );
}

#[test]
fn a_status_update_owns_only_status_and_a_main_update_owns_no_status() {
    let old = created_deployment();
    let mut new = old.clone();
    new["status"] = json!({"replicas": 1, "conditions": [{"type": "Available", "status": "True"}]});
    new["spec"]["replicas"] = json!(5);
    new["metadata"]["labels"]["extra"] = json!("x");
    let status = Update {
        subresource: Some("status"),
        has_status: true,
        ..update("kube-controller-manager", "apps/v1", T1)
    };
    record_update(Some(&old), &mut new, &status);
    let list = entries(&new).as_array().expect("a list");
    assert_eq!(list.len(), 2);
    assert_eq!(list[0], entries(&old)[0]);
    assert_eq!(
        list[1],
        json!({
            "manager": "kube-controller-manager", "operation": "Update", "apiVersion": "apps/v1",
            "time": T1, "fieldsType": "FieldsV1", "subresource": "status",
            "fieldsV1": {"f:status": {
                "f:conditions": {".": {}, "k:{\"type\":\"Available\"}": {
                    ".": {}, "f:status": {}, "f:type": {},
                }},
                "f:replicas": {},
            }},
        })
    );

    let mut main = old.clone();
    main["status"] = json!({"replicas": 9});
    let edit = Update {
        has_status: true,
        ..update("kubectl-edit", "apps/v1", T1)
    };
    record_update(Some(&old), &mut main, &edit);
    assert_eq!(entries(&main), entries(&old));
}

#[test]
fn a_pod_status_update_does_not_own_owner_references() {
    let old = created_pod();
    let mut new = old.clone();
    new["metadata"]["ownerReferences"] =
        json!([{"uid": "o", "kind": "ReplicaSet", "name": "r", "apiVersion": "apps/v1"}]);
    new["metadata"]["annotations"] = json!({"note": "x"});
    new["status"] = json!({"phase": "Running"});
    let status = Update {
        subresource: Some("status"),
        has_status: true,
        ..update("kubelet", "v1", T1)
    };
    record_update(Some(&old), &mut new, &status);
    assert_eq!(
        entries(&new)[1]["fieldsV1"],
        json!({
            "f:metadata": {"f:annotations": {".": {}, "f:note": {}}},
            "f:status": {"f:phase": {}},
        })
    );
}

#[test]
fn a_scale_update_owns_spec_replicas_without_a_time_as_kube_writes_it() {
    let old = created_deployment();
    let mut new = old.clone();
    new["spec"]["replicas"] = json!(3);
    let scale = Update {
        subresource: Some("scale"),
        has_status: true,
        ..update("kubectl", "apps/v1", T1)
    };
    record_update(Some(&old), &mut new, &scale);
    assert_eq!(
        entries(&new)[0],
        json!({
            "manager": "kubectl", "operation": "Update", "apiVersion": "apps/v1",
            "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}},
            "subresource": "scale",
        })
    );
    assert!(
        entries(&new)[1]["fieldsV1"]["f:spec"]
            .get("f:replicas")
            .is_none()
    );
}

#[test]
fn managed_fields_sent_by_the_client_are_kept_reset_or_ignored() {
    let old = created_config_map();
    let sent = json!([{
        "manager": "someone", "operation": "Update", "apiVersion": "v1", "time": T0,
        "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:a": {}}},
    }]);

    // A valid non-empty list replaces the live entries.
    let mut new = old.clone();
    new["metadata"]["managedFields"] = sent.clone();
    record_update(Some(&old), &mut new, &update("kubectl-edit", "v1", T1));
    assert_eq!(entries(&new), &sent);

    // An invalid list (no fieldsType) falls back to the live entries.
    let mut new = old.clone();
    new["metadata"]["managedFields"] =
        json!([{"manager": "x", "operation": "Update", "apiVersion": "v1"}]);
    record_update(Some(&old), &mut new, &update("kubectl-edit", "v1", T1));
    assert_eq!(entries(&new), entries(&old));

    // `[]` and `[{}]` clear the history; an update of an object without entries starts none.
    for reset in [
        json!([]),
        json!([{}]),
        json!([{"manager": "", "unknownMember": 1}]),
    ] {
        let mut new = old.clone();
        new["metadata"]["managedFields"] = reset;
        new["data"]["a"] = json!("changed");
        record_update(Some(&old), &mut new, &update("kubectl-edit", "v1", T1));
        assert_eq!(new.pointer("/metadata/managedFields"), None);
        let mut next = new.clone();
        next["data"]["b"] = json!("changed");
        record_update(Some(&new), &mut next, &update("kubectl-edit", "v1", T2));
        assert_eq!(next.pointer("/metadata/managedFields"), None);
    }

    // A create with `[]` is tracked all the same.
    let mut created = config_map(json!({"a": "1"}));
    created["metadata"]["managedFields"] = json!([]);
    record_update(None, &mut created, &update("creator", "v1", T0));
    assert_eq!(entries(&created)[0]["manager"], "creator");

    // Subresource writes ignore what the client sent.
    let mut new = old.clone();
    new["metadata"]["managedFields"] = sent;
    let status = Update {
        subresource: Some("status"),
        ..update("x", "v1", T1)
    };
    record_update(Some(&old), &mut new, &status);
    assert_eq!(entries(&new), entries(&old));
}

#[test]
fn entries_are_sorted_apply_first_then_by_time_and_manager() {
    let old = created_config_map();
    let mut new = old.clone();
    new["metadata"]["managedFields"] = json!([
        entry("zeta", "v1", T0, json!({"f:data": {"f:a": {}}})),
        entry("alpha", "v1", T0, json!({"f:data": {"f:b": {}}})),
        {"manager": "applier", "operation": "Apply", "apiVersion": "v1", "time": T2,
         "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {"f:team": {}}}}},
    ]);
    new["data"]["c"] = json!("3");
    record_update(Some(&old), &mut new, &update("", "v1", T1));
    let managers: Vec<&str> = entries(&new)
        .as_array()
        .expect("a list")
        .iter()
        .map(|e| e["manager"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(managers, ["applier", "alpha", "zeta", "unknown"]);
}

#[test]
fn more_than_ten_update_managers_fold_the_oldest_into_ancient_changes() {
    let mut object = config_map(json!({}));
    record_update(
        None,
        &mut object,
        &update("m00", "v1", "2024-05-01T10:00:00Z"),
    );
    for i in 1..=11 {
        let old = object.clone();
        object["data"][format!("k{i:02}")] = json!("v");
        let time = format!("2024-05-01T10:00:{i:02}Z");
        record_update(
            Some(&old),
            &mut object,
            &update(&format!("m{i:02}"), "v1", &time),
        );
    }
    let list = entries(&object).as_array().expect("a list");
    assert_eq!(list.len(), 10);
    assert_eq!(
        list[0],
        entry(
            "ancient-changes",
            "v1",
            "2024-05-01T10:00:02Z",
            json!({
                "f:data": {".": {}, "f:k01": {}, "f:k02": {}},
                "f:metadata": {"f:labels": {".": {}, "f:team": {}}},
            })
        )
    );
    assert_eq!(list[1]["manager"], "m03");
    assert_eq!(list[9]["manager"], "m11");
}

#[test]
fn empty_maps_and_lists_go_does_not_write_are_not_owned() {
    let mut object = config_map(json!({}));
    object["metadata"]["annotations"] = json!({});
    object["metadata"]["finalizers"] = json!([]);
    record_update(None, &mut object, &update("creator", "v1", T0));
    assert_eq!(
        entries(&object)[0]["fieldsV1"],
        json!({"f:metadata": {"f:labels": {".": {}, "f:team": {}}}})
    );
    // An empty pointer struct is written by Go, so it is owned.
    let mut pod = pod();
    pod["spec"]["securityContext"] = json!({});
    assert_eq!(fields_v1(&pod)["f:spec"]["f:securityContext"], json!({}));
}

#[test]
fn an_object_without_metadata_is_left_alone() {
    let mut object = json!({"kind": "ConfigMap"});
    record_update(None, &mut object, &update("x", "v1", T0));
    assert_eq!(object, json!({"kind": "ConfigMap"}));
}

#[test]
fn custom_kinds_are_deduced_lists_atomic_objects_granular() {
    let object = json!({
        "apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "w", "ownerReferences": [{"uid": "o-1", "name": "owner"}]},
        "spec": {"size": 3, "ports": [{"name": "a"}], "nested": {"x": true}, "empty": []},
    });
    assert_eq!(
        fields_v1(&object),
        json!({
            "f:metadata": {"f:ownerReferences": {".": {}, "k:{\"uid\":\"o-1\"}": {}}},
            "f:spec": {
                ".": {}, "f:empty": {}, "f:nested": {".": {}, "f:x": {}}, "f:ports": {},
                "f:size": {},
            },
        })
    );
}

#[test]
fn manager_names_come_from_the_user_agent_prefix() {
    let cases = [
        ("kubectl/v1.33.0 (linux/amd64) kubernetes/abcdef", "kubectl"),
        (
            "kube-controller-manager/v1.33.0 (linux/amd64)",
            "kube-controller-manager",
        ),
        ("Go-http-client/1.1", "Go-http-client"),
        ("python requests", "python requests"),
        ("", ""),
        ("tab\there\u{200b}/x", "tabhere"),
    ];
    for (agent, manager) in cases {
        assert_eq!(manager_from_user_agent(agent), manager, "{agent:?}");
    }
    assert_eq!(manager_from_user_agent(&"a".repeat(200)), "a".repeat(128));
    // A character that would cross the limit is left out, not cut.
    let agent = format!("{}é", "a".repeat(127));
    assert_eq!(manager_from_user_agent(&agent), "a".repeat(127));
}

#[test]
fn rfc3339_times_become_unix_seconds() {
    assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), Some(0));
    assert_eq!(unix_seconds("2024-05-01T10:00:00Z"), Some(1_714_557_600));
    assert_eq!(
        unix_seconds("2024-05-01T12:00:00.25+02:00"),
        Some(1_714_557_600)
    );
    assert_eq!(unix_seconds("2024-05-01"), None);
    assert_eq!(unix_seconds("2024-05-01T10:00:00"), None);
}
