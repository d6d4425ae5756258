//! Decoding request bodies into JSON values while noticing what kube-apiserver's strict
//! decoder notices: a key given twice in one object (`duplicate field "metadata.name"`).
//! The last value wins, as in Go's decoder.

use std::{cell::RefCell, fmt};

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::FieldValidation;
use crate::ApiError;

/// Parses a JSON body; returns the value and the paths of duplicated keys (in document
/// order, as `spec.template.spec.containers[0].name`). Malformed JSON, or JSON nested deeper
/// than serde_json's recursion limit, is a 400.
pub(crate) fn parse_json(bytes: &[u8]) -> Result<(Value, Vec<String>), ApiError> {
    let duplicates = RefCell::new(Vec::new());
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = Seed {
        path: Path::Root,
        duplicates: &duplicates,
    }
    .deserialize(&mut deserializer)
    .and_then(|value| deserializer.end().map(|()| value))
    .map_err(|e| {
        ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
    })?;
    Ok((value, duplicates.into_inner()))
}

/// Parses a YAML body (one document). A key given twice is an error in `Strict` mode; the
/// last one wins otherwise.
pub(crate) fn parse_yaml(bytes: &[u8], validation: FieldValidation) -> Result<Value, ApiError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| ApiError::bad_request(format!("the YAML body is not UTF-8: {e}")))?;
    let mut options = serde_saphyr::Options::default();
    options.duplicate_keys = if validation == FieldValidation::Strict {
        serde_saphyr::options::DuplicateKeyPolicy::Error
    } else {
        serde_saphyr::options::DuplicateKeyPolicy::LastWins
    };
    serde_saphyr::from_str_with_options::<Value>(text, options)
        .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))
}

/// Where a value sits, without allocating unless a duplicate needs naming.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Key(Path::Root, key) => f.write_str(key),
            Path::Key(parent, key) => write!(f, "{parent}.{key}"),
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

struct Seed<'a, 'd> {
    path: Path<'a>,
    duplicates: &'d RefCell<Vec<String>>,
}

impl<'de> DeserializeSeed<'de> for Seed<'_, '_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_, '_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let seed = Seed {
                path: Path::Index(&self.path, items.len()),
                duplicates: self.duplicates,
            };
            match seq.next_element_seed(seed)? {
                Some(item) => items.push(item),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(Seed {
                path: Path::Key(&self.path, &key),
                duplicates: self.duplicates,
            })?;
            if object.insert(key.clone(), value).is_some() {
                self.duplicates
                    .borrow_mut()
                    .push(Path::Key(&self.path, &key).to_string());
            }
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn duplicate_keys_are_named_by_path_and_the_last_wins() {
        let body = br#"{"metadata": {"name": "a", "name": "b"},
            "spec": {"paused": true, "containers": [{"name": "x", "imagePullPolicy": "A", "imagePullPolicy": "B"}], "paused": false}}"#;
        let (value, duplicates) = parse_json(body).expect("parses");
        assert_eq!(
            duplicates,
            [
                "metadata.name",
                "spec.containers[0].imagePullPolicy",
                "spec.paused"
            ]
        );
        assert_eq!(value["metadata"]["name"], "b");
        assert_eq!(value["spec"]["paused"], false);
        assert_eq!(value["spec"]["containers"][0]["imagePullPolicy"], "B");
    }

    #[test]
    fn values_are_what_serde_json_makes_of_them() {
        let body = br#"{"a": [1, -2, 3.5, "x", null, true, {}], "b": 18446744073709551615}"#;
        let (value, duplicates) = parse_json(body).expect("parses");
        assert!(duplicates.is_empty());
        assert_eq!(
            value,
            serde_json::from_slice::<Value>(body).expect("parses")
        );
    }

    #[test]
    fn malformed_and_deeply_nested_bodies_are_bad_requests() {
        for body in [
            b"{\"a\": ".to_vec(),
            b"{} {}".to_vec(),
            format!("{}{}", "[".repeat(200), "]".repeat(200)).into_bytes(),
        ] {
            let error = parse_json(&body).expect_err("refused");
            assert_eq!(error.code.as_u16(), 400, "{error}");
            assert!(
                error
                    .message
                    .starts_with("couldn't get version/kind; json parse error: ")
            );
        }
    }

    #[test]
    fn yaml_bodies_become_json_and_strict_refuses_duplicate_keys() {
        let yaml = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  k: \"1\"\n  k: \"2\"\n";
        let value = parse_yaml(yaml, FieldValidation::Warn).expect("parses");
        assert_eq!(
            value,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "2"}})
        );
        let error = parse_yaml(yaml, FieldValidation::Strict).expect_err("duplicate key");
        assert_eq!(error.code.as_u16(), 400);
        assert!(parse_yaml(b"a: [", FieldValidation::Warn).is_err());
    }
}
