//! Reading `/stats/summary` from node agents, with a short cache.
//!
//! metrics-server scrapes every node every 15 s whether anyone asks or not; here a request
//! scrapes the nodes it needs whose summary is older than [`CACHE_FOR`] (10 s, the agents'
//! own sampling period, so a fresher scrape would return the same numbers), all of them at
//! once, each within [`SCRAPE_TIMEOUT`]. A node that does not answer is left out, and its
//! failure is remembered for as long as a summary would be.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    http::{Request, StatusCode, header},
};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::Value;

use crate::KubeletClient;

/// How long a node's summary (or its failure) is reused.
pub(crate) const CACHE_FOR: Duration = Duration::from_secs(10);
/// How long one node's scrape (connect, TLS, answer) may take.
pub(crate) const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest summary read.
const MAX_SUMMARY_BYTES: usize = 32 * 1024 * 1024;
/// The kubelet's default port, when a Node does not report its endpoint.
const KUBELET_PORT: i64 = 10250;

/// Summaries by node name.
#[derive(Debug, Default)]
pub(crate) struct Cache {
    entries: Mutex<HashMap<String, (Instant, Option<Value>)>>,
}

/// Whether `node` reports `Ready=True`.
pub(crate) fn ready(node: &Value) -> bool {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// The kubelet endpoint (`InternalIP`, port) of `node`.
pub(crate) fn endpoint(node: &Value) -> Option<(String, u16)> {
    let ip = node
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a.get("address")?.as_str())?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_i64)
        .filter(|p| *p > 0)
        .unwrap_or(KUBELET_PORT);
    Some((ip.to_owned(), u16::try_from(port).ok()?))
}

impl Cache {
    /// The summaries of those of `nodes` that are Ready and answer, by node name.
    pub(crate) async fn summaries(
        &self,
        client: Option<&KubeletClient>,
        nodes: &[Value],
    ) -> HashMap<String, Value> {
        let now = Instant::now();
        let mut out = HashMap::new();
        let mut wanted = Vec::new();
        {
            let Ok(entries) = self.entries.lock() else {
                return out;
            };
            for node in nodes.iter().filter(|n| ready(n)) {
                let Some(name) = node.pointer("/metadata/name").and_then(Value::as_str) else {
                    continue;
                };
                match entries.get(name) {
                    Some((at, cached)) if now.duration_since(*at) < CACHE_FOR => {
                        if let Some(summary) = cached {
                            out.insert(name.to_owned(), summary.clone());
                        }
                    }
                    _ => wanted.push((name.to_owned(), endpoint(node))),
                }
            }
        }
        let Some(client) = client else {
            return out;
        };
        let fetched = futures_util::future::join_all(wanted.into_iter().map(
            |(name, address)| async move {
                let summary = match address {
                    Some((ip, port)) => {
                        match tokio::time::timeout(SCRAPE_TIMEOUT, fetch(client, &ip, port)).await
                        {
                            Ok(Ok(summary)) => Some(summary),
                            Ok(Err(error)) => {
                                tracing::debug!(node = %name, %error, "scraping resource metrics");
                                None
                            }
                            Err(_) => {
                                tracing::debug!(node = %name, "scraping resource metrics timed out");
                                None
                            }
                        }
                    }
                    None => None,
                };
                (name, summary)
            },
        ))
        .await;
        if let Ok(mut entries) = self.entries.lock() {
            // Stale entries are useless: drop them (nodes that went away among them).
            entries.retain(|_, (at, _)| at.elapsed() < CACHE_FOR);
            for (name, summary) in fetched {
                if let Some(s) = &summary {
                    out.insert(name.clone(), s.clone());
                }
                entries.insert(name, (Instant::now(), summary));
            }
        }
        out
    }
}

/// `GET /stats/summary` from the kubelet at `ip:port`.
async fn fetch(client: &KubeletClient, ip: &str, port: u16) -> Result<Value, String> {
    let address = format!("{ip}:{port}");
    let tcp = tokio::net::TcpStream::connect(&address)
        .await
        .map_err(|e| format!("connect {address}: {e}"))?;
    let server_name = ServerName::try_from(ip.to_owned()).map_err(|e| format!("{ip}: {e}"))?;
    let tls = client
        .connector()
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("TLS with {address}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("HTTP with {address}: {e}"))?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "kubelet summary connection ended");
        }
    });
    let request = Request::get("/stats/summary")
        .header(header::HOST, &address)
        .header(header::ACCEPT, "application/json")
        .body(Body::empty())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("GET /stats/summary from {address}: {e}"))?;
    let status = response.status();
    let body = axum::body::to_bytes(Body::new(response.into_body()), MAX_SUMMARY_BYTES)
        .await
        .map_err(|e| format!("reading the summary from {address}: {e}"))?;
    if status != StatusCode::OK {
        return Err(format!(
            "{address} answered {status}: {}",
            String::from_utf8_lossy(&body).trim()
        ));
    }
    serde_json::from_slice(&body).map_err(|e| format!("the summary from {address}: {e}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn endpoints_and_readiness_of_nodes() {
        let node = json!({"status": {
            "addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "10.0.0.5"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10350}},
            "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}]}});
        assert_eq!(endpoint(&node), Some(("10.0.0.5".to_owned(), 10350)));
        assert!(ready(&node));
        let bare = json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.6"}],
                                     "conditions": [{"type": "Ready", "status": "Unknown"}]}});
        assert_eq!(endpoint(&bare), Some(("10.0.0.6".to_owned(), 10250)));
        assert!(!ready(&bare));
        assert_eq!(endpoint(&json!({"status": {}})), None);
    }
}
