//! The Node authorizer's decision (Kubernetes 1.33 `node_authorizer.go`, with
//! `AuthorizeNodeWithSelectors` on as it is by default since 1.32): a node reads secrets,
//! configmaps, PVCs, PVs and resource claims, and creates service-account tokens, only for
//! objects its bound pods lead to; it reads only its own Node, changes Nodes, Leases and pod
//! status (NodeRestriction then narrows these to its own); everything else is
//! [`NODE_RULES`] or no opinion. It never denies: a `NoOpinion` with Kubernetes' reason lets
//! the next authorizer (RBAC) decide.

use super::graph::{Graph, Kind};
use crate::auth::{
    NODE_USER_PREFIX, NODES_GROUP, UserInfo,
    authz::{Attributes, Decision, RequestKind, ResourceAttributes},
    rbac::rules::Rule,
};

/// A rule granting `verbs` on `resources` of `groups`.
fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> Rule {
    let owned = |items: &[&str]| items.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    Rule {
        verbs: owned(verbs),
        api_groups: owned(groups),
        resources: owned(resources),
        ..Rule::default()
    }
}

/// The namespace of node leases.
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// Kube's `NodeIdentity`: `Some(node)` for users in `system:nodes` named
/// `system:node:<node>` (`Some("")` when the name is missing).
pub fn node_identity(user: &UserInfo) -> Option<&str> {
    if !user.groups.iter().any(|g| g == NODES_GROUP) {
        return None;
    }
    user.name.strip_prefix(NODE_USER_PREFIX)
}

/// What every node may do on resources the graph does not subdivide (kube's `NodeRules()`
/// for the resources keelson serves, minus those the authorizer decides itself).
pub(crate) fn node_rules() -> Vec<Rule> {
    vec![
        rule(&["create"], &["authentication.k8s.io"], &["tokenreviews"]),
        rule(
            &["create"],
            &["authorization.k8s.io"],
            &["subjectaccessreviews", "localsubjectaccessreviews"],
        ),
        // The pods' service environment variables.
        rule(&["get", "list", "watch"], &[""], &["services"]),
        rule(&["create", "update", "patch"], &[""], &["events"]),
        rule(
            &["create", "update", "patch"],
            &["events.k8s.io"],
            &["events"],
        ),
        // Client certificate rotation.
        rule(
            &["create", "get", "list", "watch"],
            &["certificates.k8s.io"],
            &["certificatesigningrequests"],
        ),
        rule(
            &["get", "list", "watch"],
            &["node.k8s.io"],
            &["runtimeclasses"],
        ),
        rule(
            &["get", "list", "watch"],
            &["storage.k8s.io"],
            &["csidrivers"],
        ),
    ]
}

/// The decision on `attributes` for the graph `graph` (see the module documentation).
pub(crate) fn decide(graph: &Graph, static_rules: &[Rule], attributes: &Attributes) -> Decision {
    let Some(node) = node_identity(&attributes.user) else {
        return Decision::NoOpinion(String::new());
    };
    if node.is_empty() {
        return no(format!(
            "unknown node for user \"{}\"",
            attributes.user.name
        ));
    }
    let verb = attributes.verb.as_str();
    if let RequestKind::Resource(r) = &attributes.request {
        let on = Request {
            graph,
            node,
            verb,
            r,
        };
        match (r.group.as_str(), r.resource.as_str()) {
            ("", "secrets") => return on.read_namespaced(Kind::Secret),
            ("", "configmaps") => return on.read_namespaced(Kind::ConfigMap),
            ("", "persistentvolumeclaims") if r.subresource == "status" => {
                return on.status_update(Kind::PersistentVolumeClaim);
            }
            ("", "persistentvolumeclaims") => return on.get(Kind::PersistentVolumeClaim),
            ("", "persistentvolumes") => return on.get(Kind::PersistentVolume),
            ("resource.k8s.io", "resourceclaims") => return on.get(Kind::ResourceClaim),
            ("", "serviceaccounts") => return on.create_token(),
            ("coordination.k8s.io", "leases") => return on.lease(),
            ("", "nodes") => return on.node(),
            ("", "pods") => return on.pod(),
            _ => {}
        }
    }
    if static_rules
        .iter()
        .any(|rule| rule.allows(&attributes.verb, &attributes.request))
    {
        Decision::Allow(String::new())
    } else {
        Decision::NoOpinion(String::new())
    }
}

fn no(reason: impl Into<String>) -> Decision {
    Decision::NoOpinion(reason.into())
}

fn allow() -> Decision {
    Decision::Allow(String::new())
}

/// One resource request of node `node`.
struct Request<'a> {
    graph: &'a Graph,
    node: &'a str,
    verb: &'a str,
    r: &'a ResourceAttributes,
}

