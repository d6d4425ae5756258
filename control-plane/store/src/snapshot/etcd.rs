//! Snapshots of an etcd store, in etcd's own format.
//!
//! `save` streams the Maintenance `Snapshot` RPC of one member into a file, exactly what
//! `etcdctl snapshot save` writes: the member's bbolt database followed by its SHA-256, which
//! is checked before the file takes its name. `restore` is etcd's offline operation: it
//! checks the digest and runs etcd's own tool (`etcdutl snapshot restore`, else
//! `ETCDCTL_API=3 etcdctl snapshot restore` on etcd 3.4) to make a new member data directory
//! of a one-member cluster; etcd started on that directory serves the saved keys at the saved
//! revision. (k3s does the same through etcd's library in `--cluster-reset-restore-path`;
//! more members join it afterwards with `etcdctl member add`.)

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    process::Command,
};

use etcd_client::{Client, ConnectOptions};
use sha2::{Digest as _, Sha256};

use super::{SnapshotError, SnapshotInfo, create, io, persist, with_suffix, write_all};
use crate::EtcdTls;

const KIND: &str = "etcd";
const DIGEST_LEN: usize = 32;

/// Streams a snapshot of the etcd member at `endpoint` into `dest` (replaced only once the
/// file is complete, its digest checked and flushed).
pub async fn save(
    endpoint: &str,
    tls: Option<&EtcdTls>,
    dest: &Path,
) -> Result<SnapshotInfo, SnapshotError> {
    let options = tls.map(|tls| ConnectOptions::new().with_tls(tls.options()));
    let mut client = Client::connect([endpoint], options)
        .await
        .map_err(|source| SnapshotError::Etcd {
            operation: "connect",
            source,
        })?;
    let stream_error = |source| SnapshotError::Etcd {
        operation: "stream a snapshot",
        source,
    };
    let mut stream = client.snapshot().await.map_err(stream_error)?;
    let partial = with_suffix(dest, ".partial");
    let mut file = create(&partial)?;
    while let Some(message) = stream.message().await.map_err(stream_error)? {
        write_all(&mut file, &partial, message.blob())?;
    }
    drop(file);
    let info = inspect(&partial)?;
    persist(&partial, dest)?;
    Ok(info)
}

/// Checks that `path` is a complete etcd snapshot: a bbolt database whose SHA-256 follows it.
pub fn inspect(path: &Path) -> Result<SnapshotInfo, SnapshotError> {
    let refuse = |reason: &str| SnapshotError::NotASnapshot {
        path: path.to_path_buf(),
        kind: KIND,
        reason: reason.to_owned(),
    };
    let mut file = std::fs::File::open(path).map_err(io("cannot open", path))?;
    let size = file.metadata().map_err(io("cannot stat", path))?.len();
    // etcd's pages are multiples of 512 bytes: a saved snapshot is that plus the digest
    // (how etcd's restore tells whether the digest is there).
    if size % 512 != DIGEST_LEN as u64 {
        return Err(refuse(
            "no SHA-256 at its end (not written by etcd's snapshot API, or truncated)",
        ));
    }
    let body_len = size
        .checked_sub(DIGEST_LEN as u64)
        .filter(|&len| len >= 4096)
        .ok_or_else(|| refuse("too short"))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 64 * 1024];
    let mut left = body_len;
    let mut first_page = true;
    while left > 0 {
        let want = usize::try_from(left.min(buffer.len() as u64)).unwrap_or(buffer.len());
        file.read_exact(&mut buffer[..want])
            .map_err(io("cannot read", path))?;
        if first_page {
            // bbolt's meta page: the magic 0xED0CDAED (little endian) after the page header.
            if buffer[16..20] != 0xED0C_DAED_u32.to_le_bytes() {
                return Err(refuse("not a bbolt database (wrong magic)"));
            }
            first_page = false;
        }
        hasher.update(&buffer[..want]);
        left -= want as u64;
    }
    let mut digest = [0; DIGEST_LEN];
    file.read_exact(&mut digest)
        .map_err(io("cannot read", path))?;
    if hasher.finalize().as_slice() != digest {
        return Err(refuse(
            "the SHA-256 at its end does not match (truncated or damaged, or copied from a \
             data directory rather than saved)",
        ));
    }
    Ok(SnapshotInfo {
        revision: None,
        keys: None,
        size,
    })
}

