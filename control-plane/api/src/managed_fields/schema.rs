//! What structured-merge-diff needs to know about the built-in types, written out by hand until
//! keelson serves an OpenAPI schema: which lists are keyed (`x-kubernetes-list-type: map` with
//! its `x-kubernetes-list-map-keys`), which are sets, which structs and maps are atomic, and
//! which fields Go always writes (non-pointer structs, lists without `omitempty`), since
//! kube-apiserver compares typed objects that always carry them.
//!
//! The list and atomic markers are those of Kubernetes' own schema for the served types
//! (`staging/src/k8s.io/client-go/applyconfigurations/internal/internal.go`, generated from the
//! `+listType`/`+listMapKey`/`+structType`/`+mapType` markers of `k8s.io/api`); fields that Go
//! always writes are the ones that schema marks `default: {}` (non-pointer structs) plus the
//! few lists declared without `omitempty`. Anything not listed is deduced from the JSON, as
//! structured-merge-diff deduces untyped values: objects are granular, lists atomic.

/// How a value takes part in field ownership.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Shape {
    /// Deduced from the JSON: an object is a granular map of deduced members, a list is atomic.
    Deduced,
    /// A granular struct whose special members are listed.
    Struct(&'static Ty),
    /// Owned as one leaf, whatever it holds.
    Atomic,
    /// A Go map: granular like a deduced object, and left out by Go when empty.
    Map,
    /// A Go map owned as one leaf (`+mapType=atomic`), left out by Go when empty.
    AtomicMap,
    /// A list of scalars whose items are owned one by one (`v:<value>`).
    Set,
    /// A list of objects owned item by item, keyed by these fields (`k:{...}`).
    Keyed(&'static [&'static str], &'static Shape),
}

/// A struct's members that are not deduced, and the members Go always writes.
#[derive(Debug)]
pub(crate) struct Ty {
    pub(crate) members: &'static [(&'static str, Shape)],
    pub(crate) always: &'static [(&'static str, Zero)],
}

/// The value Go writes for an unset member that is never omitted.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Zero {
    /// A non-pointer struct: `{}`.
    Object,
    /// A `metav1.Time` or a list without `omitempty`: `null`.
    Null,
}

impl Shape {
    /// The shape of member `name` of a value of this shape.
    pub(crate) fn member(self, name: &str) -> Shape {
        match self {
            Shape::Struct(ty) => ty
                .members
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(Shape::Deduced, |(_, shape)| *shape),
            _ => Shape::Deduced,
        }
    }
}

/// The defaults that structured-merge-diff puts in a list key the item leaves out (the
/// schema's `default: TCP` of `ContainerPort.protocol` and `ServicePort.protocol`).
pub(crate) fn key_default(key: &str) -> Option<&'static str> {
    (key == "protocol").then_some("TCP")
}

const fn ty(members: &'static [(&'static str, Shape)]) -> Ty {
    Ty {
        members,
        always: &[],
    }
}

use Shape::{Atomic, AtomicMap, Keyed, Map, Set, Struct};

const OBJECT_META: Ty = Ty {
    members: &[
        ("finalizers", Set),
        ("ownerReferences", Keyed(&["uid"], &Atomic)),
        ("managedFields", Atomic),
        ("labels", Map),
        ("annotations", Map),
    ],
    always: &[("creationTimestamp", Zero::Null)],
};
const META: (&str, Shape) = ("metadata", Struct(&OBJECT_META));

const CONDITIONS: (&str, Shape) = ("conditions", Keyed(&["type"], &Shape::Deduced));
const SELECTOR: (&str, Shape) = ("selector", Atomic);

// --- PodSpec and its parts (core/v1) ---

