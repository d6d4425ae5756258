//! Label and field selectors, parsed from the query strings clients send (`?labelSelector=`,
//! `?fieldSelector=`) with Kubernetes' syntax and error messages, and matched against objects.

use std::collections::BTreeMap;

/// One label requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelRequirement {
    /// `key=value` or `key==value`.
    Equals(String, String),
    /// `key!=value`: the label is absent or has another value.
    NotEquals(String, String),
    /// `key in (a,b)`.
    In(String, Vec<String>),
    /// `key notin (a,b)`: absent or another value.
    NotIn(String, Vec<String>),
    /// `key`: the label exists.
    Exists(String),
    /// `!key`: the label does not exist.
    DoesNotExist(String),
}

/// A parsed label selector: every requirement must hold. Empty matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    /// The requirements, in the order given.
    pub requirements: Vec<LabelRequirement>,
}

/// Why a selector could not be parsed. `Display` is the message the API returns (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// The selector text does not follow the grammar.
    #[error("unable to parse requirement: {0}")]
    Syntax(String),
    /// A label key is not a valid qualified name.
    #[error("invalid label key \"{key}\": {reason}")]
    InvalidKey { key: String, reason: String },
    /// A label value is not valid.
    #[error("invalid label value: \"{value}\": {reason}")]
    InvalidValue { value: String, reason: String },
    /// A field selector names a field this resource cannot be selected by.
    #[error("field label not supported: {0}")]
    UnsupportedField(String),
    /// A field selector uses an operator other than `=`, `==`, `!=`.
    #[error("invalid field selector: operator {0} is not supported")]
    UnsupportedOperator(String),
}

impl LabelSelector {
    /// Parses `labelSelector` text, e.g. `app=web,tier in (fe,be),!canary`.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            requirements.push(parse_requirement(part)?);
        }
        Ok(Self { requirements })
    }

    /// Whether `labels` satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| match r {
            LabelRequirement::Equals(k, v) => labels.get(k) == Some(v),
            LabelRequirement::NotEquals(k, v) => labels.get(k) != Some(v),
            LabelRequirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            LabelRequirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            LabelRequirement::Exists(k) => labels.contains_key(k),
            LabelRequirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }

    /// Whether the selector has no requirement (matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn parse_requirement(part: &str) -> Result<LabelRequirement, SelectorError> {
    if let Some(key) = part.strip_prefix('!') {
        let key = key.trim();
        validate_key(key)?;
        return Ok(LabelRequirement::DoesNotExist(key.to_owned()));
    }
    for (op, build) in [
        (
            "==",
            LabelRequirement::Equals as fn(String, String) -> LabelRequirement,
        ),
        ("!=", LabelRequirement::NotEquals),
        ("=", LabelRequirement::Equals),
    ] {
        if let Some((key, value)) = part.split_once(op) {
            let (key, value) = (key.trim(), value.trim());
            validate_key(key)?;
            validate_value(value)?;
            return Ok(build(key.to_owned(), value.to_owned()));
        }
    }
    let words: Vec<&str> = part.splitn(2, char::is_whitespace).collect();
    if let [key, rest] = words.as_slice() {
        let rest = rest.trim_start();
        let (negated, list) = if let Some(list) = rest.strip_prefix("notin") {
            (true, list)
        } else if let Some(list) = rest.strip_prefix("in") {
            (false, list)
        } else {
            return Err(SelectorError::Syntax(part.to_owned()));
        };
        let list = list.trim();
        let inner = list
            .strip_prefix('(')
            .and_then(|l| l.strip_suffix(')'))
            .ok_or_else(|| SelectorError::Syntax(part.to_owned()))?;
        let values: Vec<String> = inner
            .split(',')
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .collect();
        if values.is_empty() {
            return Err(SelectorError::Syntax(part.to_owned()));
        }
        validate_key(key)?;
        for v in &values {
            validate_value(v)?;
        }
        let key = (*key).to_owned();
        return Ok(if negated {
            LabelRequirement::NotIn(key, values)
        } else {
            LabelRequirement::In(key, values)
        });
    }
    let key = part.trim();
    if key.contains(char::is_whitespace) || key.contains(['(', ')']) {
        return Err(SelectorError::Syntax(part.to_owned()));
    }
    validate_key(key)?;
    Ok(LabelRequirement::Exists(key.to_owned()))
}

/// A qualified name: optional DNS-1123 subdomain prefix and `/`, then a name of at most 63
/// characters, alphanumeric at both ends, `-`, `_`, `.` inside.
fn validate_key(key: &str) -> Result<(), SelectorError> {
    let invalid = |reason: &str| SelectorError::InvalidKey {
        key: key.to_owned(),
        reason: reason.to_owned(),
    };
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        crate::names::validate_dns1123_subdomain(prefix)
            .map_err(|e| invalid(&format!("prefix part {e}")))?;
    }
    if name.is_empty() {
        return Err(invalid("name part must be non-empty"));
    }
    if !is_label_value(name) {
        return Err(invalid(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start \
             and end with an alphanumeric character",
        ));
    }
    Ok(())
}

/// A label value: empty, or at most 63 characters, alphanumeric at both ends, `-_.` inside.
fn validate_value(value: &str) -> Result<(), SelectorError> {
    if value.is_empty() || is_label_value(value) {
        Ok(())
    } else {
        Err(SelectorError::InvalidValue {
            value: value.to_owned(),
            reason: "a valid label must be an empty string or consist of alphanumeric \
                     characters, '-', '_' or '.', and must start and end with an alphanumeric \
                     character"
                .to_owned(),
        })
    }
}

