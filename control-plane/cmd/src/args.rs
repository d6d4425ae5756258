//! The command line: flags (each with an env var) and subcommands.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

use clap::{Parser, Subcommand, ValueEnum};
use keelson_api::cidr::Ipv4Cidr;
use keelson_apiserver::ServiceNetwork;
use keelson_controllers::ControllerSet;

/// Which store backend holds the cluster state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum StoreKind {
    /// Embedded SQLite at DATA_DIR/state.db.
    Sqlite,
    /// An external etcd cluster (--etcd-endpoints).
    Etcd,
}

/// keelson's control plane: a Kubernetes-compatible API server.
///
/// The API is served over HTTPS. On first start it creates a CA in DATA_DIR/pki and writes
/// DATA_DIR/admin.kubeconfig (a client certificate in group system:masters). Clients
/// authenticate with a certificate from that CA or a bearer token from --token-auth-file;
/// requests are authorized by RBAC; anonymous ones may read /healthz, /readyz, /livez and
/// /version only (--anonymous-auth=false: 401).
#[derive(Debug, Parser)]
#[command(version, about, long_about)]
pub(crate) struct Args {
    /// Directory for the store (state.db), the CA and certificates (pki/) and
    /// admin.kubeconfig; created if missing.
    #[arg(
        long,
        global = true,
        env = "KEELSON_DATA_DIR",
        default_value = "/var/lib/keelson"
    )]
    pub(crate) data_dir: PathBuf,
    /// A YAML file whose keys are these flags' names (`secure-port: 6443`); flags given on the
    /// command line win over it, and it wins over environment variables and defaults. An
    /// unknown key is refused.
    #[arg(long, global = true, env = "KEELSON_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// The IP address to serve the API on (`0.0.0.0`: every IPv4 address of the host, `::`:
    /// every address).
    #[arg(
        long,
        global = true,
        env = "KEELSON_BIND_ADDRESS",
        default_value = "0.0.0.0"
    )]
    pub(crate) bind_address: IpAddr,
    /// The port to serve the API on (HTTPS).
    #[arg(
        long,
        global = true,
        env = "KEELSON_SECURE_PORT",
        default_value_t = 6443
    )]
    pub(crate) secure_port: u16,
    /// Address and port to serve the API on, in one (`127.0.0.1:6443`); overrides
    /// --bind-address and --secure-port.
    #[arg(long, global = true, env = "KEELSON_LISTEN")]
    pub(crate) listen: Option<SocketAddr>,
    /// Static bearer tokens, Kubernetes' CSV format: token,user,uid[,"group1,group2"].
    #[arg(long, env = "KEELSON_TOKEN_AUTH_FILE")]
    pub(crate) token_auth_file: Option<PathBuf>,
    /// Serve requests without credentials as system:anonymous, authorized like any user
    /// (Kubernetes' --anonymous-auth); false answers them 401.
    #[arg(long, env = "KEELSON_ANONYMOUS_AUTH", default_value_t = true,
          action = clap::ArgAction::Set)]
    pub(crate) anonymous_auth: bool,
    /// Extra DNS names or IP addresses for the serving certificate (repeatable).
    #[arg(long = "tls-san", value_name = "NAME_OR_IP")]
    pub(crate) tls_sans: Vec<String>,
    #[command(subcommand)]
    pub(crate) command: Option<Command>,
    /// Store backend.
    #[arg(long, env = "KEELSON_STORE", value_enum, default_value_t = StoreKind::Sqlite)]
    pub(crate) store: StoreKind,
    /// etcd client URLs for --store etcd, comma-separated.
    #[arg(
        long,
        env = "KEELSON_ETCD_ENDPOINTS",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    pub(crate) etcd_endpoints: Vec<String>,
    /// The CA that signed etcd's serving certificates (PEM), for `https://` etcd endpoints.
    #[arg(long, env = "KEELSON_ETCD_CAFILE")]
    pub(crate) etcd_cafile: Option<PathBuf>,
    /// The client certificate (PEM) to present to etcd (etcd's --client-cert-auth).
    #[arg(long, env = "KEELSON_ETCD_CERTFILE", requires = "etcd_keyfile")]
    pub(crate) etcd_certfile: Option<PathBuf>,
    /// The private key (PEM) of --etcd-certfile.
    #[arg(long, env = "KEELSON_ETCD_KEYFILE", requires = "etcd_certfile")]
    pub(crate) etcd_keyfile: Option<PathBuf>,
    /// Encrypt Secrets in the store with AES-GCM, keyed by DATA_DIR/pki/encryption-config.yaml,
    /// which is written with a new random key when missing. `--secrets-encryption=false`
    /// writes Secrets in plaintext (a key file already there still decrypts the old ones).
    #[arg(long, env = "KEELSON_SECRETS_ENCRYPTION", default_value_t = true,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub(crate) secrets_encryption: bool,
    /// Serve lists and watches from an in-memory cache of the store fed by one store watch
    /// (kube-apiserver's --watch-cache); `--watch-cache=false` reads every list and opens a
    /// store watch per watch request.
    #[arg(long, env = "KEELSON_WATCH_CACHE", default_value_t = true,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub(crate) watch_cache: bool,
    /// Kubernetes' EncryptionConfiguration file (apiserver.config.k8s.io/v1, providers
    /// `aesgcm` and `identity`): which resources are encrypted with which keys. Overrides
    /// --secrets-encryption.
    #[arg(long, env = "KEELSON_ENCRYPTION_PROVIDER_CONFIG")]
    pub(crate) encryption_provider_config: Option<PathBuf>,
    #[command(flatten)]
    pub(crate) cluster: ClusterArgs,
    #[command(flatten)]
    pub(crate) service_accounts: crate::service_accounts::ServiceAccountArgs,
    #[command(flatten)]
    pub(crate) audit: crate::audit::AuditArgs,
    #[command(flatten)]
    pub(crate) snapshot: crate::snapshot::SnapshotArgs,
    #[command(flatten)]
    pub(crate) overload: crate::overload::OverloadArgs,
}

