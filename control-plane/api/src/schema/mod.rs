//! The schema facts of the Kubernetes API types, in one place: the JSON schemas of the served
//! kinds and the extensions Kubernetes publishes with them.
//!
//! - [`property`] and [`struct_map_type`]: the list types, list-map keys, map types and
//!   strategic-merge-patch strategies and merge keys of every type k8s-openapi knows, taken from
//!   the `+listType`, `+listMapKey`, `+mapType`, `+structType`, `+patchStrategy` and
//!   `+patchMergeKey` markers of the Kubernetes API definitions (the generated table in
//!   `facts.rs`; `gen_facts.py` says how it is made).
//! - [`builtin_definitions`]: the OpenAPI v3 `components.schemas` of every built-in kind (with
//!   descriptions, from k8s-openapi's `schemars` schemas), those facts written into them as
//!   `x-kubernetes-*` extensions, and `x-kubernetes-group-version-kind` on each top-level kind and
//!   its list. [`to_v2`] turns one of them into its OpenAPI v2 (swagger) form.

use std::collections::BTreeMap;

use serde_json::Value;

mod definitions;
mod facts;
#[cfg(test)]
mod tests;

pub use definitions::{
    BuiltinKind, V2_REF_PREFIX, V3_REF_PREFIX, annotate, builtin_definitions, builtin_kinds,
    list_definition, to_v2,
};

/// `x-kubernetes-list-type`: how a list is merged (server-side apply) and compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListType {
    /// The list is one value, replaced whole.
    Atomic,
    /// Unique scalar items, merged as a set.
    Set,
    /// Items are objects identified by the [`PropertyFacts::list_map_keys`].
    Map,
}

impl ListType {
    /// The extension's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Atomic => "atomic",
            Self::Set => "set",
            Self::Map => "map",
        }
    }
}

/// `x-kubernetes-map-type` of a map or a struct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapType {
    /// The map or struct is one value, replaced whole.
    Atomic,
    /// Each key (field) is owned and merged on its own (the default).
    Granular,
}

impl MapType {
    /// The extension's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Atomic => "atomic",
            Self::Granular => "granular",
        }
    }
}

/// `x-kubernetes-patch-strategy`: how a strategic merge patch treats the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchStrategy {
    /// Lists are merged item by item (by [`PropertyFacts::patch_merge_key`] for objects).
    Merge,
    /// The patch's value replaces the field.
    Replace,
    /// Fields of the object absent from the patch are cleared (a union's other members).
    RetainKeys,
    /// Both `merge` and `retainKeys` (`volumes`, `resourceClaims`).
    MergeRetainKeys,
}

impl PatchStrategy {
    /// The extension's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Merge => "merge",
            Self::Replace => "replace",
            Self::RetainKeys => "retainKeys",
            Self::MergeRetainKeys => "merge,retainKeys",
        }
    }

    /// Whether lists are merged rather than replaced.
    pub fn merges(self) -> bool {
        matches!(self, Self::Merge | Self::MergeRetainKeys)
    }

    /// Whether absent fields of the object are cleared.
    pub fn retains_keys(self) -> bool {
        matches!(self, Self::RetainKeys | Self::MergeRetainKeys)
    }
}

/// What Kubernetes says about one property of one definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PropertyFacts {
    /// `x-kubernetes-list-type` of a list.
    pub list_type: Option<ListType>,
    /// `x-kubernetes-list-map-keys` of a `map` list, in order.
    pub list_map_keys: &'static [&'static str],
    /// `x-kubernetes-map-type` of a map (or of a field whose struct is atomic).
    pub map_type: Option<MapType>,
    /// `x-kubernetes-patch-strategy`.
    pub patch_strategy: Option<PatchStrategy>,
    /// `x-kubernetes-patch-merge-key`: the key a `merge` strategy matches list items by.
    pub patch_merge_key: Option<&'static str>,
}

/// The facts of `property` of `definition` (e.g. `io.k8s.api.core.v1.PodSpec`, `containers`),
/// or `None` when Kubernetes states none (a scalar, or a granular field).
pub fn property(definition: &str, property: &str) -> Option<&'static PropertyFacts> {
    facts::PROPERTIES
        .binary_search_by(|(d, p, _)| (*d, *p).cmp(&(definition, property)))
        .ok()
        .and_then(|i| facts::PROPERTIES.get(i))
        .map(|(_, _, facts)| facts)
}

/// The `x-kubernetes-map-type` of a whole definition (`+structType`, e.g. `LabelSelector` and
/// `ObjectReference` are atomic), or `None` for the granular default.
pub fn struct_map_type(definition: &str) -> Option<MapType> {
    facts::STRUCTS
        .binary_search_by(|(d, _)| (*d).cmp(definition))
        .ok()
        .and_then(|i| facts::STRUCTS.get(i))
        .map(|(_, map_type)| *map_type)
}

/// Every property with facts, by definition: how much the table covers.
pub fn coverage() -> BTreeMap<&'static str, usize> {
    let mut out = BTreeMap::new();
    for (definition, _, _) in facts::PROPERTIES {
        *out.entry(*definition).or_insert(0) += 1;
    }
    out
}

/// A definition name as its `$ref` under `prefix`.
pub fn reference(prefix: &str, definition: &str) -> Value {
    serde_json::json!({ "$ref": format!("{prefix}{definition}") })
}
