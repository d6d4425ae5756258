//! Registry credentials from a pod's `imagePullSecrets` (`kubernetes.io/dockerconfigjson`
//! and the older `kubernetes.io/dockercfg`), matched against an image's registry the way the
//! kubelet's keyring does: the entry's host (a `*` matches one DNS label), its port, and its
//! path as a prefix of the image's repository; more specific entries first.

use std::collections::BTreeMap;

use base64::Engine as _;
use bollard::auth::DockerCredentials;
use k8s_openapi::api::core::v1::Secret;

/// Docker Hub's names, all meaning the same registry.
const DOCKER_HUB: &[&str] = &["docker.io", "index.docker.io", "registry-1.docker.io"];

/// One credential entry of a pull secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The entry's key without scheme and without a `/v1/`/`/v2/` prefix: `host[:port][/path]`.
    pub key: String,
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

#[derive(Debug, Default, serde::Deserialize)]
struct RawEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

#[derive(Debug, Default, serde::Deserialize)]
struct DockerConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, RawEntry>,
}

/// The entries of a pull secret (empty for a secret of another type or unreadable data).
pub fn entries(secret: &Secret) -> Vec<Entry> {
    let data = secret.data.as_ref();
    let raw: BTreeMap<String, RawEntry> = match secret.type_.as_deref() {
        Some("kubernetes.io/dockerconfigjson") => data
            .and_then(|d| d.get(".dockerconfigjson"))
            .and_then(|b| serde_json::from_slice::<DockerConfigJson>(&b.0).ok())
            .map(|c| c.auths)
            .unwrap_or_default(),
        Some("kubernetes.io/dockercfg") => data
            .and_then(|d| d.get(".dockercfg"))
            .and_then(|b| serde_json::from_slice(&b.0).ok())
            .unwrap_or_default(),
        _ => BTreeMap::new(),
    };
    raw.into_iter()
        .filter_map(|(key, e)| {
            let (username, password) = match e.auth.filter(|a| !a.is_empty()) {
                Some(auth) => {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(auth.trim())
                        .ok()?;
                    let text = String::from_utf8(decoded).ok()?;
                    let (u, p) = text.split_once(':')?;
                    (u.to_owned(), p.to_owned())
                }
                None => (
                    e.username.unwrap_or_default(),
                    e.password.unwrap_or_default(),
                ),
            };
            Some(Entry {
                key: normalize_key(&key),
                username,
                password,
            })
        })
        .collect()
}

/// `https://index.docker.io/v1/` → `docker.io`; `http://reg:5000/team` → `reg:5000/team`.
fn normalize_key(key: &str) -> String {
    let key = key
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let (host, path) = key.split_once('/').unwrap_or((key, ""));
    let path = path
        .strip_prefix("v1/")
        .or_else(|| path.strip_prefix("v2/"))
        .unwrap_or(path)
        .trim_matches('/');
    let path = if path == "v1" || path == "v2" {
        ""
    } else {
        path
    };
    let host = if DOCKER_HUB.contains(&host) {
        "docker.io"
    } else {
        host
    };
    if path.is_empty() {
        host.to_owned()
    } else {
        format!("{host}/{path}")
    }
}

/// The registry host and repository path of an image reference, as Docker resolves it
/// (`busybox` → `docker.io`, `library/busybox`).
pub fn registry_of(image: &str) -> (String, String) {
    let name = image.split('@').next().unwrap_or(image);
    let (first, rest) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first, rest)
        }
        _ => ("docker.io", name),
    };
    // Drop the tag.
    let rest = match rest.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => rest,
    };
    let host = if DOCKER_HUB.contains(&first) {
        "docker.io"
    } else {
        first
    };
    let rest = if host == "docker.io" && !rest.contains('/') {
        format!("library/{rest}")
    } else {
        rest.to_owned()
    };
    (host.to_owned(), rest)
}

/// Whether a host pattern (`*.example.com`, `reg:5000`) matches a host: the same number of
/// DNS labels, each equal or matched by a `*` glob, and the same port.
fn host_matches(pattern: &str, host: &str) -> bool {
    let split = |h: &str| -> (String, String) {
        match h.rsplit_once(':') {
            Some((name, port)) => (name.to_owned(), port.to_owned()),
            None => (h.to_owned(), String::new()),
        }
    };
    let ((pattern, pattern_port), (host, host_port)) = (split(pattern), split(host));
    if pattern_port != host_port {
        return false;
    }
    let labels: Vec<&str> = pattern.split('.').collect();
    let targets: Vec<&str> = host.split('.').collect();
    labels.len() == targets.len()
        && labels
            .iter()
            .zip(&targets)
            .all(|(p, t)| glob(&p.to_ascii_lowercase(), &t.to_ascii_lowercase()))
}

/// A `*` glob over one label.
fn glob(pattern: &str, text: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == text,
        Some((prefix, rest)) => {
            let Some(text) = text.strip_prefix(prefix) else {
                return false;
            };
            (0..=text.len()).any(|i| text.is_char_boundary(i) && glob(rest, &text[i..]))
        }
    }
}

