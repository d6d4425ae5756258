//! End to end, privileged: resource metrics and autoscaling. The node agent reads the pods'
//! cgroups, the API server serves `metrics.k8s.io` from them, `kubectl top` shows them (checked
//! against the container's own cgroup CPU counter), and a HorizontalPodAutoscaler made with
//! `kubectl autoscale` scales a CPU-bound Deployment from 1 to at least 3 replicas and back to
//! 1 once the load stops.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use k8s_openapi::api::{apps::v1::Deployment, core::v1::Pod};
use keelson_tests::{
    cluster::{ControlPlane, Kubectl},
    pods::{PodAgent, apply, is_ready},
};
use kube::{Api, api::ListParams};

/// The container's cumulative CPU time in nanoseconds, from its own cgroup (v1 `cpuacct.usage`
/// or v2 `cpu.stat` `usage_usec`), found through its main process.
fn cgroup_cpu_nanos(container: &str) -> u64 {
    let pid = Command::new("docker")
        .args(["inspect", "-f", "{{.State.Pid}}", container])
        .output()
        .expect("docker inspect");
    let pid = String::from_utf8_lossy(&pid.stdout).trim().to_owned();
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("cgroup of pid");
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
        let (Some(controllers), Some(path)) = (controllers, path) else {
            continue;
        };
        if controllers.split(',').any(|c| c == "cpuacct") {
            for mount in ["/sys/fs/cgroup/cpuacct", "/sys/fs/cgroup/cpu,cpuacct"] {
                if let Ok(text) = std::fs::read_to_string(format!("{mount}{path}/cpuacct.usage")) {
                    return text.trim().parse().expect("cpuacct.usage");
                }
            }
        }
    }
    for line in cgroups.lines() {
        if let Some(path) = line.strip_prefix("0::")
            && let Ok(text) = std::fs::read_to_string(format!("/sys/fs/cgroup{path}/cpu.stat"))
        {
            let usec: u64 = text
                .lines()
                .find_map(|l| l.strip_prefix("usage_usec "))
                .and_then(|v| v.trim().parse().ok())
                .expect("usage_usec");
            return usec * 1000;
        }
    }
    panic!("no CPU accounting cgroup for {container}: {cgroups}");
}

