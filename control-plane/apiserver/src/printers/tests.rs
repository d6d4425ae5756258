use jiff::Timestamp;
use serde_json::{Value, json};

use super::*;
use crate::registry;

/// "now" in every test: five minutes after the objects' creation.
fn now() -> Timestamp {
    "2024-05-01T10:05:00Z".parse().expect("timestamp")
}

const CREATED: &str = "2024-05-01T10:00:00Z";

fn cells(group_version: (&str, &str), plural: &str, object: &Value) -> Vec<Value> {
    let resource = registry::find(group_version.0, group_version.1, plural).expect("resource");
    let row = row(resource, object, now());
    assert_eq!(
        row.cells.len(),
        columns(resource).len(),
        "one cell per column for {plural}"
    );
    row.cells
}

/// The cells of `object` printed as `group`'s `kind`, checked to be one per column.
fn cells_of(group: &str, kind: &str, object: &Value) -> Vec<Value> {
    let printer = printer(group, kind);
    let cells = (printer.cells)(object, now());
    assert_eq!(
        cells.len(),
        printer.columns.len(),
        "one cell per column for {kind}"
    );
    cells
}

/// Shorthand for an expected row: `row!["web", 3, "5m"]` (in scope for the modules below).
macro_rules! row {
    ($($cell:expr),* $(,)?) => { vec![$(serde_json::json!($cell)),*] };
}

mod admission;
mod apps;
mod autoscaling;
mod batch;
mod core;
mod events;
mod networking;
mod other;
mod rbac;
mod storage;

fn column_names(plural: &str, group: &str, version: &str) -> Vec<(&'static str, i32)> {
    columns(registry::find(group, version, plural).expect("resource"))
        .iter()
        .map(|c| (c.name, c.priority))
        .collect()
}

#[test]
fn human_durations_match_kubernetes() {
    for (seconds, text) in [
        (-5, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (5, "5s"),
        (119, "119s"),
        (120, "2m"),
        (182, "3m2s"),
        (600, "10m"),
        (179 * 60, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 25 * 60, "3h25m"),
        (8 * 3600 + 59 * 60, "8h"),
        (47 * 3600, "47h"),
        (2 * 86400, "2d"),
        (3 * 86400 + 4 * 3600, "3d4h"),
        (10 * 86400, "10d"),
        (400 * 86400, "400d"),
        (731 * 86400, "2y1d"),
        (365 * 3 * 86400, "3y"),
        (365 * 9 * 86400, "9y"),
    ] {
        assert_eq!(human_duration(seconds), text, "{seconds} s");
    }
}

fn pending_pod() -> Value {
    json!({
        "metadata": {"name": "web-1", "creationTimestamp": CREATED},
        "spec": {"containers": [{"name": "web", "image": "nginx"}]},
        "status": {"phase": "Pending"},
    })
}

#[test]
fn pod_columns_are_kubectls() {
    assert_eq!(
        column_names("pods", "", "v1"),
        [
            ("Name", 0),
            ("Ready", 0),
            ("Status", 0),
            ("Restarts", 0),
            ("Age", 0),
            ("IP", 1),
            ("Node", 1),
            ("Nominated Node", 1),
            ("Readiness Gates", 1),
        ]
    );
}

#[test]
fn a_pending_pod_is_not_ready_and_unplaced() {
    assert_eq!(
        cells(("", "v1"), "pods", &pending_pod()),
        json!([
            "web-1", "0/1", "Pending", "0", "5m", "<none>", "<none>", "<none>", "<none>"
        ])
        .as_array()
        .cloned()
        .expect("array")
    );
}

#[test]
fn a_running_pod_counts_ready_containers_and_restarts() {
    let pod = json!({
        "metadata": {"name": "p", "creationTimestamp": CREATED},
        "spec": {"nodeName": "n1", "containers": [{"name": "a"}, {"name": "b"}],
                 "readinessGates": [{"conditionType": "x/ok"}]},
        "status": {
            "phase": "Running",
            "podIP": "10.0.0.5",
            "podIPs": [{"ip": "10.0.0.5"}],
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "x/ok", "status": "False"}],
            "containerStatuses": [
                {"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}},
                 "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-05-01T10:02:00Z"}}},
                {"name": "b", "ready": false, "restartCount": 3, "state": {"running": {}},
                 "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-05-01T10:04:00Z"}}},
            ],
        },
    });
    let c = cells(("", "v1"), "pods", &pod);
    assert_eq!(c[1], "1/2");
    assert_eq!(c[2], "Running");
    assert_eq!(c[3], "5 (60s ago)", "restarts with the latest restart");
    assert_eq!(c[5], "10.0.0.5");
    assert_eq!(c[6], "n1");
    assert_eq!(c[8], "0/1", "readiness gates");
}

