//! Role-based access control as Kubernetes enforces it (`rbac.authorization.k8s.io/v1`):
//! the [`RbacAuthorizer`] link of the authorizer chain, over an [`index`] of the stored Roles,
//! ClusterRoles and bindings kept current by a [`StoreCache`]; escalation prevention for
//! writes of RBAC objects ([`escalation`]); the bootstrap policy stored at start
//! ([`reconcile`]).

use std::sync::Arc;

use keelson_store::Store;

use super::{
    UserInfo,
    authz::{Attributes, Authorize, Decision, RequestKind, Rules},
};
use crate::{ApiError, registry::Resource, store_cache::StoreCache};

pub(crate) mod escalation;
pub(crate) mod index;
pub mod reconcile;
pub(crate) mod rules;

use index::Index;

/// Whether writes of `resource` change what RBAC grants.
pub(crate) fn is_rbac(resource: &Resource) -> bool {
    resource.group == keelson_api::rbac::GROUP
        && matches!(
            resource.plural,
            "roles" | "clusterroles" | "rolebindings" | "clusterrolebindings"
        )
}

/// The RBAC authorizer: allows what a binding of the user, one of its groups or its
/// ServiceAccount grants; has no opinion otherwise.
#[derive(Debug)]
pub struct RbacAuthorizer {
    store: Arc<dyn Store>,
    cache: Arc<StoreCache<Index>>,
}

impl RbacAuthorizer {
    /// RBAC over the objects in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            cache: Arc::default(),
        }
    }

    /// Marks the RBAC objects changed: the next request reads them again.
    pub(crate) fn invalidate(&self) {
        self.cache.invalidate();
    }

    /// The current index.
    pub(crate) async fn index(&self) -> Result<Arc<Index>, ApiError> {
        self.cache.get(&self.store).await
    }
}

/// Kubernetes' RBAC decision for `attributes` over `index`.
pub(crate) fn decide(index: &Index, attributes: &Attributes) -> Decision {
    let namespace = match &attributes.request {
        RequestKind::Resource(r) => r.namespace.as_str(),
        RequestKind::NonResource { .. } => "",
    };
    let mut allowed = None;
    let mut errors: Vec<&str> = Vec::new();
    index.visit(&attributes.user, namespace, |grant| match &grant.rules {
        Ok(rules) => {
            if rules
                .iter()
                .any(|r| r.allows(&attributes.verb, &attributes.request))
            {
                allowed = Some(grant);
                return false;
            }
            true
        }
        Err(error) => {
            errors.push(&**error);
            true
        }
    });
    match allowed {
        Some(grant) => Decision::Allow(grant.source.allowed.clone()),
        None => Decision::NoOpinion(match errors.as_slice() {
            [] => String::new(),
            [one] => format!("RBAC: {one}"),
            many => format!("RBAC: [{}]", many.join(", ")),
        }),
    }
}

#[async_trait::async_trait]
impl Authorize for RbacAuthorizer {
    async fn authorize(&self, attributes: &Attributes) -> Decision {
        match self.index().await {
            Ok(index) => decide(&index, attributes),
            Err(error) => Decision::NoOpinion(format!("RBAC: {}", error.message)),
        }
    }

    async fn rules_for(&self, user: &UserInfo, namespace: &str) -> Rules {
        let index = match self.index().await {
            Ok(index) => index,
            Err(error) => {
                return Rules {
                    incomplete: true,
                    evaluation_error: error.message,
                    ..Rules::default()
                };
            }
        };
        let (rules, errors) = index.rules_for(user, namespace);
        let mut out = Rules {
            evaluation_error: errors.join(", "),
            ..Rules::default()
        };
        for rule in &rules {
            if !rule.resources.is_empty() {
                out.resource
                    .push(k8s_openapi::api::authorization::v1::ResourceRule {
                        verbs: rule.verbs.clone(),
                        api_groups: Some(rule.api_groups.clone()),
                        resources: Some(rule.resources.clone()),
                        resource_names: (!rule.resource_names.is_empty())
                            .then(|| rule.resource_names.clone()),
                    });
            }
            if !rule.non_resource_urls.is_empty() {
                out.non_resource
                    .push(k8s_openapi::api::authorization::v1::NonResourceRule {
                        verbs: rule.verbs.clone(),
                        non_resource_urls: Some(rule.non_resource_urls.clone()),
                    });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
