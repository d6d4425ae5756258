use serde_json::json;

use super::*;

/// (definition, property, list type, list-map keys, patch strategy, merge key): the facts a
/// user notices in `kubectl apply` (which items merge) and in `kubectl explain`.
#[test]
fn property_facts_users_notice() {
    type Row = (
        &'static str,
        &'static str,
        Option<ListType>,
        &'static [&'static str],
        Option<PatchStrategy>,
        Option<&'static str>,
    );
    let table: &[Row] = &[
        (
            "io.k8s.api.core.v1.PodSpec",
            "containers",
            Some(ListType::Map),
            &["name"],
            Some(PatchStrategy::Merge),
            Some("name"),
        ),
        (
            "io.k8s.api.core.v1.Container",
            "ports",
            Some(ListType::Map),
            &["containerPort", "protocol"],
            Some(PatchStrategy::Merge),
            Some("containerPort"),
        ),
        (
            "io.k8s.api.core.v1.PodSpec",
            "tolerations",
            Some(ListType::Atomic),
            &[],
            None,
            None,
        ),
        (
            "io.k8s.api.core.v1.PodSpec",
            "volumes",
            Some(ListType::Map),
            &["name"],
            Some(PatchStrategy::MergeRetainKeys),
            Some("name"),
        ),
        (
            "io.k8s.api.core.v1.Container",
            "env",
            Some(ListType::Map),
            &["name"],
            Some(PatchStrategy::Merge),
            Some("name"),
        ),
        (
            "io.k8s.api.core.v1.Container",
            "args",
            Some(ListType::Atomic),
            &[],
            None,
            None,
        ),
        (
            "io.k8s.api.core.v1.ServiceSpec",
            "ports",
            Some(ListType::Map),
            &["port", "protocol"],
            Some(PatchStrategy::Merge),
            Some("port"),
        ),
        (
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
            "finalizers",
            Some(ListType::Set),
            &[],
            Some(PatchStrategy::Merge),
            None,
        ),
        (
            "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
            "ownerReferences",
            Some(ListType::Map),
            &["uid"],
            Some(PatchStrategy::Merge),
            Some("uid"),
        ),
        (
            "io.k8s.api.apps.v1.DeploymentStatus",
            "conditions",
            Some(ListType::Map),
            &["type"],
            Some(PatchStrategy::Merge),
            Some("type"),
        ),
        (
            "io.k8s.api.core.v1.NodeSpec",
            "taints",
            Some(ListType::Atomic),
            &[],
            None,
            None,
        ),
        (
            "io.k8s.api.rbac.v1.ClusterRole",
            "rules",
            Some(ListType::Atomic),
            &[],
            None,
            None,
        ),
        (
            "io.k8s.api.core.v1.PodSpec",
            "topologySpreadConstraints",
            Some(ListType::Map),
            &["topologyKey", "whenUnsatisfiable"],
            Some(PatchStrategy::Merge),
            Some("topologyKey"),
        ),
        // Types whose prost names differ (PodDnsConfig, IpBlock, JsonSchemaProps).
        (
            "io.k8s.api.core.v1.PodDNSConfig",
            "options",
            Some(ListType::Atomic),
            &[],
            None,
            None,
        ),
        (
            "io.k8s.api.networking.v1.IPBlock",
            "except",
            Some(ListType::Atomic),
            &[],
            None,
            None,
        ),
        (
            "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps",
            "x-kubernetes-validations",
            Some(ListType::Map),
            &["rule"],
            Some(PatchStrategy::Merge),
            Some("rule"),
        ),
    ];
    for (definition, prop, list_type, keys, strategy, merge_key) in table {
        let facts = property(definition, prop)
            .unwrap_or_else(|| panic!("no facts for {definition}.{prop}"));
        assert_eq!(facts.list_type, *list_type, "{definition}.{prop}");
        assert_eq!(facts.list_map_keys, *keys, "{definition}.{prop}");
        assert_eq!(facts.patch_strategy, *strategy, "{definition}.{prop}");
        assert_eq!(facts.patch_merge_key, *merge_key, "{definition}.{prop}");
    }
}

#[test]
fn scalars_and_unknown_names_have_no_facts() {
    assert_eq!(
        property("io.k8s.api.apps.v1.DeploymentSpec", "replicas"),
        None
    );
    assert_eq!(property("io.k8s.api.core.v1.PodSpec", "nope"), None);
    assert_eq!(property("example.com.v1.Widget", "containers"), None);
}

