//! The service variables of a pod's containers (`{SVC}_SERVICE_HOST`, the Docker-link style
//! `{SVC}_PORT*`), from the agent's Service cache as the kubelet makes them from its informer
//! (`getServiceEnvVarMap`, `pkg/kubelet/envvars`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Service;

/// The Service whose variables every pod gets, and its namespace.
const MASTER_SERVICE: (&str, &str) = ("default", "kubernetes");

/// The Services a pod in `namespace` gets variables for, as the kubelet picks them
/// (`getServiceEnvVarMap`): the `kubernetes` Service of `default` always, and with
/// `enableServiceLinks` every Service of the pod's own namespace (one of those named
/// `kubernetes` wins over the master's). Only Services with a cluster IP count; sorted by name.
pub fn env_services<'a>(
    all: impl IntoIterator<Item = &'a Service>,
    namespace: &str,
    enable_service_links: bool,
) -> Vec<&'a Service> {
    let mut chosen: BTreeMap<&str, &Service> = BTreeMap::new();
    for service in all {
        let has_ip = service
            .spec
            .as_ref()
            .and_then(|s| s.cluster_ip.as_deref())
            .is_some_and(|ip| !ip.is_empty() && ip != "None");
        if !has_ip {
            continue;
        }
        let name = service.metadata.name.as_deref().unwrap_or_default();
        let ns = service.metadata.namespace.as_deref().unwrap_or_default();
        if ns == namespace && enable_service_links {
            chosen.insert(name, service);
        } else if (ns, name) == MASTER_SERVICE {
            chosen.entry(name).or_insert(service);
        }
    }
    chosen.into_values().collect()
}

/// A Service name as a variable prefix: upper case, `-` and `.` as `_`, `_` before a digit.
fn env_name(service: &str) -> String {
    let name = service.to_uppercase().replace(['-', '.'], "_");
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        format!("_{name}")
    } else {
        name
    }
}

