//! `keelson-node-agent join`: a host joins the cluster with a bootstrap token, as with
//! `kubeadm join --token ID.SECRET --discovery-token-ca-cert-hash sha256:HEX`.
//!
//! 1. Discovery ([`discovery`]): the cluster CA from `kube-public/cluster-info`, trusted because
//!    the token signed it and its hash is the one given.
//! 2. TLS bootstrap ([`csr`]): with the token as bearer, a CertificateSigningRequest for
//!    `system:node:<name>` that the control plane approves for the bootstrap group and signs.
//! 3. The files ([`files`]): `<config dir>/node.kubeconfig` (the server, the CA, the client
//!    certificate and key; mode 0600) and `<config dir>/node-agent.yaml` (`kubeconfig` and
//!    `node-name` set, other keys kept), written only once everything above succeeded.
//!
//! [`rotate`] renews the client certificate while `run` runs.

pub mod cli;
pub mod csr;
pub mod discovery;
pub mod files;
pub mod identity;
pub mod rotate;
pub mod serving;

#[cfg(test)]
mod fake_api_tests;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use keelson_api::bootstrap_token::BootstrapToken;

/// The user name the bootstrap kubeconfig carries (the server authenticates the token itself).
const BOOTSTRAP_USER: &str = "tls-bootstrap-token-user";

/// What `join` needs, checked.
#[derive(Debug, Clone)]
pub struct JoinOptions {
    /// The API server, `https://HOST:PORT`.
    pub server: String,
    /// The bootstrap token.
    pub token: BootstrapToken,
    /// The CA pin, `sha256:<hex>` lower-case.
    pub ca_cert_hash: String,
    /// The node's name.
    pub node_name: String,
    /// Where the files go.
    pub config_dir: PathBuf,
    /// How long the whole join may take.
    pub timeout: Duration,
}

/// What `join` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// The node's kubeconfig.
    pub kubeconfig: PathBuf,
    /// The agent's config file.
    pub agent_config: PathBuf,
    /// The CertificateSigningRequest that issued the certificate.
    pub csr: String,
}

/// A `join` flag's value that does not parse. `--server`'s errors are
/// [`crate::api_failover::FailoverError`]s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlagError {
    /// `--token` is not `ID.SECRET` (6 and 16 lower-case letters or digits).
    #[error("--token must look like abcdef.0123456789abcdef")]
    Token,
    /// `--ca-cert-hash` is not `sha256:` and 64 hex digits.
    #[error("--ca-cert-hash must look like sha256:<64 hex digits>, not {text:?}")]
    CaCertHash {
        /// What was given.
        text: String,
    },
    /// Not a duration of `s`, `m` and `h` parts (`--timeout`; the text does not name the flag).
    #[error("{text:?} is not a duration like 90s, 5m or 1h30m")]
    Duration {
        /// What was given.
        text: String,
    },
}

/// Parses `--token`.
pub fn parse_token(text: &str) -> Result<BootstrapToken, FlagError> {
    text.parse().map_err(|_| FlagError::Token)
}

/// Parses `--server`: `https://HOST[:PORT]`, returned without a trailing slash.
pub fn parse_server(text: &str) -> Result<String, crate::api_failover::FailoverError> {
    crate::api_failover::parse_server(text)?;
    Ok(text.trim_end_matches('/').to_owned())
}

