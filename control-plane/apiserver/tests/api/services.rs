//! Services' health-check NodePort (kube-apiserver's `allocHealthCheckNodePort` and
//! `updateHealthCheckNodePort`) and load-balancer status rules, as a client sees them.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{assert_status, server};

const SERVICES: &str = "/api/v1/namespaces/default/services";

fn lb(name: &str, spec: Value) -> Value {
    let mut service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"type": "LoadBalancer", "selector": {"app": name},
                 "ports": [{"port": 80, "protocol": "TCP"}]}});
    if let (Some(base), Some(extra)) = (service["spec"].as_object_mut(), spec.as_object()) {
        for (k, v) in extra {
            base.insert(k.clone(), v.clone());
        }
    }
    service
}

fn hc_port(service: &Value) -> Option<u64> {
    service["spec"]["healthCheckNodePort"].as_u64()
}

#[tokio::test]
async fn local_load_balancers_get_a_health_check_node_port_kept_and_released_as_upstream() {
    let s = server().await;
    // Cluster: none. Local: one from the NodePort range, apart from the service's nodePort.
    let cluster = s.ok(Method::POST, SERVICES, Some(lb("c", json!({})))).await;
    assert_eq!(hc_port(&cluster), None, "{cluster}");
    let local = s
        .ok(
            Method::POST,
            SERVICES,
            Some(lb("web", json!({"externalTrafficPolicy": "Local"}))),
        )
        .await;
    let port = hc_port(&local).unwrap_or_else(|| panic!("a healthCheckNodePort: {local}"));
    assert!((30000..=32767).contains(&port), "{port}");
    assert_ne!(Some(port), local["spec"]["ports"][0]["nodePort"].as_u64());

    // Another Service asking for the same port: kube-apiserver's internal error.
    let (status, body) = s
        .call(
            Method::POST,
            SERVICES,
            Some(lb(
                "other",
                json!({"externalTrafficPolicy": "Local", "healthCheckNodePort": port}),
            )),
        )
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_status(&body, 500, "InternalError");
    assert_eq!(
        body["message"],
        format!(
            "Internal error occurred: failed to allocate requested HealthCheck NodePort {port}: \
             provided port is already allocated"
        )
    );
    // A NodePort may not take it either: it is one of the range's allocations.
    let (status, body) = s
        .call(
            Method::POST,
            SERVICES,
            Some(
                json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "np"},
                "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": port}]}}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    // A replace that leaves the field out keeps it.
    let mut replaced = local.clone();
    replaced["spec"]
        .as_object_mut()
        .expect("spec")
        .remove("healthCheckNodePort");
    replaced["metadata"]["labels"] = json!({"changed": "yes"});
    let kept = s
        .ok(Method::PUT, &format!("{SERVICES}/web"), Some(replaced))
        .await;
    assert_eq!(hc_port(&kept), Some(port), "{kept}");

    // Turning Cluster clears the field and frees the port for someone else.
    let (status, turned) = s
        .patch(
            &format!("{SERVICES}/web"),
            "application/merge-patch+json",
            json!({"spec": {"externalTrafficPolicy": "Cluster"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{turned}");
    assert_eq!(hc_port(&turned), None, "{turned}");
    let other = s
        .ok(
            Method::POST,
            SERVICES,
            Some(lb(
                "other",
                json!({"externalTrafficPolicy": "Local", "healthCheckNodePort": port}),
            )),
        )
        .await;
    assert_eq!(
        hc_port(&other),
        Some(port),
        "the released port is requested again"
    );

    // Back to Local: a new one. Deleting the Service frees it.
    let (_, again) = s
        .patch(
            &format!("{SERVICES}/web"),
            "application/merge-patch+json",
            json!({"spec": {"externalTrafficPolicy": "Local"}}),
        )
        .await;
    let second = hc_port(&again).unwrap_or_else(|| panic!("allocated again: {again}"));
    assert_ne!(second, port);
    s.ok(Method::DELETE, &format!("{SERVICES}/web"), None).await;
    let reuse = s
        .ok(
            Method::POST,
            SERVICES,
            Some(lb(
                "third",
                json!({"externalTrafficPolicy": "Local", "healthCheckNodePort": second}),
            )),
        )
        .await;
    assert_eq!(hc_port(&reuse), Some(second));

    // Only LoadBalancer + Local may name one.
    let (status, body) = s
        .call(
            Method::POST,
            SERVICES,
            Some(lb("bad", json!({"healthCheckNodePort": 31999}))),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}

#[tokio::test]
async fn a_service_leaving_loadbalancer_loses_its_status() {
    let s = server().await;
    s.ok(Method::POST, SERVICES, Some(lb("web", json!({}))))
        .await;
    let (status, with_ip) = s
        .patch(
            &format!("{SERVICES}/web/status"),
            "application/merge-patch+json",
            json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{with_ip}");
    assert_eq!(
        with_ip["status"]["loadBalancer"]["ingress"],
        json!([{"ip": "192.0.2.10", "ipMode": "VIP"}]),
        "an IP ingress point is a VIP unless it says otherwise"
    );
    // A main update does not touch the status...
    let (_, labelled) = s
        .patch(
            &format!("{SERVICES}/web"),
            "application/merge-patch+json",
            json!({"metadata": {"labels": {"a": "b"}}, "status": {"loadBalancer": {}}}),
        )
        .await;
    assert_eq!(
        labelled["status"]["loadBalancer"]["ingress"][0]["ip"], "192.0.2.10",
        "{labelled}"
    );
    // ...unless the Service stops being a LoadBalancer.
    let (status, cluster_ip) = s
        .patch(
            &format!("{SERVICES}/web"),
            "application/merge-patch+json",
            json!({"spec": {"type": "ClusterIP"}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{cluster_ip}");
    assert_eq!(
        cluster_ip["status"],
        json!({"loadBalancer": {}}),
        "{cluster_ip}"
    );
}
