//! The etcd store: etcd v3 through `etcd-client`, the way kube-apiserver uses it.
//!
//! Conditional writes are transactions comparing the key's `mod_revision` (0 means absent);
//! lists are range reads at a revision; watches start at `from_revision + 1` with `prev_kv`.
//! etcd does not say where its compaction point is, only that a revision is below it, so the
//! store asks with a watch from the refused revision, which etcd cancels naming the point.

use std::{collections::VecDeque, fmt, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{
    Certificate, Client, CompactionOptions, Compare, CompareOp, ConnectOptions, DeleteOptions,
    EventType, GetOptions, Identity, KvClient, TlsOptions, Txn, TxnOp, TxnOpResponse, TxnResponse,
    WatchClient, WatchOptions,
};
use futures_util::stream;

use crate::{
    Deleted, EventKind, KeyValue, ListOptions, ListResult, Revision, Store, StoreError, WatchEvent,
    WatchStream, prefix_end,
};

/// How long to wait for etcd to name its compaction point.
const COMPACTION_POINT_TIMEOUT: Duration = Duration::from_secs(10);

/// TLS to etcd, as kube-apiserver's `--etcd-cafile`, `--etcd-certfile` and `--etcd-keyfile`
/// give it: the CA that signed the members' serving certificates and, for a cluster started
/// with `--client-cert-auth`, a client certificate and its key. All PEM. `Debug` leaves the
/// key out.
#[derive(Clone)]
pub struct EtcdTls {
    /// The CA certificate(s) to verify the members with.
    pub ca_pem: Vec<u8>,
    /// The client certificate chain and private key, if any.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for EtcdTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdTls")
            .field("client_certificate", &self.client.is_some())
            .finish_non_exhaustive()
    }
}

impl EtcdTls {
    pub(crate) fn options(&self) -> TlsOptions {
        let options = TlsOptions::new().ca_certificate(Certificate::from_pem(&self.ca_pem));
        match &self.client {
            Some((cert, key)) => options.identity(Identity::from_pem(cert, key)),
            None => options,
        }
    }
}

