//! Where audit events go: a file rotated as kube-apiserver's log backend rotates it
//! (lumberjack: `--audit-log-maxsize`, `--audit-log-maxbackup`, `--audit-log-maxage`, old files
//! renamed `<name>-<UTC time>.<ext>`), or standard output; written by a thread of its own that
//! drains a bounded channel, so requests never wait on the disk.

use std::{
    fs::{File, OpenOptions},
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use tokio::sync::{mpsc, oneshot};

/// The size a file may reach when `--audit-log-maxsize` is 0 (lumberjack's default).
pub const DEFAULT_MAX_SIZE_MB: u64 = 100;

/// How old files' names carry the time of their rotation (UTC, milliseconds).
const BACKUP_TIME_FORMAT: &str = "%Y-%m-%dT%H-%M-%S";

/// Where and how the log is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOptions {
    /// The file, or `-` for standard output.
    pub path: PathBuf,
    /// Rotate when the file would grow past this many megabytes (0: 100).
    pub max_size_mb: u64,
    /// Keep at most this many old files (0: all).
    pub max_backups: usize,
    /// Delete old files older than this many days (0: never).
    pub max_age_days: u64,
    /// Events held for the writer before requests wait (`blocking`) or events are dropped
    /// (`batch`).
    pub buffer: usize,
    /// What happens when the buffer is full.
    pub mode: Mode,
}

/// What a request does when the writer is [`LogOptions::buffer`] events behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Wait for room (kube's default `blocking`: no event is lost).
    Blocking,
    /// Drop the event and count it in `apiserver_audit_error_total{plugin="log"}`.
    Batch,
}

/// A log file that rotates by size and prunes old files by count and age.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    max_size: u64,
    max_backups: usize,
    max_age: Option<Duration>,
    file: Option<File>,
    size: u64,
}

