//! The entries of `metadata.managedFields`: decoding, the changes an Update makes to them,
//! the cap on Update entries, and the sorted list they are written back as
//! (`k8s.io/apimachinery/pkg/util/managedfields/internal/managedfields.go`, `capmanagers.go`).

use std::collections::{BTreeMap, HashMap};

use serde_json::{Map, Value};

use super::compare::Comparison;
use super::fieldset::{FieldSet, write_go_string};

/// Who an entry belongs to: its identity, as `BuildManagerIdentifier` spells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Who {
    pub(crate) manager: String,
    pub(crate) operation: String,
    /// The apiVersion in the identity: empty for Apply entries.
    pub(crate) api_version: String,
    pub(crate) subresource: String,
}

impl Who {
    pub(crate) fn update(manager: &str, api_version: &str, subresource: &str) -> Self {
        Who {
            manager: manager.to_owned(),
            operation: "Update".to_owned(),
            api_version: api_version.to_owned(),
            subresource: subresource.to_owned(),
        }
    }

    /// The identity of `manager`'s Apply entry: no apiVersion, so that every apply of that
    /// manager is the same entry whatever version it applies in.
    pub(crate) fn apply(manager: &str, subresource: &str) -> Self {
        Who {
            manager: manager.to_owned(),
            operation: "Apply".to_owned(),
            api_version: String::new(),
            subresource: subresource.to_owned(),
        }
    }

    /// The identity as Go's `json.Marshal` writes the entry without fieldsType, fieldsV1 and
    /// time: `{"manager":"m","operation":"Update","apiVersion":"v1","subresource":"status"}`.
    pub(crate) fn key(&self) -> String {
        let mut out = String::from("{");
        for (name, value) in [
            ("manager", &self.manager),
            ("operation", &self.operation),
            ("apiVersion", &self.api_version),
            ("subresource", &self.subresource),
        ] {
            if value.is_empty() {
                continue;
            }
            if out.len() > 1 {
                out.push(',');
            }
            write_go_string(name, &mut out);
            out.push(':');
            write_go_string(value, &mut out);
        }
        out.push('}');
        out
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub(crate) who: Who,
    pub(crate) api_version: String,
    pub(crate) set: FieldSet,
    pub(crate) time: Option<Value>,
}

impl Entry {
    fn applied(&self) -> bool {
        self.who.operation == "Apply"
    }

    fn seconds(&self) -> i64 {
        self.time
            .as_ref()
            .and_then(Value::as_str)
            .and_then(unix_seconds)
            .unwrap_or(0)
    }
}

/// The decoded entries, by identity.
#[derive(Debug, Clone, Default)]
pub(crate) struct Managed {
    pub(crate) entries: BTreeMap<String, Entry>,
}

/// Why entries could not be decoded; kube-apiserver then falls back to the live entries.
#[derive(Debug)]
pub(crate) struct Undecodable;

impl Managed {
    /// Decodes `managedFields` as `DecodeManagedFields` does: every entry must have operation
    /// `Apply` or `Update`, an apiVersion, fieldsType `FieldsV1` and valid fields; a later entry
    /// with the same identity replaces an earlier one.
    pub(crate) fn decode(value: &Value) -> Result<Managed, Undecodable> {
        let items = match value {
            Value::Null => return Ok(Managed::default()),
            Value::Array(items) => items,
            _ => return Err(Undecodable),
        };
        let mut managed = Managed::default();
        for item in items {
            let Value::Object(item) = item else {
                return Err(Undecodable);
            };
            let text = |name: &str| match item.get(name) {
                None | Some(Value::Null) => Ok(String::new()),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(_) => Err(Undecodable),
            };
            let operation = text("operation")?;
            let api_version = text("apiVersion")?;
            if !matches!(operation.as_str(), "Apply" | "Update")
                || api_version.is_empty()
                || text("fieldsType")? != "FieldsV1"
            {
                return Err(Undecodable);
            }
            let set = match item.get("fieldsV1") {
                None | Some(Value::Null) => FieldSet::new(),
                Some(fields) => FieldSet::from_fields_v1(fields).map_err(|_| Undecodable)?,
            };
            let time = match item.get("time") {
                None | Some(Value::Null) => None,
                Some(time @ Value::String(_)) => Some(time.clone()),
                Some(_) => return Err(Undecodable),
            };
            let who = Who {
                manager: text("manager")?,
                api_version: if operation == "Apply" {
                    String::new()
                } else {
                    api_version.clone()
                },
                operation,
                subresource: text("subresource")?,
            };
            let entry = Entry {
                who,
                api_version,
                set,
                time,
            };
            managed.entries.insert(entry.who.key(), entry);
        }
        Ok(managed)
    }

