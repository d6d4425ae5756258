//! Kubernetes' `system:controller:<name>` roles (`controller_policy.go`) of the controllers
//! keelson runs or is about to run, each bound, as Kubernetes binds it, to the ServiceAccount
//! `kube-system/<name>`. keelson's controllers run as one user; [`super::keelson`] binds these
//! same roles to it.

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};

use super::{
    CONTROLLER_ROLE_PREFIX, CORE, READ,
    cluster::{
        KUBE_APISERVER_CLIENT_SIGNER, KUBELET_CLIENT_SIGNER, KUBELET_SERVING_SIGNER,
        LEGACY_UNKNOWN_SIGNER,
    },
    cluster_binding, cluster_role, events, named, rule, service_account,
};

const APPS: &str = "apps";
const EXTENSIONS: &str = "extensions";
const CERTIFICATES: &str = "certificates.k8s.io";
const BATCH: &str = "batch";
const AUTOSCALING: &str = "autoscaling";

/// The controllers (by their ServiceAccount name, the role's name without
/// `system:controller:`) whose roles are here, with the keelson controller each serves.
pub const CONTROLLERS: &[(&str, &str)] = &[
    (
        "clusterrole-aggregation-controller",
        "clusterrole-aggregation",
    ),
    ("daemon-set-controller", "daemonset"),
    ("deployment-controller", "deployment"),
    ("endpoint-controller", "endpoints"),
    ("endpointslice-controller", "endpointslice"),
    ("generic-garbage-collector", "garbagecollector"),
    ("namespace-controller", "namespace"),
    ("node-controller", "nodeipam, nodelifecycle"),
    ("replicaset-controller", "replicaset"),
    ("service-account-controller", "serviceaccount"),
    ("statefulset-controller", "statefulset"),
    ("certificate-controller", "csrapproving, csrsigning"),
    ("root-ca-cert-publisher", "root-ca-cert-publisher"),
    ("replication-controller", "replicationcontroller"),
    ("disruption-controller", "disruption"),
    ("resourcequota-controller", "resourcequota"),
    ("job-controller", "job"),
    ("cronjob-controller", "cronjob"),
    ("ttl-after-finished-controller", "ttl-after-finished"),
    ("persistent-volume-binder", "persistentvolume-binder"),
    ("pvc-protection-controller", "pvc-protection"),
    ("pv-protection-controller", "pv-protection"),
    ("horizontal-pod-autoscaler", "horizontalpodautoscaling"),
];

