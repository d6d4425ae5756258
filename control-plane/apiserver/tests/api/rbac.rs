//! RBAC as a client meets it: bindings grant their roles where they apply, denials read as
//! Kubernetes words them, non-resource URLs and resourceNames are honoured, bindings and roles
//! cannot grant more than their author holds (unless `bind` / `escalate`), anonymous requests
//! are authorized as `system:anonymous`.

use super::*;

const RBAC: &str = "/apis/rbac.authorization.k8s.io/v1";
const BOB_TOKEN: &str = "bob-token";
const EVE_TOKEN: &str = "eve-token";
const ROBOT_TOKEN: &str = "robot-token";

async fn rbac_server() -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = bootstrapped_store(dir.path()).await;
    let authenticator = Authenticator::default()
        .with_token(
            ADMIN_TOKEN,
            UserInfo::new("kubernetes-admin", &[MASTERS_GROUP]),
        )
        .with_token(ALICE_TOKEN, UserInfo::new("alice", &["developers"]))
        .with_token(BOB_TOKEN, UserInfo::new("bob", &[]))
        .with_token(EVE_TOKEN, UserInfo::new("eve", &[]))
        .with_token(
            ROBOT_TOKEN,
            UserInfo::new(
                "system:serviceaccount:a:robot",
                &["system:serviceaccounts", "system:serviceaccounts:a"],
            ),
        );
    let router = app(AppState::new(Arc::clone(&store)).with_authenticator(authenticator));
    let server = Server {
        store,
        router,
        _dir: dir,
    };
    for ns in ["a", "b"] {
        server
            .ok(
                Method::POST,
                "/api/v1/namespaces",
                Some(json!({"metadata": {"name": ns}})),
            )
            .await;
    }
    server
}

async fn as_user(
    s: &Server,
    token: &str,
    method: Method,
    uri: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    s.raw_as(token, method, uri, "application/json", bytes)
        .await
}

fn binding(
    kind: &str,
    name: &str,
    ns: Option<&str>,
    role_kind: &str,
    role: &str,
    subject: Value,
) -> Value {
    let mut metadata = json!({"name": name});
    if let Some(ns) = ns {
        metadata["namespace"] = json!(ns);
    }
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": metadata,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
        "subjects": [subject],
    })
}

