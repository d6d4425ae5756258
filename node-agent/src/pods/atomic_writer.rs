//! Writes a volume's files so that a reader never sees half of an update, as the kubelet's
//! `AtomicWriter` does (`pkg/volume/util/atomic_writer.go`).
//!
//! The files live in a hidden timestamped directory (`..2026_01_02_03_04_05.<n>`); the
//! symbolic link `..data` names the current one; each top-level name the user sees is a
//! relative link through `..data` (`token -> ..data/token`). An update writes a new timestamped
//! directory, points `..data_tmp` at it and renames that over `..data` (one atomic `rename`),
//! then adds links for new names, removes links for names that went away and deletes the old
//! directory. A process inside the container that opens `token` gets the old or the new file,
//! never a partial one. Names starting with `..` are reserved for this scheme.

use std::{
    collections::{BTreeMap, BTreeSet},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

/// The link naming the current timestamped directory.
pub const DATA_DIR: &str = "..data";
/// The link renamed over [`DATA_DIR`].
const NEW_DATA_DIR: &str = "..data_tmp";
/// Linux's limits the kubelet checks paths against.
const MAX_FILE_NAME: usize = 255;
const MAX_PATH: usize = 4096;

/// One file of a volume: its bytes and permission bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    /// The content.
    pub data: Vec<u8>,
    /// The mode (`0o644`, ...).
    pub mode: u32,
}

/// Every file of a volume by relative path (`token`, `dir/file`).
pub type Payload = BTreeMap<String, FileProjection>;

/// Why a volume could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AtomicWriteError {
    /// A path in the payload is not one the writer accepts.
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A file system call failed.
    #[error("{action} {}", path.display())]
    Io {
        /// What was being done (`writing`, `renaming`, ...).
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> AtomicWriteError {
    let path = path.to_owned();
    move |source| AtomicWriteError::Io {
        action,
        path,
        source,
    }
}

/// Checks a payload path as the kubelet does and returns it cleaned (no empty or `.` parts).
fn clean_path(path: &str) -> Result<String, AtomicWriteError> {
    let invalid = |reason| AtomicWriteError::InvalidPath {
        path: path.to_owned(),
        reason,
    };
    if path.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if path.starts_with('/') {
        return Err(invalid("must be a relative path"));
    }
    if path.len() > MAX_PATH {
        return Err(invalid("must be at most 4096 characters"));
    }
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.contains(&"..") {
        return Err(invalid("must not contain '..'"));
    }
    if parts.iter().any(|p| p.len() > MAX_FILE_NAME) {
        return Err(invalid("file names must be at most 255 characters"));
    }
    match parts.first() {
        None => Err(invalid("must not be empty")),
        Some(first) if first.starts_with("..") => Err(invalid("must not start with '..'")),
        Some(_) => Ok(parts.join("/")),
    }
}

/// Every path of `payload` with each of its parent directories (`a/b/c`: `a`, `a/b`, `a/b/c`).
fn paths_with_parents(payload: &Payload) -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    for path in payload.keys() {
        let mut prefix = String::new();
        for part in path.split('/') {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            all.insert(prefix.clone());
        }
    }
    all
}

/// The relative paths of everything under `dir` (files and directories).
fn walk(dir: &Path) -> Result<BTreeSet<String>, AtomicWriteError> {
    let mut found = BTreeSet::new();
    let mut pending = vec![(dir.to_owned(), String::new())];
    while let Some((path, relative)) = pending.pop() {
        for entry in std::fs::read_dir(&path).map_err(io("reading", &path))? {
            let entry = entry.map_err(io("reading", &path))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let child = if relative.is_empty() {
                name
            } else {
                format!("{relative}/{name}")
            };
            if entry.file_type().map_err(io("reading", &path))?.is_dir() {
                pending.push((entry.path(), child.clone()));
            }
            found.insert(child);
        }
    }
    Ok(found)
}

/// Whether the files in `old` differ from `payload` in content or mode.
fn differs(payload: &Payload, old: &Path) -> bool {
    payload.iter().any(|(path, file)| {
        let path = old.join(path);
        let same_content = std::fs::read(&path).is_ok_and(|data| data == file.data);
        let same_mode = std::fs::metadata(&path)
            .is_ok_and(|m| m.permissions().mode() & 0o7777 == file.mode & 0o7777);
        !(same_content && same_mode)
    })
}

/// A new, empty timestamped directory in `target` (mode 0755 so any user may traverse it).
fn new_timestamped_dir(target: &Path) -> Result<PathBuf, AtomicWriteError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let stamp = k8s_openapi::jiff::Timestamp::now().strftime("..%Y_%m_%d_%H_%M_%S");
    // A bounded number of tries: the name is unique per process unless a leftover has it.
    for _ in 0..16 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = target.join(format!("{stamp}.{}{n:04}", std::process::id()));
        match std::fs::create_dir(&path) {
            Ok(()) => {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                    .map_err(io("chmod", &path))?;
                return Ok(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io("creating", &path)(e)),
        }
    }
    Err(io("creating", &target.join(format!("{stamp}.*")))(
        std::io::Error::from(std::io::ErrorKind::AlreadyExists),
    ))
}

