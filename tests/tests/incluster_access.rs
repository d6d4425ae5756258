//! End to end, privileged: pods talk to the API from inside a two-node netns cluster as their
//! service account, with clients that know nothing of keelson: `kubectl` (1.33, copied in
//! through a hostPath), kube-rs' `Client::try_default()` (`keelson-incluster-client`) and the
//! official Python client's `load_incluster_config()`. Each finds `KUBERNETES_SERVICE_HOST`, the
//! projected token, `ca.crt` and `namespace`, reaches `https://<kubernetes ClusterIP>:443` through
//! the eBPF datapath of its node, and gets what RBAC grants: the ServiceAccount is bound to
//! `view` in its namespace, so it lists pods there, and gets 403 `Forbidden` naming
//! `system:serviceaccount:team:reader` for Secrets and for another namespace.

use std::time::{Duration, Instant};

use keelson_testbed::{Cluster, ClusterSpec};
use keelson_tests::{
    netcluster::{RunningPod, apply, bin_dir, claim_subnet, kubectl_json, logs, pod_exec},
    pods::require_docker_images,
    require_root,
};

const NAMESPACE: &str = "team";
const USER: &str = "system:serviceaccount:team:reader";
const KUBECTL: &str = "/gcloud/kubectl.1.33";
const VENV: &str = "/opt/keelson/venv";

fn manifests(nodes: &[String], bin: &str) -> String {
    let mut yaml = format!(
        "apiVersion: v1
kind: Namespace
metadata: {{name: {NAMESPACE}}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: reader, namespace: {NAMESPACE}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: reader-view, namespace: {NAMESPACE}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}}
subjects:
- {{kind: ServiceAccount, name: reader, namespace: {NAMESPACE}}}
---
apiVersion: v1
kind: Secret
metadata: {{name: hidden, namespace: {NAMESPACE}}}
stringData: {{password: not-for-readers}}
"
    );
    for (i, node) in nodes.iter().enumerate() {
        yaml.push_str(&format!(
            "---
apiVersion: v1
kind: Pod
metadata:
  name: client-{i}
  namespace: {NAMESPACE}
  labels: {{app: client}}
spec:
  nodeName: {node}
  serviceAccountName: reader
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: keelson/busybox:1
    command: [/bin/sleep, '3600']
    volumeMounts:
    - {{name: gcloud, mountPath: /gcloud, readOnly: true}}
    - {{name: keelson-bin, mountPath: /keelson-bin, readOnly: true}}
    - {{name: usr, mountPath: /usr, readOnly: true}}
    - {{name: lib, mountPath: /lib, readOnly: true}}
    - {{name: lib64, mountPath: /lib64, readOnly: true}}
    - {{name: venv, mountPath: {VENV}, readOnly: true}}
  volumes:
  - {{name: gcloud, hostPath: {{path: /usr/lib/google-cloud-sdk/bin, type: Directory}}}}
  - {{name: keelson-bin, hostPath: {{path: {bin}, type: Directory}}}}
  - {{name: usr, hostPath: {{path: /usr, type: Directory}}}}
  - {{name: lib, hostPath: {{path: /lib}}}}
  - {{name: lib64, hostPath: {{path: /lib64}}}}
  - {{name: venv, hostPath: {{path: {VENV}, type: Directory}}}}
"
        ));
    }
    yaml
}

