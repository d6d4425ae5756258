//! The node link of the authorizer chain until the graph-based Node authorizer replaces it:
//! keelson's existing node rules ([`super::node_rule`]) as an [`Authorize`]. Decides only on
//! node users' resource requests; NodeRestriction ([`super::restriction`]) stays in the
//! request path either way.

use super::{
    NodeRule, UserInfo,
    authz::{Attributes, Authorize, Decision, RequestKind, Rules},
    node_rule,
};
use crate::{registry, request::Target};

/// The node rules as an authorizer.
#[derive(Debug, Default)]
pub struct NodeRules;

#[async_trait::async_trait]
impl Authorize for NodeRules {
    async fn authorize(&self, attributes: &Attributes) -> Decision {
        let (Some(node), RequestKind::Resource(r)) =
            (attributes.user.node_name(), &attributes.request)
        else {
            return Decision::NoOpinion(String::new());
        };
        let reads = matches!(attributes.verb.as_str(), "get" | "list" | "watch");
        let Some(resource) = registry::find(&r.group, &r.version, &r.resource) else {
            // Custom resources: nodes read them, as they read everything.
            return if reads {
                Decision::Allow(String::new())
            } else {
                Decision::NoOpinion(String::new())
            };
        };
        let target = Target {
            resource,
            namespace: (!r.namespace.is_empty()).then(|| r.namespace.clone()),
            name: (!r.name.is_empty()).then(|| r.name.clone()),
            subresource: (!r.subresource.is_empty()).then(|| r.subresource.clone()),
            custom: None,
        };
        match node_rule(node, &attributes.verb, &target) {
            NodeRule::Allow(_) => Decision::Allow(String::new()),
            NodeRule::Deny(why) => Decision::Deny(why),
            NodeRule::NoOpinion => Decision::NoOpinion(String::new()),
        }
    }

    async fn rules_for(&self, _: &UserInfo, _: &str) -> Rules {
        Rules {
            incomplete: true,
            evaluation_error: "node authorizer does not support user rule resolution".into(),
            ..Rules::default()
        }
    }
}
