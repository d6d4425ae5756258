//! The flow view (issue 22, like `hubble observe` / `cilium monitor --type drop`): the
//! datapath writes a [`keelson_ebpf_common::FlowEvent`] into the `kflows_v1` ring buffer for
//! every NetworkPolicy drop and every new flow allowed at an enforcing pod; the agent's
//! [`reader`] explains each with the policy compiler's tables (pods by address, the allowing
//! rule, or for a drop the policies isolating the pod) and keeps the last ones in a
//! [`FlowStore`], served at the agent's `GET /flows` ([`store::routes`]) and read by
//! `keelson-node-agent observe` ([`client`]). The datapath also counts every judged packet per
//! policed pod, direction and verdict (`kepstats_v1`), exported on `/metrics` as
//! `keelson_policy_endpoint_packets_total` ([`reader::EndpointStats`]).
//!
//! Module map: [`record`] (pure: decode, explain, filter, print), [`store`] (memory and HTTP),
//! [`reader`] (ring buffer and counters), [`client`] (the CLI's request).

pub mod client;
pub mod reader;
pub mod record;
pub mod store;

pub use record::{FlowFilter, FlowPeer, FlowRecord, FlowVerdict};
pub use store::FlowStore;

#[cfg(test)]
mod tests;
