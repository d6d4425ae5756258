//! Turning a pod's container spec into what Docker runs: environment (literal values, ConfigMap
//! and Secret references, the downward API, service variables from [`super::service_env`]),
//! resource limits, and `$(VAR)` expansion in command and args.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use keelson_api::quantity::Quantity;
use kube::{Api, Client};

/// Why a container's configuration cannot be built yet (the pod shows
/// `CreateContainerConfigError` with this message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// ConfigMaps and Secrets of one namespace, fetched once per container start.
pub struct Sources {
    client: Client,
    namespace: String,
    config_maps: HashMap<String, Option<ConfigMap>>,
    secrets: HashMap<String, Option<Secret>>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Sources {
    /// An empty cache for `namespace`.
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            client,
            namespace: namespace.to_owned(),
            config_maps: HashMap::new(),
            secrets: HashMap::new(),
        }
    }

    /// ConfigMap `name` (`None` if it does not exist).
    pub async fn config_map(&mut self, name: &str) -> Result<Option<ConfigMap>, ConfigError> {
        if !self.config_maps.contains_key(name) {
            let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
            let found = api
                .get_opt(name)
                .await
                .map_err(|e| ConfigError(format!("reading configmap \"{name}\": {e}")))?;
            self.config_maps.insert(name.to_owned(), found);
        }
        Ok(self.config_maps[name].clone())
    }

    /// Secret `name` (`None` if it does not exist).
    pub async fn secret(&mut self, name: &str) -> Result<Option<Secret>, ConfigError> {
        if !self.secrets.contains_key(name) {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
            let found = api
                .get_opt(name)
                .await
                .map_err(|e| ConfigError(format!("reading secret \"{name}\": {e}")))?;
            self.secrets.insert(name.to_owned(), found);
        }
        Ok(self.secrets[name].clone())
    }

    /// The text data of ConfigMap `name` (binary data decoded as UTF-8 where possible).
    pub async fn config_map_data(
        &mut self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, ConfigError> {
        Ok(self.config_map(name).await?.map(config_map_bytes))
    }

    /// The data of Secret `name`.
    pub async fn secret_data(
        &mut self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, ConfigError> {
        Ok(self.secret(name).await?.map(|s| {
            let mut data: BTreeMap<String, Vec<u8>> = s
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            for (k, v) in s.string_data.unwrap_or_default() {
                data.insert(k, v.into_bytes());
            }
            data
        }))
    }
}

/// `key="value"` lines sorted by key, values quoted as Go's `%q` does: how the downward API
/// writes a whole `metadata.labels` or `metadata.annotations` (`fieldpath.FormatMap`).
pub fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    let mut lines = Vec::new();
    for (key, value) in map.into_iter().flatten() {
        let mut quoted = String::with_capacity(value.len() + 2);
        quoted.push('"');
        for c in value.chars() {
            match c {
                '"' => quoted.push_str("\\\""),
                '\\' => quoted.push_str("\\\\"),
                '\n' => quoted.push_str("\\n"),
                '\r' => quoted.push_str("\\r"),
                '\t' => quoted.push_str("\\t"),
                '\u{7}' => quoted.push_str("\\a"),
                '\u{8}' => quoted.push_str("\\b"),
                '\u{b}' => quoted.push_str("\\v"),
                '\u{c}' => quoted.push_str("\\f"),
                c if (c as u32) < 0x20 || c == '\u{7f}' => {
                    quoted.push_str(&format!("\\x{:02x}", c as u32));
                }
                c => quoted.push(c),
            }
        }
        quoted.push('"');
        lines.push(format!("{key}={quoted}"));
    }
    lines.join("\n")
}

/// A pod field for the downward API (`fieldRef.fieldPath`), for environment variables and
/// volume files alike.
pub fn pod_field(
    pod: &Pod,
    path: &str,
    pod_ip: &str,
    host_ip: &str,
) -> Result<String, ConfigError> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let label = |map: &Option<BTreeMap<String, String>>, key: &str| {
        map.as_ref()
            .and_then(|m| m.get(key).cloned())
            .unwrap_or_default()
    };
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => format_map(meta.labels.as_ref()),
        "metadata.annotations" => format_map(meta.annotations.as_ref()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" | "status.podIPs" => pod_ip.to_owned(),
        "status.hostIP" | "status.hostIPs" => host_ip.to_owned(),
        other => {
            if let Some(key) = other
                .strip_prefix("metadata.labels['")
                .and_then(|k| k.strip_suffix("']"))
            {
                label(&meta.labels, key)
            } else if let Some(key) = other
                .strip_prefix("metadata.annotations['")
                .and_then(|k| k.strip_suffix("']"))
            {
                label(&meta.annotations, key)
            } else {
                return Err(ConfigError(format!(
                    "unsupported fieldRef fieldPath \"{other}\""
                )));
            }
        }
    })
}

