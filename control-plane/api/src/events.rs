//! Events in both of the versions Kubernetes serves them in: core/v1 `Event` (the stored form)
//! and events.k8s.io/v1 `Event`, which is the same object under other names
//! (`pkg/apis/events/v1/conversion.go` and its generated `zz_generated.conversion.go`):
//!
//! | core/v1              | events.k8s.io/v1           |
//! |----------------------|----------------------------|
//! | `involvedObject`     | `regarding`                |
//! | `message`            | `note`                     |
//! | `reportingComponent` | `reportingController`      |
//! | `source`             | `deprecatedSource`         |
//! | `firstTimestamp`     | `deprecatedFirstTimestamp` |
//! | `lastTimestamp`      | `deprecatedLastTimestamp`  |
//! | `count`              | `deprecatedCount`          |
//!
//! `metadata`, `reason`, `type`, `eventTime`, `series` (`count`, `lastObservedTime`), `action`,
//! `related` and `reportingInstance` keep their names. The output is what the typed conversion
//! and Go's encoder give: members the Go type always writes are present (`eventTime: null`,
//! `regarding: {}`, core/v1's `reportingComponent: ""`, ...), empty `omitempty` members are
//! left out, and members neither type knows are dropped.

use serde_json::{Map, Value};

/// The events.k8s.io/v1 form of a core/v1 Event.
pub fn core_to_events_v1(core: &Value) -> Value {
    let mut out = Map::new();
    out.insert("apiVersion".into(), "events.k8s.io/v1".into());
    out.insert("kind".into(), "Event".into());
    out.insert("metadata".into(), metadata(core));
    out.insert("eventTime".into(), time(core, "eventTime"));
    if let Some(series) = core.get("series").filter(|s| s.is_object()) {
        let mut converted = Map::new();
        converted.insert("count".into(), count(series, "count").unwrap_or(0.into()));
        converted.insert("lastObservedTime".into(), time(series, "lastObservedTime"));
        out.insert("series".into(), Value::Object(converted));
    }
    copy_string(core, "reportingComponent", &mut out, "reportingController");
    copy_string(core, "reportingInstance", &mut out, "reportingInstance");
    copy_string(core, "action", &mut out, "action");
    copy_string(core, "reason", &mut out, "reason");
    out.insert(
        "regarding".into(),
        object_reference(core.get("involvedObject")),
    );
    if let Some(related) = core.get("related").filter(|r| r.is_object()) {
        out.insert("related".into(), object_reference(Some(related)));
    }
    copy_string(core, "message", &mut out, "note");
    copy_string(core, "type", &mut out, "type");
    out.insert("deprecatedSource".into(), event_source(core.get("source")));
    out.insert(
        "deprecatedFirstTimestamp".into(),
        time(core, "firstTimestamp"),
    );
    out.insert(
        "deprecatedLastTimestamp".into(),
        time(core, "lastTimestamp"),
    );
    if let Some(n) = count(core, "count") {
        out.insert("deprecatedCount".into(), n);
    }
    Value::Object(out)
}

/// The core/v1 form of an events.k8s.io/v1 Event.
pub fn events_v1_to_core(ev: &Value) -> Value {
    let mut out = Map::new();
    out.insert("apiVersion".into(), "v1".into());
    out.insert("kind".into(), "Event".into());
    out.insert("metadata".into(), metadata(ev));
    out.insert(
        "involvedObject".into(),
        object_reference(ev.get("regarding")),
    );
    copy_string(ev, "reason", &mut out, "reason");
    copy_string(ev, "note", &mut out, "message");
    out.insert("source".into(), event_source(ev.get("deprecatedSource")));
    out.insert(
        "firstTimestamp".into(),
        time(ev, "deprecatedFirstTimestamp"),
    );
    out.insert("lastTimestamp".into(), time(ev, "deprecatedLastTimestamp"));
    if let Some(n) = count(ev, "deprecatedCount") {
        out.insert("count".into(), n);
    }
    copy_string(ev, "type", &mut out, "type");
    out.insert("eventTime".into(), time(ev, "eventTime"));
    if let Some(series) = ev.get("series").filter(|s| s.is_object()) {
        let mut converted = Map::new();
        if let Some(n) = count(series, "count") {
            converted.insert("count".into(), n);
        }
        converted.insert("lastObservedTime".into(), time(series, "lastObservedTime"));
        out.insert("series".into(), Value::Object(converted));
    }
    copy_string(ev, "action", &mut out, "action");
    if let Some(related) = ev.get("related").filter(|r| r.is_object()) {
        out.insert("related".into(), object_reference(Some(related)));
    }
    let text = |name: &str| ev.get(name).and_then(Value::as_str).unwrap_or_default();
    out.insert(
        "reportingComponent".into(),
        text("reportingController").into(),
    );
    out.insert("reportingInstance".into(), text("reportingInstance").into());
    Value::Object(out)
}

fn metadata(event: &Value) -> Value {
    event
        .get("metadata")
        .filter(|m| m.is_object())
        .cloned()
        .unwrap_or_else(|| Value::Object(Map::new()))
}

/// A `metav1.Time` or `MicroTime`: its string, or `null` when unset.
fn time(object: &Value, name: &str) -> Value {
    object
        .get(name)
        .filter(|t| t.is_string())
        .cloned()
        .unwrap_or(Value::Null)
}

