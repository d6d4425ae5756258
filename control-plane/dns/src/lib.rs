//! keelson's cluster DNS: answers `<service>.<namespace>.svc.<domain>` (A, AAAA, SRV, CNAME) from
//! the Services and EndpointSlices it watches through the API, as kube-dns/CoreDNS do.
//!
//! [`zone::build`] turns the objects into records (pure, unit-tested); [`ClusterDns`] holds the
//! current zone in hickory's in-memory zone handler behind a [`Catalog`] and swaps in a new one
//! on every change; [`serve`] answers UDP and TCP queries; [`run`] follows the API with kube-rs
//! reflectors. Names outside the cluster domain go to the node's resolvers through
//! [`forward::Forwarder`] when one is set ([`ClusterDns::set_forwarder`]), else are refused.
#![forbid(unsafe_code)]

pub mod forward;
pub mod zone;

use std::{
    net::SocketAddr,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use futures_util::{FutureExt as _, StreamExt as _, stream};
use hickory_server::{
    Server,
    net::runtime::{Time, TokioRuntimeProvider},
    proto::op::{Header, HeaderCounts, Metadata, ResponseCode},
    proto::rr::{LowerName, Name},
    server::{Request, RequestHandler, ResponseHandler, ResponseInfo},
    store::in_memory::InMemoryZoneHandler,
    zone_handler::{AxfrPolicy, Catalog, MessageResponseBuilder, ZoneType},
};
use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::{
    Api, Client,
    runtime::{WatchStreamExt as _, reflector, watcher},
};

pub use zone::ZoneError;

/// The cluster domain Kubernetes uses by default.
pub const DEFAULT_DOMAIN: &str = "cluster.local";

/// How long queued changes are collected before the zone is rebuilt.
const DEBOUNCE: Duration = Duration::from_millis(20);

/// The cluster zone being served; [`ClusterDns::update`] replaces it atomically.
pub struct ClusterDns {
    domain: Name,
    serial: AtomicU32,
    queries: AtomicU64,
    catalog: RwLock<Arc<Catalog>>,
    forwarder: RwLock<Option<Arc<forward::Forwarder>>>,
}

impl std::fmt::Debug for ClusterDns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterDns")
            .field("domain", &self.domain)
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

impl ClusterDns {
    /// An empty zone for `domain` (e.g. [`DEFAULT_DOMAIN`]).
    pub fn new(domain: &str) -> Result<Self, ZoneError> {
        let domain = zone::domain_name(domain)?;
        let dns = Self {
            domain,
            serial: AtomicU32::new(0),
            queries: AtomicU64::new(0),
            catalog: RwLock::new(Arc::new(Catalog::new())),
            forwarder: RwLock::new(None),
        };
        dns.update(&[], &[]);
        Ok(dns)
    }

    /// The cluster domain, absolute.
    pub fn domain(&self) -> &Name {
        &self.domain
    }

    /// Rebuilds the zone from `services` and `slices` and serves it from now on.
    pub fn update(&self, services: &[Service], slices: &[EndpointSlice]) {
        let serial = self.serial.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let records = zone::build(&self.domain, services, slices, serial);
        let count = records.len();
        let handler = match InMemoryZoneHandler::<TokioRuntimeProvider>::new(
            self.domain.clone(),
            records,
            ZoneType::Primary,
            AxfrPolicy::Deny,
        ) {
            Ok(handler) => handler,
            Err(error) => {
                // Only a zone without SOA fails, and build() always adds one.
                tracing::error!(%error, "cannot build the cluster zone; keeping the previous one");
                return;
            }
        };
        let mut catalog = Catalog::new();
        catalog.upsert(LowerName::new(&self.domain), vec![Arc::new(handler)]);
        let catalog = Arc::new(catalog);
        match self.catalog.write() {
            Ok(mut current) => *current = catalog,
            Err(poisoned) => *poisoned.into_inner() = catalog,
        }
        tracing::debug!(serial, record_sets = count, "cluster zone updated");
    }

    /// How many queries have been answered (or refused) so far.
    pub fn queries(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    /// Forwards names outside the cluster domain with `forwarder` from now on (`None`:
    /// refuse them).
    pub fn set_forwarder(&self, forwarder: Option<forward::Forwarder>) {
        let forwarder = forwarder.map(Arc::new);
        match self.forwarder.write() {
            Ok(mut current) => *current = forwarder,
            Err(poisoned) => *poisoned.into_inner() = forwarder,
        }
    }

    fn forwarder(&self) -> Option<Arc<forward::Forwarder>> {
        match self.forwarder.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn current(&self) -> Arc<Catalog> {
        match self.catalog.read() {
            Ok(current) => Arc::clone(&current),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }
}

/// Answers from the zone current when the query arrives.
#[derive(Debug, Clone)]
struct Handler(Arc<ClusterDns>);

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        self.0.queries.fetch_add(1, Ordering::Relaxed);
        if let Some(forwarder) = self.0.forwarder()
            && let Ok(info) = request.request_info()
            && !LowerName::new(&self.0.domain).zone_of(info.query.name())
        {
            return forward(&forwarder, request, response_handle).await;
        }
        let catalog = self.0.current();
        catalog
            .handle_request::<R, T>(request, response_handle)
            .await
    }
}

/// Answers `request` with what the upstreams say, or SERVFAIL when none answers.
async fn forward<R: ResponseHandler>(
    forwarder: &forward::Forwarder,
    request: &Request,
    mut response_handle: R,
) -> ResponseInfo {
    let builder = MessageResponseBuilder::from_message_request(request);
    let mut metadata = Metadata::response_from_request(&request.metadata);
    let sent = match forwarder
        .exchange(request.as_slice(), request.metadata.id)
        .await
    {
        Ok(answer) => {
            metadata.response_code = answer.metadata.response_code;
            metadata.recursion_available = answer.metadata.recursion_available;
            let response = builder.build(
                metadata,
                answer.answers.iter(),
                answer.authorities.iter(),
                std::iter::empty(),
                answer.additionals.iter(),
            );
            response_handle.send_response(response).await
        }
        Err(error) => {
            tracing::debug!(%error, "no upstream answered; SERVFAIL");
            metadata.response_code = ResponseCode::ServFail;
            let response = builder.error_msg(&request.metadata, ResponseCode::ServFail);
            response_handle.send_response(response).await
        }
    };
    sent.unwrap_or_else(|error| {
        tracing::debug!(%error, "cannot send a forwarded DNS answer");
        metadata.response_code = ResponseCode::ServFail;
        ResponseInfo::from(Header {
            metadata,
            counts: HeaderCounts::default(),
        })
    })
}

/// How [`serve_with`] binds its sockets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BindOptions {
    /// `IP_FREEBIND`: bind to an address the node does not carry yet (a node-local DNS on an
    /// address that appears with the first pod's interface). Linux only; needs a fixed port.
    pub freebind: bool,
}

/// Serves `dns` over UDP and TCP on each of `addresses`; returns the bound addresses (port 0
/// picks a free port) and the server, which stops when dropped.
pub async fn serve(
    dns: Arc<ClusterDns>,
    addresses: &[SocketAddr],
) -> anyhow::Result<(Vec<SocketAddr>, Server<impl RequestHandler>)> {
    serve_with(dns, addresses, BindOptions::default()).await
}

/// [`serve`] with socket options.
pub async fn serve_with(
    dns: Arc<ClusterDns>,
    addresses: &[SocketAddr],
    options: BindOptions,
) -> anyhow::Result<(Vec<SocketAddr>, Server<impl RequestHandler>)> {
    let mut server = Server::new(Handler(dns));
    let mut bound = Vec::new();
    for address in addresses {
        let (udp, tcp) = bind(*address, options)?;
        let local = udp.local_addr().context("no local address")?;
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 64);
        bound.push(local);
    }
    Ok((bound, server))
}