#[test]
fn pod_status_shows_the_container_reason() {
    let with_state = |state: Value| {
        let mut pod = pending_pod();
        pod["status"]["phase"] = json!("Running");
        pod["status"]["containerStatuses"] =
            json!([{"name": "web", "ready": false, "restartCount": 0, "state": state}]);
        cells(("", "v1"), "pods", &pod)[2].clone()
    };
    assert_eq!(
        with_state(json!({"waiting": {"reason": "CrashLoopBackOff"}})),
        "CrashLoopBackOff"
    );
    assert_eq!(
        with_state(json!({"waiting": {"reason": "ErrImagePull"}})),
        "ErrImagePull"
    );
    assert_eq!(
        with_state(json!({"terminated": {"reason": "Completed", "exitCode": 0}})),
        "Completed"
    );
    assert_eq!(
        with_state(json!({"terminated": {"exitCode": 3}})),
        "ExitCode:3"
    );
    assert_eq!(
        with_state(json!({"terminated": {"exitCode": 0, "signal": 9}})),
        "Signal:9"
    );
}

#[test]
fn pod_init_containers_and_deletion() {
    let mut pod = pending_pod();
    pod["spec"]["initContainers"] = json!([{"name": "setup"}, {"name": "more"}]);
    pod["status"]["initContainerStatuses"] = json!([
        {"name": "setup", "restartCount": 0, "state": {"terminated": {"exitCode": 0}}},
        {"name": "more", "restartCount": 0, "state": {"waiting": {"reason": "PodInitializing"}}},
    ]);
    assert_eq!(cells(("", "v1"), "pods", &pod)[2], "Init:1/2");
    pod["status"]["initContainerStatuses"][1]["state"] =
        json!({"waiting": {"reason": "ImagePullBackOff"}});
    assert_eq!(cells(("", "v1"), "pods", &pod)[2], "Init:ImagePullBackOff");

    let mut deleting = pending_pod();
    deleting["metadata"]["deletionTimestamp"] = json!("2024-05-01T10:04:00Z");
    assert_eq!(cells(("", "v1"), "pods", &deleting)[2], "Terminating");
    deleting["status"]["phase"] = json!("Succeeded");
    assert_eq!(
        cells(("", "v1"), "pods", &deleting)[2],
        "Succeeded",
        "a finished pod is not Terminating"
    );
}

#[test]
fn finished_pods_carry_the_completed_condition() {
    let resource = registry::find("", "v1", "pods").expect("pods");
    let mut pod = pending_pod();
    assert!(row(resource, &pod, now()).conditions.is_empty());
    pod["status"]["phase"] = json!("Succeeded");
    assert_eq!(
        row(resource, &pod, now()).conditions,
        [
            json!({"type": "Completed", "status": "True", "reason": "Succeeded",
                "message": "The pod has completed successfully."})
        ]
    );
}

fn template_object(kind_extra: Value) -> Value {
    let mut object = json!({
        "metadata": {"name": "web", "creationTimestamp": CREATED},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web", "tier": "front"},
                         "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "dev"]}]},
            "template": {"spec": {"containers": [
                {"name": "web", "image": "nginx:1.27"}, {"name": "log", "image": "busybox"}]}},
        },
    });
    if let (Some(target), Some(extra)) = (object.as_object_mut(), kind_extra.as_object()) {
        target.extend(extra.clone());
    }
    object
}

