//! OpenAPI validation of a custom resource against its structural schema, with the messages of
//! kube-openapi's validator as apiextensions turns them into field errors
//! (`kubeOpenAPIResultToFieldErrors` in `pkg/apiserver/validation/validation.go`), and the
//! list-type set/map uniqueness of `pkg/apiserver/schema/listtype`.

use serde_json::Value;

use super::formats;
use super::path::{child, index};
use super::schema::Node;
use crate::validation::{ErrorType, FieldError};

/// JSON's type name as kube-openapi reports it.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_invalid(path: &str, value: impl Into<Value>, detail: String) -> FieldError {
    let mut e = FieldError::invalid(path, value, detail);
    e.kind = ErrorType::TypeInvalid;
    e
}

/// Validates `v` at `path` against `s`, appending errors. `old` is the value at the same place
/// before an update, reached through object fields only: where it equals `v`, nothing is
/// reported (kube's ratcheting, `CRDValidationRatcheting`, on by default since 1.30).
pub(crate) fn validate(
    v: &Value,
    old: Option<&Value>,
    s: &Node,
    path: &str,
    resource: bool,
    errs: &mut Vec<FieldError>,
) {
    if old == Some(v) {
        return;
    }
    if !types_match(v, s, path, errs) {
        return;
    }
    if v.is_null() {
        return;
    }
    if let Some(allowed) = &s.enumeration
        && !allowed.contains(v)
    {
        let names: Vec<String> = allowed
            .iter()
            .map(|a| match a {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        errs.push(FieldError::not_supported(path, v.clone(), &refs));
    }
    match v {
        Value::Number(_) => number(v, s, path, errs),
        Value::String(text) => string(text, s, path, errs),
        Value::Array(items) => array(items, s, path, errs),
        Value::Object(_) => object(v, old, s, path, resource, errs),
        _ => {}
    }
    junctors(v, s, path, errs);
}

/// The type check (with `nullable` and `x-kubernetes-int-or-string`); false stops validation.
fn types_match(v: &Value, s: &Node, path: &str, errs: &mut Vec<FieldError>) -> bool {
    let actual = type_name(v);
    if v.is_null() {
        if s.nullable || (s.ty.is_empty() && !s.int_or_string) {
            return true;
        }
        let want = if s.int_or_string {
            "integer,string"
        } else {
            s.ty.as_str()
        };
        errs.push(type_invalid(
            path,
            actual,
            format!("{path} in body must be of type {want}: \"{actual}\""),
        ));
        return false;
    }
    // A float with an integral value passes as an integer (kube-openapi's `isIntFloat`).
    let int_float = actual == "number" && v.as_f64().is_some_and(|f| f.fract() == 0.0);
    let ok = if s.int_or_string {
        matches!(actual, "integer" | "string") || int_float
    } else {
        match s.ty.as_str() {
            "" => true,
            "number" => matches!(actual, "integer" | "number"),
            "integer" => actual == "integer" || int_float,
            t => t == actual,
        }
    };
    if !ok {
        let want = if s.int_or_string {
            "integer,string"
        } else {
            s.ty.as_str()
        };
        errs.push(type_invalid(
            path,
            actual,
            format!("{path} in body must be of type {want}: \"{actual}\""),
        ));
    }
    ok
}

/// Go's `%v` of a bound: an integer when the data is an integer (kube-openapi compares as
/// int64 then), else a float64.
fn bound(data: &Value, b: f64) -> String {
    if data.is_i64() || data.is_u64() {
        format!("{}", b.trunc() as i64)
    } else if b.fract() == 0.0 && b.abs() < 1e21 {
        format!("{}", b as i64)
    } else {
        format!("{b}")
    }
}

fn number(v: &Value, s: &Node, path: &str, errs: &mut Vec<FieldError>) {
    let Some(x) = v.as_f64() else {
        return;
    };
    let int = v.is_i64() || v.is_u64();
    if let Some((_, max)) = &s.maximum {
        let max = if int { max.trunc() } else { *max };
        let bad = if s.exclusive_maximum {
            x >= max
        } else {
            x > max
        };
        if bad {
            let how = if s.exclusive_maximum {
                "less than"
            } else {
                "less than or equal to"
            };
            errs.push(FieldError::invalid(
                path,
                v.clone(),
                format!("{path} in body should be {how} {}", bound(v, max)),
            ));
        }
    }
    if let Some((_, min)) = &s.minimum {
        let min = if int { min.trunc() } else { *min };
        let bad = if s.exclusive_minimum {
            x <= min
        } else {
            x < min
        };
        if bad {
            let how = if s.exclusive_minimum {
                "greater than"
            } else {
                "greater than or equal to"
            };
            errs.push(FieldError::invalid(
                path,
                v.clone(),
                format!("{path} in body should be {how} {}", bound(v, min)),
            ));
        }
    }
    if let Some((_, factor)) = &s.multiple_of
        && *factor > 0.0
    {
        let bad = match (v.as_i64(), int && factor.fract() == 0.0) {
            (Some(i), true) => i % (*factor as i64).max(1) != 0,
            _ => {
                let q = x / factor;
                (q - q.round()).abs() > 1e-9
            }
        };
        if bad {
            errs.push(FieldError::invalid(
                path,
                v.clone(),
                format!(
                    "{path} in body should be a multiple of {}",
                    bound(v, *factor)
                ),
            ));
        }
    }
}

fn string(text: &str, s: &Node, path: &str, errs: &mut Vec<FieldError>) {
    let len = text.chars().count() as u64;
    if let Some(max) = s.max_length
        && len > max
    {
        errs.push(FieldError::too_long(
            path,
            usize::try_from(max).unwrap_or(usize::MAX),
        ));
    }
    if let Some(min) = s.min_length
        && len < min
    {
        errs.push(FieldError::invalid(
            path,
            text,
            format!("{path} in body should be at least {min} chars long"),
        ));
    }
    if let Some((p, Some(re))) = &s.pattern
        && !re.is_match(text)
    {
        errs.push(FieldError::invalid(
            path,
            text,
            format!("{path} in body should match '{p}'"),
        ));
    }
    if let Some(fmt) = &s.format
        && !formats::check_string(fmt, text)
    {
        errs.push(type_invalid(
            path,
            text,
            format!("{path} in body must be of type {fmt}: \"{text}\""),
        ));
    }
}

fn array(items: &[Value], s: &Node, path: &str, errs: &mut Vec<FieldError>) {
    let n = items.len();
    if let Some(max) = s.max_items
        && n as u64 > max
    {
        errs.push(FieldError::too_many(
            path,
            n,
            usize::try_from(max).unwrap_or(usize::MAX),
        ));
    }
    if let Some(min) = s.min_items
        && (n as u64) < min
    {
        errs.push(FieldError::invalid(
            path,
            n,
            format!("{path} in body should have at least {min} items"),
        ));
    }
    if let Some(item) = &s.items {
        for (i, x) in items.iter().enumerate() {
            validate(x, None, item, &index(path, i), item.embedded, errs);
        }
    }
    match s.list_type.as_deref() {
        Some("set") => {
            // kube names the second appearance of a value only.
            for (i, x) in items.iter().enumerate() {
                if items[..i].iter().filter(|y| *y == x).count() == 1 {
                    errs.push(FieldError::duplicate(&index(path, i), x.clone()));
                }
            }
        }
        Some("map") => list_map(items, s, path, errs),
        _ => {}
    }
}

/// `x-kubernetes-list-type: map`: every item has all keys (or a default), no two share them.
fn list_map(items: &[Value], s: &Node, path: &str, errs: &mut Vec<FieldError>) {
    let mut seen: Vec<Vec<Option<&Value>>> = Vec::new();
    for (i, x) in items.iter().enumerate() {
        let Some(obj) = x.as_object() else {
            continue;
        };
        let keys: Vec<Option<&Value>> = s.list_map_keys.iter().map(|k| obj.get(k)).collect();
        // kube names the second appearance of a key only.
        if seen.iter().filter(|k| **k == keys).count() == 1 {
            let shown: Vec<String> = s
                .list_map_keys
                .iter()
                .zip(&keys)
                .filter_map(|(k, v)| {
                    v.map(|v| format!("{}:{}", crate::validation::go_quote(k), go_any(v)))
                })
                .collect();
            let mut e = FieldError::duplicate(&index(path, i), Value::Null);
            e.rendered = Some(format!("map[string]interface {{}}{{{}}}", shown.join(", ")));
            errs.push(e);
        }
        seen.push(keys);
    }
}

/// Go's `%#v` of a JSON scalar inside `map[string]interface {}`.
fn go_any(v: &Value) -> String {
    match v {
        Value::String(s) => crate::validation::go_quote(s),
        Value::Number(n) if n.is_i64() => format!("{n}"),
        other => other.to_string(),
    }
}

fn object(
    v: &Value,
    old: Option<&Value>,
    s: &Node,
    path: &str,
    resource: bool,
    errs: &mut Vec<FieldError>,
) {
    let Some(map) = v.as_object() else {
        return;
    };
    let n = map.len();
    if let Some(max) = s.max_properties
        && n as u64 > max
    {
        errs.push(FieldError::too_many(
            path,
            n,
            usize::try_from(max).unwrap_or(usize::MAX),
        ));
    }
    if let Some(min) = s.min_properties
        && (n as u64) < min
    {
        errs.push(FieldError::invalid(
            path,
            n,
            format!("{path} in body should have at least {min} properties"),
        ));
    }
    for r in &s.required {
        if !map.contains_key(r) {
            errs.push(FieldError::required(&child(path, r), ""));
        }
    }
    let embedded = s.embedded && !resource_root_path(path, resource);
    if embedded {
        for k in ["apiVersion", "kind"] {
            if map.get(k).and_then(Value::as_str).is_none_or(str::is_empty) {
                errs.push(FieldError::required(&child(path, k), "must not be empty"));
            }
        }
    }
    for (k, field) in map {
        if (resource || s.embedded) && k == "metadata" {
            // ObjectMeta is validated as metadata; the schema may only restrict the name and
            // generateName.
            let at = child(path, k);
            for name in ["name", "generateName"] {
                let restriction = s.properties.get(k).and_then(|m| m.properties.get(name));
                if let (Some(value), Some(restriction)) = (field.get(name), restriction) {
                    let before = old.and_then(|o| o.get(k)).and_then(|m| m.get(name));
                    validate(value, before, restriction, &child(&at, name), false, errs);
                }
            }
            continue;
        }
        if let Some(sub) = s.properties.get(k).or_else(|| s.additional_schema()) {
            let before = old.and_then(|o| o.get(k));
            validate(field, before, sub, &child(path, k), sub.embedded, errs);
        }
    }
}

fn resource_root_path(path: &str, resource: bool) -> bool {
    resource && path.is_empty()
}

fn junctors(v: &Value, s: &Node, path: &str, errs: &mut Vec<FieldError>) {
    for a in &s.all_of {
        validate(v, None, a, path, false, errs);
    }
    let passes = |n: &Node| {
        let mut e = Vec::new();
        validate(v, None, n, path, false, &mut e);
        e.is_empty()
    };
    if !s.any_of.is_empty() && !s.any_of.iter().any(passes) {
        errs.push(FieldError::invalid(
            path,
            "",
            format!("{path} must validate at least one schema (anyOf)"),
        ));
    }
    if !s.one_of.is_empty() && s.one_of.iter().filter(|n| passes(n)).count() != 1 {
        errs.push(FieldError::invalid(
            path,
            "",
            format!("{path} must validate one and only one schema (oneOf)"),
        ));
    }
    if let Some(not) = &s.not
        && passes(not)
    {
        errs.push(FieldError::invalid(
            path,
            "",
            format!("{path} must not validate the schema (not)"),
        ));
    }
}
