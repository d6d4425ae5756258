//! The resource registry: one declarative entry per served kind ([`kinds::RESOURCES`]), which
//! routing, discovery (legacy and aggregated), validation, field selectors, Tables and the
//! store keys all read. Adding a kind is one entry here plus, where Kubernetes has them, its
//! defaults and validation in `keelson-api` and its printer in `printers`; never a
//! new handler.

use std::{
    collections::{HashMap, HashSet},
    sync::LazyLock,
};

use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

mod kinds;
pub mod typed;

pub use kinds::RESOURCES;
pub use typed::UnknownFields;

/// How the objects of a resource are kept in the store.
#[derive(Debug, Clone, Copy)]
pub struct Conversion {
    /// The stored (internal) form of a client's object.
    pub to_storage: fn(&Value) -> Value,
    /// The client's form of a stored object.
    pub from_storage: fn(&Value) -> Value,
    /// The group and version objects are stored in.
    pub stored_as: (&'static str, &'static str),
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
    /// Discovery categories (`all` for `kubectl get all`).
    pub categories: &'static [&'static str],
    /// Serves a `/status` subresource (and main updates keep the stored status).
    pub status: bool,
    /// Serves a `/scale` subresource (autoscaling/v1 Scale on `spec.replicas`).
    pub scale: bool,
    /// Objects carry a `spec` whose changes bump `metadata.generation`.
    pub has_spec: bool,
    /// Field-selector paths accepted besides `metadata.name` and `metadata.namespace`.
    pub field_selectors: &'static [&'static str],
    /// Decodes the object as its k8s-openapi type: the fields the type does not know, or the
    /// decoder's error (a value of the wrong JSON type, a missing required field).
    pub decode: fn(&Value) -> Result<UnknownFields, serde_json::Error>,
    /// Stored in another resource's form (events.k8s.io Events are core Events).
    pub conversion: Option<Conversion>,
    /// Subresources besides `status` and `scale` (`pods/log`, `namespaces/finalize`).
    pub extra_subresources: &'static [Subresource],
    /// The version objects are stored in, which `storageVersionHash` names (kube-apiserver
    /// 1.33 still stores some newly GA kinds in their beta version).
    pub storage_version: &'static str,
    /// Said in a `Warning:` header on every write: what keelson does not do with these
    /// objects yet.
    pub note: Option<&'static str>,
    /// A custom resource served from a CustomResourceDefinition (see `crate::crd`): its
    /// store keys carry the group, as kube-apiserver's do (a CRD's plural may be a built-in's),
    /// every version shares them, and `apiVersion` is rewritten between the stored and the
    /// served version (kube's `None` conversion).
    pub custom: bool,
}

/// The `all` category: what `kubectl get all` lists.
const ALL: &[&str] = &["all"];
/// The `api-extensions` category.
const API_EXTENSIONS: &[&str] = &["api-extensions"];

impl Resource {
    /// A namespaced resource with every verb, no subresources, no short names.
    const fn new(
        group: &'static str,
        kind: &'static str,
        plural: &'static str,
        singular: &'static str,
        decode: fn(&Value) -> Result<UnknownFields, serde_json::Error>,
    ) -> Self {
        Self {
            group,
            version: "v1",
            plural,
            singular,
            kind,
            namespaced: true,
            short_names: &[],
            categories: &[],
            status: false,
            scale: false,
            has_spec: false,
            field_selectors: &[],
            decode,
            conversion: None,
            extra_subresources: &[],
            storage_version: "v1",
            note: None,
            custom: false,
        }
    }

    const fn version(mut self, version: &'static str) -> Self {
        self.version = version;
        self.storage_version = version;
        self
    }

    const fn stored_as(mut self, version: &'static str) -> Self {
        self.storage_version = version;
        self
    }

    const fn cluster(mut self) -> Self {
        self.namespaced = false;
        self
    }

