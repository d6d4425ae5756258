//! Admission webhooks, called over HTTPS on loopback: a tiny webhook server in each test
//! (a CA and a serving certificate for 127.0.0.1 from rcgen) that refuses, labels, or
//! answers slowly, and records the AdmissionReview requests it got.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{Method, StatusCode, header},
    routing::post,
};
use base64::Engine as _;
use serde_json::{Value, json};

use super::{ADMIN_TOKEN, CONFIGMAPS, Server, assert_status, configmap, https, server};

type Seen = Arc<Mutex<Vec<Value>>>;

/// A webhook server on 127.0.0.1: `POST /<mode>` with mode `deny`, `label`, `slow` or
/// anything else (allow).
struct Webhook {
    port: u16,
    base: String,
    ca_bundle: String,
    seen: Seen,
    _server: https::HttpsServer,
}

impl Webhook {
    fn seen(&self) -> Vec<Value> {
        self.seen.lock().expect("lock").clone()
    }
}

async fn answer(State(seen): State<Seen>, Path(mode): Path<String>, body: Bytes) -> String {
    let review: Value = serde_json::from_slice(&body).expect("an AdmissionReview");
    let request = review["request"].clone();
    seen.lock().expect("lock").push(request.clone());
    let uid = request["uid"].clone();
    let name = request["name"].as_str().unwrap_or_default().to_owned();
    let response = match mode.as_str() {
        "deny" => json!({"uid": uid, "allowed": false, "status": {
            "code": 403, "reason": "Forbidden", "message": format!("configmap {name} breaks the test policy")}}),
        "label" => {
            let has_labels = request["object"]["metadata"]["labels"].is_object();
            let patch = if has_labels {
                json!([{"op": "add", "path": "/metadata/labels/injected", "value": "yes"}])
            } else {
                json!([{"op": "add", "path": "/metadata/labels", "value": {"injected": "yes"}}])
            };
            json!({"uid": uid, "allowed": true, "patchType": "JSONPatch",
                   "patch": base64::engine::general_purpose::STANDARD.encode(patch.to_string()),
                   "warnings": ["labelled by the test webhook"]})
        }
        // Notes in an annotation whether the object already carries the `injected` label.
        "copy" => {
            let injected = request["object"]["metadata"]["labels"]["injected"].clone();
            if injected.is_null() {
                json!({"uid": uid, "allowed": true})
            } else {
                let patch = json!([{"op": "add", "path": "/metadata/annotations",
                                    "value": {"saw-injected": injected}}]);
                json!({"uid": uid, "allowed": true, "patchType": "JSONPatch",
                       "patch": base64::engine::general_purpose::STANDARD.encode(patch.to_string())})
            }
        }
        "slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            json!({"uid": uid, "allowed": true})
        }
        _ => json!({"uid": uid, "allowed": true}),
    };
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response})
        .to_string()
}

async fn webhook_server() -> Webhook {
    webhook_server_named(&[]).await
}

/// [`webhook_server`] whose certificate also names `dns_names`.
async fn webhook_server_named(dns_names: &[&str]) -> Webhook {
    let seen = Seen::default();
    let router = Router::new()
        .route("/{mode}", post(answer))
        .with_state(Arc::clone(&seen));
    let server = https::serve(router, dns_names).await;
    Webhook {
        port: server.port,
        base: server.base.clone(),
        ca_bundle: server.ca_bundle.clone(),
        seen,
        _server: server,
    }
}

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    listener.local_addr().expect("address").port()
}

const VALIDATING: &str = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations";
const MUTATING: &str = "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations";

