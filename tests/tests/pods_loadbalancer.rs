//! End to end, privileged: `type: LoadBalancer` Services get an address from the control
//! plane's `--service-lb-pool` and answer on it from the node (the all-in-one layout: the
//! client is a process in the cgroup the agent's socket-LB is attached to).
//!
//! The pool is two addresses, `10.252.N.0/30` (N held by this test); the test blackholes that
//! block in the root namespace for its whole run, so a connection the datapath did not
//! translate never leaves the machine. Checked, with kubectl 1.33:
//! - `web` (no class, `externalTrafficPolicy: Cluster`) gets the pool's first address as
//!   EXTERNAL-IP with `ipMode: VIP`, and `curl` to it from the node answers with the pod's
//!   hostname;
//! - `local` (`keelson.dev/lb`, `externalTrafficPolicy: Local`) gets the second, answers too,
//!   and has a `healthCheckNodePort` whose server answers `200` with `localEndpoints: 1`;
//! - `other` (`loadBalancerClass: other`) stays `<pending>` without any Event of ours;
//! - `third` finds the pool exhausted: `<pending>` and a Warning `AllocationFailed`;
//! - a control-plane restart keeps every address where it was and hands out none twice;
//! - deleting `web` frees its address, which `third` then gets (and answers on);
//! - scaling the Deployment to 0 turns the health check into `503` with `localEndpoints: 0`.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    process::Command,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Pod;
use keelson_tests::{
    claim_slot,
    cluster::{ControlPlane, Kubectl},
    pods::{PodAgent, apply},
    run,
};
use kube::Api;

const MANIFESTS: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: httpd
        image: keelson/httpd:1
        readinessProbe:
          httpGet: {path: /, port: 80}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  type: LoadBalancer
  selector: {app: web}
  ports:
  - name: http
    port: 8080
    targetPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: local
  namespace: default
spec:
  type: LoadBalancer
  loadBalancerClass: keelson.dev/lb
  externalTrafficPolicy: Local
  selector: {app: web}
  ports:
  - name: http
    port: 8081
    targetPort: 80
---
apiVersion: v1
kind: Service
metadata:
  name: other
  namespace: default
spec:
  type: LoadBalancer
  loadBalancerClass: other
  selector: {app: web}
  ports:
  - port: 8082
    targetPort: 80
";

const THIRD: &str = "apiVersion: v1
kind: Service
metadata:
  name: third
  namespace: default
spec:
  type: LoadBalancer
  selector: {app: web}
  ports:
  - name: http
    port: 8083
    targetPort: 80
";

/// `blackhole <block>` in the root namespace while the test runs: nothing sent to the pool
/// that socket-LB did not translate leaves the machine.
struct Blackhole(String);

impl Blackhole {
    fn new(block: &str) -> Self {
        run("ip", &["route", "replace", "blackhole", block]);
        Self(block.to_owned())
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["route", "del", "blackhole", &self.0])
            .output();
    }
}

