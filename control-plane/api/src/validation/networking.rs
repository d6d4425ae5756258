//! NetworkPolicies, Ingresses, IngressClasses, IPAddresses and ServiceCIDRs
//! (`pkg/apis/networking/validation`, v1.33).

use serde_json::Value;

use super::container::protocol;
use super::errors::{FieldError, go_quote};
use super::formats::{self, NameRule};
use super::meta::{self, IMMUTABLE};
use super::util::{Errs, Path, arr, at, get, int_opt, str_opt, str_or, strings};

fn np_port(port: &Value, path: &Path, errs: &mut Errs) {
    if str_opt(port, "protocol").is_some() {
        protocol(port, path, errs);
    }
    let end_port = int_opt(port, "endPort");
    match get(port, "port") {
        Some(Value::String(name)) => {
            if let Some(e) = end_port {
                errs.push(FieldError::invalid(
                    path.child("endPort").as_str(),
                    e,
                    "may not be specified when `port` is non-numeric",
                ));
            }
            for m in formats::port_name(name) {
                errs.push(FieldError::invalid(
                    path.child("port").as_str(),
                    name.as_str(),
                    m,
                ));
            }
        }
        Some(n) => {
            let n = n.as_i64().unwrap_or(0);
            for m in formats::port_num(n) {
                errs.push(FieldError::invalid(path.child("port").as_str(), n, m));
            }
            if let Some(e) = end_port {
                if e < n {
                    errs.push(FieldError::invalid(
                        path.child("endPort").as_str(),
                        n,
                        "must be greater than or equal to `port`",
                    ));
                }
                for m in formats::port_num(e) {
                    errs.push(FieldError::invalid(path.child("endPort").as_str(), e, m));
                }
            }
        }
        None => {
            if let Some(e) = end_port {
                errs.push(FieldError::invalid(
                    path.child("endPort").as_str(),
                    e,
                    "may not be specified when `port` is not specified",
                ));
            }
        }
    }
}

fn ip_block(block: &Value, path: &Path, errs: &mut Errs) {
    let cidr = str_or(block, "cidr");
    if cidr.is_empty() {
        errs.push(FieldError::required(path.child("cidr").as_str(), ""));
        return;
    }
    let Some(outer) = formats::parse_cidr(cidr) else {
        errs.push(FieldError::invalid(
            path.child("cidr").as_str(),
            cidr,
            "not a valid CIDR",
        ));
        return;
    };
    for (i, e) in strings(block, "except").iter().enumerate() {
        let ep = path.child("except").index(i);
        let Some(inner) = formats::parse_cidr(e) else {
            errs.push(FieldError::invalid(ep.as_str(), *e, "not a valid CIDR"));
            return;
        };
        if !formats::cidr_strict_subset(outer, inner) {
            errs.push(FieldError::invalid(
                ep.as_str(),
                *e,
                "must be a strict subset of `cidr`",
            ));
        }
    }
}

fn np_peer(peer: &Value, path: &Path, errs: &mut Errs) {
    let mut count = 0;
    for sel in ["podSelector", "namespaceSelector"] {
        if let Some(s) = get(peer, sel) {
            count += 1;
            meta::label_selector(Some(s), &path.child(sel), errs);
        }
    }
    let block = get(peer, "ipBlock");
    if let Some(b) = block {
        count += 1;
        ip_block(b, &path.child("ipBlock"), errs);
    }
    if count == 0 {
        errs.push(FieldError::required(path.as_str(), "must specify a peer"));
    } else if count > 1 && block.is_some() {
        errs.push(FieldError::forbidden(
            path.as_str(),
            "may not specify both ipBlock and another peer",
        ));
    }
}

