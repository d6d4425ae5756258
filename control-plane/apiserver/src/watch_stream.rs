//! Watch: newline-delimited `{"type": ..., "object": ...}` events streamed from the store's
//! watch.
//!
//! Without a `resourceVersion` (or with "0"), the stream starts with a synthetic `ADDED` for
//! every current object (a list at revision R) and then follows the store's watch from R; with
//! a resourceVersion it follows from there. A compacted resourceVersion gets one `ERROR` event
//! carrying a 410 `Expired` Status, which makes client-go list again. Label and field
//! selectors apply to the old and the new object of each change, so an object that stops
//! matching is reported as `DELETED` and one that starts matching as `ADDED`, as Kubernetes does.
//!
//! Every watch of a prefix receives the same store events; [`EventCache`] decodes each event
//! once and serializes each of its lines once, however many watches carry it (kube-apiserver's
//! watch cache does the same), so a thousand watchers cost a thousand writes, not a thousand
//! JSON round trips.
//!
//! A watch that asks for a Table (`kubectl get -w`) gets each object as a one-row Table
//! instead; only the first carries the column definitions, as kube-apiserver does.

use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use axum::{
    body::Body,
    http::{StatusCode, header},
    response::Response,
};
use bytes::Bytes;
use futures_util::StreamExt;
use keelson_store::{EventKind, ListOptions, Revision, Store, StoreError, WatchEvent, WatchStream};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::{
    ApiError, AppState,
    object::{decode, decode_kv},
    registry::Resource,
    request::{Params, Selectors, Target, revision_param},
    table::Printer,
};

/// Watches without `timeoutSeconds` end after this long (kube-apiserver's minimum request
/// timeout); clients re-watch from their last resourceVersion.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// Decoded events kept for watches that have not reached them yet.
const CACHED_EVENTS: usize = 4096;

/// One store event, decoded once for every watch that carries it.
#[derive(Debug)]
struct Decoded {
    object: Result<Value, ApiError>,
    prev_value: Option<Bytes>,
    prev: OnceLock<Option<Value>>,
    /// The `ADDED`, `MODIFIED` and `DELETED` lines, serialized on first use.
    lines: [OnceLock<Bytes>; 3],
}

impl Decoded {
    fn prev(&self) -> Option<&Value> {
        self.prev
            .get_or_init(|| {
                self.prev_value
                    .as_deref()
                    .and_then(|p| serde_json::from_slice(p).ok())
            })
            .as_ref()
    }

    fn line(&self, kind: &'static str, object: &Value) -> Bytes {
        let slot = match kind {
            "ADDED" => &self.lines[0],
            "MODIFIED" => &self.lines[1],
            _ => &self.lines[2],
        };
        slot.get_or_init(|| line(kind, object)).clone()
    }
}

/// Recently decoded store events by revision (every store write changes one key at a new
/// revision, so the revision names the event), shared by every watch.
#[derive(Debug, Default)]
pub(crate) struct EventCache {
    inner: Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    events: HashMap<Revision, Arc<Decoded>>,
    order: VecDeque<Revision>,
}