/// Why an event could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// One event is larger than a whole file may be.
    #[error("write length {length} exceeds maximum file size {max}")]
    TooLarge {
        /// The event's length.
        length: u64,
        /// The maximum file size.
        max: u64,
    },
    /// The file system refused.
    #[error("cannot write the audit log {path}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl RotatingFile {
    /// A log at `path` rotated at `max_size` bytes (0: 100 MB).
    pub fn new(path: PathBuf, max_size: u64, max_backups: usize, max_age_days: u64) -> Self {
        Self {
            path,
            max_size: if max_size == 0 {
                DEFAULT_MAX_SIZE_MB * 1024 * 1024
            } else {
                max_size
            },
            max_backups,
            max_age: (max_age_days > 0).then(|| Duration::from_secs(max_age_days * 24 * 3600)),
            file: None,
            size: 0,
        }
    }

    fn io(&self, source: std::io::Error) -> WriteError {
        WriteError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// Appends `line`, rotating first when it would not fit.
    pub fn write(&mut self, line: &[u8]) -> Result<(), WriteError> {
        let length = line.len() as u64;
        if length > self.max_size {
            return Err(WriteError::TooLarge {
                length,
                max: self.max_size,
            });
        }
        if self.file.is_none() {
            self.open_existing_or_new(length)?;
        } else if self.size + length > self.max_size {
            self.rotate()?;
        }
        let Some(file) = self.file.as_mut() else {
            return Err(self.io(std::io::Error::other("no open file")));
        };
        if let Err(error) = file.write_all(line) {
            return Err(self.io(error));
        }
        self.size += length;
        Ok(())
    }

    fn open_existing_or_new(&mut self, next: u64) -> Result<(), WriteError> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| self.io(e))?;
        }
        match std::fs::metadata(&self.path) {
            Ok(meta) if meta.len() + next <= self.max_size => {
                let file = OpenOptions::new()
                    .append(true)
                    .open(&self.path)
                    .map_err(|e| self.io(e))?;
                self.size = meta.len();
                self.file = Some(file);
                Ok(())
            }
            Ok(_) => self.rotate(),
            Err(_) => self.create(),
        }
    }

    fn create(&mut self) -> Result<(), WriteError> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(|e| self.io(e))?;
        self.file = Some(file);
        self.size = 0;
        Ok(())
    }

    /// `audit.log` -> (`audit-`, `.log`).
    fn backup_affixes(&self) -> (String, String) {
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match name.rfind('.').filter(|&i| i > 0) {
            Some(dot) => (format!("{}-", &name[..dot]), name[dot..].to_owned()),
            None => (format!("{name}-"), String::new()),
        }
    }

    fn backup_name(&self, at: jiff::Timestamp) -> PathBuf {
        let (prefix, ext) = self.backup_affixes();
        let time = at.strftime(BACKUP_TIME_FORMAT);
        let millis = at.subsec_millisecond();
        self.path
            .with_file_name(format!("{prefix}{time}.{millis:03}{ext}"))
    }

    /// Renames the current file to its backup name, starts a new one and prunes old files.
    fn rotate(&mut self) -> Result<(), WriteError> {
        self.file = None;
        if self.path.exists() {
            // Two rotations within one millisecond must not overwrite each other's file.
            let mut at = jiff::Timestamp::now();
            let mut backup = self.backup_name(at);
            for _ in 0..1000 {
                if !backup.exists() {
                    break;
                }
                at += jiff::SignedDuration::from_millis(1);
                backup = self.backup_name(at);
            }
            std::fs::rename(&self.path, &backup).map_err(|e| self.io(e))?;
        }
        self.create()?;
        self.prune();
        Ok(())
    }

    /// The old files, newest first, with the time in their names.
    fn backups(&self) -> Vec<(jiff::Timestamp, PathBuf)> {
        let (prefix, ext) = self.backup_affixes();
        let dir = match self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(dir) => dir.to_path_buf(),
            None => PathBuf::from("."),
        };
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut found: Vec<(jiff::Timestamp, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                let time = name.strip_prefix(&prefix)?.strip_suffix(ext.as_str())?;
                let (seconds, millis) = time.rsplit_once('.')?;
                let civil = jiff::civil::DateTime::strptime(BACKUP_TIME_FORMAT, seconds).ok()?;
                let at = civil.to_zoned(jiff::tz::TimeZone::UTC).ok()?.timestamp()
                    + jiff::SignedDuration::from_millis(millis.parse().ok()?);
                Some((at, entry.path()))
            })
            .collect();
        found.sort_by_key(|b| std::cmp::Reverse(b.0));
        found
    }

    fn prune(&self) {
        let now = jiff::Timestamp::now();
        for (i, (at, path)) in self.backups().into_iter().enumerate() {
            let too_many = self.max_backups > 0 && i >= self.max_backups;
            let too_old = self.max_age.is_some_and(|age| {
                now.duration_since(at) > jiff::SignedDuration::try_from(age).unwrap_or_default()
            });
            if (too_many || too_old)
                && let Err(error) = std::fs::remove_file(&path)
            {
                tracing::warn!(path = %path.display(), %error, "cannot remove an old audit log");
            }
        }
    }
}

/// The output the writer thread writes to.
#[derive(Debug)]
enum Output {
    File(RotatingFile),
    Stdout,
}

impl Output {
    fn write(&mut self, line: &[u8]) -> Result<(), WriteError> {
        match self {
            Self::File(file) => file.write(line),
            Self::Stdout => {
                std::io::stdout()
                    .lock()
                    .write_all(line)
                    .map_err(|source| WriteError::Io {
                        path: "-".into(),
                        source,
                    })
            }
        }
    }
}

/// What the writer thread receives.
#[derive(Debug)]
pub(crate) enum Message {
    /// One JSON line.
    Line(Vec<u8>),
    /// Answer once everything before has been written.
    Flush(oneshot::Sender<()>),
}

