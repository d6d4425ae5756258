//! The overload protection flags, kube-apiserver's (`--max-requests-inflight`,
//! `--max-mutating-requests-inflight`, `--request-timeout`) plus keelson's per-user watch
//! limit.

use keelson_apiserver::overload::Limits;

use crate::args::parse_duration;

/// Limits on requests in flight, open watches and request time.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct OverloadArgs {
    /// Reads (get, list) served at once before others get 429 TooManyRequests; 0 = no
    /// limit. Watches, exec, logs and port-forwards are not counted; administrators
    /// (system:masters), nodes and the control plane's components are never limited.
    #[arg(long, env = "KEELSON_MAX_REQUESTS_INFLIGHT", default_value_t = 400)]
    pub(crate) max_requests_inflight: usize,
    /// Writes served at once before others get 429 TooManyRequests; 0 = no limit.
    #[arg(
        long,
        env = "KEELSON_MAX_MUTATING_REQUESTS_INFLIGHT",
        default_value_t = 200
    )]
    pub(crate) max_mutating_requests_inflight: usize,
    /// Watches one user may hold open before more get 429 TooManyRequests; 0 = no limit.
    #[arg(long, env = "KEELSON_MAX_WATCHES_PER_USER", default_value_t = 1000)]
    pub(crate) max_watches_per_user: usize,
    /// The longest a request other than a watch, exec, logs or port-forward may take before
    /// it ends in 504 Timeout; a request's `?timeout=` may only shorten it.
    #[arg(long, env = "KEELSON_REQUEST_TIMEOUT", default_value = "60s",
          value_parser = parse_duration)]
    pub(crate) request_timeout: std::time::Duration,
}

impl OverloadArgs {
    /// The API server's limits.
    pub(crate) fn limits(&self) -> Limits {
        Limits {
            max_requests_inflight: self.max_requests_inflight,
            max_mutating_requests_inflight: self.max_mutating_requests_inflight,
            max_watches_per_user: self.max_watches_per_user,
            request_timeout: self.request_timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        overload: OverloadArgs,
    }

    #[test]
    fn defaults_are_kube_apiservers_and_flags_override_them() {
        let defaults = Cli::try_parse_from(["x"]).expect("parse").overload.limits();
        assert_eq!(defaults, Limits::default());
        assert_eq!(
            (
                defaults.max_requests_inflight,
                defaults.max_mutating_requests_inflight
            ),
            (400, 200)
        );
        assert_eq!(defaults.request_timeout, std::time::Duration::from_secs(60));
        let set = Cli::try_parse_from([
            "x",
            "--max-requests-inflight=0",
            "--max-mutating-requests-inflight=5",
            "--max-watches-per-user=3",
            "--request-timeout=2m",
        ])
        .expect("parse")
        .overload
        .limits();
        assert_eq!(
            set,
            Limits {
                max_requests_inflight: 0,
                max_mutating_requests_inflight: 5,
                max_watches_per_user: 3,
                request_timeout: std::time::Duration::from_secs(120),
            }
        );
    }
}
