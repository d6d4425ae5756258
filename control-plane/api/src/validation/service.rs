//! Services, Endpoints and EndpointSlices (`ValidateService`, `ValidateServiceUpdate`,
//! `ValidateEndpoints`, discovery's `ValidateEndpointSlice`; v1.33). `clusterIP` and
//! `clusterIPs` are kept in step as the Service strategy does; node ports and health-check
//! ports are allocated by the server and only checked for conflicts.

use std::net::IpAddr;

use serde_json::Value;

use super::container::{port_num_or_name, protocol};
use super::errors::{FieldError, go_quote};
use super::formats::{self, NameRule};
use super::meta::{self};
use super::util::{Errs, Path, arr, at, get, go_string_slice, int_opt, str_opt, str_or, strings};

/// `spec.clusterIPs` as the strategy leaves it: `[clusterIP]` when only `clusterIP` is set.
fn cluster_ips(spec: &Value) -> Vec<String> {
    let ips: Vec<String> = strings(spec, "clusterIPs")
        .into_iter()
        .map(str::to_owned)
        .collect();
    if ips.is_empty() {
        let ip = str_or(spec, "clusterIP");
        if !ip.is_empty() {
            return vec![ip.to_owned()];
        }
    }
    ips
}

fn go_ips(ips: &[String]) -> String {
    let v: Vec<Value> = ips.iter().map(|s| Value::from(s.as_str())).collect();
    go_string_slice(Some(&Value::Array(v)))
}

fn is_headless(spec: &Value) -> bool {
    cluster_ips(spec) == ["None"]
}

/// `ValidateNonSpecialIP`.
fn non_special_ip(ip: &str, path: &Path, errs: &mut Errs) {
    let Some(addr) = formats::parse_ip(ip) else {
        errs.push(FieldError::invalid(
            path.as_str(),
            ip,
            "must be a valid IP address",
        ));
        return;
    };
    let (unspecified, loopback, link_local, link_local_mc) = match addr {
        IpAddr::V4(a) => (
            a.is_unspecified(),
            a.is_loopback(),
            a.is_link_local(),
            a.octets()[..3] == [224, 0, 0],
        ),
        IpAddr::V6(a) => (
            a.is_unspecified(),
            a.is_loopback(),
            (a.segments()[0] & 0xffc0) == 0xfe80,
            (a.segments()[0] & 0xff0f) == 0xff02,
        ),
    };
    if unspecified {
        errs.push(FieldError::invalid(
            path.as_str(),
            ip,
            format!("may not be unspecified ({ip})"),
        ));
    }
    if loopback {
        errs.push(FieldError::invalid(
            path.as_str(),
            ip,
            "may not be in the loopback range (127.0.0.0/8, ::1/128)",
        ));
    }
    if link_local {
        errs.push(FieldError::invalid(
            path.as_str(),
            ip,
            "may not be in the link-local range (169.254.0.0/16, fe80::/10)",
        ));
    }
    if link_local_mc {
        errs.push(FieldError::invalid(
            path.as_str(),
            ip,
            "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)",
        ));
    }
}

fn go_service_port(port: &Value) -> String {
    format!(
        "core.ServicePort{{Name:\"\", Protocol:{}, AppProtocol:(*string)(nil), Port:{}, \
         TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:\"\"}}, NodePort:0}}",
        go_quote(str_opt(port, "protocol").unwrap_or("TCP")),
        int_opt(port, "port").unwrap_or(0)
    )
}

fn service_port(
    port: &Value,
    require_name: bool,
    names: &mut Vec<String>,
    path: &Path,
    errs: &mut Errs,
) {
    let name = str_or(port, "name");
    if require_name && name.is_empty() {
        errs.push(FieldError::required(path.child("name").as_str(), ""));
    } else if !name.is_empty() {
        for m in formats::dns1123_label(name) {
            errs.push(FieldError::invalid(path.child("name").as_str(), name, m));
        }
        if names.iter().any(|n| n == name) {
            errs.push(FieldError::duplicate(path.child("name").as_str(), name));
        } else {
            names.push(name.to_owned());
        }
    }
    let number = int_opt(port, "port").unwrap_or(0);
    for m in formats::port_num(number) {
        errs.push(FieldError::invalid(path.child("port").as_str(), number, m));
    }
    protocol(port, path, errs);
    let default_target = Value::from(number);
    let target = get(port, "targetPort").unwrap_or(&default_target);
    port_num_or_name(Some(target), &path.child("targetPort"), errs);
    if let Some(ap) = str_opt(port, "appProtocol") {
        meta::qualified_name(ap, &path.child("appProtocol"), errs);
    }
}

