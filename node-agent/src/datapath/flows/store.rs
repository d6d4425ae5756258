//! The last flow records in memory, and the agent's `GET /flows` that serves them (one JSON
//! object per line, `application/x-ndjson`), optionally followed by new ones as they come.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::Body,
    extract::{Query, State},
    http::header::CONTENT_TYPE,
    response::{IntoResponse, Response},
};
use futures_util::stream::{self, StreamExt as _};
use serde::Deserialize;
use tokio::sync::broadcast;

use super::record::{FlowFilter, FlowRecord, FlowVerdict};

/// How many records the agent keeps by default.
pub const DEFAULT_CAPACITY: usize = 4096;

/// The last `capacity` records, and a channel announcing each new one.
#[derive(Debug)]
pub struct FlowStore {
    records: Mutex<VecDeque<Arc<FlowRecord>>>,
    capacity: usize,
    announce: broadcast::Sender<Arc<FlowRecord>>,
}

impl FlowStore {
    /// An empty store keeping at most `capacity` records.
    pub fn new(capacity: usize) -> Self {
        Self {
            records: Mutex::new(VecDeque::with_capacity(capacity.min(DEFAULT_CAPACITY))),
            capacity: capacity.max(1),
            announce: broadcast::channel(1024).0,
        }
    }

    /// Adds a record (the oldest goes when full) and announces it to followers.
    pub fn push(&self, record: FlowRecord) {
        let record = Arc::new(record);
        let mut records = self.lock();
        if records.len() == self.capacity {
            records.pop_front();
        }
        records.push_back(record.clone());
        // Announced under the lock: a follower's snapshot and its stream neither overlap nor
        // miss a record. No follower: nothing to do.
        let _ = self.announce.send(record);
    }

    /// The last `last` records `filter` matches (all of them: `None`), oldest first, and a
    /// receiver of the records pushed after them.
    pub fn snapshot(
        &self,
        filter: &FlowFilter,
        last: Option<usize>,
    ) -> (Vec<Arc<FlowRecord>>, broadcast::Receiver<Arc<FlowRecord>>) {
        let records = self.lock();
        let receiver = self.announce.subscribe();
        let mut matching: Vec<Arc<FlowRecord>> = records
            .iter()
            .rev()
            .filter(|r| filter.matches(r))
            .take(last.unwrap_or(usize::MAX))
            .cloned()
            .collect();
        matching.reverse();
        (matching, receiver)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<FlowRecord>>> {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The query of `GET /flows`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowQuery {
    /// `namespace/name`: flows from or to this pod.
    pub pod: Option<String>,
    /// `allowed` or `dropped`.
    pub verdict: Option<FlowVerdict>,
    /// Only the last N matching records kept (default: all kept).
    pub last: Option<usize>,
    /// `true`: keep the response open and stream new matching records.
    #[serde(default)]
    pub follow: bool,
}

/// `GET /flows` over `store`.
pub fn routes(store: Arc<FlowStore>) -> Router {
    Router::new()
        .route("/flows", axum::routing::get(flows))
        .with_state(store)
}

fn line(record: &FlowRecord) -> String {
    let mut text = serde_json::to_string(record).unwrap_or_default();
    text.push('\n');
    text
}

async fn flows(State(store): State<Arc<FlowStore>>, Query(query): Query<FlowQuery>) -> Response {
    let filter = FlowFilter {
        pod: query.pod,
        verdict: query.verdict,
    };
    let (records, receiver) = store.snapshot(&filter, query.last);
    let head: String = records.iter().map(|r| line(r)).collect();
    let body = if query.follow {
        let head = stream::once(async move { Ok::<_, std::convert::Infallible>(head) });
        let tail = stream::unfold((receiver, filter), |(mut receiver, filter)| async move {
            loop {
                match receiver.recv().await {
                    Ok(record) if filter.matches(&record) => {
                        return Some((Ok(line(&record)), (receiver, filter)));
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(missed, "a flow follower fell behind");
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Body::from_stream(head.chain(tail))
    } else {
        Body::from(head)
    };
    ([(CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}
