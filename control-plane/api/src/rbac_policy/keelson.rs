//! keelson's additions to Kubernetes' bootstrap policy (see the module documentation of
//! [`super`] for why each exists). Every object here carries [`LABEL`].
//!
//! What each grants was checked against the API calls keelson's components make:
//!
//! - the node agent's datapath watches Services, EndpointSlices and Nodes cluster-wide and
//!   lists a namespace's Services for a pod's environment ([`NODE_DATAPATH`]); what it does
//!   with its own Node, Lease, pods, their Events, Secrets and ConfigMaps is the Node
//!   authorizer's; it watches PersistentVolumes and patches away the local-path cleanup
//!   finalizer of those on its node once their directory is removed ([`NODE_LOCAL_PATH`]);
//! - the controllers' reads are the controller manager's `list`/`watch` of everything, their
//!   writes are their `system:controller:*` roles, except the merge patches of
//!   `deployments/status`, `replicasets/status`, `replicationcontrollers/status`, `jobs/status`,
//!   `cronjobs/status` and the CSR `approval`/`status` subresources (Kubernetes' controllers send
//!   PUT there) and the creation of `kube-public/cluster-info`
//!   (kubeadm creates it in Kubernetes), and the `kube-dns` EndpointSlice written by keelson's
//!   own `kube-dns-endpoints` controller, granted by [`CONTROLLER_MANAGER_EXTRAS`] and
//!   [`BOOTSTRAP_SIGNER_EXTRAS`];
//! - `kubectl top` for holders of `view`, `edit` and `admin`: metrics-server's own
//!   [`AGGREGATED_METRICS_READER`], which keelson's `metrics.k8s.io` needs as metrics-server does;
//! - L2 announcements of LoadBalancer IPs: node agents elect one announcer per address with
//!   Leases `kube-system/keelson-lb-<ip-dashed>` that any node may create, take over and
//!   delete ([`LB_ANNOUNCE`]; RBAC cannot grant by name prefix, and the Node authorizer has
//!   no opinion on Leases outside `kube-node-lease`);
//! - leader election uses the Leases `kube-system/keelson-controller-manager` and
//!   `kube-system/keelson-scheduler`, not Kubernetes' lease names.

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};

use super::{
    CONTROLLER_MANAGER_USER, CONTROLLER_ROLE_PREFIX, CORE, READ, SCHEDULER_USER,
    cluster::{AGGREGATE_TO_ADMIN, AGGREGATE_TO_EDIT, AGGREGATE_TO_VIEW},
    cluster_binding, cluster_role,
    controllers::CONTROLLERS,
    group, keelson_labelled, labelled_cluster_role, named,
    namespaced::{KUBE_PUBLIC, KUBE_SYSTEM},
    role, role_binding, rule, user,
};

/// The label on every object keelson adds, and its value.
pub const LABEL: (&str, &str) = ("keelson.io/bootstrapping", "keelson-defaults");
/// The ClusterRole of what every node's datapath reads cluster-wide.
pub const NODE_DATAPATH: &str = "keelson:node-datapath";
/// The ClusterRole that lets node agents clean up the local-path volumes of their node: they
/// watch volumes and drop the cleanup finalizer once the directory is gone.
pub const NODE_LOCAL_PATH: &str = "keelson:node-local-path";
/// The ClusterRole metrics-server ships: reading `metrics.k8s.io` pods and nodes, aggregated
/// into `view`, `edit` and `admin` (so their holders can run `kubectl top`).
pub const AGGREGATED_METRICS_READER: &str = "system:aggregated-metrics-reader";
/// The ClusterRole of the controllers' writes that Kubernetes' controller roles lack.
pub const CONTROLLER_MANAGER_EXTRAS: &str = "keelson:kube-controller-manager";
/// The `kube-public` Role that lets the bootstrap signer create `cluster-info`.
pub const BOOTSTRAP_SIGNER_EXTRAS: &str = "keelson:bootstrap-signer";
/// The `kube-system` Role (bound to `system:nodes`) of the Leases that elect the node
/// announcing each LoadBalancer IP.
pub const LB_ANNOUNCE: &str = "keelson:lb-announce";
/// The Lease (in `kube-system`) the controllers elect their leader with.
pub const CONTROLLER_MANAGER_LEASE: &str = "keelson-controller-manager";
/// The Lease (in `kube-system`) the schedulers elect their leader with.
pub const SCHEDULER_LEASE: &str = "keelson-scheduler";
/// The prefix of the bindings of Kubernetes' controller roles to the controller manager.
pub const CONTROLLER_BINDING_PREFIX: &str = "keelson:controller:";

