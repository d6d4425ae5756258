//! What structured-merge-diff needs to know about a kind, read from its OpenAPI schema the way
//! kube-openapi's `schemaconv` reads it (`pkg/schemaconv/openapi.go`, `smd.go`): which lists
//! are keyed (`x-kubernetes-list-type: map` with `x-kubernetes-list-map-keys`), which are sets
//! (`set`), which are atomic (`atomic`, or no list type), which structs and maps are atomic
//! (`x-kubernetes-map-type: atomic`) and which objects are granular maps
//! (`additionalProperties`). `$ref`s and single-item `allOf`s are followed to their
//! definitions; an extension written next to a `$ref` wins over the definition's own.
//!
//! Built-in kinds are compiled once from [`crate::schema::builtin_definitions`]; a custom
//! resource's `openAPIV3Schema` is compiled by [`Schema::custom`] (once per CRD version, by the
//! caller), with `metadata` as the built-in `ObjectMeta`, as kube-apiserver types it.
//! `x-kubernetes-preserve-unknown-fields` without properties and `x-kubernetes-embedded-resource`
//! objects' unknown members are deduced from the JSON (objects granular, lists atomic), as
//! structured-merge-diff deduces untyped values; `x-kubernetes-int-or-string` is a scalar.
//!
//! What the documents do not say (the members Go always writes, the `protocol` key default)
//! is in `go_zero.rs`.

use std::collections::HashMap;
use std::sync::LazyLock;

use serde_json::{Map, Value};

use super::go_zero;
use crate::schema::{V3_REF_PREFIX, builtin_definitions, builtin_kinds};

/// The value Go writes for an unset member that is never omitted.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Zero {
    /// A non-pointer struct: `{}`.
    Object,
    /// A `metav1.Time` or a list without `omitempty`: `null`.
    Null,
}

type NodeId = u32;

/// Node 0 of every schema: a value deduced from its JSON.
const DEDUCED: NodeId = 0;
/// Node 1 of every schema: a value owned as one leaf.
const ATOMIC: NodeId = 1;

/// How a value takes part in field ownership.
#[derive(Debug)]
pub(crate) enum Node {
    /// Deduced from the JSON: an object is a granular map of deduced members, a list is atomic.
    Deduced,
    /// Owned as one leaf, whatever it holds.
    Atomic,
    /// A granular struct: its known members (sorted by name; others are deduced) and the
    /// members Go always writes.
    Struct {
        members: Vec<(String, NodeId)>,
        always: Vec<(&'static str, Zero)>,
    },
    /// A granular map whose every key is a member; `go` when it is a Go map, which Go leaves
    /// out when empty.
    Map { element: NodeId, go: bool },
    /// A Go map owned as one leaf (`+mapType=atomic`), left out by Go when empty.
    AtomicMap,
    /// A list of scalars whose items are owned one by one (`v:<value>`).
    Set,
    /// A list of objects owned item by item, keyed by these fields (`k:{...}`), each with the
    /// value it takes when an item leaves it out.
    Keyed {
        keys: Vec<(String, Option<Value>)>,
        item: NodeId,
    },
}

/// The compiled schema of one or more kinds: nodes that refer to each other by index, so that
/// recursive definitions (`JSONSchemaProps`) compile to a finite graph.
#[derive(Debug)]
pub struct Schema {
    nodes: Vec<Node>,
    /// The root of the (first) kind this schema was compiled for.
    root: NodeId,
    /// The roots of the built-in kinds, by group and kind.
    kinds: HashMap<(String, String), NodeId>,
}

/// The schema of one kind's objects, as `managed_fields` walks them: a built-in kind's
/// ([`SchemaRef::builtin`]), a custom resource's ([`Schema::root`] of a [`Schema::custom`]),
/// or, for a kind without a schema, typed `metadata` and the rest deduced
/// ([`SchemaRef::deduced`]).
#[derive(Debug, Clone, Copy)]
pub struct SchemaRef<'a> {
    pub(crate) shape: Shape<'a>,
    /// A built-in type, which kube-apiserver handles as a Go struct (so Go's encoding rules
    /// apply); custom kinds are handled as they were sent.
    pub(crate) builtin: bool,
}

