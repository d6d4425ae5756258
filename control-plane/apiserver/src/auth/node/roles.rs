//! The `keelson:node-datapath` ClusterRole and its binding to `system:nodes`: what the node
//! agent reads cluster-wide beyond what the Node authorizer grants (Cilium's agent has the
//! same kind of role). Never secrets or configmaps: those a node gets only for its own pods,
//! through the Node authorizer.
//!
//! Audited from the agent's API calls (`node-agent/src`):
//! - `pods/mod.rs`: list/watch pods (`spec.nodeName=<node>` field selector, which the Node
//!   authorizer cannot see in keelson's authorization attributes) -> pods list/watch;
//!   `routing.rs` and the datapath need other nodes' pods too (policy, ipcache).
//! - `service_sync.rs`: watch Services and EndpointSlices of every namespace;
//!   `pods/spec.rs`: list Services of a pod's namespace (environment variables).
//! - `routing.rs`: watch every Node (pod CIDR routes); `node.rs`/`pods/mod.rs`: get its own.
//! - `pods/worker.rs`: create Events (`kubectl describe`).
//! - For the datapath's next parts (NetworkPolicy, Endpoints fallback): namespaces,
//!   networkpolicies, endpoints.
//!
//! Granted by the Node authorizer instead: its Node and Lease, pod status and deletion,
//! secrets/configmaps of its pods, service-account tokens, CSRs.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject},
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

use super::rules::rule;
use crate::auth::NODES_GROUP;

/// The ClusterRole's (and its binding's) name.
pub const DATAPATH_ROLE: &str = "keelson:node-datapath";

const READ: &[&str] = &["get", "list", "watch"];

/// Kube's bootstrap-policy metadata: the `kubernetes.io/bootstrapping: rbac-defaults` label
/// and the `rbac.authorization.kubernetes.io/autoupdate: "true"` annotation.
fn metadata() -> ObjectMeta {
    ObjectMeta {
        name: Some(DATAPATH_ROLE.to_owned()),
        labels: Some(BTreeMap::from([(
            "kubernetes.io/bootstrapping".to_owned(),
            "rbac-defaults".to_owned(),
        )])),
        annotations: Some(BTreeMap::from([(
            "rbac.authorization.kubernetes.io/autoupdate".to_owned(),
            "true".to_owned(),
        )])),
        ..ObjectMeta::default()
    }
}

/// The rules of [`datapath_cluster_role`].
pub fn datapath_rules() -> Vec<PolicyRule> {
    vec![
        rule(
            READ,
            &[""],
            &["pods", "services", "endpoints", "nodes", "namespaces"],
        ),
        rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
        rule(READ, &["networking.k8s.io"], &["networkpolicies"]),
        rule(&["create", "patch"], &["", "events.k8s.io"], &["events"]),
    ]
}

/// `keelson:node-datapath`: what every node agent reads cluster-wide for its datapath.
pub fn datapath_cluster_role() -> ClusterRole {
    ClusterRole {
        metadata: metadata(),
        rules: Some(datapath_rules()),
        aggregation_rule: None,
    }
}

/// Binds [`datapath_cluster_role`] to the group `system:nodes`.
pub fn datapath_cluster_role_binding() -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: metadata(),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "ClusterRole".to_owned(),
            name: DATAPATH_ROLE.to_owned(),
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".to_owned()),
            kind: "Group".to_owned(),
            name: NODES_GROUP.to_owned(),
            namespace: None,
        }]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_datapath_role_never_reaches_secrets_or_configmaps() {
        let role = datapath_cluster_role();
        assert_eq!(role.metadata.name.as_deref(), Some("keelson:node-datapath"));
        for rule in role.rules.expect("rules") {
            for resource in rule.resources.unwrap_or_default() {
                assert!(
                    !matches!(resource.as_str(), "secrets" | "configmaps" | "*")
                        && !resource.starts_with("serviceaccounts"),
                    "{resource}"
                );
            }
            assert!(!rule.verbs.iter().any(|v| v == "*"));
        }
        let binding = datapath_cluster_role_binding();
        assert_eq!(binding.role_ref.name, DATAPATH_ROLE);
        let subjects = binding.subjects.expect("subjects");
        assert_eq!(
            (subjects[0].kind.as_str(), subjects[0].name.as_str()),
            ("Group", "system:nodes")
        );
    }
}
