//! The resources keelson serves: one static table that discovery, routing, validation and
//! field selectors all read.

use serde::de::DeserializeOwned;
use serde_json::Value;

use k8s_openapi::api::discovery::v1 as discovery;
use k8s_openapi::api::{apps::v1 as apps, coordination::v1 as coordination, core::v1 as core};

/// Which name rule a resource's objects follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// DNS-1123 subdomain (most resources).
    Subdomain,
    /// DNS-1123 label (namespaces, services).
    Label,
}

/// One served resource.
#[derive(Debug)]
pub struct Resource {
    /// API group, "" for the core group.
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// Plural name used in paths and keys, e.g. `deployments`.
    pub plural: &'static str,
    /// Singular name for discovery.
    pub singular: &'static str,
    /// Kind, e.g. `Deployment`.
    pub kind: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Short names for discovery (`kubectl get deploy`).
    pub short_names: &'static [&'static str],
    /// Serves a `/status` subresource (and main updates keep the stored status).
    pub status: bool,
    /// Serves a `/scale` subresource (autoscaling/v1 Scale on `spec.replicas`).
    pub scale: bool,
    /// Objects carry a `spec` whose changes bump `metadata.generation`.
    pub has_spec: bool,
    /// Field-selector paths accepted besides `metadata.name` and `metadata.namespace`.
    pub field_selectors: &'static [&'static str],
    /// Name rule.
    pub names: NameRule,
    /// Checks the object against the k8s-openapi type (the error is serde's message).
    pub validate: fn(&Value) -> Result<(), serde_json::Error>,
}

impl Resource {
    /// `v1` or `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `pods` or `deployments.apps`: how Kubernetes names the resource in messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The store key prefix of every object of this resource, ending in `/`.
    pub fn prefix(&self) -> String {
        format!("/registry/{}/", self.plural)
    }

    /// The store key prefix of the objects in `namespace` (or of all objects when `None` or
    /// cluster-scoped).
    pub fn collection_prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("/registry/{}/{ns}/", self.plural),
            _ => self.prefix(),
        }
    }

    /// The store key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.collection_prefix(namespace))
    }
}

fn check<T: DeserializeOwned>(value: &Value) -> Result<(), serde_json::Error> {
    T::deserialize(value).map(drop)
}

const POD_FIELDS: &[&str] = &[
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
];

const EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

/// Every served resource.
pub static RESOURCES: &[Resource] = &[
    Resource {
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        status: true,
        scale: false,
        has_spec: true,
        field_selectors: &["status.phase"],
        names: NameRule::Label,
        validate: check::<core::Namespace>,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        short_names: &["po"],
        status: true,
        scale: false,
        has_spec: true,
        field_selectors: POD_FIELDS,
        names: NameRule::Subdomain,
        validate: check::<core::Pod>,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "services",
        singular: "service",
        kind: "Service",
        namespaced: true,
        short_names: &["svc"],
        status: true,
        scale: false,
        has_spec: true,
        field_selectors: &["spec.clusterIP", "spec.type"],
        names: NameRule::Label,
        validate: check::<core::Service>,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "endpoints",
        singular: "endpoints",
        kind: "Endpoints",
        namespaced: true,
        short_names: &["ep"],
        status: false,
        scale: false,
        has_spec: false,
        field_selectors: &[],
        names: NameRule::Subdomain,
        validate: check::<core::Endpoints>,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "nodes",
        singular: "node",
        kind: "Node",
        namespaced: false,
        short_names: &["no"],
        status: true,
        scale: false,
        has_spec: true,
        field_selectors: &["spec.unschedulable"],
        names: NameRule::Subdomain,
        validate: check::<core::Node>,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        status: false,
        scale: false,
        has_spec: false,
        field_selectors: EVENT_FIELDS,
        names: NameRule::Subdomain,
        validate: check::<core::Event>,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        namespaced: true,
        short_names: &["cm"],
        status: false,
        scale: false,
        has_spec: false,
        field_selectors: &[],
        names: NameRule::Subdomain,
        validate: check::<core::ConfigMap>,
    },
    Resource {
        group: "",
        version: "v1",
        plural: "secrets",
        singular: "secret",
        kind: "Secret",
        namespaced: true,
        short_names: &[],
        status: false,
        scale: false,
        has_spec: false,
        field_selectors: &["type"],
        names: NameRule::Subdomain,
        validate: check::<core::Secret>,
    },
    Resource {
        group: "apps",
        version: "v1",
        plural: "deployments",
        singular: "deployment",
        kind: "Deployment",
        namespaced: true,
        short_names: &["deploy"],
        status: true,
        scale: true,
        has_spec: true,
        field_selectors: &[],
        names: NameRule::Subdomain,
        validate: check::<apps::Deployment>,
    },
    Resource {
        group: "apps",
        version: "v1",
        plural: "replicasets",
        singular: "replicaset",
        kind: "ReplicaSet",
        namespaced: true,
        short_names: &["rs"],
        status: true,
        scale: true,
        has_spec: true,
        field_selectors: &["status.replicas"],
        names: NameRule::Subdomain,
        validate: check::<apps::ReplicaSet>,
    },
    Resource {
        group: "discovery.k8s.io",
        version: "v1",
        plural: "endpointslices",
        singular: "endpointslice",
        kind: "EndpointSlice",
        namespaced: true,
        short_names: &[],
        status: false,
        scale: false,
        has_spec: false,
        field_selectors: &[],
        names: NameRule::Subdomain,
        validate: check::<discovery::EndpointSlice>,
    },
    Resource {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        singular: "lease",
        kind: "Lease",
        namespaced: true,
        short_names: &[],
        status: false,
        scale: false,
        has_spec: false,
        field_selectors: &[],
        names: NameRule::Subdomain,
        validate: check::<coordination::Lease>,
    },
];

/// The API groups besides the core group, each with its one version, in discovery order.
pub const GROUPS: &[(&str, &str)] = &[
    ("apps", "v1"),
    ("discovery.k8s.io", "v1"),
    ("coordination.k8s.io", "v1"),
    // Only SelfSubjectReview (`kubectl auth whoami`), served by `reviews`.
    ("authentication.k8s.io", "v1"),
];

/// The resource `plural` in `group`/`version`, if served.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Whether `group`/`version` is served at all.
pub fn serves(group: &str, version: &str) -> bool {
    RESOURCES
        .iter()
        .any(|r| r.group == group && r.version == version)
}
