//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`) decoded into the
//! JSON the JSON path stores.
//!
//! kubectl's typed clients (`kubectl create configmap|secret|namespace|deployment|service|job|
//! cronjob|serviceaccount|role|rolebinding|clusterrole|clusterrolebinding|priorityclass|quota|
//! poddisruptionbudget|ingress|token ...`) send protobuf and do not fall back to JSON. A body is
//! the 4-byte magic `k8s\0` and a `runtime.Unknown` envelope: `typeMeta` (apiVersion, kind) and
//! `raw`, the object's message.
//! The message is walked with a generated wire schema ([`schema`]: field numbers and wire types
//! from the k8s-pb crate, JSON names from k8s-openapi) and rendered as Kubernetes renders the
//! object in JSON:
//! - `metav1.Time` -> RFC 3339 seconds (`2024-05-01T10:00:00Z`), the zero time omitted;
//!   `MicroTime` -> six fractional digits (no served kind has a `metav1.Duration` field);
//! - `IntOrString` -> a number or a string; `Quantity` -> its string;
//! - `bytes` (secret data, binaryData, caBundle) -> base64; `FieldsV1`/`RawExtension` -> their
//!   raw JSON;
//! - embedded Go structs (`VolumeSource` in `Volume`, `ProbeHandler` in `Probe`) inlined;
//! - maps -> objects, repeated fields (packed or not) -> arrays;
//! - Go marshals every value field, so a zero scalar (`""`, `0`, `false`) is omitted as JSON's
//!   `omitempty` would, except for the fields Kubernetes renders when zero ([`KEEP_ZERO`]:
//!   pointer fields such as `replicas: 0`, `backoffLimit: 0`, PDB `maxUnavailable: 0`,
//!   `automountServiceAccountToken: false`, and value fields without `omitempty` such as
//!   PriorityClass `value: 0`);
//! - `ExtraValue` (a `[]string` as a map value) -> an array of strings.
//!
//! Unknown field numbers are skipped (newer clients); a type outside the schema is a 415 naming
//! it.

use base64::Engine;
use serde_json::{Map, Value};

mod schema;

