//! What each node may reach: Kubernetes' node authorizer graph
//! (`plugin/pkg/auth/authorizer/node/graph.go`), kept as indexes instead of a general graph.
//!
//! Edges, all pointing toward a node:
//! - pod -> node (`spec.nodeName`);
//! - secret, configmap, pvc, serviceaccount, resourceclaim -> pod (the names its spec refers
//!   to, in the pod's namespace; a mirror pod gets no such edges);
//! - pv -> pvc (its `spec.claimRef`), secret -> pv (the secrets the kubelet uses to mount it).
//!
//! Cost: a pod change touches only that pod's references (O(references)), a PV change only
//! that PV; [`Graph::is_related`] is a few hash lookups (a secret also follows the PVs that
//! name it). Pods change constantly, so nothing is ever rebuilt as a whole except when the
//! watch that feeds the graph is lost and the pods are listed again
//! ([`Graph::replace_pods`]).

use std::collections::{BTreeSet, HashMap};

use serde_json::Value;

/// Kubernetes' annotation on pods a kubelet mirrors from its static manifests.
const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// The kinds of object a node's access is decided on through the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `pods`.
    Pod,
    /// `secrets`.
    Secret,
    /// `configmaps`.
    ConfigMap,
    /// `persistentvolumeclaims`.
    PersistentVolumeClaim,
    /// `persistentvolumes` (cluster-scoped: the namespace is `""`).
    PersistentVolume,
    /// `serviceaccounts` (for their `token` subresource).
    ServiceAccount,
    /// `resourceclaims` (resource.k8s.io).
    ResourceClaim,
}

/// A namespace and a name.
type Key = (String, String);

fn key(namespace: &str, name: &str) -> Key {
    (namespace.to_owned(), name.to_owned())
}

/// What a bound pod refers to: the edges [`Graph::set_pod`] adds for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodRefs {
    /// The node it is bound to.
    pub node: String,
    /// Its service account, if named.
    pub service_account: Option<String>,
    /// Secrets: volumes (secret, projected, and the volume plugins' secret references),
    /// container environment, image pull secrets.
    pub secrets: BTreeSet<String>,
    /// ConfigMaps: volumes (configMap, projected) and container environment.
    pub config_maps: BTreeSet<String>,
    /// PersistentVolumeClaims: `persistentVolumeClaim` volumes and the claims of `ephemeral`
    /// volumes (`<pod>-<volume>`).
    pub claims: BTreeSet<String>,
    /// ResourceClaims: named directly, or created from a template (as the pod's status says).
    pub resource_claims: BTreeSet<String>,
}

