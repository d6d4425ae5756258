//! What the OpenAPI documents do not say and kube-apiserver's typed objects show: the members
//! Go always writes (non-pointer structs as `{}`, lists declared without `omitempty` and
//! `metav1.Time` values as `null`), by definition, and the default structured-merge-diff puts
//! in a list key an item leaves out (`default: TCP` of `ContainerPort.protocol` and
//! `ServicePort.protocol`, which Kubernetes' own schema carries and ours does not).
//!
//! Every top-level kind also always has `metadata: {}` (see [`always`]). The rest is from the
//! `default: {}` markers of Kubernetes' schema for the served types and the Go declarations of
//! `k8s.io/api`.

use super::schema::Zero;

const SPEC_STATUS: &[(&str, Zero)] = &[("spec", Zero::Object), ("status", Zero::Object)];
const TEMPLATE: &[(&str, Zero)] = &[("template", Zero::Object)];
const SET_SPEC: &[(&str, Zero)] = &[("template", Zero::Object), ("updateStrategy", Zero::Object)];
const META_SPEC: &[(&str, Zero)] = &[("metadata", Zero::Object), ("spec", Zero::Object)];

/// The members Go always writes, by definition, sorted by definition name.
static ALWAYS: &[(&str, &[(&str, Zero)])] = &[
    ("io.k8s.api.apps.v1.DaemonSet", SPEC_STATUS),
    ("io.k8s.api.apps.v1.DaemonSetSpec", SET_SPEC),
    ("io.k8s.api.apps.v1.Deployment", SPEC_STATUS),
    (
        "io.k8s.api.apps.v1.DeploymentSpec",
        &[("strategy", Zero::Object), ("template", Zero::Object)],
    ),
    ("io.k8s.api.apps.v1.ReplicaSet", SPEC_STATUS),
    ("io.k8s.api.apps.v1.ReplicaSetSpec", TEMPLATE),
    ("io.k8s.api.apps.v1.StatefulSet", SPEC_STATUS),
    ("io.k8s.api.apps.v1.StatefulSetSpec", SET_SPEC),
    (
        "io.k8s.api.autoscaling.v2.HorizontalPodAutoscaler",
        SPEC_STATUS,
    ),
    ("io.k8s.api.batch.v1.CronJob", SPEC_STATUS),
    (
        "io.k8s.api.batch.v1.CronJobSpec",
        &[("jobTemplate", Zero::Object)],
    ),
    ("io.k8s.api.batch.v1.Job", SPEC_STATUS),
    ("io.k8s.api.batch.v1.JobSpec", TEMPLATE),
    ("io.k8s.api.batch.v1.JobTemplateSpec", META_SPEC),
    (
        "io.k8s.api.coordination.v1.Lease",
        &[("spec", Zero::Object)],
    ),
    (
        "io.k8s.api.core.v1.Container",
        &[("resources", Zero::Object)],
    ),
    (
        "io.k8s.api.core.v1.EphemeralContainer",
        &[("resources", Zero::Object)],
    ),
    (
        "io.k8s.api.core.v1.Event",
        &[
            ("involvedObject", Zero::Object),
            ("source", Zero::Object),
            ("firstTimestamp", Zero::Null),
            ("lastTimestamp", Zero::Null),
            ("eventTime", Zero::Null),
        ],
    ),
    ("io.k8s.api.core.v1.Namespace", SPEC_STATUS),
    ("io.k8s.api.core.v1.Node", SPEC_STATUS),
    (
        "io.k8s.api.core.v1.NodeStatus",
        &[
            ("daemonEndpoints", Zero::Object),
            ("nodeInfo", Zero::Object),
        ],
    ),
    ("io.k8s.api.core.v1.PersistentVolume", SPEC_STATUS),
    ("io.k8s.api.core.v1.PersistentVolumeClaim", SPEC_STATUS),
    (
        "io.k8s.api.core.v1.PersistentVolumeClaimSpec",
        &[("resources", Zero::Object)],
    ),
    (
        "io.k8s.api.core.v1.PersistentVolumeClaimTemplate",
        META_SPEC,
    ),
    ("io.k8s.api.core.v1.Pod", SPEC_STATUS),
    ("io.k8s.api.core.v1.PodSpec", &[("containers", Zero::Null)]),
    ("io.k8s.api.core.v1.PodTemplateSpec", META_SPEC),
    ("io.k8s.api.core.v1.ReplicationController", SPEC_STATUS),
    ("io.k8s.api.core.v1.Service", SPEC_STATUS),
    (
        "io.k8s.api.core.v1.ServiceStatus",
        &[("loadBalancer", Zero::Object)],
    ),
    (
        "io.k8s.api.discovery.v1.EndpointSlice",
        &[("endpoints", Zero::Null), ("ports", Zero::Null)],
    ),
    (
        "io.k8s.api.events.v1.Event",
        &[
            ("eventTime", Zero::Null),
            ("regarding", Zero::Object),
            ("deprecatedSource", Zero::Object),
            ("deprecatedFirstTimestamp", Zero::Null),
            ("deprecatedLastTimestamp", Zero::Null),
        ],
    ),
    ("io.k8s.api.networking.v1.Ingress", SPEC_STATUS),
    (
        "io.k8s.api.networking.v1.IngressStatus",
        &[("loadBalancer", Zero::Object)],
    ),
    (
        "io.k8s.api.networking.v1.NetworkPolicy",
        &[("spec", Zero::Object)],
    ),
    ("io.k8s.api.policy.v1.PodDisruptionBudget", SPEC_STATUS),
    ("io.k8s.api.rbac.v1.ClusterRole", &[("rules", Zero::Null)]),
    (
        "io.k8s.api.rbac.v1.ClusterRoleBinding",
        &[("roleRef", Zero::Object)],
    ),
    ("io.k8s.api.rbac.v1.Role", &[("rules", Zero::Null)]),
    (
        "io.k8s.api.rbac.v1.RoleBinding",
        &[("roleRef", Zero::Object)],
    ),
    (
        "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
        &[("creationTimestamp", Zero::Null)],
    ),
];