/// `ValidateNetworkPolicy`.
pub(crate) fn network_policy(object: &Value, errs: &mut Errs) {
    meta::object_meta(object, NameRule::Subdomain, true, errs);
    let spec = at(object, "spec");
    let sp = Path::root("spec");
    meta::label_selector(get(spec, "podSelector"), &sp.child("podSelector"), errs);
    for (dir, peers) in [("ingress", "from"), ("egress", "to")] {
        for (i, rule) in arr(spec, dir).iter().enumerate() {
            let rp = sp.child(dir).index(i);
            for (j, port) in arr(rule, "ports").iter().enumerate() {
                np_port(port, &rp.child("ports").index(j), errs);
            }
            for (j, peer) in arr(rule, peers).iter().enumerate() {
                np_peer(peer, &rp.child(peers).index(j), errs);
            }
        }
    }
    let types = strings(spec, "policyTypes");
    let tp = sp.child("policyTypes");
    if types.len() > 2 {
        let quoted: Vec<String> = types.iter().map(|t| go_quote(t)).collect();
        errs.push(FieldError::invalid_rendered(
            tp.as_str(),
            format!("[]networking.PolicyType{{{}}}", quoted.join(", ")),
            "may not specify more than two policyTypes",
        ));
        return;
    }
    for (i, t) in types.iter().enumerate() {
        if *t != "Ingress" && *t != "Egress" {
            errs.push(FieldError::not_supported(
                tp.index(i).as_str(),
                *t,
                &["Ingress", "Egress"],
            ));
        }
    }
}

fn ingress_backend(backend: &Value, path: &Path, errs: &mut Errs) {
    match (get(backend, "resource"), get(backend, "service")) {
        (Some(_), Some(_)) => errs.push(FieldError::invalid(
            path.as_str(),
            "",
            "cannot set both resource and service backends",
        )),
        (Some(r), None) => typed_reference(r, &path.child("resource"), errs),
        (None, Some(svc)) => {
            let name = str_or(svc, "name");
            let np = path.child("service").child("name");
            if name.is_empty() {
                errs.push(FieldError::required(np.as_str(), ""));
            } else {
                for m in formats::dns1035_label(name) {
                    errs.push(FieldError::invalid(np.as_str(), name, m));
                }
            }
            let port = at(svc, "port");
            let pname = str_or(port, "name");
            let pnum = int_opt(port, "number").unwrap_or(0);
            let pp = path.child("service").child("port");
            match (!pname.is_empty(), pnum != 0) {
                (true, true) => errs.push(FieldError::invalid(
                    path.as_str(),
                    "",
                    "cannot set both port name & port number",
                )),
                (true, false) => {
                    for m in formats::port_name(pname) {
                        errs.push(FieldError::invalid(pp.child("name").as_str(), pname, m));
                    }
                }
                (false, true) => {
                    for m in formats::port_num(pnum) {
                        errs.push(FieldError::invalid(pp.child("number").as_str(), pnum, m));
                    }
                }
                (false, false) => errs.push(FieldError::required(
                    path.as_str(),
                    "port name or number is required",
                )),
            }
        }
        (None, None) => errs.push(FieldError::invalid(
            path.as_str(),
            "",
            "resource or service backend is required",
        )),
    }
}

fn typed_reference(r: &Value, path: &Path, errs: &mut Errs) {
    if let Some(group) = str_opt(r, "apiGroup") {
        for m in formats::dns1123_subdomain(group) {
            errs.push(FieldError::invalid(
                path.child("apiGroup").as_str(),
                group,
                m,
            ));
        }
    }
    for (field, detail) in [("kind", "kind is required"), ("name", "name is required")] {
        let v = str_or(r, field);
        if v.is_empty() {
            errs.push(FieldError::required(path.child(field).as_str(), detail));
        } else {
            for m in formats::path_segment_name(v) {
                errs.push(FieldError::invalid(path.child(field).as_str(), v, m));
            }
        }
    }
}

