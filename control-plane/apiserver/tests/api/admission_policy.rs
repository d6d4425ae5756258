//! ValidatingAdmissionPolicies and webhook `matchConditions`: CEL in admission, as a
//! client of kube-apiserver 1.33 sees it.

use axum::http::{Method, StatusCode, header};
use serde_json::{Value, json};

use super::{ADMIN_TOKEN, CONFIGMAPS, DEPLOYMENTS, Server, assert_status, deployment, server};

const POLICIES: &str = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies";
const BINDINGS: &str = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicybindings";
const VALIDATING: &str = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations";

/// A policy on Deployments with `spec` fields added to `matchConstraints` and `validations`.
fn policy(name: &str, extra: Value) -> Value {
    let mut spec = json!({
        "matchConstraints": {"resourceRules": [{
            "apiGroups": ["apps"], "apiVersions": ["v1"],
            "operations": ["CREATE", "UPDATE"], "resources": ["deployments"]}]},
        "validations": [{"expression": "object.spec.replicas <= 5"}],
    });
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(extra.clone());
    }
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
           "metadata": {"name": name}, "spec": spec})
}

fn binding(name: &str, policy: &str, actions: &[&str], extra: Value) -> Value {
    let mut spec = json!({"policyName": policy, "validationActions": actions});
    if let (Some(s), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(extra.clone());
    }
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
           "metadata": {"name": name}, "spec": spec})
}

async fn install(s: &Server, policy: Value, binding: Value) {
    s.ok(Method::POST, POLICIES, Some(policy)).await;
    s.ok(Method::POST, BINDINGS, Some(binding)).await;
}

/// POSTs `body` to `uri`: status, the `Warning` headers of policies, body.
async fn create(s: &Server, uri: &str, body: &Value) -> (StatusCode, Vec<String>, Value) {
    let (status, headers, value) = s
        .exchange(
            ADMIN_TOKEN,
            Method::POST,
            uri,
            &[(header::CONTENT_TYPE, "application/json")],
            body.to_string().into_bytes(),
        )
        .await;
    let warnings = headers
        .get_all("warning")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .filter(|w| w.contains("ValidatingAdmissionPolicy"))
        .collect();
    (status, warnings, value)
}

#[tokio::test]
async fn a_deny_binding_refuses_with_kubes_422_and_message() {
    let s = server().await;
    install(
        &s,
        policy("replicas-limit", json!({})),
        binding(
            "replicas-limit-binding",
            "replicas-limit",
            &["Deny"],
            json!({}),
        ),
    )
    .await;
    let expected = "deployments.apps \"big\" is forbidden: ValidatingAdmissionPolicy 'replicas-limit' \
                    with binding 'replicas-limit-binding' denied request: failed expression: \
                    object.spec.replicas <= 5";
    for uri in [format!("{DEPLOYMENTS}?dryRun=All"), DEPLOYMENTS.to_owned()] {
        let (status, _, body) = create(&s, &uri, &deployment("big", 6)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{uri}: {body}");
        assert_status(&body, 422, "Invalid");
        assert_eq!(body["message"], expected);
        assert_eq!(
            body["details"]["causes"][0]["message"],
            expected
                .split_once("is forbidden: ")
                .map(|(_, m)| m)
                .unwrap_or_default()
        );
        assert_eq!(body["details"]["kind"], "deployments");
        assert_eq!(
            body["details"]["causes"][0].as_object().map(|c| c.len()),
            Some(1),
            "a cause with only a message: {body}"
        );
    }
    let (status, _) = s
        .call(Method::GET, &format!("{DEPLOYMENTS}/big"), None)
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a refused object is not stored"
    );
    // Within the limit: created; an update past it is refused too.
    s.ok(Method::POST, DEPLOYMENTS, Some(deployment("small", 5)))
        .await;
    let (status, body) = s
        .call(
            Method::PUT,
            &format!("{DEPLOYMENTS}/small"),
            Some(deployment("small", 7)),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    // Other kinds are not matched.
    s.ok(
        Method::POST,
        CONFIGMAPS,
        Some(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})),
    )
    .await;
    // Deleting the binding lifts the policy.
    s.ok(
        Method::DELETE,
        &format!("{BINDINGS}/replicas-limit-binding"),
        None,
    )
    .await;
    s.ok(Method::POST, DEPLOYMENTS, Some(deployment("big", 6)))
        .await;
}