/// A store on etcd (3.4 or later).
#[derive(Clone)]
pub struct EtcdStore {
    kv: KvClient,
    watch: WatchClient,
    endpoints: Vec<String>,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

/// Why etcd refused a read at a revision.
enum RevisionRefusal {
    Compacted,
    Future,
}

fn revision_refusal(error: &etcd_client::Error) -> Option<RevisionRefusal> {
    let etcd_client::Error::GRpcStatus(status) = error else {
        return None;
    };
    // etcd's rpctypes.ErrGRPCCompacted and ErrGRPCFutureRev (both codes.OutOfRange).
    let message = status.message();
    if message.contains("required revision has been compacted") {
        Some(RevisionRefusal::Compacted)
    } else if message.contains("required revision is a future revision") {
        Some(RevisionRefusal::Future)
    } else {
        None
    }
}

fn header_revision(
    header: Option<&etcd_client::ResponseHeader>,
    operation: &'static str,
) -> Result<Revision, StoreError> {
    header
        .map(etcd_client::ResponseHeader::revision)
        .ok_or_else(|| StoreError::Etcd {
            operation,
            source: etcd_client::Error::Internal("etcd sent a response without a header".into()),
        })
}

fn key_value(kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
    Ok(KeyValue {
        key: key_str(kv)?,
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
    })
}

fn key_str(kv: &etcd_client::KeyValue) -> Result<String, StoreError> {
    kv.key_str()
        .map(str::to_owned)
        .map_err(|_| StoreError::InvalidKey {
            key: kv.key().to_vec(),
        })
}

/// The key range `[start, end)` of `prefix` in etcd's encoding (`\0` as end: to the last key).
fn prefix_range(prefix: &str) -> (Vec<u8>, Vec<u8>) {
    let start = if prefix.is_empty() {
        vec![0]
    } else {
        prefix.as_bytes().to_vec()
    };
    (
        start,
        prefix_end(prefix.as_bytes()).unwrap_or_else(|| vec![0]),
    )
}

/// A failed conditional write: the key is missing, or its mod revision is `actual`.
fn rejection(response: &TxnResponse, key: &str, expected: Option<Revision>) -> StoreError {
    let current = response.op_responses().into_iter().find_map(|op| match op {
        TxnOpResponse::Get(get) => get.kvs().first().map(etcd_client::KeyValue::mod_revision),
        _ => None,
    });
    match (current, expected) {
        (Some(actual), Some(expected)) => StoreError::Conflict {
            key: key.to_owned(),
            expected,
            actual,
        },
        _ => StoreError::NotFound {
            key: key.to_owned(),
        },
    }
}

/// How often [`follow_endpoint_health`] probes each member, and how long a probe may take.
const HEALTH_PROBE_PERIOD: Duration = Duration::from_millis(500);

/// `host:port` of an endpoint URL (`http://127.0.0.1:2379` or `127.0.0.1:2379`).
fn endpoint_address(endpoint: &str) -> &str {
    let rest = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    rest.split('/').next().unwrap_or(rest)
}

/// Keeps the client's balancer to the members that accept connections. etcd-client balances
/// requests over every endpoint, and a member that died still gets its share: each request
/// routed to it fails ("the store failed") although the others keep quorum. Every
/// [`HEALTH_PROBE_PERIOD`] this connects to each member's client port; one that does not
/// accept is removed from the balancer (never the last one), and added back once it accepts.
/// Runs as long as the runtime.
pub async fn follow_endpoint_health(client: Client, endpoints: Vec<String>) {
    let mut removed = vec![false; endpoints.len()];
    let mut ticker = tokio::time::interval(HEALTH_PROBE_PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let probes = endpoints.iter().map(|endpoint| async move {
            let address = endpoint_address(endpoint);
            matches!(
                tokio::time::timeout(HEALTH_PROBE_PERIOD, tokio::net::TcpStream::connect(address))
                    .await,
                Ok(Ok(_))
            )
        });
        let healthy = futures_util::future::join_all(probes).await;
        for (index, endpoint) in endpoints.iter().enumerate() {
            let in_use = removed.iter().filter(|r| !**r).count();
            if !healthy[index] && !removed[index] && in_use > 1 {
                match client.remove_endpoint(endpoint).await {
                    Ok(()) => {
                        removed[index] = true;
                        tracing::warn!(%endpoint, "etcd member does not accept connections: not using it");
                    }
                    Err(error) => {
                        tracing::warn!(%endpoint, %error, "cannot stop using an etcd member")
                    }
                }
            } else if healthy[index] && removed[index] {
                match client.add_endpoint(endpoint).await {
                    Ok(()) => {
                        removed[index] = false;
                        tracing::info!(%endpoint, "etcd member accepts connections again: using it");
                    }
                    Err(error) => {
                        tracing::warn!(%endpoint, %error, "cannot use an etcd member again")
                    }
                }
            }
        }
    }
}

impl EtcdStore {
    /// Connects to etcd at `endpoints` (e.g. `http://127.0.0.1:2379`).
    ///
    /// With several endpoints, a background task takes a member that stops accepting
    /// connections out of the client's balancer and puts it back once it accepts again (see
    /// [`follow_endpoint_health`]).
    pub async fn connect<E: AsRef<str>>(endpoints: &[E]) -> Result<Self, StoreError> {
        Self::connect_with(endpoints, None).await
    }

    /// Like [`EtcdStore::connect`], over TLS when `tls` is given (then the endpoints are
    /// `https://` URLs).
    pub async fn connect_with<E: AsRef<str>>(
        endpoints: &[E],
        tls: Option<&EtcdTls>,
    ) -> Result<Self, StoreError> {
        let options = tls.map(|tls| ConnectOptions::new().with_tls(tls.options()));
        let client = Client::connect(endpoints, options)
            .await
            .map_err(StoreError::etcd("connect"))?;
        let endpoints: Vec<String> = endpoints.iter().map(|e| e.as_ref().to_owned()).collect();
        if endpoints.len() > 1 {
            tokio::spawn(follow_endpoint_health(client.clone(), endpoints.clone()));
        }
        Ok(Self::new(client, endpoints))
    }

