//! APIService, CertificateSigningRequest, PriorityClass, RuntimeClass, FlowSchema and
//! PriorityLevelConfiguration.

use serde_json::{Value, json};

use super::{CREATED, cells_of};

#[test]
fn api_service_rows() {
    let remote = json!({
        "metadata": {"name": "v1beta1.metrics.k8s.io", "creationTimestamp": CREATED},
        "spec": {"group": "metrics.k8s.io", "version": "v1beta1",
                 "service": {"namespace": "kube-system", "name": "metrics-server", "port": 443},
                 "groupPriorityMinimum": 100, "versionPriority": 100},
        "status": {"conditions": [{"type": "Available", "status": "False",
                                   "reason": "MissingEndpoints",
                                   "message": "endpoints for service/metrics-server have no addresses"}]},
    });
    assert_eq!(
        cells_of("apiregistration.k8s.io", "APIService", &remote),
        row![
            "v1beta1.metrics.k8s.io",
            "kube-system/metrics-server",
            "False (MissingEndpoints)",
            "5m"
        ]
    );
    let local = json!({
        "metadata": {"name": "v1.apps", "creationTimestamp": CREATED},
        "spec": {"group": "apps", "version": "v1", "groupPriorityMinimum": 17800,
                 "versionPriority": 15},
        "status": {"conditions": [{"type": "Available", "status": "True", "reason": "Local"}]},
    });
    assert_eq!(
        cells_of("apiregistration.k8s.io", "APIService", &local),
        row!["v1.apps", "Local", "True", "5m"]
    );
    let unchecked = json!({"metadata": {"name": "v1.x"}, "spec": {}});
    assert_eq!(
        cells_of("apiregistration.k8s.io", "APIService", &unchecked)[2],
        "Unknown"
    );
}

#[test]
fn certificate_signing_request_rows() {
    let csr = |conditions: Value, certificate: &str| {
        json!({
            "metadata": {"name": "node-csr-abc", "creationTimestamp": CREATED},
            "spec": {"request": "LS0tLS1CRUdJTi==", "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                     "usages": ["client auth"], "username": "system:bootstrap:07401b",
                     "expirationSeconds": 86400},
            "status": {"conditions": conditions, "certificate": certificate},
        })
    };
    assert_eq!(
        cells_of(
            "certificates.k8s.io",
            "CertificateSigningRequest",
            &csr(json!([{"type": "Approved", "status": "True"}]), "LS0tLS1=")
        ),
        row![
            "node-csr-abc",
            "5m",
            "kubernetes.io/kube-apiserver-client-kubelet",
            "system:bootstrap:07401b",
            "24h",
            "Approved,Issued"
        ]
    );
    let condition = |conditions: Value| {
        cells_of(
            "certificates.k8s.io",
            "CertificateSigningRequest",
            &csr(conditions, ""),
        )[5]
        .clone()
    };
    assert_eq!(condition(json!([])), "Pending");
    assert_eq!(
        condition(json!([{"type": "Approved", "status": "True"},
                         {"type": "Failed", "status": "True"}])),
        "Approved,Failed"
    );
    assert_eq!(
        condition(json!([{"type": "Approved", "status": "True"},
                         {"type": "Denied", "status": "True"}])),
        "Denied"
    );
    let bare = json!({"metadata": {"name": "c"}, "spec": {"username": "jane"}});
    let c = cells_of("certificates.k8s.io", "CertificateSigningRequest", &bare);
    assert_eq!(
        (c[2].clone(), c[4].clone()),
        (json!("<none>"), json!("<none>"))
    );
}

#[test]
fn priority_class_row() {
    let class = json!({
        "metadata": {"name": "system-cluster-critical", "creationTimestamp": CREATED},
        "value": 2_000_000_000,
        "globalDefault": false,
        "description": "Used for system critical pods that must run in the cluster.",
    });
    assert_eq!(
        cells_of("scheduling.k8s.io", "PriorityClass", &class),
        row![
            "system-cluster-critical",
            2_000_000_000,
            false,
            "5m",
            "PreemptLowerPriority"
        ]
    );
    let never = json!({"metadata": {"name": "batch"}, "value": -10, "globalDefault": true,
                       "preemptionPolicy": "Never"});
    let c = cells_of("scheduling.k8s.io", "PriorityClass", &never);
    assert_eq!(
        (c[1].clone(), c[2].clone(), c[4].clone()),
        (json!(-10), json!(true), json!("Never"))
    );
}

#[test]
fn runtime_class_row() {
    let class = json!({"metadata": {"name": "gvisor", "creationTimestamp": CREATED},
                       "handler": "runsc"});
    assert_eq!(
        cells_of("node.k8s.io", "RuntimeClass", &class),
        row!["gvisor", "runsc", "5m"]
    );
}

#[test]
fn flow_schema_rows() {
    let schema = json!({
        "metadata": {"name": "system-leader-election", "creationTimestamp": CREATED},
        "spec": {
            "priorityLevelConfiguration": {"name": "leader-election"},
            "matchingPrecedence": 100,
            "distinguisherMethod": {"type": "ByUser"},
            "rules": [],
        },
        "status": {"conditions": [{"type": "Dangling", "status": "False",
                                   "reason": "Found"}]},
    });
    assert_eq!(
        cells_of("flowcontrol.apiserver.k8s.io", "FlowSchema", &schema),
        row![
            "system-leader-election",
            "leader-election",
            100,
            "ByUser",
            "5m",
            "False"
        ]
    );
    let fresh = json!({"metadata": {"name": "f"},
                       "spec": {"priorityLevelConfiguration": {"name": "global-default"}}});
    let c = cells_of("flowcontrol.apiserver.k8s.io", "FlowSchema", &fresh);
    assert_eq!(
        (c[2].clone(), c[3].clone(), c[5].clone()),
        (json!(1000), json!("<none>"), json!("?"))
    );
}

#[test]
fn priority_level_configuration_rows() {
    let plc = |spec: Value| {
        let object = json!({"metadata": {"name": "workload-low", "creationTimestamp": CREATED},
                            "spec": spec});
        cells_of(
            "flowcontrol.apiserver.k8s.io",
            "PriorityLevelConfiguration",
            &object,
        )
    };
    assert_eq!(
        plc(json!({"type": "Limited", "limited": {
            "nominalConcurrencyShares": 100, "lendablePercent": 90,
            "limitResponse": {"type": "Queue",
                              "queuing": {"queues": 128, "handSize": 6, "queueLengthLimit": 50}},
        }})),
        row!["workload-low", "Limited", 100, 128, 6, 50, "5m"]
    );
    assert_eq!(
        plc(json!({"type": "Limited", "limited": {"limitResponse": {"type": "Reject"}}})),
        row![
            "workload-low",
            "Limited",
            30,
            "<none>",
            "<none>",
            "<none>",
            "5m"
        ]
    );
    assert_eq!(
        plc(
            json!({"type": "Limited", "limited": {"nominalConcurrencyShares": 0,
            "limitResponse": {"type": "Queue", "queuing": {}}}})
        ),
        row!["workload-low", "Limited", 0, 64, 8, 50, "5m"]
    );
    assert_eq!(
        plc(json!({"type": "Exempt", "exempt": {}})),
        row![
            "workload-low",
            "Exempt",
            "<none>",
            "<none>",
            "<none>",
            "<none>",
            "5m"
        ]
    );
}
