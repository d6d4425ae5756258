//! End to end: kubectl reads keelson's OpenAPI documents. `kubectl explain` prints a field's
//! type and description (from /openapi/v3), `kubectl apply --validate=strict` refuses an unknown
//! field, client-side apply and `kubectl diff` compute their strategic merge patch from the
//! schemas, and `kubectl create --dry-run=server` still works; kubectl 1.33 and 1.27.

use std::io::Write as _;

use keelson_tests::cluster::{ControlPlane, Kubectl};

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: nginx
        image: nginx:1.27
        ports:
        - containerPort: 80
";

fn apply(
    k: &Kubectl<'_>,
    plane: &ControlPlane,
    name: &str,
    manifest: &str,
) -> std::process::Output {
    let path = plane.data_dir().join(name);
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(manifest.as_bytes()))
        .expect("write manifest");
    let file = path.display().to_string();
    k.command(&["apply", "--validate=strict", "-f", &file])
        .output()
        .expect("run kubectl apply")
}

fn scenario(minor: u32) {
    let plane = ControlPlane::start();
    let k = Kubectl::new(minor, &plane);

    let replicas = k.run(&["explain", "deployment.spec.replicas"]);
    assert!(replicas.contains("replicas"), "{replicas}");
    assert!(replicas.contains("<integer>"), "{replicas}");
    assert!(replicas.contains("Number of desired pods."), "{replicas}");
    assert!(replicas.contains("Deployment"), "{replicas}");

    let ports = k.run(&["explain", "pods.spec.containers.ports"]);
    assert!(ports.contains("<[]ContainerPort>"), "{ports}");
    assert!(
        ports.contains("List of ports to expose from the container."),
        "{ports}"
    );
    assert!(ports.contains("containerPort"), "{ports}");

    // kubectl 1.27 still explains from /openapi/v2 (the gnostic protobuf) when asked to.
    if minor == 27 {
        let out = k
            .command(&["explain", "deployment.spec.replicas"])
            .env("KUBECTL_EXPLAIN_OPENAPIV3", "false")
            .output()
            .expect("run kubectl explain");
        let v2 = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "explain from v2: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(v2.contains("<integer>"), "{v2}");
        assert!(v2.contains("Number of desired pods."), "{v2}");
    }

    let target_port = k.run(&["explain", "service.spec.ports.targetPort"]);
    assert!(target_port.contains("<IntOrString>"), "{target_port}");
    let limits = k.run(&["explain", "pod.spec.containers.resources.limits"]);
    assert!(limits.contains("<map[string]Quantity>"), "{limits}");

    let recursive = k.run(&["explain", "service.spec", "--recursive"]);
    assert!(recursive.contains("clusterIP"), "{recursive}");

    // An unknown field is refused.
    let bad = DEPLOYMENT.replace("  replicas: 2\n", "  replicas: 2\n  replicaz: 3\n");
    let out = apply(&k, &plane, "bad.yaml", &bad);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "apply of an unknown field passed");
    assert!(stderr.contains("unknown field"), "{stderr}");
    assert!(stderr.contains("replicaz"), "{stderr}");
    // kubectl finds `fieldValidation` on the PATCH/POST operations of the documents and lets
    // the server refuse the field (Strict), as it does against kube-apiserver.
    assert!(stderr.contains("strict decoding error"), "{stderr}");

    // Client-side apply, then a re-apply whose patch is computed from the schema.
    let out = apply(&k, &plane, "web.yaml", DEPLOYMENT);
    assert!(
        out.status.success(),
        "apply: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        plane.log()
    );
    let changed = DEPLOYMENT
        .replace("nginx:1.27", "nginx:1.28")
        .replace("  replicas: 2\n", "  replicas: 3\n");
    // kubectl diff: a server-side dry run of the patch computed from the schemas.
    let path = plane.data_dir().join("web2.yaml");
    std::fs::write(&path, &changed).expect("write manifest");
    let file = path.display().to_string();
    let out = k
        .command(&["diff", "-f", &file])
        .output()
        .expect("run kubectl diff");
    let diff = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "diff exits 1 on differences: {diff}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let changed_line = |sign: char, text: &str| {
        diff.lines()
            .any(|line| line.starts_with(sign) && line.contains(text))
    };
    assert!(changed_line('-', "image: nginx:1.27"), "{diff}");
    assert!(changed_line('+', "image: nginx:1.28"), "{diff}");
    assert!(changed_line('-', "replicas: 2"), "{diff}");
    assert!(changed_line('+', "replicas: 3"), "{diff}");

    let out = apply(&k, &plane, "web2.yaml", &changed);
    assert!(
        out.status.success(),
        "re-apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let image = k.run(&[
        "get",
        "deployment",
        "web",
        "-o",
        "jsonpath={.spec.replicas} {.spec.template.spec.containers[*].image}",
    ]);
    assert_eq!(image, "3 nginx:1.28");

    let dry = k.run(&[
        "create",
        "deployment",
        "dry",
        "--image=nginx:1.27",
        "--dry-run=server",
        "-o",
        "name",
    ]);
    assert_eq!(dry.trim(), "deployment.apps/dry");
    let gone = k.fail(&["get", "deployment", "dry"]);
    assert!(gone.contains("not found"), "{gone}");

    // The raw documents: the v3 index and a group version through the hash it names.
    let index = k.run(&["get", "--raw", "/openapi/v3"]);
    let index: serde_json::Value = serde_json::from_str(&index).expect("index JSON");
    let url = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
        .as_str()
        .expect("apps/v1 in the index");
    let apps = k.run(&["get", "--raw", url]);
    assert!(
        apps.contains("\"x-kubernetes-list-map-keys\""),
        "no list-map keys"
    );
}

#[test]
fn kubectl_1_33_reads_openapi() {
    scenario(33);
}

#[test]
fn kubectl_1_27_reads_openapi() {
    scenario(27);
}
