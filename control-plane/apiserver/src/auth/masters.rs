//! The first link of the authorizer chain: members of `system:masters` may do everything
//! (kube-apiserver's privileged-group authorizer, asked before Node and RBAC).

use super::{
    MASTERS_GROUP, UserInfo,
    authz::{Attributes, Authorize, Authorizer, Decision, Rules},
};
use std::sync::Arc;

/// Allows every request of a `system:masters` member; no opinion on anyone else.
#[derive(Debug, Default, Clone, Copy)]
pub struct Masters;

#[async_trait::async_trait]
impl Authorize for Masters {
    async fn authorize(&self, attributes: &Attributes) -> Decision {
        if attributes.user.groups.iter().any(|g| g == MASTERS_GROUP) {
            Decision::Allow(String::new())
        } else {
            Decision::NoOpinion(String::new())
        }
    }

    /// None: as in Kubernetes, the privileged group is not a rule resolver (a master's rules
    /// come from RBAC's `cluster-admin` binding to `system:masters`).
    async fn rules_for(&self, _: &UserInfo, _: &str) -> Rules {
        Rules::default()
    }
}

/// The chain that allows `system:masters` only (what [`crate::AppState`] starts with).
pub fn masters_only() -> Authorizer {
    Authorizer::default().with(Arc::new(Masters))
}
