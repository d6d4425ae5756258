//! End to end: the real `keelson-control-plane` binary on a loopback port, driven by the real
//! kubectl 1.33 and 1.27 through the admin kubeconfig it writes (the acceptance list of issue 4).

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::Stdio,
    sync::mpsc,
    time::{Duration, Instant},
};

use keelson_tests::cluster::{ControlPlane, Kubectl};

const MANIFEST: &str = r#"apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: demo
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: IMAGE
        ports:
        - containerPort: 80
        env:
        - {name: GREETING, value: hello}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: demo
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 80
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
  namespace: demo
  labels: {tier: config}
data:
  key: VALUE
---
apiVersion: v1
kind: Secret
metadata:
  name: creds
  namespace: demo
stringData:
  password: hunter2
"#;

fn write_manifest(dir: &Path, name: &str, image: &str, value: &str) -> String {
    let path = dir.join(name);
    std::fs::write(
        &path,
        MANIFEST.replace("IMAGE", image).replace("VALUE", value),
    )
    .expect("write manifest");
    path.to_string_lossy().into_owned()
}

fn assert_contains(haystack: &str, needle: &str, what: &str) {
    assert!(
        haystack.contains(needle),
        "{what}: expected {needle:?} in:\n{haystack}"
    );
}

/// `kubectl get -w` sees a change made while it watches.
fn watch_sees_a_patch(k: &Kubectl<'_>) {
    let mut watcher = k
        .command(&[
            "get",
            "configmaps",
            "-n",
            "demo",
            "-w",
            "-o",
            "custom-columns=NAME:.metadata.name,KEY:.data.key",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start kubectl get -w");
    let stdout = watcher.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |needle: &str, seen: &mut Vec<String>| {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
                let hit = line.contains(needle);
                seen.push(line);
                if hit {
                    return true;
                }
            }
        }
        false
    };
    let mut seen = Vec::new();
    let initial = wait_for("two", &mut seen);
    k.run(&[
        "patch",
        "configmap",
        "cfg",
        "-n",
        "demo",
        "-p",
        r#"{"data":{"key":"watched"}}"#,
    ]);
    let changed = initial && wait_for("watched", &mut seen);
    let _ = watcher.kill();
    let _ = watcher.wait();
    assert!(initial, "kubectl get -w never listed cfg: {seen:?}");
    assert!(changed, "kubectl get -w did not show the patch: {seen:?}");
}

fn scenario(minor: u32) {
    let plane = ControlPlane::start();
    let k = Kubectl::new(minor, &plane);
    let dir = plane.data_dir();
    let first = write_manifest(dir, "first.yaml", "nginx:1.27", "one");
    let second = write_manifest(dir, "second.yaml", "nginx:1.28", "two");

    let out = k.run(&["get", "namespaces", "-o", "name"]);
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert_contains(&out, &format!("namespace/{ns}"), "system namespaces");
    }

    let out = k.run(&["apply", "-f", &first]);
    for created in [
        "namespace/demo created",
        "deployment.apps/web created",
        "service/web created",
        "configmap/cfg created",
        "secret/creds created",
    ] {
        assert_contains(&out, created, "first apply");
    }
    let out = k.run(&["apply", "-f", &second]);
    assert_contains(&out, "deployment.apps/web configured", "second apply");
    assert_contains(&out, "configmap/cfg configured", "second apply");
    assert_contains(&out, "service/web unchanged", "second apply");

    let out = k.run(&["get", "configmap", "cfg", "-n", "demo", "-o", "yaml"]);
    assert_contains(&out, "key: two", "re-applied ConfigMap");
    let out = k.run(&[
        "get",
        "deployment",
        "web",
        "-n",
        "demo",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image} {.metadata.generation}",
    ]);
    assert_eq!(
        out, "nginx:1.28 2",
        "re-applied Deployment (image, generation)"
    );

    let out = k.run(&[
        "get",
        "deployments",
        "-n",
        "demo",
        "-l",
        "app=web",
        "-o",
        "name",
    ]);
    assert_eq!(out.trim(), "deployment.apps/web", "label selector");
    let out = k.run(&[
        "get",
        "configmaps",
        "-n",
        "demo",
        "-l",
        "tier!=config",
        "-o",
        "name",
    ]);
    assert_eq!(out.trim(), "", "negative label selector");
    let out = k.run(&[
        "get",
        "namespaces",
        "--field-selector",
        "metadata.name=demo",
        "-o",
        "name",
    ]);
    assert_eq!(out.trim(), "namespace/demo", "field selector");
    let out = k.run(&["get", "configmaps", "-A"]);
    assert_contains(&out, "demo", "get -A");
    assert_contains(&out, "cfg", "get -A");
    let out = k.run(&[
        "get",
        "secret",
        "creds",
        "-n",
        "demo",
        "-o",
        "jsonpath={.data.password}",
    ]);
    assert_eq!(out, "aHVudGVyMg==", "stringData is folded into base64 data");

    let out = k.run(&["describe", "deployment", "web", "-n", "demo"]);
    assert_contains(&out, "2 desired", "describe deployment");
    assert_contains(&out, "nginx:1.28", "describe deployment");
    let out = k.run(&["describe", "service", "web", "-n", "demo"]);
    assert_contains(&out, "app=web", "describe service");

    let out = k.run(&["scale", "deployment", "web", "-n", "demo", "--replicas=3"]);
    assert_contains(&out, "scaled", "kubectl scale");
    let out = k.run(&[
        "get",
        "deployment",
        "web",
        "-n",
        "demo",
        "-o",
        "jsonpath={.spec.replicas} {.metadata.generation}",
    ]);
    assert_eq!(out, "3 3", "scaled Deployment (replicas, generation)");

    k.run(&["label", "configmap", "cfg", "-n", "demo", "color=blue"]);
    k.run(&["annotate", "configmap", "cfg", "-n", "demo", "note=hi"]);
    let out = k.run(&[
        "get",
        "configmap",
        "cfg",
        "-n",
        "demo",
        "-o",
        "jsonpath={.metadata.labels.color} {.metadata.annotations.note} {.metadata.labels.tier}",
    ]);
    assert_eq!(out, "blue hi config", "label and annotate");

    watch_sees_a_patch(&k);

    let out = k.run(&["delete", "deployment", "web", "-n", "demo", "--timeout=30s"]);
    assert_contains(&out, "deployment.apps \"web\" deleted", "delete deployment");
    let err = k.fail(&["get", "deployment", "web", "-n", "demo"]);
    assert_contains(&err, "NotFound", "deleted deployment");
    let out = k.run(&[
        "delete",
        "service/web",
        "configmap/cfg",
        "secret/creds",
        "-n",
        "demo",
        "--timeout=30s",
    ]);
    assert_contains(&out, "configmap \"cfg\" deleted", "delete several");
    // The Deployment's ReplicaSets and pods go in the background (garbage collector), as on
    // Kubernetes.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = k.run(&["get", "all,configmaps,secrets", "-n", "demo", "-o", "name"]);
        if out.trim().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "everything in demo should be gone within 30 s, still:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Deleting a namespace waits until the namespace controller has emptied and removed it.
    let out = k.run(&["delete", "namespace", "demo", "--timeout=60s"]);
    assert_contains(&out, "namespace \"demo\" deleted", "delete namespace");
    let err = k.fail(&["get", "namespace", "demo"]);
    assert_contains(&err, "NotFound", "deleted namespace");
}

#[test]
fn kubectl_1_33_drives_the_api() {
    scenario(33);
}

#[test]
fn kubectl_1_27_drives_the_api() {
    scenario(27);
}
