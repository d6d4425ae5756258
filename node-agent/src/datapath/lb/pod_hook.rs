//! The per-packet load balancer on every pod's veth: `tc_from_pod` at the TC ingress of each
//! pod's node-side veth, as the pod network's [`PodHook`].

use std::{
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
};

use super::{LoadBalancer, TcHook};
use crate::{datapath::DatapathError, network::PodHook};

/// Attaches `tc_from_pod` to pod veths through the agent's shared [`LoadBalancer`].
#[derive(Debug)]
pub struct PodTc {
    lb: Arc<Mutex<LoadBalancer>>,
    pin_dir: PathBuf,
}

impl PodTc {
    /// The hook for `lb`. Removes the pinned links of pod veths that went away while no agent
    /// ran (interface names resolve in the calling thread's network namespace).
    pub fn new(lb: Arc<Mutex<LoadBalancer>>) -> Result<Self, DatapathError> {
        let (pin_dir, pruned) = {
            let guard = lb.lock().unwrap_or_else(PoisonError::into_inner);
            (
                guard.pin_dir().to_path_buf(),
                guard.prune_tc_links(TcHook::FromPod)?,
            )
        };
        if pruned > 0 {
            tracing::info!(pruned, "removed TC links of pod veths that are gone");
        }
        Ok(Self { lb, pin_dir })
    }
}

impl PodHook for PodTc {
    fn veth_up(&self, interface: &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.lb
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .attach_tc(interface, TcHook::FromPod)
            .map_err(Into::into)
    }

    fn veth_gone(&self, interface: &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        LoadBalancer::detach_tc(&self.pin_dir, interface, TcHook::FromPod).map_err(Into::into)
    }
}
