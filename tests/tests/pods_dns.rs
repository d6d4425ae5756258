//! End to end, privileged: the node agent serves cluster DNS on its pod CIDR's gateway address
//! and points its pods' `/etc/resolv.conf` there. A client pod resolves a ClusterIP Service to
//! its cluster IP, a headless Service's short name (through the search path) to its pods, and
//! fetches a page by that name; `dnsPolicy: None` gives a pod exactly its `dnsConfig`.

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{Pod, Service};
use keelson_tests::{
    cluster::{ControlPlane, Kubectl},
    pods::{PodAgent, apply, container_id, exec, is_ready, pod_ip, uid, wait_pod},
};
use kube::Api;

fn manifests(node: &str) -> String {
    let web = |name: &str| {
        format!(
            "---
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: default
  labels: {{app: web}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: httpd
    image: keelson/httpd:1
    readinessProbe:
      httpGet: {{path: /, port: 80}}
      periodSeconds: 1
"
        )
    };
    format!(
        "apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  clusterIP: None
  selector: {{app: web}}
  ports:
  - {{name: http, port: 80}}
---
apiVersion: v1
kind: Service
metadata:
  name: web-vip
  namespace: default
spec:
  selector: {{app: web}}
  ports:
  - {{name: http, port: 80}}
{}{}---
apiVersion: v1
kind: Pod
metadata:
  name: client
  namespace: default
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  volumes:
  - name: seen
    emptyDir: {{}}
  initContainers:
  - name: copy
    image: keelson/busybox:1
    command: [\"sh\", \"-c\", \"cat /etc/resolv.conf > /seen/init\"]
    volumeMounts:
    - {{name: seen, mountPath: /seen}}
  containers:
  - name: app
    image: keelson/busybox:1
    command: [\"sleep\", \"3600\"]
    volumeMounts:
    - {{name: seen, mountPath: /seen}}
---
apiVersion: v1
kind: Pod
metadata:
  name: custom
  namespace: default
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  dnsPolicy: None
  dnsConfig:
    nameservers: [192.0.2.10]
    searches: [one.example, two.example]
    options:
    - {{name: ndots, value: \"2\"}}
    - {{name: edns0}}
  containers:
  - name: app
    image: keelson/busybox:1
    command: [\"sleep\", \"3600\"]
",
        web("web-0"),
        web("web-1"),
    )
}

/// Runs `script` in `container` until its output satisfies `ok` (at most 30 s); returns it.
fn exec_until(
    container: &str,
    script: &str,
    agent: &PodAgent,
    ok: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, out) = exec(container, script);
        if ok(&out) {
            return out;
        }
        assert!(
            Instant::now() < deadline,
            "`{script}` in the client pod never gave the expected answer; last output:\n{out}\n\
             agent log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The IPv4 addresses in an `nslookup` answer, after its `Name:` line (not the server's).
fn answered(out: &str) -> BTreeSet<Ipv4Addr> {
    out.lines()
        .skip_while(|l| !l.trim_start().starts_with("Name:"))
        .filter_map(|l| l.trim().strip_prefix("Address:"))
        .filter_map(|a| a.split_whitespace().next()?.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_resolve_services_through_the_node_agents_cluster_dns() {
    let plane = ControlPlane::start_with(&["--controllers", "all,-nodeipam"]);
    let agent = PodAgent::start(&plane, &[]);
    let kubectl = Kubectl::new(33, &plane);
    let client = plane.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let services: Api<Service> = Api::namespaced(client, "default");
    apply(
        &kubectl,
        plane.data_dir(),
        "dns.yaml",
        &manifests(&agent.node),
    );

    let base: Ipv4Addr = agent
        .cidr
        .split('/')
        .next()
        .and_then(|b| b.parse().ok())
        .expect("the agent's pod CIDR");
    let gateway = Ipv4Addr::from(u32::from(base) + 1);
    let timeout = Duration::from_secs(60);
    let mut web_ips = BTreeSet::new();
    for name in ["web-0", "web-1"] {
        let pod = wait_pod(&pods, name, timeout, &agent, "web is Ready", is_ready).await;
        web_ips.insert(pod_ip(&pod));
    }
    let client_pod = wait_pod(
        &pods,
        "client",
        timeout,
        &agent,
        "client is Ready",
        is_ready,
    )
    .await;
    let custom = wait_pod(
        &pods,
        "custom",
        timeout,
        &agent,
        "custom is Ready",
        is_ready,
    )
    .await;
    let log = agent.log();
    assert!(
        log.lines()
            .any(|l| l.contains("serving cluster DNS") && l.contains(&format!("{gateway}:53"))),
        "the agent does not say that it serves DNS on {gateway}:53:\n{log}"
    );

    // Every container of the client pod, sandbox and init container included, sees the same
    // resolv.conf: the agent's DNS, the namespace's search path, ndots:5.
    let expected = format!(
        "search default.svc.cluster.local svc.cluster.local cluster.local\n\
         nameserver {gateway}\noptions ndots:5\n"
    );
    let client_uid = uid(&client_pod);
    let app = container_id(&client_uid, "app");
    let sandbox = container_id(&client_uid, "POD");
    for (what, script, container) in [
        ("app", "cat /etc/resolv.conf", &app),
        ("init", "cat /seen/init", &app),
        ("sandbox", "cat /etc/resolv.conf", &sandbox),
    ] {
        let (ok, out) = exec(container, script);
        assert!(ok, "{what}: {out}");
        assert_eq!(out, expected, "the {what} container's resolv.conf");
    }
    let (ok, out) = exec(&app, "touch /etc/resolv.conf");
    assert!(!ok, "resolv.conf is writable in the pod: {out}");

    // The ClusterIP Service's full name resolves to its cluster IP.
    let vip: Ipv4Addr = services
        .get("web-vip")
        .await
        .expect("GET web-vip")
        .spec
        .and_then(|s| s.cluster_ip)
        .and_then(|ip| ip.parse().ok())
        .expect("web-vip has a cluster IP");
    let out = exec_until(
        &app,
        "timeout 10 nslookup -type=a web-vip.default.svc.cluster.local",
        &agent,
        |out| answered(out).contains(&vip),
    );
    assert_eq!(answered(&out), BTreeSet::from([vip]), "{out}");
    assert!(
        out.contains(&gateway.to_string()),
        "not asked from {gateway}: {out}"
    );

    // The headless Service's short name resolves through the search path to both pods.
    let out = exec_until(&app, "timeout 10 nslookup -type=a web", &agent, |out| {
        answered(out) == web_ips
    });
    assert!(out.contains("web.default.svc.cluster.local"), "{out}");

    // A name the cluster does not have is answered (NXDOMAIN), not left to time out.
    let started = Instant::now();
    let (ok, out) = exec(
        &app,
        "timeout 10 nslookup -type=a nothing.default.svc.cluster.local",
    );
    assert!(!ok && answered(&out).is_empty(), "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}: {out}",
        started.elapsed()
    );

    // wget resolves `web.default` with the libc resolver (search path, ndots) and reaches one
    // of the pods directly: busybox httpd serves the pod's hostname.
    let (ok, out) = exec(&app, "timeout 10 wget -q -O - http://web.default:80/");
    assert!(ok, "{out}\nagent log:\n{}", agent.log());
    assert!(
        ["web-0", "web-1"].contains(&out.trim()),
        "wget http://web.default/ answered {out:?}"
    );

    // dnsPolicy None: exactly the pod's dnsConfig.
    let custom_app = container_id(&uid(&custom), "app");
    let (ok, out) = exec(&custom_app, "cat /etc/resolv.conf");
    assert!(ok, "{out}");
    assert_eq!(
        out,
        "search one.example two.example\nnameserver 192.0.2.10\noptions ndots:2 edns0\n"
    );

    kubectl.run(&[
        "delete",
        "pod",
        "web-0",
        "web-1",
        "client",
        "custom",
        "--timeout=30s",
    ]);
    kubectl.run(&["delete", "service", "web", "web-vip"]);
    agent.assert_no_leaks();
}
