//! NetworkPolicy enforcement, the agent's half: [`compile`] turns the cluster's pods,
//! namespaces and NetworkPolicies into the desired contents of the three policy maps
//! (`IPCACHE`, `ENDPOINTS`, `POLICY`, see `keelson_ebpf_common::maps`), [`diff`] turns desired
//! contents into the fewest map writes, [`apply`] performs them on any [`PolicyMaps`] (the
//! pinned maps, or memory in tests), and [`sync`] feeds the compiler from kube-rs watchers.
//!
//! Module map: [`model`] (inputs as plain data), `rules` (policies normalised), [`identity`]
//! (classes of peers and their stable numbers), `grants` (what each rule allows), [`compile`],
//! `incremental` (one policy's change without a full compile), [`diff`], [`apply`], [`sync`].

pub mod apply;
pub mod compile;
pub mod diff;
mod grants;
pub mod identity;
mod incremental;
pub mod model;
mod rules;
pub mod sync;

#[cfg(test)]
mod reference;
#[cfg(test)]
mod tests;

pub use apply::{MemoryMaps, PinnedPolicyMaps, PolicyError, PolicyMaps, PolicyState, SyncReport};
pub use compile::{Compiled, Desired, PolicyCompiler, PolicyKey, RuleRef};
pub use diff::{PolicyOp, diff};
pub use grants::port_blocks;
pub use identity::{Feature, Identities, IdentityAllocator, IdentityClass, IpcacheKey};
pub use incremental::{EndpointUpdate, NeedsCompile};
pub use model::{NAMESPACE_NAME_LABEL, NamedPort, NodeInfo, PodInfo, PolicyModel};
pub use rules::Direction;
pub use sync::{PolicyMetrics, PolicySource, PolicyTables, run};
