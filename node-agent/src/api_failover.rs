//! Client-side API server failover for `run --api-servers URL,URL,...`, as k3s's agent load
//! balancer does it: a kubeconfig names one server, so the agent listens on
//! `127.0.0.1:<ephemeral port>` and its API client talks to that. Each accepted connection is
//! relayed (TCP, byte for byte: TLS stays end to end between the client and the API server) to
//! the first server that accepts a TCP connection within [`CONNECT_TIMEOUT`], trying the list
//! in order starting from the last server that worked. A control plane that dies closes its
//! connections; the client's next request (a watch reconnecting, the next Lease renewal) opens a
//! new connection, which goes to a live server.
//!
//! The client still verifies the server's certificate against the cluster CA: every keelson
//! control plane's serving certificate names `127.0.0.1`, which is the address the client
//! dials (unless the kubeconfig sets `tls-server-name`, which is kept).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::net::{TcpListener, TcpStream};

/// How long a server may take to accept a TCP connection before the next one is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// One API server of `--api-servers`: its URL and where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiServer {
    /// The URL as given.
    pub url: String,
    /// The host (a name or an address; IPv6 without brackets).
    pub host: String,
    /// The port (443 when the URL names none).
    pub port: u16,
}

impl std::fmt::Display for ApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

/// Why `--api-servers` was refused or no API server could be reached.
#[derive(Debug, thiserror::Error)]
pub enum FailoverError {
    /// Not a URL at all.
    #[error("{text:?} is not a URL like https://10.0.0.1:6443")]
    NotAUrl {
        /// What was given.
        text: String,
        /// Why it does not parse.
        #[source]
        source: hyper::http::uri::InvalidUri,
    },
    /// A URL of another scheme than https.
    #[error("{text:?} is not an https:// URL (the API is served over HTTPS)")]
    NotHttps {
        /// What was given.
        text: String,
    },
    /// A URL without a host.
    #[error("{text:?} names no host")]
    NoHost {
        /// What was given.
        text: String,
    },
    /// A URL with `user:password@`.
    #[error("{text:?} must not carry credentials")]
    Credentials {
        /// What was given.
        text: String,
    },
    /// A URL with a path or a query.
    #[error("{text:?} has a path or query: give only https://HOST[:PORT]")]
    PathOrQuery {
        /// What was given.
        text: String,
    },
    /// A port that is not a number in 1..=65535.
    #[error("{text:?} has no valid port number")]
    BadPort {
        /// What was given.
        text: String,
    },
    /// No server accepted a connection: each one's failure, in the order tried.
    #[error("{}", .0.iter().map(|e| crate::error_chain(e)).collect::<Vec<_>>().join("; "))]
    NoServer(Vec<ConnectError>),
    /// The proxy's own address did not make a URL.
    #[error("the proxy's URL")]
    ProxyUrl(#[source] hyper::http::uri::InvalidUri),
}

/// Why one API server did not accept a connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The connection failed.
    #[error("{server}")]
    Refused {
        /// The server.
        server: ApiServer,
        /// The system's answer.
        #[source]
        source: std::io::Error,
    },
    /// No answer within [`CONNECT_TIMEOUT`].
    #[error("{server}: no connection within {CONNECT_TIMEOUT:?}")]
    Timeout {
        /// The server.
        server: ApiServer,
    },
}

/// Parses one `--api-servers` URL: `https://HOST[:PORT]` (no path, no credentials).
pub fn parse_server(text: &str) -> Result<ApiServer, FailoverError> {
    let given = || text.to_owned();
    let uri: hyper::Uri = text.parse().map_err(|source| FailoverError::NotAUrl {
        text: given(),
        source,
    })?;
    if uri.scheme_str() != Some("https") {
        return Err(FailoverError::NotHttps { text: given() });
    }
    let authority = uri
        .authority()
        .ok_or_else(|| FailoverError::NoHost { text: given() })?;
    if authority.as_str().contains('@') {
        return Err(FailoverError::Credentials { text: given() });
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(FailoverError::PathOrQuery { text: given() });
    }
    let raw_host = authority.host();
    let host = raw_host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(FailoverError::NoHost { text: given() });
    }
    let port = match authority.as_str().get(raw_host.len()..).unwrap_or_default() {
        "" => 443,
        rest => rest
            .strip_prefix(':')
            .and_then(|p| p.parse::<u16>().ok())
            .filter(|p| *p != 0)
            .ok_or_else(|| FailoverError::BadPort { text: given() })?,
    };
    Ok(ApiServer {
        url: text.to_owned(),
        host: host.to_owned(),
        port,
    })
}

