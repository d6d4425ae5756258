//! Node authorization as Kubernetes' Node authorizer does it: a node credential reads a
//! Secret or ConfigMap only while a pod bound to that node uses it.

use super::*;

const SECRETS: &str = "/api/v1/namespaces/default/secrets";
const PODS: &str = "/api/v1/namespaces/default/pods";

/// `GET uri` as node n1: the status and the body.
async fn node_get(s: &Server, uri: &str) -> (StatusCode, Value) {
    s.raw_as(NODE_TOKEN, Method::GET, uri, "", Vec::new()).await
}

/// Polls `GET uri` as n1 until it answers `expected` (the graph follows the store through
/// a watch, so a change shows a moment later); at most 2 s.
async fn node_get_until(s: &Server, uri: &str, expected: StatusCode) -> Value {
    let mut last = Value::Null;
    for _ in 0..200 {
        let (status, body) = node_get(s, uri).await;
        if status == expected {
            return body;
        }
        last = body;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("GET {uri} as n1 never answered {expected}; last: {last}");
}

fn secret(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": {"k": "v"}})
}

fn pod(name: &str, node: &str, volumes: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}], "volumes": volumes}
    })
}

#[tokio::test]
async fn a_node_reads_a_secret_only_while_its_pod_mounts_it() {
    let s = server().await;
    for name in ["mounted", "unused"] {
        s.ok(Method::POST, SECRETS, Some(secret(name))).await;
    }
    let mounted = format!("{SECRETS}/mounted");
    let (status, body) = node_get(&s, &mounted).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_status(&body, 403, "Forbidden");
    assert_eq!(
        body["message"],
        "secrets \"mounted\" is forbidden: User \"system:node:n1\" cannot get resource \
         \"secrets\" in API group \"\" in the namespace \"default\": no relationship found \
         between node 'n1' and this object"
    );

    let volumes = json!([{"name": "s", "secret": {"secretName": "mounted"}}]);
    s.ok(Method::POST, PODS, Some(pod("web", "n1", volumes)))
        .await;
    let read = node_get_until(&s, &mounted, StatusCode::OK).await;
    assert_eq!(read["data"]["k"], "dg==", "the node reads the data: {read}");
    let (status, _) = node_get(&s, &format!("{SECRETS}/unused")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a secret no pod of n1 uses");

    // A list or watch is one object's read only through a metadata.name field selector.
    let (status, body) = node_get(&s, SECRETS).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.ends_with("cannot list resource \"secrets\" in API group \"\" in the namespace \"default\": No Object name found")),
        "{body}"
    );
    let (status, body) = node_get(
        &s,
        &format!("{SECRETS}?fieldSelector=metadata.name%3Dmounted"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["items"].as_array().map(Vec::len), Some(1), "{body}");
    let (status, _) = node_get(
        &s,
        &format!("{SECRETS}?fieldSelector=metadata.name%3Dunused"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    s.ok(
        Method::DELETE,
        &format!("{PODS}/web?gracePeriodSeconds=0"),
        None,
    )
    .await;
    let body = node_get_until(&s, &mounted, StatusCode::FORBIDDEN).await;
    assert_status(&body, 403, "Forbidden");
}

#[tokio::test]
async fn a_node_cannot_read_another_nodes_pods_configmaps() {
    let s = server().await;
    for name in ["theirs", "mine"] {
        s.ok(Method::POST, CONFIGMAPS, Some(configmap(name, json!({}))))
            .await;
    }
    let projected =
        |cm: &str| json!([{"name": "p", "projected": {"sources": [{"configMap": {"name": cm}}]}}]);
    s.ok(
        Method::POST,
        PODS,
        Some(pod("other", "n2", projected("theirs"))),
    )
    .await;
    s.ok(
        Method::POST,
        PODS,
        Some(pod("web", "n1", projected("mine"))),
    )
    .await;
    node_get_until(&s, &format!("{CONFIGMAPS}/mine"), StatusCode::OK).await;
    let (status, body) = node_get(&s, &format!("{CONFIGMAPS}/theirs")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.ends_with("no relationship found between node 'n1' and this object")),
        "{body}"
    );
    // The datapath still sees every pod, node and service (keelson:node-datapath).
    for uri in [
        PODS,
        "/api/v1/pods",
        "/api/v1/nodes",
        "/api/v1/services",
        "/apis/discovery.k8s.io/v1/endpointslices",
    ] {
        let (status, body) = node_get(&s, uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
    }
    // Moving a pod elsewhere (deleted and recreated on n2) takes its configmap away from n1.
    s.ok(
        Method::DELETE,
        &format!("{PODS}/web?gracePeriodSeconds=0"),
        None,
    )
    .await;
    s.ok(
        Method::POST,
        PODS,
        Some(pod("web", "n2", projected("mine"))),
    )
    .await;
    node_get_until(&s, &format!("{CONFIGMAPS}/mine"), StatusCode::FORBIDDEN).await;
}

#[tokio::test]
async fn a_node_sets_only_kubelet_labels_on_its_node() {
    let s = server().await;
    let create = json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/control-plane": ""}}});
    let (status, body) = s
        .raw_as(
            NODE_TOKEN,
            Method::POST,
            "/api/v1/nodes",
            "application/json",
            create.to_string().into_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| m.ends_with(
            "node \"n1\" is not allowed to set the following labels: node-role.kubernetes.io/control-plane"
        )),
        "{body}"
    );
    let create = json!({"apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}}});
    let (status, body) = s
        .raw_as(
            NODE_TOKEN,
            Method::POST,
            "/api/v1/nodes",
            "application/json",
            create.to_string().into_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let label = |key: &str| {
        json!({"metadata": {"labels": {key: "x"}}})
            .to_string()
            .into_bytes()
    };
    let (status, body) = s
        .raw_as(
            NODE_TOKEN,
            Method::PATCH,
            "/api/v1/nodes/n1",
            "application/merge-patch+json",
            label("topology.kubernetes.io/zone"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "a kubelet label: {body}");
    let (status, body) = s
        .raw_as(
            NODE_TOKEN,
            Method::PATCH,
            "/api/v1/nodes/n1",
            "application/merge-patch+json",
            label("node-restriction.kubernetes.io/pool"),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m
                .ends_with("is not allowed to modify labels: node-restriction.kubernetes.io/pool")),
        "{body}"
    );
}
