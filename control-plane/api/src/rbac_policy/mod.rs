//! Kubernetes' bootstrap RBAC policy: the roles and bindings every cluster starts with
//! (kube-apiserver's `bootstrappolicy`), stored by the API server's `bootstrap-roles` step.
//!
//! This is a minimal stand-in with the interface the full policy keeps (`cluster_roles`,
//! `cluster_role_bindings`, `roles`, `role_bindings`): cluster-admin, view and edit (aggregated,
//! with a subset of their rules), system:discovery, system:basic-user,
//! system:public-info-viewer, and the ClusterRoles node bootstrapping binds to.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::rbac::v1::{
        AggregationRule, ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef,
        Subject,
    },
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta},
};

use crate::rbac::{AUTOUPDATE_ANNOTATION, GROUP};

/// The label every bootstrap object carries.
const BOOTSTRAPPING: (&str, &str) = ("kubernetes.io/bootstrapping", "rbac-defaults");
const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &["create", "delete", "deletecollection", "patch", "update"];

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn metadata(name: &str, extra_labels: &[&str]) -> ObjectMeta {
    let mut labels = BTreeMap::from([(BOOTSTRAPPING.0.to_owned(), BOOTSTRAPPING.1.to_owned())]);
    for label in extra_labels {
        labels.insert((*label).to_owned(), "true".to_owned());
    }
    ObjectMeta {
        name: Some(name.to_owned()),
        labels: Some(labels),
        annotations: Some(BTreeMap::from([(
            AUTOUPDATE_ANNOTATION.to_owned(),
            "true".to_owned(),
        )])),
        ..ObjectMeta::default()
    }
}

fn rule(verbs: &[&str], groups: &[&str], resources: &[&str]) -> PolicyRule {
    PolicyRule {
        verbs: strings(verbs),
        api_groups: Some(strings(groups)),
        resources: Some(strings(resources)),
        ..PolicyRule::default()
    }
}

fn urls(verbs: &[&str], urls: &[&str]) -> PolicyRule {
    PolicyRule {
        verbs: strings(verbs),
        non_resource_urls: Some(strings(urls)),
        ..PolicyRule::default()
    }
}

fn cluster_role(name: &str, labels: &[&str], rules: Vec<PolicyRule>) -> ClusterRole {
    ClusterRole {
        metadata: metadata(name, labels),
        rules: Some(rules),
        aggregation_rule: None,
    }
}

fn aggregated(name: &str, labels: &[&str], selected_by: &str) -> ClusterRole {
    ClusterRole {
        metadata: metadata(name, labels),
        rules: None,
        aggregation_rule: Some(AggregationRule {
            cluster_role_selectors: Some(vec![LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    selected_by.to_owned(),
                    "true".to_owned(),
                )])),
                ..LabelSelector::default()
            }]),
        }),
    }
}

const TO_VIEW: &str = "rbac.authorization.k8s.io/aggregate-to-view";
const TO_EDIT: &str = "rbac.authorization.k8s.io/aggregate-to-edit";
const TO_ADMIN: &str = "rbac.authorization.k8s.io/aggregate-to-admin";