#[test]
fn map_types() {
    assert_eq!(
        property("io.k8s.api.core.v1.PodSpec", "nodeSelector").and_then(|f| f.map_type),
        Some(MapType::Atomic)
    );
    for atomic in [
        "io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector",
        "io.k8s.api.core.v1.ObjectReference",
        "io.k8s.api.core.v1.LocalObjectReference",
        "io.k8s.api.rbac.v1.RoleRef",
    ] {
        assert_eq!(struct_map_type(atomic), Some(MapType::Atomic), "{atomic}");
    }
    assert_eq!(struct_map_type("io.k8s.api.core.v1.PodSpec"), None);
}

#[test]
fn facts_are_sorted_for_lookup() {
    assert!(
        facts::PROPERTIES
            .windows(2)
            .all(|w| (w[0].0, w[0].1) < (w[1].0, w[1].1))
    );
    assert!(facts::STRUCTS.windows(2).all(|w| w[0].0 < w[1].0));
}

fn definition(name: &str) -> &'static serde_json::Value {
    builtin_definitions()
        .get(name)
        .unwrap_or_else(|| panic!("no definition {name}"))
}

#[test]
fn definitions_carry_facts_descriptions_and_gvks() {
    let pod_spec = definition("io.k8s.api.core.v1.PodSpec");
    let containers = &pod_spec["properties"]["containers"];
    assert_eq!(containers["x-kubernetes-list-type"], json!("map"));
    assert_eq!(containers["x-kubernetes-list-map-keys"], json!(["name"]));
    assert_eq!(containers["x-kubernetes-patch-strategy"], json!("merge"));
    assert_eq!(containers["x-kubernetes-patch-merge-key"], json!("name"));
    assert_eq!(
        containers["items"]["$ref"],
        json!("#/components/schemas/io.k8s.api.core.v1.Container")
    );

    let deployment = definition("io.k8s.api.apps.v1.Deployment");
    assert_eq!(
        deployment["x-kubernetes-group-version-kind"],
        json!([{"group": "apps", "version": "v1", "kind": "Deployment"}])
    );
    let replicas = &definition("io.k8s.api.apps.v1.DeploymentSpec")["properties"]["replicas"];
    assert_eq!(replicas["type"], json!("integer"));
    assert!(
        replicas["description"]
            .as_str()
            .is_some_and(|d| d.starts_with("Number of desired pods.")),
        "{replicas}"
    );
    // A $ref with a description is wrapped in allOf, as kube-apiserver's v3 documents do.
    let selector = &definition("io.k8s.api.apps.v1.DeploymentSpec")["properties"]["selector"];
    assert_eq!(
        selector["allOf"],
        json!([{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"}])
    );
    assert_eq!(
        definition("io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector")["x-kubernetes-map-type"],
        json!("atomic")
    );
    let pod = definition("io.k8s.api.core.v1.Pod");
    assert_eq!(
        pod["x-kubernetes-group-version-kind"],
        json!([{"group": "", "version": "v1", "kind": "Pod"}])
    );
    let list = definition("io.k8s.api.core.v1.PodList");
    assert_eq!(
        list["x-kubernetes-group-version-kind"][0]["kind"],
        json!("PodList")
    );
    let int_or_string = definition("io.k8s.apimachinery.pkg.util.intstr.IntOrString");
    assert_eq!(int_or_string["format"], json!("int-or-string"));
    assert_eq!(
        int_or_string["oneOf"],
        json!([{"type": "integer"}, {"type": "string"}])
    );
    assert_eq!(
        to_v2(int_or_string),
        json!({
            "description": int_or_string["description"],
            "format": "int-or-string",
            "type": "string",
        })
    );
    let quantity = to_v2(definition("io.k8s.apimachinery.pkg.api.resource.Quantity"));
    assert_eq!(quantity["type"], json!("string"));
    assert!(quantity.get("oneOf").is_none(), "{quantity}");
}

#[test]
fn every_reference_resolves() {
    fn walk(value: &serde_json::Value, missing: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                if let Some(target) = map.get("$ref").and_then(|r| r.as_str()) {
                    let name = target.trim_start_matches(V3_REF_PREFIX);
                    if !builtin_definitions().contains_key(name) {
                        missing.push(target.to_owned());
                    }
                }
                map.values().for_each(|v| walk(v, missing));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, missing)),
            _ => {}
        }
    }
    let mut missing = Vec::new();
    builtin_definitions()
        .values()
        .for_each(|d| walk(d, &mut missing));
    assert_eq!(missing, Vec::<String>::new());
}

#[test]
fn v2_form_uses_definitions_refs_with_siblings() {
    let spec = to_v2(definition("io.k8s.api.apps.v1.DeploymentSpec"));
    let selector = &spec["properties"]["selector"];
    assert_eq!(
        selector["$ref"],
        json!("#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector")
    );
    assert!(selector.get("allOf").is_none());
    assert!(selector["description"].is_string());
}