    const fn short(mut self, names: &'static [&'static str]) -> Self {
        self.short_names = names;
        self
    }

    const fn in_all(mut self) -> Self {
        self.categories = ALL;
        self
    }

    const fn api_extension(mut self) -> Self {
        self.categories = API_EXTENSIONS;
        self
    }

    /// Has a spec (generation) and a status subresource.
    const fn spec_status(mut self) -> Self {
        self.has_spec = true;
        self.status = true;
        self
    }

    const fn spec(mut self) -> Self {
        self.has_spec = true;
        self
    }

    const fn scale(mut self) -> Self {
        self.scale = true;
        self
    }

    const fn fields(mut self, fields: &'static [&'static str]) -> Self {
        self.field_selectors = fields;
        self
    }

    const fn subresources(mut self, subresources: &'static [Subresource]) -> Self {
        self.extra_subresources = subresources;
        self
    }

    const fn converted(mut self, conversion: Conversion) -> Self {
        self.conversion = Some(conversion);
        self
    }

    const fn note(mut self, note: &'static str) -> Self {
        self.note = Some(note);
        self
    }

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

    /// `Pod` or `Deployment.apps`: how Kubernetes names the kind in `Invalid` messages.
    pub fn qualified_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.to_owned()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    /// The store key prefix of every object of this resource, ending in `/`.
    pub fn prefix(&self) -> String {
        if self.custom {
            format!("/registry/{}/{}/", self.group, self.plural)
        } else {
            format!("/registry/{}/", self.plural)
        }
    }

    /// The store key prefix of the objects in `namespace` (or of all objects when `None` or
    /// cluster-scoped).
    pub fn collection_prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("{}{ns}/", self.prefix()),
            _ => self.prefix(),
        }
    }

    /// The store key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        format!("{}{name}", self.collection_prefix(namespace))
    }

    /// Discovery's `storageVersionHash`: kube-apiserver's `StorageVersionHash`, the first
    /// eight bytes of SHA-256 over `group/version/kind` of the stored version, in base64.
    pub fn storage_version_hash(&self) -> String {
        let (group, version, kind) = match self.conversion {
            // Stored in another version (events.k8s.io Events as core/v1 Events).
            Some(c) => (c.stored_as.0, c.stored_as.1, self.kind),
            None => (self.group, self.storage_version, self.kind),
        };
        let digest = Sha256::digest(format!("{group}/{version}/{kind}").as_bytes());
        base64::engine::general_purpose::STANDARD.encode(&digest[..8])
    }

    /// Whether `name` is a subresource this resource serves.
    pub fn serves_subresource(&self, name: &str) -> bool {
        match name {
            "status" => self.status,
            "scale" => self.scale,
            other => self.extra_subresources.iter().any(|s| s.name == other),
        }
    }

    /// The object as a client of this resource sees it.
    pub fn present(&self, stored: Value) -> Value {
        match self.conversion {
            Some(c) => (c.from_storage)(&stored),
            None if self.custom => with_api_version(stored, self.api_version()),
            None => stored,
        }
    }

    /// The object as it is stored.
    pub fn to_storage(&self, object: Value) -> Value {
        match self.conversion {
            Some(c) => (c.to_storage)(&object),
            None if self.custom => {
                with_api_version(object, format!("{}/{}", self.group, self.storage_version))
            }
            None => object,
        }
    }

    /// Whether stored objects differ from what clients see ([`Resource::present`] changes
    /// them), so they cannot be passed through as stored.
    pub fn converts(&self) -> bool {
        self.conversion.is_some() || self.custom
    }
}

/// `object` with `apiVersion` set to `api_version` (a custom resource's `None` conversion).
fn with_api_version(mut object: Value, api_version: String) -> Value {
    if let Some(root) = object.as_object_mut() {
        root.insert("apiVersion".into(), Value::String(api_version));
    }
    object
}

/// A subresource other than `status` and `scale`.
#[derive(Debug)]
pub struct Subresource {
    /// The path segment, e.g. `log`.
    pub name: &'static str,
    /// The kind it answers, e.g. `Pod` (in the resource's own group and version).
    pub kind: &'static str,
    /// Its verbs.
    pub verbs: &'static [&'static str],
}

