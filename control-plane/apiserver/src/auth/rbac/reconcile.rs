//! The bootstrap RBAC policy stored at start, as kube-apiserver's `rbac/bootstrap-roles`
//! post-start hook does: [`keelson_api::rbac_policy`]'s roles and bindings, and the ones
//! kubeadm creates for joining nodes ([`kubeadm_objects`]). Missing objects are created; an
//! existing one is reconciled unless annotated `rbac.authorization.kubernetes.io/autoupdate:
//! "false"`: missing rules, aggregation selectors, subjects, labels and annotations are added,
//! nothing a user added is removed, a binding whose roleRef changed is recreated. Aggregated
//! ClusterRoles then get their rules once (the clusterroleaggregation controller keeps them
//! current afterwards).

use std::collections::BTreeMap;

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use keelson_api::{
    bootstrap_token as bt,
    rbac::{AUTOUPDATE_ANNOTATION, GROUP, aggregated_rules},
    rbac_policy,
};
use keelson_store::{ListOptions, Store, StoreError};
use serde_json::{Value, json};

use super::rules::{Rule, uncovered};
use crate::{
    ApiError, finalizers,
    object::{check_kind, decode_kv, encode, prepare_create},
    registry::{self, Resource},
};

/// kubeadm's group of the default node bootstrap token.
const NODE_TOKEN_GROUP: &str = "system:bootstrappers:kubeadm:default-node-token";
/// kubeadm's Role (and RoleBinding) letting anonymous clients read `kube-public/cluster-info`.
const CLUSTER_INFO_ROLE: &str = "kubeadm:bootstrap-signer-clusterinfo";

fn subject(kind: &str, name: &str) -> Subject {
    Subject {
        kind: kind.into(),
        api_group: Some(GROUP.into()),
        name: name.into(),
        namespace: None,
    }
}

fn cluster_binding(name: &str, role: &str, subject: Subject) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: GROUP.into(),
            kind: "ClusterRole".into(),
            name: role.into(),
        },
        subjects: Some(vec![subject]),
    }
}

/// RBAC objects of each kind.
#[derive(Debug, Clone, Default)]
pub struct Objects {
    /// ClusterRoles.
    pub cluster_roles: Vec<ClusterRole>,
    /// ClusterRoleBindings.
    pub cluster_bindings: Vec<ClusterRoleBinding>,
    /// Roles (with their namespace).
    pub roles: Vec<Role>,
    /// RoleBindings (with their namespace).
    pub bindings: Vec<RoleBinding>,
}

/// What `kubeadm init` creates for joining (`phases/bootstraptoken`): the anonymous read of
/// `kube-public/cluster-info`, CSRs (and their auto-approval) for the default node token's
/// group, renewal approval for nodes, and reading Nodes for the token's group.
pub fn kubeadm_objects() -> Objects {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    let meta = |name: &str, ns: Option<&str>| ObjectMeta {
        name: Some(name.into()),
        namespace: ns.map(str::to_owned),
        ..ObjectMeta::default()
    };
    let group = |name: &str| subject("Group", name);
    let cluster_roles = vec![ClusterRole {
        metadata: meta("kubeadm:get-nodes", None),
        rules: Some(vec![PolicyRule {
            verbs: vec!["get".into()],
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["nodes".into()]),
            ..PolicyRule::default()
        }]),
        aggregation_rule: None,
    }];
    let cluster_bindings = vec![
        cluster_binding(
            "kubeadm:kubelet-bootstrap",
            "system:node-bootstrapper",
            group(NODE_TOKEN_GROUP),
        ),
        cluster_binding(
            "kubeadm:node-autoapprove-bootstrap",
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            group(NODE_TOKEN_GROUP),
        ),
        cluster_binding(
            "kubeadm:node-autoapprove-certificate-rotation",
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            group(super::super::NODES_GROUP),
        ),
        cluster_binding(
            "kubeadm:get-nodes",
            "kubeadm:get-nodes",
            group(NODE_TOKEN_GROUP),
        ),
    ];
    let roles = vec![Role {
        metadata: meta(CLUSTER_INFO_ROLE, Some(bt::KUBE_PUBLIC)),
        rules: Some(vec![PolicyRule {
            verbs: vec!["get".into()],
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            resource_names: Some(vec![bt::CLUSTER_INFO.into()]),
            ..PolicyRule::default()
        }]),
    }];
    let bindings = vec![RoleBinding {
        metadata: meta(CLUSTER_INFO_ROLE, Some(bt::KUBE_PUBLIC)),
        role_ref: RoleRef {
            api_group: GROUP.into(),
            kind: "Role".into(),
            name: CLUSTER_INFO_ROLE.into(),
        },
        subjects: Some(vec![subject(
            "User",
            super::super::bootstrap::ANONYMOUS_USER,
        )]),
    }];
    Objects {
        cluster_roles,
        cluster_bindings,
        roles,
        bindings,
    }
}

