//! Structural schemas of CustomResourceDefinitions, as `k8s.io/apiextensions-apiserver` checks
//! and applies them (v1.33): a version's `openAPIV3Schema` is compiled once into a
//! [`Structural`], which then prunes, defaults and validates custom resources (OpenAPI keywords
//! plus `x-kubernetes-validations` CEL rules). Pure: no IO.
//!
//! Simpler than kube, each said again where it is done:
//! - CEL is the `cel` crate (no static type checker): a rule that names an undeclared field or
//!   function is refused as cel-go would, but type mismatches (`self.replicas == 'a'`) only
//!   show when the rule runs. The Kubernetes libraries are partly there (`library`); durations
//!   and timestamps are nanosecond integers.
//! - The cost estimate follows cel-go's main factors, not its every function (`cost`); at run
//!   time the same estimate over the sizes actually present bounds each evaluation before it
//!   starts, instead of counting as it goes.
//! - Not checked: structural completeness (properties named under junctors), `title` and
//!   `description` under junctors, the root-schema restrictions of the status subresource, the
//!   values of an embedded resource's ObjectMeta (only its field names); list-type set/map
//!   equality in CEL is ordered.

pub(crate) mod cel;
mod checks;
pub(crate) mod cost;
mod formats;
pub(crate) mod library;
mod mutate;
pub(crate) mod path;
pub(crate) mod schema;
mod validate;

#[cfg(test)]
mod rule_tests;
#[cfg(test)]
mod tests;

pub use formats::go_duration_nanos;
use serde_json::Value;

use crate::validation::{ErrorType, FieldError};
use schema::Node;

/// One CRD version's schema, checked and compiled once.
#[derive(Debug, Clone)]
pub struct Structural {
    root: Node,
    /// Whether any node has `x-kubernetes-validations`.
    has_rules: bool,
    /// The depth of the deepest compiled expression, for the stack evaluation needs.
    depth: usize,
}

impl Structural {
    /// `schema` is `spec.versions[i].schema.openAPIV3Schema` (JSON); `path` is that field's path
    /// for errors. Refuses a non-structural schema, bad patterns, defaults that do not validate,
    /// CEL rules that do not compile or whose estimated cost exceeds kube's limits -- as kube's
    /// field errors.
    pub fn compile(schema: &Value, path: &str) -> Result<Structural, Vec<FieldError>> {
        cel::with_stack(|| Self::compile_here(schema, path))
    }

    fn compile_here(schema: &Value, path: &str) -> Result<Structural, Vec<FieldError>> {
        // kube's order: the root's nullable, the structural invariants (sorted), the defaults
        // (only for a structural schema), the OpenAPI checks, then the rules.
        let mut errs = checks::nullable_root(schema, path);
        let mut root = Node::read(schema);
        let structural = checks::structural(&root, path);
        let defaults_checked = structural.is_empty();
        errs.extend(structural);
        if defaults_checked {
            errs.extend(default_errors(&root, path));
        }
        errs.extend(checks::openapi_checks(schema, path));
        if errs.is_empty() {
            let mut total = cel::Total::default();
            let place = cel::Place {
                cardinality: 1,
                uncorrelatable: None,
                resource: true,
            };
            cel::compile_tree(&mut root, path, &place, &mut total, &mut errs);
            cel::total_errors(&total, path, &mut errs);
        }
        if errs.is_empty() {
            errs.extend(default_rule_errors(&root, path));
        }
        if errs.is_empty() {
            let has_rules = has_rules(&root);
            let depth = deepest_rule(&root);
            Ok(Structural {
                root,
                has_rules,
                depth,
            })
        } else {
            Err(errs)
        }
    }

    /// Applies `default`s (kube's order: after pruning, defaults of absent fields, recursively,
    /// incl. in list items and map values). A `null` field whose schema is neither nullable
    /// nor defaulted is removed first, as kube does.
    pub fn default(&self, object: &mut Value) {
        mutate::default(object, &self.root, 0);
    }

    /// Drops fields the schema does not know (honouring `x-kubernetes-preserve-unknown-fields`
    /// and `x-kubernetes-embedded-resource`, whose apiVersion/kind/metadata are kept); returns
    /// the dropped paths, sorted (kube words them `unknown field "spec.foo"`).
    pub fn prune(&self, object: &mut Value) -> Vec<String> {
        let mut dropped = Vec::new();
        mutate::prune(object, &self.root, true, "", &mut dropped);
        dropped.sort();
        dropped
    }

