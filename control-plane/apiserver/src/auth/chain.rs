//! The authorizer chain every request goes through, in kube-apiserver's order for
//! `--authorization-mode=Node,RBAC`: `system:masters` first (kube's privileged group never
//! needs a binding), then Kubernetes' Node authorizer ([`super::node`]), then RBAC.

use std::sync::Arc;

use keelson_store::Store;

use super::{
    UserInfo,
    authz::{Attributes, Authorize, Authorizer, Decision, Rules},
    node::NodeAuthorizer,
    rbac::RbacAuthorizer,
};

/// Allows everything to members of `system:masters`; no opinion on anyone else.
#[derive(Debug, Default)]
pub struct Masters;

#[async_trait::async_trait]
impl Authorize for Masters {
    async fn authorize(&self, attributes: &Attributes) -> Decision {
        if attributes.user.is_admin() {
            Decision::Allow(String::new())
        } else {
            Decision::NoOpinion(String::new())
        }
    }

    async fn rules_for(&self, user: &UserInfo, _: &str) -> Rules {
        use k8s_openapi::api::authorization::v1::{NonResourceRule, ResourceRule};
        if !user.is_admin() {
            return Rules::default();
        }
        let all = || Some(vec!["*".to_owned()]);
        Rules {
            resource: vec![ResourceRule {
                verbs: vec!["*".into()],
                api_groups: all(),
                resources: all(),
                resource_names: None,
            }],
            non_resource: vec![NonResourceRule {
                verbs: vec!["*".into()],
                non_resource_urls: all(),
            }],
            ..Rules::default()
        }
    }
}

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
