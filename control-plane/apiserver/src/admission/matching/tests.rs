//! Which webhooks apply: kube's rules, namespace and object selector semantics as tables.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1 as admissionregistration;
use serde_json::{Value, json};

use super::*;

fn config(webhooks: Value) -> admissionregistration::ValidatingWebhookConfiguration {
    serde_json::from_value(json!({"metadata": {"name": "c"}, "webhooks": webhooks}))
        .expect("a configuration")
}

/// One webhook with `rules` and optional selectors.
fn hook_with(rules: Value, extra: Value) -> Hook {
    let mut webhook = json!({
        "name": "h.example.com",
        "clientConfig": {"url": "https://127.0.0.1:1/"},
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
        "rules": rules,
    });
    if let (Some(w), Some(extra)) = (webhook.as_object_mut(), extra.as_object()) {
        w.extend(extra.clone());
    }
    validating_hooks(vec![config(json!([webhook]))])
        .pop()
        .expect("one hook")
}

fn rule(ops: &[&str], groups: &[&str], versions: &[&str], resources: &[&str]) -> Value {
    json!({"operations": ops, "apiGroups": groups, "apiVersions": versions, "resources": resources})
}

fn facts<'a>(
    group: &'a str,
    resource: &'a str,
    subresource: &'a str,
    namespace: &'a str,
    operation: Operation,
) -> RequestFacts<'a> {
    RequestFacts {
        group,
        version: "v1",
        resource,
        subresource,
        namespace,
        operation,
        object: None,
        old_object: None,
    }
}

