//! End to end, privileged: pods applied with kubectl run on Docker through the node agent, each
//! in its own network namespace with an address from the node's pod CIDR; containers share
//! volumes and localhost, pods reach each other and the node reaches them; an agent restart
//! leaves them untouched; `kubectl delete` stops them and frees everything.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpStream},
    time::Duration,
};

use k8s_openapi::api::core::v1::Pod;
use keelson_tests::{
    cluster::{ControlPlane, Kubectl},
    pods::{PodAgent, apply, container_id, exec, is_ready, pod_containers, pod_ip, uid, wait_pod},
};
use kube::Api;

fn manifests(node: &str) -> String {
    format!(
        "apiVersion: v1
kind: ConfigMap
metadata:
  name: site
  namespace: default
data:
  greeting: hello from a configmap
---
apiVersion: v1
kind: Secret
metadata:
  name: token
  namespace: default
stringData:
  value: s3cret
---
apiVersion: v1
kind: Service
metadata:
  name: greeter
  namespace: default
spec:
  clusterIP: 10.96.0.88
  ports:
  - name: http
    port: 80
    targetPort: 8080
---
apiVersion: v1
kind: Pod
metadata:
  name: duo
  namespace: default
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 5
  volumes:
  - name: shared
    emptyDir: {{}}
  - name: site
    configMap:
      name: site
  containers:
  - name: web
    image: keelson/busybox:1
    command: [\"sh\", \"-c\"]
    args: [\"echo $(GREETING) > /shared/from-web; exec httpd -f -p 8080 -h /site\"]
    env:
    - name: GREETING
      valueFrom:
        configMapKeyRef: {{name: site, key: greeting}}
    volumeMounts:
    - {{name: shared, mountPath: /shared}}
    - {{name: site, mountPath: /site}}
  - name: sidecar
    image: keelson/busybox:1
    command: [\"sleep\", \"3600\"]
    workingDir: /shared
    env:
    - name: TOKEN
      valueFrom:
        secretKeyRef: {{name: token, key: value}}
    - name: POD_NAME
      valueFrom:
        fieldRef: {{fieldPath: metadata.name}}
    resources:
      limits: {{cpu: 200m, memory: 64Mi}}
    volumeMounts:
    - {{name: shared, mountPath: /shared}}
---
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: default
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 5
  containers:
  - name: httpd
    image: keelson/httpd:1
    readinessProbe:
      httpGet: {{path: /, port: 80}}
      periodSeconds: 1
---
apiVersion: v1
kind: Pod
metadata:
  name: hostnet
  namespace: default
spec:
  nodeName: {node}
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: keelson/busybox:1
    command: [\"sleep\", \"3600\"]
"
    )
}

/// GET http://addr/path from the node; the body.
fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream =
        TcpStream::connect_timeout(&addr, Duration::from_secs(3)).expect("connect to the pod");
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: pod\r\n\r\n").expect("request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or(response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_share_volumes_reach_each_other_survive_restarts_and_delete_cleanly() {
    // Without node IPAM the agent uses this test's own --pod-cidr (10.250.N.0/24), so tests
    // running at once never share pod addresses or routes.
    let plane = ControlPlane::start_with(&["--controllers", "all,-nodeipam"]);
    let mut agent = PodAgent::start(&plane, &[]);
    let kubectl = Kubectl::new(33, &plane);
    let pods: Api<Pod> = Api::namespaced(plane.client().await, "default");
    apply(
        &kubectl,
        plane.data_dir(),
        "pods.yaml",
        &manifests(&agent.node),
    );

    let timeout = Duration::from_secs(60);
    let duo = wait_pod(&pods, "duo", timeout, &agent, "duo is Ready", is_ready).await;
    let web = wait_pod(&pods, "web", timeout, &agent, "web is Ready", is_ready).await;
    let (duo_ip, web_ip) = (pod_ip(&duo), pod_ip(&web));
    let cidr: Vec<&str> = agent.cidr.split('/').collect();
    let base: Ipv4Addr = cidr[0].parse().expect("cidr base");
    for ip in [duo_ip, web_ip] {
        assert_eq!(
            ip.octets()[..3],
            base.octets()[..3],
            "{ip} is not in {}",
            agent.cidr
        );
    }
    assert_ne!(duo_ip, web_ip);
    let status = duo.status.clone().expect("status");
    assert!(status.host_ip.is_some(), "{status:?}");
    let conditions: Vec<(String, String)> = status
        .conditions
        .iter()
        .flatten()
        .map(|c| (c.type_.clone(), c.status.clone()))
        .collect();
    for kind in ["PodScheduled", "Initialized", "ContainersReady", "Ready"] {
        assert!(
            conditions.contains(&(kind.to_owned(), "True".to_owned())),
            "{kind} True: {conditions:?}"
        );
    }
    let statuses = status
        .container_statuses
        .clone()
        .expect("container statuses");
    assert_eq!(statuses.len(), 2);
    for cs in &statuses {
        assert!(cs.ready, "{cs:?}");
        assert!(
            cs.container_id
                .as_deref()
                .is_some_and(|id| id.starts_with("docker://")),
            "{cs:?}"
        );
        assert!(cs.state.as_ref().and_then(|s| s.running.as_ref()).is_some());
    }

    // A hostNetwork pod shares the node's network: its address is the node's, no veth.
    let hostnet = wait_pod(
        &pods,
        "hostnet",
        timeout,
        &agent,
        "hostnet is Ready",
        is_ready,
    )
    .await;
    let host_status = hostnet.status.clone().expect("status");
    assert_eq!(host_status.pod_ip, host_status.host_ip, "{host_status:?}");
    assert!(
        !agent
            .allocations()
            .values()
            .any(|uid| uid == &keelson_tests::pods::uid(&hostnet))
    );

    // Both containers see the emptyDir; the web container got the ConfigMap value as env.
    let duo_uid = uid(&duo);
    let sidecar = container_id(&duo_uid, "sidecar");
    let (ok, out) = exec(&sidecar, "pwd; cat from-web");
    assert!(ok, "{out}");
    assert_eq!(out, "/shared\nhello from a configmap\n");
    // Secret and downward API env, service variables for the Service that existed at start.
    let (ok, out) = exec(
        &sidecar,
        "echo $TOKEN $POD_NAME $GREETER_SERVICE_HOST $GREETER_SERVICE_PORT $GREETER_SERVICE_PORT_HTTP",
    );
    assert!(ok, "{out}");
    assert_eq!(out, "s3cret duo 10.96.0.88 80 80\n");
    // Resources became Docker limits.
    let limits = keelson_tests::pods::docker(&[
        "inspect",
        "--format",
        "{{.HostConfig.Memory}} {{.HostConfig.NanoCpus}}",
        &sidecar,
    ]);
    assert_eq!(limits.trim(), "67108864 200000000");
    // The sidecar reaches the web container over localhost; the ConfigMap volume is served.
    let (ok, out) = exec(&sidecar, "wget -q -O - http://127.0.0.1:8080/greeting");
    assert!(ok, "{out}\nagent log:\n{}", agent.log());
    assert_eq!(out, "hello from a configmap");
    // ... and the other pod over its pod IP: httpd serves that pod's hostname.
    let (ok, out) = exec(&sidecar, &format!("wget -q -O - http://{web_ip}/"));
    assert!(ok, "{out}");
    assert_eq!(out.trim(), "web");
    // The node reaches the pods too.
    assert_eq!(http_get(SocketAddr::from((web_ip, 80)), "/").trim(), "web");
    assert_eq!(
        http_get(SocketAddr::from((duo_ip, 8080)), "/greeting"),
        "hello from a configmap"
    );

    // An agent restart adopts the running pods: same containers, same addresses.
    let before = (pod_containers(&duo_uid), pod_containers(&uid(&web)));
    let rv = pods
        .get("duo")
        .await
        .expect("GET duo")
        .metadata
        .resource_version;
    let web_rv = pods
        .get("web")
        .await
        .expect("GET web")
        .metadata
        .resource_version;
    agent.restart();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = (pod_containers(&duo_uid), pod_containers(&uid(&web)));
    assert_eq!(before, after, "containers changed across an agent restart");
    let duo_after = wait_pod(&pods, "duo", timeout, &agent, "duo stays Ready", is_ready).await;
    assert_eq!(pod_ip(&duo_after), duo_ip);
    assert_eq!(
        duo_after.metadata.resource_version, rv,
        "the restarted agent rewrote an unchanged status"
    );
    assert_eq!(http_get(SocketAddr::from((web_ip, 80)), "/").trim(), "web");
    assert_eq!(
        pods.get("web")
            .await
            .expect("GET web")
            .metadata
            .resource_version,
        web_rv,
        "the restarted agent flapped web's readiness"
    );
    assert!(
        agent.allocations().contains_key(&duo_ip.to_string()),
        "{:?}",
        agent.allocations()
    );

    // kubectl delete stops the containers within the grace period and frees the address.
    let started = std::time::Instant::now();
    kubectl.run(&["delete", "pod", "duo", "--timeout=30s"]);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(20),
        "deleting took {took:?}; agent log:\n{}",
        agent.log()
    );
    assert!(pod_containers(&duo_uid).is_empty());
    assert!(
        !agent.allocations().contains_key(&duo_ip.to_string()),
        "{:?}",
        agent.allocations()
    );
    assert!(
        !agent
            .pod_routes()
            .iter()
            .any(|(dest, _)| dest == &duo_ip.to_string()),
        "{:?}",
        agent.pod_routes()
    );
    kubectl.run(&["delete", "pod", "web", "hostnet", "--timeout=30s"]);
    agent.assert_no_leaks();
}