fn check_service(object: &Value, errs: &mut Errs) {
    let spec = at(object, "spec");
    let sp = Path::root("spec");
    let kind = str_opt(spec, "type").unwrap_or("ClusterIP");
    let ips = cluster_ips(spec);
    let headless = is_headless(spec);
    let ports = arr(spec, "ports");
    if ports.is_empty() && !headless && kind != "ExternalName" {
        errs.push(FieldError::required(sp.child("ports").as_str(), ""));
    }
    match kind {
        "LoadBalancer" | "NodePort" if headless => errs.push(FieldError::invalid(
            sp.child("clusterIPs").index(0).as_str(),
            "None",
            format!("may not be set to 'None' for {kind} services"),
        )),
        "ExternalName" => {
            if !ips.is_empty() {
                errs.push(FieldError::forbidden(
                    sp.child("clusterIPs").as_str(),
                    "may not be set for ExternalName services",
                ));
            }
            if !arr(spec, "ipFamilies").is_empty() {
                errs.push(FieldError::forbidden(
                    sp.child("ipFamilies").as_str(),
                    "may not be set for ExternalName services",
                ));
            }
            if get(spec, "ipFamilyPolicy").is_some() {
                errs.push(FieldError::forbidden(
                    sp.child("ipFamilyPolicy").as_str(),
                    "may not be set for ExternalName services",
                ));
            }
            let cname = str_or(spec, "externalName");
            let cname = cname.strip_suffix('.').unwrap_or(cname);
            if cname.is_empty() {
                errs.push(FieldError::required(sp.child("externalName").as_str(), ""));
            } else {
                for m in formats::dns1123_subdomain(cname) {
                    errs.push(FieldError::invalid(
                        sp.child("externalName").as_str(),
                        cname,
                        m,
                    ));
                }
            }
        }
        _ => {}
    }
    let mut names = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        service_port(
            port,
            ports.len() > 1,
            &mut names,
            &sp.child("ports").index(i),
            errs,
        );
    }
    meta::labels(get(spec, "selector"), &sp.child("selector"), errs);
    let affinity = str_opt(spec, "sessionAffinity").unwrap_or("None");
    match affinity {
        "ClientIP" => {
            if let Some(t) = get(spec, "sessionAffinityConfig")
                .and_then(|c| get(c, "clientIP"))
                .and_then(|c| int_opt(c, "timeoutSeconds"))
                && !(1..=86400).contains(&t)
            {
                errs.push(FieldError::invalid(
                    sp.child("sessionAffinityConfig")
                        .child("clientIP")
                        .child("timeoutSeconds")
                        .as_str(),
                    t,
                    "must be greater than 0 and less than 86400",
                ));
            }
        }
        "None" => {
            if get(spec, "sessionAffinityConfig").is_some() {
                errs.push(FieldError::forbidden(
                    sp.child("sessionAffinityConfig").as_str(),
                    "must not be set when session affinity is None",
                ));
            }
        }
        "" => errs.push(FieldError::required(
            sp.child("sessionAffinity").as_str(),
            "",
        )),
        other => errs.push(FieldError::not_supported(
            sp.child("sessionAffinity").as_str(),
            other,
            &["ClientIP", "None"],
        )),
    }
    if kind != "ExternalName" {
        cluster_ip_fields(spec, &ips, headless, &sp, errs);
    }
    for (i, ip) in strings(spec, "externalIPs").iter().enumerate() {
        let p = sp.child("externalIPs").index(i);
        if formats::parse_ip(ip).is_none() {
            errs.push(FieldError::invalid(p.as_str(), *ip, formats::IP_MSG));
        } else {
            non_special_ip(ip, &p, errs);
        }
    }
    const TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
    if kind.is_empty() {
        errs.push(FieldError::required(sp.child("type").as_str(), ""));
    } else if !TYPES.contains(&kind) {
        errs.push(FieldError::not_supported(
            sp.child("type").as_str(),
            kind,
            TYPES,
        ));
    }
    let mut node_ports: Vec<(String, i64)> = Vec::new();
    let mut port_keys: Vec<(String, i64)> = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let pp = sp.child("ports").index(i);
        let proto = str_opt(port, "protocol").unwrap_or("TCP").to_owned();
        let node_port = int_opt(port, "nodePort").unwrap_or(0);
        if kind == "ClusterIP" && node_port != 0 {
            errs.push(FieldError::forbidden(
                pp.child("nodePort").as_str(),
                "may not be used when `type` is 'ClusterIP'",
            ));
        }
        if node_port != 0 {
            let key = (proto.clone(), node_port);
            if node_ports.contains(&key) {
                errs.push(FieldError::duplicate(
                    pp.child("nodePort").as_str(),
                    node_port,
                ));
            }
            node_ports.push(key);
        }
        let key = (proto, int_opt(port, "port").unwrap_or(0));
        if port_keys.contains(&key) {
            let mut e = FieldError::duplicate(pp.as_str(), Value::Null);
            e.rendered = Some(go_service_port(port));
            errs.push(e);
        }
        port_keys.push(key);
    }
    let ranges = strings(spec, "loadBalancerSourceRanges");
    if !ranges.is_empty() {
        let rp = sp.child("LoadBalancerSourceRanges");
        if kind != "LoadBalancer" {
            errs.push(FieldError::forbidden(
                rp.as_str(),
                "may only be used when `type` is 'LoadBalancer'",
            ));
        }
        for (i, r) in ranges.iter().enumerate() {
            if formats::parse_cidr(r.trim()).is_none() {
                errs.push(FieldError::invalid(
                    rp.index(i).as_str(),
                    r.trim(),
                    formats::CIDR_MSG,
                ));
            }
        }
    }
    if get(spec, "allocateLoadBalancerNodePorts").is_some() && kind != "LoadBalancer" {
        errs.push(FieldError::forbidden(
            sp.child("allocateLoadBalancerNodePorts").as_str(),
            "may only be used when `type` is 'LoadBalancer'",
        ));
    }
    if let Some(class) = str_opt(spec, "loadBalancerClass") {
        if kind == "LoadBalancer" {
            meta::qualified_name(class, &sp.child("loadBalancerClass"), errs);
        } else {
            errs.push(FieldError::forbidden(
                sp.child("loadBalancerClass").as_str(),
                "may only be used when `type` is 'LoadBalancer'",
            ));
        }
    }
    let external = kind == "LoadBalancer"
        || kind == "NodePort"
        || (kind == "ClusterIP" && !arr(spec, "externalIPs").is_empty());
    let etp = str_opt(spec, "externalTrafficPolicy");
    if !external {
        if let Some(p) = etp.filter(|p| !p.is_empty()) {
            errs.push(FieldError::invalid(
                sp.child("externalTrafficPolicy").as_str(),
                p,
                "may only be set for externally-accessible services",
            ));
        }
    } else if let Some(p) = etp
        && p != "Cluster"
        && p != "Local"
    {
        errs.push(FieldError::not_supported(
            sp.child("externalTrafficPolicy").as_str(),
            p,
            &["Cluster", "Local"],
        ));
    }
    let needs_health = kind == "LoadBalancer" && etp == Some("Local");
    if let Some(hc) = int_opt(spec, "healthCheckNodePort").filter(|p| *p != 0)
        && !needs_health
    {
        errs.push(FieldError::invalid(
            sp.child("healthCheckNodePort").as_str(),
            hc,
            "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
        ));
    }
    if let Some(p) = str_opt(spec, "internalTrafficPolicy")
        && p != "Cluster"
        && p != "Local"
    {
        errs.push(FieldError::not_supported(
            sp.child("internalTrafficPolicy").as_str(),
            p,
            &["Cluster", "Local"],
        ));
    }
    if let Some(td) = str_opt(spec, "trafficDistribution")
        && td != "PreferClose"
    {
        errs.push(FieldError::not_supported(
            sp.child("trafficDistribution").as_str(),
            td,
            &["PreferClose"],
        ));
    }
}