/// A node of a schema: the shape of one value.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape<'a> {
    schema: &'a Schema,
    id: NodeId,
}

/// The built-in kinds, compiled on first use.
static BUILTIN: LazyLock<Schema> = LazyLock::new(Schema::builtin);

/// Definitions nest at most this deep through inline schemas (references are memoized).
const MAX_DEPTH: usize = 64;

const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

impl Schema {
    fn empty() -> Self {
        Self {
            nodes: vec![Node::Deduced, Node::Atomic],
            root: DEDUCED,
            kinds: HashMap::new(),
        }
    }

    fn builtin() -> Self {
        let mut compiler = Compiler {
            schema: Self::empty(),
            definitions: HashMap::new(),
            go: true,
        };
        for kind in builtin_kinds() {
            let id = compiler.definition(&kind.definition);
            compiler
                .schema
                .kinds
                .insert((kind.group.to_owned(), kind.kind.to_owned()), id);
        }
        // A kind without a schema: `metadata` typed, the rest deduced.
        let meta = compiler.definition(OBJECT_META);
        compiler.schema.root = compiler.push(Node::Struct {
            members: vec![("metadata".to_owned(), meta)],
            always: Vec::new(),
        });
        compiler.schema
    }

    /// Compiles a custom resource version's `openAPIV3Schema`. Its `metadata` is the built-in
    /// `ObjectMeta` whatever the schema says of it.
    pub fn custom(openapi_v3_schema: &Value) -> Self {
        let mut compiler = Compiler {
            schema: Self::empty(),
            definitions: HashMap::new(),
            go: false,
        };
        let root = compiler.compile(openapi_v3_schema, 0);
        // kube-apiserver decodes a custom resource's metadata into the Go `ObjectMeta`.
        compiler.go = true;
        let meta = compiler.definition(OBJECT_META);
        let root = match std::mem::replace(compiler.node_mut(root), Node::Deduced) {
            Node::Struct {
                mut members,
                always,
            } => {
                members.retain(|(name, _)| name != "metadata");
                members.push(("metadata".to_owned(), meta));
                members.sort_by(|a, b| a.0.cmp(&b.0));
                *compiler.node_mut(root) = Node::Struct { members, always };
                root
            }
            other => {
                *compiler.node_mut(root) = other;
                compiler.push(Node::Struct {
                    members: vec![("metadata".to_owned(), meta)],
                    always: Vec::new(),
                })
            }
        };
        compiler.schema.root = root;
        compiler.schema
    }

    /// The kind this schema was compiled for.
    pub fn root(&self) -> SchemaRef<'_> {
        SchemaRef {
            shape: Shape {
                schema: self,
                id: self.root,
            },
            builtin: false,
        }
    }
}

impl SchemaRef<'static> {
    /// The schema of built-in kind `kind` of API group `group` ("" for the core group), if
    /// keelson has one.
    pub fn builtin(group: &str, kind: &str) -> Option<Self> {
        let schema = &*BUILTIN;
        let id = *schema.kinds.get(&(group.to_owned(), kind.to_owned()))?;
        Some(Self {
            shape: Shape { schema, id },
            builtin: true,
        })
    }

    /// The schema of a kind keelson has none for: `metadata` typed, the rest deduced.
    pub fn deduced() -> Self {
        BUILTIN.root()
    }

    /// The built-in schema of `kind` in `api_version` (`apps/v1`), else [`Self::deduced`].
    pub fn of(api_version: &str, kind: &str) -> Self {
        let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
        Self::builtin(group, kind).unwrap_or_else(Self::deduced)
    }
}

