//! End to end: the real `keelson-control-plane` with `--audit-policy-file` and
//! `--audit-log-path` records what kubectl does, as kube-apiserver's audit log would: a
//! `kubectl create configmap` appears with the admin's user name and the object created.

use std::time::{Duration, Instant};

use keelson_tests::cluster::{ControlPlane, Kubectl};
use serde_json::Value;

const POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    resources:
      - group: ""
        resources: ["secrets"]
  - level: RequestResponse
    resources:
      - group: ""
        resources: ["configmaps"]
"#;

/// The events of the audit log at `path` that `wanted` picks, waiting up to 10 s for one.
fn events(path: &std::path::Path, wanted: impl Fn(&Value) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found: Vec<Value> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("an audit line is not JSON ({e}): {line}"))
            })
            .filter(|event| wanted(event))
            .collect();
        if !found.is_empty() || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn kubectl_create_configmap_is_on_record_with_the_admin_and_the_object() {
    let dir = tempfile::tempdir().expect("temp dir");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).expect("write the policy");
    let log = dir.path().join("logs").join("audit.log");
    let plane = ControlPlane::start_with(&[
        "--audit-policy-file",
        policy.to_str().expect("utf-8"),
        "--audit-log-path",
        log.to_str().expect("utf-8"),
        "--audit-log-maxsize",
        "1",
    ]);
    let kubectl = Kubectl::new(33, &plane);
    kubectl.run(&[
        "create",
        "configmap",
        "audited",
        "--from-literal=colour=blue",
    ]);
    kubectl.run(&[
        "create",
        "secret",
        "generic",
        "hidden",
        "--from-literal=pw=hunter2",
    ]);

    let created = events(&log, |e| {
        e["verb"] == "create"
            && e["objectRef"]["resource"] == "configmaps"
            && e["objectRef"]["name"] == "audited"
    });
    assert_eq!(
        created.len(),
        1,
        "one ResponseComplete event (RequestReceived is omitted): {created:#?}\nlog:\n{}",
        plane.log()
    );
    let event = &created[0];
    assert_eq!(event["kind"], "Event");
    assert_eq!(event["apiVersion"], "audit.k8s.io/v1");
    assert_eq!(event["stage"], "ResponseComplete");
    assert_eq!(event["level"], "RequestResponse");
    assert_eq!(event["user"]["username"], "kubernetes-admin");
    assert_eq!(event["user"]["groups"][0], "system:masters");
    assert_eq!(event["objectRef"]["namespace"], "default");
    assert_eq!(event["objectRef"]["apiVersion"], "v1");
    assert_eq!(event["sourceIPs"][0], "127.0.0.1");
    assert!(
        event["userAgent"]
            .as_str()
            .is_some_and(|a| a.starts_with("kubectl")),
        "{event}"
    );
    assert_eq!(event["responseStatus"]["code"], 201);
    assert_eq!(event["requestObject"]["data"]["colour"], "blue");
    assert_eq!(event["responseObject"]["data"]["colour"], "blue");
    assert!(
        event["responseObject"]["metadata"]["uid"]
            .as_str()
            .is_some_and(|u| !u.is_empty()),
        "the stored object: {event}"
    );
    assert!(
        event["auditID"].as_str().is_some_and(|id| !id.is_empty()),
        "{event}"
    );

    let secret = events(&log, |e| {
        e["verb"] == "create" && e["objectRef"]["resource"] == "secrets"
    });
    assert_eq!(secret.len(), 1, "{secret:#?}");
    assert_eq!(secret[0]["level"], "Metadata");
    assert_eq!(secret[0]["objectRef"]["name"], "hidden");
    let text = std::fs::read_to_string(&log).expect("the audit log");
    assert!(
        !text.contains("hunter2") && !text.contains("aHVudGVyMg"),
        "no secret data at Metadata"
    );
}