fn ingress_path(p: &Value, path: &Path, errs: &mut Errs) {
    let Some(kind) = str_opt(p, "pathType") else {
        errs.push(FieldError::required(
            path.child("pathType").as_str(),
            "pathType must be specified",
        ));
        return;
    };
    let value = str_or(p, "path");
    let pp = path.child("path");
    match kind {
        "Exact" | "Prefix" => {
            if !value.starts_with('/') {
                errs.push(FieldError::invalid(
                    pp.as_str(),
                    value,
                    "must be an absolute path",
                ));
            }
            if !value.is_empty() {
                for seq in ["//", "/./", "/../", "%2f", "%2F"] {
                    if value.contains(seq) {
                        errs.push(FieldError::invalid(
                            pp.as_str(),
                            value,
                            format!("must not contain '{seq}'"),
                        ));
                    }
                }
                for suffix in ["/..", "/."] {
                    if value.ends_with(suffix) {
                        errs.push(FieldError::invalid(
                            pp.as_str(),
                            value,
                            format!("cannot end with '{suffix}'"),
                        ));
                    }
                }
            }
        }
        "ImplementationSpecific" => {
            if !value.is_empty() && !value.starts_with('/') {
                errs.push(FieldError::invalid(
                    pp.as_str(),
                    value,
                    "must be an absolute path",
                ));
            }
        }
        other => errs.push(FieldError::not_supported(
            path.child("pathType").as_str(),
            other,
            &["Exact", "ImplementationSpecific", "Prefix"],
        )),
    }
    ingress_backend(at(p, "backend"), &path.child("backend"), errs);
}

fn host(h: &str, path: &Path, errs: &mut Errs) {
    if formats::parse_ip(h).is_some() {
        errs.push(FieldError::invalid(
            path.as_str(),
            h,
            "must be a DNS name, not an IP address",
        ));
    }
    let msgs = if h.contains('*') {
        formats::wildcard_dns1123_subdomain(h)
    } else {
        formats::dns1123_subdomain(h)
    };
    for m in msgs {
        errs.push(FieldError::invalid(path.as_str(), h, m));
    }
}

fn ingress_check(object: &Value, errs: &mut Errs) {
    meta::object_meta(object, NameRule::Subdomain, true, errs);
    let spec = at(object, "spec");
    let sp = Path::root("spec");
    let rules = arr(spec, "rules");
    let backend = get(spec, "defaultBackend");
    if rules.is_empty() && backend.is_none() {
        let rendered = if spec.get("rules").is_some_and(Value::is_array) {
            "[]networking.IngressRule{}"
        } else {
            "[]networking.IngressRule(nil)"
        };
        errs.push(FieldError::invalid_rendered(
            sp.as_str(),
            rendered.to_owned(),
            "either `defaultBackend` or `rules` must be specified",
        ));
    }
    if let Some(b) = backend {
        ingress_backend(b, &sp.child("defaultBackend"), errs);
    }
    for (i, rule) in rules.iter().enumerate() {
        let rp = sp.child("rules").index(i);
        let h = str_or(rule, "host");
        if !h.is_empty() {
            host(h, &rp.child("host"), errs);
        }
        if let Some(http) = get(rule, "http") {
            let hp = rp.child("http");
            let paths = arr(http, "paths");
            if paths.is_empty() {
                errs.push(FieldError::required(hp.child("paths").as_str(), ""));
            }
            for (j, p) in paths.iter().enumerate() {
                ingress_path(p, &hp.child("paths").index(j), errs);
            }
        }
    }
    for (i, tls) in arr(spec, "tls").iter().enumerate() {
        let tp = sp.child("tls").index(i);
        for (j, h) in strings(tls, "hosts").iter().enumerate() {
            let msgs = if h.contains('*') {
                formats::wildcard_dns1123_subdomain(h)
            } else {
                formats::dns1123_subdomain(h)
            };
            for m in msgs {
                errs.push(FieldError::invalid(
                    tp.child("hosts").index(j).as_str(),
                    *h,
                    m,
                ));
            }
        }
        let secret = str_or(tls, "secretName");
        if !secret.is_empty() {
            for m in formats::dns1123_subdomain(secret) {
                errs.push(FieldError::invalid(
                    tp.child("secretName").as_str(),
                    secret,
                    m,
                ));
            }
        }
    }
    if let Some(class) = str_opt(spec, "ingressClassName") {
        for m in formats::dns1123_subdomain(class) {
            errs.push(FieldError::invalid(
                sp.child("ingressClassName").as_str(),
                class,
                m,
            ));
        }
    }
}

