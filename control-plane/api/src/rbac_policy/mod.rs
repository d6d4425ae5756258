//! Kubernetes' bootstrap RBAC policy as data, plus keelson's own additions.
//!
//! What a Kubernetes API server creates at its first start (its `rbac/bootstrap-roles`
//! post-start hook) and keeps reconciled afterwards: the ClusterRoles users are bound to
//! (`cluster-admin`, `admin`, `edit`, `view`), the roles every authenticated client gets
//! (`system:basic-user`, `system:discovery`, `system:public-info-viewer`), the scheduler's and
//! the controller manager's own roles, one `system:controller:<name>` role per controller, and
//! the namespaced roles of `kube-system` and `kube-public`, each with the binding Kubernetes
//! gives it. The content follows Kubernetes' `plugin/pkg/auth/authorizer/rbac/bootstrappolicy`
//! (`policy.go`, `controller_policy.go`, `namespace_policy.go`, checked against the rendered
//! `testdata/*.yaml`) with its default feature gates: roles for alpha features that are off by
//! default, and for parts keelson does not have and will not run (heapster, the in-tree
//! volume controllers, cloud providers), are left out. Only the `system:controller:*` roles of
//! controllers keelson runs, or is about to run, are here.
//!
//! `admin`, `edit` and `view` are aggregated roles, shipped as Kubernetes ships them: an
//! `aggregationRule` and no rules. The clusterrole-aggregation controller fills their rules
//! from the `system:aggregate-to-*` roles (and any user role carrying the same labels).
//!
//! # keelson's additions ([`keelson`])
//!
//! Kept apart and labelled `keelson.io/bootstrapping: keelson-defaults`:
//!
//! - `keelson:node-datapath`, bound to `system:nodes`: the cluster-wide reads the node agent's
//!   eBPF datapath needs (Pods, Services, Endpoints, EndpointSlices, Nodes, Namespaces,
//!   NetworkPolicies) — never Secrets or ConfigMaps, which the Node authorizer grants per pod.
//! - One identity for all controllers. keelson runs every controller in one process under the
//!   client certificate of `system:kube-controller-manager`, as `kube-controller-manager
//!   --use-service-account-credentials=false` does. Kubernetes binds each
//!   `system:controller:<name>` role to the ServiceAccount `kube-system/<name>` that a
//!   controller uses when it runs with its own credentials; keelson keeps those bindings (so
//!   the data matches Kubernetes) and adds `keelson:controller:<name>` bindings of the same
//!   roles to the user `system:kube-controller-manager`. The controller manager's own role
//!   grants list and watch of everything (the shared informers); the per-controller roles grant
//!   each controller's writes. Where a keelson controller writes in a way Kubernetes' role does
//!   not allow (PATCH where Kubernetes' controller sends PUT, creating `cluster-info`), a
//!   separate `keelson:controller:<name>` role says so; Kubernetes' roles are never edited.
//! - kubeadm's node-join objects are not here: the API server stores them with this policy
//!   (`keelson_apiserver::auth::rbac::reconcile::kubeadm_objects`), under kubeadm's names.
//!
//! Every object carries `kubernetes.io/bootstrapping: rbac-defaults` and the annotation
//! `rbac.authorization.kubernetes.io/autoupdate: "true"`, as Kubernetes' do, so a reconciler
//! treats keelson's additions like Kubernetes' own.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::rbac::v1::{
        AggregationRule, ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef,
        Subject,
    },
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta},
};

mod cluster;
mod controllers;
pub mod keelson;
mod namespaced;

#[cfg(test)]
mod tests;

