use serde_json::json;

use super::*;
use crate::node::pressure::parse_thresholds;

const MI: i64 = 1 << 20;

/// A pod named `name` with the given priority and containers `(name, memory request)`.
fn pod(name: &str, priority: i32, containers: &[(&str, Option<&str>)]) -> Pod {
    let containers: Vec<serde_json::Value> = containers
        .iter()
        .map(|(c, request)| match request {
            Some(r) => json!({"name": c, "resources": {"requests": {"memory": r}}}),
            None => json!({"name": c}),
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "default", "uid": name},
        "spec": {"priority": priority, "containers": containers},
    }))
    .expect("pod")
}

fn memory(per_container: &[(&str, i64)]) -> PodUsage {
    PodUsage {
        memory: per_container
            .iter()
            .map(|(c, v)| ((*c).to_owned(), *v))
            .collect(),
        ..PodUsage::default()
    }
}

fn names(ranked: &[(&Pod, Option<&PodUsage>)]) -> Vec<String> {
    ranked
        .iter()
        .map(|(p, _)| p.metadata.name.clone().unwrap_or_default())
        .collect()
}

#[test]
fn memory_pressure_ranks_as_the_kubelet() {
    // Over its request beats priority; then lower priority; then more above the request.
    let over_high = pod("over-high", 100, &[("app", Some("10Mi"))]);
    let under_low = pod("under-low", 0, &[("app", Some("100Mi"))]);
    let over_small = pod("over-small", 0, &[("app", Some("10Mi"))]);
    let over_big = pod("over-big", 0, &[("app", None)]);
    let no_stats = pod("no-stats", 1000, &[("app", None)]);
    let usage = [
        memory(&[("app", 50 * MI)]),
        memory(&[("app", 50 * MI)]),
        memory(&[("app", 20 * MI)]),
        memory(&[("app", 30 * MI)]),
    ];
    let mut ranked = vec![
        (&under_low, Some(&usage[1])),
        (&over_high, Some(&usage[0])),
        (&over_small, Some(&usage[2])),
        (&no_stats, None),
        (&over_big, Some(&usage[3])),
    ];
    rank(Resource::Memory, &mut ranked);
    assert_eq!(
        names(&ranked),
        [
            "no-stats",
            "over-big",
            "over-small",
            "over-high",
            "under-low"
        ]
    );
}

#[test]
fn pid_pressure_ranks_by_priority_then_processes_and_disk_by_usage() {
    let low_few = pod("low-few", 0, &[("app", None)]);
    let low_many = pod("low-many", 0, &[("app", None)]);
    let high_most = pod("high-most", 10, &[("app", None)]);
    let procs = |n| PodUsage {
        processes: n,
        ..PodUsage::default()
    };
    let (a, b, c) = (procs(2), procs(40), procs(400));
    let mut ranked = vec![
        (&high_most, Some(&c)),
        (&low_few, Some(&a)),
        (&low_many, Some(&b)),
    ];
    rank(Resource::Pids, &mut ranked);
    assert_eq!(names(&ranked), ["low-many", "low-few", "high-most"]);

    let disk = |volume: i64, rootfs: i64| PodUsage {
        volumes: [("scratch".to_owned(), volume)].into(),
        rootfs: [("app".to_owned(), rootfs)].into(),
        ..PodUsage::default()
    };
    let (small, large) = (disk(MI, MI), disk(30 * MI, MI));
    let mut ranked = vec![(&low_few, Some(&small)), (&low_many, Some(&large))];
    rank(Resource::EphemeralStorage, &mut ranked);
    assert_eq!(names(&ranked), ["low-many", "low-few"]);
}