/// What to do with a stored object given the expected one.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// Nothing: it holds everything expected, or it is protected.
    None,
    /// Replace it with this object.
    Update(Value),
    /// Delete it and create this one (a binding's roleRef cannot change in place).
    Recreate(Value),
}

fn protected(object: &Value) -> bool {
    object
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(AUTOUPDATE_ANNOTATION))
        .and_then(Value::as_str)
        == Some("false")
}

fn list_of<T: serde::de::DeserializeOwned>(object: &Value, field: &str) -> Vec<T> {
    object
        .get(field)
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

/// `existing`'s map at `field` with the expected entries it lacks (its own values win).
fn merged_map(existing: &Value, expected: &Value, field: &str) -> Option<Value> {
    let mut map: BTreeMap<String, Value> = existing
        .pointer(&format!("/metadata/{field}"))
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    let wanted: BTreeMap<String, Value> = expected
        .pointer(&format!("/metadata/{field}"))
        .cloned()
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    for (key, value) in wanted {
        map.entry(key).or_insert(value);
    }
    (!map.is_empty()).then(|| json!(map))
}

/// Kubernetes' reconciliation of a stored role (`binding == false`) or binding with the
/// expected one.
pub(crate) fn reconcile(existing: &Value, expected: &Value, binding: bool) -> Action {
    if protected(existing) {
        return Action::None;
    }
    let mut next = existing.clone();
    for field in ["labels", "annotations"] {
        if let Some(map) = merged_map(existing, expected, field)
            && let Some(meta) = next.get_mut("metadata").and_then(Value::as_object_mut)
        {
            meta.insert(field.to_owned(), map);
        }
    }
    if binding {
        let mut subjects: Vec<Subject> = list_of(existing, "subjects");
        for wanted in list_of::<Subject>(expected, "subjects") {
            if !subjects.contains(&wanted) {
                subjects.push(wanted);
            }
        }
        next["subjects"] = json!(subjects);
        if existing.get("roleRef") != expected.get("roleRef") {
            next["roleRef"] = expected.get("roleRef").cloned().unwrap_or(Value::Null);
            return Action::Recreate(next);
        }
    } else {
        let existing_rules: Vec<PolicyRule> = list_of(existing, "rules");
        let owner: Vec<Rule> = existing_rules.iter().map(Rule::from).collect();
        let wanted: Vec<Rule> = list_of::<PolicyRule>(expected, "rules")
            .iter()
            .map(Rule::from)
            .collect();
        let missing = uncovered(&owner, &wanted);
        if !missing.is_empty() {
            let mut rules = existing_rules;
            rules.extend(missing.iter().map(PolicyRule::from));
            next["rules"] = json!(rules);
        }
        if let Some(wanted) = expected.get("aggregationRule") {
            let mut selectors: Vec<Value> = existing
                .pointer("/aggregationRule/clusterRoleSelectors")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for selector in wanted
                .get("clusterRoleSelectors")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if !selectors.contains(selector) {
                    selectors.push(selector.clone());
                }
            }
            next["aggregationRule"] = json!({"clusterRoleSelectors": selectors});
        }
    }
    if next == *existing {
        Action::None
    } else {
        Action::Update(next)
    }
}

