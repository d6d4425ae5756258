//! The cluster's certificates: a CA created on first start (kept in `DATA_DIR/pki/`), the API
//! server's serving certificate (issued at every start, so its names follow the flags), and
//! client certificates for the administrator and for nodes (user = common name, group =
//! organization, as Kubernetes reads them).

use std::{
    io::Write as _,
    net::IpAddr,
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use base64::{Engine as _, engine::general_purpose::STANDARD};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, date_time_ymd,
};

/// Years a CA stays valid.
const CA_YEARS: i32 = 10;
/// Years an issued certificate stays valid.
const LEAF_YEARS: i32 = 2;

/// A certificate and its private key, PEM-encoded.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

/// The cluster CA.
pub struct Pki {
    dir: PathBuf,
    ca_pem: String,
    ca_key: KeyPair,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Writes `contents` to `path` readable by the owner only, replacing it atomically.
pub fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// The validity window: from the start of last year to `years` after the start of next year.
fn validity(params: &mut CertificateParams, years: i32) {
    let year = i32::from(jiff::Zoned::now().year());
    params.not_before = date_time_ymd(year - 1, 1, 1);
    params.not_after = date_time_ymd(year + 1 + years, 1, 1);
}

impl Pki {
    /// Loads the CA from `dir` (`ca.crt`, `ca.key`), creating both on first use.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        Self::load_or_create_ca(dir, "ca", "keelson-ca")
    }

    /// Loads the CA `DIR/<stem>.crt` and `.key`, creating both (common name `common_name`) on
    /// first use: the cluster CA, or the front-proxy CA that vouches for the aggregator.
    pub fn load_or_create_ca(dir: &Path, stem: &str, common_name: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let (cert_path, key_path) = (
            dir.join(format!("{stem}.crt")),
            dir.join(format!("{stem}.key")),
        );
        if cert_path.is_file() && key_path.is_file() {
            let ca_pem = std::fs::read_to_string(&cert_path)
                .with_context(|| format!("cannot read {}", cert_path.display()))?;
            let key_pem = std::fs::read_to_string(&key_path)
                .with_context(|| format!("cannot read {}", key_path.display()))?;
            let ca_key = KeyPair::from_pem(&key_pem)
                .with_context(|| format!("{} is not a private key", key_path.display()))?;
            Issuer::from_ca_cert_pem(&ca_pem, &ca_key)
                .with_context(|| format!("{} is not a CA certificate", cert_path.display()))?;
            return Ok(Self {
                dir: dir.to_owned(),
                ca_pem,
                ca_key,
            });
        }
        let ca_key = KeyPair::generate().context("cannot generate the CA key")?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, CA_YEARS);
        let ca_pem = params
            .self_signed(&ca_key)
            .context("cannot sign the CA certificate")?
            .pem();
        write_private(&key_path, ca_key.serialize_pem().as_bytes())?;
        write_private(&cert_path, ca_pem.as_bytes())?;
        tracing::info!(dir = %dir.display(), common_name, "created a CA");
        Ok(Self {
            dir: dir.to_owned(),
            ca_pem,
            ca_key,
        })
    }

    /// The CA certificate (PEM).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA private key (PKCS#8 PEM), for the CSR signer.
    pub fn ca_key_pem(&self) -> String {
        self.ca_key.serialize_pem()
    }

    fn issue(&self, mut params: CertificateParams) -> anyhow::Result<Issued> {
        let issuer = Issuer::from_ca_cert_pem(&self.ca_pem, &self.ca_key)
            .context("cannot use the CA certificate")?;
        let key = KeyPair::generate().context("cannot generate a key")?;
        validity(&mut params, LEAF_YEARS);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &issuer)
            .context("cannot sign a certificate")?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A client certificate for `user` in `group` (Kubernetes reads CN as the user and O as
    /// the group).
    pub fn client(&self, user: &str, group: Option<&str>) -> anyhow::Result<Issued> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, user);
        if let Some(group) = group {
            params
                .distinguished_name
                .push(DnType::OrganizationName, group);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params)
    }

    /// The API server's serving certificate for `dns_names` and `ips`.
    pub fn serving(&self, dns_names: &[String], ips: &[IpAddr]) -> anyhow::Result<Issued> {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "keelson-apiserver");
        params.subject_alt_names = dns_names
            .iter()
            .map(|name| {
                name.as_str()
                    .try_into()
                    .map(SanType::DnsName)
                    .with_context(|| format!("{name:?} is not a valid DNS name for a certificate"))
            })
            .chain(ips.iter().map(|ip| Ok(SanType::IpAddress(*ip))))
            .collect::<anyhow::Result<_>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params)
    }

    /// Reuses `DIR/<name>.crt` and `.key` when both exist and the certificate has more than a
    /// third of its lifetime left ([`needs_renewal`]), otherwise issues a client certificate and
    /// keeps it there.
    pub fn persistent_client(
        &self,
        name: &str,
        user: &str,
        group: Option<&str>,
    ) -> anyhow::Result<Issued> {
        let (cert_path, key_path) = (
            self.dir.join(format!("{name}.crt")),
            self.dir.join(format!("{name}.key")),
        );
        if let (Ok(cert_pem), Ok(key_pem)) = (
            std::fs::read_to_string(&cert_path),
            std::fs::read_to_string(&key_path),
        ) {
            if !needs_renewal(&cert_pem, jiff::Timestamp::now()) {
                return Ok(Issued { cert_pem, key_pem });
            }
            tracing::info!(certificate = %cert_path.display(), "renewing a certificate near its expiry");
        }
        let issued = self.client(user, group)?;
        write_private(&key_path, issued.key_pem.as_bytes())?;
        write_private(&cert_path, issued.cert_pem.as_bytes())?;
        Ok(issued)
    }
}