#[tokio::test]
async fn reasons_and_messages_of_validations_reach_the_client() {
    let s = server().await;
    install(
        &s,
        policy(
            "named",
            json!({"validations": [{
                "expression": "object.metadata.name.startsWith('web-')",
                "message": "static message",
                "messageExpression": "'name ' + object.metadata.name + ' must start with web-'",
                "reason": "Forbidden"}]}),
        ),
        binding("named", "named", &["Deny"], json!({})),
    )
    .await;
    let (status, _, body) = create(&s, DEPLOYMENTS, &deployment("api", 1)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_status(&body, 403, "Forbidden");
    assert_eq!(
        body["message"],
        "deployments.apps \"api\" is forbidden: ValidatingAdmissionPolicy 'named' with binding \
         'named' denied request: name api must start with web-"
    );
}

#[tokio::test]
async fn a_warn_binding_admits_with_a_warning_header() {
    let s = server().await;
    install(
        &s,
        policy("replicas-limit", json!({})),
        binding("warn-only", "replicas-limit", &["Warn", "Audit"], json!({})),
    )
    .await;
    let (status, warnings, body) = create(&s, DEPLOYMENTS, &deployment("big", 6)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        warnings,
        [
            "299 - \"Validation failed for ValidatingAdmissionPolicy 'replicas-limit' with binding \
          'warn-only': failed expression: object.spec.replicas <= 5\""
        ]
    );
    let (_, warnings, _) = create(&s, DEPLOYMENTS, &deployment("fine", 2)).await;
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[tokio::test]
async fn a_binding_with_a_namespace_selector_applies_only_there() {
    let s = server().await;
    s.ok(
        Method::POST,
        "/api/v1/namespaces",
        Some(json!({"apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": "prod", "labels": {"env": "prod"}}})),
    )
    .await;
    install(
        &s,
        policy(
            "replicas-limit",
            json!({"validations": [{
                "expression": "object.spec.replicas <= 5",
                "messageExpression": "'too many replicas in ' + namespaceObject.metadata.name"}]}),
        ),
        binding(
            "prod-only",
            "replicas-limit",
            &["Deny"],
            json!({"matchResources": {"namespaceSelector": {"matchLabels": {"env": "prod"}}}}),
        ),
    )
    .await;
    s.ok(Method::POST, DEPLOYMENTS, Some(deployment("big", 6)))
        .await;
    let (status, _, body) = create(
        &s,
        "/apis/apps/v1/namespaces/prod/deployments",
        &deployment("big", 6),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        body["message"],
        "deployments.apps \"big\" is forbidden: ValidatingAdmissionPolicy 'replicas-limit' with \
         binding 'prod-only' denied request: too many replicas in prod"
    );
}

#[tokio::test]
async fn params_come_from_a_configmap_named_by_the_binding() {
    let s = server().await;
    install(
        &s,
        policy(
            "replicas-param",
            json!({
                "paramKind": {"apiVersion": "v1", "kind": "ConfigMap"},
                "validations": [{
                    "expression": "object.spec.replicas <= int(params.data.max)",
                    "messageExpression": "'at most ' + params.data.max + ' replicas'"}]}),
        ),
        binding(
            "replicas-param",
            "replicas-param",
            &["Deny"],
            json!({"paramRef": {"name": "limits", "namespace": "default",
                                "parameterNotFoundAction": "Deny"}}),
        ),
    )
    .await;
    // No params yet: refused as kube refuses it.
    let (status, _, body) = create(&s, DEPLOYMENTS, &deployment("web", 1)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        body["message"],
        "deployments.apps \"web\" is forbidden: ValidatingAdmissionPolicy 'replicas-param' with \
         binding 'replicas-param' denied request: failed to configure binding: no params found \
         for policy binding with `Deny` parameterNotFoundAction"
    );
    s.ok(
        Method::POST,
        CONFIGMAPS,
        Some(json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": "limits"}, "data": {"max": "2"}})),
    )
    .await;
    let (status, _, body) = create(&s, DEPLOYMENTS, &deployment("web", 3)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.ends_with("denied request: at most 2 replicas")),
        "{body}"
    );
    s.ok(Method::POST, DEPLOYMENTS, Some(deployment("web", 2)))
        .await;
}

#[tokio::test]
async fn expressions_that_do_not_compile_are_refused_at_write() {
    let s = server().await;
    let (status, body) = s
        .call(
            Method::POST,
            POLICIES,
            Some(policy(
                "broken",
                json!({"validations": [{"expression": "object.spec.replicas <="}]}),
            )),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_status(&body, 422, "Invalid");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with(
            "ValidatingAdmissionPolicy.admissionregistration.k8s.io \"broken\" is invalid: \
             spec.validations[0].expression: Invalid value: \"object.spec.replicas <=\": \
             compilation failed: ERROR: <input>:1:"
        ),
        "{message}"
    );
    assert_eq!(
        body["details"]["causes"][0]["field"],
        "spec.validations[0].expression"
    );
    // `params` without a paramKind is an undeclared name.
    let (status, body) = s
        .call(
            Method::POST,
            POLICIES,
            Some(policy(
                "no-params",
                json!({"validations": [{"expression": "params.x == 1"}]}),
            )),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("undeclared reference to 'params'")),
        "{body}"
    );
    // A webhook's matchCondition too.
    let (status, body) = s
        .call(
            Method::POST,
            VALIDATING,
            Some(json!({"apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingWebhookConfiguration", "metadata": {"name": "w"},
                "webhooks": [webhook("w.keelson.test", 1, json!([{"name": "c", "expression": "object.("}]))]})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        body["details"]["causes"][0]["field"],
        "webhooks[0].matchConditions[0].expression"
    );
}

/// A validating webhook on configmaps at `port` of 127.0.0.1 (nothing listens there in these
/// tests: calling it fails the request), with `matchConditions`.
fn webhook(name: &str, port: u16, conditions: Value) -> Value {
    json!({
        "name": name,
        "clientConfig": {"url": format!("https://127.0.0.1:{port}/")},
        "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["configmaps"]}],
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "timeoutSeconds": 1,
        "matchConditions": conditions,
    })
}

#[tokio::test]
async fn webhooks_whose_match_conditions_fail_are_not_called() {
    let s = server().await;
    let port = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        listener.local_addr().expect("address").port()
    };
    s.ok(
        Method::POST,
        VALIDATING,
        Some(json!({"apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration", "metadata": {"name": "unreachable"},
            "webhooks": [webhook("unreachable.keelson.test", port, json!([
                {"name": "only-checked", "expression": "has(object.metadata.labels) && has(object.metadata.labels.checked) && object.metadata.labels.checked == 'yes'"},
                {"name": "not-admins", "expression": "!('system:masters' in request.userInfo.groups) || object.metadata.name != 'skip'"},
            ]))]})),
    )
    .await;
    let configmap = |name: &str, labels: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels}});
    // A false condition: the (unreachable) webhook is not called, the write succeeds.
    s.ok(
        Method::POST,
        CONFIGMAPS,
        Some(configmap("plain", json!({}))),
    )
    .await;
    s.ok(
        Method::POST,
        CONFIGMAPS,
        Some(configmap("skip", json!({"checked": "yes"}))),
    )
    .await;
    // All conditions hold: the webhook is called, and failing to reach it fails the request.
    let (status, body) = s
        .call(
            Method::POST,
            CONFIGMAPS,
            Some(configmap("checked", json!({"checked": "yes"}))),
        )
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("failed calling webhook \"unreachable.keelson.test\"")),
        "{body}"
    );
}

