//! What `join` writes and rotation rewrites: the node's kubeconfig, the agent's config file, and
//! the atomic write both go through (every file to a temporary sibling first, renamed into
//! place only once all are written, so a failure leaves nothing half-written).

use std::{
    io::Write as _,
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;

/// The name of the node's kubeconfig in the config directory.
pub const KUBECONFIG_FILE: &str = "node.kubeconfig";
/// The name of the agent's config file in the config directory.
pub const AGENT_CONFIG_FILE: &str = "node-agent.yaml";

/// The kubeconfig's name for the cluster.
const CLUSTER_NAME: &str = "keelson";

/// Who a kubeconfig authenticates as.
pub enum Credentials<'a> {
    /// A bearer token (the bootstrap token during join).
    Token(&'a str),
    /// A client certificate and its key, both PEM.
    Certificate {
        /// The certificate chain.
        cert_pem: &'a [u8],
        /// The private key.
        key_pem: &'a [u8],
    },
}

impl std::fmt::Debug for Credentials<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets stay out of logs.
        f.write_str(match self {
            Self::Token(_) => "Credentials::Token(..)",
            Self::Certificate { .. } => "Credentials::Certificate(..)",
        })
    }
}

/// A kubeconfig for `user` at `server`, trusting `ca_pem`, everything inline.
pub fn render_kubeconfig(
    server: &str,
    ca_pem: &[u8],
    user: &str,
    credentials: &Credentials<'_>,
) -> String {
    let b64 = |data: &[u8]| base64::engine::general_purpose::STANDARD.encode(data);
    let user_fields = match credentials {
        Credentials::Token(token) => format!("    token: {token}\n"),
        Credentials::Certificate { cert_pem, key_pem } => format!(
            "    client-certificate-data: {}\n    client-key-data: {}\n",
            b64(cert_pem),
            b64(key_pem)
        ),
    };
    // Names are JSON-quoted, which YAML reads as double-quoted scalars (`system:node:x`
    // holds colons).
    let quote = |text: &str| serde_json::Value::String(text.to_owned()).to_string();
    let context = format!("{user}@{CLUSTER_NAME}");
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {cluster}\n  cluster:\n    \
         server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: {user_q}\n  \
         user:\n{user_fields}contexts:\n- name: {context_q}\n  context:\n    cluster: {cluster}\n    \
         user: {user_q}\ncurrent-context: {context_q}\n",
        cluster = CLUSTER_NAME,
        server = quote(server),
        ca = b64(ca_pem),
        user_q = quote(user),
        context_q = quote(&context),
    )
}

/// The agent's config file with `kubeconfig` and `node-name` set: `existing` (the packaged
/// file, say) keeps its comments and other keys, those two keys replaced where they are (a
/// commented-out `# kubeconfig:` line stays as it is) or appended.
pub fn merge_agent_config(
    existing: Option<&str>,
    kubeconfig: &Path,
    node_name: &str,
) -> anyhow::Result<String> {
    let quote = |text: &str| serde_json::Value::String(text.to_owned()).to_string();
    let kubeconfig = kubeconfig
        .to_str()
        .ok_or_else(|| anyhow!("{} is not UTF-8", kubeconfig.display()))?;
    let settings = [
        ("kubeconfig", quote(kubeconfig)),
        ("node-name", quote(node_name)),
    ];
    let mut set = [false; 2];
    let mut out = String::new();
    let mut skipping = false;
    for line in existing.unwrap_or_default().lines() {
        // A replaced key's indented continuation lines (a block value) go with it.
        if skipping && (line.starts_with(' ') || line.starts_with('\t')) {
            continue;
        }
        skipping = false;
        let key = line.split_once(':').map(|(key, _)| key.trim_end());
        match settings.iter().position(|(name, _)| Some(*name) == key) {
            Some(i) if !set[i] => {
                out.push_str(&format!("{}: {}\n", settings[i].0, settings[i].1));
                set[i] = true;
                skipping = true;
            }
            // A key given twice: only the first stays (YAML refuses duplicates).
            Some(_) => skipping = true,
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    for (i, (name, value)) in settings.iter().enumerate() {
        if !set[i] {
            out.push_str(&format!("{name}: {value}\n"));
        }
    }
    // The result must still be a map whose two keys read back as written.
    let parsed: Option<std::collections::BTreeMap<String, serde_json::Value>> =
        serde_saphyr::from_str(&out).context("the merged config file is not a YAML map")?;
    let parsed = parsed.unwrap_or_default();
    for (name, value) in &settings {
        let read = parsed.get(*name).map(ToString::to_string);
        if read.as_deref() != Some(value.as_str()) {
            bail!("the merged config file does not read back `{name}`: {read:?}");
        }
    }
    Ok(out)
}

/// One file to write: where, what, with which permission bits.
pub struct NewFile {
    /// The final path.
    pub path: PathBuf,
    /// The whole content.
    pub content: Vec<u8>,
    /// Permission bits (0o600 for secrets).
    pub mode: u32,
}

impl std::fmt::Debug for NewFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The content may be a secret.
        f.debug_struct("NewFile")
            .field("path", &self.path)
            .field("mode", &format_args!("{:o}", self.mode))
            .finish_non_exhaustive()
    }
}

