//! Field sets as structured-merge-diff keeps them (`sigs.k8s.io/structured-merge-diff`,
//! `fieldpath/set.go`, `serialize.go`, `serialize-pe.go`): a tree of path elements where a node
//! is a *member* (the path itself is in the set) and/or has children.
//!
//! Path elements are kept in their FieldsV1 spelling, which is canonical: `f:<name>` for a
//! field, `k:<json object>` for an item of a keyed list (its key fields, sorted by name, as
//! compact JSON), `v:<json>` for an item of a set list and `i:<n>` for a list index. Keys and
//! values are written the way Go's encoder writes them (`<`, `>` and `&` escaped), so that a set
//! read back from FieldsV1 and a set computed here compare equal.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

/// A set of field paths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldSet {
    nodes: BTreeMap<String, Node>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Node {
    member: bool,
    children: FieldSet,
}

/// Why a FieldsV1 document could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InvalidFields;

impl FieldSet {
    /// The empty set.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Whether no path is in the set.
    pub(crate) fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Adds `path` (a non-empty list of path elements).
    pub(crate) fn insert(&mut self, path: &[String]) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        let node = self.nodes.entry(first.clone()).or_default();
        if rest.is_empty() {
            node.member = true;
        } else {
            node.children.insert(rest);
        }
    }

    /// Whether `path` itself is in the set.
    #[cfg(test)]
    pub(crate) fn contains(&self, path: &[&str]) -> bool {
        let Some((first, rest)) = path.split_first() else {
            return false;
        };
        match self.nodes.get(*first) {
            None => false,
            Some(node) if rest.is_empty() => node.member,
            Some(node) => node.children.contains(rest),
        }
    }

    /// Adds every path of `other`.
    pub(crate) fn union_with(&mut self, other: &FieldSet) {
        for (pe, theirs) in &other.nodes {
            let mine = self.nodes.entry(pe.clone()).or_default();
            mine.member |= theirs.member;
            mine.children.union_with(&theirs.children);
        }
    }

    /// The paths of `self` that are not in `other`. Paths are compared exactly: removing a
    /// parent keeps its children and removing a child keeps its parent (`Set.Difference`).
    pub(crate) fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet::new();
        for (pe, mine) in &self.nodes {
            let node = match other.nodes.get(pe) {
                None => mine.clone(),
                Some(theirs) => Node {
                    member: mine.member && !theirs.member,
                    children: mine.children.difference(&theirs.children),
                },
            };
            if node.member || !node.children.is_empty() {
                out.nodes.insert(pe.clone(), node);
            }
        }
        out
    }

    /// The paths in both sets (`Set.Intersection`): exact per path, as [`Self::difference`].
    pub(crate) fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet::new();
        for (pe, mine) in &self.nodes {
            let Some(theirs) = other.nodes.get(pe) else {
                continue;
            };
            let node = Node {
                member: mine.member && theirs.member,
                children: mine.children.intersection(&theirs.children),
            };
            if node.member || !node.children.is_empty() {
                out.nodes.insert(pe.clone(), node);
            }
        }
        out
    }

    /// Whether the one-element path `pe` is in the set.
    pub(crate) fn has_member(&self, pe: &str) -> bool {
        self.nodes.get(pe).is_some_and(|node| node.member)
    }

    /// The paths under `pe`, without it (`Set.WithPrefix`); `None` when there are none.
    pub(crate) fn under(&self, pe: &str) -> Option<&FieldSet> {
        self.nodes
            .get(pe)
            .map(|node| &node.children)
            .filter(|children| !children.is_empty())
    }

    /// Every path of the set, in order.
    pub(crate) fn paths(&self) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        for (pe, node) in &self.nodes {
            if node.member {
                out.push(vec![pe.clone()]);
            }
            for mut path in node.children.paths() {
                path.insert(0, pe.clone());
                out.push(path);
            }
        }
        out
    }

    /// The set with more members: walking down from `state`, `descend(state, pe)` gives the
    /// state of child `pe` and whether `pe` itself becomes a member
    /// (`EnsureNamedFieldsAreMembers`, with the schema as the state).
    pub(crate) fn with_members<S: Copy>(
        &self,
        state: S,
        descend: &impl Fn(S, &str) -> (S, bool),
    ) -> FieldSet {
        let mut out = FieldSet::new();
        for (pe, node) in &self.nodes {
            let (child, member) = descend(state, pe);
            out.nodes.insert(
                pe.clone(),
                Node {
                    member: node.member || member,
                    children: node.children.with_members(child, descend),
                },
            );
        }
        out
    }

    /// The FieldsV1 document of the set: `{"f:a":{},"f:b":{".":{},"f:c":{}}}`.
    pub(crate) fn to_fields_v1(&self) -> Value {
        let mut map = Map::new();
        for (pe, node) in &self.nodes {
            let mut inner = match node.children.to_fields_v1() {
                Value::Object(inner) => inner,
                _ => Map::new(),
            };
            if node.member && !inner.is_empty() {
                inner.insert(".".to_owned(), Value::Object(Map::new()));
            }
            map.insert(pe.clone(), Value::Object(inner));
        }
        Value::Object(map)
    }

    /// Reads a FieldsV1 document. Path elements of a kind this version does not know (a letter
    /// other than `f`, `k`, `v`, `i`) are dropped, as structured-merge-diff drops them; keys and
    /// values are re-spelled canonically.
    pub(crate) fn from_fields_v1(fields: &Value) -> Result<FieldSet, InvalidFields> {
        Ok(read_level(fields)?.0)
    }
}

