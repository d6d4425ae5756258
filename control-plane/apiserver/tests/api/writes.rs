//! The write options and wire details: fieldValidation, dryRun, YAML and bad bodies, warnings,
//! resourceVersionMatch, watch timeouts, managedFields, 422 causes, objects stored by an older
//! keelson.

use axum::http::{Method, StatusCode, header};
use serde_json::{Value, json};

use super::{ADMIN_TOKEN, CONFIGMAPS, Server, assert_status, configmap, server};

fn warnings(headers: &header::HeaderMap) -> Vec<String> {
    headers
        .get_all("warning")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect()
}

async fn post_raw(
    s: &Server,
    uri: &str,
    content_type: &str,
    body: &str,
) -> (StatusCode, header::HeaderMap, Value) {
    s.exchange(
        ADMIN_TOKEN,
        Method::POST,
        uri,
        &[(header::CONTENT_TYPE, content_type)],
        body.as_bytes().to_vec(),
    )
    .await
}

#[tokio::test]
async fn field_validation_strict_warn_and_ignore() {
    let s = server().await;
    let body = |name: &str| {
        format!(
            r#"{{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {{"name": "{name}", "name": "{name}"}}, "dta": {{"a": "b"}}, "data": {{"k": "v"}}}}"#
        )
    };
    let (status, _, refused) = post_raw(
        &s,
        &format!("{CONFIGMAPS}?fieldValidation=Strict"),
        "application/json",
        &body("s"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_status(&refused, 400, "BadRequest");
    assert_eq!(
        refused["message"],
        r#"ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: duplicate field "metadata.name", unknown field "dta""#
    );
    let (status, headers, created) = post_raw(
        &s,
        &format!("{CONFIGMAPS}?fieldValidation=Warn"),
        "application/json",
        &body("w"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        warnings(&headers),
        [
            r#"299 - "duplicate field \"metadata.name\"""#,
            r#"299 - "unknown field \"dta\"""#
        ]
    );
    assert_eq!(created["dta"], Value::Null, "the unknown field is dropped");
    // Warn is the default.
    let (_, headers, _) = post_raw(&s, CONFIGMAPS, "application/json", &body("d")).await;
    assert_eq!(warnings(&headers).len(), 2);
    let (status, headers, created) = post_raw(
        &s,
        &format!("{CONFIGMAPS}?fieldValidation=Ignore"),
        "application/json",
        &body("i"),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(warnings(&headers).is_empty());
    assert_eq!(created["dta"], Value::Null);
    let (status, _, body) = post_raw(
        &s,
        &format!("{CONFIGMAPS}?fieldValidation=Loose"),
        "application/json",
        &body("l"),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // A strict patch names the unknown field of the patched object.
    let (status, body) = s
        .patch(
            &format!("{CONFIGMAPS}/w?fieldValidation=Strict"),
            "application/merge-patch+json",
            json!({"spec": {"x": 1}}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["message"],
        r#"ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: unknown field "spec""#
    );
}

#[tokio::test]
async fn dry_run_runs_everything_but_stores_nothing() {
    let s = server().await;
    let cm = configmap("dry", json!({"a": "b"}));
    let (status, created) = s
        .call(
            Method::POST,
            &format!("{CONFIGMAPS}?dryRun=All"),
            Some(cm.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert!(created["metadata"]["uid"].is_string());
    assert_eq!(created["metadata"]["resourceVersion"], Value::Null);
    let (status, _) = s
        .call(Method::GET, &format!("{CONFIGMAPS}/dry"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing stored");

    s.ok(Method::POST, CONFIGMAPS, Some(cm.clone())).await;
    // A dry-run create of an existing object is still a conflict.
    let (status, body) = s
        .call(Method::POST, &format!("{CONFIGMAPS}?dryRun=All"), Some(cm))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_status(&body, 409, "AlreadyExists");
    let (status, patched) = s
        .patch(
            &format!("{CONFIGMAPS}/dry?dryRun=All"),
            "application/merge-patch+json",
            json!({"data": {"k": "changed"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(patched["data"]["k"], "changed");
    let (status, deleted) = s
        .call(
            Method::DELETE,
            &format!("{CONFIGMAPS}/dry?dryRun=All"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{deleted}");
    let stored = s.ok(Method::GET, &format!("{CONFIGMAPS}/dry"), None).await;
    assert_eq!(
        stored["data"]["k"], "v",
        "neither the patch nor the delete was stored"
    );
}

#[tokio::test]
async fn yaml_bodies_and_bad_bodies() {
    let s = server().await;
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\ndata:\n  k: v\n";
    let (status, _, created) = post_raw(&s, CONFIGMAPS, "application/yaml", yaml).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["data"]["k"], "v");

    for (content_type, body, code, reason) in [
        ("application/yaml", "a: [", 400, "BadRequest"),
        ("application/json", "{\"a\": ", 400, "BadRequest"),
        ("application/json", "[1, 2]", 400, "BadRequest"),
        (
            "application/json",
            &format!("{}{}", "[".repeat(500), "]".repeat(500)),
            400,
            "BadRequest",
        ),
        (
            "application/json",
            r#"{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}"#,
            400,
            "BadRequest",
        ),
        (
            "application/json",
            r#"{"apiVersion": "apps/v1", "kind": "ConfigMap", "metadata": {"name": "s"}}"#,
            400,
            "BadRequest",
        ),
        (
            "application/json",
            r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"a": 1}}"#,
            400,
            "BadRequest",
        ),
        ("text/plain", "hello", 415, "UnsupportedMediaType"),
    ] {
        let (status, _, body) = post_raw(&s, CONFIGMAPS, content_type, body).await;
        assert_eq!(status.as_u16(), code, "{content_type} {body}");
        assert_status(&body, code, reason);
    }
    let (_, _, body) = post_raw(
        &s,
        CONFIGMAPS,
        "application/json",
        r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "s"}, "data": {"a": 1}}"#,
    )
    .await;
    assert_eq!(
        body["message"],
        r#"ConfigMap in version "v1" cannot be handled as a ConfigMap: invalid type: integer `1`, expected a string"#
    );
}

#[tokio::test]
async fn stored_but_not_enforced_kinds_say_so_on_writes() {
    let s = server().await;
    let (status, headers, _) = post_raw(
        &s,
        "/apis/networking.k8s.io/v1/namespaces/default/ingresses",
        "application/json",
        r#"{"metadata": {"name": "in"}, "spec": {"defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}}}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        warnings(&headers),
        [r#"299 - "keelson stores Ingresses but runs no ingress controller yet""#]
    );
    // NetworkPolicies are enforced (by the node agents' eBPF programs): no warning.
    let (status, headers, _) = post_raw(
        &s,
        "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies",
        "application/json",
        r#"{"metadata": {"name": "deny"}, "spec": {"podSelector": {}}}"#,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(warnings(&headers).is_empty(), "{:?}", warnings(&headers));
    let (_, headers, _) = post_raw(
        &s,
        CONFIGMAPS,
        "application/json",
        &configmap("quiet", json!({})).to_string(),
    )
    .await;
    assert!(
        warnings(&headers).is_empty(),
        "enforced kinds carry no warning"
    );
    // Kinds with a controller now (issue 20): a DaemonSet's write says nothing either.
    let (status, headers, _) = post_raw(
        &s,
        "/apis/apps/v1/namespaces/default/daemonsets",
        "application/json",
        &json!({
            "metadata": {"name": "agent"},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {
                    "metadata": {"labels": {"app": "agent"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}
                }
            }
        })
        .to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(
        warnings(&headers).is_empty(),
        "DaemonSets have a controller: {:?}",
        warnings(&headers)
    );
}

#[tokio::test]
async fn lists_at_an_exact_resource_version() {
    let s = server().await;
    let first = s
        .ok(Method::POST, CONFIGMAPS, Some(configmap("one", json!({}))))
        .await;
    let rv = first["metadata"]["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_owned();
    s.ok(Method::POST, CONFIGMAPS, Some(configmap("two", json!({}))))
        .await;
    let then = s
        .ok(
            Method::GET,
            &format!("{CONFIGMAPS}?resourceVersion={rv}&resourceVersionMatch=Exact"),
            None,
        )
        .await;
    assert_eq!(then["metadata"]["resourceVersion"], rv.as_str());
    assert_eq!(then["items"].as_array().map(Vec::len), Some(1));
    let now = s
        .ok(
            Method::GET,
            &format!("{CONFIGMAPS}?resourceVersion={rv}&resourceVersionMatch=NotOlderThan"),
            None,
        )
        .await;
    assert_eq!(now["items"].as_array().map(Vec::len), Some(2));
    let (status, body) = s
        .call(
            Method::GET,
            &format!("{CONFIGMAPS}?resourceVersionMatch=Exact"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_status(&body, 422, "Invalid");
}

#[tokio::test]
async fn watches_ignore_the_timeout_parameter() {
    let s = server().await;
    let uri = format!("{CONFIGMAPS}?watch=true&timeoutSeconds=2&timeout=1ms");
    let watch = s.exchange(ADMIN_TOKEN, Method::GET, &uri, &[], Vec::new());
    let later = async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        s.ok(
            Method::POST,
            CONFIGMAPS,
            Some(configmap("later", json!({}))),
        )
        .await
    };
    let ((status, _, body), _) = tokio::join!(watch, later);
    assert_eq!(status, StatusCode::OK);
    // The stream outlived `timeout=1ms` and carried a write made 500 ms in.
    // One event line parses as JSON by itself; several stay raw text.
    let raw = body["raw"]
        .as_str()
        .map_or_else(|| body.to_string(), str::to_owned);
    assert!(
        raw.lines()
            .any(|l| l.contains(r#""type":"ADDED""#) && l.contains(r#""name":"later""#)),
        "{body}"
    );
}

#[tokio::test]
async fn writes_record_managed_fields_by_field_manager() {
    let s = server().await;
    let created = s
        .ok(
            Method::POST,
            &format!("{CONFIGMAPS}?fieldManager=kubectl-create"),
            Some(configmap("managed", json!({"a": "b"}))),
        )
        .await;
    let entries = &created["metadata"]["managedFields"];
    assert_eq!(entries.as_array().map(Vec::len), Some(1), "{created}");
    assert_eq!(entries[0]["manager"], "kubectl-create");
    assert_eq!(entries[0]["operation"], "Update");
    assert_eq!(entries[0]["apiVersion"], "v1");
    assert_eq!(entries[0]["fieldsType"], "FieldsV1");
    assert_eq!(
        entries[0]["fieldsV1"],
        json!({"f:data": {".": {}, "f:k": {}}, "f:metadata": {"f:labels": {".": {}, "f:a": {}}}})
    );
    // Another manager (the User-Agent's product name) takes the field it changed.
    let (status, _, patched) = s
        .exchange(
            ADMIN_TOKEN,
            Method::PATCH,
            &format!("{CONFIGMAPS}/managed"),
            &[
                (header::CONTENT_TYPE, "application/merge-patch+json"),
                (
                    header::USER_AGENT,
                    "kubectl/v1.33.0 (linux/amd64) kubernetes/abc",
                ),
            ],
            br#"{"data": {"k": "changed"}}"#.to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut managers: Vec<(&str, &Value)> = patched["metadata"]["managedFields"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| (e["manager"].as_str().unwrap_or_default(), &e["fieldsV1"]))
        .collect();
    // Entries are ordered by time first (kube's order): the create and the patch may fall in
    // the same second or not, so compare them by manager.
    managers.sort_by_key(|(manager, _)| *manager);
    assert_eq!(
        managers,
        [
            ("kubectl", &json!({"f:data": {"f:k": {}}})),
            (
                "kubectl-create",
                // Still the owner of `data` itself: a member without children is `{}`.
                &json!({"f:data": {}, "f:metadata": {"f:labels": {".": {}, "f:a": {}}}})
            ),
        ]
    );
}

#[tokio::test]
async fn invalid_objects_are_422_naming_every_field_as_kube_apiserver_does() {
    let s = server().await;
    let (status, body) = s
        .call(
            Method::POST,
            "/apis/apps/v1/namespaces/default/deployments",
            Some(json!({
                "metadata": {"name": "web"},
                "spec": {
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "other"}},
                        "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
                    },
                },
            })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_status(&body, 422, "Invalid");
    assert_eq!(
        body["message"],
        r#"Deployment.apps "web" is invalid: spec.template.metadata.labels: Invalid value: map[string]string{"app":"other"}: `selector` does not match template `labels`"#
    );
    assert_eq!(
        body["details"],
        json!({
            "name": "web", "group": "apps", "kind": "Deployment",
            "causes": [{
                "reason": "FieldValueInvalid",
                "message": r#"Invalid value: map[string]string{"app":"other"}: `selector` does not match template `labels`"#,
                "field": "spec.template.metadata.labels",
            }],
        })
    );
    // Several invalid fields are listed together.
    let (status, body) = s
        .call(
            Method::POST,
            "/api/v1/namespaces/default/pods",
            Some(json!({
                "metadata": {"name": "p"},
                "spec": {"containers": [
                    {"name": "Bad_Name", "image": "busybox"},
                    {"name": "b", "image": "", "ports": [{"containerPort": 70000}]},
                ]},
            })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let fields: Vec<&str> = body["details"]["causes"]
        .as_array()
        .expect("causes")
        .iter()
        .filter_map(|c| c["field"].as_str())
        .collect();
    assert_eq!(
        fields,
        [
            "spec.containers[0].name",
            "spec.containers[1].image",
            "spec.containers[1].ports[0].containerPort",
        ],
        "{body}"
    );
    assert!(
        body["message"].as_str().is_some_and(|m| m.starts_with(
            r#"Pod "p" is invalid: [spec.containers[0].name: Invalid value: "Bad_Name": "#
        )),
        "{body}"
    );
    // An update that changes an immutable field.
    s.ok(
        Method::POST,
        "/apis/apps/v1/namespaces/default/deployments",
        Some(json!({
            "metadata": {"name": "ok"},
            "spec": {
                "selector": {"matchLabels": {"app": "ok"}},
                "template": {
                    "metadata": {"labels": {"app": "ok", "v": "1"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
                },
            },
        })),
    )
    .await;
    let (status, body) = s
        .patch(
            "/apis/apps/v1/namespaces/default/deployments/ok",
            "application/merge-patch+json",
            json!({"spec": {"selector": {"matchLabels": {"app": "ok", "v": "1"}}}}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("spec.selector: Invalid value: ")
                && m.ends_with("field is immutable")),
        "{body}"
    );
}

#[tokio::test]
async fn objects_stored_before_a_default_existed_still_update() {
    let s = server().await;
    // A pod as an older keelson stored it: none of today's defaults.
    let key = "/registry/pods/default/old";
    let stored = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "old", "namespace": "default", "uid": "u-1",
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]},
        "status": {"phase": "Pending"},
    });
    s.store
        .create(key, stored.to_string().into())
        .await
        .expect("store the old pod");
    let (status, body) = s
        .patch(
            "/api/v1/namespaces/default/pods/old",
            "application/merge-patch+json",
            json!({"metadata": {"labels": {"touched": "yes"}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["spec"]["enableServiceLinks"], true,
        "defaulted on the way"
    );
}
