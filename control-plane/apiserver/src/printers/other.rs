//! Kinds of the smaller API groups: coordination.k8s.io `Lease`, apiregistration.k8s.io
//! `APIService`, certificates.k8s.io `CertificateSigningRequest`, scheduling.k8s.io
//! `PriorityClass`, node.k8s.io `RuntimeClass` and flowcontrol.apiserver.k8s.io `FlowSchema`
//! and `PriorityLevelConfiguration`.

use jiff::Timestamp;
use serde_json::{Value, json};

use super::{
    AGE, Column, NAME, age, col, condition, flag, human_duration, int, int_or, list, name, text,
    text_or,
};

pub(super) const LEASE: &[Column] = &[
    NAME,
    col(
        "Holder",
        "string",
        0,
        "holderIdentity contains the identity of the holder of a current lease.",
    ),
    AGE,
];

/// Lease: Name, Holder, Age.
pub(super) fn lease_cells(object: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(object),
        json!(text(object, "/spec/holderIdentity")),
        age(object, now),
    ]
}

/// kube-aggregator's own table (its `ConvertToTable`, not printers.go).
pub(super) const API_SERVICE: &[Column] = &[
    NAME,
    col(
        "Service",
        "string",
        0,
        "The reference to the service that hosts this API endpoint.",
    ),
    col(
        "Available",
        "string",
        0,
        "Whether this service is available.",
    ),
    AGE,
];

/// APIService: Name, Service (`Local` when served by the API server itself, else
/// `namespace/name`), Available (`True`, `False (Reason)`, or `Unknown` before any check),
/// Age.
pub(super) fn api_service_cells(object: &Value, now: Timestamp) -> Vec<Value> {
    let service = match object.pointer("/spec/service") {
        Some(service @ Value::Object(_)) => {
            format!("{}/{}", text(service, "/namespace"), text(service, "/name"))
        }
        _ => "Local".to_owned(),
    };
    let available = match condition(object, "Available") {
        None => "Unknown".to_owned(),
        Some(c) => match (text(c, "/status"), text(c, "/reason")) {
            ("True", _) => "True".to_owned(),
            (status, "") => status.to_owned(),
            (status, reason) => format!("{status} ({reason})"),
        },
    };
    vec![
        name(object),
        json!(service),
        json!(available),
        age(object, now),
    ]
}

pub(super) const CERTIFICATE_SIGNING_REQUEST: &[Column] = &[
    NAME,
    AGE,
    col(
        "SignerName",
        "string",
        0,
        "signerName indicates the requested signer, and is a qualified name.",
    ),
    col(
        "Requestor",
        "string",
        0,
        "request contains an x509 certificate signing request encoded in a \"CERTIFICATE \
         REQUEST\" PEM block.",
    ),
    col(
        "RequestedDuration",
        "string",
        0,
        "expirationSeconds is the requested duration of validity of the issued certificate.",
    ),
    col(
        "Condition",
        "string",
        0,
        "conditions applied to the request.",
    ),
];

/// The Condition column: Denied, else Approved, else Pending; then `,Failed` and `,Issued`
/// (a certificate was written) when they apply.
fn csr_condition(csr: &Value) -> String {
    let has = |kind: &str| {
        list(csr, "/status/conditions")
            .iter()
            .any(|c| text(c, "/type") == kind)
    };
    let mut status = if has("Denied") {
        "Denied".to_owned()
    } else if has("Approved") {
        "Approved".to_owned()
    } else {
        "Pending".to_owned()
    };
    if has("Failed") {
        status.push_str(",Failed");
    }
    if !text(csr, "/status/certificate").is_empty() {
        status.push_str(",Issued");
    }
    status
}

/// CertificateSigningRequest: Name, Age, SignerName, Requestor (the user who created it),
/// RequestedDuration (`<none>` when unset), Condition.
pub(super) fn certificate_signing_request_cells(csr: &Value, now: Timestamp) -> Vec<Value> {
    let duration = csr
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        .map_or_else(|| "<none>".to_owned(), human_duration);
    vec![
        name(csr),
        age(csr, now),
        json!(text_or(csr, "/spec/signerName", "<none>")),
        json!(text(csr, "/spec/username")),
        json!(duration),
        json!(csr_condition(csr)),
    ]
}

pub(super) const PRIORITY_CLASS: &[Column] = &[
    NAME,
    col(
        "Value",
        "integer",
        0,
        "value represents the integer value of this priority class.",
    ),
    col(
        "Global-Default",
        "boolean",
        0,
        "globalDefault specifies whether this PriorityClass should be considered as the default \
         priority for pods that do not have any priority class.",
    ),
    AGE,
    // kube-apiserver fills it in wide output only but declares it with priority 0.
    col(
        "PreemptionPolicy",
        "string",
        0,
        "preemptionPolicy is the Policy for preempting pods with lower priority.",
    ),
];

