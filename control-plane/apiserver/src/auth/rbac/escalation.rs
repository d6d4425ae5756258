//! Escalation prevention for writes of RBAC objects (kube's `pkg/registry/rbac/role`,
//! `clusterrole`, `rolebinding` and `clusterrolebinding` `policybased` storage): a user may
//! only write a Role or ClusterRole whose rules it holds (or with `escalate` on it), and only
//! bind a role whose rules it holds (or with `bind` on that role). `system:masters` may always.

use std::sync::Arc;

use k8s_openapi::api::rbac::v1::{PolicyRule, RoleRef};
use serde_json::Value;

use super::{
    RbacAuthorizer, is_rbac,
    rules::{Rule, compact, uncovered},
};
use crate::{
    ApiError,
    auth::{
        UserInfo,
        authz::{Attributes, Authorizer, Decision, RequestKind, ResourceAttributes},
    },
    registry,
    request::Target,
};

/// What escalation checks read: the whole chain (for `bind` and `escalate`) and RBAC's
/// rules (for what the user holds).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Escalation<'a> {
    pub(crate) authorizer: &'a Authorizer,
    pub(crate) rbac: &'a RbacAuthorizer,
}

/// Whether an update changes only what garbage collection changes (kube's
/// `IsOnlyMutatingGCFields`): such updates need no escalation check.
fn only_gc_fields(object: &Value, old: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            for field in [
                "ownerReferences",
                "finalizers",
                "resourceVersion",
                "managedFields",
                "generation",
            ] {
                meta.remove(field);
            }
        }
        v
    };
    strip(object) == strip(old)
}

/// Go's `%q` of a string slice: `["a" "b"]`.
fn quoted(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
    format!("[{}]", inner.join(" "))
}

impl Escalation<'_> {
    async fn allowed(
        &self,
        user: &Arc<UserInfo>,
        verb: &str,
        attributes: ResourceAttributes,
    ) -> bool {
        let attributes = Attributes {
            user: Arc::clone(user),
            verb: verb.to_owned(),
            request: RequestKind::Resource(attributes),
        };
        matches!(
            self.authorizer.authorize(&attributes).await,
            Decision::Allow(_)
        )
    }

    /// kube's `ConfirmNoEscalation`: the 403 naming the rules `user` would grant without
    /// holding them in `namespace`.
    async fn confirm_no_escalation(
        &self,
        user: &UserInfo,
        namespace: &str,
        target: &Target,
        name: &str,
        wanted: &[Rule],
        why: Option<&str>,
    ) -> Result<(), ApiError> {
        let index = self.rbac.index().await?;
        let (held, errors) = index.rules_for(user, namespace);
        let missing = uncovered(&held, wanted);
        if missing.is_empty() {
            return Ok(());
        }
        let resource = target.resource.qualified();
        let message = match why {
            Some(why) => why.to_owned(),
            None => {
                let mut lines: Vec<String> =
                    compact(missing).iter().map(Rule::compact_string).collect();
                lines.sort();
                lines.dedup();
                let mut message = format!(
                    "user \"{}\" (groups={}) is attempting to grant RBAC permissions not currently \
                     held:\n{}",
                    user.name,
                    quoted(&user.groups),
                    lines.join("\n")
                );
                if !errors.is_empty() {
                    message.push_str(&format!("; resolution errors: [{}]", errors.join(", ")));
                }
                message
            }
        };
        Err(ApiError::forbidden(format!(
            "{resource} \"{name}\" is forbidden: {message}"
        )))
    }

    /// The escalation check of writing `object` (the stored form after defaulting) as
    /// `target` named `name`; `old` is the stored object an update replaces.
    pub(crate) async fn check(
        &self,
        user: &UserInfo,
        target: &Target,
        name: &str,
        object: Option<&Value>,
        old: Option<&Value>,
    ) -> Result<(), ApiError> {
        let Some(object) = object else {
            return Ok(());
        };
        if !is_rbac(target.resource) || target.subresource.is_some() || user.is_admin() {
            return Ok(());
        }
        if old.is_some_and(|old| only_gc_fields(object, old)) {
            return Ok(());
        }
        let namespace = target.namespace.as_deref().unwrap_or_default();
        let user = Arc::new(user.clone());
        let plural = target.resource.plural;
        if matches!(plural, "roles" | "clusterroles") {
            let escalate = ResourceAttributes {
                group: target.resource.group.to_owned(),
                version: "*".to_owned(),
                resource: plural.to_owned(),
                namespace: namespace.to_owned(),
                name: target.name.clone().unwrap_or_default(),
                ..ResourceAttributes::default()
            };
            if self.allowed(&user, "escalate", escalate).await {
                return Ok(());
            }
            let rules: Vec<PolicyRule> = object
                .get("rules")
                .cloned()
                .and_then(|r| serde_json::from_value(r).ok())
                .unwrap_or_default();
            let rules: Vec<Rule> = rules.iter().map(Rule::from).collect();
            self.confirm_no_escalation(&user, namespace, target, name, &rules, None)
                .await?;
            if object.get("aggregationRule").is_some_and(|a| !a.is_null()) {
                let everything = [
                    Rule {
                        verbs: vec!["*".into()],
                        api_groups: vec!["*".into()],
                        resources: vec!["*".into()],
                        ..Rule::default()
                    },
                    Rule {
                        verbs: vec!["*".into()],
                        non_resource_urls: vec!["*".into()],
                        ..Rule::default()
                    },
                ];
                self.confirm_no_escalation(
                    &user,
                    namespace,
                    target,
                    name,
                    &everything,
                    Some("must have cluster-admin privileges to use the aggregationRule"),
                )
                .await?;
            }
            return Ok(());
        }
        let Some(role_ref) = object
            .get("roleRef")
            .cloned()
            .and_then(|r| serde_json::from_value::<RoleRef>(r).ok())
        else {
            return Ok(());
        };
        let bound = match role_ref.kind.as_str() {
            "ClusterRole" => "clusterroles",
            "Role" => "roles",
            _ => return Ok(()),
        };
        let bind = ResourceAttributes {
            group: role_ref.api_group.clone(),
            resource: bound.to_owned(),
            namespace: namespace.to_owned(),
            name: role_ref.name.clone(),
            ..ResourceAttributes::default()
        };
        if self.allowed(&user, "bind", bind).await {
            return Ok(());
        }
        let index = self.rbac.index().await?;
        let rules =
            index.role_ref_rules(&role_ref, namespace).map_err(|_| {
                match registry::find(keelson_api::rbac::GROUP, "v1", bound) {
                    Some(resource) => ApiError::not_found(resource, &role_ref.name),
                    None => ApiError::no_route(),
                }
            })?;
        self.confirm_no_escalation(&user, namespace, target, name, &rules, None)
            .await
    }
}
