//! Server-side apply: what a user sees in the object, its `managedFields` and the errors.

use serde_json::{Value, json};

use super::typed::path_string;
use super::{Apply, ApplyError, Conflict, SchemaRef, apply};

const T0: &str = "2026-01-01T00:00:00Z";
const T1: &str = "2026-01-01T00:05:00Z";

fn deployment_apply<'a>(manager: &'a str, time: &'a str, force: bool) -> Apply<'a> {
    Apply {
        manager,
        api_version: "apps/v1",
        kind: "Deployment",
        time,
        subresource: None,
        has_status: true,
        force,
        schema: SchemaRef::of("apps/v1", "Deployment"),
    }
}

fn web(replicas: Option<i64>, image: &str) -> Value {
    let mut config = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": image}]},
            },
        },
    });
    if let Some(replicas) = replicas {
        config["spec"]["replicas"] = json!(replicas);
    }
    config
}

fn entries(object: &Value) -> Vec<(String, String, Value)> {
    object["metadata"]["managedFields"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|e| {
                    (
                        e["manager"].as_str().unwrap_or_default().to_owned(),
                        e["operation"].as_str().unwrap_or_default().to_owned(),
                        e["fieldsV1"].clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn fields_of<'a>(object: &'a Value, manager: &str) -> Option<&'a Value> {
    object["metadata"]["managedFields"]
        .as_array()?
        .iter()
        .find(|e| e["manager"] == manager)
        .map(|e| &e["fieldsV1"])
}

fn created_by_a() -> Value {
    apply(
        None,
        &web(Some(2), "nginx"),
        &deployment_apply("a", T0, false),
    )
    .expect("created")
}

#[test]
fn an_apply_on_a_missing_object_owns_what_it_sent_as_kube_apiserver_writes_it() {
    let object = created_by_a();
    assert_eq!(object["spec"]["replicas"], 2);
    assert_eq!(
        object["metadata"]["managedFields"],
        json!([{
            "manager": "a",
            "operation": "Apply",
            "apiVersion": "apps/v1",
            "time": T0,
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {
                        "f:metadata": {"f:labels": {"f:app": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {
                            ".": {}, "f:image": {}, "f:name": {},
                        }}},
                    },
                },
            },
        }])
    );
}

#[test]
fn a_changed_field_owned_by_another_manager_is_a_conflict_naming_both() {
    let live = created_by_a();
    let cases: [(&str, Value, Vec<Conflict>, &str); 3] = [
        (
            "replicas",
            web(Some(3), "nginx"),
            vec![Conflict {
                manager: "\"a\"".into(),
                field: ".spec.replicas".into(),
            }],
            "Apply failed with 1 conflict: conflict with \"a\": .spec.replicas",
        ),
        (
            "replicas and image",
            web(Some(3), "nginx:2"),
            vec![
                Conflict {
                    manager: "\"a\"".into(),
                    field: ".spec.replicas".into(),
                },
                Conflict {
                    manager: "\"a\"".into(),
                    field: ".spec.template.spec.containers[name=\"web\"].image".into(),
                },
            ],
            "Apply failed with 2 conflicts: conflicts with \"a\":\n- .spec.replicas\n- \
             .spec.template.spec.containers[name=\"web\"].image",
        ),
        ("same values", web(Some(2), "nginx"), vec![], ""),
    ];
    for (name, config, conflicts, message) in cases {
        let result = apply(Some(&live), &config, &deployment_apply("b", T1, false));
        if conflicts.is_empty() {
            let object = result.expect(name);
            assert_eq!(
                fields_of(&object, "b").and_then(|f| f.pointer("/f:spec/f:replicas")),
                Some(&json!({})),
                "{name}: shared ownership"
            );
            assert_eq!(
                fields_of(&object, "a").and_then(|f| f.pointer("/f:spec/f:replicas")),
                Some(&json!({})),
                "{name}: shared ownership"
            );
            continue;
        }
        let error = result.expect_err(name);
        assert_eq!(error, ApplyError::Conflicts(conflicts), "{name}");
        assert_eq!(error.to_string(), message, "{name}");
    }
}

