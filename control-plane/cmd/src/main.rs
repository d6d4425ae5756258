//! `keelson-control-plane`: runs keelson's Kubernetes-compatible API server over an embedded
//! SQLite store (default) or etcd, serves it over HTTPS with certificates from its own CA, and
//! writes an admin kubeconfig for kubectl. `keelson-control-plane node-kubeconfig --node NAME`
//! issues a node's credentials.
#![forbid(unsafe_code)]

mod args;
mod components;
mod node_kubeconfig;
mod pki;
mod serve;

use anyhow::Context;

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(serve::run());
    // A task that does not yield must not keep a stopped server alive: give the rest a
    // bounded time to finish, then exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    result
}