/// How a field's value is encoded and rendered.
#[derive(Debug)]
pub(crate) enum Kind {
    String,
    Bytes,
    Bool,
    Int32,
    Int64,
    /// A message in [`schema::MESSAGES`], by name (`api/core/v1/PodSpec`).
    Message(&'static str),
    /// `map<string, V>`: repeated entries `{1: key, 2: value}`.
    Map(&'static Kind),
    Time,
    MicroTime,
    IntOrString,
    Quantity,
    /// `FieldsV1` / `RawExtension`: field 1 holds JSON bytes.
    RawJson,
    /// A Go `[]string` wrapped in a message of its own (`repeated string items = 1`) so that it
    /// can be a map value (`CertificateSigningRequestSpec.extra`): a JSON array of strings.
    StringList,
}

/// One field of a message.
#[derive(Debug)]
pub(crate) struct Field {
    tag: u32,
    /// The JSON name; empty for an embedded struct whose fields are inlined.
    json: &'static str,
    kind: Kind,
    repeated: bool,
}

/// One message: its fields sorted by tag.
#[derive(Debug)]
pub(crate) struct Message {
    name: &'static str,
    fields: &'static [Field],
}

/// The content type of Kubernetes protobuf.
pub(crate) const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

const MAGIC: &[u8] = b"k8s\0";

/// Fields kept when zero (`Message.field`, the message's name without its package: one entry
/// covers every group's message of that name), because Kubernetes renders them when zero:
/// - pointer fields (`*int32`, `*bool`, `*string`, `*IntOrString`): on the wire only when the
///   client set them, so a zero is the client's value, and often not the default
///   (`replicas: 0`, `backoffLimit: 0`, `maxUnavailable: 0`, `attachRequired: false`,
///   `storageClassName: ""`), or one validation must see and reject (`timeoutSeconds: 0`);
/// - value fields without `omitempty`, whose zero a reader shows (`PriorityClass.value: 0`,
///   `PodDisruptionBudgetStatus.disruptionsAllowed: 0`, `VolumeAttachmentStatus.attached:
///   false`).
///
/// Taken from the Go types (k8s.io/api `types.go` of each group, kube-aggregator's for
/// APIService). RBAC has none.
const KEEP_ZERO: &[&str] = &[
    "APIServiceSpec.groupPriorityMinimum",
    "APIServiceSpec.versionPriority",
    "AzureFilePersistentVolumeSource.secretNamespace",
    "CSIDriverSpec.attachRequired",
    "CSIDriverSpec.fsGroupPolicy",
    "CSIDriverSpec.nodeAllocatableUpdatePeriodSeconds",
    "CSIDriverSpec.podInfoOnMount",
    "CSIDriverSpec.requiresRepublish",
    "CSIDriverSpec.seLinuxMount",
    "CSIDriverSpec.serviceAccountTokenInSecrets",
    "CSIDriverSpec.storageCapacity",
    "CertificateSigningRequestSpec.expirationSeconds",
    "ConfigMapVolumeSource.defaultMode",
    "ControllerRevision.revision",
    "CronJobSpec.failedJobsHistoryLimit",
    "CronJobSpec.startingDeadlineSeconds",
    "CronJobSpec.successfulJobsHistoryLimit",
    "CronJobSpec.suspend",
    "CronJobSpec.timeZone",
    "DaemonSetSpec.revisionHistoryLimit",
    "DaemonSetStatus.currentNumberScheduled",
    "DaemonSetStatus.desiredNumberScheduled",
    "DaemonSetStatus.numberMisscheduled",
    "DaemonSetStatus.numberReady",
    "DeleteOptions.gracePeriodSeconds",
    "DeleteOptions.orphanDependents",
    "DeploymentSpec.progressDeadlineSeconds",
    "DeploymentSpec.replicas",
    "DeploymentSpec.revisionHistoryLimit",
    "DownwardAPIVolumeFile.mode",
    "DownwardAPIVolumeSource.defaultMode",
    "EndpointConditions.ready",
    "EndpointConditions.serving",
    "EndpointConditions.terminating",
    "EndpointPort.port",
    "EventSeries.count",
    "ExemptPriorityLevelConfiguration.lendablePercent",
    "ExemptPriorityLevelConfiguration.nominalConcurrencyShares",
    "FcVolumeSource.lun",
    "GlusterfsPersistentVolumeSource.endpointsNamespace",
    "HorizontalPodAutoscalerSpec.maxReplicas",
    "HorizontalPodAutoscalerSpec.minReplicas",
    "HorizontalPodAutoscalerStatus.desiredReplicas",
    "HpaScalingPolicy.periodSeconds",
    "HpaScalingPolicy.value",
    "HpaScalingRules.selectPolicy",
    "HpaScalingRules.stabilizationWindowSeconds",
    "HttpIngressPath.pathType",
    "IngressClassParametersReference.apiGroup",
    "IngressClassParametersReference.namespace",
    "IngressClassParametersReference.scope",
    "IngressPortStatus.error",
    "IngressPortStatus.port",
    "IngressSpec.ingressClassName",
    "IscsiPersistentVolumeSource.initiatorName",
    "IscsiPersistentVolumeSource.lun",
    "IscsiVolumeSource.initiatorName",
    "IscsiVolumeSource.lun",
    "JobSpec.activeDeadlineSeconds",
    "JobSpec.backoffLimit",
    "JobSpec.backoffLimitPerIndex",
    "JobSpec.completionMode",
    "JobSpec.completions",
    "JobSpec.managedBy",
    "JobSpec.manualSelector",
    "JobSpec.maxFailedIndexes",
    "JobSpec.parallelism",
    "JobSpec.podReplacementPolicy",
    "JobSpec.suspend",
    "JobSpec.ttlSecondsAfterFinished",
    "JobStatus.failedIndexes",
    "JobStatus.ready",
    "JobStatus.terminating",
    "KeyToPath.mode",
    "LeaseSpec.leaseDurationSeconds",
    "LeaseSpec.leaseTransitions",
    "LimitedPriorityLevelConfiguration.borrowingLimitPercent",
    "LimitedPriorityLevelConfiguration.lendablePercent",
    "LimitedPriorityLevelConfiguration.nominalConcurrencyShares",
    "LocalVolumeSource.fsType",
    "MatchResources.matchPolicy",
    "MetricTarget.averageUtilization",
    "MetricValueStatus.averageUtilization",
    "MutatingWebhook.failurePolicy",
    "MutatingWebhook.matchPolicy",
    "MutatingWebhook.reinvocationPolicy",
    "MutatingWebhook.sideEffects",
    "MutatingWebhook.timeoutSeconds",
    "NetworkPolicyPort.endPort",
    "NetworkPolicyPort.port",
    "NetworkPolicyPort.protocol",
    "ObjectMeta.deletionGracePeriodSeconds",
    "ParamRef.parameterNotFoundAction",
    "PersistentVolumeClaimSpec.storageClassName",
    "PersistentVolumeClaimSpec.volumeAttributesClassName",
    "PersistentVolumeClaimSpec.volumeMode",
    "PersistentVolumeClaimStatus.currentVolumeAttributesClassName",
    "PersistentVolumeSpec.volumeAttributesClassName",
    "PersistentVolumeSpec.volumeMode",
    "PodDisruptionBudgetSpec.maxUnavailable",
    "PodDisruptionBudgetSpec.minAvailable",
    "PodDisruptionBudgetSpec.unhealthyPodEvictionPolicy",
    "PodDisruptionBudgetStatus.currentHealthy",
    "PodDisruptionBudgetStatus.desiredHealthy",
    "PodDisruptionBudgetStatus.disruptionsAllowed",
    "PodDisruptionBudgetStatus.expectedPods",
    "PodFailurePolicyOnExitCodesRequirement.containerName",
    "PodSecurityContext.fsGroup",
    "PodSecurityContext.runAsGroup",
    "PodSecurityContext.runAsUser",
    "PodSpec.activeDeadlineSeconds",
    "PodSpec.automountServiceAccountToken",
    "PodSpec.enableServiceLinks",
    "PodSpec.hostUsers",
    "PodSpec.priority",
    "PodSpec.terminationGracePeriodSeconds",
    "PriorityClass.preemptionPolicy",
    "PriorityClass.value",
    "Probe.terminationGracePeriodSeconds",
    "ProjectedVolumeSource.defaultMode",
    "ReplicaSetSpec.replicas",
    "ReplicaSetStatus.replicas",
    "ReplicationControllerSpec.replicas",
    "ReplicationControllerStatus.replicas",
    "RollingUpdateDaemonSet.maxSurge",
    "RollingUpdateDaemonSet.maxUnavailable",
    "RollingUpdateDeployment.maxSurge",
    "RollingUpdateDeployment.maxUnavailable",
    "RollingUpdateStatefulSetStrategy.maxUnavailable",
    "RollingUpdateStatefulSetStrategy.partition",
    "Rule.scope",
    "ScaleSpec.replicas",
    "ScaleStatus.replicas",
    "SecretVolumeSource.defaultMode",
    "SecurityContext.allowPrivilegeEscalation",
    "SecurityContext.runAsGroup",
    "SecurityContext.runAsUser",
    "ServiceAccount.automountServiceAccountToken",
    "ServiceAccountTokenProjection.expirationSeconds",
    "ServiceReference.path",
    "ServiceReference.port",
    "ServiceSpec.allocateLoadBalancerNodePorts",
    "StatefulSetOrdinals.start",
    "StatefulSetSpec.replicas",
    "StatefulSetSpec.revisionHistoryLimit",
    "StatefulSetStatus.availableReplicas",
    "StatefulSetStatus.replicas",
    "StorageClass.allowVolumeExpansion",
    "StorageClass.reclaimPolicy",
    "StorageClass.volumeBindingMode",
    "SuccessPolicyRule.succeededCount",
    "SuccessPolicyRule.succeededIndexes",
    "TokenRequest.expirationSeconds",
    "TokenRequestSpec.expirationSeconds",
    "Toleration.tolerationSeconds",
    "TypedLocalObjectReference.apiGroup",
    "TypedObjectReference.apiGroup",
    "TypedObjectReference.namespace",
    "ValidatingAdmissionPolicySpec.failurePolicy",
    "ValidatingWebhook.failurePolicy",
    "ValidatingWebhook.matchPolicy",
    "ValidatingWebhook.sideEffects",
    "ValidatingWebhook.timeoutSeconds",
    "Validation.reason",
    "VolumeAttachmentSource.persistentVolumeName",
    "VolumeAttachmentStatus.attached",
    "VolumeError.errorCode",
    "VolumeNodeResources.count",
    "WebhookClientConfig.url",
];

/// Why a protobuf body could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum ProtobufError {
    /// The body is not a `k8s\0` + `runtime.Unknown` envelope, or a message is malformed.
    #[error("malformed protobuf body: {0}")]
    Malformed(String),
    /// The envelope names a type keelson has no schema for.
    #[error(
        "keelson cannot decode protobuf bodies of {api_version}, Kind={kind}; send it as JSON \
         (kubectl: use `kubectl apply -f` / `create -f`)"
    )]
    UnsupportedType { api_version: String, kind: String },
}