const NODES: &str = "system:nodes";
const CERTIFICATES: &str = "certificates.k8s.io";
const COORDINATION: &str = "coordination.k8s.io";
const CONTROLLER_MANAGER_LEADER: &str = "keelson:leader-locking-controller-manager";
const SCHEDULER_LEADER: &str = "keelson:leader-locking-scheduler";

fn mark_cluster_role(mut role: ClusterRole) -> ClusterRole {
    role.metadata = keelson_labelled(role.metadata);
    role
}

fn mark_cluster_binding(mut binding: ClusterRoleBinding) -> ClusterRoleBinding {
    binding.metadata = keelson_labelled(binding.metadata);
    binding
}

fn mark_role(mut role: Role) -> Role {
    role.metadata = keelson_labelled(role.metadata);
    role
}

fn mark_binding(mut binding: RoleBinding) -> RoleBinding {
    binding.metadata = keelson_labelled(binding.metadata);
    binding
}

/// keelson's ClusterRoles.
pub(super) fn cluster_roles() -> Vec<ClusterRole> {
    [
        // Cilium's agent reads the same: what a datapath needs to route, balance and filter
        // every pod's traffic. Never Secrets or ConfigMaps.
        cluster_role(
            NODE_DATAPATH,
            vec![
                rule(
                    READ,
                    &[CORE],
                    &["pods", "services", "endpoints", "nodes", "namespaces"],
                ),
                rule(READ, &["discovery.k8s.io"], &["endpointslices"]),
                rule(READ, &["networking.k8s.io"], &["networkpolicies"]),
            ],
        ),
        cluster_role(
            NODE_LOCAL_PATH,
            vec![rule(
                &["get", "list", "watch", "patch"],
                &[CORE],
                &["persistentvolumes"],
            )],
        ),
        cluster_role(
            CONTROLLER_MANAGER_EXTRAS,
            vec![
                // deployment, replicaset and statefulset: their status is written with a
                // merge patch.
                rule(
                    &["patch"],
                    &["apps"],
                    &["deployments/status", "replicasets/status"],
                ),
                rule(&["patch"], &["apps"], &["statefulsets/status"]),
                // replicationcontroller: the same merge patch of its status.
                rule(&["patch"], &[CORE], &["replicationcontrollers/status"]),
                // job and cronjob: their status is written with a merge patch.
                rule(&["patch"], &["batch"], &["jobs/status", "cronjobs/status"]),
                // persistentvolume-binder writes volumes and claims with merge patches.
                rule(
                    &["patch"],
                    &[CORE],
                    &[
                        "persistentvolumes",
                        "persistentvolumes/status",
                        "persistentvolumeclaims",
                        "persistentvolumeclaims/status",
                    ],
                ),
                // kube-dns-endpoints (keelson's own controller) writes the `kube-dns` Service's
                // EndpointSlice.
                rule(
                    &["create", "update", "delete"],
                    &["discovery.k8s.io"],
                    &["endpointslices"],
                ),
                // csrapproving patches the approval, csrsigning the status (the certificate).
                rule(
                    &["patch"],
                    &[CERTIFICATES],
                    &[
                        "certificatesigningrequests/approval",
                        "certificatesigningrequests/status",
                    ],
                ),
            ],
        ),
    ]
    .into_iter()
    .map(mark_cluster_role)
    .chain([metrics_reader()])
    .collect()
}

/// keelson's ClusterRoleBindings.
pub(super) fn cluster_role_bindings() -> Vec<ClusterRoleBinding> {
    let mut bindings = vec![
        cluster_binding(NODE_DATAPATH, NODE_DATAPATH, vec![group(NODES)]),
        cluster_binding(NODE_LOCAL_PATH, NODE_LOCAL_PATH, vec![group(NODES)]),
        cluster_binding(
            CONTROLLER_MANAGER_EXTRAS,
            CONTROLLER_MANAGER_EXTRAS,
            vec![user(CONTROLLER_MANAGER_USER)],
        ),
    ];
    // One identity for every controller: each controller role bound to the controller manager.
    bindings.extend(CONTROLLERS.iter().map(|(name, _)| {
        cluster_binding(
            &format!("{CONTROLLER_BINDING_PREFIX}{name}"),
            &format!("{CONTROLLER_ROLE_PREFIX}{name}"),
            vec![user(CONTROLLER_MANAGER_USER)],
        )
    }));
    bindings.into_iter().map(mark_cluster_binding).collect()
}

