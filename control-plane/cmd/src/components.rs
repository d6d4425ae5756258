//! The in-process cluster components: the `kubernetes` Service, the controllers and the
//! scheduler, run as API clients of this server.

use std::{net::SocketAddr, path::Path};

use anyhow::Context;
use keelson_store::Store;

use crate::args::ClusterArgs;

/// A kube-rs client with the admin kubeconfig the control plane wrote: the scheduler and the
/// controllers talk to the API server like any other client.
pub(crate) async fn admin_client(kubeconfig: &Path) -> anyhow::Result<kube::Client> {
    let file = kube::config::Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("cannot read {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(file, &Default::default())
        .await
        .with_context(|| format!("cannot use {}", kubeconfig.display()))?;
    kube::Client::try_from(config).context("cannot build an API client")
}

/// Creates the `kubernetes` Service, then starts the scheduler and the controllers the flags
/// ask for, as API clients of the server listening on `listen` (advertised at
/// `advertise_ip`). Returns the task to abort on shutdown.
pub(crate) async fn start_cluster_components(
    args: &ClusterArgs,
    store: &dyn Store,
    listen: SocketAddr,
    advertise_ip: std::net::IpAddr,
    kubeconfig: &Path,
    pki: &crate::pki::Pki,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    keelson_apiserver::allocator::ensure_kubernetes_service(
        store,
        &args.service_network(),
        SocketAddr::new(advertise_ip, listen.port()),
    )
    .await
    .context("cannot create the kubernetes Service")?;
    let client = admin_client(kubeconfig).await?;
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
    let elections = election.map(|config| {
        (
            config("keelson-controller-manager"),
            config("keelson-scheduler"),
        )
    });
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
            let work =
                || keelson_scheduler::run(client.clone(), keelson_scheduler::Options::default());
            let result = match scheduler_lease {
                Some(lease) => {
                    keelson_controllers::leaderelection::run_as_leader(client.clone(), lease, work)
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
