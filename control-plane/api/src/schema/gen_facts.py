#!/usr/bin/env python3
"""Writes facts.rs: the Kubernetes schema extensions of every definition k8s-openapi has.

The facts are the `+listType`, `+listMapKey`, `+mapType`, `+structType`, `+patchStrategy` and
`+patchMergeKey` markers of the Kubernetes API types. They are read from the doc comments of the
k8s-pb crate (prost code generated from the upstream generated.proto files, which carry the Go
types' comments and their markers); definition names (`io.k8s.api.core.v1.PodSpec`) and JSON
property names come from k8s-openapi (its `schema_name` and serde field names), joined on the
module path, the type name and the field name with case and underscores ignored. A field of an
embedded Go struct (`VolumeSource` in `Volume`, `ProbeHandler` in `Probe`) counts as a property of
the embedding type, as it does in JSON.

    python3 gen_facts.py ~/.cargo/registry/src/*/k8s-pb-0.9.0 \
        ~/.cargo/registry/src/*/k8s-openapi-0.29.0 v1_33 > facts.rs
"""

import os
import re
import sys

STRUCT = re.compile(r'^pub struct (\w+) \{')
FIELD = re.compile(r'^\s*pub (?:r#)?(\w+):(.*)$')
MARKER = re.compile(r'^\s*///\s*\+(listType|listMapKey|patchStrategy|patchMergeKey|mapType|structType)=(\S+)\s*$')


def norm(name):
    """Field names compared without case, `_`, `-` and `$` (`x_kubernetes_list_type` is
    `x-kubernetes-list-type`, `ref` is `$ref`)."""
    return name.replace("_", "").replace("-", "").replace("$", "").lower()


def type_key(full):
    """A message's key: prost renames acronyms (`PodDNSConfig` -> `PodDnsConfig`), so type
    names are compared in lower case."""
    module, name = full.rsplit("/", 1)
    return module + "/" + name.lower()


def resolve(module, ty):
    paths = re.findall(r'((?:super::)*(?:\w+::)*[A-Z]\w*)', ty)
    paths = [p for p in paths if p.split("::")[-1] not in ("Option", "Vec", "BTreeMap", "String", "Box")]
    if not paths:
        return None
    parts = paths[-1].split("::")
    base = module.split("/")
    while parts[0] == "super":
        base = base[:-1]
        parts = parts[1:]
    return "/".join(base + parts[:-1]) + "/" + parts[-1]


def parse_pb(root):
    """{module/Name: {"markers": {...}, "fields": [(snake, target, markers)]}}"""
    out = {}
    src = os.path.join(root, "src")
    for dirpath, _, files in os.walk(src):
        if "mod.rs" not in files:
            continue
        module = os.path.relpath(dirpath, src)
        lines = open(os.path.join(dirpath, "mod.rs")).read().split("\n")
        current = None
        pending = {}
        i = 0
        while i < len(lines):
            line = lines[i]
            m = MARKER.match(line)
            if m:
                key, value = m.group(1), m.group(2)
                if key == "listMapKey":
                    pending.setdefault(key, []).append(value)
                else:
                    pending[key] = value
            s = STRUCT.match(line)
            if s:
                current = out.setdefault(type_key(module + "/" + s.group(1)), {"markers": pending, "fields": []})
                pending = {}
            elif line.startswith("}"):
                current = None
                pending = {}
            elif "#[prost(" in line and current is not None:
                j = i + 1
                decl = lines[j]
                while not decl.rstrip().endswith(",") or decl.count("<") != decl.count(">"):
                    j += 1
                    decl = decl + lines[j].strip()
                f = FIELD.match(decl)
                body = line
                target = resolve(module, f.group(2)) if "message" in body else None
                target = type_key(target) if target else None
                current["fields"].append((f.group(1), target, pending))
                pending = {}
                i = j
            elif not line.strip().startswith("///") and not line.strip().startswith("#["):
                pending = {}
            i += 1
    return out


