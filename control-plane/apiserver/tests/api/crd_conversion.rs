//! CRD conversion webhooks, called over HTTPS on loopback: a tiny converter in each test (a CA
//! and a serving certificate for 127.0.0.1 from rcgen) turns a Widget's `spec.size` (v1, the
//! storage version) into `spec.length` (v2) and back, and records the ConversionReviews it got.

use std::sync::{Arc, Mutex};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{Method, StatusCode},
    routing::post,
};
use serde_json::{Value, json};

use super::{Server, assert_status, https, server, watch_events};

const CRDS: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
const V1: &str = "/apis/example.com/v1/namespaces/default/widgets";
const V2: &str = "/apis/example.com/v2/namespaces/default/widgets";

type Seen = Arc<Mutex<Vec<Value>>>;

/// A converter on 127.0.0.1: `POST /<mode>`, mode `convert` or `rename` (which also renames
/// every object, as a broken webhook might); mode `admit` answers AdmissionReviews instead.
struct Converter {
    base: String,
    ca_bundle: String,
    seen: Seen,
    _server: https::HttpsServer,
}

/// Moves `spec.<from>` to `spec.<to>`.
fn rename_field(object: &mut Value, from: &str, to: &str) {
    if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut)
        && let Some(value) = spec.remove(from)
    {
        spec.insert(to.to_owned(), value);
    }
}

async fn answer(State(seen): State<Seen>, Path(mode): Path<String>, body: Bytes) -> String {
    let review: Value = serde_json::from_slice(&body).expect("a ConversionReview");
    let request = review["request"].clone();
    seen.lock().expect("lock").push(request.clone());
    if mode == "admit" {
        // An admission webhook on the same server: allows, having recorded the request.
        return json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                      "response": {"uid": request["uid"], "allowed": true}})
        .to_string();
    }
    let desired = request["desiredAPIVersion"].as_str().unwrap_or_default();
    let converted: Vec<Value> = request["objects"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|mut object| {
            if desired == "example.com/v2" {
                rename_field(&mut object, "size", "length");
            } else {
                rename_field(&mut object, "length", "size");
            }
            object["apiVersion"] = json!(desired);
            // A webhook may change labels; kube keeps them.
            object["metadata"]["labels"]["converted-to"] =
                json!(desired.trim_start_matches("example.com/"));
            // Anything else in metadata it changes is restored.
            object["metadata"]["generation"] = json!(99);
            if mode == "rename" {
                object["metadata"]["name"] = json!("renamed");
            }
            object
        })
        .collect();
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "ConversionReview",
        "response": {"uid": request["uid"], "result": {"status": "Success"}, "convertedObjects": converted},
    })
    .to_string()
}

async fn converter() -> Converter {
    let seen = Seen::default();
    let router = Router::new()
        .route("/{mode}", post(answer))
        .with_state(Arc::clone(&seen));
    let server = https::serve(router, &[]).await;
    Converter {
        base: server.base.clone(),
        ca_bundle: server.ca_bundle.clone(),
        seen,
        _server: server,
    }
}

/// Widgets in v1 (`spec.size`, stored) and v2 (`spec.length`), converted by the webhook at
/// `url`.
fn widget_crd(url: &str, ca_bundle: Option<&str>) -> Value {
    let version = |name: &str, field: &str, storage: bool| {
        json!({
            "name": name,
            "served": true,
            "storage": storage,
            "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"type": "object", "properties": {field: {"type": "integer"}}},
            }}},
            "selectableFields": [{"jsonPath": format!(".spec.{field}")}],
        })
    };
    let mut client_config = json!({"url": url});
    if let Some(ca) = ca_bundle {
        client_config["caBundle"] = json!(ca);
    }
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget"},
            "versions": [version("v1", "size", true), version("v2", "length", false)],
            "conversion": {"strategy": "Webhook", "webhook": {
                "conversionReviewVersions": ["v1"],
                "clientConfig": client_config,
            }},
        },
    })
}

