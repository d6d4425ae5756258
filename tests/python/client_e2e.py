"""End to end with the Python `kubernetes` client (37.x) against keelson's API server.

Usage: client_e2e.py KUBECONFIG NAMESPACE

Everything goes through `load_kube_config`, so the same script works over plain HTTP and over
HTTPS with client certificates or tokens in the kubeconfig. Each check prints a line; a failed
check raises, and the exit status is non-zero with a traceback. The last line is `ALL OK`.
"""

import json
import queue
import sys
import threading
import time

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
WATCH_TIMEOUT_S = 30


def check(condition, what):
    if not condition:
        raise AssertionError(what)
    print(f"ok: {what}", flush=True)


def status_of(error):
    """The Kubernetes Status object an API error carries."""
    try:
        return json.loads(error.body)
    except (TypeError, ValueError) as parse_error:
        raise AssertionError(f"error body is not a Status: {error.body!r}") from parse_error


def expect_error(code, reason, call, what):
    try:
        call()
    except ApiException as error:
        status = status_of(error)
        check(
            error.status == code
            and status.get("kind") == "Status"
            and status.get("code") == code
            and status.get("reason") == reason,
            f"{what} -> {code} {reason} (got {error.status}, Status {status})",
        )
        return status
    raise AssertionError(f"{what} should have failed with {code} {reason}")


def watch_configmaps(core, namespace, resource_version, events, stop):
    """Streams ConfigMap events labelled app=e2e into `events` until `stop` or the timeout."""
    w = watch.Watch()
    try:
        for event in w.stream(
            core.list_namespaced_config_map,
            namespace,
            label_selector="app=e2e",
            resource_version=resource_version,
            timeout_seconds=WATCH_TIMEOUT_S,
        ):
            obj = event["raw_object"]
            events.put((event["type"], obj["metadata"]["name"], obj["metadata"]["resourceVersion"]))
            if stop.is_set():
                break
    except Exception as error:  # reported by the main thread
        events.put(("ERROR", repr(error), ""))
    finally:
        w.stop()
        events.put(("END", "", ""))


