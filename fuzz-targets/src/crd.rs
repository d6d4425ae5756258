//! CustomResourceDefinition schemas (structural checks, compilation, pruning, defaulting,
//! validation) and CEL rules (`x-kubernetes-validations` and ValidatingAdmissionPolicy
//! expressions), as the API server runs them on a CRD write and on a custom object's write.

use keelson_api::{
    admission_policy::{self, Scope},
    crd::Structural,
};
use serde_json::{Value, json};

/// The schema path kube names in its errors.
const PATH: &str = "spec.versions[0].schema.openAPIV3Schema";

/// Compiles `schema`; when it compiles, prunes, defaults and validates every object (each
/// also as an update of the first).
fn exercise(schema: &Value, objects: &[Value]) {
    let Ok(structural) = Structural::compile(schema, PATH) else {
        return;
    };
    let mut first: Option<Value> = None;
    for object in objects {
        let mut object = object.clone();
        let _ = structural.prune(&mut object);
        structural.default(&mut object);
        let _ = structural.validate(&object, None);
        if let Some(old) = &first {
            let _ = structural.validate(&object, Some(old));
        } else {
            first = Some(object);
        }
    }
}

/// A JSON document `{"schema": <openAPIV3Schema>, "objects": [<object>, ...]}`.
pub(crate) fn schema(data: &[u8]) {
    let Ok(input) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let Some(schema) = input.get("schema") else {
        return;
    };
    let objects = input
        .get("objects")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    exercise(schema, &objects);
}

/// One CEL expression: compiled for a webhook's matchConditions and a policy's validations,
/// and as an `x-kubernetes-validations` rule on an object schema, evaluated on a few objects.
pub(crate) fn cel(data: &[u8]) {
    let Some(rule) = crate::text(data) else {
        return;
    };
    let _ = admission_policy::compile(rule, Scope::Webhook);
    let variables = ["size".to_owned()];
    let _ = admission_policy::compile(
        rule,
        Scope::Policy {
            params: true,
            variables: &variables,
            authorizer: true,
        },
    );
    let schema = json!({
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "x-kubernetes-validations": [{"rule": rule}],
                "properties": {
                    "replicas": {"type": "integer", "minimum": 0, "maximum": 1000},
                    "name": {"type": "string", "maxLength": 63},
                    "ratio": {"type": "number"},
                    "tags": {"type": "array", "maxItems": 16,
                        "items": {"type": "string", "maxLength": 32}},
                    "limits": {"type": "object", "maxProperties": 8,
                        "additionalProperties": {"x-kubernetes-int-or-string": true}},
                    "when": {"type": "string", "format": "date-time"},
                    "every": {"type": "string", "format": "duration"}
                }
            }
        }
    });
    let objects = [
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "a"},
            "spec": {"replicas": 3, "name": "a", "ratio": 0.5, "tags": ["x", "y"],
                "limits": {"cpu": "500m", "pods": 10}, "when": "2026-01-01T00:00:00Z",
                "every": "1h30m"}}),
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "b"},
            "spec": {"replicas": 0, "name": "", "tags": []}}),
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "c"},
            "spec": {}}),
    ];
    exercise(&schema, &objects);
}