#[tokio::test]
async fn a_match_condition_error_fails_closed_with_kubes_403() {
    let s = server().await;
    s.ok(
        Method::POST,
        VALIDATING,
        Some(json!({"apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration", "metadata": {"name": "erring"},
        "webhooks": [webhook("erring.keelson.test", 1, json!([
            {"name": "missing", "expression": "object.data.absent == 'x'"},
        ]))]})),
    )
    .await;
    let (status, body) = s
        .call(
            Method::POST,
            CONFIGMAPS,
            Some(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"k": "v"}})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_status(&body, 403, "Forbidden");
    assert_eq!(
        body["message"],
        "configmaps \"c\" is forbidden: expression 'object.data.absent == 'x'' resulted in error: \
         no such key: absent"
    );
}

#[tokio::test]
async fn an_equivalent_resource_is_matched_and_seen_as_the_policy_names_it() {
    let s = server().await;
    let on_core_events = |name: &str, match_policy: &str| {
        json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {"matchConstraints": {"matchPolicy": match_policy, "resourceRules": [{
                        "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["events"]}]},
                     // `message` is the core Event's name for events.k8s.io's `note`.
                     "validations": [{"expression": "object.message != 'hello'",
                                      "messageExpression": "request.kind.group + '/' + request.kind.kind + ': ' + object.message"}]}})
    };
    install(
        &s,
        on_core_events("exact", "Exact"),
        binding("exact", "exact", &["Deny"], json!({})),
    )
    .await;
    let event = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "e1"}, "eventTime": "2026-01-01T00:00:00.000000Z",
        "reportingController": "keelson.test/tests", "reportingInstance": "t1",
        "action": "Test", "reason": "Tested", "type": "Normal", "note": "hello",
        "regarding": {"kind": "Pod", "name": "p", "namespace": "default"}});
    let uri = "/apis/events.k8s.io/v1/namespaces/default/events";
    // Exact: an events.k8s.io request is not covered by a rule on core events.
    s.ok(
        Method::POST,
        &format!("{uri}?dryRun=All"),
        Some(event.clone()),
    )
    .await;
    install(
        &s,
        on_core_events("equivalent", "Equivalent"),
        binding("equivalent", "equivalent", &["Deny"], json!({})),
    )
    .await;
    let (status, _, body) = create(&s, uri, &event).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        body["message"],
        "events.events.k8s.io \"e1\" is forbidden: ValidatingAdmissionPolicy 'equivalent' with \
         binding 'equivalent' denied request: /Event: hello"
    );
}