#[test]
fn conflicts_with_updaters_name_their_api_version_and_subresource() {
    let mut live = created_by_a();
    live["metadata"]["managedFields"] = json!([
        {"manager": "kubectl-edit", "operation": "Update", "apiVersion": "apps/v1", "time": T0,
         "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
        {"manager": "hpa", "operation": "Update", "apiVersion": "apps/v1", "time": T0,
         "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}},
         "subresource": "scale"},
    ]);
    let error = apply(
        Some(&live),
        &web(Some(5), "nginx"),
        &deployment_apply("b", T1, false),
    )
    .expect_err("conflict");
    assert_eq!(
        error.to_string(),
        "Apply failed with 2 conflicts: conflicts with \"hpa\" with subresource \"scale\" using \
         apps/v1:\n- .spec.replicas\nconflicts with \"kubectl-edit\" using apps/v1:\n- \
         .spec.replicas"
    );
}

#[test]
fn force_takes_the_fields_from_the_other_managers() {
    let live = created_by_a();
    let object = apply(
        Some(&live),
        &web(Some(3), "nginx"),
        &deployment_apply("b", T1, true),
    )
    .expect("forced");
    assert_eq!(object["spec"]["replicas"], 3);
    assert_eq!(
        fields_of(&object, "a").and_then(|f| f.pointer("/f:spec/f:replicas")),
        None
    );
    assert_eq!(
        fields_of(&object, "b").and_then(|f| f.pointer("/f:spec/f:replicas")),
        Some(&json!({}))
    );
    let times: Vec<&Value> = object["metadata"]["managedFields"]
        .as_array()
        .map(|l| l.iter().map(|e| &e["time"]).collect())
        .unwrap_or_default();
    assert_eq!(
        times,
        [&json!(T0), &json!(T1)],
        "a keeps its time, b gets now"
    );
}

#[test]
fn a_field_no_longer_applied_goes_unless_another_manager_owns_it() {
    let live = created_by_a();
    // Nobody else owns replicas: it is removed from the object.
    let alone = apply(
        Some(&live),
        &web(None, "nginx"),
        &deployment_apply("a", T1, false),
    )
    .expect("applied");
    assert_eq!(alone["spec"].get("replicas"), None, "{alone}");
    assert_eq!(
        fields_of(&alone, "a").and_then(|f| f.pointer("/f:spec/f:replicas")),
        None
    );
    // b applied the same value too: the field stays, b alone owns it.
    let shared = apply(
        Some(&live),
        &web(Some(2), "nginx"),
        &deployment_apply("b", T1, false),
    )
    .expect("shared");
    let kept = apply(
        Some(&shared),
        &web(None, "nginx"),
        &deployment_apply("a", T1, false),
    )
    .expect("applied");
    assert_eq!(kept["spec"]["replicas"], 2);
    assert_eq!(
        fields_of(&kept, "a").and_then(|f| f.pointer("/f:spec/f:replicas")),
        None
    );
    assert_eq!(
        fields_of(&kept, "b").and_then(|f| f.pointer("/f:spec/f:replicas")),
        Some(&json!({}))
    );
    // A label no longer applied goes, and the emptied map with it.
    let mut unlabelled = web(Some(2), "nginx");
    unlabelled["metadata"]
        .as_object_mut()
        .map(|m| m.remove("labels"));
    let object =
        apply(Some(&live), &unlabelled, &deployment_apply("a", T1, false)).expect("applied");
    assert_eq!(object["metadata"].get("labels"), None, "{object}");
    assert_eq!(object["metadata"]["name"], "web");
}

#[test]
fn keyed_lists_merge_by_key_and_keep_the_live_order() {
    let mut config = web(Some(2), "nginx");
    config["spec"]["template"]["spec"]["containers"] = json!([
        {"name": "a", "image": "a:1"},
        {"name": "b", "image": "b:1", "ports": [{"containerPort": 80}]},
    ]);
    let live = apply(None, &config, &deployment_apply("a", T0, false)).expect("created");
    let sidecar = json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"template": {"spec": {"containers": [
            {"name": "c", "image": "c:1"},
            {"name": "b", "env": [{"name": "X", "value": "1"}]},
        ]}}},
    });
    let object =
        apply(Some(&live), &sidecar, &deployment_apply("side", T1, false)).expect("merged");
    let containers = &object["spec"]["template"]["spec"]["containers"];
    let names: Vec<&str> = containers
        .as_array()
        .map(|l| l.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["a", "c", "b"]);
    assert_eq!(containers[2]["image"], "b:1", "merged, not replaced");
    assert_eq!(containers[2]["env"][0]["value"], "1");
    assert_eq!(
        fields_of(&object, "side"),
        Some(
            &json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"b\"}": {".": {}, "f:env": {"k:{\"name\":\"X\"}": {
                    ".": {}, "f:name": {}, "f:value": {}}}, "f:name": {}},
                "k:{\"name\":\"c\"}": {".": {}, "f:image": {}, "f:name": {}},
            }}}}})
        )
    );
    // The port's protocol is a key with a default: the item is keyed with it.
    assert!(
        fields_of(&object, "a")
            .and_then(
                |f| f.pointer("/f:spec/f:template/f:spec/f:containers/k:{\"name\":\"b\"}/f:ports")
            )
            .and_then(|p| p.get("k:{\"containerPort\":80,\"protocol\":\"TCP\"}"))
            .is_some(),
        "{object}"
    );
}

