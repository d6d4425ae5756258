//! Server-side apply through the router: what `kubectl apply --server-side` and controllers
//! see (created objects, 409 conflicts with their causes, `force`, option errors, dry-run,
//! the status subresource).

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{DEPLOYMENTS, Server, assert_status, server};

const APPLY: &str = "application/apply-patch+yaml";

fn web(replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx"}]},
            },
        },
    })
}

async fn apply(s: &Server, query: &str, body: &Value) -> (StatusCode, Value) {
    s.patch(&format!("{DEPLOYMENTS}/web?{query}"), APPLY, body.clone())
        .await
}

fn owner_of_replicas(object: &Value) -> Vec<String> {
    object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["fieldsV1"].pointer("/f:spec/f:replicas").is_some())
        .filter_map(|e| e["manager"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn apply_creates_then_conflicts_then_forces() {
    let s = server().await;
    let (status, created) = apply(&s, "fieldManager=a", &web(2)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        created["metadata"]["managedFields"][0]["operation"],
        "Apply"
    );
    assert_eq!(created["metadata"]["managedFields"][0]["manager"], "a");
    assert_eq!(
        created["spec"]["strategy"]["type"], "RollingUpdate",
        "defaulted"
    );

    // The same configuration again: nothing is written.
    let (status, again) = apply(&s, "fieldManager=a", &web(2)).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(
        again["metadata"]["resourceVersion"],
        created["metadata"]["resourceVersion"]
    );

    let (status, conflict) = apply(&s, "fieldManager=b", &web(3)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{conflict}");
    assert_status(&conflict, 409, "Conflict");
    assert_eq!(
        conflict["message"],
        "Apply failed with 1 conflict: conflict with \"a\": .spec.replicas"
    );
    assert_eq!(
        conflict["details"],
        json!({"causes": [{
            "reason": "FieldManagerConflict",
            "message": "conflict with \"a\"",
            "field": ".spec.replicas",
        }]})
    );

    let (status, forced) = apply(&s, "fieldManager=b&force=true", &web(3)).await;
    assert_eq!(status, StatusCode::OK, "{forced}");
    assert_eq!(forced["spec"]["replicas"], 3);
    assert_eq!(owner_of_replicas(&forced), ["b"]);
    assert_eq!(forced["metadata"]["generation"], 2);

    // a stops applying replicas: b still owns them, they stay.
    let mut without = web(0);
    without["spec"]
        .as_object_mut()
        .map(|m| m.remove("replicas"));
    let (status, kept) = apply(&s, "fieldManager=a", &without).await;
    assert_eq!(status, StatusCode::OK, "{kept}");
    assert_eq!(kept["spec"]["replicas"], 3);
    assert_eq!(owner_of_replicas(&kept), ["b"]);

    // An update by another client takes the field it changes into an Update entry, and an
    // apply changing it then conflicts with that updater.
    let (status, _) = s
        .patch(
            &format!("{DEPLOYMENTS}/web?fieldManager=editor"),
            "application/merge-patch+json",
            json!({"spec": {"replicas": 4}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, conflict) = apply(&s, "fieldManager=b", &web(3)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{conflict}");
    assert_eq!(
        conflict["message"],
        "Apply failed with 1 conflict: conflict with \"editor\" using apps/v1: .spec.replicas"
    );
}

#[tokio::test]
async fn apply_requests_kube_apiserver_refuses() {
    let s = server().await;
    let mut wrong_type = web(1);
    wrong_type["spec"]["replicas"] = json!("three");
    let mut history = web(1);
    history["metadata"]["managedFields"] = json!([]);
    let mut other_name = web(1);
    other_name["metadata"]["name"] = json!("api");
    let cases: [(&str, Value, u16, &str, &str); 6] = [
        (
            "",
            web(1),
            422,
            "Invalid",
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required \
             for apply patch",
        ),
        (
            "fieldManager=a",
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web"}}),
            400,
            "BadRequest",
            "invalid object type: apps/v1, Kind=ReplicaSet",
        ),
        (
            "fieldManager=a",
            history,
            400,
            "BadRequest",
            "metadata.managedFields must be nil",
        ),
        (
            "fieldManager=a",
            other_name,
            400,
            "BadRequest",
            "the name of the object (api) does not match the name on the URL (web)",
        ),
        (
            "fieldManager=a",
            wrong_type,
            400,
            "BadRequest",
            "Deployment in version \"v1\" cannot be handled as a Deployment: ",
        ),
        (
            "fieldManager=a&force=maybe",
            web(1),
            400,
            "BadRequest",
            "strconv.ParseBool: parsing \"maybe\": invalid syntax",
        ),
    ];
    for (query, body, code, reason, message) in cases {
        let (status, answer) = apply(&s, query, &body).await;
        assert_eq!(status.as_u16(), code, "{query} {answer}");
        assert_status(&answer, code, reason);
        let text = answer["message"].as_str().unwrap_or_default();
        assert!(
            text.starts_with(message),
            "{text:?} should start with {message:?}"
        );
    }
    let (status, answer) = s
        .patch(
            &format!("{DEPLOYMENTS}/web?force=true"),
            "application/merge-patch+json",
            json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    assert_eq!(
        answer["message"],
        "PatchOptions.meta.k8s.io \"\" is invalid: force: Forbidden: may not be specified for \
         non-apply patch"
    );
}

#[tokio::test]
async fn apply_takes_yaml_honours_dry_run_and_applies_status() {
    let s = server().await;
    let yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  \
                replicas: 1\n  selector:\n    matchLabels: {app: web}\n  template:\n    \
                metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - \
                name: web\n        image: nginx\n";
    let uri = format!("{DEPLOYMENTS}/web?fieldManager=a&dryRun=All");
    let (status, dry) = s
        .raw(Method::PATCH, &uri, APPLY, yaml.as_bytes().to_vec())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{dry}");
    let (status, _) = s
        .call(Method::GET, &format!("{DEPLOYMENTS}/web"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "dry run stored nothing");

    // The status of a missing object is a 404, not a create.
    let status_uri = format!("{DEPLOYMENTS}/web/status?fieldManager=ctl");
    let status_config = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"}, "status": {"observedGeneration": 1}});
    let (status, _) = s.patch(&status_uri, APPLY, status_config.clone()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let uri = format!("{DEPLOYMENTS}/web?fieldManager=a");
    let (status, created) = s
        .raw(Method::PATCH, &uri, APPLY, yaml.as_bytes().to_vec())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, applied) = s.patch(&status_uri, APPLY, status_config).await;
    assert_eq!(status, StatusCode::OK, "{applied}");
    assert_eq!(applied["status"]["observedGeneration"], 1);
    let entry = applied["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["manager"] == "ctl")
        .cloned()
        .unwrap_or_default();
    assert_eq!(entry["subresource"], "status", "{applied}");
    assert_eq!(
        entry["fieldsV1"],
        json!({"f:status": {"f:observedGeneration": {}}})
    );
}

#[tokio::test]
async fn unknown_fields_in_an_apply_are_warned_about_and_owned_by_nobody() {
    let s = server().await;
    let mut config = web(1);
    config["spec"]["replicaz"] = json!(5);
    let uri = format!("{DEPLOYMENTS}/web?fieldManager=a");
    let (status, headers, created) = s
        .exchange(
            super::ADMIN_TOKEN,
            Method::PATCH,
            &uri,
            &[(axum::http::header::CONTENT_TYPE, APPLY)],
            config.to_string().into_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let warnings: Vec<&str> = headers
        .get_all("warning")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert_eq!(warnings, ["299 - \"unknown field \\\"spec.replicaz\\\"\""]);
    assert_eq!(created["spec"].get("replicaz"), None);
    assert_eq!(
        created["metadata"]["managedFields"][0]["fieldsV1"].pointer("/f:spec/f:replicaz"),
        None
    );
    let (status, refused) = apply(&s, "fieldManager=a&fieldValidation=Strict", &config).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert_eq!(
        refused["message"],
        "Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: \
         unknown field \"spec.replicaz\""
    );
}

#[tokio::test]
async fn bad_apply_bodies_are_4xx_statuses() {
    let s = server().await;
    let uri = format!("{DEPLOYMENTS}/web?fieldManager=a");
    let mut twice = web(1);
    twice["spec"]["template"]["spec"]["containers"] =
        json!([{"name": "x", "image": "1"}, {"name": "x", "image": "2"}]);
    let mut no_spec = web(1);
    no_spec["spec"] = json!("everything");
    let (twice, no_spec) = (twice.to_string(), no_spec.to_string());
    let cases: [(&[u8], u16, &str); 5] = [
        (b"- a\n- b\n", 400, "error decoding YAML: "),
        (b"kind: [", 400, "error decoding YAML: "),
        (
            twice.as_bytes(),
            400,
            "failed to create typed patch object (apps/v1, Kind=Deployment default/web): \
             .spec.template.spec.containers: duplicate entries for key [name=\"x\"]",
        ),
        (
            no_spec.as_bytes(),
            400,
            "Deployment in version \"v1\" cannot be handled as a Deployment: ",
        ),
        (
            br#"{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}}"#,
            422,
            "Deployment.apps \"web\" is invalid: ",
        ),
    ];
    for (body, code, message) in cases {
        let (status, answer) = s.raw(Method::PATCH, &uri, APPLY, body.to_vec()).await;
        assert_eq!(status.as_u16(), code, "{answer}");
        let text = answer["message"].as_str().unwrap_or_default();
        assert!(
            text.starts_with(message),
            "{text:?} should start with {message:?}"
        );
    }
}

#[tokio::test]
async fn apply_to_scale_conflicts_forces_and_hands_ownership_to_the_parent() {
    let s = server().await;
    let (status, _) = apply(&s, "fieldManager=a", &web(2)).await;
    assert_eq!(status, StatusCode::CREATED);
    let scale = json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
        "metadata": {"name": "web"}, "spec": {"replicas": 5}});
    let uri = |query: &str| format!("{DEPLOYMENTS}/web/scale?{query}");
    let (status, conflict) = s
        .patch(&uri("fieldManager=hpa"), APPLY, scale.clone())
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{conflict}");
    assert_eq!(
        conflict["message"],
        "Apply failed with 1 conflict: conflict with \"a\": .spec.replicas"
    );
    let (status, answer) = s
        .patch(&uri("fieldManager=hpa&force=true"), APPLY, scale)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["kind"], "Scale");
    assert_eq!(answer["spec"]["replicas"], 5);
    let deployment = s.ok(Method::GET, &format!("{DEPLOYMENTS}/web"), None).await;
    assert_eq!(deployment["spec"]["replicas"], 5);
    assert_eq!(owner_of_replicas(&deployment), ["hpa"]);
    let hpa = deployment["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["manager"] == "hpa")
        .cloned()
        .unwrap_or_default();
    assert_eq!(hpa["subresource"], "scale", "{deployment}");
    assert_eq!(hpa["apiVersion"], "apps/v1");
    assert_eq!(hpa["operation"], "Apply");
    let (status, missing) = s
        .patch(
            &format!("{DEPLOYMENTS}/nope/scale?fieldManager=hpa"),
            APPLY,
            json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "nope"}}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{missing}");
}