/// Starts the writer thread for `options`; `on_error` is called for every event that could
/// not be written.
pub(crate) fn start(
    options: &LogOptions,
    on_error: impl Fn() + Send + 'static,
) -> std::io::Result<mpsc::Sender<Message>> {
    let mut output = if options.path == Path::new("-") {
        Output::Stdout
    } else {
        Output::File(RotatingFile::new(
            options.path.clone(),
            options.max_size_mb.saturating_mul(1024 * 1024),
            options.max_backups,
            options.max_age_days,
        ))
    };
    let (sender, mut receiver) = mpsc::channel::<Message>(options.buffer.max(1));
    std::thread::Builder::new()
        .name("audit-log".into())
        .spawn(move || {
            let mut failing = false;
            while let Some(message) = receiver.blocking_recv() {
                match message {
                    Message::Line(line) => match output.write(&line) {
                        Ok(()) => failing = false,
                        Err(error) => {
                            on_error();
                            if !failing {
                                tracing::warn!(error = %error, "cannot write an audit event");
                            }
                            failing = true;
                        }
                    },
                    Message::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        })?;
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("read dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn files_rotate_at_the_size_and_old_ones_are_pruned_by_count() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("audit.log");
        let mut log = RotatingFile::new(path.clone(), 25, 2, 0);
        for i in 0..7 {
            log.write(format!("event-{i:03}\n").as_bytes())
                .expect("write");
        }
        // 10 bytes a line, 25 bytes a file: two lines a file, the newest file holds line 6.
        assert_eq!(std::fs::read_to_string(&path).expect("log"), "event-006\n");
        let files = names(dir.path());
        assert_eq!(files.len(), 3, "the log and two backups: {files:?}");
        let backups: Vec<&String> = files.iter().filter(|n| *n != "audit.log").collect();
        for backup in &backups {
            assert!(
                backup.starts_with("audit-") && backup.ends_with(".log"),
                "{backup}"
            );
            // audit-2026-01-01T00-00-00.000.log
            assert_eq!(
                backup.len(),
                "audit-2026-01-01T00-00-00.000.log".len(),
                "{backup}"
            );
        }
        let contents: Vec<String> = backups
            .iter()
            .map(|b| std::fs::read_to_string(dir.path().join(b)).expect("backup"))
            .collect();
        assert_eq!(
            contents,
            ["event-002\nevent-003\n", "event-004\nevent-005\n"]
        );
        let error = log.write(&[b'x'; 26]).expect_err("larger than a file");
        assert_eq!(
            error.to_string(),
            "write length 26 exceeds maximum file size 25"
        );
    }

    #[test]
    fn old_files_past_the_age_are_removed_and_an_existing_log_is_appended_to() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("audit.log");
        let old = dir.path().join("audit-2001-02-03T04-05-06.007.log");
        let unrelated = dir.path().join("other-2001-02-03T04-05-06.007.log");
        std::fs::write(&old, "old\n").expect("old");
        std::fs::write(&unrelated, "keep\n").expect("unrelated");
        std::fs::write(&path, "before\n").expect("existing log");
        let mut log = RotatingFile::new(path.clone(), 1024, 0, 30);
        log.write(b"after\n").expect("write");
        assert_eq!(
            std::fs::read_to_string(&path).expect("log"),
            "before\nafter\n"
        );
        assert!(old.exists(), "pruning happens on rotation");
        log.write(&[b'y'; 1020]).expect("rotate");
        assert!(!old.exists(), "older than 30 days");
        assert!(unrelated.exists());
        assert_eq!(names(dir.path()).len(), 3);
    }

    #[test]
    fn the_backup_name_carries_the_utc_time() {
        let log = RotatingFile::new(PathBuf::from("/var/log/kube/audit.log"), 0, 0, 0);
        let at: jiff::Timestamp = "2026-12-06T22:05:07.123456Z".parse().expect("time");
        assert_eq!(
            log.backup_name(at),
            PathBuf::from("/var/log/kube/audit-2026-12-06T22-05-07.123.log")
        );
        assert_eq!(log.max_size, 100 * 1024 * 1024);
        let plain = RotatingFile::new(PathBuf::from("audit"), 0, 0, 0);
        assert_eq!(
            plain.backup_name(at),
            PathBuf::from("audit-2026-12-06T22-05-07.123")
        );
    }
}
