//! NetworkPolicy, Ingress, IngressClass, IPAddress and ServiceCIDR.

use serde_json::json;

use super::{CREATED, cells_of};

#[test]
fn network_policy_shows_its_pod_selector() {
    let policy = json!({
        "metadata": {"name": "db-ingress", "creationTimestamp": CREATED},
        "spec": {
            "podSelector": {"matchLabels": {"role": "db"},
                            "matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]}]},
            "policyTypes": ["Ingress"],
        },
    });
    assert_eq!(
        cells_of("networking.k8s.io", "NetworkPolicy", &policy),
        row!["db-ingress", "env notin (dev),role=db", "5m"]
    );
    let deny_all = json!({"metadata": {"name": "deny-all", "creationTimestamp": CREATED},
                          "spec": {"podSelector": {}}});
    assert_eq!(
        cells_of("networking.k8s.io", "NetworkPolicy", &deny_all)[1],
        "<none>"
    );
    let broken = json!({"metadata": {"name": "b"}, "spec": {"podSelector":
        {"matchExpressions": [{"key": "a", "operator": "Near"}]}}});
    assert_eq!(
        cells_of("networking.k8s.io", "NetworkPolicy", &broken)[1],
        "<error>"
    );
}

#[test]
fn ingress_row() {
    let ingress = json!({
        "metadata": {"name": "shop", "creationTimestamp": CREATED},
        "spec": {
            "ingressClassName": "nginx",
            "tls": [{"hosts": ["shop.example.com"], "secretName": "shop-tls"}],
            "rules": [
                {"host": "shop.example.com", "http": {"paths": []}},
                {"host": "api.example.com", "http": {"paths": []}},
            ],
        },
        "status": {"loadBalancer": {"ingress": [
            {"ip": "203.0.113.20"}, {"hostname": "lb.example.net"}, {"ip": "203.0.113.10"},
            {"ip": "203.0.113.20"},
        ]}},
    });
    assert_eq!(
        cells_of("networking.k8s.io", "Ingress", &ingress),
        row![
            "shop",
            "nginx",
            "shop.example.com,api.example.com",
            "203.0.113.10,203.0.113.20,lb.example.net",
            "80, 443",
            "5m"
        ]
    );
    let catch_all = json!({"metadata": {"name": "default", "creationTimestamp": CREATED},
        "spec": {"defaultBackend": {"service": {"name": "web", "port": {"number": 80}}}}});
    assert_eq!(
        cells_of("networking.k8s.io", "Ingress", &catch_all),
        row!["default", "<none>", "*", "", "80", "5m"]
    );
}

#[test]
fn ingress_hosts_stop_after_three_rules() {
    let rules: Vec<_> = ["a.io", "", "b.io", "c.io", "d.io"]
        .iter()
        .map(|host| json!({"host": host}))
        .collect();
    let ingress = json!({"metadata": {"name": "many"}, "spec": {"rules": rules}});
    // As kube-apiserver counts: N in `+ N more` is the number of rules less three, whether
    // or not they name a host.
    assert_eq!(
        cells_of("networking.k8s.io", "Ingress", &ingress)[2],
        "a.io,b.io,c.io + 2 more..."
    );
}

#[test]
fn ingress_class_row() {
    let class = json!({
        "metadata": {"name": "external-lb", "creationTimestamp": CREATED},
        "spec": {
            "controller": "example.com/ingress-controller",
            "parameters": {"apiGroup": "k8s.example.com", "kind": "IngressParameters",
                           "name": "external-lb", "scope": "Cluster"},
        },
    });
    assert_eq!(
        cells_of("networking.k8s.io", "IngressClass", &class),
        row![
            "external-lb",
            "example.com/ingress-controller",
            "IngressParameters.k8s.example.com/external-lb",
            "5m"
        ]
    );
    let core_parameters = json!({"metadata": {"name": "c"},
        "spec": {"controller": "x", "parameters": {"kind": "ConfigMap", "name": "cfg"}}});
    assert_eq!(
        cells_of("networking.k8s.io", "IngressClass", &core_parameters)[2],
        "ConfigMap/cfg"
    );
    let plain = json!({"metadata": {"name": "p"}, "spec": {"controller": "x"}});
    assert_eq!(
        cells_of("networking.k8s.io", "IngressClass", &plain)[2],
        "<none>"
    );
}

#[test]
fn ip_address_names_its_parent() {
    let address = json!({
        "metadata": {"name": "10.96.0.10", "creationTimestamp": CREATED},
        "spec": {"parentRef": {"group": "", "resource": "services", "namespace": "kube-system",
                               "name": "kube-dns"}},
    });
    assert_eq!(
        cells_of("networking.k8s.io", "IPAddress", &address),
        row!["10.96.0.10", "services/kube-system/kube-dns"]
    );
    let grouped = json!({"metadata": {"name": "10.96.0.11"},
        "spec": {"parentRef": {"group": "Gateway.Networking.K8s.io", "resource": "Gateways",
                               "name": "gw"}}});
    assert_eq!(
        cells_of("networking.k8s.io", "IPAddress", &grouped)[1],
        "gateways.gateway.networking.k8s.io/gw"
    );
}

#[test]
fn service_cidr_row() {
    let cidr = json!({
        "metadata": {"name": "kubernetes", "creationTimestamp": CREATED},
        "spec": {"cidrs": ["10.96.0.0/12", "fd00:10:96::/112"]},
    });
    assert_eq!(
        cells_of("networking.k8s.io", "ServiceCIDR", &cidr),
        row!["kubernetes", "10.96.0.0/12,fd00:10:96::/112", "5m"]
    );
}
