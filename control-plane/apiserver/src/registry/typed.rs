//! Decoding an object as its k8s-openapi type, to learn which of its fields the type does not
//! know: kube-apiserver's decoder drops them (`fieldValidation=Ignore`), warns about them
//! (`Warn`, the default) or refuses the object (`Strict`), naming each as
//! `unknown field "spec.template.spec.containers[0].foo"`.

use serde::de::DeserializeOwned;
use serde_json::Value;

/// One step of a path into a JSON document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A field of an object.
    Key(String),
    /// An item of a list.
    Index(usize),
}

/// The paths of the fields a type ignored, in document order.
pub type UnknownFields = Vec<Vec<Step>>;

/// Decodes `value` as `T` and collects the paths of the fields `T` ignored.
pub fn typed<T: DeserializeOwned>(value: &Value) -> Result<UnknownFields, serde_json::Error> {
    let mut unknown = Vec::new();
    serde_ignored::deserialize::<_, _, T>(value, |path| unknown.push(steps(&path)))?;
    Ok(unknown)
}

fn steps(path: &serde_ignored::Path<'_>) -> Vec<Step> {
    use serde_ignored::Path;
    let mut out = match path {
        Path::Root => return Vec::new(),
        Path::Seq { parent, .. }
        | Path::Map { parent, .. }
        | Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => steps(parent),
    };
    match path {
        Path::Seq { index, .. } => out.push(Step::Index(*index)),
        Path::Map { key, .. } => out.push(Step::Key(key.clone())),
        _ => {}
    }
    out
}

/// How kube-apiserver names a field path: `spec.containers[0].foo`.
pub(crate) fn render(path: &[Step]) -> String {
    let mut out = String::new();
    for step in path {
        match step {
            Step::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Removes the field at `path` from `value` (nothing when it is not there).
pub(crate) fn remove(value: &mut Value, path: &[Step]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = value;
    for step in parents {
        let next = match (step, node) {
            (Step::Key(key), Value::Object(map)) => map.get_mut(key),
            (Step::Index(i), Value::Array(items)) => items.get_mut(*i),
            _ => None,
        };
        match next {
            Some(next) => node = next,
            None => return,
        }
    }
    if let (Step::Key(key), Value::Object(map)) = (last, node) {
        map.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::{apps::v1::Deployment, core::v1::ConfigMap};
    use serde_json::json;

    use super::*;

    #[test]
    fn unknown_fields_are_named_as_kube_apiserver_names_them() {
        let mut deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "unknownMeta": 1},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "unknown1": true,
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                    {"name": "a", "image": "x"},
                    {"name": "b", "image": "x", "unknownNested": "y"},
                ]}},
            },
        });
        let unknown = typed::<Deployment>(&deployment).expect("decodes");
        let names: Vec<String> = unknown.iter().map(|p| render(p)).collect();
        assert_eq!(
            names,
            [
                "metadata.unknownMeta",
                "spec.template.spec.containers[1].unknownNested",
                "spec.unknown1",
            ]
        );
        for path in &unknown {
            remove(&mut deployment, path);
        }
        assert_eq!(
            typed::<Deployment>(&deployment).expect("decodes"),
            Vec::<Vec<Step>>::new()
        );
        assert_eq!(
            deployment["spec"]["template"]["spec"]["containers"][1],
            json!({"name": "b", "image": "x"})
        );
    }

    #[test]
    fn a_value_of_the_wrong_type_is_the_decoders_error() {
        let error =
            typed::<ConfigMap>(&json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"a": 1}}))
                .expect_err("data values are strings");
        assert!(
            error.to_string().contains("invalid type: integer `1`"),
            "{error}"
        );
    }
}