/// The verbs of a proxy subresource (`pods/proxy`, `services/proxy`, `nodes/proxy`).
const PROXY_VERBS: &[&str] = &["create", "delete", "get", "patch", "update"];
/// The verbs of a streaming subresource (`pods/exec`, `pods/attach`, `pods/portforward`).
const STREAM_VERBS: &[&str] = &["create", "get"];

/// `pods/binding`, `pods/log`, `pods/eviction`, the streaming and proxy subresources relayed
/// to the node agent ([`crate::relay`]) and `pods/ephemeralcontainers`.
pub(super) const POD_SUBRESOURCES: &[Subresource] = &[
    Subresource {
        name: "attach",
        kind: "PodAttachOptions",
        verbs: STREAM_VERBS,
    },
    Subresource {
        name: "ephemeralcontainers",
        kind: "Pod",
        verbs: &["get", "patch", "update"],
    },
    Subresource {
        name: "exec",
        kind: "PodExecOptions",
        verbs: STREAM_VERBS,
    },
    Subresource {
        name: "portforward",
        kind: "PodPortForwardOptions",
        verbs: STREAM_VERBS,
    },
    Subresource {
        name: "proxy",
        kind: "PodProxyOptions",
        verbs: PROXY_VERBS,
    },
    Subresource {
        name: "binding",
        kind: "Binding",
        verbs: &["create"],
    },
    Subresource {
        name: "log",
        kind: "Pod",
        verbs: &["get"],
    },
    Subresource {
        name: "eviction",
        kind: "Eviction",
        verbs: &["create"],
    },
];

/// `services/proxy`.
pub(super) const SERVICE_SUBRESOURCES: &[Subresource] = &[Subresource {
    name: "proxy",
    kind: "ServiceProxyOptions",
    verbs: PROXY_VERBS,
}];

/// `nodes/proxy` (to the node's kubelet endpoint).
pub(super) const NODE_SUBRESOURCES: &[Subresource] = &[Subresource {
    name: "proxy",
    kind: "NodeProxyOptions",
    verbs: PROXY_VERBS,
}];

/// `namespaces/finalize` (the namespace controller's way to drop `spec.finalizers`).
pub(super) const NAMESPACE_SUBRESOURCES: &[Subresource] = &[Subresource {
    name: "finalize",
    kind: "Namespace",
    verbs: &["update"],
}];

/// `certificatesigningrequests/approval` (`kubectl certificate approve|deny`).
pub(super) const CSR_SUBRESOURCES: &[Subresource] = &[Subresource {
    name: "approval",
    kind: "CertificateSigningRequest",
    verbs: &["get", "patch", "update"],
}];

/// `serviceaccounts/token` (the TokenRequest API, `kubectl create token`).
pub(super) const SERVICE_ACCOUNT_SUBRESOURCES: &[Subresource] = &[Subresource {
    name: "token",
    kind: "TokenRequest",
    verbs: &["create"],
}];

/// The verbs of every served resource.
pub const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// The verbs of the `status` and `scale` subresources.
pub const SUBRESOURCE_VERBS: &[&str] = &["get", "patch", "update"];

/// The API groups besides the core group in kube-apiserver's discovery order, each with the
/// versions served (preferred first). Groups whose only resources are reviews are served by
/// `reviews`.
pub const GROUPS: &[(&str, &[&str])] = &[
    ("apiregistration.k8s.io", &["v1"]),
    ("apps", &["v1"]),
    ("events.k8s.io", &["v1"]),
    ("authentication.k8s.io", &["v1"]),
    ("authorization.k8s.io", &["v1"]),
    ("autoscaling", &["v2", "v1"]),
    ("batch", &["v1"]),
    ("certificates.k8s.io", &["v1"]),
    ("networking.k8s.io", &["v1"]),
    ("policy", &["v1"]),
    ("rbac.authorization.k8s.io", &["v1"]),
    ("storage.k8s.io", &["v1"]),
    ("admissionregistration.k8s.io", &["v1"]),
    ("apiextensions.k8s.io", &["v1"]),
    ("scheduling.k8s.io", &["v1"]),
    ("coordination.k8s.io", &["v1"]),
    ("node.k8s.io", &["v1"]),
    ("discovery.k8s.io", &["v1"]),
    ("flowcontrol.apiserver.k8s.io", &["v1"]),
];