#[test]
fn deployment_row() {
    assert_eq!(
        column_names("deployments", "apps", "v1"),
        [
            ("Name", 0),
            ("Ready", 0),
            ("Up-to-date", 0),
            ("Available", 0),
            ("Age", 0),
            ("Containers", 1),
            ("Images", 1),
            ("Selector", 1),
        ]
    );
    let deployment = template_object(json!({
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 1}
    }));
    assert_eq!(
        cells(("apps", "v1"), "deployments", &deployment),
        [
            json!("web"),
            json!("2/3"),
            json!(3),
            json!(1),
            json!("5m"),
            json!("web,log"),
            json!("nginx:1.27,busybox"),
            json!("app=web,env in (dev,prod),tier=front"),
        ]
    );
}

#[test]
fn replica_set_row() {
    let replica_set = template_object(json!({"status": {"replicas": 2, "readyReplicas": 1}}));
    assert_eq!(
        cells(("apps", "v1"), "replicasets", &replica_set),
        [
            json!("web"),
            json!(3),
            json!(2),
            json!(1),
            json!("5m"),
            json!("web,log"),
            json!("nginx:1.27,busybox"),
            json!("app=web,env in (dev,prod),tier=front"),
        ]
    );
    let mut unselective = template_object(json!({}));
    unselective["spec"]["selector"] = json!({});
    assert_eq!(
        cells(("apps", "v1"), "replicasets", &unselective)[7],
        "<none>"
    );
}

#[test]
fn service_rows() {
    let node_port = json!({
        "metadata": {"name": "web", "creationTimestamp": CREATED},
        "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                 "selector": {"app": "web"},
                 "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080},
                           {"port": 53, "protocol": "UDP"}]},
    });
    assert_eq!(
        cells(("", "v1"), "services", &node_port),
        [
            json!("web"),
            json!("NodePort"),
            json!("10.96.0.10"),
            json!("<none>"),
            json!("80:30080/TCP,53/UDP"),
            json!("5m"),
            json!("app=web"),
        ]
    );
    let headless = json!({
        "metadata": {"name": "db", "creationTimestamp": CREATED},
        "spec": {"type": "ClusterIP", "clusterIP": "None", "clusterIPs": ["None"]},
    });
    let c = cells(("", "v1"), "services", &headless);
    assert_eq!(c[2], "None");
    assert_eq!(c[4], "<none>");
    assert_eq!(c[6], "<none>");
    let balancer = json!({
        "metadata": {"name": "lb", "creationTimestamp": CREATED},
        "spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.0.11"], "ports": [{"port": 443, "protocol": "TCP", "nodePort": 31000}]},
    });
    assert_eq!(cells(("", "v1"), "services", &balancer)[3], "<pending>");
}

