//! End to end: the real `keelson-control-plane` driven by the real kubectl 1.33 and 1.27 with
//! manifests in the shapes public installs use (tests/manifests/: an ingress controller's, a
//! microservices demo's with ServiceAccounts, an operator's RBAC): every object is created and
//! a second apply leaves every one `unchanged`; `get all`, `api-resources`, `diff`,
//! `--dry-run=server`, `--validate=strict` and `describe` of a pod with every probe type.

use std::path::{Path, PathBuf};

use keelson_tests::cluster::{ControlPlane, Kubectl};

const MANIFESTS: &[&str] = &[
    "ingress-controller.yaml",
    "demo-app.yaml",
    "operator-rbac.yaml",
];

fn manifest(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("manifests")
        .join(name)
}

fn objects_in(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .expect("read manifest")
        .lines()
        .filter(|l| l.starts_with("kind:"))
        .count()
}

/// kubectl's output with runs of padding squeezed to one space, line by line.
fn squeezed(out: &str) -> Vec<String> {
    out.lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|line| !line.is_empty())
        .collect()
}

/// Objects a second apply reports `configured` against kube-apiserver as well: a
/// StatefulSet's `volumeClaimTemplates` is an atomic list, and the server defaults fields in
/// its items (`volumeMode: Filesystem`, `status.phase: Pending`), so kubectl's three-way
/// patch replaces the list each time (the server then finds nothing changed: no new
/// generation). A PodDisruptionBudget's `selector` carries `patchStrategy: replace`, and
/// kubectl's strategic three-way patch always sends a replaced map, equal or not.
const CONFIGURED_AGAIN: &[&str] = &[
    "statefulset.apps/catalog-db",
    "poddisruptionbudget.policy/frontend",
];