/// The member a snapshot is restored as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The member's name (etcd's `--name`).
    pub name: String,
    /// Its peer URL (`--initial-advertise-peer-urls`).
    pub peer_url: String,
}

/// Restores `snapshot` into the new etcd data directory `data_dir` as the only member of a new
/// cluster. An existing `data_dir` is refused unless `replace`; then it is renamed aside to
/// `DATA_DIR.before-restore` (returned) rather than deleted. etcd must not be running on it.
pub fn restore(
    snapshot: &Path,
    data_dir: &Path,
    member: &Member,
    replace: bool,
) -> Result<(SnapshotInfo, Option<PathBuf>), SnapshotError> {
    let info = inspect(snapshot)?;
    let mut moved = None;
    if data_dir.exists() {
        if !replace {
            return Err(SnapshotError::HasState {
                path: data_dir.to_path_buf(),
            });
        }
        let aside = with_suffix(data_dir, ".before-restore");
        if aside.exists() {
            return Err(SnapshotError::HasState { path: aside });
        }
        std::fs::rename(data_dir, &aside).map_err(io("cannot move aside", data_dir))?;
        moved = Some(aside);
    }
    let (program, mut command) = restore_tool()?;
    command
        .arg("snapshot")
        .arg("restore")
        .arg(snapshot)
        .arg(format!("--data-dir={}", data_dir.display()))
        .arg(format!("--name={}", member.name))
        .arg(format!(
            "--initial-cluster={}={}",
            member.name, member.peer_url
        ))
        .arg(format!("--initial-advertise-peer-urls={}", member.peer_url));
    let output = command.output().map_err(|e| SnapshotError::EtcdTool {
        tool: program.clone(),
        message: e.to_string(),
    })?;
    if !output.status.success() {
        return Err(SnapshotError::EtcdTool {
            tool: program,
            message: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok((info, moved))
}

/// `etcdutl` (etcd 3.5+), else `etcdctl` with the v3 API (etcd 3.4); the first found on PATH.
fn restore_tool() -> Result<(String, Command), SnapshotError> {
    let on_path = |name: &str| {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
    };
    if on_path("etcdutl") {
        return Ok(("etcdutl".into(), Command::new("etcdutl")));
    }
    if on_path("etcdctl") {
        let mut command = Command::new("etcdctl");
        command.env("ETCDCTL_API", "3");
        return Ok(("etcdctl".into(), command));
    }
    Err(SnapshotError::EtcdTool {
        tool: "etcdutl".into(),
        message: "neither etcdutl nor etcdctl is on PATH: install etcd's tools (Debian: \
                  apt-get install etcd-client)"
            .into(),
    })
}

#[cfg(test)]
mod tests {
    use sha2::{Digest as _, Sha256};

    use super::inspect;

    /// Two bbolt-shaped pages followed by their SHA-256, as etcd's Snapshot stream ends.
    fn saved_bytes() -> Vec<u8> {
        let mut body = vec![0_u8; 8192];
        body[16..20].copy_from_slice(&0xED0C_DAED_u32.to_le_bytes());
        body[5000] = 7;
        let digest = Sha256::digest(&body);
        body.extend_from_slice(&digest);
        body
    }

    #[test]
    fn the_digest_and_the_bbolt_magic_are_checked() {
        let dir = tempfile::tempdir().expect("temp dir");
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).expect("write");
            path
        };
        let good = saved_bytes();
        let info = inspect(&write("good", &good)).expect("a saved snapshot");
        assert_eq!(info.size, good.len() as u64);

        let mut flipped = good.clone();
        flipped[5000] = 8;
        let error = inspect(&write("flipped", &flipped)).expect_err("a damaged body");
        assert!(error.to_string().contains("does not match"), "{error}");

        let error = inspect(&write("cut", &good[..good.len() - 32])).expect_err("no digest");
        assert!(
            error.to_string().contains("no SHA-256 at its end"),
            "{error}"
        );

        let mut foreign = vec![b'x'; 8192];
        foreign.extend_from_slice(&Sha256::digest(&foreign));
        let error = inspect(&write("foreign", &foreign)).expect_err("not bbolt");
        assert!(
            error.to_string().contains("not a bbolt database"),
            "{error}"
        );
    }
}
