//! `cargo xtask cluster up|down|status`: a multi-node keelson cluster on this machine, each node
//! a network namespace on the bridge `kb-kc` (172.30.0.0/24), through `keelson-testbed`.
//!
//! `up` runs setup, builds the release binaries, starts the cluster `kc` (state, kubeconfigs
//! and logs in `.keelson/cluster/`), prints the `export KUBECONFIG=...` line and the nodes, and
//! returns with the cluster running in the background. `down` removes every namespace, link,
//! container, pinned map and cgroup and stops the processes `up` started; `status` prints them.

use std::{path::PathBuf, process::Command, time::Instant};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand, ValueEnum};
use keelson_testbed::{Cluster, ClusterSpec, Routing, StoreKind};

use crate::{
    cmd::{self, repo_root},
    up,
};

const NAME: &str = "kc";
const SUBNET: u8 = 0;
const CLUSTER_CIDR: &str = "10.244.0.0/16";
const SERVICE_CIDR: &str = "10.96.0.0/12";
/// LoadBalancer IPs: a range of the bridge subnet, announced on it by one node each.
const LB_POOL: &str = "172.30.0.200-172.30.0.250";

#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    command: ClusterCommand,
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Build the release binaries and start the cluster `kc`: one network namespace per node on
    /// the bridge kb-kc (172.30.0.0/24), the control plane(s) on 172.30.0.1:6443.
    Up(UpArgs),
    /// Stop the cluster and remove its namespaces, links, containers, pinned maps and cgroups.
    Down,
    /// Print the cluster's processes and nodes.
    Status,
}

