//! Defaulting: the values Kubernetes fills in when a client leaves a field out, ported field by
//! field from Kubernetes v1.33 with its default feature gates.
//!
//! The sources are `pkg/apis/<group>/<version>/defaults.go`, the `+default` markers that
//! `defaulter-gen` turns into `zz_generated.defaults.go` (which also decides which nested
//! defaulters run where), and a few steps that are not defaulting in Kubernetes but fill fields
//! the same way on every write; each function names its source. Those steps are:
//! - the `DefaultTolerationSeconds` admission plugin (Pods, in `pod.rs`);
//! - the v1 conversions that mirror a deprecated field: a pod spec's `serviceAccount`, a
//!   Node's `podCIDR`, a Pod's `status.podIP`, and a Secret's write-only `stringData`;
//! - the Service registry's `clusterIPs` and IP-family fields on create (in `service.rs`).
//!
//! # What counts as left out
//!
//! As in Kubernetes, which defaults Go structs after decoding: a field is filled when it is
//! absent or `null`; a field Kubernetes holds as a plain string or number (not a pointer) also
//! when it is `""` or `0`, and a list or map it checks by length also when empty, because
//! Kubernetes cannot tell those from absent either. Any other value a client sent is kept,
//! except where Kubernetes itself overrides it, each documented where it happens: a Namespace's
//! `kubernetes.io/metadata.name` label, a Service's `sessionAffinityConfig` under
//! `sessionAffinity: None`, and the mirrored fields above.
//!
//! Defaulting is idempotent: defaulting its own output changes nothing.
//!
//! # Left out
//!
//! Resource quantities are not rounded up to milli-units (`SetDefaults_ResourceList`) nor
//! re-serialised in canonical form; defaults behind feature gates that are off in v1.33
//! (pod-level resources, image volumes, coordinated leader election's `Lease.spec.strategy`)
//! are not applied.

mod admission;
mod apiextensions;
mod apps;
mod autoscaling;
mod batch;
mod core;
mod fields;
mod image;
mod networking;
mod others;
mod pod;
mod service;
mod storage;

#[cfg(test)]
mod tests;

use serde_json::Value;

/// Fills, in place, the defaults Kubernetes gives an object of `kind` in API group `group`
/// (`""` for the core group), e.g. `("apps", "Deployment")`. `object` is the whole object as a
/// client sent it (`apiVersion`, `kind`, `metadata`, `spec`, ...). Kinds without defaults, and
/// objects that are not JSON objects, are left as they are.
pub fn apply_defaults(group: &str, kind: &str, object: &mut Value) {
    let Some(root) = object.as_object_mut() else {
        return;
    };
    match group {
        "" => core::apply(kind, root),
        "apps" => apps::apply(kind, root),
        "batch" => batch::apply(kind, root),
        "autoscaling" => autoscaling::apply(kind, root),
        "networking.k8s.io" => networking::apply(kind, root),
        "discovery.k8s.io" => networking::apply_discovery(kind, root),
        "storage.k8s.io" => storage::apply(kind, root),
        "admissionregistration.k8s.io" => admission::apply(kind, root),
        "apiextensions.k8s.io" => apiextensions::apply(kind, root),
        "apiregistration.k8s.io" => admission::apply_apiregistration(kind, root),
        "rbac.authorization.k8s.io" => others::apply_rbac(kind, root),
        "scheduling.k8s.io" => others::apply_scheduling(kind, root),
        "flowcontrol.apiserver.k8s.io" => others::apply_flowcontrol(kind, root),
        // policy/v1 (PodDisruptionBudget), node.k8s.io/v1 (RuntimeClass), certificates.k8s.io/v1
        // (CertificateSigningRequest), events.k8s.io/v1 (Event) and coordination.k8s.io/v1
        // (Lease, see "Left out") have no defaults.
        _ => {}
    }
}
