//! The per-packet load balancer and NetworkPolicy on every pod's veth: `tc_from_pod` at the TC
//! ingress and `tc_to_pod` at the TC egress of each pod's node-side veth, as the pod network's
//! [`PodHook`].

use std::{
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
};

use keelson_ebpf_common::LocalPod;

use super::{LoadBalancer, TcHook};
use crate::{
    datapath::DatapathError,
    network::{PodHook, PodLink},
};

/// Attaches `tc_from_pod` and `tc_to_pod` to pod veths through the agent's shared
/// [`LoadBalancer`] and, with
/// `redirect`, registers pods in `LOCAL_PODS` so packets for them skip the node's stack.
#[derive(Debug)]
pub struct PodTc {
    lb: Arc<Mutex<LoadBalancer>>,
    pin_dir: PathBuf,
    redirect: bool,
}

impl PodTc {
    /// The hook for `lb`. Removes the pinned links of pod veths that went away while no agent
    /// ran (interface names resolve in the calling thread's network namespace), and with
    /// `redirect` off, every `LOCAL_PODS` entry (the node's routing table then delivers).
    pub fn new(lb: Arc<Mutex<LoadBalancer>>, redirect: bool) -> Result<Self, DatapathError> {
        let (pin_dir, pruned) = {
            let mut guard = lb.lock().unwrap_or_else(PoisonError::into_inner);
            if !redirect {
                for (address, _) in guard.local_pods()? {
                    guard.remove_local_pod(address)?;
                }
            }
            (
                guard.pin_dir().to_path_buf(),
                guard.prune_tc_links(TcHook::FromPod)? + guard.prune_tc_links(TcHook::ToPod)?,
            )
        };
        if pruned > 0 {
            tracing::info!(pruned, "removed TC links of pod veths that are gone");
        }
        Ok(Self {
            lb,
            pin_dir,
            redirect,
        })
    }
}

impl PodHook for PodTc {
    fn veth_up(&self, interface: &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let mut lb = self.lb.lock().unwrap_or_else(PoisonError::into_inner);
        // The pod's ingress policy first: once `tc_from_pod` runs, the pod sends.
        lb.attach_tc(interface, TcHook::ToPod)?;
        lb.attach_tc(interface, TcHook::FromPod)?;
        Ok(())
    }

    fn veth_gone(&self, interface: &str) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        LoadBalancer::detach_tc(&self.pin_dir, interface, TcHook::FromPod)?;
        LoadBalancer::detach_tc(&self.pin_dir, interface, TcHook::ToPod)?;
        Ok(())
    }

    fn pod_up(&self, pod: &PodLink) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        if !self.redirect {
            return Ok(());
        }
        let entry = LocalPod {
            ifindex: pod.host_ifindex,
            pod_mac: pod.pod_mac,
            node_mac: pod.host_mac,
        };
        self.lb
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .put_local_pod(pod.address, entry)
            .map_err(Into::into)
    }

    fn pod_gone(
        &self,
        address: std::net::Ipv4Addr,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.lb
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove_local_pod(address)
            .map_err(Into::into)
    }
}
