//! etcd on loopback with throw-away data directories, as the store contract and HA tests need:
//! a single member ([`Etcd`]) or a cluster of several ([`EtcdCluster`]). Killed and removed on
//! drop. A cluster of several members runs over TLS, clients and peers alike, each side
//! checking the other's certificate ([`EtcdPki`]), as a production etcd does.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{require_program, unique_name};

/// Certificates for etcd over TLS, in a temporary directory removed on drop: a CA, a serving
/// certificate for the client port, a peer certificate (server and client use: members dial
/// each other), and a client certificate for the control plane. All for 127.0.0.1.
#[derive(Debug)]
pub struct EtcdPki {
    dir: tempfile::TempDir,
}

impl EtcdPki {
    /// Generates the CA and the three certificates (`keelson_testbed::etcd_pki`).
    pub fn generate() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ketcd-pki")
            .tempdir()
            .expect("a directory for etcd's certificates");
        keelson_testbed::etcd_pki::write(dir.path())
            .unwrap_or_else(|e| panic!("cannot write etcd's certificates: {e:#}"));
        Self { dir }
    }

    /// `<dir>/<name>`: `ca.crt`, `server.crt`/`.key`, `peer.crt`/`.key`, `client.crt`/`.key`.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The control plane's flags to use this etcd: `--etcd-cafile`, `--etcd-certfile`,
    /// `--etcd-keyfile`.
    pub fn control_plane_args(&self) -> Vec<String> {
        keelson_testbed::etcd_pki::control_plane_args(self.dir.path())
    }

    /// etcd-client options with the CA and the client certificate.
    pub fn connect_options(&self) -> etcd_client::ConnectOptions {
        let read = |name: &str| {
            std::fs::read(self.file(name)).unwrap_or_else(|e| panic!("cannot read {name}: {e}"))
        };
        let tls = etcd_client::TlsOptions::new()
            .ca_certificate(etcd_client::Certificate::from_pem(read("ca.crt")))
            .identity(etcd_client::Identity::from_pem(
                read("client.crt"),
                read("client.key"),
            ));
        etcd_client::ConnectOptions::new().with_tls(tls)
    }

    /// etcd's flags for serving clients and peers over TLS with certificate checks both ways.
    fn etcd_args(&self) -> Vec<String> {
        keelson_testbed::etcd_pki::etcd_args(self.dir.path())
    }
}

/// A running `etcd` process: a single-member cluster ([`Etcd::start`]) or one member of an
/// [`EtcdCluster`].
#[derive(Debug)]
pub struct Etcd {
    child: Child,
    data_dir: PathBuf,
    client_url: String,
    tls: Option<Arc<EtcdPki>>,
}

/// One member's name and URLs, chosen before any member starts (each needs the others' peer
/// URLs).
#[derive(Debug)]
struct MemberPlan {
    name: String,
    client_url: String,
    peer_url: String,
}

impl MemberPlan {
    fn new(name: &str, tls: bool) -> Self {
        let scheme = if tls { "https" } else { "http" };
        Self {
            name: name.to_owned(),
            client_url: format!("{scheme}://127.0.0.1:{}", free_port()),
            peer_url: format!("{scheme}://127.0.0.1:{}", free_port()),
        }
    }
}

impl Etcd {
    /// Starts etcd on two free loopback ports and waits until it answers a status request.
    pub async fn start() -> Self {
        Self::start_single(None).await
    }

    /// Like [`Etcd::start`], serving clients and its peer port over TLS with client
    /// certificates required ([`EtcdPki`]); [`Etcd::tls`] has the certificates.
    pub async fn start_tls() -> Self {
        Self::start_single(Some(Arc::new(EtcdPki::generate()))).await
    }

    async fn start_single(tls: Option<Arc<EtcdPki>>) -> Self {
        on_new_ports(|| async {
            let plan = MemberPlan::new("keelson-test", tls.is_some());
            let initial_cluster = format!("{}={}", plan.name, plan.peer_url);
            let mut etcd = Self::spawn(&plan, &initial_cluster, &unique_name("ketcd"), tls.clone());
            etcd.wait_ready(None).await.map(|()| etcd)
        })
        .await
    }

    /// The certificates of an etcd over TLS.
    pub fn tls(&self) -> Option<&EtcdPki> {
        self.tls.as_deref()
    }

    fn connect_options(&self) -> Option<etcd_client::ConnectOptions> {
        self.tls.as_ref().map(|pki| pki.connect_options())
    }

