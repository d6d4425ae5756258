//! The index and the RBAC decision, as tables of users, bindings and requests.

use std::sync::Arc;

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde_json::json;

use super::{decide, index::Index};
use crate::auth::{
    UserInfo,
    authz::{Attributes, Decision, RequestKind, ResourceAttributes},
};

fn parse<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("a valid RBAC object")
}

fn rule(verbs: &[&str], resources: &[&str]) -> serde_json::Value {
    json!({"verbs": verbs, "apiGroups": [""], "resources": resources})
}

fn subject(kind: &str, name: &str, ns: Option<&str>) -> serde_json::Value {
    match ns {
        Some(ns) => json!({"kind": kind, "name": name, "namespace": ns}),
        None => json!({"kind": kind, "name": name}),
    }
}

fn index() -> Index {
    let cluster_roles: Vec<ClusterRole> = vec![
        parse(json!({"metadata": {"name": "view"}, "rules": [rule(&["get", "list"], &["pods"])]})),
        parse(json!({"metadata": {"name": "nodes"}, "rules": [rule(&["list"], &["nodes"])]})),
        parse(json!({"metadata": {"name": "healthz"},
                     "rules": [{"verbs": ["get"], "nonResourceURLs": ["/healthz"]}]})),
    ];
    let roles: Vec<Role> = vec![parse(json!({
        "metadata": {"name": "cm", "namespace": "a"},
        "rules": [rule(&["get"], &["configmaps"])],
    }))];
    let crb = |name: &str, role: &str, subjects: Vec<serde_json::Value>| -> ClusterRoleBinding {
        parse(json!({"metadata": {"name": name},
                     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                     "subjects": subjects}))
    };
    let rb = |name: &str,
              ns: &str,
              kind: &str,
              role: &str,
              subjects: Vec<serde_json::Value>|
     -> RoleBinding {
        parse(json!({"metadata": {"name": name, "namespace": ns},
                     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
                     "subjects": subjects}))
    };
    let cluster_bindings = vec![
        crb("ops-nodes", "nodes", vec![subject("Group", "ops", None)]),
        crb(
            "health",
            "healthz",
            vec![subject("Group", "system:authenticated", None)],
        ),
        crb(
            "sa-without-ns",
            "nodes",
            vec![subject("ServiceAccount", "lost", None)],
        ),
        crb(
            "dangling",
            "no-such-role",
            vec![subject("User", "dora", None)],
        ),
    ];
    let bindings = vec![
        rb(
            "alice-view",
            "a",
            "ClusterRole",
            "view",
            vec![subject("User", "alice", None)],
        ),
        rb(
            "alice-cm",
            "a",
            "Role",
            "cm",
            vec![subject("User", "alice", None)],
        ),
        rb(
            "robot-view",
            "a",
            "ClusterRole",
            "view",
            vec![subject("ServiceAccount", "robot", None)],
        ),
        rb(
            "other-sa",
            "b",
            "ClusterRole",
            "view",
            vec![subject("ServiceAccount", "robot", Some("a"))],
        ),
    ];
    Index::new(&cluster_roles, &roles, &cluster_bindings, &bindings)
}

fn ask(user: &UserInfo, verb: &str, resource: &str, ns: &str, name: &str) -> Decision {
    let attributes = Attributes {
        user: Arc::new(user.clone()),
        verb: verb.into(),
        request: if resource.starts_with('/') {
            RequestKind::NonResource {
                path: resource.into(),
            }
        } else {
            RequestKind::Resource(ResourceAttributes {
                resource: resource.into(),
                namespace: ns.into(),
                name: name.into(),
                version: "v1".into(),
                ..ResourceAttributes::default()
            })
        },
    };
    decide(&index(), &attributes)
}

