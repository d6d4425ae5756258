//! CustomResourceDefinitions and their custom resources: status as kube's controllers write
//! it, discovery, CRUD and the patch types, subresources, printer columns, several versions,
//! and deletion of the CRD with its objects.

use std::time::Duration;

use axum::http::{Method, StatusCode, header};
use serde_json::{Value, json};

use super::{ADMIN_TOKEN, Server, assert_status, server};

const CRDS: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
const WIDGETS: &str = "/apis/example.com/v1/namespaces/default/widgets";

fn widget_crd() -> Value {
    let schema = json!({
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "size": {"type": "integer"},
                    "color": {"type": "string"},
                    "replicas": {"type": "integer"},
                },
            },
            "status": {
                "type": "object",
                "properties": {"replicas": {"type": "integer"}, "phase": {"type": "string"}},
            },
        },
    });
    let version = |name: &str, storage: bool| {
        json!({
            "name": name,
            "served": true,
            "storage": storage,
            "schema": {"openAPIV3Schema": schema},
            "subresources": {
                "status": {},
                "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"},
            },
            "additionalPrinterColumns": [
                {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                {"name": "Color", "type": "string", "jsonPath": ".spec.color", "priority": 1},
                {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            ],
        })
    };
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"], "categories": ["all"]},
            "versions": [version("v1", true), version("v1beta1", false)],
        },
    })
}

fn widget(name: &str, size: i64) -> Value {
    json!({
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": name, "labels": {"tier": "front"}},
        "spec": {"size": size, "color": "blue", "replicas": 2},
    })
}

async fn with_widgets() -> Server {
    let s = server().await;
    s.ok(Method::POST, CRDS, Some(widget_crd())).await;
    s
}

fn condition<'a>(crd: &'a Value, kind: &str) -> &'a Value {
    crd["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .unwrap_or(&Value::Null)
}

#[tokio::test]
async fn a_new_crd_is_established_with_its_names_accepted() {
    let s = with_widgets().await;
    let crd = s
        .ok(Method::GET, &format!("{CRDS}/widgets.example.com"), None)
        .await;
    let established = condition(&crd, "Established");
    assert_eq!(established["status"], "True", "{crd}");
    assert_eq!(established["reason"], "InitialNamesAccepted");
    assert_eq!(
        established["message"],
        "the initial names have been accepted"
    );
    let accepted = condition(&crd, "NamesAccepted");
    assert_eq!(
        (
            &accepted["status"],
            &accepted["reason"],
            &accepted["message"]
        ),
        (
            &json!("True"),
            &json!("NoConflicts"),
            &json!("no conflicts found")
        )
    );
    assert_eq!(
        crd["status"]["acceptedNames"],
        json!({"plural": "widgets", "singular": "widget", "shortNames": ["wd"],
               "kind": "Widget", "listKind": "WidgetList", "categories": ["all"]})
    );
    assert_eq!(crd["status"]["storedVersions"], json!(["v1"]));
    // Defaults: singular, listKind, conversion.
    assert_eq!(crd["spec"]["conversion"], json!({"strategy": "None"}));
    assert_eq!(crd["spec"]["names"]["listKind"], "WidgetList");
}

