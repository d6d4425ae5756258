//! Table tests: an object as a client sends it, and the object Kubernetes stores.

mod core;
mod groups;
mod pod;
mod service;
mod workloads;

use serde_json::Value;

use super::apply_defaults;

/// One row: what a client sends to `group`/`kind`, and what defaulting makes of it.
pub(super) struct Case {
    pub name: &'static str,
    pub group: &'static str,
    pub kind: &'static str,
    pub input: Value,
    pub expected: Value,
}

/// Defaults every row, compares the whole object, and checks that defaulting the result again
/// changes nothing.
pub(super) fn run(cases: Vec<Case>) {
    for case in cases {
        let mut object = case.input;
        apply_defaults(case.group, case.kind, &mut object);
        assert_eq!(
            object, case.expected,
            "case {:?}: got (left) vs expected (right)",
            case.name
        );
        let mut again = object.clone();
        apply_defaults(case.group, case.kind, &mut again);
        assert_eq!(again, object, "case {:?}: not idempotent", case.name);
    }
}

/// `fields` with the five pod spec defaults every pod spec and pod template gets.
pub(super) fn with_spec_defaults(fields: Value) -> Value {
    let mut spec = serde_json::json!({
        "dnsPolicy": "ClusterFirst",
        "restartPolicy": "Always",
        "securityContext": {},
        "terminationGracePeriodSeconds": 30,
        "schedulerName": "default-scheduler",
    });
    if let (Some(spec), Value::Object(fields)) = (spec.as_object_mut(), fields) {
        spec.extend(fields);
    }
    spec
}

/// A defaulted container named `name` running `image` with pull policy `policy`.
pub(super) fn container(name: &str, image: &str, policy: &str) -> Value {
    serde_json::json!({
        "name": name,
        "image": image,
        "imagePullPolicy": policy,
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    })
}

/// The two tolerations the DefaultTolerationSeconds admission plugin adds.
pub(super) fn default_tolerations() -> Value {
    serde_json::json!([
        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
    ])
}
