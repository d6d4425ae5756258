//! Service accounts: the TokenRequest API, bearer JWTs checked on every request, TokenReview,
//! OIDC discovery and the ServiceAccount admission of pods.

use std::sync::Arc;

use axum::http::{Method, StatusCode, header};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use keelson_apiserver::{
    AppState, Authenticator, UserInfo, app,
    auth::{MASTERS_GROUP, serviceaccount::ServiceAccountTokens},
    bootstrap,
};
use keelson_store::{SqliteOptions, SqliteStore, Store};
use serde_json::{Value, json};

use super::{ADMIN_TOKEN, Server, assert_status};

const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
const SAS: &str = "/api/v1/namespaces/default/serviceaccounts";
const PODS: &str = "/api/v1/namespaces/default/pods";

/// A server issuing tokens with a fresh key; returns the key's PEM too.
async fn sa_server() -> (Server, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(dir.path().join("state.db"), SqliteOptions::default())
            .await
            .expect("open the SQLite store"),
    );
    bootstrap(store.as_ref()).await.expect("bootstrap");
    let pem = rcgen::KeyPair::generate().expect("key").serialize_pem();
    let tokens = ServiceAccountTokens::new(&pem, ISSUER).expect("tokens");
    let authenticator = Authenticator::default().with_token(
        ADMIN_TOKEN,
        UserInfo::new("kubernetes-admin", &[MASTERS_GROUP]),
    );
    let router = app(AppState::new(Arc::clone(&store))
        .with_authenticator(authenticator)
        .with_service_accounts(tokens));
    let server = Server {
        store,
        router,
        _dir: dir,
    };
    for name in ["default", "robot"] {
        server
            .ok(
                Method::POST,
                SAS,
                Some(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}})),
            )
            .await;
    }
    (server, pem)
}

/// The claims of a JWT, unverified.
fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url")).expect("JSON")
}

async fn request_token(s: &Server, sa: &str, body: Value) -> (StatusCode, Value) {
    s.call(Method::POST, &format!("{SAS}/{sa}/token"), Some(body))
        .await
}

async fn token(s: &Server, sa: &str, spec: Value) -> String {
    let (status, body) = request_token(s, sa, json!({"spec": spec})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["status"]["token"]
        .as_str()
        .expect("status.token")
        .to_owned()
}

/// What `token` gets for a pod list: the status and the message.
async fn as_bearer(s: &Server, token: &str, uri: &str) -> (StatusCode, String) {
    let (status, body) = s
        .raw_as(token, Method::GET, uri, "application/json", Vec::new())
        .await;
    (
        status,
        body["message"].as_str().unwrap_or_default().to_owned(),
    )
}

fn pod(name: &str, extra_spec: Value) -> Value {
    let mut spec = json!({"containers": [{"name": "c", "image": "busybox"}]});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra_spec.as_object()) {
        spec.extend(extra.clone());
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
}

#[tokio::test]
async fn token_requests_issue_kube_shaped_jwts() {
    let (s, _) = sa_server().await;
    let sa = s.ok(Method::GET, &format!("{SAS}/robot"), None).await;
    let (status, body) = request_token(
        &s,
        "robot",
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["kind"], "TokenRequest");
    assert_eq!(body["apiVersion"], "authentication.k8s.io/v1");
    assert_eq!(body["metadata"]["name"], "robot");
    assert_eq!(body["spec"]["audiences"], json!([ISSUER]));
    assert_eq!(body["spec"]["expirationSeconds"], 3600);
    assert_eq!(body["spec"]["boundObjectRef"], Value::Null);
    let jwt = body["status"]["token"].as_str().expect("token");
    let c = claims(jwt);
    assert_eq!(c["iss"], ISSUER);
    assert_eq!(c["sub"], "system:serviceaccount:default:robot");
    assert_eq!(c["aud"], json!([ISSUER]));
    let iat = c["iat"].as_i64().expect("iat");
    assert_eq!(c["nbf"], iat);
    assert_eq!(c["exp"].as_i64(), Some(iat + 3600));
    assert_eq!(c["jti"].as_str().map(str::len), Some(36));
    assert_eq!(
        c["kubernetes.io"],
        json!({"namespace": "default",
               "serviceaccount": {"name": "robot", "uid": sa["metadata"]["uid"]}})
    );
    let expires: jiff::Timestamp = body["status"]["expirationTimestamp"]
        .as_str()
        .expect("expirationTimestamp")
        .parse()
        .expect("RFC 3339");
    assert_eq!(expires.as_second(), iat + 3600);
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(jwt.split('.').next().expect("header"))
            .expect("b64"),
    )
    .expect("JSON");
    assert_eq!(header["alg"], "ES256");
}

