//! `node-kubeconfig`: a node's credentials, and the URL clients use for this server.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
};

use keelson_apiserver::UserInfo;

use crate::{
    args::Args,
    pki::{self, Pki},
};

/// The URL clients use for an API server listening on `listen`.
pub(crate) fn server_url(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("https://{}", SocketAddr::new(ip, listen.port()))
}

pub(crate) fn node_kubeconfig(
    args: &Args,
    node: &str,
    server: Option<&str>,
    out: Option<&Path>,
) -> anyhow::Result<()> {
    keelson_api::names::validate_dns1123_subdomain(node)
        .map_err(|cause| anyhow::anyhow!("--node {node:?} is not a valid node name: {cause}"))?;
    let pki = Pki::load_or_create(&args.data_dir.join("pki"))?;
    let user = UserInfo::node(node);
    let credentials = pki.client(&user.name, user.groups.first().map(String::as_str))?;
    let server = server.map_or_else(
        || {
            let port = args.listen().port();
            format!(
                "https://{}",
                SocketAddr::new(args.advertise_address(), port)
            )
        },
        str::to_owned,
    );
    let kubeconfig = pki::kubeconfig(&server, pki.ca_pem(), &user.name, &credentials);
    match out {
        Some(path) => {
            pki::write_private(path, kubeconfig.as_bytes())?;
            eprintln!("wrote {} for {}", path.display(), user.name);
        }
        None => print!("{kubeconfig}"),
    }
    Ok(())
}
