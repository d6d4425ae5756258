//! Label and field selectors, parsed from the query strings clients send (`?labelSelector=`,
//! `?fieldSelector=`) with Kubernetes' syntax and error messages, and matched against objects.
//!
//! The typed selectors of objects convert to the same [`LabelSelector`], with Kubernetes' rules:
//! a `metav1.LabelSelector` ([`LabelSelector::from_label_selector`], `LabelSelectorAsSelector`),
//! a map of labels ([`LabelSelector::from_set`], `SelectorFromSet`), a Service's selector
//! ([`service_selector`]) and a node affinity's `NodeSelector` ([`node_selector_matches`],
//! component-helpers `nodeaffinity`). Its `Display` is the `labelSelector` query text
//! (`labels.Selector.String()`).

use std::{collections::BTreeMap, fmt};

use k8s_openapi::{
    api::core::v1::{NodeSelector, NodeSelectorRequirement, NodeSelectorTerm},
    apimachinery::pkg::apis::meta::v1 as metav1,
};

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
    /// `key>n`: the label's value is an integer greater than `n` (node affinity's `Gt`).
    GreaterThan(String, i64),
    /// `key<n`: the label's value is an integer less than `n` (node affinity's `Lt`).
    LessThan(String, i64),
}

impl LabelRequirement {
    /// The label key it is about.
    pub fn key(&self) -> &str {
        match self {
            Self::Equals(k, _)
            | Self::NotEquals(k, _)
            | Self::In(k, _)
            | Self::NotIn(k, _)
            | Self::Exists(k)
            | Self::DoesNotExist(k)
            | Self::GreaterThan(k, _)
            | Self::LessThan(k, _) => k,
        }
    }

    /// Whether `labels` satisfy it. `NotEquals`, `NotIn` and `DoesNotExist` hold for an
    /// absent label; `GreaterThan`/`LessThan` need a label whose value is an integer.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let integer = |k: &String| labels.get(k).and_then(|v| v.parse::<i64>().ok());
        match self {
            Self::Equals(k, v) => labels.get(k) == Some(v),
            Self::NotEquals(k, v) => labels.get(k) != Some(v),
            Self::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Self::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
            Self::Exists(k) => labels.contains_key(k),
            Self::DoesNotExist(k) => !labels.contains_key(k),
            Self::GreaterThan(k, n) => integer(k).is_some_and(|v| v > *n),
            Self::LessThan(k, n) => integer(k).is_some_and(|v| v < *n),
        }
    }
}

