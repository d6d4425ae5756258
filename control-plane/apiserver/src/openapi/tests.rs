use prost::Message as _;
use serde_json::{Value, json};

use super::*;

fn openapi() -> OpenApi {
    OpenApi::default()
}

fn v3(api: &OpenApi, group_version: &str) -> Value {
    api.v3_document(group_version)
        .unwrap_or_else(|| panic!("no v3 document for {group_version}"))
}

#[test]
fn v3_deployment_schema_has_list_map_keys_and_gvk() {
    let doc = v3(&openapi(), "apis/apps/v1");
    let schemas = &doc["components"]["schemas"];
    let containers = &schemas["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
    assert_eq!(containers["x-kubernetes-list-type"], "map");
    assert_eq!(containers["x-kubernetes-list-map-keys"], json!(["name"]));
    assert_eq!(
        schemas["io.k8s.api.apps.v1.Deployment"]["x-kubernetes-group-version-kind"],
        json!([{"group": "apps", "version": "v1", "kind": "Deployment"}])
    );
    // Only what apps/v1 reaches: no Pod kind, but the PodSpec its templates use.
    assert!(schemas.get("io.k8s.api.core.v1.Pod").is_none());
    assert!(
        schemas
            .get("io.k8s.apimachinery.pkg.apis.meta.v1.Status")
            .is_some()
    );
}

#[test]
fn v3_paths_have_actions_gvks_and_parameters() {
    let doc = v3(&openapi(), "apis/apps/v1");
    let item = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"];
    let patch = &item["patch"];
    assert_eq!(patch["operationId"], "patchAppsV1NamespacedDeployment");
    assert_eq!(patch["x-kubernetes-action"], "patch");
    assert_eq!(
        patch["x-kubernetes-group-version-kind"],
        json!({"group": "apps", "version": "v1", "kind": "Deployment"})
    );
    let names: Vec<&str> = patch["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["dryRun", "fieldManager", "fieldValidation", "force"]
    );
    assert!(
        patch["requestBody"]["content"]
            .get("application/apply-patch+yaml")
            .is_some()
    );
    let list = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments"]["get"];
    assert_eq!(list["x-kubernetes-action"], "list");
    assert!(
        list["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .any(|p| p["name"] == "watch")
    );
    assert_eq!(
        list["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/io.k8s.api.apps.v1.DeploymentList"
    );
    let scale = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"];
    assert_eq!(
        scale["put"]["x-kubernetes-group-version-kind"]["kind"],
        "Scale"
    );
    assert_eq!(
        doc["paths"]["/apis/apps/v1/deployments"]["get"]["operationId"],
        "listAppsV1DeploymentForAllNamespaces"
    );
    assert_eq!(
        doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments"]["delete"]["operationId"],
        "deleteAppsV1CollectionNamespacedDeployment"
    );
    assert_eq!(
        scale["put"]["requestBody"]["content"]["*/*"]["schema"]["$ref"],
        "#/components/schemas/io.k8s.api.autoscaling.v1.Scale"
    );
    let create = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments"]["post"];
    assert_eq!(
        create["requestBody"]["content"]["*/*"]["schema"]["$ref"],
        "#/components/schemas/io.k8s.api.apps.v1.Deployment"
    );
    assert!(
        create["parameters"]
            .as_array()
            .expect("parameters")
            .iter()
            .any(|p| p["name"] == "dryRun")
    );
}

#[test]
fn core_group_lives_under_api_v1_and_cluster_kinds_have_no_namespace() {
    let api = openapi();
    let core = v3(&api, "api/v1");
    assert!(
        core["paths"]
            .get("/api/v1/namespaces/{namespace}/pods/{name}")
            .is_some()
    );
    assert_eq!(
        core["paths"]["/api/v1/nodes/{name}"]["get"]["operationId"],
        "readCoreV1Node"
    );
    let binding = &core["paths"]["/api/v1/namespaces/{namespace}/pods/{name}/binding"]["post"];
    assert_eq!(binding["operationId"], "createCoreV1NamespacedPodBinding");
    assert_eq!(
        binding["requestBody"]["content"]["*/*"]["schema"]["$ref"],
        "#/components/schemas/io.k8s.api.core.v1.Binding"
    );
    let finalize = &core["paths"]["/api/v1/namespaces/{name}/finalize"];
    assert_eq!(
        finalize["put"]["operationId"],
        "replaceCoreV1NamespaceFinalize"
    );
    assert!(finalize.get("get").is_none(), "{finalize}");
    let rbac = v3(&api, "apis/rbac.authorization.k8s.io/v1");
    assert!(
        rbac["paths"]
            .get("/apis/rbac.authorization.k8s.io/v1/clusterroles/{name}")
            .is_some()
    );
}

#[test]
fn every_served_kind_is_described() {
    let kinds = builtin_served_kinds();
    assert_eq!(
        kinds.len(),
        registry::RESOURCES.len(),
        "a served kind has no schema"
    );
    let api = openapi();
    for kind in kinds {
        let doc = v3(&api, &kind.group_version_path());
        assert!(
            doc["components"]["schemas"].get(&kind.definition).is_some(),
            "{} has no schema in its document",
            kind.definition
        );
    }
}

#[test]
fn index_names_each_document_with_its_hash() {
    let api = openapi();
    let documents = api.documents();
    let index: Value = serde_json::from_slice(&documents.index.bytes).expect("index JSON");
    let apps = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
        .as_str()
        .expect("apps/v1 entry");
    let hash = &documents.v3["apis/apps/v1"].hash;
    assert_eq!(apps, format!("/openapi/v3/apis/apps/v1?hash={hash}"));
    assert_eq!(hash.len(), 128, "SHA-512 in upper-case hex");
    assert!(
        hash.chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase())
    );
    assert!(index["paths"].get("api/v1").is_some());
}

#[test]
fn custom_kinds_join_and_leave_the_documents() {
    let api = openapi();
    assert!(api.v3_document("apis/stable.example.com/v1").is_none());
    let served = ServedKind::custom(
        "stable.example.com",
        "v1",
        "CronTab",
        "crontabs",
        true,
        true,
        false,
    );
    assert_eq!(served.definition, "com.example.stable.v1.CronTab");
    api.set_custom(vec![CustomKind {
        served,
        schema: json!({
            "type": "object",
            "properties": {"spec": {"type": "object", "properties": {
                "cronSpec": {"type": "string", "description": "When to run."}
            }}},
        }),
    }]);
    let doc = v3(&api, "apis/stable.example.com/v1");
    let crontab = &doc["components"]["schemas"]["com.example.stable.v1.CronTab"];
    assert_eq!(
        crontab["properties"]["spec"]["properties"]["cronSpec"]["type"],
        "string"
    );
    assert_eq!(
        crontab["x-kubernetes-group-version-kind"],
        json!([{"group": "stable.example.com", "version": "v1", "kind": "CronTab"}])
    );
    assert!(
        doc["components"]["schemas"]
            .get("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
            .is_some()
    );
    assert!(
        doc["paths"]
            .get("/apis/stable.example.com/v1/namespaces/{namespace}/crontabs/{name}/status")
            .is_some()
    );
    assert!(
        api.v2_document()["definitions"]
            .get("com.example.stable.v1.CronTab")
            .is_some()
    );
    api.set_custom(Vec::new());
    assert!(api.v3_document("apis/stable.example.com/v1").is_none());
}

#[test]
fn v2_protobuf_decodes_with_definitions_extensions_and_parameters() {
    let api = openapi();
    let documents = api.documents();
    let decoded =
        v2proto::Document::decode(documents.v2_proto.bytes.clone()).expect("decodes as gnostic");
    assert_eq!(decoded.swagger, "2.0");
    let definitions = decoded
        .definitions
        .expect("definitions")
        .additional_properties;
    let deployment = definitions
        .iter()
        .find(|d| d.name == "io.k8s.api.apps.v1.Deployment")
        .and_then(|d| d.value.as_ref())
        .expect("Deployment definition");
    let gvk = deployment
        .vendor_extension
        .iter()
        .find(|e| e.name == "x-kubernetes-group-version-kind")
        .and_then(|e| e.value.as_ref())
        .expect("GVK extension");
    let gvk: Value = serde_json::from_str(&gvk.yaml).expect("the extension is JSON (YAML)");
    assert_eq!(
        gvk,
        json!([{"group": "apps", "version": "v1", "kind": "Deployment"}])
    );
    let spec = definitions
        .iter()
        .find(|d| d.name == "io.k8s.api.apps.v1.DeploymentSpec")
        .and_then(|d| d.value.as_ref())
        .expect("DeploymentSpec");
    let replicas = spec
        .properties
        .as_ref()
        .and_then(|p| {
            p.additional_properties
                .iter()
                .find(|p| p.name == "replicas")
        })
        .and_then(|p| p.value.as_ref())
        .expect("replicas");
    assert_eq!(
        replicas.r#type.as_ref().map(|t| t.value.clone()),
        Some(vec!["integer".to_owned()])
    );
    let selector = spec
        .properties
        .as_ref()
        .and_then(|p| {
            p.additional_properties
                .iter()
                .find(|p| p.name == "selector")
        })
        .and_then(|p| p.value.as_ref())
        .expect("selector");
    assert_eq!(
        selector.r#ref,
        "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelector"
    );
    let paths = decoded.paths.expect("paths").path;
    let patch = paths
        .iter()
        .find(|p| p.name == "/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
        .and_then(|p| p.value.as_ref())
        .and_then(|p| p.patch.as_ref())
        .expect("deployment PATCH");
    let has_field_validation = patch.parameters.iter().any(|p| {
        matches!(
            &p.oneof,
            Some(v2proto::ParametersItemOneof::Parameter(v2proto::Parameter {
                oneof: Some(v2proto::ParameterOneof::NonBodyParameter(v2proto::NonBodyParameter {
                    oneof: Some(v2proto::NonBodyParameterOneof::QueryParameterSubSchema(q)),
                })),
            })) if q.name == "fieldValidation"
        )
    });
    assert!(has_field_validation, "PATCH lists fieldValidation");
}

#[test]
fn v2_json_uses_definitions_refs() {
    let v2 = openapi().v2_document();
    assert_eq!(v2["swagger"], "2.0");
    let containers = &v2["definitions"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
    assert_eq!(
        containers["items"]["$ref"],
        "#/definitions/io.k8s.api.core.v1.Container"
    );
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    let text = v2.to_string();
    assert!(
        !text.contains("#/components/schemas/"),
        "a v3 reference left in v2"
    );
}

#[test]
fn no_definition_has_more_than_one_type() {
    // kubectl's model parser refuses a schema with several types.
    fn walk(value: &Value, path: &str, bad: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if map.get("type").is_some_and(Value::is_array) {
                    bad.push(path.to_owned());
                }
                for (k, v) in map {
                    walk(v, &format!("{path}.{k}"), bad);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, path, bad)),
            _ => {}
        }
    }
    let mut bad = Vec::new();
    walk(&openapi().v2_document()["definitions"], "", &mut bad);
    assert_eq!(bad, Vec::<String>::new());
}