impl<'a> Shape<'a> {
    pub(crate) fn node(self) -> &'a Node {
        self.schema
            .nodes
            .get(self.id as usize)
            .unwrap_or(&Node::Deduced)
    }

    fn at(self, id: NodeId) -> Self {
        Self {
            schema: self.schema,
            id,
        }
    }

    /// The shape of member `name` of a value of this shape.
    pub(crate) fn member(self, name: &str) -> Self {
        match self.node() {
            Node::Struct { members, .. } => members
                .binary_search_by(|(n, _)| n.as_str().cmp(name))
                .ok()
                .and_then(|i| members.get(i))
                .map_or(self.at(DEDUCED), |(_, id)| self.at(*id)),
            Node::Map { element, .. } => self.at(*element),
            _ => self.at(DEDUCED),
        }
    }

    /// The shape of a scalar (a leaf), without looking it up.
    pub(crate) fn scalar(self) -> Self {
        self.at(ATOMIC)
    }

    /// The shape of the items of a list of this shape (a set's items are leaves).
    pub(crate) fn item(self) -> Self {
        match self.node() {
            Node::Keyed { item, .. } => self.at(*item),
            Node::Set => self.at(ATOMIC),
            _ => self.at(DEDUCED),
        }
    }

    /// Owned as one leaf.
    pub(crate) fn is_atomic(self) -> bool {
        matches!(self.node(), Node::Atomic | Node::AtomicMap)
    }

    /// A set or keyed list.
    pub(crate) fn is_list(self) -> bool {
        matches!(self.node(), Node::Set | Node::Keyed { .. })
    }

    /// Whether the members of a value of this shape are named struct fields (not a map's
    /// keys, which are members themselves).
    pub(crate) fn named_members(self) -> bool {
        !matches!(self.node(), Node::Map { .. } | Node::AtomicMap)
    }

    /// A Go map, which Go leaves out when empty.
    pub(crate) fn omitted_when_empty(self) -> bool {
        matches!(self.node(), Node::Map { go: true, .. } | Node::AtomicMap)
    }

    /// The keys of a keyed list, with their defaults.
    pub(crate) fn keys(self) -> Option<&'a [(String, Option<Value>)]> {
        match self.node() {
            Node::Keyed { keys, .. } => Some(keys),
            _ => None,
        }
    }

    /// The members Go always writes in a value of this shape.
    pub(crate) fn always(self) -> &'a [(&'static str, Zero)] {
        match self.node() {
            Node::Struct { always, .. } => always,
            _ => &[],
        }
    }
}

struct Compiler {
    schema: Schema,
    /// Definitions compiled so far (or being compiled), by name.
    definitions: HashMap<String, NodeId>,
    /// Built-in types: Go's encoding rules and the hand facts of `go_zero.rs` apply.
    go: bool,
}

/// The definition a schema refers to: its own `$ref`, or that of its single `allOf` item.
fn reference(schema: &Map<String, Value>) -> Option<&str> {
    let target = match schema
        .get("allOf")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
    {
        Some([single]) => single.get("$ref"),
        _ => schema.get("$ref"),
    };
    target?.as_str()?.strip_prefix(V3_REF_PREFIX)
}

/// Extensions that change a referenced definition's shape when written next to the `$ref`.
const SHAPE_EXTENSIONS: [&str; 3] = [
    "x-kubernetes-map-type",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
];

impl Compiler {
    fn push(&mut self, node: Node) -> NodeId {
        let id = NodeId::try_from(self.schema.nodes.len()).unwrap_or(DEDUCED);
        self.schema.nodes.push(node);
        id
    }

    fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.schema.nodes[id as usize]
    }

    /// The node of a named definition, compiled once.
    fn definition(&mut self, name: &str) -> NodeId {
        if let Some(id) = self.definitions.get(name) {
            return *id;
        }
        let Some(body) = builtin_definitions().get(name) else {
            return DEDUCED;
        };
        let id = self.push(Node::Deduced);
        self.definitions.insert(name.to_owned(), id);
        let node = self.node_of(body, None, Some(name), 0);
        *self.node_mut(id) = node;
        id
    }

    /// The node of a property (or items, or additionalProperties) schema.
    fn compile(&mut self, schema: &Value, depth: usize) -> NodeId {
        let Some(map) = schema.as_object() else {
            return DEDUCED;
        };
        if let Some(name) = reference(map) {
            if !SHAPE_EXTENSIONS.iter().any(|e| map.contains_key(*e)) {
                return self.definition(name);
            }
            let name = name.to_owned();
            let Some(body) = builtin_definitions().get(&name) else {
                return DEDUCED;
            };
            let node = self.node_of(body, Some(map), Some(&name), depth);
            return self.push(node);
        }
        if depth > MAX_DEPTH {
            return DEDUCED;
        }
        let node = self.node_of(schema, None, None, depth);
        match node {
            Node::Deduced => DEDUCED,
            Node::Atomic => ATOMIC,
            node => self.push(node),
        }
    }

    /// The node of schema `body`, with the extensions of `outer` (the schema that referred to
    /// it) winning; `definition` names it when it is one.
    fn node_of(
        &mut self,
        body: &Value,
        outer: Option<&Map<String, Value>>,
        definition: Option<&str>,
        depth: usize,
    ) -> Node {
        let Some(body) = body.as_object() else {
            return Node::Deduced;
        };
        let ext = |name: &str| outer.and_then(|o| o.get(name)).or_else(|| body.get(name));
        let flag = |name: &str| ext(name).and_then(Value::as_bool).unwrap_or(false);
        if flag("x-kubernetes-int-or-string") {
            return Node::Atomic;
        }
        let ty = body.get("type").and_then(Value::as_str);
        if ty == Some("array") || body.contains_key("items") {
            return match ext("x-kubernetes-list-type").and_then(Value::as_str) {
                Some("map") => self.keyed(body, ext("x-kubernetes-list-map-keys"), depth),
                Some("set") => Node::Set,
                _ => Node::Atomic,
            };
        }
        let properties = body
            .get("properties")
            .and_then(Value::as_object)
            .filter(|p| !p.is_empty());
        let additional = body
            .get("additionalProperties")
            .filter(|a| a.is_object() || *a == &Value::Bool(true));
        if ty == Some("object") || properties.is_some() || additional.is_some() {
            let atomic = ext("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic");
            if atomic {
                return if properties.is_none() && additional.is_some() && self.go {
                    Node::AtomicMap
                } else {
                    Node::Atomic
                };
            }
            if let Some(properties) = properties {
                let mut members: Vec<(String, NodeId)> = properties
                    .iter()
                    .map(|(name, schema)| (name.clone(), self.compile(schema, depth + 1)))
                    .collect();
                members.sort_by(|a, b| a.0.cmp(&b.0));
                let always = match definition {
                    Some(name) if self.go => {
                        go_zero::always(name, body.contains_key("x-kubernetes-group-version-kind"))
                    }
                    _ => Vec::new(),
                };
                return Node::Struct { members, always };
            }
            if let Some(additional) = additional {
                let element = self.compile(additional, depth + 1);
                return Node::Map {
                    element,
                    go: self.go,
                };
            }
            return Node::Deduced;
        }
        match ty {
            Some("string" | "integer" | "number" | "boolean") => Node::Atomic,
            _ => Node::Deduced,
        }
    }

    /// A `map` list: its keys, with the defaults its item schema gives them.
    fn keyed(&mut self, body: &Map<String, Value>, keys: Option<&Value>, depth: usize) -> Node {
        let items = body.get("items").unwrap_or(&Value::Null);
        let item = self.compile(items, depth + 1);
        // The item's own schema, for the keys' defaults.
        let item_body = items
            .as_object()
            .and_then(reference)
            .and_then(|name| builtin_definitions().get(name))
            .unwrap_or(items);
        let keys = keys
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|key| {
                let stated = item_body
                    .pointer(&format!("/properties/{key}/default"))
                    .cloned();
                let default = stated.or_else(|| {
                    self.go
                        .then(|| go_zero::key_default(key).map(Value::from))
                        .flatten()
                });
                (key.to_owned(), default)
            })
            .collect();
        Node::Keyed { keys, item }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{Node, Schema, SchemaRef};

    #[test]
    fn builtin_shapes_come_from_the_facts() {
        let deployment = SchemaRef::builtin("apps", "Deployment")
            .expect("Deployment has a schema")
            .shape;
        let pod_spec = deployment.member("spec").member("template").member("spec");
        let containers = pod_spec.member("containers");
        let keys: Vec<&str> = containers
            .keys()
            .expect("containers are keyed")
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(keys, ["name"]);
        let ports = containers.item().member("ports");
        let port_keys: Vec<(&str, Option<&serde_json::Value>)> = ports
            .keys()
            .expect("ports are keyed")
            .iter()
            .map(|(k, d)| (k.as_str(), d.as_ref()))
            .collect();
        assert_eq!(
            port_keys,
            [("containerPort", None), ("protocol", Some(&json!("TCP")))]
        );
        assert!(matches!(
            pod_spec.member("nodeSelector").node(),
            Node::AtomicMap
        ));
        assert!(deployment.member("spec").member("selector").is_atomic());
        assert!(matches!(
            deployment.member("metadata").member("finalizers").node(),
            Node::Set
        ));
        assert!(matches!(
            deployment.member("metadata").member("labels").node(),
            Node::Map { go: true, .. }
        ));
        assert_eq!(
            deployment
                .always()
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>(),
            ["metadata", "spec", "status"]
        );
    }

    #[test]
    fn custom_schemas_read_the_kubernetes_extensions() {
        let schema = Schema::custom(&json!({
            "type": "object",
            "properties": {
                "metadata": {"type": "object"},
                "spec": {
                    "type": "object",
                    "properties": {
                        "items": {
                            "type": "array",
                            "x-kubernetes-list-type": "map",
                            "x-kubernetes-list-map-keys": ["name", "port"],
                            "items": {
                                "type": "object",
                                "properties": {
                                    "name": {"type": "string"},
                                    "port": {"type": "integer", "default": 80},
                                    "value": {"type": "string"},
                                },
                            },
                        },
                        "tags": {"type": "array", "x-kubernetes-list-type": "set",
                                 "items": {"type": "string"}},
                        "plain": {"type": "array", "items": {"type": "string"}},
                        "labels": {"type": "object", "x-kubernetes-map-type": "atomic",
                                   "additionalProperties": {"type": "string"}},
                        "extra": {"type": "object", "additionalProperties": {"type": "string"}},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                        "size": {"x-kubernetes-int-or-string": true},
                    },
                },
            },
        }));
        let root = schema.root();
        assert!(!root.builtin);
        let spec = root.shape.member("spec");
        let items = spec.member("items");
        let keys: Vec<(&str, Option<&serde_json::Value>)> = items
            .keys()
            .expect("items are keyed")
            .iter()
            .map(|(k, d)| (k.as_str(), d.as_ref()))
            .collect();
        assert_eq!(keys, [("name", None), ("port", Some(&json!(80)))]);
        assert!(matches!(spec.member("tags").node(), Node::Set));
        assert!(matches!(spec.member("plain").node(), Node::Atomic));
        assert!(matches!(spec.member("labels").node(), Node::Atomic));
        assert!(matches!(
            spec.member("extra").node(),
            Node::Map { go: false, .. }
        ));
        assert!(matches!(spec.member("free").node(), Node::Deduced));
        assert!(matches!(spec.member("size").node(), Node::Atomic));
        // metadata is ObjectMeta whatever the CRD says.
        assert!(matches!(
            root.shape.member("metadata").member("finalizers").node(),
            Node::Set
        ));
    }

    /// What the hand-written table of built-in shapes said before the facts replaced it: each
    /// path (`[]` steps into list items) with the shape it must still have.
    #[test]
    fn the_facts_cover_the_former_hand_table() {
        use super::Shape;
        fn at(kind: (&str, &str), path: &str) -> Shape<'static> {
            let mut shape = SchemaRef::builtin(kind.0, kind.1)
                .unwrap_or_else(|| panic!("{kind:?} has a schema"))
                .shape;
            for step in path.split('.') {
                shape = if step == "[]" {
                    shape.item()
                } else {
                    shape.member(step)
                };
            }
            shape
        }
        fn describe(shape: Shape<'_>) -> String {
            match shape.node() {
                Node::Deduced => "deduced".into(),
                Node::Atomic => "atomic".into(),
                Node::Struct { .. } => "struct".into(),
                Node::Map { .. } => "map".into(),
                Node::AtomicMap => "atomic map".into(),
                Node::Set => "set".into(),
                Node::Keyed { keys, .. } => {
                    let keys: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
                    format!("keyed by {}", keys.join(","))
                }
            }
        }
        let pod = ("", "Pod");
        let cases = [
            (pod, "metadata.finalizers", "set"),
            (pod, "metadata.ownerReferences", "keyed by uid"),
            (pod, "metadata.ownerReferences.[]", "atomic"),
            (pod, "metadata.managedFields", "atomic"),
            (pod, "metadata.annotations", "map"),
            (pod, "spec.containers.[].env", "keyed by name"),
            (
                pod,
                "spec.containers.[].env.[].valueFrom.configMapKeyRef",
                "atomic",
            ),
            (
                pod,
                "spec.containers.[].env.[].valueFrom.fieldRef",
                "atomic",
            ),
            (
                pod,
                "spec.containers.[].ports",
                "keyed by containerPort,protocol",
            ),
            (pod, "spec.containers.[].volumeMounts", "keyed by mountPath"),
            (
                pod,
                "spec.containers.[].volumeDevices",
                "keyed by devicePath",
            ),
            (pod, "spec.containers.[].resources.claims", "keyed by name"),
            (pod, "spec.containers.[].resources.limits", "map"),
            (pod, "spec.initContainers", "keyed by name"),
            (pod, "spec.ephemeralContainers", "keyed by name"),
            (pod, "spec.volumes", "keyed by name"),
            (pod, "spec.volumes.[].csi.volumeAttributes", "map"),
            (pod, "spec.volumes.[].csi.nodePublishSecretRef", "atomic"),
            (pod, "spec.volumes.[].flexVolume.options", "map"),
            (pod, "spec.volumes.[].cephfs.secretRef", "atomic"),
            (
                pod,
                "spec.volumes.[].ephemeral.volumeClaimTemplate.spec.selector",
                "atomic",
            ),
            (
                pod,
                "spec.volumes.[].ephemeral.volumeClaimTemplate.spec.dataSource",
                "atomic",
            ),
            (pod, "spec.imagePullSecrets", "keyed by name"),
            (pod, "spec.imagePullSecrets.[]", "atomic"),
            (pod, "spec.hostAliases", "keyed by ip"),
            (
                pod,
                "spec.topologySpreadConstraints",
                "keyed by topologyKey,whenUnsatisfiable",
            ),
            (
                pod,
                "spec.topologySpreadConstraints.[].labelSelector",
                "atomic",
            ),
            (pod, "spec.resourceClaims", "keyed by name"),
            (pod, "spec.schedulingGates", "keyed by name"),
            (pod, "spec.nodeSelector", "atomic map"),
            (pod, "spec.overhead", "map"),
            (
                pod,
                "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution",
                "atomic",
            ),
            (pod, "status.conditions", "keyed by type"),
            (pod, "status.podIPs", "keyed by ip"),
            (("apps", "Deployment"), "spec.selector", "atomic"),
            (
                ("apps", "StatefulSet"),
                "spec.volumeClaimTemplates",
                "atomic",
            ),
            (
                ("batch", "Job"),
                "status.uncountedTerminatedPods.failed",
                "set",
            ),
            (
                ("batch", "CronJob"),
                "spec.jobTemplate.spec.template.spec.containers",
                "keyed by name",
            ),
            (("", "Service"), "spec.ports", "keyed by port,protocol"),
            (("", "Service"), "spec.selector", "atomic map"),
            (("", "Node"), "spec.podCIDRs", "set"),
            (("", "Node"), "status.addresses", "keyed by type"),
            (("", "Node"), "status.capacity", "map"),
            (("", "Event"), "involvedObject", "atomic"),
            (("events.k8s.io", "Event"), "regarding", "atomic"),
            (("", "ServiceAccount"), "secrets", "keyed by name"),
            (("", "ConfigMap"), "binaryData", "map"),
            (("", "Secret"), "stringData", "map"),
        ];
        for (kind, path, want) in cases {
            assert_eq!(describe(at(kind, path)), want, "{kind:?} {path}");
        }
    }
}