#[test]
fn bindings_grant_their_roles_to_their_subjects_where_they_apply() {
    let alice = UserInfo::new("alice", &["system:authenticated"]);
    let bob = UserInfo::new("bob", &["ops"]);
    let robot = UserInfo::new("system:serviceaccount:a:robot", &["system:serviceaccounts"]);
    let lost = UserInfo::new("system:serviceaccount::lost", &[]);
    let dora = UserInfo::new("dora", &[]);
    let allow = |s: &str| Decision::Allow(s.to_owned());
    let no = Decision::NoOpinion(String::new());
    let cases = [
        (
            &alice,
            "list",
            "pods",
            "a",
            "",
            allow(
                "RBAC: allowed by RoleBinding \"alice-view/a\" of ClusterRole \"view\" to User \"alice\"",
            ),
        ),
        (
            &alice,
            "get",
            "configmaps",
            "a",
            "x",
            allow("RBAC: allowed by RoleBinding \"alice-cm/a\" of Role \"cm\" to User \"alice\""),
        ),
        (&alice, "list", "pods", "b", "", no.clone()),
        (&alice, "list", "pods", "", "", no.clone()),
        (&alice, "list", "secrets", "a", "", no.clone()),
        (
            &alice,
            "get",
            "/healthz",
            "",
            "",
            allow(
                "RBAC: allowed by ClusterRoleBinding \"health\" of ClusterRole \"healthz\" to Group \"system:authenticated\"",
            ),
        ),
        (&alice, "get", "/metrics", "", "", no.clone()),
        (
            &bob,
            "list",
            "nodes",
            "",
            "",
            allow(
                "RBAC: allowed by ClusterRoleBinding \"ops-nodes\" of ClusterRole \"nodes\" to Group \"ops\"",
            ),
        ),
        (
            &bob,
            "list",
            "nodes",
            "any",
            "",
            allow(
                "RBAC: allowed by ClusterRoleBinding \"ops-nodes\" of ClusterRole \"nodes\" to Group \"ops\"",
            ),
        ),
        (&bob, "get", "/healthz", "", "", no.clone()),
        (
            &robot,
            "get",
            "pods",
            "a",
            "p",
            allow(
                "RBAC: allowed by RoleBinding \"robot-view/a\" of ClusterRole \"view\" to ServiceAccount \"robot/a\"",
            ),
        ),
        (
            &robot,
            "get",
            "pods",
            "b",
            "p",
            allow(
                "RBAC: allowed by RoleBinding \"other-sa/b\" of ClusterRole \"view\" to ServiceAccount \"robot/a\"",
            ),
        ),
        (&lost, "list", "nodes", "", "", no.clone()),
        (
            &dora,
            "list",
            "nodes",
            "",
            "",
            Decision::NoOpinion(
                "RBAC: clusterrole.rbac.authorization.k8s.io \"no-such-role\" not found".into(),
            ),
        ),
    ];
    for (user, verb, resource, ns, name, want) in cases {
        assert_eq!(
            ask(user, verb, resource, ns, name),
            want,
            "{} {verb} {resource} in {ns:?}",
            user.name
        );
    }
}

#[test]
fn rules_for_lists_each_binding_once() {
    let index = index();
    let alice = UserInfo::new("alice", &["system:authenticated"]);
    let (rules, errors) = index.rules_for(&alice, "a");
    let verbs: Vec<Vec<String>> = rules.iter().map(|r| r.verbs.clone()).collect();
    assert_eq!(
        verbs,
        [
            vec!["get".to_owned()],
            vec!["get".into(), "list".into()],
            vec!["get".into()]
        ]
    );
    assert!(errors.is_empty());
    let (cluster_only, _) = index.rules_for(&alice, "");
    assert_eq!(
        cluster_only.len(),
        1,
        "RoleBindings apply in their namespace only"
    );
}

#[test]
fn the_index_stays_cheap_at_scale() {
    // 500 roles and 1000 bindings of other users: a request visits its own bindings only.
    let roles: Vec<ClusterRole> = (0..500)
        .map(|i| parse(json!({"metadata": {"name": format!("r{i}")}, "rules": [rule(&["get"], &["pods"])]})))
        .collect();
    let bindings: Vec<RoleBinding> = (0..1000)
        .map(|i| parse(json!({"metadata": {"name": format!("b{i}"), "namespace": format!("ns{}", i % 50)},
                               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("r{}", i % 500)},
                               "subjects": [subject("User", &format!("u{i}"), None)]})))
        .collect();
    let index = Index::new(&roles, &[], &[], &bindings);
    let mut visited = 0;
    index.visit(
        &UserInfo::new("u7", &["system:authenticated"]),
        "ns7",
        |_| {
            visited += 1;
            true
        },
    );
    assert_eq!(visited, 1);
}
