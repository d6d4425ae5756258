//! Reading and filling JSON fields the way Kubernetes' Go types see them.
//!
//! Kubernetes decodes a JSON object into Go structs before defaulting, so what counts as "not
//! set" depends on the Go type of the field:
//! - a pointer (`*int32`, `*bool`, `*Struct`): absent or `null` ([`unset`], [`fill`]);
//! - a plain string or number: also `""` or `0`, which Go cannot tell from absent ([`zero`],
//!   [`fill_zero`]);
//! - a slice or map the defaulter checks with `len(...) == 0`: also `[]` or `{}` ([`empty`],
//!   [`fill_empty`]).

use serde_json::{Map, Value};

/// A JSON object: the working form of every Kubernetes struct here.
pub(super) type Object = Map<String, Value>;

/// Absent or `null`: a nil pointer once Kubernetes has decoded it.
pub(super) fn unset(object: &Object, key: &str) -> bool {
    object.get(key).is_none_or(Value::is_null)
}

/// The Go zero value of a plain field: absent, `null`, `""` or `0`.
pub(super) fn zero(object: &Object, key: &str) -> bool {
    match object.get(key) {
        None | Some(Value::Null) => true,
        Some(Value::String(text)) => text.is_empty(),
        Some(Value::Number(number)) => number.as_f64() == Some(0.0),
        Some(_) => false,
    }
}

/// Absent, `null`, `[]` or `{}`: what `len(...) == 0` is true of.
pub(super) fn empty(object: &Object, key: &str) -> bool {
    match object.get(key) {
        None | Some(Value::Null) => true,
        Some(Value::Array(items)) => items.is_empty(),
        Some(Value::Object(map)) => map.is_empty(),
        Some(_) => false,
    }
}

/// Sets `key` when it is [`unset`] (a pointer field).
pub(super) fn fill(object: &mut Object, key: &str, value: Value) {
    if unset(object, key) {
        object.insert(key.to_owned(), value);
    }
}

/// Sets `key` when it is [`zero`] (a plain string or number field).
pub(super) fn fill_zero(object: &mut Object, key: &str, value: Value) {
    if zero(object, key) {
        object.insert(key.to_owned(), value);
    }
}

/// Sets `key` when it is [`empty`] (a slice or map checked by length).
pub(super) fn fill_empty(object: &mut Object, key: &str, value: Value) {
    if empty(object, key) {
        object.insert(key.to_owned(), value);
    }
}

/// The string at `key`, or `""` when it is absent or not a string.
pub(super) fn text<'a>(object: &'a Object, key: &str) -> &'a str {
    object.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The object at `key`, when there is one.
pub(super) fn object_mut<'a>(object: &'a mut Object, key: &str) -> Option<&'a mut Object> {
    object.get_mut(key).and_then(Value::as_object_mut)
}

/// The object at `key`, created empty when the field is [`unset`] (a struct Kubernetes always
/// has, like `spec`). `None` when the client sent something else there: validation reports it.
pub(super) fn ensure_object<'a>(object: &'a mut Object, key: &str) -> Option<&'a mut Object> {
    if unset(object, key) {
        object.insert(key.to_owned(), Value::Object(Map::new()));
    }
    object_mut(object, key)
}

/// The elements of the list at `key` that are objects.
pub(super) fn objects_mut<'a>(
    object: &'a mut Object,
    key: &str,
) -> impl Iterator<Item = &'a mut Object> {
    object
        .get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

/// The object at a path of keys, when every step is an object.
pub(super) fn path_mut<'a>(object: &'a mut Object, path: &[&str]) -> Option<&'a mut Object> {
    path.iter()
        .try_fold(object, |current, key| object_mut(current, key))
}