/// Strings at `pointer` under `value`.
fn text<'a>(value: &'a Value, pointer: &str) -> Option<&'a str> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// The items of the array at `pointer` (none when absent).
fn items<'a>(value: &'a Value, pointer: &str) -> impl Iterator<Item = &'a Value> {
    value
        .pointer(pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// The secret names a pod volume's plugin refers to (kube's `VisitPodSecretNames`).
const VOLUME_SECRETS: &[&str] = &[
    "/secret/secretName",
    "/azureFile/secretName",
    "/cephfs/secretRef/name",
    "/cinder/secretRef/name",
    "/flexVolume/secretRef/name",
    "/iscsi/secretRef/name",
    "/rbd/secretRef/name",
    "/scaleIO/secretRef/name",
    "/storageos/secretRef/name",
    "/csi/nodePublishSecretRef/name",
];

impl PodRefs {
    /// The references of `pod` (JSON as stored), or `None` while it is not bound to a node.
    pub fn of(pod: &Value) -> Option<Self> {
        let node = text(pod, "/spec/nodeName")?.to_owned();
        let mut refs = Self {
            node,
            ..Self::default()
        };
        let mirror = pod
            .pointer("/metadata/annotations")
            .and_then(Value::as_object)
            .is_some_and(|a| a.contains_key(MIRROR_POD_ANNOTATION));
        if mirror {
            // A node must not be able to make a pod that grants it access to anything.
            return Some(refs);
        }
        refs.service_account = text(pod, "/spec/serviceAccountName").map(str::to_owned);
        let mut secret = |name: Option<&str>| {
            if let Some(name) = name {
                refs.secrets.insert(name.to_owned());
            }
        };
        for pull in items(pod, "/spec/imagePullSecrets") {
            secret(text(pull, "/name"));
        }
        let containers = ["containers", "initContainers", "ephemeralContainers"]
            .into_iter()
            .flat_map(|list| items(pod, &format!("/spec/{list}")).collect::<Vec<_>>());
        for container in containers {
            for env in items(container, "/env") {
                secret(text(env, "/valueFrom/secretKeyRef/name"));
                if let Some(name) = text(env, "/valueFrom/configMapKeyRef/name") {
                    refs.config_maps.insert(name.to_owned());
                }
            }
            for from in items(container, "/envFrom") {
                secret(text(from, "/secretRef/name"));
                if let Some(name) = text(from, "/configMapRef/name") {
                    refs.config_maps.insert(name.to_owned());
                }
            }
        }
        let pod_name = text(pod, "/metadata/name").unwrap_or_default();
        for volume in items(pod, "/spec/volumes") {
            for pointer in VOLUME_SECRETS {
                secret(text(volume, pointer));
            }
            for source in items(volume, "/projected/sources") {
                secret(text(source, "/secret/name"));
                if let Some(name) = text(source, "/configMap/name") {
                    refs.config_maps.insert(name.to_owned());
                }
            }
            if let Some(name) = text(volume, "/configMap/name") {
                refs.config_maps.insert(name.to_owned());
            }
            if let Some(claim) = text(volume, "/persistentVolumeClaim/claimName") {
                refs.claims.insert(claim.to_owned());
            } else if volume.get("ephemeral").is_some_and(Value::is_object) {
                let volume_name = text(volume, "/name").unwrap_or_default();
                refs.claims.insert(format!("{pod_name}-{volume_name}"));
            }
        }
        for claim in items(pod, "/spec/resourceClaims") {
            if let Some(name) = text(claim, "/resourceClaimName") {
                refs.resource_claims.insert(name.to_owned());
            } else if text(claim, "/resourceClaimTemplateName").is_some() {
                // Generated from the template: its name is in the status once created.
                let entry = text(claim, "/name").unwrap_or_default();
                let generated = items(pod, "/status/resourceClaimStatuses")
                    .find(|s| text(s, "/name") == Some(entry))
                    .and_then(|s| text(s, "/resourceClaimName"));
                if let Some(name) = generated {
                    refs.resource_claims.insert(name.to_owned());
                }
            }
        }
        Some(refs)
    }

    /// Every (kind, name) edge into the pod.
    fn edges(&self) -> impl Iterator<Item = (Kind, &str)> {
        fn each(kind: Kind, set: &BTreeSet<String>) -> impl Iterator<Item = (Kind, &str)> {
            set.iter().map(move |n| (kind, n.as_str()))
        }
        self.service_account
            .iter()
            .map(|sa| (Kind::ServiceAccount, sa.as_str()))
            .chain(each(Kind::Secret, &self.secrets))
            .chain(each(Kind::ConfigMap, &self.config_maps))
            .chain(each(Kind::PersistentVolumeClaim, &self.claims))
            .chain(each(Kind::ResourceClaim, &self.resource_claims))
    }
}

/// What a PersistentVolume links: its claim and the secrets the kubelet needs to mount it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PvRefs {
    /// The claim it is bound to (namespace, name).
    pub claim: Option<(String, String)>,
    /// Secrets (namespace, name) the kubelet reads to mount it.
    pub secrets: BTreeSet<(String, String)>,
}

/// Secret references of a PV's volume plugins that the kubelet uses (kube's
/// `VisitPVSecretNames` with `kubeletVisible`): `SecretReference`s with an optional
/// namespace (the claim's namespace when absent).
const PV_SECRET_REFS: &[&str] = &[
    "/spec/cephfs/secretRef",
    "/spec/cinder/secretRef",
    "/spec/flexVolume/secretRef",
    "/spec/iscsi/secretRef",
    "/spec/rbd/secretRef",
    "/spec/scaleIO/secretRef",
    "/spec/storageos/secretRef",
    "/spec/csi/nodePublishSecretRef",
    "/spec/csi/nodeStageSecretRef",
    "/spec/csi/nodeExpandSecretRef",
];

impl PvRefs {
    /// The references of `pv` (JSON as stored); `None` when it has no claim (no edges: kube
    /// links a PV only once it is bound).
    pub fn of(pv: &Value) -> Option<Self> {
        let claim_ns = text(pv, "/spec/claimRef/namespace").unwrap_or_default();
        let claim = key(claim_ns, text(pv, "/spec/claimRef/name")?);
        let mut secrets = BTreeSet::new();
        for pointer in PV_SECRET_REFS {
            if let Some(reference) = pv.pointer(pointer)
                && let Some(name) = text(reference, "/name")
            {
                let namespace = text(reference, "/namespace").unwrap_or(claim_ns);
                secrets.insert(key(namespace, name));
            }
        }
        if let Some(name) = text(pv, "/spec/azureFile/secretName") {
            let namespace = text(pv, "/spec/azureFile/secretNamespace").unwrap_or(claim_ns);
            secrets.insert(key(namespace, name));
        }
        Some(Self {
            claim: Some(claim),
            secrets,
        })
    }
}

