//! Server-side printing: the columns `kubectl get` shows for each resource, and the pure
//! functions that turn one stored object into the cells of its row.
//!
//! The column sets, priorities and cell formats follow kube-apiserver's printers
//! (`pkg/printers/internalversion/printers.go`), always generated "wide" as kube-apiserver
//! does: priority-1 columns are in every row and kubectl shows them only with `-o wide`.
//! Resources without a printer get kube-apiserver's default table (Name, Created At).
//!
//! Cells are computed from the stored JSON (the shape k8s-openapi validated on write), so a
//! missing field prints as Kubernetes prints a zero value rather than failing the request,
//! or, for a field Kubernetes' defaulting fills on write (replicas, reclaim policies, volume
//! modes, ...), as that default. Quantities print as written (kube-apiserver prints their
//! canonical form, `1` for a written `1000m`).
//!
//! One module per API group or topic; `printer` maps each (group, kind) to its columns and
//! cells.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde_json::{Value, json};

use crate::{object::label_selector_text, registry::Resource};

mod admission;
mod apps;
mod autoscaling;
mod batch;
mod core;
mod events;
mod networking;
mod other;
mod pod;
mod rbac;
mod storage;

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
pub(crate) const AGE_DOC: &str = "CreationTimestamp is a timestamp representing the server time when this \
                       object was created.";

pub(crate) const NAME: Column = Column {
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

/// The cells of one object's row, one per column, as seen at a given time.
type Cells = fn(&Value, Timestamp) -> Vec<Value>;

/// How one kind prints: its columns and the cells of one object.
#[derive(Clone, Copy)]
struct Printer {
    columns: &'static [Column],
    cells: Cells,
}

const fn printed(columns: &'static [Column], cells: Cells) -> Printer {
    Printer { columns, cells }
}

/// The printer of `group`'s `kind`: kube-apiserver's default table when it has none.
fn printer(group: &str, kind: &str) -> Printer {
    match (group, kind) {
        ("", "Pod") => printed(pod::POD, pod::pod_cells),
        ("", "Service") => printed(core::SERVICE, core::service_cells),
        ("", "Node") => printed(core::NODE, core::node_cells),
        ("", "Namespace") => printed(core::NAMESPACE, core::namespace_cells),
        ("", "Endpoints") => printed(core::ENDPOINTS, core::endpoints_cells),
        ("", "ConfigMap") => printed(core::CONFIG_MAP, core::config_map_cells),
        ("", "Secret") => printed(core::SECRET, core::secret_cells),
        ("", "ServiceAccount") => printed(core::SERVICE_ACCOUNT, core::service_account_cells),
        ("", "ReplicationController") => printed(
            core::REPLICATION_CONTROLLER,
            core::replication_controller_cells,
        ),
        ("", "PodTemplate") => printed(core::POD_TEMPLATE, core::pod_template_cells),
        ("", "ResourceQuota") => printed(core::RESOURCE_QUOTA, core::resource_quota_cells),
        ("", "PersistentVolume") => {
            printed(storage::PERSISTENT_VOLUME, storage::persistent_volume_cells)
        }
        ("", "PersistentVolumeClaim") => printed(
            storage::PERSISTENT_VOLUME_CLAIM,
            storage::persistent_volume_claim_cells,
        ),
        ("", "Event") => printed(events::EVENT, events::event_cells),
        ("events.k8s.io", "Event") => printed(events::EVENT, events::events_event_cells),
        ("apps", "Deployment") => printed(apps::DEPLOYMENT, apps::deployment_cells),
        ("apps", "ReplicaSet") => printed(apps::REPLICA_SET, apps::replica_set_cells),
        ("apps", "DaemonSet") => printed(apps::DAEMON_SET, apps::daemon_set_cells),
        ("apps", "StatefulSet") => printed(apps::STATEFUL_SET, apps::stateful_set_cells),
        ("apps", "ControllerRevision") => {
            printed(apps::CONTROLLER_REVISION, apps::controller_revision_cells)
        }
        ("batch", "Job") => printed(batch::JOB, batch::job_cells),
        ("batch", "CronJob") => printed(batch::CRON_JOB, batch::cron_job_cells),
        ("autoscaling", "HorizontalPodAutoscaler") => printed(
            autoscaling::HORIZONTAL_POD_AUTOSCALER,
            autoscaling::horizontal_pod_autoscaler_cells,
        ),
        ("policy", "PodDisruptionBudget") => printed(
            autoscaling::POD_DISRUPTION_BUDGET,
            autoscaling::pod_disruption_budget_cells,
        ),
        ("rbac.authorization.k8s.io", "RoleBinding") => {
            printed(rbac::ROLE_BINDING, rbac::binding_cells)
        }
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            printed(rbac::CLUSTER_ROLE_BINDING, rbac::binding_cells)
        }
        ("discovery.k8s.io", "EndpointSlice") => {
            printed(networking::ENDPOINT_SLICE, networking::endpoint_slice_cells)
        }
        ("networking.k8s.io", "NetworkPolicy") => {
            printed(networking::NETWORK_POLICY, networking::network_policy_cells)
        }
        ("networking.k8s.io", "Ingress") => printed(networking::INGRESS, networking::ingress_cells),
        ("networking.k8s.io", "IngressClass") => {
            printed(networking::INGRESS_CLASS, networking::ingress_class_cells)
        }
        ("networking.k8s.io", "IPAddress") => {
            printed(networking::IP_ADDRESS, networking::ip_address_cells)
        }
        ("networking.k8s.io", "ServiceCIDR") => {
            printed(networking::SERVICE_CIDR, networking::service_cidr_cells)
        }
        ("storage.k8s.io", "StorageClass") => {
            printed(storage::STORAGE_CLASS, storage::storage_class_cells)
        }
        ("storage.k8s.io", "CSIDriver") => printed(storage::CSI_DRIVER, storage::csi_driver_cells),
        ("storage.k8s.io", "CSINode") => printed(storage::CSI_NODE, storage::csi_node_cells),
        ("storage.k8s.io", "VolumeAttachment") => {
            printed(storage::VOLUME_ATTACHMENT, storage::volume_attachment_cells)
        }
        ("storage.k8s.io", "CSIStorageCapacity") => printed(
            storage::CSI_STORAGE_CAPACITY,
            storage::csi_storage_capacity_cells,
        ),
        (
            "admissionregistration.k8s.io",
            "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration",
        ) => printed(
            admission::WEBHOOK_CONFIGURATION,
            admission::webhook_configuration_cells,
        ),
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy") => printed(
            admission::VALIDATING_ADMISSION_POLICY,
            admission::validating_admission_policy_cells,
        ),
        ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding") => printed(
            admission::VALIDATING_ADMISSION_POLICY_BINDING,
            admission::validating_admission_policy_binding_cells,
        ),
        ("apiregistration.k8s.io", "APIService") => {
            printed(other::API_SERVICE, other::api_service_cells)
        }
        ("certificates.k8s.io", "CertificateSigningRequest") => printed(
            other::CERTIFICATE_SIGNING_REQUEST,
            other::certificate_signing_request_cells,
        ),
        ("coordination.k8s.io", "Lease") => printed(other::LEASE, other::lease_cells),
        ("scheduling.k8s.io", "PriorityClass") => {
            printed(other::PRIORITY_CLASS, other::priority_class_cells)
        }
        ("node.k8s.io", "RuntimeClass") => {
            printed(other::RUNTIME_CLASS, other::runtime_class_cells)
        }
        ("flowcontrol.apiserver.k8s.io", "FlowSchema") => {
            printed(other::FLOW_SCHEMA, other::flow_schema_cells)
        }
        ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration") => printed(
            other::PRIORITY_LEVEL_CONFIGURATION,
            other::priority_level_configuration_cells,
        ),
        // Kubernetes has no printer for LimitRange, Role and ClusterRole either.
        _ => printed(DEFAULT, |object, _| default_cells(object)),
    }
}