/// Writes every file to a temporary sibling (synced, with its mode), then renames them all into
/// place. A failure before the renames removes the temporary files and leaves the old ones.
pub fn write_atomically(files: &[NewFile]) -> anyhow::Result<()> {
    let mut temps: Vec<PathBuf> = Vec::with_capacity(files.len());
    let result = (|| {
        for file in files {
            let name = file
                .path
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| anyhow!("{} names no file", file.path.display()))?;
            let temp = file
                .path
                .with_file_name(format!(".{name}.tmp-{}", std::process::id()));
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(file.mode)
                .open(&temp)
                .with_context(|| format!("creating {}", temp.display()))?;
            temps.push(temp.clone());
            // The umask may have narrowed the mode; a rotation must keep it exact.
            out.set_permissions(std::fs::Permissions::from_mode(file.mode))
                .and_then(|()| out.write_all(&file.content))
                .and_then(|()| out.sync_all())
                .with_context(|| format!("writing {}", temp.display()))?;
        }
        Ok(())
    })();
    if let Err(error) = result {
        for temp in &temps {
            let _ = std::fs::remove_file(temp);
        }
        return Err(error);
    }
    for (file, temp) in files.iter().zip(&temps) {
        std::fs::rename(temp, &file.path)
            .with_context(|| format!("renaming {} to {}", temp.display(), file.path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_reads_back_with_kube() {
        let text = render_kubeconfig(
            "https://10.0.0.1:6443",
            b"CA PEM",
            "system:node:worker-1",
            &Credentials::Certificate {
                cert_pem: b"CERT",
                key_pem: b"KEY",
            },
        );
        let parsed = kube::config::Kubeconfig::from_yaml(&text).expect("a kubeconfig");
        assert_eq!(
            parsed.current_context.as_deref(),
            Some("system:node:worker-1@keelson")
        );
        let cluster = parsed.clusters[0].cluster.as_ref().expect("cluster");
        assert_eq!(cluster.server.as_deref(), Some("https://10.0.0.1:6443"));
        assert_eq!(
            cluster.certificate_authority_data.as_deref(),
            Some("Q0EgUEVN")
        );
        assert_eq!(parsed.auth_infos[0].name, "system:node:worker-1");
        let user = parsed.auth_infos[0].auth_info.as_ref().expect("user");
        assert_eq!(user.client_certificate_data.as_deref(), Some("Q0VSVA=="));
        let token = render_kubeconfig(
            "https://h:6443",
            b"CA",
            "tls-bootstrap-token-user",
            &Credentials::Token("abcdef.0123456789abcdef"),
        );
        let parsed = kube::config::Kubeconfig::from_yaml(&token).expect("a kubeconfig");
        assert!(
            parsed.auth_infos[0]
                .auth_info
                .as_ref()
                .and_then(|u| u.token.as_ref())
                .is_some()
        );
    }

    #[test]
    fn config_merge_table() {
        let path = Path::new("/etc/keelson/node.kubeconfig");
        let cases: [(Option<&str>, &str); 5] = [
            (
                None,
                "kubeconfig: \"/etc/keelson/node.kubeconfig\"\nnode-name: \"worker-1\"\n",
            ),
            (
                Some(
                    "# shipped by the package\n# kubeconfig: /path\nuplink: [eth0]\ncgroup: /sys/fs/cgroup\n",
                ),
                "# shipped by the package\n# kubeconfig: /path\nuplink: [eth0]\ncgroup: /sys/fs/cgroup\n\
                 kubeconfig: \"/etc/keelson/node.kubeconfig\"\nnode-name: \"worker-1\"\n",
            ),
            (
                Some("kubeconfig: /old\nct-capacity: 1024 # tuned\nnode-name: old\n"),
                "kubeconfig: \"/etc/keelson/node.kubeconfig\"\nct-capacity: 1024 # tuned\n\
                 node-name: \"worker-1\"\n",
            ),
            (
                Some("node-name:\n  old\nuplink:\n  - eth0\n"),
                "node-name: \"worker-1\"\nuplink:\n  - eth0\nkubeconfig: \"/etc/keelson/node.kubeconfig\"\n",
            ),
            (
                Some("node-name: a\nnode-name: b\n"),
                "node-name: \"worker-1\"\nkubeconfig: \"/etc/keelson/node.kubeconfig\"\n",
            ),
        ];
        for (existing, expected) in cases {
            assert_eq!(
                merge_agent_config(existing, path, "worker-1").expect("merged"),
                expected,
                "{existing:?}"
            );
        }
        assert!(merge_agent_config(Some("- a list\n"), path, "worker-1").is_err());
    }

    #[test]
    fn atomic_write_sets_modes_and_leaves_nothing_on_failure() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("node.kubeconfig");
        let config = dir.path().join("node-agent.yaml");
        std::fs::write(&config, "old\n").expect("old config");
        write_atomically(&[
            NewFile {
                path: secret.clone(),
                content: b"new secret".to_vec(),
                mode: 0o600,
            },
            NewFile {
                path: config.clone(),
                content: b"new config".to_vec(),
                mode: 0o644,
            },
        ])
        .expect("written");
        assert_eq!(std::fs::read(&secret).expect("read"), b"new secret");
        assert_eq!(std::fs::read(&config).expect("read"), b"new config");
        let mode = std::fs::metadata(&secret)
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);

        // The second file's directory is missing: neither file changes, no temporary remains.
        let failed = write_atomically(&[
            NewFile {
                path: secret.clone(),
                content: b"newer".to_vec(),
                mode: 0o600,
            },
            NewFile {
                path: dir.path().join("missing/node-agent.yaml"),
                content: b"x".to_vec(),
                mode: 0o644,
            },
        ]);
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&secret).expect("read"), b"new secret");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }
}
