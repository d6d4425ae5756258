#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target (fuzz/corpus/<target>/seed-*) from keelson's own
example manifest, the kubectl/k8s-pb protobuf bodies recorded in the API server's test data and
requests a client sends. Re-run after changing a seed; inputs found by fuzzing that once crashed
are committed beside them as crash-*."""
import json, os, pathlib, shutil

ROOT = pathlib.Path(__file__).resolve().parent
REPO = ROOT.parent
CORPUS = ROOT / "corpus"

def put(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, (dict, list)):
        data = json.dumps(data, indent=None)
    if isinstance(data, str):
        data = data.encode()
    (d / f"seed-{name}").write_bytes(data)

pod = {"apiVersion": "v1", "kind": "Pod",
       "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
       "spec": {"containers": [{"name": "app", "image": "busybox", "command": ["httpd", "-f"],
                                "ports": [{"containerPort": 80}],
                                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}}
deploy = {"apiVersion": "apps/v1", "kind": "Deployment",
          "metadata": {"name": "web", "namespace": "default"},
          "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                   "template": {"metadata": {"labels": {"app": "web"}},
                                "spec": {"containers": [{"name": "app", "image": "busybox"}]}}}}
svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
       "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": 80}]}}
cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}}

for name, obj in [("pod", pod), ("deployment", deploy), ("service", svc), ("configmap", cm)]:
    put("json_body", name, obj)
put("json_body", "duplicate-key", '{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","name":"b"}}')
put("json_body", "unknown-field", '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c"},"spec":{}}')

example = (REPO / "examples" / "hello.yaml").read_text()
for i, doc in enumerate(example.split("\n---\n")):
    if doc.strip():
        put("yaml_body", f"hello-{i}", doc)
put("yaml_body", "duplicate-key", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  name: b\n")
put("yaml_body", "anchors", "apiVersion: v1\nkind: ConfigMap\nmetadata: &m\n  name: a\ndata:\n  x: &v '1'\n  y: *v\n")

testdata = REPO / "control-plane" / "apiserver" / "src" / "protobuf" / "testdata"
for f in sorted(testdata.glob("*.bin")):
    put("protobuf_body", f.stem, f.read_bytes())

put("merge_patch", "labels", {"metadata": {"labels": {"tier": "2", "app": None}}})
put("merge_patch", "replicas", {"spec": {"replicas": 5}})
put("merge_patch", "replace-list", {"spec": {"containers": [{"name": "app", "image": "nginx"}]}})
put("strategic_merge_patch", "container-image", {"spec": {"containers": [{"name": "app", "image": "nginx"}]}})
put("strategic_merge_patch", "delete-container", {"spec": {"containers": [{"name": "side", "$patch": "delete"}]}})
put("strategic_merge_patch", "retain-keys", {"spec": {"template": {"spec": {"$retainKeys": ["containers"], "containers": [{"name": "app", "image": "x"}]}}}})
put("strategic_merge_patch", "set-element-order", {"spec": {"$setElementOrder/containers": [{"name": "side"}, {"name": "app"}]}})
put("strategic_merge_patch", "ports", {"spec": {"ports": [{"port": 443, "protocol": "TCP", "name": "https"}]}})
put("strategic_merge_patch", "delete-from-primitive-list", {"spec": {"containers": [{"name": "side", "$deleteFromPrimitiveList/args": ["1d"]}]}})
put("json_patch", "add-label", [{"op": "add", "path": "/metadata/labels/tier", "value": "2"}])
put("json_patch", "test-replace", [{"op": "test", "path": "/spec/replicas", "value": 2}, {"op": "replace", "path": "/spec/replicas", "value": 3}])
put("json_patch", "move-copy-remove", [{"op": "copy", "from": "/spec/containers/0", "path": "/spec/containers/-"}, {"op": "move", "from": "/metadata/labels", "path": "/metadata/annotations"}, {"op": "remove", "path": "/spec/containers/1"}])
put("json_patch", "escaped", [{"op": "add", "path": "/metadata/labels/example.com~1role", "value": "x"}])
put("server_side_apply", "pod", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: default\nspec:\n  containers:\n  - name: app\n    image: nginx\n")
put("server_side_apply", "deployment", "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 3\n  template:\n    spec:\n      containers:\n      - name: app\n        image: nginx\n")
put("server_side_apply", "service", json.dumps(svc))
for name, text in [("eq", "app=web"), ("set", "tier in (1,2),app notin (db)"), ("exists", "!example.com/role,app"),
                   ("ne", "app!=db,env==prod"), ("gt", "tier>1,tier<5")]:
    put("label_selector", name, text)
for name, text in [("name", "metadata.name=web"), ("node", "spec.nodeName=n1,status.phase!=Failed"),
                   ("escaped", "metadata.name=a\\,b"), ("double", "status.podIP==10.0.0.5")]:
    put("field_selector", name, text)
for q in ["100m", "1.5Gi", "0.5", "1e3", "12E", "-2Ki", "+7", "1234567890123456789m", "0.000000001", ".5M"]:
    put("quantity", q.replace(".", "dot").replace("+", "plus"), q)
put("crd_schema", "widget", {"schema": {"type": "object", "properties": {
    "spec": {"type": "object", "required": ["size"], "properties": {
        "size": {"type": "integer", "minimum": 1, "default": 1},
        "name": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 10},
        "items": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["k"],
                  "items": {"type": "object", "required": ["k"], "properties": {"k": {"type": "string"}, "v": {"type": "integer"}}}},
        "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        "port": {"x-kubernetes-int-or-string": True}},
        "x-kubernetes-validations": [{"rule": "self.size <= 10", "message": "too big"}]}}},
    "objects": [{"spec": {"size": 2, "name": "abc", "items": [{"k": "a", "v": 1}], "port": "http", "junk": 1}},
                {"spec": {"size": 20, "name": "ABC", "items": [{"k": "a"}, {"k": "a"}]}}]})
put("crd_schema", "embedded", {"schema": {"type": "object", "properties": {"spec": {"type": "object", "properties": {
    "template": {"type": "object", "x-kubernetes-embedded-resource": True, "x-kubernetes-preserve-unknown-fields": True},
    "mode": {"type": "string", "enum": ["a", "b"], "default": "a"},
    "when": {"type": "string", "format": "date-time", "nullable": True}}}}},
    "objects": [{"spec": {"template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}}, "when": None}}]})
for name, rule in [("size", "self.replicas <= 10"), ("transition", "self.replicas >= oldSelf.replicas"),
                   ("all", "self.tags.all(t, t.size() < 10)"), ("has", "has(self.name) ? self.name.startsWith('a') : true"),
                   ("quantity", "!has(self.limits) || quantity(string(self.limits['cpu'])).isLessThan(quantity('1'))"),
                   ("regex", "self.name.matches('^[a-z]*$')"), ("duration", "!has(self.every) || duration(self.every) < duration('2h')"),
                   ("policy", "object.metadata.name != '' && request.operation == 'CREATE'"),
                   ("variables", "variables.size > 0 && params.spec.max >= 1"),
                   ("map", "self.tags.map(t, t + '!').exists(t, t == 'x!')")]:
    put("cel", name, rule)
put("dns_zone", "lookups", "cluster.local\nweb.default.svc.cluster.local.\n10.0.0.20.in-addr.arpa.\n_http._tcp.web.default.svc.cluster.local.\ndb-0.db.prod.svc.cluster.local.\next.default.svc.cluster.local.\ncluster.local.\n")
put("dns_zone", "objects", json.dumps({"services": [{"metadata": {"name": "v6", "namespace": "n"}, "spec": {"clusterIP": "fd00::1", "clusterIPs": ["fd00::1"], "ports": [{"port": 80}]}}], "slices": []}) + "\nv6.n.svc.cluster.local.\nv6.n.svc.cluster.local.\n")
put("agent_config", "node", "kubeconfig: /etc/keelson/node.kubeconfig\nnode-name: worker-1\nnode-address: [192.0.2.10, 2001:db8::1]\nct-capacity: 524288\nmasquerade-all: true\nkubeReserved: [cpu=100m]\nmetrics-address: 127.0.0.1:10249\n")
put("agent_config", "bad", "node-name: [a, b]\nconfig: x\n")
