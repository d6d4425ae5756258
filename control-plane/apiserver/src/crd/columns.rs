//! `additionalPrinterColumns`: the Table columns of a custom resource, as
//! `apiextensions-apiserver/pkg/registry/customresource/tableconvertor` builds them: Name, then
//! each declared column (or `Age` when none is declared), cells read with a JSONPath.
//!
//! The JSONPath subset is what CRD columns use in practice: `.a.b`, `['a.b']`, `[0]`, `[*]`
//! and the filter `[?(@.type=="Ready")]`; as kube, a cell shows the first result only.

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::printers::{self, AGE_DOC};

/// One step of a column's JSONPath.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    All,
    /// `[?(@.<field path>=="<value>")]` (or `!=`).
    Filter {
        path: Vec<String>,
        value: Value,
        negated: bool,
    },
}

/// A parsed column path.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct JsonPath(Vec<Step>);

impl JsonPath {
    /// Parses the subset (see the module documentation); `None` for anything else.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let text = text
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .unwrap_or(text);
        let mut steps = Vec::new();
        let mut rest = text.strip_prefix('$').unwrap_or(text);
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('.') {
                let end = after.find(['.', '[']).unwrap_or(after.len());
                if end > 0 {
                    steps.push(Step::Field(after[..end].to_owned()));
                }
                rest = &after[end..];
            } else if let Some(after) = rest.strip_prefix('[') {
                let end = after.find(']')?;
                let inner = &after[..end];
                // A filter may hold `]` only in its quoted value; the subset has none.
                steps.push(bracket(inner)?);
                rest = &after[end + 1..];
            } else {
                return None;
            }
        }
        Some(Self(steps))
    }

    /// Every value the path reaches in `object`.
    pub(crate) fn find<'a>(&self, object: &'a Value) -> Vec<&'a Value> {
        let mut current = vec![object];
        for step in &self.0 {
            let mut next = Vec::new();
            for value in current {
                match step {
                    Step::Field(name) => next.extend(value.get(name.as_str())),
                    Step::Index(i) => next.extend(value.get(*i)),
                    Step::All => match value {
                        Value::Array(items) => next.extend(items.iter()),
                        Value::Object(map) => next.extend(map.values()),
                        _ => {}
                    },
                    Step::Filter {
                        path,
                        value: wanted,
                        negated,
                    } => {
                        if let Value::Array(items) = value {
                            next.extend(items.iter().filter(|item| {
                                let found =
                                    path.iter().try_fold(*item, |v, key| v.get(key.as_str()));
                                (found == Some(wanted)) != *negated
                            }));
                        }
                    }
                }
            }
            current = next;
        }
        current
    }
}

fn bracket(inner: &str) -> Option<Step> {
    let inner = inner.trim();
    if inner == "*" {
        return Some(Step::All);
    }
    if let Ok(i) = inner.parse::<usize>() {
        return Some(Step::Index(i));
    }
    for quote in ['\'', '"'] {
        if let Some(name) = inner
            .strip_prefix(quote)
            .and_then(|s| s.strip_suffix(quote))
        {
            return Some(Step::Field(name.to_owned()));
        }
    }
    let filter = inner.strip_prefix("?(")?.strip_suffix(')')?.trim();
    let (lhs, rhs, negated) = match filter.split_once("==") {
        Some((l, r)) => (l, r, false),
        None => {
            let (l, r) = filter.split_once("!=")?;
            (l, r, true)
        }
    };
    let path: Vec<String> = lhs
        .trim()
        .strip_prefix("@.")?
        .split('.')
        .map(str::to_owned)
        .collect();
    let rhs = rhs.trim();
    let value = match rhs.strip_prefix(['"', '\'']) {
        Some(quoted) => json!(quoted.strip_suffix(['"', '\''])?),
        None => serde_json::from_str(rhs).ok()?,
    };
    Some(Step::Filter {
        path,
        value,
        negated,
    })
}

/// One declared column.
#[derive(Debug, Clone)]
pub(crate) struct PrinterColumn {
    pub(crate) name: String,
    pub(crate) kind: String,
    pub(crate) format: String,
    pub(crate) description: String,
    pub(crate) priority: i64,
    pub(crate) path: JsonPath,
}

fn text(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned()
}

/// The columns of one CRD version (`Age` when it declares none).
pub(crate) fn of_version(version: &Value) -> Vec<PrinterColumn> {
    let declared: Vec<PrinterColumn> = version
        .get("additionalPrinterColumns")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let json_path = text(c, "jsonPath");
            let description = match text(c, "description") {
                d if d.is_empty() => {
                    format!("Custom resource definition column (in JSONPath format): {json_path}")
                }
                d => d,
            };
            Some(PrinterColumn {
                name: text(c, "name"),
                kind: text(c, "type"),
                format: text(c, "format"),
                description,
                priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                path: JsonPath::parse(&json_path)?,
            })
        })
        .collect();
    if !declared.is_empty() || version.get("additionalPrinterColumns").is_some() {
        return declared;
    }
    vec![PrinterColumn {
        name: "Age".to_owned(),
        kind: "date".to_owned(),
        format: String::new(),
        description: AGE_DOC.to_owned(),
        priority: 0,
        path: JsonPath(vec![
            Step::Field("metadata".to_owned()),
            Step::Field("creationTimestamp".to_owned()),
        ]),
    }]
}

/// The Table's column definitions: Name, then `columns`.
pub(crate) fn definitions(columns: &[PrinterColumn]) -> Vec<Value> {
    std::iter::once(printers::NAME.to_json())
        .chain(columns.iter().map(|c| {
            json!({
                "name": c.name,
                "type": c.kind,
                "format": c.format,
                "description": c.description,
                "priority": c.priority,
            })
        }))
        .collect()
}

/// The cells of `object`'s row: its name, then one per column (`null` when the path finds
/// nothing or the value is not of the column's type).
pub(crate) fn cells(columns: &[PrinterColumn], object: &Value, now: Timestamp) -> Vec<Value> {
    let name = object
        .pointer("/metadata/name")
        .cloned()
        .unwrap_or_else(|| json!(""));
    std::iter::once(name)
        .chain(columns.iter().map(|c| {
            let Some(value) = c.path.find(object).into_iter().next() else {
                return Value::Null;
            };
            cell(&c.kind, value, now)
        }))
        .collect()
}

fn cell(kind: &str, value: &Value, now: Timestamp) -> Value {
    match kind {
        "string" => match value {
            Value::String(s) => json!(s),
            other => json!(other.to_string()),
        },
        "integer" => value
            .as_i64()
            .or_else(|| value.as_f64().map(|f| f as i64))
            .map_or(Value::Null, |i| json!(i)),
        "number" => value.as_f64().map_or(Value::Null, |f| json!(f)),
        "boolean" => value.as_bool().map_or(Value::Null, |b| json!(b)),
        "date" => value
            .as_str()
            .and_then(|s| s.parse::<Timestamp>().ok())
            .map_or(Value::Null, |at| {
                json!(printers::human_duration(now.as_second() - at.as_second()))
            }),
        _ => Value::Null,
    }
}