/// The indices of `count` servers in the order to try them: `start` first, then the
/// following ones, wrapping around.
pub fn try_order(start: usize, count: usize) -> impl Iterator<Item = usize> {
    (0..count).map(move |k| (start + k) % count.max(1))
}

/// The servers and the one that last accepted a connection.
#[derive(Debug)]
struct Servers {
    list: Vec<ApiServer>,
    last_good: AtomicUsize,
}

impl Servers {
    /// Connects to the first server in [`try_order`] from the last good one that accepts
    /// within [`CONNECT_TIMEOUT`]; it becomes the last good one.
    async fn connect(&self) -> Result<(usize, TcpStream), FailoverError> {
        let start = self.last_good.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        for index in try_order(start, self.list.len()) {
            let server = &self.list[index];
            let attempt = tokio::time::timeout(
                CONNECT_TIMEOUT,
                TcpStream::connect((server.host.as_str(), server.port)),
            )
            .await;
            match attempt {
                Ok(Ok(stream)) => {
                    let previous = self.last_good.swap(index, Ordering::Relaxed);
                    if previous != index {
                        tracing::info!(server = %server, "API server failover: now using this server");
                    }
                    return Ok((index, stream));
                }
                Ok(Err(source)) => failures.push(ConnectError::Refused {
                    server: server.clone(),
                    source,
                }),
                Err(_) => failures.push(ConnectError::Timeout {
                    server: server.clone(),
                }),
            }
        }
        Err(FailoverError::NoServer(failures))
    }
}

/// The running proxy: where it listens. Dropping it does not stop it (it lives as long as the
/// runtime).
#[derive(Debug, Clone, Copy)]
pub struct Proxy {
    /// The loopback address the API client connects to.
    pub listen: SocketAddr,
}

/// Binds `127.0.0.1:0` and relays every accepted connection to one of `servers` (at least one).
pub async fn start(servers: Vec<ApiServer>) -> std::io::Result<Proxy> {
    if servers.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "no API server to relay to",
        ));
    }
    let listener = TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await?;
    let listen = listener.local_addr()?;
    let servers = Arc::new(Servers {
        list: servers,
        last_good: AtomicUsize::new(0),
    });
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((client, _)) => {
                    tokio::spawn(relay(client, Arc::clone(&servers)));
                }
                Err(error) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(%error, "API failover proxy: accepting a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(Proxy { listen })
}