    /// Takes what the write changed away from every entry; entries left empty go.
    pub(crate) fn take(&mut self, comparison: &Comparison) {
        for entry in self.entries.values_mut() {
            entry.set = entry
                .set
                .difference(&comparison.added)
                .difference(&comparison.modified)
                .difference(&comparison.removed);
        }
        self.entries.retain(|_, entry| !entry.set.is_empty());
    }

    /// Gives `owned` to `who`'s entry, merged with what it had, with a new time.
    pub(crate) fn give(
        &mut self,
        who: Who,
        api_version: &str,
        owned: FieldSet,
        time: Option<Value>,
    ) {
        let key = who.key();
        let mut set = owned;
        if let Some(previous) = self.entries.get(&key) {
            set.union_with(&previous.set);
        }
        let entry = Entry {
            who,
            api_version: api_version.to_owned(),
            set,
            time,
        };
        self.entries.insert(key, entry);
    }

    /// Merges the oldest Update entries into `ancient-changes` entries, one per apiVersion,
    /// until at most `max` are left (`capUpdateManagers`, quirks included: the first entry of
    /// a version is only folded in when a second one of that version is).
    pub(crate) fn cap(&mut self, max: usize) {
        let mut updaters: Vec<(i64, String)> = self
            .entries
            .iter()
            .filter(|(_, entry)| !entry.applied())
            .map(|(key, entry)| (entry.seconds(), key.clone()))
            .collect();
        if updaters.len() <= max {
            return;
        }
        updaters.sort();
        let mut length = updaters.len();
        let mut first_of_version: HashMap<String, String> = HashMap::new();
        for (_, key) in updaters {
            if length <= max {
                break;
            }
            let Some(entry) = self.entries.get(&key).cloned() else {
                continue;
            };
            let version = entry.api_version.clone();
            let bucket_who = Who::update("ancient-changes", &version, "");
            let bucket = bucket_who.key();
            let Some(first) = first_of_version.get(&version) else {
                first_of_version.insert(version, key);
                continue;
            };
            if !self.entries.contains_key(&bucket)
                && let Some(mut moved) = self.entries.remove(first)
            {
                moved.who = bucket_who;
                moved.time = None;
                self.entries.insert(bucket.clone(), moved);
            }
            let mut set = entry.set.clone();
            if let Some(existing) = self.entries.get(&bucket) {
                set.union_with(&existing.set);
            }
            self.entries.insert(
                bucket.clone(),
                Entry {
                    who: Who::update("ancient-changes", &version, ""),
                    api_version: version,
                    set,
                    time: None,
                },
            );
            self.entries.remove(&key);
            length -= 1;
            if let Some(bucket) = self.entries.get_mut(&bucket) {
                bucket.time = entry.time;
            }
        }
    }

    /// The `managedFields` list, sorted; `None` when there is no entry.
    pub(crate) fn encode(&self) -> Option<Value> {
        if self.entries.is_empty() {
            return None;
        }
        let mut entries: Vec<&Entry> = self.entries.values().collect();
        entries.sort_by(|p, q| {
            let operation = |e: &Entry| if e.applied() { "Apply" } else { "Update" };
            (
                operation(p),
                p.seconds(),
                &p.who.manager,
                &p.api_version,
                &p.who.subresource,
            )
                .cmp(&(
                    operation(q),
                    q.seconds(),
                    &q.who.manager,
                    &q.api_version,
                    &q.who.subresource,
                ))
        });
        let list = entries
            .into_iter()
            .map(|entry| {
                let mut out = Map::new();
                if !entry.who.manager.is_empty() {
                    out.insert("manager".into(), entry.who.manager.clone().into());
                }
                out.insert("operation".into(), entry.who.operation.clone().into());
                out.insert("apiVersion".into(), entry.api_version.clone().into());
                if let Some(time) = &entry.time {
                    out.insert("time".into(), time.clone());
                }
                out.insert("fieldsType".into(), "FieldsV1".into());
                out.insert("fieldsV1".into(), entry.set.to_fields_v1());
                if !entry.who.subresource.is_empty() {
                    out.insert("subresource".into(), entry.who.subresource.clone().into());
                }
                Value::Object(out)
            })
            .collect();
        Some(Value::Array(list))
    }
}

/// Seconds since the epoch of an RFC 3339 time (`2024-05-01T10:00:00Z`,
/// `2024-05-01T12:00:00.5+02:00`).
pub(crate) fn unix_seconds(time: &str) -> Option<i64> {
    let b = time.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let digits = b.get(range)?;
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(digits).ok()?.parse().ok()
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &time[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &fraction[digits..];
    }
    let offset = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digit = |d: &u8| d.is_ascii_digit().then(|| i64::from(d - b'0'));
            let minutes = (digit(h1)? * 10 + digit(h2)?) * 60 + digit(m1)? * 10 + digit(m2)?;
            if *sign == b'+' {
                minutes * 60
            } else {
                -minutes * 60
            }
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3_600 + minute * 60 + second - offset)
}