fn rbac_resource(plural: &str) -> Result<&'static Resource, ApiError> {
    registry::find(GROUP, "v1", plural).ok_or_else(ApiError::no_route)
}

/// Creates `expected` or reconciles the stored object with it.
async fn ensure(
    store: &dyn Store,
    resource: &'static Resource,
    mut expected: Value,
) -> Result<(), ApiError> {
    check_kind(&mut expected, resource)?;
    let namespace = expected
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let name = expected
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let key = resource.key(namespace.as_deref(), &name);
    let binding = resource.plural.ends_with("bindings");
    // A bounded retry: another API server may reconcile the same object at the same time.
    for _ in 0..5 {
        let Some(stored) = store
            .get(&key, None)
            .await
            .map_err(|e| ApiError::from_store(e, resource, &name))?
        else {
            let mut object = expected.clone();
            prepare_create(&mut object, resource, namespace.as_deref())?;
            finalizers::on_create(resource, &mut object);
            match store.create(&key, encode(&object)).await {
                Ok(_) => {
                    tracing::info!(kind = resource.kind, name, "created bootstrap RBAC object");
                    return Ok(());
                }
                Err(StoreError::AlreadyExists { .. }) => continue,
                Err(e) => return Err(ApiError::from_store(e, resource, &name)),
            }
        };
        let existing = decode_kv(&stored)?;
        let written = match reconcile(&existing, &expected, binding) {
            Action::None => return Ok(()),
            Action::Update(next) => store
                .update(&key, encode(&next), stored.mod_revision)
                .await
                .map(drop),
            Action::Recreate(next) => {
                let mut object = next;
                if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
                    for field in [
                        "uid",
                        "creationTimestamp",
                        "resourceVersion",
                        "managedFields",
                    ] {
                        meta.remove(field);
                    }
                }
                prepare_create(&mut object, resource, namespace.as_deref())?;
                match store.delete(&key, Some(stored.mod_revision)).await {
                    Ok(_) => store.create(&key, encode(&object)).await.map(drop),
                    Err(e) => Err(e),
                }
            }
        };
        match written {
            Ok(()) => {
                tracing::info!(
                    kind = resource.kind,
                    name,
                    "reconciled bootstrap RBAC object"
                );
                return Ok(());
            }
            Err(StoreError::Conflict { .. } | StoreError::NotFound { .. }) => continue,
            Err(e) => return Err(ApiError::from_store(e, resource, &name)),
        }
    }
    Err(ApiError::conflict(resource, &name))
}