/// The bootstrap ClusterRoles.
pub fn cluster_roles() -> Vec<ClusterRole> {
    let core_read = &[
        "configmaps",
        "endpoints",
        "persistentvolumeclaims",
        "persistentvolumeclaims/status",
        "pods",
        "pods/log",
        "pods/status",
        "replicationcontrollers",
        "replicationcontrollers/scale",
        "replicationcontrollers/status",
        "serviceaccounts",
        "services",
        "services/status",
        "bindings",
        "events",
        "limitranges",
        "namespaces/status",
        "pods/log",
        "resourcequotas",
        "resourcequotas/status",
    ];
    let apps = &[
        "daemonsets",
        "deployments",
        "deployments/scale",
        "replicasets",
        "replicasets/scale",
        "statefulsets",
        "statefulsets/scale",
    ];
    vec![
        cluster_role(
            "cluster-admin",
            &[],
            vec![rule(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])],
        ),
        cluster_role(
            "system:discovery",
            &[],
            vec![urls(
                &["get"],
                &[
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                    "/healthz",
                    "/livez",
                    "/openapi",
                    "/openapi/*",
                    "/readyz",
                    "/version",
                    "/version/",
                ],
            )],
        ),
        cluster_role(
            "system:basic-user",
            &[],
            vec![
                rule(
                    &["create"],
                    &["authorization.k8s.io"],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                rule(
                    &["create"],
                    &["authentication.k8s.io"],
                    &["selfsubjectreviews"],
                ),
            ],
        ),
        cluster_role(
            "system:public-info-viewer",
            &[],
            vec![urls(
                &["get"],
                &["/healthz", "/livez", "/readyz", "/version", "/version/"],
            )],
        ),
        aggregated("view", &[TO_EDIT], TO_VIEW),
        cluster_role(
            "system:aggregate-to-view",
            &[TO_VIEW],
            vec![
                rule(READ, &[""], core_read),
                rule(READ, &[""], &["namespaces"]),
                rule(READ, &["apps"], apps),
                rule(
                    READ,
                    &["batch"],
                    &["cronjobs", "cronjobs/status", "jobs", "jobs/status"],
                ),
            ],
        ),
        aggregated("edit", &[TO_ADMIN], TO_EDIT),
        cluster_role(
            "system:aggregate-to-edit",
            &[TO_EDIT],
            vec![
                rule(&["impersonate"], &[""], &["serviceaccounts"]),
                rule(
                    WRITE,
                    &[""],
                    &["pods", "pods/attach", "pods/exec", "pods/portforward"],
                ),
                rule(
                    &["create"],
                    &[""],
                    &["pods/eviction", "serviceaccounts/token"],
                ),
                rule(
                    WRITE,
                    &[""],
                    &[
                        "configmaps",
                        "events",
                        "persistentvolumeclaims",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "secrets",
                        "serviceaccounts",
                        "services",
                    ],
                ),
                rule(READ, &[""], &["secrets"]),
                rule(WRITE, &["apps"], apps),
                rule(WRITE, &["batch"], &["cronjobs", "jobs"]),
            ],
        ),
        cluster_role(
            "system:node-bootstrapper",
            &[],
            vec![rule(
                &["create", "get", "list", "watch"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests"],
            )],
        ),
        cluster_role(
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            &[],
            vec![rule(
                &["create"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/nodeclient"],
            )],
        ),
        cluster_role(
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            &[],
            vec![rule(
                &["create"],
                &["certificates.k8s.io"],
                &["certificatesigningrequests/selfnodeclient"],
            )],
        ),
    ]
}

fn group(name: &str) -> Subject {
    Subject {
        kind: "Group".into(),
        api_group: Some(GROUP.into()),
        name: name.into(),
        namespace: None,
    }
}

fn cluster_binding(name: &str, subjects: Vec<Subject>) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: metadata(name, &[]),
        role_ref: RoleRef {
            api_group: GROUP.into(),
            kind: "ClusterRole".into(),
            name: name.into(),
        },
        subjects: Some(subjects),
    }
}

/// The bootstrap ClusterRoleBindings.
pub fn cluster_role_bindings() -> Vec<ClusterRoleBinding> {
    vec![
        cluster_binding("cluster-admin", vec![group("system:masters")]),
        cluster_binding("system:discovery", vec![group("system:authenticated")]),
        cluster_binding("system:basic-user", vec![group("system:authenticated")]),
        cluster_binding(
            "system:public-info-viewer",
            vec![
                group("system:authenticated"),
                group("system:unauthenticated"),
            ],
        ),
    ]
}

/// The bootstrap Roles (none in this stand-in).
pub fn roles() -> Vec<Role> {
    Vec::new()
}

/// The bootstrap RoleBindings (none in this stand-in).
pub fn role_bindings() -> Vec<RoleBinding> {
    Vec::new()
}