/// Parses a duration like `5m`, `90s`, `1h30m` (units `s`, `m`, `h`).
pub fn parse_duration(text: &str) -> Result<Duration, FlagError> {
    let bad = || FlagError::Duration {
        text: text.to_owned(),
    };
    let mut total = 0u64;
    let mut digits = String::new();
    for c in text.chars() {
        match c {
            '0'..='9' => digits.push(c),
            's' | 'm' | 'h' if !digits.is_empty() => {
                let n: u64 = digits.parse().map_err(|_| bad())?;
                let unit = match c {
                    's' => 1,
                    'm' => 60,
                    _ => 3600,
                };
                total = n
                    .checked_mul(unit)
                    .and_then(|s| total.checked_add(s))
                    .ok_or_else(bad)?;
                digits.clear();
            }
            _ => return Err(bad()),
        }
    }
    if !digits.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// The node name: `given`, else the host name lower-cased; a DNS-1123 subdomain either way.
pub fn node_name(given: Option<&str>, host_name: &str) -> anyhow::Result<String> {
    let (name, origin) = match given {
        Some(name) => (name.to_owned(), "--node-name"),
        None => (host_name.to_ascii_lowercase(), "the host name"),
    };
    keelson_api::names::validate_dns1123_subdomain(&name).map_err(|e| {
        if given.is_some() {
            anyhow!("--node-name {name:?}: {e}")
        } else {
            anyhow!("{origin} {name:?} is not a valid node name ({e}): pass --node-name")
        }
    })?;
    Ok(name)
}

/// Joins: discovery, the client certificate, then the files. Writes nothing unless every step
/// succeeded; refuses to run over an earlier join's kubeconfig.
pub async fn join(options: &JoinOptions) -> anyhow::Result<Joined> {
    let started = Instant::now();
    let kubeconfig_path = options.config_dir.join(files::KUBECONFIG_FILE);
    let config_path = options.config_dir.join(files::AGENT_CONFIG_FILE);
    if kubeconfig_path.exists() {
        bail!(
            "{} exists: this host has joined a cluster already (`keelson-node-agent reset` \
             removes it)",
            kubeconfig_path.display()
        );
    }
    let existing_config = match std::fs::read_to_string(&config_path) {
        Ok(text) => Some(text),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => {
            return Err(error).with_context(|| format!("reading {}", config_path.display()));
        }
    };
    // Checked before any request: a config file that cannot be merged changes nothing.
    files::merge_agent_config(
        existing_config.as_deref(),
        &kubeconfig_path,
        &options.node_name,
    )
    .with_context(|| config_path.display().to_string())?;

    let server = options.server.as_str();
    let info = tokio::time::timeout(
        options.timeout,
        discovery::discover(server, &options.token, &options.ca_cert_hash),
    )
    .await
    .map_err(|_| {
        anyhow!(
            "no answer from {server} within {}s",
            options.timeout.as_secs()
        )
    })??;

    let token = options.token.to_string();
    let bootstrap = files::render_kubeconfig(
        server,
        &info.ca_pem,
        BOOTSTRAP_USER,
        &files::Credentials::Token(&token),
    );
    let client = client_from_kubeconfig(&bootstrap).await?;
    let request = csr::node_request(&options.node_name)?;
    let remaining = options.timeout.saturating_sub(started.elapsed());
    let cert_pem = csr::request_certificate(client, &request, remaining).await?;
    check_issued(&cert_pem, &options.node_name)?;

    let user = format!("{}{}", csr::NODE_USER_PREFIX, options.node_name);
    let kubeconfig = files::render_kubeconfig(
        server,
        &info.ca_pem,
        &user,
        &files::Credentials::Certificate {
            cert_pem: &cert_pem,
            key_pem: request.key_pem.as_bytes(),
        },
    );
    let config = files::merge_agent_config(
        existing_config.as_deref(),
        &kubeconfig_path,
        &options.node_name,
    )?;
    std::fs::create_dir_all(&options.config_dir)
        .with_context(|| format!("creating {}", options.config_dir.display()))?;
    files::write_atomically(&[
        files::NewFile {
            path: kubeconfig_path.clone(),
            content: kubeconfig.into_bytes(),
            mode: 0o600,
        },
        files::NewFile {
            path: config_path.clone(),
            content: config.into_bytes(),
            mode: 0o644,
        },
    ])?;
    Ok(Joined {
        kubeconfig: kubeconfig_path,
        agent_config: config_path,
        csr: request.name,
    })
}

/// A client for a kubeconfig given as text.
pub async fn client_from_kubeconfig(text: &str) -> anyhow::Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(text)
        .map_err(|e| anyhow!("the kubeconfig: {}", crate::error_chain(&e)))?;
    let config = kube::Config::from_custom_kubeconfig(
        kubeconfig,
        &kube::config::KubeConfigOptions::default(),
    )
    .await
    .map_err(|e| anyhow!("the kubeconfig: {}", crate::error_chain(&e)))?;
    kube::Client::try_from(config)
        .map_err(|e| anyhow!("building the API client: {}", crate::error_chain(&e)))
}