/// metrics-server's own role (named as metrics-server names it, so not keelson-labelled):
/// `kubectl top` for whoever may view, edit or administer.
fn metrics_reader() -> ClusterRole {
    labelled_cluster_role(
        AGGREGATED_METRICS_READER,
        &[
            ("k8s-app", "metrics-server"),
            (AGGREGATE_TO_ADMIN, "true"),
            (AGGREGATE_TO_EDIT, "true"),
            (AGGREGATE_TO_VIEW, "true"),
        ],
        vec![rule(READ, &["metrics.k8s.io"], &["pods", "nodes"])],
    )
}

fn leader_locking(name: &str, lease: &str) -> Role {
    role(
        KUBE_SYSTEM,
        name,
        vec![
            rule(&["create"], &[COORDINATION], &["leases"]),
            named(&["get", "update"], &[COORDINATION], &["leases"], &[lease]),
        ],
    )
}

/// keelson's namespaced Roles.
pub(super) fn roles() -> Vec<Role> {
    [
        leader_locking(CONTROLLER_MANAGER_LEADER, CONTROLLER_MANAGER_LEASE),
        leader_locking(SCHEDULER_LEADER, SCHEDULER_LEASE),
        role(
            KUBE_SYSTEM,
            LB_ANNOUNCE,
            vec![rule(
                &["create", "delete", "get", "list", "update", "watch"],
                &[COORDINATION],
                &["leases"],
            )],
        ),
        // Kubernetes' signer only updates `cluster-info`; keelson's also creates it.
        role(
            KUBE_PUBLIC,
            BOOTSTRAP_SIGNER_EXTRAS,
            vec![rule(&["create"], &[CORE], &["configmaps"])],
        ),
    ]
    .into_iter()
    .map(mark_role)
    .collect()
}

/// keelson's namespaced RoleBindings.
pub(super) fn role_bindings() -> Vec<RoleBinding> {
    let bootstrap_signer = format!("{CONTROLLER_ROLE_PREFIX}bootstrap-signer");
    let token_cleaner = format!("{CONTROLLER_ROLE_PREFIX}token-cleaner");
    [
        role_binding(
            KUBE_SYSTEM,
            &format!("{CONTROLLER_BINDING_PREFIX}bootstrap-signer"),
            &bootstrap_signer,
            vec![user(CONTROLLER_MANAGER_USER)],
        ),
        role_binding(
            KUBE_PUBLIC,
            &format!("{CONTROLLER_BINDING_PREFIX}bootstrap-signer"),
            &bootstrap_signer,
            vec![user(CONTROLLER_MANAGER_USER)],
        ),
        role_binding(
            KUBE_SYSTEM,
            &format!("{CONTROLLER_BINDING_PREFIX}token-cleaner"),
            &token_cleaner,
            vec![user(CONTROLLER_MANAGER_USER)],
        ),
        role_binding(
            KUBE_SYSTEM,
            CONTROLLER_MANAGER_LEADER,
            CONTROLLER_MANAGER_LEADER,
            vec![user(CONTROLLER_MANAGER_USER)],
        ),
        role_binding(
            KUBE_SYSTEM,
            SCHEDULER_LEADER,
            SCHEDULER_LEADER,
            vec![user(SCHEDULER_USER)],
        ),
        role_binding(KUBE_SYSTEM, LB_ANNOUNCE, LB_ANNOUNCE, vec![group(NODES)]),
        role_binding(
            KUBE_PUBLIC,
            BOOTSTRAP_SIGNER_EXTRAS,
            BOOTSTRAP_SIGNER_EXTRAS,
            vec![user(CONTROLLER_MANAGER_USER)],
        ),
    ]
    .into_iter()
    .map(mark_binding)
    .collect()
}
