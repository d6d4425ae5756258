//! keelson's node agent.
//!
//! Today it holds the eBPF datapath loader; the pod sync loop, Docker runtime and pod networking
//! join it as the later issues land (see `README.md`).

pub mod datapath;
pub mod service_sync;

/// An error and its sources on one line (`a: b: c`), for logs and one-line CLI causes.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
