//! PersistentVolumes, PersistentVolumeClaims and the storage.k8s.io kinds (StorageClass,
//! CSIDriver, CSINode, VolumeAttachment, CSIStorageCapacity), after
//! `pkg/apis/core/validation` and `pkg/apis/storage/validation` (v1.33).

use serde_json::Value;

use crate::quantity::Quantity;

use super::errors::FieldError;
use super::formats::{self, NameRule};
use super::meta::{self, IMMUTABLE};
use super::placement;
use super::resources::quantity_value;
use super::util::{Errs, Path, arr, at, get, int_opt, obj, str_opt, str_or, strings};
use super::volume::{csi_driver_name, no_backsteps};

const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];

const PV_SOURCES: &[&str] = &[
    "hostPath",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "glusterfs",
    "flocker",
    "nfs",
    "rbd",
    "quobyte",
    "cephfs",
    "iscsi",
    "cinder",
    "fc",
    "flexVolume",
    "azureFile",
    "vsphereVolume",
    "photonPersistentDisk",
    "portworxVolume",
    "azureDisk",
    "scaleIO",
    "local",
    "storageos",
    "csi",
];

fn access_modes(spec: &Value, path: &Path, required_detail: &str, errs: &mut Errs) {
    let modes = strings(spec, "accessModes");
    let mp = path.child("accessModes");
    if modes.is_empty() {
        errs.push(FieldError::required(mp.as_str(), required_detail));
    }
    let (mut rwop, mut other) = (false, false);
    for m in &modes {
        if !ACCESS_MODES.contains(m) {
            errs.push(FieldError::not_supported(mp.as_str(), *m, ACCESS_MODES));
        } else if *m == "ReadWriteOncePod" {
            rwop = true;
        } else {
            other = true;
        }
    }
    if rwop && other {
        errs.push(FieldError::forbidden(
            mp.as_str(),
            "may not use ReadWriteOncePod with other access modes",
        ));
    }
}

fn volume_mode(spec: &Value, path: &Path, errs: &mut Errs) {
    if let Some(mode) = str_opt(spec, "volumeMode")
        && mode != "Block"
        && mode != "Filesystem"
    {
        errs.push(FieldError::not_supported(
            path.child("volumeMode").as_str(),
            mode,
            &["Block", "Filesystem"],
        ));
    }
}

fn class_name(spec: &Value, field: &str, path: &Path, errs: &mut Errs) {
    let name = str_or(spec, field);
    if !name.is_empty() {
        for m in formats::dns1123_subdomain(name) {
            errs.push(FieldError::invalid(path.child(field).as_str(), name, m));
        }
    }
}

fn positive_quantity(raw: &Value, path: &Path, errs: &mut Errs) -> Option<Quantity> {
    let text = raw.as_str().map_or_else(|| raw.to_string(), str::to_owned);
    match Quantity::parse_trimmed(&text) {
        Err(e) => {
            errs.push(FieldError::invalid(path.as_str(), text, e.to_string()));
            None
        }
        Ok(q) if q.is_negative() || q.is_zero() => {
            errs.push(FieldError::invalid(
                path.as_str(),
                q.to_string(),
                "must be greater than zero",
            ));
            None
        }
        Ok(q) => Some(q),
    }
}

