//! The container runtime's contract on the real Docker engine: a worker woken by a container's
//! end must list it as ended. Docker sends `die` before the view its list reads is updated
//! (about 10 ms later here), and a worker that listed the container as still running slept
//! until its 10 s resync: the tail the `pods` bench measured.

use std::{collections::HashMap, time::Duration};

use bollard::models::ContainerCreateBody;
use keelson_node_agent::pods::runtime::{
    ContainerRuntime, DockerRuntime, LABEL_CONTAINER, LABEL_POD_UID,
};
use keelson_tests::{
    pods::{BUSYBOX, docker, require_docker_images},
    require_root,
};

/// Removes the test's containers however the test ends.
struct Containers(String);

impl Drop for Containers {
    fn drop(&mut self) {
        let ids = docker(&["ps", "-aq", "--filter", &format!("label={}", self.0)]);
        for id in ids.split_whitespace() {
            let _ = docker(&["rm", "-f", id]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_end_is_forwarded_only_once_the_list_shows_it() {
    require_root();
    require_docker_images();
    let node = format!("kr{}", std::process::id());
    let _cleanup = Containers(format!("io.keelson.node={node}"));
    let runtime = DockerRuntime::connect("/var/run/docker.sock", &node)
        .await
        .unwrap_or_else(|e| panic!("docker: {e}: run `cargo xtask setup`"));
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let forwarder = {
        let runtime = runtime.clone();
        tokio::spawn(async move { runtime.forward_events(tx).await })
    };
    // The event stream is subscribed to before the first container starts.
    tokio::time::sleep(Duration::from_millis(300)).await;

    const ROUNDS: usize = 12;
    for round in 0..ROUNDS {
        let uid = format!("{node}-{round}");
        let labels = HashMap::from([
            (LABEL_POD_UID.to_owned(), uid.clone()),
            (LABEL_CONTAINER.to_owned(), "init".to_owned()),
        ]);
        let body = ContainerCreateBody {
            image: Some(BUSYBOX.to_owned()),
            cmd: Some(vec!["sleep".to_owned(), "0.2".to_owned()]),
            ..ContainerCreateBody::default()
        };
        let id = runtime
            .run(&format!("{uid}-init"), labels, body)
            .await
            .expect("run a container");
        // Its start, then its end, are forwarded; once the end is, the list shows it.
        for what in ["start", "end"] {
            let woken = tokio::time::timeout(Duration::from_secs(30), events.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!("round {round}: the container's {what} was never forwarded")
                })
                .expect("the forwarder runs");
            assert_eq!(woken, uid, "round {round}: an event of another pod");
        }
        let listed = runtime.list_pod(&uid).await.expect("list the pod");
        let container = listed.iter().find(|c| c.id == id).expect("listed");
        assert!(
            !container.running,
            "round {round}: woken by the container's end, but the list still shows it running"
        );
    }
    forwarder.abort();
}
