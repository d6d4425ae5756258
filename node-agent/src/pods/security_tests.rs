use k8s_openapi::api::core::v1::{Capabilities, PodSpec, Sysctl};

use super::*;

fn pod(sc: serde_json::Value, container_sc: serde_json::Value) -> (Pod, Container) {
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "shop", "uid": "u-1"},
        "spec": {
            "securityContext": sc,
            "containers": [{"name": "app", "image": "x", "securityContext": container_sc}],
        },
    }))
    .expect("pod");
    let container = pod.spec.as_ref().expect("spec").containers[0].clone();
    (pod, container)
}

#[test]
fn image_users_parse_as_the_runtime_reads_them() {
    let cases = [
        ("", ImageUser::Uid(0)),
        ("0", ImageUser::Uid(0)),
        ("1000", ImageUser::Uid(1000)),
        ("1000:50", ImageUser::Uid(1000)),
        ("nobody", ImageUser::Name("nobody".into())),
        ("www-data:www-data", ImageUser::Name("www-data".into())),
        (":5", ImageUser::Uid(0)),
    ];
    for (text, want) in cases {
        assert_eq!(ImageUser::parse(text), want, "{text:?}");
    }
}

#[test]
fn run_as_non_root_refuses_root_with_the_kubelet_message() {
    let root_image = "container has runAsNonRoot and image will run as root (pod: \
                      \"web_shop(u-1)\", container: app)";
    let cases: [(serde_json::Value, serde_json::Value, &str, Result<(), &str>); 8] = [
        // Not asked: anything goes.
        (serde_json::json!({}), serde_json::json!({}), "", Ok(())),
        (
            serde_json::json!({"runAsNonRoot": true}),
            serde_json::json!({}),
            "",
            Err(root_image),
        ),
        (
            serde_json::json!({}),
            serde_json::json!({"runAsNonRoot": true}),
            "0:0",
            Err(root_image),
        ),
        // The container's false wins over the pod's true.
        (
            serde_json::json!({"runAsNonRoot": true}),
            serde_json::json!({"runAsNonRoot": false}),
            "",
            Ok(()),
        ),
        (
            serde_json::json!({"runAsNonRoot": true}),
            serde_json::json!({}),
            "1000",
            Ok(()),
        ),
        // runAsUser decides before the image.
        (
            serde_json::json!({"runAsNonRoot": true, "runAsUser": 1000}),
            serde_json::json!({}),
            "",
            Ok(()),
        ),
        (
            serde_json::json!({"runAsNonRoot": true}),
            serde_json::json!({"runAsUser": 0}),
            "1000",
            Err(
                "container's runAsUser breaks non-root policy (pod: \"web_shop(u-1)\", \
                 container: app)",
            ),
        ),
        (
            serde_json::json!({"runAsNonRoot": true}),
            serde_json::json!({}),
            "nobody",
            Err(
                "container has runAsNonRoot and image has non-numeric user (nobody), cannot \
                 verify user is non-root (pod: \"web_shop(u-1)\", container: app)",
            ),
        ),
    ];
    for (pod_sc, container_sc, image, want) in cases {
        let (p, c) = pod(pod_sc.clone(), container_sc.clone());
        assert_eq!(
            verify_non_root(&p, &c, &ImageUser::parse(image)).map_err(|e| e.to_string()),
            want.map_err(str::to_owned),
            "{pod_sc} {container_sc} {image:?}"
        );
    }
}

#[test]
fn users_and_groups_resolve_container_first() {
    let cases = [
        (
            serde_json::json!({}),
            serde_json::json!({}),
            "",
            None,
            vec![],
        ),
        (
            serde_json::json!({"runAsUser": 1000, "runAsGroup": 3000}),
            serde_json::json!({}),
            "",
            Some("1000:3000"),
            vec![],
        ),
        (
            serde_json::json!({"runAsUser": 1000, "runAsGroup": 3000}),
            serde_json::json!({"runAsUser": 2000}),
            "",
            Some("2000:3000"),
            vec![],
        ),
        // A group alone keeps the image's user.
        (
            serde_json::json!({"runAsGroup": 3000}),
            serde_json::json!({}),
            "nobody:nogroup",
            Some("nobody:3000"),
            vec![],
        ),
        (
            serde_json::json!({"runAsGroup": 3000}),
            serde_json::json!({}),
            "",
            Some("0:3000"),
            vec![],
        ),
        // fsGroup joins the supplementary groups, first and once.
        (
            serde_json::json!({"fsGroup": 2000, "supplementalGroups": [4000, 2000, 5000]}),
            serde_json::json!({}),
            "",
            None,
            vec!["2000", "4000", "5000"],
        ),
    ];
    for (pod_sc, container_sc, image, user, groups) in cases {
        let (p, c) = pod(pod_sc.clone(), container_sc.clone());
        let s = settings(&p, &c, image).expect("settings");
        assert_eq!(s.user.as_deref(), user, "{pod_sc} {container_sc}");
        assert_eq!(s.group_add, groups, "{pod_sc} {container_sc}");
    }
}

