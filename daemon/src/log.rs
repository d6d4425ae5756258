//! Logging for both binaries: on a terminal or in a file as before (a timestamp, the level,
//! colours only on a terminal); under systemd, when the output stream is the journal
//! (`JOURNAL_STREAM`), one line per event with no timestamp and no colours (journald stamps
//! each line itself) and the syslog priority prefix `<3>`..`<7>` journald reads the level from,
//! so `journalctl -p warning` shows warnings and errors only.

use std::{fmt, os::unix::fs::MetadataExt as _};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::{
    EnvFilter,
    fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, format::Writer},
    registry::LookupSpan,
};

/// Where a binary writes its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl Output {
    fn fd(self) -> u8 {
        match self {
            Self::Stdout => 1,
            Self::Stderr => 2,
        }
    }
}

/// Installs the global subscriber writing to `output`, filtered by `filter`: in journald's
/// format when `output` is the journal (see the module documentation), else as before.
pub fn init(filter: EnvFilter, output: Output) {
    let journal = std::env::var("JOURNAL_STREAM")
        .ok()
        .is_some_and(|stream| is_journal(&stream, output));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match (journal, output) {
        (true, Output::Stdout) => builder
            .with_ansi(false)
            .event_format(Journald)
            .with_writer(std::io::stdout)
            .init(),
        (true, Output::Stderr) => builder
            .with_ansi(false)
            .event_format(Journald)
            .with_writer(std::io::stderr)
            .init(),
        // Colours only on a terminal: logs redirected to a file stay plain text.
        (false, Output::Stdout) => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .with_writer(std::io::stdout)
            .init(),
        (false, Output::Stderr) => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_writer(std::io::stderr)
            .init(),
    }
}

/// Whether `output` is the journal stream `JOURNAL_STREAM` (`DEVICE:INODE`) names. systemd sets
/// the variable for the service's own stdout/stderr; a process that inherited it but writes
/// elsewhere (a pipe, a file) keeps the ordinary format. When the stream cannot be inspected the
/// variable alone decides.
fn is_journal(stream: &str, output: Output) -> bool {
    match std::fs::metadata(format!("/proc/self/fd/{}", output.fd())) {
        Ok(meta) => journal_stream_is(stream, meta.dev(), meta.ino()),
        Err(_) => !stream.is_empty(),
    }
}

/// Whether `JOURNAL_STREAM`'s value names the file with device `dev` and inode `ino`.
fn journal_stream_is(stream: &str, dev: u64, ino: u64) -> bool {
    stream
        .split_once(':')
        .and_then(|(d, i)| Some((d.parse::<u64>().ok()?, i.parse::<u64>().ok()?)))
        == Some((dev, ino))
}

/// The syslog priority journald gives a line with this level's prefix.
pub fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// The journald line format: `<PRIORITY>span{fields}: target: message key=value`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Journald;

impl<S, N> FormatEvent<S, N> for Journald
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        write!(writer, "<{}>", priority(*meta.level()))?;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                write!(writer, "{}", span.name())?;
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    write!(writer, "{{{fields}}}")?;
                }
                write!(writer, ": ")?;
            }
        }
        write!(writer, "{}: ", meta.target())?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn journald_lines_carry_the_priority_and_no_timestamp_or_colour() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new("trace"))
            .with_ansi(false)
            .event_format(Journald)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(store = "etcd", "cannot read");
            tracing::warn!("lease not renewed");
            let span = tracing::info_span!("pod", name = "web-1");
            let _entered = span.enter();
            tracing::info!(restarts = 2, "container started");
            tracing::debug!("probe");
            tracing::trace!("detail");
        });
        let text = String::from_utf8(buffer.0.lock().expect("lock").clone()).expect("utf-8");
        assert_eq!(
            text,
            "<3>keelson_daemon::log::tests: cannot read store=\"etcd\"\n\
             <4>keelson_daemon::log::tests: lease not renewed\n\
             <6>pod{name=\"web-1\"}: keelson_daemon::log::tests: container started restarts=2\n\
             <7>pod{name=\"web-1\"}: keelson_daemon::log::tests: probe\n\
             <7>pod{name=\"web-1\"}: keelson_daemon::log::tests: detail\n"
        );
    }

    #[test]
    fn the_journal_is_the_stream_journal_stream_names() {
        let cases = [
            ("8:12345", 8, 12345, true),
            ("8:12345", 8, 12346, false),
            ("9:12345", 8, 12345, false),
            ("", 8, 12345, false),
            ("garbage", 8, 12345, false),
        ];
        for (stream, dev, ino, expected) in cases {
            assert_eq!(
                journal_stream_is(stream, dev, ino),
                expected,
                "{stream:?} vs {dev}:{ino}"
            );
        }
    }
}