/// The credentials to try for `image`, most specific entry first (longer keys first, as the
/// kubelet's keyring orders them); empty means an anonymous pull.
pub fn credentials_for(image: &str, entries: &[Entry]) -> Vec<DockerCredentials> {
    let (host, repo) = registry_of(image);
    let mut matching: Vec<&Entry> = entries
        .iter()
        .filter(|e| {
            let (pattern, path) = e.key.split_once('/').unwrap_or((&e.key, ""));
            host_matches(pattern, &host)
                && (path.is_empty()
                    || repo == path
                    || repo.starts_with(&format!("{}/", path.trim_end_matches('/'))))
        })
        .collect();
    matching.sort_by_key(|e| std::cmp::Reverse(e.key.len()));
    matching
        .into_iter()
        .map(|e| DockerCredentials {
            username: Some(e.username.clone()),
            password: Some(e.password.clone()),
            serveraddress: Some(host.clone()),
            ..DockerCredentials::default()
        })
        .collect()
}

/// The credentials the pod's `imagePullSecrets` hold for `image`, and the names of the
/// secrets that could not be read (the kubelet pulls anyway, after a warning).
pub async fn pod_credentials(
    sources: &mut crate::pods::spec::Sources,
    pod: &k8s_openapi::api::core::v1::Pod,
    image: &str,
) -> (Vec<DockerCredentials>, Vec<String>) {
    let mut all = Vec::new();
    let mut missing = Vec::new();
    for reference in pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.as_ref())
        .into_iter()
        .flatten()
    {
        match sources.secret(&reference.name).await {
            Ok(Some(secret)) => all.extend(entries(&secret)),
            Ok(None) | Err(_) => missing.push(reference.name.clone()),
        }
    }
    (credentials_for(image, &all), missing)
}

/// The kubelet's `FailedToRetrieveImagePullSecret` warning.
pub fn missing_secrets_message(names: &[String]) -> String {
    format!(
        "Unable to retrieve some image pull secrets ({}); attempting to pull the image may not \
         succeed.",
        names.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use k8s_openapi::ByteString;

    use super::*;

    fn secret(type_: &str, key: &str, json: &str) -> Secret {
        Secret {
            type_: Some(type_.into()),
            data: Some(BTreeMap::from([(
                key.to_owned(),
                ByteString(json.as_bytes().to_vec()),
            )])),
            ..Secret::default()
        }
    }

    #[test]
    fn both_secret_formats_read() {
        // "alice:s3cret:x" (a colon in the password survives).
        let json = secret(
            "kubernetes.io/dockerconfigjson",
            ".dockerconfigjson",
            r#"{"auths":{"https://index.docker.io/v1/":{"auth":"YWxpY2U6czNjcmV0Ong="},
               "reg.example.com:5000":{"username":"bob","password":"pw"}}}"#,
        );
        assert_eq!(
            entries(&json),
            vec![
                Entry {
                    key: "docker.io".into(),
                    username: "alice".into(),
                    password: "s3cret:x".into()
                },
                Entry {
                    key: "reg.example.com:5000".into(),
                    username: "bob".into(),
                    password: "pw".into()
                },
            ]
        );
        let cfg = secret(
            "kubernetes.io/dockercfg",
            ".dockercfg",
            r#"{"http://ghcr.io/team/":{"username":"c","password":"d"}}"#,
        );
        assert_eq!(entries(&cfg)[0].key, "ghcr.io/team");
        assert!(entries(&secret("Opaque", ".dockercfg", "{}")).is_empty());
        assert!(entries(&secret("kubernetes.io/dockercfg", ".dockercfg", "not json")).is_empty());
    }

    #[test]
    fn images_resolve_to_registry_and_repository() {
        let cases = [
            ("busybox", "docker.io", "library/busybox"),
            ("busybox:1.36", "docker.io", "library/busybox"),
            ("keelson/busybox:1", "docker.io", "keelson/busybox"),
            (
                "index.docker.io/library/nginx",
                "docker.io",
                "library/nginx",
            ),
            ("localhost:5000/app:v2", "localhost:5000", "app"),
            ("localhost/app", "localhost", "app"),
            ("ghcr.io/team/app@sha256:ab", "ghcr.io", "team/app"),
        ];
        for (image, host, repo) in cases {
            assert_eq!(
                registry_of(image),
                (host.to_owned(), repo.to_owned()),
                "{image}"
            );
        }
    }

    #[test]
    fn credentials_match_host_port_and_path() {
        let entry = |key: &str, user: &str| Entry {
            key: key.into(),
            username: user.into(),
            password: "p".into(),
        };
        let entries = [
            entry("docker.io", "hub"),
            entry("*.example.com", "wild"),
            entry("reg.example.com/team", "team"),
            entry("reg.example.com:5000", "port"),
        ];
        let users = |image: &str| -> Vec<String> {
            credentials_for(image, &entries)
                .into_iter()
                .filter_map(|c| c.username)
                .collect()
        };
        let cases: [(&str, &[&str]); 7] = [
            ("busybox", &["hub"]),
            ("reg.example.com/team/app:1", &["team", "wild"]),
            ("reg.example.com/other/app", &["wild"]),
            ("reg.example.com/teamster/app", &["wild"]),
            ("reg.example.com:5000/app", &["port"]),
            ("a.b.example.com/app", &[]),
            ("quay.io/app", &[]),
        ];
        for (image, want) in cases {
            assert_eq!(users(image), *want, "{image}");
        }
        assert_eq!(
            credentials_for("busybox", &entries)[0]
                .serveraddress
                .as_deref(),
            Some("docker.io")
        );
        assert_eq!(
            missing_secrets_message(&["a".into(), "b".into()]),
            "Unable to retrieve some image pull secrets (a, b); attempting to pull the image may \
             not succeed."
        );
    }
}