/// The members Go always writes in a value of `definition`; a top-level kind (`kind` true)
/// always has `metadata` too.
pub(super) fn always(definition: &str, kind: bool) -> Vec<(&'static str, Zero)> {
    let mut out = Vec::new();
    if kind {
        out.push(("metadata", Zero::Object));
    }
    if let Ok(i) = ALWAYS.binary_search_by(|(d, _)| (*d).cmp(definition))
        && let Some((_, members)) = ALWAYS.get(i)
    {
        out.extend(
            members
                .iter()
                .filter(|(name, _)| !(kind && *name == "metadata")),
        );
    }
    out
}

/// The default of list key `key` in a built-in type when its schema states none.
pub(super) fn key_default(key: &str) -> Option<&'static str> {
    (key == "protocol").then_some("TCP")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::ALWAYS;
    use crate::managed_fields::fields_v1;
    use crate::schema::builtin_definitions;

    #[test]
    fn what_go_always_writes_is_not_owned_as_added_but_kept_when_sent() {
        let cases = [
            // `rules` has no omitempty: an aggregated ClusterRole's `[]` is kept and owned.
            (
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                       "metadata": {"name": "agg"}, "rules": []}),
                json!({"f:rules": {}}),
            ),
            // `spec` is a Go struct: always there, so the creator does not add it (no `.`).
            (
                json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
                       "metadata": {"name": "i"}, "spec": {"ingressClassName": "x"}}),
                json!({"f:spec": {"f:ingressClassName": {}}}),
            ),
            // A kind without a schema: `spec` is added.
            (
                json!({"apiVersion": "example.com/v1", "kind": "Widget",
                       "metadata": {"name": "w"}, "spec": {"size": 1}}),
                json!({"f:spec": {".": {}, "f:size": {}}}),
            ),
        ];
        for (object, want) in cases {
            assert_eq!(fields_v1(&object), want, "{object}");
        }
    }

    #[test]
    fn the_table_is_sorted_for_binary_search() {
        assert!(ALWAYS.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn every_member_of_the_table_is_a_property_of_its_definition() {
        for (definition, members) in ALWAYS {
            for (member, _) in *members {
                assert!(
                    builtin_definitions()
                        .get(*definition)
                        .and_then(|d| d.pointer(&format!("/properties/{member}")))
                        .is_some(),
                    "{definition}.{member}"
                );
            }
        }
    }
}