#[test]
fn node_row() {
    let node = json!({
        "metadata": {"name": "n1", "creationTimestamp": CREATED,
                     "labels": {"node-role.kubernetes.io/worker": "", "kubernetes.io/role": "edge"}},
        "spec": {"unschedulable": true},
        "status": {
            "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
            "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "192.168.1.5"}],
            "nodeInfo": {"kubeletVersion": "v1.33.0-keelson", "osImage": "Debian", "kernelVersion": "6.1.0",
                         "containerRuntimeVersion": "docker://27.0"},
        },
    });
    assert_eq!(
        cells(("", "v1"), "nodes", &node),
        [
            json!("n1"),
            json!("Ready,SchedulingDisabled"),
            json!("edge,worker"),
            json!("5m"),
            json!("v1.33.0-keelson"),
            json!("192.168.1.5"),
            json!("<none>"),
            json!("Debian"),
            json!("6.1.0"),
            json!("docker://27.0"),
        ]
    );
    let bare = json!({"metadata": {"name": "n2"},
                      "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}});
    let c = cells(("", "v1"), "nodes", &bare);
    assert_eq!(c[1], "NotReady");
    assert_eq!(c[2], "<none>");
    assert_eq!(c[3], "<unknown>", "no creationTimestamp");
    assert_eq!(c[7], "<unknown>");
}

#[test]
fn namespace_config_map_secret_and_lease_rows() {
    let namespace = json!({"metadata": {"name": "demo", "creationTimestamp": CREATED},
                           "status": {"phase": "Terminating"}});
    assert_eq!(
        cells(("", "v1"), "namespaces", &namespace),
        [json!("demo"), json!("Terminating"), json!("5m")]
    );
    let config_map = json!({"metadata": {"name": "cfg", "creationTimestamp": CREATED},
                            "data": {"a": "1"}, "binaryData": {"b": "AA=="}});
    assert_eq!(
        cells(("", "v1"), "configmaps", &config_map),
        [json!("cfg"), json!(2), json!("5m")]
    );
    let secret = json!({"metadata": {"name": "s", "creationTimestamp": CREATED},
                        "type": "Opaque", "data": {"password": "aHVudGVyMg=="}});
    assert_eq!(
        cells(("", "v1"), "secrets", &secret),
        [json!("s"), json!("Opaque"), json!(1), json!("5m")]
    );
    let lease = json!({"metadata": {"name": "kube-scheduler", "creationTimestamp": CREATED},
                       "spec": {"holderIdentity": "cp-1"}});
    assert_eq!(
        cells(("coordination.k8s.io", "v1"), "leases", &lease),
        [json!("kube-scheduler"), json!("cp-1"), json!("5m")]
    );
}

#[test]
fn endpoints_rows() {
    let endpoints = json!({
        "metadata": {"name": "web", "creationTimestamp": CREATED},
        "subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "10.0.0.3"}, {"ip": "fd00::4"}],
                     "ports": [{"port": 80}]}],
    });
    assert_eq!(
        cells(("", "v1"), "endpoints", &endpoints)[1],
        "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 1 more..."
    );
    let empty = json!({"metadata": {"name": "none", "creationTimestamp": CREATED}});
    assert_eq!(cells(("", "v1"), "endpoints", &empty)[1], "<none>");

    let slice = json!({
        "metadata": {"name": "web-abc", "creationTimestamp": CREATED},
        "addressType": "IPv4",
        "ports": [{"port": 80, "name": "http"}, {"name": "dns"}, {}],
        "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}],
    });
    assert_eq!(
        cells(("discovery.k8s.io", "v1"), "endpointslices", &slice),
        [
            json!("web-abc"),
            json!("IPv4"),
            json!("80,dns,*"),
            json!("10.0.0.1,10.0.0.2"),
            json!("5m"),
        ]
    );
    let bare = json!({"metadata": {"name": "s"}, "addressType": "IPv4"});
    let c = cells(("discovery.k8s.io", "v1"), "endpointslices", &bare);
    assert_eq!(
        (c[2].clone(), c[3].clone()),
        (json!("<unset>"), json!("<unset>"))
    );
}

#[test]
fn event_row() {
    assert_eq!(
        column_names("events", "", "v1")
            .iter()
            .filter(|c| c.1 == 0)
            .map(|c| c.0)
            .collect::<Vec<_>>(),
        ["Last Seen", "Type", "Reason", "Object", "Message"]
    );
    let event = json!({
        "metadata": {"name": "web-1.17a", "creationTimestamp": CREATED},
        "involvedObject": {"kind": "Pod", "name": "web-1", "fieldPath": "spec.containers{web}"},
        "reason": "Scheduled", "type": "Normal", "message": " Assigned to n1 \n",
        "source": {"component": "default-scheduler"},
        "firstTimestamp": "2024-05-01T10:01:00Z", "lastTimestamp": "2024-05-01T10:04:30Z",
    });
    assert_eq!(
        cells(("", "v1"), "events", &event),
        [
            json!("30s"),
            json!("Normal"),
            json!("Scheduled"),
            json!("pod/web-1"),
            json!("spec.containers{web}"),
            json!("default-scheduler"),
            json!("Assigned to n1"),
            json!("4m"),
            json!(1),
            json!("web-1.17a"),
        ]
    );
    let series = json!({
        "metadata": {"name": "e"},
        "involvedObject": {"kind": "Node"},
        "eventTime": "2024-05-01T10:00:00.000000Z",
        "series": {"count": 4, "lastObservedTime": "2024-05-01T10:04:50.000000Z"},
        "reportingComponent": "kubelet", "reportingInstance": "n1",
    });
    let c = cells(("", "v1"), "events", &series);
    assert_eq!(c[0], "10s");
    assert_eq!(c[3], "node");
    assert_eq!(c[5], "kubelet, n1");
    assert_eq!(c[7], "5m");
    assert_eq!(c[8], 4);
}