    /// A store on an already connected client; `endpoints` is only shown by `Debug`.
    pub fn new(client: Client, endpoints: Vec<String>) -> Self {
        Self {
            kv: client.kv_client(),
            watch: client.watch_client(),
            endpoints,
        }
    }

    /// The error for a read at `requested` that etcd refused.
    async fn refused(&self, refusal: RevisionRefusal, requested: Revision) -> StoreError {
        match refusal {
            RevisionRefusal::Compacted => match self.compaction_point(requested).await {
                Ok(compacted) => StoreError::Compacted {
                    requested,
                    compacted,
                },
                Err(error) => error,
            },
            RevisionRefusal::Future => match self.current_revision().await {
                Ok(current) => StoreError::FutureRevision { requested, current },
                Err(error) => error,
            },
        }
    }

    /// etcd's compaction point, given a revision it refused as compacted: a watch from there is
    /// canceled with the compaction point in the response.
    async fn compaction_point(&self, refused: Revision) -> Result<Revision, StoreError> {
        let mut watch = self.watch.clone();
        let options = WatchOptions::new().with_start_revision(refused.max(1));
        let mut stream = watch
            .watch(vec![0], Some(options))
            .await
            .map_err(StoreError::etcd("watch for the compaction point"))?;
        let answer = tokio::time::timeout(COMPACTION_POINT_TIMEOUT, async {
            loop {
                match stream.message().await {
                    Ok(Some(response)) if response.compact_revision() > 0 => {
                        return Ok(response.compact_revision());
                    }
                    Ok(Some(response)) if response.canceled() => {
                        return Err(StoreError::WatchCanceled {
                            reason: response.cancel_reason().to_owned(),
                        });
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        return Err(StoreError::WatchCanceled {
                            reason: "the watch stream ended".into(),
                        });
                    }
                    Err(error) => {
                        return Err(StoreError::Etcd {
                            operation: "watch for the compaction point",
                            source: error,
                        });
                    }
                }
            }
        })
        .await;
        answer.unwrap_or_else(|_| {
            Err(StoreError::WatchCanceled {
                reason: format!(
                    "etcd refused revision {refused} as compacted but did not name its compaction \
                     point within {COMPACTION_POINT_TIMEOUT:?}"
                ),
            })
        })
    }

