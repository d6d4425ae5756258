//! RoleBinding, ClusterRoleBinding, Role and ClusterRole.

use serde_json::json;

use super::{CREATED, cells_of};

#[test]
fn role_binding_lists_its_subjects_by_kind() {
    let binding = json!({
        "metadata": {"name": "read-pods", "namespace": "dev", "creationTimestamp": CREATED},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
        "subjects": [
            {"kind": "User", "name": "jane", "apiGroup": "rbac.authorization.k8s.io"},
            {"kind": "ServiceAccount", "name": "ci", "namespace": "build"},
            {"kind": "Group", "name": "devs", "apiGroup": "rbac.authorization.k8s.io"},
            {"kind": "User", "name": "bob", "apiGroup": "rbac.authorization.k8s.io"},
        ],
    });
    assert_eq!(
        cells_of("rbac.authorization.k8s.io", "RoleBinding", &binding),
        row![
            "read-pods",
            "Role/pod-reader",
            "5m",
            "jane, bob",
            "devs",
            "build/ci"
        ]
    );
}

#[test]
fn cluster_role_binding_row() {
    let binding = json!({
        "metadata": {"name": "cluster-admin", "creationTimestamp": CREATED},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "cluster-admin"},
        "subjects": [{"kind": "Group", "name": "system:masters",
                      "apiGroup": "rbac.authorization.k8s.io"}],
    });
    assert_eq!(
        cells_of("rbac.authorization.k8s.io", "ClusterRoleBinding", &binding),
        row![
            "cluster-admin",
            "ClusterRole/cluster-admin",
            "5m",
            "",
            "system:masters",
            ""
        ]
    );
}

#[test]
fn roles_get_the_default_table() {
    let role = json!({
        "metadata": {"name": "pod-reader", "creationTimestamp": CREATED},
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}],
    });
    for kind in ["Role", "ClusterRole"] {
        assert_eq!(
            cells_of("rbac.authorization.k8s.io", kind, &role),
            row!["pod-reader", "2024-05-01T10:00:00Z"]
        );
    }
}