/// Reads one level of a FieldsV1 document: its children and whether it holds the `.` marker.
/// A level with no keys at all is a member too.
fn read_level(value: &Value) -> Result<(FieldSet, bool), InvalidFields> {
    let map = match value {
        Value::Object(map) => map,
        Value::Null => return Ok((FieldSet::new(), true)),
        _ => return Err(InvalidFields),
    };
    let mut set = FieldSet::new();
    let mut member = false;
    for (key, child) in map {
        if key == "." {
            member = true;
            continue;
        }
        let Some(pe) = canonical_path_element(key)? else {
            continue;
        };
        let (children, child_member) = read_level(child)?;
        if child_member || !children.is_empty() {
            let node = set.nodes.entry(pe).or_default();
            node.member |= child_member;
            node.children.union_with(&children);
        }
    }
    let member = member || map.is_empty();
    Ok((set, member))
}

/// The canonical spelling of a serialized path element, `None` for an unknown kind.
fn canonical_path_element(key: &str) -> Result<Option<String>, InvalidFields> {
    let mut chars = key.chars();
    let (Some(kind), Some(':')) = (chars.next(), chars.next()) else {
        return Err(InvalidFields);
    };
    let body = chars.as_str();
    Ok(Some(match kind {
        'f' => key.to_owned(),
        'v' => {
            let value: Value = serde_json::from_str(body).map_err(|_| InvalidFields)?;
            value_element(&value)
        }
        'k' => {
            let Value::Object(fields) = serde_json::from_str(body).map_err(|_| InvalidFields)?
            else {
                return Err(InvalidFields);
            };
            key_element(fields.iter().map(|(k, v)| (k.as_str(), v)))
        }
        'i' => {
            let index: i64 = body.parse().map_err(|_| InvalidFields)?;
            format!("i:{index}")
        }
        _ => return Ok(None),
    }))
}

/// The path element of a field.
pub(crate) fn field_element(name: &str) -> String {
    format!("f:{name}")
}

/// The path element of a set-list item.
pub(crate) fn value_element(value: &Value) -> String {
    let mut out = String::from("v:");
    write_go_json(value, &mut out);
    out
}

/// The path element of a keyed-list item from its key fields (sorted here by name).
pub(crate) fn key_element<'a>(fields: impl Iterator<Item = (&'a str, &'a Value)>) -> String {
    let sorted: BTreeMap<&str, &Value> = fields.collect();
    let mut out = String::from("k:{");
    for (i, (name, value)) in sorted.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_go_string(name, &mut out);
        out.push(':');
        write_go_json(value, &mut out);
    }
    out.push('}');
    out
}

