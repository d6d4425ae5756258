//! The agent's `/metrics`: one prometheus-client registry holding the pod runner's metrics
//! ([`crate::pods::Metrics`]), the service sync's ([`crate::service_sync::ProxyMetrics`]) and,
//! per scrape, the datapath's counters read from the pinned maps
//! ([`crate::datapath::lb::DatapathMetrics`]), the NetworkPolicy sync's
//! ([`crate::datapath::policy::PolicyMetrics`]) and the process's own
//! ([`crate::process_metrics`]), written as one OpenMetrics text: each family's
//! `HELP`/`TYPE` once, then all of its samples, then `# EOF`.

use prometheus_client::{
    encoding::text::{encode_eof, encode_registry},
    registry::Registry,
};

use crate::{
    datapath::{lb::DatapathMetrics, policy::PolicyMetrics},
    pods,
    service_sync::ProxyMetrics,
};

/// The content type of [`AgentMetrics::render`]'s text (what prometheus-client writes).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Everything the agent's `/metrics` serves.
#[derive(Debug)]
pub struct AgentMetrics {
    registry: Registry,
}

impl AgentMetrics {
    /// Registers the pod runner's and the service sync's metrics.
    pub fn new(pods: &pods::Metrics, proxy: &ProxyMetrics) -> Self {
        let mut registry = Registry::default();
        pods.register(&mut registry);
        proxy.register(&mut registry);
        registry.register_collector(Box::new(crate::process_metrics::ProcessMetrics));
        Self { registry }
    }

    /// Adds the NetworkPolicy sync's metrics.
    pub fn with_policy(mut self, policy: &PolicyMetrics) -> Self {
        policy.register(&mut self.registry);
        self
    }

    /// Adds a collector read at each scrape (the per-endpoint policy counters).
    pub fn with_collector(
        mut self,
        collector: Box<dyn prometheus_client::collector::Collector>,
    ) -> Self {
        self.registry.register_collector(collector);
        self
    }

    /// The exposition text, with `datapath` (read from the pinned maps for this scrape).
    pub fn render(&self, datapath: Option<DatapathMetrics>) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut text, &self.registry);
        if let Some(datapath) = datapath {
            let mut scraped = Registry::default();
            scraped.register_collector(Box::new(datapath));
            let _ = encode_registry(&mut text, &scraped);
        }
        let _ = encode_eof(&mut text);
        text
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// The agent's whole `/metrics` with a value in every family, through the strict checker.
    #[test]
    fn agent_metrics_are_a_valid_exposition() {
        let pods = pods::Metrics::default();
        pods.record_sync(Duration::from_millis(30));
        pods.record_status_write();
        pods.record_probe(true);
        pods.record_probe(false);
        pods.set_pods(2, &pods::PodTally::default());
        let proxy = ProxyMetrics::default();
        let policy = PolicyMetrics::default();
        policy.record(&crate::datapath::policy::SyncReport {
            writes: 12,
            identities: 3,
            policy_entries: 9,
            endpoints: 2,
            ipcache_entries: 7,
            compile: Duration::from_millis(250),
        });
        let metrics = AgentMetrics::new(&pods, &proxy).with_policy(&policy);
        let datapath = DatapathMetrics {
            events: vec![("tc_new_flow", 61), ("sock_translated", 3)],
            conntrack_gc: vec![("expired", 2), ("evicted", 0), ("passes", 5)],
            maps: vec![("kct_v2", 1024, 4096), ("ksvc_v2", 3, 65536)],
            backends: crate::datapath::lb::join_counters(
                [(
                    4,
                    keelson_ebpf_common::Backend {
                        address_be: u32::from(std::net::Ipv4Addr::new(10, 244, 0, 9)).to_be(),
                        port_be: 8080u16.to_be(),
                        proto: keelson_ebpf_common::proto::TCP,
                        ..Default::default()
                    },
                )],
                &std::collections::BTreeMap::from([(
                    4,
                    keelson_ebpf_common::BackendStats {
                        sock_connects: 7,
                        tc_reply_bytes: 1200,
                        ..Default::default()
                    },
                )]),
            ),
            owners: std::collections::BTreeMap::from([(
                4,
                crate::datapath::lb::BackendOwner {
                    namespace: "default".into(),
                    service: "web".into(),
                    port: 80,
                },
            )]),
        };
        let text = metrics.render(Some(datapath));
        let families =
            keelson_testbed::exposition::check(&text).unwrap_or_else(|e| panic!("{e} in:\n{text}"));
        // 24 of the agent and the policy sync, 3 per-backend families, 4 process families (no
        // async runtime here for the task count).
        assert_eq!(families, 31, "{text}");
        for line in [
            "keelson_datapath_events_total{path=\"tc_new_flow\"} 61",
            "keelson_conntrack_gc_total{event=\"passes\"} 5",
            "keelson_datapath_map_capacity{map=\"kct_v2\"} 4096",
            "keelson_datapath_conntrack_fill_ratio 0.25",
            "keelson_service_backend_connections_total{namespace=\"default\",service=\"web\",\
             port=\"80\",protocol=\"TCP\",backend=\"10.244.0.9:8080\",path=\"socket\"} 7",
            "keelson_service_backend_bytes_total{namespace=\"default\",service=\"web\",\
             port=\"80\",protocol=\"TCP\",backend=\"10.244.0.9:8080\",direction=\"reply\"} 1200",
            "kubelet_pod_worker_duration_seconds_count{operation_type=\"sync\"} 1",
            "keelson_probe_results_total{result=\"unready\"} 1",
            "keelson_pod_status_writes_total 1",
            "keelson_pod_workers 2",
            "kubeproxy_sync_proxy_rules_endpoint_changes_total 0",
            "keelson_policy_identities 3",
            "keelson_policy_entries 9",
            "keelson_policy_compile_duration_seconds 0.25",
            "keelson_policy_map_writes_total 12",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        // Without the maps the rest is still one valid text.
        let text = metrics.render(None);
        keelson_testbed::exposition::check(&text).unwrap_or_else(|e| panic!("{e} in:\n{text}"));
    }
}