#[test]
fn seccomp_follows_the_kubelet_default_of_unconfined() {
    let cases = [
        (
            serde_json::json!({}),
            serde_json::json!({}),
            Ok(Some(Seccomp::Unconfined)),
        ),
        (
            serde_json::json!({"seccompProfile": {"type": "RuntimeDefault"}}),
            serde_json::json!({}),
            Ok(Some(Seccomp::RuntimeDefault)),
        ),
        (
            serde_json::json!({"seccompProfile": {"type": "RuntimeDefault"}}),
            serde_json::json!({"seccompProfile": {"type": "Unconfined"}}),
            Ok(Some(Seccomp::Unconfined)),
        ),
        (
            serde_json::json!({}),
            serde_json::json!({"seccompProfile": {"type": "Localhost", "localhostProfile": "p/audit.json"}}),
            Ok(Some(Seccomp::Localhost("p/audit.json".into()))),
        ),
        (
            serde_json::json!({}),
            serde_json::json!({"seccompProfile": {"type": "Localhost", "localhostProfile": "../etc/x"}}),
            Err("localhostProfile must be set to a path below the seccomp directory".to_owned()),
        ),
        // Privileged containers run without a filter, whatever the profile.
        (
            serde_json::json!({"seccompProfile": {"type": "RuntimeDefault"}}),
            serde_json::json!({"privileged": true}),
            Ok(None),
        ),
    ];
    for (pod_sc, container_sc, want) in cases {
        let (p, c) = pod(pod_sc.clone(), container_sc.clone());
        assert_eq!(
            settings(&p, &c, "")
                .map(|s| s.seccomp)
                .map_err(|e| e.to_string()),
            want,
            "{pod_sc} {container_sc}"
        );
    }
}

#[test]
fn the_docker_body_carries_every_field() {
    let (p, mut c) = pod(
        serde_json::json!({"runAsUser": 1000, "fsGroup": 2000}),
        serde_json::json!({
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "seccompProfile": {"type": "RuntimeDefault"},
        }),
    );
    c.security_context
        .get_or_insert_with(Default::default)
        .capabilities = Some(Capabilities {
        add: Some(vec!["NET_BIND_SERVICE".into()]),
        drop: Some(vec!["ALL".into()]),
    });
    let mut body = ContainerCreateBody::default();
    apply(&mut body, &p, &c, "", Path::new("/nonexistent")).expect("apply");
    let host = body.host_config.expect("host config");
    assert_eq!(body.user.as_deref(), Some("1000"));
    assert_eq!(host.group_add, Some(vec!["2000".to_owned()]));
    assert_eq!(host.cap_add, Some(vec!["NET_BIND_SERVICE".to_owned()]));
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
    assert_eq!(host.readonly_rootfs, Some(true));
    assert_eq!(host.privileged, None);
    assert_eq!(
        host.security_opt,
        Some(vec!["no-new-privileges".to_owned()])
    );

    // Defaults: nothing added, and no seccomp filter (the kubelet's Unconfined).
    let (p, c) = pod(serde_json::json!({}), serde_json::json!({}));
    let mut body = ContainerCreateBody::default();
    apply(&mut body, &p, &c, "", Path::new("/nonexistent")).expect("apply");
    let host = body.host_config.expect("host config");
    assert_eq!(body.user, None);
    assert_eq!(host.cap_drop, None);
    assert_eq!(host.readonly_rootfs, None);
    assert_eq!(
        host.security_opt,
        Some(vec!["seccomp=unconfined".to_owned()])
    );
}