#[test]
fn selectors_kubernetes_cannot_convert() {
    let mut object = template_object(json!({}));
    object["spec"]["selector"] =
        json!({"matchExpressions": [{"key": "env", "operator": "In", "values": []}]});
    // printDeployment writes `<invalid>`, FormatLabelSelector (the others) `<error>`.
    assert_eq!(
        cells(("apps", "v1"), "deployments", &object)[7],
        "<invalid>"
    );
    assert_eq!(cells(("apps", "v1"), "replicasets", &object)[7], "<error>");
    // An invalid key does not convert either (`labels.NewRequirement` validates it).
    object["spec"]["selector"] = json!({"matchLabels": {"bad key": "x"}});
    assert_eq!(
        cells(("apps", "v1"), "deployments", &object)[7],
        "<invalid>"
    );
    assert_eq!(cells(("apps", "v1"), "replicasets", &object)[7], "<error>");
    // Values print sorted; `Requirement.String()` keeps duplicates.
    object["spec"]["selector"] = json!({"matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["b", "a", "b"]},
        {"key": "env", "operator": "Exists"}]});
    assert_eq!(
        cells(("apps", "v1"), "replicasets", &object)[7],
        "env,tier in (a,b,b)"
    );
}

#[test]
fn other_resources_get_the_default_table() {
    assert_eq!(DEFAULT[0].name, "Name");
    assert_eq!(DEFAULT[1].name, "Created At");
    assert_eq!(DEFAULT[1].kind, "date");
    let object =
        json!({"metadata": {"name": "x", "creationTimestamp": "2024-05-01T10:00:00+02:00"}});
    assert_eq!(
        default_cells(&object),
        [json!("x"), json!("2024-05-01T08:00:00Z")]
    );
}

#[test]
fn every_served_resource_has_one_cell_per_column() {
    for resource in registry::RESOURCES {
        let row = row(resource, &json!({}), now());
        assert_eq!(
            row.cells.len(),
            columns(resource).len(),
            "{}",
            resource.plural
        );
    }
}

