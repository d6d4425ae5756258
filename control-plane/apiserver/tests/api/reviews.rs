//! authorization.k8s.io access reviews and impersonation, answered by the default chain
//! (`system:masters` only) followed by a small test policy.

use std::sync::Arc;

use axum::http::{Method, StatusCode, header};
use k8s_openapi::api::authorization::v1::ResourceRule;
use keelson_apiserver::{
    AppState, Authenticator, UserInfo, app,
    auth::{
        MASTERS_GROUP,
        authz::{Attributes, Authorize, Decision, RequestKind, Rules},
        masters::masters_only,
        rbac::RbacAuthorizer,
    },
};
use serde_json::{Value, json};

use super::{ADMIN_TOKEN, ALICE_TOKEN, NODE_TOKEN, Server, bootstrapped_store};

/// alice may list pods in `a` and impersonate the user carol; bob is explicitly denied deleting
/// nodes; nobody else gets an opinion.
#[derive(Debug)]
struct Policy;

#[async_trait::async_trait]
impl Authorize for Policy {
    async fn authorize(&self, attributes: &Attributes) -> Decision {
        let RequestKind::Resource(r) = &attributes.request else {
            return Decision::NoOpinion(String::new());
        };
        match (
            attributes.user.name.as_str(),
            attributes.verb.as_str(),
            r.resource.as_str(),
        ) {
            ("alice", "list", "pods") if r.namespace == "a" => {
                Decision::Allow("alice lists pods in a".into())
            }
            ("alice", "impersonate", "users") if r.name == "carol" => {
                Decision::Allow(String::new())
            }
            ("bob", "delete", "nodes") => Decision::Deny("bob never deletes nodes".into()),
            _ => Decision::NoOpinion(String::new()),
        }
    }

    async fn rules_for(&self, user: &UserInfo, namespace: &str) -> Rules {
        let mut rules = Rules::default();
        if user.name == "alice" && namespace == "a" {
            rules.resource.push(ResourceRule {
                verbs: vec!["list".into()],
                api_groups: Some(vec![String::new()]),
                resources: Some(vec!["pods".into()]),
                resource_names: None,
            });
        }
        rules
    }
}

async fn server() -> Server {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = bootstrapped_store(dir.path()).await;
    let authenticator = Authenticator::default()
        .with_token(
            ADMIN_TOKEN,
            UserInfo::new("kubernetes-admin", &[MASTERS_GROUP]),
        )
        .with_token(NODE_TOKEN, UserInfo::node("n1"))
        .with_token(ALICE_TOKEN, UserInfo::new("alice", &["developers"]));
    let state = AppState::new(Arc::clone(&store))
        .with_authenticator(authenticator)
        .with_authorizer(
            // The test policy, then RBAC with the bootstrap policy (system:basic-user grants
            // every authenticated user the self reviews).
            masters_only()
                .with(Arc::new(Policy))
                .with(Arc::new(RbacAuthorizer::new(Arc::clone(&store)))),
        );
    Server {
        store,
        router: app(state),
        _dir: dir,
    }
}

const SAR: &str = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
const SSAR: &str = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";
const SSRR: &str = "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews";
const WHOAMI: &str = "/apis/authentication.k8s.io/v1/selfsubjectreviews";

fn lsar_path(ns: &str) -> String {
    format!("/apis/authorization.k8s.io/v1/namespaces/{ns}/localsubjectaccessreviews")
}

fn review(kind: &str, spec: Value) -> Value {
    json!({"apiVersion": "authorization.k8s.io/v1", "kind": kind, "metadata": {}, "spec": spec})
}

fn pods(verb: &str, ns: &str) -> Value {
    json!({"verb": verb, "resource": "pods", "namespace": ns})
}

impl Server {
    async fn post_as(
        &self,
        token: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &Value,
    ) -> (StatusCode, Value) {
        let mut all = vec![(header::CONTENT_TYPE, "application/json")];
        let names: Vec<header::HeaderName> = headers
            .iter()
            .map(|(n, _)| header::HeaderName::from_bytes(n.as_bytes()).expect("header name"))
            .collect();
        for (name, (_, value)) in names.iter().zip(headers) {
            all.push((name.clone(), value));
        }
        let (status, _, value) = self
            .exchange(
                token,
                Method::POST,
                path,
                &all,
                body.to_string().into_bytes(),
            )
            .await;
        (status, value)
    }
}