/// Networks, the scheduler and the controllers.
#[derive(Debug, clap::Args)]
pub(crate) struct ClusterArgs {
    /// The block Services' ClusterIPs are allocated from (the first address is the
    /// `kubernetes` Service's).
    #[arg(
        long,
        env = "KEELSON_SERVICE_CLUSTER_IP_RANGE",
        default_value = "10.96.0.0/12"
    )]
    pub(crate) service_cluster_ip_range: Ipv4Cidr,
    /// The NodePort range, `LOW-HIGH`.
    #[arg(
        long,
        env = "KEELSON_SERVICE_NODE_PORT_RANGE",
        default_value = "30000-32767",
        value_parser = parse_port_range
    )]
    pub(crate) service_node_port_range: std::ops::RangeInclusive<u16>,
    /// The address this control plane is reached at by nodes and pods: in the serving
    /// certificate, the `kubernetes` Service's endpoints and join commands [default: the bind
    /// address if it is a specific one, else the address of the interface with the default
    /// route, else 127.0.0.1].
    #[arg(long, env = "KEELSON_ADVERTISE_ADDRESS")]
    pub(crate) advertise_address: Option<std::net::IpAddr>,
    /// The block node pod CIDRs are cut from (node IPAM).
    #[arg(long, env = "KEELSON_CLUSTER_CIDR", default_value = "10.244.0.0/16")]
    pub(crate) cluster_cidr: Ipv4Cidr,
    /// The prefix length of each node's pod CIDR.
    #[arg(long, env = "KEELSON_NODE_CIDR_MASK_SIZE", default_value_t = 24,
          value_parser = clap::value_parser!(u8).range(1..=30))]
    pub(crate) node_cidr_mask_size: u8,
    /// The addresses `type: LoadBalancer` Services get in `status.loadBalancer.ingress` (those
    /// without `spec.loadBalancerClass` or with `keelson.dev/lb`): CIDRs (`10.0.0.0/24`,
    /// network and broadcast addresses left out) or ranges `FIRST-LAST`; repeat the flag or
    /// separate them with commas. None: LoadBalancer Services stay pending.
    #[arg(
        long,
        env = "KEELSON_SERVICE_LB_POOL",
        value_name = "CIDR|FIRST-LAST",
        value_delimiter = ','
    )]
    pub(crate) service_lb_pool: Vec<keelson_controllers::lbipam::PoolRange>,
    /// Controllers to run: `all`, `none`, or a comma-separated list of endpointslice,
    /// endpoints, replicaset, deployment, namespace, garbagecollector, nodeipam, nodelifecycle,
    /// bootstrapsigner, tokencleaner, csrapproving, csrsigning, clusterrole-aggregation,
    /// serviceaccount, root-ca-cert-publisher; `-name` removes one (`all,-nodelifecycle`).
    #[arg(long, env = "KEELSON_CONTROLLERS", default_value = "all")]
    pub(crate) controllers: ControllerSet,
    /// The longest lifetime of certificates the CSR signer issues (Kubernetes'
    /// --cluster-signing-duration); a request's spec.expirationSeconds may ask for less.
    #[arg(long, env = "KEELSON_CLUSTER_SIGNING_DURATION", default_value = "8760h",
          value_parser = parse_duration)]
    pub(crate) cluster_signing_duration: std::time::Duration,
    /// Do not run the scheduler (pods stay unbound unless another scheduler binds them).
    #[arg(long, env = "KEELSON_NO_SCHEDULER")]
    pub(crate) no_scheduler: bool,
    /// How long a node's Lease may go unrenewed before the node is NotReady (Unknown) and
    /// tainted `node.kubernetes.io/unreachable` (e.g. `40s`, `500ms`).
    #[arg(long, env = "KEELSON_NODE_MONITOR_GRACE_PERIOD", default_value = "40s",
          value_parser = parse_duration)]
    pub(crate) node_monitor_grace_period: std::time::Duration,
    /// How often the node lifecycle controller checks node Leases.
    #[arg(long, env = "KEELSON_NODE_MONITOR_PERIOD", default_value = "5s",
          value_parser = parse_duration)]
    pub(crate) node_monitor_period: std::time::Duration,
    /// How long pods without their own toleration of `node.kubernetes.io/unreachable` stay
    /// on an unreachable node before they are evicted.
    #[arg(
        long,
        env = "KEELSON_DEFAULT_UNREACHABLE_TOLERATION_SECONDS",
        default_value_t = 300
    )]
    pub(crate) default_unreachable_toleration_seconds: u64,
    /// Where the built-in `local-path` StorageClass puts volumes on nodes (k3s's flag).
    #[arg(long, env = "KEELSON_DEFAULT_LOCAL_STORAGE_PATH",
          default_value = keelson_api::storage::DEFAULT_LOCAL_PATH_ROOT)]
    pub(crate) default_local_storage_path: String,
    /// How often the HorizontalPodAutoscaler controller syncs each HPA (Kubernetes'
    /// --horizontal-pod-autoscaler-sync-period).
    #[arg(long, env = "KEELSON_HORIZONTAL_POD_AUTOSCALER_SYNC_PERIOD", default_value = "15s",
          value_parser = parse_duration)]
    pub(crate) horizontal_pod_autoscaler_sync_period: std::time::Duration,
    /// Run the controllers and the scheduler only while holding their Lease
    /// (kube-system/keelson-controller-manager, kube-system/keelson-scheduler), so several
    /// control planes on one store never act twice. `--leader-elect=false` to turn off.
    #[arg(long, env = "KEELSON_LEADER_ELECT", default_value_t = true,
          action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub(crate) leader_elect: bool,
    /// This instance's holderIdentity [default: HOSTNAME_LISTEN_PID].
    #[arg(long, env = "KEELSON_LEADER_ELECT_IDENTITY")]
    pub(crate) leader_elect_identity: Option<String>,
    /// How long a leader Lease holds without renewal.
    #[arg(long, env = "KEELSON_LEADER_ELECT_LEASE_DURATION", default_value = "15s",
          value_parser = parse_duration)]
    pub(crate) leader_elect_lease_duration: std::time::Duration,
    /// How long a leader keeps acting without renewing (less than the lease duration).
    #[arg(long, env = "KEELSON_LEADER_ELECT_RENEW_DEADLINE", default_value = "10s",
          value_parser = parse_duration)]
    pub(crate) leader_elect_renew_deadline: std::time::Duration,
    /// How often candidates try to acquire and the leader renews.
    #[arg(long, env = "KEELSON_LEADER_ELECT_RETRY_PERIOD", default_value = "2s",
          value_parser = parse_duration)]
    pub(crate) leader_elect_retry_period: std::time::Duration,
}