def parse_openapi(root, version):
    """[(definition, module/Name, [json property names])]"""
    out = []
    src = os.path.join(root, "src", version)
    for dirpath, _, files in os.walk(src):
        module = os.path.relpath(dirpath, src)
        for file in files:
            if not file.endswith(".rs") or file == "mod.rs":
                continue
            text = open(os.path.join(dirpath, file)).read()
            for block in re.finditer(r'impl crate::schemars::JsonSchema for (\w+) \{\s*fn schema_name\(\) -> std::borrow::Cow<\'static, str> \{\s*"([^"]+)"', text):
                name, definition = block.group(1), block.group(2)
                fields = re.findall(r'"([^"]+)" => Field::Key_(\w+),', text)
                out.append((definition, module + "/" + name, [j for j, _ in fields]))
    return out


def find(pb, full, prop, depth=0):
    """The markers of JSON property `prop` of pb message `full`, looking into embedded structs."""
    message = pb.get(type_key(full))
    if message is None or depth > 2:
        return None
    for snake, target, markers in message["fields"]:
        if norm(snake) == norm(prop):
            return markers
    for snake, target, markers in message["fields"]:
        if target and norm(snake) == norm(target.rsplit("/", 1)[1]) or (target and target.endswith("handler")):
            found = find(pb, target, prop, depth + 1)
            if found is not None:
                return found
    return None


LIST = {"atomic": "ListType::Atomic", "set": "ListType::Set", "map": "ListType::Map"}
MAP = {"atomic": "MapType::Atomic", "granular": "MapType::Granular"}
PATCH = {
    "merge": "PatchStrategy::Merge",
    "replace": "PatchStrategy::Replace",
    "retainKeys": "PatchStrategy::RetainKeys",
    "merge,retainKeys": "PatchStrategy::MergeRetainKeys",
}


def opt(value):
    return f"Some({value})" if value else "None"


def main():
    pb = parse_pb(sys.argv[1])
    definitions = parse_openapi(sys.argv[2], sys.argv[3])
    properties, structs = [], []
    for definition, full, props in sorted(definitions):
        message = pb.get(type_key(full))
        if message is None:
            continue
        struct_type = message["markers"].get("structType")
        if struct_type:
            structs.append((definition, MAP[struct_type]))
        for prop in props:
            markers = find(pb, full, prop)
            if not markers:
                continue
            list_type = markers.get("listType")
            keys = markers.get("listMapKey", [])
            map_type = markers.get("mapType") or markers.get("structType")
            strategy = markers.get("patchStrategy")
            merge_key = markers.get("patchMergeKey")
            if not (list_type or map_type or strategy or merge_key):
                continue
            properties.append((definition, prop, list_type, keys, map_type, strategy, merge_key))
    # Sorted as Rust compares `&str` (bytes), for the binary search of `property`.
    properties.sort(key=lambda row: (row[0].encode(), row[1].encode()))
    structs.sort(key=lambda row: row[0].encode())
    out = [
        "//! @generated by gen_facts.py from k8s-pb 0.9.0 (the markers of the Kubernetes API types)",
        "//! and k8s-openapi 0.29 v1_33 (definition and property names). Do not edit; regenerate instead.",
        "",
        "use super::{ListType, MapType, PatchStrategy, PropertyFacts};",
        "",
        "/// Every property with a fact, sorted by definition then property.",
        "#[rustfmt::skip]",
        "pub(super) static PROPERTIES: &[(&str, &str, PropertyFacts)] = &[",
    ]
    for definition, prop, list_type, keys, map_type, strategy, merge_key in properties:
        keys_rs = "&[" + ", ".join(f'"{k}"' for k in keys) + "]"
        out.append(
            f'    ("{definition}", "{prop}", PropertyFacts {{ list_type: {opt(LIST.get(list_type))}, '
            f'list_map_keys: {keys_rs}, map_type: {opt(MAP.get(map_type))}, '
            f'patch_strategy: {opt(PATCH.get(strategy))}, '
            f'patch_merge_key: {opt(chr(34) + merge_key + chr(34) if merge_key else None)} }}),'
        )
    out.append("];")
    out.append("")
    out.append("/// Definitions whose object is one value (`+structType`), sorted.")
    out.append("#[rustfmt::skip]")
    out.append("pub(super) static STRUCTS: &[(&str, MapType)] = &[")
    for definition, map_type in structs:
        out.append(f'    ("{definition}", {map_type}),')
    out.append("];")
    print("\n".join(out))
    print(f"{len(properties)} properties, {len(structs)} structs, "
          f"{len(set(p[0] for p in properties) | set(s[0] for s in structs))} definitions with facts, "
          f"{len(definitions)} definitions read", file=sys.stderr)


main()