#[test]
fn an_apply_that_changes_nothing_changes_nothing() {
    let live = created_by_a();
    let again = apply(
        Some(&live),
        &web(Some(2), "nginx"),
        &deployment_apply("a", T1, false),
    )
    .expect("applied");
    assert_eq!(again, live);
}

#[test]
fn fields_only_the_endpoint_resets_are_not_owned() {
    let mut config = web(Some(2), "nginx");
    config["status"] = json!({"replicas": 9});
    let object = apply(None, &config, &deployment_apply("a", T0, false)).expect("created");
    assert_eq!(
        fields_of(&object, "a").and_then(|f| f.get("f:status")),
        None
    );
    let status = Apply {
        subresource: Some("status"),
        ..deployment_apply("ctl", T1, false)
    };
    let object = apply(Some(&object), &config, &status).expect("status applied");
    assert_eq!(
        fields_of(&object, "ctl"),
        Some(&json!({"f:status": {"f:replicas": {}}}))
    );
    let subresources: Vec<&Value> = object["metadata"]["managedFields"]
        .as_array()
        .map(|l| l.iter().map(|e| &e["subresource"]).collect())
        .unwrap_or_default();
    assert!(subresources.contains(&&json!("status")), "{object}");
    // Only identity fields: no entry at all.
    let bare = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}});
    let object = apply(None, &bare, &deployment_apply("a", T0, false)).expect("created");
    assert_eq!(entries(&object), []);
}

#[test]
fn configurations_kube_apiserver_refuses() {
    let mut with_history = web(Some(1), "nginx");
    with_history["metadata"]["managedFields"] = json!([]);
    let mut unnamed = web(Some(1), "nginx");
    unnamed["spec"]["template"]["spec"]["containers"] = json!([{"image": "x"}]);
    let mut twice = web(Some(1), "nginx");
    twice["spec"]["template"]["spec"]["containers"] =
        json!([{"name": "x", "image": "1"}, {"name": "x", "image": "2"}]);
    let cases = [
        (
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet"}),
            "invalid object type: apps/v1, Kind=ReplicaSet",
        ),
        (
            json!({"apiVersion": "v1", "kind": "Deployment"}),
            "invalid object type: /v1, Kind=Deployment",
        ),
        (json!({"metadata": {}}), "invalid object type: /, Kind="),
        (with_history, "metadata.managedFields must be nil"),
        (
            unnamed,
            ".spec.template.spec.containers: associative list with keys has an element that \
             omits key field \"name\" (and doesn't have default value)",
        ),
        (
            twice,
            ".spec.template.spec.containers: duplicate entries for key [name=\"x\"]",
        ),
    ];
    for (config, message) in cases {
        let error = apply(None, &config, &deployment_apply("a", T0, false)).expect_err(message);
        assert_eq!(error.to_string(), message);
    }
    // `managedFields: null` is no history at all.
    let mut null_history = web(Some(1), "nginx");
    null_history["metadata"]["managedFields"] = Value::Null;
    assert!(apply(None, &null_history, &deployment_apply("a", T0, false)).is_ok());
}

#[test]
fn paths_print_as_structured_merge_diff_prints_them() {
    let cases = [
        (vec!["f:spec", "f:replicas"], ".spec.replicas"),
        (
            vec![
                "f:spec",
                "f:ports",
                "k:{\"port\":80,\"protocol\":\"TCP\"}",
                "f:name",
            ],
            ".spec.ports[port=80,protocol=\"TCP\"].name",
        ),
        (
            vec!["f:metadata", "f:finalizers", "v:\"x\""],
            ".metadata.finalizers[=\"x\"]",
        ),
        (vec!["f:items", "i:3"], ".items[3]"),
    ];
    for (path, text) in cases {
        let path: Vec<String> = path.into_iter().map(str::to_owned).collect();
        assert_eq!(path_string(&path), text);
    }
}

