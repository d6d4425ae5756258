//! End to end: Secrets are encrypted at rest by the real `keelson-control-plane` binary (its
//! default `--secrets-encryption`), in the SQLite file and in an etcd reached over TLS, while
//! kubectl reads them back in the clear. And a control plane without etcd client certificates
//! cannot use an etcd that requires them.

use std::{
    os::unix::fs::PermissionsExt as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use base64::Engine as _;
use keelson_tests::{
    cluster::{ControlPlane, Kubectl, control_plane_binary},
    etcd::EtcdCluster,
};

const PREFIX: &[u8] = b"k8s:enc:aesgcm:v1:";

/// A value no other object holds, so finding it anywhere means the Secret leaked.
fn unique_value() -> String {
    format!(
        "hunter-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    )
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Creates Secret `default/db` with `password=<value>` and checks kubectl reads it back.
fn create_and_read_back(kubectl: &Kubectl<'_>, value: &str) {
    kubectl.run(&[
        "create",
        "secret",
        "generic",
        "db",
        &format!("--from-literal=password={value}"),
    ]);
    let read = kubectl.run(&["get", "secret", "db", "-o", "jsonpath={.data.password}"]);
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(read.trim())
        .unwrap_or_else(|e| panic!("kubectl printed {read:?}, not base64: {e}"));
    assert_eq!(String::from_utf8_lossy(&decoded), value);
}

#[test]
fn secrets_are_encrypted_in_the_sqlite_file() {
    let mut plane = ControlPlane::start();
    let key_file = plane.data_dir().join("pki/encryption-config.yaml");
    let mode = std::fs::metadata(&key_file)
        .unwrap_or_else(|e| panic!("{} was not written: {e}", key_file.display()))
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{}", key_file.display());
    let config = std::fs::read_to_string(&key_file).expect("read the key file");
    assert!(
        config.contains("kind: EncryptionConfiguration") && config.contains("- aesgcm:"),
        "{config}"
    );

    let value = unique_value();
    let kubectl = Kubectl::new(33, &plane);
    create_and_read_back(&kubectl, &value);
    let encoded = base64::engine::general_purpose::STANDARD.encode(&value);

    // The row, read with SQLite itself: the newest value of the key is ciphertext.
    let db = plane.data_dir().join("state.db");
    let connection =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", db.display()));
    let stored: Vec<u8> = connection
        .query_row(
            "SELECT value FROM log WHERE name = CAST(?1 AS BLOB) ORDER BY id DESC LIMIT 1",
            ["/registry/secrets/default/db"],
            |row| row.get(0),
        )
        .expect("the Secret's row");
    assert!(
        stored.starts_with(PREFIX),
        "{}",
        String::from_utf8_lossy(&stored)
    );
    drop(connection);
    // Nowhere in the files either: the database, its write-ahead log.
    for file in ["state.db", "state.db-wal"] {
        let path = plane.data_dir().join(file);
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        assert!(
            !contains(&bytes, value.as_bytes()),
            "{file} holds the value"
        );
        assert!(
            !contains(&bytes, encoded.as_bytes()),
            "{file} holds its base64"
        );
    }

    // The key is kept: after a restart the Secret still reads.
    plane.restart();
    let read =
        Kubectl::new(33, &plane).run(&["get", "secret", "db", "-o", "jsonpath={.data.password}"]);
    assert_eq!(read.trim(), encoded);

    // A configuration without the Secret's key: reading it is a 500 naming the key.
    let old_name = config
        .lines()
        .find_map(|l| l.trim().strip_prefix("- name: "))
        .expect("the generated key's name")
        .to_owned();
    let old_key = format!(
        "            - name: {old_name}\n              secret: {}\n",
        config
            .lines()
            .find_map(|l| l.trim().strip_prefix("secret: "))
            .expect("the generated key")
    );
    let new_key = "            - name: rotated\n              secret: \
                   c2Vjb25kIGtleSBvZiAzMiBieXRlcyBmb3IgdGVzdHM=\n";
    let with_keys = |keys: &str| {
        format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  \
             - resources: [secrets]\n    providers:\n      - aesgcm:\n          keys:\n{keys}"
        )
    };
    std::fs::write(&key_file, with_keys(new_key)).expect("write the key file");
    plane.restart();
    let error = Kubectl::new(33, &plane).fail(&["get", "secret", "db"]);
    assert_eq!(
        error.trim(),
        format!(
            "Error from server (InternalError): Internal error occurred: unable to transform key \
             \"/registry/secrets/default/db\": no aesgcm key named \"{old_name}\" in the \
             encryption configuration"
        )
    );
    // Rotation: the new key first, the old one still there; a write re-encrypts.
    std::fs::write(&key_file, with_keys(&format!("{new_key}{old_key}"))).expect("write");
    plane.restart();
    let kubectl = Kubectl::new(33, &plane);
    kubectl.run(&["label", "secret", "db", "rotated=yes"]);
    let read = kubectl.run(&["get", "secret", "db", "-o", "jsonpath={.data.password}"]);
    assert_eq!(read.trim(), encoded);
    let connection =
        rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the database");
    let stored: Vec<u8> = connection
        .query_row(
            "SELECT value FROM log WHERE name = CAST(?1 AS BLOB) ORDER BY id DESC LIMIT 1",
            ["/registry/secrets/default/db"],
            |row| row.get(0),
        )
        .expect("the Secret's row");
    assert!(
        stored.starts_with(b"k8s:enc:aesgcm:v1:rotated:"),
        "{}",
        String::from_utf8_lossy(&stored)
    );
}

/// Runs the control plane on an etcd it cannot use; returns its stderr after it exits (at most
/// 30 s).
fn fails_to_start(etcd: &EtcdCluster, tls_args: &[String]) -> String {
    let dir = tempfile::tempdir().expect("data dir");
    let port = keelson_testbed::free_loopback_port().expect("a free port");
    let mut child = Command::new(control_plane_binary())
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen", &format!("127.0.0.1:{port}"), "--store", "etcd"])
        .args(["--etcd-endpoints", &etcd.endpoints_arg(0)])
        .args(tls_args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start keelson-control-plane");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll the control plane") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the control plane still runs after 30 s on an etcd it cannot use");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = child.wait_with_output().expect("its stderr");
    assert!(!status.success(), "it exited with {status}");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    // One line: the error and its causes.
    let last = stderr.lines().last().unwrap_or_default().to_owned();
    assert!(
        last.starts_with("keelson-control-plane: "),
        "stderr:\n{stderr}"
    );
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_encrypted_in_etcd_over_tls() {
    keelson_tests::require_root();
    let etcd = EtcdCluster::start(3).await;
    let tls = etcd.control_plane_args();
    assert_eq!(tls.len(), 6, "{tls:?}");

    // Without any TLS flag the https endpoints are refused before connecting; with the CA but
    // without a client certificate etcd refuses the handshake.
    let error = fails_to_start(&etcd, &[]);
    assert_eq!(
        error,
        "keelson-control-plane: the etcd endpoints use https: give --etcd-cafile (the CA of \
         etcd's serving certificates), and --etcd-certfile and --etcd-keyfile if etcd checks \
         clients"
    );
    let error = fails_to_start(&etcd, &tls[..2]);
    assert!(
        error.starts_with(&format!(
            "keelson-control-plane: cannot use etcd at {:?} ",
            etcd.endpoints_arg(0).split(',').collect::<Vec<_>>()
        )) && error.contains("without a client certificate (--etcd-certfile, --etcd-keyfile)"),
        "{error}"
    );

    let mut args = vec![
        "--store".to_owned(),
        "etcd".into(),
        "--etcd-endpoints".into(),
        etcd.endpoints_arg(0),
    ];
    args.extend(tls.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let plane = ControlPlane::start_with(&args);
    let value = unique_value();
    create_and_read_back(&Kubectl::new(33, &plane), &value);

    let mut client = etcd.members[1].client().await;
    let got = client
        .get("/registry/secrets/default/db", None)
        .await
        .expect("get the Secret from etcd");
    let stored = got.kvs().first().expect("the Secret is in etcd").value();
    assert!(
        stored.starts_with(PREFIX),
        "{}",
        String::from_utf8_lossy(stored)
    );
    let encoded = base64::engine::general_purpose::STANDARD.encode(&value);
    assert!(!contains(stored, value.as_bytes()));
    assert!(!contains(stored, encoded.as_bytes()));
}