/// `kubectl top pod NAME` CPU in millicores, once metrics exist.
fn top_millicores(kubectl: &Kubectl<'_>, pod: &str) -> Option<f64> {
    let output = kubectl
        .command(&["-n", "hpa", "top", "pod", pod, "--no-headers"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let cpu = text.split_whitespace().nth(1)?;
    cpu.strip_suffix('m')?.parse().ok()
}

async fn wait_replicas(
    deployments: &Api<Deployment>,
    agent: &PodAgent,
    timeout: Duration,
    ok: impl Fn(i32) -> bool,
    what: &str,
) {
    let deadline = Instant::now() + timeout;
    loop {
        let replicas = deployments
            .get("burn")
            .await
            .expect("GET burn")
            .spec
            .and_then(|s| s.replicas)
            .unwrap_or(0);
        if ok(replicas) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {timeout:?}: replicas {replicas}\nagent log:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_top_matches_the_cgroup_and_an_hpa_scales_up_and_down() {
    let plane = ControlPlane::start_with(&[
        "--controllers",
        "all,-nodeipam",
        "--horizontal-pod-autoscaler-sync-period",
        "5s",
    ]);
    let agent = PodAgent::start(&plane, &["--node-address", "127.0.0.1"]);
    let kubectl = Kubectl::new(33, &plane);
    kubectl.run(&["create", "namespace", "hpa"]);
    // Burns its CPU limit (200m, twice its request) while /tmp/on exists.
    let manifest = "apiVersion: apps/v1
kind: Deployment
metadata: {name: burn, namespace: hpa}
spec:
  replicas: 1
  selector: {matchLabels: {app: burn}}
  template:
    metadata: {labels: {app: burn}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: burn
        image: keelson/busybox:1
        command: [\"sh\", \"-c\", \"while true; do if [ -f /tmp/on ]; then i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; else sleep 1; fi; done\"]
        resources:
          requests: {cpu: 100m, memory: 16Mi}
          limits: {cpu: 200m, memory: 64Mi}
";
    apply(&kubectl, plane.data_dir(), "burn.yaml", manifest);
    let client = plane.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "hpa");
    let deployments: Api<Deployment> = Api::namespaced(client, "hpa");
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        let list = pods
            .list(&ListParams::default().labels("app=burn"))
            .await
            .expect("list");
        if let Some(pod) = list.items.into_iter().find(is_ready) {
            break pod.metadata.name.expect("a name");
        }
        assert!(
            Instant::now() < deadline,
            "burn never Ready\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    kubectl.run(&["-n", "hpa", "exec", &first, "--", "touch", "/tmp/on"]);

    // kubectl top against the cgroup: the same 10 s the agent's sampler spans.
    let id = Command::new("docker")
        .args([
            "ps",
            "-q",
            "--filter",
            "label=io.keelson.container=burn",
            "--filter",
        ])
        .arg(format!("label=io.keelson.pod.name={first}"))
        .output()
        .expect("docker ps");
    let id = String::from_utf8_lossy(&id.stdout).trim().to_owned();
    assert!(!id.is_empty(), "the burn container runs");
    // Two samples of the agent (10 s apart) must both see the load.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let kubectl_top = Kubectl::new(33, &plane);
    let deadline = Instant::now() + Duration::from_secs(60);
    let (top, cgroup) = loop {
        let before = cgroup_cpu_nanos(&id);
        let started = Instant::now();
        tokio::time::sleep(Duration::from_secs(10)).await;
        let cgroup =
            (cgroup_cpu_nanos(&id) - before) as f64 / started.elapsed().as_nanos() as f64 * 1000.0;
        let top = top_millicores(&kubectl_top, &first);
        if let Some(top) = top.filter(|t| (t - cgroup).abs() <= cgroup * 0.10) {
            break (top, cgroup);
        }
        assert!(
            Instant::now() < deadline,
            "kubectl top {top:?}m against the cgroup's {cgroup:.0}m\n{}",
            agent.log()
        );
    };
    assert!(
        cgroup > 100.0,
        "the load burns more than its request: {cgroup:.0}m (top {top}m)"
    );
    let nodes = kubectl.run(&["top", "nodes", "--no-headers"]);
    assert!(nodes.contains(&agent.node), "{nodes}");
    let containers = kubectl.run(&[
        "-n",
        "hpa",
        "top",
        "pod",
        &first,
        "--containers",
        "--no-headers",
    ]);
    assert!(containers.contains("burn"), "{containers}");

    // The autoscaler: 200% of the request against a 50% target asks for 4.
    kubectl.run(&[
        "-n",
        "hpa",
        "autoscale",
        "deployment",
        "burn",
        "--cpu-percent=50",
        "--min=1",
        "--max=4",
    ]);
    kubectl.run(&[
        "-n",
        "hpa",
        "patch",
        "hpa",
        "burn",
        "--type=merge",
        "-p",
        r#"{"spec":{"behavior":{"scaleDown":{"stabilizationWindowSeconds":0}}}}"#,
    ]);
    wait_replicas(
        &deployments,
        &agent,
        Duration::from_secs(120),
        |r| r >= 3,
        "scale up to 3",
    )
    .await;
    let described = kubectl.run(&["-n", "hpa", "describe", "hpa", "burn"]);
    assert!(described.contains("SuccessfulRescale"), "{described}");
    // The load stops: back to one replica.
    kubectl.run(&["-n", "hpa", "exec", &first, "--", "rm", "/tmp/on"]);
    wait_replicas(
        &deployments,
        &agent,
        Duration::from_secs(150),
        |r| r == 1,
        "scale down to 1",
    )
    .await;

    // kubectl 1.27 creates autoscaling/v1 autoscalers; they read back with their target.
    let old = Kubectl::new(27, &plane);
    old.run(&[
        "-n",
        "hpa",
        "autoscale",
        "deployment",
        "burn",
        "--name=old",
        "--cpu-percent=70",
        "--max=2",
    ]);
    let target = old.run(&[
        "-n",
        "hpa",
        "get",
        "hpa.v1.autoscaling",
        "old",
        "-o",
        "jsonpath={.spec.targetCPUUtilizationPercentage}",
    ]);
    assert_eq!(target, "70");
    kubectl.run(&["delete", "namespace", "hpa", "--timeout=60s"]);
    agent.assert_no_leaks();
}
