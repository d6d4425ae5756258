//! End to end: kubectl's imperative `create` commands against the real control plane.
//!
//! kubectl 1.33 sends these bodies as Kubernetes protobuf (`application/vnd.kubernetes.protobuf`)
//! and does not fall back to JSON; kubectl 1.27 sends JSON. Both must create the same objects,
//! checked with `kubectl get -o json`. `/metrics` (through `kubectl get --raw`) counts the
//! creates.

use keelson_tests::cluster::{ControlPlane, Kubectl};
use serde_json::Value;

fn get_json(k: &Kubectl<'_>, args: &[&str]) -> Value {
    let mut full = vec!["get"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["-o", "json"]);
    let out = k.run(&full);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("`kubectl get` JSON: {e}\n{out}"))
}

fn base64_decode(text: &str) -> Vec<u8> {
    let output = std::process::Command::new("base64")
        .arg("-d")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(text.as_bytes())?;
            child.wait_with_output()
        })
        .expect("run base64 -d (coreutils)");
    assert!(output.status.success(), "base64 -d {text:?} failed");
    output.stdout
}

fn scenario(minor: u32) {
    let plane = ControlPlane::start();
    let k = Kubectl::new(minor, &plane);
    let blob_path = plane.data_dir().join("blob.bin");
    let blob: &[u8] = b"\x00\xffnot utf-8\x01";
    std::fs::write(&blob_path, blob).expect("write blob");
    let blob_arg = format!("--from-file=blob={}", blob_path.display());

    k.run(&["create", "namespace", "imp"]);
    let ns = get_json(&k, &["namespace", "imp"]);
    assert_eq!(ns["status"]["phase"], "Active", "{ns}");

    k.run(&[
        "create",
        "configmap",
        "cfg",
        "-n",
        "imp",
        "--from-literal=greeting=hello",
        "--from-literal=empty=",
        &blob_arg,
    ]);
    let cm = get_json(&k, &["configmap", "cfg", "-n", "imp"]);
    assert_eq!(cm["data"]["greeting"], "hello", "{cm}");
    assert_eq!(cm["data"]["empty"], "", "{cm}");
    let stored = cm["binaryData"]["blob"].as_str().expect("binaryData.blob");
    assert_eq!(base64_decode(stored), blob, "binaryData round trip: {cm}");

    k.run(&[
        "create",
        "secret",
        "generic",
        "creds",
        "-n",
        "imp",
        "--from-literal=password=hunter2",
    ]);
    let secret = get_json(&k, &["secret", "creds", "-n", "imp"]);
    let password = secret["data"]["password"].as_str().expect("data.password");
    assert_eq!(base64_decode(password), b"hunter2", "{secret}");
    assert_eq!(secret["type"], "Opaque", "{secret}");
    k.run(&[
        "create",
        "secret",
        "docker-registry",
        "pull",
        "-n",
        "imp",
        "--docker-server=registry.invalid",
        "--docker-username=u",
        "--docker-password=p",
    ]);
    let pull = get_json(&k, &["secret", "pull", "-n", "imp"]);
    assert_eq!(pull["type"], "kubernetes.io/dockerconfigjson", "{pull}");
    let config = base64_decode(pull["data"][".dockerconfigjson"].as_str().expect("config"));
    let config: Value = serde_json::from_slice(&config).expect("dockerconfigjson is JSON");
    assert_eq!(config["auths"]["registry.invalid"]["username"], "u");

    k.run(&[
        "create",
        "deployment",
        "web",
        "-n",
        "imp",
        "--image=nginx:1.27",
        "--replicas=3",
        "--port=8080",
    ]);
    let web = get_json(&k, &["deployment", "web", "-n", "imp"]);
    assert_eq!(web["spec"]["replicas"], 3, "{web}");
    let container = &web["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "nginx:1.27", "{web}");
    assert_eq!(container["ports"][0]["containerPort"], 8080, "{web}");
    assert_eq!(
        web["spec"]["selector"]["matchLabels"]["app"], "web",
        "{web}"
    );
    assert_eq!(web["metadata"]["generation"], 1, "{web}");

    k.run(&[
        "create",
        "deployment",
        "idle",
        "-n",
        "imp",
        "--image=busybox",
        "--replicas=0",
        "--",
        "sleep",
        "3600",
    ]);
    let idle = get_json(&k, &["deployment", "idle", "-n", "imp"]);
    assert_eq!(idle["spec"]["replicas"], 0, "replicas 0 is kept: {idle}");
    assert_eq!(
        idle["spec"]["template"]["spec"]["containers"][0]["command"],
        serde_json::json!(["sleep", "3600"]),
        "{idle}"
    );

    k.run(&[
        "create",
        "service",
        "clusterip",
        "web",
        "-n",
        "imp",
        "--tcp=80:8080",
        "--tcp=443:https",
    ]);
    let svc = get_json(&k, &["service", "web", "-n", "imp"]);
    assert_eq!(svc["spec"]["type"], "ClusterIP", "{svc}");
    let ports = &svc["spec"]["ports"];
    assert_eq!(ports[0]["port"], 80, "{svc}");
    assert_eq!(ports[0]["targetPort"], 8080, "{svc}");
    assert_eq!(ports[0]["protocol"], "TCP", "{svc}");
    assert_eq!(ports[1]["targetPort"], "https", "named target port: {svc}");

    k.run(&[
        "create",
        "service",
        "nodeport",
        "np",
        "-n",
        "imp",
        "--tcp=80:8080",
        "--node-port=30080",
    ]);
    let np = get_json(&k, &["service", "np", "-n", "imp"]);
    assert_eq!(np["spec"]["type"], "NodePort", "{np}");
    assert_eq!(np["spec"]["ports"][0]["nodePort"], 30080, "{np}");

    k.run(&[
        "expose",
        "deployment",
        "web",
        "-n",
        "imp",
        "--name=web-exposed",
        "--port=80",
        "--target-port=8080",
    ]);
    let exposed = get_json(&k, &["service", "web-exposed", "-n", "imp"]);
    assert_eq!(exposed["spec"]["selector"]["app"], "web", "{exposed}");
    assert_eq!(exposed["spec"]["ports"][0]["targetPort"], 8080, "{exposed}");

    let out = k.run(&["delete", "configmap", "cfg", "-n", "imp"]);
    assert!(out.contains("deleted"), "{out}");
    k.fail(&["get", "configmap", "cfg", "-n", "imp"]);

    let metrics = k.run(&["get", "--raw", "/metrics"]);
    // Three Services from `create service` twice and `expose` (configmap creates are not
    // counted here: the bootstrap signer creates kube-public/cluster-info at start).
    for series in [
        r#"apiserver_request_total{verb="POST",dry_run="",group="",version="v1",resource="services",subresource="",scope="resource",component="apiserver",code="201"} 3"#,
        r#"apiserver_request_total{verb="POST",dry_run="",group="apps",version="v1",resource="deployments",subresource="",scope="resource",component="apiserver",code="201"} 2"#,
        r#"apiserver_request_total{verb="DELETE",dry_run="",group="",version="v1",resource="configmaps",subresource="",scope="resource",component="apiserver",code="200"} 1"#,
    ] {
        assert!(
            metrics.lines().any(|l| l == series),
            "{series} in /metrics:\n{metrics}"
        );
    }
    assert!(
        metrics.contains(r#"keelson_store_operation_duration_seconds_count{operation="create"}"#),
        "store latency in /metrics:\n{metrics}"
    );
}

#[test]
fn kubectl_1_33_imperative_creates_send_protobuf() {
    scenario(33);
}

#[test]
fn kubectl_1_27_imperative_creates_send_json() {
    scenario(27);
}
