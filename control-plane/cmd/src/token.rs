//! `keelson-control-plane token create|list|delete`: bootstrap tokens for joining nodes, as
//! `kubeadm token` manages them.
//!
//! The tokens are Secrets `kube-system/bootstrap-token-<id>` written through the API with the
//! admin kubeconfig in DATA_DIR (kubeadm does the same with /etc/kubernetes/admin.conf), so the
//! control plane must be running; if it is not, the command says so in one line and exits 1.
//! Going through the API keeps every store backend and every running API server consistent.
//!
//! `token create` prints exactly one line, the join command:
//! `keelson-node-agent join --server https://ADDR:PORT --token ID.SECRET --ca-cert-hash sha256:HEX`.

use std::{io::Read as _, net::SocketAddr, path::Path, time::Duration};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Secret;
use keelson_api::bootstrap_token::{self as bt, BootstrapToken};
use kube::{
    Api,
    api::{DeleteParams, ListParams, ObjectMeta, PostParams},
};

/// `keelson-control-plane token ...`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum TokenCommand {
    /// Creates a token and prints the one-line join command for it.
    Create {
        /// How long the token is valid (`0` never expires).
        #[arg(long, default_value = "24h", value_parser = parse_ttl)]
        ttl: TokenTtl,
        /// What the token is for, shown by `token list`.
        #[arg(long)]
        description: Option<String>,
    },
    /// Lists the bootstrap tokens.
    List,
    /// Deletes a token (its id or the whole token).
    Delete {
        /// `ID` or `ID.SECRET`.
        token: String,
    },
}

/// A `--ttl`: a duration, or `0` for a token that never expires.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokenTtl(Option<Duration>);

fn parse_ttl(text: &str) -> Result<TokenTtl, String> {
    if text.trim() == "0" || text.trim() == "0s" {
        return Ok(TokenTtl(None));
    }
    crate::args::parse_duration(text).map(|d| TokenTtl(Some(d)))
}

/// Runs `token <action>` against the control plane whose data directory `args` names, which
/// nodes reach at its advertise address.
pub(crate) async fn command(args: &crate::args::Args, action: &TokenCommand) -> anyhow::Result<()> {
    let kubeconfig = args.data_dir.join("admin.kubeconfig");
    match action {
        TokenCommand::Create { ttl, description } => {
            let ca_path = args.data_dir.join("pki").join("ca.crt");
            let ca_pem = std::fs::read_to_string(&ca_path).with_context(|| {
                format!(
                    "cannot read the cluster CA {} (start keelson-control-plane with this --data-dir first)",
                    ca_path.display()
                )
            })?;
            let advertised = SocketAddr::new(args.advertise_address(), args.listen().port());
            create(
                &kubeconfig,
                &ca_pem,
                advertised,
                ttl.0,
                description.as_deref(),
            )
            .await
        }
        TokenCommand::List => list(&kubeconfig).await,
        TokenCommand::Delete { token } => delete(&kubeconfig, token).await,
    }
}

/// kubeadm's default extra group for node-joining tokens.
const DEFAULT_NODE_TOKEN_GROUP: &str = "system:bootstrappers:kubeadm:default-node-token";

/// A fresh token from the system's random source.
fn generate() -> anyhow::Result<BootstrapToken> {
    let mut bytes = [0u8; 256];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("cannot read /dev/urandom")?;
    let mut next = bytes.into_iter();
    Ok(BootstrapToken::from_random(|| next.next().unwrap_or(0)))
}

/// The DER of the first PEM block of `pem`.
fn pem_der(pem: &str) -> anyhow::Result<Vec<u8>> {
    use rustls::pki_types::{CertificateDer, pem::PemObject as _};
    CertificateDer::from_pem_slice(pem.as_bytes())
        .map(|der| der.to_vec())
        .map_err(|e| anyhow::anyhow!("the CA certificate is not PEM: {e}"))
}

/// The Secret for `token`, expiring `ttl` after `now` (`None`: never).
pub fn token_secret(
    token: &BootstrapToken,
    ttl: Option<Duration>,
    description: Option<&str>,
    now: jiff::Timestamp,
) -> anyhow::Result<Secret> {
    let mut data = std::collections::BTreeMap::from([
        (bt::TOKEN_ID_KEY.to_owned(), token.id.clone()),
        (bt::TOKEN_SECRET_KEY.to_owned(), token.secret.clone()),
        (bt::USAGE_AUTHENTICATION_KEY.to_owned(), "true".to_owned()),
        (bt::USAGE_SIGNING_KEY.to_owned(), "true".to_owned()),
        (
            bt::EXTRA_GROUPS_KEY.to_owned(),
            DEFAULT_NODE_TOKEN_GROUP.to_owned(),
        ),
    ]);
    if let Some(ttl) = ttl {
        let expiry = now
            .checked_add(ttl)
            .context("--ttl is too long")?
            .round(jiff::Unit::Second)
            .context("cannot round the expiry")?;
        data.insert(bt::EXPIRATION_KEY.to_owned(), expiry.to_string());
    }
    if let Some(description) = description {
        data.insert(bt::DESCRIPTION_KEY.to_owned(), description.to_owned());
    }
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(token.secret_name()),
            namespace: Some(bt::SECRET_NAMESPACE.to_owned()),
            ..ObjectMeta::default()
        },
        type_: Some(bt::SECRET_TYPE.to_owned()),
        string_data: Some(data),
        ..Secret::default()
    })
}