/// `ValidateServiceClusterIPsRelatedFields`.
fn cluster_ip_fields(spec: &Value, ips: &[String], headless: bool, sp: &Path, errs: &mut Errs) {
    let cp = sp.child("clusterIPs");
    let ip = str_opt(spec, "clusterIP").unwrap_or_else(|| ips.first().map_or("", String::as_str));
    if !ip.is_empty() {
        if ips.first().map(String::as_str) != Some(ip) {
            errs.push(FieldError::invalid_rendered(
                cp.as_str(),
                go_ips(ips),
                "first value must match `clusterIP`",
            ));
        }
    } else if !ips.is_empty() {
        errs.push(FieldError::invalid_rendered(
            cp.as_str(),
            go_ips(ips),
            "must be empty when `clusterIP` is not specified",
        ));
    }
    let families = strings(spec, "ipFamilies");
    for (i, f) in families.iter().enumerate() {
        if *f != "IPv4" && *f != "IPv6" {
            errs.push(FieldError::not_supported(
                sp.child("ipFamilies").index(i).as_str(),
                *f,
                &["IPv4", "IPv6"],
            ));
        }
        if families[..i].contains(f) {
            errs.push(FieldError::duplicate(
                sp.child("ipFamilies").index(i).as_str(),
                *f,
            ));
        }
    }
    if let Some(policy) = str_opt(spec, "ipFamilyPolicy")
        && !matches!(
            policy,
            "PreferDualStack" | "RequireDualStack" | "SingleStack"
        )
    {
        errs.push(FieldError::not_supported(
            sp.child("ipFamilyPolicy").as_str(),
            policy,
            &["PreferDualStack", "RequireDualStack", "SingleStack"],
        ));
    }
    let mut invalid = false;
    for (i, ip) in ips.iter().enumerate() {
        if i == 0 && ip == "None" {
            if ips.len() > 1 {
                invalid = true;
                errs.push(FieldError::invalid_rendered(
                    cp.as_str(),
                    go_ips(ips),
                    "'None' must be the first and only value",
                ));
            }
            continue;
        }
        if formats::parse_ip(ip).is_none() {
            invalid = true;
            errs.push(FieldError::invalid(
                cp.index(i).as_str(),
                ip.as_str(),
                formats::IP_MSG,
            ));
        }
    }
    if ips.len() > 2 {
        errs.push(FieldError::invalid_rendered(
            cp.as_str(),
            go_ips(ips),
            "may only hold up to 2 values",
        ));
    }
    if invalid {
        return;
    }
    if ips.len() > 1 {
        let v6: Vec<bool> = ips
            .iter()
            .map(|ip| formats::parse_ip(ip).is_some_and(|a| a.is_ipv6()))
            .collect();
        if ips.len() != 2 || v6[0] == v6[1] {
            errs.push(FieldError::invalid_rendered(
                cp.as_str(),
                go_ips(ips),
                "may specify no more than one IP for each IP family",
            ));
        }
    }
    if !headless {
        for (i, (ip, family)) in ips.iter().zip(&families).enumerate() {
            let v6 = formats::parse_ip(ip).is_some_and(|a| a.is_ipv6());
            if *family == "IPv4" && v6 {
                errs.push(FieldError::invalid(
                    cp.index(i).as_str(),
                    ip.as_str(),
                    format!("expected an IPv4 value as indicated by `ipFamilies[{i}]`"),
                ));
            }
            if *family == "IPv6" && !v6 {
                errs.push(FieldError::invalid(
                    cp.index(i).as_str(),
                    ip.as_str(),
                    format!("expected an IPv6 value as indicated by `ipFamilies[{i}]`"),
                ));
            }
        }
    }
}