    /// Starts member `plan` of the cluster `initial_cluster` (`name=peer-url,...`, every member
    /// with the same `token`) in a new data directory, without waiting.
    fn spawn(
        plan: &MemberPlan,
        initial_cluster: &str,
        token: &str,
        tls: Option<Arc<EtcdPki>>,
    ) -> Self {
        require_program("etcd", "etcd-server");
        let data_dir = std::env::temp_dir().join(unique_name("ketcd"));
        std::fs::create_dir_all(&data_dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", data_dir.display()));
        let log = std::fs::File::create(data_dir.join("etcd.log"))
            .unwrap_or_else(|e| panic!("cannot create the etcd log: {e}"));
        let MemberPlan {
            name,
            client_url,
            peer_url,
        } = plan;
        let child = Command::new("etcd")
            .arg(format!("--name={name}"))
            .arg(format!("--data-dir={}", data_dir.join("data").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster={initial_cluster}"))
            .arg("--initial-cluster-state=new")
            .arg(format!("--initial-cluster-token={token}"))
            .arg("--log-level=warn")
            .args(tls.as_ref().map(|pki| pki.etcd_args()).unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the etcd log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start etcd: {e}"));
        Self {
            child,
            data_dir,
            client_url: client_url.clone(),
            tls,
        }
    }

    /// The client URL, e.g. `http://127.0.0.1:40123` (`https://` over TLS).
    pub fn endpoint(&self) -> &str {
        &self.client_url
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A connected etcd-client.
    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.client_url.as_str()], self.connect_options())
            .await
            .unwrap_or_else(|e| panic!("cannot connect to etcd at {}: {e}", self.client_url))
    }

    /// Waits (at most 20 s) until the member answers a status request and, when `members` is
    /// given, knows a leader and has that many members.
    /// An early exit of etcd is the error (the caller may try other ports); no answer within
    /// 20 s panics.
    async fn wait_ready(&mut self, members: Option<usize>) -> Result<(), EarlyExit> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last_error = String::new();
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("poll etcd") {
                return Err(EarlyExit {
                    status,
                    log: self.log(),
                });
            }
            let probe = tokio::time::timeout(Duration::from_secs(2), self.probe(members)).await;
            match probe {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => last_error = e,
                Err(_) => last_error = "no answer within 2 s".into(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "etcd at {} not ready after 20 s ({last_error}):\n{}",
            self.client_url,
            self.log()
        );
    }

    /// Whether the member answers a status request (and, with `members`, knows a leader and
    /// lists that many members); the cause otherwise.
    async fn probe(&self, members: Option<usize>) -> Result<(), String> {
        let mut client =
            etcd_client::Client::connect([self.client_url.as_str()], self.connect_options())
                .await
                .map_err(|e| e.to_string())?;
        let status = client.status().await.map_err(|e| e.to_string())?;
        let Some(count) = members else {
            return Ok(());
        };
        if status.leader() == 0 {
            return Err("no leader yet".into());
        }
        let listed = client
            .member_list()
            .await
            .map_err(|e| e.to_string())?
            .members()
            .len();
        if listed == count {
            Ok(())
        } else {
            Err(format!("{listed} of {count} members"))
        }
    }

    /// Kills the member with SIGKILL (by its pid) and reaps it; its data directory stays until
    /// drop.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("etcd.log")).unwrap_or_default()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// An etcd cluster of several members on loopback, as stacked control-plane nodes run it.
/// Each member is killed and its data directory removed on drop.
#[derive(Debug)]
pub struct EtcdCluster {
    /// The members, in the order of [`EtcdCluster::endpoints`].
    pub members: Vec<Etcd>,
}

impl EtcdCluster {
    /// Starts `size` members (`member-0`, ...) on free loopback ports, clients and peers over
    /// TLS with certificates checked both ways ([`EtcdPki`]; a control plane needs
    /// [`EtcdCluster::control_plane_args`]), and waits until every one answers, knows a leader
    /// and lists all `size` members.
    pub async fn start(size: usize) -> Self {
        let pki = Arc::new(EtcdPki::generate());
        on_new_ports(|| Self::try_start(size, Arc::clone(&pki))).await
    }

    /// One try of [`EtcdCluster::start`] on newly chosen ports.
    async fn try_start(size: usize, pki: Arc<EtcdPki>) -> Result<Self, EarlyExit> {
        let plans: Vec<MemberPlan> = (0..size)
            .map(|i| MemberPlan::new(&format!("member-{i}"), true))
            .collect();
        let initial_cluster = plans
            .iter()
            .map(|p| format!("{}={}", p.name, p.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        let token = unique_name("ketcd");
        let mut cluster = Self {
            members: plans
                .iter()
                .map(|plan| Etcd::spawn(plan, &initial_cluster, &token, Some(Arc::clone(&pki))))
                .collect(),
        };
        for member in &mut cluster.members {
            member.wait_ready(Some(size)).await?;
        }
        Ok(cluster)
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// The client URLs comma-separated, member `first`'s first (a stacked control plane lists
    /// its local member first), for `--etcd-endpoints`.
    pub fn endpoints_arg(&self, first: usize) -> String {
        let mut endpoints = self.endpoints();
        let count = endpoints.len().max(1);
        endpoints.rotate_left(first % count);
        endpoints.join(",")
    }

    /// The control plane's `--etcd-cafile`, `--etcd-certfile` and `--etcd-keyfile` for this
    /// cluster.
    pub fn control_plane_args(&self) -> Vec<String> {
        self.members
            .first()
            .and_then(Etcd::tls)
            .map(EtcdPki::control_plane_args)
            .unwrap_or_default()
    }

    /// Kills member `index` with SIGKILL.
    pub fn kill(&mut self, index: usize) {
        self.members[index].kill();
    }
}

/// How many sets of ports a start tries: a port found free can be taken by another test before
/// etcd binds it.
const BIND_ATTEMPTS: u32 = 5;

/// Runs `start` until it does not fail for a port taken in the meantime (each try chooses new
/// ports), at most [`BIND_ATTEMPTS`] times; panics with any other early exit.
async fn on_new_ports<T, F, Fut>(mut start: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, EarlyExit>>,
{
    let mut attempt = 1;
    loop {
        match start().await {
            Ok(started) => return started,
            Err(exit) if attempt < BIND_ATTEMPTS && exit.lost_a_port() => attempt += 1,
            Err(exit) => panic!("{exit}"),
        }
    }
}

/// etcd exited before it answered.
#[derive(Debug)]
struct EarlyExit {
    status: std::process::ExitStatus,
    log: String,
}

impl EarlyExit {
    /// Whether it exited because one of its ports was taken in the meantime.
    fn lost_a_port(&self) -> bool {
        self.log.contains("address already in use")
    }
}

impl std::fmt::Display for EarlyExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "etcd exited early with {}:\n{}", self.status, self.log)
    }
}

fn free_port() -> u16 {
    keelson_testbed::free_loopback_port().unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}
