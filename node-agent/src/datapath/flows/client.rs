//! `keelson-node-agent observe`'s side: asks the running agent's `GET /flows` and hands each
//! record to the caller as it arrives (HTTP/1.0, so the agent streams without chunking and
//! ends the body by closing).

use std::{
    io::{BufRead as _, BufReader, Write as _},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use super::record::{FlowFilter, FlowRecord, FlowVerdict};

/// What `observe` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObserveRequest {
    /// Pod and verdict filter.
    pub filter: FlowFilter,
    /// The last N matching records kept (`None`: all).
    pub last: Option<usize>,
    /// Keep streaming new records.
    pub follow: bool,
}

impl ObserveRequest {
    /// The request path and query (pure).
    pub fn path(&self) -> String {
        let mut query: Vec<String> = Vec::new();
        if let Some(pod) = &self.filter.pod {
            query.push(format!("pod={}", encode(pod)));
        }
        if let Some(verdict) = self.filter.verdict {
            query.push(
                match verdict {
                    FlowVerdict::Allowed => "verdict=allowed",
                    FlowVerdict::Dropped => "verdict=dropped",
                }
                .to_owned(),
            );
        }
        if let Some(last) = self.last {
            query.push(format!("last={last}"));
        }
        if self.follow {
            query.push("follow=true".to_owned());
        }
        if query.is_empty() {
            "/flows".to_owned()
        } else {
            format!("/flows?{}", query.join("&"))
        }
    }
}

/// Percent-encodes everything but unreserved characters and `/`.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Why `observe` got no records.
#[derive(Debug, thiserror::Error)]
pub enum ObserveError {
    /// The agent did not answer.
    #[error("no agent answers at {address}")]
    Connect {
        /// Where.
        address: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The connection broke.
    #[error("reading from the agent")]
    Read(#[source] std::io::Error),
    /// The agent answered something else than flows.
    #[error("the agent answered {status}")]
    Status {
        /// Its status line.
        status: String,
    },
    /// A line was not a flow record.
    #[error("the agent sent a line that is no flow record")]
    Decode(#[source] serde_json::Error),
}

/// Requests `request` from the agent at `address` and calls `each` with every record, until
/// the agent ends the response (never, when following, unless the agent stops).
pub fn observe(
    address: SocketAddr,
    request: &ObserveRequest,
    mut each: impl FnMut(FlowRecord),
) -> Result<(), ObserveError> {
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(3))
        .map_err(|source| ObserveError::Connect { address, source })?;
    write!(
        stream,
        "GET {} HTTP/1.0\r\nHost: {address}\r\nAccept: application/x-ndjson\r\n\r\n",
        request.path()
    )
    .map_err(ObserveError::Read)?;
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).map_err(ObserveError::Read)?;
    let status = status.trim_end().to_owned();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(ObserveError::Status { status });
    }
    // Headers end with an empty line.
    loop {
        let mut header = String::new();
        let n = reader.read_line(&mut header).map_err(ObserveError::Read)?;
        if n == 0 || header.trim_end().is_empty() {
            break;
        }
    }
    for line in reader.lines() {
        let line = line.map_err(ObserveError::Read)?;
        if line.trim().is_empty() {
            continue;
        }
        each(serde_json::from_str(&line).map_err(ObserveError::Decode)?);
    }
    Ok(())
}