/// `ValidateService` (names are DNS-1035 labels).
pub(crate) fn service(object: &Value, errs: &mut Errs) {
    meta::object_meta(object, NameRule::Label1035, true, errs);
    check_service(object, errs);
}

/// `ValidateServiceUpdate`: allocated cluster IPs may not change (an update without them
/// keeps the old ones, as the Service REST storage does), nor the load-balancer class.
pub(crate) fn service_update(new: &Value, old: &Value, errs: &mut Errs) {
    meta::object_meta_update(new, old, errs);
    let (ns, os) = (at(new, "spec"), at(old, "spec"));
    let external = |s: &Value| str_opt(s, "type") == Some("ExternalName");
    let (new_ips, old_ips) = (cluster_ips(ns), cluster_ips(os));
    let both_headless = is_headless(ns) && is_headless(os);
    let skip = external(ns) || external(os) || new_ips.is_empty() || both_headless;
    if !skip {
        for (i, ip) in old_ips.iter().enumerate() {
            if new_ips.get(i).is_some_and(|n| n != ip) {
                errs.push(FieldError::invalid_rendered(
                    Path::root("spec").child("clusterIPs").index(i).as_str(),
                    go_ips(&new_ips),
                    "may not change once set",
                ));
            }
        }
    }
    let lb = |s: &Value| str_opt(s, "type") == Some("LoadBalancer");
    if lb(ns) && lb(os) && get(ns, "loadBalancerClass") != get(os, "loadBalancerClass") {
        let mut e = FieldError::invalid(
            "spec.loadBalancerClass",
            get(ns, "loadBalancerClass").cloned().unwrap_or(Value::Null),
            "may not change once set",
        );
        if get(ns, "loadBalancerClass").is_none() {
            e.rendered = Some("null".to_owned());
        }
        errs.push(e);
    }
    service(new, errs);
}

