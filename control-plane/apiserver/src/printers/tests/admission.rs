//! Webhook configurations, ValidatingAdmissionPolicy and its bindings.

use serde_json::json;

use super::{CREATED, cells_of};

#[test]
fn webhook_configurations_count_their_webhooks() {
    let configuration = json!({
        "metadata": {"name": "policy-webhooks", "creationTimestamp": CREATED},
        "webhooks": [
            {"name": "pods.policy.example.com", "admissionReviewVersions": ["v1"],
             "sideEffects": "None", "clientConfig": {"url": "https://policy.example.com/pods"}},
            {"name": "deployments.policy.example.com", "admissionReviewVersions": ["v1"],
             "sideEffects": "None", "clientConfig": {"url": "https://policy.example.com/deploy"}},
        ],
    });
    for kind in [
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ] {
        assert_eq!(
            cells_of("admissionregistration.k8s.io", kind, &configuration),
            row!["policy-webhooks", 2, "5m"]
        );
    }
}

#[test]
fn validating_admission_policy_row() {
    let policy = json!({
        "metadata": {"name": "replica-limit", "creationTimestamp": CREATED},
        "spec": {
            "paramKind": {"apiVersion": "rules.example.com/v1", "kind": "ReplicaLimit"},
            "matchConstraints": {"resourceRules": []},
            "validations": [{"expression": "object.spec.replicas <= params.maxReplicas"}],
        },
    });
    assert_eq!(
        cells_of(
            "admissionregistration.k8s.io",
            "ValidatingAdmissionPolicy",
            &policy
        ),
        row![
            "replica-limit",
            1,
            "rules.example.com/v1/ReplicaLimit",
            "5m"
        ]
    );
    let plain = json!({"metadata": {"name": "p"}, "spec": {"validations": []}});
    assert_eq!(
        cells_of(
            "admissionregistration.k8s.io",
            "ValidatingAdmissionPolicy",
            &plain
        )[2],
        "<unset>"
    );
}

#[test]
fn validating_admission_policy_binding_param_refs() {
    let param = |param_ref: serde_json::Value| {
        let binding = json!({
            "metadata": {"name": "replica-limit-test", "creationTimestamp": CREATED},
            "spec": {"policyName": "replica-limit", "validationActions": ["Deny"],
                     "paramRef": param_ref},
        });
        let cells = cells_of(
            "admissionregistration.k8s.io",
            "ValidatingAdmissionPolicyBinding",
            &binding,
        );
        assert_eq!(
            (cells[0].clone(), cells[1].clone(), cells[3].clone()),
            (
                json!("replica-limit-test"),
                json!("replica-limit"),
                json!("5m")
            )
        );
        cells[2].clone()
    };
    assert_eq!(
        param(json!({"name": "limits", "namespace": "prod"})),
        "prod/limits"
    );
    assert_eq!(param(json!({"name": "limits"})), "*/limits");
    assert_eq!(param(json!(null)), "<unset>");
    assert_eq!(
        param(json!({"selector": {
            "matchLabels": {"tier": "gold", "env": "prod"},
            "matchExpressions": [{"key": "team", "operator": "In", "values": ["b", "a"]}],
        }})),
        "&LabelSelector{MatchLabels:map[string]string{env: prod,tier: gold,},\
         MatchExpressions:[]LabelSelectorRequirement{LabelSelectorRequirement{Key:team,\
         Operator:In,Values:[b a],},},}"
    );
}
