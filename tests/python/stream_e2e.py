"""The Python `kubernetes` client's streaming helpers against keelson: `stream()` exec (stdout,
stdin, the exit code through the error channel) and `portforward()` (an HTTP request to a pod's
port 80 through the WebSocket port-forward protocol).

Usage: stream_e2e.py KUBECONFIG NAMESPACE EXEC_POD WEB_POD

Each check prints a line; a failed check raises. The last line is `ALL OK`.
"""

import sys

from kubernetes import client, config
from kubernetes.stream import portforward, stream


def check(condition, what):
    if not condition:
        raise AssertionError(what)
    print(f"ok: {what}", flush=True)


def main():
    kubeconfig, namespace, exec_pod, web_pod = sys.argv[1:5]
    config.load_kube_config(config_file=kubeconfig)
    api = client.CoreV1Api()

    out = stream(
        api.connect_get_namespaced_pod_exec,
        exec_pod,
        namespace,
        container="box",
        command=["echo", "from python"],
        stderr=True,
        stdin=False,
        stdout=True,
        tty=False,
    )
    check(out == "from python\n", f"exec output {out!r}")

    resp = stream(
        api.connect_get_namespaced_pod_exec,
        exec_pod,
        namespace,
        container="box",
        command=["sh", "-c", "read line; echo got $line; exit 7"],
        stderr=True,
        stdin=True,
        stdout=True,
        tty=False,
        _preload_content=False,
    )
    resp.write_stdin("hello\n")
    output = ""
    for _ in range(100):
        if not resp.is_open():
            break
        resp.update(timeout=1)
        output += resp.read_stdout()
    resp.close()
    check("got hello" in output, f"exec stdin echoed {output!r}")
    check(resp.returncode == 7, f"exec exit code {resp.returncode}")

    pf = portforward(api.connect_get_namespaced_pod_portforward, web_pod, namespace, ports="80")
    sock = pf.socket(80)
    sock.setblocking(True)
    sock.sendall(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")
    answer = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            break
        answer += chunk
    sock.close()
    error = pf.error(80)
    check(answer.startswith(b"HTTP/1.") and web_pod.encode() in answer, f"portforward answer {answer[:200]!r}")
    check(error is None, f"portforward error {error!r}")
    pf.close()
    print("ALL OK", flush=True)


if __name__ == "__main__":
    main()