#[test]
fn thresholds_met_put_memory_first_and_hold_until_the_minimum_is_reclaimed() {
    let hard = parse_thresholds("pid.available<1000,memory.available<100Mi,nodefs.available<10%")
        .expect("thresholds");
    let reclaim = parse_minimum_reclaim("memory.available=50Mi").expect("reclaim");
    let observed: Observations = [
        ("pid.available".to_owned(), (500, 4_000_000)),
        ("memory.available".to_owned(), (90 * MI, 1000 * MI)),
        ("nodefs.available".to_owned(), (50 * MI, 100 * MI)),
    ]
    .into();
    let none = BTreeSet::new();
    assert_eq!(
        thresholds_met(&hard, &reclaim, &observed, &none),
        ["memory.available", "pid.available"]
    );
    // 120Mi available: above the threshold, but within the minimum reclaim of a threshold
    // met last time; a fresh look does not count it.
    let recovering: Observations = [("memory.available".to_owned(), (120 * MI, 1000 * MI))].into();
    let before: BTreeSet<String> = ["memory.available".to_owned()].into();
    assert_eq!(
        thresholds_met(&hard, &reclaim, &recovering, &before),
        ["memory.available"]
    );
    assert!(thresholds_met(&hard, &reclaim, &recovering, &none).is_empty());
    let recovered: Observations = [("memory.available".to_owned(), (151 * MI, 1000 * MI))].into();
    assert!(thresholds_met(&hard, &reclaim, &recovered, &before).is_empty());
}

#[test]
fn every_threshold_signal_starves_a_resource_and_takes_a_minimum_reclaim() {
    for signal in crate::node::pressure::SIGNALS {
        assert!(Resource::of_signal(signal).is_some(), "{signal}");
        let reclaim = parse_minimum_reclaim(&format!("{signal}=1%")).expect(signal);
        assert_eq!(
            reclaim.get(*signal),
            Some(&Amount::Percent(0.01)),
            "{signal}"
        );
    }
}

#[test]
fn minimum_reclaim_parses_as_the_kubelet_reads_it() {
    assert_eq!(
        parse_minimum_reclaim("memory.available=0Mi, nodefs.available=5%")
            .map_err(|e| e.to_string()),
        Ok([
            ("memory.available".to_owned(), Amount::Absolute(0)),
            ("nodefs.available".to_owned(), Amount::Percent(0.05)),
        ]
        .into())
    );
    assert_eq!(
        parse_minimum_reclaim("cpu.available=1").map_err(|e| e.to_string()),
        Err("unsupported eviction signal cpu.available".into())
    );
    assert_eq!(
        parse_minimum_reclaim("nodefs.available=0%").map_err(|e| e.to_string()),
        Err("eviction percentage minimum reclaim nodefs.available must be positive: 0%".into())
    );
    assert_eq!(
        parse_minimum_reclaim("memory.available<1Mi").map_err(|e| e.to_string()),
        Err("invalid minimum reclaim \"memory.available<1Mi\": want signal=value".into())
    );
    assert_eq!(
        parse_minimum_reclaim("memory.available=-1Mi").map_err(|e| e.to_string()),
        Err("negative eviction minimum reclaim specified for memory.available".into())
    );
}

#[test]
fn eviction_messages_use_the_kubelets_words() {
    let p = pod(
        "web",
        0,
        &[("app", Some("64Mi")), ("sidecar", Some("100Mi"))],
    );
    let usage = memory(&[("app", 300 * MI), ("sidecar", 10 * MI)]);
    let threshold = Amount::Absolute(100 * MI);
    assert_eq!(
        node_low_message(
            "memory.available",
            &threshold,
            (51_000 * 1024, 1 << 34),
            &p,
            Some(&usage)
        ),
        "The node was low on resource: memory. Threshold quantity: 100Mi, available: 51000Ki. \
         Container app was using 300Mi, request is 64Mi, has larger consumption of memory. "
    );
    // A container without a request counts from zero; odd byte counts stay plain numbers.
    let bare = pod("bare", 0, &[("app", None)]);
    assert_eq!(
        node_low_message(
            "memory.available",
            &threshold,
            (1_000_000, 1 << 34),
            &bare,
            Some(&memory(&[("app", 1000)]))
        ),
        "The node was low on resource: memory. Threshold quantity: 100Mi, available: 1000000. \
         Container app was using 1k, request is 0, has larger consumption of memory. "
    );
    // Counts are decimal; percentages are of the capacity; no stats: no container part.
    assert_eq!(
        node_low_message(
            "pid.available",
            &Amount::Percent(0.5),
            (1500, 4000),
            &bare,
            None
        ),
        "The node was low on resource: pids. Threshold quantity: 2k, available: 1500. "
    );
}

fn storage_pod(spec: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "p", "namespace": "default", "uid": "u"},
        "spec": spec,
    }))
    .expect("pod")
}

