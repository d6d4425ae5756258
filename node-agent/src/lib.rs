//! keelson's node agent.
//!
//! Today it holds the eBPF datapath loader; the pod sync loop, Docker runtime and pod networking
//! join it as the later issues land (see `README.md`).

pub mod datapath;
pub mod service_sync;
