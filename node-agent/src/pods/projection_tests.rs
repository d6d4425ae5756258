//! Payloads of key, downward API and projected sources; the service-account volume on disk
//! against a fake API.

use std::{
    path::Path,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    extract::{Path as UrlPath, State},
    http::StatusCode,
    response::Response,
};
use k8s_openapi::{
    api::{
        authentication::v1::{TokenRequest, TokenRequestStatus},
        core::v1::{
            ConfigMapProjection, DownwardAPIProjection, ObjectFieldSelector, PodSpec,
            ResourceFieldSelector, SecretProjection, ServiceAccountTokenProjection, Volume,
            VolumeProjection,
        },
    },
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time},
    jiff::{SignedDuration, Timestamp},
};

use super::*;
use crate::pods::{
    atomic_writer::DATA_DIR,
    fake_api::{self, Seen},
    volumes,
};

fn bytes(map: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    map.iter()
        .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
        .collect()
}

fn item(key: &str, path: &str, mode: Option<i32>) -> KeyToPath {
    KeyToPath {
        key: key.into(),
        path: path.into(),
        mode,
    }
}

fn files(payload: &Payload) -> Vec<(String, String, u32)> {
    payload
        .iter()
        .map(|(k, f)| {
            (
                k.clone(),
                String::from_utf8_lossy(&f.data).into_owned(),
                f.mode,
            )
        })
        .collect()
}

fn own(list: &[(&str, &str, u32)]) -> Vec<(String, String, u32)> {
    list.iter()
        .map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), *c))
        .collect()
}

#[test]
fn key_payloads() {
    let data = bytes(&[("ca.crt", "PEM"), ("extra", "x")]);
    assert_eq!(
        files(&key_payload(KeyKind::ConfigMap, &data, None, 0o644, false).expect("all")),
        own(&[("ca.crt", "PEM", 0o644), ("extra", "x", 0o644)])
    );
    let items = [item("ca.crt", "certs/ca.pem", Some(0o400))];
    assert_eq!(
        files(&key_payload(KeyKind::ConfigMap, &data, Some(&items), 0o644, false).expect("items")),
        own(&[("certs/ca.pem", "PEM", 0o400)])
    );
    let missing = [item("nope", "n", None), item("extra", "e", None)];
    assert_eq!(
        key_payload(KeyKind::ConfigMap, &data, Some(&missing), 0o644, false)
            .map_err(|e| e.to_string()),
        Err("configmap references non-existent config key: nope".to_owned())
    );
    assert_eq!(
        key_payload(KeyKind::Secret, &data, Some(&missing), 0o644, false)
            .map_err(|e| e.to_string()),
        Err("references non-existent secret key: nope".to_owned())
    );
    // Optional: the missing key is skipped.
    assert_eq!(
        files(&key_payload(KeyKind::Secret, &data, Some(&missing), 0o600, true).expect("optional")),
        own(&[("e", "x", 0o600)])
    );
}