const RESOURCE_REQUIREMENTS: Ty = ty(&[
    ("claims", Keyed(&["name"], &Shape::Deduced)),
    ("limits", Map),
    ("requests", Map),
]);
const ENV_VAR_SOURCE: Ty = ty(&[
    ("configMapKeyRef", Atomic),
    ("secretKeyRef", Atomic),
    ("fieldRef", Atomic),
    ("resourceFieldRef", Atomic),
]);
const ENV_VAR: Ty = ty(&[("valueFrom", Struct(&ENV_VAR_SOURCE))]);
const CONTAINER: Ty = Ty {
    members: &[
        ("env", Keyed(&["name"], &Struct(&ENV_VAR))),
        (
            "ports",
            Keyed(&["containerPort", "protocol"], &Shape::Deduced),
        ),
        ("volumeMounts", Keyed(&["mountPath"], &Shape::Deduced)),
        ("volumeDevices", Keyed(&["devicePath"], &Shape::Deduced)),
        ("resources", Struct(&RESOURCE_REQUIREMENTS)),
    ],
    always: &[("resources", Zero::Object)],
};
const CONTAINERS: Shape = Keyed(&["name"], &Struct(&CONTAINER));

const SECRET_REF: Ty = ty(&[("secretRef", Atomic)]);
const PVC_SPEC: Ty = Ty {
    members: &[SELECTOR, ("dataSource", Atomic)],
    always: &[("resources", Zero::Object)],
};
const PVC_TEMPLATE: Ty = Ty {
    members: &[META, ("spec", Struct(&PVC_SPEC))],
    always: &[("metadata", Zero::Object), ("spec", Zero::Object)],
};
const EPHEMERAL_VOLUME: Ty = ty(&[("volumeClaimTemplate", Struct(&PVC_TEMPLATE))]);
const VOLUME: Ty = ty(&[
    (
        "csi",
        Struct(&ty(&[
            ("nodePublishSecretRef", Atomic),
            ("volumeAttributes", Map),
        ])),
    ),
    ("ephemeral", Struct(&EPHEMERAL_VOLUME)),
    ("cephfs", Struct(&SECRET_REF)),
    ("cinder", Struct(&SECRET_REF)),
    (
        "flexVolume",
        Struct(&ty(&[("secretRef", Atomic), ("options", Map)])),
    ),
    ("iscsi", Struct(&SECRET_REF)),
    ("rbd", Struct(&SECRET_REF)),
    ("scaleIO", Struct(&SECRET_REF)),
    ("storageos", Struct(&SECRET_REF)),
]);
const NODE_AFFINITY: Ty = ty(&[("requiredDuringSchedulingIgnoredDuringExecution", Atomic)]);
const AFFINITY: Ty = ty(&[("nodeAffinity", Struct(&NODE_AFFINITY))]);
const TOPOLOGY_SPREAD: Ty = ty(&[("labelSelector", Atomic)]);

const POD_SPEC: Ty = Ty {
    members: &[
        ("containers", CONTAINERS),
        ("initContainers", CONTAINERS),
        ("ephemeralContainers", CONTAINERS),
        ("volumes", Keyed(&["name"], &Struct(&VOLUME))),
        ("imagePullSecrets", Keyed(&["name"], &Atomic)),
        ("hostAliases", Keyed(&["ip"], &Shape::Deduced)),
        (
            "topologySpreadConstraints",
            Keyed(
                &["topologyKey", "whenUnsatisfiable"],
                &Struct(&TOPOLOGY_SPREAD),
            ),
        ),
        ("resourceClaims", Keyed(&["name"], &Shape::Deduced)),
        ("schedulingGates", Keyed(&["name"], &Shape::Deduced)),
        ("nodeSelector", AtomicMap),
        ("overhead", Map),
        ("affinity", Struct(&AFFINITY)),
    ],
    always: &[("containers", Zero::Null)],
};
const POD_STATUS: Ty = ty(&[
    CONDITIONS,
    ("podIPs", Keyed(&["ip"], &Shape::Deduced)),
    ("resourceClaimStatuses", Keyed(&["name"], &Shape::Deduced)),
]);
const POD_TEMPLATE_SPEC: Ty = Ty {
    members: &[META, ("spec", Struct(&POD_SPEC))],
    always: &[("metadata", Zero::Object), ("spec", Zero::Object)],
};
const TEMPLATE: (&str, Shape) = ("template", Struct(&POD_TEMPLATE_SPEC));

// --- kinds ---