/// The registry indexed by group, version and plural: every request looks its resource up,
/// often more than once.
static INDEX: LazyLock<HashMap<(&'static str, &'static str, &'static str), &'static Resource>> =
    LazyLock::new(|| {
        RESOURCES
            .iter()
            .map(|r| ((r.group, r.version, r.plural), r))
            .collect()
    });

/// The group versions served.
static GROUP_VERSIONS: LazyLock<HashSet<(&'static str, &'static str)>> =
    LazyLock::new(|| RESOURCES.iter().map(|r| (r.group, r.version)).collect());

/// The resource `plural` in `group`/`version`, if served.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    INDEX.get(&(group, version, plural)).copied()
}

/// The resources served in `group`/`version`, in discovery order.
pub fn in_group_version<'a>(
    group: &'a str,
    version: &'a str,
) -> impl Iterator<Item = &'static Resource> + 'a {
    RESOURCES
        .iter()
        .filter(move |r| r.group == group && r.version == version)
}

/// Whether `group`/`version` is served at all.
pub fn serves(group: &str, version: &str) -> bool {
    GROUP_VERSIONS.contains(&(group, version))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// kube-apiserver 1.33's `storageVersionHash` of every kind keelson serves.
    const KUBE_HASHES: &[(&str, &str)] = &[
        ("v1/configmaps", "qFsyl6wFWjQ="),
        ("v1/endpoints", "fWeeMqaN/OA="),
        ("v1/events", "r2yiGXH7wu8="),
        ("v1/limitranges", "EBKMFVe6cwo="),
        ("v1/namespaces", "Q3oi5N2YM8M="),
        ("v1/nodes", "XwShjMxG9Fs="),
        ("v1/persistentvolumeclaims", "QWTyNDq0dC4="),
        ("v1/persistentvolumes", "HN/zwEC+JgM="),
        ("v1/pods", "xPOwRZ+Yhw8="),
        ("v1/podtemplates", "LIXB2x4IFpk="),
        ("v1/replicationcontrollers", "Jond2If31h0="),
        ("v1/resourcequotas", "8uhSgffRX6w="),
        ("v1/secrets", "S6u1pOWzb84="),
        ("v1/serviceaccounts", "pbx9ZvyFpBE="),
        ("v1/services", "0/CO1lhkEBI="),
        ("autoscaling/v2/horizontalpodautoscalers", "qwQve8ut294="),
        ("autoscaling/v1/horizontalpodautoscalers", "qwQve8ut294="),
        ("batch/v1/jobs", "mudhfqk/qZY="),
        ("batch/v1/cronjobs", "sd5LIXh4Fjs="),
        (
            "certificates.k8s.io/v1/certificatesigningrequests",
            "95fRKMXA+00=",
        ),
        ("coordination.k8s.io/v1/leases", "gqkMMb/YqFM="),
        ("discovery.k8s.io/v1/endpointslices", "qgS0xkrxYAI="),
        ("networking.k8s.io/v1/networkpolicies", "YpfwF18m1G8="),
        ("networking.k8s.io/v1/ingresses", "39NQlfNR+bo="),
        ("networking.k8s.io/v1/ingressclasses", "l/iqIbDgFyQ="),
        ("networking.k8s.io/v1/ipaddresses", "O4H8VxQhW5Y="),
        ("networking.k8s.io/v1/servicecidrs", "8ufAXOnr3Yg="),
        ("node.k8s.io/v1/runtimeclasses", "WQTu1GL3T2Q="),
        ("policy/v1/poddisruptionbudgets", "EVWiDmWqyJw="),
        (
            "rbac.authorization.k8s.io/v1/clusterrolebindings",
            "48tpQ8gZHFc=",
        ),
        ("rbac.authorization.k8s.io/v1/clusterroles", "bYE5ZWDrJ44="),
        ("rbac.authorization.k8s.io/v1/rolebindings", "eGsCzGH6b1g="),
        ("rbac.authorization.k8s.io/v1/roles", "7FuwZcIIItM="),
        ("scheduling.k8s.io/v1/priorityclasses", "1QwjyaZjj3Y="),
        ("storage.k8s.io/v1/csidrivers", "hL6j/rwBV5w="),
        ("storage.k8s.io/v1/csinodes", "Pe62DkZtjuo="),
        ("storage.k8s.io/v1/storageclasses", "K+m6uJwbjGY="),
        ("storage.k8s.io/v1/csistoragecapacities", "xeVl+2Ly1kE="),
        ("storage.k8s.io/v1/volumeattachments", "tJx/ezt6UDU="),
        ("apps/v1/controllerrevisions", "85nkx63pcBU="),
        ("apps/v1/daemonsets", "dd7pWHUlMKQ="),
        ("apps/v1/deployments", "8aSe+NMegvE="),
        ("apps/v1/replicasets", "P1RzHs8/mWQ="),
        ("apps/v1/statefulsets", "H+vl74LkKdo="),
        (
            "admissionregistration.k8s.io/v1/mutatingwebhookconfigurations",
            "Sqi0GUgDaX0=",
        ),
        (
            "admissionregistration.k8s.io/v1/validatingwebhookconfigurations",
            "B0wHjQmsGNk=",
        ),
        (
            "admissionregistration.k8s.io/v1/validatingadmissionpolicies",
            "6OxvlMmQ6is=",
        ),
        (
            "admissionregistration.k8s.io/v1/validatingadmissionpolicybindings",
            "v9715VZqakg=",
        ),
        ("events.k8s.io/v1/events", "r2yiGXH7wu8="),
        (
            "apiextensions.k8s.io/v1/customresourcedefinitions",
            "jfWCUB31mvA=",
        ),
        (
            "flowcontrol.apiserver.k8s.io/v1/flowschemas",
            "GJVAJZSZBIw=",
        ),
        (
            "flowcontrol.apiserver.k8s.io/v1/prioritylevelconfigurations",
            "Kir5PVfvNeI=",
        ),
    ];

    #[test]
    fn storage_version_hashes_are_kube_apiservers() {
        let ours: Vec<(String, String)> = RESOURCES
            .iter()
            // kube-aggregator serves APIServices; the table is kube-apiserver's.
            .filter(|r| r.plural != "apiservices")
            .map(|r| {
                (
                    format!("{}/{}", r.api_version(), r.plural),
                    r.storage_version_hash(),
                )
            })
            .collect();
        for (gvr, hash) in &ours {
            let kube = KUBE_HASHES.iter().find(|(k, _)| k == gvr).map(|(_, h)| *h);
            assert_eq!(kube, Some(hash.as_str()), "{gvr}");
        }
        assert_eq!(ours.len(), KUBE_HASHES.len());
    }

    #[test]
    fn every_entry_is_unique_and_every_group_is_listed() {
        for (i, r) in RESOURCES.iter().enumerate() {
            assert!(
                RESOURCES[..i]
                    .iter()
                    .all(|o| (o.group, o.version, o.plural) != (r.group, r.version, r.plural)),
                "{} listed twice",
                r.qualified()
            );
            assert!(
                r.group.is_empty()
                    || GROUPS
                        .iter()
                        .any(|(g, versions)| *g == r.group && versions.contains(&r.version)),
                "{} has no group entry",
                r.qualified()
            );
            assert_eq!(r.singular, r.kind.to_ascii_lowercase(), "{}", r.qualified());
        }
    }
}