fn user(name: &str) -> Value {
    json!({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": name})
}

fn message(body: &Value) -> &str {
    body["message"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn a_rolebinding_to_view_grants_reads_in_its_namespace_only() {
    let s = rbac_server().await;
    let pods_a = "/api/v1/namespaces/a/pods";
    let (status, body) = as_user(&s, ALICE_TOKEN, Method::GET, pods_a, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "before the binding: {body}");
    s.ok(
        Method::POST,
        &format!("{RBAC}/namespaces/a/rolebindings"),
        Some(binding(
            "RoleBinding",
            "alice-view",
            Some("a"),
            "ClusterRole",
            "view",
            user("alice"),
        )),
    )
    .await;
    // The very next request sees the new binding.
    let (status, body) = as_user(&s, ALICE_TOKEN, Method::GET, pods_a, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["kind"], "PodList");
    let (status, body) = as_user(
        &s,
        ALICE_TOKEN,
        Method::GET,
        "/api/v1/namespaces/a/secrets",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_status(&body, 403, "Forbidden");
    assert_eq!(
        message(&body),
        "secrets is forbidden: User \"alice\" cannot list resource \"secrets\" in API group \"\" \
         in the namespace \"a\""
    );
    let (status, body) = as_user(
        &s,
        ALICE_TOKEN,
        Method::GET,
        "/api/v1/namespaces/b/pods",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        message(&body),
        "pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" in the \
         namespace \"b\""
    );
    let (status, body) = as_user(
        &s,
        ALICE_TOKEN,
        Method::POST,
        pods_a,
        Some(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}})),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "view does not create: {body}"
    );
    s.ok(
        Method::DELETE,
        &format!("{RBAC}/namespaces/a/rolebindings/alice-view"),
        None,
    )
    .await;
    let (status, _) = as_user(&s, ALICE_TOKEN, Method::GET, pods_a, None).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "the deleted binding grants nothing"
    );
}

#[tokio::test]
async fn service_accounts_and_groups_are_subjects() {
    let s = rbac_server().await;
    s.ok(
        Method::POST,
        &format!("{RBAC}/namespaces/a/rolebindings"),
        Some(binding(
            "RoleBinding",
            "robot-view",
            Some("a"),
            "ClusterRole",
            "view",
            json!({"kind": "ServiceAccount", "name": "robot"}),
        )),
    )
    .await;
    s.ok(
        Method::POST,
        &format!("{RBAC}/clusterrolebindings"),
        Some(binding(
            "ClusterRoleBinding",
            "developers-view",
            None,
            "ClusterRole",
            "view",
            json!({"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "developers"}),
        )),
    )
    .await;
    let (status, body) = as_user(
        &s,
        ROBOT_TOKEN,
        Method::GET,
        "/api/v1/namespaces/a/pods",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = as_user(
        &s,
        ROBOT_TOKEN,
        Method::GET,
        "/api/v1/namespaces/a/secrets",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        message(&body),
        "secrets is forbidden: User \"system:serviceaccount:a:robot\" cannot list resource \
         \"secrets\" in API group \"\" in the namespace \"a\""
    );
    let (status, body) = as_user(&s, ALICE_TOKEN, Method::GET, "/api/v1/pods", None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a ClusterRoleBinding grants everywhere: {body}"
    );
}

#[tokio::test]
async fn non_resource_urls_and_resource_names_are_honoured() {
    let s = rbac_server().await;
    let (status, body) = as_user(&s, BOB_TOKEN, Method::GET, "/metrics", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        message(&body),
        "forbidden: User \"bob\" cannot get path \"/metrics\""
    );
    s.ok(
        Method::POST,
        &format!("{RBAC}/clusterroles"),
        Some(json!({"metadata": {"name": "metrics-reader"},
                    "rules": [{"verbs": ["get"], "nonResourceURLs": ["/metrics", "/openapi/*"]}]})),
    )
    .await;
    s.ok(
        Method::POST,
        &format!("{RBAC}/namespaces/a/roles"),
        Some(json!({"metadata": {"name": "one-cm"},
                    "rules": [{"verbs": ["get", "list", "update"], "apiGroups": [""],
                               "resources": ["configmaps"], "resourceNames": ["allowed"]}]})),
    )
    .await;
    s.ok(
        Method::POST,
        &format!("{RBAC}/clusterrolebindings"),
        Some(binding(
            "ClusterRoleBinding",
            "bob-metrics",
            None,
            "ClusterRole",
            "metrics-reader",
            user("bob"),
        )),
    )
    .await;
    s.ok(
        Method::POST,
        &format!("{RBAC}/namespaces/a/rolebindings"),
        Some(binding(
            "RoleBinding",
            "bob-cm",
            Some("a"),
            "Role",
            "one-cm",
            user("bob"),
        )),
    )
    .await;
    for name in ["allowed", "other"] {
        s.ok(
            Method::POST,
            "/api/v1/namespaces/a/configmaps",
            Some(json!({"metadata": {"name": name}})),
        )
        .await;
    }
    let cms = "/api/v1/namespaces/a/configmaps";
    let cases = [
        ("/metrics".to_owned(), StatusCode::OK),
        ("/openapi/v2".to_owned(), StatusCode::OK),
        (format!("{cms}/allowed"), StatusCode::OK),
        (format!("{cms}/other"), StatusCode::FORBIDDEN),
        (cms.to_owned(), StatusCode::FORBIDDEN),
        (
            format!("{cms}?fieldSelector=metadata.name%3Dallowed"),
            StatusCode::OK,
        ),
        (
            format!("{cms}?fieldSelector=metadata.name%3Dother"),
            StatusCode::FORBIDDEN,
        ),
    ];
    for (uri, want) in cases {
        let (status, body) = as_user(&s, BOB_TOKEN, Method::GET, &uri, None).await;
        assert_eq!(status, want, "GET {uri}: {body}");
    }
    let (status, body) = as_user(&s, BOB_TOKEN, Method::GET, &format!("{cms}/other"), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        message(&body),
        "configmaps \"other\" is forbidden: User \"bob\" cannot get resource \"configmaps\" in \
         API group \"\" in the namespace \"a\""
    );
}

#[tokio::test]
async fn the_bootstrap_policy_is_stored_and_view_is_aggregated() {
    let s = rbac_server().await;
    let view = s
        .ok(Method::GET, &format!("{RBAC}/clusterroles/view"), None)
        .await;
    assert_eq!(
        view["aggregationRule"]["clusterRoleSelectors"][0]["matchLabels"]["rbac.authorization.k8s.io/aggregate-to-view"],
        "true"
    );
    let rules = view["rules"]
        .as_array()
        .expect("view has its aggregated rules");
    assert!(
        rules.iter().any(|r| r["resources"]
            .as_array()
            .is_some_and(|rs| rs.contains(&json!("pods")))),
        "{view}"
    );
    assert!(
        !rules.iter().any(|r| r["resources"]
            .as_array()
            .is_some_and(|rs| rs.contains(&json!("secrets")))),
        "view reads no secrets: {view}"
    );
    let crb = s
        .ok(
            Method::GET,
            &format!("{RBAC}/clusterrolebindings/system:public-info-viewer"),
            None,
        )
        .await;
    assert_eq!(crb["subjects"][1]["name"], "system:unauthenticated");
    // Every authenticated user may ask who it is (system:basic-user) and read discovery.
    let (status, body) = as_user(
        &s,
        BOB_TOKEN,
        Method::POST,
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        Some(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        body["status"]["userInfo"]["groups"],
        json!(["system:authenticated"])
    );
    let (status, _) = as_user(&s, BOB_TOKEN, Method::GET, "/apis", None).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn bindings_and_roles_cannot_grant_more_than_their_author_holds() {
    let s = rbac_server().await;
    // eve edits in a, and may write RBAC objects (but holds nothing else).
    s.ok(
        Method::POST,
        &format!("{RBAC}/clusterroles"),
        Some(json!({"metadata": {"name": "rbac-writer"},
                    "rules": [{"verbs": ["create", "update"], "apiGroups": ["rbac.authorization.k8s.io"],
                               "resources": ["roles", "rolebindings", "clusterroles", "clusterrolebindings"]}]})),
    )
    .await;
    s.ok(
        Method::POST,
        &format!("{RBAC}/clusterrolebindings"),
        Some(binding(
            "ClusterRoleBinding",
            "eve-rbac",
            None,
            "ClusterRole",
            "rbac-writer",
            user("eve"),
        )),
    )
    .await;
    s.ok(
        Method::POST,
        &format!("{RBAC}/namespaces/a/rolebindings"),
        Some(binding(
            "RoleBinding",
            "eve-edit",
            Some("a"),
            "ClusterRole",
            "edit",
            user("eve"),
        )),
    )
    .await;
    let held = "user \"eve\" (groups=[\"system:authenticated\"]) is attempting to grant RBAC \
                permissions not currently held:\n{APIGroups:[\"*\"], Resources:[\"*\"], \
                Verbs:[\"*\"]}\n{NonResourceURLs:[\"*\"], Verbs:[\"*\"]}";
    let (status, body) = as_user(
        &s,
        EVE_TOKEN,
        Method::POST,
        &format!("{RBAC}/clusterrolebindings"),
        Some(binding(
            "ClusterRoleBinding",
            "eve-admin",
            None,
            "ClusterRole",
            "cluster-admin",
            user("eve"),
        )),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        message(&body),
        format!("clusterrolebindings.rbac.authorization.k8s.io \"eve-admin\" is forbidden: {held}")
    );
    let (status, body) = as_user(
        &s,
        EVE_TOKEN,
        Method::POST,
        &format!("{RBAC}/namespaces/a/rolebindings"),
        Some(binding(
            "RoleBinding",
            "eve-admin",
            Some("a"),
            "ClusterRole",
            "cluster-admin",
            user("eve"),
        )),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        message(&body),
        format!("rolebindings.rbac.authorization.k8s.io \"eve-admin\" is forbidden: {held}")
    );
    // What she holds she may pass on.
    let (status, body) = as_user(
        &s,
        EVE_TOKEN,
        Method::POST,
        &format!("{RBAC}/namespaces/a/rolebindings"),
        Some(binding(
            "RoleBinding",
            "alice-edit",
            Some("a"),
            "ClusterRole",
            "edit",
            user("alice"),
        )),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let node_deleter = json!({"metadata": {"name": "node-deleter"},
                              "rules": [{"verbs": ["delete"], "apiGroups": [""], "resources": ["nodes"]}]});
    let (status, body) = as_user(
        &s,
        EVE_TOKEN,
        Method::POST,
        &format!("{RBAC}/clusterroles"),
        Some(node_deleter.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        message(&body),
        "clusterroles.rbac.authorization.k8s.io \"node-deleter\" is forbidden: user \"eve\" \
         (groups=[\"system:authenticated\"]) is attempting to grant RBAC permissions not \
         currently held:\n{APIGroups:[\"\"], Resources:[\"nodes\"], Verbs:[\"delete\"]}"
    );

    // `escalate` on clusterroles and `bind` on cluster-admin lift the checks.
    s.ok(
        Method::POST,
        &format!("{RBAC}/clusterroles"),
        Some(json!({"metadata": {"name": "escalator"},
                    "rules": [{"verbs": ["escalate"], "apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"]},
                              {"verbs": ["bind"], "apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"],
                               "resourceNames": ["cluster-admin"]}]})),
    )
    .await;
    s.ok(
        Method::POST,
        &format!("{RBAC}/clusterrolebindings"),
        Some(binding(
            "ClusterRoleBinding",
            "eve-escalator",
            None,
            "ClusterRole",
            "escalator",
            user("eve"),
        )),
    )
    .await;
    let (status, body) = as_user(
        &s,
        EVE_TOKEN,
        Method::POST,
        &format!("{RBAC}/clusterroles"),
        Some(node_deleter),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "escalate: {body}");
    let (status, body) = as_user(
        &s,
        EVE_TOKEN,
        Method::POST,
        &format!("{RBAC}/namespaces/a/rolebindings"),
        Some(binding(
            "RoleBinding",
            "bob-admin",
            Some("a"),
            "ClusterRole",
            "cluster-admin",
            user("bob"),
        )),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "bind: {body}");
    let (status, body) = as_user(
        &s,
        EVE_TOKEN,
        Method::POST,
        &format!("{RBAC}/namespaces/a/rolebindings"),
        Some(binding(
            "RoleBinding",
            "bob-deleter",
            Some("a"),
            "ClusterRole",
            "node-deleter",
            user("bob"),
        )),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "bind names cluster-admin only: {body}"
    );
}

#[tokio::test]
async fn anonymous_requests_are_authorized_as_system_anonymous() {
    let s = rbac_server().await;
    for path in ["/healthz", "/livez", "/readyz", "/version"] {
        let (status, body) = as_user(&s, "", Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}: {body}");
    }
    let (status, body) = as_user(&s, "", Method::GET, "/api/v1/pods", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        message(&body),
        "pods is forbidden: User \"system:anonymous\" cannot list resource \"pods\" in API group \
         \"\" at the cluster scope"
    );
    let (status, body) = as_user(&s, "", Method::GET, "/apis", None).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "discovery is for authenticated users: {body}"
    );
    assert_eq!(
        message(&body),
        "forbidden: User \"system:anonymous\" cannot get path \"/apis\""
    );
    let (status, body) = as_user(&s, "not-a-token", Method::GET, "/healthz", None).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a bad token is no anonymous request: {body}"
    );
}

/// A store that counts the listings of RBAC objects (what rebuilding the index reads).
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn Store>,
    rbac_lists: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl Store for Counting {
    async fn create(
        &self,
        key: &str,
        value: bytes::Bytes,
    ) -> Result<keelson_store::Revision, keelson_store::StoreError> {
        self.inner.create(key, value).await
    }
    async fn get(
        &self,
        key: &str,
        revision: Option<keelson_store::Revision>,
    ) -> Result<Option<keelson_store::KeyValue>, keelson_store::StoreError> {
        self.inner.get(key, revision).await
    }
    async fn update(
        &self,
        key: &str,
        value: bytes::Bytes,
        expected: keelson_store::Revision,
    ) -> Result<keelson_store::Revision, keelson_store::StoreError> {
        self.inner.update(key, value, expected).await
    }
    async fn delete(
        &self,
        key: &str,
        expected: Option<keelson_store::Revision>,
    ) -> Result<keelson_store::Deleted, keelson_store::StoreError> {
        self.inner.delete(key, expected).await
    }
    async fn list(
        &self,
        prefix: &str,
        options: keelson_store::ListOptions,
    ) -> Result<keelson_store::ListResult, keelson_store::StoreError> {
        if prefix.contains("roles/") || prefix.contains("rolebindings/") {
            self.rbac_lists
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        self.inner.list(prefix, options).await
    }
    async fn watch(
        &self,
        prefix: &str,
        from: keelson_store::Revision,
    ) -> Result<keelson_store::WatchStream, keelson_store::StoreError> {
        self.inner.watch(prefix, from).await
    }
    async fn compact(
        &self,
        revision: keelson_store::Revision,
    ) -> Result<(), keelson_store::StoreError> {
        self.inner.compact(revision).await
    }
    async fn current_revision(&self) -> Result<keelson_store::Revision, keelson_store::StoreError> {
        self.inner.current_revision().await
    }
}

#[tokio::test]
async fn authorization_reads_the_store_only_after_rbac_objects_change() {
    let base = rbac_server().await;
    let counting = Arc::new(Counting {
        inner: Arc::clone(&base.store),
        rbac_lists: std::sync::atomic::AtomicUsize::new(0),
    });
    // Without the watch cache, which would answer the index's lists from memory: this counts
    // the lists the RBAC index itself makes.
    let router = app(AppState::new(Arc::clone(&counting) as Arc<dyn Store>)
        .with_watch_cache(false)
        .with_authenticator(
            Authenticator::default()
                .with_token(
                    ADMIN_TOKEN,
                    UserInfo::new("kubernetes-admin", &[MASTERS_GROUP]),
                )
                .with_token(ALICE_TOKEN, UserInfo::new("alice", &["developers"])),
        ));
    let s = Server {
        store: Arc::clone(&counting) as Arc<dyn Store>,
        router,
        _dir: tempfile::tempdir().expect("temp dir"),
    };
    s.ok(
        Method::POST,
        &format!("{RBAC}/namespaces/a/rolebindings"),
        Some(binding(
            "RoleBinding",
            "alice-view",
            Some("a"),
            "ClusterRole",
            "view",
            user("alice"),
        )),
    )
    .await;
    let pods = "/api/v1/namespaces/a/pods";
    let (status, _) = as_user(&s, ALICE_TOKEN, Method::GET, pods, None).await;
    assert_eq!(status, StatusCode::OK);
    // Let the store watches deliver the write above, then nothing changes any more.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = as_user(&s, ALICE_TOKEN, Method::GET, pods, None).await;
    assert_eq!(status, StatusCode::OK);
    let settled = counting
        .rbac_lists
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        settled >= 4,
        "the index was built from the four RBAC kinds: {settled}"
    );
    for _ in 0..50 {
        let (status, _) = as_user(&s, ALICE_TOKEN, Method::GET, pods, None).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(
        counting
            .rbac_lists
            .load(std::sync::atomic::Ordering::SeqCst),
        settled,
        "no store reads per request while RBAC objects do not change"
    );
    s.ok(
        Method::DELETE,
        &format!("{RBAC}/namespaces/a/rolebindings/alice-view"),
        None,
    )
    .await;
    let (status, _) = as_user(&s, ALICE_TOKEN, Method::GET, pods, None).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a write is seen by the next request"
    );
}
