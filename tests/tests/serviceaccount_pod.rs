//! End to end, privileged: a pod in a namespace other than `default` finds what an in-cluster
//! client needs — `/var/run/secrets/kubernetes.io/serviceaccount/{token,ca.crt,namespace}`
//! (the projected volume the ServiceAccount admission plugin adds, which the node agent fills
//! with a TokenRequest token bound to the pod, the `kube-root-ca.crt` ConfigMap and the
//! namespace, written atomically behind `..data`) and `KUBERNETES_SERVICE_HOST/PORT`. A pod with
//! `automountServiceAccountToken: false` gets no volume, still starts and still gets the
//! variables.
//!
//! Needs the API side of issue 19 (ServiceAccount admission, TokenRequest, `kube-root-ca.crt`).

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use keelson_tests::{
    cluster::{ControlPlane, Kubectl},
    pods::{PodAgent, apply, container_id, exec, is_ready, uid, wait_pod},
};
use kube::Api;

const DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

fn manifests(node: &str) -> String {
    format!(
        "apiVersion: v1
kind: Namespace
metadata:
  name: team
---
apiVersion: v1
kind: Pod
metadata:
  name: reader
  namespace: team
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: keelson/busybox:1
    command: [\"sleep\", \"3600\"]
---
apiVersion: v1
kind: Pod
metadata:
  name: no-token
  namespace: team
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  automountServiceAccountToken: false
  containers:
  - name: app
    image: keelson/busybox:1
    command: [\"sleep\", \"3600\"]
"
    )
}

/// Decodes unpadded base64url (a JWT segment).
fn base64url(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        other => panic!("{:?} is not base64url", char::from(other)),
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        acc = (acc << 6) | u32::from(value(c));
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// `name=value` of `env` output.
fn var<'a>(env: &'a str, name: &str) -> Option<&'a str> {
    env.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_get_a_service_account_token_the_cluster_ca_and_the_api_address() {
    let plane = ControlPlane::start();
    let agent = PodAgent::start(&plane, &[]);
    let kubectl = Kubectl::new(33, &plane);
    let client = plane.client().await;
    apply(
        &kubectl,
        plane.data_dir(),
        "serviceaccount.yaml",
        &manifests(&agent.node),
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), "team");
    let timeout = Duration::from_secs(60);
    let reader = wait_pod(
        &pods,
        "reader",
        timeout,
        &agent,
        "reader is Ready",
        is_ready,
    )
    .await;
    let no_token = wait_pod(
        &pods,
        "no-token",
        timeout,
        &agent,
        "a pod without the token volume is Ready",
        is_ready,
    )
    .await;

    let kubernetes: Service = Api::namespaced(client.clone(), "default")
        .get("kubernetes")
        .await
        .expect("the kubernetes Service");
    let cluster_ip = kubernetes
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("a cluster IP");
    let root_ca: ConfigMap = Api::namespaced(client.clone(), "team")
        .get("kube-root-ca.crt")
        .await
        .expect("kube-root-ca.crt in the namespace");
    let ca = root_ca
        .data
        .and_then(|d| d.get("ca.crt").cloned())
        .expect("ca.crt");

    let app = container_id(&uid(&reader), "app");
    let read = |file: &str| {
        let (ok, out) = exec(&app, &format!("cat {DIR}/{file}"));
        assert!(ok, "cat {DIR}/{file}: {out}\nagent log:\n{}", agent.log());
        out
    };
    assert_eq!(read("namespace"), "team");
    assert_eq!(read("ca.crt"), ca);
    let token = read("token");
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT: {token}");
    let claims: serde_json::Value =
        serde_json::from_slice(&base64url(parts[1])).expect("JSON claims");
    assert_eq!(claims["sub"], "system:serviceaccount:team:default");
    assert_eq!(
        claims["kubernetes.io"]["pod"]["uid"],
        serde_json::json!(uid(&reader)),
        "the token is bound to the pod: {claims}"
    );
    // The kubelet's layout: the names are links through `..data`.
    let (_, listing) = exec(&app, &format!("ls -la {DIR}/"));
    for name in ["token", "ca.crt", "namespace"] {
        assert!(
            listing
                .lines()
                .any(|l| l.ends_with(&format!("{name} -> ..data/{name}"))),
            "{name} is not a link through ..data:\n{listing}"
        );
    }
    let (_, env) = exec(&app, "env");
    assert_eq!(
        var(&env, "KUBERNETES_SERVICE_HOST"),
        Some(cluster_ip.as_str()),
        "{env}"
    );
    assert_eq!(var(&env, "KUBERNETES_SERVICE_PORT"), Some("443"), "{env}");
    assert_eq!(
        var(&env, "KUBERNETES_PORT"),
        Some(format!("tcp://{cluster_ip}:443").as_str()),
        "{env}"
    );

    let bare = container_id(&uid(&no_token), "app");
    let (ok, out) = exec(&bare, &format!("ls {DIR}"));
    assert!(
        !ok,
        "automountServiceAccountToken: false, yet {DIR} exists: {out}"
    );
    let (_, env) = exec(&bare, "env");
    assert_eq!(
        var(&env, "KUBERNETES_SERVICE_HOST"),
        Some(cluster_ip.as_str()),
        "{env}"
    );
    kubectl.run(&[
        "delete",
        "-n",
        "team",
        "pod/reader",
        "pod/no-token",
        "--timeout=60s",
    ]);
    agent.assert_pods_gone_cleanly(&pods).await;
}
