//! `/openapi/v2` and `/openapi/v3` as a client sees them: media types, ETags, the hash
//! redirect and cache headers of kube-openapi's handlers, and authentication.

use axum::http::{Method, StatusCode, header};

use super::{ADMIN_TOKEN, ALICE_TOKEN, server};

const PROTOBUF_ASKED: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";
const PROTOBUF_ANSWERED: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

#[tokio::test]
async fn v2_answers_protobuf_or_json_as_asked() {
    let s = server().await;
    let (status, headers, _) = s
        .exchange(
            ADMIN_TOKEN,
            Method::GET,
            "/openapi/v2",
            &[(
                header::ACCEPT,
                &format!("{PROTOBUF_ASKED}, application/json"),
            )],
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], PROTOBUF_ANSWERED);
    let (status, headers, body) = s
        .exchange(
            ADMIN_TOKEN,
            Method::GET,
            "/openapi/v2",
            &[(header::ACCEPT, "application/json")],
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(body["swagger"], "2.0");
    assert_eq!(
        body["definitions"]["io.k8s.api.core.v1.Container"]["properties"]["ports"]["x-kubernetes-list-map-keys"],
        serde_json::json!(["containerPort", "protocol"])
    );
    let (status, _, _) = s
        .exchange(
            ADMIN_TOKEN,
            Method::GET,
            "/openapi/v2",
            &[(header::ACCEPT, "text/html")],
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_ACCEPTABLE);
}

#[tokio::test]
async fn v3_documents_are_cached_by_hash() {
    let s = server().await;
    let index = s.ok(Method::GET, "/openapi/v3", None).await;
    let url = index["paths"]["apis/apps/v1"]["serverRelativeURL"]
        .as_str()
        .expect("apps/v1 in the index")
        .to_owned();
    let hash = url.split("hash=").nth(1).expect("a hash").to_owned();

    let (status, headers, body) = s
        .exchange(ADMIN_TOKEN, Method::GET, &url, &[], Vec::new())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CACHE_CONTROL], "public, immutable");
    assert!(headers.contains_key(header::EXPIRES));
    assert_eq!(headers[header::ETAG], format!("\"{hash}\"").as_str());
    assert_eq!(body["openapi"], "3.0.0");

    // Without the hash: no immutable caching; with the ETag: 304.
    let (status, headers, _) = s
        .exchange(
            ADMIN_TOKEN,
            Method::GET,
            "/openapi/v3/apis/apps/v1",
            &[],
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!headers.contains_key(header::CACHE_CONTROL));
    let etag = format!("\"{hash}\"");
    let (status, _, _) = s
        .exchange(
            ADMIN_TOKEN,
            Method::GET,
            "/openapi/v3/apis/apps/v1",
            &[(header::IF_NONE_MATCH, &etag)],
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);

    // An old hash is sent to the current document.
    let (status, headers, _) = s
        .exchange(
            ADMIN_TOKEN,
            Method::GET,
            "/openapi/v3/apis/apps/v1?hash=0123",
            &[],
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(headers[header::LOCATION], url.as_str());

    let (status, _, _) = s
        .exchange(
            ADMIN_TOKEN,
            Method::GET,
            "/openapi/v3/apis/example.com/v1",
            &[],
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn openapi_needs_authentication_but_no_rights() {
    let s = server().await;
    for path in ["/openapi/v2", "/openapi/v3", "/openapi/v3/api/v1"] {
        let (status, _, body) = s.exchange("", Method::GET, path, &[], Vec::new()).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path} without credentials");
        assert_eq!(
            body["message"],
            format!("forbidden: User \"system:anonymous\" cannot get path \"{path}\"")
        );
        // Like system:discovery: any authenticated user may read it.
        let (status, _, _) = s
            .exchange(ALICE_TOKEN, Method::GET, path, &[], Vec::new())
            .await;
        assert_eq!(status, StatusCode::OK, "{path} as alice");
    }
}