fn pod() -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("web-0".into()),
            namespace: Some("shop".into()),
            uid: Some("7d1c-uid".into()),
            labels: Some(BTreeMap::from([
                ("app".into(), "web".into()),
                ("tier".into(), "front".into()),
            ])),
            annotations: Some(BTreeMap::from([("note".into(), "a \"b\"".into())])),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some("node-1".into()),
            service_account_name: Some("builder".into()),
            containers: vec![k8s_openapi::api::core::v1::Container {
                name: "app".into(),
                resources: Some(k8s_openapi::api::core::v1::ResourceRequirements {
                    limits: Some(BTreeMap::from([(
                        "memory".into(),
                        k8s_openapi::apimachinery::pkg::api::resource::Quantity("128Mi".into()),
                    )])),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

fn field(path: &str, field_path: &str) -> DownwardAPIVolumeFile {
    DownwardAPIVolumeFile {
        path: path.into(),
        field_ref: Some(ObjectFieldSelector {
            field_path: field_path.into(),
            api_version: None,
        }),
        ..DownwardAPIVolumeFile::default()
    }
}

/// Downward API files: what a container reads for each field.
#[test]
fn downward_api_values() {
    let mut items = vec![
        field("name", "metadata.name"),
        field("namespace", "metadata.namespace"),
        field("uid", "metadata.uid"),
        field("labels", "metadata.labels"),
        field("annotations", "metadata.annotations"),
        field("app", "metadata.labels['app']"),
        field("node", "spec.nodeName"),
        field("sa", "spec.serviceAccountName"),
        field("ip", "status.podIP"),
        DownwardAPIVolumeFile {
            path: "mem".into(),
            mode: Some(0o400),
            resource_field_ref: Some(ResourceFieldSelector {
                container_name: Some("app".into()),
                resource: "limits.memory".into(),
                divisor: Some(k8s_openapi::apimachinery::pkg::api::resource::Quantity(
                    "1Mi".into(),
                )),
            }),
            ..DownwardAPIVolumeFile::default()
        },
    ];
    let payload = downward_payload(&items, &pod(), 0o644, "10.0.0.7", "192.0.2.1").expect("ok");
    assert_eq!(
        files(&payload),
        own(&[
            ("annotations", "note=\"a \\\"b\\\"\"", 0o644),
            ("app", "web", 0o644),
            ("ip", "10.0.0.7", 0o644),
            ("labels", "app=\"web\"\ntier=\"front\"", 0o644),
            ("mem", "128", 0o400),
            ("name", "web-0", 0o644),
            ("namespace", "shop", 0o644),
            ("node", "node-1", 0o644),
            ("sa", "builder", 0o644),
            ("uid", "7d1c-uid", 0o644),
        ])
    );
    items.push(field("bad", "spec.hostname"));
    items.push(field("worse", "status.phase"));
    assert_eq!(
        downward_payload(&items, &pod(), 0o644, "", "").map_err(|e| e.to_string()),
        Err(
            "[unsupported fieldRef fieldPath \"spec.hostname\", unsupported fieldRef fieldPath \
             \"status.phase\"]"
                .to_owned()
        )
    );
}

/// A fake API with ConfigMaps, Secrets and the token endpoint.
#[derive(Default)]
struct Fake {
    config_maps: BTreeMap<String, serde_json::Value>,
    secrets: BTreeMap<String, serde_json::Value>,
    seen: Seen,
    tokens: Mutex<u32>,
}

async fn get_config_map(
    State(fake): State<Arc<Fake>>,
    UrlPath((namespace, name)): UrlPath<(String, String)>,
) -> Response {
    fake.seen.lock().expect("lock").push((
        format!("GET configmaps {namespace}/{name}"),
        serde_json::Value::Null,
    ));
    match fake.config_maps.get(&name) {
        Some(cm) => fake_api::json(StatusCode::OK, cm),
        None => fake_api::status(404, "NotFound", &format!("configmaps \"{name}\" not found")),
    }
}

async fn get_secret(
    State(fake): State<Arc<Fake>>,
    UrlPath((_namespace, name)): UrlPath<(String, String)>,
) -> Response {
    match fake.secrets.get(&name) {
        Some(s) => fake_api::json(StatusCode::OK, s),
        None => fake_api::status(404, "NotFound", &format!("secrets \"{name}\" not found")),
    }
}

async fn create_token(
    State(fake): State<Arc<Fake>>,
    UrlPath((namespace, account)): UrlPath<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let mut request: TokenRequest = serde_json::from_slice(&body).expect("TokenRequest");
    fake.seen.lock().expect("lock").push((
        format!("POST token {namespace}/{account}"),
        serde_json::to_value(&request.spec).expect("JSON"),
    ));
    if account == "missing" {
        return fake_api::status(
            404,
            "NotFound",
            &format!("serviceaccounts \"{account}\" not found"),
        );
    }
    let n = {
        let mut n = fake.tokens.lock().expect("lock");
        *n += 1;
        *n
    };
    let ttl = request.spec.expiration_seconds.unwrap_or(3600);
    request.status = Some(TokenRequestStatus {
        token: format!("jwt-{n}"),
        expiration_timestamp: Time(
            Timestamp::now()
                .checked_add(SignedDuration::from_secs(ttl))
                .expect("time"),
        ),
    });
    fake_api::json(StatusCode::CREATED, &request)
}

fn serve(fake: Fake) -> (Client, Seen) {
    let seen = fake.seen.clone();
    let router = Router::new()
        .route(
            "/api/v1/namespaces/{namespace}/configmaps/{name}",
            axum::routing::get(get_config_map),
        )
        .route(
            "/api/v1/namespaces/{namespace}/secrets/{name}",
            axum::routing::get(get_secret),
        )
        .route(
            "/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token",
            axum::routing::post(create_token),
        )
        .with_state(Arc::new(fake));
    (fake_api::client(router), seen)
}

fn root_ca() -> serde_json::Value {
    serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "kube-root-ca.crt", "namespace": "shop"},
        "data": {"ca.crt": "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n"}})
}

/// The volume the ServiceAccount admission plugin adds (`kube-api-access-<x>`).
fn api_access_volume() -> Volume {
    Volume {
        name: "kube-api-access-x7k2p".into(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o644),
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: None,
                        expiration_seconds: Some(3607),
                        path: "token".into(),
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: "kube-root-ca.crt".into(),
                        items: Some(vec![item("ca.crt", "ca.crt", None)]),
                        optional: None,
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    downward_api: Some(DownwardAPIProjection {
                        items: Some(vec![field("namespace", "metadata.namespace")]),
                    }),
                    ..VolumeProjection::default()
                },
            ]),
        }),
        ..Volume::default()
    }
}

fn with_volumes(volumes: Vec<Volume>) -> Pod {
    let mut pod = pod();
    if let Some(spec) = pod.spec.as_mut() {
        spec.volumes = Some(volumes);
    }
    pod
}

