//! Certificates for etcd over TLS on loopback, as the testbed's three-member etcd and the
//! tests' etcd clusters run it: a CA, a serving certificate for the client port, a peer
//! certificate (members dial each other, so it serves and is a client), and a client
//! certificate for the control planes. All name 127.0.0.1 and localhost.

use std::path::Path;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose as Eku, IsCa, Issuer,
    KeyPair, SanType,
};

/// Writes `ca.crt`, `server.crt`/`.key`, `peer.crt`/`.key` and `client.crt`/`.key` into `dir`
/// (created if missing; keys mode 0600).
pub fn write(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let save = |name: &str, pem: &str| -> anyhow::Result<()> {
        let path = dir.join(name);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        std::io::Write::write_all(&mut file, pem.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))
    };
    let ca_key = KeyPair::generate().context("cannot generate the etcd CA key")?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "keelson-testbed-etcd-ca");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    save("ca.crt", &ca.self_signed(&ca_key)?.pem())?;
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |name: &str, usages: Vec<Eku>| -> anyhow::Result<()> {
        let key = KeyPair::generate().context("cannot generate a key")?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.subject_alt_names = vec![
            SanType::IpAddress([127, 0, 0, 1].into()),
            SanType::DnsName("localhost".try_into()?),
        ];
        params.extended_key_usages = usages;
        save(
            &format!("{name}.crt"),
            &params.signed_by(&key, &issuer)?.pem(),
        )?;
        save(&format!("{name}.key"), &key.serialize_pem())
    };
    // etcd 3.4's gateway dials its own client port with the serving certificate: it needs the
    // client use too.
    leaf("server", vec![Eku::ServerAuth, Eku::ClientAuth])?;
    leaf("peer", vec![Eku::ServerAuth, Eku::ClientAuth])?;
    leaf("client", vec![Eku::ClientAuth])
}

fn file(dir: &Path, name: &str) -> String {
    dir.join(name).display().to_string()
}

/// etcd's flags to serve clients and peers over TLS with the certificates in `dir`, each side
/// checking the other's certificate.
pub fn etcd_args(dir: &Path) -> Vec<String> {
    vec![
        format!("--cert-file={}", file(dir, "server.crt")),
        format!("--key-file={}", file(dir, "server.key")),
        "--client-cert-auth".into(),
        format!("--trusted-ca-file={}", file(dir, "ca.crt")),
        format!("--peer-cert-file={}", file(dir, "peer.crt")),
        format!("--peer-key-file={}", file(dir, "peer.key")),
        "--peer-client-cert-auth".into(),
        format!("--peer-trusted-ca-file={}", file(dir, "ca.crt")),
    ]
}

/// The control plane's `--etcd-cafile`, `--etcd-certfile` and `--etcd-keyfile` for `dir`.
pub fn control_plane_args(dir: &Path) -> Vec<String> {
    vec![
        "--etcd-cafile".into(),
        file(dir, "ca.crt"),
        "--etcd-certfile".into(),
        file(dir, "client.crt"),
        "--etcd-keyfile".into(),
        file(dir, "client.key"),
    ]
}
