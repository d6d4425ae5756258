//! End to end, privileged: pod startup latency with a local image. 30 pods (the Kubernetes
//! density test's pods per node) are created through the API, one per second; each one's time
//! from create to Ready is measured from the client, and the agent's RSS is read while they run.
//! The figures are printed; the test holds the Kubernetes SLO (p99 <= 5 s). `cargo xtask bench
//! pods` measures the same with release binaries and 50 pods.
//!
//! Each pod is two Docker containers (sandbox and app); on a loaded 2-core machine dockerd
//! creates and starts about three containers a second, which bounds the creation rate.

use std::time::Duration;

use keelson_tests::{
    cluster::{ControlPlane, Kubectl},
    pods::PodAgent,
    startup,
};

const PODS: usize = 30;
const INTERVAL: Duration = Duration::from_millis(1000);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_pods_start_within_the_slo() {
    // Without node IPAM the agent uses this test's own --pod-cidr (10.250.N.0/24), so tests
    // running at once never share pod addresses or routes.
    let plane = ControlPlane::start_with(&["--controllers", "all,-nodeipam"]);
    let agent = PodAgent::start(&plane, &[]);
    let figures = startup::measure(
        plane.client().await,
        &agent,
        PODS,
        INTERVAL,
        Duration::from_secs(120),
    )
    .await;
    let (p50, p99) = (figures.percentile(50.0), figures.percentile(99.0));
    println!(
        "pod startup (create -> Ready, {PODS} pods, one per {INTERVAL:?}, local image): p50 {:.0} ms, \
         p99 {:.0} ms, max {:.0} ms; agent RSS {} KiB idle, {} KiB with {PODS} pods",
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        figures.max().as_secs_f64() * 1e3,
        figures.rss_idle_kib,
        figures.rss_busy_kib
    );
    assert_eq!(figures.latencies.len(), PODS);
    assert!(
        p99 <= Duration::from_secs(5),
        "p99 pod startup {p99:?} exceeds the Kubernetes SLO of 5 s"
    );

    let kubectl = Kubectl::new(33, &plane);
    kubectl.run(&["delete", "pods", "-l", startup::LABEL, "--timeout=120s"]);
    agent.assert_no_leaks();
}