const STATUS_WITH_CONDITIONS: Ty = ty(&[CONDITIONS]);
const SPEC_STATUS_ALWAYS: &[(&str, Zero)] = &[
    ("metadata", Zero::Object),
    ("spec", Zero::Object),
    ("status", Zero::Object),
];

const POD: Ty = Ty {
    members: &[
        META,
        ("spec", Struct(&POD_SPEC)),
        ("status", Struct(&POD_STATUS)),
    ],
    always: SPEC_STATUS_ALWAYS,
};

const DEPLOYMENT_SPEC: Ty = Ty {
    members: &[SELECTOR, TEMPLATE],
    always: &[("strategy", Zero::Object), ("template", Zero::Object)],
};
const DEPLOYMENT: Ty = Ty {
    members: &[
        META,
        ("spec", Struct(&DEPLOYMENT_SPEC)),
        ("status", Struct(&STATUS_WITH_CONDITIONS)),
    ],
    always: SPEC_STATUS_ALWAYS,
};
const REPLICA_SET_SPEC: Ty = Ty {
    members: &[SELECTOR, TEMPLATE],
    always: &[("template", Zero::Object)],
};
const REPLICA_SET: Ty = Ty {
    members: &[
        META,
        ("spec", Struct(&REPLICA_SET_SPEC)),
        ("status", Struct(&STATUS_WITH_CONDITIONS)),
    ],
    always: SPEC_STATUS_ALWAYS,
};
const UPDATE_STRATEGY_SPEC: Ty = Ty {
    members: &[SELECTOR, TEMPLATE, ("volumeClaimTemplates", Atomic)],
    always: &[("template", Zero::Object), ("updateStrategy", Zero::Object)],
};
const STATEFUL_SET: Ty = Ty {
    members: &[
        META,
        ("spec", Struct(&UPDATE_STRATEGY_SPEC)),
        ("status", Struct(&STATUS_WITH_CONDITIONS)),
    ],
    always: SPEC_STATUS_ALWAYS,
};
const DAEMON_SET: Ty = STATEFUL_SET;
const JOB_SPEC: Ty = Ty {
    members: &[SELECTOR, TEMPLATE],
    always: &[("template", Zero::Object)],
};
const JOB_STATUS: Ty = ty(&[(
    "uncountedTerminatedPods",
    Struct(&ty(&[("failed", Set), ("succeeded", Set)])),
)]);
const JOB: Ty = Ty {
    members: &[
        META,
        ("spec", Struct(&JOB_SPEC)),
        ("status", Struct(&JOB_STATUS)),
    ],
    always: SPEC_STATUS_ALWAYS,
};
const JOB_TEMPLATE: Ty = Ty {
    members: &[META, ("spec", Struct(&JOB_SPEC))],
    always: &[("metadata", Zero::Object), ("spec", Zero::Object)],
};
const CRON_JOB_SPEC: Ty = Ty {
    members: &[("jobTemplate", Struct(&JOB_TEMPLATE))],
    always: &[("jobTemplate", Zero::Object)],
};
const CRON_JOB: Ty = Ty {
    members: &[META, ("spec", Struct(&CRON_JOB_SPEC))],
    always: SPEC_STATUS_ALWAYS,
};