fn pv_spec(object: &Value, errs: &mut Errs) {
    let spec = at(object, "spec");
    let path = Path::root("spec");
    access_modes(spec, &path, "", errs);
    let cp = path.child("capacity");
    let capacity = obj(spec, "capacity");
    if capacity.is_none_or(serde_json::Map::is_empty) {
        errs.push(FieldError::required(cp.as_str(), ""));
    }
    if capacity.is_none_or(|c| !c.contains_key("storage") || c.len() > 1) {
        errs.push(FieldError::not_supported(
            cp.as_str(),
            get(spec, "capacity").cloned().unwrap_or(Value::Null),
            &["storage"],
        ));
    }
    if let Some(c) = capacity {
        for (name, raw) in c {
            positive_quantity(raw, &cp.key(name), errs);
        }
    }
    let reclaim = str_opt(spec, "persistentVolumeReclaimPolicy").unwrap_or("Retain");
    if !reclaim.is_empty() && !matches!(reclaim, "Delete" | "Recycle" | "Retain") {
        errs.push(FieldError::not_supported(
            path.child("persistentVolumeReclaimPolicy").as_str(),
            reclaim,
            &["Delete", "Recycle", "Retain"],
        ));
    }
    let mut affinity = false;
    if let Some(na) = get(spec, "nodeAffinity") {
        affinity = true;
        match get(na, "required") {
            Some(req) => {
                placement::node_selector(req, &path.child("nodeAffinity").child("required"), errs)
            }
            None => errs.push(FieldError::required(
                path.child("nodeAffinity").child("required").as_str(),
                "must specify required node constraints",
            )),
        }
    }
    let mut found = false;
    for &src in PV_SOURCES {
        let Some(body) = get(spec, src) else {
            continue;
        };
        let sp = path.child(src);
        if found && src != "flexVolume" {
            errs.push(FieldError::forbidden(
                sp.as_str(),
                "may not specify more than 1 volume type",
            ));
            continue;
        }
        found = true;
        match src {
            "hostPath" | "local" => {
                let p = str_or(body, "path");
                if p.is_empty() {
                    errs.push(FieldError::required(sp.child("path").as_str(), ""));
                } else {
                    no_backsteps(p, &sp.child("path"), errs);
                }
                if src == "local" && !affinity {
                    errs.push(FieldError::required(
                        path.child("nodeAffinity").as_str(),
                        "Local volume requires node affinity",
                    ));
                }
            }
            "nfs" => {
                for f in ["server", "path"] {
                    if str_or(body, f).is_empty() {
                        errs.push(FieldError::required(sp.child(f).as_str(), ""));
                    }
                }
                let p = str_or(body, "path");
                if !p.starts_with('/') {
                    errs.push(FieldError::invalid(
                        sp.child("path").as_str(),
                        p,
                        "must be an absolute path",
                    ));
                }
            }
            "csi" => {
                csi_driver_name(str_or(body, "driver"), &sp.child("driver"), errs);
                if str_or(body, "volumeHandle").is_empty() {
                    errs.push(FieldError::required(sp.child("volumeHandle").as_str(), ""));
                }
            }
            _ => {}
        }
    }
    if !found {
        errs.push(FieldError::required(
            path.as_str(),
            "must specify a volume type",
        ));
    }
    if let Some(hp) = get(spec, "hostPath")
        && str_or(hp, "path").trim_end_matches('/').is_empty()
        && !str_or(hp, "path").is_empty()
        && reclaim == "Recycle"
    {
        errs.push(FieldError::forbidden(
            path.child("persistentVolumeReclaimPolicy").as_str(),
            "may not be 'recycle' for a hostPath mount of '/'",
        ));
    }
    class_name(spec, "storageClassName", &path, errs);
    volume_mode(spec, &path, errs);
}

/// `ValidatePersistentVolume`.
pub(crate) fn pv(object: &Value, errs: &mut Errs) {
    meta::object_meta(object, NameRule::Subdomain, false, errs);
    pv_spec(object, errs);
}

fn pv_source(spec: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for &src in PV_SOURCES {
        if let Some(v) = get(spec, src) {
            out.insert(src.to_owned(), super::normalized(v));
        }
    }
    Value::Object(out)
}

