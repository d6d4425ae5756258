//! apps/v1: deployments and replica sets.

use jiff::Timestamp;
use serde_json::{Value, json};

use super::{
    AGE, CONTAINERS, Column, IMAGES, NAME, SELECTOR, age, col, containers_and_images,
    format_label_selector, int, name, selector_string,
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
    let (containers, images) = containers_and_images(object);
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
    let (containers, images) = containers_and_images(object);
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