/// A non-zero integer member.
fn count(object: &Value, name: &str) -> Option<Value> {
    object
        .get(name)
        .and_then(Value::as_i64)
        .filter(|n| *n != 0)
        .map(Value::from)
}

/// Copies a non-empty string member under another name.
fn copy_string(from: &Value, name: &str, to: &mut Map<String, Value>, as_name: &str) {
    if let Some(s) = from
        .get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        to.insert(as_name.to_owned(), s.into());
    }
}

fn strings_only(value: Option<&Value>, names: &[&str]) -> Value {
    let mut out = Map::new();
    if let Some(value) = value {
        for name in names {
            copy_string(value, name, &mut out, name);
        }
    }
    Value::Object(out)
}

/// A core/v1 `ObjectReference`: its seven string members.
fn object_reference(reference: Option<&Value>) -> Value {
    strings_only(
        reference,
        &[
            "kind",
            "namespace",
            "name",
            "uid",
            "apiVersion",
            "resourceVersion",
            "fieldPath",
        ],
    )
}

/// A core/v1 `EventSource`.
fn event_source(source: Option<&Value>) -> Value {
    strings_only(source, &["component", "host"])
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn reference(name: &str) -> Value {
        json!({
            "kind": "Pod", "namespace": "default", "name": name, "uid": format!("uid-{name}"),
            "apiVersion": "v1", "resourceVersion": "42", "fieldPath": "spec.containers{web}",
        })
    }

    fn metadata() -> Value {
        json!({"name": "web.17c", "namespace": "default", "uid": "e-1", "resourceVersion": "9"})
    }

    /// A core/v1 Event with every member set.
    fn core() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Event", "metadata": metadata(),
            "involvedObject": reference("web"),
            "reason": "Pulled", "message": "Successfully pulled image",
            "source": {"component": "kubelet", "host": "node-1"},
            "firstTimestamp": "2024-05-01T10:00:00Z", "lastTimestamp": "2024-05-01T10:05:00Z",
            "count": 3, "type": "Normal", "eventTime": "2024-05-01T10:00:00.123456Z",
            "series": {"count": 2, "lastObservedTime": "2024-05-01T10:04:00.000001Z"},
            "action": "Pulling", "related": reference("other"),
            "reportingComponent": "kubelet", "reportingInstance": "node-1",
        })
    }

    /// The same Event in events.k8s.io/v1.
    fn events_v1() -> Value {
        json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": metadata(),
            "eventTime": "2024-05-01T10:00:00.123456Z",
            "series": {"count": 2, "lastObservedTime": "2024-05-01T10:04:00.000001Z"},
            "reportingController": "kubelet", "reportingInstance": "node-1",
            "action": "Pulling", "reason": "Pulled",
            "regarding": reference("web"), "related": reference("other"),
            "note": "Successfully pulled image", "type": "Normal",
            "deprecatedSource": {"component": "kubelet", "host": "node-1"},
            "deprecatedFirstTimestamp": "2024-05-01T10:00:00Z",
            "deprecatedLastTimestamp": "2024-05-01T10:05:00Z",
            "deprecatedCount": 3,
        })
    }

    #[test]
    fn every_member_maps_to_its_counterpart_both_ways() {
        assert_eq!(core_to_events_v1(&core()), events_v1());
        assert_eq!(events_v1_to_core(&events_v1()), core());
    }

    #[test]
    fn a_round_trip_gives_back_the_event() {
        assert_eq!(events_v1_to_core(&core_to_events_v1(&core())), core());
        assert_eq!(
            core_to_events_v1(&events_v1_to_core(&events_v1())),
            events_v1()
        );
    }

    #[test]
    fn unknown_members_are_dropped_and_go_zero_values_written() {
        let mut core = json!({
            "apiVersion": "v1", "kind": "Event", "metadata": metadata(),
            "involvedObject": {"kind": "Node", "name": "n1", "extra": "x"},
            "reason": "Starting", "count": 0, "unknown": true,
            "source": {"component": "kubelet", "host": "", "other": 1},
        });
        assert_eq!(
            core_to_events_v1(&core),
            json!({
                "apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": metadata(),
                "eventTime": null, "reason": "Starting",
                "regarding": {"kind": "Node", "name": "n1"},
                "deprecatedSource": {"component": "kubelet"},
                "deprecatedFirstTimestamp": null, "deprecatedLastTimestamp": null,
            })
        );
        core["series"] = json!({"count": 0});
        assert_eq!(
            core_to_events_v1(&core)["series"],
            json!({"count": 0, "lastObservedTime": null})
        );

        let ev = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": metadata(),
            "eventTime": "2024-05-01T10:00:00.000000Z", "reason": "Scheduled",
            "reportingController": "default-scheduler", "bogus": [],
            "series": {"count": 0},
        });
        assert_eq!(
            events_v1_to_core(&ev),
            json!({
                "apiVersion": "v1", "kind": "Event", "metadata": metadata(),
                "involvedObject": {}, "reason": "Scheduled", "source": {},
                "firstTimestamp": null, "lastTimestamp": null,
                "eventTime": "2024-05-01T10:00:00.000000Z",
                "series": {"lastObservedTime": null},
                "reportingComponent": "default-scheduler", "reportingInstance": "",
            })
        );
    }
}
