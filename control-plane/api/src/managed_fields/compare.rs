//! The comparison structured-merge-diff makes between the live and the new object
//! (`typed/compare.go`): which paths were added, modified or removed.
//!
//! Leaves (scalars, atomic values, and maps or lists empty on both sides) are compared by
//! value. A granular map, keyed or set list, or list item is walked member by member, and its
//! own path is *added* when the old object lacked it and *removed* when the new one does: that
//! is what gives a FieldsV1 node its `.` marker.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::fieldset::{FieldSet, field_element, key_element, value_element};
use super::schema::{SchemaRef, Shape, Zero};

/// The paths that differ between two objects.
#[derive(Debug, Default)]
pub(crate) struct Comparison {
    pub(crate) added: FieldSet,
    pub(crate) modified: FieldSet,
    pub(crate) removed: FieldSet,
}

/// Compares `old` (`None`: absent) with `new` at the root of an object of shape `root`,
/// leaving out the subtrees under the `ignored` field paths (`[["status"]]`).
pub(crate) fn compare(
    old: Option<&Value>,
    new: Option<&Value>,
    root: Shape<'_>,
    ignored: &[&[&str]],
) -> Comparison {
    let mut walker = Walker {
        out: Comparison::default(),
        ignored: ignored
            .iter()
            .map(|path| path.iter().map(|name| field_element(name)).collect())
            .collect(),
        path: Vec::new(),
    };
    walker.walk(old, new, root);
    walker.out
}

struct Walker {
    out: Comparison,
    ignored: Vec<Vec<String>>,
    path: Vec<String>,
}

impl Walker {
    fn walk(&mut self, old: Option<&Value>, new: Option<&Value>, shape: Shape<'_>) {
        if self.ignored.contains(&self.path) {
            return;
        }
        if old.is_none() && new.is_none() {
            return;
        }
        let either = |f: fn(&Value) -> bool| old.is_some_and(f) || new.is_some_and(f);
        match shape {
            _ if shape.is_atomic() => self.leaf(old, new),
            _ if either(Value::is_object) => self.map(old, new, shape),
            _ if shape.is_list() && either(Value::is_array) => self.list(old, new, shape),
            _ => self.leaf(old, new),
        }
    }

    fn leaf(&mut self, old: Option<&Value>, new: Option<&Value>) {
        match (old, new) {
            (None, Some(_)) => self.out.added.insert(&self.path),
            (Some(_), None) => self.out.removed.insert(&self.path),
            (Some(old), Some(new)) if !equal(old, new) => self.out.modified.insert(&self.path),
            _ => {}
        }
    }

    /// Records the container's own path once its members are walked.
    fn container(&mut self, old: Option<&Value>, new: Option<&Value>) {
        if self.path.is_empty() {
            return;
        }
        match (old, new) {
            (None, Some(_)) => self.out.added.insert(&self.path),
            (Some(_), None) => self.out.removed.insert(&self.path),
            _ => {}
        }
    }

    /// A present value of the wrong kind counts as an empty container that also changed.
    fn mismatch(&mut self, old: Option<&Value>, new: Option<&Value>, fits: fn(&Value) -> bool) {
        let odd = |v: Option<&Value>| v.is_some_and(|v| !v.is_null() && !fits(v));
        if odd(old) || odd(new) {
            self.out.modified.insert(&self.path);
        }
    }

    fn map(&mut self, old: Option<&Value>, new: Option<&Value>, shape: Shape<'_>) {
        let empty = Map::new();
        let lhs = old.and_then(Value::as_object);
        let rhs = new.and_then(Value::as_object);
        if lhs.is_none_or(Map::is_empty) && rhs.is_none_or(Map::is_empty) {
            return self.leaf(old, new);
        }
        self.mismatch(old, new, Value::is_object);
        let (lhs, rhs) = (lhs.unwrap_or(&empty), rhs.unwrap_or(&empty));
        let mut keys: Vec<&String> = lhs.keys().chain(rhs.keys()).collect();
        keys.sort();
        keys.dedup();
        for key in keys {
            let (l, r) = (lhs.get(key), rhs.get(key));
            let container = |v: Option<&Value>| v.is_some_and(|v| v.is_object() || v.is_array());
            // Two scalars compare as leaves whatever their shape: it is not looked up.
            let member = if container(l) || container(r) {
                shape.member(key)
            } else {
                shape.scalar()
            };
            self.path.push(field_element(key));
            self.walk(l, r, member);
            self.path.pop();
        }
        self.container(old, new);
    }