fn endpoint_address(addr: &Value, path: &Path, errs: &mut Errs) {
    let ip = str_or(addr, "ip");
    if formats::parse_ip(ip).is_none() {
        errs.push(FieldError::invalid(
            path.child("ip").as_str(),
            ip,
            formats::IP_MSG,
        ));
    }
    let hostname = str_or(addr, "hostname");
    if !hostname.is_empty() {
        for m in formats::dns1123_label(hostname) {
            errs.push(FieldError::invalid(
                path.child("hostname").as_str(),
                hostname,
                m,
            ));
        }
    }
    if let Some(node) = str_opt(addr, "nodeName") {
        for m in formats::dns1123_subdomain(node) {
            errs.push(FieldError::invalid(
                path.child("nodeName").as_str(),
                node,
                m,
            ));
        }
    }
    non_special_ip(ip, &path.child("ip"), errs);
}

/// `ValidateEndpoints`.
pub(crate) fn endpoints(object: &Value, errs: &mut Errs) {
    meta::object_meta(object, NameRule::Subdomain, true, errs);
    for (i, ss) in arr(object, "subsets").iter().enumerate() {
        let p = Path::root("subsets").index(i);
        if arr(ss, "addresses").is_empty() && arr(ss, "notReadyAddresses").is_empty() {
            errs.push(FieldError::required(
                p.as_str(),
                "must specify `addresses` or `notReadyAddresses`",
            ));
        }
        for list in ["addresses", "notReadyAddresses"] {
            for (j, a) in arr(ss, list).iter().enumerate() {
                endpoint_address(a, &p.child(list).index(j), errs);
            }
        }
        let ports = arr(ss, "ports");
        for (j, port) in ports.iter().enumerate() {
            let pp = p.child("ports").index(j);
            let name = str_or(port, "name");
            if ports.len() > 1 && name.is_empty() {
                errs.push(FieldError::required(pp.child("name").as_str(), ""));
            } else if !name.is_empty() {
                for m in formats::dns1123_label(name) {
                    errs.push(FieldError::invalid(pp.child("name").as_str(), name, m));
                }
            }
            let n = int_opt(port, "port").unwrap_or(0);
            for m in formats::port_num(n) {
                errs.push(FieldError::invalid(pp.child("port").as_str(), n, m));
            }
            protocol(port, &pp, errs);
            if let Some(ap) = str_opt(port, "appProtocol") {
                meta::qualified_name(ap, &pp.child("appProtocol"), errs);
            }
        }
    }
}