fn set_freebind(socket: &socket2::Socket, address: SocketAddr) -> std::io::Result<()> {
    match address {
        SocketAddr::V4(_) => socket.set_freebind_v4(true),
        SocketAddr::V6(_) => socket.set_freebind_v6(true),
    }
}

/// A UDP socket and a TCP listener on the same address (the TCP one on the UDP one's port).
/// With port 0 the kernel picks the UDP port, and that TCP port may be taken (by any
/// connection's local end): then another UDP port is tried, up to 16 times.
fn bind(
    address: SocketAddr,
    options: BindOptions,
) -> anyhow::Result<(tokio::net::UdpSocket, tokio::net::TcpListener)> {
    let tries = if address.port() == 0 { 16 } else { 1 };
    let mut attempt = 1;
    loop {
        match bind_once(address, options) {
            Err(error) if attempt < tries && tcp_port_taken(&error) => attempt += 1,
            result => return result,
        }
    }
}

/// Whether `error` is [`bind_once`]'s TCP bind failing with `EADDRINUSE`.
fn tcp_port_taken(error: &anyhow::Error) -> bool {
    error.to_string().starts_with("cannot bind DNS TCP")
        && error
            .root_cause()
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::AddrInUse)
}

fn bind_once(
    address: SocketAddr,
    options: BindOptions,
) -> anyhow::Result<(tokio::net::UdpSocket, tokio::net::TcpListener)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = Domain::for_address(address);
    let udp = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))
        .context("cannot open a UDP socket")?;
    if options.freebind {
        set_freebind(&udp, address).context("cannot set IP_FREEBIND on the DNS UDP socket")?;
    }
    udp.set_nonblocking(true)
        .context("cannot make the DNS UDP socket non-blocking")?;
    udp.bind(&address.into())
        .with_context(|| format!("cannot bind DNS UDP {address}"))?;
    let local = udp
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .context("no local address")?;
    let tcp = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))
        .context("cannot open a TCP socket")?;
    tcp.set_reuse_address(true)
        .context("cannot set SO_REUSEADDR on the DNS TCP socket")?;
    if options.freebind {
        set_freebind(&tcp, address).context("cannot set IP_FREEBIND on the DNS TCP socket")?;
    }
    tcp.set_nonblocking(true)
        .context("cannot make the DNS TCP socket non-blocking")?;
    tcp.bind(&local.into())
        .with_context(|| format!("cannot bind DNS TCP {local}"))?;
    tcp.listen(128)
        .with_context(|| format!("cannot listen on DNS TCP {local}"))?;
    let udp = tokio::net::UdpSocket::from_std(udp.into())
        .context("cannot register the DNS UDP socket")?;
    let tcp = tokio::net::TcpListener::from_std(tcp.into())
        .context("cannot register the DNS TCP listener")?;
    Ok((udp, tcp))
}