/// The columns of `resource`'s table.
pub(crate) fn columns(resource: &Resource) -> &'static [Column] {
    printer(resource.group, resource.kind).columns
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
    let cells = (printer(resource.group, resource.kind).cells)(object, now);
    let conditions = if resource.group.is_empty() && resource.kind == "Pod" {
        pod::pod_conditions(object)
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

/// The selector as `printDeployment` prints it: `<invalid>` when it cannot be converted.
fn selector_string(selector: Option<&Value>) -> String {
    label_selector_text(selector).unwrap_or_else(|_| "<invalid>".to_owned())
}

/// `metav1.FormatLabelSelector`: `<none>` when empty, `<error>` when it cannot be converted.
fn format_label_selector(selector: Option<&Value>) -> String {
    match label_selector_text(selector) {
        Ok(text) => or_none(&text),
        Err(_) => "<error>".to_owned(),
    }
}

/// Where a workload's pod template lists its containers.
const TEMPLATE_CONTAINERS: &str = "/spec/template/spec/containers";

/// `layoutContainerCells`: the names and the images of the containers listed at `pointer`,
/// each comma-separated.
fn containers_and_images(object: &Value, pointer: &str) -> (String, String) {
    let containers = list(object, pointer);
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

/// The first of `object`'s status conditions of type `kind`.
fn condition<'a>(object: &'a Value, kind: &str) -> Option<&'a Value> {
    list(object, "/status/conditions")
        .iter()
        .find(|c| text(c, "/type") == kind)
}

/// An optional integer field: its value, or `default` (what Kubernetes' defaulting sets)
/// when absent.
fn int_or(value: &Value, pointer: &str, default: i64) -> i64 {
    value
        .pointer(pointer)
        .and_then(Value::as_i64)
        .unwrap_or(default)
}

/// An optional boolean field: its value, or `default` when absent.
fn flag_or(value: &Value, pointer: &str, default: bool) -> bool {
    value
        .pointer(pointer)
        .and_then(Value::as_bool)
        .unwrap_or(default)
}

/// An optional string field: its value, or `default` when absent or empty.
fn text_or<'a>(value: &'a Value, pointer: &str, default: &'a str) -> &'a str {
    match text(value, pointer) {
        "" => default,
        found => found,
    }
}

/// A `resource.Quantity` as stored (kubectl prints its canonical form; keelson keeps the
/// written one), or `missing` when absent.
fn quantity(value: &Value, pointer: &str, missing: &str) -> String {
    match value.pointer(pointer) {
        Some(Value::String(q)) => q.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => missing.to_owned(),
    }
}

/// Go's `printBool`: `True` or `False`.
fn bool_text(value: bool) -> &'static str {
    if value { "True" } else { "False" }
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

/// Default: Name, Created At (RFC 3339, UTC).
fn default_cells(object: &Value) -> Vec<Value> {
    let created = time(object, "/metadata/creationTimestamp")
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    vec![name(object), json!(created)]
}

#[cfg(test)]
mod tests;