impl EventCache {
    fn get(&self, event: &WatchEvent) -> Arc<Decoded> {
        let id = event.mod_revision;
        let mut inner = match self.inner.lock() {
            Ok(inner) => inner,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(decoded) = inner.events.get(&id) {
            return Arc::clone(decoded);
        }
        let decoded = Arc::new(Decoded {
            object: decode(&event.value, event.mod_revision),
            prev_value: event.prev_value.clone(),
            prev: OnceLock::new(),
            lines: Default::default(),
        });
        if inner.order.len() >= CACHED_EVENTS
            && let Some(oldest) = inner.order.pop_front()
        {
            inner.events.remove(&oldest);
        }
        inner.order.push_back(id);
        inner.events.insert(id, Arc::clone(&decoded));
        decoded
    }
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut bytes = serde_json::to_vec(&json!({"type": kind, "object": object}))
        .unwrap_or_else(|_| b"{}".to_vec());
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// How event objects are written: as they are, or as one-row Tables.
#[derive(Debug)]
struct Render {
    resource: &'static Resource,
    printer: Option<Printer>,
    /// A Table with column definitions was sent; later ones leave them out.
    headers_sent: bool,
    /// Where objects of a custom resource converted by a webhook go through it.
    webhook: Option<(Arc<dyn Store>, Target)>,
}

impl Render {
    /// The objects as this watch's client sees them: converted by the CRD's webhook when it
    /// has one (one review for all of them), else as they are.
    async fn convert(&self, objects: Vec<Value>) -> Result<Vec<Value>, ApiError> {
        match &self.webhook {
            Some((store, target)) => {
                crate::crd::convert::present_all(store.as_ref(), target, objects).await
            }
            None => Ok(objects),
        }
    }

    /// Whether lines are this watch's own (Tables, converted objects), not the cache's.
    fn own_lines(&self) -> bool {
        self.printer.is_some() || self.resource.converts()
    }

    fn line(&mut self, kind: &str, object: &Value) -> Bytes {
        let converted;
        let object = if self.resource.converts() {
            converted = self.resource.present(object.clone());
            &converted
        } else {
            object
        };
        match &self.printer {
            None => line(kind, object),
            Some(printer) => {
                let table = printer.single(object, !self.headers_sent);
                self.headers_sent = true;
                line(kind, &table)
            }
        }
    }

    fn bookmark(&self, object: &Value) -> Bytes {
        match &self.printer {
            None => line("BOOKMARK", object),
            Some(printer) => {
                let metadata = json!({
                    "resourceVersion": object.pointer("/metadata/resourceVersion"),
                });
                line("BOOKMARK", &printer.table(&[], metadata, false))
            }
        }
    }
}

fn error_line(error: &ApiError) -> Bytes {
    line("ERROR", &error.status())
}

fn streaming(rx: mpsc::Receiver<Bytes>) -> Response {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// Serves a watch on `target`'s collection, optionally of one object (`/watch/.../<name>`).
pub(crate) async fn watch(
    state: &AppState,
    target: &Target,
    params: &Params,
    name: Option<&str>,
    printer: Option<Printer>,
) -> Result<Response, ApiError> {
    let resource = target.resource;
    let mut render = Render {
        resource,
        printer,
        headers_sent: false,
        webhook: target
            .custom
            .as_ref()
            .filter(|c| c.webhook.is_some())
            .map(|_| (state.store.clone(), target.clone())),
    };
    let selectors = Selectors::parse(resource, params, name)?;
    let timeout = match params.get("timeoutSeconds").filter(|t| !t.is_empty()) {
        Some(t) => Duration::from_secs(
            t.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds: {t:?}")))?,
        ),
        None => DEFAULT_TIMEOUT,
    };
    let send_initial = params.get("sendInitialEvents").is_some_and(|s| s == "true");
    let requested = params
        .get("resourceVersion")
        .filter(|rv| !rv.is_empty() && *rv != "0")
        .map(|rv| revision_param(rv))
        .transpose()?;
    let store = state.store.clone();
    let prefix = target.prefix();
    let mut initial = Vec::new();
    let from = match requested {
        Some(rv) if !send_initial => rv,
        _ => {
            let listed = store
                .list(&prefix, ListOptions::default())
                .await
                .map_err(|e| ApiError::from_store(e, resource, ""))?;
            // Objects converted by a webhook are selected in the version asked for.
            let converting = render.webhook.is_some();
            let mut objects = Vec::new();
            for kv in &listed.items {
                let object = decode_kv(kv)?;
                if converting || selectors.matches(&object) {
                    objects.push(object);
                }
            }
            for object in render.convert(objects).await? {
                if !converting || selectors.matches(&object) {
                    initial.push(render.line("ADDED", &object));
                }
            }
            if send_initial {
                initial.push(render.bookmark(&json!({
                        "kind": resource.kind,
                        "apiVersion": resource.api_version(),
                        "metadata": {
                            "resourceVersion": listed.revision.to_string(),
                            "annotations": {"k8s.io/initial-events-end": "true"},
                        },
                })));
            }
            listed.revision
        }
    };
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let events = match store.watch(&prefix, from).await {
        Ok(events) => events,
        Err(StoreError::Compacted {
            requested,
            compacted,
        }) => {
            // What kube-apiserver does: a 200 stream with one ERROR event.
            let _ = tx.try_send(error_line(&ApiError::expired(requested, compacted)));
            drop(tx);
            return Ok(streaming(rx));
        }
        Err(e) => return Err(ApiError::from_store(e, resource, "")),
    };
    let shutdown = state.shutdown.subscribe();
    let cache = Arc::clone(&state.watch_events);
    tokio::spawn(follow(
        events, tx, initial, selectors, timeout, shutdown, cache, render,
    ));
    Ok(streaming(rx))
}

#[expect(
    clippy::too_many_arguments,
    reason = "the pieces of one watch, moved into its task once"
)]
async fn follow(
    mut events: WatchStream,
    tx: mpsc::Sender<Bytes>,
    initial: Vec<Bytes>,
    selectors: Selectors,
    timeout: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    cache: Arc<EventCache>,
    mut render: Render,
) {
    for bytes in initial {
        if tx.send(bytes).await.is_err() {
            return;
        }
    }
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    loop {
        let event = tokio::select! {
            () = &mut deadline => return,
            () = tx.closed() => return,
            _ = shutdown.wait_for(|stop| *stop) => return,
            event = events.next() => event,
        };
        let (out, last) = match event {
            None => return,
            Some(Err(StoreError::Compacted {
                requested,
                compacted,
            })) => (
                Some(error_line(&ApiError::expired(requested, compacted))),
                true,
            ),
            Some(Err(e)) => {
                tracing::warn!(error = &e as &dyn std::error::Error, "watch failed");
                (
                    Some(error_line(&ApiError::internal(
                        "the store watch failed",
                        &e,
                    ))),
                    true,
                )
            }
            Some(Ok(event)) => (
                translate(&event, &selectors, &cache, &mut render).await,
                false,
            ),
        };
        if let Some(bytes) = out
            && tx.send(bytes).await.is_err()
        {
            return;
        }
        if last {
            return;
        }
    }
}

/// The line for one store event, or `None` when the selectors hide it.
async fn translate(
    event: &WatchEvent,
    selectors: &Selectors,
    cache: &EventCache,
    render: &mut Render,
) -> Option<Bytes> {
    let decoded = cache.get(event);
    let object = match &decoded.object {
        Ok(object) => object,
        Err(e) => return Some(error_line(e)),
    };
    if render.webhook.is_some() {
        return translate_converted(event, &decoded, object, selectors, render).await;
    }
    let kind = event_type(event.kind, selectors, object, || decoded.prev())?;
    Some(if render.own_lines() {
        // A Table's Age cell changes with time, and converted objects are this resource's:
        // not shared through the cache.
        render.line(kind, object)
    } else {
        decoded.line(kind, object)
    })
}

/// The event's type as the selectors see the change from `prev` to `object`, or `None` when
/// they hide it.
fn event_type<'a>(
    kind: EventKind,
    selectors: &Selectors,
    object: &Value,
    prev: impl FnOnce() -> Option<&'a Value>,
) -> Option<&'static str> {
    let everything = selectors.is_everything();
    let now = everything || selectors.matches(object);
    match kind {
        EventKind::Added => now.then_some("ADDED"),
        EventKind::Deleted => now.then_some("DELETED"),
        EventKind::Modified => {
            let before = everything || prev().is_some_and(|p| selectors.matches(p));
            match (before, now) {
                (true, true) => Some("MODIFIED"),
                (false, true) => Some("ADDED"),
                (true, false) => Some("DELETED"),
                (false, false) => None,
            }
        }
    }
}

/// [`translate`] for a custom resource converted by a webhook: the object (and, when
/// selectors must see it, the previous one) is converted first (one review), so selectors
/// match the version the client asked for.
async fn translate_converted(
    event: &WatchEvent,
    decoded: &Decoded,
    object: &Value,
    selectors: &Selectors,
    render: &mut Render,
) -> Option<Bytes> {
    let mut objects = vec![object.clone()];
    if event.kind == EventKind::Modified
        && !selectors.is_everything()
        && let Some(prev) = decoded.prev()
    {
        objects.push(prev.clone());
    }
    let converted = match render.convert(objects).await {
        Ok(converted) => converted,
        Err(e) => return Some(error_line(&e)),
    };
    let object = converted.first()?;
    let kind = event_type(event.kind, selectors, object, || converted.get(1))?;
    Some(render.line(kind, object))
}