fn widget(version: &str, name: &str, field: &str, value: i64) -> Value {
    json!({
        "apiVersion": format!("example.com/{version}"),
        "kind": "Widget",
        "metadata": {"name": name, "labels": {"tier": "front"}},
        "spec": {field: value},
    })
}

async fn with_converter(mode: &str) -> (Server, Converter) {
    let c = converter().await;
    let s = server().await;
    let url = format!("{}/{mode}", c.base);
    s.ok(
        Method::POST,
        CRDS,
        Some(widget_crd(&url, Some(&c.ca_bundle))),
    )
    .await;
    (s, c)
}

/// The stored object (what etcd would hold).
async fn stored(s: &Server, name: &str) -> Value {
    let listed = s
        .store
        .list("/registry/example.com/widgets/", Default::default())
        .await
        .expect("list");
    let kv = listed
        .items
        .iter()
        .find(|kv| kv.key.ends_with(&format!("/{name}")))
        .unwrap_or_else(|| panic!("{name} is stored"));
    serde_json::from_slice(&kv.value).expect("stored JSON")
}

#[tokio::test]
async fn objects_are_stored_in_the_storage_version_and_read_in_any() {
    let (s, c) = with_converter("convert").await;
    let created = s
        .ok(Method::POST, V2, Some(widget("v2", "w1", "length", 5)))
        .await;
    assert_eq!(
        (&created["apiVersion"], &created["spec"]),
        (&json!("example.com/v2"), &json!({"length": 5})),
        "{created}"
    );
    let raw = stored(&s, "w1").await;
    assert_eq!(
        (&raw["apiVersion"], &raw["spec"]),
        (&json!("example.com/v1"), &json!({"size": 5})),
        "{raw}"
    );
    // The webhook's label change is kept; its generation is not.
    assert_eq!(raw["metadata"]["labels"]["converted-to"], "v1", "{raw}");
    assert_eq!(raw["metadata"]["generation"], 1, "{raw}");

    let v1 = s.ok(Method::GET, &format!("{V1}/w1"), None).await;
    assert_eq!(v1["spec"], json!({"size": 5}), "{v1}");
    assert_eq!(v1["apiVersion"], "example.com/v1");
    let v2 = s.ok(Method::GET, &format!("{V2}/w1"), None).await;
    assert_eq!(v2["spec"], json!({"length": 5}), "{v2}");
    assert_eq!(v2["apiVersion"], "example.com/v2");
    assert_eq!(v2["metadata"]["name"], "w1");

    // An update in v2 reaches v1 readers.
    let mut changed = v2.clone();
    changed["spec"]["length"] = json!(7);
    let updated = s.ok(Method::PUT, &format!("{V2}/w1"), Some(changed)).await;
    assert_eq!(updated["spec"], json!({"length": 7}), "{updated}");
    let v1 = s.ok(Method::GET, &format!("{V1}/w1"), None).await;
    assert_eq!(v1["spec"], json!({"size": 7}), "{v1}");

    // A merge patch in v2 works on v2's fields.
    let (status, patched) = s
        .patch(
            &format!("{V2}/w1"),
            "application/merge-patch+json",
            json!({"spec": {"length": 8}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["spec"], json!({"length": 8}), "{patched}");
    assert_eq!(stored(&s, "w1").await["spec"], json!({"size": 8}));

    // A list page is one review.
    s.ok(Method::POST, V1, Some(widget("v1", "w2", "size", 3)))
        .await;
    let before = c.seen.lock().expect("lock").len();
    let list = s.ok(Method::GET, V2, None).await;
    let items: Vec<(&Value, &Value)> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| (&i["metadata"]["name"], &i["spec"]))
        .collect();
    assert_eq!(
        items,
        [
            (&json!("w1"), &json!({"length": 8})),
            (&json!("w2"), &json!({"length": 3}))
        ],
        "{list}"
    );
    assert_eq!(list["apiVersion"], "example.com/v2");
    let seen = c.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), before + 1, "one review for the list");
    let last = seen.last().expect("a review");
    assert_eq!(last["desiredAPIVersion"], "example.com/v2");
    assert_eq!(last["objects"].as_array().map(Vec::len), Some(2));

    // Field selectors see the version asked for.
    let selected = s
        .ok(
            Method::GET,
            &format!("{V2}?fieldSelector=spec.length%3D3"),
            None,
        )
        .await;
    assert_eq!(selected["items"][0]["metadata"]["name"], "w2", "{selected}");
    assert_eq!(selected["items"].as_array().map(Vec::len), Some(1));
    let before = c.seen.lock().expect("lock").len();

    // Reads in the storage version do not call the webhook.
    s.ok(Method::GET, V1, None).await;
    s.ok(Method::GET, &format!("{V1}/w1"), None).await;
    assert_eq!(c.seen.lock().expect("lock").len(), before);
}