#[test]
fn local_storage_limits_evict_with_the_kubelets_message() {
    let empty_dir = storage_pod(json!({
        "containers": [{"name": "app"}],
        "volumes": [
            {"name": "cache", "emptyDir": {}},
            {"name": "scratch", "emptyDir": {"sizeLimit": "10Mi"}},
        ],
    }));
    let volumes = |cache: i64, scratch: i64| PodUsage {
        volumes: [("cache".to_owned(), cache), ("scratch".to_owned(), scratch)].into(),
        ..PodUsage::default()
    };
    let limited = storage_pod(json!({
        "containers": [
            {"name": "a", "resources": {"limits": {"ephemeral-storage": "20Mi"}}},
            {"name": "b", "resources": {"limits": {"ephemeral-storage": "1Gi"}}},
        ],
        "volumes": [{"name": "scratch", "emptyDir": {}}],
    }));
    let rootfs = |a: i64, b: i64, scratch: i64| PodUsage {
        rootfs: [("a".to_owned(), a), ("b".to_owned(), b)].into(),
        volumes: [("scratch".to_owned(), scratch)].into(),
        ..PodUsage::default()
    };
    let cases = [
        (&empty_dir, volumes(500 * MI, 10 * MI), None),
        (
            &empty_dir,
            volumes(0, 30 * MI),
            Some("Usage of EmptyDir volume \"scratch\" exceeds the limit \"10Mi\". "),
        ),
        (&limited, rootfs(MI, MI, MI), None),
        (
            &limited,
            rootfs(21 * MI, MI, 0),
            Some("Container a exceeded its local ephemeral storage limit \"20Mi\". "),
        ),
        (
            &limited,
            rootfs(MI, MI, 1100 * MI),
            Some(
                "Pod ephemeral local storage usage exceeds the total limit of containers 1044Mi. ",
            ),
        ),
    ];
    for (pod, usage, want) in cases {
        assert_eq!(
            local_storage_violation(pod, &usage).as_deref(),
            want,
            "{usage:?}"
        );
    }
    assert!(has_local_limits(&empty_dir));
    assert!(has_local_limits(&limited));
    assert!(!has_local_limits(&pod("plain", 0, &[("app", None)])));
}

#[test]
fn critical_pods_are_static_mirror_or_system_critical() {
    let with = |meta: serde_json::Value, priority: i32| -> Pod {
        serde_json::from_value(
            json!({"metadata": meta, "spec": {"priority": priority, "containers": []}}),
        )
        .expect("pod")
    };
    let cases = [
        (with(json!({"name": "a"}), 0), false),
        (with(json!({"name": "a"}), 1_999_999_999), false),
        (with(json!({"name": "a"}), 2_000_000_000), true),
        (with(json!({"name": "a"}), 2_000_001_000), true),
        (
            with(
                json!({"name": "a", "annotations": {"kubernetes.io/config.mirror": "x"}}),
                0,
            ),
            true,
        ),
        (
            with(
                json!({"name": "a", "annotations": {"kubernetes.io/config.source": "file"}}),
                0,
            ),
            true,
        ),
        (
            with(
                json!({"name": "a", "annotations": {"kubernetes.io/config.source": "api"}}),
                0,
            ),
            false,
        ),
    ];
    for (pod, want) in cases {
        assert_eq!(is_critical(&pod), want, "{:?}", pod.metadata);
    }
}

#[test]
fn pod_requests_count_sidecars_and_the_largest_init_container() {
    let p: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p"},
        "spec": {
            "initContainers": [
                {"name": "setup", "resources": {"requests": {"memory": "300Mi"}}},
                {"name": "proxy", "restartPolicy": "Always", "resources": {"requests": {"memory": "50Mi"}}},
            ],
            "containers": [
                {"name": "a", "resources": {"requests": {"memory": "100Mi"}}},
                {"name": "b", "resources": {"limits": {"memory": "20Mi"}}},
            ],
            "overhead": {"memory": "1Mi"},
        },
    }))
    .expect("pod");
    // max(100 + 20 + 50, 300) + 1.
    assert_eq!(pod_request(&p, "memory"), 301 * MI);
    assert_eq!(pod_request(&p, "ephemeral-storage"), 0);
}
