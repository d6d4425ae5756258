#!/usr/bin/env python3
"""Writes schema.rs: the protobuf wire schema of the Kubernetes types keelson decodes.

Field numbers and wire types come from the k8s-pb crate (prost code generated from the upstream
generated.proto files); JSON field names come from k8s-openapi (its serde field names), joined on
the type name and the field name with case and underscores ignored. Only messages reachable from
ROOTS are written.

    python3 gen_schema.py ~/.cargo/registry/src/*/k8s-pb-0.9.0 \
        ~/.cargo/registry/src/*/k8s-openapi-0.29.0 v1_33 > schema.rs
"""

import os
import re
import sys

ROOTS = [
    # core/v1
    "api/core/v1/Namespace",
    "api/core/v1/Pod",
    "api/core/v1/Binding",
    "api/core/v1/Service",
    "api/core/v1/Endpoints",
    "api/core/v1/Node",
    "api/core/v1/Event",
    "api/core/v1/ConfigMap",
    "api/core/v1/Secret",
    "api/core/v1/ServiceAccount",
    "api/core/v1/ReplicationController",
    "api/core/v1/PersistentVolume",
    "api/core/v1/PersistentVolumeClaim",
    "api/core/v1/PodTemplate",
    "api/core/v1/LimitRange",
    "api/core/v1/ResourceQuota",
    # serviceaccounts/token (`kubectl create token`)
    "api/authentication/v1/TokenRequest",
    # apps/v1
    "api/apps/v1/Deployment",
    "api/apps/v1/ReplicaSet",
    "api/apps/v1/DaemonSet",
    "api/apps/v1/StatefulSet",
    "api/apps/v1/ControllerRevision",
    # batch/v1
    "api/batch/v1/Job",
    "api/batch/v1/CronJob",
    # autoscaling
    "api/autoscaling/v1/Scale",
    "api/autoscaling/v2/HorizontalPodAutoscaler",
    # policy/v1
    "api/policy/v1/PodDisruptionBudget",
    "api/policy/v1/Eviction",
    # rbac.authorization.k8s.io/v1
    "api/rbac/v1/Role",
    "api/rbac/v1/RoleBinding",
    "api/rbac/v1/ClusterRole",
    "api/rbac/v1/ClusterRoleBinding",
    # networking.k8s.io/v1
    "api/networking/v1/NetworkPolicy",
    "api/networking/v1/Ingress",
    "api/networking/v1/IngressClass",
    "api/networking/v1/IPAddress",
    "api/networking/v1/ServiceCIDR",
    # storage.k8s.io/v1
    "api/storage/v1/StorageClass",
    "api/storage/v1/CSIDriver",
    "api/storage/v1/CSINode",
    "api/storage/v1/VolumeAttachment",
    "api/storage/v1/CSIStorageCapacity",
    # admissionregistration.k8s.io/v1
    "api/admissionregistration/v1/MutatingWebhookConfiguration",
    "api/admissionregistration/v1/ValidatingWebhookConfiguration",
    "api/admissionregistration/v1/ValidatingAdmissionPolicy",
    "api/admissionregistration/v1/ValidatingAdmissionPolicyBinding",
    # apiregistration.k8s.io/v1
    "kube_aggregator/pkg/apis/apiregistration/v1/APIService",
    # certificates.k8s.io/v1
    "api/certificates/v1/CertificateSigningRequest",
    # scheduling.k8s.io/v1
    "api/scheduling/v1/PriorityClass",
    # node.k8s.io/v1
    "api/node/v1/RuntimeClass",
    # events.k8s.io/v1
    "api/events/v1/Event",
    # flowcontrol.apiserver.k8s.io/v1
    "api/flowcontrol/v1/FlowSchema",
    "api/flowcontrol/v1/PriorityLevelConfiguration",
    # discovery.k8s.io/v1, coordination.k8s.io/v1
    "api/discovery/v1/EndpointSlice",
    "api/coordination/v1/Lease",
    # meta/v1
    "apimachinery/pkg/apis/meta/v1/DeleteOptions",
    # authorization.k8s.io/v1 (`kubectl auth can-i`)
    "api/authorization/v1/SubjectAccessReview",
    "api/authorization/v1/LocalSubjectAccessReview",
    "api/authorization/v1/SelfSubjectAccessReview",
    "api/authorization/v1/SelfSubjectRulesReview",
]