/// `(type, apiVersion, name, spec)` of each watch event.
fn events_seen(events: &[Value]) -> Vec<(String, String, String, Value)> {
    events
        .iter()
        .map(|e| {
            let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
            (
                text(&e["type"]),
                text(&e["object"]["apiVersion"]),
                text(&e["object"]["metadata"]["name"]),
                e["object"]["spec"].clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_watch_in_another_version_sees_converted_objects() {
    let (s, _c) = with_converter("convert").await;
    s.ok(Method::POST, V1, Some(widget("v1", "w1", "size", 1)))
        .await;
    let event = |kind: &str, name: &str, length: i64| {
        (
            kind.to_owned(),
            "example.com/v2".to_owned(),
            name.to_owned(),
            json!({"length": length}),
        )
    };
    // Without a resourceVersion: the synthetic ADDED of what exists, converted.
    let (status, events, _) = watch_events(&s.router, &format!("{V2}?watch=1"), 1).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(events_seen(&events), [event("ADDED", "w1", 1)]);

    // From a list's resourceVersion: the store's events, converted.
    let list = s.ok(Method::GET, V2, None).await;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_owned();
    let watcher = {
        let router = s.router.clone();
        let uri = format!("{V2}?watch=1&resourceVersion={rv}");
        tokio::spawn(async move {
            let (status, events, _) = watch_events(&router, &uri, 2).await;
            (status, events)
        })
    };
    s.ok(Method::POST, V1, Some(widget("v1", "w2", "size", 2)))
        .await;
    let (status, patched) = s
        .patch(
            &format!("{V1}/w1"),
            "application/merge-patch+json",
            json!({"spec": {"size": 9}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    let (status, events) = watcher.await.expect("the watch task");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        events_seen(&events),
        [event("ADDED", "w2", 2), event("MODIFIED", "w1", 9)]
    );

    // A field selector of v2 sees the converted objects: w1 starts matching at length 9 (an
    // ADDED), w2 never does; from the start, only w1 is there.
    let uri = format!("{V2}?watch=1&resourceVersion={rv}&fieldSelector=spec.length%3D9");
    let (_, events, _) = watch_events(&s.router, &uri, 1).await;
    assert_eq!(events_seen(&events), [event("ADDED", "w1", 9)]);
    let uri = format!("{V2}?watch=1&fieldSelector=spec.length%3D9");
    let (_, events, _) = watch_events(&s.router, &uri, 1).await;
    assert_eq!(events_seen(&events), [event("ADDED", "w1", 9)]);
}

#[tokio::test]
async fn an_unreachable_webhook_is_a_500_in_kubes_words() {
    let port = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        listener.local_addr().expect("address").port()
    };
    let s = server().await;
    let url = format!("https://127.0.0.1:{port}/convert");
    s.ok(Method::POST, CRDS, Some(widget_crd(&url, None))).await;
    // The storage version needs no conversion.
    s.ok(Method::POST, V1, Some(widget("v1", "w1", "size", 1)))
        .await;
    s.ok(Method::GET, &format!("{V1}/w1"), None).await;
    // Named by the version converted from: stored v1 for reads, the v2 body for a create.
    let expected = |from: &str| {
        format!(
            "Internal error occurred: conversion webhook for example.com/{from}, Kind=Widget \
             failed: Post \"https://127.0.0.1:{port}/convert?timeout=30s\": dial tcp \
             127.0.0.1:{port}: connect: connection refused"
        )
    };
    for (method, uri, body, from) in [
        (Method::GET, format!("{V2}/w1"), None, "v1"),
        (Method::GET, V2.to_owned(), None, "v1"),
        (
            Method::POST,
            V2.to_owned(),
            Some(widget("v2", "w2", "length", 2)),
            "v2",
        ),
    ] {
        let (status, body) = s.call(method.clone(), &uri, body).await;
        assert_eq!(
            status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{method} {uri}: {body}"
        );
        assert_status(&body, 500, "InternalError");
        assert_eq!(body["message"], expected(from).as_str(), "{method} {uri}");
        assert_eq!(
            body["details"],
            json!({"causes": [{"message": expected(from).trim_start_matches("Internal error occurred: ")}]}),
            "{method} {uri}"
        );
    }
    // Nothing was stored by the failed create.
    let listed = s.ok(Method::GET, V1, None).await;
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn a_webhook_that_renames_the_object_is_refused() {
    let (s, _c) = with_converter("rename").await;
    s.ok(Method::POST, V1, Some(widget("v1", "w1", "size", 1)))
        .await;
    let (status, body) = s.call(Method::GET, &format!("{V2}/w1"), None).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_status(&body, 500, "InternalError");
    assert_eq!(
        body["message"],
        "Internal error occurred: conversion webhook for example.com/v1, Kind=Widget returned \
         invalid object: must have the same name: w1 != renamed"
    );
}

#[tokio::test]
async fn server_side_apply_and_delete_in_another_version_speak_that_version() {
    let (s, _c) = with_converter("convert").await;
    let apply = |length: i64| {
        json!({"apiVersion": "example.com/v2", "kind": "Widget",
               "metadata": {"name": "w1"}, "spec": {"length": length}})
    };
    let uri = format!("{V2}/w1?fieldManager=tester");
    for length in [4, 6] {
        let (status, applied) = s
            .patch(&uri, "application/apply-patch+yaml", apply(length))
            .await;
        assert!(status.is_success(), "{status}: {applied}");
        assert_eq!(applied["spec"], json!({"length": length}), "{applied}");
        assert_eq!(stored(&s, "w1").await["spec"], json!({"size": length}));
    }
    let deleted = s.ok(Method::DELETE, &format!("{V2}/w1"), None).await;
    assert_eq!(
        (&deleted["apiVersion"], &deleted["spec"]),
        (&json!("example.com/v2"), &json!({"length": 6})),
        "{deleted}"
    );
}

#[tokio::test]
async fn admission_webhooks_see_the_version_of_the_request() {
    let (s, c) = with_converter("convert").await;
    let hook = json!({
        "name": "widgets.admit.example.com",
        "clientConfig": {"url": format!("{}/admit", c.base), "caBundle": c.ca_bundle},
        "rules": [{"operations": ["CREATE", "DELETE"], "apiGroups": ["example.com"],
                   "apiVersions": ["*"], "resources": ["widgets"]}],
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
    });
    s.ok(
        Method::POST,
        "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
        Some(json!({"apiVersion": "admissionregistration.k8s.io/v1",
                    "kind": "ValidatingWebhookConfiguration",
                    "metadata": {"name": "widgets"}, "webhooks": [hook]})),
    )
    .await;
    s.ok(Method::POST, V2, Some(widget("v2", "w1", "length", 4)))
        .await;
    s.ok(Method::DELETE, &format!("{V2}/w1"), None).await;
    let admitted: Vec<(Value, Value, Value)> = c
        .seen
        .lock()
        .expect("lock")
        .iter()
        .filter(|r| r.get("operation").is_some())
        .map(|r| {
            let object = if r["object"].is_null() {
                &r["oldObject"]
            } else {
                &r["object"]
            };
            (
                r["operation"].clone(),
                object["apiVersion"].clone(),
                object["spec"].clone(),
            )
        })
        .collect();
    assert_eq!(
        admitted,
        [
            (
                json!("CREATE"),
                json!("example.com/v2"),
                json!({"length": 4})
            ),
            (
                json!("DELETE"),
                json!("example.com/v2"),
                json!({"length": 4})
            ),
        ]
    );
}