fn apply_twice(minor: u32) {
    let plane = ControlPlane::start();
    let k = Kubectl::new(minor, &plane);
    for (round, word) in [(1, "created"), (2, "unchanged")] {
        for name in MANIFESTS {
            let path = manifest(name);
            let out = k.run(&["apply", "-f", &path.to_string_lossy()]);
            let lines: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
            assert_eq!(
                lines.len(),
                objects_in(&path),
                "kubectl 1.{minor}, apply {round} of {name}: one line per object:\n{out}"
            );
            for line in &lines {
                let object = line.split(' ').next().unwrap_or_default();
                let word = if round == 2 && CONFIGURED_AGAIN.contains(&object) {
                    "configured"
                } else {
                    word
                };
                assert!(
                    line.ends_with(&format!(" {word}")),
                    "kubectl 1.{minor}, apply {round} of {name}: every object {word}, not {line:?}:\n{out}"
                );
            }
        }
    }
    let all = k.run(&["get", "all", "-n", "shop"]);
    for expected in [
        "pod/frontend-",
        "service/frontend",
        "service/catalog-db",
        "deployment.apps/frontend",
        "deployment.apps/cart",
        "statefulset.apps/catalog-db",
        "horizontalpodautoscaler.autoscaling/frontend",
        "cronjob.batch/load-report",
    ] {
        assert!(
            all.contains(expected),
            "kubectl 1.{minor} get all: {expected} missing:\n{all}"
        );
    }
    let all = k.run(&["get", "all", "-n", "edge-system"]);
    for expected in [
        "job.batch/edge-admission-create",
        "job.batch/edge-admission-patch",
    ] {
        assert!(
            all.contains(expected),
            "kubectl 1.{minor} get all: {expected} missing:\n{all}"
        );
    }
    let generation = k.run(&[
        "get",
        "statefulset",
        "catalog-db",
        "-n",
        "shop",
        "-o",
        "jsonpath={.metadata.generation}",
    ]);
    assert_eq!(generation, "1", "re-applying changed nothing");
    // kube-apiserver's columns for the new kinds (no node: the Jobs' pods stay Pending, the Jobs
    // Running).
    for (args, header, row) in [
        (
            &["get", "jobs", "-n", "edge-system"][..],
            "NAME STATUS COMPLETIONS DURATION AGE",
            "edge-admission-create Running 0/1",
        ),
        (
            &["get", "cronjobs", "-n", "shop"],
            "NAME SCHEDULE TIMEZONE SUSPEND ACTIVE LAST SCHEDULE AGE",
            "load-report @hourly <none> False 0 <none>",
        ),
        (
            &["get", "hpa", "-n", "shop"],
            "NAME REFERENCE TARGETS MINPODS MAXPODS REPLICAS AGE",
            // REPLICAS is 0 until the autoscaler's first pass writes the status, then 1.
            "frontend Deployment/frontend cpu: <unknown>/70% 1 5 ",
        ),
        (
            &["get", "pdb", "-n", "shop"],
            "NAME MIN AVAILABLE MAX UNAVAILABLE ALLOWED DISRUPTIONS AGE",
            "frontend N/A 1 0",
        ),
        (
            &["get", "ingress", "-n", "shop"],
            "NAME CLASS HOSTS ADDRESS PORTS AGE",
            "frontend edge shop.example.com 80",
        ),
        (
            &["get", "sc", "widget-local"],
            "NAME PROVISIONER RECLAIMPOLICY VOLUMEBINDINGMODE ALLOWVOLUMEEXPANSION AGE",
            "widget-local example.com/local-path Delete WaitForFirstConsumer false",
        ),
    ] {
        let out = k.run(args);
        let lines = squeezed(&out);
        assert_eq!(
            lines[0],
            header,
            "kubectl 1.{minor} {}:\n{out}",
            args.join(" ")
        );
        assert!(
            lines.iter().any(|l| l.starts_with(row)),
            "kubectl 1.{minor} {}: no row {row:?}:\n{out}",
            args.join(" ")
        );
    }
    // What a user of `get -o yaml` sees: kubectl's own field manager and Kubernetes' defaults.
    let deployment: serde_json::Value = serde_json::from_str(&k.run(&[
        "get",
        "deployment",
        "frontend",
        "-n",
        "shop",
        "-o",
        "json",
        "--show-managed-fields",
    ]))
    .expect("JSON");
    assert_eq!(
        deployment["metadata"]["managedFields"][0]["manager"], "kubectl-client-side-apply",
        "{deployment}"
    );
    assert_eq!(
        deployment["metadata"]["managedFields"][0]["operation"],
        "Update"
    );
    let spec = &deployment["spec"]["template"]["spec"];
    assert_eq!(
        spec["enableServiceLinks"],
        serde_json::Value::Null,
        "not defaulted on templates"
    );
    assert_eq!(spec["containers"][0]["readinessProbe"]["timeoutSeconds"], 1);
    assert_eq!(
        spec["containers"][0]["readinessProbe"]["httpGet"]["scheme"],
        "HTTP"
    );
    let sa = k.run(&["get", "serviceaccounts", "-n", "shop"]);
    assert_eq!(squeezed(&sa)[0], "NAME SECRETS AGE", "{sa}");
    for name in ["frontend", "cart", "catalog"] {
        assert!(
            squeezed(&sa)
                .iter()
                .any(|l| l.starts_with(&format!("{name} 0 "))),
            "service account {name}:\n{sa}"
        );
    }
}

#[test]
fn public_install_shapes_apply_and_reapply_unchanged_with_kubectl_1_33() {
    apply_twice(33);
}

#[test]
fn public_install_shapes_apply_and_reapply_unchanged_with_kubectl_1_27() {
    apply_twice(27);
}

