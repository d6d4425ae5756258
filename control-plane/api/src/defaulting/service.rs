//! Services: pkg/apis/core/v1/defaults.go `SetDefaults_Service`, and the two registry steps of a
//! Service create that fill fields the same way (pkg/registry/core/service/storage/storage.go
//! `normalizeClusterIPs`, alloc.go `initIPFamilyFields`), for this cluster's single IPv4
//! service range.

use serde_json::{Value, json};

use super::fields::{
    Object, empty, ensure_object, fill, fill_zero, objects_mut, path_mut, text, unset, zero,
};

/// `DefaultClientIPServiceAffinitySeconds`: three hours.
const CLIENT_IP_AFFINITY_SECONDS: i64 = 10_800;

/// The only family of the cluster's service range (`--service-cluster-ip-range`).
const CLUSTER_IP_FAMILY: &str = "IPv4";

/// All Service defaults; see the module docs.
pub(super) fn service(root: &mut Object) {
    let Some(spec) = ensure_object(root, "spec") else {
        return;
    };
    session_affinity(spec);
    fill_zero(spec, "type", json!("ClusterIP"));
    for port in objects_mut(spec, "ports") {
        fill_zero(port, "protocol", json!("TCP"));
        if zero(port, "targetPort")
            && let Some(number) = port.get("port").filter(|p| p.is_number()).cloned()
        {
            port.insert("targetPort".into(), number);
        }
    }
    let kind = text(spec, "type").to_owned();
    // service.ExternallyAccessible (pkg/api/v1/service/util.go).
    let externally_accessible = matches!(kind.as_str(), "LoadBalancer" | "NodePort")
        || (kind == "ClusterIP" && !empty(spec, "externalIPs"));
    if externally_accessible {
        fill_zero(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if matches!(kind.as_str(), "NodePort" | "LoadBalancer" | "ClusterIP") {
        fill(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if kind == "LoadBalancer" {
        fill(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if kind != "ExternalName" {
        ip_families(spec);
    }
    // Load-balancer ingress points reached by IP are VIPs unless the status says otherwise.
    if kind == "LoadBalancer"
        && let Some(load_balancer) = path_mut(root, &["status", "loadBalancer"])
    {
        for ingress in objects_mut(load_balancer, "ingress") {
            if !text(ingress, "ip").is_empty() {
                fill(ingress, "ipMode", json!("VIP"));
            }
        }
    }
}

/// `sessionAffinity` defaults to `None`, which drops any `sessionAffinityConfig` (as Kubernetes
/// does, even one the client sent); `ClientIP` gets a three-hour timeout unless one is given.
fn session_affinity(spec: &mut Object) {
    fill_zero(spec, "sessionAffinity", json!("None"));
    match text(spec, "sessionAffinity") {
        "None" => {
            spec.remove("sessionAffinityConfig");
        }
        "ClientIP" => {
            if let Some(config) = ensure_object(spec, "sessionAffinityConfig")
                && let Some(client_ip) = ensure_object(config, "clientIP")
            {
                fill(
                    client_ip,
                    "timeoutSeconds",
                    json!(CLIENT_IP_AFFINITY_SECONDS),
                );
            }
        }
        _ => {}
    }
}

/// `normalizeClusterIPs` on create: a client that sets only `clusterIP` gets `clusterIPs` from
/// it. `initIPFamilyFields` on create, for a cluster whose only service family is IPv4:
/// - `ipFamilyPolicy` is `RequireDualStack` for a headless Service without selector,
///   `SingleStack` for any other;
/// - `ipFamilies` gets the family of each given cluster IP it has no entry for, else `IPv4`;
///   a headless selectorless Service that is not `SingleStack` also gets the other family.
///
/// Kubernetes takes an update's missing policy from the stored object instead; the result is
/// the same unless the client changes the selector or `clusterIP` of a headless Service.
fn ip_families(spec: &mut Object) {
    let cluster_ip = text(spec, "clusterIP").to_owned();
    if !cluster_ip.is_empty() && empty(spec, "clusterIPs") {
        spec.insert("clusterIPs".into(), json!([cluster_ip]));
    }
    let headless_selectorless = cluster_ip == "None" && empty(spec, "selector");
    if unset(spec, "ipFamilyPolicy") {
        let policy = if headless_selectorless {
            "RequireDualStack"
        } else {
            "SingleStack"
        };
        spec.insert("ipFamilyPolicy".into(), json!(policy));
    }
    let single_stack = text(spec, "ipFamilyPolicy") == "SingleStack";
    let mut families = match spec.get("ipFamilies") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(families)) => families.clone(),
        // Not a list: left for validation to report.
        Some(_) => return,
    };
    let before = families.clone();
    let ips = spec.get("clusterIPs").and_then(Value::as_array);
    for (index, ip) in ips.into_iter().flatten().enumerate() {
        let Some(ip) = ip.as_str().filter(|ip| *ip != "None") else {
            break;
        };
        if index >= families.len() {
            families.push(json!(if ip.contains(':') { "IPv6" } else { "IPv4" }));
        }
    }
    if families.is_empty() {
        families.push(json!(CLUSTER_IP_FAMILY));
    }
    if headless_selectorless && families.len() < 2 && !single_stack {
        let other = if families[0] == "IPv4" {
            "IPv6"
        } else {
            "IPv4"
        };
        families.push(json!(other));
    }
    if families != before || unset(spec, "ipFamilies") {
        spec.insert("ipFamilies".into(), Value::Array(families));
    }
}
