//! The RBAC index: bindings by subject (user name, group name; a ServiceAccount subject is
//! the user `system:serviceaccount:<ns>:<name>`) and namespace, each with its role's rules
//! resolved once. A request visits only the bindings of its user and groups.

use std::{collections::HashMap, sync::Arc};

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, Role, RoleBinding, RoleRef, Subject,
};
use keelson_store::KeyValue;
use serde::de::DeserializeOwned;

use super::rules::Rule;
use crate::{ApiError, auth::UserInfo, object::decode_kv, store_cache::Cached};

/// Where a granted rule comes from, as Kubernetes describes it in decisions.
#[derive(Debug)]
pub(crate) struct Source {
    /// Tells bindings apart (a binding matched through two subjects is visited twice).
    pub(crate) binding: usize,
    /// `RBAC: allowed by ClusterRoleBinding "x" of ClusterRole "y" to User "z"`.
    pub(crate) allowed: String,
}

/// One binding of a subject: the rules it grants, or why they cannot be resolved.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    pub(crate) rules: Result<Arc<[Rule]>, Arc<str>>,
    pub(crate) source: Arc<Source>,
}

#[derive(Debug, Default)]
struct Grants {
    /// From ClusterRoleBindings: apply in every namespace and at the cluster scope.
    cluster: Vec<Grant>,
    /// From RoleBindings, by their namespace.
    namespaced: HashMap<String, Vec<Grant>>,
}

/// The stored RBAC objects, indexed (see the module documentation).
#[derive(Debug, Default)]
pub(crate) struct Index {
    users: HashMap<String, Grants>,
    groups: HashMap<String, Grants>,
    cluster_roles: HashMap<String, Arc<[Rule]>>,
    roles: HashMap<String, HashMap<String, Arc<[Rule]>>>,
}

fn decode<T: DeserializeOwned>(items: &[KeyValue]) -> Vec<T> {
    items
        .iter()
        .filter_map(|kv| {
            match decode_kv(kv).and_then(|v| {
                serde_json::from_value(v).map_err(|e| ApiError::bad_request(e.to_string()))
            }) {
                Ok(object) => Some(object),
                Err(error) => {
                    tracing::warn!(
                        key = kv.key,
                        error = error.message,
                        "unreadable RBAC object"
                    );
                    None
                }
            }
        })
        .collect()
}

fn compiled(rules: Option<&Vec<k8s_openapi::api::rbac::v1::PolicyRule>>) -> Arc<[Rule]> {
    rules.into_iter().flatten().map(Rule::from).collect()
}

/// Kubernetes' text for a subject: `User "alice"`, `ServiceAccount "sa/ns"`.
fn describe(subject: &Subject, namespace: &str) -> String {
    match subject.kind.as_str() {
        "ServiceAccount" => format!(
            "ServiceAccount \"{}/{}\"",
            subject.name,
            subject
                .namespace
                .as_deref()
                .filter(|n| !n.is_empty())
                .unwrap_or(namespace)
        ),
        kind => format!("{kind} \"{}\"", subject.name),
    }
}

impl Cached for Index {
    const SOURCES: &'static [(&'static str, &'static str, &'static str)] = &[
        ("rbac.authorization.k8s.io", "v1", "clusterroles"),
        ("rbac.authorization.k8s.io", "v1", "roles"),
        ("rbac.authorization.k8s.io", "v1", "clusterrolebindings"),
        ("rbac.authorization.k8s.io", "v1", "rolebindings"),
    ];

    fn build(lists: &[Vec<KeyValue>]) -> Self {
        let part = |i: usize| lists.get(i).map_or(&[][..], Vec::as_slice);
        Self::new(
            &decode::<ClusterRole>(part(0)),
            &decode::<Role>(part(1)),
            &decode::<ClusterRoleBinding>(part(2)),
            &decode::<RoleBinding>(part(3)),
        )
    }
}

