//! Server-side printing: the columns `kubectl get` shows for each resource, and the pure
//! functions that turn one stored object into the cells of its row.
//!
//! The column sets, priorities and cell formats follow kube-apiserver's printers
//! (`pkg/printers/internalversion/printers.go`), always generated "wide" as kube-apiserver
//! does: priority-1 columns are in every row and kubectl shows them only with `-o wide`.
//! Resources without a printer get kube-apiserver's default table (Name, Created At).
//!
//! Cells are computed from the stored JSON (the shape k8s-openapi validated on write), so a
//! missing field prints as Kubernetes prints a zero value rather than failing the request.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::resources::Resource;

/// One column of a Table (`meta.k8s.io/v1` `TableColumnDefinition`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Column {
    pub(crate) name: &'static str,
    /// The OpenAPI type of the cells: `string`, `integer`, `date`, ...
    pub(crate) kind: &'static str,
    /// `name` for the object's name column, otherwise empty.
    pub(crate) format: &'static str,
    /// 0: always shown; 1: shown by `kubectl get -o wide` only.
    pub(crate) priority: i32,
    pub(crate) description: &'static str,
}

impl Column {
    pub(crate) fn to_json(self) -> Value {
        json!({
            "name": self.name,
            "type": self.kind,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }
}

const fn col(
    name: &'static str,
    kind: &'static str,
    priority: i32,
    description: &'static str,
) -> Column {
    Column {
        name,
        kind,
        format: "",
        priority,
        description,
    }
}

const NAME_DOC: &str = "Name must be unique within a namespace. More info: \
                        https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DOC: &str = "CreationTimestamp is a timestamp representing the server time when this \
                       object was created.";

const NAME: Column = Column {
    name: "Name",
    kind: "string",
    format: "name",
    priority: 0,
    description: NAME_DOC,
};
const AGE: Column = col("Age", "string", 0, AGE_DOC);
const CONTAINERS: Column = col(
    "Containers",
    "string",
    1,
    "Names of each container in the template.",
);
const IMAGES: Column = col(
    "Images",
    "string",
    1,
    "Images referenced by each container in the template.",
);
const SELECTOR: Column = col(
    "Selector",
    "string",
    1,
    "Label query over pods that should match the replica count.",
);

const POD: &[Column] = &[
    NAME,
    col(
        "Ready",
        "string",
        0,
        "The aggregate readiness state of this pod for accepting traffic.",
    ),
    col(
        "Status",
        "string",
        0,
        "The aggregate status of the containers in this pod.",
    ),
    col(
        "Restarts",
        "string",
        0,
        "The number of times the containers in this pod have been restarted and when the last \
         container in this pod has restarted.",
    ),
    AGE,
    col("IP", "string", 1, "podIP address allocated to the pod."),
    col(
        "Node",
        "string",
        1,
        "NodeName is the node the pod is bound to.",
    ),
    col(
        "Nominated Node",
        "string",
        1,
        "nominatedNodeName is set when this pod preempts other pods on a node.",
    ),
    col(
        "Readiness Gates",
        "string",
        1,
        "If specified, all readiness gates will be evaluated for pod readiness.",
    ),
];

const DEPLOYMENT: &[Column] = &[
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

const REPLICA_SET: &[Column] = &[
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

const SERVICE: &[Column] = &[
    NAME,
    col(
        "Type",
        "string",
        0,
        "type determines how the Service is exposed.",
    ),
    col(
        "Cluster-IP",
        "string",
        0,
        "clusterIP is the IP address of the service.",
    ),
    col(
        "External-IP",
        "string",
        0,
        "externalIPs is a list of IP addresses for which nodes in the cluster will also accept \
         traffic for this service.",
    ),
    col(
        "Port(s)",
        "string",
        0,
        "The list of ports that are exposed by this service.",
    ),
    AGE,
    col(
        "Selector",
        "string",
        1,
        "Route service traffic to pods with label keys and values matching this selector.",
    ),
];

const NODE: &[Column] = &[
    NAME,
    col("Status", "string", 0, "The status of the node"),
    col("Roles", "string", 0, "The roles of the node"),
    AGE,
    col(
        "Version",
        "string",
        0,
        "Kubelet Version reported by the node.",
    ),
    col(
        "Internal-IP",
        "string",
        1,
        "List of addresses reachable to the node.",
    ),
    col(
        "External-IP",
        "string",
        1,
        "List of addresses reachable to the node.",
    ),
    col("OS-Image", "string", 1, "OS Image reported by the node."),
    col(
        "Kernel-Version",
        "string",
        1,
        "Kernel Version reported by the node.",
    ),
    col(
        "Container-Runtime",
        "string",
        1,
        "ContainerRuntime Version reported by the node.",
    ),
];

const NAMESPACE: &[Column] = &[
    NAME,
    col("Status", "string", 0, "The status of the namespace"),
    AGE,
];

const ENDPOINTS: &[Column] = &[
    NAME,
    col(
        "Endpoints",
        "string",
        0,
        "The set of all endpoints is the union of all subsets.",
    ),
    AGE,
];

const ENDPOINT_SLICE: &[Column] = &[
    NAME,
    col(
        "AddressType",
        "string",
        0,
        "addressType specifies the type of address carried by this EndpointSlice.",
    ),
    col(
        "Ports",
        "string",
        0,
        "ports specifies the list of network ports exposed by each endpoint in this slice.",
    ),
    col(
        "Endpoints",
        "string",
        0,
        "endpoints is a list of unique endpoints in this slice.",
    ),
    AGE,
];

const CONFIG_MAP: &[Column] = &[
    NAME,
    col("Data", "string", 0, "Data contains the configuration data."),
    AGE,
];

const SECRET: &[Column] = &[
    NAME,
    col(
        "Type",
        "string",
        0,
        "Used to facilitate programmatic handling of secret data.",
    ),
    col("Data", "string", 0, "Data contains the secret data."),
    AGE,
];

const EVENT: &[Column] = &[
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

const LEASE: &[Column] = &[
    NAME,
    col(
        "Holder",
        "string",
        0,
        "holderIdentity contains the identity of the holder of a current lease.",
    ),
    AGE,
];

/// kube-apiserver's table for resources without a printer.
const DEFAULT: &[Column] = &[
    NAME,
    Column {
        name: "Created At",
        kind: "date",
        format: "",
        priority: 0,
        description: AGE_DOC,
    },
];

/// The columns of `resource`'s table.
pub(crate) fn columns(resource: &Resource) -> &'static [Column] {
    match (resource.group, resource.kind) {
        ("", "Pod") => POD,
        ("apps", "Deployment") => DEPLOYMENT,
        ("apps", "ReplicaSet") => REPLICA_SET,
        ("", "Service") => SERVICE,
        ("", "Node") => NODE,
        ("", "Namespace") => NAMESPACE,
        ("", "Endpoints") => ENDPOINTS,
        ("discovery.k8s.io", "EndpointSlice") => ENDPOINT_SLICE,
        ("", "ConfigMap") => CONFIG_MAP,
        ("", "Secret") => SECRET,
        ("", "Event") => EVENT,
        ("coordination.k8s.io", "Lease") => LEASE,
        _ => DEFAULT,
    }
}

/// One row: its cells (one per column of [`columns`]) and its conditions.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row {
    pub(crate) cells: Vec<Value>,
    /// `TableRowCondition`s (pods that completed carry `Completed`).
    pub(crate) conditions: Vec<Value>,
}

/// The row of `object` (of `resource`) as seen at `now`.
pub(crate) fn row(resource: &Resource, object: &Value, now: Timestamp) -> Row {
    let cells = match (resource.group, resource.kind) {
        ("", "Pod") => pod_cells(object, now),
        ("apps", "Deployment") => deployment_cells(object, now),
        ("apps", "ReplicaSet") => replica_set_cells(object, now),
        ("", "Service") => service_cells(object, now),
        ("", "Node") => node_cells(object, now),
        ("", "Namespace") => namespace_cells(object, now),
        ("", "Endpoints") => endpoints_cells(object, now),
        ("discovery.k8s.io", "EndpointSlice") => endpoint_slice_cells(object, now),
        ("", "ConfigMap") => config_map_cells(object, now),
        ("", "Secret") => secret_cells(object, now),
        ("", "Event") => event_cells(object, now),
        ("coordination.k8s.io", "Lease") => lease_cells(object, now),
        _ => default_cells(object),
    };
    let conditions = if resource.group.is_empty() && resource.kind == "Pod" {
        pod_conditions(object)
    } else {
        Vec::new()
    };
    Row { cells, conditions }
}

// --- JSON accessors: a missing or mistyped field reads as its zero value. ---

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn int(value: &Value, pointer: &str) -> i64 {
    value.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn flag(value: &Value, pointer: &str) -> bool {
    value
        .pointer(pointer)
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn list<'a>(value: &'a Value, pointer: &str) -> &'a [Value] {
    value
        .pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn count(value: &Value, pointer: &str) -> usize {
    match value.pointer(pointer) {
        Some(Value::Object(map)) => map.len(),
        Some(Value::Array(items)) => items.len(),
        _ => 0,
    }
}

fn time(value: &Value, pointer: &str) -> Option<Timestamp> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .and_then(|t| t.parse().ok())
}

fn or_none(text: &str) -> String {
    if text.is_empty() {
        "<none>".to_owned()
    } else {
        text.to_owned()
    }
}

/// `duration.HumanDuration`: a short, rounded-down human duration ("5s", "3m2s", "10d").
pub(crate) fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".to_owned();
    }
    if seconds < 0 {
        return "0s".to_owned();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = seconds / 60;
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = seconds / 3600;
    if hours < 8 {
        let m = minutes % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    let days = hours / 24;
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{days}d")
        } else {
            format!("{days}d{h}h")
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{days}d");
    }
    let years = days / 365;
    if hours < 24 * 365 * 8 {
        let d = days % 365;
        return if d == 0 {
            format!("{years}y")
        } else {
            format!("{years}y{d}d")
        };
    }
    format!("{years}y")
}

/// How long ago `at` was, as kubectl prints it.
fn since(at: Option<Timestamp>, now: Timestamp) -> String {
    match at {
        Some(at) => human_duration(now.as_second() - at.as_second()),
        None => "<unknown>".to_owned(),
    }
}

fn age(object: &Value, now: Timestamp) -> Value {
    json!(since(time(object, "/metadata/creationTimestamp"), now))
}

fn name(object: &Value) -> Value {
    json!(text(object, "/metadata/name"))
}

/// `labels.FormatLabels`: `k=v` pairs sorted by key, `<none>` when empty.
fn format_labels(map: Option<&Value>) -> String {
    let pairs: BTreeMap<&str, &str> = map
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    let text = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    or_none(&text)
}

/// `LabelSelectorAsSelector(..).String()`: requirements sorted by key; empty for an empty
/// selector.
fn selector_string(selector: Option<&Value>) -> String {
    let Some(selector) = selector else {
        return String::new();
    };
    let mut requirements: Vec<(String, String)> = Vec::new();
    if let Some(labels) = selector.get("matchLabels").and_then(Value::as_object) {
        for (key, value) in labels {
            requirements.push((
                key.clone(),
                format!("{key}={}", value.as_str().unwrap_or("")),
            ));
        }
    }
    for expression in list(selector, "/matchExpressions") {
        let key = text(expression, "/key");
        let mut values: Vec<&str> = list(expression, "/values")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        values.sort_unstable();
        let values = values.join(",");
        let rendered = match text(expression, "/operator") {
            "In" => format!("{key} in ({values})"),
            "NotIn" => format!("{key} notin ({values})"),
            "Exists" => key.to_owned(),
            "DoesNotExist" => format!("!{key}"),
            _ => return "<invalid>".to_owned(),
        };
        requirements.push((key.to_owned(), rendered));
    }
    requirements.sort_by(|a, b| a.0.cmp(&b.0));
    requirements
        .into_iter()
        .map(|(_, r)| r)
        .collect::<Vec<_>>()
        .join(",")
}

/// `metav1.FormatLabelSelector`: as [`selector_string`], `<none>` when empty.
fn format_label_selector(selector: Option<&Value>) -> String {
    or_none(&selector_string(selector))
}

/// Container names and images of a pod template, comma-separated.
fn containers_and_images(object: &Value) -> (String, String) {
    let containers = list(object, "/spec/template/spec/containers");
    let names = containers
        .iter()
        .map(|c| text(c, "/name"))
        .collect::<Vec<_>>()
        .join(",");
    let images = containers
        .iter()
        .map(|c| text(c, "/image"))
        .collect::<Vec<_>>()
        .join(",");
    (names, images)
}

fn later(current: Option<Timestamp>, candidate: Option<Timestamp>) -> Option<Timestamp> {
    match (current, candidate) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn condition_true(object: &Value, kind: &str) -> bool {
    list(object, "/status/conditions")
        .iter()
        .any(|c| text(c, "/type") == kind && text(c, "/status") == "True")
}

fn terminated_reason(terminated: &Value, prefix: &str) -> String {
    let reason = text(terminated, "/reason");
    if !reason.is_empty() {
        return format!("{prefix}{reason}");
    }
    let signal = int(terminated, "/signal");
    if signal != 0 {
        format!("{prefix}Signal:{signal}")
    } else {
        format!("{prefix}ExitCode:{}", int(terminated, "/exitCode"))
    }
}

/// Pod: Name, Ready, Status, Restarts, Age, IP, Node, Nominated Node, Readiness Gates.
fn pod_cells(pod: &Value, now: Timestamp) -> Vec<Value> {
    let init_specs = list(pod, "/spec/initContainers");
    let restartable = |name: &str| {
        init_specs
            .iter()
            .any(|c| text(c, "/name") == name && text(c, "/restartPolicy") == "Always")
    };
    let total = list(pod, "/spec/containers").len()
        + init_specs
            .iter()
            .filter(|c| text(c, "/restartPolicy") == "Always")
            .count();
    let mut ready = 0;
    let mut restarts = 0;
    let mut restartable_restarts = 0;
    let mut last_restart = None;
    let mut last_restartable_restart = None;
    let phase = text(pod, "/status/phase");
    let mut reason = match text(pod, "/status/reason") {
        "" => phase.to_owned(),
        r => r.to_owned(),
    };
    if list(pod, "/status/conditions")
        .iter()
        .any(|c| text(c, "/type") == "PodScheduled" && text(c, "/reason") == "SchedulingGated")
    {
        reason = "SchedulingGated".to_owned();
    }

    let mut initializing = false;
    for (i, status) in list(pod, "/status/initContainerStatuses")
        .iter()
        .enumerate()
    {
        let restart_count = int(status, "/restartCount");
        let finished = time(status, "/lastState/terminated/finishedAt");
        restarts += restart_count;
        last_restart = later(last_restart, finished);
        let is_restartable = restartable(text(status, "/name"));
        if is_restartable {
            restartable_restarts += restart_count;
            last_restartable_restart = later(last_restartable_restart, finished);
        }
        let terminated = status
            .pointer("/state/terminated")
            .filter(|t| t.is_object());
        let waiting = text(status, "/state/waiting/reason");
        if let Some(t) = terminated
            && int(t, "/exitCode") == 0
        {
            continue;
        }
        if is_restartable && flag(status, "/started") {
            if flag(status, "/ready") {
                ready += 1;
            }
            continue;
        }
        reason = if let Some(t) = terminated {
            terminated_reason(t, "Init:")
        } else if !waiting.is_empty() && waiting != "PodInitializing" {
            format!("Init:{waiting}")
        } else {
            format!("Init:{i}/{}", init_specs.len())
        };
        initializing = true;
        break;
    }

    if !initializing || condition_true(pod, "Initialized") {
        restarts = restartable_restarts;
        last_restart = last_restartable_restart;
        let mut has_running = false;
        for status in list(pod, "/status/containerStatuses").iter().rev() {
            restarts += int(status, "/restartCount");
            last_restart = later(
                last_restart,
                time(status, "/lastState/terminated/finishedAt"),
            );
            let waiting = text(status, "/state/waiting/reason");
            let terminated = status
                .pointer("/state/terminated")
                .filter(|t| t.is_object());
            if !waiting.is_empty() {
                reason = waiting.to_owned();
            } else if let Some(t) = terminated {
                reason = terminated_reason(t, "");
            } else if flag(status, "/ready")
                && status
                    .pointer("/state/running")
                    .is_some_and(Value::is_object)
            {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if condition_true(pod, "Ready") {
                "Running".to_owned()
            } else {
                "NotReady".to_owned()
            };
        }
    }

    let deleting = pod
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|d| !d.is_null());
    if deleting && text(pod, "/status/reason") == "NodeLost" {
        reason = "Unknown".to_owned();
    } else if deleting && phase != "Succeeded" && phase != "Failed" {
        reason = "Terminating".to_owned();
    }

    let restarts_cell = match last_restart {
        Some(at) if restarts != 0 => format!("{restarts} ({} ago)", since(Some(at), now)),
        _ => restarts.to_string(),
    };

    let ip = list(pod, "/status/podIPs")
        .first()
        .map(|ip| text(ip, "/ip"))
        .filter(|ip| !ip.is_empty())
        .unwrap_or_else(|| text(pod, "/status/podIP"));
    let gates = list(pod, "/spec/readinessGates");
    let readiness_gates = if gates.is_empty() {
        "<none>".to_owned()
    } else {
        let conditions = list(pod, "/status/conditions");
        let passed = gates
            .iter()
            .filter(|gate| {
                let kind = text(gate, "/conditionType");
                conditions
                    .iter()
                    .find(|c| text(c, "/type") == kind)
                    .is_some_and(|c| text(c, "/status") == "True")
            })
            .count();
        format!("{passed}/{}", gates.len())
    };
    vec![
        name(pod),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_cell),
        age(pod, now),
        json!(or_none(ip)),
        json!(or_none(text(pod, "/spec/nodeName"))),
        json!(or_none(text(pod, "/status/nominatedNodeName"))),
        json!(readiness_gates),
    ]
}

fn pod_conditions(pod: &Value) -> Vec<Value> {
    let (reason, message) = match text(pod, "/status/phase") {
        "Succeeded" => ("Succeeded", "The pod has completed successfully."),
        "Failed" => ("Failed", "The pod failed."),
        _ => return Vec::new(),
    };
    vec![json!({"type": "Completed", "status": "True", "reason": reason, "message": message})]
}

/// Deployment: Name, Ready, Up-to-date, Available, Age, Containers, Images, Selector.
fn deployment_cells(object: &Value, now: Timestamp) -> Vec<Value> {
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
fn replica_set_cells(object: &Value, now: Timestamp) -> Vec<Value> {
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

/// `Port(s)`: `80/TCP`, or `80:30080/TCP` with a node port.
fn service_ports(service: &Value) -> String {
    let ports = list(service, "/spec/ports")
        .iter()
        .map(|p| {
            let port = int(p, "/port");
            let protocol = match text(p, "/protocol") {
                "" => "TCP",
                other => other,
            };
            match int(p, "/nodePort") {
                n if n > 0 => format!("{port}:{n}/{protocol}"),
                _ => format!("{port}/{protocol}"),
            }
        })
        .collect::<Vec<_>>()
        .join(",");
    or_none(&ports)
}

fn service_external_ip(service: &Value) -> String {
    let external: Vec<&str> = list(service, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match text(service, "/spec/type") {
        "" | "ClusterIP" | "NodePort" => or_none(&external.join(",")),
        "LoadBalancer" => {
            let mut ingress: Vec<&str> = list(service, "/status/loadBalancer/ingress")
                .iter()
                .map(|i| match text(i, "/ip") {
                    "" => text(i, "/hostname"),
                    ip => ip,
                })
                .filter(|a| !a.is_empty())
                .collect();
            ingress.sort_unstable();
            ingress.dedup();
            ingress.extend(external);
            if ingress.is_empty() {
                "<pending>".to_owned()
            } else {
                ingress.join(",")
            }
        }
        "ExternalName" => text(service, "/spec/externalName").to_owned(),
        _ => "<unknown>".to_owned(),
    }
}

/// Service: Name, Type, Cluster-IP, External-IP, Port(s), Age, Selector.
fn service_cells(service: &Value, now: Timestamp) -> Vec<Value> {
    let cluster_ip = list(service, "/spec/clusterIPs")
        .first()
        .and_then(Value::as_str)
        .or_else(|| service.pointer("/spec/clusterIP").and_then(Value::as_str))
        .unwrap_or("");
    let kind = match text(service, "/spec/type") {
        "" => "ClusterIP",
        other => other,
    };
    vec![
        name(service),
        json!(kind),
        json!(or_none(cluster_ip)),
        json!(service_external_ip(service)),
        json!(service_ports(service)),
        age(service, now),
        json!(format_labels(service.pointer("/spec/selector"))),
    ]
}

/// Node: Name, Status, Roles, Age, Version, Internal-IP, External-IP, OS-Image,
/// Kernel-Version, Container-Runtime.
fn node_cells(node: &Value, now: Timestamp) -> Vec<Value> {
    let mut status = match list(node, "/status/conditions")
        .iter()
        .find(|c| text(c, "/type") == "Ready")
    {
        Some(c) if text(c, "/status") == "True" => "Ready".to_owned(),
        Some(_) => "NotReady".to_owned(),
        None => "Unknown".to_owned(),
    };
    if flag(node, "/spec/unschedulable") {
        status.push_str(",SchedulingDisabled");
    }
    let mut roles: Vec<&str> = node
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .filter_map(|(key, value)| {
                    if let Some(role) = key.strip_prefix("node-role.kubernetes.io/") {
                        (!role.is_empty()).then_some(role)
                    } else if key == "kubernetes.io/role" {
                        value.as_str().filter(|v| !v.is_empty())
                    } else {
                        None
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    roles.sort_unstable();
    roles.dedup();
    let address = |kind: &str| {
        list(node, "/status/addresses")
            .iter()
            .find(|a| text(a, "/type") == kind)
            .map_or_else(|| "<none>".to_owned(), |a| text(a, "/address").to_owned())
    };
    let info = |field: &str| match text(node, &format!("/status/nodeInfo/{field}")) {
        "" => "<unknown>".to_owned(),
        value => value.to_owned(),
    };
    vec![
        name(node),
        json!(status),
        json!(or_none(&roles.join(","))),
        age(node, now),
        json!(text(node, "/status/nodeInfo/kubeletVersion")),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(info("osImage")),
        json!(info("kernelVersion")),
        json!(info("containerRuntimeVersion")),
    ]
}

/// Namespace: Name, Status, Age.
fn namespace_cells(object: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(object),
        json!(text(object, "/status/phase")),
        age(object, now),
    ]
}

/// At most three entries, then `+ N more...`.
const LIST_MAX: usize = 3;

fn with_more(shown: &[String], total: usize, empty: &str) -> String {
    let text = shown.join(",");
    if total > shown.len() {
        format!("{text} + {} more...", total - shown.len())
    } else if text.is_empty() {
        empty.to_owned()
    } else {
        text
    }
}

/// `formatEndpoints`: `ip:port` for every address and port of every subset.
fn format_endpoints(endpoints: &Value) -> String {
    let subsets = list(endpoints, "/subsets");
    if subsets.is_empty() {
        return "<none>".to_owned();
    }
    let mut shown = Vec::new();
    let mut total = 0;
    for subset in subsets {
        let addresses = list(subset, "/addresses");
        let ports = list(subset, "/ports");
        let mut add = |entry: String| {
            total += 1;
            if shown.len() < LIST_MAX {
                shown.push(entry);
            }
        };
        if ports.is_empty() {
            for address in addresses {
                add(text(address, "/ip").to_owned());
            }
            continue;
        }
        for port in ports {
            for address in addresses {
                let ip = text(address, "/ip");
                let port = int(port, "/port");
                add(if ip.contains(':') {
                    format!("[{ip}]:{port}")
                } else {
                    format!("{ip}:{port}")
                });
            }
        }
    }
    with_more(&shown, total, "")
}

/// Endpoints: Name, Endpoints, Age.
fn endpoints_cells(object: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(object),
        json!(format_endpoints(object)),
        age(object, now),
    ]
}

/// EndpointSlice: Name, AddressType, Ports, Endpoints, Age.
fn endpoint_slice_cells(object: &Value, now: Timestamp) -> Vec<Value> {
    let ports = list(object, "/ports");
    let port_names: Vec<String> = ports
        .iter()
        .take(LIST_MAX)
        .map(|p| match p.get("port").and_then(Value::as_i64) {
            Some(port) => port.to_string(),
            None => match p.get("name").and_then(Value::as_str) {
                Some(name) => name.to_owned(),
                None => "*".to_owned(),
            },
        })
        .collect();
    let addresses: Vec<&str> = list(object, "/endpoints")
        .iter()
        .flat_map(|e| list(e, "/addresses").iter().filter_map(Value::as_str))
        .collect();
    let shown: Vec<String> = addresses
        .iter()
        .take(LIST_MAX)
        .map(|a| (*a).to_owned())
        .collect();
    vec![
        name(object),
        json!(text(object, "/addressType")),
        json!(with_more(&port_names, ports.len(), "<unset>")),
        json!(with_more(&shown, addresses.len(), "<unset>")),
        age(object, now),
    ]
}

/// ConfigMap: Name, Data (entries in `data` and `binaryData`), Age.
fn config_map_cells(object: &Value, now: Timestamp) -> Vec<Value> {
    let entries = count(object, "/data") + count(object, "/binaryData");
    vec![name(object), json!(entries), age(object, now)]
}

/// Secret: Name, Type, Data, Age.
fn secret_cells(object: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(object),
        json!(text(object, "/type")),
        json!(count(object, "/data")),
        age(object, now),
    ]
}

/// Event: Last Seen, Type, Reason, Object, Subobject, Source, Message, First Seen, Count,
/// Name.
fn event_cells(event: &Value, now: Timestamp) -> Vec<Value> {
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

/// Lease: Name, Holder, Age.
fn lease_cells(object: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(object),
        json!(text(object, "/spec/holderIdentity")),
        age(object, now),
    ]
}

/// Default: Name, Created At (RFC 3339, UTC).
fn default_cells(object: &Value) -> Vec<Value> {
    let created = time(object, "/metadata/creationTimestamp")
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    vec![name(object), json!(created)]
}

#[cfg(test)]
mod tests;
