//! The in-process cluster components: the `kubernetes` Service, the controllers and the
//! scheduler, run as API clients of this server, each with its own identity.
//!
//! As kubeadm sets a cluster up, the scheduler authenticates as `system:kube-scheduler` and
//! the controllers as `system:kube-controller-manager` (client certificates from the cluster
//! CA, no group), with the kubeconfigs `scheduler.conf` and `controller-manager.conf` beside
//! the admin's. What they may do is the bootstrap RBAC policy's
//! ([`keelson_api::rbac_policy`]): Kubernetes' `system:kube-scheduler`, and
//! `system:kube-controller-manager` plus every `system:controller:*` role keelson's
//! controllers need, all bound to that one user, since they run in one process.

use std::{net::SocketAddr, path::Path};

use anyhow::Context;
use keelson_api::rbac_policy::{self, keelson::CONTROLLER_MANAGER_LEASE, keelson::SCHEDULER_LEASE};
use keelson_store::Store;

use crate::{
    args::ClusterArgs,
    pki::{self, Pki},
};

/// An in-process component that talks to the API server as a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Component {
    /// The scheduler.
    Scheduler,
    /// The controllers, all of them under one identity.
    ControllerManager,
}

impl Component {
    /// Every component.
    pub(crate) const ALL: [Self; 2] = [Self::Scheduler, Self::ControllerManager];

    /// The user it authenticates as (its certificate's common name; no group).
    pub(crate) fn user(self) -> &'static str {
        match self {
            Self::Scheduler => rbac_policy::SCHEDULER_USER,
            Self::ControllerManager => rbac_policy::CONTROLLER_MANAGER_USER,
        }
    }

    /// The stem of its certificate and key files in the PKI directory, and of its kubeconfig
    /// (`<stem>.conf`, kubeadm's names) in the data directory.
    fn stem(self) -> &'static str {
        match self {
            Self::Scheduler => "scheduler",
            Self::ControllerManager => "controller-manager",
        }
    }

    /// Its kubeconfig in the data directory `dir`.
    pub(crate) fn kubeconfig(self, dir: &Path) -> std::path::PathBuf {
        dir.join(format!("{}.conf", self.stem()))
    }
}

/// Writes each component's kubeconfig into `dir` for `server`, with a client certificate
/// from the cluster CA that is reused until the last third of its lifetime, then renewed at
/// the next start (as the admin's is).
pub(crate) fn write_component_kubeconfigs(
    dir: &Path,
    pki: &Pki,
    server: &str,
) -> anyhow::Result<()> {
    for component in Component::ALL {
        let credentials = pki.persistent_client(component.stem(), component.user(), None)?;
        pki::write_private(
            &component.kubeconfig(dir),
            pki::kubeconfig(server, pki.ca_pem(), component.user(), &credentials).as_bytes(),
        )?;
    }
    Ok(())
}

/// The client `component` talks to the API server with: its own identity, from the
/// kubeconfig [`write_component_kubeconfigs`] wrote into `dir`.
pub(crate) async fn component_client(
    component: Component,
    dir: &Path,
) -> anyhow::Result<kube::Client> {
    admin_client(&component.kubeconfig(dir)).await
}