/// The join command `token create` prints.
pub fn join_command(server: SocketAddr, token: &BootstrapToken, ca_hash: &str) -> String {
    format!(
        "keelson-node-agent join --server https://{server} --token {token} --ca-cert-hash {ca_hash}"
    )
}

async fn secrets(kubeconfig: &Path) -> anyhow::Result<Api<Secret>> {
    let client = crate::components::admin_client(kubeconfig)
        .await
        .with_context(|| {
            format!(
                "cannot use {} (is keelson-control-plane running with this --data-dir?)",
                kubeconfig.display()
            )
        })?;
    Ok(Api::namespaced(client, bt::SECRET_NAMESPACE))
}

fn unreachable(error: kube::Error) -> anyhow::Error {
    anyhow::Error::new(error)
        .context("the API server did not answer (is keelson-control-plane running?)")
}

/// `token create`: stores a new token and prints the join command for `server`.
pub async fn create(
    kubeconfig: &Path,
    ca_pem: &str,
    server: SocketAddr,
    ttl: Option<Duration>,
    description: Option<&str>,
) -> anyhow::Result<()> {
    let ca_hash = bt::ca_cert_hash(&pem_der(ca_pem)?).context("cannot hash the cluster CA")?;
    let api = secrets(kubeconfig).await?;
    let token = generate()?;
    let secret = token_secret(&token, ttl, description, jiff::Timestamp::now())?;
    api.create(&PostParams::default(), &secret)
        .await
        .map_err(unreachable)?;
    println!("{}", join_command(server, &token, &ca_hash));
    Ok(())
}

/// `token list`: one line per bootstrap token, kubeadm's columns.
pub async fn list(kubeconfig: &Path) -> anyhow::Result<()> {
    let api = secrets(kubeconfig).await?;
    let items = api
        .list(&ListParams::default().fields(&format!("type={}", bt::SECRET_TYPE)))
        .await
        .map_err(unreachable)?
        .items;
    println!(
        "TOKEN                     EXPIRES                USAGES                   DESCRIPTION"
    );
    for secret in &items {
        let data = keelson_controllers::bootstrapsigner::string_data(secret);
        let Some(token) = bt::token_of_secret(secret.metadata.name.as_deref().unwrap_or(""), &data)
        else {
            continue;
        };
        let usages: Vec<&str> = [
            ("authentication", bt::USAGE_AUTHENTICATION_KEY),
            ("signing", bt::USAGE_SIGNING_KEY),
        ]
        .into_iter()
        .filter(|(_, key)| bt::usage_enabled(&data, key))
        .map(|(name, _)| name)
        .collect();
        println!(
            "{:<25} {:<22} {:<24} {}",
            token.to_string(),
            data.get(bt::EXPIRATION_KEY)
                .map_or("<forever>", String::as_str),
            usages.join(","),
            data.get(bt::DESCRIPTION_KEY)
                .map_or("<none>", String::as_str),
        );
    }
    Ok(())
}

/// `token delete ID` (or `ID.SECRET`).
pub async fn delete(kubeconfig: &Path, token: &str) -> anyhow::Result<()> {
    let id = token.split_once('.').map_or(token, |(id, _)| id);
    if !bt::is_token_id(id) {
        anyhow::bail!("{id:?} is not a bootstrap token id ([a-z0-9]{{6}})");
    }
    let api = secrets(kubeconfig).await?;
    let name = format!("{}{id}", bt::SECRET_PREFIX);
    match api.delete(&name, &DeleteParams::default()).await {
        Ok(_) => {
            println!("bootstrap token {id:?} deleted");
            Ok(())
        }
        Err(kube::Error::Api(status)) if status.code == 404 => {
            anyhow::bail!("bootstrap token {id:?} not found")
        }
        Err(error) => Err(unreachable(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_tokens_are_kubeadm_secrets() {
        let token: BootstrapToken = "abcdef.0123456789abcdef".parse().expect("token");
        let now: jiff::Timestamp = "2026-12-06T12:00:00.5Z".parse().expect("time");
        let secret = token_secret(
            &token,
            Some(Duration::from_secs(24 * 3600)),
            Some("n1"),
            now,
        )
        .expect("secret");
        assert_eq!(
            secret.metadata.name.as_deref(),
            Some("bootstrap-token-abcdef")
        );
        assert_eq!(
            secret.type_.as_deref(),
            Some("bootstrap.kubernetes.io/token")
        );
        let data = secret.string_data.expect("data");
        assert_eq!(data["expiration"], "2026-12-07T12:00:01Z");
        assert_eq!(data["token-secret"], "0123456789abcdef");
        assert_eq!(data["usage-bootstrap-authentication"], "true");
        assert_eq!(data["description"], "n1");
        let forever = token_secret(&token, None, None, now).expect("secret");
        assert!(
            !forever
                .string_data
                .expect("data")
                .contains_key("expiration")
        );
        assert_eq!(
            join_command(
                "192.0.2.10:6443".parse().expect("addr"),
                &token,
                "sha256:ab"
            ),
            "keelson-node-agent join --server https://192.0.2.10:6443 --token abcdef.0123456789abcdef --ca-cert-hash sha256:ab"
        );
        assert!(
            generate()
                .expect("random")
                .to_string()
                .parse::<BootstrapToken>()
                .is_ok()
        );
    }
}