def main():
    kubeconfig, ns = sys.argv[1], sys.argv[2]
    config.load_kube_config(config_file=kubeconfig)
    core = client.CoreV1Api()
    apps = client.AppsV1Api()

    # Namespace.
    created = core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    check(created.metadata.name == ns and created.metadata.uid, f"created namespace {ns}")
    check(
        ns in [n.metadata.name for n in core.list_namespace().items],
        "the namespace is listed",
    )

    # Watch ConfigMaps labelled app=e2e from the list's resourceVersion, in the background.
    listed = core.list_namespaced_config_map(ns, label_selector="app=e2e")
    check(listed.items == [] and listed.metadata.resource_version, "empty list carries a resourceVersion")
    events = queue.Queue()
    stop = threading.Event()
    watcher = threading.Thread(
        target=watch_configmaps,
        args=(core, ns, listed.metadata.resource_version, events, stop),
        daemon=True,
    )
    watcher.start()

    # ConfigMaps: one the selector matches, one it does not.
    cm = core.create_namespaced_config_map(
        ns,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="settings", labels={"app": "e2e", "tier": "config"}),
            data={"color": "blue", "size": "small"},
        ),
    )
    check(cm.metadata.resource_version and cm.data["color"] == "blue", "created configmap settings")
    core.create_namespaced_config_map(
        ns,
        client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="unrelated", labels={"app": "other"}),
            data={"x": "1"},
        ),
    )

    # Deployment.
    container = client.V1Container(
        name="web",
        image="registry.invalid/web:1",
        ports=[client.V1ContainerPort(container_port=80)],
        env=[client.V1EnvVar(name="GREETING", value="hello")],
    )
    deployment = apps.create_namespaced_deployment(
        ns,
        client.V1Deployment(
            metadata=client.V1ObjectMeta(name="web", labels={"app": "e2e"}),
            spec=client.V1DeploymentSpec(
                replicas=2,
                selector=client.V1LabelSelector(match_labels={"app": "web"}),
                template=client.V1PodTemplateSpec(
                    metadata=client.V1ObjectMeta(labels={"app": "web"}),
                    spec=client.V1PodSpec(containers=[container]),
                ),
            ),
        ),
    )
    check(
        deployment.spec.replicas == 2 and deployment.metadata.generation == 1,
        "created deployment web (generation 1)",
    )

    # Lists with label selectors.
    names = [c.metadata.name for c in core.list_namespaced_config_map(ns, label_selector="app=e2e").items]
    check(names == ["settings"], f"label selector app=e2e lists only settings ({names})")
    names = sorted(
        c.metadata.name for c in core.list_namespaced_config_map(ns, label_selector="app in (e2e,other)").items
    )
    check(names == ["settings", "unrelated"], f"set-based selector lists both ({names})")
    names = [
        c.metadata.name for c in core.list_namespaced_config_map(ns, label_selector="app=e2e,tier!=config").items
    ]
    check(names == [], f"app=e2e,tier!=config lists nothing ({names})")
    names = [d.metadata.name for d in apps.list_namespaced_deployment(ns, label_selector="app=e2e").items]
    check(names == ["web"], f"deployments with app=e2e: {names}")

    # Strategic-merge patch: containers merge by name, so the port and env stay.
    patched = apps.patch_namespaced_deployment(
        "web",
        ns,
        {"spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "web", "image": "registry.invalid/web:2"}]}}}},
        _content_type=STRATEGIC,
    )
    web = patched.spec.template.spec.containers
    check(
        patched.spec.replicas == 3
        and len(web) == 1
        and web[0].image == "registry.invalid/web:2"
        and web[0].ports[0].container_port == 80
        and web[0].env[0].value == "hello",
        "strategic-merge patch changed replicas and image, kept the container's ports and env",
    )
    check(patched.metadata.generation == 2, "a spec change bumps generation to 2")

    # Merge patch on the ConfigMap: null removes a key.
    before = core.read_namespaced_config_map("settings", ns)
    patched = core.patch_namespaced_config_map(
        "settings", ns, {"data": {"size": None, "shape": "round"}}, _content_type=MERGE
    )
    check(
        patched.data == {"color": "blue", "shape": "round"},
        f"merge patch removed size and added shape ({patched.data})",
    )
    check(
        int(patched.metadata.resource_version) > int(before.metadata.resource_version),
        "the patch moved resourceVersion forward",
    )

    # Replace with the stale resourceVersion -> 409 Conflict.
    before.data = {"color": "red"}
    status = expect_error(
        409,
        "Conflict",
        lambda: core.replace_namespaced_config_map("settings", ns, before),
        "replace with a stale resourceVersion",
    )
    check("settings" in status.get("message", ""), f"the Conflict message names the object: {status.get('message')}")
    current = core.read_namespaced_config_map("settings", ns)
    check(current.data == {"color": "blue", "shape": "round"}, "the conflicting replace changed nothing")
    current.data["color"] = "green"
    replaced = core.replace_namespaced_config_map("settings", ns, current)
    check(replaced.data["color"] == "green", "replace with the current resourceVersion succeeds")

    # Duplicate create -> 409 AlreadyExists.
    expect_error(
        409,
        "AlreadyExists",
        lambda: core.create_namespaced_config_map(
            ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="settings"), data={})
        ),
        "creating settings again",
    )

    # Delete, then get -> 404.
    core.delete_namespaced_config_map("settings", ns)
    expect_error(
        404, "NotFound", lambda: core.read_namespaced_config_map("settings", ns), "get after delete"
    )
    apps.delete_namespaced_deployment("web", ns)
    expect_error(
        404, "NotFound", lambda: apps.read_namespaced_deployment("web", ns), "get deployment after delete"
    )

    # The watch saw every change to settings, in order, and nothing about `unrelated`.
    seen = []
    deadline = time.monotonic() + WATCH_TIMEOUT_S
    while not any(t == "DELETED" for t, _, _ in seen) and time.monotonic() < deadline:
        try:
            item = events.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            break
        if item[0] == "END":
            break
        if item[0] == "ERROR":
            raise AssertionError(f"the watch failed: {item[1]}")
        seen.append(item)
    stop.set()
    kinds = [(t, n) for t, n, _ in seen]
    check(
        kinds
        == [
            ("ADDED", "settings"),
            ("MODIFIED", "settings"),
            ("MODIFIED", "settings"),
            ("DELETED", "settings"),
        ],
        f"watch with app=e2e received ADDED, MODIFIED (patch), MODIFIED (replace), DELETED: {kinds}",
    )
    revisions = [int(rv) for _, _, rv in seen[:3]]
    check(revisions == sorted(set(revisions)), f"watch events carry increasing resourceVersions {revisions}")

    print("ALL OK", flush=True)


if __name__ == "__main__":
    main()
