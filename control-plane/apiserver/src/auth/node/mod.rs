//! Node authorization as Kubernetes does it: the Node authorizer ([`NodeAuthorizer`], a
//! [`graph`] of what each node's pods lead to, kept up to date from store watches by
//! [`watch`]) and the NodeRestriction admission checks ([`restriction`]). What nodes read
//! cluster-wide for the datapath comes from RBAC: [`roles`].
//!
//! Until the RBAC authorizer is in the chain, [`authorize_request`] stands in for it for
//! node users with the rules of [`roles::datapath_cluster_role`] (TEMPORARY: the RBAC
//! chain replaces this fallback once the role is in the bootstrap policy).

use std::sync::{
    Arc, RwLock, Weak,
    atomic::{AtomicBool, Ordering},
};

use k8s_openapi::api::rbac::v1::PolicyRule;
use keelson_store::Store;

use super::{
    Access, UserInfo,
    authz::{Attributes, Authorize, Decision, RequestKind, ResourceAttributes, Rules},
    forbidden,
};
use crate::{ApiError, request::Target};

pub mod decide;
pub mod graph;
pub mod restriction;
pub mod roles;
pub mod rules;
mod watch;

pub use restriction::check_token_request;

/// Kubernetes' Node authorizer over a graph fed by watches of the store's pods and
/// persistent volumes.
#[derive(Debug)]
pub struct NodeAuthorizer {
    graph: RwLock<graph::Graph>,
    static_rules: Vec<PolicyRule>,
    /// The store the watches follow (`None`: a fixed graph, for tests).
    store: Option<Arc<dyn Store>>,
    watching: AtomicBool,
    /// Itself, for the watch tasks it starts.
    me: Weak<Self>,
}

impl NodeAuthorizer {
    /// An authorizer following `store`'s pods and persistent volumes. The watches start now
    /// when called inside a Tokio runtime, else at the first decision; they end when the
    /// authorizer is dropped, and list again whenever a watch fails.
    pub fn new(store: Arc<dyn Store>) -> Arc<Self> {
        let this = Arc::new_cyclic(|me| Self {
            graph: RwLock::default(),
            static_rules: decide::node_rules(),
            store: Some(store),
            watching: AtomicBool::new(false),
            me: me.clone(),
        });
        this.ensure_watching();
        this
    }

    /// An authorizer over a fixed `graph` (no watches).
    pub fn with_graph(graph: graph::Graph) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            graph: RwLock::new(graph),
            static_rules: decide::node_rules(),
            store: None,
            watching: AtomicBool::new(true),
            me: me.clone(),
        })
    }

    fn ensure_watching(&self) {
        if self.watching.load(Ordering::Acquire) || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        if !self.watching.swap(true, Ordering::AcqRel) {
            for source in watch::Source::ALL {
                tokio::spawn(watch::follow(self.me.clone(), source));
            }
        }
    }

    /// Runs `change` on the graph.
    fn update(&self, change: impl FnOnce(&mut graph::Graph)) {
        let mut graph = self
            .graph
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        change(&mut graph);
    }

    /// The decision on `attributes` (what [`Authorize::authorize`] answers).
    pub fn decide(&self, attributes: &Attributes) -> Decision {
        self.ensure_watching();
        let graph = self
            .graph
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        decide::decide(&graph, &self.static_rules, attributes)
    }
}

#[async_trait::async_trait]
impl Authorize for NodeAuthorizer {
    async fn authorize(&self, attributes: &Attributes) -> Decision {
        self.decide(attributes)
    }

    async fn rules_for(&self, user: &UserInfo, _namespace: &str) -> Rules {
        if decide::node_identity(user).is_some() {
            Rules {
                incomplete: true,
                evaluation_error: "node authorizer does not support user rule resolution".into(),
                ..Rules::default()
            }
        } else {
            Rules::default()
        }
    }
}

/// The name a `metadata.name=<name>` (or `==`) field selector asks for: kube authorizes a
/// list or watch with one as a request on that object.
pub fn selector_name(field_selector: Option<&str>) -> Option<&str> {
    field_selector?.split(',').find_map(|term| {
        let value = term.trim().strip_prefix("metadata.name")?;
        let value = value
            .strip_prefix("==")
            .or_else(|| value.strip_prefix('='))?;
        (!value.is_empty()).then_some(value)
    })
}

/// The authorization attributes of `verb` on `target` by `user`; `selected` is the name a
/// list or watch selects with `metadata.name` ([`selector_name`]).
pub(crate) fn attributes(
    user: &UserInfo,
    verb: &str,
    target: &Target,
    selected: Option<&str>,
) -> Attributes {
    let name = match (target.name.as_deref(), verb) {
        (Some(name), _) => name,
        (None, "list" | "watch") => selected.unwrap_or_default(),
        (None, _) => "",
    };
    Attributes {
        user: Arc::new(user.clone()),
        verb: verb.to_owned(),
        request: RequestKind::Resource(ResourceAttributes {
            group: target.resource.group.to_owned(),
            version: target.resource.version.to_owned(),
            resource: target.resource.plural.to_owned(),
            subresource: target.subresource.clone().unwrap_or_default(),
            namespace: target.namespace.clone().unwrap_or_default(),
            name: name.to_owned(),
        }),
    }
}

/// Authorizes a request of node user `user` (node `node`): the Node authorizer, then (for
/// now, see the module documentation) the `keelson:node-datapath` rules, then
/// NodeRestriction on what either allowed.
pub(crate) fn authorize_request(
    nodes: &NodeAuthorizer,
    user: &UserInfo,
    node: &str,
    verb: &str,
    target: &Target,
    field_selector: Option<&str>,
) -> Result<Access, ApiError> {
    let attributes = attributes(user, verb, target, selector_name(field_selector));
    match nodes.decide(&attributes) {
        Decision::Allow(_) => {}
        Decision::NoOpinion(_) if rules::rules_allow(&roles::datapath_rules(), &attributes) => {}
        Decision::NoOpinion(reason) | Decision::Deny(reason) => {
            return Err(forbidden(user, verb, target, &reason));
        }
    }
    restriction::restrict(user, node, verb, target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_metadata_name_selector_names_the_object() {
        let cases = [
            (Some("metadata.name=tls"), Some("tls")),
            (Some("metadata.name==tls"), Some("tls")),
            (Some("type=Opaque, metadata.name=tls"), Some("tls")),
            (Some("metadata.name!=tls"), None),
            (Some("metadata.name="), None),
            (Some("metadata.namespace=default"), None),
            (None, None),
        ];
        for (selector, expected) in cases {
            assert_eq!(selector_name(selector), expected, "{selector:?}");
        }
    }

    #[tokio::test]
    async fn nodes_rules_cannot_be_listed() {
        let authorizer = NodeAuthorizer::with_graph(graph::Graph::default());
        let rules = authorizer.rules_for(&UserInfo::node("n1"), "default").await;
        assert!(rules.incomplete);
        assert_eq!(
            rules.evaluation_error,
            "node authorizer does not support user rule resolution"
        );
        let alice = authorizer
            .rules_for(&UserInfo::new("alice", &[]), "default")
            .await;
        assert_eq!(alice, Rules::default());
    }
}
