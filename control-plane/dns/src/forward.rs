//! Forwarding of names outside the cluster domain to the node's resolvers, as CoreDNS's
//! `forward . /etc/resolv.conf` does for kube-dns.
//!
//! The upstreams are the `nameserver` lines of the node's `resolv.conf` that are not loopback
//! addresses (a loopback stub such as systemd-resolved's `127.0.0.53` would not answer from
//! where the pods' queries are relayed and may loop back here); when `/etc/resolv.conf` names
//! only loopback resolvers, systemd-resolved's upstream list
//! (`/run/systemd/resolve/resolv.conf`) is read instead, as the kubelet's `--resolv-conf`
//! advice goes. The query's bytes go to each upstream in turn over UDP, once more over TCP
//! when the answer is truncated, each attempt bounded by a timeout; the first answer wins.
//! When every upstream fails the client gets SERVFAIL.

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    time::Duration,
};

use hickory_server::proto::op::Message;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpStream, UdpSocket},
};

/// The node's resolver configuration file.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// systemd-resolved's list of the real upstreams.
pub const SYSTEMD_RESOLV_CONF: &str = "/run/systemd/resolve/resolv.conf";
/// How long one upstream gets for one attempt.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Upstreams tried per query at most (glibc's `MAXNS`).
const MAX_UPSTREAMS: usize = 3;
/// The largest UDP answer accepted.
const MAX_UDP: usize = 4096;

/// Why a query could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// There is no upstream to ask.
    #[error("no upstream resolver")]
    NoUpstream,
    /// An upstream did not answer in time.
    #[error("upstream {upstream} timed out")]
    Timeout {
        /// The upstream asked.
        upstream: SocketAddr,
    },
    /// Talking to an upstream failed.
    #[error("upstream {upstream} failed")]
    Io {
        /// The upstream asked.
        upstream: SocketAddr,
        /// The socket error.
        #[source]
        source: std::io::Error,
    },
    /// An upstream answered something that is not a DNS answer to this query.
    #[error("upstream {upstream} answered garbage")]
    Garbage {
        /// The upstream asked.
        upstream: SocketAddr,
    },
}

/// The non-loopback `nameserver` addresses of `resolv.conf` text, port 53.
pub fn nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let line = line.split(['#', ';']).next().unwrap_or_default();
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next())?
        })
        .filter_map(|word| word.parse::<IpAddr>().ok())
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
        .map(|ip| SocketAddr::new(ip, 53))
        .take(MAX_UPSTREAMS)
        .collect()
}

/// The upstreams named by `resolv_conf`, or by `systemd` when `resolv_conf` names only
/// loopback resolvers (or none). Missing files name none.
pub fn upstreams_from(resolv_conf: &Path, systemd: &Path) -> Vec<SocketAddr> {
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let upstreams = nameservers(&read(resolv_conf));
    if upstreams.is_empty() {
        nameservers(&read(systemd))
    } else {
        upstreams
    }
}

/// Where queries outside the cluster domain go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
}

impl Forwarder {
    /// Forwards to `upstreams` (tried in order), each attempt bounded by `timeout`.
    pub fn new(upstreams: Vec<SocketAddr>, timeout: Duration) -> Self {
        Self { upstreams, timeout }
    }

    /// Forwards to the resolvers of the node's `resolv_conf` ([`upstreams_from`] with
    /// [`SYSTEMD_RESOLV_CONF`]), [`DEFAULT_TIMEOUT`] per attempt.
    pub fn from_resolv_conf(resolv_conf: &Path) -> Self {
        Self::new(
            upstreams_from(resolv_conf, Path::new(SYSTEMD_RESOLV_CONF)),
            DEFAULT_TIMEOUT,
        )
    }

    /// The upstreams, in order.
    pub fn upstreams(&self) -> &[SocketAddr] {
        &self.upstreams
    }

    /// Sends `query` (a DNS message with id `id`) to the upstreams until one answers.
    pub async fn exchange(&self, query: &[u8], id: u16) -> Result<Message, ForwardError> {
        let mut last = ForwardError::NoUpstream;
        for &upstream in &self.upstreams {
            match self.ask(upstream, query, id).await {
                Ok(answer) => return Ok(answer),
                Err(error) => {
                    tracing::debug!(%error, "forwarding a DNS query");
                    last = error;
                }
            }
        }
        Err(last)
    }

