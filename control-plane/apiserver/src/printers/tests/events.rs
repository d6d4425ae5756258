//! events.k8s.io/v1 Event, printed with core/v1 Event's columns.

use serde_json::json;

use super::{CREATED, cells_of};

#[test]
fn events_api_event_reads_its_own_field_names() {
    let event = json!({
        "metadata": {"name": "web-1.17c2a", "namespace": "shop", "creationTimestamp": CREATED},
        "eventTime": "2024-05-01T10:01:00.000000Z",
        "reportingController": "kubelet",
        "reportingInstance": "worker-1",
        "action": "Pulling",
        "reason": "BackOff",
        "regarding": {"kind": "Pod", "namespace": "shop", "name": "web-1",
                      "fieldPath": "spec.containers{web}"},
        "note": "Back-off pulling image \"nginx:nope\"\n",
        "type": "Warning",
        "series": {"count": 7, "lastObservedTime": "2024-05-01T10:04:30.000000Z"},
    });
    assert_eq!(
        cells_of("events.k8s.io", "Event", &event),
        row![
            "30s",
            "Warning",
            "BackOff",
            "pod/web-1",
            "spec.containers{web}",
            "kubelet, worker-1",
            "Back-off pulling image \"nginx:nope\"",
            "4m",
            7,
            "web-1.17c2a"
        ]
    );
}

#[test]
fn events_api_event_with_deprecated_fields() {
    // An event written through core/v1 and read through events.k8s.io/v1 keeps the old
    // fields under their `deprecated` names.
    let event = json!({
        "metadata": {"name": "n1.17c2b", "creationTimestamp": CREATED},
        "eventTime": null,
        "reason": "NodeReady",
        "regarding": {"kind": "Node", "name": "n1"},
        "note": "Node n1 status is now: NodeReady",
        "type": "Normal",
        "deprecatedSource": {"component": "kubelet", "host": "n1"},
        "deprecatedFirstTimestamp": "2024-05-01T10:00:00Z",
        "deprecatedLastTimestamp": "2024-05-01T10:03:00Z",
        "deprecatedCount": 3,
    });
    assert_eq!(
        cells_of("events.k8s.io", "Event", &event),
        row![
            "2m",
            "Normal",
            "NodeReady",
            "node/n1",
            "",
            "kubelet, n1",
            "Node n1 status is now: NodeReady",
            "5m",
            3,
            "n1.17c2b"
        ]
    );
    // The same event in core's shape prints the same.
    let core = json!({
        "metadata": {"name": "n1.17c2b", "creationTimestamp": CREATED},
        "reason": "NodeReady",
        "involvedObject": {"kind": "Node", "name": "n1"},
        "message": "Node n1 status is now: NodeReady",
        "type": "Normal",
        "source": {"component": "kubelet", "host": "n1"},
        "firstTimestamp": "2024-05-01T10:00:00Z",
        "lastTimestamp": "2024-05-01T10:03:00Z",
        "count": 3,
    });
    assert_eq!(
        cells_of("events.k8s.io", "Event", &core),
        cells_of("events.k8s.io", "Event", &event)
    );
}