fn write_payload(payload: &Payload, dir: &Path) -> Result<(), AtomicWriteError> {
    for (relative, file) in payload {
        let path = dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
        }
        std::fs::write(&path, &file.data).map_err(io("writing", &path))?;
        // Explicitly, so the umask does not narrow the mode asked for.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(file.mode))
            .map_err(io("chmod", &path))?;
    }
    Ok(())
}

/// Projects `payload` into `target` (created if missing) atomically; returns whether anything
/// was written (an unchanged payload writes nothing).
pub fn write(target: &Path, payload: &Payload) -> Result<bool, AtomicWriteError> {
    // The pod worker and the volume sync may both rewrite a volume: one at a time, so that
    // neither removes the directory the other just linked.
    static WRITING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = WRITING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut clean = Payload::new();
    for (path, file) in payload {
        clean.insert(clean_path(path)?, file.clone());
    }
    std::fs::create_dir_all(target).map_err(io("creating", target))?;
    let data_dir = target.join(DATA_DIR);
    let old = match std::fs::read_link(&data_dir) {
        Ok(old) => Some(target.join(old)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io("reading the link", &data_dir)(e)),
    };
    let wanted = paths_with_parents(&clean);
    let mut remove = BTreeSet::new();
    if let Some(old) = old.as_ref().filter(|o| o.is_dir()) {
        remove = walk(old)?.difference(&wanted).cloned().collect();
        if remove.is_empty() && !differs(&clean, old) {
            return Ok(false);
        }
    }

    let fresh = new_timestamped_dir(target)?;
    if let Err(e) = write_payload(&clean, &fresh) {
        let _ = std::fs::remove_dir_all(&fresh);
        return Err(e);
    }
    let fresh_name = fresh
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| fresh.clone());
    let new_data_dir = target.join(NEW_DATA_DIR);
    // A leftover of an interrupted write.
    let _ = std::fs::remove_file(&new_data_dir);
    if let Err(e) = std::os::unix::fs::symlink(&fresh_name, &new_data_dir) {
        let _ = std::fs::remove_dir_all(&fresh);
        return Err(io("linking", &new_data_dir)(e));
    }
    if let Err(e) = std::fs::rename(&new_data_dir, &data_dir) {
        let _ = std::fs::remove_file(&new_data_dir);
        let _ = std::fs::remove_dir_all(&fresh);
        return Err(io("renaming", &new_data_dir)(e));
    }

    // The names the user sees, now that `..data` holds them.
    let top: BTreeSet<&str> = clean.keys().filter_map(|p| p.split('/').next()).collect();
    for name in &top {
        let visible = target.join(name);
        match std::fs::symlink_metadata(&visible) {
            Ok(meta) if meta.file_type().is_symlink() => continue,
            // A plain file or directory from before this layout: replace it.
            Ok(meta) if meta.is_dir() => {
                std::fs::remove_dir_all(&visible).map_err(io("removing", &visible))?
            }
            Ok(_) => std::fs::remove_file(&visible).map_err(io("removing", &visible))?,
            Err(_) => {}
        }
        std::os::unix::fs::symlink(Path::new(DATA_DIR).join(name), &visible)
            .map_err(io("linking", &visible))?;
    }
    for gone in remove.iter().filter(|p| !p.contains('/')) {
        let visible = target.join(gone);
        if let Err(e) = std::fs::remove_file(&visible)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(io("removing", &visible)(e));
        }
    }
    if let Some(old) = old
        && old != fresh
    {
        match std::fs::remove_dir_all(&old) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("removing", &old)(e)),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(files: &[(&str, &str, u32)]) -> Payload {
        files
            .iter()
            .map(|(path, data, mode)| {
                (
                    (*path).to_owned(),
                    FileProjection {
                        data: data.as_bytes().to_vec(),
                        mode: *mode,
                    },
                )
            })
            .collect()
    }

    /// The entries of `dir` (not following links): name -> link target or `file`/`dir`.
    fn layout(dir: &Path) -> BTreeMap<String, String> {
        std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| {
                let e = e.expect("entry");
                let name = e.file_name().to_string_lossy().into_owned();
                let kind = e.file_type().expect("type");
                let what = if kind.is_symlink() {
                    std::fs::read_link(e.path())
                        .expect("link")
                        .display()
                        .to_string()
                } else if kind.is_dir() {
                    "dir".to_owned()
                } else {
                    "file".to_owned()
                };
                (name, what)
            })
            .collect()
    }

    fn stamped(layout: &BTreeMap<String, String>) -> Vec<String> {
        layout
            .keys()
            .filter(|k| k.starts_with("..2") || k.starts_with("..1"))
            .cloned()
            .collect()
    }

    #[test]
    fn layout_is_links_through_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("vol");
        let wrote = write(
            &target,
            &payload(&[
                ("token", "t1", 0o644),
                ("namespace", "default", 0o644),
                ("sub/dir/file", "x", 0o600),
            ]),
        )
        .expect("write");
        assert!(wrote);
        let l = layout(&target);
        let stamps = stamped(&l);
        assert_eq!(stamps.len(), 1, "{l:?}");
        assert_eq!(l[DATA_DIR], stamps[0]);
        assert_eq!(l["token"], "..data/token");
        assert_eq!(l["namespace"], "..data/namespace");
        assert_eq!(l["sub"], "..data/sub");
        assert_eq!(l.len(), 5, "{l:?}");
        assert_eq!(
            std::fs::read_to_string(target.join("sub/dir/file")).expect("read"),
            "x"
        );
        let mode = |p: &str| {
            std::fs::metadata(target.join(p))
                .expect("stat")
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("token"), 0o644);
        assert_eq!(mode("sub/dir/file"), 0o600);
        assert_eq!(mode(stamps[0].as_str()), 0o755);
    }

    #[test]
    fn unchanged_payload_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = payload(&[("token", "t1", 0o644)]);
        assert!(write(dir.path(), &files).expect("first"));
        let before = layout(dir.path());
        assert!(!write(dir.path(), &files).expect("second"));
        assert_eq!(layout(dir.path()), before);
        // A mode change alone is a change.
        assert!(write(dir.path(), &payload(&[("token", "t1", 0o600)])).expect("mode"));
    }

    #[test]
    fn swap_replaces_whole_set_and_leaves_no_partial_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path();
        write(
            target,
            &payload(&[("token", "old", 0o644), ("gone", "bye", 0o644)]),
        )
        .expect("first");
        let first = stamped(&layout(target));
        write(
            target,
            &payload(&[("token", "new", 0o644), ("added", "hi", 0o644)]),
        )
        .expect("second");
        let l = layout(target);
        let second = stamped(&l);
        assert_eq!(second.len(), 1, "the old directory is removed: {l:?}");
        assert_ne!(first, second);
        assert!(!l.contains_key("gone"), "{l:?}");
        assert!(!l.contains_key(NEW_DATA_DIR), "{l:?}");
        assert_eq!(l["added"], "..data/added");
        assert_eq!(
            std::fs::read_to_string(target.join("token")).expect("token"),
            "new"
        );
        assert_eq!(l.len(), 4, "..data, the stamped dir, token, added: {l:?}");
    }

    #[test]
    fn readers_see_old_or_new_never_partial() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().to_owned();
        let big = |c: char| c.to_string().repeat(256 * 1024);
        write(&target, &payload(&[("token", &big('a'), 0o644)])).expect("first");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let target = target.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut reads = 0u32;
                while !stop.load(Ordering::Relaxed) && reads < 200_000 {
                    // A read may race the removal of the old directory (ENOENT); a content
                    // read is always whole.
                    if let Ok(text) = std::fs::read_to_string(target.join("token")) {
                        let first = text.chars().next().unwrap_or('?');
                        assert!(
                            text.len() == 256 * 1024 && text.chars().all(|c| c == first),
                            "a partial token ({} bytes)",
                            text.len()
                        );
                    }
                    reads += 1;
                }
            })
        };
        for i in 0..40u8 {
            let c = char::from(b'b' + i % 20);
            write(&target, &payload(&[("token", &big(c), 0o644)])).expect("rewrite");
        }
        stop.store(true, Ordering::Relaxed);
        reader.join().expect("the reader saw only whole tokens");
    }

    #[test]
    fn invalid_paths() {
        for (path, reason) in [
            ("", "must not be empty"),
            ("/etc/passwd", "must be a relative path"),
            ("a/../b", "must not contain '..'"),
            ("..data", "must not start with '..'"),
            ("..hidden/x", "must not start with '..'"),
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            match write(dir.path(), &payload(&[(path, "x", 0o644)])) {
                Err(AtomicWriteError::InvalidPath { reason: r, .. }) => {
                    assert_eq!(r, reason, "{path:?}")
                }
                other => panic!("{path:?}: {other:?}"),
            }
        }
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), &payload(&[("./a//b", "x", 0o644)])).expect("cleaned");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a/b")).expect("a/b"),
            "x"
        );
    }

    #[test]
    fn plain_files_from_before_are_replaced_by_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("key"), "stale").expect("seed");
        write(dir.path(), &payload(&[("key", "fresh", 0o644)])).expect("write");
        assert_eq!(layout(dir.path())["key"], "..data/key");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("key")).expect("key"),
            "fresh"
        );
    }
}