impl Request<'_> {
    /// Allowed when the named object leads to the node.
    fn related(&self, kind: Kind) -> Decision {
        if self.r.name.is_empty() {
            return no("No Object name found");
        }
        if self
            .graph
            .is_related(self.node, kind, &self.r.namespace, &self.r.name)
        {
            allow()
        } else {
            no(format!(
                "no relationship found between node '{}' and this object",
                self.node
            ))
        }
    }

    /// get, list and watch of one related namespaced object (list and watch name it with a
    /// `metadata.name` field selector).
    fn read_namespaced(&self, kind: Kind) -> Decision {
        if !matches!(self.verb, "get" | "list" | "watch") {
            return no("can only read resources of this type");
        }
        if !self.r.subresource.is_empty() {
            return no("cannot read subresource");
        }
        if self.r.namespace.is_empty() {
            return no("can only read namespaced object of this type");
        }
        self.related(kind)
    }

    /// get of one related object.
    fn get(&self, kind: Kind) -> Decision {
        if self.verb != "get" {
            return no("can only get individual resources of this type");
        }
        if !self.r.subresource.is_empty() {
            return no("cannot get subresource");
        }
        self.related(kind)
    }

    /// update and patch of the status of a related object.
    fn status_update(&self, kind: Kind) -> Decision {
        if !matches!(self.verb, "update" | "patch") {
            return no("can only get/update/patch this type");
        }
        self.related(kind)
    }

    /// `serviceaccounts/<name>/token` create for the service accounts of its pods.
    fn create_token(&self) -> Decision {
        if self.verb != "create" || self.r.name.is_empty() {
            return no("can only create tokens for individual service accounts");
        }
        if self.r.subresource != "token" {
            return no("can only create token subresource of serviceaccount");
        }
        self.related(Kind::ServiceAccount)
    }

    /// Its own Lease in `kube-node-lease` (any name on create: NodeRestriction checks it).
    fn lease(&self) -> Decision {
        if !matches!(self.verb, "get" | "create" | "update" | "patch" | "delete") {
            return no("can only get, create, update, patch, or delete a node lease");
        }
        if self.r.namespace != NODE_LEASE_NAMESPACE {
            return no(format!(
                "can only access leases in the \"{NODE_LEASE_NAMESPACE}\" system namespace"
            ));
        }
        if self.verb != "create" && self.r.name != self.node {
            return no("can only access node lease with the same name as the requesting node");
        }
        allow()
    }

    /// Node objects: reads of its own only; writes (NodeRestriction limits them to its own).
    fn node(&self) -> Decision {
        match (self.r.subresource.as_str(), self.verb) {
            ("", "create" | "update" | "patch") | ("status", "update" | "patch") => allow(),
            ("", "get" | "list" | "watch") => match self.r.name.as_str() {
                name if name == self.node => allow(),
                "" => no(format!(
                    "node '{}' cannot read all nodes, only its own Node object",
                    self.node
                )),
                other => no(format!(
                    "node '{}' cannot read '{other}', only its own Node object",
                    self.node
                )),
            },
            _ => no(""),
        }
    }

    /// Pods: reads of its own; create and delete, status updates and evictions
    /// (NodeRestriction limits them to pods bound to it).
    fn pod(&self) -> Decision {
        match (self.r.subresource.as_str(), self.verb) {
            ("", "get") => self.get(Kind::Pod),
            ("", "list" | "watch") if !self.r.name.is_empty() => self.related(Kind::Pod),
            ("", "list" | "watch") => {
                no("can only list/watch pods with spec.nodeName field selector")
            }
            ("", "create" | "delete") | ("status", "update" | "patch") | ("eviction", "create") => {
                allow()
            }
            _ => no(""),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::auth::node::graph::PodRefs;

    fn attributes(user: UserInfo, verb: &str, resource: &str, ns: &str, name: &str) -> Attributes {
        let (group, resource) = resource.split_once(':').unwrap_or(("", resource));
        let (resource, subresource) = resource.split_once('/').unwrap_or((resource, ""));
        Attributes {
            user: Arc::new(user),
            verb: verb.into(),
            request: RequestKind::Resource(ResourceAttributes {
                group: group.into(),
                version: "v1".into(),
                resource: resource.into(),
                subresource: subresource.into(),
                namespace: ns.into(),
                name: name.into(),
            }),
        }
    }

    fn graph() -> Graph {
        let mut graph = Graph::default();
        let pod = json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "nodeName": "n1",
                "serviceAccountName": "web-sa",
                "containers": [{"name": "c", "envFrom": [{"configMapRef": {"name": "settings"}}]}],
                "volumes": [{"name": "s", "secret": {"secretName": "tls"}},
                            {"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]
            }
        });
        graph.set_pod("default", "web", PodRefs::of(&pod));
        graph
    }

    const NO_RELATION: &str = "no relationship found between node 'n1' and this object";

    #[test]
    fn nodes_reach_only_what_their_pods_use() {
        let graph = graph();
        let rules = node_rules();
        let n1 = UserInfo::node("n1");
        let allow = Decision::Allow(String::new());
        let no = |r: &str| Decision::NoOpinion(r.into());
        let cases = [
            ("get", "secrets", "default", "tls", allow.clone()),
            ("list", "secrets", "default", "tls", allow.clone()),
            ("watch", "secrets", "default", "tls", allow.clone()),
            ("get", "secrets", "default", "other", no(NO_RELATION)),
            ("get", "secrets", "kube-system", "tls", no(NO_RELATION)),
            ("list", "secrets", "default", "", no("No Object name found")),
            (
                "list",
                "secrets",
                "",
                "",
                no("can only read namespaced object of this type"),
            ),
            (
                "update",
                "secrets",
                "default",
                "tls",
                no("can only read resources of this type"),
            ),
            (
                "delete",
                "configmaps",
                "default",
                "settings",
                no("can only read resources of this type"),
            ),
            ("get", "configmaps", "default", "settings", allow.clone()),
            ("get", "configmaps", "default", "other", no(NO_RELATION)),
            (
                "get",
                "persistentvolumeclaims",
                "default",
                "data",
                allow.clone(),
            ),
            (
                "list",
                "persistentvolumeclaims",
                "default",
                "data",
                no("can only get individual resources of this type"),
            ),
            ("get", "persistentvolumes", "", "pv-1", no(NO_RELATION)),
            (
                "create",
                "serviceaccounts/token",
                "default",
                "web-sa",
                allow.clone(),
            ),
            (
                "create",
                "serviceaccounts/token",
                "default",
                "default",
                no(NO_RELATION),
            ),
            (
                "get",
                "serviceaccounts",
                "default",
                "web-sa",
                no("can only create tokens for individual service accounts"),
            ),
            (
                "create",
                "serviceaccounts",
                "default",
                "web-sa",
                no("can only create token subresource of serviceaccount"),
            ),
            (
                "update",
                "coordination.k8s.io:leases",
                "kube-node-lease",
                "n1",
                allow.clone(),
            ),
            (
                "create",
                "coordination.k8s.io:leases",
                "kube-node-lease",
                "",
                allow.clone(),
            ),
            (
                "update",
                "coordination.k8s.io:leases",
                "kube-node-lease",
                "n2",
                no("can only access node lease with the same name as the requesting node"),
            ),
            (
                "update",
                "coordination.k8s.io:leases",
                "default",
                "n1",
                no("can only access leases in the \"kube-node-lease\" system namespace"),
            ),
            ("get", "nodes", "", "n1", allow.clone()),
            (
                "get",
                "nodes",
                "",
                "n2",
                no("node 'n1' cannot read 'n2', only its own Node object"),
            ),
            (
                "list",
                "nodes",
                "",
                "",
                no("node 'n1' cannot read all nodes, only its own Node object"),
            ),
            ("patch", "nodes/status", "", "n2", allow.clone()),
            ("delete", "nodes", "", "n1", no("")),
            ("get", "pods", "default", "web", allow.clone()),
            ("get", "pods", "default", "theirs", no(NO_RELATION)),
            (
                "list",
                "pods",
                "",
                "",
                no("can only list/watch pods with spec.nodeName field selector"),
            ),
            ("patch", "pods/status", "default", "theirs", allow.clone()),
            ("delete", "pods", "default", "theirs", allow.clone()),
            ("update", "pods", "default", "web", no("")),
            ("create", "events", "default", "", allow.clone()),
            (
                "create",
                "certificates.k8s.io:certificatesigningrequests",
                "",
                "",
                allow.clone(),
            ),
            ("list", "services", "", "", allow.clone()),
            ("list", "discovery.k8s.io:endpointslices", "", "", no("")),
            (
                "create",
                "configmaps",
                "default",
                "",
                no("can only read resources of this type"),
            ),
        ];
        for (verb, resource, ns, name, expected) in cases {
            assert_eq!(
                decide(
                    &graph,
                    &rules,
                    &attributes(n1.clone(), verb, resource, ns, name)
                ),
                expected,
                "{verb} {resource} {ns}/{name}"
            );
        }
    }

    #[test]
    fn other_users_get_no_opinion() {
        let graph = graph();
        let cases = [
            (UserInfo::new("alice", &[]), ""),
            (UserInfo::new("system:node:n1", &[]), ""),
            (UserInfo::new("kubernetes-admin", &["system:masters"]), ""),
            (
                UserInfo::new("system:node:", &[NODES_GROUP]),
                "unknown node for user \"system:node:\"",
            ),
        ];
        for (user, reason) in cases {
            let name = user.name.clone();
            assert_eq!(
                decide(
                    &graph,
                    &node_rules(),
                    &attributes(user, "get", "secrets", "default", "tls")
                ),
                Decision::NoOpinion(reason.into()),
                "{name}"
            );
        }
    }
}
