//! End to end, privileged: an HA control plane of three stacked nodes (three
//! `keelson-control-plane`s with `--leader-elect`, one CA, on a three-member etcd) loses the node
//! that leads the controllers, control plane and etcd member at once (SIGKILL). The API keeps
//! serving on the other two with no acknowledged write lost, another control plane takes the
//! controller Lease and acts (a Deployment scaled after the kill gets its pods), and a node agent
//! started with `--api-servers` (all three) fails over by itself: its Node stays Ready, its
//! Lease keeps being renewed and it runs the new pods.

use std::time::{Duration, Instant};

use k8s_openapi::api::{
    apps::v1::Deployment,
    coordination::v1::Lease,
    core::v1::{ConfigMap, Node, Pod},
};
use keelson_tests::{
    cluster::ControlPlane,
    etcd::EtcdCluster,
    eventually,
    pods::{PodAgent, is_ready},
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use serde_json::json;

/// The control planes' leader-election timings (short, for the test).
const LEASE_DURATION: Duration = Duration::from_secs(6);
const RENEW_DEADLINE: &str = "4s";
const RETRY_PERIOD: Duration = Duration::from_secs(1);
/// How long a node Lease may go unrenewed before the node is not Ready.
const NODE_GRACE: Duration = Duration::from_secs(25);
/// The writer's bounds.
const MAX_WRITES: usize = 400;
const WRITE_TIME: Duration = Duration::from_secs(40);

/// The holder of `kube-system/keelson-controller-manager`, if any.
async fn controller_holder(client: &Client) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), "kube-system")
        .get_opt("keelson-controller-manager")
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

/// What the writer saw: the ConfigMaps acknowledged (index, when), and the failed attempts.
#[derive(Debug, Default)]
struct Writes {
    acknowledged: Vec<(usize, Instant)>,
    failures: Vec<String>,
    /// Names whose create got 409 AlreadyExists on a retry: written, but not acknowledged.
    unacknowledged: usize,
}

