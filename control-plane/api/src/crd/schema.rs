//! The schema tree a `Structural` works on, read once from `openAPIV3Schema` JSON.
//!
//! Reading is lenient (a keyword of the wrong JSON type is ignored): the CRD was decoded into the
//! typed `JSONSchemaProps` before it reaches us, so such input does not get this far.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use super::cel::CompiledRule;

/// `additionalProperties`: a boolean or a schema.
#[derive(Debug, Clone)]
pub(crate) enum Additional {
    /// `additionalProperties: true|false`.
    Allows(bool),
    /// `additionalProperties: {schema}`.
    Schema(Box<Node>),
}

/// One rule of `x-kubernetes-validations` as written.
#[derive(Debug, Clone, Default)]
pub(crate) struct RuleSpec {
    pub rule: String,
    pub message: Option<String>,
    pub message_expression: Option<String>,
    pub reason: Option<String>,
    pub field_path: Option<String>,
    pub optional_old_self: Option<bool>,
}

/// One schema node (a `JSONSchemaProps`), the keywords keelson uses.
#[derive(Debug, Clone, Default)]
pub(crate) struct Node {
    /// `type`, empty when absent.
    pub ty: String,
    pub format: Option<String>,
    pub properties: BTreeMap<String, Node>,
    pub additional: Option<Additional>,
    pub items: Option<Box<Node>>,
    pub required: Vec<String>,
    pub nullable: bool,
    pub default: Option<Value>,
    pub enumeration: Option<Vec<Value>>,
    /// `maximum` as written (printed back in messages) and as a number.
    pub maximum: Option<(Value, f64)>,
    pub exclusive_maximum: bool,
    pub minimum: Option<(Value, f64)>,
    pub exclusive_minimum: bool,
    pub multiple_of: Option<(Value, f64)>,
    pub max_length: Option<u64>,
    pub min_length: Option<u64>,
    pub pattern: Option<(String, Option<regex::Regex>)>,
    pub max_items: Option<u64>,
    pub min_items: Option<u64>,
    pub max_properties: Option<u64>,
    pub min_properties: Option<u64>,
    pub all_of: Vec<Node>,
    pub any_of: Vec<Node>,
    pub one_of: Vec<Node>,
    pub not: Option<Box<Node>>,
    pub preserve_unknown: bool,
    pub embedded: bool,
    pub int_or_string: bool,
    pub list_type: Option<String>,
    pub list_map_keys: Vec<String>,
    pub map_type: Option<String>,
    pub rule_specs: Vec<RuleSpec>,
    /// Filled by compilation, one per `rule_specs` entry.
    pub rules: Vec<Arc<CompiledRule>>,
}

fn u64_of(m: &Map<String, Value>, key: &str) -> Option<u64> {
    m.get(key).and_then(Value::as_u64)
}

fn num_of(m: &Map<String, Value>, key: &str) -> Option<(Value, f64)> {
    m.get(key).and_then(|v| v.as_f64().map(|f| (v.clone(), f)))
}

fn str_of(m: &Map<String, Value>, key: &str) -> Option<String> {
    m.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn bool_of(m: &Map<String, Value>, key: &str) -> bool {
    m.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn list_of(m: &Map<String, Value>, key: &str) -> Vec<Node> {
    match m.get(key) {
        Some(Value::Array(items)) => items.iter().map(Node::read).collect(),
        _ => Vec::new(),
    }
}

impl Node {
    /// Reads one schema node and everything below it.
    pub fn read(v: &Value) -> Node {
        let Some(m) = v.as_object() else {
            return Node::default();
        };
        let mut n = Node {
            ty: str_of(m, "type").unwrap_or_default(),
            format: str_of(m, "format"),
            nullable: bool_of(m, "nullable"),
            default: m.get("default").cloned(),
            enumeration: m.get("enum").and_then(Value::as_array).cloned(),
            maximum: num_of(m, "maximum"),
            exclusive_maximum: bool_of(m, "exclusiveMaximum"),
            minimum: num_of(m, "minimum"),
            exclusive_minimum: bool_of(m, "exclusiveMinimum"),
            multiple_of: num_of(m, "multipleOf"),
            max_length: u64_of(m, "maxLength"),
            min_length: u64_of(m, "minLength"),
            pattern: str_of(m, "pattern").map(|p| {
                let re = regex::Regex::new(&p).ok();
                (p, re)
            }),
            max_items: u64_of(m, "maxItems"),
            min_items: u64_of(m, "minItems"),
            max_properties: u64_of(m, "maxProperties"),
            min_properties: u64_of(m, "minProperties"),
            all_of: list_of(m, "allOf"),
            any_of: list_of(m, "anyOf"),
            one_of: list_of(m, "oneOf"),
            not: m.get("not").map(|n| Box::new(Node::read(n))),
            preserve_unknown: bool_of(m, "x-kubernetes-preserve-unknown-fields"),
            embedded: bool_of(m, "x-kubernetes-embedded-resource"),
            int_or_string: bool_of(m, "x-kubernetes-int-or-string"),
            list_type: str_of(m, "x-kubernetes-list-type"),
            map_type: str_of(m, "x-kubernetes-map-type"),
            ..Node::default()
        };
        if let Some(Value::Object(props)) = m.get("properties") {
            n.properties = props
                .iter()
                .map(|(k, v)| (k.clone(), Node::read(v)))
                .collect();
        }
        n.additional = match m.get("additionalProperties") {
            Some(Value::Bool(b)) => Some(Additional::Allows(*b)),
            Some(v @ Value::Object(_)) => Some(Additional::Schema(Box::new(Node::read(v)))),
            _ => None,
        };
        if let Some(items @ Value::Object(_)) = m.get("items") {
            n.items = Some(Box::new(Node::read(items)));
        }
        if let Some(Value::Array(req)) = m.get("required") {
            n.required = req
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect();
        }
        if let Some(Value::Array(keys)) = m.get("x-kubernetes-list-map-keys") {
            n.list_map_keys = keys
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect();
        }
        if let Some(Value::Array(rules)) = m.get("x-kubernetes-validations") {
            n.rule_specs = rules
                .iter()
                .filter_map(Value::as_object)
                .map(|r| RuleSpec {
                    rule: str_of(r, "rule").unwrap_or_default(),
                    message: str_of(r, "message"),
                    message_expression: str_of(r, "messageExpression"),
                    reason: str_of(r, "reason"),
                    field_path: str_of(r, "fieldPath"),
                    optional_old_self: r.get("optionalOldSelf").and_then(Value::as_bool),
                })
                .collect();
        }
        n
    }

    /// The schema of `additionalProperties` when it is a schema.
    pub fn additional_schema(&self) -> Option<&Node> {
        match &self.additional {
            Some(Additional::Schema(s)) => Some(s),
            _ => None,
        }
    }
}
