//! `keelson-control-plane snapshot save|restore` against the real binary: a snapshot taken
//! while ConfigMaps are created, updated and deleted in several namespaces restores into a
//! wiped data directory (SQLite) or a new etcd member (etcd) as exactly the objects the API
//! listed at the snapshot's revision (names, resourceVersions, data); Secrets stay encrypted in
//! the file; bad input is refused with one clear line; scheduled snapshots keep the N newest.

use std::{
    collections::BTreeMap,
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use k8s_openapi::{
    ByteString,
    api::core::v1::{ConfigMap, Namespace, Secret},
};
use kube::{
    Api,
    api::{DeleteParams, ListParams, ObjectMeta, PostParams, VersionMatch},
    config::{KubeConfigOptions, Kubeconfig},
};

const BINARY: &str = env!("CARGO_BIN_EXE_keelson-control-plane");
const NAMESPACES: usize = 3;
const WRITERS: usize = 3;
/// Names each writer cycles through (create, updates, delete, create again ...).
const NAMES_PER_WRITER: u64 = 15;
/// The most operations one writer runs.
const MAX_OPS: u64 = 4000;
const SECRET_TEXT: &str = "snapshot-sentinel-plaintext-7f3a";

/// A control plane process; killed on drop.
struct Plane {
    child: Child,
    dir: PathBuf,
}

impl Plane {
    /// Starts the binary on a free loopback port in `dir` and waits until it serves (20 s).
    fn start(dir: &Path, extra: &[&str]) -> Self {
        let kubeconfig = dir.join("admin.kubeconfig");
        let _ = std::fs::remove_file(&kubeconfig);
        std::fs::create_dir_all(dir).expect("create the data dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("control-plane.log"))
            .expect("log file");
        let child = Command::new(BINARY)
            .arg("--data-dir")
            .arg(dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start keelson-control-plane");
        let mut plane = Self {
            child,
            dir: dir.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = plane.child.try_wait().expect("poll") {
                panic!("the control plane exited ({status}):\n{}", plane.log());
            }
            if let Some(server) = plane.server()
                && TcpStream::connect(server.as_str()).is_ok()
            {
                return plane;
            }
            assert!(
                Instant::now() < deadline,
                "the control plane did not serve within 20 s:\n{}",
                plane.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn server(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.dir.join("admin.kubeconfig")).ok()?;
        text.lines()
            .find_map(|l| l.trim().strip_prefix("server: https://"))
            .map(str::to_owned)
    }

    async fn client(&self) -> kube::Client {
        let file = Kubeconfig::read_from(self.dir.join("admin.kubeconfig")).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
            .await
            .expect("a client config");
        kube::Client::try_from(config).expect("a client")
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("control-plane.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- control plane log ---\n{}", self.log());
        }
        self.stop();
    }
}

/// Runs `keelson-control-plane ARGS` to completion (60 s at most).
fn cli(args: &[&str]) -> Output {
    let mut child = Command::new(BINARY)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run keelson-control-plane");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("poll").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("keelson-control-plane {args:?} ran for more than 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn cli_ok(args: &[&str]) -> String {
    let output = cli(args);
    assert!(
        output.status.success(),
        "keelson-control-plane {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The stderr of a command that must fail (exit 1, one line naming the problem).
fn cli_err(args: &[&str]) -> String {
    let output = cli(args);
    assert!(
        !output.status.success(),
        "keelson-control-plane {args:?} should fail; stdout: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).trim().to_owned()
}

fn rv(meta: &ObjectMeta) -> u64 {
    meta.resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .expect("a numeric resourceVersion")
}

fn config_map(name: &str, version: u64, resource_version: Option<String>) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            resource_version,
            labels: Some([("test".to_owned(), "snapshot".to_owned())].into()),
            ..ObjectMeta::default()
        },
        data: Some([("version".to_owned(), format!("{name}@{version}"))].into()),
        ..ConfigMap::default()
    }
}

/// One writer: cycles through its names in namespace `snap-{id % NAMESPACES}`, creating,
/// replacing and deleting, until `stop` or `MAX_OPS`. Every write must succeed (each name has
/// one writer). Counts acknowledged writes in `acked`.
async fn writer(client: kube::Client, id: usize, stop: Arc<AtomicBool>, acked: Arc<AtomicU64>) {
    let api = Api::<ConfigMap>::namespaced(client, &format!("snap-{}", id % NAMESPACES));
    let mut live: BTreeMap<String, String> = BTreeMap::new();
    for op in 0..MAX_OPS {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let name = format!("w{id}-{}", op % NAMES_PER_WRITER);
        match live.get(&name).cloned() {
            None => {
                let made = api
                    .create(&PostParams::default(), &config_map(&name, op, None))
                    .await
                    .unwrap_or_else(|e| panic!("create {name}: {e}"));
                live.insert(name, made.metadata.resource_version.expect("rv"));
            }
            Some(_) if op % 4 == 3 => {
                api.delete(&name, &DeleteParams::default())
                    .await
                    .unwrap_or_else(|e| panic!("delete {name}: {e}"));
                live.remove(&name);
            }
            Some(current) => {
                let made = api
                    .replace(
                        &name,
                        &PostParams::default(),
                        &config_map(&name, op, Some(current)),
                    )
                    .await
                    .unwrap_or_else(|e| panic!("replace {name}: {e}"));
                live.insert(name, made.metadata.resource_version.expect("rv"));
            }
        }
        acked.fetch_add(1, Ordering::Relaxed);
    }
}

/// `namespace/name` -> (resourceVersion, data) of the test's ConfigMaps, now or at exactly
/// `revision`.
async fn object_set(
    client: &kube::Client,
    revision: Option<u64>,
) -> BTreeMap<String, (u64, BTreeMap<String, String>)> {
    let mut params = ListParams::default().labels("test=snapshot");
    if let Some(revision) = revision {
        params = params
            .at(&revision.to_string())
            .matching(VersionMatch::Exact);
    }
    let listed = Api::<ConfigMap>::all(client.clone())
        .list(&params)
        .await
        .unwrap_or_else(|e| panic!("list ConfigMaps at {revision:?}: {e}"));
    listed
        .items
        .into_iter()
        .map(|cm| {
            let key = format!(
                "{}/{}",
                cm.metadata.namespace.clone().expect("namespace"),
                cm.metadata.name.clone().expect("name")
            );
            (key, (rv(&cm.metadata), cm.data.unwrap_or_default()))
        })
        .collect()
}

/// Namespaces and a Secret whose plaintext must not appear in a snapshot.
async fn prepare(client: &kube::Client) {
    for i in 0..NAMESPACES {
        Api::<Namespace>::all(client.clone())
            .create(
                &PostParams::default(),
                &Namespace {
                    metadata: ObjectMeta {
                        name: Some(format!("snap-{i}")),
                        ..ObjectMeta::default()
                    },
                    ..Namespace::default()
                },
            )
            .await
            .expect("create a namespace");
    }
    Api::<Secret>::namespaced(client.clone(), "snap-0")
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some("sentinel".into()),
                    ..ObjectMeta::default()
                },
                data: Some([("text".to_owned(), ByteString(SECRET_TEXT.into()))].into()),
                ..Secret::default()
            },
        )
        .await
        .expect("create the Secret");
}

async fn secret_text(client: &kube::Client) -> String {
    let secret = Api::<Secret>::namespaced(client.clone(), "snap-0")
        .get("sentinel")
        .await
        .expect("read the Secret");
    String::from_utf8(secret.data.expect("data")["text"].0.clone()).expect("UTF-8")
}

/// Runs the write load, calls `save` once at least 150 writes are acknowledged, and stops the
/// load once 150 more are acknowledged after the save returned: the save ran mid-load.
/// Returns what `save` returned.
async fn save_under_load<T: Send + 'static>(
    client: &kube::Client,
    save: impl FnOnce() -> T + Send + 'static,
) -> T {
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|id| {
            tokio::spawn(writer(
                client.clone(),
                id,
                Arc::clone(&stop),
                Arc::clone(&acked),
            ))
        })
        .collect();
    let wait_for = |count: u64| {
        let acked = Arc::clone(&acked);
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while acked.load(Ordering::Relaxed) < count {
                assert!(
                    Instant::now() < deadline,
                    "fewer than {count} writes in 30 s"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    wait_for(150).await;
    let saved = tokio::task::spawn_blocking(save).await.expect("save");
    let after_save = acked.load(Ordering::Relaxed);
    wait_for(after_save + 150).await;
    stop.store(true, Ordering::Relaxed);
    for task in writers {
        task.await.expect("a writer failed");
    }
    eprintln!(
        "{} writes acknowledged in all, {after_save} when the save returned",
        acked.load(Ordering::Relaxed)
    );
    saved
}

/// Removes everything in the data directory but `pki/` (the CA and the encryption key).
fn wipe_but_pki(dir: &Path) {
    for entry in std::fs::read_dir(dir).expect("read the data dir") {
        let entry = entry.expect("an entry");
        if entry.file_name() == "pki" {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).expect("remove a directory");
        } else {
            std::fs::remove_file(&path).expect("remove a file");
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The snapshot file holds the Secret as ciphertext only.
fn assert_secret_encrypted(file: &Path) {
    use base64::Engine as _;
    let bytes = std::fs::read(file).expect("read the snapshot");
    let encoded = base64::engine::general_purpose::STANDARD.encode(SECRET_TEXT);
    assert!(
        !contains(&bytes, SECRET_TEXT.as_bytes()) && !contains(&bytes, encoded.as_bytes()),
        "the Secret's plaintext is in the snapshot {}",
        file.display()
    );
}

/// The restored cluster lists what was listed at the snapshot's revision, reads the Secret,
/// and writes above that revision.
async fn assert_restored(
    client: &kube::Client,
    expected: &BTreeMap<String, (u64, BTreeMap<String, String>)>,
    revision: u64,
) {
    let restored = object_set(client, None).await;
    let (missing, extra): (Vec<_>, Vec<_>) = (
        expected
            .keys()
            .filter(|k| !restored.contains_key(*k))
            .collect(),
        restored
            .keys()
            .filter(|k| !expected.contains_key(*k))
            .collect(),
    );
    assert!(
        missing.is_empty() && extra.is_empty(),
        "restored object set differs: missing {missing:?}, extra {extra:?}"
    );
    for (key, want) in expected {
        assert_eq!(&restored[key], want, "{key} differs after the restore");
    }
    assert_eq!(secret_text(client).await, SECRET_TEXT);
    let after = Api::<ConfigMap>::namespaced(client.clone(), "snap-0")
        .create(
            &PostParams::default(),
            &config_map("after-restore", 0, None),
        )
        .await
        .expect("write after the restore");
    assert!(
        rv(&after.metadata) > revision,
        "a write after the restore got rv {} <= the snapshot's {revision}",
        rv(&after.metadata)
    );
}

fn revision_in(stdout: &str) -> u64 {
    stdout
        .split_once("revision ")
        .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no revision in {stdout:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_snapshot_under_writes_restores_the_listed_objects() {
    let root = tempfile::tempdir().expect("temp dir");
    let data = root.path().join("data");
    let file = root.path().join("backup").join("state.snapshot");
    let mut plane = Plane::start(&data, &[]);
    let client = plane.client().await;
    prepare(&client).await;
    let args: Vec<String> = vec![
        "--data-dir".into(),
        data.display().to_string(),
        "snapshot".into(),
        "save".into(),
        file.display().to_string(),
    ];
    let stdout = save_under_load(&client, move || {
        cli_ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await;
    let revision = revision_in(&stdout);
    let expected = object_set(&client, Some(revision)).await;
    assert!(
        expected.len() > 5,
        "only {} objects at the snapshot",
        expected.len()
    );
    assert_ne!(
        expected,
        object_set(&client, None).await,
        "the load did not go on after the snapshot"
    );
    assert_secret_encrypted(&file);
    plane.stop();

    wipe_but_pki(&data);
    let data_arg = data.display().to_string();
    let file_arg = file.display().to_string();
    let restored = cli_ok(&["--data-dir", &data_arg, "snapshot", "restore", &file_arg]);
    assert_eq!(revision_in(&restored), revision, "{restored}");
    // A second restore would replace what is there now: refused unless --force.
    let refused = cli_err(&["--data-dir", &data_arg, "snapshot", "restore", &file_arg]);
    assert!(refused.contains("already holds a store"), "{refused}");
    let plane = Plane::start(&data, &[]);
    assert_restored(&plane.client().await, &expected, revision).await;
}

/// A free loopback port (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// An etcd member on loopback; killed on drop.
struct Etcd {
    child: Child,
    client_url: String,
}

impl Etcd {
    /// Starts etcd `name` on `data_dir` (new or restored) and waits until it answers (20 s).
    fn start(data_dir: &Path, name: &str, peer_url: &str) -> Self {
        let client_url = format!("http://127.0.0.1:{}", free_port());
        let log = std::fs::File::create(data_dir.with_extension("log")).expect("etcd log");
        let child = Command::new("etcd")
            .arg(format!("--name={name}"))
            .arg(format!("--data-dir={}", data_dir.display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster={name}={peer_url}"))
            .arg("--log-level=warn")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run etcd ({e}): install it with apt-get install etcd-server")
            });
        let etcd = Self { child, client_url };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let health = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &etcd.client_url, "endpoint", "health"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("run etcdctl (apt-get install etcd-client)");
            if health.success() {
                return etcd;
            }
            assert!(Instant::now() < deadline, "etcd did not answer within 20 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// etcd's own tool reads the snapshot: its revision (`etcdctl snapshot status`).
fn etcd_snapshot_revision(file: &Path) -> u64 {
    let output = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg("snapshot")
        .arg("status")
        .arg(file)
        .args(["-w", "json"])
        .output()
        .expect("run etcdctl (apt-get install etcd-client)");
    assert!(
        output.status.success(),
        "etcdctl snapshot status: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    status["revision"].as_u64().expect("a revision")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_snapshot_under_writes_restores_the_listed_objects() {
    let root = tempfile::tempdir().expect("temp dir");
    let data = root.path().join("data");
    let file = root.path().join("backup").join("etcd.snapshot");
    std::fs::create_dir_all(root.path().join("etcd")).expect("etcd dir");
    let first_peer = format!("http://127.0.0.1:{}", free_port());
    let etcd = Etcd::start(
        &root.path().join("etcd").join("first"),
        "first",
        &first_peer,
    );
    let endpoint = etcd.client_url.clone();
    let store_args = ["--store", "etcd", "--etcd-endpoints", &endpoint];
    let mut plane = Plane::start(&data, &store_args);
    let client = plane.client().await;
    prepare(&client).await;
    let args: Vec<String> = ["--data-dir", &data.display().to_string()]
        .iter()
        .chain(store_args.iter())
        .map(ToString::to_string)
        .chain(["snapshot".into(), "save".into(), file.display().to_string()])
        .collect();
    save_under_load(&client, move || {
        cli_ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await;
    let revision = etcd_snapshot_revision(&file);
    let expected = object_set(&client, Some(revision)).await;
    assert!(
        expected.len() > 5,
        "only {} objects at the snapshot",
        expected.len()
    );
    assert_secret_encrypted(&file);
    plane.stop();
    drop(etcd);

    // etcd's offline restore: a new member data directory.
    let member_dir = root.path().join("etcd").join("restored");
    let peer = format!("http://127.0.0.1:{}", free_port());
    let (data_arg, file_arg, member_arg) = (
        data.display().to_string(),
        file.display().to_string(),
        member_dir.display().to_string(),
    );
    let restore = [
        "--data-dir",
        &data_arg,
        "--store",
        "etcd",
        "snapshot",
        "restore",
        &file_arg,
        "--etcd-data-dir",
        &member_arg,
        "--etcd-name",
        "restored",
        "--etcd-peer-url",
        &peer,
    ];
    cli_ok(&restore);
    let refused = cli_err(&restore);
    assert!(refused.contains("already holds a store"), "{refused}");
    let etcd = Etcd::start(&member_dir, "restored", &peer);
    let plane = Plane::start(
        &data,
        &["--store", "etcd", "--etcd-endpoints", &etcd.client_url],
    );
    assert_restored(&plane.client().await, &expected, revision).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_scheduled_snapshots_keep_the_newest() {
    let root = tempfile::tempdir().expect("temp dir");
    let data = root.path().join("data");
    let dir = data.join("snapshots");
    std::fs::create_dir_all(&dir).expect("snapshot dir");
    let by_hand = dir.join("by-hand.snapshot");
    std::fs::write(&by_hand, b"kept").expect("write");
    let plane = Plane::start(
        &data,
        &[
            "--snapshot-schedule-cron",
            "@every 1s",
            "--snapshot-retention",
            "2",
        ],
    );
    let data_arg = data.display().to_string();

    // A live data directory is never restored over, even with --force.
    let live = root.path().join("live.snapshot");
    let live_arg = live.display().to_string();
    cli_ok(&["--data-dir", &data_arg, "snapshot", "save", &live_arg]);
    let refused = cli_err(&[
        "--data-dir",
        &data_arg,
        "snapshot",
        "restore",
        "--force",
        &live_arg,
    ]);
    assert!(
        refused.contains("in use by a running control plane"),
        "{refused}"
    );

    // Foreign and damaged files.
    let text = root.path().join("notes.txt");
    std::fs::write(&text, "not a snapshot\n".repeat(400)).expect("write");
    let target = root.path().join("elsewhere");
    let target_arg = target.display().to_string();
    let text_arg = text.display().to_string();
    let refused = cli_err(&["--data-dir", &target_arg, "snapshot", "restore", &text_arg]);
    assert!(
        refused.contains("is not a usable keelson SQLite snapshot: not a SQLite database"),
        "{refused}"
    );
    assert_eq!(refused.lines().count(), 1, "one line: {refused}");
    let refused = cli_err(&[
        "--data-dir",
        &target_arg,
        "--store",
        "etcd",
        "snapshot",
        "restore",
        &live_arg,
        "--etcd-data-dir",
        &target.join("member").display().to_string(),
    ]);
    assert!(
        refused.contains("is not a usable etcd snapshot"),
        "{refused}"
    );
    assert!(!target.join("state.db").exists() && !target.join("member").exists());
    let mut truncated = std::fs::read(&live).expect("read");
    truncated.truncate(truncated.len() / 2);
    let half = root.path().join("half.snapshot");
    std::fs::write(&half, &truncated).expect("write");
    let refused = cli_err(&[
        "--data-dir",
        &target_arg,
        "snapshot",
        "restore",
        &half.display().to_string(),
    ]);
    assert!(
        refused.contains("is not a usable keelson SQLite snapshot"),
        "{refused}"
    );
    let refused = cli_err(&[
        "--data-dir",
        &target_arg,
        "--listen",
        "127.0.0.1:0",
        "--snapshot-schedule-cron",
        "61 * * * *",
    ]);
    assert!(refused.contains("--snapshot-schedule-cron"), "{refused}");

    // Retention: after at least four scheduled snapshots, the two newest remain.
    let scheduled = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .expect("list")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("keelson-sqlite-") && n.ends_with(".snapshot"))
            .collect();
        names.sort();
        names
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 4 {
        seen.extend(scheduled());
        assert!(
            Instant::now() < deadline,
            "only {seen:?} scheduled snapshots in 20 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let kept = scheduled();
    assert_eq!(kept.len(), 2, "kept {kept:?} of {seen:?}");
    let newest: Vec<&String> = seen.iter().rev().take(3).collect();
    assert!(
        kept.iter().all(|k| newest.contains(&k)),
        "kept {kept:?}, not the newest of {seen:?}"
    );
    assert!(
        by_hand.is_file(),
        "retention deleted a snapshot saved by hand"
    );
    for name in &kept {
        keelson_store::snapshot::sqlite::inspect(&dir.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let listed = cli_ok(&["--data-dir", &data_arg, "snapshot", "ls"]);
    assert!(listed.contains("by-hand.snapshot"), "{listed}");
    drop(plane);
}