/// Expands `$(NAME)` from `vars`; `$$(` stays a literal `$(`; unknown names stay as written.
pub fn expand(text: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('(')
            && let Some(end) = body.find(')')
        {
            let name = &body[..end];
            match vars.get(name) {
                Some(value) => out.push_str(value),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The container's environment in Kubernetes' order: service variables, `envFrom`, `env`
/// (later entries win), with `$(VAR)` expanded against what came before.
pub async fn container_env(
    sources: &mut Sources,
    pod: &Pod,
    container: &Container,
    services: &[(String, String)],
    pod_ip: &str,
    host_ip: &str,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut order: Vec<String> = Vec::new();
    let mut vars: HashMap<String, String> = HashMap::new();
    let mut set = |order: &mut Vec<String>, name: String, value: String| {
        if vars.insert(name.clone(), value).is_none() {
            order.push(name);
        }
    };
    for (k, v) in services {
        set(&mut order, k.clone(), v.clone());
    }
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (data, kind, name, optional) = if let Some(cm) = &from.config_map_ref {
            (
                sources.config_map_data(&cm.name).await?,
                "configmap",
                cm.name.clone(),
                cm.optional == Some(true),
            )
        } else if let Some(secret) = &from.secret_ref {
            (
                sources.secret_data(&secret.name).await?,
                "secret",
                secret.name.clone(),
                secret.optional == Some(true),
            )
        } else {
            continue;
        };
        match data {
            Some(data) => {
                for (k, v) in data {
                    set(
                        &mut order,
                        format!("{prefix}{k}"),
                        String::from_utf8_lossy(&v).into_owned(),
                    );
                }
            }
            None if optional => {}
            None => return Err(ConfigError(format!("{kind} \"{name}\" not found"))),
        }
    }
    for env in container.env.iter().flatten() {
        let value = if let Some(source) = &env.value_from {
            if let Some(r) = &source.config_map_key_ref {
                let data = sources.config_map_data(&r.name).await?;
                let optional = r.optional == Some(true);
                match data.as_ref().map(|d| d.get(&r.key)) {
                    Some(Some(v)) => String::from_utf8_lossy(v).into_owned(),
                    _ if optional => continue,
                    Some(None) => {
                        return Err(ConfigError(format!(
                            "couldn't find key {} in ConfigMap {}/{}",
                            r.key, sources.namespace, r.name
                        )));
                    }
                    None => {
                        return Err(ConfigError(format!("configmap \"{}\" not found", r.name)));
                    }
                }
            } else if let Some(r) = &source.secret_key_ref {
                let data = sources.secret_data(&r.name).await?;
                let optional = r.optional == Some(true);
                match data.as_ref().map(|d| d.get(&r.key)) {
                    Some(Some(v)) => String::from_utf8_lossy(v).into_owned(),
                    _ if optional => continue,
                    Some(None) => {
                        return Err(ConfigError(format!(
                            "couldn't find key {} in Secret {}/{}",
                            r.key, sources.namespace, r.name
                        )));
                    }
                    None => return Err(ConfigError(format!("secret \"{}\" not found", r.name))),
                }
            } else if let Some(r) = &source.field_ref {
                pod_field(pod, &r.field_path, pod_ip, host_ip)?
            } else if let Some(r) = &source.resource_field_ref {
                resource_value(pod, Some(container), r)?
            } else {
                String::new()
            }
        } else {
            env.value.clone().unwrap_or_default()
        };
        set(&mut order, env.name.clone(), value);
    }
    // `$(VAR)` in values refers to variables defined before; expand in order.
    let mut defined: HashMap<String, String> = HashMap::new();
    let mut result = Vec::with_capacity(order.len());
    for name in order {
        let value = expand(&vars[&name], &defined);
        defined.insert(name.clone(), value.clone());
        result.push((name, value));
    }
    Ok(result)
}

/// The node's allocatable CPU (cores) and memory (bytes): what an unset limit stands for in
/// the downward API (the kubelet uses the Node's allocatable; the agent reports the host's).
fn node_allocatable() -> (i64, i64) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as i64);
    // SAFETY: sysconf only reads system configuration.
    let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) };
    // SAFETY: as above.
    let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let memory = (pages.max(0) as i64).saturating_mul(page_size.max(0) as i64);
    (cpus, memory)
}

