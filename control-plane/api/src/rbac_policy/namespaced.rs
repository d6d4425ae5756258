//! Kubernetes' namespaced bootstrap roles of `kube-system` and `kube-public`, and their
//! bindings (`namespace_policy.go`).

use k8s_openapi::api::rbac::v1::{Role, RoleBinding};

use super::{
    CONTROLLER_MANAGER_USER, CORE, READ, SCHEDULER_USER, events, named, role, role_binding, rule,
    service_account, user,
};

/// The namespace of the system's own objects.
pub const KUBE_SYSTEM: &str = "kube-system";
/// The namespace readable by everyone (`cluster-info`).
pub const KUBE_PUBLIC: &str = "kube-public";

const COORDINATION: &str = "coordination.k8s.io";

fn leader_locking() -> Vec<k8s_openapi::api::rbac::v1::PolicyRule> {
    let verbs = &["create", "get", "list", "update", "watch"];
    vec![
        rule(verbs, &[COORDINATION], &["leases"]),
        rule(verbs, &[COORDINATION], &["leasecandidates"]),
    ]
}

/// Kubernetes' namespaced roles.
pub(super) fn roles() -> Vec<Role> {
    vec![
        // Aggregated API servers read the front-proxy's client CA from here.
        role(
            KUBE_SYSTEM,
            "extension-apiserver-authentication-reader",
            vec![named(
                READ,
                &[CORE],
                &["configmaps"],
                &["extension-apiserver-authentication"],
            )],
        ),
        role(
            KUBE_SYSTEM,
            "system::leader-locking-kube-controller-manager",
            leader_locking(),
        ),
        role(
            KUBE_SYSTEM,
            "system::leader-locking-kube-scheduler",
            leader_locking(),
        ),
        // It reads the bootstrap-token Secrets to sign `cluster-info` with them.
        role(
            KUBE_SYSTEM,
            "system:controller:bootstrap-signer",
            vec![rule(READ, &[CORE], &["secrets"])],
        ),
        role(
            KUBE_SYSTEM,
            "system:controller:cloud-provider",
            vec![rule(
                &["create", "get", "list", "watch"],
                &[CORE],
                &["configmaps"],
            )],
        ),
        // It deletes expired bootstrap-token Secrets.
        role(
            KUBE_SYSTEM,
            "system:controller:token-cleaner",
            vec![
                rule(&["delete", "get", "list", "watch"], &[CORE], &["secrets"]),
                events(),
            ],
        ),
        role(
            KUBE_PUBLIC,
            "system:controller:bootstrap-signer",
            vec![
                rule(READ, &[CORE], &["configmaps"]),
                named(&["update"], &[CORE], &["configmaps"], &["cluster-info"]),
                events(),
            ],
        ),
    ]
}

/// Kubernetes' namespaced role bindings.
pub(super) fn bindings() -> Vec<RoleBinding> {
    vec![
        role_binding(
            KUBE_SYSTEM,
            "system::extension-apiserver-authentication-reader",
            "extension-apiserver-authentication-reader",
            vec![user(CONTROLLER_MANAGER_USER), user(SCHEDULER_USER)],
        ),
        role_binding(
            KUBE_SYSTEM,
            "system::leader-locking-kube-controller-manager",
            "system::leader-locking-kube-controller-manager",
            vec![
                user(CONTROLLER_MANAGER_USER),
                service_account(KUBE_SYSTEM, "kube-controller-manager"),
                service_account(KUBE_SYSTEM, "leader-election-controller"),
            ],
        ),
        role_binding(
            KUBE_SYSTEM,
            "system::leader-locking-kube-scheduler",
            "system::leader-locking-kube-scheduler",
            vec![
                user(SCHEDULER_USER),
                service_account(KUBE_SYSTEM, "kube-scheduler"),
            ],
        ),
        role_binding(
            KUBE_SYSTEM,
            "system:controller:bootstrap-signer",
            "system:controller:bootstrap-signer",
            vec![service_account(KUBE_SYSTEM, "bootstrap-signer")],
        ),
        role_binding(
            KUBE_SYSTEM,
            "system:controller:cloud-provider",
            "system:controller:cloud-provider",
            vec![service_account(KUBE_SYSTEM, "cloud-provider")],
        ),
        role_binding(
            KUBE_SYSTEM,
            "system:controller:token-cleaner",
            "system:controller:token-cleaner",
            vec![service_account(KUBE_SYSTEM, "token-cleaner")],
        ),
        role_binding(
            KUBE_PUBLIC,
            "system:controller:bootstrap-signer",
            "system:controller:bootstrap-signer",
            vec![service_account(KUBE_SYSTEM, "bootstrap-signer")],
        ),
    ]
}
