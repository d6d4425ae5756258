//! Events: core/v1 `Event`.

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

/// Event: Last Seen, Type, Reason, Object, Subobject, Source, Message, First Seen, Count,
/// Name.
pub(super) fn event_cells(event: &Value, now: Timestamp) -> Vec<Value> {
    let first = match time(event, "/firstTimestamp") {
        Some(at) => since(Some(at), now),
        None => since(time(event, "/eventTime"), now),
    };
    let mut last = match time(event, "/lastTimestamp") {
        Some(at) => since(Some(at), now),
        None => first.clone(),
    };
    let mut occurrences = int(event, "/count");
    if event.pointer("/series").is_some_and(Value::is_object) {
        last = since(time(event, "/series/lastObservedTime"), now);
        occurrences = int(event, "/series/count");
    } else if occurrences == 0 {
        occurrences = 1;
    }
    let kind = text(event, "/involvedObject/kind").to_lowercase();
    let target = match text(event, "/involvedObject/name") {
        "" => kind,
        object => format!("{kind}/{object}"),
    };
    let component = match text(event, "/source/component") {
        "" => text(event, "/reportingComponent"),
        c => c,
    };
    let instance = match text(event, "/source/host") {
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
        json!(text(event, "/involvedObject/fieldPath")),
        json!(source),
        json!(text(event, "/message").trim()),
        json!(first),
        json!(occurrences),
        name(event),
    ]
}
