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

mod fields;

pub use fields::{FieldRequirement, FieldSelector};

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

#[cfg(test)]
mod tests;
