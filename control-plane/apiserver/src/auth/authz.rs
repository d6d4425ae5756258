//! Authorization as Kubernetes models it: a request is reduced to [`Attributes`] (who, which
//! verb, on which resource or non-resource path), and a chain of authorizers ([`Authorizer`])
//! is asked in order (kube-apiserver's `--authorization-mode=Node,RBAC`): the first `Allow` or
//! `Deny` decides, `NoOpinion` asks the next one, and a request nobody allowed is denied.
//!
//! The same attributes and the same chain answer the access reviews (SubjectAccessReview and
//! friends), so `kubectl auth can-i` says exactly what a request would meet.

use std::sync::Arc;

use k8s_openapi::api::authorization::v1::{NonResourceRule, ResourceRule};

use super::UserInfo;

/// What a resource request addresses (kube's `authorizer.Attributes` for resource requests).
/// Empty strings mean "not set", as in Kubernetes (the core group is `""` too).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceAttributes {
    /// The API group (`""` for core).
    pub group: String,
    /// The API version (`v1`); authorizers do not decide on it.
    pub version: String,
    /// The resource's plural name (`pods`).
    pub resource: String,
    /// The subresource (`status`, `log`, `token`), or `""`.
    pub subresource: String,
    /// The namespace, or `""` for cluster-scoped resources and all-namespace lists.
    pub namespace: String,
    /// The object's name, or `""` for lists and creates.
    pub name: String,
}

/// A resource or a non-resource request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestKind {
    /// A request on a resource (`/api/...`, `/apis/...` with a resource).
    Resource(ResourceAttributes),
    /// A request on another path (`/healthz`, `/version`, `/apis`): the verb is the
    /// lower-cased HTTP method (`get`, `post`, ...).
    NonResource {
        /// The request path, without the query.
        path: String,
    },
}

/// Who asks to do what: kube's `authorizer.Attributes`.
#[derive(Debug, Clone)]
pub struct Attributes {
    /// The (possibly impersonated) user.
    pub user: Arc<UserInfo>,
    /// Kubernetes' verb: get, list, watch, create, update, patch, delete, deletecollection,
    /// and the special verbs (impersonate, bind, escalate, approve, sign, use...).
    pub verb: String,
    /// What the verb is applied to.
    pub request: RequestKind,
}

/// An authorizer's answer, with the reason Kubernetes would show (may be empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed: the chain stops here.
    Allow(String),
    /// Denied: the chain stops here (a 403 with this reason).
    Deny(String),
    /// No opinion: the next authorizer is asked.
    NoOpinion(String),
}

/// The rules a user has in a namespace, for SelfSubjectRulesReview.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rules {
    /// Rules on resources.
    pub resource: Vec<ResourceRule>,
    /// Rules on non-resource URLs.
    pub non_resource: Vec<NonResourceRule>,
    /// Whether the list may be missing rules (an authorizer that cannot enumerate them).
    pub incomplete: bool,
    /// Why the list may be incomplete.
    pub evaluation_error: String,
}

/// One authorizer of the chain (the Node authorizer, RBAC, ...).
#[async_trait::async_trait]
pub trait Authorize: Send + Sync + std::fmt::Debug {
    /// Decides on `attributes`.
    async fn authorize(&self, attributes: &Attributes) -> Decision;

    /// The rules `user` has in `namespace` (all namespaces' rules included for cluster-wide
    /// grants), for SelfSubjectRulesReview. Authorizers that cannot list rules return
    /// `incomplete`.
    async fn rules_for(&self, user: &UserInfo, namespace: &str) -> Rules;
}

/// The chain of authorizers asked in order.
#[derive(Debug, Clone, Default)]
pub struct Authorizer {
    chain: Vec<Arc<dyn Authorize>>,
}

impl Authorizer {
    /// The chain with `authorizer` appended (asked after those already in it).
    #[must_use]
    pub fn with(mut self, authorizer: Arc<dyn Authorize>) -> Self {
        self.chain.push(authorizer);
        self
    }

    /// Asks each authorizer in turn; the first `Allow` or `Deny` decides. When all have no
    /// opinion the answer is `Deny` with their reasons joined (kube: "no RBAC policy matched").
    pub async fn authorize(&self, attributes: &Attributes) -> Decision {
        let mut reasons = Vec::new();
        for authorizer in &self.chain {
            match authorizer.authorize(attributes).await {
                Decision::NoOpinion(reason) => {
                    if !reason.is_empty() {
                        reasons.push(reason);
                    }
                }
                decided => return decided,
            }
        }
        Decision::Deny(reasons.join(", "))
    }

    /// What a SubjectAccessReview reports: like [`Authorizer::authorize`], but `NoOpinion`
    /// (with the reasons joined) when no authorizer decided, so that `status.denied` is only
    /// set by an explicit `Deny` (kube's union authorizer).
    pub async fn review(&self, attributes: &Attributes) -> Decision {
        let mut reasons = Vec::new();
        for authorizer in &self.chain {
            match authorizer.authorize(attributes).await {
                Decision::NoOpinion(reason) => {
                    if !reason.is_empty() {
                        reasons.push(reason);
                    }
                }
                decided => return decided,
            }
        }
        Decision::NoOpinion(reasons.join(", "))
    }

    /// Every authorizer's rules for `user` in `namespace`, concatenated.
    pub async fn rules_for(&self, user: &UserInfo, namespace: &str) -> Rules {
        let mut all = Rules::default();
        for authorizer in &self.chain {
            let rules = authorizer.rules_for(user, namespace).await;
            all.resource.extend(rules.resource);
            all.non_resource.extend(rules.non_resource);
            all.incomplete |= rules.incomplete;
            if !rules.evaluation_error.is_empty() {
                if !all.evaluation_error.is_empty() {
                    all.evaluation_error.push_str("; ");
                }
                all.evaluation_error.push_str(&rules.evaluation_error);
            }
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Fixed(Decision);

    #[async_trait::async_trait]
    impl Authorize for Fixed {
        async fn authorize(&self, _: &Attributes) -> Decision {
            self.0.clone()
        }
        async fn rules_for(&self, _: &UserInfo, _: &str) -> Rules {
            Rules {
                incomplete: true,
                evaluation_error: "fixed".into(),
                ..Rules::default()
            }
        }
    }

    fn attributes() -> Attributes {
        Attributes {
            user: Arc::new(UserInfo::new("alice", &[])),
            verb: "get".into(),
            request: RequestKind::NonResource {
                path: "/healthz".into(),
            },
        }
    }

    #[tokio::test]
    async fn the_first_decision_wins_and_silence_denies() {
        let no = |r: &str| Arc::new(Fixed(Decision::NoOpinion(r.into()))) as Arc<dyn Authorize>;
        let chain = Authorizer::default()
            .with(no("node: not a node"))
            .with(Arc::new(Fixed(Decision::Allow("rbac".into()))))
            .with(Arc::new(Fixed(Decision::Deny("never asked".into()))));
        assert_eq!(
            chain.authorize(&attributes()).await,
            Decision::Allow("rbac".into())
        );
        let silent = Authorizer::default().with(no("a")).with(no("b"));
        assert_eq!(
            silent.authorize(&attributes()).await,
            Decision::Deny("a, b".into())
        );
        let rules = silent
            .rules_for(&UserInfo::new("alice", &[]), "default")
            .await;
        assert!(rules.incomplete);
        assert_eq!(rules.evaluation_error, "fixed; fixed");
    }
}
