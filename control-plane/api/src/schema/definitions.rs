//! The OpenAPI definitions of the built-in kinds: k8s-openapi's schemas with the facts written
//! in.

use std::{collections::BTreeMap, sync::LazyLock};

use k8s_openapi::{
    api::{
        admissionregistration::v1 as admission, apps::v1 as apps, authentication::v1 as authn,
        autoscaling::v1 as autoscaling_v1, autoscaling::v2 as autoscaling, batch::v1 as batch,
        certificates::v1 as certificates, coordination::v1 as coordination, core::v1 as core,
        discovery::v1 as discovery, events::v1 as events, flowcontrol::v1 as flowcontrol,
        networking::v1 as networking, node::v1 as node, policy::v1 as policy, rbac::v1 as rbac,
        scheduling::v1 as scheduling, storage::v1 as storage,
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions,
    apimachinery::pkg::apis::meta::v1 as meta,
    kube_aggregator::pkg::apis::apiregistration::v1 as apiregistration,
    schemars::{JsonSchema, SchemaGenerator, generate::SchemaSettings},
};
use serde_json::{Map, Value, json};

use super::{property, reference, struct_map_type};

/// Where OpenAPI v3 documents keep their schemas (`$ref` prefix).
pub const V3_REF_PREFIX: &str = "#/components/schemas/";
/// Where OpenAPI v2 documents keep their schemas (`$ref` prefix).
pub const V2_REF_PREFIX: &str = "#/definitions/";

/// A built-in kind whose schema [`builtin_definitions`] holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltinKind {
    /// API group, "" for the core group.
    pub group: &'static str,
    /// API version.
    pub version: &'static str,
    /// Kind, e.g. `Deployment`.
    pub kind: &'static str,
    /// Its definition name, e.g. `io.k8s.api.apps.v1.Deployment`.
    pub definition: String,
    /// Its list's definition name (`io.k8s.api.apps.v1.DeploymentList`), for kinds that are
    /// listed (not for subresource kinds such as `Scale` or `Eviction`).
    pub list_definition: Option<String>,
}

/// The definition name of `kind`'s list, next to the kind's own definition.
pub fn list_definition(definition: &str) -> String {
    format!("{definition}List")
}

/// A top-level kind (listed, with a GVK).
fn kind<T: k8s_openapi::Resource + JsonSchema>(generator: &mut SchemaGenerator) -> BuiltinKind {
    generator.subschema_for::<T>();
    let definition = T::schema_name().into_owned();
    BuiltinKind {
        group: T::GROUP,
        version: T::VERSION,
        kind: T::KIND,
        list_definition: Some(list_definition(&definition)),
        definition,
    }
}

/// A kind only sent to or returned by a subresource (`Scale`, `Binding`, `Eviction`).
fn sub_kind<T: k8s_openapi::Resource + JsonSchema>(generator: &mut SchemaGenerator) -> BuiltinKind {
    BuiltinKind {
        list_definition: None,
        ..kind::<T>(generator)
    }
}

