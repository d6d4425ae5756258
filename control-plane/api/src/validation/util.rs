//! Field paths (`field.Path` in Go) and small readers for the JSON objects being validated.

use serde_json::{Map, Value};

use super::errors::FieldError;

/// A field path as Kubernetes prints it: `spec.containers[0].ports[1].name`, `data[key]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Path(String);

impl Path {
    /// A root element (`field.NewPath(name)`); an empty name prints as `[]`, as in Go.
    pub(crate) fn root(name: &str) -> Self {
        if name.is_empty() {
            Self("[]".to_owned())
        } else {
            Self(name.to_owned())
        }
    }

    /// `p.Child(name)`.
    pub(crate) fn child(&self, name: &str) -> Self {
        Self(format!("{}.{name}", self.0))
    }

    /// `p.Index(i)`.
    pub(crate) fn index(&self, i: usize) -> Self {
        Self(format!("{}[{i}]", self.0))
    }

    /// `p.Key(k)`.
    pub(crate) fn key(&self, k: &str) -> Self {
        Self(format!("{}[{k}]", self.0))
    }

    /// The printed path.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// The list of errors a check adds to.
pub(crate) type Errs = Vec<FieldError>;

/// The member `key`, unless absent or `null`.
pub(crate) fn get<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

/// A string member, if present.
pub(crate) fn str_opt<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// A string member, `""` when absent (Go's zero value).
pub(crate) fn str_or<'a>(v: &'a Value, key: &str) -> &'a str {
    str_opt(v, key).unwrap_or("")
}

/// An integer member, if present.
pub(crate) fn int_opt(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(Value::as_i64)
}

/// An integer member, `0` when absent.
pub(crate) fn int_or(v: &Value, key: &str) -> i64 {
    int_opt(v, key).unwrap_or(0)
}

/// A boolean member, if present.
pub(crate) fn bool_opt(v: &Value, key: &str) -> Option<bool> {
    v.get(key).and_then(Value::as_bool)
}

/// An array member, empty when absent.
pub(crate) fn arr<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// An object member, if present.
pub(crate) fn obj<'a>(v: &'a Value, key: &str) -> Option<&'a Map<String, Value>> {
    v.get(key).and_then(Value::as_object)
}

/// The strings of an array member.
pub(crate) fn strings<'a>(v: &'a Value, key: &str) -> Vec<&'a str> {
    arr(v, key).iter().filter_map(Value::as_str).collect()
}

/// A `map[string]string` member as sorted pairs (non-string values are skipped).
pub(crate) fn string_map<'a>(v: &'a Value, key: &str) -> Vec<(&'a str, &'a str)> {
    obj(v, key)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.as_str(), s)))
                .collect()
        })
        .unwrap_or_default()
}

/// `null` for a missing member, so a lookup chain never fails.
pub(crate) static NULL: Value = Value::Null;

/// The member `key` or `null`.
pub(crate) fn at<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key).unwrap_or(&NULL)
}

/// How Go's `%#v` prints a `map[string]string` (nil when absent).
pub(crate) fn go_string_map(v: Option<&Value>) -> String {
    match v.and_then(Value::as_object) {
        None => "map[string]string(nil)".to_owned(),
        Some(m) => super::errors::go_value(&Value::Object(m.clone())),
    }
}

/// How Go's `%#v` prints a `[]string` (nil when absent).
pub(crate) fn go_string_slice(v: Option<&Value>) -> String {
    match v.and_then(Value::as_array) {
        None => "[]string(nil)".to_owned(),
        Some(items) => {
            let parts: Vec<String> = items
                .iter()
                .map(|i| super::errors::go_quote(i.as_str().unwrap_or_default()))
                .collect();
            format!("[]string{{{}}}", parts.join(", "))
        }
    }
}

/// How Go's `%#v` prints an `intstr.IntOrString` value.
pub(crate) fn go_int_or_string(v: &Value) -> String {
    match v {
        Value::String(s) => format!(
            "intstr.IntOrString{{Type:1, IntVal:0, StrVal:{}}}",
            super::errors::go_quote(s)
        ),
        other => format!(
            "intstr.IntOrString{{Type:0, IntVal:{}, StrVal:\"\"}}",
            other.as_i64().unwrap_or(0)
        ),
    }
}