fn ready_clients(cluster: &Cluster, count: usize) -> Vec<RunningPod> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let pods = kubectl_json(
            cluster,
            &[
                "get",
                "pods",
                "-n",
                NAMESPACE,
                "-l",
                "app=client",
                "-o",
                "json",
            ],
        );
        let ready: Vec<RunningPod> = keelson_tests::netcluster::ready_items(&pods)
            .filter_map(|p| {
                Some(RunningPod {
                    name: p["metadata"]["name"].as_str()?.to_owned(),
                    uid: p["metadata"]["uid"].as_str()?.to_owned(),
                    ip: p["status"]["podIP"].as_str()?.parse().ok()?,
                    node: p["spec"]["nodeName"].as_str()?.to_owned(),
                })
            })
            .collect();
        if ready.len() == count {
            return ready;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {count} client pods Ready:\n{pods:#}\n{}",
            ready.len(),
            logs(cluster)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Runs `script` in the pod; returns its output whatever the exit status (a denied kubectl
/// exits 1, and the test asserts on what it printed).
fn run(pod: &RunningPod, script: &str) -> String {
    let (_, output) = pod_exec(pod, "main", script);
    output
}

fn assert_forbidden(output: &str, what: &str) {
    assert!(
        output.contains("Forbidden") || output.contains("forbidden"),
        "{what}: expected a 403, got:\n{output}"
    );
    assert!(
        output.contains(USER),
        "{what}: the 403 names {USER}:\n{output}"
    );
}

const PYTHON: &str = "/opt/keelson/venv/bin/python - <<'EOF'
from kubernetes import client, config
config.load_incluster_config()
api = client.CoreV1Api()
print('pods=%d' % len(api.list_namespaced_pod('team').items))
try:
    api.list_namespaced_secret('team')
    print('secrets=allowed')
except client.ApiException as e:
    print('secrets=%d' % e.status)
EOF";

#[test]
fn pods_reach_the_api_as_their_service_account_on_every_node() {
    require_root();
    require_docker_images();
    assert!(
        std::path::Path::new(VENV).join("bin/python").exists(),
        "{VENV} is missing: run `cargo xtask setup`"
    );
    let (subnet, _lock) = claim_subnet();
    let name = format!("t{subnet}");
    let state = tempfile::tempdir().expect("state dir");
    let mut spec = ClusterSpec::new(&name, subnet, 2, bin_dir(), state.path());
    // A pod CIDR no other test cluster uses: the host routes it to the nodes (replies from the
    // API server on the bridge), and clusters running at once must not take each other's.
    spec.cluster_cidr = format!("100.64.{subnet}.0/24");
    spec.control_plane_args = vec!["--node-cidr-mask-size".into(), "26".into()];
    let cluster = Cluster::up(spec).unwrap_or_else(|e| panic!("cluster up: {e:#}"));
    let nodes: Vec<String> = cluster.nodes().iter().map(|n| n.name.clone()).collect();
    apply(
        &cluster,
        "incluster",
        &manifests(&nodes, &bin_dir().to_string_lossy()),
    );
    let pods = ready_clients(&cluster, nodes.len());
    let mut seen_nodes: Vec<&str> = pods.iter().map(|p| p.node.as_str()).collect();
    seen_nodes.sort_unstable();
    seen_nodes.dedup();
    assert_eq!(seen_nodes.len(), nodes.len(), "a client on every node");

    for pod in &pods {
        let what = |s: &str| format!("{s} from {} on {}", pod.name, pod.node);
        // What every pod of every namespace finds: the variables and the projected files.
        let env = run(
            pod,
            "echo host=$KUBERNETES_SERVICE_HOST port=$KUBERNETES_SERVICE_PORT; \
             cat /var/run/secrets/kubernetes.io/serviceaccount/namespace; echo; \
             head -c 27 /var/run/secrets/kubernetes.io/serviceaccount/ca.crt; echo",
        );
        assert!(
            env.contains("port=443") && !env.contains("host= "),
            "{}: {env}",
            what("KUBERNETES_SERVICE_*")
        );
        assert!(env.contains(NAMESPACE), "{}: {env}", what("namespace file"));
        assert!(
            env.contains("-----BEGIN CERTIFICATE-----"),
            "{}: {env}",
            what("ca.crt")
        );

        // kubectl with no kubeconfig: in-cluster configuration.
        let listed = run(pod, &format!("{KUBECTL} get pods -o name 2>&1"));
        for other in &pods {
            assert!(
                listed.contains(&format!("pod/{}", other.name)),
                "{}: {listed}\n{}",
                what("kubectl get pods"),
                logs(&cluster)
            );
        }
        assert_forbidden(
            &run(pod, &format!("{KUBECTL} get secrets 2>&1")),
            &what("kubectl get secrets"),
        );
        assert_forbidden(
            &run(pod, &format!("{KUBECTL} get pods -n default 2>&1")),
            &what("kubectl get pods -n default"),
        );

        // kube-rs' Client::try_default().
        let rust = run(
            pod,
            "/keelson-bin/keelson-incluster-client pods team secrets team pods default 2>&1",
        );
        assert!(
            rust.contains(&format!("pods={}", pods.len())),
            "{}: {rust}",
            what("kube-rs")
        );
        let denied: Vec<&str> = rust.lines().filter(|l| l.starts_with("error=")).collect();
        assert_eq!(denied.len(), 2, "{}: {rust}", what("kube-rs denials"));
        for line in denied {
            assert!(
                line.starts_with("error=403 ") && line.contains(USER),
                "{}: {line}",
                what("kube-rs 403")
            );
        }

        // The official Python client.
        let python = run(pod, PYTHON);
        assert!(
            python.contains(&format!("pods={}", pods.len())) && python.contains("secrets=403"),
            "{}: {python}",
            what("python client")
        );
    }
    cluster.down().expect("cluster down");
}
