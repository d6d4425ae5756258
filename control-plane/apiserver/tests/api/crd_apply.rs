//! Server-side apply of custom resources: the CRD's `x-kubernetes-list-type` and
//! `x-kubernetes-map-type` decide how two field managers' configurations merge.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Server, assert_status, server};

const CRDS: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
const GADGETS: &str = "/apis/example.com/v1/namespaces/default/gadgets";
const APPLY: &str = "application/apply-patch+yaml";

fn gadget_crd() -> Value {
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "gadgets", "kind": "Gadget"},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {
                        "type": "object",
                        "properties": {
                            "items": {
                                "type": "array",
                                "x-kubernetes-list-type": "map",
                                "x-kubernetes-list-map-keys": ["name"],
                                "items": {
                                    "type": "object",
                                    "required": ["name"],
                                    "properties": {
                                        "name": {"type": "string"},
                                        "value": {"type": "integer"},
                                    },
                                },
                            },
                            "selector": {
                                "type": "object",
                                "x-kubernetes-map-type": "atomic",
                                "additionalProperties": {"type": "string"},
                            },
                        },
                    }},
                }},
            }],
        },
    })
}

fn gadget(spec: Value) -> Value {
    json!({
        "apiVersion": "example.com/v1", "kind": "Gadget",
        "metadata": {"name": "g"},
        "spec": spec,
    })
}

async fn apply(s: &Server, manager: &str, spec: Value) -> (StatusCode, Value) {
    s.patch(
        &format!("{GADGETS}/g?fieldManager={manager}"),
        APPLY,
        gadget(spec),
    )
    .await
}

#[tokio::test]
async fn two_managers_own_their_own_items_of_a_keyed_list() {
    let s = server().await;
    s.ok(Method::POST, CRDS, Some(gadget_crd())).await;

    let (status, created) = apply(&s, "a", json!({"items": [{"name": "a", "value": 1}]})).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, merged) = apply(&s, "b", json!({"items": [{"name": "b", "value": 2}]})).await;
    assert_eq!(status, StatusCode::OK, "{merged}");
    assert_eq!(
        merged["spec"]["items"],
        json!([{"name": "a", "value": 1}, {"name": "b", "value": 2}])
    );
    let owned: Vec<(&str, &Value)> = merged["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["manager"].as_str().unwrap_or_default(),
                &e["fieldsV1"]["f:spec"],
            )
        })
        .collect();
    assert_eq!(
        owned,
        [
            (
                "a",
                &json!({"f:items": {"k:{\"name\":\"a\"}": {".": {}, "f:name": {}, "f:value": {}}}})
            ),
            (
                "b",
                &json!({"f:items": {"k:{\"name\":\"b\"}": {".": {}, "f:name": {}, "f:value": {}}}})
            ),
        ]
    );

    // b changing a's item conflicts on that item's field only.
    let (status, conflict) = apply(&s, "b", json!({"items": [{"name": "a", "value": 3}]})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{conflict}");
    assert_status(&conflict, 409, "Conflict");
    assert_eq!(
        conflict["message"],
        "Apply failed with 1 conflict: conflict with \"a\": .spec.items[name=\"a\"].value"
    );

    // a atomic map is one field: b's different selector conflicts with a's as a whole.
    let (status, _) = apply(
        &s,
        "a",
        json!({"items": [{"name": "a", "value": 1}], "selector": {"app": "x"}}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, conflict) = apply(
        &s,
        "b",
        json!({"items": [{"name": "b", "value": 2}], "selector": {"tier": "y"}}),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{conflict}");
    assert_eq!(
        conflict["message"],
        "Apply failed with 1 conflict: conflict with \"a\": .spec.selector"
    );
}
