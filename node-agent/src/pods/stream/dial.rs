//! Connections for `kubectl port-forward`: a TCP connection to `127.0.0.1:port` inside the
//! pod's network namespace, or to `[::1]:port` when IPv4 fails (as containerd's CRI does: a
//! server may listen on one family only), with no helper binary in the image. The socket is created and connected
//! on a thread of its own that entered the namespace (`setns`) and ends right after, so no
//! thread of the agent is ever left in a pod's namespace; tokio then owns the socket.

use std::{
    io,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::AsFd as _,
    path::PathBuf,
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use tokio::net::TcpStream;

/// How long a connect inside the pod may take.
const CONNECT_LIMIT: Duration = Duration::from_secs(10);

/// Opens connections to a pod's ports.
#[async_trait]
pub trait PodDialer: Send + Sync + std::fmt::Debug {
    /// Connects to `port` on the loopback of the pod whose sandbox's main process is `pid`.
    async fn dial(&self, pid: u32, port: u16) -> io::Result<TcpStream>;
}

/// [`PodDialer`] through `/proc/<pid>/ns/net`.
#[derive(Debug, Clone, Copy, Default)]
pub struct NetnsDialer;

#[async_trait]
impl PodDialer for NetnsDialer {
    async fn dial(&self, pid: u32, port: u16) -> io::Result<TcpStream> {
        let path = PathBuf::from(format!("/proc/{pid}/ns/net"));
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("netns-dial".to_owned())
            .spawn(move || {
                let _ = tx.send(connect_in(&path, port));
            })?;
        let socket = rx
            .await
            .map_err(|_| io::Error::other("the connecting thread ended"))??;
        socket.set_nonblocking(true)?;
        TcpStream::from_std(socket)
    }
}

/// Neither loopback answered: both causes, as containerd reports them.
#[derive(Debug, thiserror::Error)]
#[error("IPv4: {v4} IPv6 {v6}")]
pub struct LoopbackUnreachable {
    /// Connecting to `127.0.0.1`.
    pub v4: io::Error,
    /// Connecting to `[::1]`.
    pub v6: io::Error,
}

/// Enters the network namespace at `path` (this thread only, which ends afterwards) and
/// connects to the loopback's `port`, IPv4 first.
fn connect_in(path: &std::path::Path, port: u16) -> io::Result<std::net::TcpStream> {
    let namespace = std::fs::File::open(path)?;
    nix::sched::setns(namespace.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(io::Error::from)?;
    let connect =
        |address: SocketAddr| std::net::TcpStream::connect_timeout(&address, CONNECT_LIMIT);
    let v4 = match connect(SocketAddr::from((Ipv4Addr::LOCALHOST, port))) {
        Ok(stream) => return Ok(stream),
        Err(error) => error,
    };
    match connect(SocketAddr::from((Ipv6Addr::LOCALHOST, port))) {
        Ok(stream) => Ok(stream),
        Err(v6) => Err(io::Error::new(v4.kind(), LoopbackUnreachable { v4, v6 })),
    }
}

/// One pod's port-forward target: the dialer, the sandbox it connects in, and the kubelet's
/// wording for a failure.
#[derive(Debug, Clone)]
pub struct Forwarder {
    /// How connections are made.
    pub dialer: Arc<dyn PodDialer>,
    /// The sandbox's main process.
    pub pid: u32,
    /// The sandbox container's id (the CRI's pod sandbox id, which the kubelet names).
    pub sandbox_id: String,
}

impl Forwarder {
    /// A connection to `port`, or the message the kubelet writes on the error stream.
    pub async fn connect(&self, port: u16) -> Result<TcpStream, String> {
        match self.dialer.dial(self.pid, port).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                Ok(stream)
            }
            Err(error) => Err(forward_error(&self.sandbox_id, port, &error)),
        }
    }
}

/// The kubelet's message for a port that cannot be reached (its CRI runtime's words inside).
pub fn forward_error(sandbox_id: &str, port: u16, error: &io::Error) -> String {
    let cause = |error: &io::Error| match error.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        io::ErrorKind::TimedOut => "i/o timeout".to_owned(),
        _ => error.to_string(),
    };
    let both = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<LoopbackUnreachable>());
    let attempts = match both {
        Some(both) => format!(
            "IPv4: dial tcp4 127.0.0.1:{port}: connect: {} IPv6 dial tcp6 [::1]:{port}: \
             connect: {} ",
            cause(&both.v4),
            cause(&both.v6)
        ),
        None => format!(
            "IPv4: dial tcp4 127.0.0.1:{port}: connect: {}",
            cause(error)
        ),
    };
    format!(
        "error forwarding port {port} to pod {sandbox_id}, uid : failed to connect to \
         localhost:{port} inside namespace \"{sandbox_id}\", {attempts}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_port_reads_as_the_kubelet_says_it() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(
            forward_error("abc123", 80, &refused),
            "error forwarding port 80 to pod abc123, uid : failed to connect to localhost:80 \
             inside namespace \"abc123\", IPv4: dial tcp4 127.0.0.1:80: connect: connection \
             refused"
        );
        let both = io::Error::new(
            io::ErrorKind::ConnectionRefused,
            LoopbackUnreachable {
                v4: io::Error::from(io::ErrorKind::ConnectionRefused),
                v6: io::Error::from_raw_os_error(libc::EADDRNOTAVAIL),
            },
        );
        assert_eq!(
            forward_error("abc123", 80, &both),
            "error forwarding port 80 to pod abc123, uid : failed to connect to localhost:80 \
             inside namespace \"abc123\", IPv4: dial tcp4 127.0.0.1:80: connect: connection \
             refused IPv6 dial tcp6 [::1]:80: connect: Cannot assign requested address (os \
             error 99) "
        );
    }
}
