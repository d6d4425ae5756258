//! The kubelet's `streamingConnectionIdleTimeout`: a streaming connection on which nothing
//! moved for that long is closed. [`IdleIo`] wraps the upgraded connection; once it has been
//! idle for the timeout its reads fail with `TimedOut`, which every transport (WebSocket, SPDY,
//! SPDY in WebSocket) treats like a vanished client: the session ends and its exec is killed.
//!
//! Bytes in either direction count as activity (the kubelet's WebSocket server counts only what
//! it reads, spdystream both ways), so a session streaming a process's output stays open.

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    time::{Instant, Sleep},
};

/// The kubelet's default `streamingConnectionIdleTimeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(4 * 3600);

/// Parses `--streaming-connection-idle-timeout`: a duration such as `4h`, `30m`, `1h30m`,
/// `90s`, or `0`/`0s` for no limit.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    if matches!(text, "0" | "0s" | "0m" | "0h") {
        return Ok(Duration::ZERO);
    }
    crate::join::parse_duration(text).map_err(|e| e.to_string())
}

/// A connection whose reads fail once it has been idle for a time.
#[derive(Debug)]
pub struct IdleIo<T> {
    inner: T,
    timeout: Duration,
    last_activity: Instant,
    /// Fires at the earliest moment the connection can have been idle long enough; moved on
    /// lazily, so activity costs a clock read and not a timer update.
    check: Pin<Box<Sleep>>,
}

impl<T> IdleIo<T> {
    /// Wraps `inner`; `timeout` zero disables the limit (the kubelet's `0s`).
    pub fn new(inner: T, timeout: Duration) -> Self {
        let now = Instant::now();
        let first = if timeout.is_zero() {
            // Far enough never to matter, near enough not to overflow.
            now + Duration::from_secs(100 * 365 * 24 * 3600)
        } else {
            now + timeout
        };
        Self {
            inner,
            timeout,
            last_activity: now,
            check: Box::pin(tokio::time::sleep_until(first)),
        }
    }

    /// Whether the connection has been idle for the whole timeout (and re-arms the check
    /// otherwise).
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.timeout.is_zero() {
            return false;
        }
        loop {
            if self.check.as_mut().poll(cx).is_pending() {
                return false;
            }
            let due = self.last_activity + self.timeout;
            if due <= Instant::now() {
                return true;
            }
            self.check.as_mut().reset(due);
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.last_activity = Instant::now();
                }
                Poll::Ready(result)
            }
            Poll::Pending if this.poll_expired(cx) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("streaming connection idle for {} s", this.timeout.as_secs()),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = Pin::new(&mut this.inner).poll_write(cx, data);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) {
            this.last_activity = Instant::now();
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    #[tokio::test]
    async fn reads_fail_only_after_a_whole_idle_timeout() {
        let timeout = Duration::from_millis(300);
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let mut io = IdleIo::new(ours, timeout);
        let mut buf = [0u8; 16];
        // Activity both ways keeps it open past several timeouts.
        for _ in 0..4 {
            tokio::time::sleep(timeout / 2).await;
            theirs.write_all(b"in").await.expect("write");
            assert_eq!(io.read(&mut buf).await.expect("read"), 2);
            tokio::time::sleep(timeout / 2).await;
            io.write_all(b"out").await.expect("write");
            assert_eq!(theirs.read(&mut buf).await.expect("read"), 3);
        }
        let started = Instant::now();
        let error = io.read(&mut buf).await.expect_err("idle");
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        // Counted from the last write, not from the read that waited.
        let waited = started.elapsed();
        assert!(waited >= timeout - Duration::from_millis(50), "{waited:?}");
        assert!(waited < timeout * 5, "{waited:?}");
    }

    #[test]
    fn timeouts_parse_like_the_kubelet_flag() {
        assert_eq!(parse_timeout("4h"), Ok(DEFAULT_IDLE_TIMEOUT));
        assert_eq!(parse_timeout("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_timeout("0s"), Ok(Duration::ZERO));
        assert!(parse_timeout("soon").is_err());
        assert!(parse_timeout("").is_err());
    }

    #[tokio::test]
    async fn zero_never_times_out() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        let mut io = IdleIo::new(ours, Duration::ZERO);
        let mut buf = [0u8; 4];
        let read = tokio::spawn(async move { io.read(&mut buf).await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        theirs.write_all(b"late").await.expect("write");
        assert_eq!(read.await.expect("task").expect("read"), 4);
    }
}