async fn prepare(
    client: &Client,
    tokens: &mut TokenCache,
    pod: &Pod,
    dir: &Path,
) -> Result<volumes::VolumePaths, volumes::VolumeError> {
    let mut sources = Sources::new(client.clone(), "shop");
    let mut inputs = Inputs {
        sources: &mut sources,
        tokens,
        client,
        pod,
        pod_ip: "10.0.0.7",
        host_ip: "192.0.2.1",
    };
    volumes::prepare(&mut inputs, dir).await
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[tokio::test]
async fn service_account_volume_on_disk() {
    let (client, seen) = serve(Fake {
        config_maps: BTreeMap::from([("kube-root-ca.crt".to_owned(), root_ca())]),
        ..Fake::default()
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let pod = with_volumes(vec![api_access_volume()]);
    let mut tokens = TokenCache::default();
    let paths = prepare(&client, &mut tokens, &pod, dir.path())
        .await
        .expect("mounted");
    let mounted = &paths["kube-api-access-x7k2p"];
    assert!(mounted.read_only);
    let vol = &mounted.path;
    assert_eq!(vol, &dir.path().join("volumes/kube-api-access-x7k2p"));
    assert_eq!(read(vol, "token"), "jwt-1");
    assert_eq!(
        read(vol, "ca.crt"),
        "-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n"
    );
    assert_eq!(read(vol, "namespace"), "shop");
    use std::os::unix::fs::PermissionsExt as _;
    let pod_dir_mode = std::fs::metadata(dir.path())
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(
        pod_dir_mode & 0o777,
        0o750,
        "only root reads the pod's tokens"
    );
    for name in ["token", "ca.crt", "namespace"] {
        assert_eq!(
            std::fs::read_link(vol.join(name)).expect("a link"),
            Path::new(DATA_DIR).join(name)
        );
    }
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen[0].0, "POST token shop/builder");
    assert_eq!(
        seen[0].1,
        serde_json::json!({"audiences": [], "expirationSeconds": 3607,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "web-0",
                "uid": "7d1c-uid"}})
    );
    assert_eq!(seen[1].0, "GET configmaps shop/kube-root-ca.crt");

    // Again before the refresh time: the same token, nothing rewritten.
    let data_before = std::fs::read_link(vol.join(DATA_DIR)).expect("..data");
    prepare(&client, &mut tokens, &pod, dir.path())
        .await
        .expect("again");
    assert_eq!(read(vol, "token"), "jwt-1");
    assert_eq!(
        std::fs::read_link(vol.join(DATA_DIR)).expect("..data"),
        data_before
    );
    // A fresh cache (as after the refresh time): a new token, swapped in.
    let mut fresh = TokenCache::default();
    prepare(&client, &mut fresh, &pod, dir.path())
        .await
        .expect("refreshed");
    assert_eq!(read(vol, "token"), "jwt-2");
    assert_ne!(
        std::fs::read_link(vol.join(DATA_DIR)).expect("..data"),
        data_before
    );
}

#[tokio::test]
async fn mount_failures_name_the_volume_and_every_source() {
    let (client, _) = serve(Fake::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let mut pod = with_volumes(vec![api_access_volume()]);
    if let Some(spec) = pod.spec.as_mut() {
        spec.service_account_name = Some("missing".into());
    }
    let error = prepare(&client, &mut TokenCache::default(), &pod, dir.path())
        .await
        .expect_err("no token, no CA");
    let text = error.to_string();
    assert!(
        text.starts_with(
            "MountVolume.SetUp failed for volume \"kube-api-access-x7k2p\" : [failed to fetch \
             token: "
        ) && text.contains("serviceaccounts \"missing\" not found")
            && text.ends_with(", configmaps \"kube-root-ca.crt\" not found]"),
        "{text}"
    );
    assert!(
        !dir.path()
            .join("volumes/kube-api-access-x7k2p/token")
            .exists(),
        "nothing half-written"
    );

    // Optional sources that are missing are skipped.
    let optional = Volume {
        name: "extra".into(),
        projected: Some(ProjectedVolumeSource {
            default_mode: Some(0o600),
            sources: Some(vec![
                VolumeProjection {
                    secret: Some(SecretProjection {
                        name: "gone".into(),
                        items: None,
                        optional: Some(true),
                    }),
                    ..VolumeProjection::default()
                },
                VolumeProjection {
                    downward_api: Some(DownwardAPIProjection {
                        items: Some(vec![field("name", "metadata.name")]),
                    }),
                    ..VolumeProjection::default()
                },
            ]),
        }),
        ..Volume::default()
    };
    let pod = with_volumes(vec![optional]);
    let paths = prepare(&client, &mut TokenCache::default(), &pod, dir.path())
        .await
        .expect("optional");
    let vol = &paths["extra"].path;
    assert_eq!(read(vol, "name"), "web-0");
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(vol.join("name"))
            .expect("stat")
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
}

/// `automountServiceAccountToken: false`: the API adds no volume, and nothing is asked of it.
#[tokio::test]
async fn pod_without_token_volume_needs_no_api() {
    let (client, seen) = serve(Fake::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let paths = prepare(&client, &mut TokenCache::default(), &pod(), dir.path())
        .await
        .expect("nothing to mount");
    assert!(paths.is_empty());
    assert!(seen.lock().expect("lock").is_empty());
}