#[derive(Debug, Args)]
struct UpArgs {
    /// Number of nodes (1 to 9).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// How pod traffic crosses nodes (the agents' KEELSON_ROUTING).
    #[arg(long, value_enum, default_value_t = RoutingArg::Direct)]
    routing: RoutingArg,
    /// The store: sqlite (one control plane) or etcd (three control planes on a 3-member etcd)
    /// [default: sqlite, etcd with --control-planes 3].
    #[arg(long, value_enum)]
    store: Option<StoreArg>,
    /// 1, or 3 (implies --store etcd) [default: 1, 3 with --store etcd].
    #[arg(long)]
    control_planes: Option<usize>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RoutingArg {
    Direct,
    Tunnel,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum StoreArg {
    Sqlite,
    Etcd,
}

fn state_dir() -> PathBuf {
    repo_root().join(".keelson/cluster")
}

pub fn run(args: &ClusterArgs) -> anyhow::Result<()> {
    match &args.command {
        ClusterCommand::Up(up_args) => cluster_up(up_args),
        ClusterCommand::Down => cluster_down(),
        ClusterCommand::Status => status(),
    }
}

/// The store and the number of control planes the flags ask for, or why they do not fit.
fn store_and_planes(args: &UpArgs) -> anyhow::Result<(StoreKind, usize)> {
    match (args.store, args.control_planes) {
        (None | Some(StoreArg::Sqlite), None | Some(1)) => Ok((StoreKind::Sqlite, 1)),
        (None | Some(StoreArg::Etcd), Some(3)) | (Some(StoreArg::Etcd), None) => {
            Ok((StoreKind::Etcd, 3))
        }
        (Some(StoreArg::Sqlite), Some(n)) => {
            bail!(
                "--store sqlite serves one control plane, not {n}; use --control-planes 3 alone for etcd"
            )
        }
        (_, Some(n)) => bail!("--control-planes is 1 (sqlite) or 3 (etcd), not {n}"),
    }
}

fn cluster_up(args: &UpArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    cmd::require_root("cargo xtask cluster up")?;
    let (store, control_planes) = store_and_planes(args)?;
    if !(1..=9).contains(&args.nodes) {
        bail!("--nodes is 1 to 9, not {}", args.nodes);
    }
    if keelson_testbed::summary(&state_dir())?.is_some() {
        bail!(
            "cluster {NAME} exists ({}/cluster.state): run `cargo xtask cluster down` first",
            state_dir().display()
        );
    }
    crate::setup::run()?;
    let kubectl = up::kubectl()?;
    println!("==> cluster up: building release binaries");
    let release = up::build_release()?;
    let mut spec = ClusterSpec::new(NAME, SUBNET, args.nodes, release, state_dir());
    spec.routing = match args.routing {
        RoutingArg::Direct => Routing::Direct,
        RoutingArg::Tunnel => Routing::Tunnel,
    };
    spec.store = store;
    spec.control_planes = control_planes;
    spec.cluster_cidr = CLUSTER_CIDR.to_owned();
    spec.service_cidr = SERVICE_CIDR.to_owned();
    spec.lb_pool = Some(LB_POOL.to_owned());
    let cluster_started = Instant::now();
    let cluster = Cluster::up_with_progress(spec, |step| println!("==> cluster up: {step}"))?;
    println!(
        "==> cluster up: {} nodes Ready ({:.1} s for the cluster, {:.1} s in all)",
        args.nodes,
        cluster_started.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    for i in 1..=control_planes {
        println!("    API server {i}: https://{}", cluster.api_address(i));
    }
    if !cluster.etcd_endpoints().is_empty() {
        println!("    etcd: {}", cluster.etcd_endpoints().join(","));
    }
    let kubeconfig = cluster.kubeconfig().to_path_buf();
    println!(
        "\n    export KUBECONFIG={}\n    kubectl get nodes -o wide\n",
        kubeconfig.display()
    );
    print_nodes(&kubectl, &kubeconfig)?;
    println!(
        "\nLoadBalancer Services get an EXTERNAL-IP from {LB_POOL}, announced on the bridge by \
         one node each (ARP) and answering from this machine:\n\
         \x20   kubectl expose deployment <name> --type LoadBalancer --port 80\n\
         \x20   curl http://$(kubectl get service <name> -o jsonpath='{{.status.loadBalancer.ingress[0].ip}}')/"
    );
    println!(
        "\nLogs in {}/logs; `cargo xtask cluster down` removes the cluster.",
        state_dir().display()
    );
    cluster.detach();
    Ok(())
}

fn cluster_down() -> anyhow::Result<()> {
    cmd::require_root("cargo xtask cluster down")?;
    let dir = state_dir();
    if let Some(summary) = keelson_testbed::summary(&dir)? {
        println!(
            "==> cluster down: removing cluster {} ({} nodes)",
            summary.name,
            summary.nodes.len()
        );
    }
    if keelson_testbed::down_from_state(&dir)? {
        println!(
            "==> cluster down: removed (logs stay in {}/logs)",
            dir.display()
        );
    } else {
        println!(
            "==> cluster down: no cluster ({}/cluster.state is absent)",
            dir.display()
        );
    }
    Ok(())
}

fn status() -> anyhow::Result<()> {
    let Some(summary) = keelson_testbed::summary(&state_dir())? else {
        println!("no cluster (`cargo xtask cluster up` starts one)");
        return Ok(());
    };
    println!("cluster {}:", summary.name);
    for (what, pid, alive) in &summary.processes {
        let state = if *alive { "running" } else { "NOT running" };
        println!("    {what}: pid {pid} {state}");
    }
    println!("    export KUBECONFIG={}\n", summary.kubeconfig.display());
    print_nodes(&up::kubectl()?, &summary.kubeconfig)
}

fn print_nodes(kubectl: &std::path::Path, kubeconfig: &std::path::Path) -> anyhow::Result<()> {
    let output = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--request-timeout=10s", "get", "nodes", "-o", "wide"])
        .output()
        .with_context(|| format!("cannot run {}", kubectl.display()))?;
    if !output.status.success() {
        bail!(
            "kubectl get nodes failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    print!("{}", String::from_utf8_lossy(&output.stdout));
    Ok(())
}