/// discovery's `ValidateEndpointSlice`.
pub(crate) fn endpoint_slice(object: &Value, errs: &mut Errs) {
    meta::object_meta(object, NameRule::Subdomain, true, errs);
    let address_type = str_or(object, "addressType");
    const TYPES: &[&str] = &["FQDN", "IPv4", "IPv6"];
    if address_type.is_empty() {
        errs.push(FieldError::required("addressType", ""));
    } else if !TYPES.contains(&address_type) {
        errs.push(FieldError::not_supported(
            "addressType",
            address_type,
            TYPES,
        ));
    }
    let endpoints = arr(object, "endpoints");
    if endpoints.len() > 1000 {
        errs.push(FieldError::too_many("endpoints", endpoints.len(), 1000));
    }
    for (i, ep) in endpoints.iter().enumerate() {
        let p = Path::root("endpoints").index(i);
        let ap = p.child("addresses");
        let addresses = strings(ep, "addresses");
        if addresses.is_empty() {
            errs.push(FieldError::required(
                ap.as_str(),
                "must contain at least 1 address",
            ));
        } else if addresses.len() > 100 {
            errs.push(FieldError::too_many(ap.as_str(), addresses.len(), 100));
        }
        for (j, a) in addresses.iter().enumerate() {
            let aip = ap.index(j);
            match address_type {
                "IPv4" | "IPv6" => {
                    let want_v6 = address_type == "IPv6";
                    if formats::parse_ip(a).is_none_or(|ip| ip.is_ipv6() != want_v6) {
                        errs.push(FieldError::invalid(
                            aip.as_str(),
                            *a,
                            format!("must be a valid {address_type} address"),
                        ));
                    } else {
                        non_special_ip(a, &aip, errs);
                    }
                }
                "FQDN" => {
                    let trimmed = a.strip_suffix('.').unwrap_or(a);
                    let msgs = formats::dns1123_subdomain(trimmed);
                    if !msgs.is_empty() {
                        errs.push(FieldError::invalid(aip.as_str(), trimmed, msgs.join(",")));
                    } else if trimmed.split('.').count() < 2 {
                        errs.push(FieldError::invalid(
                            aip.as_str(),
                            trimmed,
                            "should be a domain with at least two segments separated by dots",
                        ));
                    }
                }
                _ => {}
            }
        }
        if let Some(node) = str_opt(ep, "nodeName") {
            for m in formats::dns1123_subdomain(node) {
                errs.push(FieldError::invalid(p.child("nodeName").as_str(), node, m));
            }
        }
        if let Some(h) = str_opt(ep, "hostname") {
            for m in formats::dns1123_label(h) {
                errs.push(FieldError::invalid(p.child("hostname").as_str(), h, m));
            }
        }
    }
    let ports = arr(object, "ports");
    let mut names: Vec<&str> = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let p = Path::root("ports").index(i);
        let name = str_or(port, "name");
        if !name.is_empty() {
            for m in formats::dns1123_label(name) {
                errs.push(FieldError::invalid(p.child("name").as_str(), name, m));
            }
        }
        if names.contains(&name) {
            errs.push(FieldError::duplicate(p.child("name").as_str(), name));
        } else {
            names.push(name);
        }
        protocol(port, &p, errs);
        if let Some(ap) = str_opt(port, "appProtocol") {
            meta::qualified_name(ap, &p.child("appProtocol"), errs);
        }
    }
}

/// EndpointSlice updates: `addressType` is immutable.
pub(crate) fn endpoint_slice_update(new: &Value, old: &Value, errs: &mut Errs) {
    meta::object_meta_update(new, old, errs);
    endpoint_slice(new, errs);
    meta::immutable(
        get(new, "addressType"),
        get(old, "addressType"),
        &Path::root("addressType"),
        errs,
    );
}
