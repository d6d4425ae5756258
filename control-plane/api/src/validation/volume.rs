//! Pod volumes (`ValidateVolumes` and the volume sources users write most), after
//! `pkg/apis/core/validation/validation.go` (v1.33). Rare cloud sources are only counted
//! towards "exactly one source" and checked for their required fields.

use serde_json::Value;

use crate::quantity::Quantity;

use super::errors::FieldError;
use super::formats;
use super::meta;
use super::util::{Errs, Path, arr, get, int_opt, str_or};

/// Every volume source field, in the order Kubernetes checks them.
pub(crate) const VOLUME_SOURCES: &[&str] = &[
    "emptyDir",
    "hostPath",
    "gitRepo",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "flocker",
    "persistentVolumeClaim",
    "rbd",
    "cinder",
    "cephfs",
    "quobyte",
    "downwardAPI",
    "fc",
    "flexVolume",
    "configMap",
    "azureFile",
    "vsphereVolume",
    "photonPersistentDisk",
    "portworxVolume",
    "azureDisk",
    "storageos",
    "projected",
    "scaleIO",
    "csi",
    "ephemeral",
    "image",
];

const FILE_MODE_MSG: &str = "must be a number between 0 and 0777 (octal), both inclusive";

/// What the containers need to know about the pod's volumes: name and source kind.
pub(crate) struct Volumes {
    /// `(name, source field)` of each valid volume.
    pub(crate) valid: Vec<(String, &'static str)>,
}

impl Volumes {
    /// The source of a volume by name.
    pub(crate) fn source(&self, name: &str) -> Option<&'static str> {
        self.valid.iter().find(|(n, _)| n == name).map(|(_, s)| *s)
    }
}

/// `ValidateVolumes`: names are unique DNS labels, each volume has exactly one source.
pub(crate) fn volumes(list: &[Value], path: &Path, errs: &mut Errs) -> Volumes {
    let mut valid: Vec<(String, &'static str)> = Vec::new();
    for (i, vol) in list.iter().enumerate() {
        let p = path.index(i);
        let name = str_or(vol, "name");
        let mut el = Vec::new();
        let source = volume_source(vol, &p, &mut el);
        if name.is_empty() {
            el.push(FieldError::required(p.child("name").as_str(), ""));
        } else {
            for m in formats::dns1123_label(name) {
                el.push(FieldError::invalid(p.child("name").as_str(), name, m));
            }
        }
        if valid.iter().any(|(n, _)| n == name) {
            el.push(FieldError::duplicate(p.child("name").as_str(), name));
        }
        if el.is_empty() {
            if let Some(source) = source {
                valid.push((name.to_owned(), source));
            }
        } else {
            errs.extend(el);
        }
    }
    Volumes { valid }
}

/// `validateVolumeSource`: the first source wins, any other is "may not specify more than 1
/// volume type"; none at all is "must specify a volume type".
pub(crate) fn volume_source(vol: &Value, path: &Path, errs: &mut Errs) -> Option<&'static str> {
    let mut found: Option<&'static str> = None;
    for &src in VOLUME_SOURCES {
        let Some(body) = get(vol, src) else {
            continue;
        };
        if found.is_some() {
            errs.push(FieldError::forbidden(
                path.child(src).as_str(),
                "may not specify more than 1 volume type",
            ));
            continue;
        }
        found = Some(src);
        check_source(src, body, &path.child(src), errs);
    }
    if found.is_none() {
        errs.push(FieldError::required(
            path.as_str(),
            "must specify a volume type",
        ));
    }
    found
}

fn required_str(body: &Value, field: &str, path: &Path, errs: &mut Errs) {
    if str_or(body, field).is_empty() {
        errs.push(FieldError::required(path.child(field).as_str(), ""));
    }
}

fn file_mode(body: &Value, field: &str, path: &Path, errs: &mut Errs) {
    if let Some(mode) = int_opt(body, field)
        && !(0..=0o777).contains(&mode)
    {
        errs.push(FieldError::invalid(
            path.child(field).as_str(),
            mode,
            FILE_MODE_MSG,
        ));
    }
}