impl Index {
    /// The index of these objects.
    pub(crate) fn new(
        cluster_roles: &[ClusterRole],
        roles: &[Role],
        cluster_bindings: &[ClusterRoleBinding],
        bindings: &[RoleBinding],
    ) -> Self {
        let mut index = Self::default();
        for role in cluster_roles {
            if let Some(name) = &role.metadata.name {
                index
                    .cluster_roles
                    .insert(name.clone(), compiled(role.rules.as_ref()));
            }
        }
        for role in roles {
            if let (Some(ns), Some(name)) = (&role.metadata.namespace, &role.metadata.name) {
                index
                    .roles
                    .entry(ns.clone())
                    .or_default()
                    .insert(name.clone(), compiled(role.rules.as_ref()));
            }
        }
        let mut next = 0;
        for binding in cluster_bindings {
            let name = binding.metadata.name.as_deref().unwrap_or_default();
            let rules = index.role_ref_rules(&binding.role_ref, "");
            index.add(
                "ClusterRoleBinding",
                name,
                None,
                &binding.role_ref,
                binding.subjects.as_deref().unwrap_or_default(),
                &rules,
                next,
            );
            next += 1;
        }
        for binding in bindings {
            let name = binding.metadata.name.as_deref().unwrap_or_default();
            let Some(ns) = binding.metadata.namespace.as_deref() else {
                continue;
            };
            let rules = index.role_ref_rules(&binding.role_ref, ns);
            index.add(
                "RoleBinding",
                &format!("{name}/{ns}"),
                Some(ns),
                &binding.role_ref,
                binding.subjects.as_deref().unwrap_or_default(),
                &rules,
                next,
            );
            next += 1;
        }
        index
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "the parts of one binding, shared by both binding kinds"
    )]
    fn add(
        &mut self,
        kind: &str,
        shown_name: &str,
        namespace: Option<&str>,
        role_ref: &RoleRef,
        subjects: &[Subject],
        rules: &Result<Arc<[Rule]>, Arc<str>>,
        binding: usize,
    ) {
        for subject in subjects {
            let (map, key) = match subject.kind.as_str() {
                "User" => (&mut self.users, subject.name.clone()),
                "Group" => (&mut self.groups, subject.name.clone()),
                "ServiceAccount" => {
                    // An unqualified ServiceAccount is the binding's namespace's; a
                    // ClusterRoleBinding's must name its namespace (kube's `appliesToUser`).
                    let Some(ns) = subject
                        .namespace
                        .as_deref()
                        .filter(|n| !n.is_empty())
                        .or(namespace)
                    else {
                        continue;
                    };
                    (
                        &mut self.users,
                        format!("system:serviceaccount:{ns}:{}", subject.name),
                    )
                }
                _ => continue,
            };
            let grant = Grant {
                rules: rules.clone(),
                source: Arc::new(Source {
                    binding,
                    allowed: format!(
                        "RBAC: allowed by {kind} \"{shown_name}\" of {} \"{}\" to {}",
                        role_ref.kind,
                        role_ref.name,
                        describe(subject, namespace.unwrap_or_default())
                    ),
                }),
            };
            let grants = map.entry(key).or_default();
            match namespace {
                None => grants.cluster.push(grant),
                Some(ns) => grants
                    .namespaced
                    .entry(ns.to_owned())
                    .or_default()
                    .push(grant),
            }
        }
    }

    /// The rules `role_ref` grants in a binding of `namespace` (`""` for a ClusterRoleBinding),
    /// or Kubernetes' not-found text.
    pub(crate) fn role_ref_rules(
        &self,
        role_ref: &RoleRef,
        namespace: &str,
    ) -> Result<Arc<[Rule]>, Arc<str>> {
        let found = match role_ref.kind.as_str() {
            "ClusterRole" => self.cluster_roles.get(&role_ref.name),
            "Role" => self
                .roles
                .get(namespace)
                .and_then(|roles| roles.get(&role_ref.name)),
            other => {
                return Err(format!("unsupported role reference kind: \"{other}\"").into());
            }
        };
        found.cloned().ok_or_else(|| {
            format!(
                "{}.rbac.authorization.k8s.io \"{}\" not found",
                role_ref.kind.to_ascii_lowercase(),
                role_ref.name
            )
            .into()
        })
    }

    /// Calls `visit` with the grants that apply to `user` in `namespace` (ClusterRoleBindings
    /// first, then the namespace's RoleBindings, as Kubernetes visits them) until it returns
    /// `false`. Costs the number of bindings of the user's subjects; allocates nothing.
    pub(crate) fn visit<'a>(
        &'a self,
        user: &UserInfo,
        namespace: &str,
        mut visit: impl FnMut(&'a Grant) -> bool,
    ) {
        let subjects = || {
            self.users
                .get(&user.name)
                .into_iter()
                .chain(user.groups.iter().filter_map(|g| self.groups.get(g)))
        };
        for grants in subjects() {
            for grant in &grants.cluster {
                if !visit(grant) {
                    return;
                }
            }
        }
        if namespace.is_empty() {
            return;
        }
        for grants in subjects() {
            for grant in grants.namespaced.get(namespace).into_iter().flatten() {
                if !visit(grant) {
                    return;
                }
            }
        }
    }

    /// Kubernetes' `RulesFor`: every rule `user` holds in `namespace` (each binding once),
    /// and the errors met resolving role references.
    pub(crate) fn rules_for(&self, user: &UserInfo, namespace: &str) -> (Vec<Rule>, Vec<String>) {
        let mut seen = Vec::new();
        let mut rules = Vec::new();
        let mut errors = Vec::new();
        self.visit(user, namespace, |grant| {
            if !seen.contains(&grant.source.binding) {
                seen.push(grant.source.binding);
                match &grant.rules {
                    Ok(granted) => rules.extend(granted.iter().cloned()),
                    Err(error) => errors.push(error.to_string()),
                }
            }
            true
        });
        (rules, errors)
    }
}