/// A positive duration: `40s`, `500ms`, `2m`, `1h30m` (or ISO 8601 `PT40S`).
pub(crate) fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let duration: jiff::SignedDuration = text
        .parse()
        .map_err(|e| format!("{text:?} is not a duration like 40s or 500ms: {e}"))?;
    if !duration.is_positive() {
        return Err(format!("{text:?} must be a positive duration"));
    }
    Ok(duration.unsigned_abs())
}

pub(crate) fn parse_port_range(text: &str) -> Result<std::ops::RangeInclusive<u16>, String> {
    let (low, high) = text
        .split_once('-')
        .ok_or_else(|| format!("expected LOW-HIGH, e.g. 30000-32767, not {text:?}"))?;
    let parse = |p: &str| {
        p.trim()
            .parse::<u16>()
            .map_err(|_| format!("{p:?} is not a port number"))
    };
    let (low, high) = (parse(low)?, parse(high)?);
    if low == 0 || low > high {
        return Err(format!(
            "{text:?} is not a range of ports LOW-HIGH with 0 < LOW <= HIGH"
        ));
    }
    Ok(low..=high)
}

impl Args {
    /// The address and port to serve on (`--listen`, else `--bind-address`:`--secure-port`).
    pub(crate) fn listen(&self) -> SocketAddr {
        self.listen
            .unwrap_or(SocketAddr::new(self.bind_address, self.secure_port))
    }