/// `ValidateIngressCreate`.
pub(crate) fn ingress(object: &Value, errs: &mut Errs) {
    ingress_check(object, errs);
    let annotations = at(at(object, "metadata"), "annotations");
    if let Some(class) = str_opt(annotations, "kubernetes.io/ingress.class")
        && get(at(object, "spec"), "ingressClassName").is_some()
    {
        errs.push(FieldError::invalid(
            "annotations.kubernetes.io/ingress.class",
            class,
            "can not be set when the class field is also set",
        ));
    }
}

/// `ValidateIngressUpdate`.
pub(crate) fn ingress_update(new: &Value, old: &Value, errs: &mut Errs) {
    meta::object_meta_update(new, old, errs);
    ingress_check(new, errs);
}

/// `ValidateIngressClass`.
pub(crate) fn ingress_class(object: &Value, errs: &mut Errs) {
    meta::object_meta(object, NameRule::Subdomain, false, errs);
    let spec = at(object, "spec");
    let cp = Path::root("spec").child("controller");
    let controller = str_or(spec, "controller");
    if controller.len() > 250 {
        errs.push(FieldError::too_long(cp.as_str(), 250));
    }
    if controller.is_empty() {
        errs.push(FieldError::required(cp.as_str(), ""));
    } else {
        match controller.split_once('/') {
            Some((h, rest)) if !h.is_empty() && !rest.is_empty() => {
                for m in formats::dns1123_subdomain(h) {
                    errs.push(FieldError::invalid(cp.as_str(), h, m));
                }
                let ok = rest
                    .bytes()
                    .all(|c| c.is_ascii_alphanumeric() || b"/-._~%!$&'()*+,;=:".contains(&c));
                if !ok {
                    errs.push(FieldError::invalid(
                        cp.as_str(),
                        rest,
                        formats::regex_error(
                            "Invalid path",
                            "[A-Za-z0-9/\\-._~%!$&'()*+,;=:]+",
                            &[],
                        ),
                    ));
                }
            }
            _ => errs.push(FieldError::invalid(
                cp.as_str(),
                controller,
                "must be a domain-prefixed path (such as \"acme.io/foo\")",
            )),
        }
    }
    if let Some(params) = get(spec, "parameters") {
        let pp = Path::root("spec").child("parameters");
        typed_reference(params, &pp, errs);
        let scope = str_opt(params, "scope").unwrap_or("Cluster");
        match scope {
            "Namespace" => match str_opt(params, "namespace") {
                None => errs.push(FieldError::required(
                    pp.child("namespace").as_str(),
                    "`parameters.scope` is set to 'Namespace'",
                )),
                Some(ns) => {
                    for m in formats::dns1123_label(ns) {
                        errs.push(FieldError::invalid(pp.child("namespace").as_str(), ns, m));
                    }
                }
            },
            "Cluster" => {
                if get(params, "namespace").is_some() {
                    errs.push(FieldError::forbidden(
                        pp.child("namespace").as_str(),
                        "`parameters.scope` is set to 'Cluster'",
                    ));
                }
            }
            other => errs.push(FieldError::not_supported(
                pp.child("scope").as_str(),
                other,
                &["Cluster", "Namespace"],
            )),
        }
    }
}

/// `ValidateIngressClassUpdate`: the controller is immutable.
pub(crate) fn ingress_class_update(new: &Value, old: &Value, errs: &mut Errs) {
    meta::object_meta_update(new, old, errs);
    let (n, o) = (
        str_or(at(new, "spec"), "controller"),
        str_or(at(old, "spec"), "controller"),
    );
    if n != o {
        errs.push(FieldError::invalid("spec.controller", n, IMMUTABLE));
    }
    ingress_class(new, errs);
}

