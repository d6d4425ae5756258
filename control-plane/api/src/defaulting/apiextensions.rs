//! apiextensions.k8s.io/v1 (`k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1/
//! defaults.go`): CustomResourceDefinitions.

use serde_json::{Value, json};

use super::fields::{Object, ensure_object, fill, fill_empty, object_mut, path_mut, text};

/// Applies the defaults of apiextensions.k8s.io/v1 kind `kind`.
pub(super) fn apply(kind: &str, root: &mut Object) {
    if kind == "CustomResourceDefinition"
        && let Some(spec) = object_mut(root, "spec")
    {
        crd_spec(spec);
    }
}

/// `SetDefaults_CustomResourceDefinitionSpec`: the singular is the lower-case kind, the list
/// kind `<Kind>List`, conversion `None`; a webhook service listens on 443.
fn crd_spec(spec: &mut Object) {
    if let Some(names) = object_mut(spec, "names") {
        let kind = text(names, "kind").to_owned();
        if !kind.is_empty() {
            fill_empty(names, "singular", json!(kind.to_ascii_lowercase()));
            fill_empty(names, "listKind", json!(format!("{kind}List")));
        }
    }
    if let Some(conversion) = ensure_object(spec, "conversion") {
        fill_empty(conversion, "strategy", json!("None"));
        if let Some(service) = path_mut(conversion, &["webhook", "clientConfig", "service"]) {
            fill(service, "port", Value::from(443));
        }
    }
}
