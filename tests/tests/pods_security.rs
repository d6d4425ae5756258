//! End to end, privileged: what a pod's `securityContext`, memory limit and the node's image
//! directory do, as a user sees them through the API: a container over its memory limit ends
//! `OOMKilled` with exit code 137, a read-only root refuses writes, `runAsNonRoot` with a root
//! image is refused with the kubelet's event, dropping every capability makes `chown` fail,
//! safe sysctls apply in the pod's network namespace while others reject the pod, a memory
//! emptyDir is a tmpfs of its sizeLimit, and an image
//! tarball dropped in `<data-dir>/images` is loaded at agent start.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStateTerminated, Event, Pod};
use keelson_tests::{
    cluster::{ControlPlane, Kubectl},
    pods::{BUSYBOX, PodAgent, apply, docker, uid, wait_pod},
};
use kube::{Api, api::ListParams};

fn manifests(node: &str, imported: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata: {{name: oom, namespace: default}}
spec:
  nodeName: {node}
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {BUSYBOX}
    command: [\"dd\", \"if=/dev/zero\", \"of=/dev/null\", \"bs=256M\", \"count=1\"]
    resources: {{limits: {{memory: 32Mi}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: readonly, namespace: default}}
spec:
  nodeName: {node}
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  volumes: [{{name: tmp, emptyDir: {{}}}}]
  containers:
  - name: app
    image: {BUSYBOX}
    command: [\"sh\", \"-c\", \"touch /tmp/ok || exit 9; touch /x\"]
    securityContext: {{readOnlyRootFilesystem: true}}
    volumeMounts: [{{name: tmp, mountPath: /tmp}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: nonroot, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  securityContext: {{runAsNonRoot: true}}
  containers:
  - name: app
    image: {BUSYBOX}
    command: [\"sleep\", \"3600\"]
---
apiVersion: v1
kind: Pod
metadata: {{name: nocaps, namespace: default}}
spec:
  nodeName: {node}
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {BUSYBOX}
    command: [\"sh\", \"-c\", \"touch /f; chown 1 /f\"]
    securityContext: {{capabilities: {{drop: [ALL]}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: users, namespace: default}}
spec:
  nodeName: {node}
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  securityContext:
    runAsUser: 1000
    runAsGroup: 3000
    fsGroup: 2000
    supplementalGroups: [4000]
    sysctls: [{{name: net.ipv4.ip_unprivileged_port_start, value: \"80\"}}]
  containers:
  - name: app
    image: {BUSYBOX}
    command: [\"sh\", \"-c\", \"id; cat /proc/sys/net/ipv4/ip_unprivileged_port_start\"]
    securityContext: {{allowPrivilegeEscalation: false}}
---
apiVersion: v1
kind: Pod
metadata: {{name: badsysctl, namespace: default}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  securityContext:
    sysctls: [{{name: kernel.msgmax, value: \"65536\"}}]
  containers:
  - name: app
    image: {BUSYBOX}
    command: [\"sleep\", \"3600\"]
---
apiVersion: v1
kind: Pod
metadata: {{name: memdir, namespace: default}}
spec:
  nodeName: {node}
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  volumes: [{{name: cache, emptyDir: {{medium: Memory, sizeLimit: 8Mi}}}}]
  containers:
  - name: app
    image: {BUSYBOX}
    command: [\"sh\", \"-c\", \"grep ' /cache ' /proc/mounts; df -k /cache\"]
    volumeMounts: [{{name: cache, mountPath: /cache}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: imported, namespace: default}}
spec:
  nodeName: {node}
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {imported}
    imagePullPolicy: Never
    command: [\"true\"]
"
    )
}

fn terminated(pod: &Pod) -> Option<ContainerStateTerminated> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?
        .terminated
        .clone()
}

/// The output of the pod's (ended) container, from Docker: the agent restarted above, and the
/// API server may still know its previous kubelet port for a moment.
fn logs(pod: &Pod) -> String {
    let id = terminated(pod)
        .and_then(|t| t.container_id)
        .expect("a container id");
    let id = id.trim_start_matches("docker://");
    let output = std::process::Command::new("docker")
        .args(["logs", id])
        .output()
        .expect("docker logs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn waiting(pod: &Pod) -> Option<(String, String)> {
    let w = pod
        .status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .state
        .as_ref()?
        .waiting
        .clone()?;
    Some((w.reason?, w.message.unwrap_or_default()))
}

async fn events_of(events: &Api<Event>, pod: &str) -> Vec<(String, String, String)> {
    events
        .list(&ListParams::default().fields(&format!("involvedObject.name={pod}")))
        .await
        .expect("list events")
        .items
        .into_iter()
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default(),
            )
        })
        .collect()
}

/// Removes the test's image tag when the test ends, also when it fails.
struct ImageTag(String);

impl Drop for ImageTag {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rmi", "-f", &self.0])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_context_oom_and_image_archives_behave_as_the_kubelet() {
    let plane = ControlPlane::start_with(&["--controllers", "all,-nodeipam"]);
    let mut agent = PodAgent::start(&plane, &[]);

    // An image only a tarball in the data directory holds: saved, removed, loaded at start.
    let imported = format!("keelson/imported:{}", agent.node);
    let images = agent.data_dir.join("images");
    std::fs::create_dir_all(&images).expect("images dir");
    let archive = images.join("imported.tar");
    docker(&["tag", BUSYBOX, &imported]);
    let _tag = ImageTag(imported.clone());
    docker(&["save", "-o", &archive.to_string_lossy(), &imported]);
    docker(&["rmi", &imported]);
    agent.restart();

    let kubectl = Kubectl::new(33, &plane);
    let client = plane.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let events: Api<Event> = Api::namespaced(client, "default");
    apply(
        &kubectl,
        plane.data_dir(),
        "pods.yaml",
        &manifests(&agent.node, &imported),
    );
    let timeout = Duration::from_secs(90);
    let ended = |p: &Pod| terminated(p).is_some();

    // Over the memory limit: the OOM killer, reported as kube does.
    let oom = wait_pod(&pods, "oom", timeout, &agent, "oom ends", ended).await;
    let t = terminated(&oom).expect("terminated");
    assert_eq!(
        (t.reason.as_deref(), t.exit_code),
        (Some("OOMKilled"), 137),
        "{t:?}"
    );
    assert_eq!(oom.status.and_then(|s| s.phase).as_deref(), Some("Failed"));
    // The kernel's own record, which covers a kill Docker's flag misses (one in the first
    // milliseconds of a container on cgroup v1, as this `dd` is).
    let oom_id = t.container_id.as_deref().unwrap_or_default();
    let oom_id = oom_id.trim_start_matches("docker://");
    let log = agent.log();
    assert!(
        log.lines()
            .any(|l| l.contains("the kernel OOM-killed a process") && l.contains(oom_id)),
        "the agent did not read the kernel's OOM kill of {oom_id} from /dev/kmsg:\n{log}"
    );

    // A read-only root: the emptyDir takes writes, `/` does not.
    let ro = wait_pod(&pods, "readonly", timeout, &agent, "readonly ends", ended).await;
    let t = terminated(&ro).expect("terminated");
    assert_eq!(t.exit_code, 1, "touch /x must fail, not /tmp/ok (9): {t:?}");
    let log = logs(&ro);
    assert!(log.contains("Read-only file system"), "{log}");

    // runAsNonRoot and a root image: refused before it runs, with the kubelet's words.
    let nonroot = wait_pod(&pods, "nonroot", timeout, &agent, "nonroot refused", |p| {
        waiting(p).is_some_and(|(r, _)| r == "CreateContainerConfigError")
    })
    .await;
    let want = format!(
        "container has runAsNonRoot and image will run as root (pod: \"nonroot_default({})\", \
         container: app)",
        uid(&nonroot)
    );
    assert_eq!(waiting(&nonroot).map(|(_, m)| m), Some(want.clone()));
    let seen = events_of(&events, "nonroot").await;
    assert!(
        seen.iter()
            .any(|(t, r, m)| t == "Warning" && r == "Failed" && *m == format!("Error: {want}")),
        "{seen:?}"
    );
    let describe = kubectl.run(&["describe", "pod", "nonroot"]);
    assert!(
        describe.contains("CreateContainerConfigError"),
        "{describe}"
    );

    // No capabilities: root cannot chown.
    let nocaps = wait_pod(&pods, "nocaps", timeout, &agent, "nocaps ends", ended).await;
    let t = terminated(&nocaps).expect("terminated");
    assert_eq!(t.exit_code, 1, "{t:?}");
    let log = logs(&nocaps);
    assert!(log.contains("Operation not permitted"), "{log}");

    // User, groups (fsGroup and supplementalGroups) and a safe sysctl in the pod's netns.
    let users = wait_pod(&pods, "users", timeout, &agent, "users ends", ended).await;
    let t = terminated(&users).expect("terminated");
    let log = logs(&users);
    assert_eq!(t.exit_code, 0, "{t:?} {log}");
    assert!(log.contains("uid=1000 gid=3000"), "{log}");
    assert!(
        log.contains("2000") && log.contains("4000"),
        "groups: {log}"
    );
    assert_eq!(log.lines().last(), Some("80"), "{log}");

    // An unsafe sysctl: the pod is rejected, as the kubelet's admission does.
    let bad = wait_pod(
        &pods,
        "badsysctl",
        timeout,
        &agent,
        "badsysctl rejected",
        |p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed"),
    )
    .await;
    let status = bad.status.expect("status");
    assert_eq!(status.reason.as_deref(), Some("SysctlForbidden"));
    assert_eq!(
        status.message.as_deref(),
        Some("Pod was rejected: forbidden sysctl: \"kernel.msgmax\" not allowlisted")
    );

    // A memory emptyDir: a tmpfs of its sizeLimit.
    let mem = wait_pod(&pods, "memdir", timeout, &agent, "memdir ends", ended).await;
    let log = logs(&mem);
    assert_eq!(terminated(&mem).map(|t| t.exit_code), Some(0), "{log}");
    assert!(log.contains("tmpfs /cache tmpfs"), "{log}");
    assert!(
        log.lines()
            .last()
            .is_some_and(|l| l.split_whitespace().nth(1) == Some("8192")),
        "an 8Mi tmpfs: {log}"
    );

    // The archive's image runs with imagePullPolicy Never, and the agent said so.
    let imp = wait_pod(&pods, "imported", timeout, &agent, "imported runs", ended).await;
    assert_eq!(terminated(&imp).map(|t| t.exit_code), Some(0));
    let log = agent.log();
    assert!(
        log.contains("imported images") && log.contains(&imported),
        "agent log lacks the import line:\n{log}"
    );
    let seen = events_of(&events, "imported").await;
    assert!(
        seen.iter().any(|(_, r, m)| r == "Pulled"
            && *m == format!("Container image \"{imported}\" already present on machine")),
        "{seen:?}"
    );

    for name in [
        "oom",
        "readonly",
        "nonroot",
        "nocaps",
        "users",
        "badsysctl",
        "memdir",
        "imported",
    ] {
        kubectl.run(&["delete", "pod", name, "--wait=false"]);
    }
    agent.assert_pods_gone_cleanly(&pods).await;
}
