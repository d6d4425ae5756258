//! The checks kube-apiserver makes on a CRD version's `openAPIV3Schema` before accepting it,
//! apart from CEL: `ValidateCustomResourceDefinitionOpenAPISchema` and `specStandardValidatorV3`
//! (apiextensions `pkg/apis/apiextensions/validation/validation.go`) and the structural-schema
//! invariants of `ValidateStructural` (`pkg/apiserver/schema/validation.go`).
//!
//! Left out: the structural *completeness* check (every property named under a junctor must
//! also be specified outside of it) and the list-map-key/default rules gated on old CRDs.

use serde_json::{Map, Value};

use super::path::{child, index, key};
use super::schema::{Additional, Node};
use crate::validation::FieldError;

const OPENAPI_V3_TYPES: [&str; 6] = ["array", "boolean", "integer", "number", "object", "string"];
const META_FIELDS: [&str; 3] = ["metadata", "kind", "apiVersion"];
const REASONS: [&str; 4] = [
    "FieldValueDuplicate",
    "FieldValueForbidden",
    "FieldValueInvalid",
    "FieldValueRequired",
];

/// Where a schema sits, for the checks that depend on it.
#[derive(Clone, Copy)]
struct Ctx {
    root: bool,
    inside_meta: bool,
    forbid_defaults: Option<&'static str>,
}

/// The root may not be nullable.
pub(crate) fn nullable_root(schema: &Value, path: &str) -> Vec<FieldError> {
    if schema.get("nullable").and_then(Value::as_bool) == Some(true) {
        return vec![FieldError::forbidden(
            &child(path, "nullable"),
            "nullable cannot be true at the root",
        )];
    }
    Vec::new()
}

/// `ValidateCustomResourceDefinitionOpenAPISchema`'s schema errors (not the CEL ones).
pub(crate) fn openapi_checks(schema: &Value, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let ctx = Ctx {
        root: true,
        inside_meta: false,
        forbid_defaults: None,
    };
    walk(schema, path, ctx, &mut errs);
    errs
}

fn walk(v: &Value, path: &str, ctx: Ctx, errs: &mut Vec<FieldError>) {
    let Some(m) = v.as_object() else {
        return;
    };
    standard(m, path, ctx, errs);
    let ty = m.get("type").and_then(Value::as_str).unwrap_or("");
    if m.get("uniqueItems").and_then(Value::as_bool) == Some(true) {
        errs.push(FieldError::forbidden(
            &child(path, "uniqueItems"),
            "uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
        ));
    }
    let props = m.get("properties").and_then(Value::as_object);
    if let Some(ap) = m.get("additionalProperties") {
        let has_props = props.is_some_and(|p| !p.is_empty());
        if has_props && (ap == &Value::Bool(false) || ap.is_object()) {
            errs.push(FieldError::forbidden(
                &child(path, "additionalProperties"),
                "additionalProperties and properties are mutual exclusive",
            ));
        }
        let mut sub = ctx;
        sub.root = false;
        if ctx.inside_meta {
            sub.forbid_defaults = Some("inside additionalProperties applying to object metadata");
        }
        walk(ap, &child(path, "additionalProperties"), sub, errs);
    }
    let embedded = m
        .get("x-kubernetes-embedded-resource")
        .and_then(Value::as_bool)
        == Some(true);
    if let Some(props) = props {
        for (name, p) in props {
            let mut sub = ctx;
            sub.root = false;
            if (ctx.root || embedded) && META_FIELDS.contains(&name.as_str()) {
                sub.inside_meta = true;
                if ctx.root {
                    sub.forbid_defaults = Some(match name.as_str() {
                        "metadata" => "in top-level metadata",
                        "kind" => "in top-level kind",
                        _ => "in top-level apiVersion",
                    });
                }
            }
            walk(p, &key(&child(path, "properties"), name), sub, errs);
        }
    }
    let mut sub = ctx;
    sub.root = false;
    if let Some(not) = m.get("not") {
        walk(not, &child(path, "not"), sub, errs);
    }
    for junctor in ["allOf", "oneOf", "anyOf"] {
        if let Some(Value::Array(list)) = m.get(junctor) {
            for (i, s) in list.iter().enumerate() {
                walk(s, &index(&child(path, junctor), i), sub, errs);
            }
        }
    }
    if let Some(items) = m.get("items") {
        walk(items, &child(path, "items"), sub, errs);
    }
    if m.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(false)) {
        errs.push(FieldError::invalid(
            &child(path, "x-kubernetes-preserve-unknown-fields"),
            false,
            "must be true or undefined",
        ));
    }
    let map_type = m.get("x-kubernetes-map-type").and_then(Value::as_str);
    if map_type.is_some() && ty != "object" {
        type_must_be(
            errs,
            path,
            ty,
            "must be object if x-kubernetes-map-type is specified",
        );
    }
    if let Some(mt) = map_type
        && mt != "atomic"
        && mt != "granular"
    {
        errs.push(FieldError::not_supported(
            &child(path, "x-kubernetes-map-type"),
            mt,
            &["atomic", "granular"],
        ));
    }
    let list_type = m.get("x-kubernetes-list-type").and_then(Value::as_str);
    if list_type.is_some() && ty != "array" {
        type_must_be(
            errs,
            path,
            ty,
            "must be array if x-kubernetes-list-type is specified",
        );
    } else if list_type == Some("set") {
        atomic_set_items(m, path, errs);
    }
    if let Some(lt) = list_type
        && !["atomic", "set", "map"].contains(&lt)
    {
        errs.push(FieldError::not_supported(
            &child(path, "x-kubernetes-list-type"),
            lt,
            &["atomic", "set", "map"],
        ));
    }
    list_map_keys(m, path, list_type, errs);
    if let Some(lt @ ("set" | "map")) = list_type {
        set_and_map_items(m, path, lt, errs);
    }
    rule_specs(m, path, errs);
}