/// `ValidatePersistentVolumeUpdate`: the volume source and mode never change; node affinity
/// may only be added.
pub(crate) fn pv_update(new: &Value, old: &Value, errs: &mut Errs) {
    meta::object_meta_update(new, old, errs);
    pv(new, errs);
    let (ns, os) = (at(new, "spec"), at(old, "spec"));
    let (nsrc, osrc) = (pv_source(ns), pv_source(os));
    if nsrc != osrc {
        errs.push(FieldError::forbidden(
            "spec.persistentvolumesource",
            format!(
                "spec.persistentvolumesource is immutable after creation\n{}",
                super::changed_fields(&osrc, &nsrc).join("\n")
            ),
        ));
    }
    meta::immutable(
        get(ns, "volumeMode"),
        get(os, "volumeMode"),
        &Path::root("volumeMode"),
        errs,
    );
    if let Some(oa) = get(os, "nodeAffinity")
        && get(ns, "nodeAffinity").map(super::normalized) != Some(super::normalized(oa))
    {
        errs.push(FieldError::invalid(
            "nodeAffinity",
            get(ns, "nodeAffinity").cloned().unwrap_or(Value::Null),
            "field is immutable, except for updating from beta label to GA",
        ));
    }
}

/// `ValidatePersistentVolumeClaimSpec`.
pub(crate) fn pvc_spec(spec: &Value, path: &Path, errs: &mut Errs) {
    access_modes(spec, path, "at least 1 access mode is required", errs);
    meta::label_selector(get(spec, "selector"), &path.child("selector"), errs);
    let rp = path.child("resources").key("storage");
    match get(at(at(spec, "resources"), "requests"), "storage") {
        None => errs.push(FieldError::required(rp.as_str(), "")),
        Some(raw) => {
            positive_quantity(raw, &rp, errs);
        }
    }
    class_name(spec, "storageClassName", path, errs);
    volume_mode(spec, path, errs);
    for field in ["dataSource", "dataSourceRef"] {
        let Some(ds) = get(spec, field) else {
            continue;
        };
        let dp = path.child(field);
        for f in ["name", "kind"] {
            if str_or(ds, f).is_empty() {
                errs.push(FieldError::required(dp.child(f).as_str(), ""));
            }
        }
        let group = str_or(ds, "apiGroup");
        let kind = str_or(ds, "kind");
        if group.is_empty() && kind != "PersistentVolumeClaim" {
            errs.push(FieldError::invalid(
                dp.as_str(),
                kind,
                "must be 'PersistentVolumeClaim' when referencing the default apiGroup",
            ));
        }
        if !group.is_empty() {
            for m in formats::dns1123_subdomain(group) {
                errs.push(FieldError::invalid(dp.child("apiGroup").as_str(), group, m));
            }
        }
    }
}

/// `ValidatePersistentVolumeClaim`.
pub(crate) fn pvc(object: &Value, errs: &mut Errs) {
    meta::object_meta(object, NameRule::Subdomain, true, errs);
    pvc_spec(at(object, "spec"), &Path::root("spec"), errs);
}

/// `ValidatePersistentVolumeClaimUpdate`: the spec is immutable except the storage request of
/// a bound claim, `volumeName` (once) and `storageClassName` (from unset).
pub(crate) fn pvc_update(new: &Value, old: &Value, errs: &mut Errs) {
    meta::object_meta_update(new, old, errs);
    pvc(new, errs);
    let (ns, os) = (at(new, "spec"), at(old, "spec"));
    let mut n = super::normalized(ns);
    let mut o = super::normalized(os);
    if str_or(os, "volumeName").is_empty()
        && let (Some(nm), Some(om)) = (n.as_object_mut(), o.as_object_mut())
    {
        match nm.get("volumeName") {
            Some(v) => om.insert("volumeName".into(), v.clone()),
            None => om.remove("volumeName"),
        };
    }
    if get(os, "storageClassName").is_none()
        && let Some(om) = o.as_object_mut()
        && let Some(v) = n.get("storageClassName")
    {
        om.insert("storageClassName".into(), v.clone());
    }
    let bound = str_or(at(new, "status"), "phase") == "Bound";
    let old_storage = at(at(os, "resources"), "requests").get("storage").cloned();
    if bound
        && let Some(req) = n.pointer_mut("/resources/requests")
        && let Some(m) = req.as_object_mut()
    {
        match &old_storage {
            Some(s) => m.insert("storage".into(), s.clone()),
            None => m.remove("storage"),
        };
    }
    if n != o {
        errs.push(FieldError::forbidden(
            "spec",
            format!(
                "spec is immutable after creation except resources.requests and \
                 volumeAttributesClassName for bound claims\n{}",
                super::changed_fields(&o, &n).join("\n")
            ),
        ));
    }
    let size = |spec: &Value| {
        str_opt(at(at(spec, "resources"), "requests"), "storage")
            .and_then(|s| Quantity::parse_trimmed(s).ok())
    };
    let status = str_opt(at(at(old, "status"), "capacity"), "storage")
        .and_then(|s| Quantity::parse_trimmed(s).ok());
    if let (Some(new_size), Some(old_size)) = (size(ns), size(os))
        && new_size < old_size
        && status.is_some_and(|s| new_size <= s)
    {
        errs.push(FieldError::forbidden(
            "spec.resources.requests.storage",
            "field can not be less than status.capacity",
        ));
    }
    meta::immutable(
        get(ns, "volumeMode"),
        get(os, "volumeMode"),
        &Path::root("volumeMode"),
        errs,
    );
}

