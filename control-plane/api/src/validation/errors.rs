//! Field errors as kube-apiserver reports them (`k8s.io/apimachinery/pkg/util/validation/field`,
//! v1.33): the error types, how a bad value is printed, and the `Status` message that
//! `errors.NewInvalid` builds from a list of them.

use std::fmt;

use serde_json::Value;

/// Why a field is invalid; one-to-one with `metav1.CauseType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorType {
    /// `FieldValueNotFound`: a referenced value does not exist (e.g. a volume mount's volume).
    NotFound,
    /// `FieldValueRequired`: a required value is missing or empty.
    Required,
    /// `FieldValueDuplicate`: a value that must be unique is repeated.
    Duplicate,
    /// `FieldValueInvalid`: a malformed or out-of-range value.
    Invalid,
    /// `FieldValueNotSupported`: a value outside an enumeration.
    NotSupported,
    /// `FieldValueForbidden`: a valid value that is not allowed here.
    Forbidden,
    /// `FieldValueTooLong`: a value longer than allowed (the value is not printed).
    TooLong,
    /// `FieldValueTooMany`: a list with too many items.
    TooMany,
    /// `InternalError`: not the user's fault.
    Internal,
    /// `FieldValueTypeInvalid`: the value does not have the schema's type.
    TypeInvalid,
}

impl ErrorType {
    /// The `metav1.CauseType` string (`reason` of a `StatusCause`).
    pub fn reason(self) -> &'static str {
        match self {
            Self::NotFound => "FieldValueNotFound",
            Self::Required => "FieldValueRequired",
            Self::Duplicate => "FieldValueDuplicate",
            Self::Invalid => "FieldValueInvalid",
            Self::NotSupported => "FieldValueNotSupported",
            Self::Forbidden => "FieldValueForbidden",
            Self::TooLong => "FieldValueTooLong",
            Self::TooMany => "FieldValueTooMany",
            Self::Internal => "InternalError",
            Self::TypeInvalid => "FieldValueTypeInvalid",
        }
    }

    /// The words that start the message (`ErrorType.String()` in Go).
    pub fn words(self) -> &'static str {
        match self {
            Self::NotFound => "Not found",
            Self::Required => "Required value",
            Self::Duplicate => "Duplicate value",
            Self::Invalid | Self::TypeInvalid => "Invalid value",
            Self::NotSupported => "Unsupported value",
            Self::Forbidden => "Forbidden",
            Self::TooLong => "Too long",
            Self::TooMany => "Too many",
            Self::Internal => "Internal error",
        }
    }
}

/// One field-level validation error.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// The kind of error.
    pub kind: ErrorType,
    /// The field path, e.g. `spec.template.spec.containers[0].name`.
    pub field: String,
    /// The offending value; `None` when Kubernetes omits it from the message.
    pub value: Option<Value>,
    /// The explanation after the value (may be empty).
    pub detail: String,
    /// For `NotSupported`: the values that would have been accepted (also in `detail`).
    pub supported: Vec<String>,
    /// How kube-apiserver prints the value when it is a Go struct or typed nil rather than a
    /// JSON scalar (e.g. `intstr.IntOrString{Type:0, IntVal:0, StrVal:""}`); overrides `value`
    /// in [`FieldError::message`].
    pub rendered: Option<String>,
}

impl FieldError {
    fn new(kind: ErrorType, field: &str, value: Option<Value>, detail: String) -> Self {
        Self {
            kind,
            field: field.to_owned(),
            value,
            detail,
            supported: Vec::new(),
            rendered: None,
        }
    }

