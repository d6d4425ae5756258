//! One scale of the benchmark: the Services and the rule files generated for them, once.

use crate::{
    kubeproxy::{self, BaselineService},
    services::{ServiceSpec, backend_addr, bench_services},
};

/// kube-proxy's nftables rules are loaded in transactions of this many Services: one
/// transaction for 10 000 Services costs the kernel minutes (see [`kubeproxy::nft_script`]).
const NFT_SERVICES_PER_BATCH: usize = 1000;

/// The Services of one scale and their kube-proxy rules.
#[derive(Debug)]
pub struct Scale {
    /// Number of Services.
    pub count: usize,
    /// The Services; the last one is measured.
    pub services: Vec<ServiceSpec>,
    /// The same, one entry per Service port, as kube-proxy sees them.
    pub baseline: Vec<BaselineService>,
    /// kube-proxy's iptables `nat` table for all of them (`iptables-restore` input).
    pub iptables: String,
    /// kube-proxy's nftables table for all of them, as `nft -f` batches.
    pub nft_batches: Vec<String>,
}

impl Scale {
    /// Generates the Services and the rules for `count` Services over `pool` backends.
    pub fn new(count: usize, pool: usize) -> Self {
        let services = bench_services(count.max(1), pool, backend_addr(0));
        let baseline = kubeproxy::baseline_services(&services);
        let iptables = kubeproxy::iptables_restore(&baseline);
        let nft_batches = kubeproxy::nft_script_batches(&baseline, NFT_SERVICES_PER_BATCH);
        Self {
            count: services.len(),
            services,
            baseline,
            iptables,
            nft_batches,
        }
    }

    /// The Service the benchmark measures: the last one created.
    pub fn measured(&self) -> &ServiceSpec {
        // `new` makes at least one.
        &self.services[self.services.len() - 1]
    }
}