#[test]
fn rules_match_operations_groups_versions_and_resources_as_kube_does() {
    use Operation::*;
    let pods_create = facts("", "pods", "", "ns", Create);
    let pods_status = facts("", "pods", "status", "ns", Update);
    let deploy_update = facts("apps", "deployments", "", "ns", Update);
    let deploy_scale = facts("apps", "deployments", "scale", "ns", Update);
    let cases: &[(Value, RequestFacts<'_>, bool)] = &[
        (
            rule(&["CREATE"], &[""], &["v1"], &["pods"]),
            pods_create,
            true,
        ),
        (
            rule(&["UPDATE"], &[""], &["v1"], &["pods"]),
            pods_create,
            false,
        ),
        (rule(&["*"], &[""], &["v1"], &["pods"]), pods_create, true),
        (
            rule(&["*"], &["apps"], &["v1"], &["pods"]),
            pods_create,
            false,
        ),
        (rule(&["*"], &["*"], &["*"], &["pods"]), pods_create, true),
        (rule(&["*"], &[""], &["v2"], &["pods"]), pods_create, false),
        // A plain resource does not cover its subresources...
        (rule(&["*"], &[""], &["v1"], &["pods"]), pods_status, false),
        (
            rule(&["*"], &[""], &["v1"], &["pods/status"]),
            pods_status,
            true,
        ),
        (rule(&["*"], &[""], &["v1"], &["pods/*"]), pods_status, true),
        // ...`*` neither, `*/*` covers both.
        (rule(&["*"], &["*"], &["*"], &["*"]), pods_status, false),
        (rule(&["*"], &["*"], &["*"], &["*"]), deploy_update, true),
        (rule(&["*"], &["*"], &["*"], &["*/*"]), pods_status, true),
        (
            rule(&["*"], &["*"], &["*"], &["*/scale"]),
            deploy_scale,
            true,
        ),
        (
            rule(&["*"], &["*"], &["*"], &["*/scale"]),
            deploy_update,
            false,
        ),
        (
            rule(&["CONNECT"], &["*"], &["*"], &["*/*"]),
            deploy_update,
            false,
        ),
    ];
    for (i, (rules, request, expected)) in cases.iter().enumerate() {
        let hook = hook_with(json!([rules]), json!({}));
        assert_eq!(hook.rules_match(request), *expected, "case {i}: {rules}");
    }
}

#[test]
fn rule_scopes_treat_namespaces_as_cluster_scoped() {
    let any = rule(&["*"], &["*"], &["*"], &["*"]);
    let scoped = |scope: &str| {
        let mut r = any.clone();
        r["scope"] = json!(scope);
        hook_with(json!([r]), json!({}))
    };
    let pod = facts("", "pods", "", "ns", Operation::Create);
    let node = facts("", "nodes", "", "", Operation::Create);
    // A Namespace's requests carry its own name as the namespace.
    let namespace = facts("", "namespaces", "", "team-a", Operation::Create);
    for (scope, request, expected) in [
        ("*", pod, true),
        ("*", node, true),
        ("Namespaced", pod, true),
        ("Namespaced", node, false),
        ("Namespaced", namespace, false),
        ("Cluster", pod, false),
        ("Cluster", node, true),
        ("Cluster", namespace, true),
    ] {
        assert_eq!(
            scoped(scope).rules_match(&request),
            expected,
            "{scope} {}",
            request.resource
        );
    }
}

fn labels_of(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn namespace_selectors_look_at_the_namespace_or_at_a_namespace_itself() {
    let all = json!([rule(&["*"], &["*"], &["*"], &["*"])]);
    let hook = hook_with(
        all,
        json!({"namespaceSelector": {"matchExpressions": [
            {"key": "webhooks", "operator": "NotIn", "values": ["off"]}]}}),
    );
    let on = labels_of(&[("team", "a")]);
    let off = labels_of(&[("webhooks", "off")]);
    let pod = facts("", "pods", "", "ns", Operation::Create);
    assert_eq!(pod.namespace_to_look_up(), Some("ns"));
    assert_eq!(hook.applies(&pod, Some(&on)), Ok(true));
    assert_eq!(hook.applies(&pod, Some(&off)), Ok(false));
    // Cluster-scoped objects other than Namespaces pass any namespaceSelector.
    let node = facts("", "nodes", "", "", Operation::Create);
    assert_eq!(node.namespace_to_look_up(), None);
    assert_eq!(hook.applies(&node, None), Ok(true));
    // A Namespace created or updated is judged by its own labels...
    let excluded = json!({"metadata": {"name": "quiet", "labels": {"webhooks": "off"}}});
    let created = RequestFacts {
        object: Some(&excluded),
        ..facts("", "namespaces", "", "quiet", Operation::Create)
    };
    assert_eq!(created.namespace_to_look_up(), None);
    assert_eq!(hook.applies(&created, None), Ok(false));
    // ...a deleted one by the stored Namespace's.
    let deleted = facts("", "namespaces", "", "quiet", Operation::Delete);
    assert_eq!(deleted.namespace_to_look_up(), Some("quiet"));
    assert_eq!(hook.applies(&deleted, Some(&off)), Ok(false));
}

#[test]
fn object_selectors_match_the_new_or_the_old_object() {
    let hook = hook_with(
        json!([rule(&["*"], &["*"], &["*"], &["*"])]),
        json!({"objectSelector": {"matchLabels": {"inject": "yes"}}}),
    );
    let labelled = json!({"metadata": {"labels": {"inject": "yes"}}});
    let plain = json!({"metadata": {}});
    for (object, old, expected) in [
        (Some(&labelled), None, true),
        (Some(&plain), None, false),
        (Some(&plain), Some(&labelled), true),
        (None, Some(&labelled), true),
        (None, Some(&plain), false),
    ] {
        let request = RequestFacts {
            object,
            old_object: old,
            ..facts("", "configmaps", "", "ns", Operation::Update)
        };
        assert_eq!(
            hook.applies(&request, Some(&BTreeMap::new())),
            Ok(expected),
            "{object:?} {old:?}"
        );
    }
}

#[test]
fn bad_selectors_are_errors_not_matches() {
    let hook = hook_with(
        json!([rule(&["*"], &["*"], &["*"], &["*"])]),
        json!({"objectSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}),
    );
    let request = facts("", "configmaps", "", "", Operation::Create);
    assert!(hook.applies(&request, None).is_err());
}

#[test]
fn configurations_are_called_in_name_order_with_kube_defaults() {
    let configuration =
        |name: &str, hooks: &[&str]| -> admissionregistration::ValidatingWebhookConfiguration {
            let webhooks: Vec<Value> = hooks
            .iter()
            .map(|h| {
                json!({"name": h, "clientConfig": {"service": {"namespace": "ns", "name": "svc"}},
                             "sideEffects": "None", "admissionReviewVersions": ["v1"]})
            })
            .collect();
            serde_json::from_value(json!({"metadata": {"name": name}, "webhooks": webhooks}))
                .expect("a configuration")
        };
    let hooks = validating_hooks(vec![
        configuration("b", &["b1", "b2"]),
        configuration("a", &["a1"]),
    ]);
    let names: Vec<&str> = hooks.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["a1", "b1", "b2"]);
    let first = &hooks[0];
    assert_eq!(first.failure_policy, FailurePolicy::Fail);
    assert_eq!(first.timeout, Duration::from_secs(10));
    assert_eq!(
        first.endpoint,
        Endpoint::Service {
            namespace: "ns".into(),
            name: "svc".into(),
            path: String::new(),
            port: 443
        }
    );
}
