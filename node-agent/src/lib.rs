//! keelson's node agent: the eBPF service datapath ([`datapath`], [`service_sync`]) and the
//! kubelet's job: node registration ([`node`]), pods on Docker ([`pods`]) with their own network
//! namespace and address ([`network`]).

pub mod api_failover;
pub mod datapath;
pub mod health;
pub mod host;
pub mod join;
pub mod lb_announce;
pub mod metrics;
pub mod network;
pub mod node;
pub mod pods;
pub mod probe;
pub mod process_metrics;
pub mod routing;
pub mod service_health;
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

/// An error whose text is a whole chain ([`error_chain`]), for interfaces that print only an
/// error's own `Display`: clap prints a value parser's error without its sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chained(String);

impl Chained {
    /// `error` and its sources.
    pub fn new(error: &dyn std::error::Error) -> Self {
        Self(error_chain(error))
    }
}

impl std::fmt::Display for Chained {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Chained {}