/// The label every bootstrap object carries, and its value.
pub const BOOTSTRAPPING_LABEL: (&str, &str) = ("kubernetes.io/bootstrapping", "rbac-defaults");
/// The annotation that lets the API server reconcile a bootstrap object at start-up (set to
/// `"false"` by an administrator who wants to keep their own changes).
pub const AUTOUPDATE_ANNOTATION: &str = "rbac.authorization.kubernetes.io/autoupdate";
/// The prefix of the controllers' roles and of their ServiceAccounts' bindings.
pub const CONTROLLER_ROLE_PREFIX: &str = "system:controller:";
/// The API group of RBAC, the `apiGroup` of every role reference and user/group subject.
pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
/// The controller manager's user name (its client certificate's common name).
pub const CONTROLLER_MANAGER_USER: &str = "system:kube-controller-manager";
/// The scheduler's user name (its client certificate's common name).
pub const SCHEDULER_USER: &str = "system:kube-scheduler";

/// Every ClusterRole: Kubernetes', then keelson's.
pub fn cluster_roles() -> Vec<ClusterRole> {
    let mut roles = cluster::roles();
    roles.extend(controllers::roles());
    roles.extend(keelson::cluster_roles());
    roles
}

/// Every ClusterRoleBinding: Kubernetes', then keelson's.
pub fn cluster_role_bindings() -> Vec<ClusterRoleBinding> {
    let mut bindings = cluster::bindings();
    bindings.extend(controllers::bindings());
    bindings.extend(keelson::cluster_role_bindings());
    bindings
}

/// Every namespaced Role (in `kube-system` and `kube-public`): Kubernetes', then keelson's.
pub fn roles() -> Vec<Role> {
    let mut roles = namespaced::roles();
    roles.extend(keelson::roles());
    roles
}

/// Every namespaced RoleBinding: Kubernetes', then keelson's.
pub fn role_bindings() -> Vec<RoleBinding> {
    let mut bindings = namespaced::bindings();
    bindings.extend(keelson::role_bindings());
    bindings
}

// ---- builders: the shape Kubernetes' rule helpers give (sorted verbs, resources, names, URLs;
// API groups in the order written) ----

fn strings(items: &[&str], sort: bool) -> Vec<String> {
    let mut out: Vec<String> = items.iter().map(|s| (*s).to_owned()).collect();
    if sort {
        out.sort();
        out.dedup();
    }
    out
}

/// The verbs of read access.
pub(crate) const READ: &[&str] = &["get", "list", "watch"];
/// The verbs of write access.
pub(crate) const WRITE: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];
/// Read and write access.
pub(crate) const READ_WRITE: &[&str] = &[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];
/// Read, update and patch.
pub(crate) const READ_UPDATE: &[&str] = &["get", "list", "watch", "update", "patch"];

/// The core API group.
pub(crate) const CORE: &str = "";

/// A rule granting `verbs` on `resources` of `groups`.
pub(crate) fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
    PolicyRule {
        verbs: strings(verbs, true),
        api_groups: Some(strings(groups, false)),
        resources: Some(strings(resources, true)),
        resource_names: None,
        non_resource_urls: None,
    }
}

/// [`rule`] limited to the objects named `names`.
pub(crate) fn named(
    verbs: &[&str],
    groups: &[&str],
    resources: &[&str],
    names: &[&str],
) -> PolicyRule {
    PolicyRule {
        resource_names: Some(strings(names, true)),
        ..rule(verbs, groups, resources)
    }
}

/// A rule granting `verbs` on the non-resource URLs `urls`.
pub(crate) fn urls(verbs: &[&str], urls: &[&str]) -> PolicyRule {
    PolicyRule {
        verbs: strings(verbs, true),
        api_groups: None,
        resources: None,
        resource_names: None,
        non_resource_urls: Some(strings(urls, true)),
    }
}

/// Kubernetes' events rule: create, update and patch Events in both event API groups.
pub(crate) fn events() -> PolicyRule {
    rule(
        &["create", "update", "patch"],
        &[CORE, "events.k8s.io"],
        &["events"],
    )
}

fn bootstrap_metadata(
    name: &str,
    namespace: Option<&str>,
    extra_labels: &[(&str, &str)],
) -> ObjectMeta {
    let mut labels = BTreeMap::from([(
        BOOTSTRAPPING_LABEL.0.to_owned(),
        BOOTSTRAPPING_LABEL.1.to_owned(),
    )]);
    labels.extend(
        extra_labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        labels: Some(labels),
        annotations: Some(BTreeMap::from([(
            AUTOUPDATE_ANNOTATION.to_owned(),
            "true".to_owned(),
        )])),
        ..ObjectMeta::default()
    }
}