fn check_source(src: &str, body: &Value, path: &Path, errs: &mut Errs) {
    match src {
        "emptyDir" => {
            if let Some(limit) = body.get("sizeLimit").and_then(Value::as_str)
                && Quantity::parse_trimmed(limit).is_ok_and(|q| q.is_negative())
            {
                errs.push(FieldError::forbidden(
                    path.child("sizeLimit").as_str(),
                    "SizeLimit field must be a valid resource quantity",
                ));
            }
        }
        "hostPath" => {
            let p = str_or(body, "path");
            if p.is_empty() {
                errs.push(FieldError::required(path.child("path").as_str(), ""));
                return;
            }
            no_backsteps(p, &path.child("path"), errs);
            if let Some(t) = body.get("type").and_then(Value::as_str) {
                const TYPES: &[&str] = &[
                    "",
                    "BlockDevice",
                    "CharDevice",
                    "Directory",
                    "DirectoryOrCreate",
                    "File",
                    "FileOrCreate",
                    "Socket",
                ];
                if !TYPES.contains(&t) {
                    errs.push(FieldError::not_supported(
                        path.child("type").as_str(),
                        t,
                        TYPES,
                    ));
                }
            }
        }
        "secret" => {
            required_str(body, "secretName", path, errs);
            file_mode(body, "defaultMode", path, errs);
            key_to_paths(body, &path.child("items"), errs);
        }
        "configMap" => {
            required_str(body, "name", path, errs);
            file_mode(body, "defaultMode", path, errs);
            key_to_paths(body, &path.child("items"), errs);
        }
        "persistentVolumeClaim" => required_str(body, "claimName", path, errs),
        "nfs" => {
            required_str(body, "server", path, errs);
            let p = str_or(body, "path");
            if p.is_empty() {
                errs.push(FieldError::required(path.child("path").as_str(), ""));
            }
            if !p.starts_with('/') {
                errs.push(FieldError::invalid(
                    path.child("path").as_str(),
                    p,
                    "must be an absolute path",
                ));
            }
        }
        "gitRepo" => {
            required_str(body, "repository", path, errs);
            local_descending_path(str_or(body, "directory"), &path.child("directory"), errs);
        }
        "downwardAPI" => {
            file_mode(body, "defaultMode", path, errs);
            for item in arr(body, "items") {
                downward_api_file(item, path, errs);
            }
        }
        "projected" => {
            file_mode(body, "defaultMode", path, errs);
            projected_sources(body, path, errs);
        }
        "csi" => csi_driver_name(str_or(body, "driver"), &path.child("driver"), errs),
        "ephemeral" => match get(body, "volumeClaimTemplate") {
            None => errs.push(FieldError::required(
                path.child("volumeClaimTemplate").as_str(),
                "",
            )),
            Some(t) => {
                let tp = path.child("volumeClaimTemplate");
                template_meta(get(t, "metadata"), &tp.child("metadata"), errs);
                super::storage::pvc_spec(super::util::at(t, "spec"), &tp.child("spec"), errs);
            }
        },
        "gcePersistentDisk" => required_str(body, "pdName", path, errs),
        "awsElasticBlockStore" | "cinder" | "portworxVolume" => {
            required_str(body, "volumeID", path, errs);
        }
        "iscsi" => {
            required_str(body, "targetPortal", path, errs);
            required_str(body, "iqn", path, errs);
        }
        "glusterfs" => {
            required_str(body, "endpoints", path, errs);
            required_str(body, "path", path, errs);
        }
        "rbd" => {
            if arr(body, "monitors").is_empty() {
                errs.push(FieldError::required(path.child("monitors").as_str(), ""));
            }
            required_str(body, "image", path, errs);
        }
        "cephfs" if arr(body, "monitors").is_empty() => {
            errs.push(FieldError::required(path.child("monitors").as_str(), ""));
        }
        "flexVolume" => required_str(body, "driver", path, errs),
        "azureFile" => {
            required_str(body, "secretName", path, errs);
            required_str(body, "shareName", path, errs);
        }
        "azureDisk" => {
            required_str(body, "diskName", path, errs);
            required_str(body, "diskURI", path, errs);
        }
        "vsphereVolume" => required_str(body, "volumePath", path, errs),
        "photonPersistentDisk" => required_str(body, "pdID", path, errs),
        "scaleIO" => {
            for f in ["gateway", "system", "volumeName"] {
                required_str(body, f, path, errs);
            }
        }
        "quobyte" => {
            required_str(body, "registry", path, errs);
            required_str(body, "volume", path, errs);
        }
        "storageos" => required_str(body, "volumeName", path, errs),
        _ => {}
    }
}

fn key_to_paths(body: &Value, path: &Path, errs: &mut Errs) {
    for (i, kp) in arr(body, "items").iter().enumerate() {
        key_to_path(kp, &path.index(i), errs);
    }
}

/// `validateKeyToPath`.
fn key_to_path(kp: &Value, path: &Path, errs: &mut Errs) {
    required_str(kp, "key", path, errs);
    let p = str_or(kp, "path");
    if p.is_empty() {
        errs.push(FieldError::required(path.child("path").as_str(), ""));
    }
    local_non_reserved_path(p, &path.child("path"), errs);
    file_mode(kp, "mode", path, errs);
}

/// `validatePathNoBacksteps`.
pub(crate) fn no_backsteps(p: &str, path: &Path, errs: &mut Errs) {
    if p.split(['/', '\\']).any(|part| part == "..") {
        errs.push(FieldError::invalid(
            path.as_str(),
            p,
            "must not contain '..'",
        ));
    }
}

/// `validateLocalDescendingPath`: relative, no `..`.
pub(crate) fn local_descending_path(p: &str, path: &Path, errs: &mut Errs) {
    if p.starts_with('/') {
        errs.push(FieldError::invalid(
            path.as_str(),
            p,
            "must be a relative path",
        ));
    }
    no_backsteps(p, path, errs);
}