    /// `field.Required`.
    pub fn required(field: &str, detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Required, field, None, detail.into())
    }

    /// `field.Forbidden`.
    pub fn forbidden(field: &str, detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Forbidden, field, None, detail.into())
    }

    /// `field.Invalid`.
    pub fn invalid(field: &str, value: impl Into<Value>, detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Invalid, field, Some(value.into()), detail.into())
    }

    /// `field.Invalid` with a value Go prints in its own syntax (`%#v` of a struct).
    pub fn invalid_rendered(field: &str, rendered: String, detail: impl Into<String>) -> Self {
        let mut e = Self::new(ErrorType::Invalid, field, None, detail.into());
        e.rendered = Some(rendered);
        e
    }

    /// `field.Invalid` with the value left out (`field.OmitValueType{}`).
    pub fn invalid_omitted(field: &str, detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Invalid, field, None, detail.into())
    }

    /// `field.Duplicate`.
    pub fn duplicate(field: &str, value: impl Into<Value>) -> Self {
        Self::new(
            ErrorType::Duplicate,
            field,
            Some(value.into()),
            String::new(),
        )
    }

    /// `field.NotFound`.
    pub fn not_found(field: &str, value: impl Into<Value>) -> Self {
        Self::new(
            ErrorType::NotFound,
            field,
            Some(value.into()),
            String::new(),
        )
    }

    /// `field.NotSupported`: the detail lists the supported values, each quoted.
    pub fn not_supported(field: &str, value: impl Into<Value>, supported: &[&str]) -> Self {
        let detail = if supported.is_empty() {
            String::new()
        } else {
            let quoted: Vec<String> = supported.iter().map(|s| go_quote(s)).collect();
            format!("supported values: {}", quoted.join(", "))
        };
        let mut e = Self::new(ErrorType::NotSupported, field, Some(value.into()), detail);
        e.supported = supported.iter().map(|s| (*s).to_owned()).collect();
        e
    }

    /// `field.TooLong` (1.33: "may not be more than N bytes"; the value is never printed).
    pub fn too_long(field: &str, max: usize) -> Self {
        Self::new(
            ErrorType::TooLong,
            field,
            None,
            format!("may not be more than {max} bytes"),
        )
    }

    /// `field.TooMany`.
    pub fn too_many(field: &str, actual: usize, max: usize) -> Self {
        Self::new(
            ErrorType::TooMany,
            field,
            Some(Value::from(actual)),
            format!("must have at most {max} items"),
        )
    }

    /// `field.InternalError`.
    pub fn internal(field: &str, detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Internal, field, None, detail.into())
    }

    /// The `metav1.CauseType` of this error, e.g. `FieldValueInvalid`.
    pub fn reason(&self) -> &'static str {
        self.kind.reason()
    }

    /// The message without the field (`ErrorBody()`), e.g.
    /// `Invalid value: "Foo": a lowercase RFC 1123 label must ...` or `Required value`.
    pub fn message(&self) -> String {
        let mut s = self.kind.words().to_owned();
        let prints_value = !matches!(
            self.kind,
            ErrorType::Required | ErrorType::Forbidden | ErrorType::TooLong | ErrorType::Internal
        );
        if prints_value {
            if let Some(rendered) = &self.rendered {
                s.push_str(": ");
                s.push_str(rendered);
            } else if let Some(value) = &self.value {
                s.push_str(": ");
                s.push_str(&go_value(value));
            }
        }
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }

    /// The `StatusCause` JSON for `Status.details.causes`.
    pub fn status_cause(&self) -> Value {
        serde_json::json!({
            "reason": self.reason(),
            "message": self.message(),
            "field": self.field,
        })
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message())
    }
}

/// The `Status` message of a 422, as `errors.NewInvalid` writes it:
/// `Deployment.apps "web" is invalid: spec.selector: Required value` for one error and
/// `... is invalid: [a: ..., b: ...]` for several (identical messages are shown once).
pub fn summary(kind_qualified: &str, name: &str, errors: &[FieldError]) -> String {
    let mut seen: Vec<String> = Vec::new();
    for e in errors {
        let text = e.to_string();
        if !seen.contains(&text) {
            seen.push(text);
        }
    }
    let head = format!("{kind_qualified} {} is invalid", go_quote(name));
    match seen.as_slice() {
        [] => head,
        [one] => format!("{head}: {one}"),
        many => format!("{head}: [{}]", many.join(", ")),
    }
}

/// Go's `strconv.Quote`: double quotes, Go escapes for control and non-printable characters.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            ' ' => out.push(' '),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() || c.is_whitespace() => {
                if (c as u32) <= 0xffff {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// How Go's `%v`/`%q`/`%#v` (as `ErrorBody` picks them) prints a JSON value: strings quoted,
/// numbers and booleans bare, string lists as `[]string{"a", "b"}`, string maps as
/// `map[string]string{"k":"v"}`, anything else as compact JSON.
pub fn go_value(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::String(s) => go_quote(s),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Array(items) if items.iter().all(Value::is_string) => {
            let parts: Vec<String> = items.iter().map(go_value).collect();
            format!("[]string{{{}}}", parts.join(", "))
        }
        Value::Object(map) if map.values().all(Value::is_string) => {
            let parts: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}:{}", go_quote(k), go_value(v)))
                .collect();
            format!("map[string]string{{{}}}", parts.join(", "))
        }
        other => other.to_string(),
    }
}