    fn list(&mut self, old: Option<&Value>, new: Option<&Value>, shape: Shape<'_>) {
        let lhs = old.and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
        let rhs = new.and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
        if lhs.is_empty() && rhs.is_empty() {
            return self.leaf(old, new);
        }
        self.mismatch(old, new, Value::is_array);
        let (lhs, rhs) = (index(lhs, shape), index(rhs, shape));
        let elements: BTreeSet<&String> = lhs.keys().chain(rhs.keys()).collect();
        let item_shape = shape.item();
        for pe in elements {
            let (l, r) = (lhs.get(pe).copied(), rhs.get(pe).copied());
            self.path.push(pe.clone());
            self.walk(l, r, item_shape);
            self.path.pop();
        }
        self.container(old, new);
    }
}

/// The path element of every item of a set or keyed list; an item that cannot have one (a
/// keyed item that is not an object or lacks every key) is left out, and of items with the
/// same element the first counts.
fn index<'v>(items: &'v [Value], shape: Shape<'_>) -> BTreeMap<String, &'v Value> {
    let mut out = BTreeMap::new();
    for item in items {
        if let Some(pe) = path_element(item, shape) {
            out.entry(pe).or_insert(item);
        }
    }
    out
}

pub(crate) fn path_element(item: &Value, shape: Shape<'_>) -> Option<String> {
    match shape.keys() {
        Some(keys) => {
            let fields = item.as_object()?;
            let present = keys.iter().filter_map(|(k, default)| {
                fields.get(k).or(default.as_ref()).map(|v| (k.as_str(), v))
            });
            let pe = key_element(present);
            (pe != "k:{}").then_some(pe)
        }
        None => Some(value_element(item)),
    }
}

/// Value equality as structured-merge-diff has it: numbers compare by value (`1` equals `1.0`).
fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y || ((x.is_f64() || y.is_f64()) && x.as_f64() == y.as_f64())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| equal(v, w)))
        }
        _ => a == b,
    }
}

/// Gives a decoded object of this shape the members kube-apiserver's typed object has: what
/// Go always writes (non-pointer structs as `{}`, lists without `omitempty` and zero times as
/// `null`) is added, and what it never writes (empty lists and maps under `omitempty`) is
/// taken out, so that two objects compare as typed objects do whether or not a client sent
/// those members. Custom kinds (a `Deduced` root) are compared as sent, as kube-apiserver
/// compares unstructured objects.
pub(crate) fn materialize(value: &mut Value, root: SchemaRef<'_>) {
    normalize(value, root.shape, root.builtin);
}

fn normalize(value: &mut Value, shape: Shape<'_>, builtin: bool) {
    match value {
        Value::Object(map) => {
            let always: &[(&str, Zero)] = shape.always();
            for (name, zero) in always {
                map.entry(*name).or_insert_with(|| match zero {
                    Zero::Object => Value::Object(Map::new()),
                    Zero::Null => Value::Null,
                });
            }
            if shape.is_atomic() {
                return;
            }
            map.retain(|name, child| {
                let kept = || always.iter().any(|(n, _)| n == name);
                match child {
                    Value::Array(items) if items.is_empty() => !builtin || kept(),
                    Value::Object(fields) if fields.is_empty() => {
                        !shape.member(name).omitted_when_empty() || kept()
                    }
                    _ => true,
                }
            });
            for (name, child) in map.iter_mut() {
                // Scalars have nothing to normalize: their shape is not looked up.
                if child.is_object() || child.is_array() {
                    normalize(child, shape.member(name), builtin);
                }
            }
        }
        Value::Array(items) if shape.keys().is_some() => {
            for child in items {
                normalize(child, shape.item(), builtin);
            }
        }
        _ => {}
    }
}
