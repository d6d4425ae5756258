//! apps/v1: deployments, replica sets, daemon sets, stateful sets and controller revisions.

use jiff::Timestamp;
use serde_json::{Value, json};

use super::{
    AGE, CONTAINERS, Column, IMAGES, NAME, SELECTOR, TEMPLATE_CONTAINERS, age, col,
    containers_and_images, flag, format_label_selector, format_labels, int, int_or, list, name,
    selector_string, text,
};

pub(super) const DEPLOYMENT: &[Column] = &[
    NAME,
    col("Ready", "string", 0, "Number of the pod with ready state"),
    col(
        "Up-to-date",
        "string",
        0,
        "Total number of non-terminated pods targeted by this deployment that have the desired \
         template spec.",
    ),
    col(
        "Available",
        "string",
        0,
        "Total number of available pods (ready for at least minReadySeconds) targeted by this \
         deployment.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

pub(super) const REPLICA_SET: &[Column] = &[
    NAME,
    col(
        "Desired",
        "integer",
        0,
        "Replicas is the number of desired replicas.",
    ),
    col(
        "Current",
        "integer",
        0,
        "Replicas is the most recently observed number of replicas.",
    ),
    col(
        "Ready",
        "integer",
        0,
        "The number of ready replicas for this replica set.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

/// Deployment: Name, Ready, Up-to-date, Available, Age, Containers, Images, Selector.
pub(super) fn deployment_cells(object: &Value, now: Timestamp) -> Vec<Value> {
    let desired = object
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let (containers, images) = containers_and_images(object, TEMPLATE_CONTAINERS);
    vec![
        name(object),
        json!(format!(
            "{}/{desired}",
            int(object, "/status/readyReplicas")
        )),
        json!(int(object, "/status/updatedReplicas")),
        json!(int(object, "/status/availableReplicas")),
        age(object, now),
        json!(containers),
        json!(images),
        json!(selector_string(object.pointer("/spec/selector"))),
    ]
}

/// ReplicaSet: Name, Desired, Current, Ready, Age, Containers, Images, Selector.
pub(super) fn replica_set_cells(object: &Value, now: Timestamp) -> Vec<Value> {
    let desired = object
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let (containers, images) = containers_and_images(object, TEMPLATE_CONTAINERS);
    vec![
        name(object),
        json!(desired),
        json!(int(object, "/status/replicas")),
        json!(int(object, "/status/readyReplicas")),
        age(object, now),
        json!(containers),
        json!(images),
        json!(format_label_selector(object.pointer("/spec/selector"))),
    ]
}

pub(super) const DAEMON_SET: &[Column] = &[
    NAME,
    col(
        "Desired",
        "integer",
        0,
        "The total number of nodes that should be running the daemon pod (including nodes \
         correctly running the daemon pod).",
    ),
    col(
        "Current",
        "integer",
        0,
        "The number of nodes that are running at least 1 daemon pod and are supposed to run the \
         daemon pod.",
    ),
    col(
        "Ready",
        "integer",
        0,
        "numberReady is the number of nodes that should be running the daemon pod and have one \
         or more of the daemon pod running with a Ready Condition.",
    ),
    col(
        "Up-to-date",
        "integer",
        0,
        "The total number of nodes that are running updated daemon pod",
    ),
    col(
        "Available",
        "integer",
        0,
        "The number of nodes that should be running the daemon pod and have one or more of the \
         daemon pod running and available (ready for at least spec.minReadySeconds)",
    ),
    col(
        "Node Selector",
        "string",
        0,
        "NodeSelector is a selector which must be true for the pod to fit on a node.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    col(
        "Selector",
        "string",
        1,
        "A label query over pods that are managed by the daemon set.",
    ),
];

/// DaemonSet: Name, Desired, Current, Ready, Up-to-date, Available, Node Selector, Age,
/// Containers, Images, Selector.
pub(super) fn daemon_set_cells(object: &Value, now: Timestamp) -> Vec<Value> {
    let (containers, images) = containers_and_images(object, TEMPLATE_CONTAINERS);
    vec![
        name(object),
        json!(int(object, "/status/desiredNumberScheduled")),
        json!(int(object, "/status/currentNumberScheduled")),
        json!(int(object, "/status/numberReady")),
        json!(int(object, "/status/updatedNumberScheduled")),
        json!(int(object, "/status/numberAvailable")),
        json!(format_labels(
            object.pointer("/spec/template/spec/nodeSelector")
        )),
        age(object, now),
        json!(containers),
        json!(images),
        json!(format_label_selector(object.pointer("/spec/selector"))),
    ]
}

pub(super) const STATEFUL_SET: &[Column] = &[
    NAME,
    col("Ready", "string", 0, "Number of the pod with ready state"),
    AGE,
    CONTAINERS,
    IMAGES,
];

/// StatefulSet: Name, Ready (`ready/desired`), Age, Containers, Images.
pub(super) fn stateful_set_cells(object: &Value, now: Timestamp) -> Vec<Value> {
    let (containers, images) = containers_and_images(object, TEMPLATE_CONTAINERS);
    vec![
        name(object),
        json!(format!(
            "{}/{}",
            int(object, "/status/readyReplicas"),
            int_or(object, "/spec/replicas", 1)
        )),
        age(object, now),
        json!(containers),
        json!(images),
    ]
}

pub(super) const CONTROLLER_REVISION: &[Column] = &[
    NAME,
    col("Controller", "string", 0, "Controller of the object"),
    col(
        "Revision",
        "string",
        0,
        "Revision indicates the revision of the state represented by Data.",
    ),
    AGE,
];

/// ControllerRevision: Name, Controller (`kind.group/name` of the controlling owner, in lower
/// case, or `<none>`), Revision, Age.
pub(super) fn controller_revision_cells(object: &Value, now: Timestamp) -> Vec<Value> {
    let controller = list(object, "/metadata/ownerReferences")
        .iter()
        .find(|owner| flag(owner, "/controller"))
        .map_or_else(
            || "<none>".to_owned(),
            |owner| {
                // The group is what precedes the version in `apiVersion` (none for `v1`).
                let group = text(owner, "/apiVersion")
                    .rsplit_once('/')
                    .map_or("", |(group, _)| group);
                let kind = text(owner, "/kind");
                let owner_name = text(owner, "/name");
                match (group, kind) {
                    ("", "") => owner_name.to_owned(),
                    ("", kind) => format!("{}/{owner_name}", kind.to_lowercase()),
                    (group, kind) => format!(
                        "{}.{}/{owner_name}",
                        kind.to_lowercase(),
                        group.to_lowercase()
                    ),
                }
            },
        );
    vec![
        name(object),
        json!(controller),
        json!(int(object, "/revision")),
        age(object, now),
    ]
}