/// Creates `cm-0`, `cm-1`, ... in `default` through `clients[0]`, moving on to the next client
/// whenever one fails (refused connection, timeout, server error), for at most [`MAX_WRITES`]
/// acknowledged writes or [`WRITE_TIME`].
async fn write_config_maps(clients: Vec<Client>) -> Writes {
    let apis: Vec<Api<ConfigMap>> = clients
        .into_iter()
        .map(|c| Api::namespaced(c, "default"))
        .collect();
    let deadline = Instant::now() + WRITE_TIME;
    let mut writes = Writes::default();
    let (mut next, mut current) = (0, 0);
    while writes.acknowledged.len() < MAX_WRITES && Instant::now() < deadline {
        let config_map: ConfigMap = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": format!("cm-{next}")},
            "data": {"n": next.to_string()},
        }))
        .expect("a ConfigMap");
        let attempt = tokio::time::timeout(
            Duration::from_secs(5),
            apis[current].create(&PostParams::default(), &config_map),
        )
        .await;
        match attempt {
            Ok(Ok(_)) => {
                writes.acknowledged.push((next, Instant::now()));
                next += 1;
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
            Ok(Err(kube::Error::Api(status))) if status.code == 409 => {
                // An earlier attempt whose answer was lost wrote it.
                writes.unacknowledged += 1;
                next += 1;
            }
            failed => {
                let cause = match failed {
                    Ok(Err(error)) => error.to_string(),
                    _ => "no answer within 5 s".to_owned(),
                };
                writes
                    .failures
                    .push(format!("cm-{next} via plane {current}: {cause}"));
                current = (current + 1) % apis.len();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    writes
}

/// What the node watcher saw: the distinct Lease renew times, in order, and every moment the
/// Node was not Ready.
#[derive(Debug, Default)]
struct NodeWatch {
    renewals: Vec<jiff::Timestamp>,
    not_ready: Vec<String>,
}

/// Polls node `name`'s Lease and Ready condition every 500 ms through `client` until `stop`.
async fn watch_node(
    client: Client,
    name: String,
    stop: tokio::sync::watch::Receiver<bool>,
) -> NodeWatch {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let nodes: Api<Node> = Api::all(client);
    let mut seen = NodeWatch::default();
    // Bounded: the test stops it well before.
    for _ in 0..600 {
        if *stop.borrow() {
            break;
        }
        if let Ok(Some(lease)) = leases.get_opt(&name).await
            && let Some(renewed) = lease.spec.and_then(|s| s.renew_time)
            && seen.renewals.last() != Some(&renewed.0)
        {
            seen.renewals.push(renewed.0);
        }
        if let Ok(node) = nodes.get(&name).await {
            let ready = node
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == "Ready");
            if let Some(ready) = ready.filter(|c| c.status != "True") {
                seen.not_ready.push(format!(
                    "Ready {} ({})",
                    ready.status,
                    ready.reason.unwrap_or_default()
                ));
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    seen
}

/// Pods of the `web` Deployment that are Running and Ready.
async fn ready_web_pods(pods: &Api<Pod>) -> usize {
    pods.list(&ListParams::default().labels("app=web"))
        .await
        .map(|l| l.items.iter().filter(|p| is_ready(p)).count())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_control_plane_survives_losing_a_stacked_node() {
    keelson_tests::require_root();
    let mut etcd = EtcdCluster::start(3).await;
    let (lease, retry) = (
        format!("{}s", LEASE_DURATION.as_secs()),
        format!("{}s", RETRY_PERIOD.as_secs()),
    );
    let grace = format!("{}s", NODE_GRACE.as_secs());
    // Each plane lists its own etcd member first, as a stacked control-plane node does. No node
    // IPAM: the agent uses its test pod CIDR.
    let endpoints: Vec<String> = (0..3).map(|i| etcd.endpoints_arg(i)).collect();
    let tls = etcd.control_plane_args();
    let args = |i: usize| {
        let mut args = vec![
            "--store",
            "etcd",
            "--etcd-endpoints",
            endpoints[i].as_str(),
            "--leader-elect",
            "--leader-elect-lease-duration",
            lease.as_str(),
            "--leader-elect-renew-deadline",
            RENEW_DEADLINE,
            "--leader-elect-retry-period",
            retry.as_str(),
            "--controllers",
            "all,-nodeipam",
            "--node-monitor-grace-period",
            grace.as_str(),
            "--node-monitor-period",
            "1s",
        ];
        args.extend(tls.iter().map(String::as_str));
        args
    };
    let first = ControlPlane::start_with(&args(0));
    let second = ControlPlane::start_sharing_pki(&first, &args(1));
    let third = ControlPlane::start_sharing_pki(&first, &args(2));
    let mut planes = [first, second, third];
    let mut clients = Vec::new();
    for plane in &planes {
        clients.push(plane.client().await);
    }
    let logs = |planes: &[ControlPlane]| {
        planes
            .iter()
            .map(ControlPlane::log)
            .collect::<Vec<_>>()
            .join("\n-----\n")
    };
    // Which plane an identity (HOSTNAME_LISTEN_PID) belongs to.
    let listens: Vec<String> = planes.iter().map(|p| p.listen().to_string()).collect();
    let plane_of = |identity: &str| {
        listens
            .iter()
            .position(|l| identity.contains(&format!("_{l}_")))
            .unwrap_or_else(|| panic!("holder {identity:?} is none of {listens:?}"))
    };
    let identity = eventually(
        "a holder of the controller-manager Lease",
        Duration::from_secs(30),
        || logs(&planes),
        || controller_holder(&clients[0]),
    )
    .await;
    let leader = plane_of(&identity);
    let survivors = [(leader + 1) % 3, (leader + 2) % 3];
    eprintln!("plane {leader} ({}) leads the controllers", listens[leader]);

    // The agent lists the leader first: its API connections go to the plane that will die.
    let agent = PodAgent::start_ha(
        &[
            &planes[leader],
            &planes[survivors[0]],
            &planes[survivors[1]],
        ],
        &[],
    );
    let survivor = clients[survivors[0]].clone();
    let nodes: Api<Node> = Api::all(survivor.clone());
    eventually(
        "the agent's Node Ready",
        Duration::from_secs(60),
        || agent.log(),
        || {
            let nodes = nodes.clone();
            let name = agent.node.clone();
            async move {
                let node = nodes.get_opt(&name).await.ok().flatten()?;
                node.status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
                    .then_some(())
            }
        },
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(survivor.clone(), "default");
    let deployments: Api<Deployment> = Api::namespaced(survivor.clone(), "default");
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "web", "image": keelson_tests::pods::BUSYBOX,
                                    "command": ["sleep", "3600"]}],
                },
            },
        },
    }))
    .expect("a Deployment");
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .expect("create the Deployment");
    eventually(
        "the Deployment's pod running on the agent",
        Duration::from_secs(60),
        || agent.log(),
        || {
            let pods = pods.clone();
            async move { (ready_web_pods(&pods).await == 1).then_some(()) }
        },
    )
    .await;

    let (stop_watch, stop) = tokio::sync::watch::channel(false);
    let node_watch = tokio::spawn(watch_node(survivor.clone(), agent.node.clone(), stop));
    let writer = tokio::spawn(write_config_maps(clients.clone()));
    tokio::time::sleep(Duration::from_secs(5)).await;

    // The stacked node dies: its control plane and its etcd member.
    let killed_at = Instant::now();
    let killed_wall = jiff::Timestamp::now();
    planes[leader].kill();
    etcd.kill(leader);
    eprintln!("killed plane {leader} and etcd member {leader}");

    let took_over = eventually(
        "a surviving plane holding the controller-manager Lease",
        LEASE_DURATION * 3,
        || logs(&planes),
        || {
            let client = survivor.clone();
            let plane_of = &plane_of;
            async move {
                let identity = controller_holder(&client).await?;
                (plane_of(&identity) != leader).then(|| killed_at.elapsed())
            }
        },
    )
    .await;
    // The holder renewed at most one retry period before the kill; the candidate polls every
    // retry period.
    assert!(
        took_over <= LEASE_DURATION + 2 * RETRY_PERIOD,
        "controller failover took {took_over:?}"
    );

    // The new leader's controllers and scheduler act, and the agent runs the pods.
    let scale = Patch::Merge(json!({"spec": {"replicas": 3}}));
    eventually(
        "scaling the Deployment",
        Duration::from_secs(20),
        || logs(&planes),
        || {
            let deployments = deployments.clone();
            let scale = scale.clone();
            async move {
                deployments
                    .patch("web", &PatchParams::default(), &scale)
                    .await
                    .ok()
                    .map(drop)
            }
        },
    )
    .await;
    eventually(
        "3 pods of the scaled Deployment running",
        Duration::from_secs(60),
        || format!("{}\n-----agent-----\n{}", logs(&planes), agent.log()),
        || {
            let pods = pods.clone();
            async move { (ready_web_pods(&pods).await == 3).then_some(()) }
        },
    )
    .await;
    let scaled_after = killed_at.elapsed();

    let writes = writer.await.expect("the writer");
    // Watch the node at least two of its renew periods past the kill.
    let watch_until = killed_at + NODE_GRACE;
    if let Some(left) = watch_until.checked_duration_since(Instant::now()) {
        tokio::time::sleep(left).await;
    }
    stop_watch.send(true).expect("stop the node watch");
    let node_watch = node_watch.await.expect("the node watch");

    // No acknowledged write is lost.
    let present: std::collections::BTreeSet<String> =
        Api::<ConfigMap>::namespaced(survivor.clone(), "default")
            .list(&ListParams::default())
            .await
            .expect("list ConfigMaps")
            .items
            .into_iter()
            .filter_map(|c| c.metadata.name)
            .collect();
    let lost: Vec<usize> = writes
        .acknowledged
        .iter()
        .map(|(i, _)| *i)
        .filter(|i| !present.contains(&format!("cm-{i}")))
        .collect();
    assert!(lost.is_empty(), "acknowledged ConfigMaps lost: {lost:?}");
    let after_kill = writes
        .acknowledged
        .iter()
        .filter(|(_, at)| *at > killed_at)
        .count();
    assert!(
        after_kill >= 50,
        "only {after_kill} writes acknowledged after the kill; failures: {:?}",
        writes.failures
    );
    let longest_gap = writes
        .acknowledged
        .windows(2)
        .map(|w| w[1].1 - w[0].1)
        .max()
        .unwrap_or_default();

    // The node stayed Ready, renewing its Lease through the surviving planes.
    assert!(
        node_watch.not_ready.is_empty(),
        "the node was not Ready: {:?}\nagent log:\n{}",
        node_watch.not_ready,
        agent.log()
    );
    let renewed_after_kill = node_watch
        .renewals
        .iter()
        .filter(|t| **t > killed_wall)
        .count();
    assert!(
        renewed_after_kill >= 2,
        "the node Lease was renewed {renewed_after_kill} times after the kill: {:?}\nagent log:\n{}",
        node_watch.renewals,
        agent.log()
    );
    let renew_gap = node_watch
        .renewals
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).unsigned_abs())
        .max()
        .unwrap_or_default();
    assert!(
        renew_gap < NODE_GRACE,
        "the node Lease went {renew_gap:?} without renewal"
    );
    assert!(
        agent.log().contains("API server failover: now using"),
        "the agent switched servers:\n{}",
        agent.log()
    );

    eprintln!(
        "writes acknowledged: {} ({after_kill} after the kill, {} unacknowledged, {} failed \
         attempts); longest gap between acknowledged writes: {longest_gap:?}",
        writes.acknowledged.len(),
        writes.unacknowledged,
        writes.failures.len()
    );
    eprintln!("controller Lease failover: {took_over:?} after the kill");
    eprintln!("Deployment scaled after the kill had 3 running pods {scaled_after:?} after it");
    eprintln!(
        "node Lease: {} renewals watched, {renewed_after_kill} after the kill, longest renew gap \
         {renew_gap:?}",
        node_watch.renewals.len()
    );

    // The new leader's garbage collector removes the pods with the Deployment.
    deployments
        .delete("web", &DeleteParams::foreground())
        .await
        .expect("delete the Deployment");
    eventually(
        "the Deployment's pods gone",
        Duration::from_secs(60),
        || agent.log(),
        || {
            let pods = pods.clone();
            async move {
                pods.list(&ListParams::default())
                    .await
                    .ok()
                    .filter(|l| l.items.is_empty())
                    .map(drop)
            }
        },
    )
    .await;
    agent.assert_no_leaks();
    // The agent's only errors are kube-client's report of the 500s the surviving planes answered
    // while etcd elected a new leader (the agent retries those requests).
    let log = agent.log();
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(
        errors
            .iter()
            .all(|l| l.contains("kube_client::client::builder: failed with status 5")),
        "the agent logged errors:\n{}",
        errors.join("\n")
    );
    let mut plane_errors: Vec<String> = survivors
        .iter()
        .flat_map(|i| {
            planes[*i]
                .log()
                .lines()
                .filter_map(|l| {
                    l.split_once(" ERROR ")
                        .map(|(_, e)| e.chars().take(200).collect())
                })
                .collect::<Vec<String>>()
        })
        .collect();
    plane_errors.sort();
    plane_errors.dedup();
    plane_errors.truncate(5);
    eprintln!(
        "the agent saw {} server errors (500); the surviving planes' errors: {plane_errors:?}",
        errors.len()
    );
}