/// `ValidateStorageClass`.
pub(crate) fn storage_class(object: &Value, errs: &mut Errs) {
    meta::object_meta(object, NameRule::Subdomain, false, errs);
    let provisioner = str_or(object, "provisioner");
    if provisioner.is_empty() {
        errs.push(FieldError::required("provisioner", ""));
    } else {
        meta::qualified_name(
            &provisioner.to_lowercase(),
            &Path::root("provisioner"),
            errs,
        );
    }
    if let Some(params) = obj(object, "parameters") {
        if params.len() > 512 {
            errs.push(FieldError::too_long("parameters", 512));
        } else {
            let mut total = 0;
            for (k, v) in params {
                if k.is_empty() {
                    errs.push(FieldError::invalid(
                        "parameters",
                        k.as_str(),
                        "field can not be empty.",
                    ));
                }
                total += k.len() + v.as_str().map_or(0, str::len);
            }
            if total > 256 * 1024 {
                errs.push(FieldError::too_long("parameters", 256 * 1024));
            }
        }
    }
    let reclaim = str_opt(object, "reclaimPolicy").unwrap_or("Delete");
    if !reclaim.is_empty() && reclaim != "Delete" && reclaim != "Retain" {
        errs.push(FieldError::not_supported(
            "reclaimPolicy",
            reclaim,
            &["Delete", "Retain"],
        ));
    }
    let mode = str_opt(object, "volumeBindingMode").unwrap_or("Immediate");
    if mode != "Immediate" && mode != "WaitForFirstConsumer" {
        errs.push(FieldError::not_supported(
            "volumeBindingMode",
            mode,
            &["Immediate", "WaitForFirstConsumer"],
        ));
    }
}

/// `ValidateStorageClassUpdate`: parameters, provisioner, reclaimPolicy and
/// volumeBindingMode never change.
pub(crate) fn storage_class_update(new: &Value, old: &Value, errs: &mut Errs) {
    meta::object_meta_update(new, old, errs);
    storage_class(new, errs);
    let params = |v: &Value| obj(v, "parameters").cloned().unwrap_or_default();
    if params(new) != params(old) {
        errs.push(FieldError::forbidden(
            "parameters",
            "updates to parameters are forbidden.",
        ));
    }
    if str_or(new, "provisioner") != str_or(old, "provisioner") {
        errs.push(FieldError::forbidden(
            "provisioner",
            "updates to provisioner are forbidden.",
        ));
    }
    let reclaim = |v: &Value| str_opt(v, "reclaimPolicy").unwrap_or("Delete").to_owned();
    if reclaim(new) != reclaim(old) {
        errs.push(FieldError::forbidden(
            "reclaimPolicy",
            "updates to reclaimPolicy are forbidden.",
        ));
    }
    let mode = |v: &Value| {
        str_opt(v, "volumeBindingMode")
            .unwrap_or("Immediate")
            .to_owned()
    };
    if mode(new) != mode(old) {
        errs.push(FieldError::invalid(
            "volumeBindingMode",
            mode(new),
            IMMUTABLE,
        ));
    }
}