/// Whether the certificate `cert_pem` should be re-issued at `now`: less than a third of its
/// lifetime left (kubelet's and kubeadm's habit is similar), or it does not parse.
pub fn needs_renewal(cert_pem: &str, now: jiff::Timestamp) -> bool {
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()) else {
        return true;
    };
    let Ok(cert) = pem.parse_x509() else {
        return true;
    };
    let (start, end) = (
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    );
    let left = end - now.as_second();
    left * 3 < end - start
}

/// A kubeconfig for `server` trusting `ca_pem`, authenticating as `user` with `credentials`.
pub fn kubeconfig(server: &str, ca_pem: &str, user: &str, credentials: &Issued) -> String {
    let encode = |text: &str| STANDARD.encode(text);
    format!(
        "apiVersion: v1\n\
         kind: Config\n\
         clusters:\n\
         - name: keelson\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\n\
         contexts:\n\
         - name: {user}@keelson\n  context:\n    cluster: keelson\n    user: {user}\n\
         current-context: {user}@keelson\n\
         users:\n\
         - name: {user}\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\n",
        ca = encode(ca_pem),
        cert = encode(&credentials.cert_pem),
        key = encode(&credentials.key_pem),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_created_once_and_reused() {
        let dir = tempfile::tempdir().expect("temp dir");
        let first = Pki::load_or_create(dir.path()).expect("create");
        let second = Pki::load_or_create(dir.path()).expect("load");
        assert_eq!(first.ca_pem(), second.ca_pem());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join("ca.key"))
                .expect("ca.key")
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600, "the CA key is private");
        let admin = second
            .persistent_client("admin", "kubernetes-admin", Some("system:masters"))
            .expect("admin");
        let again = first
            .persistent_client("admin", "kubernetes-admin", Some("system:masters"))
            .expect("admin again");
        assert_eq!(admin.cert_pem, again.cert_pem);
    }

    #[test]
    fn certificates_renew_in_the_last_third_of_their_lifetime() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = Pki::load_or_create(dir.path()).expect("create");
        let mut params = CertificateParams::default();
        params.not_before = date_time_ymd(2030, 1, 1);
        params.not_after = date_time_ymd(2033, 1, 1);
        let key = KeyPair::generate().expect("key");
        let issuer = Issuer::from_ca_cert_pem(&pki.ca_pem, &pki.ca_key).expect("issuer");
        let pem = params.signed_by(&key, &issuer).expect("signed").pem();
        let at = |t: &str| t.parse::<jiff::Timestamp>().expect("time");
        assert!(!needs_renewal(&pem, at("2031-12-01T00:00:00Z")));
        assert!(needs_renewal(&pem, at("2032-02-01T00:00:00Z")));
        assert!(needs_renewal(&pem, at("2034-01-01T00:00:00Z")));
        assert!(needs_renewal("garbage", at("2031-01-01T00:00:00Z")));
    }

    #[test]
    fn client_certificates_carry_user_and_group() {
        let dir = tempfile::tempdir().expect("temp dir");
        let pki = Pki::load_or_create(dir.path()).expect("create");
        let issued = pki
            .client("system:node:n1", Some("system:nodes"))
            .expect("issue");
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(issued.cert_pem.as_bytes())
            .map(|c: rustls::pki_types::CertificateDer<'_>| c.to_vec())
            .expect("PEM");
        let user = keelson_apiserver::tls::certificate_user(&der).expect("a user");
        assert_eq!(user.name, "system:node:n1");
        assert_eq!(user.groups, ["system:nodes"]);
        assert_eq!(user.node_name(), Some("n1"));
    }
}
