//! Content negotiation for `meta.k8s.io` Tables: what `kubectl get` asks for
//! (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io, ...`), and the Table answered for
//! a get, a list or a watch event. The rows come from [`crate::printers`].
//!
//! A client that does not ask for a Table gets the object or list as before.

use axum::http::{HeaderMap, header};
use jiff::Timestamp;
use serde_json::{Map, Value, json};

use crate::{
    ApiError,
    printers::{self, Column},
    registry::Resource,
    request::{Params, media_ranges},
};

/// What each row carries in `object` (`?includeObject=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IncludeObject {
    /// Nothing (`null`).
    None,
    /// A `PartialObjectMetadata` (the default).
    Metadata,
    /// The whole object.
    Object,
}

/// A request for a Table, from the Accept header and the query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TableRequest {
    /// `v1` or `v1beta1`: the `meta.k8s.io` version asked for (and answered).
    pub(crate) version: &'static str,
    pub(crate) include: IncludeObject,
}

impl TableRequest {
    fn api_version(self) -> String {
        format!("meta.k8s.io/{}", self.version)
    }
}

/// The Table the request's Accept header asks for, if any: the first acceptable media range
/// wins, as in kube-apiserver, so `application/json` before a Table alternative means plain
/// JSON. Only JSON Tables are served; other Table alternatives are skipped.
pub(crate) fn requested(
    headers: &HeaderMap,
    params: &Params,
) -> Result<Option<TableRequest>, ApiError> {
    let Some(accept) = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
    else {
        return Ok(None);
    };
    let Some(version) = table_version(accept) else {
        return Ok(None);
    };
    let include = match params.get("includeObject").map(String::as_str) {
        None | Some("" | "Metadata") => IncludeObject::Metadata,
        Some("None") => IncludeObject::None,
        Some("Object") => IncludeObject::Object,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "includeObject: Unsupported value: {other:?}: supported values: \"None\", \
                 \"Metadata\", \"Object\""
            )));
        }
    };
    Ok(Some(TableRequest { version, include }))
}

/// The `meta.k8s.io` Table version of the first acceptable entry of `accept`, or `None` when
/// that entry is a plain media type.
fn table_version(accept: &str) -> Option<&'static str> {
    for range in media_ranges(accept) {
        match range.as_kind {
            None if range.empty => {}
            None => return None,
            Some("Table") if range.json && range.group == Some("meta.k8s.io") => {
                match range.version {
                    Some("v1") => return Some("v1"),
                    Some("v1beta1") => return Some("v1beta1"),
                    _ => {}
                }
            }
            Some(_) => {}
        }
    }
    None
}

/// Builds Tables of one resource for one request.
#[derive(Debug, Clone)]
pub(crate) struct Printer {
    pub(crate) resource: &'static Resource,
    pub(crate) request: TableRequest,
    /// The CRD version of a custom resource, whose `additionalPrinterColumns` make the Table.
    pub(crate) custom: Option<std::sync::Arc<crate::crd::Served>>,
}

impl Printer {
    /// A Table of `objects` with `metadata` (`resourceVersion`, `continue`); the column
    /// definitions are left out when `headers` is false (watch events after the first).
    pub(crate) fn table(&self, objects: &[Value], metadata: Value, headers: bool) -> Value {
        self.table_at(objects, metadata, headers, Timestamp::now())
    }

    fn table_at(&self, objects: &[Value], metadata: Value, headers: bool, now: Timestamp) -> Value {
        let columns = printers::columns(self.resource);
        let (definitions, rows): (Vec<Value>, Vec<Value>) = match &self.custom {
            Some(custom) => (
                crate::crd::columns::definitions(&custom.columns),
                objects
                    .iter()
                    .map(|object| {
                        let cells = crate::crd::columns::cells(&custom.columns, object, now);
                        self.embed(object, cells, Vec::new())
                    })
                    .collect(),
            ),
            None => (
                columns.iter().map(|c| c.to_json()).collect(),
                objects
                    .iter()
                    .map(|object| self.row(object, columns, now))
                    .collect(),
            ),
        };
        let mut table = Map::new();
        table.insert("kind".into(), json!("Table"));
        table.insert("apiVersion".into(), json!(self.request.api_version()));
        table.insert("metadata".into(), metadata);
        if headers {
            table.insert("columnDefinitions".into(), Value::Array(definitions));
        }
        table.insert("rows".into(), Value::Array(rows));
        Value::Object(table)
    }

    fn row(&self, object: &Value, columns: &[Column], now: Timestamp) -> Value {
        let row = printers::row(self.resource, object, now);
        debug_assert_eq!(row.cells.len(), columns.len(), "{}", self.resource.kind);
        self.embed(object, row.cells, row.conditions)
    }

