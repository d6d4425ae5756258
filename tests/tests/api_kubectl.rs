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
  type: NodePort
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

/// kubectl's table output with runs of padding squeezed to one space, line by line.
fn squeezed(out: &str) -> Vec<String> {
    out.lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|line| !line.is_empty())
        .collect()
}

fn assert_header(out: &str, header: &str, what: &str) {
    let lines = squeezed(out);
    assert!(
        lines.first().is_some_and(|first| first.starts_with(header)),
        "{what}: expected the header {header:?} in:\n{out}"
    );
}

fn assert_row(out: &str, pred: impl Fn(&[&str]) -> bool, what: &str) {
    // Padded, so a short row fails the predicate instead of panicking on an index.
    let found = squeezed(out).iter().skip(1).any(|line| {
        let mut cells: Vec<&str> = line.split(' ').collect();
        cells.resize(cells.len().max(16), "");
        pred(&cells)
    });
    assert!(found, "{what}: no matching row in:\n{out}");
}

/// Server-side printing: `kubectl get` shows kube-apiserver's columns (issue: only NAME and
/// AGE were printed before the API server answered Tables). The Deployment's pods stay
/// Pending: this cluster has no nodes.
fn get_prints_tables(k: &Kubectl<'_>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let pods = loop {
        let out = k.run(&["get", "pods", "-n", "demo"]);
        if squeezed(&out)
            .iter()
            .any(|l| l.starts_with("web-") && l.contains(" 0/1 Pending 0 "))
        {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "the Deployment's pods should be listed as Pending within 30 s:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_header(&pods, "NAME READY STATUS RESTARTS AGE", "get pods");

    let out = k.run(&["get", "pods", "-n", "demo", "-o", "wide"]);
    assert_header(
        &out,
        "NAME READY STATUS RESTARTS AGE IP NODE NOMINATED NODE READINESS GATES",
        "get pods -o wide",
    );
    assert_row(
        &out,
        |c| c[0].starts_with("web-") && c[5..10] == ["<none>", "<none>", "<none>", "<none>", ""],
        "an unscheduled pod has no IP, node, nominated node or readiness gates",
    );

    let out = k.run(&["get", "svc", "-n", "demo"]);
    assert_header(
        &out,
        "NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE",
        "get svc",
    );
    assert_row(
        &out,
        |c| {
            c[..2] == ["web", "NodePort"]
                && c[2].starts_with("10.")
                && c[3] == "<none>"
                && c[4].starts_with("80:3")
                && c[4].ends_with("/TCP")
        },
        "the NodePort Service with its node port",
    );
    let out = k.run(&["get", "svc", "-n", "demo", "-o", "wide"]);
    assert_row(
        &out,
        |c| c[..2] == ["web", "NodePort"] && c[6] == "app=web",
        "get svc -o wide selector",
    );

    let out = k.run(&["get", "deploy", "-n", "demo"]);
    assert_header(&out, "NAME READY UP-TO-DATE AVAILABLE AGE", "get deploy");
    assert_row(
        &out,
        |c| c[..2] == ["web", "0/2"],
        "deployment web, none ready",
    );
    let out = k.run(&["get", "deploy", "-n", "demo", "-o", "wide"]);
    assert_header(
        &out,
        "NAME READY UP-TO-DATE AVAILABLE AGE CONTAINERS IMAGES SELECTOR",
        "get deploy -o wide",
    );
    assert_row(
        &out,
        |c| c[5..9] == ["web", "nginx:1.28", "app=web", ""],
        "deployment containers, images, selector",
    );

    let out = k.run(&["get", "rs", "-n", "demo"]);
    assert_header(&out, "NAME DESIRED CURRENT READY AGE", "get rs");

    let out = k.run(&["get", "cm", "-n", "demo"]);
    assert_header(&out, "NAME DATA AGE", "get cm");
    assert_row(
        &out,
        |c| c[..2] == ["cfg", "1"],
        "configmap cfg with one key",
    );
    let out = k.run(&["get", "secret", "creds", "-n", "demo"]);
    assert_header(&out, "NAME TYPE DATA AGE", "get secret");
    assert_row(&out, |c| c[..3] == ["creds", "Opaque", "1"], "secret creds");
    let out = k.run(&["get", "ns", "demo"]);
    assert_header(&out, "NAME STATUS AGE", "get ns");
    assert_row(&out, |c| c[..2] == ["demo", "Active"], "namespace demo");

    let out = k.run(&["get", "all", "-n", "demo"]);
    for expected in [
        "pod/web-",
        "service/web",
        "deployment.apps/web",
        "replicaset.apps/web-",
        "READY STATUS RESTARTS AGE",
        "UP-TO-DATE AVAILABLE",
    ] {
        assert_contains(&squeezed(&out).join("\n"), expected, "get all");
    }
    let out = k.run(&["get", "pods", "-A"]);
    assert_header(
        &out,
        "NAMESPACE NAME READY STATUS RESTARTS AGE",
        "get pods -A",
    );
    assert_row(
        &out,
        |c| c[0] == "demo" && c[1].starts_with("web-") && c[3] == "Pending",
        "get pods -A",
    );

    watch_prints_rows(k);
}

/// `kubectl get pods -w` prints the table, then a row for a change made while it watches.
fn watch_prints_rows(k: &Kubectl<'_>) {
    let pod = k.run(&[
        "get",
        "pods",
        "-n",
        "demo",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    let mut watcher = k
        .command(&["get", "pods", "-n", "demo", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start kubectl get pods -w");
    let stdout = watcher.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen: Vec<String> = Vec::new();
    let rows_for_pod = |seen: &mut Vec<String>, wanted: usize| {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
                seen.push(line);
            }
            let rows = seen
                .iter()
                .filter(|l| l.starts_with(&pod) && l.contains("Pending"))
                .count();
            if rows >= wanted {
                return true;
            }
        }
        false
    };
    let listed = rows_for_pod(&mut seen, 1);
    k.run(&["label", "pod", &pod, "-n", "demo", "watched=yes"]);
    let changed = listed && rows_for_pod(&mut seen, 2);
    let _ = watcher.kill();
    let _ = watcher.wait();
    assert!(listed, "kubectl get pods -w never listed {pod}: {seen:?}");
    assert!(
        seen.first().is_some_and(|h| squeezed(h)
            .first()
            .is_some_and(|h| h.starts_with("NAME READY STATUS"))),
        "kubectl get pods -w prints the header first: {seen:?}"
    );
    assert!(
        changed,
        "kubectl get pods -w printed no row for the labelled pod: {seen:?}"
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
    // kube-root-ca.crt (in every namespace, as in Kubernetes) has no tier label.
    assert_eq!(
        out.trim(),
        "configmap/kube-root-ca.crt",
        "negative label selector"
    );
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

    get_prints_tables(&k);

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
        // What Kubernetes keeps in every namespace: the root CA ConfigMap.
        if out.trim() == "configmap/kube-root-ca.crt" {
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