fn is_label_value(v: &str) -> bool {
    let b = v.as_bytes();
    v.len() <= 63
        && b.first().is_some_and(u8::is_ascii_alphanumeric)
        && b.last().is_some_and(u8::is_ascii_alphanumeric)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// One field requirement: `path=value` (`==` too) or `path!=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// The field path, e.g. `spec.nodeName`.
    pub field: String,
    /// The value compared with (an absent field compares as "").
    pub value: String,
    /// `!=` instead of `=`.
    pub negated: bool,
}

/// A parsed field selector: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    /// The requirements.
    pub requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    /// Parses `fieldSelector` text, accepting only the fields in `supported` (besides
    /// `metadata.name` and `metadata.namespace`, which every resource supports).
    pub fn parse(text: &str, supported: &[&str]) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, value, negated) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, true)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, v, false)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, v, false)
            } else {
                return Err(SelectorError::UnsupportedOperator(part.to_owned()));
            };
            let field = field.trim();
            if !matches!(field, "metadata.name" | "metadata.namespace")
                && !supported.contains(&field)
            {
                return Err(SelectorError::UnsupportedField(field.to_owned()));
            }
            requirements.push(FieldRequirement {
                field: field.to_owned(),
                value: value.trim().to_owned(),
                negated,
            });
        }
        Ok(Self { requirements })
    }

    /// Whether the object (JSON) satisfies every requirement. A field path walks the object's
    /// maps; a missing field, a null or a non-scalar compares as "".
    pub fn matches(&self, object: &serde_json::Value) -> bool {
        self.requirements.iter().all(|r| {
            let actual = r
                .field
                .split('.')
                .try_fold(object, |v, segment| v.get(segment))
                .map(|v| match v {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Bool(b) => b.to_string(),
                    serde_json::Value::Number(n) => n.to_string(),
                    _ => String::new(),
                })
                .unwrap_or_default();
            (actual == r.value) != r.negated
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn parses_every_label_operator() {
        let s = LabelSelector::parse(
            "app=web, tier==fe,env!=prod,zone in (a, b),x notin (y),has,!gone",
        )
        .expect("valid");
        assert_eq!(
            s.requirements,
            vec![
                LabelRequirement::Equals("app".into(), "web".into()),
                LabelRequirement::Equals("tier".into(), "fe".into()),
                LabelRequirement::NotEquals("env".into(), "prod".into()),
                LabelRequirement::In("zone".into(), vec!["a".into(), "b".into()]),
                LabelRequirement::NotIn("x".into(), vec!["y".into()]),
                LabelRequirement::Exists("has".into()),
                LabelRequirement::DoesNotExist("gone".into()),
            ]
        );
    }

    #[test]
    fn matches_like_kubernetes() {
        let s = LabelSelector::parse("app=web,env!=prod,zone in (a,b),!canary").expect("valid");
        assert!(s.matches(&labels(&[("app", "web"), ("zone", "a")])));
        assert!(s.matches(&labels(&[("app", "web"), ("zone", "b"), ("env", "dev")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("zone", "c")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("zone", "a"), ("env", "prod")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("zone", "a"), ("canary", "")])));
        let notin = LabelSelector::parse("x notin (y)").expect("valid");
        assert!(notin.matches(&labels(&[])), "absent labels satisfy notin");
        assert!(
            LabelSelector::parse("")
                .expect("empty")
                .matches(&labels(&[]))
        );
    }

    #[test]
    fn rejects_bad_selectors_with_kubernetes_messages() {
        assert!(matches!(
            LabelSelector::parse("app in ()"),
            Err(SelectorError::Syntax(_))
        ));
        assert!(matches!(
            LabelSelector::parse("a b c"),
            Err(SelectorError::Syntax(_))
        ));
        let err = LabelSelector::parse("-bad=x").expect_err("invalid key");
        assert!(
            err.to_string().starts_with("invalid label key \"-bad\""),
            "{err}"
        );
        let err = LabelSelector::parse("app=we b").expect_err("invalid value");
        assert!(err.to_string().starts_with("invalid label value"), "{err}");
        assert!(LabelSelector::parse("example.com/app=x").is_ok());
        assert!(LabelSelector::parse("Bad_Prefix!/app=x").is_err());
    }

    #[test]
    fn field_selectors_match_paths_and_reject_unknown_fields() {
        let pod = json!({"metadata": {"name": "p", "namespace": "default"},
                         "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let supported = ["spec.nodeName", "status.phase"];
        let s = FieldSelector::parse("spec.nodeName=n1,status.phase!=Failed", &supported)
            .expect("valid");
        assert!(s.matches(&pod));
        let s = FieldSelector::parse("spec.nodeName=", &supported).expect("valid");
        assert!(!s.matches(&pod));
        assert!(
            s.matches(&json!({"spec": {}})),
            "unscheduled pods have an empty nodeName"
        );
        let s = FieldSelector::parse("metadata.name==p", &[]).expect("valid");
        assert!(s.matches(&pod));
        let err = FieldSelector::parse("spec.foo=x", &supported).expect_err("unsupported");
        assert_eq!(err.to_string(), "field label not supported: spec.foo");
        assert!(FieldSelector::parse("spec.nodeName", &supported).is_err());
    }
}