/// `ValidateCSIDriver` (the driver name is reported at `name`).
pub(crate) fn csi_driver(object: &Value, errs: &mut Errs) {
    csi_driver_name(
        str_or(at(object, "metadata"), "name"),
        &Path::root("name"),
        errs,
    );
    let spec = at(object, "spec");
    let sp = Path::root("spec");
    if let Some(policy) = str_opt(spec, "fsGroupPolicy")
        && !matches!(policy, "File" | "None" | "ReadWriteOnceWithFSType")
    {
        errs.push(FieldError::not_supported(
            sp.child("fsGroupPolicy").as_str(),
            policy,
            &["File", "None", "ReadWriteOnceWithFSType"],
        ));
    }
    for (i, m) in strings(spec, "volumeLifecycleModes").iter().enumerate() {
        if *m != "Persistent" && *m != "Ephemeral" {
            errs.push(FieldError::not_supported(
                sp.child("volumeLifecycleModes").index(i).as_str(),
                *m,
                &["Ephemeral", "Persistent"],
            ));
        }
    }
    let mut audiences: Vec<&str> = Vec::new();
    for (i, t) in arr(spec, "tokenRequests").iter().enumerate() {
        let audience = str_or(t, "audience");
        let tp = sp.child("tokenRequests").index(i);
        if audiences.contains(&audience) {
            errs.push(FieldError::duplicate(
                tp.child("audience").as_str(),
                audience,
            ));
        }
        audiences.push(audience);
        if let Some(exp) = int_opt(t, "expirationSeconds") {
            if exp < 600 {
                errs.push(FieldError::invalid(
                    tp.child("expirationSeconds").as_str(),
                    exp,
                    "may not specify a duration less than 10 minutes",
                ));
            }
            if exp > 1 << 32 {
                errs.push(FieldError::invalid(
                    tp.child("expirationSeconds").as_str(),
                    exp,
                    "may not specify a duration larger than 2^32 seconds",
                ));
            }
        }
    }
}

/// `ValidateCSIDriverUpdate`: attachRequired and volumeLifecycleModes are immutable.
pub(crate) fn csi_driver_update(new: &Value, old: &Value, errs: &mut Errs) {
    meta::object_meta_update(new, old, errs);
    csi_driver(new, errs);
    let (ns, os) = (at(new, "spec"), at(old, "spec"));
    let attach = |s: &Value| {
        s.get("attachRequired")
            .and_then(Value::as_bool)
            .unwrap_or(true)
    };
    if attach(ns) != attach(os) {
        errs.push(FieldError::invalid(
            "spec.attachedRequired",
            attach(ns),
            IMMUTABLE,
        ));
    }
    fn modes(s: &Value) -> Vec<&str> {
        let m = strings(s, "volumeLifecycleModes");
        if m.is_empty() { vec!["Persistent"] } else { m }
    }
    if modes(ns) != modes(os) {
        let v: Vec<Value> = modes(ns).into_iter().map(Value::from).collect();
        errs.push(FieldError::invalid(
            "spec.volumeLifecycleModes",
            Value::Array(v),
            IMMUTABLE,
        ));
    }
}

/// `ValidateCSINode`.
pub(crate) fn csi_node(object: &Value, errs: &mut Errs) {
    meta::object_meta(object, NameRule::Subdomain, false, errs);
    let dp = Path::root("spec").child("drivers");
    let mut names: Vec<&str> = Vec::new();
    for (i, d) in arr(at(object, "spec"), "drivers").iter().enumerate() {
        let p = dp.index(i);
        let name = str_or(d, "name");
        csi_driver_name(name, &p.child("name"), errs);
        let node_id = str_or(d, "nodeID");
        if node_id.is_empty() {
            errs.push(FieldError::required(p.child("nodeID").as_str(), ""));
        }
        if node_id.len() > 192 {
            errs.push(FieldError::invalid(
                p.child("nodeID").as_str(),
                node_id,
                "must be 192 characters or less",
            ));
        }
        if let Some(count) = get(d, "allocatable").and_then(|a| int_opt(a, "count"))
            && count < 0
        {
            errs.push(FieldError::invalid(
                p.child("allocatable").child("count").as_str(),
                count,
                meta::NEGATIVE,
            ));
        }
        if names.contains(&name) {
            errs.push(FieldError::duplicate(p.as_str(), name));
        }
        names.push(name);
        for key in strings(d, "topologyKeys") {
            meta::qualified_name(key, &p.child("topologyKeys"), errs);
        }
    }
}

