//! `keelson-control-plane`: runs keelson's Kubernetes-compatible API server over an embedded
//! SQLite store (default) or etcd, serves it over HTTPS with certificates from its own CA, and
//! writes an admin kubeconfig for kubectl. `keelson-control-plane node-kubeconfig --node NAME`
//! issues a node's credentials; `keelson-control-plane token create` prints the one-line join
//! command of a new bootstrap token (see `token`); `keelson-control-plane snapshot save|restore`
//! backs the store up and restores it (see `snapshot`).
#![forbid(unsafe_code)]

mod address;
mod args;
mod audit;
mod components;
mod node_kubeconfig;
mod overload;
mod pki;
mod serve;
mod service_accounts;
mod snapshot;
mod storage;
mod token;

use anyhow::Context;

fn main() -> std::process::ExitCode {
    use clap::{CommandFactory as _, Parser as _};
    // `--config FILE`: the file's keys become flags before clap reads them; a bad file is
    // one line and exit 1.
    let argv = keelson_daemon::config_file::expand(
        &args::Args::command(),
        None,
        std::env::args_os().collect(),
        std::env::var_os(keelson_daemon::config_file::ENV),
    );
    let args = match argv {
        Ok(argv) => args::Args::parse_from(argv),
        Err(error) => {
            eprintln!("keelson-control-plane: {error:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match run(args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("keelson-control-plane: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: args::Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(serve::run(args));
    // A task that does not yield must not keep a stopped server alive: give the rest a
    // bounded time to finish, then exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    result
}