/// Follows Services and EndpointSlices through the API and keeps `dns` up to date until the
/// watches end (they retry with back-off on errors, so in practice: until cancelled).
pub async fn run(client: Client, dns: Arc<ClusterDns>) -> anyhow::Result<()> {
    let (services, services_writer) = reflector::store::<Service>();
    let (slices, slices_writer) = reflector::store::<EndpointSlice>();
    let service_events = watcher(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(services_writer)
    .map(|event| event.map(|_| ()));
    let slice_events = watcher(
        Api::<EndpointSlice>::all(client),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(slices_writer)
    .map(|event| event.map(|_| ()));
    let mut events = stream::select(service_events, slice_events).boxed();
    while let Some(event) = events.next().await {
        if let Err(error) = event {
            tracing::warn!(%error, "watching Services/EndpointSlices for DNS; retrying");
            continue;
        }
        // Collect what arrives in a short window, then rebuild once.
        let deadline = tokio::time::sleep(DEBOUNCE);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => break,
                next = events.next() => match next {
                    Some(Err(error)) => tracing::warn!(%error, "watching for DNS; retrying"),
                    Some(Ok(())) => {}
                    None => break,
                },
            }
        }
        // Serve a partial view only once both initial lists are in. Waiting here would stall:
        // the streams that complete those lists are polled by this loop.
        let services_ready = services.wait_until_ready().now_or_never();
        let slices_ready = slices.wait_until_ready().now_or_never();
        if !matches!(services_ready, Some(Ok(()))) || !matches!(slices_ready, Some(Ok(()))) {
            continue;
        }
        let current_services: Vec<Service> =
            services.state().iter().map(|s| (**s).clone()).collect();
        let current_slices: Vec<EndpointSlice> =
            slices.state().iter().map(|s| (**s).clone()).collect();
        dns.update(&current_services, &current_slices);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_use(context: &'static str) -> anyhow::Error {
        anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::AddrInUse)).context(context)
    }

    #[test]
    fn only_a_taken_tcp_port_is_tried_again() {
        assert!(tcp_port_taken(&in_use(
            "cannot bind DNS TCP 127.0.0.1:5353"
        )));
        assert!(!tcp_port_taken(&in_use("cannot bind DNS UDP 127.0.0.1:53")));
        let denied =
            anyhow::Error::from(std::io::Error::from(std::io::ErrorKind::PermissionDenied))
                .context("cannot bind DNS TCP 127.0.0.1:53");
        assert!(!tcp_port_taken(&denied));
    }

    /// A fake upstream on loopback answering every query with one A record 192.0.2.9 (or
    /// staying silent), and the cluster DNS forwarding to it.
    async fn forwarding(silent: bool) -> hickory_server::proto::op::Message {
        use hickory_server::proto::{
            op::{Message, Query},
            rr::{RData, Record, RecordType, rdata::A},
        };
        let upstream = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let upstream_address = upstream.local_addr().expect("addr");
        tokio::spawn(async move {
            let mut buffer = vec![0; 512];
            while let Ok((length, peer)) = upstream.recv_from(&mut buffer).await {
                if silent {
                    continue;
                }
                let query = Message::from_vec(&buffer[..length]).expect("query");
                let mut answer = Message::response(query.metadata.id, query.metadata.op_code);
                answer.add_queries(query.queries.clone());
                let name = query.queries[0].name().clone();
                answer.add_answer(Record::from_rdata(name, 60, RData::A(A::new(192, 0, 2, 9))));
                let bytes = answer.to_vec().expect("encode");
                upstream.send_to(&bytes, peer).await.expect("send");
            }
        });
        let dns = Arc::new(ClusterDns::new(DEFAULT_DOMAIN).expect("dns"));
        dns.set_forwarder(Some(forward::Forwarder::new(
            vec![upstream_address],
            Duration::from_millis(300),
        )));
        let (bound, server) = serve(dns, &["127.0.0.1:0".parse().expect("addr")])
            .await
            .expect("serve");
        let client = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mut query = Message::query();
        query.metadata.id = 4242;
        query.add_query(Query::query(
            Name::from_ascii("www.example.test.").expect("name"),
            RecordType::A,
        ));
        client
            .send_to(&query.to_vec().expect("encode"), bound[0])
            .await
            .expect("send");
        let mut buffer = vec![0; 512];
        let (length, _) =
            tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buffer))
                .await
                .expect("an answer in time")
                .expect("recv");
        drop(server);
        Message::from_vec(&buffer[..length]).expect("answer")
    }

    #[tokio::test]
    async fn other_names_are_forwarded_and_failures_are_servfail() {
        use hickory_server::proto::op::ResponseCode;
        let answer = forwarding(false).await;
        assert_eq!(answer.metadata.id, 4242);
        assert_eq!(answer.metadata.response_code, ResponseCode::NoError);
        let addresses: Vec<String> = answer.answers.iter().map(|r| r.data.to_string()).collect();
        assert_eq!(addresses, vec!["192.0.2.9"]);
        let failed = forwarding(true).await;
        assert_eq!(failed.metadata.response_code, ResponseCode::ServFail);
    }

    #[tokio::test]
    async fn port_zero_binds_udp_and_tcp_on_one_port() {
        for _ in 0..20 {
            let (udp, tcp) =
                bind("127.0.0.1:0".parse().expect("addr"), BindOptions::default()).expect("bind");
            let port = udp.local_addr().expect("udp").port();
            assert_ne!(port, 0);
            assert_eq!(tcp.local_addr().expect("tcp").port(), port);
        }
    }
}