/// Every built-in kind with a schema, each adding its definitions to the generator.
static ROOTS: &[fn(&mut SchemaGenerator) -> BuiltinKind] = &[
    kind::<core::Namespace>,
    kind::<core::Pod>,
    kind::<core::Service>,
    kind::<core::Endpoints>,
    kind::<core::Node>,
    kind::<core::Event>,
    kind::<core::ConfigMap>,
    kind::<core::Secret>,
    kind::<core::ServiceAccount>,
    kind::<core::ReplicationController>,
    kind::<core::PersistentVolume>,
    kind::<core::PersistentVolumeClaim>,
    kind::<core::PodTemplate>,
    kind::<core::LimitRange>,
    kind::<core::ResourceQuota>,
    sub_kind::<core::Binding>,
    sub_kind::<authn::TokenRequest>,
    sub_kind::<policy::Eviction>,
    sub_kind::<autoscaling_v1::Scale>,
    kind::<apiregistration::APIService>,
    kind::<apiextensions::CustomResourceDefinition>,
    kind::<apps::ControllerRevision>,
    kind::<apps::DaemonSet>,
    kind::<apps::Deployment>,
    kind::<apps::ReplicaSet>,
    kind::<apps::StatefulSet>,
    kind::<events::Event>,
    kind::<autoscaling::HorizontalPodAutoscaler>,
    kind::<autoscaling_v1::HorizontalPodAutoscaler>,
    kind::<batch::CronJob>,
    kind::<batch::Job>,
    kind::<certificates::CertificateSigningRequest>,
    kind::<networking::IngressClass>,
    kind::<networking::Ingress>,
    kind::<networking::IPAddress>,
    kind::<networking::NetworkPolicy>,
    kind::<networking::ServiceCIDR>,
    kind::<policy::PodDisruptionBudget>,
    kind::<rbac::ClusterRoleBinding>,
    kind::<rbac::ClusterRole>,
    kind::<rbac::RoleBinding>,
    kind::<rbac::Role>,
    kind::<storage::CSIDriver>,
    kind::<storage::CSINode>,
    kind::<storage::CSIStorageCapacity>,
    kind::<storage::StorageClass>,
    kind::<storage::VolumeAttachment>,
    kind::<admission::MutatingWebhookConfiguration>,
    kind::<admission::ValidatingAdmissionPolicy>,
    kind::<admission::ValidatingAdmissionPolicyBinding>,
    kind::<admission::ValidatingWebhookConfiguration>,
    kind::<scheduling::PriorityClass>,
    kind::<coordination::Lease>,
    kind::<node::RuntimeClass>,
    kind::<discovery::EndpointSlice>,
    kind::<flowcontrol::FlowSchema>,
    kind::<flowcontrol::PriorityLevelConfiguration>,
];

struct Built {
    kinds: Vec<BuiltinKind>,
    definitions: BTreeMap<String, Value>,
}

static BUILT: LazyLock<Built> = LazyLock::new(build);

fn build() -> Built {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let kinds: Vec<BuiltinKind> = ROOTS.iter().map(|root| root(&mut generator)).collect();
    // Schemas every document refers to besides the kinds'.
    generator.subschema_for::<meta::Status>();
    generator.subschema_for::<meta::DeleteOptions>();
    generator.subschema_for::<meta::APIResourceList>();
    let mut definitions: BTreeMap<String, Value> =
        generator.take_definitions(true).into_iter().collect();
    for kind in &kinds {
        let gvk = json!([{ "group": kind.group, "version": kind.version, "kind": kind.kind }]);
        if let Some(Value::Object(schema)) = definitions.get_mut(&kind.definition) {
            schema.insert("x-kubernetes-group-version-kind".to_owned(), gvk);
        }
        if let Some(list) = &kind.list_definition {
            definitions.insert(
                list.clone(),
                list_schema(kind.group, kind.version, kind.kind, &kind.definition),
            );
        }
    }
    // The two types of either kind, as kube-apiserver's v3 documents write them (`oneOf` of
    // the JSON types; [`to_v2`] makes them `type: string` again).
    if let Some(Value::Object(int_or_string)) =
        definitions.get_mut("io.k8s.apimachinery.pkg.util.intstr.IntOrString")
    {
        int_or_string.remove("x-kubernetes-int-or-string");
        int_or_string.insert("format".to_owned(), json!("int-or-string"));
        int_or_string.insert(
            "oneOf".to_owned(),
            json!([{ "type": "integer" }, { "type": "string" }]),
        );
    }
    if let Some(Value::Object(quantity)) =
        definitions.get_mut("io.k8s.apimachinery.pkg.api.resource.Quantity")
    {
        quantity.remove("x-kubernetes-int-or-string");
        quantity.insert(
            "oneOf".to_owned(),
            json!([{ "type": "string" }, { "type": "number" }]),
        );
    }
    annotate(&mut definitions);
    Built { kinds, definitions }
}

/// The schema of a kind's list (`DeploymentList`): its items, list metadata and GVK.
fn list_schema(group: &str, version: &str, kind: &str, definition: &str) -> Value {
    let item = reference(V3_REF_PREFIX, definition);
    json!({
        "description": format!("{kind}List is a list of {kind} objects."),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {
                "description": "APIVersion defines the versioned schema of this representation of an object.",
                "type": "string",
            },
            "items": {
                "description": format!("The {kind} objects."),
                "type": "array",
                "items": item,
            },
            "kind": {
                "description": "Kind is a string value representing the REST resource this object represents.",
                "type": "string",
            },
            "metadata": {
                "description": "Standard list metadata.",
                "allOf": [reference(V3_REF_PREFIX, "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta")],
            },
        },
        "x-kubernetes-group-version-kind": [{
            "group": group,
            "version": version,
            "kind": format!("{kind}List"),
        }],
    })
}

