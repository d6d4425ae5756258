//! End to end, privileged: StatefulSets on a two-node keelson-testbed cluster, driven by
//! kubectl. A three-replica set behind a headless Service comes up in order (a pod is created
//! only once its predecessor is Ready), its pods reach each other by their stable names
//! `<pod>.<service>.<ns>.svc.cluster.local`, and an image update rolls out from the highest
//! ordinal down with `kubectl rollout status` returning 0 and `rollout history` listing both
//! revisions. A second test (it needs the local-path provisioner) checks that data written to a
//! `volumeClaimTemplates` volume survives deleting the pod.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use keelson_testbed::{Cluster, ClusterSpec};
use keelson_tests::{
    netcluster::{RunningPod, apply, bin_dir, claim_subnet, kubectl_json, logs, pod_exec},
    pods::{BUSYBOX, HTTPD, require_docker_images},
    require_root,
};
use serde_json::Value;

/// Serves the pod's hostname on port 80 with either test image (both hold busybox).
const SERVE: &str = "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www";

fn up(prefix: &str, subnet: u8, state: &std::path::Path) -> Cluster {
    let mut spec = ClusterSpec::new(&format!("{prefix}{subnet}"), subnet, 2, bin_dir(), state);
    // A pod CIDR no other test cluster uses (the host routes it to the nodes).
    spec.cluster_cidr = format!("100.64.{subnet}.0/24");
    spec.control_plane_args = vec!["--node-cidr-mask-size".into(), "26".into()];
    Cluster::up(spec).unwrap_or_else(|e| panic!("cluster up: {e:#}"))
}

fn manifest(image: &str, extra_spec: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  clusterIP: None
  selector: {{app: web}}
  ports: [{{name: http, port: 80}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: web}}
spec:
  serviceName: web
  replicas: 3
  selector: {{matchLabels: {{app: web}}}}
{extra_spec}  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: web
          image: {image}
          imagePullPolicy: Never
          command: ["sh", "-c", "{SERVE}"]
          readinessProbe:
            httpGet: {{path: /, port: 80}}
            periodSeconds: 1
"#
    )
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn ready(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
        && pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// The set's pods by name.
fn pods(cluster: &Cluster) -> BTreeMap<String, Value> {
    let list = kubectl_json(cluster, &["get", "pods", "-l", "app=web", "-o", "json"]);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| (str_at(p, "/metadata/name").to_owned(), p.clone()))
        .collect()
}

fn running(pod: &Value) -> RunningPod {
    RunningPod {
        name: str_at(pod, "/metadata/name").to_owned(),
        uid: str_at(pod, "/metadata/uid").to_owned(),
        ip: str_at(pod, "/status/podIP").parse().expect("a pod IP"),
        node: str_at(pod, "/spec/nodeName").to_owned(),
    }
}

fn image(pod: &Value) -> &str {
    str_at(pod, "/spec/containers/0/image")
}

fn state(cluster: &Cluster) -> String {
    format!(
        "{}\n{}\n{}",
        cluster
            .kubectl(&["get", "statefulsets,pods,controllerrevisions", "-o", "wide"])
            .unwrap_or_default(),
        cluster
            .kubectl(&["get", "statefulset", "web", "-o", "jsonpath={.status}"])
            .unwrap_or_default(),
        logs(cluster)
    )
}