    async fn ask(
        &self,
        upstream: SocketAddr,
        query: &[u8],
        id: u16,
    ) -> Result<Message, ForwardError> {
        let answer = self
            .bounded(upstream, udp_exchange(upstream, query))
            .await?;
        let message = parse(upstream, &answer, id)?;
        if !message.metadata.truncation {
            return Ok(message);
        }
        let answer = self
            .bounded(upstream, tcp_exchange(upstream, query))
            .await?;
        parse(upstream, &answer, id)
    }

    async fn bounded(
        &self,
        upstream: SocketAddr,
        exchange: impl Future<Output = std::io::Result<Vec<u8>>>,
    ) -> Result<Vec<u8>, ForwardError> {
        match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => Err(ForwardError::Timeout { upstream }),
            Ok(Err(source)) => Err(ForwardError::Io { upstream, source }),
            Ok(Ok(bytes)) => Ok(bytes),
        }
    }
}

fn parse(upstream: SocketAddr, bytes: &[u8], id: u16) -> Result<Message, ForwardError> {
    Message::from_vec(bytes)
        .ok()
        .filter(|m| m.metadata.id == id)
        .ok_or(ForwardError::Garbage { upstream })
}

async fn udp_exchange(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = if upstream.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buffer = vec![0; MAX_UDP];
    let length = socket.recv(&mut buffer).await?;
    buffer.truncate(length);
    Ok(buffer)
}

async fn tcp_exchange(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(upstream).await?;
    let length = u16::try_from(query.len())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut framed = length.to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    let mut prefix = [0u8; 2];
    stream.read_exact(&mut prefix).await?;
    let mut answer = vec![0; usize::from(u16::from_be_bytes(prefix))];
    stream.read_exact(&mut answer).await?;
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_skip_loopback_stubs() {
        let cases = [
            (
                "plain",
                "nameserver 10.0.0.2\nnameserver 10.0.0.3\n",
                vec!["10.0.0.2:53", "10.0.0.3:53"],
            ),
            (
                "stub only",
                "nameserver 127.0.0.53\noptions edns0\n",
                vec![],
            ),
            (
                "stub mixed",
                "nameserver 127.0.0.53\nnameserver 192.0.2.1 # x\n",
                vec!["192.0.2.1:53"],
            ),
            (
                "ipv6",
                "nameserver ::1\nnameserver 2001:db8::1\n",
                vec!["[2001:db8::1]:53"],
            ),
            (
                "at most three",
                "nameserver 1.1.1.1\nnameserver 1.1.1.2\nnameserver 1.1.1.3\nnameserver 1.1.1.4\n",
                vec!["1.1.1.1:53", "1.1.1.2:53", "1.1.1.3:53"],
            ),
            (
                "comments and junk",
                "; nameserver 9.9.9.9\nnameserver nonsense\nsearch x\n",
                vec![],
            ),
        ];
        for (name, text, expected) in cases {
            let got: Vec<String> = nameservers(text).iter().map(ToString::to_string).collect();
            assert_eq!(got, expected, "{name}");
        }
    }

    #[test]
    fn systemd_list_replaces_a_stub_only_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let etc = dir.path().join("resolv.conf");
        let systemd = dir.path().join("systemd.conf");
        std::fs::write(&etc, "nameserver 127.0.0.53\n").expect("write");
        std::fs::write(&systemd, "nameserver 203.0.113.7\n").expect("write");
        assert_eq!(
            upstreams_from(&etc, &systemd),
            vec!["203.0.113.7:53".parse().expect("addr")]
        );
        std::fs::write(&etc, "nameserver 198.51.100.1\n").expect("write");
        assert_eq!(
            upstreams_from(&etc, &systemd),
            vec!["198.51.100.1:53".parse().expect("addr")]
        );
        assert!(upstreams_from(&dir.path().join("none"), &dir.path().join("none2")).is_empty());
    }
}