/// Every kind keelson serves with the columns kube-apiserver 1.33 gives it (printers.go;
/// kube-aggregator's own table for APIService), separated by `|`; a trailing `+` marks a
/// priority-1 column, the ones `kubectl get -o wide` adds.
const TABLES: &[(&str, &str, &str)] = &[
    ("", "Namespace", "Name|Status|Age"),
    (
        "",
        "Pod",
        "Name|Ready|Status|Restarts|Age|IP+|Node+|Nominated Node+|Readiness Gates+",
    ),
    (
        "",
        "Service",
        "Name|Type|Cluster-IP|External-IP|Port(s)|Age|Selector+",
    ),
    ("", "Endpoints", "Name|Endpoints|Age"),
    (
        "",
        "Node",
        "Name|Status|Roles|Age|Version|Internal-IP+|External-IP+|OS-Image+|Kernel-Version+|\
         Container-Runtime+",
    ),
    (
        "",
        "Event",
        "Last Seen|Type|Reason|Object|Subobject+|Source+|Message|First Seen+|Count+|Name+",
    ),
    ("", "ConfigMap", "Name|Data|Age"),
    ("", "Secret", "Name|Type|Data|Age"),
    ("", "ServiceAccount", "Name|Secrets|Age"),
    (
        "",
        "ReplicationController",
        "Name|Desired|Current|Ready|Age|Containers+|Images+|Selector+",
    ),
    (
        "",
        "PersistentVolume",
        "Name|Capacity|Access Modes|Reclaim Policy|Status|Claim|StorageClass|\
         VolumeAttributesClass|Reason|Age|VolumeMode+",
    ),
    (
        "",
        "PersistentVolumeClaim",
        "Name|Status|Volume|Capacity|Access Modes|StorageClass|VolumeAttributesClass|Age|\
         VolumeMode+",
    ),
    ("", "PodTemplate", "Name|Containers|Images|Pod Labels"),
    ("", "LimitRange", "Name|Created At"),
    ("", "ResourceQuota", "Name|Request|Limit|Age"),
    (
        "apps",
        "Deployment",
        "Name|Ready|Up-to-date|Available|Age|Containers+|Images+|Selector+",
    ),
    (
        "apps",
        "ReplicaSet",
        "Name|Desired|Current|Ready|Age|Containers+|Images+|Selector+",
    ),
    (
        "apps",
        "DaemonSet",
        "Name|Desired|Current|Ready|Up-to-date|Available|Node Selector|Age|Containers+|Images+|\
         Selector+",
    ),
    ("apps", "StatefulSet", "Name|Ready|Age|Containers+|Images+"),
    ("apps", "ControllerRevision", "Name|Controller|Revision|Age"),
    (
        "batch",
        "Job",
        "Name|Status|Completions|Duration|Age|Containers+|Images+|Selector+",
    ),
    (
        "batch",
        "CronJob",
        "Name|Schedule|Timezone|Suspend|Active|Last Schedule|Age|Containers+|Images+|Selector+",
    ),
    (
        "autoscaling",
        "HorizontalPodAutoscaler",
        "Name|Reference|Targets|MinPods|MaxPods|Replicas|Age",
    ),
    (
        "policy",
        "PodDisruptionBudget",
        "Name|Min Available|Max Unavailable|Allowed Disruptions|Age",
    ),
    ("rbac.authorization.k8s.io", "Role", "Name|Created At"),
    (
        "rbac.authorization.k8s.io",
        "ClusterRole",
        "Name|Created At",
    ),
    (
        "rbac.authorization.k8s.io",
        "RoleBinding",
        "Name|Role|Age|Users+|Groups+|ServiceAccounts+",
    ),
    (
        "rbac.authorization.k8s.io",
        "ClusterRoleBinding",
        "Name|Role|Age|Users+|Groups+|ServiceAccounts+",
    ),
    (
        "networking.k8s.io",
        "NetworkPolicy",
        "Name|Pod-Selector|Age",
    ),
    (
        "networking.k8s.io",
        "Ingress",
        "Name|Class|Hosts|Address|Ports|Age",
    ),
    (
        "networking.k8s.io",
        "IngressClass",
        "Name|Controller|Parameters|Age",
    ),
    ("networking.k8s.io", "IPAddress", "Name|ParentRef"),
    ("networking.k8s.io", "ServiceCIDR", "Name|CIDRs|Age"),
    (
        "storage.k8s.io",
        "StorageClass",
        "Name|Provisioner|ReclaimPolicy|VolumeBindingMode|AllowVolumeExpansion|Age",
    ),
    (
        "storage.k8s.io",
        "CSIDriver",
        "Name|AttachRequired|PodInfoOnMount|StorageCapacity|TokenRequests|RequiresRepublish|\
         Modes|Age",
    ),
    ("storage.k8s.io", "CSINode", "Name|Drivers|Age"),
    (
        "storage.k8s.io",
        "VolumeAttachment",
        "Name|Attacher|PV|Node|Attached|Age",
    ),
    (
        "storage.k8s.io",
        "CSIStorageCapacity",
        "Name|StorageClassName|Capacity",
    ),
    (
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
        "Name|Webhooks|Age",
    ),
    (
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
        "Name|Webhooks|Age",
    ),
    (
        "admissionregistration.k8s.io",
        "ValidatingAdmissionPolicy",
        "Name|Validations|ParamKind|Age",
    ),
    (
        "admissionregistration.k8s.io",
        "ValidatingAdmissionPolicyBinding",
        "Name|PolicyName|ParamRef|Age",
    ),
    (
        "apiregistration.k8s.io",
        "APIService",
        "Name|Service|Available|Age",
    ),
    (
        "certificates.k8s.io",
        "CertificateSigningRequest",
        "Name|Age|SignerName|Requestor|RequestedDuration|Condition",
    ),
    (
        "scheduling.k8s.io",
        "PriorityClass",
        "Name|Value|Global-Default|Age|PreemptionPolicy",
    ),
    ("node.k8s.io", "RuntimeClass", "Name|Handler|Age"),
    (
        "events.k8s.io",
        "Event",
        "Last Seen|Type|Reason|Object|Subobject+|Source+|Message|First Seen+|Count+|Name+",
    ),
    (
        "flowcontrol.apiserver.k8s.io",
        "FlowSchema",
        "Name|PriorityLevel|MatchingPrecedence|DistinguisherMethod|Age|MissingPL",
    ),
    (
        "flowcontrol.apiserver.k8s.io",
        "PriorityLevelConfiguration",
        "Name|Type|NominalConcurrencyShares|Queues|HandSize|QueueLengthLimit|Age",
    ),
    (
        "discovery.k8s.io",
        "EndpointSlice",
        "Name|AddressType|Ports|Endpoints|Age",
    ),
    ("coordination.k8s.io", "Lease", "Name|Holder|Age"),
];