/// The graph: bound pods and bound PVs with reverse indexes (see the module documentation).
#[derive(Debug, Default)]
pub struct Graph {
    /// Bound pods by (namespace, name).
    pods: HashMap<Key, PodRefs>,
    /// For each referenced object: the nodes whose pods refer to it, with how many pods.
    referenced: HashMap<(Kind, Key), HashMap<String, usize>>,
    /// Bound PVs by name.
    pvs: HashMap<String, PvRefs>,
    /// The PVs bound to each claim.
    pvs_of_claim: HashMap<Key, BTreeSet<String>>,
    /// The PVs that name each secret.
    pvs_of_secret: HashMap<Key, BTreeSet<String>>,
}

impl Graph {
    /// Records pod `namespace/name` with `refs`, or removes it when `None` (deleted, or not
    /// bound). Unchanged references cost one comparison.
    pub fn set_pod(&mut self, namespace: &str, name: &str, refs: Option<PodRefs>) {
        let pod = key(namespace, name);
        if self.pods.get(&pod) == refs.as_ref() {
            return;
        }
        if let Some(old) = self.pods.remove(&pod) {
            for (kind, object) in old.edges() {
                let index = (kind, key(namespace, object));
                if let Some(nodes) = self.referenced.get_mut(&index) {
                    if let Some(count) = nodes.get_mut(&old.node) {
                        *count -= 1;
                        if *count == 0 {
                            nodes.remove(&old.node);
                        }
                    }
                    if nodes.is_empty() {
                        self.referenced.remove(&index);
                    }
                }
            }
        }
        if let Some(refs) = refs {
            for (kind, object) in refs.edges() {
                *self
                    .referenced
                    .entry((kind, key(namespace, object)))
                    .or_default()
                    .entry(refs.node.clone())
                    .or_default() += 1;
            }
            self.pods.insert(pod, refs);
        }
    }

    /// Replaces every pod (after listing them again).
    pub fn replace_pods(&mut self, pods: impl IntoIterator<Item = (String, String, PodRefs)>) {
        self.pods.clear();
        self.referenced.clear();
        for (namespace, name, refs) in pods {
            self.set_pod(&namespace, &name, Some(refs));
        }
    }

    /// Records PV `name` with `refs`, or removes it when `None`.
    pub fn set_pv(&mut self, name: &str, refs: Option<PvRefs>) {
        if self.pvs.get(name) == refs.as_ref() {
            return;
        }
        if let Some(old) = self.pvs.remove(name) {
            let unlink = |index: &mut HashMap<Key, BTreeSet<String>>, k: &Key| {
                if let Some(set) = index.get_mut(k) {
                    set.remove(name);
                    if set.is_empty() {
                        index.remove(k);
                    }
                }
            };
            if let Some(claim) = &old.claim {
                unlink(&mut self.pvs_of_claim, claim);
            }
            for secret in &old.secrets {
                unlink(&mut self.pvs_of_secret, secret);
            }
        }
        if let Some(refs) = refs {
            if let Some(claim) = &refs.claim {
                self.pvs_of_claim
                    .entry(claim.clone())
                    .or_default()
                    .insert(name.to_owned());
            }
            for secret in &refs.secrets {
                self.pvs_of_secret
                    .entry(secret.clone())
                    .or_default()
                    .insert(name.to_owned());
            }
            self.pvs.insert(name.to_owned(), refs);
        }
    }

    /// Replaces every PV (after listing them again).
    pub fn replace_pvs(&mut self, pvs: impl IntoIterator<Item = (String, PvRefs)>) {
        self.pvs.clear();
        self.pvs_of_claim.clear();
        self.pvs_of_secret.clear();
        for (name, refs) in pvs {
            self.set_pv(&name, Some(refs));
        }
    }

    fn referenced_from(&self, node: &str, kind: Kind, namespace: &str, name: &str) -> bool {
        self.referenced
            .get(&(kind, key(namespace, name)))
            .is_some_and(|nodes| nodes.contains_key(node))
    }