/// `{SVC}_SERVICE_HOST`, `{SVC}_SERVICE_PORT`, `{SVC}_SERVICE_PORT_{NAME}` and the Docker-link
/// style `{SVC}_PORT*` variables of `services` (kubelet's `envvars.FromServices`).
pub fn service_env(services: &[&Service]) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for service in services {
        let Some(spec) = &service.spec else { continue };
        let Some(ip) = spec
            .cluster_ip
            .clone()
            .filter(|ip| !ip.is_empty() && ip != "None")
        else {
            continue;
        };
        let ports = spec.ports.clone().unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        let name = env_name(service.metadata.name.as_deref().unwrap_or_default());
        // An IPv6 address is bracketed in URLs.
        let host_port = |port: i32| {
            if ip.contains(':') {
                format!("[{ip}]:{port}")
            } else {
                format!("{ip}:{port}")
            }
        };
        env.push((format!("{name}_SERVICE_HOST"), ip.clone()));
        env.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
        for port in &ports {
            if let Some(port_name) = port.name.as_deref().filter(|n| !n.is_empty()) {
                env.push((
                    format!("{name}_SERVICE_PORT_{}", env_name(port_name)),
                    port.port.to_string(),
                ));
            }
        }
        for (i, port) in ports.iter().enumerate() {
            let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".into());
            let proto = protocol.to_lowercase();
            let url = format!("{proto}://{}", host_port(port.port));
            if i == 0 {
                env.push((format!("{name}_PORT"), url.clone()));
            }
            let prefix = format!("{name}_PORT_{}_{}", port.port, protocol.to_uppercase());
            env.push((prefix.clone(), url));
            env.push((format!("{prefix}_PROTO"), proto));
            env.push((format!("{prefix}_PORT"), port.port.to_string()));
            env.push((format!("{prefix}_ADDR"), ip.clone()));
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(namespace: &str, name: &str, ip: &str, ports: &[(Option<&str>, i32)]) -> Service {
        use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
        Service {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                ports: Some(
                    ports
                        .iter()
                        .map(|(name, port)| ServicePort {
                            name: name.map(str::to_owned),
                            port: *port,
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Service::default()
        }
    }

    fn names(env: &[(String, String)]) -> Vec<&str> {
        env.iter().map(|(k, _)| k.as_str()).collect()
    }

    /// Which Services' variables a pod gets, by its namespace and `enableServiceLinks`.
    #[test]
    fn service_links_always_carry_the_master_service() {
        let all = [
            service(
                "default",
                "kubernetes",
                "10.96.0.1",
                &[(Some("https"), 443)],
            ),
            service("default", "web", "10.96.0.20", &[(None, 80)]),
            service("shop", "cart-db", "10.96.0.30", &[(None, 5432)]),
            service("shop", "headless", "None", &[(None, 80)]),
            service("other", "kubernetes", "10.96.0.99", &[(None, 1)]),
        ];
        for (namespace, links, expected) in [
            ("shop", true, vec!["shop/cart-db", "default/kubernetes"]),
            ("shop", false, vec!["default/kubernetes"]),
            ("default", true, vec!["default/kubernetes", "default/web"]),
            ("default", false, vec!["default/kubernetes"]),
            ("empty", true, vec!["default/kubernetes"]),
            // The namespace's own `kubernetes` wins over the master's.
            ("other", true, vec!["other/kubernetes"]),
        ] {
            let chosen: Vec<String> = env_services(&all, namespace, links)
                .iter()
                .map(|s| {
                    format!(
                        "{}/{}",
                        s.metadata.namespace.as_deref().unwrap_or_default(),
                        s.metadata.name.as_deref().unwrap_or_default()
                    )
                })
                .collect();
            assert_eq!(chosen, expected, "{namespace} links={links}");
        }
    }

    #[test]
    fn pod_in_another_namespace_sees_kubernetes_service_host() {
        let all = [
            service(
                "default",
                "kubernetes",
                "10.96.0.1",
                &[(Some("https"), 443)],
            ),
            service(
                "shop",
                "cart-db",
                "10.96.0.30",
                &[(None, 5432), (Some("metrics"), 9187)],
            ),
        ];
        // Sorted by Service name: cart-db's variables, then kubernetes'.
        let env = service_env(&env_services(&all, "shop", true));
        let get = |k: &str| {
            env.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("{k} missing from {env:?}"))
        };
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), "10.96.0.1");
        assert_eq!(get("KUBERNETES_SERVICE_PORT"), "443");
        assert_eq!(get("KUBERNETES_SERVICE_PORT_HTTPS"), "443");
        assert_eq!(get("KUBERNETES_PORT"), "tcp://10.96.0.1:443");
        assert_eq!(get("KUBERNETES_PORT_443_TCP"), "tcp://10.96.0.1:443");
        assert_eq!(get("KUBERNETES_PORT_443_TCP_PROTO"), "tcp");
        assert_eq!(get("KUBERNETES_PORT_443_TCP_PORT"), "443");
        assert_eq!(get("KUBERNETES_PORT_443_TCP_ADDR"), "10.96.0.1");
        assert_eq!(
            names(&env[..12]),
            [
                "CART_DB_SERVICE_HOST",
                "CART_DB_SERVICE_PORT",
                "CART_DB_SERVICE_PORT_METRICS",
                "CART_DB_PORT",
                "CART_DB_PORT_5432_TCP",
                "CART_DB_PORT_5432_TCP_PROTO",
                "CART_DB_PORT_5432_TCP_PORT",
                "CART_DB_PORT_5432_TCP_ADDR",
                "CART_DB_PORT_9187_TCP",
                "CART_DB_PORT_9187_TCP_PROTO",
                "CART_DB_PORT_9187_TCP_PORT",
                "CART_DB_PORT_9187_TCP_ADDR",
            ]
        );
        let v6 = [service("default", "kubernetes", "fd00::1", &[(None, 443)])];
        let env = service_env(&env_services(&v6, "x", false));
        assert!(
            env.contains(&("KUBERNETES_PORT".into(), "tcp://[fd00::1]:443".into())),
            "{env:?}"
        );
    }
}