#[tokio::test]
async fn resource_names_exclusions_and_object_selectors_narrow_a_policy() {
    let s = server().await;
    install(
        &s,
        policy(
            "named-only",
            json!({"matchConstraints": {
                "resourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE"],
                                   "resources": ["deployments"], "resourceNames": ["guarded", "labelled", "exempt"]}],
                "excludeResourceRules": [{"apiGroups": ["apps"], "apiVersions": ["v1"], "operations": ["CREATE"],
                                          "resources": ["deployments"], "resourceNames": ["exempt"]}]}}),
        ),
        binding(
            "named-only",
            "named-only",
            &["Deny"],
            json!({"matchResources": {"objectSelector": {"matchExpressions": [
                {"key": "tier", "operator": "NotIn", "values": ["free"]}]}}}),
        ),
    )
    .await;
    let labelled = |name: &str, tier: &str| {
        let mut d = deployment(name, 6);
        d["metadata"]["labels"]["tier"] = json!(tier);
        d
    };
    for (object, refused) in [
        (deployment("guarded", 6), true),
        (deployment("other", 6), false),
        (deployment("exempt", 6), false),
        (labelled("labelled", "free"), false),
    ] {
        let (status, _, body) = create(&s, DEPLOYMENTS, &object).await;
        let expected = if refused {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::CREATED
        };
        assert_eq!(status, expected, "{}: {body}", object["metadata"]["name"]);
    }
}