#[test]
fn statefulset_rolls_out_in_order_with_stable_dns_names_and_updates_highest_first() {
    require_root();
    require_docker_images();
    let (subnet, _lock) = claim_subnet();
    let dir = tempfile::tempdir().expect("state dir");
    let cluster = up("s", subnet, dir.path());
    apply(&cluster, "web", &manifest(HTTPD, ""));

    // Ordered creation: in every snapshot, a pod exists only if its predecessor is Ready.
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut snapshots = 0;
    let all = loop {
        let pods = pods(&cluster);
        snapshots += 1;
        for i in 1..3 {
            if pods.contains_key(&format!("web-{i}")) {
                let before = pods.get(&format!("web-{}", i - 1));
                assert!(
                    before.is_some_and(ready),
                    "web-{i} exists while web-{} is not Ready: {pods:#?}",
                    i - 1
                );
            }
        }
        if pods.len() == 3 && pods.values().all(ready) {
            break pods;
        }
        assert!(
            Instant::now() < deadline,
            "the set did not come up in 240 s:\n{}",
            state(&cluster)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(snapshots > 3, "the rollout was observed along the way");
    // And by the timestamps: each pod created no earlier than its predecessor became Ready.
    let ready_at = |pod: &Value| {
        pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Ready")
            .and_then(|c| c["lastTransitionTime"].as_str())
            .unwrap_or("")
            .to_owned()
    };
    for i in 1..3 {
        let created = str_at(&all[&format!("web-{i}")], "/metadata/creationTimestamp");
        let previous_ready = ready_at(&all[&format!("web-{}", i - 1)]);
        assert!(
            created >= previous_ready.as_str(),
            "web-{i} created at {created}, before web-{} was Ready at {previous_ready}",
            i - 1
        );
    }
    // Identity: hostname, subdomain and labels.
    for (name, pod) in &all {
        assert_eq!(str_at(pod, "/spec/hostname"), name);
        assert_eq!(str_at(pod, "/spec/subdomain"), "web");
        assert_eq!(
            str_at(pod, "/metadata/labels/statefulset.kubernetes.io~1pod-name"),
            name
        );
        let index = name.trim_start_matches("web-");
        assert_eq!(
            str_at(pod, "/metadata/labels/apps.kubernetes.io~1pod-index"),
            index
        );
    }

    // Stable names: web-0 resolves web-1 by name and fetches its page.
    let web0 = running(&all["web-0"]);
    let web1_ip = str_at(&all["web-1"], "/status/podIP").to_owned();
    let fqdn = "web-1.web.default.svc.cluster.local";
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (ok, out) = pod_exec(
            &web0,
            "web",
            &format!("nslookup {fqdn}; timeout 5 wget -qO- http://{fqdn}/"),
        );
        if ok && out.contains(&web1_ip) && out.trim_end().ends_with("web-1") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "web-0 cannot reach {fqdn} ({web1_ip}): {out}\n{}\n{}",
            cluster
                .kubectl(&["get", "endpointslices", "-o", "yaml"])
                .unwrap_or_default(),
            state(&cluster)
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // An image update rolls out from the highest ordinal down, one at a time.
    cluster
        .kubectl(&["set", "image", "statefulset/web", &format!("web={BUSYBOX}")])
        .unwrap_or_else(|e| panic!("set image: {e:#}"));
    let mut order: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let pods = pods(&cluster);
        for (name, pod) in &pods {
            if image(pod) == BUSYBOX && !order.contains(name) {
                order.push(name.clone());
            }
        }
        // A pod is replaced only once every pod above it is updated and Ready.
        for i in 0..2 {
            if pods
                .get(&format!("web-{i}"))
                .is_some_and(|p| image(p) == BUSYBOX)
            {
                let above = pods.get(&format!("web-{}", i + 1));
                assert!(
                    above.is_some_and(|p| image(p) == BUSYBOX && ready(p)),
                    "web-{i} updated before web-{} was updated and Ready: {pods:#?}",
                    i + 1
                );
            }
        }
        if order.len() == 3 && pods.len() == 3 && pods.values().all(ready) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the update did not finish in 240 s (updated so far: {order:?}):\n{}",
            state(&cluster)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(order, ["web-2", "web-1", "web-0"], "update order");
    let status = cluster
        .kubectl(&["rollout", "status", "statefulset/web", "--timeout=60s"])
        .unwrap_or_else(|e| panic!("rollout status: {e:#}\n{}", state(&cluster)));
    assert!(
        // kubectl's wording when `rollingUpdate.partition` is set (defaulted to 0).
        status.contains("partitioned roll out complete: 3 new pods have been updated"),
        "{status}"
    );
    let history = cluster
        .kubectl(&["rollout", "history", "statefulset/web"])
        .unwrap_or_else(|e| panic!("rollout history: {e:#}"));
    let revisions: Vec<&str> = history
        .lines()
        .skip_while(|l| !l.starts_with("REVISION"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(revisions, ["1", "2"], "{history}");
    let sts = kubectl_json(&cluster, &["get", "statefulset", "web", "-o", "json"]);
    assert_eq!(
        str_at(&sts, "/status/currentRevision"),
        str_at(&sts, "/status/updateRevision"),
        "{sts:#}"
    );
    for field in [
        "replicas",
        "readyReplicas",
        "currentReplicas",
        "updatedReplicas",
        "availableReplicas",
    ] {
        assert_eq!(sts["status"][field], 3, "status.{field}: {sts:#}");
    }

    // `rollout undo` brings the first template back as revision 3, again highest first.
    cluster
        .kubectl(&["rollout", "undo", "statefulset/web"])
        .unwrap_or_else(|e| panic!("rollout undo: {e:#}\n{}", state(&cluster)));
    cluster
        .kubectl(&["rollout", "status", "statefulset/web", "--timeout=180s"])
        .unwrap_or_else(|e| panic!("rollout status after undo: {e:#}\n{}", state(&cluster)));
    let pods = pods(&cluster);
    let images: Vec<&str> = pods.values().map(image).collect();
    assert_eq!(images, [HTTPD; 3], "after undo: {pods:#?}");
    let history = cluster
        .kubectl(&["rollout", "history", "statefulset/web"])
        .unwrap_or_else(|e| panic!("rollout history: {e:#}"));
    let revisions: Vec<&str> = history
        .lines()
        .skip_while(|l| !l.starts_with("REVISION"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(revisions, ["2", "3"], "{history}");
    drop(cluster);
}

/// Needs the local-path provisioner and PV binding (the storage part of issue 20).
#[test]
fn volume_claim_template_data_survives_pod_deletion() {
    require_root();
    require_docker_images();
    let (subnet, _lock) = claim_subnet();
    let dir = tempfile::tempdir().expect("state dir");
    let cluster = up("v", subnet, dir.path());
    let claims = "  volumeClaimTemplates:
    - metadata: {name: data}
      spec:
        accessModes: [ReadWriteOnce]
        resources: {requests: {storage: 16Mi}}
";
    let yaml = manifest(HTTPD, claims)
        .replace("replicas: 3", "replicas: 1")
        .replace(
            "          readinessProbe:",
            "          volumeMounts: [{name: data, mountPath: /data}]\n          readinessProbe:",
        );
    apply(&cluster, "web", &yaml);
    let wait_ready = |not_uid: &str| {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let pods = pods(&cluster);
            if let Some(pod) = pods.get("web-0")
                && ready(pod)
                && str_at(pod, "/metadata/uid") != not_uid
            {
                return running(pod);
            }
            assert!(
                Instant::now() < deadline,
                "web-0 not Ready in 180 s:\n{}\n{}",
                cluster
                    .kubectl(&["get", "pvc,pv", "-o", "wide"])
                    .unwrap_or_default(),
                state(&cluster)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    let first = wait_ready("");
    let claim = kubectl_json(&cluster, &["get", "pvc", "data-web-0", "-o", "json"]);
    assert_eq!(str_at(&claim, "/status/phase"), "Bound", "{claim:#}");
    let (ok, out) = pod_exec(&first, "web", "echo kept > /data/proof && cat /data/proof");
    assert!(ok && out.trim() == "kept", "write to the claim: {out}");
    cluster
        .kubectl(&["delete", "pod", "web-0", "--wait=true"])
        .unwrap_or_else(|e| panic!("delete web-0: {e:#}"));
    let second = wait_ready(&first.uid);
    let (ok, out) = pod_exec(&second, "web", "cat /data/proof");
    assert!(
        ok && out.trim() == "kept",
        "the new web-0 ({}) does not see the data: {out}",
        second.uid
    );
    drop(cluster);
}
