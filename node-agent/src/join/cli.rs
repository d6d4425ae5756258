//! The `join` subcommand's flags and its one-line failure report.

use std::{path::PathBuf, process::ExitCode};

use super::{JoinOptions, join, node_name, parse_duration, parse_server, parse_token};
use crate::join::discovery::parse_ca_cert_hash;

/// `keelson-node-agent join`'s flags. Each is checked by `join` itself (not by the parser) so
/// that a bad value is one line on stderr and exit code 1, like every other refusal.
#[derive(Debug, clap::Args)]
pub struct JoinArgs {
    /// The API server to join, `https://HOST:PORT` (as `token create` prints it).
    #[arg(long, env = "KEELSON_JOIN_SERVER", value_name = "URL")]
    pub server: String,
    /// The bootstrap token, `ID.SECRET` (from `keelson-control-plane token create`).
    #[arg(
        long,
        env = "KEELSON_JOIN_TOKEN",
        value_name = "ID.SECRET",
        hide_env_values = true
    )]
    pub token: String,
    /// The hash of the cluster CA's public key, `sha256:HEX`: the CA is trusted only if it
    /// matches.
    #[arg(long, env = "KEELSON_JOIN_CA_CERT_HASH", value_name = "sha256:HEX")]
    pub ca_cert_hash: String,
    /// This node's name [default: the host name, lower-cased].
    #[arg(long, env = "KEELSON_NODE_NAME")]
    pub node_name: Option<String>,
    /// Where node.kubeconfig and node-agent.yaml are written.
    #[arg(long, env = "KEELSON_CONFIG_DIR", default_value = "/etc/keelson")]
    pub config_dir: PathBuf,
    /// How long joining may take, the wait for the certificate included (`90s`, `5m`, `1h`).
    #[arg(long, env = "KEELSON_JOIN_TIMEOUT", default_value = "5m")]
    pub timeout: String,
}

impl JoinArgs {
    /// The checked options, or the one-line reason they are not.
    pub fn options(&self, host_name: &str) -> anyhow::Result<JoinOptions> {
        let token = parse_token(&self.token)?;
        let server = parse_server(&self.server)
            .map_err(|e| anyhow::anyhow!("--server {}", crate::error_chain(&e)))?;
        let ca_cert_hash = parse_ca_cert_hash(&self.ca_cert_hash)?;
        let timeout =
            parse_duration(&self.timeout).map_err(|e| anyhow::anyhow!("--timeout {e}"))?;
        Ok(JoinOptions {
            server,
            token,
            ca_cert_hash,
            node_name: node_name(self.node_name.as_deref(), host_name)?,
            config_dir: self.config_dir.clone(),
            timeout,
        })
    }
}

/// Runs `join`: prints what it wrote, or one line on stderr and exit code 1.
pub fn main(args: &JoinArgs) -> ExitCode {
    let host_name = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let joined = args.options(&host_name).and_then(|options| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let joined = runtime.block_on(join(&options))?;
        Ok((options, joined))
    });
    match joined {
        Ok((options, joined)) => {
            println!(
                "node {} joined {}: wrote {} and {} (certificate from CertificateSigningRequest {})",
                options.node_name,
                options.server,
                joined.kubeconfig.display(),
                joined.agent_config.display(),
                joined.csr
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("keelson-node-agent join: {}", one_line(&error));
            ExitCode::FAILURE
        }
    }
}

/// An error's chain on one line (`a: b: c`), line breaks inside messages folded.
pub fn one_line(error: &anyhow::Error) -> String {
    format!("{error:#}").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(server: &str, token: &str, hash: &str, timeout: &str) -> JoinArgs {
        JoinArgs {
            server: server.to_owned(),
            token: token.to_owned(),
            ca_cert_hash: hash.to_owned(),
            node_name: None,
            config_dir: PathBuf::from("/etc/keelson"),
            timeout: timeout.to_owned(),
        }
    }

    #[test]
    fn flag_errors_are_one_line() {
        let hash = format!("sha256:{}", "a".repeat(64));
        let token = "abcdef.0123456789abcdef";
        let cases = [
            (
                args("https://10.0.0.1:6443", "garbled", &hash, "5m"),
                "--token must look like abcdef.0123456789abcdef",
            ),
            (
                args("http://10.0.0.1:6443", token, &hash, "5m"),
                "--server \"http://10.0.0.1:6443\" is not an https:// URL (the API is served over HTTPS)",
            ),
            (
                args("https://10.0.0.1:6443", token, "md5:00", "5m"),
                "--ca-cert-hash must look like sha256:<64 hex digits>, not \"md5:00\"",
            ),
            (
                args("https://10.0.0.1:6443", token, &hash, "5 minutes"),
                "--timeout \"5 minutes\" is not a duration like 90s, 5m or 1h30m",
            ),
        ];
        for (args, expected) in cases {
            let error = args.options("worker-1").expect_err("refused");
            assert_eq!(one_line(&error), expected);
        }
        let options = args(
            "https://10.0.0.1:6443/",
            token,
            &hash.to_uppercase().replace("SHA256", "sha256"),
            "2m",
        )
        .options("Worker-1")
        .expect("valid");
        assert_eq!(options.server, "https://10.0.0.1:6443");
        assert_eq!(options.ca_cert_hash, hash);
        assert_eq!(options.node_name, "worker-1");
        assert_eq!(options.timeout.as_secs(), 120);
    }
}