/// PriorityClass: Name, Value, Global-Default, Age, PreemptionPolicy (unset reads as
/// Kubernetes' default, `PreemptLowerPriority`).
pub(super) fn priority_class_cells(object: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(object),
        json!(int(object, "/value")),
        json!(flag(object, "/globalDefault")),
        age(object, now),
        json!(text_or(object, "/preemptionPolicy", "PreemptLowerPriority")),
    ]
}

pub(super) const RUNTIME_CLASS: &[Column] = &[
    NAME,
    // kube-apiserver looks this description up in ObjectMeta's docs, which have none.
    col("Handler", "string", 0, ""),
    AGE,
];

/// RuntimeClass: Name, Handler, Age.
pub(super) fn runtime_class_cells(object: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(object),
        json!(text(object, "/handler")),
        age(object, now),
    ]
}

pub(super) const FLOW_SCHEMA: &[Column] = &[
    NAME,
    col(
        "PriorityLevel",
        "string",
        0,
        "`name` is the name of the priority level configuration being referenced Required.",
    ),
    col(
        "MatchingPrecedence",
        "string",
        0,
        "`matchingPrecedence` is used to choose among the FlowSchemas that match a given \
         request.",
    ),
    col(
        "DistinguisherMethod",
        "string",
        0,
        "`distinguisherMethod` defines how to compute the flow distinguisher for requests that \
         match this schema.",
    ),
    AGE,
    col(
        "MissingPL",
        "string",
        0,
        "references a broken or non-existent PriorityLevelConfiguration",
    ),
];

/// FlowSchema: Name, PriorityLevel, MatchingPrecedence (unset reads as the default, 1000),
/// DistinguisherMethod (`<none>`), Age, MissingPL (the status of the `Dangling` condition,
/// `?` before the API server has checked).
pub(super) fn flow_schema_cells(object: &Value, now: Timestamp) -> Vec<Value> {
    let precedence = match int(object, "/spec/matchingPrecedence") {
        0 => 1000,
        set => set,
    };
    let distinguisher = match object.pointer("/spec/distinguisherMethod") {
        Some(method @ Value::Object(_)) => text(method, "/type"),
        _ => "<none>",
    };
    let missing = condition(object, "Dangling").map_or("?", |c| text(c, "/status"));
    vec![
        name(object),
        json!(text(object, "/spec/priorityLevelConfiguration/name")),
        json!(precedence),
        json!(distinguisher),
        age(object, now),
        json!(missing),
    ]
}

pub(super) const PRIORITY_LEVEL_CONFIGURATION: &[Column] = &[
    NAME,
    col(
        "Type",
        "string",
        0,
        "`type` indicates whether this priority level is subject to limitation on request \
         execution.",
    ),
    col(
        "NominalConcurrencyShares",
        "string",
        0,
        "`nominalConcurrencyShares` (NCS) contributes to the computation of the \
         NominalConcurrencyLimit (NominalCL) of this level.",
    ),
    col(
        "Queues",
        "string",
        0,
        "`queues` is the number of queues for this priority level.",
    ),
    col(
        "HandSize",
        "string",
        0,
        "`handSize` is a small positive number that configures the shuffle sharding of requests \
         into queues.",
    ),
    col(
        "QueueLengthLimit",
        "string",
        0,
        "`queueLengthLimit` is the maximum number of requests allowed to be waiting in a given \
         queue of this priority level at a time; excess requests are rejected.",
    ),
    AGE,
];

/// PriorityLevelConfiguration: Name, Type, NominalConcurrencyShares, Queues, HandSize,
/// QueueLengthLimit, Age. The numbers are `<none>` for an exempt level (and the queue ones
/// for a level that rejects rather than queues); unset ones read as flowcontrol/v1's
/// defaults (30 shares, 64 queues, hand size 8, queue length limit 50).
pub(super) fn priority_level_configuration_cells(object: &Value, now: Timestamp) -> Vec<Value> {
    let none = || json!("<none>");
    let positive_or = |value: &Value, pointer: &str, default: i64| match int(value, pointer) {
        n if n > 0 => json!(n),
        _ => json!(default),
    };
    let (shares, queues, hand_size, queue_length) = match object.pointer("/spec/limited") {
        Some(limited @ Value::Object(_)) => {
            let shares = json!(int_or(limited, "/nominalConcurrencyShares", 30));
            match limited.pointer("/limitResponse/queuing") {
                Some(queuing @ Value::Object(_)) => (
                    shares,
                    positive_or(queuing, "/queues", 64),
                    positive_or(queuing, "/handSize", 8),
                    positive_or(queuing, "/queueLengthLimit", 50),
                ),
                _ => (shares, none(), none(), none()),
            }
        }
        _ => (none(), none(), none(), none()),
    };
    vec![
        name(object),
        json!(text(object, "/spec/type")),
        shares,
        queues,
        hand_size,
        queue_length,
        age(object, now),
    ]
}