/// A kube-rs client with the kubeconfig at `kubeconfig` (the admin's, or a component's).
pub(crate) async fn admin_client(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let file = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("cannot read {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(file, &Default::default())
        .await
        .with_context(|| format!("cannot use {}", kubeconfig.display()))?;
    kube::Client::try_from(config).context("cannot build an API client")
}

/// Creates the `kubernetes` and `kube-dns` Services, then starts the scheduler and the controllers the flags
/// ask for, as API clients of the server listening on `listen` (advertised at
/// `advertise_ip`), with their kubeconfigs written into `data_dir`. Returns the task to abort
/// on shutdown.
pub(crate) async fn start_cluster_components(
    args: &ClusterArgs,
    store: &dyn Store,
    listen: SocketAddr,
    advertise_ip: std::net::IpAddr,
    data_dir: &Path,
    pki: &Pki,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    keelson_apiserver::allocator::ensure_kubernetes_service(
        store,
        &args.service_network(),
        SocketAddr::new(advertise_ip, listen.port()),
    )
    .await
    .context("cannot create the kubernetes Service")?;
    keelson_apiserver::kube_dns::ensure_kube_dns_service(store, &args.service_network())
        .await
        .context("cannot create the kube-dns Service")?;
    write_component_kubeconfigs(data_dir, pki, &crate::node_kubeconfig::server_url(listen))?;
    let client = component_client(Component::ControllerManager, data_dir).await?;
    let scheduler_client = component_client(Component::Scheduler, data_dir).await?;
    let options = keelson_controllers::Options {
        enabled: args.controllers.0.clone(),
        cluster_cidr: args.cluster_cidr,
        node_cidr_mask_size: args.node_cidr_mask_size,
        node_monitor_grace_period: args.node_monitor_grace_period,
        node_monitor_period: args.node_monitor_period,
        default_toleration: std::time::Duration::from_secs(
            args.default_unreachable_toleration_seconds,
        ),
        bootstrap: Some(std::sync::Arc::new(
            keelson_controllers::BootstrapSettings {
                server: format!("https://{}", SocketAddr::new(advertise_ip, listen.port())),
                ca: keelson_controllers::csrsigning::CertificateAuthority::new(
                    pki.ca_pem(),
                    &pki.ca_key_pem(),
                    args.cluster_signing_duration,
                )
                .context("cannot use the cluster CA to sign node certificates")?,
            },
        )),
        local_path_root: args.default_local_storage_path.clone(),
        hpa_sync_period: args.horizontal_pod_autoscaler_sync_period,
        service_lb_pool: keelson_controllers::lbipam::Pool(args.service_lb_pool.clone()),
    };
    let scheduler = !args.no_scheduler;
    let election = args.leader_elect.then(|| {
        let identity = args.leader_elect_identity.clone().unwrap_or_else(|| {
            let host = nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "keelson".into());
            format!("{host}_{listen}_{}", std::process::id())
        });
        move |name: &str| keelson_controllers::leaderelection::Config {
            lease_duration: args.leader_elect_lease_duration,
            renew_deadline: args.leader_elect_renew_deadline,
            retry_period: args.leader_elect_retry_period,
            ..keelson_controllers::leaderelection::Config::new(name, &identity)
        }
    });
    let elections =
        election.map(|config| (config(CONTROLLER_MANAGER_LEASE), config(SCHEDULER_LEASE)));
    if let Some((config, _)) = &elections {
        config.check().context("bad --leader-elect-* timings")?;
    }
    Ok(tokio::spawn(async move {
        let (controller_lease, scheduler_lease) = elections.unzip();
        let controllers = async {
            if options.enabled.is_empty() {
                std::future::pending::<()>().await;
            }
            let work = || keelson_controllers::run(client.clone(), options.clone());
            let result = match controller_lease {
                Some(lease) => {
                    keelson_controllers::leaderelection::run_as_leader(client.clone(), lease, work)
                        .await
                }
                None => work().await,
            };
            if let Err(error) = result {
                tracing::error!(error = format!("{error:#}"), "the controllers stopped");
            }
        };
        let scheduler = async {
            if !scheduler {
                std::future::pending::<()>().await;
            }
            let work = || {
                keelson_scheduler::run(
                    scheduler_client.clone(),
                    keelson_scheduler::Options::default(),
                )
            };
            let result = match scheduler_lease {
                Some(lease) => {
                    keelson_controllers::leaderelection::run_as_leader(
                        scheduler_client.clone(),
                        lease,
                        work,
                    )
                    .await
                }
                None => work().await,
            };
            if let Err(error) = result {
                tracing::error!(error = format!("{error:#}"), "the scheduler stopped");
            }
        };
        tokio::join!(controllers, scheduler);
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_component_gets_its_own_kubeconfig_and_user() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = Pki::load_or_create(&dir.path().join("pki")).expect("CA");
        write_component_kubeconfigs(dir.path(), &pki, "https://127.0.0.1:6443").expect("write");
        // (component, kubeconfig file, user)
        let cases = [
            (
                Component::Scheduler,
                "scheduler.conf",
                "system:kube-scheduler",
            ),
            (
                Component::ControllerManager,
                "controller-manager.conf",
                "system:kube-controller-manager",
            ),
        ];
        for (component, file, user) in cases {
            let path = dir.path().join(file);
            assert_eq!(component.kubeconfig(dir.path()), path);
            let mode = std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(&path).expect("written").permissions(),
            );
            assert_eq!(mode & 0o777, 0o600, "{file} holds a private key");
            let config = kube::config::Kubeconfig::read_from(&path).expect("a kubeconfig");
            assert_eq!(
                config.current_context.as_deref(),
                Some(format!("{user}@keelson").as_str())
            );
            let auth = config.auth_infos[0]
                .auth_info
                .as_ref()
                .expect("credentials");
            let pem = base64::Engine::decode(
                &base64::engine::general_purpose::STANDARD,
                auth.client_certificate_data
                    .as_deref()
                    .expect("a certificate"),
            )
            .expect("base64");
            let der = rustls::pki_types::pem::PemObject::from_pem_slice(&pem)
                .map(|c: rustls::pki_types::CertificateDer<'_>| c.to_vec())
                .expect("PEM");
            let identity = keelson_apiserver::tls::certificate_user(&der).expect("a user");
            assert_eq!(identity.name, user);
            assert!(
                identity.groups.is_empty(),
                "{user} is in no group, least of all system:masters"
            );
        }
        // The certificate is kept across starts (renewed only near its expiry).
        let before = std::fs::read(dir.path().join("pki/scheduler.crt")).expect("kept");
        write_component_kubeconfigs(dir.path(), &pki, "https://127.0.0.1:6443").expect("again");
        assert_eq!(
            std::fs::read(dir.path().join("pki/scheduler.crt")).expect("kept"),
            before
        );
    }
}
