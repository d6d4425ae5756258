//! End to end: control planes sharing one etcd each keep a lease, and the `kubernetes`
//! Service's EndpointSlice (and Endpoints) name every live one, as kube-apiserver's lease
//! endpoint reconciler does: a plane that shuts down cleanly leaves at once, one that is
//! killed leaves when its 15 s lease runs out.

use std::time::{Duration, Instant};

use k8s_openapi::api::{core::v1::Endpoints, discovery::v1::EndpointSlice};
use keelson_tests::{cluster::ControlPlane, etcd::Etcd};
use kube::{Api, Client};

/// The addresses of the `kubernetes` EndpointSlice and of the Endpoints, in their order.
async fn addresses(client: &Client) -> (Vec<String>, Vec<String>) {
    let slice = Api::<EndpointSlice>::namespaced(client.clone(), "default")
        .get_opt("kubernetes")
        .await
        .ok()
        .flatten()
        .map(|s| {
            s.endpoints
                .into_iter()
                .flat_map(|e| e.addresses)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let endpoints = Api::<Endpoints>::namespaced(client.clone(), "default")
        .get_opt("kubernetes")
        .await
        .ok()
        .flatten()
        .and_then(|e| e.subsets)
        .unwrap_or_default()
        .into_iter()
        .flat_map(|s| s.addresses.unwrap_or_default())
        .map(|a| a.ip)
        .collect();
    (slice, endpoints)
}

/// Waits until both objects list exactly `expected`; returns how long it took.
async fn until_addresses(
    client: &Client,
    expected: &[&str],
    limit: Duration,
    logs: &[&ControlPlane],
) -> Duration {
    let started = Instant::now();
    let expected: Vec<String> = expected.iter().map(|s| (*s).to_owned()).collect();
    keelson_tests::eventually(
        &format!("the kubernetes endpoints to be {expected:?}"),
        limit,
        || {
            logs.iter()
                .map(|p| p.log())
                .collect::<Vec<_>>()
                .join("\n-----\n")
        },
        || {
            let client = client.clone();
            let expected = expected.clone();
            async move {
                let (slice, endpoints) = addresses(&client).await;
                (slice == expected && endpoints == expected).then_some(())
            }
        },
    )
    .await;
    started.elapsed()
}

fn args<'a>(etcd: &'a Etcd, advertise: &'a str) -> [&'a str; 8] {
    [
        "--store",
        "etcd",
        "--etcd-endpoints",
        etcd.endpoint(),
        "--advertise-address",
        advertise,
        "--controllers",
        "none",
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_service_names_every_live_control_plane() {
    let etcd = Etcd::start().await;
    let first = ControlPlane::start_with(&args(&etcd, "127.0.0.2"));
    let mut second = ControlPlane::start_with(&args(&etcd, "127.0.0.3"));
    let client = first.client().await;
    until_addresses(
        &client,
        &["127.0.0.2", "127.0.0.3"],
        Duration::from_secs(20),
        &[&first, &second],
    )
    .await;

    // A clean shutdown (SIGTERM) gives the lease up at once.
    let status = std::process::Command::new("kill")
        .args(["-TERM", &second.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let took = until_addresses(
        &client,
        &["127.0.0.2"],
        Duration::from_secs(8),
        &[&first, &second],
    )
    .await;
    eprintln!("a stopped control plane left the endpoints after {took:?}");
    second.kill();

    // A killed plane leaves when its lease expires (15 s) and the next reconcile sees it.
    let mut third = ControlPlane::start_with(&args(&etcd, "127.0.0.4"));
    until_addresses(
        &client,
        &["127.0.0.2", "127.0.0.4"],
        Duration::from_secs(20),
        &[&first, &third],
    )
    .await;
    third.kill();
    let took = until_addresses(&client, &["127.0.0.2"], Duration::from_secs(30), &[&first]).await;
    assert!(
        took >= Duration::from_secs(3),
        "left before its lease ran out: {took:?}"
    );
    eprintln!("a killed control plane left the endpoints after {took:?}");
}