    async fn txn(&self, txn: Txn, operation: &'static str) -> Result<TxnResponse, StoreError> {
        self.kv
            .clone()
            .txn(txn)
            .await
            .map_err(StoreError::etcd(operation))
    }
}

#[async_trait]
impl Store for EtcdStore {
    async fn create(&self, key: &str, value: Bytes) -> Result<Revision, StoreError> {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, value.to_vec(), None)]);
        let response = self.txn(txn, "create").await?;
        if !response.succeeded() {
            return Err(StoreError::AlreadyExists {
                key: key.to_owned(),
            });
        }
        header_revision(response.header(), "create")
    }

    async fn get(
        &self,
        key: &str,
        revision: Option<Revision>,
    ) -> Result<Option<KeyValue>, StoreError> {
        let requested = revision.filter(|r| *r > 0);
        let options = GetOptions::new().with_revision(requested.unwrap_or(0));
        let response = match self.kv.clone().get(key, Some(options)).await {
            Ok(response) => response,
            Err(error) => {
                return Err(match (revision_refusal(&error), requested) {
                    (Some(refusal), Some(requested)) => self.refused(refusal, requested).await,
                    _ => StoreError::Etcd {
                        operation: "get",
                        source: error,
                    },
                });
            }
        };
        response.kvs().first().map(key_value).transpose()
    }

    async fn update(
        &self,
        key: &str,
        value: Bytes,
        expected_mod_revision: Revision,
    ) -> Result<Revision, StoreError> {
        let txn = Txn::new()
            .when([
                Compare::version(key, CompareOp::Greater, 0),
                Compare::mod_revision(key, CompareOp::Equal, expected_mod_revision),
            ])
            .and_then([TxnOp::put(key, value.to_vec(), None)])
            .or_else([TxnOp::get(key, None)]);
        let response = self.txn(txn, "update").await?;
        if !response.succeeded() {
            return Err(rejection(&response, key, Some(expected_mod_revision)));
        }
        header_revision(response.header(), "update")
    }

    async fn delete(
        &self,
        key: &str,
        expected_mod_revision: Option<Revision>,
    ) -> Result<Deleted, StoreError> {
        let mut compares = vec![Compare::version(key, CompareOp::Greater, 0)];
        if let Some(expected) = expected_mod_revision {
            compares.push(Compare::mod_revision(key, CompareOp::Equal, expected));
        }
        let txn = Txn::new()
            .when(compares)
            .and_then([TxnOp::delete(
                key,
                Some(DeleteOptions::new().with_prev_key()),
            )])
            .or_else([TxnOp::get(key, None)]);
        let response = self.txn(txn, "delete").await?;
        if !response.succeeded() {
            return Err(rejection(&response, key, expected_mod_revision));
        }
        let previous = response
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Delete(delete) => delete.prev_kvs().first().map(key_value),
                _ => None,
            })
            .transpose()?
            .ok_or_else(|| StoreError::NotFound {
                key: key.to_owned(),
            })?;
        Ok(Deleted {
            revision: header_revision(response.header(), "delete")?,
            previous,
        })
    }

    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResult, StoreError> {
        let (mut start, end) = prefix_range(prefix);
        if let Some(after) = &options.start_after {
            let mut after = after.as_bytes().to_vec();
            after.push(0);
            start = start.max(after);
        }
        let requested = options.revision.filter(|r| *r > 0);
        let mut get = GetOptions::new()
            .with_range(end)
            .with_revision(requested.unwrap_or(0));
        if let Some(limit) = options.limit {
            // etcd reads 0 as "no limit".
            get = get.with_limit(i64::try_from(limit.max(1)).unwrap_or(i64::MAX));
        }
        let response = match self.kv.clone().get(start, Some(get)).await {
            Ok(response) => response,
            Err(error) => {
                return Err(match (revision_refusal(&error), requested) {
                    (Some(refusal), Some(requested)) => self.refused(refusal, requested).await,
                    _ => StoreError::Etcd {
                        operation: "list",
                        source: error,
                    },
                });
            }
        };
        let mut items = response
            .kvs()
            .iter()
            .map(key_value)
            .collect::<Result<Vec<_>, _>>()?;
        let mut more = response.more();
        if options.limit == Some(0) {
            more = !items.is_empty();
            items.clear();
        }
        let revision = match requested {
            Some(revision) => revision,
            None => header_revision(response.header(), "list")?,
        };
        Ok(ListResult {
            items,
            revision,
            more,
        })
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        let (start, end) = prefix_range(prefix);
        // etcd only tells a watcher about compaction after creating it; a read at the start
        // revision says it at once, so that the call itself fails like the SQLite store's.
        if from_revision > 0 {
            let probe = GetOptions::new()
                .with_range(end.clone())
                .with_revision(from_revision)
                .with_count_only();
            if let Err(error) = self.kv.clone().get(start.clone(), Some(probe)).await {
                match revision_refusal(&error) {
                    Some(RevisionRefusal::Compacted) => {
                        return Err(self
                            .refused(RevisionRefusal::Compacted, from_revision)
                            .await);
                    }
                    // A watch from the future is fine: it sees the writes after it.
                    Some(RevisionRefusal::Future) => {}
                    None => {
                        return Err(StoreError::Etcd {
                            operation: "watch",
                            source: error,
                        });
                    }
                }
            }
        }
        let options = WatchOptions::new()
            .with_range(end)
            .with_start_revision(from_revision.max(0) + 1)
            .with_prev_key();
        let stream = self
            .watch
            .clone()
            .watch(start, Some(options))
            .await
            .map_err(StoreError::etcd("watch"))?;
        let watch = Watch {
            stream,
            ready: VecDeque::new(),
            through: from_revision,
            ended: false,
        };
        Ok(Box::pin(stream::unfold(watch, |mut watch| async move {
            let item = watch.next().await?;
            Some((item, watch))
        })))
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let options = CompactionOptions::new().with_physical();
        match self.kv.clone().compact(revision, Some(options)).await {
            Ok(_) => Ok(()),
            Err(error) => match revision_refusal(&error) {
                // At or below the current compaction point: nothing to do.
                Some(RevisionRefusal::Compacted) => Ok(()),
                Some(RevisionRefusal::Future) => {
                    Err(self.refused(RevisionRefusal::Future, revision).await)
                }
                None => Err(StoreError::Etcd {
                    operation: "compact",
                    source: error,
                }),
            },
        }
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        let response = self
            .kv
            .clone()
            .get(vec![0], Some(GetOptions::new().with_count_only()))
            .await
            .map_err(StoreError::etcd("read the current revision"))?;
        header_revision(response.header(), "read the current revision")
    }
}