/// `validateMapListKeysMapSet`: items of a set or map list are not nullable, and the keys of a
/// map list are required or defaulted, and not nullable.
fn set_and_map_items(
    m: &Map<String, Value>,
    path: &str,
    list_type: &str,
    errs: &mut Vec<FieldError>,
) {
    let Some(items) = m.get("items").and_then(Value::as_object) else {
        return;
    };
    let items_path = child(path, "items");
    if items.get("nullable").and_then(Value::as_bool) == Some(true) {
        errs.push(FieldError::forbidden(
            &child(&items_path, "nullable"),
            format!("cannot be nullable when x-kubernetes-list-type is {list_type}"),
        ));
    }
    if list_type != "map" {
        return;
    }
    let required: Vec<&str> = items
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let keys = m
        .get("x-kubernetes-list-map-keys")
        .and_then(Value::as_array)
        .map(|k| k.iter().filter_map(Value::as_str).collect::<Vec<_>>())
        .unwrap_or_default();
    for k in keys {
        let Some(p) = items.get("properties").and_then(|p| p.get(k)) else {
            continue;
        };
        let at = key(&child(&items_path, "properties"), k);
        if !required.contains(&k) && p.get("default").is_none() {
            errs.push(FieldError::required(
                &child(&at, "default"),
                "this property is in x-kubernetes-list-map-keys, so it must have a default or be a required property",
            ));
        }
        if p.get("nullable").and_then(Value::as_bool) == Some(true) {
            errs.push(FieldError::forbidden(
                &child(&at, "nullable"),
                "this property is in x-kubernetes-list-map-keys, so it cannot be nullable",
            ));
        }
    }
}

fn type_must_be(errs: &mut Vec<FieldError>, path: &str, ty: &str, detail: &str) {
    let field = child(path, "type");
    if ty.is_empty() {
        errs.push(FieldError::required(&field, detail));
    } else {
        errs.push(FieldError::invalid(&field, ty, detail));
    }
}

