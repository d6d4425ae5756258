//! Kubernetes' cluster-wide bootstrap roles and their bindings (`policy.go`).

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};

use super::{
    CONTROLLER_MANAGER_USER, CORE, READ, READ_UPDATE, READ_WRITE, SCHEDULER_USER, WRITE,
    aggregated_cluster_role, cluster_binding, cluster_role, events, group, labelled_cluster_role,
    named, rule, service_account, urls, user,
};

/// The label that folds a ClusterRole's rules into `admin`.
pub const AGGREGATE_TO_ADMIN: &str = "rbac.authorization.k8s.io/aggregate-to-admin";
/// The label that folds a ClusterRole's rules into `edit` (and so `admin`).
pub const AGGREGATE_TO_EDIT: &str = "rbac.authorization.k8s.io/aggregate-to-edit";
/// The label that folds a ClusterRole's rules into `view` (and so `edit` and `admin`).
pub const AGGREGATE_TO_VIEW: &str = "rbac.authorization.k8s.io/aggregate-to-view";

const APPS: &str = "apps";
const AUTHN: &str = "authentication.k8s.io";
const AUTHZ: &str = "authorization.k8s.io";
const AUTOSCALING: &str = "autoscaling";
const BATCH: &str = "batch";
const CERTIFICATES: &str = "certificates.k8s.io";
const COORDINATION: &str = "coordination.k8s.io";
const DISCOVERY: &str = "discovery.k8s.io";
const EXTENSIONS: &str = "extensions";
const NETWORKING: &str = "networking.k8s.io";
const POLICY: &str = "policy";
const RBAC: &str = super::RBAC_GROUP;
const STORAGE: &str = "storage.k8s.io";

/// The CSR signers Kubernetes names (`k8s.io/api/certificates/v1`).
pub(super) const LEGACY_UNKNOWN_SIGNER: &str = "kubernetes.io/legacy-unknown";
pub(super) const KUBE_APISERVER_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";
pub(super) const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
pub(super) const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";

fn true_label(key: &str) -> [(&str, &str); 1] {
    [(key, "true")]
}

/// The node role's rules (Kubernetes' `NodeRules`): bound to nobody since the Node authorizer
/// (which applies these same rules to each node for its own objects) replaced it.
fn node_rules() -> Vec<k8s_openapi::api::rbac::v1::PolicyRule> {
    vec![
        rule(&["create"], &[AUTHN], &["tokenreviews"]),
        rule(
            &["create"],
            &[AUTHZ],
            &["subjectaccessreviews", "localsubjectaccessreviews"],
        ),
        rule(READ, &[CORE], &["services"]),
        rule(&["create", "get", "list", "watch"], &[CORE], &["nodes"]),
        rule(&["update", "patch"], &[CORE], &["nodes/status"]),
        rule(&["update", "patch"], &[CORE], &["nodes"]),
        events(),
        rule(READ, &[CORE], &["pods"]),
        rule(&["create", "delete"], &[CORE], &["pods"]),
        rule(&["update", "patch"], &[CORE], &["pods/status"]),
        rule(&["create"], &[CORE], &["pods/eviction"]),
        rule(READ, &[CORE], &["secrets", "configmaps"]),
        rule(
            &["get"],
            &[CORE],
            &["persistentvolumeclaims", "persistentvolumes"],
        ),
        rule(&["get"], &[CORE], &["endpoints"]),
        rule(
            &["create", "get", "list", "watch"],
            &[CERTIFICATES],
            &["certificatesigningrequests"],
        ),
        rule(
            &["get", "create", "update", "patch", "delete"],
            &[COORDINATION],
            &["leases"],
        ),
        rule(&["get"], &[STORAGE], &["volumeattachments"]),
        rule(&["create"], &[CORE], &["serviceaccounts/token"]),
        rule(
            &["get", "update", "patch"],
            &[CORE],
            &["persistentvolumeclaims/status"],
        ),
        rule(READ, &[STORAGE], &["csidrivers"]),
        rule(
            &["get", "create", "update", "patch", "delete"],
            &[STORAGE],
            &["csinodes"],
        ),
        rule(READ, &["node.k8s.io"], &["runtimeclasses"]),
        rule(&["get"], &[CORE], &["serviceaccounts"]),
    ]
}