/// A bootstrap ClusterRole.
pub(crate) fn cluster_role(name: &str, rules: Vec<PolicyRule>) -> ClusterRole {
    ClusterRole {
        metadata: bootstrap_metadata(name, None, &[]),
        rules: Some(rules),
        aggregation_rule: None,
    }
}

/// A bootstrap ClusterRole with extra labels (the `aggregate-to-*` ones).
pub(crate) fn labelled_cluster_role(
    name: &str,
    labels: &[(&str, &str)],
    rules: Vec<PolicyRule>,
) -> ClusterRole {
    ClusterRole {
        metadata: bootstrap_metadata(name, None, labels),
        rules: Some(rules),
        aggregation_rule: None,
    }
}

/// An aggregated ClusterRole: no rules of its own, filled from the roles labelled
/// `<selector_label>: "true"`.
pub(crate) fn aggregated_cluster_role(
    name: &str,
    labels: &[(&str, &str)],
    selector_label: &str,
) -> ClusterRole {
    ClusterRole {
        metadata: bootstrap_metadata(name, None, labels),
        rules: None,
        aggregation_rule: Some(AggregationRule {
            cluster_role_selectors: Some(vec![LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    selector_label.to_owned(),
                    "true".to_owned(),
                )])),
                match_expressions: None,
            }]),
        }),
    }
}

/// A bootstrap Role in `namespace`.
pub(crate) fn role(namespace: &str, name: &str, rules: Vec<PolicyRule>) -> Role {
    Role {
        metadata: bootstrap_metadata(name, Some(namespace), &[]),
        rules: Some(rules),
    }
}

/// A `User` subject.
pub(crate) fn user(name: &str) -> Subject {
    Subject {
        api_group: Some(RBAC_GROUP.to_owned()),
        kind: "User".to_owned(),
        name: name.to_owned(),
        namespace: None,
    }
}

/// A `Group` subject.
pub(crate) fn group(name: &str) -> Subject {
    Subject {
        api_group: Some(RBAC_GROUP.to_owned()),
        kind: "Group".to_owned(),
        name: name.to_owned(),
        namespace: None,
    }
}

/// A `ServiceAccount` subject (no API group, as Kubernetes writes it).
pub(crate) fn service_account(namespace: &str, name: &str) -> Subject {
    Subject {
        api_group: None,
        kind: "ServiceAccount".to_owned(),
        name: name.to_owned(),
        namespace: Some(namespace.to_owned()),
    }
}

fn role_ref(kind: &str, name: &str) -> RoleRef {
    RoleRef {
        api_group: RBAC_GROUP.to_owned(),
        kind: kind.to_owned(),
        name: name.to_owned(),
    }
}

/// A ClusterRoleBinding `name` of the ClusterRole `role` to `subjects`.
pub(crate) fn cluster_binding(
    name: &str,
    role: &str,
    subjects: Vec<Subject>,
) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: bootstrap_metadata(name, None, &[]),
        role_ref: role_ref("ClusterRole", role),
        // Kubernetes leaves `system:node` bound to nobody (`subjects` absent, not empty).
        subjects: (!subjects.is_empty()).then_some(subjects),
    }
}

/// A RoleBinding `name` in `namespace` of the Role `role` (of that namespace) to `subjects`.
pub(crate) fn role_binding(
    namespace: &str,
    name: &str,
    role: &str,
    subjects: Vec<Subject>,
) -> RoleBinding {
    RoleBinding {
        metadata: bootstrap_metadata(name, Some(namespace), &[]),
        role_ref: role_ref("Role", role),
        subjects: Some(subjects),
    }
}

/// Adds keelson's label to an object's metadata.
pub(crate) fn keelson_labelled(mut metadata: ObjectMeta) -> ObjectMeta {
    metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(keelson::LABEL.0.to_owned(), keelson::LABEL.1.to_owned());
    metadata
}
