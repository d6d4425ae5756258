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

use keelson_store::Store;

use super::{
    UserInfo,
    authz::{Attributes, Authorize, Decision, Rules},
};

pub mod decide;
pub mod graph;
pub mod restriction;
mod watch;

pub use restriction::check_token_request;

/// Kubernetes' Node authorizer over a graph fed by watches of the store's pods and
/// persistent volumes.
#[derive(Debug)]
pub struct NodeAuthorizer {
    graph: RwLock<graph::Graph>,
    static_rules: Vec<crate::auth::rbac::rules::Rule>,
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

#[cfg(test)]
mod tests {
    use super::*;

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