/// The built-in kinds with a schema in [`builtin_definitions`] (every served kind, the
/// subresource kinds, and CustomResourceDefinition).
pub fn builtin_kinds() -> &'static [BuiltinKind] {
    &BUILT.kinds
}

/// Every definition of the built-in kinds in OpenAPI v3 form (`$ref`s to
/// `#/components/schemas/`, a `$ref` with a description wrapped in `allOf`), facts and GVKs
/// included. Built once.
pub fn builtin_definitions() -> &'static BTreeMap<String, Value> {
    &BUILT.definitions
}

/// Writes the facts of [`property`] and [`struct_map_type`] into `definitions` as
/// `x-kubernetes-*` extensions (definitions without facts, such as a CRD's, are left alone).
pub fn annotate(definitions: &mut BTreeMap<String, Value>) {
    for (name, schema) in definitions.iter_mut() {
        let Value::Object(schema) = schema else {
            continue;
        };
        if let Some(map_type) = struct_map_type(name) {
            schema.insert("x-kubernetes-map-type".to_owned(), json!(map_type.as_str()));
        }
        let Some(Value::Object(properties)) = schema.get_mut("properties") else {
            continue;
        };
        for (prop, prop_schema) in properties.iter_mut() {
            let (Some(facts), Value::Object(prop_schema)) = (property(name, prop), prop_schema)
            else {
                continue;
            };
            let mut put = |key: &str, value: Value| {
                prop_schema.insert(key.to_owned(), value);
            };
            if let Some(list_type) = facts.list_type {
                put("x-kubernetes-list-type", json!(list_type.as_str()));
            }
            if !facts.list_map_keys.is_empty() {
                put("x-kubernetes-list-map-keys", json!(facts.list_map_keys));
            }
            if let Some(map_type) = facts.map_type {
                put("x-kubernetes-map-type", json!(map_type.as_str()));
            }
            if let Some(strategy) = facts.patch_strategy {
                put("x-kubernetes-patch-strategy", json!(strategy.as_str()));
            }
            if let Some(key) = facts.patch_merge_key {
                put("x-kubernetes-patch-merge-key", json!(key));
            }
        }
    }
}

/// One schema in OpenAPI v2 form: `$ref`s point into `#/definitions/`, a single-`$ref`
/// `allOf` becomes the `$ref` itself with its siblings kept (as kube-apiserver's swagger
/// writes `"$ref"` next to `"description"`), and a `oneOf` of scalar types that includes
/// `string` (IntOrString, Quantity) becomes `type: string`, which v2 has instead.
pub fn to_v2(schema: &Value) -> Value {
    match schema {
        Value::Object(object) => {
            let mut out = Map::new();
            for (key, value) in object {
                if key == "allOf"
                    && let Some([single]) = value.as_array().map(Vec::as_slice)
                    && let Some(target) = single.get("$ref").and_then(Value::as_str)
                {
                    out.insert("$ref".to_owned(), json!(v2_ref(target)));
                } else if key == "$ref" {
                    out.insert(key.clone(), json!(value.as_str().map(v2_ref)));
                } else if key == "oneOf"
                    && let Some(types) = scalar_types(value)
                {
                    if types.contains(&"string") && !object.contains_key("type") {
                        out.insert("type".to_owned(), json!("string"));
                    }
                } else if key == "nullable" {
                    // Not a v2 keyword.
                } else {
                    out.insert(key.clone(), to_v2(value));
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(to_v2).collect()),
        other => other.clone(),
    }
}

/// The types of a `oneOf` whose every branch is only a `type`.
fn scalar_types(one_of: &Value) -> Option<Vec<&str>> {
    one_of
        .as_array()?
        .iter()
        .map(|branch| {
            let branch = branch.as_object()?;
            (branch.len() == 1).then_some(())?;
            branch.get("type")?.as_str()
        })
        .collect()
}

fn v2_ref(target: &str) -> String {
    match target.strip_prefix(V3_REF_PREFIX) {
        Some(name) => format!("{V2_REF_PREFIX}{name}"),
        None => target.to_owned(),
    }
}