/// `kubectl api-resources` rows (NAME SHORTNAMES APIVERSION NAMESPACED KIND) of Kubernetes
/// 1.33 for the kinds keelson serves.
const KUBERNETES_1_33: &[&str] = &[
    "configmaps cm v1 true ConfigMap",
    "endpoints ep v1 true Endpoints",
    "events ev v1 true Event",
    "limitranges limits v1 true LimitRange",
    "namespaces ns v1 false Namespace",
    "nodes no v1 false Node",
    "persistentvolumeclaims pvc v1 true PersistentVolumeClaim",
    "persistentvolumes pv v1 false PersistentVolume",
    "pods po v1 true Pod",
    "podtemplates v1 true PodTemplate",
    "replicationcontrollers rc v1 true ReplicationController",
    "resourcequotas quota v1 true ResourceQuota",
    "secrets v1 true Secret",
    "serviceaccounts sa v1 true ServiceAccount",
    "services svc v1 true Service",
    "mutatingwebhookconfigurations admissionregistration.k8s.io/v1 false MutatingWebhookConfiguration",
    "validatingadmissionpolicies admissionregistration.k8s.io/v1 false ValidatingAdmissionPolicy",
    "validatingadmissionpolicybindings admissionregistration.k8s.io/v1 false ValidatingAdmissionPolicyBinding",
    "validatingwebhookconfigurations admissionregistration.k8s.io/v1 false ValidatingWebhookConfiguration",
    "customresourcedefinitions crd,crds apiextensions.k8s.io/v1 false CustomResourceDefinition",
    "apiservices apiregistration.k8s.io/v1 false APIService",
    "controllerrevisions apps/v1 true ControllerRevision",
    "daemonsets ds apps/v1 true DaemonSet",
    "deployments deploy apps/v1 true Deployment",
    "replicasets rs apps/v1 true ReplicaSet",
    "statefulsets sts apps/v1 true StatefulSet",
    "selfsubjectreviews authentication.k8s.io/v1 false SelfSubjectReview",
    "tokenreviews authentication.k8s.io/v1 false TokenReview",
    "localsubjectaccessreviews authorization.k8s.io/v1 true LocalSubjectAccessReview",
    "selfsubjectaccessreviews authorization.k8s.io/v1 false SelfSubjectAccessReview",
    "selfsubjectrulesreviews authorization.k8s.io/v1 false SelfSubjectRulesReview",
    "subjectaccessreviews authorization.k8s.io/v1 false SubjectAccessReview",
    "horizontalpodautoscalers hpa autoscaling/v2 true HorizontalPodAutoscaler",
    "cronjobs cj batch/v1 true CronJob",
    "jobs batch/v1 true Job",
    "certificatesigningrequests csr certificates.k8s.io/v1 false CertificateSigningRequest",
    "leases coordination.k8s.io/v1 true Lease",
    "endpointslices discovery.k8s.io/v1 true EndpointSlice",
    "events ev events.k8s.io/v1 true Event",
    "flowschemas flowcontrol.apiserver.k8s.io/v1 false FlowSchema",
    "prioritylevelconfigurations flowcontrol.apiserver.k8s.io/v1 false PriorityLevelConfiguration",
    // What metrics-server adds (k3s ships it; keelson's API server serves the group itself).
    "nodes metrics.k8s.io/v1beta1 false NodeMetrics",
    "pods metrics.k8s.io/v1beta1 true PodMetrics",
    "ingressclasses networking.k8s.io/v1 false IngressClass",
    "ingresses ing networking.k8s.io/v1 true Ingress",
    "ipaddresses ip networking.k8s.io/v1 false IPAddress",
    "networkpolicies netpol networking.k8s.io/v1 true NetworkPolicy",
    "servicecidrs networking.k8s.io/v1 false ServiceCIDR",
    "runtimeclasses node.k8s.io/v1 false RuntimeClass",
    "poddisruptionbudgets pdb policy/v1 true PodDisruptionBudget",
    "clusterrolebindings rbac.authorization.k8s.io/v1 false ClusterRoleBinding",
    "clusterroles rbac.authorization.k8s.io/v1 false ClusterRole",
    "rolebindings rbac.authorization.k8s.io/v1 true RoleBinding",
    "roles rbac.authorization.k8s.io/v1 true Role",
    "priorityclasses pc scheduling.k8s.io/v1 false PriorityClass",
    "csidrivers storage.k8s.io/v1 false CSIDriver",
    "csinodes storage.k8s.io/v1 false CSINode",
    "csistoragecapacities storage.k8s.io/v1 true CSIStorageCapacity",
    "storageclasses sc storage.k8s.io/v1 false StorageClass",
    "volumeattachments storage.k8s.io/v1 false VolumeAttachment",
];