fn malformed(what: impl Into<String>) -> ProtobufError {
    ProtobufError::Malformed(what.into())
}

/// Decodes a Kubernetes protobuf body into the object's JSON (with `apiVersion` and `kind`).
pub(crate) fn decode(body: &[u8]) -> Result<Value, ProtobufError> {
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| malformed("missing the k8s\\0 prefix"))?;
    // runtime.Unknown: 1 typeMeta {1 apiVersion, 2 kind}, 2 raw, 3 contentEncoding.
    let unknown = decode_fields(envelope)?;
    if unknown.text(3)?.is_some_and(|e| !e.is_empty()) {
        return Err(malformed(
            "compressed (contentEncoding) bodies are not supported",
        ));
    }
    let type_meta = decode_fields(unknown.bytes(1).unwrap_or_default())?;
    let api_version = type_meta.text(1)?.unwrap_or_default();
    let kind = type_meta.text(2)?.unwrap_or_default();
    let unsupported = || ProtobufError::UnsupportedType {
        api_version: api_version.clone(),
        kind: kind.clone(),
    };
    let module = match api_version.split_once('/') {
        _ if kind == "DeleteOptions" => "apimachinery/pkg/apis/meta/v1".to_owned(),
        None => format!("api/core/{api_version}"),
        Some(("apiregistration.k8s.io", version)) => {
            format!("kube_aggregator/pkg/apis/apiregistration/{version}")
        }
        Some((group, version)) => {
            let short = group.split('.').next().unwrap_or(group);
            format!("api/{short}/{version}")
        }
    };
    let schema = message(&format!("{module}/{kind}")).map_err(|_| unsupported())?;
    let mut object = decode_message(schema, unknown.bytes(2).unwrap_or_default())?;
    object.insert("apiVersion".into(), Value::String(api_version));
    object.insert("kind".into(), Value::String(kind));
    Ok(Value::Object(object))
}

