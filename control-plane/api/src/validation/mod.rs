//! Kubernetes' validation of objects, with kube-apiserver's (v1.33) field paths and messages.
//!
//! The API server calls [`validate`] on a defaulted object before a create and
//! [`validate_update`] before an update, and turns a non-empty list into a 422 whose message
//! is [`summary`] and whose causes are [`FieldError::status_cause`]. Fields that Kubernetes
//! defaults are read with their defaults when absent, so a partly defaulted object gives the
//! same answer as a fully defaulted one. The object's JSON types are assumed to be right
//! (the server checks them against the k8s-openapi type first).
//!
//! As in kube-apiserver, a create runs the kind's checks first and the generic ObjectMeta
//! checks (`rest.BeforeCreate`) only when those pass; an update runs both.

mod admission;
mod apiextensions;
mod batch;
mod container;
mod core;
pub mod cron;
mod errors;
pub(crate) mod formats;
mod meta;
mod misc;
mod networking;
mod placement;
mod pod;
mod policy;
mod rbac;
mod resources;
mod service;
mod storage;
mod util;
mod volume;
mod workloads;

#[cfg(test)]
mod tests;

use serde_json::{Map, Value};

pub use apiextensions::{custom_resource, custom_resource_update};
pub use errors::{ErrorType, FieldError, go_quote, go_value, summary};

use util::Errs;

type Create = fn(&Value, &mut Errs);
type Update = fn(&Value, &Value, &mut Errs);

/// The checks for one kind: create, update (`None`: the create checks on the new object; a
/// function runs them itself), and whether it is namespaced.
struct KindRules {
    create: Create,
    update: Option<Update>,
    namespaced: bool,
}

fn rules(group: &str, kind: &str) -> Option<KindRules> {
    let r = |create: Create, update: Option<Update>, namespaced: bool| {
        Some(KindRules {
            create,
            update,
            namespaced,
        })
    };
    match (group, kind) {
        ("", "Namespace") => r(core::namespace, Some(core::namespace_update), false),
        ("", "Pod") => r(pod::pod, Some(pod::pod_update), true),
        ("", "PodTemplate") => r(pod::pod_template, None, true),
        ("", "Service") => r(service::service, Some(service::service_update), true),
        ("", "Endpoints") => r(service::endpoints, None, true),
        ("", "Node") => r(core::node, Some(core::node_update), false),
        ("", "Event") => r(core::event, None, true),
        ("", "ConfigMap") => r(core::config_map, Some(core::config_map_update), true),
        ("", "Secret") => r(core::secret, Some(core::secret_update), true),
        ("", "ServiceAccount") => r(core::service_account, None, true),
        ("", "ReplicationController") => r(workloads::replication_controller, None, true),
        ("", "PersistentVolume") => r(storage::pv, Some(storage::pv_update), false),
        ("", "PersistentVolumeClaim") => r(storage::pvc, Some(storage::pvc_update), true),
        ("", "LimitRange") => r(core::limit_range, None, true),
        ("", "ResourceQuota") => r(
            core::resource_quota,
            Some(core::resource_quota_update),
            true,
        ),
        ("apps", "Deployment") => r(
            workloads::deployment,
            Some(workloads::deployment_update),
            true,
        ),
        ("apps", "ReplicaSet") => r(
            workloads::replica_set,
            Some(workloads::replica_set_update),
            true,
        ),
        ("apps", "DaemonSet") => r(
            workloads::daemon_set,
            Some(workloads::daemon_set_update),
            true,
        ),
        ("apps", "StatefulSet") => r(
            workloads::stateful_set,
            Some(workloads::stateful_set_update),
            true,
        ),
        ("apps", "ControllerRevision") => r(
            workloads::controller_revision,
            Some(workloads::controller_revision_update),
            true,
        ),
        ("batch", "Job") => r(batch::job, Some(batch::job_update), true),
        ("batch", "CronJob") => r(batch::cron_job, Some(batch::cron_job_update), true),
        ("autoscaling", "HorizontalPodAutoscaler") => r(policy::hpa, None, true),
        ("policy", "PodDisruptionBudget") => r(policy::pdb, None, true),
        ("rbac.authorization.k8s.io", "Role") => r(rbac::role, None, true),
        ("rbac.authorization.k8s.io", "ClusterRole") => r(rbac::cluster_role, None, false),
        ("rbac.authorization.k8s.io", "RoleBinding") => {
            r(rbac::role_binding, Some(rbac::role_binding_update), true)
        }
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => r(
            rbac::cluster_role_binding,
            Some(rbac::cluster_role_binding_update),
            false,
        ),
        ("networking.k8s.io", "NetworkPolicy") => r(networking::network_policy, None, true),
        ("networking.k8s.io", "Ingress") => {
            r(networking::ingress, Some(networking::ingress_update), true)
        }
        ("networking.k8s.io", "IngressClass") => r(
            networking::ingress_class,
            Some(networking::ingress_class_update),
            false,
        ),
        ("networking.k8s.io", "IPAddress") => r(
            networking::ip_address,
            Some(networking::ip_address_update),
            false,
        ),
        ("networking.k8s.io", "ServiceCIDR") => r(
            networking::service_cidr,
            Some(networking::service_cidr_update),
            false,
        ),
        ("storage.k8s.io", "StorageClass") => r(
            storage::storage_class,
            Some(storage::storage_class_update),
            false,
        ),
        ("storage.k8s.io", "CSIDriver") => {
            r(storage::csi_driver, Some(storage::csi_driver_update), false)
        }
        ("storage.k8s.io", "CSINode") => r(storage::csi_node, None, false),
        ("storage.k8s.io", "VolumeAttachment") => r(
            storage::volume_attachment,
            Some(storage::volume_attachment_update),
            false,
        ),
        ("storage.k8s.io", "CSIStorageCapacity") => r(
            storage::csi_storage_capacity,
            Some(storage::csi_storage_capacity_update),
            true,
        ),
        ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration") => {
            r(admission::validating_webhooks, None, false)
        }
        ("admissionregistration.k8s.io", "MutatingWebhookConfiguration") => {
            r(admission::mutating_webhooks, None, false)
        }
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy") => {
            r(admission::policy, None, false)
        }
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding") => {
            r(admission::policy_binding, None, false)
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => {
            r(apiextensions::crd, Some(apiextensions::crd_update), false)
        }
        ("apiregistration.k8s.io", "APIService") => r(misc::api_service, None, false),
        ("certificates.k8s.io", "CertificateSigningRequest") => {
            r(misc::csr, Some(misc::csr_update), false)
        }
        ("scheduling.k8s.io", "PriorityClass") => r(
            policy::priority_class,
            Some(policy::priority_class_update),
            false,
        ),
        ("node.k8s.io", "RuntimeClass") => r(
            policy::runtime_class,
            Some(policy::runtime_class_update),
            false,
        ),
        ("events.k8s.io", "Event") => r(core::events_v1, None, true),
        ("flowcontrol.apiserver.k8s.io", "FlowSchema") => r(misc::flow_schema, None, false),
        ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration") => {
            r(misc::priority_level, None, false)
        }
        ("discovery.k8s.io", "EndpointSlice") => r(
            service::endpoint_slice,
            Some(service::endpoint_slice_update),
            true,
        ),
        ("coordination.k8s.io", "Lease") => r(policy::lease, None, true),
        _ => None,
    }
}