/// The issued certificate is a client certificate for this node.
fn check_issued(cert_pem: &[u8], node: &str) -> anyhow::Result<()> {
    let der = discovery::pem_certificates(cert_pem).context("the issued certificate")?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der[0])
        .map_err(|e| anyhow!("the issued certificate: {e}"))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default();
    let expected = format!("{}{node}", csr::NODE_USER_PREFIX);
    if cn != expected {
        bail!("the issued certificate is for {cn:?}, not {expected:?}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_flag() {
        assert!(parse_token("abcdef.0123456789abcdef").is_ok());
        for bad in [
            "abcdef",
            "ABCDEF.0123456789abcdef",
            "abcdef:0123456789abcdef",
            "",
        ] {
            assert_eq!(
                parse_token(bad).map_err(|e| e.to_string()).err().as_deref(),
                Some("--token must look like abcdef.0123456789abcdef"),
                "{bad}"
            );
        }
    }

    #[test]
    fn durations() {
        let cases = [
            ("5m", Ok(300)),
            ("90s", Ok(90)),
            ("1h30m", Ok(5400)),
            ("0s", Err("\"0s\" is not a duration like 90s, 5m or 1h30m")),
            ("5", Err("\"5\" is not a duration like 90s, 5m or 1h30m")),
            ("m", Err("\"m\" is not a duration like 90s, 5m or 1h30m")),
            ("5d", Err("\"5d\" is not a duration like 90s, 5m or 1h30m")),
            ("", Err("\"\" is not a duration like 90s, 5m or 1h30m")),
        ];
        for (text, expected) in cases {
            assert_eq!(
                parse_duration(text)
                    .map(|d| d.as_secs())
                    .map_err(|e| e.to_string()),
                expected.map_err(str::to_owned),
                "{text}"
            );
        }
    }

    #[test]
    fn node_names() {
        let cases = [
            (None, "Worker-1", Ok("worker-1")),
            (Some("w1.example"), "ignored", Ok("w1.example")),
            (
                None,
                "bad_host",
                Err("the host name \"bad_host\" is not a valid node name"),
            ),
            (Some("Bad"), "x", Err("--node-name \"Bad\": ")),
        ];
        for (given, host, expected) in cases {
            match (node_name(given, host), expected) {
                (Ok(name), Ok(want)) => assert_eq!(name, want),
                (Err(error), Err(prefix)) => {
                    let text = format!("{error:#}");
                    assert!(text.starts_with(prefix), "{text}");
                }
                (got, want) => panic!("{given:?} {host}: {got:?} vs {want:?}"),
            }
        }
    }

    #[tokio::test]
    async fn refuses_an_earlier_join_before_any_request() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("node.kubeconfig"), "x").expect("write");
        let options = JoinOptions {
            // Nothing listens there; the refusal comes first.
            server: "https://127.0.0.1:1".to_owned(),
            token: "abcdef.0123456789abcdef".parse().expect("token"),
            ca_cert_hash: format!("sha256:{}", "0".repeat(64)),
            node_name: "worker-1".to_owned(),
            config_dir: dir.path().to_owned(),
            timeout: Duration::from_secs(5),
        };
        let error = join(&options).await.expect_err("refused");
        assert!(
            format!("{error:#}").ends_with(
                "node.kubeconfig exists: this host has joined a cluster already \
                 (`keelson-node-agent reset` removes it)"
            ),
            "{error:#}"
        );
    }

    #[tokio::test]
    async fn unreachable_server_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = JoinOptions {
            server: "https://127.0.0.1:1".to_owned(),
            token: "abcdef.0123456789abcdef".parse().expect("token"),
            ca_cert_hash: format!("sha256:{}", "0".repeat(64)),
            node_name: "worker-1".to_owned(),
            config_dir: dir.path().join("keelson"),
            timeout: Duration::from_secs(5),
        };
        let error = format!("{:#}", join(&options).await.expect_err("unreachable"));
        assert!(
            error.starts_with("cannot reach https://127.0.0.1:1: "),
            "{error}"
        );
        assert!(!error.contains('\n'), "{error}");
        assert!(!dir.path().join("keelson").exists());
    }
}