async fn relay(mut client: TcpStream, servers: Arc<Servers>) {
    let (index, mut upstream) = match servers.connect().await {
        Ok(connected) => connected,
        Err(failures) => {
            tracing::warn!(%failures, "no API server accepts connections");
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    if let Err(error) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(server = %servers.list[index], %error, "API connection ended");
    }
}

/// `config` pointed at the proxy: `https://127.0.0.1:<port>` with the kubeconfig's path, the
/// cluster CA and credentials unchanged.
pub fn through_proxy(
    mut config: kube::Config,
    proxy: Proxy,
) -> Result<kube::Config, FailoverError> {
    let path = config
        .cluster_url
        .path_and_query()
        .map_or("/", hyper::http::uri::PathAndQuery::as_str)
        .to_owned();
    config.cluster_url = format!("https://{}{path}", proxy.listen)
        .parse()
        .map_err(FailoverError::ProxyUrl)?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_host_and_port() {
        let server = parse_server("https://10.0.0.1:6443").expect("parse");
        assert_eq!((server.host.as_str(), server.port), ("10.0.0.1", 6443));
        let server = parse_server("https://cp-1.example/").expect("parse");
        assert_eq!((server.host.as_str(), server.port), ("cp-1.example", 443));
        let server = parse_server("https://[::1]:6443").expect("parse");
        assert_eq!((server.host.as_str(), server.port), ("::1", 6443));
    }

    #[test]
    fn bad_urls_are_one_line_errors() {
        for (text, cause) in [
            ("http://10.0.0.1:6443", "not an https:// URL"),
            ("10.0.0.1:6443", "not an https:// URL"),
            ("https://10.0.0.1:6443/api", "has a path"),
            ("https://user:pw@10.0.0.1", "credentials"),
            ("https://10.0.0.1:port", "no valid port"),
            ("https://10.0.0.1:0", "no valid port"),
            ("", "is not a URL"),
        ] {
            let error = parse_server(text).expect_err(text);
            let error = crate::error_chain(&error);
            assert!(error.contains(cause), "{text}: {error}");
            assert!(!error.contains('\n'), "{text}: {error}");
        }
    }

    #[test]
    fn a_url_that_does_not_parse_says_why_and_failed_connections_are_listed() {
        let error = parse_server("https://a b").expect_err("a space");
        assert_eq!(
            crate::Chained::new(&error).to_string(),
            "\"https://a b\" is not a URL like https://10.0.0.1:6443: invalid uri character"
        );
        let server = |url| parse_server(url).expect("URL");
        let none = FailoverError::NoServer(vec![
            ConnectError::Refused {
                server: server("https://10.0.0.1:6443"),
                source: std::io::Error::from_raw_os_error(libc::ECONNREFUSED),
            },
            ConnectError::Timeout {
                server: server("https://10.0.0.2:6443"),
            },
        ]);
        assert_eq!(
            none.to_string(),
            "https://10.0.0.1:6443: Connection refused (os error 111); \
             https://10.0.0.2:6443: no connection within 1s"
        );
    }

    #[test]
    fn servers_are_tried_from_the_last_good_one_wrapping_around() {
        assert_eq!(try_order(0, 3).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(try_order(1, 3).collect::<Vec<_>>(), [1, 2, 0]);
        assert_eq!(try_order(2, 3).collect::<Vec<_>>(), [2, 0, 1]);
        assert_eq!(try_order(0, 1).collect::<Vec<_>>(), [0]);
    }

    /// A listener that answers every connection with `tag` and closes it.
    async fn tagged_server(tag: &'static [u8]) -> (ApiServer, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                use tokio::io::AsyncWriteExt as _;
                let _ = stream.write_all(tag).await;
            }
        });
        let server = parse_server(&format!("https://127.0.0.1:{port}")).expect("URL");
        (server, task)
    }

    async fn read_through(proxy: Proxy) -> Vec<u8> {
        use tokio::io::AsyncReadExt as _;
        let mut stream = TcpStream::connect(proxy.listen).await.expect("connect");
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
            .await
            .expect("an answer within 5 s")
            .expect("read");
        answer
    }

    #[tokio::test]
    async fn connections_go_to_the_next_server_when_one_refuses_and_stay_there() {
        // A port with nothing listening: bound, then closed.
        let dead = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let port = listener.local_addr().expect("address").port();
            parse_server(&format!("https://127.0.0.1:{port}")).expect("URL")
        };
        let (first, first_task) = tagged_server(b"first").await;
        let (second, _second_task) = tagged_server(b"second").await;
        let proxy = start(vec![dead, first, second]).await.expect("proxy");
        assert_eq!(read_through(proxy).await, b"first");
        assert_eq!(read_through(proxy).await, b"first");
        first_task.abort();
        let _ = first_task.await;
        assert_eq!(read_through(proxy).await, b"second");
        assert_eq!(read_through(proxy).await, b"second");
    }

    #[test]
    fn the_client_config_points_at_the_proxy() {
        let mut config = kube::Config::new("https://10.0.0.1:6443/".parse().expect("URL"));
        config.root_cert = Some(vec![b"ca".to_vec()]);
        let proxy = Proxy {
            listen: "127.0.0.1:40000".parse().expect("address"),
        };
        let config = through_proxy(config, proxy).expect("config");
        assert_eq!(config.cluster_url.to_string(), "https://127.0.0.1:40000/");
        assert_eq!(config.root_cert, Some(vec![b"ca".to_vec()]));
    }
}