# Messages the decoder renders itself (their JSON form is not an object of their fields).
SPECIAL = {
    "apimachinery/pkg/apis/meta/v1/Time": "Time",
    "apimachinery/pkg/apis/meta/v1/MicroTime": "MicroTime",
    "apimachinery/pkg/apis/meta/v1/Duration": "Duration",
    "apimachinery/pkg/apis/meta/v1/FieldsV1": "RawJson",
    "apimachinery/pkg/runtime/RawExtension": "RawJson",
    "apimachinery/pkg/util/intstr/IntOrString": "IntOrString",
    "apimachinery/pkg/api/resource/Quantity": "Quantity",
    # A Go []string given a message of its own (`repeated string items = 1`) so it can be a map value.
    "api/certificates/v1/ExtraValue": "StringList",
    "api/authorization/v1/ExtraValue": "StringList",
}

SCALARS = {
    "string": "String",
    "bool": "Bool",
    "int32": "Int32",
    "int64": "Int64",
    "double": "Double",
    "bytes": "Bytes",
}

ATTR = re.compile(r'#\[prost\((?P<body>.*)\)\]')
STRUCT = re.compile(r'^pub struct (\w+) \{')
FIELD = re.compile(r'^\s*pub (?:r#)?(\w+):(.*)$')


def norm(name):
    return name.replace("_", "").lower()


def parse_pb(root):
    """{module: {struct: [(tag, snake, kind, repeated, target)]}}"""
    modules = {}
    src = os.path.join(root, "src")
    for dirpath, _, files in os.walk(src):
        if "mod.rs" not in files:
            continue
        module = os.path.relpath(dirpath, src)
        lines = open(os.path.join(dirpath, "mod.rs")).read().split("\n")
        structs = modules.setdefault(module, {})
        current = None
        i = 0
        while i < len(lines):
            line = lines[i]
            m = STRUCT.match(line)
            if m:
                current = structs.setdefault(m.group(1), [])
            elif line.startswith("}"):
                current = None
            a = ATTR.search(line)
            if a and current is not None:
                body = a.group("body")
                # The field declaration may wrap over several lines.
                j = i + 1
                decl = lines[j]
                while not decl.rstrip().endswith(",") or decl.count("<") != decl.count(">"):
                    j += 1
                    decl = decl + lines[j].strip()
                f = FIELD.match(decl)
                snake, ty = f.group(1), f.group(2)
                tag = int(re.search(r'tag = "(\d+)"', body).group(1))
                repeated = ", repeated" in body
                target = None
                if body.startswith("btree_map"):
                    value = re.search(r'btree_map = "string, (\w+)"', body).group(1)
                    kind = "Map"
                    if value == "message":
                        target = resolve(module, ty)
                    value_kind = value
                else:
                    value_kind = None
                    kind = body.split(",")[0].split(" ")[0]
                    if kind == "message":
                        target = resolve(module, ty)
                current.append((tag, snake, kind, repeated, target, value_kind))
                i = j
            i += 1
    return modules


def resolve(module, ty):
    """The module/Name of the last type path in `ty` (relative `super::` paths resolved)."""
    paths = re.findall(r'((?:super::)*(?:\w+::)*[A-Z]\w*)', ty)
    path = [p for p in paths if p.split("::")[-1] not in ("Option", "Vec", "BTreeMap", "String", "Box")][-1]
    parts = path.split("::")
    base = module.split("/")
    while parts[0] == "super":
        base = base[:-1]
        parts = parts[1:]
    return "/".join(base + parts[:-1]) + "/" + parts[-1]