/// `curl http://<ip>:<port>/` from a process in the agent's socket-LB cgroup (a node-local
/// client), bounded by 3 s: the body, or why it failed.
fn curl_from_node(agent: &PodAgent, ip: &str, port: u16) -> Result<String, String> {
    let output = Command::new("sh")
        .args([
            "-c",
            &format!(
                "echo $$ > {}/cgroup.procs && exec curl -sS --max-time 3 http://{ip}:{port}/",
                agent.cgroup().display()
            ),
        ])
        .output()
        .map_err(|e| format!("cannot run curl: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}

/// One HTTP GET of `/healthz` on `127.0.0.1:port`: the status code and the body.
fn health(port: u16) -> Result<(u16, String), String> {
    let timeout = Duration::from_secs(3);
    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream =
        TcpStream::connect_timeout(&target, timeout).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /healthz HTTP/1.0\r\nHost: node\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| format!("receive: {e}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not HTTP: {response:?}"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status: {head:?}"))?;
    Ok((code, body.to_owned()))
}

/// Polls `attempt` every 300 ms for up to `timeout` until it returns `Some`.
fn eventually<T>(
    what: &str,
    timeout: Duration,
    agent: &PodAgent,
    plane: &ControlPlane,
    mut attempt: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = attempt() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within {timeout:?}\nagent log:\n{}\ncontrol plane log (end):\n{}",
            agent.log(),
            plane
                .log()
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// `kubectl get service <name> -o jsonpath=...`.
fn jsonpath(kubectl: &Kubectl<'_>, name: &str, path: &str) -> String {
    kubectl
        .run(&["get", "service", name, "-o", &format!("jsonpath={path}")])
        .trim()
        .to_owned()
}

/// The EXTERNAL-IP column of `kubectl get service <name>`.
fn external_ip_column(kubectl: &Kubectl<'_>, name: &str) -> String {
    let table = kubectl.run(&["get", "service", name]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let row: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let column = header
        .iter()
        .position(|h| *h == "EXTERNAL-IP")
        .unwrap_or_else(|| panic!("an EXTERNAL-IP column:\n{table}"));
    row.get(column).copied().unwrap_or_default().to_owned()
}

/// The reasons of the Events about Service `name` of `type_`.
fn event_reasons(kubectl: &Kubectl<'_>, name: &str, type_: &str) -> Vec<String> {
    kubectl
        .run(&[
            "get",
            "events",
            "--field-selector",
            &format!("involvedObject.kind=Service,involvedObject.name={name},type={type_}"),
            "-o",
            "jsonpath={range .items[*]}{.reason}{\"\\n\"}{end}",
        ])
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_balancer_services_get_pool_addresses_that_answer_on_the_node() {
    let (n, _slot) = claim_slot(250, |n| format!("10.252.{n}.lock"))
        .unwrap_or_else(|| panic!("every /30 of the test LB pools is held by a running test"));
    let block = format!("10.252.{n}.0/30");
    let (first, second) = (format!("10.252.{n}.1"), format!("10.252.{n}.2"));
    let _blackhole = Blackhole::new(&block);
    let mut plane = ControlPlane::start_with(&[
        "--controllers",
        "all,-nodeipam",
        "--leader-elect=false",
        "--service-lb-pool",
        &block,
    ]);
    let agent = PodAgent::start(&plane, &[]);
    let kubectl = Kubectl::new(33, &plane);
    let pods: Api<Pod> = Api::namespaced(plane.client().await, "default");
    apply(&kubectl, plane.data_dir(), "lb.yaml", MANIFESTS);

    // Addresses in creation order; ipMode VIP; the EXTERNAL-IP column.
    let web_ip = eventually(
        "web gets an address",
        Duration::from_secs(30),
        &agent,
        &plane,
        || {
            Some(jsonpath(
                &kubectl,
                "web",
                "{.status.loadBalancer.ingress[0].ip}",
            ))
            .filter(|s| !s.is_empty())
        },
    );
    let local_ip = eventually(
        "local gets an address",
        Duration::from_secs(30),
        &agent,
        &plane,
        || {
            Some(jsonpath(
                &kubectl,
                "local",
                "{.status.loadBalancer.ingress[0].ip}",
            ))
            .filter(|s| !s.is_empty())
        },
    );
    let mut got = [web_ip.clone(), local_ip.clone()];
    got.sort();
    assert_eq!(
        got,
        [first.clone(), second.clone()],
        "both from the pool, one each"
    );
    assert_eq!(
        jsonpath(&kubectl, "web", "{.status.loadBalancer.ingress[0].ipMode}"),
        "VIP"
    );
    assert_eq!(
        external_ip_column(&kubectl, "web"),
        web_ip,
        "kubectl shows EXTERNAL-IP"
    );

    // Both answer from the node once the pod is ready (eTP Cluster and Local).
    let pod_name = eventually("a web pod", Duration::from_secs(90), &agent, &plane, || {
        let name = kubectl.run(&[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ]);
        Some(name.trim().to_owned()).filter(|n| !n.is_empty())
    });
    for (service, ip, port) in [("web", &web_ip, 8080), ("local", &local_ip, 8081)] {
        let body = eventually(
            &format!("curl {service} at {ip}:{port} from the node answers"),
            Duration::from_secs(90),
            &agent,
            &plane,
            || curl_from_node(&agent, ip, port).ok(),
        );
        assert_eq!(body, pod_name, "{service}: the pod's hostname");
    }

    // eTP Local: a health-check NodePort, served by the agent with the local count.
    let hc: u16 = jsonpath(&kubectl, "local", "{.spec.healthCheckNodePort}")
        .parse()
        .expect("local has a healthCheckNodePort");
    assert!((30000..=32767).contains(&hc), "{hc}");
    assert_eq!(
        jsonpath(&kubectl, "web", "{.spec.healthCheckNodePort}"),
        "",
        "Cluster has none"
    );
    let (code, body) = eventually(
        "the health check answers 200",
        Duration::from_secs(30),
        &agent,
        &plane,
        || health(hc).ok().filter(|(code, _)| *code == 200),
    );
    assert_eq!(code, 200);
    let parsed: serde_json::Value = serde_json::from_str(&body).expect("a JSON body");
    assert_eq!(
        parsed,
        serde_json::json!({"service": {"namespace": "default", "name": "local"},
                           "localEndpoints": 1, "serviceProxyHealthy": true}),
        "{body}"
    );

    // Pool exhausted: third stays pending with a Warning.
    apply(&kubectl, plane.data_dir(), "third.yaml", THIRD);
    eventually(
        "AllocationFailed on third",
        Duration::from_secs(30),
        &agent,
        &plane,
        || {
            event_reasons(&kubectl, "third", "Warning")
                .contains(&"AllocationFailed".to_owned())
                .then_some(())
        },
    );
    assert_eq!(external_ip_column(&kubectl, "third"), "<pending>");

    // A restarted control plane starts from the stored statuses: nothing moves, third waits.
    drop(kubectl);
    plane.restart();
    let kubectl = Kubectl::new(33, &plane);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        jsonpath(&kubectl, "web", "{.status.loadBalancer.ingress[0].ip}"),
        web_ip
    );
    assert_eq!(
        jsonpath(&kubectl, "local", "{.status.loadBalancer.ingress[0].ip}"),
        local_ip
    );
    assert_eq!(
        external_ip_column(&kubectl, "third"),
        "<pending>",
        "after the restart"
    );

    // Another class: never touched by keelson.
    assert_eq!(external_ip_column(&kubectl, "other"), "<pending>");
    assert!(
        event_reasons(&kubectl, "other", "Warning").is_empty()
            && event_reasons(&kubectl, "other", "Normal").is_empty(),
        "no Event about another class's Service"
    );

    // Deleting web frees its address for third, which answers on it.
    kubectl.run(&["delete", "service", "web", "--timeout=30s"]);
    let third_ip = eventually(
        "third gets the freed address",
        Duration::from_secs(30),
        &agent,
        &plane,
        || {
            Some(jsonpath(
                &kubectl,
                "third",
                "{.status.loadBalancer.ingress[0].ip}",
            ))
            .filter(|s| !s.is_empty())
        },
    );
    assert_eq!(third_ip, web_ip, "the address web held");
    let body = eventually(
        "third answers from the node",
        Duration::from_secs(30),
        &agent,
        &plane,
        || curl_from_node(&agent, &third_ip, 8083).ok(),
    );
    assert_eq!(body, pod_name);
    assert!(
        curl_from_node(&agent, &third_ip, 8080).is_err(),
        "web's port is gone from the address"
    );

    // No local endpoint: 503 with localEndpoints 0.
    kubectl.run(&["scale", "deployment", "web", "--replicas=0"]);
    let (_, body) = eventually(
        "the health check turns 503",
        Duration::from_secs(60),
        &agent,
        &plane,
        || health(hc).ok().filter(|(code, _)| *code == 503),
    );
    let parsed: serde_json::Value = serde_json::from_str(&body).expect("a JSON body");
    assert_eq!(parsed["localEndpoints"], 0, "{body}");
    assert_eq!(parsed["serviceProxyHealthy"], true, "{body}");

    kubectl.run(&[
        "delete",
        "deployment/web",
        "service/local",
        "service/other",
        "service/third",
        "--timeout=60s",
    ]);
    // The health-check port closes with its Service.
    eventually(
        "the health check port closes",
        Duration::from_secs(30),
        &agent,
        &plane,
        || health(hc).is_err().then_some(()),
    );
    agent.assert_pods_gone_cleanly(&pods).await;
}
