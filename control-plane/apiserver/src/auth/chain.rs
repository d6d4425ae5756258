//! The authorizer chain every request goes through, in kube-apiserver's order for
//! `--authorization-mode=Node,RBAC`: `system:masters` first (kube's privileged group never
//! needs a binding), then Kubernetes' Node authorizer ([`super::node`]), then RBAC.

use std::sync::Arc;

use keelson_store::Store;

use super::{
    authz::{Authorize, Authorizer},
    masters::Masters,
    node::NodeAuthorizer,
    rbac::RbacAuthorizer,
};

/// The chain over `store`'s RBAC objects, and its RBAC link (whose cache writes of RBAC
/// objects invalidate).
pub(crate) fn default_chain(store: Arc<dyn Store>) -> (Arc<Authorizer>, Arc<RbacAuthorizer>) {
    let nodes = NodeAuthorizer::new(Arc::clone(&store));
    let rbac = Arc::new(RbacAuthorizer::new(store));
    let chain = Authorizer::default()
        .with(Arc::new(Masters))
        .with(nodes as Arc<dyn Authorize>)
        .with(Arc::clone(&rbac) as Arc<dyn Authorize>);
    (Arc::new(chain), rbac)
}