#[test]
fn every_kind_has_kubernetes_columns() {
    for (group, kind, expected) in TABLES {
        let actual = printer(group, kind)
            .columns
            .iter()
            .map(|c| match c.priority {
                0 => c.name.to_owned(),
                _ => format!("{}+", c.name),
            })
            .collect::<Vec<_>>()
            .join("|");
        assert_eq!(actual, *expected, "{group}/{kind}");
    }
}

#[test]
fn every_kind_prints_an_empty_object_with_one_cell_per_column() {
    for (group, kind, _) in TABLES {
        cells_of(group, kind, &json!({}));
        cells_of(
            group,
            kind,
            &json!({"metadata": {"name": "x"}, "spec": null, "status": {}}),
        );
    }
}

#[test]
fn column_types_and_formats_are_kubernetes() {
    // Every column of every kind is a string unless listed here, as `name:type|...`.
    let typed = [
        (
            "",
            "ReplicationController",
            "Desired:integer|Current:integer|Ready:integer",
        ),
        (
            "apps",
            "ReplicaSet",
            "Desired:integer|Current:integer|Ready:integer",
        ),
        (
            "apps",
            "DaemonSet",
            "Desired:integer|Current:integer|Ready:integer|Up-to-date:integer|Available:integer",
        ),
        ("batch", "CronJob", "Suspend:boolean|Active:integer"),
        (
            "policy",
            "PodDisruptionBudget",
            "Allowed Disruptions:integer",
        ),
        (
            "storage.k8s.io",
            "CSIDriver",
            "AttachRequired:boolean|PodInfoOnMount:boolean|StorageCapacity:boolean|\
             RequiresRepublish:boolean",
        ),
        ("storage.k8s.io", "CSINode", "Drivers:integer"),
        ("storage.k8s.io", "VolumeAttachment", "Attached:boolean"),
        (
            "admissionregistration.k8s.io",
            "MutatingWebhookConfiguration",
            "Webhooks:integer",
        ),
        (
            "admissionregistration.k8s.io",
            "ValidatingWebhookConfiguration",
            "Webhooks:integer",
        ),
        (
            "admissionregistration.k8s.io",
            "ValidatingAdmissionPolicy",
            "Validations:integer",
        ),
        (
            "scheduling.k8s.io",
            "PriorityClass",
            "Value:integer|Global-Default:boolean",
        ),
        ("", "LimitRange", "Created At:date"),
        ("rbac.authorization.k8s.io", "Role", "Created At:date"),
        (
            "rbac.authorization.k8s.io",
            "ClusterRole",
            "Created At:date",
        ),
    ];
    for (group, kind, _) in TABLES {
        let actual = printer(group, kind)
            .columns
            .iter()
            .filter(|c| c.kind != "string")
            .map(|c| format!("{}:{}", c.name, c.kind))
            .collect::<Vec<_>>()
            .join("|");
        let expected = typed
            .iter()
            .find(|(g, k, _)| g == group && k == kind)
            .map_or("", |t| t.2);
        assert_eq!(actual, expected, "{group}/{kind}");
    }
    // The name column carries the `name` format; kube-apiserver gives it to VolumeAttachment's
    // Attacher too.
    let named: Vec<&str> = printer("storage.k8s.io", "VolumeAttachment")
        .columns
        .iter()
        .filter(|c| c.format == "name")
        .map(|c| c.name)
        .collect();
    assert_eq!(named, ["Name", "Attacher"]);
}