def parse_openapi(root, version):
    """{module/lowername: {norm(snake): json}}"""
    names = {}
    src = os.path.join(root, "src", version)
    for dirpath, _, files in os.walk(src):
        module = os.path.relpath(dirpath, src)
        for file in files:
            if not file.endswith(".rs") or file == "mod.rs":
                continue
            text = open(os.path.join(dirpath, file)).read()
            s = re.search(r'pub struct (\w+) \{', text)
            if not s:
                continue
            fields = {}
            for json_name, snake in re.findall(r'"([^"]+)" => Field::Key_(\w+),', text):
                fields[norm(snake)] = json_name
            names[module + "/" + s.group(1).lower()] = fields
    return names


def embedded(pb, target, snake, parent_names):
    """Whether a field of message type `target` is an embedded Go struct: named after its type,
    or every field of the target is a JSON field of the parent (Probe's ProbeHandler `handler`)."""
    module, name = target.rsplit("/", 1)
    if norm(snake) == norm(name):
        return True
    fields = pb[module][name]
    return bool(parent_names) and all(norm(f[1]) in parent_names for f in fields)


def camel(snake):
    head, *rest = snake.split("_")
    return head + "".join(p.capitalize() for p in rest)


def main():
    pb = parse_pb(sys.argv[1])
    openapi = parse_openapi(sys.argv[2], sys.argv[3])
    wanted, queue, embedders = [], list(ROOTS), {}
    while queue:
        full = queue.pop()
        if full in wanted or full in SPECIAL:
            continue
        wanted.append(full)
        module, name = full.rsplit("/", 1)
        for field in pb[module][name]:
            if field[4]:
                queue.append(field[4])
                embedders.setdefault(field[4], full)
    out = [
        "//! @generated by gen_schema.py from k8s-pb 0.9.0 (field numbers and wire types) and",
        "//! k8s-openapi 0.29 v1_33 (JSON field names). Do not edit; regenerate instead.",
        "",
        "use super::{Field, Kind, Message};",
        "",
        "/// Every message keelson decodes, sorted by name.",
        "#[rustfmt::skip]",
        "pub(super) static MESSAGES: &[Message] = &[",
    ]
    for full in sorted(wanted):
        module, name = full.rsplit("/", 1)
        json_names = openapi.get(module + "/" + name.lower())
        if json_names is None and full in embedders:
            # A Go struct only ever embedded (VolumeSource in Volume): the embedder's names.
            parent_module, parent = embedders[full].rsplit("/", 1)
            json_names = openapi.get(parent_module + "/" + parent.lower())
        json_names = json_names or {}
        out.append(f'    Message {{ name: "{full}", fields: &[')
        for tag, snake, kind, repeated, target, value_kind in sorted(pb[module][name]):
            json_name = json_names.get(norm(snake))
            if json_name is None:
                if kind == "message" and target not in SPECIAL and embedded(pb, target, snake, json_names):
                    # An embedded Go struct: inlined in JSON.
                    json_name = ""
                else:
                    # Newer than the k8s-openapi version: the usual lowerCamel name.
                    json_name = camel(snake)
                    print(f"guessed {full}.{json_name}", file=sys.stderr)
            if kind == "Map":
                inner = kind_of(value_kind, target)
                rust_kind = f"Kind::Map(&{inner})"
            else:
                rust_kind = kind_of(kind, target)
            out.append(
                f'        Field {{ tag: {tag}, json: "{json_name}", kind: {rust_kind}, repeated: {"true" if repeated else "false"} }},'
            )
        out.append("    ] },")
    out.append("];")
    print("\n".join(out))


def kind_of(kind, target):
    if kind == "message":
        if target in SPECIAL:
            return f"Kind::{SPECIAL[target]}"
        return f'Kind::Message("{target}")'
    return f"Kind::{SCALARS[kind]}"


main()
