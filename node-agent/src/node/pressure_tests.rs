use super::*;

const MI: i64 = 1 << 20;
const GI: i64 = 1 << 30;

#[test]
fn eviction_thresholds_parse_as_the_kubelet_reads_them() {
    let defaults = parse_thresholds(DEFAULT_EVICTION_HARD).expect("defaults");
    assert_eq!(defaults["memory.available"], Amount::Absolute(100 * MI));
    assert_eq!(defaults["nodefs.available"], Amount::Percent(0.1));
    assert_eq!(defaults["imagefs.available"], Amount::Percent(0.15));
    assert_eq!(defaults["nodefs.inodesFree"], Amount::Percent(0.05));
    assert!(!defaults.contains_key("pid.available"));
    let cases = [
        (
            "pid.available<1000",
            Ok(vec![("pid.available", Amount::Absolute(1000))]),
        ),
        ("", Ok(vec![])),
        (
            "memory.available>1Gi",
            Err("invalid eviction threshold \"memory.available>1Gi\": want signal<value"),
        ),
        (
            "cpu.available<1",
            Err("unsupported eviction signal cpu.available"),
        ),
        (
            "nodefs.available<120%",
            Err("eviction percentage threshold nodefs.available must be >= 0% and <= 100%: 120%"),
        ),
        (
            "memory.available<lots",
            Err("invalid quantity \"lots\" for memory.available"),
        ),
        (
            "nodefs.available<ten%",
            Err("invalid percentage \"ten%\" for nodefs.available"),
        ),
    ];
    for (text, want) in cases {
        let want = want
            .map(|v| {
                v.into_iter()
                    .map(|(k, a)| (k.to_owned(), a))
                    .collect::<Thresholds>()
            })
            .map_err(str::to_owned);
        assert_eq!(
            parse_thresholds(text).map_err(|e| e.to_string()),
            want,
            "{text}"
        );
    }
}

#[test]
fn reservations_parse_cpu_in_millicores() {
    assert_eq!(
        parse_reserved("cpu=500m, memory=1Gi,ephemeral-storage=2Gi,pid=100")
            .map_err(|e| e.to_string()),
        Ok(BTreeMap::from([
            ("cpu".to_owned(), 500),
            ("memory".to_owned(), GI),
            ("ephemeral-storage".to_owned(), 2 * GI),
            ("pid".to_owned(), 100),
        ]))
    );
    assert_eq!(
        parse_reserved("gpu=1").map_err(|e| e.to_string()),
        Err("unsupported reserved resource gpu".to_owned())
    );
    assert_eq!(
        parse_reserved("memory").map_err(|e| e.to_string()),
        Err("invalid reservation \"memory\": want resource=quantity".to_owned())
    ); // The quantity is quoted as given (untrimmed); a negative one is refused after parsing.
    assert_eq!(
        parse_reserved("memory= 1x").map_err(|e| e.to_string()),
        Err("invalid quantity \" 1x\" for memory".to_owned())
    );
    assert_eq!(
        parse_reserved("cpu=-100m").map_err(|e| e.to_string()),
        Err("reserved cpu must not be negative".to_owned())
    );
}

fn capacity() -> BTreeMap<String, QuantityObject> {
    BTreeMap::from([
        ("cpu".to_owned(), QuantityObject("4".into())),
        ("memory".to_owned(), QuantityObject("8Gi".into())),
        (
            "ephemeral-storage".to_owned(),
            QuantityObject("100Gi".into()),
        ),
        ("pods".to_owned(), QuantityObject("110".into())),
    ])
}

#[test]
fn allocatable_subtracts_reservations_and_the_hard_threshold() {
    let get = |m: &BTreeMap<String, QuantityObject>, k: &str| m[k].0.clone();
    // Defaults only: memory minus 100Mi, storage minus 10%.
    let a = allocatable(&capacity(), &Reservations::default());
    assert_eq!(get(&a, "cpu"), "4");
    assert_eq!(
        get(&a, "memory"),
        format!("{}Ki", (8 * GI - 100 * MI) / 1024)
    );
    assert_eq!(
        get(&a, "ephemeral-storage"),
        format!("{}Ki", (100 * GI - 10 * GI) / 1024)
    );
    assert_eq!(get(&a, "pods"), "110");

    let r = Reservations {
        kube: parse_reserved("cpu=500m,memory=1Gi").expect("kube"),
        system: parse_reserved("cpu=250m,memory=512Mi,ephemeral-storage=10Gi").expect("system"),
        eviction_hard: parse_thresholds("memory.available<500Mi").expect("hard"),
    };
    let a = allocatable(&capacity(), &r);
    assert_eq!(get(&a, "cpu"), "3250m");
    assert_eq!(
        get(&a, "memory"),
        format!("{}Ki", (8 * GI - GI - 512 * MI - 500 * MI) / 1024)
    );
    assert_eq!(
        get(&a, "ephemeral-storage"),
        format!("{}Ki", 90 * GI / 1024)
    );

    // Never below zero.
    let r = Reservations {
        kube: parse_reserved("memory=64Gi").expect("kube"),
        ..Reservations::default()
    };
    assert_eq!(get(&allocatable(&capacity(), &r), "memory"), "0Ki");
}

#[test]
fn pressure_conditions_carry_the_kubelet_reasons() {
    let thresholds = parse_thresholds(&format!("{DEFAULT_EVICTION_HARD},pid.available<1000"))
        .expect("thresholds");
    let fine = Observations::from([
        ("memory.available".to_owned(), (4 * GI, 8 * GI)),
        ("nodefs.available".to_owned(), (50 * GI, 100 * GI)),
        ("imagefs.available".to_owned(), (50 * GI, 100 * GI)),
        ("pid.available".to_owned(), (30_000, 32_768)),
    ]);
    assert_eq!(
        conditions(&fine, &thresholds),
        [
            (
                "MemoryPressure",
                false,
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available"
            ),
            (
                "DiskPressure",
                false,
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure"
            ),
            (
                "PIDPressure",
                false,
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available"
            ),
        ]
    );
    let mut tight = fine.clone();
    tight.insert("memory.available".into(), (99 * MI, 8 * GI));
    tight.insert("imagefs.available".into(), (14 * GI, 100 * GI));
    tight.insert("pid.available".into(), (999, 32_768));
    assert_eq!(
        conditions(&tight, &thresholds),
        [
            (
                "MemoryPressure",
                true,
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available"
            ),
            (
                "DiskPressure",
                true,
                "KubeletHasDiskPressure",
                "kubelet has disk pressure"
            ),
            (
                "PIDPressure",
                true,
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available"
            ),
        ]
    );
    // Nothing observed: no pressure.
    assert!(
        conditions(&Observations::new(), &thresholds)
            .iter()
            .all(|c| !c.1)
    );
}

#[test]
fn signals_read_from_proc() {
    let meminfo = "MemTotal:       24684000 kB\nMemFree:  100 kB\nMemAvailable:   20368000 kB\n";
    assert_eq!(
        memory_from_meminfo(meminfo),
        Some((20_368_000 * 1024, 24_684_000 * 1024))
    );
    assert_eq!(memory_from_meminfo("MemTotal: 1 kB\n"), None);
    assert_eq!(pids_available(32_768, 500), (32_268, 32_768));
    assert_eq!(pids_available(100, 500), (0, 100));
}