#[tokio::test]
async fn token_requests_are_refused_as_kube_refuses_them() {
    let (s, _) = sa_server().await;
    s.ok(
        Method::POST,
        PODS,
        Some(pod("web", json!({"serviceAccountName": "default"}))),
    )
    .await;
    let cases = [
        (
            "robot",
            json!({"spec": {"expirationSeconds": 100}}),
            422,
            "Invalid",
            "TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid \
             value: 100: may not specify a duration less than 10 minutes",
        ),
        (
            "ghost",
            json!({}),
            404,
            "NotFound",
            "serviceaccounts \"ghost\" not found",
        ),
        (
            "robot",
            json!({"spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "nope"}}}),
            404,
            "NotFound",
            "pods \"nope\" not found",
        ),
        (
            "robot",
            json!({"spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web"}}}),
            400,
            "BadRequest",
            "cannot bind token for serviceaccount \"robot\" to pod running with different \
             serviceaccount name.",
        ),
        (
            "default",
            json!({"spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "web", "uid": "old"}}}),
            409,
            "Conflict",
            "Operation cannot be fulfilled on Pod \"web\": the UID in the bound object reference \
             (old) does not match the UID in record. The object might have been deleted and then \
             recreated",
        ),
        (
            "robot",
            json!({"spec": {"boundObjectRef": {"kind": "ConfigMap", "apiVersion": "v1", "name": "x"}}}),
            400,
            "BadRequest",
            "cannot bind token to object of type /v1, Kind=ConfigMap",
        ),
    ];
    for (sa, body, code, reason, message) in cases {
        let (status, value) = request_token(&s, sa, body.clone()).await;
        assert_eq!(status.as_u16(), code, "{body}: {value}");
        assert_status(&value, code, reason);
        assert_eq!(value["message"], message, "{body}");
    }
}

#[tokio::test]
async fn bearer_tokens_authenticate_until_their_objects_go() {
    let (s, pem) = sa_server().await;
    let good = token(&s, "robot", json!({})).await;
    let forbidden = "User \"system:serviceaccount:default:robot\" cannot list resource \"pods\"";
    // Authenticated (the service account is not authorized for pods yet: a 403 naming it).
    let (status, message) = as_bearer(&s, &good, PODS).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{message}");
    assert!(message.contains(forbidden), "{message}");
    assert_eq!(as_bearer(&s, &good, "/api").await.0, StatusCode::OK);

    // Another key, another audience, tampered, expired.
    let other_key = ServiceAccountTokens::new(
        &rcgen::KeyPair::generate().expect("key").serialize_pem(),
        ISSUER,
    )
    .expect("tokens");
    let same_key = ServiceAccountTokens::new(&pem, ISSUER).expect("tokens");
    let now = jiff::Timestamp::now().as_second();
    let mut expired = claims(&good);
    expired["iat"] = json!(now - 7200);
    expired["nbf"] = json!(now - 7200);
    expired["exp"] = json!(now - 61);
    let mut tampered = good.clone().into_bytes();
    let at = good.find('.').expect("dot") + 10;
    tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
    let refused = [
        (
            "another key",
            other_key.key().sign(&claims(&good)).expect("sign"),
        ),
        (
            "another audience",
            token(&s, "robot", json!({"audiences": ["vault"]})).await,
        ),
        (
            "one byte changed",
            String::from_utf8(tampered).expect("ascii"),
        ),
        ("expired", same_key.key().sign(&expired).expect("sign")),
        ("not a JWT", "a.b.c".to_owned()),
    ];
    for (what, token) in refused {
        let (status, value) = s
            .raw_as(&token, Method::GET, "/api", "application/json", Vec::new())
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {value}");
        assert_status(&value, 401, "Unauthorized");
        assert_eq!(value["message"], "Unauthorized", "{what}");
    }
    // Within the minute of leeway an expired token still works, as in kube.
    let mut recent = claims(&good);
    recent["exp"] = json!(now - 30);
    let recent = same_key.key().sign(&recent).expect("sign");
    assert_eq!(as_bearer(&s, &recent, "/api").await.0, StatusCode::OK);

    // A pod-bound token dies with its pod.
    s.ok(
        Method::POST,
        PODS,
        Some(pod("job", json!({"serviceAccountName": "robot"}))),
    )
    .await;
    let bound = token(
        &s,
        "robot",
        json!({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "job"}}),
    )
    .await;
    assert_eq!(claims(&bound)["kubernetes.io"]["pod"]["name"], "job");
    assert_eq!(as_bearer(&s, &bound, "/api").await.0, StatusCode::OK);
    s.ok(
        Method::DELETE,
        &format!("{PODS}/job?gracePeriodSeconds=0"),
        None,
    )
    .await;
    assert_eq!(
        as_bearer(&s, &bound, "/api").await.0,
        StatusCode::UNAUTHORIZED
    );
    // A re-created pod of the same name has another uid.
    s.ok(
        Method::POST,
        PODS,
        Some(pod("job", json!({"serviceAccountName": "robot"}))),
    )
    .await;
    assert_eq!(
        as_bearer(&s, &bound, "/api").await.0,
        StatusCode::UNAUTHORIZED
    );

    // Every token of the service account dies with it.
    assert_eq!(as_bearer(&s, &good, "/api").await.0, StatusCode::OK);
    s.ok(Method::DELETE, &format!("{SAS}/robot"), None).await;
    assert_eq!(
        as_bearer(&s, &good, "/api").await.0,
        StatusCode::UNAUTHORIZED
    );
    s.ok(
        Method::POST,
        SAS,
        Some(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "robot"}})),
    )
    .await;
    assert_eq!(
        as_bearer(&s, &good, "/api").await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn token_reviews_answer_who_a_token_is() {
    let (s, _) = sa_server().await;
    let sa = s.ok(Method::GET, &format!("{SAS}/robot"), None).await;
    s.ok(
        Method::POST,
        PODS,
        Some(pod("job", json!({"serviceAccountName": "robot"}))),
    )
    .await;
    let pod = s.ok(Method::GET, &format!("{PODS}/job"), None).await;
    let bound = token(
        &s,
        "robot",
        json!({"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "job"}}),
    )
    .await;
    let jti = claims(&bound)["jti"].as_str().expect("jti").to_owned();
    let review = |token: &str, audiences: Value| {
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
               "spec": {"token": token, "audiences": audiences}})
    };
    let (status, body) = s
        .call(
            Method::POST,
            "/apis/authentication.k8s.io/v1/tokenreviews",
            Some(review(&bound, json!([]))),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["kind"], "TokenReview");
    assert_eq!(body["status"]["authenticated"], true);
    assert_eq!(body["status"]["audiences"], json!([ISSUER]));
    assert_eq!(
        body["status"]["user"],
        json!({
            "username": "system:serviceaccount:default:robot",
            "uid": sa["metadata"]["uid"],
            "groups": ["system:serviceaccounts", "system:serviceaccounts:default", "system:authenticated"],
            "extra": {
                "authentication.kubernetes.io/credential-id": [format!("JTI={jti}")],
                "authentication.kubernetes.io/pod-name": ["job"],
                "authentication.kubernetes.io/pod-uid": [pod["metadata"]["uid"]],
            },
        })
    );
    let (_, body) = s
        .call(
            Method::POST,
            "/apis/authentication.k8s.io/v1/tokenreviews",
            Some(review(&bound, json!(["vault"]))),
        )
        .await;
    assert_eq!(body["status"].get("authenticated"), None, "{body}");
    assert_eq!(
        body["status"]["error"],
        format!(
            "[invalid bearer token, token audiences [\"{ISSUER}\"] is invalid for the target \
             audiences [\"vault\"]]"
        )
    );
    let discovery = s
        .ok(Method::GET, "/apis/authentication.k8s.io/v1", None)
        .await;
    assert!(
        discovery["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .any(|r| r["name"] == "tokenreviews" && r["kind"] == "TokenReview"),
        "{discovery}"
    );
    let core = s.ok(Method::GET, "/api/v1", None).await;
    let token_sub = core["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .find(|r| r["name"] == "serviceaccounts/token")
        .expect("serviceaccounts/token listed");
    assert_eq!(
        (
            &token_sub["group"],
            &token_sub["version"],
            &token_sub["kind"]
        ),
        (
            &json!("authentication.k8s.io"),
            &json!("v1"),
            &json!("TokenRequest")
        )
    );
}

#[tokio::test]
async fn oidc_discovery_publishes_the_key_that_verifies_tokens() {
    let (s, _) = sa_server().await;
    let (status, headers, config) = s
        .exchange(
            ADMIN_TOKEN,
            Method::GET,
            "/.well-known/openid-configuration",
            &[],
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{config}");
    assert_eq!(headers[header::CACHE_CONTROL], "public, max-age=3600");
    assert_eq!(
        config,
        json!({
            "issuer": ISSUER,
            "jwks_uri": "https://kubernetes.default.svc.cluster.local/openid/v1/jwks",
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        })
    );
    let (status, headers, jwks) = s
        .exchange(ADMIN_TOKEN, Method::GET, "/openid/v1/jwks", &[], Vec::new())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/jwk-set+json");
    let key = &jwks["keys"][0];
    assert_eq!(
        (&key["kty"], &key["crv"], &key["alg"]),
        (&json!("EC"), &json!("P-256"), &json!("ES256"))
    );
    // The published key verifies a token, and its kid is the one tokens name.
    let token = token(&s, "robot", json!({})).await;
    let (signed, signature) = token.rsplit_once('.').expect("JWS");
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(signed.split('.').next().expect("header"))
            .expect("b64"),
    )
    .expect("JSON");
    assert_eq!(header["kid"], key["kid"]);
    let coordinate = |name: &str| {
        URL_SAFE_NO_PAD
            .decode(key[name].as_str().expect(name))
            .expect("b64")
    };
    let mut point = vec![4_u8];
    point.extend(coordinate("x"));
    point.extend(coordinate("y"));
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point)
        .verify(
            signed.as_bytes(),
            &URL_SAFE_NO_PAD.decode(signature).expect("b64"),
        )
        .expect("the JWKS key verifies the token");
}

#[tokio::test]
async fn pods_get_the_service_account_volume() {
    let (s, _) = sa_server().await;
    let created = s
        .ok(
            Method::POST,
            PODS,
            Some(pod(
                "web",
                json!({"initContainers": [{"name": "init", "image": "busybox"}]}),
            )),
        )
        .await;
    let spec = &created["spec"];
    assert_eq!(spec["serviceAccountName"], "default");
    assert_eq!(spec["serviceAccount"], "default");
    let volume = &spec["volumes"][0];
    let name = volume["name"].as_str().expect("volume name");
    let suffix = name
        .strip_prefix("kube-api-access-")
        .expect("kube's prefix");
    assert!(
        suffix.len() == 5
            && suffix
                .chars()
                .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)),
        "{name}"
    );
    assert_eq!(
        volume["projected"],
        json!({
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace",
                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
            "defaultMode": 420,
        })
    );
    let mount = json!([{"name": name, "readOnly": true,
                        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]);
    assert_eq!(spec["containers"][0]["volumeMounts"], mount);
    assert_eq!(spec["initContainers"][0]["volumeMounts"], mount);

    // automountServiceAccountToken: false on the pod, or on its service account.
    let quiet = s
        .ok(
            Method::POST,
            PODS,
            Some(pod("quiet", json!({"automountServiceAccountToken": false}))),
        )
        .await;
    assert_eq!(quiet["spec"].get("volumes"), None, "{quiet}");
    s.ok(
        Method::POST,
        SAS,
        Some(
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "mute"},
                    "automountServiceAccountToken": false}),
        ),
    )
    .await;
    let muted = s
        .ok(
            Method::POST,
            PODS,
            Some(pod("muted", json!({"serviceAccountName": "mute"}))),
        )
        .await;
    assert_eq!(muted["spec"].get("volumes"), None, "{muted}");
    let overridden = s
        .ok(
            Method::POST,
            PODS,
            Some(pod(
                "loud",
                json!({"serviceAccountName": "mute", "automountServiceAccountToken": true}),
            )),
        )
        .await;
    assert!(
        overridden["spec"]["volumes"][0]["projected"].is_object(),
        "{overridden}"
    );

    // A service account that does not exist.
    let (status, value) = s
        .call(
            Method::POST,
            PODS,
            Some(pod("lost", json!({"serviceAccountName": "ghost"}))),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{value}");
    assert_status(&value, 403, "Forbidden");
    assert_eq!(
        value["message"],
        "pods \"lost\" is forbidden: error looking up service account default/ghost: \
         serviceaccount \"ghost\" not found"
    );
}