#[test]
fn set_lists_and_keys_with_defaults_merge_item_by_item() {
    let service = |ports: Value, finalizers: Value| {
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "finalizers": finalizers},
            "spec": {"ports": ports},
        })
    };
    let on = |manager| Apply {
        manager,
        api_version: "v1",
        kind: "Service",
        time: T0,
        subresource: None,
        has_status: true,
        force: false,
        schema: SchemaRef::of("v1", "Service"),
    };
    let live = apply(
        None,
        &service(json!([{"port": 80, "name": "http"}]), json!(["a/x"])),
        &on("one"),
    )
    .expect("created");
    assert_eq!(
        fields_of(&live, "one"),
        Some(&json!({
            "f:metadata": {"f:finalizers": {"v:\"a/x\"": {}}},
            "f:spec": {"f:ports": {"k:{\"port\":80,\"protocol\":\"TCP\"}": {
                ".": {}, "f:name": {}, "f:port": {}}}},
        }))
    );
    // Another manager adds a UDP port 80 and a finalizer: both lists keep both items.
    let object = apply(
        Some(&live),
        &service(json!([{"port": 80, "protocol": "UDP"}]), json!(["b/y"])),
        &on("two"),
    )
    .expect("merged");
    assert_eq!(
        object["spec"]["ports"],
        json!([{"port": 80, "name": "http"}, {"port": 80, "protocol": "UDP"}])
    );
    assert_eq!(object["metadata"]["finalizers"], json!(["a/x", "b/y"]));
    // The first manager drops its finalizer: only its own goes.
    let object = apply(
        Some(&object),
        &service(json!([{"port": 80, "name": "http"}]), json!([])),
        &on("one"),
    )
    .expect("applied");
    assert_eq!(object["metadata"]["finalizers"], json!(["b/y"]));
}

#[test]
fn custom_kinds_are_merged_as_deduced_objects() {
    let on = Apply {
        manager: "op",
        api_version: "example.com/v1",
        kind: "Widget",
        time: T0,
        subresource: None,
        has_status: false,
        force: false,
        schema: SchemaRef::deduced(),
    };
    let live = apply(
        None,
        &json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
                "spec": {"size": 1, "tags": ["a"]}}),
        &on,
    )
    .expect("created");
    let error = apply(
        Some(&live),
        &json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
                "spec": {"tags": ["b"]}}),
        &Apply {
            manager: "user",
            ..on
        },
    )
    .expect_err("lists of custom kinds are atomic");
    assert_eq!(
        error.to_string(),
        "Apply failed with 1 conflict: conflict with \"op\": .spec.tags"
    );
}

#[test]
fn kubectl_takes_over_what_client_side_apply_set_and_keeps_its_annotation() {
    const ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";
    let mut last = web(Some(2), "nginx");
    last["metadata"]
        .as_object_mut()
        .map(|m| m.remove("namespace"));
    let mut live = web(Some(2), "nginx");
    live["metadata"]["annotations"] = json!({ANNOTATION: format!("{last}\n")});
    live["metadata"]["managedFields"] = json!([{
        "manager": "kubectl-client-side-apply", "operation": "Update", "apiVersion": "apps/v1",
        "time": T0, "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
            "k:{\"name\":\"web\"}": {"f:image": {}}}}}}},
    }]);
    let config = web(Some(3), "nginx");
    // Another manager conflicts as usual.
    let error =
        apply(Some(&live), &config, &deployment_apply("b", T1, false)).expect_err("conflict");
    assert_eq!(
        error.to_string(),
        "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using \
         apps/v1: .spec.replicas"
    );
    // kubectl takes the fields client-side apply set, and rewrites the annotation.
    let object = apply(
        Some(&live),
        &config,
        &deployment_apply("kubectl", T1, false),
    )
    .expect("upgraded");
    assert_eq!(object["spec"]["replicas"], 3);
    assert_eq!(
        object["metadata"]["annotations"][ANNOTATION],
        format!("{config}\n"),
        "the configuration, keys sorted, with Go's newline"
    );
    assert!(
        fields_of(&object, "kubectl-client-side-apply")
            .and_then(|f| f.pointer("/f:spec/f:replicas"))
            .is_none(),
        "{object}"
    );
    // A value someone else changed since the last client-side apply still conflicts.
    live["spec"]["replicas"] = json!(5);
    let error = apply(
        Some(&live),
        &config,
        &deployment_apply("kubectl", T1, false),
    )
    .expect_err("conflict");
    assert_eq!(
        error,
        ApplyError::Conflicts(vec![Conflict {
            manager: "\"kubectl-client-side-apply\" using apps/v1".into(),
            field: ".spec.replicas".into(),
        }])
    );
}

#[test]
fn a_field_applied_as_null_is_owned_and_unset() {
    let live = created_by_a();
    let mut config = web(Some(2), "nginx");
    config["spec"]["replicas"] = Value::Null;
    let object = apply(Some(&live), &config, &deployment_apply("a", T1, false)).expect("applied");
    assert_eq!(object["spec"].get("replicas"), None, "{object}");
    assert_eq!(
        fields_of(&object, "a").and_then(|f| f.pointer("/f:spec/f:replicas")),
        Some(&json!({}))
    );
    // The same on create, where the configuration is taken whole.
    let object = apply(None, &config, &deployment_apply("a", T0, false)).expect("created");
    assert_eq!(object["spec"].get("replicas"), None, "{object}");
}
