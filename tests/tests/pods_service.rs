//! End to end, privileged: a pod reaches a ClusterIP Service through the per-packet load
//! balancer the node agent attaches to every pod's veth (`tc_from_pod`). The test's pods run on
//! Docker outside the agent's socket-LB cgroup, so only the TC path translates their traffic:
//! requests to the ClusterIP reach every backend and the replies come back from it; a scaled-down
//! backend stops getting requests once its EndpointSlice changes; a Service without endpoints
//! refuses at once; a backend calling its own Service reaches itself too (hairpin); an address of the Service CIDR that no Service holds is unreachable (never
//! routed out of the machine); an agent restart attaches the program to running pods it adopts.

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet},
    core::v1::Pod,
};
use keelson_tests::{
    cluster::{ControlPlane, Kubectl},
    lbkit::node_agent,
    pods::{PodAgent, apply, container_id, exec, is_ready, pod_ip, uid, wait_pod},
};
use kube::{Api, api::ListParams};

const PORT: u16 = 8080;
const REQUESTS: usize = 30;

fn manifests(node: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: 3
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: httpd
        image: keelson/httpd:1
        readinessProbe:
          httpGet: {{path: /, port: 80}}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  selector: {{app: web}}
  ports:
  - name: http
    port: {PORT}
    targetPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: empty
  namespace: default
spec:
  selector: {{app: nobody}}
  ports:
  - name: http
    port: {PORT}
    targetPort: 80
---
apiVersion: v1
kind: Pod
metadata:
  name: client
  namespace: default
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: keelson/busybox:1
    command: [\"sleep\", \"3600\"]
"
    )
}

/// `wget` of `url`, ended after `seconds` (busybox 1.35's own `wget -T` crashes).
fn wget(url: &str, seconds: u32) -> String {
    format!("timeout {seconds} wget -q -O - {url}")
}

/// `n` sequential `wget`s of `url` inside `container`, each bounded by 2 s: one
/// `(succeeded, body or error)` per request.
fn requests(container: &str, url: &str, n: usize) -> Vec<(bool, String)> {
    let script = format!(
        "for i in $(seq {n}); do \
           if out=$({} 2>/tmp/wget.err); then echo \"ok $out\"; \
           else echo \"fail $? $(tr '\\n' ' ' </tmp/wget.err)\"; fi; \
         done",
        wget(url, 2)
    );
    let (_, out) = exec(container, &script);
    out.lines()
        .filter_map(|l| {
            l.strip_prefix("ok ")
                .map(|b| (true, b.to_owned()))
                .or_else(|| l.strip_prefix("fail ").map(|e| (false, e.to_owned())))
        })
        .collect()
}

/// The pods of the `web` Deployment that are Ready (and not being deleted): (name, IP).
async fn ready_backends(pods: &Api<Pod>) -> BTreeSet<(String, String)> {
    pods.list(&ListParams::default().labels("app=web"))
        .await
        .expect("list web pods")
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
        .map(|p| {
            (
                p.metadata.name.clone().unwrap_or_default(),
                pod_ip(p).to_string(),
            )
        })
        .collect()
}

/// The Deployments and ReplicaSets in `default` with their replica counts, for a failure.
async fn workloads(pods: &Api<Pod>) -> String {
    let client = pods.clone().into_client();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let sets: Api<ReplicaSet> = Api::namespaced(client, "default");
    let mut text = String::new();
    match deployments.list(&ListParams::default()).await {
        Ok(list) => {
            for d in list.items {
                let status = d.status.unwrap_or_default();
                text.push_str(&format!(
                    "Deployment {}: generation {:?} observed {:?}, replicas {:?} ready {:?}\n",
                    d.metadata.name.unwrap_or_default(),
                    d.metadata.generation,
                    status.observed_generation,
                    status.replicas,
                    status.ready_replicas
                ));
            }
        }
        Err(error) => text.push_str(&format!("cannot list Deployments: {error}\n")),
    }
    match sets.list(&ListParams::default()).await {
        Ok(list) if list.items.is_empty() => text.push_str("no ReplicaSet\n"),
        Ok(list) => {
            for rs in list.items {
                let status = rs.status.unwrap_or_default();
                text.push_str(&format!(
                    "ReplicaSet {}: spec {:?}, replicas {} ready {:?}\n",
                    rs.metadata.name.unwrap_or_default(),
                    rs.spec.and_then(|s| s.replicas),
                    status.replicas,
                    status.ready_replicas
                ));
            }
        }
        Err(error) => text.push_str(&format!("cannot list ReplicaSets: {error}\n")),
    }
    text
}

