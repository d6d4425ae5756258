//! What a running pod's volumes hold after its objects or its labels change.

use k8s_openapi::{
    api::core::v1::{
        ConfigMapProjection, ConfigMapVolumeSource, DownwardAPIVolumeFile, DownwardAPIVolumeSource,
        ObjectFieldSelector, PodSpec, PodStatus, ProjectedVolumeSource, SecretVolumeSource,
        ServiceAccountTokenProjection, VolumeProjection,
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};

use super::*;

fn data(pairs: &[(&str, &str)]) -> ObjectData {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
        .collect()
}

fn config_map_volume(name: &str, optional: bool) -> Volume {
    Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: name.into(),
            optional: Some(optional),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn secret_volume(name: &str) -> Volume {
    Volume {
        name: "creds".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(name.into()),
            default_mode: Some(0o400),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn labels_volume() -> Volume {
    Volume {
        name: "podinfo".into(),
        downward_api: Some(DownwardAPIVolumeSource {
            items: Some(vec![DownwardAPIVolumeFile {
                path: "labels".into(),
                field_ref: Some(ObjectFieldSelector {
                    field_path: "metadata.labels".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn projected_volume() -> Volume {
    Volume {
        name: "api".into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![
                VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        path: "token".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                VolumeProjection {
                    config_map: Some(ConfigMapProjection {
                        name: "kube-root-ca.crt".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pod(volumes: Vec<Volume>, tier: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("shop".into()),
            uid: Some("u1".into()),
            labels: Some([("tier".to_owned(), tier.to_owned())].into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            volumes: Some(volumes),
            ..Default::default()
        }),
        status: Some(PodStatus {
            pod_ip: Some("10.0.0.7".into()),
            ..Default::default()
        }),
    }
}

/// Each file as `path=content mode`, or the error's text; `None`: nothing decided.
type Files = Option<Result<Vec<String>, String>>;
/// What is checked, the volume, the objects as known, the files wanted.
type Case<'a> = (&'a str, Volume, Vec<(KeyKind, &'a str, Known)>, Files);

fn files(result: Option<Result<Payload, MountError>>) -> Files {
    result.map(|r| {
        r.map(|payload| {
            payload
                .iter()
                .map(|(path, f)| {
                    format!("{path}={} {:o}", String::from_utf8_lossy(&f.data), f.mode)
                })
                .collect()
        })
        .map_err(|e| crate::error_chain(&e))
    })
}

fn known(list: &[(KeyKind, &str, Known)]) -> BTreeMap<(KeyKind, String), Known> {
    list.iter()
        .map(|(kind, name, k)| ((*kind, (*name).to_owned()), k.clone()))
        .collect()
}

#[test]
fn desired_files_follow_the_objects_as_known() {
    let app_v2 = Known::Present(data(&[("greeting", "hello v2")]));
    let cases: Vec<Case<'_>> = vec![
        (
            "a changed ConfigMap",
            config_map_volume("app", false),
            vec![(KeyKind::ConfigMap, "app", app_v2.clone())],
            Some(Ok(vec!["greeting=hello v2 644".into()])),
        ),
        (
            "a ConfigMap not known yet: nothing to decide",
            config_map_volume("app", false),
            vec![(KeyKind::Secret, "app", app_v2.clone())],
            None,
        ),
        (
            "a deleted ConfigMap: the kubelet's error, the files stay",
            config_map_volume("app", false),
            vec![(KeyKind::ConfigMap, "app", Known::Absent)],
            Some(Err("configmaps \"app\" not found".into())),
        ),
        (
            "a deleted optional ConfigMap empties the volume",
            config_map_volume("app", true),
            vec![(KeyKind::ConfigMap, "app", Known::Absent)],
            Some(Ok(vec![])),
        ),
        (
            "a changed Secret with its defaultMode",
            secret_volume("db"),
            vec![(
                KeyKind::Secret,
                "db",
                Known::Present(data(&[("password", "s3cret-2")])),
            )],
            Some(Ok(vec!["password=s3cret-2 400".into()])),
        ),
        (
            "the pod's labels as they are now",
            labels_volume(),
            vec![],
            Some(Ok(vec!["labels=tier=\"backend\" 644".into()])),
        ),
        (
            "a projected volume keeps its token and takes the new CA",
            projected_volume(),
            vec![(
                KeyKind::ConfigMap,
                "kube-root-ca.crt",
                Known::Present(data(&[("ca.crt", "CA2")])),
            )],
            Some(Ok(vec![
                "ca.crt=CA2 644".into(),
                "token=current-token 644".into(),
            ])),
        ),
        (
            "a projected volume waits for its objects",
            projected_volume(),
            vec![],
            None,
        ),
    ];
    let tokens = BTreeMap::from([(0, b"current-token".to_vec())]);
    for (what, volume, objects, want) in cases {
        let pod = pod(vec![volume.clone()], "backend");
        let got = desired(&volume, &pod, "192.0.2.1", &known(&objects), &tokens);
        assert_eq!(files(got), want, "{what}");
    }
}

#[test]
fn not_synced_volumes_decide_nothing() {
    let empty = Volume {
        name: "scratch".into(),
        empty_dir: Some(Default::default()),
        ..Default::default()
    };
    assert!(!is_synced(&empty));
    let pod = pod(vec![empty.clone()], "web");
    assert!(desired(&empty, &pod, "", &BTreeMap::new(), &BTreeMap::new()).is_none());
}

#[test]
fn referenced_lists_every_configmap_and_secret() {
    let pod = pod(
        vec![
            config_map_volume("app", false),
            secret_volume("db"),
            labels_volume(),
            projected_volume(),
        ],
        "web",
    );
    assert_eq!(
        referenced(&pod),
        BTreeSet::from([
            (KeyKind::ConfigMap, "app".to_owned()),
            (KeyKind::ConfigMap, "kube-root-ca.crt".to_owned()),
            (KeyKind::Secret, "db".to_owned()),
        ])
    );
}

#[test]
fn label_and_annotation_changes_rewrite_downward_files() {
    let before = pod(vec![labels_volume()], "web");
    let mut status_only = before.clone();
    status_only.status = Some(PodStatus {
        phase: Some("Running".into()),
        ..Default::default()
    });
    assert!(!metadata_changed(&before, &status_only));
    assert!(metadata_changed(
        &before,
        &pod(vec![labels_volume()], "api")
    ));
    let mut annotated = before.clone();
    annotated.metadata.annotations = Some([("a".to_owned(), "b".to_owned())].into());
    assert!(metadata_changed(&before, &annotated));
}

#[test]
fn immutable_objects_are_noted() {
    let cm = ConfigMap {
        data: Some([("k".to_owned(), "v".to_owned())].into()),
        immutable: Some(true),
        ..Default::default()
    };
    assert_eq!(
        config_map_known(cm),
        (Known::Present(data(&[("k", "v")])), true)
    );
    assert_eq!(
        secret_known(Secret::default()),
        (Known::Present(ObjectData::new()), false)
    );
}