/// Validates an object for create: the kind's checks, then (if they pass) the generic
/// ObjectMeta checks. `group` is the API group (`""` for core), `kind` the kind. Kinds this
/// module does not know get only the generic checks.
pub fn validate(group: &str, kind: &str, object: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let namespaced = match rules(group, kind) {
        Some(r) => {
            (r.create)(object, &mut errs);
            r.namespaced
        }
        None => !util::str_or(util::at(object, "metadata"), "namespace").is_empty(),
    };
    if errs.is_empty() {
        meta::generic_meta(object, namespaced, &mut errs);
    }
    dedup(errs)
}

/// Validates an update of `old` to `new`: the generic ObjectMeta update checks, the kind's
/// checks on `new`, and the kind's immutability rules (selectors, StatefulSet spec, Job
/// template, Service clusterIPs, PVC spec, immutable ConfigMaps and Secrets, roleRef, ...).
pub fn validate_update(group: &str, kind: &str, old: &Value, new: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let namespaced = rules(group, kind).map_or_else(
        || !util::str_or(util::at(new, "metadata"), "namespace").is_empty(),
        |r| r.namespaced,
    );
    meta::generic_meta(new, namespaced, &mut errs);
    meta::object_meta_update(new, old, &mut errs);
    if let Some(r) = rules(group, kind) {
        match r.update {
            Some(update) => update(new, old, &mut errs),
            None => (r.create)(new, &mut errs),
        }
    }
    dedup(errs)
}

/// Validates a write to the `status` subresource: only the ObjectMeta update rules (status
/// contents are trusted; they come from controllers and kubelets).
pub fn validate_status_update(old: &Value, new: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    meta::object_meta_update(new, old, &mut errs);
    dedup(errs)
}

fn dedup(errs: Errs) -> Errs {
    let mut out: Errs = Vec::with_capacity(errs.len());
    for e in errs {
        if !out.contains(&e) {
            out.push(e);
        }
    }
    out
}

/// A copy without `null` members, for "did this change" comparisons (absent == null).
pub(crate) fn normalized(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), normalized(v)))
                .collect::<Map<String, Value>>(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(normalized).collect()),
        other => other.clone(),
    }
}

/// Lines naming the members that differ between two objects, for update messages.
pub(crate) fn changed_fields(old: &Value, new: &Value) -> Vec<String> {
    let mut out = Vec::new();
    diff_into("", old, new, &mut out);
    out
}

fn diff_into(prefix: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    if old == new || out.len() >= 20 {
        return;
    }
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut keys: Vec<&String> = o.keys().chain(n.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                diff_into(
                    &p,
                    o.get(k).unwrap_or(&Value::Null),
                    n.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        (Value::Array(o), Value::Array(n)) if o.len() == n.len() => {
            for (i, (a, b)) in o.iter().zip(n).enumerate() {
                diff_into(&format!("{prefix}[{i}]"), a, b, out);
            }
        }
        _ => out.push(format!("  {prefix}: {old} -> {new}")),
    }
}
