//! End to end, privileged: `keelson-node-agent reset` after an agent ran a pod removes the
//! pod's containers, its veth, the pod CIDR's blackhole route, the pinned maps and links (so
//! socket-LB leaves the cgroup), the node's credentials and the data directory, printing one
//! line for each; it refuses while the agent runs, and a second run finds nothing.

use std::{
    path::Path,
    process::{Command, Output},
    time::Duration,
};

use k8s_openapi::api::core::v1::Pod;
use keelson_tests::{
    cluster::{ControlPlane, Kubectl},
    lbkit::node_agent_binary,
    pods::{PodAgent, apply, is_ready, uid, wait_pod},
};
use kube::Api;

fn reset(agent: &PodAgent, config_dir: &Path, service_cidr: &str) -> Output {
    Command::new(node_agent_binary())
        .arg("reset")
        .args(["--node-name", &agent.node, "--pin-dir"])
        .arg(agent.pin_dir())
        .arg("--data-dir")
        .arg(&agent.data_dir)
        .arg("--config-dir")
        .arg(config_dir)
        .args(["--service-cidr", service_cidr, "--metrics-listen", "off"])
        .output()
        .expect("run keelson-node-agent reset")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ip(args: &[&str]) -> String {
    text(&Command::new("ip").args(args).output().expect("ip").stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_removes_what_the_agent_put_on_the_host() {
    let plane = ControlPlane::start_with(&["--controllers", "all,-nodeipam"]);
    let mut agent = PodAgent::start(&plane, &[]);
    let kubectl = Kubectl::new(33, &plane);
    let dir = tempfile::tempdir().expect("temp dir");
    apply(
        &kubectl,
        dir.path(),
        "pod.yaml",
        &format!(
            "apiVersion: v1
kind: Pod
metadata:
  name: doomed
  namespace: default
spec:
  nodeName: {}
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: keelson/busybox:1
    command: [\"sleep\", \"3600\"]
",
            agent.node
        ),
    );
    let pods: Api<Pod> = Api::namespaced(plane.client().await, "default");
    let pod = wait_pod(
        &pods,
        "doomed",
        Duration::from_secs(60),
        &agent,
        "the pod is Ready",
        is_ready,
    )
    .await;
    let veth = keelson_node_agent::network::host_veth_name(&uid(&pod));
    // What `join` would have written: the node's kubeconfig, beside the package's config.
    let config_dir = dir.path().join("etc");
    std::fs::create_dir_all(&config_dir).expect("config dir");
    std::fs::copy(agent.kubeconfig(), config_dir.join("node.kubeconfig")).expect("kubeconfig");
    std::fs::write(config_dir.join("node-agent.yaml"), "node-name: x\n").expect("config");
    let service_cidr = if other_agent_running_besides(&mut agent) {
        "192.0.2.0/24"
    } else {
        keelson_tests::pods::SERVICE_CIDR
    };

    // Refused while the agent runs, and nothing removed.
    let refused = reset(&agent, &config_dir, service_cidr);
    let stderr = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("keelson-node-agent reset: an agent is running (pid ")
            && stderr
                .trim_end()
                .ends_with("stop it first (`systemctl stop keelson-node-agent`)")
            && stderr.lines().count() == 1,
        "{stderr}"
    );
    assert_eq!(
        agent.containers().len(),
        2,
        "the pod's containers are untouched"
    );

    agent.kill();
    let done = reset(&agent, &config_dir, service_cidr);
    let stdout = text(&done.stdout);
    assert!(done.status.success(), "{stdout}{}", text(&done.stderr));
    let expected = [
        "removed Docker container ".to_owned(),
        "(container app of pod default/doomed)".to_owned(),
        "(sandbox of pod default/doomed)".to_owned(),
        format!("removed link {veth}"),
        format!("removed route blackhole {}", agent.cidr),
        "detached and unpinned bpf link ".to_owned(),
        "unpinned bpf map ".to_owned(),
        format!("removed pin directory {}", agent.pin_dir().display()),
        format!("removed {}", config_dir.join("node.kubeconfig").display()),
        format!("removed data directory {}", agent.data_dir.display()),
    ];
    for line in expected {
        assert!(stdout.contains(&line), "reset printed {line:?}:\n{stdout}");
    }
    if service_cidr == keelson_tests::pods::SERVICE_CIDR {
        assert!(
            stdout.contains("removed route unreachable 10.96.0.0/12"),
            "{stdout}"
        );
    }

    // Nothing left, as `docker`, `ip` and `bpftool` see it.
    assert_eq!(agent.containers(), Vec::<String>::new(), "containers left");
    assert_eq!(ip(&["-o", "link", "show", "dev", &veth]), "", "veth left");
    assert_eq!(
        ip(&["-o", "-4", "route", "show", "root", &agent.cidr]),
        "",
        "routes into the pod CIDR left"
    );
    assert!(!agent.pin_dir().exists(), "pins left");
    let cgroup = Command::new("bpftool")
        .args(["cgroup", "show"])
        .arg(agent.cgroup())
        .output()
        .expect("bpftool");
    assert_eq!(
        text(&cgroup.stdout)
            .lines()
            .filter(|l| l.contains("sock"))
            .count(),
        0,
        "socket-LB programs left on {}: {}",
        agent.cgroup().display(),
        text(&cgroup.stdout)
    );
    assert!(!agent.data_dir.exists(), "data directory left");
    assert!(!config_dir.join("node.kubeconfig").exists());
    assert!(
        config_dir.join("node-agent.yaml").exists(),
        "the package's config stays"
    );

    // A second run finds nothing.
    let again = reset(&agent, &config_dir, service_cidr);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert_eq!(
        text(&again.stdout),
        format!("nothing to remove for node {}\n", agent.node)
    );
}

/// Whether an agent besides this test's own runs on the machine (a test running at once):
/// the Service CIDR's unreachable route is shared with it and must stay.
fn other_agent_running_besides(agent: &mut PodAgent) -> bool {
    assert!(agent.running(), "the agent runs");
    let agents = std::fs::read_dir("/proc").map_or(2, |procs| {
        procs
            .filter_map(Result::ok)
            .filter(|entry| {
                // `pid (comm) state ...`; the kernel keeps 15 bytes of the name.
                std::fs::read_to_string(entry.path().join("stat")).is_ok_and(|stat| {
                    stat.split_once(" (keelson-node-ag) ")
                        .is_some_and(|(_, rest)| !rest.starts_with('Z'))
                })
            })
            .count()
    });
    agents != 1
}