fn value<T: serde::Serialize>(object: &T) -> Result<Value, ApiError> {
    serde_json::to_value(object).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// Stores the bootstrap policy and kubeadm's joining objects (see the module documentation),
/// then gives aggregated ClusterRoles their rules.
pub async fn bootstrap_policy(store: &dyn Store) -> Result<(), ApiError> {
    let kubeadm = kubeadm_objects();
    let cluster_roles = rbac_resource("clusterroles")?;
    for role in rbac_policy::cluster_roles()
        .iter()
        .chain(&kubeadm.cluster_roles)
    {
        ensure(store, cluster_roles, value(role)?).await?;
    }
    let roles = rbac_resource("roles")?;
    for role in rbac_policy::roles().iter().chain(&kubeadm.roles) {
        ensure(store, roles, value(role)?).await?;
    }
    let cluster_bindings = rbac_resource("clusterrolebindings")?;
    for binding in rbac_policy::cluster_role_bindings()
        .iter()
        .chain(&kubeadm.cluster_bindings)
    {
        ensure(store, cluster_bindings, value(binding)?).await?;
    }
    let bindings = rbac_resource("rolebindings")?;
    for binding in rbac_policy::role_bindings().iter().chain(&kubeadm.bindings) {
        ensure(store, bindings, value(binding)?).await?;
    }
    aggregate(store, cluster_roles).await
}

/// Sets the rules of every aggregated ClusterRole to what its selectors gather.
async fn aggregate(store: &dyn Store, resource: &'static Resource) -> Result<(), ApiError> {
    let listed = store
        .list(&resource.prefix(), ListOptions::default())
        .await
        .map_err(|e| ApiError::from_store(e, resource, ""))?;
    let mut stored = Vec::with_capacity(listed.items.len());
    for kv in &listed.items {
        let object = decode_kv(kv)?;
        if let Ok(role) = serde_json::from_value::<ClusterRole>(object.clone()) {
            stored.push((kv, object, role));
        }
    }
    let all: Vec<ClusterRole> = stored.iter().map(|(_, _, r)| r.clone()).collect();
    for (kv, mut object, role) in stored {
        let Some(rules) = aggregated_rules(&role, &all) else {
            continue;
        };
        if role
            .rules
            .as_ref()
            .map_or(rules.is_empty(), |r| *r == rules)
        {
            continue;
        }
        object["rules"] = json!(rules);
        match store
            .update(&kv.key, encode(&object), kv.mod_revision)
            .await
        {
            Ok(_) | Err(StoreError::Conflict { .. }) => {}
            Err(e) => return Err(ApiError::from_store(e, resource, "")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciling_adds_what_is_missing_and_keeps_what_users_added() {
        let expected = json!({
            "metadata": {"name": "view", "labels": {"a": "1"},
                         "annotations": {AUTOUPDATE_ANNOTATION: "true"}},
            "rules": [{"verbs": ["get", "list"], "apiGroups": [""], "resources": ["pods"]}],
        });
        let user_added = json!({
            "metadata": {"name": "view", "labels": {"a": "mine", "b": "2"},
                         "annotations": {AUTOUPDATE_ANNOTATION: "true"}},
            "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]},
                      {"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]}],
        });
        let Action::Update(next) = reconcile(&user_added, &expected, false) else {
            panic!("a missing verb is added");
        };
        assert_eq!(
            next["rules"],
            json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]},
                   {"verbs": ["get"], "apiGroups": [""], "resources": ["secrets"]},
                   {"verbs": ["list"], "apiGroups": [""], "resources": ["pods"]}])
        );
        assert_eq!(next["metadata"]["labels"], json!({"a": "mine", "b": "2"}));
        assert_eq!(
            reconcile(&next, &expected, false),
            Action::None,
            "idempotent"
        );

        let mut frozen = user_added.clone();
        frozen["metadata"]["annotations"][AUTOUPDATE_ANNOTATION] = json!("false");
        assert_eq!(
            reconcile(&frozen, &expected, false),
            Action::None,
            "protected"
        );
    }

    #[test]
    fn bindings_gain_subjects_and_are_recreated_for_another_role() {
        let subject = |name: &str| json!({"kind": "Group", "apiGroup": GROUP, "name": name});
        let role = |name: &str| json!({"apiGroup": GROUP, "kind": "ClusterRole", "name": name});
        let expected = json!({"metadata": {"name": "b"}, "roleRef": role("r"),
                              "subjects": [subject("system:authenticated")]});
        let stored = json!({"metadata": {"name": "b"}, "roleRef": role("r"),
                            "subjects": [subject("mine")]});
        let Action::Update(next) = reconcile(&stored, &expected, true) else {
            panic!("a missing subject is added");
        };
        assert_eq!(
            next["subjects"],
            json!([subject("mine"), subject("system:authenticated")])
        );
        let moved = json!({"metadata": {"name": "b"}, "roleRef": role("other"),
                           "subjects": [subject("system:authenticated")]});
        assert!(
            matches!(reconcile(&moved, &expected, true), Action::Recreate(n) if n["roleRef"] == role("r"))
        );
    }
}