    /// Whether a path leads from the object to `node` (kube's `hasPathFrom`).
    pub fn is_related(&self, node: &str, kind: Kind, namespace: &str, name: &str) -> bool {
        match kind {
            Kind::Pod => self
                .pods
                .get(&key(namespace, name))
                .is_some_and(|p| p.node == node),
            Kind::PersistentVolume => self
                .pvs
                .get(name)
                .and_then(|pv| pv.claim.as_ref())
                .is_some_and(|(ns, claim)| {
                    self.referenced_from(node, Kind::PersistentVolumeClaim, ns, claim)
                }),
            Kind::Secret => {
                self.referenced_from(node, kind, namespace, name)
                    || self
                        .pvs_of_secret
                        .get(&key(namespace, name))
                        .into_iter()
                        .flatten()
                        .any(|pv| self.is_related(node, Kind::PersistentVolume, "", pv))
            }
            Kind::ConfigMap
            | Kind::PersistentVolumeClaim
            | Kind::ServiceAccount
            | Kind::ResourceClaim => self.referenced_from(node, kind, namespace, name),
        }
    }

    /// How many bound pods the graph holds.
    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(name: &str, node: &str, spec: Value) -> Value {
        let mut spec = spec;
        spec["nodeName"] = json!(node);
        json!({"metadata": {"name": name, "namespace": "default"}, "spec": spec})
    }

    fn add(graph: &mut Graph, pod: &Value) {
        let name = pod["metadata"]["name"].as_str().expect("name");
        graph.set_pod("default", name, PodRefs::of(pod));
    }