fn volume_attachment_check(object: &Value, errs: &mut Errs) {
    meta::object_meta(object, NameRule::Subdomain, false, errs);
    let spec = at(object, "spec");
    let sp = Path::root("spec");
    let attacher = str_or(spec, "attacher");
    if attacher.is_empty() {
        errs.push(FieldError::required(sp.child("attacher").as_str(), ""));
    }
    let source = at(spec, "source");
    let src = sp.child("source");
    match (
        get(source, "inlineVolumeSpec"),
        str_opt(source, "persistentVolumeName"),
    ) {
        (None, None) => errs.push(FieldError::required(
            src.as_str(),
            "must specify exactly one of inlineVolumeSpec and persistentVolumeName",
        )),
        (Some(_), Some(_)) => errs.push(FieldError::forbidden(
            src.as_str(),
            "must specify exactly one of inlineVolumeSpec and persistentVolumeName",
        )),
        (None, Some("")) => errs.push(FieldError::required(
            src.child("persistentVolumeName").as_str(),
            "must specify non empty persistentVolumeName",
        )),
        _ => {}
    }
    let node = str_or(spec, "nodeName");
    for m in formats::dns1123_subdomain(node) {
        errs.push(FieldError::invalid(sp.child("nodeName").as_str(), node, m));
    }
    if errs.is_empty() {
        csi_driver_name(attacher, &Path::root("spec.attacher"), errs);
    }
}

/// `ValidateVolumeAttachment` plus the v1 checks.
pub(crate) fn volume_attachment(object: &Value, errs: &mut Errs) {
    volume_attachment_check(object, errs);
}

/// `ValidateVolumeAttachmentUpdate`: the spec is read-only.
pub(crate) fn volume_attachment_update(new: &Value, old: &Value, errs: &mut Errs) {
    meta::object_meta_update(new, old, errs);
    volume_attachment_check(new, errs);
    let (ns, os) = (
        super::normalized(at(new, "spec")),
        super::normalized(at(old, "spec")),
    );
    if ns != os {
        errs.push(FieldError::invalid("spec", ns, IMMUTABLE));
    }
}

/// `ValidateCSIStorageCapacity`.
pub(crate) fn csi_storage_capacity(object: &Value, errs: &mut Errs) {
    meta::object_meta(object, NameRule::Subdomain, true, errs);
    let class = str_or(object, "storageClassName");
    if class.is_empty() {
        errs.push(FieldError::required("storageClassName", ""));
    } else {
        for m in formats::dns1123_subdomain(class) {
            errs.push(FieldError::invalid("storageClassName", class, m));
        }
    }
    meta::label_selector(
        get(object, "nodeTopology"),
        &Path::root("nodeTopology"),
        errs,
    );
    for field in ["capacity", "maximumVolumeSize"] {
        if let Some(raw) = get(object, field) {
            quantity_value(field, raw, &Path::root(field), errs);
        }
    }
}

/// CSIStorageCapacity updates: `storageClassName` and `nodeTopology` are immutable.
pub(crate) fn csi_storage_capacity_update(new: &Value, old: &Value, errs: &mut Errs) {
    meta::object_meta_update(new, old, errs);
    csi_storage_capacity(new, errs);
    for field in ["storageClassName", "nodeTopology"] {
        meta::immutable(get(new, field), get(old, field), &Path::root(field), errs);
    }
}