#[test]
fn api_resources_and_get_all_match_kubernetes() {
    let plane = ControlPlane::start();
    for minor in [33, 27] {
        let k = Kubectl::new(minor, &plane);
        let out = k.run(&["api-resources"]);
        let rows = squeezed(&out);
        assert_eq!(
            rows[0], "NAME SHORTNAMES APIVERSION NAMESPACED KIND",
            "{out}"
        );
        let served: Vec<&str> = rows[1..].iter().map(String::as_str).collect();
        assert_eq!(
            served, KUBERNETES_1_33,
            "kubectl 1.{minor} api-resources:\n{out}"
        );
        let all = k.run(&["get", "all", "-A"]);
        assert!(
            all.contains("service/kubernetes"),
            "kubectl 1.{minor} get all -A:\n{all}"
        );
    }
}

const FRONTEND_V2: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: REPLICAS
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: keelson/httpd:1
        FIELD: IfNotPresent
"#;

fn write(dir: &Path, name: &str, replicas: u32, field: &str) -> String {
    let path = dir.join(name);
    std::fs::write(
        &path,
        FRONTEND_V2
            .replace("REPLICAS", &replicas.to_string())
            .replace("FIELD", field),
    )
    .expect("write manifest");
    path.to_string_lossy().into_owned()
}

#[test]
fn diff_server_dry_run_and_strict_validation() {
    let plane = ControlPlane::start();
    let dir = tempfile::tempdir().expect("temp dir");
    for minor in [33, 27] {
        let k = Kubectl::new(minor, &plane);
        let v1 = write(dir.path(), "v1.yaml", 1, "imagePullPolicy");

        // --dry-run=server: validated and defaulted by the server, nothing stored.
        let out = k.run(&["apply", "--dry-run=server", "-f", &v1]);
        assert_eq!(
            out.trim(),
            "deployment.apps/web created (server dry run)",
            "1.{minor}"
        );
        let missing = k.fail(&["get", "deployment", "web"]);
        assert!(missing.contains("NotFound"), "1.{minor}: {missing}");

        k.run(&["apply", "-f", &v1]);
        // diff: nothing to say for the applied file (exit 0), the change for another (exit 1).
        let same = k
            .command(&["diff", "-f", &v1])
            .output()
            .expect("kubectl diff");
        assert_eq!(
            same.status.code(),
            Some(0),
            "1.{minor} diff of the applied manifest: {}{}",
            String::from_utf8_lossy(&same.stdout),
            String::from_utf8_lossy(&same.stderr)
        );
        let v2 = write(dir.path(), "v2.yaml", 3, "imagePullPolicy");
        let changed = k
            .command(&["diff", "-f", &v2])
            .output()
            .expect("kubectl diff");
        let text = String::from_utf8_lossy(&changed.stdout);
        assert_eq!(changed.status.code(), Some(1), "1.{minor}: {text}");
        assert!(
            text.contains("-  replicas: 1") && text.contains("+  replicas: 3"),
            "1.{minor}: {text}"
        );
        assert!(
            k.run(&[
                "get",
                "deployment",
                "web",
                "-o",
                "jsonpath={.spec.replicas}"
            ]) == "1",
            "diff changes nothing"
        );

        // --validate=strict: an unknown field is refused by the server, worded as
        // kube-apiserver words it.
        let typo = write(dir.path(), "typo.yaml", 1, "imagePullPolicyy");
        let refused = k.fail(&["apply", "--validate=strict", "-f", &typo]);
        assert!(
            refused.contains(
                r#"Deployment in version "v1" cannot be handled as a Deployment: strict decoding error: unknown field "spec.template.spec.containers[0].imagePullPolicyy""#
            ),
            "1.{minor}: {refused}"
        );
        k.run(&["delete", "deployment", "web"]);
    }
}

const PROBES: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: probed
spec:
  containers:
  - name: app
    image: keelson/httpd:1
    readinessProbe:
      grpc:
        port: 9090
    livenessProbe:
      httpGet:
        path: /healthz
        port: 8080
    startupProbe:
      tcpSocket:
        port: 8080
      failureThreshold: 30
  - name: side
    image: keelson/busybox:1
    livenessProbe:
      exec:
        command: [cat, /tmp/ok]
      periodSeconds: 5