/// Kubernetes' `Requirement.String()`: `k=v`, `k!=v`, `k in (a,b)` (values sorted), `k`,
/// `!k`, `k>n`.
impl fmt::Display for LabelRequirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sorted = |values: &[String]| {
            let mut values = values.to_vec();
            values.sort();
            values.join(",")
        };
        match self {
            Self::Equals(k, v) => write!(f, "{k}={v}"),
            Self::NotEquals(k, v) => write!(f, "{k}!={v}"),
            Self::In(k, vs) => write!(f, "{k} in ({})", sorted(vs)),
            Self::NotIn(k, vs) => write!(f, "{k} notin ({})", sorted(vs)),
            Self::Exists(k) => write!(f, "{k}"),
            Self::DoesNotExist(k) => write!(f, "!{k}"),
            Self::GreaterThan(k, n) => write!(f, "{k}>{n}"),
            Self::LessThan(k, n) => write!(f, "{k}<{n}"),
        }
    }
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
    /// A typed selector's requirement has an operator Kubernetes does not know.
    #[error("{0:?} is not a valid label selector operator")]
    InvalidOperator(String),
    /// A typed selector's requirement has the wrong number or kind of values for its operator.
    #[error("values: Invalid value: {values}: {reason}")]
    InvalidValues {
        /// The values, written as Kubernetes shows them (`[]string{"a"}`, `[]string(nil)`).
        values: String,
        /// What is wrong with them.
        reason: String,
    },
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
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Kubernetes' `LabelSelectorAsSelector` for a selector that is present: `matchLabels` as
    /// `key=value` and `matchExpressions` (`In`, `NotIn`, `Exists`, `DoesNotExist`) as the
    /// same requirements, keys and values validated; an empty selector matches everything.
    /// (An absent one matches nothing: see [`label_selector_matches`].)
    pub fn from_label_selector(selector: &metav1::LabelSelector) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for (key, value) in selector.match_labels.iter().flatten() {
            validate_key(key)?;
            validate_value(value)?;
            requirements.push(LabelRequirement::Equals(key.clone(), value.clone()));
        }
        for e in selector.match_expressions.iter().flatten() {
            if !matches!(
                e.operator.as_str(),
                "In" | "NotIn" | "Exists" | "DoesNotExist"
            ) {
                return Err(SelectorError::InvalidOperator(e.operator.clone()));
            }
            requirements.push(requirement(&e.key, &e.operator, e.values.as_deref())?);
        }
        Ok(Self { requirements })
    }

    /// Kubernetes' `SelectorFromSet`: every label of `set` with its value (`key=value`); an
    /// empty set matches everything.
    pub fn from_set(set: &BTreeMap<String, String>) -> Self {
        Self {
            requirements: set
                .iter()
                .map(|(k, v)| LabelRequirement::Equals(k.clone(), v.clone()))
                .collect(),
        }
    }

    /// A node affinity term's `matchExpressions` (Kubernetes' `nodeSelectorRequirementsAsSelector`):
    /// `In`, `NotIn`, `Exists`, `DoesNotExist`, and `Gt`/`Lt` with exactly one integer value.
    pub fn from_node_selector_requirements(
        requirements: &[NodeSelectorRequirement],
    ) -> Result<Self, SelectorError> {
        let requirements = requirements
            .iter()
            .map(|r| requirement(&r.key, &r.operator, r.values.as_deref()))
            .collect::<Result<_, _>>()?;
        Ok(Self { requirements })
    }

    /// Whether the selector has no requirement (matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

/// Kubernetes' `labels.Selector.String()`: the requirements sorted by key, joined by `,` (empty
/// for a selector that matches everything) — the text for a `labelSelector` query.
impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut sorted: Vec<&LabelRequirement> = self.requirements.iter().collect();
        sorted.sort_by(|a, b| a.key().cmp(b.key()));
        for (i, r) in sorted.into_iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// One requirement of a typed selector, validated as Kubernetes' `NewRequirement` does.