/// The value of a `resourceFieldRef` (`limits.cpu`, `requests.memory`, ...) as the kubelet
/// computes it: divided by `divisor` (default 1) and rounded up — CPU in millicores, the rest
/// in units; an unset limit is the node's allocatable, an unset request 0. `container` is the
/// container asking (environment variables); `containerName` names another.
pub fn resource_value(
    pod: &Pod,
    container: Option<&Container>,
    selector: &k8s_openapi::api::core::v1::ResourceFieldSelector,
) -> Result<String, ConfigError> {
    let named = selector.container_name.as_deref().filter(|n| !n.is_empty());
    let spec = pod.spec.as_ref();
    let found = match named {
        Some(name) => spec.and_then(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
                .find(|c| c.name == name)
        }),
        None => container,
    };
    let Some(found) = found else {
        return Err(ConfigError(format!(
            "container {} not found in pod",
            named.unwrap_or_default()
        )));
    };
    let resources = found.resources.clone().unwrap_or_default();
    let (map, key, is_limit) = match selector.resource.split_once('.') {
        Some(("limits", key)) => (resources.limits, key, true),
        Some(("requests", key)) => (resources.requests, key, false),
        _ => {
            return Err(ConfigError(format!(
                "unsupported container resource : {}",
                selector.resource
            )));
        }
    };
    if !matches!(key, "cpu" | "memory" | "ephemeral-storage") && !key.starts_with("hugepages-") {
        return Err(ConfigError(format!(
            "unsupported container resource : {}",
            selector.resource
        )));
    }
    let divisor = selector
        .divisor
        .as_ref()
        .and_then(|d| Quantity::try_from(d).ok())
        .filter(|d| !d.is_zero());
    let set = map.and_then(|m| m.get(key).and_then(|q| Quantity::try_from(q).ok()));
    let cpu = key == "cpu";
    // The quantity in the unit its divisor counts in: millicores for CPU, units otherwise.
    let amount: i128 = match (set, is_limit) {
        (Some(q), _) if cpu => i128::from(q.milli_value()),
        (Some(q), _) => i128::from(q.value()),
        (None, true) => {
            let (cpus, memory) = node_allocatable();
            match key {
                "cpu" => i128::from(cpus) * 1000,
                "memory" => i128::from(memory),
                _ => 0,
            }
        }
        (None, false) => 0,
    };
    let per = match divisor {
        Some(d) if cpu => i128::from(d.milli_value()),
        Some(d) => i128::from(d.value()),
        None if cpu => 1000,
        None => 1,
    }
    .max(1);
    // Ceiling division of a non-negative amount.
    let value = (amount.max(0) + per - 1) / per;
    Ok(value.to_string())
}

/// Docker's CPU and memory settings from the container's resources: `limits.cpu` -> CFS quota
/// (NanoCpus), `requests.cpu` -> CPU shares, `limits.memory` -> memory limit. Quantities are
/// Kubernetes' exact ones: CPU in millicores rounded up (`MilliValue`), memory in bytes
/// rounded up (`Value`); one that does not parse sets nothing.
pub fn resources(container: &Container) -> (Option<i64>, Option<i64>, Option<i64>) {
    let resources = container.resources.clone().unwrap_or_default();
    let quantity = |map: &Option<BTreeMap<String, _>>, key: &str| {
        map.as_ref()
            .and_then(|m| m.get(key))
            .and_then(|q| Quantity::try_from(q).ok())
    };
    let limit = |key: &str| quantity(&resources.limits, key);
    let request = |key: &str| quantity(&resources.requests, key);
    let nano_cpus = limit("cpu").map(|q| q.milli_value().saturating_mul(1_000_000));
    let shares = request("cpu")
        .or_else(|| limit("cpu"))
        .map(|q| (q.milli_value().saturating_mul(1024) / 1000).max(2));
    let memory = limit("memory").map(|q| q.value());
    (nano_cpus, shares, memory)
}

/// A ConfigMap's keys as file contents: `data` as UTF-8 bytes, `binaryData` beside it.
pub fn config_map_bytes(cm: k8s_openapi::api::core::v1::ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut data: BTreeMap<String, Vec<u8>> = cm
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    for (k, v) in cm.binary_data.unwrap_or_default() {
        data.insert(k, v.0);
    }
    data
}

#[cfg(test)]
mod tests {
    use k8s_openapi::{
        api::core::v1::ResourceRequirements,
        apimachinery::pkg::api::resource::Quantity as QuantityObject,
    };

