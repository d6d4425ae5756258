//! Field selectors (`?fieldSelector=spec.nodeName=n1,status.phase!=Failed`): Kubernetes'
//! syntax, limited to the fields each resource supports, matched against JSON objects.

use super::SelectorError;

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