#[tokio::test]
async fn a_kind_taken_by_another_crd_of_the_group_is_not_accepted() {
    let s = with_widgets().await;
    let mut gadgets = widget_crd();
    gadgets["metadata"]["name"] = json!("gadgets.example.com");
    gadgets["spec"]["names"] = json!({"plural": "gadgets", "kind": "Widget"});
    s.ok(Method::POST, CRDS, Some(gadgets)).await;
    let crd = s
        .ok(Method::GET, &format!("{CRDS}/gadgets.example.com"), None)
        .await;
    let accepted = condition(&crd, "NamesAccepted");
    assert_eq!(accepted["status"], "False", "{crd}");
    // The kind and its defaulted list kind are both taken; kube names the last conflict.
    assert_eq!(accepted["reason"], "ListKindConflict");
    assert_eq!(accepted["message"], "\"WidgetList\" is already in use");
    assert_eq!(crd["status"]["acceptedNames"].get("kind"), None, "{crd}");
    let established = condition(&crd, "Established");
    assert_eq!(
        (&established["status"], &established["reason"]),
        (&json!("False"), &json!("NotAccepted"))
    );
    let (status, _) = s
        .call(
            Method::GET,
            "/apis/example.com/v1/namespaces/default/gadgets",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn invalid_crds_are_422_naming_the_field() {
    let s = server().await;
    let cases = [
        (
            json!({"metadata": {"name": "wrong.example.com"}}),
            "metadata.name: Invalid value: \"wrong.example.com\": must be spec.names.plural+\".\"+spec.group",
        ),
        (
            json!({"spec": {"group": "example"}, "metadata": {"name": "widgets.example"}}),
            "spec.group: Invalid value: \"example\": should be a domain with at least one dot",
        ),
        (
            json!({"spec": {"scope": "Global"}}),
            "spec.scope: Unsupported value: \"Global\": supported values: \"Cluster\", \"Namespaced\"",
        ),
        (
            json!({"spec": {"versions": [{"name": "v1", "served": true, "storage": false,
                "schema": {"openAPIV3Schema": {"type": "object"}}}]}}),
            "spec.versions: Invalid value: must have exactly one version marked as storage version",
        ),
        (
            json!({"spec": {"versions": [{"name": "v1", "served": true, "storage": true}]}}),
            "spec.versions[0].schema.openAPIV3Schema: Required value: schemas are required",
        ),
        (
            json!({"spec": {"versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object"}},
                "additionalPrinterColumns": [{"name": "X", "type": "list", "jsonPath": ".spec"}]}]}}),
            "spec.versions[0].additionalPrinterColumns[0].type: Invalid value: \"list\": must be one of boolean,date,integer,number,string",
        ),
        (
            json!({"spec": {"versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object"}},
                "subresources": {"scale": {"specReplicasPath": ".status.replicas", "statusReplicasPath": ".status.replicas"}}}]}}),
            "spec.versions[0].subresources.scale.specReplicasPath: Invalid value: \".status.replicas\": should be a json path under .spec",
        ),
        (
            // A CEL rule that does not compile (the message goes on with the rule and the
            // parser's error, checked below).
            json!({"spec": {"versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {
                    "type": "object",
                    "x-kubernetes-validations": [{"rule": "self.min <"}],
                    "properties": {"min": {"type": "integer"}}}}}}}]}}),
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule: Invalid value: ",
        ),
        (
            // A rule over an unbounded list of unbounded strings costs too much.
            json!({"spec": {"versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {
                    "type": "object",
                    "properties": {"tags": {
                        "type": "array",
                        "items": {"type": "string"},
                        "x-kubernetes-validations": [{"rule": "self.all(x, x.contains('gpu'))"}]}}}}}}}]}}),
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[tags].x-kubernetes-validations[0].rule: Forbidden: estimated rule cost exceeds budget by factor of more than 100x",
        ),
    ];
    let mut uncompiled = None;
    for (change, expected) in cases {
        let mut crd = json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com",
                "scope": "Namespaced",
                "names": {"plural": "widgets", "kind": "Widget"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                              "schema": {"openAPIV3Schema": {"type": "object"}}}],
            },
        });
        merge(&mut crd, &change);
        let (status, body) = s.call(Method::POST, CRDS, Some(crd)).await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{expected}: {body}"
        );
        assert_status(&body, 422, "Invalid");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains(expected), "{message}\nwanted: {expected}");
        if expected.ends_with("rule: Invalid value: ") {
            uncompiled = Some(message.to_owned());
        }
    }
    let uncompiled = uncompiled.unwrap_or_default();
    assert!(
        uncompiled.contains("compilation failed: ERROR: <input>:1:11: Syntax error:"),
        "{uncompiled}"
    );
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (t, p) => *t = p.clone(),
    }
}