    use super::*;

    fn container(limits: &[(&str, &str)], requests: &[(&str, &str)]) -> Container {
        let map = |pairs: &[(&str, &str)]| {
            Some(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), QuantityObject((*v).to_owned())))
                    .collect(),
            )
        };
        Container {
            resources: Some(ResourceRequirements {
                limits: map(limits),
                requests: map(requests),
                ..ResourceRequirements::default()
            }),
            ..Container::default()
        }
    }

    /// (limits, requests) -> (NanoCpus, CPU shares, memory bytes) as Docker gets them.
    #[test]
    fn docker_resources_from_quantities() {
        for (limits, requests, expected) in [
            (
                &[("cpu", "500m"), ("memory", "64Mi")][..],
                &[("cpu", "250m")][..],
                (Some(500_000_000), Some(256), Some(64 << 20)),
            ),
            (
                &[("cpu", "2"), ("memory", "1G")],
                &[],
                (Some(2_000_000_000), Some(2048), Some(1_000_000_000)),
            ),
            (
                &[("cpu", "0.25"), ("memory", "128974848")],
                &[("cpu", "1m")],
                (Some(250_000_000), Some(2), Some(128_974_848)),
            ),
            (
                &[("memory", "129e6")],
                &[("cpu", "100u")],
                (None, Some(2), Some(129_000_000)),
            ),
            (
                &[("cpu", "1.5m"), ("memory", "1.5Ki")],
                &[],
                (Some(2_000_000), Some(2), Some(1536)),
            ),
            (
                &[("cpu", "lots"), ("memory", "1K")],
                &[],
                (None, None, None),
            ),
        ] {
            assert_eq!(
                resources(&container(limits, requests)),
                expected,
                "{limits:?} {requests:?}"
            );
        }
    }

    #[test]
    fn resource_field_refs_round_up() {
        let c = container(&[("cpu", "1500m"), ("memory", "1.5")], &[("cpu", "1m")]);
        let pod = Pod {
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                containers: vec![Container {
                    name: "other".into(),
                    ..container(&[("memory", "64Mi")], &[])
                }],
                ..Default::default()
            }),
            ..Pod::default()
        };
        let field = |resource: &str, divisor: Option<&str>, name: Option<&str>| {
            let selector = k8s_openapi::api::core::v1::ResourceFieldSelector {
                resource: resource.into(),
                divisor: divisor.map(|d| QuantityObject(d.into())),
                container_name: name.map(str::to_owned),
            };
            resource_value(&pod, Some(&c), &selector).map_err(|e| e.0)
        };
        assert_eq!(field("limits.cpu", None, None).as_deref(), Ok("2"));
        assert_eq!(field("limits.cpu", Some("1m"), None).as_deref(), Ok("1500"));
        assert_eq!(field("requests.cpu", None, None).as_deref(), Ok("1"));
        assert_eq!(field("limits.memory", None, None).as_deref(), Ok("2"));
        assert_eq!(field("requests.memory", None, None).as_deref(), Ok("0"));
        assert_eq!(
            field("limits.memory", Some("1Mi"), Some("other")).as_deref(),
            Ok("64")
        );
        assert_eq!(
            field("limits.gpu", None, None),
            Err("unsupported container resource : limits.gpu".to_owned())
        );
        assert_eq!(
            field("limits.cpu", None, Some("nope")),
            Err("container nope not found in pod".to_owned())
        );
        // No limit: the node's allocatable, at least one core.
        let unset = field("limits.cpu", None, Some("other")).expect("node cpus");
        assert!(unset.parse::<u32>().expect("a number") >= 1, "{unset}");
    }

    #[test]
    fn whole_maps_are_quoted_lines_in_key_order() {
        let map = BTreeMap::from([
            ("zone".to_owned(), "eu-1".to_owned()),
            ("app".to_owned(), "web".to_owned()),
            ("note".to_owned(), "say \"hi\"\n\tnow\\\u{1}é".to_owned()),
        ]);
        assert_eq!(
            format_map(Some(&map)),
            "app=\"web\"\nnote=\"say \\\"hi\\\"\\n\\tnow\\\\\\x01é\"\nzone=\"eu-1\""
        );
        assert_eq!(format_map(None), "");
    }

    #[test]
    fn expansion() {
        let vars = HashMap::from([("A".to_owned(), "x".to_owned())]);
        assert_eq!(expand("$(A)-$(B)-$$(A)-$", &vars), "x-$(B)-$(A)-$");
    }
}