/// A protobuf body as JSON bytes, or the API error the client gets: 415 naming an unsupported
/// type, 400 for a malformed body.
pub(crate) fn to_json(body: &[u8]) -> Result<bytes::Bytes, crate::ApiError> {
    match decode(body) {
        Ok(object) => Ok(bytes::Bytes::from(object.to_string())),
        Err(error @ ProtobufError::UnsupportedType { .. }) => Err(crate::ApiError {
            code: axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            reason: "UnsupportedMediaType",
            message: error.to_string(),
            details: None,
        }),
        Err(error) => Err(crate::ApiError::bad_request(error.to_string())),
    }
}

fn message(name: &str) -> Result<&'static Message, ProtobufError> {
    schema::MESSAGES
        .binary_search_by(|m| m.name.cmp(name))
        .map(|i| &schema::MESSAGES[i])
        .map_err(|_| malformed(format!("no schema for {name}")))
}

/// A cursor over protobuf wire data.
struct Reader<'a> {
    data: &'a [u8],
}

enum Wire<'a> {
    Varint(u64),
    /// A fixed 64- or 32-bit value (no Kubernetes field keelson decodes uses one): skipped.
    Fixed,
    Bytes(&'a [u8]),
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ProtobufError> {
        let mut value = 0u64;
        for (i, byte) in self.data.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.data = &self.data[i + 1..];
                return Ok(value);
            }
        }
        Err(malformed("truncated varint"))
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], ProtobufError> {
        if self.data.len() < len {
            return Err(malformed("truncated field"));
        }
        let (head, rest) = self.data.split_at(len);
        self.data = rest;
        Ok(head)
    }

    /// The next field's number and value, or `None` at the end.
    fn field(&mut self) -> Result<Option<(u32, Wire<'a>)>, ProtobufError> {
        if self.data.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let tag = u32::try_from(key >> 3).map_err(|_| malformed("field number too large"))?;
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Wire::Fixed
            }
            2 => {
                let len =
                    usize::try_from(self.varint()?).map_err(|_| malformed("length too large"))?;
                Wire::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Wire::Fixed
            }
            other => return Err(malformed(format!("unsupported wire type {other}"))),
        };
        Ok(Some((tag, wire)))
    }
}