    /// One row of cells and conditions, with the object as the request asks for it.
    fn embed(&self, object: &Value, cells: Vec<Value>, conditions: Vec<Value>) -> Value {
        let mut out = Map::new();
        out.insert("cells".into(), Value::Array(cells));
        if !conditions.is_empty() {
            out.insert("conditions".into(), Value::Array(conditions));
        }
        let embedded = match self.request.include {
            IncludeObject::None => Value::Null,
            IncludeObject::Metadata => json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": self.request.api_version(),
                "metadata": object.get("metadata").cloned().unwrap_or_else(|| json!({})),
            }),
            IncludeObject::Object => object.clone(),
        };
        out.insert("object".into(), embedded);
        Value::Object(out)
    }

    /// The Table of one object (a get, or a watch event): `metadata.resourceVersion` is the
    /// object's.
    pub(crate) fn single(&self, object: &Value, headers: bool) -> Value {
        let mut metadata = Map::new();
        if let Some(rv) = object.pointer("/metadata/resourceVersion") {
            metadata.insert("resourceVersion".into(), rv.clone());
        }
        self.table(
            std::slice::from_ref(object),
            Value::Object(metadata),
            headers,
        )
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;
    use crate::registry;

    const KUBECTL: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,\
                           application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_str(value).expect("header value"),
        );
        headers
    }

    fn params(pairs: &[(&str, &str)]) -> Params {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn kubectl_accept_header_asks_for_a_v1_table() {
        let request = requested(&accept(KUBECTL), &Params::new())
            .expect("valid")
            .expect("a table");
        assert_eq!(request.version, "v1");
        assert_eq!(request.include, IncludeObject::Metadata);
    }

    #[test]
    fn the_first_acceptable_range_wins() {
        let beta = "application/json;as=Table;v=v1beta1;g=meta.k8s.io, application/json";
        assert_eq!(table_version(beta), Some("v1beta1"));
        assert_eq!(table_version("application/json"), None);
        assert_eq!(table_version("*/*"), None);
        assert_eq!(
            table_version("application/json, application/json;as=Table;v=v1;g=meta.k8s.io"),
            None
        );
        // An unknown Table version or a protobuf Table is skipped, not answered.
        assert_eq!(
            table_version(
                "application/json;as=Table;v=v2;g=meta.k8s.io,\
                 application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,\
                 application/json;as=Table;v=v1;g=meta.k8s.io"
            ),
            Some("v1")
        );
        assert_eq!(
            table_version("application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"),
            None
        );
        assert!(
            requested(&HeaderMap::new(), &Params::new())
                .expect("valid")
                .is_none()
        );
    }

    #[test]
    fn include_object_is_validated() {
        let headers = accept(KUBECTL);
        for (value, include) in [
            ("None", IncludeObject::None),
            ("Metadata", IncludeObject::Metadata),
            ("Object", IncludeObject::Object),
        ] {
            let request = requested(&headers, &params(&[("includeObject", value)]))
                .expect("valid")
                .expect("a table");
            assert_eq!(request.include, include);
        }
        let err = requested(&headers, &params(&[("includeObject", "All")]))
            .expect_err("an unknown includeObject is refused");
        assert_eq!(err.code, axum::http::StatusCode::BAD_REQUEST);
    }

    fn config_map() -> Value {
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "cfg", "namespace": "demo", "resourceVersion": "7",
                         "creationTimestamp": "2024-01-01T00:00:00Z"},
            "data": {"a": "1", "b": "2"},
        })
    }

    fn printer(include: IncludeObject, version: &'static str) -> Printer {
        Printer {
            resource: registry::find("", "v1", "configmaps").expect("configmaps"),
            custom: None,
            request: TableRequest { version, include },
        }
    }

    #[test]
    fn a_table_carries_columns_rows_and_partial_metadata() {
        let now: Timestamp = "2024-01-01T00:05:00Z".parse().expect("timestamp");
        let table = printer(IncludeObject::Metadata, "v1").table_at(
            &[config_map()],
            json!({"resourceVersion": "9", "continue": "9:/registry/x"}),
            true,
            now,
        );
        assert_eq!(table["kind"], "Table");
        assert_eq!(table["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(table["metadata"]["continue"], "9:/registry/x");
        let names: Vec<&str> = table["columnDefinitions"]
            .as_array()
            .expect("columns")
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert_eq!(names, ["Name", "Data", "Age"]);
        assert_eq!(table["columnDefinitions"][0]["format"], "name");
        assert_eq!(table["rows"][0]["cells"], json!(["cfg", 2, "5m"]));
        let object = &table["rows"][0]["object"];
        assert_eq!(object["kind"], "PartialObjectMetadata");
        assert_eq!(object["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(object["metadata"]["namespace"], "demo");
        assert!(object.get("data").is_none(), "metadata only: {object}");
    }

    #[test]
    fn include_object_and_version_shape_the_rows() {
        let whole = printer(IncludeObject::Object, "v1beta1").single(&config_map(), false);
        assert_eq!(whole["apiVersion"], "meta.k8s.io/v1beta1");
        assert_eq!(whole["metadata"]["resourceVersion"], "7");
        assert!(
            whole.get("columnDefinitions").is_none(),
            "no headers: {whole}"
        );
        assert_eq!(whole["rows"][0]["object"], config_map());
        let none = printer(IncludeObject::None, "v1").single(&config_map(), true);
        assert_eq!(none["rows"][0]["object"], Value::Null);
        let partial = printer(IncludeObject::Metadata, "v1beta1").single(&config_map(), true);
        assert_eq!(
            partial["rows"][0]["object"]["apiVersion"],
            "meta.k8s.io/v1beta1"
        );
    }
}