"#;

#[test]
fn describe_shows_a_pod_with_every_probe_type() {
    let plane = ControlPlane::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("probed.yaml");
    std::fs::write(&path, PROBES).expect("write manifest");
    let k = Kubectl::new(33, &plane);
    k.run(&["apply", "-f", &path.to_string_lossy()]);
    for minor in [33, 27] {
        let k = Kubectl::new(minor, &plane);
        let out = squeezed(&k.run(&["describe", "pod", "probed"]));
        for expected in [
            "Readiness: grpc <pod>:9090 delay=0s timeout=1s period=10s #success=1 #failure=3",
            "Liveness: http-get http://:8080/healthz delay=0s timeout=1s period=10s #success=1 #failure=3",
            "Startup: tcp-socket :8080 delay=0s timeout=1s period=10s #success=1 #failure=30",
            "Liveness: exec [cat /tmp/ok] delay=0s timeout=1s period=5s #success=1 #failure=3",
        ] {
            assert!(
                out.iter().any(|l| l == expected),
                "kubectl 1.{minor} describe pod: {expected:?} missing:\n{}",
                out.join("\n")
            );
        }
    }
}

#[test]
fn imperative_creates_of_the_new_kinds() {
    let plane = ControlPlane::start();
    for minor in [33, 27] {
        let k = Kubectl::new(minor, &plane);
        let ns = format!("imperative-{minor}");
        k.run(&["create", "namespace", &ns]);
        for (args, created) in [
            (
                vec!["create", "serviceaccount", "robot"],
                "serviceaccount/robot created",
            ),
            (
                vec![
                    "create",
                    "job",
                    "once",
                    "--image=keelson/busybox:1",
                    "--",
                    "true",
                ],
                "job.batch/once created",
            ),
            (
                vec![
                    "create",
                    "cronjob",
                    "tick",
                    "--image=keelson/busybox:1",
                    "--schedule=*/5 * * * *",
                ],
                "cronjob.batch/tick created",
            ),
            (
                vec![
                    "create",
                    "role",
                    "reader",
                    "--verb=get,list",
                    "--resource=pods",
                ],
                "role.rbac.authorization.k8s.io/reader created",
            ),
            (
                vec![
                    "create",
                    "rolebinding",
                    "reader",
                    "--role=reader",
                    "--serviceaccount=NS:robot",
                ],
                "rolebinding.rbac.authorization.k8s.io/reader created",
            ),
            (
                vec!["create", "quota", "small", "--hard=pods=5"],
                "resourcequota/small created",
            ),
            (
                vec![
                    "create",
                    "poddisruptionbudget",
                    "keep",
                    "--selector=app=x",
                    "--min-available=1",
                ],
                "poddisruptionbudget.policy/keep created",
            ),
            (
                vec!["create", "ingress", "web", "--rule=web.example.com/=web:80"],
                "ingress.networking.k8s.io/web created",
            ),
        ] {
            let args: Vec<String> = args.iter().map(|a| a.replace("NS", &ns)).collect();
            // The namespace goes first: whatever follows `--` is the container's command.
            let args: Vec<&str> = ["-n", ns.as_str()]
                .into_iter()
                .chain(args.iter().map(String::as_str))
                .collect();
            let out = k.run(&args);
            assert_eq!(out.trim(), created, "kubectl 1.{minor} {}", args.join(" "));
        }
        let name = format!("critical-{minor}");
        let out = k.run(&["create", "priorityclass", &name, "--value=1000"]);
        assert_eq!(
            out.trim(),
            format!("priorityclass.scheduling.k8s.io/{name} created")
        );
        let job: serde_json::Value =
            serde_json::from_str(&k.run(&["get", "job", "once", "-n", &ns, "-o", "json"]))
                .expect("JSON");
        assert_eq!(
            job["spec"]["backoffLimit"], 6,
            "Kubernetes' Job defaults: {job}"
        );
        assert_eq!(job["spec"]["completionMode"], "NonIndexed");
        assert_eq!(
            job["spec"]["template"]["spec"]["restartPolicy"], "Never",
            "kubectl create job's own choice"
        );
    }
}