/// Compact JSON as Go's encoder writes it: object keys sorted, `<`, `>`, `&`, U+2028 and
/// U+2029 escaped.
pub(crate) fn write_go_json(value: &Value, out: &mut String) {
    match value {
        Value::Null | Value::Bool(_) | Value::Number(_) => out.push_str(&value.to_string()),
        Value::String(s) => write_go_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_json(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let sorted: BTreeMap<&String, &Value> = map.iter().collect();
            out.push('{');
            for (i, (key, item)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_go_string(key, out);
                out.push(':');
                write_go_json(item, out);
            }
            out.push('}');
        }
    }
}

/// A JSON string as Go's encoder writes it.
pub(crate) fn write_go_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn path(elements: &[&str]) -> Vec<String> {
        elements.iter().map(|e| (*e).to_owned()).collect()
    }

    #[test]
    fn a_node_that_is_a_member_and_has_children_gets_the_dot_marker() {
        let mut set = FieldSet::new();
        set.insert(&path(&["f:metadata", "f:labels"]));
        set.insert(&path(&["f:metadata", "f:labels", "f:app"]));
        set.insert(&path(&["f:spec", "f:replicas"]));
        assert_eq!(
            set.to_fields_v1().to_string(),
            r#"{"f:metadata":{"f:labels":{".":{},"f:app":{}}},"f:spec":{"f:replicas":{}}}"#
        );
    }

    #[test]
    fn fields_v1_reads_back_to_the_same_set() {
        let doc = json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:image": {}}}},
            "f:finalizers": {".": {}, "v:\"x\"": {}},
        });
        let set = FieldSet::from_fields_v1(&doc).expect("valid FieldsV1");
        assert!(set.contains(&["f:metadata", "f:labels"]));
        assert!(!set.contains(&["f:metadata"]));
        assert!(set.contains(&["f:spec", "f:containers", "k:{\"name\":\"web\"}", "f:image"]));
        assert_eq!(set.to_fields_v1(), doc);
    }

    #[test]
    fn keys_and_values_are_respelled_canonically() {
        let doc =
            json!({"k:{ \"protocol\": \"TCP\", \"containerPort\": 80 }": {}, "v:\"a&b\"": {}});
        let set = FieldSet::from_fields_v1(&doc).expect("valid FieldsV1");
        assert_eq!(
            set.to_fields_v1(),
            json!({"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {}, "v:\"a\\u0026b\"": {}})
        );
    }

    #[test]
    fn malformed_fields_are_rejected_and_unknown_kinds_dropped() {
        assert_eq!(
            FieldSet::from_fields_v1(&json!({"x": {}})),
            Err(InvalidFields)
        );
        assert_eq!(
            FieldSet::from_fields_v1(&json!({"f:a": 1})),
            Err(InvalidFields)
        );
        assert_eq!(FieldSet::from_fields_v1(&json!("f:a")), Err(InvalidFields));
        assert_eq!(
            FieldSet::from_fields_v1(&json!({"k:[1]": {}})),
            Err(InvalidFields)
        );
        let set = FieldSet::from_fields_v1(&json!({"z:future": {}, "f:a": {}})).expect("valid");
        assert_eq!(set.to_fields_v1(), json!({"f:a": {}}));
    }

    #[test]
    fn difference_is_exact_per_path() {
        let mut owned = FieldSet::new();
        owned.insert(&path(&["f:metadata", "f:labels"]));
        owned.insert(&path(&["f:metadata", "f:labels", "f:app"]));
        owned.insert(&path(&["f:metadata", "f:labels", "f:tier"]));
        let mut taken = FieldSet::new();
        taken.insert(&path(&["f:metadata", "f:labels", "f:app"]));
        assert_eq!(
            owned.difference(&taken).to_fields_v1(),
            json!({"f:metadata": {"f:labels": {".": {}, "f:tier": {}}}})
        );
        let mut parent = FieldSet::new();
        parent.insert(&path(&["f:metadata", "f:labels"]));
        assert_eq!(
            owned.difference(&parent).to_fields_v1(),
            json!({"f:metadata": {"f:labels": {"f:app": {}, "f:tier": {}}}})
        );
    }
}