    /// OpenAPI validation (type, format, enum, min/max, lengths, pattern, required, nullable,
    /// int-or-string, maxItems, list-type set/map uniqueness) plus every
    /// `x-kubernetes-validations` rule; transition rules (those that use `oldSelf`) only when
    /// `old` is Some and the value existed there. On update, values unchanged from `old` are
    /// not held to the schema or to rules without `oldSelf` (kube's ratcheting: an object
    /// stays updatable after its CRD tightens). CEL runs only when the OpenAPI validation
    /// has no type, required, enum or size error (as kube), within kube's per-call and
    /// per-object cost limits.
    pub fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate::validate(object, old, &self.root, "", true, &mut errs);
        if !self.has_rules {
            return errs;
        }
        // kube skips CEL when the object does not have the shape its rules were written for.
        let blocking = errs.iter().any(|e| {
            matches!(
                e.kind,
                ErrorType::NotSupported
                    | ErrorType::Required
                    | ErrorType::TooLong
                    | ErrorType::TooMany
                    | ErrorType::TypeInvalid
            )
        });
        if blocking {
            errs.push(FieldError::invalid(
                "<nil>",
                "null",
                "some validation rules were not checked because the object was invalid; correct the existing errors to complete validation",
            ));
        } else {
            let mut run = cel::Run::new();
            cel::with_stack_for(self.depth, || {
                cel::eval_tree(object, old, &self.root, "", true, &mut run, 0);
            });
            errs.extend(run.errs);
        }
        errs
    }
}

/// `ValidateDefaults`: every default is pruned already and validates against its own schema.
/// Like kube, this does not look into `additionalProperties`.
fn default_errors(root: &Node, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut stack: Vec<(&Node, String)> = vec![(root, path.to_owned())];
    while let Some((n, at)) = stack.pop() {
        if let Some(d) = &n.default {
            let mut pruned = d.clone();
            let mut dropped = Vec::new();
            mutate::prune(&mut pruned, n, n.embedded, "", &mut dropped);
            if !dropped.is_empty() {
                errs.push(FieldError::invalid(
                    &path::child(&at, "default"),
                    d.clone(),
                    "must not have unknown fields",
                ));
            }
            let mut found = Vec::new();
            validate::validate(d, None, n, "", false, &mut found);
            let here = path::child(&at, "default");
            for mut e in found {
                e.field = if e.field.is_empty() {
                    here.clone()
                } else {
                    path::child(&here, &e.field)
                };
                errs.push(e);
            }
        }
        for (k, p) in &n.properties {
            stack.push((p, path::key(&path::child(&at, "properties"), k)));
        }
        if let Some(items) = &n.items {
            stack.push((items, path::child(&at, "items")));
        }
    }
    errs
}

/// kube also runs the `x-kubernetes-validations` rules on every default (as a create: no
/// `oldSelf`), reporting under the schema's `default`.
fn default_rule_errors(root: &Node, path: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut stack: Vec<(&Node, String)> = vec![(root, path.to_owned())];
    while let Some((n, at)) = stack.pop() {
        if let Some(d) = &n.default {
            let mut run = cel::Run::new();
            let here = path::child(&at, "default");
            cel::eval_tree(d, None, n, &here, n.embedded, &mut run, 0);
            errs.extend(run.errs);
        }
        for (k, p) in &n.properties {
            stack.push((p, path::key(&path::child(&at, "properties"), k)));
        }
        if let Some(ap) = n.additional_schema() {
            stack.push((ap, path::child(&at, "additionalProperties")));
        }
        if let Some(items) = &n.items {
            stack.push((items, path::child(&at, "items")));
        }
    }
    errs
}

fn has_rules(n: &Node) -> bool {
    !n.rules.is_empty()
        || n.properties.values().any(has_rules)
        || n.additional_schema().is_some_and(has_rules)
        || n.items.as_deref().is_some_and(has_rules)
}

fn deepest_rule(n: &Node) -> usize {
    let here = n.rules.iter().map(|r| r.depth).max().unwrap_or(0);
    let below = n
        .properties
        .values()
        .map(deepest_rule)
        .chain(n.additional_schema().map(deepest_rule))
        .chain(n.items.as_deref().map(deepest_rule))
        .max()
        .unwrap_or(0);
    here.max(below)
}