/// Kubernetes' cluster roles.
pub(super) fn roles() -> Vec<ClusterRole> {
    vec![
        // Everything, everywhere.
        cluster_role(
            "cluster-admin",
            vec![rule(&["*"], &["*"], &["*"]), urls(&["*"], &["*"])],
        ),
        // Enough to tell whether the server is up and to negotiate API versions.
        cluster_role(
            "system:discovery",
            vec![urls(
                &["get"],
                &[
                    "/livez",
                    "/readyz",
                    "/healthz",
                    "/version",
                    "/version/",
                    "/openapi",
                    "/openapi/*",
                    "/api",
                    "/api/*",
                    "/apis",
                    "/apis/*",
                ],
            )],
        ),
        // The monitoring endpoints, including each health check on its own.
        cluster_role(
            "system:monitoring",
            vec![
                urls(
                    &["get"],
                    &[
                        "/metrics",
                        "/metrics/slis",
                        "/livez",
                        "/readyz",
                        "/healthz",
                        "/livez/*",
                        "/readyz/*",
                        "/healthz/*",
                        "/statusz",
                    ],
                ),
                rule(&["get"], &[CORE], &["nodes/metrics"]),
            ],
        ),
        // What a user may learn about themselves.
        cluster_role(
            "system:basic-user",
            vec![
                rule(
                    &["create"],
                    &[AUTHZ],
                    &["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                ),
                rule(&["create"], &[AUTHN], &["selfsubjectreviews"]),
            ],
        ),
        // Harmless cluster information, for everyone including anonymous clients.
        cluster_role(
            "system:public-info-viewer",
            vec![urls(
                &["get"],
                &["/livez", "/readyz", "/healthz", "/version", "/version/"],
            )],
        ),
        aggregated_cluster_role("admin", &[], AGGREGATE_TO_ADMIN),
        aggregated_cluster_role("edit", &true_label(AGGREGATE_TO_ADMIN), AGGREGATE_TO_EDIT),
        aggregated_cluster_role("view", &true_label(AGGREGATE_TO_EDIT), AGGREGATE_TO_VIEW),
        // What `admin` has beyond `edit`: granting access within the namespace.
        labelled_cluster_role(
            "system:aggregate-to-admin",
            &true_label(AGGREGATE_TO_ADMIN),
            vec![
                rule(&["create"], &[AUTHZ], &["localsubjectaccessreviews"]),
                rule(READ_WRITE, &[RBAC], &["roles", "rolebindings"]),
            ],
        ),
        // What `edit` has beyond `view`: every user-level write in a namespace, and reading
        // what can escalate (secrets, exec, attach, proxy).
        labelled_cluster_role(
            "system:aggregate-to-edit",
            &true_label(AGGREGATE_TO_EDIT),
            vec![
                rule(
                    READ,
                    &[CORE],
                    &[
                        "pods/attach",
                        "pods/proxy",
                        "pods/exec",
                        "pods/portforward",
                        "secrets",
                        "services/proxy",
                    ],
                ),
                rule(&["impersonate"], &[CORE], &["serviceaccounts"]),
                rule(
                    WRITE,
                    &[CORE],
                    &[
                        "pods",
                        "pods/attach",
                        "pods/proxy",
                        "pods/exec",
                        "pods/portforward",
                    ],
                ),
                rule(&["create"], &[CORE], &["pods/eviction"]),
                rule(
                    WRITE,
                    &[CORE],
                    &[
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "serviceaccounts",
                        "services",
                        "services/proxy",
                        "persistentvolumeclaims",
                        "configmaps",
                        "secrets",
                    ],
                ),
                rule(&["create"], &[CORE], &["serviceaccounts/token"]),
                rule(WRITE, &[CORE, "events.k8s.io"], &["events"]),
                rule(
                    WRITE,
                    &[APPS],
                    &[
                        "statefulsets",
                        "statefulsets/scale",
                        "daemonsets",
                        "deployments",
                        "deployments/scale",
                        "deployments/rollback",
                        "replicasets",
                        "replicasets/scale",
                    ],
                ),
                rule(WRITE, &[AUTOSCALING], &["horizontalpodautoscalers"]),
                rule(WRITE, &[BATCH], &["jobs", "cronjobs"]),
                rule(
                    WRITE,
                    &[EXTENSIONS],
                    &[
                        "daemonsets",
                        "deployments",
                        "deployments/scale",
                        "deployments/rollback",
                        "ingresses",
                        "replicasets",
                        "replicasets/scale",
                        "replicationcontrollers/scale",
                        "networkpolicies",
                    ],
                ),
                rule(WRITE, &[POLICY], &["poddisruptionbudgets"]),
                rule(WRITE, &[NETWORKING], &["networkpolicies", "ingresses"]),
                rule(READ_WRITE, &[COORDINATION], &["leases"]),
            ],
        ),
        // Reading a namespace's non-escalating objects (no secrets).
        labelled_cluster_role(
            "system:aggregate-to-view",
            &true_label(AGGREGATE_TO_VIEW),
            vec![
                rule(
                    READ,
                    &[CORE],
                    &[
                        "pods",
                        "replicationcontrollers",
                        "replicationcontrollers/scale",
                        "serviceaccounts",
                        "services",
                        "services/status",
                        "endpoints",
                        "persistentvolumeclaims",
                        "persistentvolumeclaims/status",
                        "configmaps",
                    ],
                ),
                rule(
                    READ,
                    &[CORE],
                    &[
                        "limitranges",
                        "resourcequotas",
                        "bindings",
                        "pods/status",
                        "resourcequotas/status",
                        "namespaces/status",
                        "replicationcontrollers/status",
                        "pods/log",
                    ],
                ),
                // Reading namespaces at namespace scope reads that one namespace.
                rule(READ, &[CORE], &["namespaces"]),
                rule(READ, &[CORE, "events.k8s.io"], &["events"]),
                rule(READ, &[DISCOVERY], &["endpointslices"]),
                rule(
                    READ,
                    &[APPS],
                    &[
                        "controllerrevisions",
                        "statefulsets",
                        "statefulsets/status",
                        "statefulsets/scale",
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/status",
                        "deployments/scale",
                        "replicasets",
                        "replicasets/status",
                        "replicasets/scale",
                    ],
                ),
                rule(
                    READ,
                    &[AUTOSCALING],
                    &[
                        "horizontalpodautoscalers",
                        "horizontalpodautoscalers/status",
                    ],
                ),
                rule(
                    READ,
                    &[BATCH],
                    &["jobs", "cronjobs", "cronjobs/status", "jobs/status"],
                ),
                rule(
                    READ,
                    &[EXTENSIONS],
                    &[
                        "daemonsets",
                        "daemonsets/status",
                        "deployments",
                        "deployments/scale",
                        "deployments/status",
                        "ingresses",
                        "ingresses/status",
                        "replicasets",
                        "replicasets/scale",
                        "replicasets/status",
                        "replicationcontrollers/scale",
                        "networkpolicies",
                    ],
                ),
                rule(
                    READ,
                    &[POLICY],
                    &["poddisruptionbudgets", "poddisruptionbudgets/status"],
                ),
                rule(
                    READ,
                    &[NETWORKING],
                    &["networkpolicies", "ingresses", "ingresses/status"],
                ),
            ],
        ),
        cluster_role("system:node", node_rules()),
        cluster_role(
            "system:node-problem-detector",
            vec![
                rule(&["get"], &[CORE], &["nodes"]),
                rule(&["patch"], &[CORE], &["nodes/status"]),
                events(),
            ],
        ),
        // Full access to the kubelet's API.
        cluster_role(
            "system:kubelet-api-admin",
            vec![
                rule(READ, &[CORE], &["nodes"]),
                rule(&["proxy"], &[CORE], &["nodes"]),
                rule(
                    &["*"],
                    &[CORE],
                    &["nodes/proxy", "nodes/metrics", "nodes/stats", "nodes/log"],
                ),
                rule(
                    &["*"],
                    &[CORE],
                    &["nodes/configz", "nodes/healthz", "nodes/pods"],
                ),
            ],
        ),
        // A joining node's bootstrap credential: ask for a client certificate, watch for it.
        cluster_role(
            "system:node-bootstrapper",
            vec![rule(
                &["create", "get", "list", "watch"],
                &[CERTIFICATES],
                &["certificatesigningrequests"],
            )],
        ),
        cluster_role(
            "system:auth-delegator",
            vec![
                rule(&["create"], &[AUTHN], &["tokenreviews"]),
                rule(&["create"], &[AUTHZ], &["subjectaccessreviews"]),
            ],
        ),
        cluster_role(
            "system:kube-aggregator",
            vec![rule(READ, &[CORE], &["services", "endpoints"])],
        ),
        // The controller manager itself: leader election, the shared informers (list and
        // watch of everything) and the service-account credentials of its controllers.
        cluster_role(
            "system:kube-controller-manager",
            vec![
                events(),
                rule(&["create"], &[COORDINATION], &["leases"]),
                named(
                    &["get", "update"],
                    &[COORDINATION],
                    &["leases"],
                    &["kube-controller-manager"],
                ),
                rule(&["create"], &[CORE], &["secrets", "serviceaccounts"]),
                rule(&["delete"], &[CORE], &["secrets"]),
                rule(
                    &["get"],
                    &[CORE],
                    &["namespaces", "secrets", "serviceaccounts", "configmaps"],
                ),
                rule(&["update"], &[CORE], &["secrets", "serviceaccounts"]),
                rule(&["create"], &[AUTHN], &["tokenreviews"]),
                rule(&["create"], &[AUTHZ], &["subjectaccessreviews"]),
                rule(&["list", "watch"], &["*"], &["*"]),
                rule(&["create"], &[CORE], &["serviceaccounts/token"]),
            ],
        ),
        cluster_role(
            "system:kube-dns",
            vec![rule(
                &["list", "watch"],
                &[CORE],
                &["endpoints", "services"],
            )],
        ),
        cluster_role(
            "system:persistent-volume-provisioner",
            vec![
                rule(
                    &["get", "list", "watch", "create", "delete"],
                    &[CORE],
                    &["persistentvolumes"],
                ),
                rule(
                    &["get", "list", "watch", "update"],
                    &[CORE],
                    &["persistentvolumeclaims"],
                ),
                rule(READ, &[STORAGE], &["storageclasses"]),
                rule(&["watch"], &[CORE], &["events"]),
                events(),
            ],
        ),
        // Bound (by the installer) to those whose node client certificate requests the
        // approver may approve: a new node's first one, and a node's renewal of its own.
        cluster_role(
            "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
            vec![rule(
                &["create"],
                &[CERTIFICATES],
                &["certificatesigningrequests/nodeclient"],
            )],
        ),
        cluster_role(
            "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
            vec![rule(
                &["create"],
                &[CERTIFICATES],
                &["certificatesigningrequests/selfnodeclient"],
            )],
        ),
        cluster_role(
            "system:volume-scheduler",
            vec![
                rule(READ_UPDATE, &[CORE], &["persistentvolumes"]),
                rule(READ, &[STORAGE], &["storageclasses"]),
                rule(READ_UPDATE, &[CORE], &["persistentvolumeclaims"]),
            ],
        ),
        approver("legacy-unknown-approver", LEGACY_UNKNOWN_SIGNER),
        approver("kubelet-serving-approver", KUBELET_SERVING_SIGNER),
        approver(
            "kube-apiserver-client-approver",
            KUBE_APISERVER_CLIENT_SIGNER,
        ),
        approver(
            "kube-apiserver-client-kubelet-approver",
            KUBELET_CLIENT_SIGNER,
        ),
        // The service-account issuer's OpenID discovery documents.
        cluster_role(
            "system:service-account-issuer-discovery",
            vec![urls(
                &["get"],
                &[
                    "/.well-known/openid-configuration",
                    "/.well-known/openid-configuration/",
                    "/openid/v1/jwks",
                    "/openid/v1/jwks/",
                ],
            )],
        ),
        // kube-proxy.
        cluster_role(
            "system:node-proxier",
            vec![
                rule(&["list", "watch"], &[CORE], &["services", "endpoints"]),
                rule(READ, &[CORE], &["nodes"]),
                events(),
                rule(&["list", "watch"], &[NETWORKING], &["servicecidrs"]),
                rule(&["list", "watch"], &[DISCOVERY], &["endpointslices"]),
            ],
        ),
        cluster_role("system:kube-scheduler", scheduler_rules()),
    ]
}

/// The scheduler's rules (without the ones for dynamic resource allocation and coordinated
/// leader election, features off by default in Kubernetes 1.33).
fn scheduler_rules() -> Vec<k8s_openapi::api::rbac::v1::PolicyRule> {
    vec![
        events(),
        // Leader election.
        rule(&["create"], &[COORDINATION], &["leases"]),
        named(
            &["get", "list", "update", "watch"],
            &[COORDINATION],
            &["leases"],
            &["kube-scheduler"],
        ),
        // The objects it places.
        rule(READ, &[CORE], &["nodes"]),
        rule(&["get", "list", "watch", "delete"], &[CORE], &["pods"]),
        rule(&["create"], &[CORE], &["pods/binding", "bindings"]),
        rule(&["patch", "update"], &[CORE], &["pods/status"]),
        // What selects pods.
        rule(READ, &[CORE], &["services", "replicationcontrollers"]),
        rule(READ, &[APPS, EXTENSIONS], &["replicasets"]),
        rule(READ, &[APPS], &["statefulsets"]),
        // What pods use or what applies to them.
        rule(READ, &[POLICY], &["poddisruptionbudgets"]),
        rule(
            READ,
            &[CORE],
            &["persistentvolumeclaims", "persistentvolumes"],
        ),
        rule(&["create"], &[AUTHN], &["tokenreviews"]),
        rule(&["create"], &[AUTHZ], &["subjectaccessreviews"]),
        rule(READ, &[STORAGE], &["csinodes"]),
        rule(READ, &[STORAGE], &["volumeattachments"]),
        // Pod affinity's namespaceSelector.
        rule(READ, &[CORE], &["namespaces"]),
        rule(READ, &[STORAGE], &["csidrivers"]),
        rule(READ, &[STORAGE], &["csistoragecapacities"]),
    ]
}

fn approver(name: &str, signer: &str) -> ClusterRole {
    cluster_role(
        &format!("system:certificates.k8s.io:{name}"),
        vec![named(
            &["approve"],
            &[CERTIFICATES],
            &["signers"],
            &[signer],
        )],
    )
}

/// Kubernetes' cluster role bindings.
pub(super) fn bindings() -> Vec<ClusterRoleBinding> {
    vec![
        cluster_binding(
            "cluster-admin",
            "cluster-admin",
            vec![group("system:masters")],
        ),
        cluster_binding(
            "system:monitoring",
            "system:monitoring",
            vec![group("system:monitoring")],
        ),
        cluster_binding(
            "system:discovery",
            "system:discovery",
            vec![group("system:authenticated")],
        ),
        cluster_binding(
            "system:basic-user",
            "system:basic-user",
            vec![group("system:authenticated")],
        ),
        cluster_binding(
            "system:public-info-viewer",
            "system:public-info-viewer",
            vec![
                group("system:authenticated"),
                group("system:unauthenticated"),
            ],
        ),
        cluster_binding(
            "system:node-proxier",
            "system:node-proxier",
            vec![user("system:kube-proxy")],
        ),
        cluster_binding(
            "system:kube-controller-manager",
            "system:kube-controller-manager",
            vec![user(CONTROLLER_MANAGER_USER)],
        ),
        cluster_binding(
            "system:kube-dns",
            "system:kube-dns",
            vec![service_account("kube-system", "kube-dns")],
        ),
        cluster_binding(
            "system:kube-scheduler",
            "system:kube-scheduler",
            vec![user(SCHEDULER_USER)],
        ),
        cluster_binding(
            "system:volume-scheduler",
            "system:volume-scheduler",
            vec![user(SCHEDULER_USER)],
        ),
        // Kept with no subjects: the Node authorizer took over, and reconciliation removes
        // the old `system:nodes` subject from clusters that had it.
        cluster_binding("system:node", "system:node", vec![]),
        // Every workload may read the service-account issuer's discovery documents.
        cluster_binding(
            "system:service-account-issuer-discovery",
            "system:service-account-issuer-discovery",
            vec![group("system:serviceaccounts")],
        ),
    ]
}