const SERVICE_SPEC: Ty = ty(&[
    ("ports", Keyed(&["port", "protocol"], &Shape::Deduced)),
    ("selector", AtomicMap),
]);
const SERVICE_STATUS: Ty = Ty {
    members: &[CONDITIONS],
    always: &[("loadBalancer", Zero::Object)],
};
const SERVICE: Ty = Ty {
    members: &[
        META,
        ("spec", Struct(&SERVICE_SPEC)),
        ("status", Struct(&SERVICE_STATUS)),
    ],
    always: SPEC_STATUS_ALWAYS,
};
const NODE_SPEC: Ty = ty(&[("podCIDRs", Set)]);
const NODE_STATUS: Ty = Ty {
    members: &[
        CONDITIONS,
        ("addresses", Keyed(&["type"], &Shape::Deduced)),
        ("capacity", Map),
        ("allocatable", Map),
    ],
    always: &[
        ("daemonEndpoints", Zero::Object),
        ("nodeInfo", Zero::Object),
    ],
};
const NODE: Ty = Ty {
    members: &[
        META,
        ("spec", Struct(&NODE_SPEC)),
        ("status", Struct(&NODE_STATUS)),
    ],
    always: SPEC_STATUS_ALWAYS,
};
const NAMESPACE: Ty = Ty {
    members: &[META, ("status", Struct(&STATUS_WITH_CONDITIONS))],
    always: SPEC_STATUS_ALWAYS,
};
const CORE_EVENT: Ty = Ty {
    members: &[META, ("involvedObject", Atomic), ("related", Atomic)],
    always: &[
        ("metadata", Zero::Object),
        ("involvedObject", Zero::Object),
        ("source", Zero::Object),
        ("firstTimestamp", Zero::Null),
        ("lastTimestamp", Zero::Null),
        ("eventTime", Zero::Null),
    ],
};
const EVENTS_V1_EVENT: Ty = Ty {
    members: &[META, ("regarding", Atomic), ("related", Atomic)],
    always: &[
        ("metadata", Zero::Object),
        ("eventTime", Zero::Null),
        ("regarding", Zero::Object),
        ("deprecatedSource", Zero::Object),
        ("deprecatedFirstTimestamp", Zero::Null),
        ("deprecatedLastTimestamp", Zero::Null),
    ],
};
const ENDPOINT_SLICE: Ty = Ty {
    members: &[META],
    always: &[
        ("metadata", Zero::Object),
        ("endpoints", Zero::Null),
        ("ports", Zero::Null),
    ],
};
const LEASE: Ty = Ty {
    members: &[META],
    always: &[("metadata", Zero::Object), ("spec", Zero::Object)],
};
const SERVICE_ACCOUNT: Ty = Ty {
    members: &[META, ("secrets", Keyed(&["name"], &Atomic))],
    always: &[("metadata", Zero::Object)],
};
const META_ONLY: Ty = Ty {
    members: &[META],
    always: &[("metadata", Zero::Object)],
};
const CONFIG_MAP: Ty = Ty {
    members: &[META, ("data", Map), ("binaryData", Map)],
    always: &[("metadata", Zero::Object)],
};
const SECRET: Ty = Ty {
    members: &[META, ("data", Map), ("stringData", Map)],
    always: &[("metadata", Zero::Object)],
};

/// Custom and unknown kinds: `metadata` as for every kind, the rest deduced.
const CUSTOM: Ty = ty(&[META]);

/// What is known of a whole object.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Root {
    pub(crate) shape: Shape,
    /// A built-in type, which kube-apiserver handles as a Go struct (so Go's encoding rules
    /// apply); custom kinds are handled as they were sent.
    pub(crate) builtin: bool,
}

/// What is known of an object of `kind` in `api_version`.
pub(crate) fn root(api_version: &str, kind: &str) -> Root {
    let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
    let ty: &'static Ty = match (group, kind) {
        ("", "Pod") => &POD,
        ("", "Service") => &SERVICE,
        ("", "Node") => &NODE,
        ("", "Namespace") => &NAMESPACE,
        ("", "Event") => &CORE_EVENT,
        ("", "ConfigMap") => &CONFIG_MAP,
        ("", "Secret") => &SECRET,
        ("", "Endpoints") => &META_ONLY,
        ("", "ServiceAccount") => &SERVICE_ACCOUNT,
        ("apps", "Deployment") => &DEPLOYMENT,
        ("apps", "ReplicaSet") => &REPLICA_SET,
        ("apps", "StatefulSet") => &STATEFUL_SET,
        ("apps", "DaemonSet") => &DAEMON_SET,
        ("batch", "Job") => &JOB,
        ("batch", "CronJob") => &CRON_JOB,
        ("events.k8s.io", "Event") => &EVENTS_V1_EVENT,
        ("discovery.k8s.io", "EndpointSlice") => &ENDPOINT_SLICE,
        ("coordination.k8s.io", "Lease") => &LEASE,
        _ => {
            return Root {
                shape: Struct(&CUSTOM),
                builtin: false,
            };
        }
    };
    Root {
        shape: Struct(ty),
        builtin: true,
    }
}