#[test]
fn a_localhost_profile_is_read_from_the_seccomp_directory() {
    let dir = std::env::temp_dir().join(format!("keelson-seccomp-{}", std::process::id()));
    std::fs::create_dir_all(seccomp_dir(&dir)).expect("mkdir");
    std::fs::write(
        seccomp_dir(&dir).join("deny.json"),
        r#"{"defaultAction":"SCMP_ACT_ERRNO"}"#,
    )
    .expect("write");
    let (p, c) = pod(
        serde_json::json!({"seccompProfile": {"type": "Localhost", "localhostProfile": "deny.json"}}),
        serde_json::json!({}),
    );
    let mut body = ContainerCreateBody::default();
    apply(&mut body, &p, &c, "", &dir).expect("apply");
    assert_eq!(
        body.host_config.and_then(|h| h.security_opt),
        Some(vec![
            r#"seccomp={"defaultAction":"SCMP_ACT_ERRNO"}"#.to_owned()
        ])
    );
    let (p, c) = pod(
        serde_json::json!({"seccompProfile": {"type": "Localhost", "localhostProfile": "gone.json"}}),
        serde_json::json!({}),
    );
    let error = apply(&mut ContainerCreateBody::default(), &p, &c, "", &dir).expect_err("missing");
    assert!(
        error.0.starts_with("failed to load seccomp profile"),
        "{}",
        error.0
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

fn sysctl_pod(sysctls: &[(&str, &str)], host_network: bool) -> Pod {
    Pod {
        metadata: Default::default(),
        spec: Some(PodSpec {
            host_network: Some(host_network),
            security_context: Some(PodSecurityContext {
                sysctls: Some(
                    sysctls
                        .iter()
                        .map(|(n, v)| Sysctl {
                            name: (*n).into(),
                            value: (*v).into(),
                        })
                        .collect(),
                ),
                ..PodSecurityContext::default()
            }),
            ..PodSpec::default()
        }),
        status: None,
    }
}

#[test]
fn sysctls_split_between_sandbox_and_containers_or_reject_the_pod() {
    let pod = sysctl_pod(
        &[
            ("kernel.shm_rmid_forced", "1"),
            ("net/ipv4/ip_unprivileged_port_start", "0"),
        ],
        false,
    );
    assert_eq!(rejection(&pod), None);
    assert_eq!(
        sandbox_sysctls(&pod),
        Some(HashMap::from([(
            "net.ipv4.ip_unprivileged_port_start".to_owned(),
            "0".to_owned()
        )]))
    );
    let c = Container {
        name: "app".into(),
        ..Container::default()
    };
    assert_eq!(
        settings(&pod, &c, "").expect("settings").sysctls,
        HashMap::from([("kernel.shm_rmid_forced".to_owned(), "1".to_owned())])
    );

    let cases = [
        (sysctl_pod(&[], false), None),
        (
            sysctl_pod(&[("kernel.msgmax", "1")], false),
            Some("forbidden sysctl: \"kernel.msgmax\" not allowlisted"),
        ),
        (
            sysctl_pod(&[("net.ipv4.ip_local_port_range", "1024 65000")], true),
            Some(
                "forbidden sysctl: \"net.ipv4.ip_local_port_range\" not allowed with host net enabled",
            ),
        ),
    ];
    for (pod, want) in cases {
        assert_eq!(rejection(&pod).as_deref(), want);
        let mut status = PodStatus::default();
        assert_eq!(reject_status(&pod, &mut status), want.is_some());
        if let Some(want) = want {
            assert_eq!(status.phase.as_deref(), Some("Failed"));
            assert_eq!(status.reason.as_deref(), Some("SysctlForbidden"));
            assert_eq!(status.message, Some(format!("Pod was rejected: {want}")));
            assert_eq!(sandbox_sysctls(&pod), None);
        }
    }
}

#[test]
fn sysctl_names_with_slashes_become_dotted() {
    assert_eq!(dotted("net/ipv4/tcp_syncookies"), "net.ipv4.tcp_syncookies");
    assert_eq!(
        dotted("net.ipv4.conf.eno2/100.rp_filter"),
        "net.ipv4.conf.eno2/100.rp_filter"
    );
    assert_eq!(
        dotted("net/ipv4/conf/eno2.100/rp_filter"),
        "net.ipv4.conf.eno2/100.rp_filter"
    );
}