#[tokio::test]
async fn access_reviews_are_validated_as_kube_validates_them() {
    let s = server().await;
    let cases: &[(&str, String, Value, StatusCode, &str)] = &[
        (
            "neither attributes nor a subject",
            SAR.into(),
            review("SubjectAccessReview", json!({})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "SubjectAccessReview.authorization.k8s.io \"\" is invalid: [spec.resourceAttributes: \
             Invalid value: \"null\": exactly one of nonResourceAttributes or resourceAttributes \
             must be specified, spec.user: Invalid value: \"\": at least one of user or group \
             must be specified]",
        ),
        (
            "both attributes",
            SAR.into(),
            review(
                "SubjectAccessReview",
                json!({"user": "alice", "resourceAttributes": pods("get", "a"),
                       "nonResourceAttributes": {"path": "/healthz", "verb": "get"}}),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "SubjectAccessReview.authorization.k8s.io \"\" is invalid: \
             spec.nonResourceAttributes: Invalid value: \
             authorization.NonResourceAttributes{Path:\"/healthz\", Verb:\"get\"}: cannot be \
             specified in combination with resourceAttributes",
        ),
        (
            "a named review",
            SAR.into(),
            json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                   "metadata": {"name": "x"},
                   "spec": {"groups": ["g"], "resourceAttributes": pods("get", "a")}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "SubjectAccessReview.authorization.k8s.io \"\" is invalid: metadata: Invalid value: \
             {\"name\":\"x\"}: must be empty",
        ),
        (
            "a self review without attributes",
            SSAR.into(),
            review("SelfSubjectAccessReview", json!({})),
            StatusCode::UNPROCESSABLE_ENTITY,
            "SelfSubjectAccessReview.authorization.k8s.io \"\" is invalid: \
             spec.resourceAttributes: Invalid value: \"null\": exactly one of \
             nonResourceAttributes or resourceAttributes must be specified",
        ),
        (
            "a local review of another namespace",
            lsar_path("a"),
            json!({"apiVersion": "authorization.k8s.io/v1", "kind": "LocalSubjectAccessReview",
                   "metadata": {"namespace": "a"},
                   "spec": {"user": "alice", "resourceAttributes": pods("list", "b")}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "LocalSubjectAccessReview.authorization.k8s.io \"\" is invalid: \
             spec.resourceAttributes.namespace: Invalid value: \"b\": must match \
             metadata.namespace",
        ),
        (
            "a local review of a non-resource path",
            lsar_path("a"),
            json!({"apiVersion": "authorization.k8s.io/v1", "kind": "LocalSubjectAccessReview",
                   "metadata": {"namespace": "a"},
                   "spec": {"user": "alice", "nonResourceAttributes": {"path": "/x", "verb": "get"}}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "LocalSubjectAccessReview.authorization.k8s.io \"\" is invalid: \
             spec.nonResourceAttributes: Invalid value: \
             authorization.NonResourceAttributes{Path:\"/x\", Verb:\"get\"}: disallowed on this \
             kind of request",
        ),
        (
            "a local review posted to another namespace",
            lsar_path("a"),
            json!({"apiVersion": "authorization.k8s.io/v1", "kind": "LocalSubjectAccessReview",
                   "metadata": {"namespace": "b"},
                   "spec": {"user": "alice", "resourceAttributes": pods("list", "b")}}),
            StatusCode::BAD_REQUEST,
            "the namespace of the provided object does not match the namespace sent on the \
             request",
        ),
        (
            "a rules review without a namespace",
            SSRR.into(),
            json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectRulesReview",
                   "spec": {}}),
            StatusCode::BAD_REQUEST,
            "no namespace on request",
        ),
    ];
    for (what, path, body, code, message) in cases {
        let (status, value) = s.post_as(ADMIN_TOKEN, path, &[], body).await;
        assert_eq!(status, *code, "{what}: {value}");
        assert_eq!(value["message"], *message, "{what}");
    }
}

#[tokio::test]
async fn subject_access_reviews_answer_with_the_chain() {
    let s = server().await;
    // (spec, allowed, denied, reason)
    let cases = [
        (
            json!({"user": "alice", "resourceAttributes": pods("list", "a")}),
            true,
            Value::Null,
            json!("alice lists pods in a"),
        ),
        (
            json!({"user": "alice", "resourceAttributes": pods("list", "b")}),
            false,
            Value::Null,
            Value::Null,
        ),
        (
            json!({"user": "bob", "resourceAttributes": {"verb": "delete", "resource": "nodes"}}),
            false,
            json!(true),
            json!("bob never deletes nodes"),
        ),
        (
            json!({"groups": ["system:masters"],
                   "nonResourceAttributes": {"path": "/healthz", "verb": "get"}}),
            true,
            Value::Null,
            Value::Null,
        ),
    ];
    for (spec, allowed, denied, reason) in cases {
        let (status, answer) = s
            .post_as(
                ADMIN_TOKEN,
                SAR,
                &[],
                &review("SubjectAccessReview", spec.clone()),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        assert_eq!(answer["kind"], "SubjectAccessReview");
        assert_eq!(answer["spec"], spec);
        assert_eq!(answer["metadata"], json!({"creationTimestamp": null}));
        assert_eq!(answer["status"]["allowed"], allowed, "{spec}");
        assert_eq!(answer["status"]["denied"], denied, "{spec}");
        assert_eq!(answer["status"]["reason"], reason, "{spec}");
    }
    // A local review in its namespace.
    let (status, answer) = s
        .post_as(
            ADMIN_TOKEN,
            &lsar_path("a"),
            &[],
            &json!({"apiVersion": "authorization.k8s.io/v1", "kind": "LocalSubjectAccessReview",
                    "spec": {"user": "alice", "resourceAttributes": pods("list", "a")}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(answer["metadata"]["namespace"], "a");
    assert_eq!(answer["status"]["allowed"], true);
    // Asking about others needs `create` on subjectaccessreviews: a node may not.
    let (status, answer) = s
        .post_as(
            NODE_TOKEN,
            SAR,
            &[],
            &review(
                "SubjectAccessReview",
                json!({"user": "alice", "resourceAttributes": pods("list", "a")}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert_eq!(
        answer["message"],
        "subjectaccessreviews.authorization.k8s.io is forbidden: User \"system:node:n1\" cannot \
         create resource \"subjectaccessreviews\" in API group \"authorization.k8s.io\" at the \
         cluster scope"
    );
}

#[tokio::test]
async fn self_reviews_answer_for_the_caller() {
    let s = server().await;
    let ask = |verb: &str, ns: &str| {
        review(
            "SelfSubjectAccessReview",
            json!({"resourceAttributes": pods(verb, ns)}),
        )
    };
    for (token, verb, allowed) in [
        (ALICE_TOKEN, "list", true),
        (ALICE_TOKEN, "delete", false),
        (ADMIN_TOKEN, "delete", true),
    ] {
        let (status, answer) = s.post_as(token, SSAR, &[], &ask(verb, "a")).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
        assert_eq!(answer["status"]["allowed"], allowed, "{token} {verb}");
    }
    let rules_review = json!({"apiVersion": "authorization.k8s.io/v1",
                              "kind": "SelfSubjectRulesReview", "spec": {"namespace": "a"}});
    let (status, answer) = s.post_as(ALICE_TOKEN, SSRR, &[], &rules_review).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    // The test policy's rule first, then what RBAC's bootstrap policy gives every
    // authenticated user (system:basic-user, system:discovery, system:public-info-viewer).
    let rules = answer["status"]["resourceRules"]
        .as_array()
        .expect("resource rules");
    assert_eq!(
        rules[0],
        json!({"verbs": ["list"], "apiGroups": [""], "resources": ["pods"]})
    );
    assert!(
        rules.contains(&json!({"verbs": ["create"], "apiGroups": ["authorization.k8s.io"],
                               "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]})),
        "{answer}"
    );
    assert_eq!(answer["status"]["incomplete"], false);
    // The admin impersonating alice gets alice's answer.
    let (_, answer) = s
        .post_as(
            ADMIN_TOKEN,
            SSAR,
            &[("Impersonate-User", "alice")],
            &ask("delete", "a"),
        )
        .await;
    assert_eq!(answer["status"]["allowed"], false, "{answer}");
}

#[tokio::test]
async fn self_access_reviews_decode_protobuf() {
    fn field(tag: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![(tag << 3) | 2];
        let mut len = bytes.len();
        while len >= 0x80 {
            out.push((len as u8) | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
        out.extend_from_slice(bytes);
        out
    }
    let attributes = [field(1, b"a"), field(2, b"list"), field(5, b"pods")].concat();
    let review = field(2, &field(1, &attributes));
    let type_meta = [
        field(1, b"authorization.k8s.io/v1"),
        field(2, b"SelfSubjectAccessReview"),
    ]
    .concat();
    let body = [b"k8s\0".to_vec(), field(1, &type_meta), field(2, &review)].concat();
    let s = server().await;
    let (status, _, answer) = s
        .exchange(
            ALICE_TOKEN,
            Method::POST,
            SSAR,
            &[(header::CONTENT_TYPE, "application/vnd.kubernetes.protobuf")],
            body,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(answer["spec"]["resourceAttributes"], pods("list", "a"));
    assert_eq!(answer["status"]["allowed"], true, "{answer}");
}

#[tokio::test]
async fn the_reviews_are_discoverable() {
    let s = server().await;
    let list = s
        .ok(Method::GET, "/apis/authorization.k8s.io/v1", None)
        .await;
    let resources: Vec<(&str, bool, &Value)> = list["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap_or(""),
                r["namespaced"].as_bool().unwrap_or(false),
                &r["verbs"],
            )
        })
        .collect();
    let create = json!(["create"]);
    assert_eq!(
        resources,
        [
            ("localsubjectaccessreviews", true, &create),
            ("selfsubjectaccessreviews", false, &create),
            ("selfsubjectrulesreviews", false, &create),
            ("subjectaccessreviews", false, &create),
        ]
    );
    let group = s.ok(Method::GET, "/apis/authorization.k8s.io", None).await;
    assert_eq!(
        group["preferredVersion"]["groupVersion"],
        "authorization.k8s.io/v1"
    );
}

#[tokio::test]
async fn impersonation_switches_the_user_when_allowed() {
    let s = server().await;
    let whoami = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"});
    // (token, headers, status, userInfo or message)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, StatusCode, Value);
    let cases: Vec<Case<'_>> = vec![
        (
            ADMIN_TOKEN,
            vec![("Impersonate-User", "bob"), ("Impersonate-Group", "g")],
            StatusCode::CREATED,
            json!({"username": "bob", "groups": ["g", "system:authenticated"]}),
        ),
        (
            ADMIN_TOKEN,
            vec![
                ("Impersonate-User", "system:serviceaccount:ns1:robot"),
                ("Impersonate-Uid", "u-1"),
                ("Impersonate-Extra-Acme.com%2Fteam", "blue"),
            ],
            StatusCode::CREATED,
            json!({"username": "system:serviceaccount:ns1:robot",
                   "groups": ["system:serviceaccounts", "system:serviceaccounts:ns1",
                              "system:authenticated"],
                   "uid": "u-1", "extra": {"acme.com/team": ["blue"]}}),
        ),
        (
            ADMIN_TOKEN,
            vec![("Impersonate-User", "system:anonymous")],
            // Impersonated as kube does (system:unauthenticated), and then authorized as
            // anonymous: system:basic-user is bound to system:authenticated only.
            StatusCode::FORBIDDEN,
            json!(
                "selfsubjectreviews.authentication.k8s.io is forbidden: User \"system:anonymous\" \
                   cannot create resource \"selfsubjectreviews\" in API group \"authentication.k8s.io\" \
                   at the cluster scope"
            ),
        ),
        (
            ALICE_TOKEN,
            vec![("Impersonate-User", "carol")],
            StatusCode::CREATED,
            json!({"username": "carol", "groups": ["system:authenticated"]}),
        ),
        (
            ALICE_TOKEN,
            vec![("Impersonate-User", "bob")],
            StatusCode::FORBIDDEN,
            json!(
                "users \"bob\" is forbidden: User \"alice\" cannot impersonate resource \
                   \"users\" in API group \"\" at the cluster scope"
            ),
        ),
        (
            ALICE_TOKEN,
            vec![
                ("Impersonate-User", "carol"),
                ("Impersonate-Group", "admins"),
            ],
            StatusCode::FORBIDDEN,
            json!(
                "groups \"admins\" is forbidden: User \"alice\" cannot impersonate resource \
                   \"groups\" in API group \"\" at the cluster scope"
            ),
        ),
        (
            ALICE_TOKEN,
            vec![("Impersonate-User", "system:serviceaccount:ns1:robot")],
            StatusCode::FORBIDDEN,
            json!(
                "serviceaccounts \"robot\" is forbidden: User \"alice\" cannot impersonate \
                   resource \"serviceaccounts\" in API group \"\" in the namespace \"ns1\""
            ),
        ),
        (
            ADMIN_TOKEN,
            vec![("Impersonate-Group", "g")],
            StatusCode::INTERNAL_SERVER_ERROR,
            json!(
                "Internal Server Error: \"/apis/authentication.k8s.io/v1/selfsubjectreviews\": \
                   requested [{Group  g    }] without impersonating a user"
            ),
        ),
    ];
    for (token, headers, code, want) in cases {
        let (status, answer) = s.post_as(token, WHOAMI, &headers, &whoami).await;
        assert_eq!(status, code, "{headers:?}: {answer}");
        if code == StatusCode::CREATED {
            assert_eq!(answer["status"]["userInfo"], want, "{headers:?}");
        } else {
            assert_eq!(answer["message"], want, "{headers:?}");
        }
    }
    // A resource request as the impersonated user meets that user's permissions.
    let (status, _, answer) = s
        .exchange(
            ADMIN_TOKEN,
            Method::GET,
            "/api/v1/namespaces/default/pods",
            &[(header::HeaderName::from_static("impersonate-user"), "bob")],
            Vec::new(),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .is_some_and(|m| m.contains("User \"bob\" cannot list")),
        "{answer}"
    );
}
