//! Events: core/v1 `Event` and events.k8s.io/v1 `Event`.

use jiff::Timestamp;
use serde_json::{Value, json};

use super::{Column, NAME, col, int, name, since, text, time};

pub(super) const EVENT: &[Column] = &[
    col(
        "Last Seen",
        "string",
        0,
        "The time at which the most recent occurrence of this event was recorded.",
    ),
    col(
        "Type",
        "string",
        0,
        "Type of this event (Normal, Warning), new types could be added in the future",
    ),
    col(
        "Reason",
        "string",
        0,
        "This should be a short, machine understandable string that gives the reason for the \
         transition into the object's current status.",
    ),
    col(
        "Object",
        "string",
        0,
        "The object that this event is about.",
    ),
    col(
        "Subobject",
        "string",
        1,
        "If referring to a piece of an object instead of an entire object, this string should \
         contain a valid JSON/Go field access statement.",
    ),
    col("Source", "string", 1, "The component reporting this event."),
    col(
        "Message",
        "string",
        0,
        "A human-readable description of the status of this operation.",
    ),
    col(
        "First Seen",
        "string",
        1,
        "The time at which the event was first recorded.",
    ),
    col(
        "Count",
        "string",
        1,
        "The number of times this event has occurred.",
    ),
    Column {
        priority: 1,
        ..NAME
    },
];

/// Where an event keeps what the table shows: core/v1 and events.k8s.io/v1 name the same
/// fields differently (the latter converts to the former, and kube-apiserver prints both
/// with core's printer).
struct Fields {
    regarding: &'static str,
    message: &'static str,
    source: &'static str,
    first: &'static str,
    last: &'static str,
    count: &'static str,
    reporting_controller: &'static str,
}

const CORE: Fields = Fields {
    regarding: "/involvedObject",
    message: "/message",
    source: "/source",
    first: "/firstTimestamp",
    last: "/lastTimestamp",
    count: "/count",
    reporting_controller: "/reportingComponent",
};

const EVENTS: Fields = Fields {
    regarding: "/regarding",
    message: "/note",
    source: "/deprecatedSource",
    first: "/deprecatedFirstTimestamp",
    last: "/deprecatedLastTimestamp",
    count: "/deprecatedCount",
    reporting_controller: "/reportingController",
};

/// core/v1 Event: Last Seen, Type, Reason, Object, Subobject, Source, Message, First Seen,
/// Count, Name.
pub(super) fn event_cells(event: &Value, now: Timestamp) -> Vec<Value> {
    cells(event, &CORE, now)
}

/// events.k8s.io/v1 Event: the same columns and cells as core/v1's. An object still in core's
/// shape (it has `involvedObject`) is read as such.
pub(super) fn events_event_cells(event: &Value, now: Timestamp) -> Vec<Value> {
    let fields = if event.get("involvedObject").is_some() {
        &CORE
    } else {
        &EVENTS
    };
    cells(event, fields, now)
}

fn cells(event: &Value, fields: &Fields, now: Timestamp) -> Vec<Value> {
    let at = |field: &str, member: &str| format!("{field}/{member}");
    let first = match time(event, fields.first) {
        Some(at) => since(Some(at), now),
        None => since(time(event, "/eventTime"), now),
    };
    let mut last = match time(event, fields.last) {
        Some(at) => since(Some(at), now),
        None => first.clone(),
    };
    let mut occurrences = int(event, fields.count);
    if event.pointer("/series").is_some_and(Value::is_object) {
        last = since(time(event, "/series/lastObservedTime"), now);
        occurrences = int(event, "/series/count");
    } else if occurrences == 0 {
        occurrences = 1;
    }
    let kind = text(event, &at(fields.regarding, "kind")).to_lowercase();
    let target = match text(event, &at(fields.regarding, "name")) {
        "" => kind,
        object => format!("{kind}/{object}"),
    };
    let component = match text(event, &at(fields.source, "component")) {
        "" => text(event, fields.reporting_controller),
        c => c,
    };
    let instance = match text(event, &at(fields.source, "host")) {
        "" => text(event, "/reportingInstance"),
        h => h,
    };
    let source = if instance.is_empty() {
        component.to_owned()
    } else {
        format!("{component}, {instance}")
    };
    vec![
        json!(last),
        json!(text(event, "/type")),
        json!(text(event, "/reason")),
        json!(target),
        json!(text(event, &at(fields.regarding, "fieldPath"))),
        json!(source),
        json!(text(event, fields.message).trim()),
        json!(first),
        json!(occurrences),
        name(event),
    ]
}