/// A webhook on configmaps for `operations`, served at `url`, with `extra` fields.
fn webhook(
    name: &str,
    url: &str,
    ca_bundle: Option<&str>,
    operations: &[&str],
    extra: Value,
) -> Value {
    let mut client = json!({"url": url});
    if let Some(ca) = ca_bundle {
        client["caBundle"] = json!(ca);
    }
    let mut hook = json!({
        "name": name,
        "clientConfig": client,
        "rules": [{"operations": operations, "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}],
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
    });
    if let (Some(h), Some(extra)) = (hook.as_object_mut(), extra.as_object()) {
        h.extend(extra.clone());
    }
    hook
}

async fn configure(s: &Server, collection: &str, name: &str, hooks: Value) {
    let kind = if collection == VALIDATING {
        "ValidatingWebhookConfiguration"
    } else {
        "MutatingWebhookConfiguration"
    };
    s.ok(
        Method::POST,
        collection,
        Some(
            json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
                    "metadata": {"name": name}, "webhooks": hooks}),
        ),
    )
    .await;
}

fn warnings(headers: &header::HeaderMap) -> Vec<String> {
    headers
        .get_all("warning")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn a_validating_webhook_refuses_with_kubes_message_and_sees_the_request() {
    let s = server().await;
    let hook = webhook_server().await;
    configure(
        &s,
        VALIDATING,
        "policy",
        json!([webhook(
            "deny.keelson.test",
            &format!("{}/deny", hook.base),
            Some(&hook.ca_bundle),
            &["CREATE", "DELETE"],
            json!({"objectSelector": {"matchLabels": {"policy": "strict"}}}),
        )]),
    )
    .await;
    // Refused: the webhook's 403 and message, after kube's words.
    let (status, body) = s
        .call(
            Method::POST,
            CONFIGMAPS,
            Some(configmap("strict", json!({"policy": "strict"}))),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_status(&body, 403, "Forbidden");
    assert_eq!(
        body["message"],
        "admission webhook \"deny.keelson.test\" denied the request: configmap strict breaks the test policy"
    );
    let (status, _) = s
        .call(Method::GET, &format!("{CONFIGMAPS}/strict"), None)
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a refused object is not stored"
    );
    // What the webhook was told.
    let request = hook.seen().pop().expect("the webhook was called");
    assert_eq!(request["operation"], "CREATE");
    assert_eq!(
        request["kind"],
        json!({"group": "", "version": "v1", "kind": "ConfigMap"})
    );
    assert_eq!(
        request["resource"],
        json!({"group": "", "version": "v1", "resource": "configmaps"})
    );
    assert_eq!(request["requestKind"], request["kind"]);
    assert_eq!(request["name"], "strict");
    assert_eq!(request["namespace"], "default");
    assert_eq!(
        request["userInfo"],
        json!({"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]})
    );
    assert_eq!(request["dryRun"], false);
    assert_eq!(request["options"]["kind"], "CreateOptions");
    assert_eq!(request["object"]["data"], json!({"k": "v"}));
    assert_eq!(request["oldObject"], Value::Null);
    assert!(request["uid"].as_str().is_some_and(|u| !u.is_empty()));
    // The objectSelector lets other objects through without a call.
    let calls = hook.seen().len();
    s.ok(
        Method::POST,
        CONFIGMAPS,
        Some(configmap("relaxed", json!({}))),
    )
    .await;
    assert_eq!(
        hook.seen().len(),
        calls,
        "objectSelector excludes the object"
    );
    // DELETE: the webhook sees the stored object as oldObject and can refuse.
    s.ok(
        Method::PUT,
        &format!("{CONFIGMAPS}/relaxed"),
        Some(configmap("relaxed", json!({"policy": "strict"}))),
    )
    .await;
    let (status, body) = s
        .call(Method::DELETE, &format!("{CONFIGMAPS}/relaxed"), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let request = hook.seen().pop().expect("called on delete");
    assert_eq!(request["operation"], "DELETE");
    assert_eq!(request["object"], Value::Null);
    assert_eq!(request["oldObject"]["metadata"]["name"], "relaxed");
    assert_eq!(request["options"]["kind"], "DeleteOptions");
    s.ok(Method::GET, &format!("{CONFIGMAPS}/relaxed"), None)
        .await;
    // Removing the configuration stops the calls at once.
    s.ok(Method::DELETE, &format!("{VALIDATING}/policy"), None)
        .await;
    s.ok(Method::DELETE, &format!("{CONFIGMAPS}/relaxed"), None)
        .await;
}

#[tokio::test]
async fn a_mutating_webhook_adds_a_label_on_create_and_update() {
    let s = server().await;
    let hook = webhook_server().await;
    configure(
        &s,
        MUTATING,
        "labeller",
        json!([webhook(
            "label.keelson.test",
            &format!("{}/label", hook.base),
            Some(&hook.ca_bundle),
            &["CREATE", "UPDATE"],
            json!({}),
        )]),
    )
    .await;
    let (status, headers, created) = s
        .exchange(
            ADMIN_TOKEN,
            Method::POST,
            CONFIGMAPS,
            &[(header::CONTENT_TYPE, "application/json")],
            configmap("plain", json!({"app": "web"}))
                .to_string()
                .into_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        created["metadata"]["labels"],
        json!({"app": "web", "injected": "yes"})
    );
    assert_eq!(
        warnings(&headers),
        ["299 - \"labelled by the test webhook\""]
    );
    let stored = s
        .ok(Method::GET, &format!("{CONFIGMAPS}/plain"), None)
        .await;
    assert_eq!(stored["metadata"]["labels"]["injected"], "yes");
    // An update without labels gets the label back, and the webhook saw the old object.
    let mut update = configmap("plain", json!(null));
    update["metadata"]
        .as_object_mut()
        .expect("metadata")
        .remove("labels");
    let updated = s
        .ok(Method::PUT, &format!("{CONFIGMAPS}/plain"), Some(update))
        .await;
    assert_eq!(updated["metadata"]["labels"], json!({"injected": "yes"}));
    let request = hook.seen().pop().expect("called on update");
    assert_eq!(request["operation"], "UPDATE");
    assert_eq!(request["options"]["kind"], "UpdateOptions");
    assert_eq!(
        request["oldObject"]["metadata"]["labels"],
        json!({"app": "web", "injected": "yes"})
    );
    // A merge patch removing the label: admitted as an UPDATE with PatchOptions.
    let (status, patched) = s
        .patch(
            &format!("{CONFIGMAPS}/plain"),
            "application/merge-patch+json",
            json!({"metadata": {"labels": {"injected": null}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["metadata"]["labels"], json!({"injected": "yes"}));
    assert_eq!(
        hook.seen().pop().expect("called on patch")["options"]["kind"],
        "PatchOptions"
    );
}

#[tokio::test]
async fn an_unreachable_webhook_blocks_only_when_it_fails_closed() {
    let s = server().await;
    let port = closed_port().await;
    let url = format!("https://127.0.0.1:{port}/");
    configure(
        &s,
        VALIDATING,
        "gone-ignore",
        json!([webhook(
            "ignore.keelson.test",
            &url,
            None,
            &["CREATE"],
            json!({"failurePolicy": "Ignore"})
        )]),
    )
    .await;
    s.ok(
        Method::POST,
        CONFIGMAPS,
        Some(configmap("first", json!({}))),
    )
    .await;
    configure(
        &s,
        MUTATING,
        "gone-fail",
        json!([webhook(
            "fail.keelson.test",
            &url,
            None,
            &["CREATE"],
            json!({})
        )]),
    )
    .await;
    let (status, body) = s
        .call(
            Method::POST,
            CONFIGMAPS,
            Some(configmap("second", json!({}))),
        )
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_status(&body, 500, "InternalError");
    let message = body["message"].as_str().unwrap_or_default();
    let expected = format!(
        "Internal error occurred: failed calling webhook \"fail.keelson.test\": failed to call \
         webhook: Post \"https://127.0.0.1:{port}/?timeout=10s\": dial tcp 127.0.0.1:{port}: \
         connect: connection refused"
    );
    assert_eq!(message, expected);
}

#[tokio::test]
async fn a_namespace_selector_leaves_out_the_namespaces_it_does_not_select() {
    let s = server().await;
    let hook = webhook_server().await;
    s.ok(
        Method::POST,
        "/api/v1/namespaces",
        Some(json!({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": "quiet", "labels": {"webhooks": "off"}}})),
    )
    .await;
    configure(
        &s,
        VALIDATING,
        "policy",
        json!([webhook(
            "deny.keelson.test",
            &format!("{}/deny", hook.base),
            Some(&hook.ca_bundle),
            &["CREATE"],
            json!({"namespaceSelector": {"matchExpressions": [
                {"key": "webhooks", "operator": "NotIn", "values": ["off"]}]}}),
        )]),
    )
    .await;
    s.ok(
        Method::POST,
        "/api/v1/namespaces/quiet/configmaps",
        Some(configmap("left-alone", json!({}))),
    )
    .await;
    assert!(
        hook.seen().is_empty(),
        "no call for an unselected namespace"
    );
    let (status, body) = s
        .call(
            Method::POST,
            CONFIGMAPS,
            Some(configmap("checked", json!({}))),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
}

#[tokio::test]
async fn a_slow_webhook_times_out_within_its_timeout() {
    let s = server().await;
    let hook = webhook_server().await;
    let slow = |name: &str, policy: &str| {
        webhook(
            name,
            &format!("{}/slow", hook.base),
            Some(&hook.ca_bundle),
            &["CREATE"],
            json!({"timeoutSeconds": 1, "failurePolicy": policy}),
        )
    };
    configure(
        &s,
        VALIDATING,
        "slow-ignore",
        json!([slow("ignore.keelson.test", "Ignore")]),
    )
    .await;
    let started = Instant::now();
    s.ok(Method::POST, CONFIGMAPS, Some(configmap("late", json!({}))))
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    configure(
        &s,
        VALIDATING,
        "slow-fail",
        json!([slow("fail.keelson.test", "Fail")]),
    )
    .await;
    let started = Instant::now();
    let (status, body) = s
        .call(
            Method::POST,
            CONFIGMAPS,
            Some(configmap("later", json!({}))),
        )
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message
            .starts_with("Internal error occurred: failed calling webhook \"fail.keelson.test\"")
            && message.ends_with("?timeout=1s\": context deadline exceeded"),
        "{message}"
    );
}

#[tokio::test]
async fn dry_runs_reach_webhooks_that_declare_no_side_effects() {
    let s = server().await;
    let hook = webhook_server().await;
    configure(
        &s,
        VALIDATING,
        "effects",
        json!([webhook(
            "effects.keelson.test",
            &format!("{}/deny", hook.base),
            Some(&hook.ca_bundle),
            &["CREATE"],
            json!({"sideEffects": "NoneOnDryRun"}),
        )]),
    )
    .await;
    let (status, body) = s
        .call(
            Method::POST,
            &format!("{CONFIGMAPS}?dryRun=All"),
            Some(configmap("a", json!({}))),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let request = hook.seen().pop().expect("called in dry run");
    assert_eq!(request["dryRun"], true);
    assert_eq!(request["options"]["dryRun"], json!(["All"]));
}

#[tokio::test]
async fn a_webhook_service_is_reached_at_a_ready_endpoint() {
    let s = server().await;
    let hook = webhook_server_named(&["hook.default.svc"]).await;
    s.ok(
        Method::POST,
        "/api/v1/namespaces/default/services",
        Some(
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hook"},
                    "spec": {"ports": [{"name": "https", "port": 443, "targetPort": hook.port}]}}),
        ),
    )
    .await;
    // Kubernetes' validation refuses loopback endpoint addresses from clients; the test's
    // webhook listens on loopback, so its EndpointSlice goes straight into the store.
    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "hook-1", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "hook"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
        "ports": [{"name": "https", "port": hook.port, "protocol": "TCP"}]});
    s.store
        .create(
            "/registry/endpointslices/default/hook-1",
            slice.to_string().into_bytes().into(),
        )
        .await
        .expect("store the EndpointSlice");
    let mut refusing = webhook(
        "svc.keelson.test",
        "",
        Some(&hook.ca_bundle),
        &["CREATE"],
        json!({}),
    );
    refusing["clientConfig"] = json!({"caBundle": hook.ca_bundle,
        "service": {"namespace": "default", "name": "hook", "path": "/deny"}});
    configure(&s, VALIDATING, "by-service", json!([refusing])).await;
    let (status, body) = s
        .call(
            Method::POST,
            CONFIGMAPS,
            Some(configmap("via-service", json!({}))),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        body["message"],
        "admission webhook \"svc.keelson.test\" denied the request: configmap via-service breaks the test policy"
    );
}

#[tokio::test]
async fn an_if_needed_webhook_runs_again_after_a_later_one_changed_the_object() {
    let s = server().await;
    let hook = webhook_server().await;
    let mutating = |name: &str, mode: &str, reinvocation: &str| {
        webhook(
            name,
            &format!("{}/{mode}", hook.base),
            Some(&hook.ca_bundle),
            &["CREATE"],
            json!({"reinvocationPolicy": reinvocation}),
        )
    };
    // Configurations run in name order: "a-copy" first, then "b-label".
    configure(
        &s,
        MUTATING,
        "a-copy",
        json!([mutating("copy.keelson.test", "copy", "IfNeeded")]),
    )
    .await;
    configure(
        &s,
        MUTATING,
        "b-label",
        json!([mutating("label.keelson.test", "label", "Never")]),
    )
    .await;
    let created = s
        .ok(
            Method::POST,
            CONFIGMAPS,
            Some(configmap("twice", json!({}))),
        )
        .await;
    assert_eq!(created["metadata"]["labels"], json!({"injected": "yes"}));
    assert_eq!(
        created["metadata"]["annotations"],
        json!({"saw-injected": "yes"}),
        "the IfNeeded webhook saw the later webhook's label on its second call"
    );
    assert_eq!(hook.seen().len(), 3, "copy, label, copy again");
}

#[tokio::test]
async fn equivalent_match_policy_sees_events_k8s_io_events_as_core_events() {
    let s = server().await;
    let hook = webhook_server().await;
    let on_core_events = |name: &str, policy: &str| {
        let mut w = webhook(
            name,
            &format!("{}/allow", hook.base),
            Some(&hook.ca_bundle),
            &["CREATE"],
            json!({"matchPolicy": policy}),
        );
        w["rules"][0]["resources"] = json!(["events"]);
        w
    };
    configure(
        &s,
        VALIDATING,
        "events",
        json!([
            on_core_events("exact.keelson.test", "Exact"),
            on_core_events("equivalent.keelson.test", "Equivalent")
        ]),
    )
    .await;
    s.ok(
        Method::POST,
        "/apis/events.k8s.io/v1/namespaces/default/events",
        Some(json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "e1"}, "eventTime": "2026-01-01T00:00:00.000000Z",
            "reportingController": "keelson.test/tests", "reportingInstance": "t1",
            "action": "Test", "reason": "Tested", "type": "Normal", "note": "hello",
            "regarding": {"kind": "Pod", "name": "p", "namespace": "default"}})),
    )
    .await;
    let seen = hook.seen();
    assert_eq!(
        seen.len(),
        1,
        "only the Equivalent webhook is called: {seen:?}"
    );
    let request = &seen[0];
    assert_eq!(
        request["kind"],
        json!({"group": "", "version": "v1", "kind": "Event"})
    );
    assert_eq!(
        request["resource"],
        json!({"group": "", "version": "v1", "resource": "events"})
    );
    assert_eq!(
        request["requestKind"],
        json!({"group": "events.k8s.io", "version": "v1", "kind": "Event"})
    );
    assert_eq!(request["object"]["apiVersion"], "v1");
    assert_eq!(request["object"]["message"], "hello");
}