fn decode_message(schema: &Message, data: &[u8]) -> Result<Map<String, Value>, ProtobufError> {
    let mut object = Map::new();
    let mut reader = Reader { data };
    while let Some((tag, wire)) = reader.field()? {
        let Ok(index) = schema.fields.binary_search_by_key(&tag, |f| f.tag) else {
            continue;
        };
        let field = &schema.fields[index];
        let at = |e: ProtobufError| match e {
            ProtobufError::Malformed(m) => {
                malformed(format!("{}.{}: {m}", schema.name, field.json))
            }
            other => other,
        };
        if field.json.is_empty() {
            // An embedded struct: its fields belong to this object.
            let (Kind::Message(name), Wire::Bytes(bytes)) = (&field.kind, wire) else {
                return Err(malformed(format!("{}: bad embedded field", schema.name)));
            };
            object.extend(decode_message(message(name)?, bytes).map_err(at)?);
            continue;
        }
        if let Kind::Map(value_kind) = field.kind {
            let Wire::Bytes(entry) = wire else {
                return Err(at(malformed("map entry is not length-delimited")));
            };
            let (key, value) = map_entry(value_kind, entry).map_err(at)?;
            let map = object
                .entry(field.json)
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(map) = map {
                map.insert(key, value);
            }
            continue;
        }
        if field.repeated {
            let items = object
                .entry(field.json)
                .or_insert_with(|| Value::Array(Vec::new()));
            let Value::Array(items) = items else { continue };
            match (packable(&field.kind), wire) {
                (true, Wire::Bytes(packed)) => {
                    let mut inner = Reader { data: packed };
                    while !inner.data.is_empty() {
                        let item = Wire::Varint(inner.varint()?);
                        items.push(
                            scalar(&field.kind, item)
                                .map_err(at)?
                                .unwrap_or(Value::Null),
                        );
                    }
                }
                (_, wire) => {
                    items.push(value(&field.kind, wire).map_err(at)?.unwrap_or(Value::Null))
                }
            }
            continue;
        }
        match value(&field.kind, wire).map_err(at)? {
            Some(v) if keep(schema.name, field.json, &v) => {
                object.insert(field.json.to_owned(), v);
            }
            _ => {
                object.remove(field.json);
            }
        }
    }
    Ok(object)
}

fn packable(kind: &Kind) -> bool {
    matches!(kind, Kind::Bool | Kind::Int32 | Kind::Int64)
}

/// Whether a singular field's value goes into the JSON (see [`KEEP_ZERO`]).
fn keep(message: &str, name: &str, value: &Value) -> bool {
    let zero = match value {
        Value::String(s) => s.is_empty(),
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        _ => false,
    };
    let short = message.rsplit('/').next().unwrap_or(message);
    !zero || KEEP_ZERO.contains(&format!("{short}.{name}").as_str())
}

fn map_entry(value_kind: &Kind, entry: &[u8]) -> Result<(String, Value), ProtobufError> {
    let mut reader = Reader { data: entry };
    let (mut key, mut value_out) = (String::new(), None);
    while let Some((tag, wire)) = reader.field()? {
        match (tag, wire) {
            (1, Wire::Bytes(bytes)) => key = utf8(bytes)?,
            (2, wire) => value_out = value(value_kind, wire)?,
            _ => {}
        }
    }
    // An entry without its value holds the value type's zero, as Go renders it.
    let empty = || match value_kind {
        Kind::String | Kind::Bytes | Kind::Quantity => Value::String(String::new()),
        Kind::StringList | Kind::Time | Kind::MicroTime => Value::Null,
        _ => Value::Object(Map::new()),
    };
    Ok((key, value_out.unwrap_or_else(empty)))
}

fn utf8(bytes: &[u8]) -> Result<String, ProtobufError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| malformed("a string is not UTF-8"))
}

/// A scalar from a varint or fixed value (a packed item, or a field's own value).
fn scalar(kind: &Kind, wire: Wire<'_>) -> Result<Option<Value>, ProtobufError> {
    Ok(Some(match (kind, wire) {
        (Kind::Bool, Wire::Varint(v)) => Value::Bool(v != 0),
        // int32 is sign-extended to 64 bits on the wire.
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_possible_wrap,
            reason = "protobuf int32/int64 are the varint's two's complement bits"
        )]
        (Kind::Int32, Wire::Varint(v)) => Value::from(v as i64 as i32),
        #[expect(
            clippy::cast_possible_wrap,
            reason = "protobuf int64 is the varint's two's complement bits"
        )]
        (Kind::Int64, Wire::Varint(v)) => Value::from(v as i64),
        _ => return Err(malformed("wire type does not match the field")),
    }))
}

