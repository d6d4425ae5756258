//! The pure steps a request body goes through, as entry points for keelson's fuzz targets
//! (`fuzz-targets`): decoding (JSON, YAML, Kubernetes protobuf) into the kind's typed shape
//! under `fieldValidation`, and the non-apply patch types. Each is the very function the
//! handlers call, so what a fuzzer finds here is what a client could trigger; none does IO.

use keelson_api::patch::kind_definition;
use serde_json::Value;

use crate::{
    ApiError,
    object::decode_strictly,
    registry::{RESOURCES, Resource},
    request::{Body, FieldValidation},
};

/// The `fieldValidation` modes, in the order the fuzz targets try them.
const MODES: [FieldValidation; 3] = [
    FieldValidation::Ignore,
    FieldValidation::Warn,
    FieldValidation::Strict,
];

/// The served kind an object names by `apiVersion` and `kind`; a core/v1 Pod when it names
/// none (the fuzzer still reaches the typed decoding).
fn resource_of(object: &Value) -> &'static Resource {
    let api_version = object.get("apiVersion").and_then(Value::as_str);
    let kind = object.get("kind").and_then(Value::as_str);
    RESOURCES
        .iter()
        .find(|r| Some(r.api_version().as_str()) == api_version && Some(r.kind) == kind)
        .or_else(|| {
            RESOURCES
                .iter()
                .find(|r| r.group.is_empty() && r.kind == "Pod")
        })
        .expect("the registry serves core/v1 Pods")
}

/// Decodes `bytes` as a create/update body of `content_type` (`application/json`,
/// `application/yaml` or `application/apply-patch+yaml`) and then strictly as the kind it
/// names, once per `fieldValidation` mode; returns the objects that decoded.
pub fn decode_body(content_type: &str, bytes: &[u8]) -> Vec<Result<Value, ApiError>> {
    let body = Body {
        content_type: content_type.to_owned(),
        bytes: bytes::Bytes::copy_from_slice(bytes),
    };
    MODES
        .iter()
        .map(|&mode| {
            let (mut object, duplicates) = body.value(mode)?;
            let resource = resource_of(&object);
            let mut warnings = Vec::new();
            decode_strictly(&mut object, resource, &duplicates, mode, &mut warnings)?;
            Ok(object)
        })
        .collect()
}

/// Decodes a Kubernetes protobuf body (`application/vnd.kubernetes.protobuf`) to JSON as
/// [`Body`] does, then as a JSON body of the kind it names.
pub fn decode_protobuf(bytes: &[u8]) -> Result<Value, ApiError> {
    let json = crate::protobuf::to_json(bytes)?;
    decode_body("application/json", &json)
        .pop()
        .expect("one result per mode")
}

/// Applies `patch` (the body of a merge, strategic merge or JSON patch, by `content_type`) to
/// `object` as `PATCH` does before validation: the body is decoded as the handler decodes
/// it, the strategic merge uses the definition of the kind `object` names.
pub fn patch(content_type: &str, object: &mut Value, patch: &[u8]) -> Result<(), ApiError> {
    let (patch, _duplicates) = crate::request::parse_json(patch)?;
    let resource = resource_of(object);
    let definition = kind_definition(resource.group, resource.version, resource.kind);
    crate::write::patch_document(content_type, object, &patch, definition)
        .map_err(|e| ApiError::bad_request(e.to_string()))
}