/// A watch's state between events.
struct Watch {
    stream: etcd_client::WatchStream,
    ready: VecDeque<WatchEvent>,
    /// The revision of the last event handed out.
    through: Revision,
    ended: bool,
}

impl Watch {
    async fn next(&mut self) -> Option<Result<WatchEvent, StoreError>> {
        loop {
            if let Some(event) = self.ready.pop_front() {
                self.through = event.mod_revision;
                return Some(Ok(event));
            }
            if self.ended {
                return None;
            }
            let response = match self.stream.message().await {
                Ok(Some(response)) => response,
                Ok(None) => {
                    self.ended = true;
                    continue;
                }
                Err(error) => {
                    self.ended = true;
                    return Some(Err(StoreError::Etcd {
                        operation: "watch",
                        source: error,
                    }));
                }
            };
            if response.compact_revision() > 0 {
                self.ended = true;
                return Some(Err(StoreError::Compacted {
                    requested: self.through,
                    compacted: response.compact_revision(),
                }));
            }
            if response.canceled() {
                self.ended = true;
                return Some(Err(StoreError::WatchCanceled {
                    reason: response.cancel_reason().to_owned(),
                }));
            }
            for event in response.events() {
                match convert(event) {
                    Ok(Some(event)) => self.ready.push_back(event),
                    Ok(None) => {}
                    Err(error) => {
                        self.ended = true;
                        return Some(Err(error));
                    }
                }
            }
        }
    }
}

fn convert(event: &etcd_client::Event) -> Result<Option<WatchEvent>, StoreError> {
    let Some(kv) = event.kv() else {
        return Ok(None);
    };
    let prev_value = event
        .prev_kv()
        .map(|prev| Bytes::copy_from_slice(prev.value()));
    let (kind, value, prev_value) = match event.event_type() {
        EventType::Put if kv.create_revision() == kv.mod_revision() => {
            (EventKind::Added, Bytes::copy_from_slice(kv.value()), None)
        }
        EventType::Put => (
            EventKind::Modified,
            Bytes::copy_from_slice(kv.value()),
            prev_value,
        ),
        EventType::Delete => (
            EventKind::Deleted,
            prev_value.clone().unwrap_or_default(),
            prev_value,
        ),
    };
    Ok(Some(WatchEvent {
        kind,
        key: key_str(kv)?,
        value,
        mod_revision: kv.mod_revision(),
        prev_value,
    }))
}

#[cfg(test)]
mod tests {
    use super::endpoint_address;

    #[test]
    fn endpoint_addresses_drop_scheme_and_path() {
        assert_eq!(endpoint_address("http://127.0.0.1:2379"), "127.0.0.1:2379");
        assert_eq!(endpoint_address("https://etcd-0:2379/"), "etcd-0:2379");
        assert_eq!(endpoint_address("127.0.0.1:2379"), "127.0.0.1:2379");
    }
}