/// One field value; `None` for what JSON renders as absent (the zero time).
fn value(kind: &Kind, wire: Wire<'_>) -> Result<Option<Value>, ProtobufError> {
    let bytes = match wire {
        Wire::Bytes(bytes) => bytes,
        other => return scalar(kind, other),
    };
    Ok(Some(match kind {
        Kind::String => Value::String(utf8(bytes)?),
        Kind::Bytes => Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
        Kind::Message(name) => Value::Object(decode_message(message(name)?, bytes)?),
        Kind::Time | Kind::MicroTime => return time(kind, bytes),
        Kind::IntOrString => {
            let fields = decode_fields(bytes)?;
            if fields.int(1) == Some(1) {
                Value::String(fields.text(3)?.unwrap_or_default())
            } else {
                #[expect(
                    clippy::cast_possible_truncation,
                    reason = "intVal is an int32 on the wire"
                )]
                Value::from(fields.int(2).unwrap_or(0) as i32)
            }
        }
        Kind::Quantity => Value::String(decode_fields(bytes)?.text(1)?.unwrap_or_default()),
        Kind::StringList => {
            let mut items = Vec::new();
            let mut reader = Reader { data: bytes };
            while let Some((tag, wire)) = reader.field()? {
                if let (1, Wire::Bytes(item)) = (tag, wire) {
                    items.push(Value::String(utf8(item)?));
                }
            }
            Value::Array(items)
        }
        Kind::RawJson => {
            let raw = decode_fields(bytes)?.bytes(1).unwrap_or_default();
            if raw.is_empty() {
                return Ok(None);
            }
            serde_json::from_slice(raw).map_err(|e| malformed(format!("raw JSON: {e}")))?
        }
        // Packed repeated scalars are handled by the caller.
        Kind::Bool | Kind::Int32 | Kind::Int64 | Kind::Map(_) => {
            return Err(malformed("wire type does not match the field"));
        }
    }))
}

/// The fields of a small helper message, by number.
struct Fields<'a>(Vec<(u32, Wire<'a>)>);

impl<'a> Fields<'a> {
    #[expect(
        clippy::cast_possible_wrap,
        reason = "protobuf int64 is the varint's two's complement bits"
    )]
    fn int(&self, tag: u32) -> Option<i64> {
        self.0.iter().rev().find_map(|(t, w)| match w {
            Wire::Varint(v) if *t == tag => Some(*v as i64),
            _ => None,
        })
    }

    fn bytes(&self, tag: u32) -> Option<&'a [u8]> {
        self.0.iter().rev().find_map(|(t, w)| match w {
            Wire::Bytes(b) if *t == tag => Some(*b),
            _ => None,
        })
    }

    fn text(&self, tag: u32) -> Result<Option<String>, ProtobufError> {
        self.bytes(tag).map(utf8).transpose()
    }
}

fn decode_fields(data: &[u8]) -> Result<Fields<'_>, ProtobufError> {
    let mut reader = Reader { data };
    let mut fields = Vec::new();
    while let Some(field) = reader.field()? {
        fields.push(field);
    }
    Ok(Fields(fields))
}

/// Go's zero `time.Time` in Unix seconds. Kubernetes marshals the zero time as an empty message
/// (seconds 0) and renders it as JSON `null`: both are left out.
const GO_ZERO_TIME: i64 = -62_135_596_800;

fn time(kind: &Kind, bytes: &[u8]) -> Result<Option<Value>, ProtobufError> {
    let fields = decode_fields(bytes)?;
    let seconds = fields.int(1).unwrap_or(0);
    let nanos = i32::try_from(fields.int(2).unwrap_or(0)).map_err(|_| malformed("nanos"))?;
    if (seconds == 0 || seconds == GO_ZERO_TIME) && nanos == 0 {
        return Ok(None);
    }
    let at = jiff::Timestamp::new(seconds, nanos).map_err(|e| malformed(format!("time: {e}")))?;
    let format = match kind {
        Kind::MicroTime => "%Y-%m-%dT%H:%M:%S%.6fZ",
        _ => "%Y-%m-%dT%H:%M:%SZ",
    };
    Ok(Some(Value::String(at.strftime(format).to_string())))
}

#[cfg(test)]
mod tests;