/// `ValidateIPAddress`: the name is the IP in canonical form; a parent reference is required.
pub(crate) fn ip_address(object: &Value, errs: &mut Errs) {
    let name = str_or(at(object, "metadata"), "name");
    if name.is_empty() {
        errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        match name.parse::<std::net::IpAddr>() {
            Err(_) => errs.push(FieldError::invalid(
                "metadata.name",
                name,
                format!("ParseAddr({}): unable to parse IP", go_quote(name)),
            )),
            Ok(ip) if ip.to_string() != name => errs.push(FieldError::invalid(
                "metadata.name",
                name,
                "must be a canonical format IP address",
            )),
            Ok(_) => {}
        }
    }
    let rp = Path::root("spec").child("parentRef");
    let Some(parent) = get(at(object, "spec"), "parentRef") else {
        errs.push(FieldError::required(rp.as_str(), ""));
        return;
    };
    if let Some(g) = str_opt(parent, "group").filter(|g| !g.is_empty()) {
        for m in formats::dns1123_subdomain(g) {
            errs.push(FieldError::invalid(rp.child("group").as_str(), g, m));
        }
    }
    for field in ["resource", "name"] {
        let v = str_or(parent, field);
        if v.is_empty() {
            errs.push(FieldError::required(rp.child(field).as_str(), ""));
        } else {
            for m in formats::path_segment_name(v) {
                errs.push(FieldError::invalid(rp.child(field).as_str(), v, m));
            }
        }
    }
    if let Some(ns) = str_opt(parent, "namespace").filter(|n| !n.is_empty()) {
        for m in formats::path_segment_name(ns) {
            errs.push(FieldError::invalid(rp.child("namespace").as_str(), ns, m));
        }
    }
}

/// `ValidateIPAddressUpdate`: the parent reference is immutable.
pub(crate) fn ip_address_update(new: &Value, old: &Value, errs: &mut Errs) {
    meta::object_meta_update(new, old, errs);
    ip_address(new, errs);
    meta::immutable(
        get(at(new, "spec"), "parentRef"),
        get(at(old, "spec"), "parentRef"),
        &Path::root("spec").child("parentRef"),
        errs,
    );
}

/// `ValidateServiceCIDR`: one or two CIDRs, one per IP family.
pub(crate) fn service_cidr(object: &Value, errs: &mut Errs) {
    meta::object_meta(object, NameRule::Subdomain, false, errs);
    let spec = at(object, "spec");
    let cp = Path::root("spec").child("cidrs");
    let cidrs = strings(spec, "cidrs");
    if cidrs.is_empty() {
        errs.push(FieldError::required(
            cp.as_str(),
            "at least one CIDR required",
        ));
        return;
    }
    if cidrs.len() > 2 {
        errs.push(FieldError::invalid(
            cp.as_str(),
            spec.clone(),
            "may only hold up to 2 values",
        ));
        return;
    }
    let parsed: Vec<_> = cidrs.iter().map(|c| formats::parse_cidr(c)).collect();
    for (i, (c, p)) in cidrs.iter().zip(&parsed).enumerate() {
        if p.is_none() {
            errs.push(FieldError::invalid(
                cp.index(i).as_str(),
                *c,
                formats::CIDR_MSG,
            ));
        }
    }
    if let [Some(a), Some(b)] = parsed.as_slice()
        && a.0.is_ipv6() == b.0.is_ipv6()
    {
        errs.push(FieldError::invalid(
            cp.as_str(),
            spec.clone(),
            "may specify no more than one IP for each IP family, i.e 192.168.0.0/24 and \
             2001:db8::/64",
        ));
    }
}

/// ServiceCIDR updates: existing CIDRs never change (a second family may be added).
pub(crate) fn service_cidr_update(new: &Value, old: &Value, errs: &mut Errs) {
    meta::object_meta_update(new, old, errs);
    service_cidr(new, errs);
    let (n, o) = (
        strings(at(new, "spec"), "cidrs"),
        strings(at(old, "spec"), "cidrs"),
    );
    let cp = Path::root("spec").child("cidrs");
    for (i, c) in o.iter().enumerate() {
        if n.get(i) != Some(c) {
            errs.push(FieldError::invalid(
                cp.index(i).as_str(),
                n.get(i).copied().unwrap_or_default(),
                IMMUTABLE,
            ));
        }
    }
}
