//! A single-member etcd on loopback with a throw-away data directory, as the store contract and
//! HA tests need. Killed and removed on drop.

use std::{
    net::{Ipv4Addr, TcpListener},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{require_program, unique_name};

/// A running `etcd` process.
#[derive(Debug)]
pub struct Etcd {
    child: Child,
    data_dir: PathBuf,
    client_url: String,
}

impl Etcd {
    /// Starts etcd on two free loopback ports and waits until it answers a status request.
    pub async fn start() -> Self {
        require_program("etcd", "etcd-server");
        let client_port = free_port();
        let peer_port = free_port();
        let data_dir = std::env::temp_dir().join(unique_name("ketcd"));
        std::fs::create_dir_all(&data_dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", data_dir.display()));
        let log = std::fs::File::create(data_dir.join("etcd.log"))
            .unwrap_or_else(|e| panic!("cannot create the etcd log: {e}"));
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let child = Command::new("etcd")
            .arg("--name=keelson-test")
            .arg(format!("--data-dir={}", data_dir.join("data").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=keelson-test={peer_url}"))
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the etcd log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start etcd: {e}"));
        let mut etcd = Self {
            child,
            data_dir,
            client_url,
        };
        etcd.wait_ready().await;
        etcd
    }

    /// The client URL, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint(&self) -> &str {
        &self.client_url
    }

    /// A connected etcd-client.
    pub async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.client_url.as_str()], None)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to etcd at {}: {e}", self.client_url))
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last_error = String::new();
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("poll etcd") {
                panic!("etcd exited early with {status}:\n{}", self.log());
            }
            match etcd_client::Client::connect([self.client_url.as_str()], None).await {
                Ok(mut client) => match client.status().await {
                    Ok(_) => return,
                    Err(e) => last_error = e.to_string(),
                },
                Err(e) => last_error = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "etcd at {} not ready after 20 s ({last_error}):\n{}",
            self.client_url,
            self.log()
        );
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

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free loopback port: {e}"))
}