fn controller_rules(name: &str) -> Vec<k8s_openapi::api::rbac::v1::PolicyRule> {
    match name {
        // It reads HPAs, writes their status and any target's scale, lists pods and their
        // resource metrics; custom and external metrics too (keelson serves neither API).
        "horizontal-pod-autoscaler" => vec![
            rule(READ, &[AUTOSCALING], &["horizontalpodautoscalers"]),
            rule(
                &["update"],
                &[AUTOSCALING],
                &["horizontalpodautoscalers/status"],
            ),
            rule(&["get", "update"], &["*"], &["*/scale"]),
            rule(&["list"], &[CORE], &["pods"]),
            rule(&["list"], &["metrics.k8s.io"], &["pods"]),
            rule(&["get", "list"], &["custom.metrics.k8s.io"], &["*"]),
            rule(&["get", "list"], &["external.metrics.k8s.io"], &["*"]),
            events(),
        ],
        // It writes the aggregated roles' rules, so it may hold any permission.
        "clusterrole-aggregation-controller" => vec![rule(
            &["escalate", "get", "list", "watch", "update", "patch"],
            &[super::RBAC_GROUP],
            &["clusterroles"],
        )],
        "daemon-set-controller" => vec![
            rule(
                &["get", "list", "watch"],
                &[EXTENSIONS, APPS],
                &["daemonsets"],
            ),
            rule(&["update"], &[EXTENSIONS, APPS], &["daemonsets/status"]),
            rule(&["update"], &[EXTENSIONS, APPS], &["daemonsets/finalizers"]),
            rule(&["list", "watch"], &[CORE], &["nodes"]),
            rule(
                &["list", "watch", "create", "delete", "patch"],
                &[CORE],
                &["pods"],
            ),
            rule(&["create"], &[CORE], &["pods/binding"]),
            rule(
                &[
                    "get", "list", "watch", "create", "delete", "update", "patch",
                ],
                &[APPS],
                &["controllerrevisions"],
            ),
            events(),
        ],
        "deployment-controller" => vec![
            rule(
                &["get", "list", "watch", "update"],
                &[EXTENSIONS, APPS],
                &["deployments"],
            ),
            rule(&["update"], &[EXTENSIONS, APPS], &["deployments/status"]),
            rule(
                &["update"],
                &[EXTENSIONS, APPS],
                &["deployments/finalizers"],
            ),
            rule(
                &[
                    "get", "list", "watch", "create", "update", "patch", "delete",
                ],
                &[APPS, EXTENSIONS],
                &["replicasets"],
            ),
            rule(&["get", "list", "watch", "update"], &[CORE], &["pods"]),
            events(),
        ],
        "endpoint-controller" => vec![
            rule(READ, &[CORE], &["services", "pods"]),
            rule(
                &["get", "list", "watch", "create", "update", "delete"],
                &[CORE],
                &["endpoints"],
            ),
            rule(&["create"], &[CORE], &["endpoints/restricted"]),
            events(),
        ],
        "endpointslice-controller" => vec![
            rule(READ, &[CORE], &["services", "pods", "nodes"]),
            // Owner references with blockOwnerDeletion need this on the Service.
            rule(&["update"], &[CORE], &["services/finalizers"]),
            rule(
                &["get", "list", "watch", "create", "update", "delete"],
                &["discovery.k8s.io"],
                &["endpointslices"],
            ),
            events(),
        ],
        // It lists, watches, reads, patches and deletes any kind.
        "generic-garbage-collector" => vec![
            rule(
                &["get", "list", "watch", "patch", "update", "delete"],
                &["*"],
                &["*"],
            ),
            events(),
        ],
        "namespace-controller" => vec![
            rule(
                &["get", "list", "watch", "delete"],
                &[CORE],
                &["namespaces"],
            ),
            rule(
                &["update"],
                &[CORE],
                &["namespaces/finalize", "namespaces/status"],
            ),
            rule(
                &["get", "list", "watch", "delete", "deletecollection"],
                &["*"],
                &["*"],
            ),
        ],
        "node-controller" => vec![
            rule(
                &["get", "list", "watch", "update", "delete", "patch"],
                &[CORE],
                &["nodes"],
            ),
            rule(&["patch", "update"], &[CORE], &["nodes/status"]),
            // Marking pods not ready on a lost node, then evicting them.
            rule(&["patch", "update"], &[CORE], &["pods/status"]),
            rule(&["list", "watch", "get", "delete"], &[CORE], &["pods"]),
            events(),
        ],
        "replicaset-controller" => vec![
            rule(
                &["get", "list", "watch", "update"],
                &[APPS, EXTENSIONS],
                &["replicasets"],
            ),
            rule(&["update"], &[APPS, EXTENSIONS], &["replicasets/status"]),
            rule(
                &["update"],
                &[APPS, EXTENSIONS],
                &["replicasets/finalizers"],
            ),
            rule(
                &["list", "watch", "patch", "create", "delete"],
                &[CORE],
                &["pods"],
            ),
            events(),
        ],
        "statefulset-controller" => vec![
            rule(&["list", "watch"], &[CORE], &["pods"]),
            rule(READ, &[APPS], &["statefulsets"]),
            rule(&["update"], &[APPS], &["statefulsets/status"]),
            rule(&["update"], &[APPS], &["statefulsets/finalizers"]),
            rule(
                &["get", "create", "delete", "update", "patch"],
                &[CORE],
                &["pods"],
            ),
            rule(
                &[
                    "get", "create", "delete", "update", "patch", "list", "watch",
                ],
                &[APPS],
                &["controllerrevisions"],
            ),
            rule(&["get", "create"], &[CORE], &["persistentvolumeclaims"]),
            // StatefulSetAutoDeletePVC (on by default): the claims' owner references.
            rule(&["update", "delete"], &[CORE], &["persistentvolumeclaims"]),
            events(),
        ],
        "service-account-controller" => {
            vec![rule(&["create"], &[CORE], &["serviceaccounts"]), events()]
        }
        "certificate-controller" => vec![
            rule(
                &["get", "list", "watch", "delete"],
                &[CERTIFICATES],
                &["certificatesigningrequests"],
            ),
            rule(
                &["update"],
                &[CERTIFICATES],
                &[
                    "certificatesigningrequests/status",
                    "certificatesigningrequests/approval",
                ],
            ),
            named(
                &["approve"],
                &[CERTIFICATES],
                &["signers"],
                &[KUBELET_CLIENT_SIGNER],
            ),
            named(
                &["sign"],
                &[CERTIFICATES],
                &["signers"],
                &[
                    LEGACY_UNKNOWN_SIGNER,
                    KUBE_APISERVER_CLIENT_SIGNER,
                    KUBELET_CLIENT_SIGNER,
                    KUBELET_SERVING_SIGNER,
                ],
            ),
            rule(
                &["create"],
                &["authorization.k8s.io"],
                &["subjectaccessreviews"],
            ),
            events(),
        ],
        // `kube-root-ca.crt` in every namespace.
        "root-ca-cert-publisher" => vec![
            rule(&["create", "update"], &[CORE], &["configmaps"]),
            events(),
        ],
        "replication-controller" => vec![
            rule(
                &["get", "list", "watch", "update"],
                &[CORE],
                &["replicationcontrollers"],
            ),
            rule(&["update"], &[CORE], &["replicationcontrollers/status"]),
            rule(&["update"], &[CORE], &["replicationcontrollers/finalizers"]),
            rule(
                &["list", "watch", "patch", "create", "delete"],
                &[CORE],
                &["pods"],
            ),
            events(),
        ],
        "disruption-controller" => vec![
            rule(READ, &[EXTENSIONS, APPS], &["deployments"]),
            rule(READ, &[APPS, EXTENSIONS], &["replicasets"]),
            rule(READ, &[CORE], &["replicationcontrollers"]),
            rule(READ, &["policy"], &["poddisruptionbudgets"]),
            rule(READ, &[APPS], &["statefulsets"]),
            rule(&["update"], &["policy"], &["poddisruptionbudgets/status"]),
            rule(&["patch", "update"], &[CORE], &["pods/status"]),
            rule(&["get"], &["*"], &["*/scale"]),
            events(),
        ],
        // It counts anything a quota can name.
        "resourcequota-controller" => vec![
            rule(&["list", "watch"], &["*"], &["*"]),
            rule(&["update"], &[CORE], &["resourcequotas/status"]),
            events(),
        ],
        "job-controller" => vec![
            rule(
                &["get", "list", "watch", "update", "patch"],
                &[BATCH],
                &["jobs"],
            ),
            rule(&["update"], &[BATCH], &["jobs/status"]),
            rule(&["update"], &[BATCH], &["jobs/finalizers"]),
            rule(
                &["list", "watch", "create", "delete", "patch"],
                &[CORE],
                &["pods"],
            ),
            events(),
        ],
        "cronjob-controller" => vec![
            rule(&["get", "list", "watch", "update"], &[BATCH], &["cronjobs"]),
            rule(
                &[
                    "get", "list", "watch", "create", "update", "delete", "patch",
                ],
                &[BATCH],
                &["jobs"],
            ),
            rule(&["update"], &[BATCH], &["cronjobs/status"]),
            rule(&["update"], &[BATCH], &["cronjobs/finalizers"]),
            rule(&["list", "watch", "delete"], &[CORE], &["pods"]),
            events(),
        ],
        "ttl-after-finished-controller" => vec![
            rule(&["delete", "get", "list", "watch"], &[BATCH], &["jobs"]),
            events(),
        ],
        // Binding, provisioning (local-path) and reclaiming volumes.
        "persistent-volume-binder" => vec![
            rule(
                &["get", "list", "watch", "update", "create", "delete"],
                &[CORE],
                &["persistentvolumes"],
            ),
            rule(&["update"], &[CORE], &["persistentvolumes/status"]),
            rule(
                &["get", "list", "watch", "update"],
                &[CORE],
                &["persistentvolumeclaims"],
            ),
            rule(&["update"], &[CORE], &["persistentvolumeclaims/status"]),
            rule(
                &["list", "watch", "get", "create", "delete"],
                &[CORE],
                &["pods"],
            ),
            rule(READ, &["storage.k8s.io"], &["storageclasses"]),
            rule(&["get", "list"], &[CORE], &["nodes"]),
            events(),
        ],
        // Finalizers of claims in use (the pods that use them are listed live).
        "pvc-protection-controller" => vec![
            rule(
                &["get", "list", "watch", "update"],
                &[CORE],
                &["persistentvolumeclaims"],
            ),
            rule(&["list", "watch", "get"], &[CORE], &["pods"]),
            events(),
        ],
        "pv-protection-controller" => vec![
            rule(
                &["get", "list", "watch", "update"],
                &[CORE],
                &["persistentvolumes"],
            ),
            events(),
        ],
        _ => Vec::new(),
    }
}

/// The controllers' cluster roles.
pub(super) fn roles() -> Vec<ClusterRole> {
    CONTROLLERS
        .iter()
        .map(|(name, _)| {
            cluster_role(
                &format!("{CONTROLLER_ROLE_PREFIX}{name}"),
                controller_rules(name),
            )
        })
        .collect()
}

/// Each controller role bound to the controller's ServiceAccount in `kube-system`.
pub(super) fn bindings() -> Vec<ClusterRoleBinding> {
    CONTROLLERS
        .iter()
        .map(|(name, _)| {
            let role = format!("{CONTROLLER_ROLE_PREFIX}{name}");
            cluster_binding(&role, &role, vec![service_account("kube-system", name)])
        })
        .collect()
}