#[tokio::test]
async fn custom_groups_are_discovered_in_both_documents() {
    let s = with_widgets().await;
    let groups = s.ok(Method::GET, "/apis", None).await;
    let group = groups["groups"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["name"] == "example.com"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        group["preferredVersion"]["groupVersion"], "example.com/v1",
        "{groups}"
    );
    assert_eq!(group["versions"].as_array().map(Vec::len), Some(2));
    let list = s.ok(Method::GET, "/apis/example.com/v1", None).await;
    let names: Vec<&str> = list["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, ["widgets", "widgets/scale", "widgets/status"]);
    assert_eq!(list["resources"][0]["shortNames"], json!(["wd"]));
    assert_eq!(list["resources"][0]["singularName"], "widget");
    assert_eq!(list["resources"][0]["categories"], json!(["all"]));
    assert_eq!(list["resources"][0]["namespaced"], true);
    let (_, _, aggregated) = s
        .exchange(
            ADMIN_TOKEN,
            Method::GET,
            "/apis",
            &[(
                header::ACCEPT,
                "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList",
            )],
            Vec::new(),
        )
        .await;
    let entry = aggregated["items"]
        .as_array()
        .and_then(|i| i.iter().find(|g| g["metadata"]["name"] == "example.com"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(entry["versions"][0]["version"], "v1", "{aggregated}");
    assert_eq!(
        entry["versions"][0]["resources"][0]["responseKind"]["kind"],
        "Widget"
    );
    let group = s.ok(Method::GET, "/apis/example.com", None).await;
    assert_eq!(group["kind"], "APIGroup");
}

#[tokio::test]
async fn custom_resources_are_defaulted_pruned_and_served_in_every_version() {
    let s = with_widgets().await;
    let mut w = widget("w1", 3);
    w["spec"]["unknown"] = json!(true);
    w["status"] = json!({"phase": "Ready"});
    let (status, created) = s.call(Method::POST, WIDGETS, Some(w)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["spec"].get("unknown"), None, "pruned: {created}");
    assert_eq!(
        created["status"],
        Value::Null,
        "status dropped on create: {created}"
    );
    assert_eq!(created["metadata"]["generation"], 1);
    // The same object through v1beta1: only apiVersion differs.
    let old = s
        .ok(
            Method::GET,
            "/apis/example.com/v1beta1/namespaces/default/widgets/w1",
            None,
        )
        .await;
    assert_eq!(old["apiVersion"], "example.com/v1beta1");
    assert_eq!(old["spec"]["size"], 3);
    let listed = s
        .ok(
            Method::GET,
            &format!("{WIDGETS}?labelSelector=tier%3Dfront"),
            None,
        )
        .await;
    assert_eq!(listed["kind"], "WidgetList");
    assert_eq!(listed["items"][0]["metadata"]["name"], "w1");
    let none = s
        .ok(
            Method::GET,
            &format!("{WIDGETS}?labelSelector=tier%3Dback"),
            None,
        )
        .await;
    assert_eq!(none["items"], json!([]));
    // Strict field validation refuses what pruning would drop.
    let mut strict = widget("w2", 1);
    strict["spec"]["unknown"] = json!(1);
    let (status, body) = s
        .call(
            Method::POST,
            &format!("{WIDGETS}?fieldValidation=Strict"),
            Some(strict),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("strict decoding error: unknown field \"spec.unknown\"")),
        "{body}"
    );
}

#[tokio::test]
async fn patches_status_and_scale_of_custom_resources() {
    let s = with_widgets().await;
    s.ok(Method::POST, WIDGETS, Some(widget("w1", 3))).await;
    let uri = format!("{WIDGETS}/w1");
    let (status, merged) = s
        .patch(
            &uri,
            "application/merge-patch+json",
            json!({"spec": {"size": 5}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{merged}");
    assert_eq!(merged["spec"]["size"], 5);
    assert_eq!(merged["metadata"]["generation"], 2);
    let (status, patched) = s
        .patch(
            &uri,
            "application/json-patch+json",
            json!([{"op": "replace", "path": "/spec/color", "value": "red"}]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["spec"]["color"], "red");
    let (status, refused) = s
        .patch(
            &uri,
            "application/strategic-merge-patch+json",
            json!({"spec": {"size": 1}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{refused}");
    assert_status(&refused, 415, "UnsupportedMediaType");
    assert_eq!(
        refused["message"],
        "the body of the request was in an unknown format - accepted media types include: \
         application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
    );
    // The main resource ignores status; /status changes only status.
    let (_, ignored) = s
        .patch(
            &uri,
            "application/merge-patch+json",
            json!({"status": {"phase": "X"}}),
        )
        .await;
    assert_eq!(ignored["status"], Value::Null, "{ignored}");
    let (status, with_status) = s
        .patch(
            &format!("{uri}/status"),
            "application/merge-patch+json",
            json!({"status": {"phase": "Running", "replicas": 2}, "spec": {"size": 9}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{with_status}");
    assert_eq!(with_status["status"]["phase"], "Running");
    assert_eq!(with_status["spec"]["size"], 5);
    let scale = s.ok(Method::GET, &format!("{uri}/scale"), None).await;
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 2);
    assert_eq!(scale["status"]["replicas"], 2);
    let (status, scaled) = s
        .patch(
            &format!("{uri}/scale"),
            "application/merge-patch+json",
            json!({"spec": {"replicas": 7}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{scaled}");
    assert_eq!(scaled["spec"]["replicas"], 7);
    let got = s.ok(Method::GET, &uri, None).await;
    assert_eq!(got["spec"]["replicas"], 7);
    // dry-run changes nothing.
    // dry-run changes nothing.
    let (status, _) = s
        .raw(
            Method::PATCH,
            &format!("{uri}?dryRun=All"),
            "application/merge-patch+json",
            json!({"spec": {"size": 100}}).to_string().into_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let got = s.ok(Method::GET, &uri, None).await;
    assert_eq!(got["spec"]["size"], 5);
}

#[tokio::test]
async fn tables_show_the_printer_columns() {
    let s = with_widgets().await;
    s.ok(Method::POST, WIDGETS, Some(widget("w1", 3))).await;
    let (status, _, table) = s
        .exchange(
            ADMIN_TOKEN,
            Method::GET,
            WIDGETS,
            &[(
                header::ACCEPT,
                "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
            )],
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{table}");
    let columns: Vec<(&str, i64)> = table["columnDefinitions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or(""),
                c["priority"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(
        columns,
        [("Name", 0), ("Size", 0), ("Color", 1), ("Phase", 0)]
    );
    assert_eq!(table["rows"][0]["cells"], json!(["w1", 3, "blue", null]));
}

#[tokio::test]
async fn deleting_the_crd_deletes_its_objects_and_stops_serving() {
    let s = with_widgets().await;
    for name in ["a", "b"] {
        s.ok(Method::POST, WIDGETS, Some(widget(name, 1))).await;
    }
    let deleted = s
        .ok(Method::DELETE, &format!("{CRDS}/widgets.example.com"), None)
        .await;
    assert!(
        deleted["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| f.contains(&json!("customresourcecleanup.apiextensions.k8s.io"))),
        "{deleted}"
    );
    assert_eq!(condition(&deleted, "Terminating")["status"], "True");
    let mut gone = false;
    for _ in 0..100 {
        let (status, _) = s
            .call(Method::GET, &format!("{CRDS}/widgets.example.com"), None)
            .await;
        if status == StatusCode::NOT_FOUND {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the CRD is still there");
    let left = s
        .store
        .list("/registry/example.com/widgets/", Default::default())
        .await
        .expect("list");
    assert!(left.items.is_empty(), "objects left: {}", left.items.len());
    let (status, _) = s.call(Method::GET, WIDGETS, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_not_5xx() {
    let s = with_widgets().await;
    let mut big = widget("big", 1);
    big["spec"]["color"] = json!("x".repeat(10 * 1024 * 1024));
    let (status, body) = s.call(Method::POST, WIDGETS, Some(big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_status(&body, 413, "RequestEntityTooLarge");
    assert_eq!(
        body["message"],
        "Request entity too large: limit is 3145728"
    );
}

#[tokio::test]
async fn watches_of_custom_resources_speak_the_requested_version() {
    let s = with_widgets().await;
    s.ok(Method::POST, WIDGETS, Some(widget("w1", 3))).await;
    let (status, events, _body) = super::watch_events(
        &s.router,
        "/apis/example.com/v1beta1/namespaces/default/widgets?watch=true",
        1,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[0]["object"]["apiVersion"], "example.com/v1beta1");
    assert_eq!(events[0]["object"]["metadata"]["name"], "w1");
}

#[tokio::test]
async fn rules_of_the_schema_refuse_a_custom_resource_naming_the_rule() {
    let s = server().await;
    let mut crd = widget_crd();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"] = json!([
        {"rule": "self.size <= 10", "message": "size must be at most 10"},
        {"rule": "self.size >= oldSelf.size", "message": "size may not shrink"},
    ]);
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["color"]
        ["default"] = json!("green");
    s.ok(Method::POST, CRDS, Some(crd)).await;
    let (status, body) = s.call(Method::POST, WIDGETS, Some(widget("big", 11))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_status(&body, 422, "Invalid");
    assert_eq!(body["details"]["kind"], "Widget");
    assert_eq!(body["details"]["group"], "example.com");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Widget.example.com \"big\" is invalid: ")
                && m.contains("size must be at most 10")),
        "{body}"
    );
    let mut plain = widget("w1", 5);
    plain["spec"]
        .as_object_mut()
        .map(|spec| spec.remove("color"));
    let created = s.ok(Method::POST, WIDGETS, Some(plain)).await;
    assert_eq!(created["spec"]["color"], "green", "defaulted: {created}");
    // The transition rule compares with the stored object.
    let (status, body) = s
        .patch(
            &format!("{WIDGETS}/w1"),
            "application/merge-patch+json",
            json!({"spec": {"size": 4}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("size may not shrink")),
        "{body}"
    );
    let (status, _) = s
        .patch(
            &format!("{WIDGETS}/w1"),
            "application/merge-patch+json",
            json!({"spec": {"size": 6}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_non_structural_schema_is_refused() {
    let s = server().await;
    let mut crd = widget_crd();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"] =
        json!({"properties": {"size": {"type": "integer"}}});
    let (status, body) = s.call(Method::POST, CRDS, Some(crd)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| m.contains(
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].type: Required value"
        )),
        "{body}"
    );
}

#[tokio::test]
async fn cluster_scoped_custom_resources_and_names() {
    let s = server().await;
    let mut crd = widget_crd();
    crd["spec"]["scope"] = json!("Cluster");
    s.ok(Method::POST, CRDS, Some(crd)).await;
    let created = s
        .ok(
            Method::POST,
            "/apis/example.com/v1/widgets",
            Some(widget("global", 1)),
        )
        .await;
    assert_eq!(created["metadata"].get("namespace"), None, "{created}");
    let (status, body) = s
        .call(
            Method::POST,
            "/apis/example.com/v1/widgets",
            Some(widget("Not_A_Name", 1)),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let (status, _) = s.call(Method::GET, WIDGETS, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not namespaced");
}

#[tokio::test]
async fn another_api_server_on_the_same_store_serves_the_crd_too() {
    let s = server().await;
    let authenticator = keelson_apiserver::Authenticator::default().with_token(
        ADMIN_TOKEN,
        keelson_apiserver::UserInfo::new(
            "kubernetes-admin",
            &[keelson_apiserver::auth::MASTERS_GROUP],
        ),
    );
    let other = Server {
        store: std::sync::Arc::clone(&s.store),
        router: keelson_apiserver::app(
            keelson_apiserver::AppState::new(std::sync::Arc::clone(&s.store))
                .with_authenticator(authenticator),
        ),
        _dir: tempfile::tempdir().expect("temp dir"),
    };
    // The other server has loaded its (empty) registry before the CRD exists.
    other.ok(Method::GET, "/apis", None).await;
    s.ok(Method::POST, CRDS, Some(widget_crd())).await;
    let mut served = false;
    for _ in 0..100 {
        let (status, _) = other.call(Method::GET, WIDGETS, None).await;
        if status == StatusCode::OK {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "the other API server never served widgets");
    other
        .ok(Method::POST, WIDGETS, Some(widget("from-other", 1)))
        .await;
    let got = s
        .ok(Method::GET, &format!("{WIDGETS}/from-other"), None)
        .await;
    assert_eq!(got["spec"]["size"], 1);
}

#[tokio::test]
async fn selectable_fields_are_field_selectors() {
    let s = server().await;
    let mut crd = widget_crd();
    crd["spec"]["versions"][0]["selectableFields"] = json!([{"jsonPath": ".spec.color"}]);
    s.ok(Method::POST, CRDS, Some(crd)).await;
    s.ok(Method::POST, WIDGETS, Some(widget("blue", 1))).await;
    let mut red = widget("red", 1);
    red["spec"]["color"] = json!("red");
    s.ok(Method::POST, WIDGETS, Some(red)).await;
    let listed = s
        .ok(
            Method::GET,
            &format!("{WIDGETS}?fieldSelector=spec.color%3Dred"),
            None,
        )
        .await;
    let names: Vec<&str> = listed["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["red"]);
    let (status, body) = s
        .call(
            Method::GET,
            &format!("{WIDGETS}?fieldSelector=spec.size%3D1"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "not selectable: {body}");
}

#[tokio::test]
async fn deleting_the_crd_collection_cleans_up_too() {
    let s = with_widgets().await;
    s.ok(Method::POST, WIDGETS, Some(widget("a", 1))).await;
    let deleted = s.ok(Method::DELETE, CRDS, None).await;
    assert_eq!(deleted["kind"], "CustomResourceDefinitionList");
    assert_eq!(
        deleted["items"][0]["metadata"]["name"],
        "widgets.example.com"
    );
    let mut empty = false;
    for _ in 0..100 {
        let left = s
            .store
            .list("/registry/", Default::default())
            .await
            .expect("list");
        if left
            .items
            .iter()
            .all(|kv| !kv.key.contains("widgets") && !kv.key.contains("example.com"))
        {
            empty = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(empty, "the CRD or its objects are left");
}

#[tokio::test]
async fn without_a_status_subresource_any_change_but_metadata_bumps_the_generation() {
    let s = server().await;
    let mut crd = widget_crd();
    for version in crd["spec"]["versions"].as_array_mut().into_iter().flatten() {
        version.as_object_mut().map(|v| v.remove("subresources"));
    }
    s.ok(Method::POST, CRDS, Some(crd)).await;
    let mut w = widget("w1", 1);
    w["status"] = json!({"phase": "New"});
    let created = s.ok(Method::POST, WIDGETS, Some(w)).await;
    assert_eq!(created["status"]["phase"], "New", "kept: {created}");
    let uri = format!("{WIDGETS}/w1");
    let (_, labelled) = s
        .patch(
            &uri,
            "application/merge-patch+json",
            json!({"metadata": {"labels": {"x": "y"}}}),
        )
        .await;
    assert_eq!(labelled["metadata"]["generation"], 1);
    let (_, changed) = s
        .patch(
            &uri,
            "application/merge-patch+json",
            json!({"status": {"phase": "Old"}}),
        )
        .await;
    assert_eq!(changed["metadata"]["generation"], 2, "{changed}");
    let (status, _) = s.call(Method::GET, &format!("{uri}/status"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn pruned_fields_are_warned_about_by_default() {
    let s = with_widgets().await;
    let mut w = widget("w1", 1);
    w["spec"]["unknown"] = json!(1);
    w["metadata"]["bogus"] = json!("x");
    let (status, headers, body) = s
        .exchange(
            ADMIN_TOKEN,
            Method::POST,
            WIDGETS,
            &[(header::CONTENT_TYPE, "application/json")],
            w.to_string().into_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let warnings: Vec<&str> = headers
        .get_all("warning")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(
        warnings,
        [
            r#"299 - "unknown field \"metadata.bogus\"""#,
            r#"299 - "unknown field \"spec.unknown\"""#
        ]
    );
    assert_eq!(body["metadata"].get("bogus"), None);
}

#[tokio::test]
async fn crd_schemas_are_in_the_openapi_documents_and_leave_with_the_crd() {
    let s = server().await;
    let index = s.ok(Method::GET, "/openapi/v3", None).await;
    assert!(
        index["paths"].get("apis/example.com/v1").is_none(),
        "{index}"
    );
    s.ok(Method::POST, CRDS, Some(widget_crd())).await;

    let index = s.ok(Method::GET, "/openapi/v3", None).await;
    let url = index["paths"]["apis/example.com/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap_or_else(|| panic!("no example.com/v1 in the index: {index}"))
        .to_owned();
    let document = s.ok(Method::GET, &url, None).await;
    let widget = &document["components"]["schemas"]["com.example.v1.Widget"];
    assert_eq!(
        widget["properties"]["spec"]["properties"]["size"]["type"], "integer",
        "{widget}"
    );
    assert_eq!(
        widget["x-kubernetes-group-version-kind"],
        json!([{"group": "example.com", "version": "v1", "kind": "Widget"}])
    );
    let paths = document["paths"].as_object().cloned().unwrap_or_default();
    for path in [
        "/apis/example.com/v1/namespaces/{namespace}/widgets",
        "/apis/example.com/v1/namespaces/{namespace}/widgets/{name}/scale",
    ] {
        assert!(paths.contains_key(path), "{path} in {:?}", paths.keys());
    }
    let v2 = s.ok(Method::GET, "/openapi/v2", None).await;
    assert_eq!(
        v2["definitions"]["com.example.v1beta1.Widget"]["properties"]["spec"]["properties"]["color"]
            ["type"],
        "string"
    );

    s.ok(Method::DELETE, &format!("{CRDS}/widgets.example.com"), None)
        .await;
    let mut gone = false;
    for _ in 0..100 {
        let index = s.ok(Method::GET, "/openapi/v3", None).await;
        if index["paths"].get("apis/example.com/v1").is_none() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "the deleted CRD's document stayed in the index");
}