/// `requireAtomicSetType`: the items of a set are atomic.
fn atomic_set_items(m: &Map<String, Value>, path: &str, errs: &mut Vec<FieldError>) {
    let Some(items) = m.get("items").and_then(Value::as_object) else {
        return;
    };
    let detail = "must be atomic as item of a list with x-kubernetes-list-type=set";
    match items.get("type").and_then(Value::as_str) {
        Some("array") => {
            if let Some(lt) = items.get("x-kubernetes-list-type").and_then(Value::as_str)
                && lt != "atomic"
            {
                errs.push(FieldError::invalid(
                    &child(&child(path, "items"), "x-kubernetes-list-type"),
                    lt,
                    detail,
                ));
            }
        }
        Some("object")
            if items.get("x-kubernetes-map-type").and_then(Value::as_str) != Some("atomic") =>
        {
            // kube prints the items' list type here (nil for an object): Go's `<nil>`.
            errs.push(FieldError::invalid_rendered(
                &child(&child(path, "items"), "x-kubernetes-map-type"),
                "<nil>".to_owned(),
                detail,
            ));
        }
        _ => {}
    }
}

fn list_map_keys(
    m: &Map<String, Value>,
    path: &str,
    list_type: Option<&str>,
    errs: &mut Vec<FieldError>,
) {
    let keys: Vec<&str> = m
        .get("x-kubernetes-list-map-keys")
        .and_then(Value::as_array)
        .map(|k| k.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !keys.is_empty() {
        let field = child(path, "x-kubernetes-list-type");
        match list_type {
            None => errs.push(FieldError::required(
                &field,
                "must be map if x-kubernetes-list-map-keys is non-empty",
            )),
            Some("map") => {}
            Some(other) => errs.push(FieldError::invalid(
                &field,
                other,
                "must be map if x-kubernetes-list-map-keys is non-empty",
            )),
        }
    }
    if list_type != Some("map") {
        return;
    }
    if keys.is_empty() {
        errs.push(FieldError::required(
            &child(path, "x-kubernetes-list-map-keys"),
            "must not be empty if x-kubernetes-list-type is map",
        ));
    }
    let Some(items) = m.get("items").and_then(Value::as_object) else {
        errs.push(FieldError::required(
            &child(path, "items"),
            "must have a schema if x-kubernetes-list-type is map",
        ));
        return;
    };
    let item_ty = items.get("type").and_then(Value::as_str).unwrap_or("");
    if item_ty != "object" {
        errs.push(FieldError::invalid(
            &child(&child(path, "items"), "type"),
            item_ty,
            "must be object if parent array's x-kubernetes-list-type is map",
        ));
        return;
    }
    let props = items.get("properties").and_then(Value::as_object);
    let mut seen: Vec<&str> = Vec::new();
    let all_keys: Vec<Value> = keys.iter().map(|k| Value::from(*k)).collect();
    for k in &keys {
        match props.and_then(|p| p.get(*k)) {
            Some(p) => {
                let t = p.get("type").and_then(Value::as_str).unwrap_or("");
                if t == "array" || t == "object" {
                    errs.push(FieldError::invalid(
                        &child(&key(&child(&child(path, "items"), "properties"), k), "type"),
                        item_ty,
                        "must be a scalar type if parent array's x-kubernetes-list-type is map",
                    ));
                }
            }
            None => errs.push(FieldError::invalid(
                &child(path, "x-kubernetes-list-map-keys"),
                Value::Array(all_keys.clone()),
                "entries must all be names of item properties",
            )),
        }
        if seen.contains(k) {
            errs.push(FieldError::invalid(
                &child(path, "x-kubernetes-list-map-keys"),
                Value::Array(all_keys.clone()),
                "must not contain duplicate entries",
            ));
        }
        seen.push(k);
    }
}

/// The static checks of each `x-kubernetes-validations` entry (not its compilation).
fn rule_specs(m: &Map<String, Value>, path: &str, errs: &mut Vec<FieldError>) {
    let Some(Value::Array(rules)) = m.get("x-kubernetes-validations") else {
        return;
    };
    for (i, r) in rules.iter().enumerate() {
        let at = index(&child(path, "x-kubernetes-validations"), i);
        let get = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("");
        let (rule, message, msg_expr) = (get("rule"), get("message"), get("messageExpression"));
        let has_newlines = |s: &str| s.contains(['\n', '\r']);
        if rule.trim().is_empty() {
            errs.push(FieldError::required(
                &child(&at, "rule"),
                "rule is not specified",
            ));
        } else if !message.is_empty() && message.trim().is_empty() {
            errs.push(FieldError::invalid(
                &child(&at, "message"),
                message,
                "message must be non-empty if specified",
            ));
        } else if has_newlines(message.trim()) {
            errs.push(FieldError::invalid(
                &child(&at, "message"),
                message,
                "message must not contain line breaks",
            ));
        } else if has_newlines(rule.trim()) && message.trim().is_empty() {
            errs.push(FieldError::required(
                &child(&at, "message"),
                "message must be specified if rule contains line breaks",
            ));
        }
        if !msg_expr.is_empty() && msg_expr.trim().is_empty() {
            errs.push(FieldError::required(
                &child(&at, "messageExpression"),
                "messageExpression must be non-empty if specified",
            ));
        }
        if let Some(reason) = r.get("reason").and_then(Value::as_str)
            && !REASONS.contains(&reason)
        {
            errs.push(FieldError::not_supported(
                &child(&at, "reason"),
                reason,
                &REASONS,
            ));
        }
        let fp = get("fieldPath");
        if !fp.is_empty() && fp.trim().is_empty() {
            errs.push(FieldError::invalid(
                &child(&at, "fieldPath"),
                fp,
                "fieldPath must be non-empty if specified",
            ));
        }
        if has_newlines(fp) {
            errs.push(FieldError::invalid(
                &child(&at, "fieldPath"),
                fp,
                "fieldPath must not contain line breaks",
            ));
        }
        if !fp.is_empty()
            && super::path::rule_field_path(&Node::read(&Value::Object(m.clone())), fp).is_err()
        {
            errs.push(FieldError::invalid(
                &child(&at, "fieldPath"),
                fp,
                "fieldPath must be a valid path",
            ));
        }
    }
}

/// `specStandardValidatorV3.validate`.
fn standard(m: &Map<String, Value>, path: &str, ctx: Ctx, errs: &mut Vec<FieldError>) {
    let ty = m.get("type").and_then(Value::as_str).unwrap_or("");
    if !ty.is_empty() && !OPENAPI_V3_TYPES.contains(&ty) {
        errs.push(FieldError::not_supported(
            &child(path, "type"),
            ty,
            &OPENAPI_V3_TYPES,
        ));
    }
    if m.contains_key("default")
        && let Some(reason) = ctx.forbid_defaults
    {
        errs.push(FieldError::forbidden(
            &child(path, "default"),
            format!("must not be set {reason}"),
        ));
    }
    let forbidden = [
        ("id", "id is not supported"),
        ("additionalItems", "additionalItems is not supported"),
        ("patternProperties", "patternProperties is not supported"),
        ("definitions", "definitions is not supported"),
        ("dependencies", "dependencies is not supported"),
        ("$ref", "$ref is not supported"),
    ];
    for (k, detail) in forbidden {
        if m.contains_key(k) {
            errs.push(FieldError::forbidden(&child(path, k), detail));
        }
    }
    if ty == "null" {
        errs.push(FieldError::forbidden(
            &child(path, "type"),
            "type cannot be set to null, use nullable as an alternative",
        ));
    }
    if m.get("items").is_some_and(Value::is_array) {
        errs.push(FieldError::forbidden(
            &child(path, "items"),
            "items must be a schema object and not an array",
        ));
    }
    if ctx.inside_meta
        && m.get("x-kubernetes-embedded-resource")
            .and_then(Value::as_bool)
            == Some(true)
    {
        errs.push(FieldError::forbidden(
            &child(path, "x-kubernetes-embedded-resource"),
            "must not be used inside of resource meta",
        ));
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Level {
    Root,
    Item,
    Field,
}

/// `ValidateStructural`: the invariants that make a schema structural, sorted by their text
/// as kube sorts them.
pub(crate) fn structural(node: &Node, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    invariants(node, Level::Root, path, &mut errs);
    errs.sort_by_key(ToString::to_string);
    errs
}

fn invariants(s: &Node, lvl: Level, path: &str, errs: &mut Vec<FieldError>) {
    if s.ty == "array" && s.items.is_none() {
        errs.push(FieldError::required(
            &child(path, "items"),
            "must be specified",
        ));
    }
    if let Some(items) = &s.items {
        invariants(items, Level::Item, &child(path, "items"), errs);
    }
    for (k, v) in &s.properties {
        invariants(v, Level::Field, &key(&child(path, "properties"), k), errs);
    }
    if s.additional.is_some() && lvl == Level::Root {
        errs.push(FieldError::forbidden(
            &child(path, "additionalProperties"),
            "must not be used at the root",
        ));
    }
    if let Some(Additional::Schema(ap)) = &s.additional {
        invariants(ap, Level::Field, &child(path, "additionalProperties"), errs);
    }
    if s.int_or_string && s.preserve_unknown {
        errs.push(FieldError::invalid(
            &child(path, "x-kubernetes-preserve-unknown-fields"),
            true,
            "must be false if x-kubernetes-int-or-string is true",
        ));
    }
    if s.int_or_string && s.embedded {
        errs.push(FieldError::invalid(
            &child(path, "x-kubernetes-embedded-resource"),
            true,
            "must be false if x-kubernetes-int-or-string is true",
        ));
    }
    let skip_any_of = is_int_or_string_any_of(&s.any_of);
    let skip_first_all_of_any_of = s
        .all_of
        .first()
        .is_some_and(|a| is_int_or_string_any_of(&a.any_of));
    value_validation(s, skip_any_of, skip_first_all_of_any_of, lvl, path, errs);

    let check_metadata = lvl == Level::Root || s.embedded;
    if s.embedded && s.ty != "object" {
        type_must_be(
            errs,
            path,
            &s.ty,
            "must be object if x-kubernetes-embedded-resource is true",
        );
    } else if s.ty.is_empty() && !s.int_or_string && !s.preserve_unknown {
        let detail = match lvl {
            Level::Root => "must not be empty at the root",
            Level::Item => "must not be empty for specified array items",
            Level::Field => "must not be empty for specified object fields",
        };
        errs.push(FieldError::required(&child(path, "type"), detail));
    }
    if s.embedded && s.additional.is_some() {
        errs.push(FieldError::forbidden(
            &child(path, "additionalProperties"),
            "must not be used if x-kubernetes-embedded-resource is set",
        ));
    }
    if lvl == Level::Root && !s.ty.is_empty() && s.ty != "object" {
        errs.push(FieldError::invalid(
            &child(path, "type"),
            s.ty.as_str(),
            "must be object at the root",
        ));
    }
    let props = key_path(path);
    if check_metadata {
        for (name, want) in [
            ("kind", "string"),
            ("apiVersion", "string"),
            ("metadata", "object"),
        ] {
            if let Some(p) = s.properties.get(name)
                && p.ty != want
            {
                errs.push(FieldError::invalid(
                    &child(&props(name), "type"),
                    p.ty.as_str(),
                    format!("must be {want}"),
                ));
            }
        }
    }
    if lvl == Level::Root
        && let Some(meta) = s.properties.get("metadata")
        && !metadata_is_plain(meta)
    {
        errs.push(FieldError::forbidden(
            &props("metadata"),
            "must not specify anything other than name and generateName, but metadata is implicitly specified",
        ));
    }
    if s.embedded && !s.preserve_unknown && s.properties.is_empty() {
        errs.push(FieldError::required(
            &child(path, "properties"),
            "must not be empty if x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields",
        ));
    }
}

fn key_path(path: &str) -> impl Fn(&str) -> String + '_ {
    move |k| key(&child(path, "properties"), k)
}

/// The root `metadata` schema may only say `type: object` and restrict `name`/`generateName`.
fn metadata_is_plain(m: &Node) -> bool {
    let only_names = m
        .properties
        .keys()
        .all(|k| k == "name" || k == "generateName");
    only_names
        && m.additional.is_none()
        && m.items.is_none()
        && m.format.is_none()
        && !m.nullable
        && m.enumeration.is_none()
        && m.required.is_empty()
        && m.all_of.is_empty()
        && m.any_of.is_empty()
        && m.one_of.is_empty()
        && m.not.is_none()
        && !m.preserve_unknown
        && !m.embedded
        && !m.int_or_string
        && m.rule_specs.is_empty()
        && m.max_properties.is_none()
        && m.min_properties.is_none()
}

fn is_int_or_string_any_of(any_of: &[Node]) -> bool {
    let plain = |n: &Node, ty: &str| {
        n.ty == ty
            && n.properties.is_empty()
            && n.items.is_none()
            && n.format.is_none()
            && n.pattern.is_none()
            && n.all_of.is_empty()
            && n.any_of.is_empty()
    };
    any_of.len() == 2 && plain(&any_of[0], "integer") && plain(&any_of[1], "string")
}

fn value_validation(
    s: &Node,
    skip_any_of: bool,
    skip_first_all_of_any_of: bool,
    lvl: Level,
    path: &str,
    errs: &mut Vec<FieldError>,
) {
    if !skip_any_of {
        for (i, v) in s.any_of.iter().enumerate() {
            nested(v, false, lvl, &index(&child(path, "anyOf"), i), errs);
        }
    }
    for (i, v) in s.all_of.iter().enumerate() {
        nested(
            v,
            skip_first_all_of_any_of && i == 0,
            lvl,
            &index(&child(path, "allOf"), i),
            errs,
        );
    }
    for (i, v) in s.one_of.iter().enumerate() {
        nested(v, false, lvl, &index(&child(path, "oneOf"), i), errs);
    }
    if let Some(not) = &s.not {
        nested(not, false, lvl, &child(path, "not"), errs);
    }
    if let Some((p, re)) = &s.pattern
        && re.is_none()
    {
        let why = regex::Regex::new(p)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        errs.push(FieldError::invalid(
            &child(path, "pattern"),
            p.as_str(),
            format!("must be a valid regular expression, but isn't: {why}"),
        ));
    }
}

/// A schema under a logical junctor: value validation only.
fn nested(v: &Node, skip_any_of: bool, lvl: Level, path: &str, errs: &mut Vec<FieldError>) {
    value_validation(v, skip_any_of, false, lvl, path, errs);
    if let Some(items) = &v.items {
        nested(items, false, lvl, &child(path, "items"), errs);
    }
    for (k, f) in &v.properties {
        nested(
            f,
            false,
            Level::Field,
            &key(&child(path, "properties"), k),
            errs,
        );
    }
    let forbid = |errs: &mut Vec<FieldError>, k: &str, d: &str| {
        errs.push(FieldError::forbidden(&child(path, k), d));
    };
    if !v.ty.is_empty() {
        forbid(errs, "type", "must be empty to be structural");
    }
    if v.additional.is_some() {
        forbid(
            errs,
            "additionalProperties",
            "must be undefined to be structural",
        );
    }
    if v.default.is_some() {
        forbid(errs, "default", "must be undefined to be structural");
    }
    if v.nullable {
        forbid(errs, "nullable", "must be false to be structural");
    }
    if v.preserve_unknown {
        forbid(
            errs,
            "x-kubernetes-preserve-unknown-fields",
            "must be false to be structural",
        );
    }
    if v.embedded {
        forbid(
            errs,
            "x-kubernetes-embedded-resource",
            "must be false to be structural",
        );
    }
    if v.int_or_string {
        forbid(
            errs,
            "x-kubernetes-int-or-string",
            "must be false to be structural",
        );
    }
    if !v.list_map_keys.is_empty() {
        forbid(
            errs,
            "x-kubernetes-list-map-keys",
            "must be empty to be structural",
        );
    }
    if v.list_type.is_some() {
        forbid(
            errs,
            "x-kubernetes-list-type",
            "must be undefined to be structural",
        );
    }
    if v.properties.contains_key("metadata") {
        errs.push(FieldError::forbidden(
            &key(&child(path, "properties"), "metadata"),
            "must not be specified in a nested context",
        ));
    }
}