/// `ValidateLocalNonReservedPath`.
fn local_non_reserved_path(p: &str, path: &Path, errs: &mut Errs) {
    local_descending_path(p, path, errs);
    if p.starts_with("..") && !p.starts_with("../") {
        errs.push(FieldError::invalid(
            path.as_str(),
            p,
            "must not start with '..'",
        ));
    }
}

const VOLUME_FIELD_PATHS: &[&str] = &[
    "metadata.annotations",
    "metadata.labels",
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
];

fn downward_api_file(item: &Value, path: &Path, errs: &mut Errs) {
    let p = str_or(item, "path");
    if p.is_empty() {
        errs.push(FieldError::required(path.child("path").as_str(), ""));
    }
    local_non_reserved_path(p, &path.child("path"), errs);
    if let Some(fr) = get(item, "fieldRef") {
        super::container::object_field_selector(
            fr,
            VOLUME_FIELD_PATHS,
            &path.child("fieldRef"),
            errs,
        );
        if get(item, "resourceFieldRef").is_some() {
            errs.push(FieldError::invalid(
                path.as_str(),
                "resource",
                "fieldRef and resourceFieldRef can not be specified simultaneously",
            ));
        }
    } else if let Some(rf) = get(item, "resourceFieldRef") {
        let rp = path.child("resourceFieldRef");
        if str_or(rf, "containerName").is_empty() {
            errs.push(FieldError::required(rp.child("containerName").as_str(), ""));
        } else {
            super::container::resource_field_selector(rf, &rp, errs);
        }
    } else {
        errs.push(FieldError::required(
            path.as_str(),
            "one of fieldRef and resourceFieldRef is required",
        ));
    }
    file_mode(item, "mode", path, errs);
}

fn projected_sources(body: &Value, path: &Path, errs: &mut Errs) {
    let mut all_paths: Vec<String> = Vec::new();
    let mut note_path = |p: &str, value: &str, errs: &mut Errs| {
        if p.is_empty() {
            return;
        }
        if all_paths.iter().any(|x| x == p) {
            errs.push(FieldError::invalid(
                path.as_str(),
                value,
                "conflicting duplicate paths",
            ));
        } else {
            all_paths.push(p.to_owned());
        }
    };
    for (i, source) in arr(body, "sources").iter().enumerate() {
        let sp = path.child("sources").index(i);
        let mut count = 0;
        for kind in ["secret", "configMap"] {
            if let Some(s) = get(source, kind) {
                count += 1;
                let kp = sp.child(kind);
                required_str(s, "name", &kp, errs);
                for (j, item) in arr(s, "items").iter().enumerate() {
                    key_to_path(item, &kp.child("items").index(j), errs);
                    note_path(str_or(item, "path"), str_or(s, "name"), errs);
                }
            }
        }
        if let Some(d) = get(source, "downwardAPI") {
            count += 1;
            for item in arr(d, "items") {
                downward_api_file(item, &sp.child("downwardAPI"), errs);
                let p = str_or(item, "path");
                note_path(p, p, errs);
            }
        }
        if let Some(t) = get(source, "serviceAccountToken") {
            count += 1;
            let tp = sp.child("serviceAccountToken");
            let exp = int_opt(t, "expirationSeconds").unwrap_or(3600);
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
            let p = str_or(t, "path");
            if p.is_empty() {
                errs.push(FieldError::required(path.child("path").as_str(), ""));
            } else {
                local_non_reserved_path(p, &path.child("path"), errs);
            }
        }
        if get(source, "clusterTrustBundle").is_some() {
            count += 1;
        }
        if count > 1 {
            errs.push(FieldError::forbidden(
                sp.as_str(),
                "may not specify more than 1 volume type per source",
            ));
        }
    }
}

/// `ValidateCSIDriverName`.
pub(crate) fn csi_driver_name(name: &str, path: &Path, errs: &mut Errs) {
    if name.is_empty() {
        errs.push(FieldError::required(path.as_str(), ""));
    }
    if name.len() > 63 {
        errs.push(FieldError::too_long(path.as_str(), 63));
    }
    for m in formats::dns1123_subdomain(&name.to_lowercase()) {
        errs.push(FieldError::invalid(path.as_str(), name, m));
    }
}

/// `ValidateTemplateObjectMeta` for ephemeral volume claim templates: labels and annotations.
pub(crate) fn template_meta(meta: Option<&Value>, path: &Path, errs: &mut Errs) {
    let Some(meta) = meta else {
        return;
    };
    meta::annotations(get(meta, "annotations"), &path.child("annotations"), errs);
    meta::labels(get(meta, "labels"), &path.child("labels"), errs);
    if !str_or(meta, "name").is_empty() {
        errs.push(FieldError::forbidden(
            path.child("name").as_str(),
            "cannot be set",
        ));
    }
}