fn requirement(
    key: &str,
    operator: &str,
    values: Option<&[String]>,
) -> Result<LabelRequirement, SelectorError> {
    validate_key(key)?;
    let list = values.unwrap_or_default();
    let invalid = |reason: &str| SelectorError::InvalidValues {
        values: match values {
            None => "[]string(nil)".to_owned(),
            Some(vs) => format!(
                "[]string{{{}}}",
                vs.iter()
                    .map(|v| format!("{v:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
        reason: reason.to_owned(),
    };
    let key = key.to_owned();
    let requirement = match operator {
        "In" | "NotIn" if list.is_empty() => {
            return Err(invalid(
                "for 'in', 'notin' operators, values set can't be empty",
            ));
        }
        "In" => LabelRequirement::In(key, list.to_vec()),
        "NotIn" => LabelRequirement::NotIn(key, list.to_vec()),
        "Exists" | "DoesNotExist" if !list.is_empty() => {
            return Err(invalid(
                "values set must be empty for exists and does not exist",
            ));
        }
        "Exists" => LabelRequirement::Exists(key),
        "DoesNotExist" => LabelRequirement::DoesNotExist(key),
        "Gt" | "Lt" => {
            let [value] = list else {
                return Err(invalid(
                    "for 'Gt', 'Lt' operators, exactly one value is required",
                ));
            };
            let n = value
                .parse::<i64>()
                .map_err(|_| invalid("for 'Gt', 'Lt' operators, the value must be an integer"))?;
            if operator == "Gt" {
                LabelRequirement::GreaterThan(key, n)
            } else {
                LabelRequirement::LessThan(key, n)
            }
        }
        other => return Err(SelectorError::InvalidOperator(other.to_owned())),
    };
    for v in list {
        validate_value(v)?;
    }
    Ok(requirement)
}

/// Whether `labels` match a typed selector, by Kubernetes' rules: an absent selector matches
/// nothing, an empty one everything, and one Kubernetes would refuse (an unknown operator,
/// `In` without values, an invalid key) nothing.
pub fn label_selector_matches(
    selector: Option<&metav1::LabelSelector>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector
        .and_then(|s| LabelSelector::from_label_selector(s).ok())
        .is_some_and(|s| s.matches(labels))
}

/// The pods a Service's `spec.selector` selects: `None` when it has none or an empty one (the
/// Service's endpoints are not managed; Kubernetes' JSON drops an empty map, so both look
/// the same there), else every label of the map.
pub fn service_selector(selector: Option<&BTreeMap<String, String>>) -> Option<LabelSelector> {
    selector
        .filter(|s| !s.is_empty())
        .map(LabelSelector::from_set)
}

/// Whether a node (its name and labels) matches a required node affinity: any term matches
/// (Kubernetes' `nodeaffinity.NodeSelector.Match`).
pub fn node_selector_matches(
    selector: &NodeSelector,
    node_name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector
        .node_selector_terms
        .iter()
        .any(|term| node_selector_term_matches(term, node_name, labels))
}

/// Whether a node matches one node selector term: its `matchExpressions` on the labels and
/// its `matchFields` on the node's fields all hold. A term with neither matches nothing, and
/// so does one Kubernetes cannot parse (an unknown operator, a `Gt` without one integer value,
/// a field requirement other than `In`/`NotIn` with exactly one value). The only node field is
/// `metadata.name`; another field compares as empty.
pub fn node_selector_term_matches(
    term: &NodeSelectorTerm,
    node_name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    let expressions = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if expressions.is_empty() && fields.is_empty() {
        return false;
    }
    let labels_match = expressions.is_empty()
        || LabelSelector::from_node_selector_requirements(expressions)
            .is_ok_and(|s| s.matches(labels));
    let field_requirements: Option<Vec<(bool, &str, &str)>> = fields
        .iter()
        .map(|r| match (r.operator.as_str(), r.values.as_deref()) {
            ("In", Some([value])) => Some((false, r.key.as_str(), value.as_str())),
            ("NotIn", Some([value])) => Some((true, r.key.as_str(), value.as_str())),
            _ => None,
        })
        .collect();
    let Some(field_requirements) = field_requirements else {
        return false;
    };
    // Like Kubernetes, a node without a name has no fields to check.
    let fields_match = node_name.is_empty()
        || field_requirements.iter().all(|(negated, key, value)| {
            let actual = if *key == "metadata.name" {
                node_name
            } else {
                ""
            };
            (actual == *value) != *negated
        });
    labels_match && fields_match
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
    for (op, greater) in [('>', true), ('<', false)] {
        if let Some((key, value)) = part.split_once(op) {
            let (key, value) = (key.trim(), value.trim());
            validate_key(key)?;
            validate_value(value)?;
            let n = value
                .parse::<i64>()
                .map_err(|_| SelectorError::InvalidValues {
                    values: format!("[]string{{{value:?}}}"),
                    reason: "for 'Gt', 'Lt' operators, the value must be an integer".to_owned(),
                })?;
            let key = key.to_owned();
            return Ok(if greater {
                LabelRequirement::GreaterThan(key, n)
            } else {
                LabelRequirement::LessThan(key, n)
            });
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

    fn expression(key: &str, operator: &str, values: &[&str]) -> metav1::LabelSelectorRequirement {
        metav1::LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).into()).collect()),
        }
    }

    /// A typed selector -> its query text, or Kubernetes' error message.
    #[test]
    fn typed_label_selectors_convert_like_label_selector_as_selector() {
        let selector = |labels: &[(&str, &str)], expressions| metav1::LabelSelector {
            match_labels: (!labels.is_empty()).then(|| self::labels(labels)),
            match_expressions: Some(expressions),
        };
        for (typed, expected) in [
            (selector(&[], vec![]), Ok("")),
            (
                selector(
                    &[("app", "web")],
                    vec![expression("tier", "In", &["b", "a"])],
                ),
                Ok("app=web,tier in (a,b)"),
            ),
            (
                selector(
                    &[("z", "1")],
                    vec![
                        expression("canary", "DoesNotExist", &[]),
                        expression("env", "NotIn", &["prod"]),
                        expression("a", "Exists", &[]),
                    ],
                ),
                Ok("a,!canary,env notin (prod),z=1"),
            ),
            (
                selector(&[], vec![expression("tier", "Matches", &["a"])]),
                Err("\"Matches\" is not a valid label selector operator"),
            ),
            (
                selector(&[], vec![expression("tier", "In", &[])]),
                Err(
                    "values: Invalid value: []string(nil): for 'in', 'notin' operators, values \
                     set can't be empty",
                ),
            ),
            (
                selector(&[], vec![expression("tier", "Exists", &["a"])]),
                Err(
                    "values: Invalid value: []string{\"a\"}: values set must be empty for \
                     exists and does not exist",
                ),
            ),
            (
                selector(&[], vec![expression("tier", "Gt", &["1"])]),
                Err("\"Gt\" is not a valid label selector operator"),
            ),
            (
                selector(&[("-bad", "x")], vec![]),
                Err(
                    "invalid label key \"-bad\": name part must consist of alphanumeric \
                     characters, '-', '_' or '.', and must start and end with an alphanumeric \
                     character",
                ),
            ),
        ] {
            let converted = LabelSelector::from_label_selector(&typed);
            assert_eq!(
                converted
                    .as_ref()
                    .map(ToString::to_string)
                    .map_err(ToString::to_string),
                expected.map(str::to_owned).map_err(str::to_owned),
                "{typed:?}"
            );
            if let Ok(s) = converted {
                let text = s.to_string();
                let parsed = LabelSelector::parse(&text).expect("the text parses back");
                assert_eq!(parsed.to_string(), text);
            }
        }
    }

    #[test]
    fn typed_label_selectors_match_like_kubernetes() {
        let web = labels(&[("app", "web"), ("tier", "b")]);
        let selector = metav1::LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![expression("tier", "In", &["a", "b"])]),
        };
        assert!(label_selector_matches(Some(&selector), &web));
        assert!(!label_selector_matches(
            Some(&selector),
            &labels(&[("app", "web")])
        ));
        assert!(!label_selector_matches(
            Some(&selector),
            &labels(&[("app", "db"), ("tier", "a")])
        ));
        assert!(
            label_selector_matches(Some(&metav1::LabelSelector::default()), &web),
            "empty matches everything"
        );
        assert!(
            !label_selector_matches(None, &web),
            "absent matches nothing"
        );
        let invalid = metav1::LabelSelector {
            match_expressions: Some(vec![expression("tier", "Matches", &[])]),
            ..metav1::LabelSelector::default()
        };
        assert!(
            !label_selector_matches(Some(&invalid), &web),
            "invalid matches nothing"
        );
    }

    #[test]
    fn set_and_service_selectors() {
        let pod = labels(&[("app", "web"), ("tier", "fe")]);
        let set = labels(&[("tier", "fe"), ("app", "web")]);
        assert_eq!(LabelSelector::from_set(&set).to_string(), "app=web,tier=fe");
        assert!(LabelSelector::from_set(&set).matches(&pod));
        assert!(LabelSelector::from_set(&BTreeMap::new()).matches(&pod));
        assert!(service_selector(Some(&set)).is_some_and(|s| s.matches(&pod)));
        assert_eq!(service_selector(Some(&BTreeMap::new())), None);
        assert_eq!(service_selector(None), None);
    }

    #[test]
    fn greater_and_less_than() {
        let s = LabelSelector::parse("cores>4,gen<3").expect("valid");
        assert_eq!(
            s.requirements,
            vec![
                LabelRequirement::GreaterThan("cores".into(), 4),
                LabelRequirement::LessThan("gen".into(), 3),
            ]
        );
        assert_eq!(s.to_string(), "cores>4,gen<3");
        assert!(s.matches(&labels(&[("cores", "8"), ("gen", "2")])));
        assert!(!s.matches(&labels(&[("cores", "4"), ("gen", "2")])));
        assert!(!s.matches(&labels(&[("cores", "many"), ("gen", "2")])));
        assert!(!s.matches(&labels(&[("gen", "2")])));
        let err = LabelSelector::parse("cores>four").expect_err("not an integer");
        assert_eq!(
            err.to_string(),
            "values: Invalid value: []string{\"four\"}: for 'Gt', 'Lt' operators, the value \
             must be an integer"
        );
    }

    fn node_requirement(key: &str, operator: &str, values: &[&str]) -> NodeSelectorRequirement {
        NodeSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: (!values.is_empty()).then(|| values.iter().map(|v| (*v).into()).collect()),
        }
    }

    /// (matchExpressions, matchFields) of one term -> whether node `n1` with zone=a, cores=8
    /// matches.
    #[test]
    fn node_selector_terms() {
        let node = labels(&[("zone", "a"), ("cores", "8")]);
        let term = |expressions: Vec<NodeSelectorRequirement>,
                    fields: Vec<NodeSelectorRequirement>| NodeSelectorTerm {
            match_expressions: (!expressions.is_empty()).then_some(expressions),
            match_fields: (!fields.is_empty()).then_some(fields),
        };
        let r = node_requirement;
        for (term, expected) in [
            (term(vec![], vec![]), false),
            (term(vec![r("zone", "In", &["a", "b"])], vec![]), true),
            (term(vec![r("zone", "NotIn", &["a"])], vec![]), false),
            (term(vec![r("gpu", "DoesNotExist", &[])], vec![]), true),
            (term(vec![r("zone", "Exists", &[])], vec![]), true),
            (term(vec![r("cores", "Gt", &["4"])], vec![]), true),
            (term(vec![r("cores", "Lt", &["4"])], vec![]), false),
            (term(vec![r("cores", "Gt", &["4", "5"])], vec![]), false),
            (term(vec![r("cores", "Gt", &["four"])], vec![]), false),
            (term(vec![r("zone", "Matches", &["a"])], vec![]), false),
            (term(vec![], vec![r("metadata.name", "In", &["n1"])]), true),
            (term(vec![], vec![r("metadata.name", "In", &["n2"])]), false),
            (
                term(vec![], vec![r("metadata.name", "NotIn", &["n2"])]),
                true,
            ),
            (
                term(vec![], vec![r("metadata.name", "In", &["n1", "n2"])]),
                false,
            ),
            (term(vec![], vec![r("metadata.name", "Exists", &[])]), false),
            (
                term(
                    vec![r("zone", "In", &["a"])],
                    vec![r("metadata.name", "In", &["n1"])],
                ),
                true,
            ),
            (
                term(
                    vec![r("zone", "In", &["b"])],
                    vec![r("metadata.name", "In", &["n1"])],
                ),
                false,
            ),
        ] {
            assert_eq!(
                node_selector_term_matches(&term, "n1", &node),
                expected,
                "{term:?}"
            );
        }
        let selector = NodeSelector {
            node_selector_terms: vec![
                term(vec![r("zone", "In", &["b"])], vec![]),
                term(vec![r("zone", "In", &["a"])], vec![]),
            ],
        };
        assert!(
            node_selector_matches(&selector, "n1", &node),
            "terms are ORed"
        );
        assert!(!node_selector_matches(
            &NodeSelector::default(),
            "n1",
            &node
        ));
    }
}
