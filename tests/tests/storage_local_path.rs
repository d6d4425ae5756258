//! Local-path storage on a two-node cluster (k3s's `local-path` class): a claim without a
//! class gets `local-path` and stays Pending until a pod uses it; then the scheduler picks a
//! node, the binder provisions a volume pinned there and the node agent creates its directory;
//! data written by one pod is read by the next pod using the claim, which the scheduler puts
//! on the same node; deleting the claim deletes the volume and the directory on the node.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use keelson_testbed::{Cluster, ClusterSpec};
use keelson_tests::{
    netcluster::{apply, bin_dir, claim_subnet, kubectl_json, logs, pod_exec, wait_ready_pods},
    pods::{BUSYBOX, require_docker_images},
    require_root,
};
use serde_json::Value;

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// Polls `check` every 500 ms until it returns `Some`, for at most `limit`.
fn eventually<T>(
    cluster: &Cluster,
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() > deadline {
            let state = cluster
                .kubectl(&["get", "pods,pvc,pv", "-o", "wide"])
                .unwrap_or_default();
            let events = cluster.kubectl(&["get", "events"]).unwrap_or_default();
            panic!(
                "{what}: not within {limit:?}\n{state}\n{events}\n{}",
                logs(cluster)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn pod_manifest(name: &str, script: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: {name}}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: main
      image: {BUSYBOX}
      imagePullPolicy: Never
      command: ["sh", "-c", "{script}"]
      volumeMounts: [{{name: data, mountPath: /data}}]
  volumes:
    - name: data
      persistentVolumeClaim: {{claimName: data}}
"#
    )
}

#[test]
fn a_local_path_claim_binds_on_first_use_keeps_its_node_and_is_cleaned_up() {
    require_root();
    require_docker_images();
    let (subnet, _lock) = claim_subnet();
    let name = format!("s{subnet}");
    let state = tempfile::tempdir().expect("state dir");
    let storage = state.path().join("storage");
    let mut spec = ClusterSpec::new(&name, subnet, 2, bin_dir(), state.path());
    spec.cluster_cidr = "10.201.0.0/16".to_owned();
    spec.control_plane_args = vec![
        "--default-local-storage-path".to_owned(),
        storage.display().to_string(),
    ];
    let cluster = Cluster::up(spec).unwrap_or_else(|e| panic!("cluster up: {e:#}"));

    // The default class exists, and a claim without a class gets it.
    let class = kubectl_json(
        &cluster,
        &["get", "storageclass", "local-path", "-o", "json"],
    );
    assert_eq!(str_at(&class, "/provisioner"), "keelson.io/local-path");
    assert_eq!(str_at(&class, "/volumeBindingMode"), "WaitForFirstConsumer");
    assert_eq!(
        str_at(
            &class,
            "/metadata/annotations/storageclass.kubernetes.io~1is-default-class"
        ),
        "true"
    );
    apply(
        &cluster,
        "claim",
        r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 64Mi}}
"#,
    );
    let claim = kubectl_json(&cluster, &["get", "pvc", "data", "-o", "json"]);
    assert_eq!(str_at(&claim, "/spec/storageClassName"), "local-path");
    std::thread::sleep(Duration::from_secs(3));
    let claim = kubectl_json(&cluster, &["get", "pvc", "data", "-o", "json"]);
    assert_eq!(str_at(&claim, "/status/phase"), "Pending", "{claim:#}");
    assert_eq!(str_at(&claim, "/spec/volumeName"), "", "{claim:#}");
    let events = cluster
        .kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=data",
        ])
        .unwrap_or_default();
    assert!(
        events.contains("waiting for first consumer to be created before binding"),
        "{events}"
    );

    // A pod using it: the claim binds to a volume on the pod's node; the pod writes a file.
    apply(
        &cluster,
        "writer",
        &pod_manifest(
            "writer",
            "echo written-by-writer > /data/file && sleep 3600",
        ),
    );
    let writer = wait_ready_pods(&cluster, "app=writer", 1, Duration::from_secs(90))
        .pop()
        .expect("the writer");
    let claim = eventually(&cluster, "the claim bound", Duration::from_secs(30), || {
        let claim = kubectl_json(&cluster, &["get", "pvc", "data", "-o", "json"]);
        (str_at(&claim, "/status/phase") == "Bound").then_some(claim)
    });
    assert_eq!(
        str_at(
            &claim,
            "/metadata/annotations/volume.kubernetes.io~1selected-node"
        ),
        writer.node
    );
    let volume_name = str_at(&claim, "/spec/volumeName").to_owned();
    let volume = kubectl_json(&cluster, &["get", "pv", &volume_name, "-o", "json"]);
    assert_eq!(str_at(&volume, "/status/phase"), "Bound");
    assert_eq!(
        str_at(&volume, "/spec/persistentVolumeReclaimPolicy"),
        "Delete"
    );
    assert_eq!(
        str_at(
            &volume,
            "/metadata/annotations/pv.kubernetes.io~1provisioned-by"
        ),
        "keelson.io/local-path"
    );
    assert_eq!(
        volume
            .pointer("/spec/nodeAffinity/required/nodeSelectorTerms/0/matchExpressions/0/values/0")
            .and_then(Value::as_str),
        Some(writer.node.as_str()),
        "{volume:#}"
    );
    let dir = PathBuf::from(str_at(&volume, "/spec/hostPath/path"));
    assert_eq!(dir, storage.join(format!("{volume_name}_default_data")));
    eventually(
        &cluster,
        "the file on the node",
        Duration::from_secs(20),
        || {
            std::fs::read_to_string(dir.join("file"))
                .ok()
                .filter(|t| t == "written-by-writer\n")
        },
    );

    // The next pod using the claim runs on the same node and reads the file.
    cluster
        .kubectl(&["delete", "pod", "writer", "--wait=true"])
        .unwrap_or_else(|e| panic!("delete the writer: {e:#}"));
    apply(&cluster, "reader", &pod_manifest("reader", "sleep 3600"));
    let reader = wait_ready_pods(&cluster, "app=reader", 1, Duration::from_secs(90))
        .pop()
        .expect("the reader");
    assert_eq!(
        reader.node, writer.node,
        "the reader runs where the data is"
    );
    let (ok, read) = pod_exec(&reader, "main", "cat /data/file");
    assert!(ok, "cat failed: {read}");
    assert_eq!(read, "written-by-writer\n");

    // Deleting the claim deletes the volume and its directory.
    cluster
        .kubectl(&["delete", "pod", "reader", "--wait=true"])
        .unwrap_or_else(|e| panic!("delete the reader: {e:#}"));
    cluster
        .kubectl(&["delete", "pvc", "data", "--wait=true"])
        .unwrap_or_else(|e| panic!("delete the claim: {e:#}"));
    eventually(
        &cluster,
        "the volume deleted",
        Duration::from_secs(30),
        || {
            let volumes = kubectl_json(&cluster, &["get", "pv", "-o", "json"]);
            volumes["items"]
                .as_array()
                .is_some_and(|items| items.is_empty())
                .then_some(())
        },
    );
    assert!(!dir.exists(), "{} is left on the node", dir.display());
    cluster
        .down()
        .unwrap_or_else(|e| panic!("cluster down: {e:#}"));
}
