//! Services: types, traffic policies, session affinity, ports, IP families.

use serde_json::{Value, json};

use super::{Case, run};

fn service(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": spec})
}

fn case(name: &'static str, input: Value, expected: Value) -> Case {
    Case {
        name,
        group: "",
        kind: "Service",
        input,
        expected,
    }
}

/// The fields every non-ExternalName, non-headless Service of this IPv4 cluster gets.
fn cluster_ip_fields() -> Value {
    json!({"sessionAffinity": "None", "internalTrafficPolicy": "Cluster",
           "ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4"]})
}

fn with(mut base: Value, extra: Value) -> Value {
    if let (Some(base), Value::Object(extra)) = (base.as_object_mut(), extra) {
        base.extend(extra);
    }
    base
}

#[test]
fn services() {
    let ports_in = json!([{"port": 80}]);
    let ports_out = json!([{"port": 80, "protocol": "TCP", "targetPort": 80}]);
    run(vec![
        case(
            "a ClusterIP Service by default",
            service(json!({"selector": {"app": "web"}, "ports": ports_in})),
            service(with(
                cluster_ip_fields(),
                json!({
                "type": "ClusterIP", "selector": {"app": "web"}, "ports": ports_out}),
            )),
        ),
        case(
            "NodePort: external traffic policy Cluster",
            service(json!({"type": "NodePort", "ports": ports_in})),
            service(with(
                cluster_ip_fields(),
                json!({
                "type": "NodePort", "ports": ports_out, "externalTrafficPolicy": "Cluster"}),
            )),
        ),
        case(
            "LoadBalancer: node ports allocated, ingress IPs are VIPs",
            with(
                service(json!({"type": "LoadBalancer", "ports": ports_in})),
                json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}, {"hostname": "lb.example"}]}}}),
            ),
            with(
                service(with(
                    cluster_ip_fields(),
                    json!({
                "type": "LoadBalancer", "ports": ports_out, "externalTrafficPolicy": "Cluster",
                "allocateLoadBalancerNodePorts": true}),
                )),
                json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10", "ipMode": "VIP"}, {"hostname": "lb.example"}]}}}),
            ),
        ),
        case(
            "ClusterIP with external IPs is externally accessible",
            service(json!({"externalIPs": ["198.51.100.7"], "ports": ports_in})),
            service(with(
                cluster_ip_fields(),
                json!({
                "type": "ClusterIP", "externalIPs": ["198.51.100.7"], "ports": ports_out,
                "externalTrafficPolicy": "Cluster"}),
            )),
        ),
        case(
            "ExternalName: no traffic policies, no IP families",
            service(json!({"type": "ExternalName", "externalName": "db.example.com"})),
            service(
                json!({"type": "ExternalName", "externalName": "db.example.com", "sessionAffinity": "None"}),
            ),
        ),
        case(
            "traffic policies the client set are kept",
            service(
                json!({"type": "NodePort", "externalTrafficPolicy": "Local", "internalTrafficPolicy": "Local",
                           "allocateLoadBalancerNodePorts": false}),
            ),
            service(
                json!({"type": "NodePort", "externalTrafficPolicy": "Local", "internalTrafficPolicy": "Local",
                           "allocateLoadBalancerNodePorts": false, "sessionAffinity": "None",
                           "ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4"]}),
            ),
        ),
        case(
            "a given cluster IP is mirrored into clusterIPs",
            service(json!({"clusterIP": "10.96.0.10", "selector": {"k8s-app": "kube-dns"}})),
            service(with(
                cluster_ip_fields(),
                json!({
                "type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                "selector": {"k8s-app": "kube-dns"}}),
            )),
        ),
        case(
            "headless with a selector: single stack",
            service(json!({"clusterIP": "None", "selector": {"app": "db"}})),
            service(with(
                cluster_ip_fields(),
                json!({
                "type": "ClusterIP", "clusterIP": "None", "clusterIPs": ["None"], "selector": {"app": "db"}}),
            )),
        ),
        case(
            "headless without a selector: RequireDualStack with both families, as Kubernetes does",
            service(json!({"clusterIP": "None"})),
            service(
                json!({"type": "ClusterIP", "clusterIP": "None", "clusterIPs": ["None"],
                           "sessionAffinity": "None", "internalTrafficPolicy": "Cluster",
                           "ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv4", "IPv6"]}),
            ),
        ),
        case(
            "headless without a selector, single stack asked for",
            service(json!({"clusterIP": "None", "ipFamilyPolicy": "SingleStack"})),
            service(
                json!({"type": "ClusterIP", "clusterIP": "None", "clusterIPs": ["None"],
                           "sessionAffinity": "None", "internalTrafficPolicy": "Cluster",
                           "ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4"]}),
            ),
        ),
        case(
            "PreferDualStack on a single-stack cluster gets the one family",
            service(json!({"ipFamilyPolicy": "PreferDualStack"})),
            service(
                json!({"type": "ClusterIP", "sessionAffinity": "None", "internalTrafficPolicy": "Cluster",
                           "ipFamilyPolicy": "PreferDualStack", "ipFamilies": ["IPv4"]}),
            ),
        ),
        case(
            "ClientIP affinity gets a three-hour timeout",
            service(json!({"sessionAffinity": "ClientIP"})),
            service(with(
                cluster_ip_fields(),
                json!({
                "type": "ClusterIP", "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}}}),
            )),
        ),
        case(
            "a ClientIP timeout the client set is kept",
            service(
                json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}),
            ),
            service(with(
                cluster_ip_fields(),
                json!({
                "type": "ClusterIP", "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}),
            )),
        ),
        case(
            "no affinity drops an affinity config",
            service(json!({"sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}})),
            service(with(cluster_ip_fields(), json!({"type": "ClusterIP"}))),
        ),
        case(
            "target ports: named kept, zero and empty replaced by the port; protocols kept",
            service(json!({"ports": [
                {"name": "a", "port": 80, "targetPort": "http"},
                {"name": "b", "port": 81, "targetPort": 0},
                {"name": "c", "port": 82, "targetPort": ""},
                {"name": "d", "port": 53, "protocol": "UDP", "targetPort": 5353}]})),
            service(with(
                cluster_ip_fields(),
                json!({"type": "ClusterIP", "ports": [
                {"name": "a", "port": 80, "targetPort": "http", "protocol": "TCP"},
                {"name": "b", "port": 81, "targetPort": 81, "protocol": "TCP"},
                {"name": "c", "port": 82, "targetPort": 82, "protocol": "TCP"},
                {"name": "d", "port": 53, "protocol": "UDP", "targetPort": 5353}]}),
            )),
        ),
    ]);
}

#[test]
fn explicit_values_are_kept() {
    let mut s = json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "targetPort": 8080}]}});
    crate::defaulting::apply_defaults("", "Service", &mut s);
    assert_eq!(s["spec"]["type"], "NodePort");
    assert_eq!(s["spec"]["ports"][0]["targetPort"], 8080);
    assert_eq!(s["spec"]["ports"][0]["protocol"], "TCP");
}