    /// The address nodes and pods reach this control plane at (see [`crate::address`]).
    pub(crate) fn advertise_address(&self) -> IpAddr {
        crate::address::advertise(self.cluster.advertise_address, self.listen().ip())
    }
}

impl ClusterArgs {
    pub(crate) fn service_network(&self) -> ServiceNetwork {
        ServiceNetwork {
            cluster_ip_range: self.service_cluster_ip_range,
            node_ports: self.service_node_port_range.clone(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Issues node NAME's credentials (user system:node:NAME in group system:nodes, which may
    /// change only its own Node and Lease and the pods bound to it) and prints a kubeconfig.
    NodeKubeconfig {
        /// The node's name.
        #[arg(long)]
        node: String,
        /// The API server URL the node uses [default: https://ADVERTISE_ADDRESS:PORT].
        #[arg(long)]
        server: Option<String>,
        /// Write the kubeconfig here (mode 0600) instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Bootstrap tokens for `keelson-node-agent join` (through the running API server, with
    /// DATA_DIR/admin.kubeconfig).
    Token {
        #[command(subcommand)]
        action: crate::token::TokenCommand,
    },
    /// Snapshots of the store: save one while the control plane serves, restore one with it
    /// stopped, list the scheduled ones (k3s's `etcd-snapshot`).
    Snapshot {
        #[command(subcommand)]
        action: crate::snapshot::SnapshotCommand,
    },
}
