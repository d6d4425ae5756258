//! rbac.authorization.k8s.io/v1: role bindings and cluster role bindings. Roles and cluster
//! roles have no printer in Kubernetes (default table: Name, Created At).

use jiff::Timestamp;
use serde_json::{Value, json};

use super::{AGE, Column, NAME, age, col, list, name, text};

pub(super) const ROLE_BINDING: &[Column] = &[
    NAME,
    col(
        "Role",
        "string",
        0,
        "RoleRef can reference a Role in the current namespace or a ClusterRole in the global \
         namespace.",
    ),
    AGE,
    col("Users", "string", 1, "Users in the roleBinding"),
    col("Groups", "string", 1, "Groups in the roleBinding"),
    col(
        "ServiceAccounts",
        "string",
        1,
        "ServiceAccounts in the roleBinding",
    ),
];

pub(super) const CLUSTER_ROLE_BINDING: &[Column] = &[
    NAME,
    col(
        "Role",
        "string",
        0,
        "RoleRef can only reference a ClusterRole in the global namespace.",
    ),
    AGE,
    col("Users", "string", 1, "Users in the clusterRoleBinding"),
    col("Groups", "string", 1, "Groups in the clusterRoleBinding"),
    col(
        "ServiceAccounts",
        "string",
        1,
        "ServiceAccounts in the clusterRoleBinding",
    ),
];

/// RoleBinding and ClusterRoleBinding: Name, Role (`Kind/name`), Age, Users, Groups,
/// ServiceAccounts (`namespace/name`), each list joined with `, `. Subjects of another kind
/// are not shown.
pub(super) fn binding_cells(binding: &Value, now: Timestamp) -> Vec<Value> {
    let (mut users, mut groups, mut service_accounts) = (Vec::new(), Vec::new(), Vec::new());
    for subject in list(binding, "/subjects") {
        let subject_name = text(subject, "/name");
        match text(subject, "/kind") {
            "User" => users.push(subject_name.to_owned()),
            "Group" => groups.push(subject_name.to_owned()),
            "ServiceAccount" => {
                service_accounts.push(format!("{}/{subject_name}", text(subject, "/namespace")))
            }
            _ => {}
        }
    }
    vec![
        name(binding),
        json!(format!(
            "{}/{}",
            text(binding, "/roleRef/kind"),
            text(binding, "/roleRef/name")
        )),
        age(binding, now),
        json!(users.join(", ")),
        json!(groups.join(", ")),
        json!(service_accounts.join(", ")),
    ]
}