/// Waits until exactly `n` web pods are Ready and no other web pod exists; returns them.
async fn wait_backends(pods: &Api<Pod>, n: usize, agent: &PodAgent) -> BTreeSet<(String, String)> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let ready = ready_backends(pods).await;
        let all = pods
            .list(&ListParams::default().labels("app=web"))
            .await
            .expect("list web pods")
            .items
            .len();
        if ready.len() == n && all == n {
            return ready;
        }
        if Instant::now() >= deadline {
            panic!(
                "{n} web pods Ready within 90 s; ready {ready:?} of {all}\n{}\nagent log:\n{}",
                workloads(pods).await,
                agent.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until the agent's datapath holds `vip:PORT` with exactly `backends` (port 80) as its
/// active backends; returns the `lb list` line.
fn wait_frontend(agent: &PodAgent, vip: &str, backends: &BTreeSet<String>) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let prefix = format!("{vip}:{PORT}/TCP -> ");
    loop {
        let list = node_agent(&[
            "lb",
            "list",
            "--pin-dir",
            &agent.pin_dir().to_string_lossy(),
        ]);
        let line = list.lines().find(|l| l.starts_with(&prefix));
        let listed: Option<BTreeSet<String>> = line.map(|l| {
            l[prefix.len()..]
                .split(", ")
                .filter(|b| !b.contains("terminating"))
                .map(|b| b.trim_end_matches(":80").to_owned())
                .collect()
        });
        if listed.as_ref() == Some(backends) {
            return line.unwrap_or_default().to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "the datapath holds {vip}:{PORT} -> {backends:?} within 20 s; lb list:\n{list}\n\
             agent log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn cluster_ip(kubectl: &Kubectl<'_>, service: &str) -> String {
    let ip = kubectl.run(&[
        "get",
        "service",
        service,
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    assert!(
        ip.parse::<std::net::Ipv4Addr>().is_ok(),
        "Service {service} has ClusterIP {ip:?}"
    );
    ip
}

/// The datapath counter `path` (`lb metrics`).
fn counter(agent: &PodAgent, path: &str) -> u64 {
    let text = node_agent(&[
        "lb",
        "metrics",
        "--pin-dir",
        &agent.pin_dir().to_string_lossy(),
    ]);
    let prefix = format!("keelson_datapath_events_total{{path=\"{path}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no counter {path} in:\n{text}"))
}

/// Asserts every request succeeded and answered with one of `names`; returns the distinct
/// answers.
fn assert_served(
    results: &[(bool, String)],
    names: &BTreeSet<String>,
    agent: &PodAgent,
) -> BTreeSet<String> {
    assert_eq!(
        results.len(),
        REQUESTS,
        "one result per request: {results:?}"
    );
    let failed: Vec<&(bool, String)> = results.iter().filter(|(ok, _)| !ok).collect();
    assert!(
        failed.is_empty(),
        "every request through the ClusterIP succeeds; failed: {failed:?}\nagent log:\n{}",
        agent.log()
    );
    let answered: BTreeSet<String> = results.iter().map(|(_, body)| body.clone()).collect();
    assert!(
        answered.is_subset(names),
        "only current backends answer: {answered:?} (backends {names:?})"
    );
    answered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_reach_cluster_ips_through_tc_on_their_veths() {
    let plane = ControlPlane::start_with(&["--controllers", "all,-nodeipam"]);
    let mut agent = PodAgent::start(&plane, &[]);
    let kubectl = Kubectl::new(33, &plane);
    let pods: Api<Pod> = Api::namespaced(plane.client().await, "default");
    apply(
        &kubectl,
        plane.data_dir(),
        "service.yaml",
        &manifests(&agent.node),
    );

    let timeout = Duration::from_secs(90);
    let client_pod = wait_pod(
        &pods,
        "client",
        timeout,
        &agent,
        "client is Ready",
        is_ready,
    )
    .await;
    let client_uid = uid(&client_pod);
    let client = container_id(&client_uid, "app");
    let backends = wait_backends(&pods, 3, &agent).await;
    let names: BTreeSet<String> = backends.iter().map(|(n, _)| n.clone()).collect();
    let ips: BTreeSet<String> = backends.iter().map(|(_, ip)| ip.clone()).collect();
    let vip = cluster_ip(&kubectl, "web");
    wait_frontend(&agent, &vip, &ips);

    // Every pod's veth carries the program; the client is outside socket-LB's cgroup, so the
    // TC path translates its connections and the replies' reverse NAT on the backends' veths
    // makes them come from the ClusterIP (else wget would never see an answer).
    assert_eq!(
        agent.pod_tc_links().len(),
        4,
        "one pinned TC link per pod veth: {:?}",
        agent.pod_tc_links()
    );
    let rev_nat_before = counter(&agent, "tc_rev_nat");
    let url = format!("http://{vip}:{PORT}/");
    let results = requests(&client, &url, REQUESTS);
    let answered = assert_served(&results, &names, &agent);
    assert!(
        answered.len() >= 2,
        "{REQUESTS} requests reach several backends: {answered:?}"
    );
    assert!(
        counter(&agent, "tc_rev_nat") > rev_nat_before,
        "replies were reverse-NATed on the TC path"
    );
    assert_eq!(counter(&agent, "sock_translated"), 0, "no socket-LB here");

    // Hairpin: a backend calling its own Service, sometimes picked as its own backend, gets
    // every answer (itself among them) from the ClusterIP.
    let (own, _) = backends.iter().next().expect("a backend");
    let own_pod = pods.get(own).await.expect("GET the backend pod");
    let own_container = container_id(&uid(&own_pod), "httpd");
    let results = requests(&own_container, &url, REQUESTS);
    let answered = assert_served(&results, &names, &agent);
    assert!(
        answered.contains(own),
        "{own} reaches itself through its Service: {answered:?}"
    );

    // One backend fewer: once the EndpointSlice drops it, every request still succeeds and
    // only the remaining backends answer; its veth's link is gone with it.
    kubectl.run(&["scale", "deployment", "web", "--replicas=2"]);
    let backends = wait_backends(&pods, 2, &agent).await;
    let names: BTreeSet<String> = backends.iter().map(|(n, _)| n.clone()).collect();
    let ips: BTreeSet<String> = backends.iter().map(|(_, ip)| ip.clone()).collect();
    wait_frontend(&agent, &vip, &ips);
    let results = requests(&client, &url, REQUESTS);
    let answered = assert_served(&results, &names, &agent);
    assert_eq!(answered, names, "both remaining backends answer");
    let deadline = Instant::now() + Duration::from_secs(20);
    while agent.pod_tc_links().len() != 3 {
        assert!(
            Instant::now() < deadline,
            "the removed backend's TC link is unpinned: {:?}\nagent log:\n{}",
            agent.pod_tc_links(),
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // A Service without endpoints refuses at once (the program answers port unreachable).
    let empty = cluster_ip(&kubectl, "empty");
    let line = node_agent(&[
        "lb",
        "list",
        "--pin-dir",
        &agent.pin_dir().to_string_lossy(),
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut list = line;
    while !list.contains(&format!("{empty}:{PORT}/TCP -> (no backends: refused)")) {
        assert!(
            Instant::now() < deadline,
            "the datapath holds {empty}:{PORT} without backends:\n{list}"
        );
        std::thread::sleep(Duration::from_millis(200));
        list = node_agent(&[
            "lb",
            "list",
            "--pin-dir",
            &agent.pin_dir().to_string_lossy(),
        ]);
    }
    let started = Instant::now();
    let (ok, out) = exec(&client, &wget(&format!("http://{empty}:{PORT}/"), 5));
    let took = started.elapsed();
    assert!(!ok, "a Service without endpoints answers nothing: {out}");
    assert!(
        took < Duration::from_secs(3) && out.to_lowercase().contains("refused"),
        "refused at once, not after the 5 s timeout: {took:?} {out}"
    );

    // A Service CIDR address no Service holds is unreachable on the node, not routed out of
    // the machine.
    let routes = std::process::Command::new("ip")
        .args([
            "-4",
            "route",
            "show",
            "exact",
            keelson_tests::pods::SERVICE_CIDR,
        ])
        .output()
        .expect("ip route");
    let routes = String::from_utf8_lossy(&routes.stdout).into_owned();
    assert!(
        routes.starts_with("unreachable "),
        "the agent made the Service CIDR unreachable: {routes:?}"
    );
    let stray = "10.111.255.250";
    let started = Instant::now();
    let (ok, out) = exec(&client, &wget(&format!("http://{stray}:{PORT}/"), 5));
    let took = started.elapsed();
    let lower = out.to_lowercase();
    assert!(
        !ok && took < Duration::from_secs(3)
            && (lower.contains("unreachable") || lower.contains("no route")),
        "an untranslated service address fails at once: {took:?} {out}"
    );

    // A pod whose veth has no program (as one started by an agent without it): its service
    // traffic goes untranslated and is refused by that route. The next agent start adopts the
    // pod and attaches the program again.
    let client_veth = keelson_node_agent::network::host_veth_name(&client_uid);
    let pin = agent
        .pin_dir()
        .join("links")
        .join(format!("tc_from_pod@{client_veth}"));
    std::fs::remove_file(&pin).expect("unpin the client's TC link");
    let results = requests(&client, &url, 1);
    assert!(
        results.len() == 1 && !results[0].0,
        "without the program the ClusterIP is not reached: {results:?}"
    );
    agent.restart();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let results = requests(&client, &url, 1);
        if results.first().is_some_and(|(ok, _)| *ok) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted agent attaches the program to the adopted client: {results:?}\n\
             agent log:\n{}",
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(pin.exists(), "the adopted client's link is pinned again");
    let results = requests(&client, &url, REQUESTS);
    assert_eq!(
        assert_served(&results, &names, &agent),
        names,
        "after the restart both backends answer"
    );

    kubectl.run(&[
        "delete",
        "deployment/web",
        "service/web",
        "service/empty",
        "pod/client",
        "--timeout=60s",
    ]);
    agent.assert_pods_gone_cleanly(&pods).await;
}