    /// A pod with a secret volume, an env secret, a projected configmap and secret, a PVC,
    /// an ephemeral volume, an image pull secret and a service account.
    fn web() -> Value {
        pod(
            "web",
            "n1",
            json!({
                "serviceAccountName": "web-sa",
                "imagePullSecrets": [{"name": "registry"}],
                "initContainers": [{"name": "init", "envFrom": [{"configMapRef": {"name": "init-env"}}]}],
                "containers": [{
                    "name": "c",
                    "env": [
                        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
                        {"name": "PLAIN", "value": "x"}
                    ],
                    "envFrom": [{"secretRef": {"name": "env-all"}}]
                }],
                "volumes": [
                    {"name": "tls", "secret": {"secretName": "tls"}},
                    {"name": "api", "projected": {"sources": [
                        {"serviceAccountToken": {"path": "token"}},
                        {"configMap": {"name": "kube-root-ca.crt"}},
                        {"secret": {"name": "projected-secret"}}
                    ]}},
                    {"name": "conf", "configMap": {"name": "nginx-conf"}},
                    {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                    {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {}}}},
                    {"name": "csi", "csi": {"driver": "d", "nodePublishSecretRef": {"name": "csi-creds"}}}
                ]
            }),
        )
    }

    #[test]
    fn a_bound_pod_links_what_it_refers_to() {
        let refs = PodRefs::of(&web()).expect("bound");
        let names = |set: &BTreeSet<String>| set.iter().cloned().collect::<Vec<_>>();
        assert_eq!(refs.node, "n1");
        assert_eq!(refs.service_account.as_deref(), Some("web-sa"));
        assert_eq!(
            names(&refs.secrets),
            [
                "csi-creds",
                "db",
                "env-all",
                "projected-secret",
                "registry",
                "tls"
            ]
        );
        assert_eq!(
            names(&refs.config_maps),
            ["init-env", "kube-root-ca.crt", "nginx-conf", "settings"]
        );
        assert_eq!(names(&refs.claims), ["data", "web-scratch"]);
        let unbound = json!({"metadata": {"name": "p"}, "spec": {"containers": []}});
        assert_eq!(PodRefs::of(&unbound), None, "no node, no edges");
    }

    #[test]
    fn edges_follow_pods_as_they_come_move_and_go() {
        let mut graph = Graph::default();
        add(&mut graph, &web());
        let cases = [
            (Kind::Secret, "default", "tls", true),
            (Kind::Secret, "default", "db", true),
            (Kind::Secret, "default", "registry", true),
            (Kind::Secret, "default", "other", false),
            (Kind::Secret, "kube-system", "tls", false),
            (Kind::ConfigMap, "default", "kube-root-ca.crt", true),
            (Kind::ConfigMap, "default", "settings", true),
            (Kind::PersistentVolumeClaim, "default", "web-scratch", true),
            (Kind::ServiceAccount, "default", "web-sa", true),
            (Kind::ServiceAccount, "default", "default", false),
            (Kind::Pod, "default", "web", true),
        ];
        for (kind, ns, name, expected) in cases {
            assert_eq!(
                graph.is_related("n1", kind, ns, name),
                expected,
                "n1 -> {kind:?} {ns}/{name}"
            );
            assert!(
                !graph.is_related("n2", kind, ns, name),
                "n2 -> {kind:?} {ns}/{name}"
            );
        }
        // A second pod on n2 shares the secret "db".
        let other = pod(
            "worker",
            "n2",
            json!({"containers": [{"name": "c", "envFrom": [{"secretRef": {"name": "db"}}]}]}),
        );
        add(&mut graph, &other);
        assert!(graph.is_related("n2", Kind::Secret, "default", "db"));
        assert!(!graph.is_related("n2", Kind::Secret, "default", "tls"));
        // web moves to n3 (deleted and recreated under the same name): n1 loses everything.
        let mut moved = web();
        moved["spec"]["nodeName"] = json!("n3");
        add(&mut graph, &moved);
        assert!(!graph.is_related("n1", Kind::Secret, "default", "tls"));
        assert!(!graph.is_related("n1", Kind::Pod, "default", "web"));
        assert!(graph.is_related("n3", Kind::Secret, "default", "tls"));
        // Deleting web leaves the secret n2's pod still uses.
        graph.set_pod("default", "web", None);
        assert!(!graph.is_related("n3", Kind::Secret, "default", "tls"));
        assert!(!graph.is_related("n3", Kind::Secret, "default", "db"));
        assert!(graph.is_related("n2", Kind::Secret, "default", "db"));
        graph.set_pod("default", "worker", None);
        assert!(!graph.is_related("n2", Kind::Secret, "default", "db"));
        assert_eq!(graph.pod_count(), 0);
        assert!(graph.referenced.is_empty(), "no edge is left behind");
    }

    #[test]
    fn a_mirror_pod_reaches_only_its_node() {
        let mut mirror = web();
        mirror["metadata"]["annotations"] = json!({MIRROR_POD_ANNOTATION: "hash"});
        let mut graph = Graph::default();
        add(&mut graph, &mirror);
        assert!(graph.is_related("n1", Kind::Pod, "default", "web"));
        assert!(!graph.is_related("n1", Kind::Secret, "default", "tls"));
        assert!(!graph.is_related("n1", Kind::ServiceAccount, "default", "web-sa"));
    }

    #[test]
    fn volumes_reach_their_secrets_through_claims() {
        let mut graph = Graph::default();
        add(&mut graph, &web());
        let pv = json!({
            "metadata": {"name": "pv-1"},
            "spec": {
                "claimRef": {"namespace": "default", "name": "data"},
                "csi": {
                    "driver": "d",
                    "nodeStageSecretRef": {"name": "stage", "namespace": "storage"},
                    "nodePublishSecretRef": {"name": "publish"},
                    "controllerPublishSecretRef": {"name": "controller", "namespace": "storage"}
                }
            }
        });
        graph.set_pv("pv-1", PvRefs::of(&pv));
        let cases = [
            (Kind::PersistentVolume, "", "pv-1", true),
            (Kind::Secret, "storage", "stage", true),
            (Kind::Secret, "default", "publish", true),
            (Kind::Secret, "storage", "controller", false),
            (Kind::PersistentVolumeClaim, "default", "data", true),
        ];
        for (kind, ns, name, expected) in cases {
            assert_eq!(
                graph.is_related("n1", kind, ns, name),
                expected,
                "{kind:?} {ns}/{name}"
            );
            assert!(!graph.is_related("n2", kind, ns, name));
        }
        // Unbound PV: no edges.
        let mut unbound = pv.clone();
        unbound["spec"]
            .as_object_mut()
            .expect("spec")
            .remove("claimRef");
        graph.set_pv("pv-1", PvRefs::of(&unbound));
        assert!(!graph.is_related("n1", Kind::PersistentVolume, "", "pv-1"));
        assert!(!graph.is_related("n1", Kind::Secret, "storage", "stage"));
        graph.replace_pvs([("pv-1".to_owned(), PvRefs::of(&pv).expect("bound"))]);
        assert!(graph.is_related("n1", Kind::Secret, "storage", "stage"));
        graph.replace_pods([]);
        assert!(!graph.is_related("n1", Kind::Secret, "storage", "stage"));
    }

    #[test]
    fn resource_claims_by_name_or_from_their_template() {
        let mut p = pod(
            "gpu",
            "n1",
            json!({"containers": [], "resourceClaims": [
                {"name": "a", "resourceClaimName": "shared"},
                {"name": "b", "resourceClaimTemplateName": "tpl"},
                {"name": "c", "resourceClaimTemplateName": "tpl"}
            ]}),
        );
        p["status"] =
            json!({"resourceClaimStatuses": [{"name": "b", "resourceClaimName": "gpu-b-x1"}]});
        let refs = PodRefs::of(&p).expect("bound");
        assert_eq!(
            refs.resource_claims.into_iter().collect::<Vec<_>>(),
            ["gpu-b-x1", "shared"],
            "c's claim is not created yet"
        );
    }
}
