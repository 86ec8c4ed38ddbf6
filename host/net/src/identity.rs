//! Cluster identity: the CA, the scheduler certificate, the cluster token and join tickets.
//!
//! See `docs/security.md` for the scheme. In short: the scheduler owns a self-signed CA whose
//! SHA-256 fingerprint is pinned by everyone who joins, and a random 256-bit token that every
//! party proves it holds (without sending it) in the hello of every connection.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use ring::rand::SecureRandom;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::NetError;

/// Name of the environment variable holding a join ticket.
pub const TICKET_ENV: &str = "TASKHOST_TICKET";
/// Name of the ticket file in the scheduler's data directory.
pub const TICKET_FILE: &str = "ticket";
/// Name of the identity directory inside the scheduler's data directory.
pub const IDENTITY_DIR: &str = "identity";
/// TLS server name of the scheduler certificate.
pub const SCHEDULER_SERVER_NAME: &str = "taskhost-scheduler";
/// TLS server name of workers' self-signed peer certificates.
pub const PEER_SERVER_NAME: &str = "taskhost-peer";

const TICKET_PREFIX: &str = "taskhost://";

pub(crate) fn random_bytes() -> Result<[u8; 32], NetError> {
    let mut out = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut out)
        .map_err(|_| NetError::Tls("the system random generator failed".into()))?;
    Ok(out)
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let bytes = s.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

fn hex32(bytes: &[u8; 32]) -> String {
    let mut s = String::with_capacity(64);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The cluster secret: 256 random bits. Its `Debug` output is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterToken([u8; 32]);

impl ClusterToken {
    /// A fresh random token.
    pub fn generate() -> Result<Self, NetError> {
        Ok(Self(random_bytes()?))
    }

    /// A token from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex (64 characters); this is a secret.
    pub fn to_hex(&self) -> String {
        hex32(&self.0)
    }
}

impl fmt::Debug for ClusterToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ClusterToken(<redacted>)")
    }
}

impl FromStr for ClusterToken {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self, NetError> {
        parse_hex32(s.trim())
            .map(Self)
            .ok_or_else(|| NetError::Ticket("the token must be 64 hexadecimal characters".into()))
    }
}

/// SHA-256 fingerprint of the cluster CA certificate (DER), written `sha256:<hex>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CaHash(pub [u8; 32]);

impl CaHash {
    /// Fingerprint of a DER certificate.
    pub fn of(cert_der: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, cert_der);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Self(out)
    }
}

impl fmt::Display for CaHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex32(&self.0))
    }
}

impl fmt::Debug for CaHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for CaHash {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self, NetError> {
        let hex = s.trim().strip_prefix("sha256:").ok_or_else(|| {
            NetError::Ticket("the CA hash must look like sha256:<64 hex characters>".into())
        })?;
        parse_hex32(hex).map(Self).ok_or_else(|| {
            NetError::Ticket("the CA hash must look like sha256:<64 hex characters>".into())
        })
    }
}

/// A certificate chain and its private key, presented by a listening endpoint.
#[derive(Debug)]
pub struct ServerIdentity {
    /// Leaf first, then (for the scheduler) the CA certificate.
    pub chain: Vec<CertificateDer<'static>>,
    /// The leaf's private key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for ServerIdentity {
    fn clone(&self) -> Self {
        Self {
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl ServerIdentity {
    /// A fresh self-signed certificate for a worker's peer listener (name `taskhost-peer`).
    ///
    /// Peers do not trust this certificate by itself: a peer connection is authenticated by the
    /// mutual token proofs of the hello, which are bound to the TLS session (see
    /// `docs/security.md`).
    pub fn self_signed_peer() -> Result<Self, NetError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![PEER_SERVER_NAME.to_string()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "taskhost worker");
        let cert = params.self_signed(&key)?;
        Ok(Self {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::from(key),
        })
    }
}

/// The scheduler's cluster identity, stored under `<data-dir>/identity/`.
///
/// Files (keys and token are created with mode 0600, the directory with 0700):
/// - `ca.pem`: the self-signed cluster CA certificate (its SHA-256 is pinned by joiners);
/// - `ca.key`: the CA private key (PKCS#8 PEM);
/// - `scheduler.pem`: the scheduler's certificate (name `taskhost-scheduler`), issued by the CA;
/// - `scheduler.key`: its private key;
/// - `token`: the cluster token, 64 hex characters.
///
/// [`ClusterIdentity::write_ticket`] writes `<data-dir>/ticket` (mode 0600).
#[derive(Debug, Clone)]
pub struct ClusterIdentity {
    data_dir: PathBuf,
    token: ClusterToken,
    ca_cert: CertificateDer<'static>,
    server: ServerIdentity,
}

fn identity_err(path: &Path, message: impl fmt::Display) -> NetError {
    NetError::Identity {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), NetError> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| identity_err(&tmp, e))?;
    f.write_all(contents)
        .and_then(|()| f.sync_all())
        .map_err(|e| identity_err(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| identity_err(path, e))
}

fn read_file(path: &Path) -> Result<Vec<u8>, NetError> {
    fs::read(path).map_err(|e| identity_err(path, e))
}

impl ClusterIdentity {
    /// Loads the identity from `<data_dir>/identity/`, creating it on first start.
    ///
    /// Returns the identity and whether it was just created.
    pub fn load_or_create(data_dir: &Path) -> Result<(Self, bool), NetError> {
        let dir = data_dir.join(IDENTITY_DIR);
        if dir.join("token").exists() {
            return Ok((Self::load(data_dir)?, false));
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| identity_err(&dir, e))?;
        let (identity, pems) = Self::generate(data_dir)?;
        write_file(&dir.join("ca.pem"), pems.ca_cert.as_bytes(), 0o644)?;
        write_file(&dir.join("ca.key"), pems.ca_key.as_bytes(), 0o600)?;
        write_file(&dir.join("scheduler.pem"), pems.leaf_cert.as_bytes(), 0o644)?;
        write_file(&dir.join("scheduler.key"), pems.leaf_key.as_bytes(), 0o600)?;
        // The token last: its presence marks a complete identity.
        write_file(
            &dir.join("token"),
            identity.token.to_hex().as_bytes(),
            0o600,
        )?;
        tracing::info!(dir = %dir.display(), ca = %identity.ca_hash(), "created a new cluster identity");
        Ok((identity, true))
    }

    /// Loads an existing identity from `<data_dir>/identity/`.
    pub fn load(data_dir: &Path) -> Result<Self, NetError> {
        let dir = data_dir.join(IDENTITY_DIR);
        let token_path = dir.join("token");
        let token_text = read_file(&token_path)?;
        let token = std::str::from_utf8(&token_text)
            .ok()
            .and_then(|s| parse_hex32(s.trim()))
            .map(ClusterToken)
            .ok_or_else(|| identity_err(&token_path, "not a 64-character hex token"))?;
        let ca_path = dir.join("ca.pem");
        let ca_cert = CertificateDer::from_pem_slice(&read_file(&ca_path)?)
            .map_err(|e| identity_err(&ca_path, e))?;
        let leaf_path = dir.join("scheduler.pem");
        let leaf = CertificateDer::from_pem_slice(&read_file(&leaf_path)?)
            .map_err(|e| identity_err(&leaf_path, e))?;
        let key_path = dir.join("scheduler.key");
        let key = PrivateKeyDer::from_pem_slice(&read_file(&key_path)?)
            .map_err(|e| identity_err(&key_path, e))?;
        Ok(Self {
            data_dir: data_dir.to_path_buf(),
            token,
            server: ServerIdentity {
                chain: vec![leaf, ca_cert.clone()],
                key,
            },
            ca_cert,
        })
    }

    fn generate(data_dir: &Path) -> Result<(Self, Pems), NetError> {
        let ca_key = KeyPair::generate()?;
        let mut ca_params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "taskhost cluster CA");
        ca_params.distinguished_name = dn;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let ca_key_pem = ca_key.serialize_pem();
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf_key = KeyPair::generate()?;
        let mut leaf_params = CertificateParams::new(vec![SCHEDULER_SERVER_NAME.to_string()])?;
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "taskhost scheduler");
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf_params.use_authority_key_identifier_extension = true;
        let leaf = leaf_params.signed_by(&leaf_key, &issuer)?;
        let pems = Pems {
            ca_cert: ca_cert.pem(),
            ca_key: ca_key_pem,
            leaf_cert: leaf.pem(),
            leaf_key: leaf_key.serialize_pem(),
        };
        let identity = ClusterIdentity {
            data_dir: data_dir.to_path_buf(),
            token: ClusterToken::generate()?,
            ca_cert: ca_cert.der().clone(),
            server: ServerIdentity {
                chain: vec![leaf.der().clone(), ca_cert.der().clone()],
                key: PrivateKeyDer::from(leaf_key),
            },
        };
        Ok((identity, pems))
    }

    /// The cluster token.
    pub fn token(&self) -> &ClusterToken {
        &self.token
    }

    /// The fingerprint joiners pin.
    pub fn ca_hash(&self) -> CaHash {
        CaHash::of(&self.ca_cert)
    }

    /// The CA certificate (DER).
    pub fn ca_cert(&self) -> &CertificateDer<'static> {
        &self.ca_cert
    }

    /// The certificate chain and key the scheduler listens with.
    pub fn server_identity(&self) -> ServerIdentity {
        self.server.clone()
    }

    /// A join ticket for the given scheduler addresses (`host:port`, first preferred).
    pub fn ticket(&self, addrs: Vec<String>) -> JoinTicket {
        JoinTicket {
            addrs,
            token: self.token.clone(),
            ca_hash: self.ca_hash(),
        }
    }

    /// Path of the ticket file, `<data-dir>/ticket`.
    pub fn ticket_path(&self) -> PathBuf {
        self.data_dir.join(TICKET_FILE)
    }

    /// Writes `ticket` to `<data-dir>/ticket` (mode 0600) so that local tools can read it.
    pub fn write_ticket(&self, ticket: &JoinTicket) -> Result<PathBuf, NetError> {
        let path = self.ticket_path();
        write_file(&path, format!("{ticket}\n").as_bytes(), 0o600)?;
        Ok(path)
    }
}

struct Pems {
    ca_cert: String,
    ca_key: String,
    leaf_cert: String,
    leaf_key: String,
}

/// Everything a worker or client needs to join a cluster: scheduler addresses, the cluster
/// token and the pinned CA fingerprint.
///
/// Text form (one line, as printed by the scheduler, accepted by `--ticket` / `TASKHOST_TICKET`):
///
/// ```text
/// taskhost://<64 hex token>@<host:port>[,<host:port>...]?ca=sha256:<64 hex>
/// ```
///
/// IPv6 addresses are written in brackets (`[::1]:8786`). The ticket contains the cluster
/// secret: treat it like a password.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinTicket {
    /// Scheduler addresses (`host:port`), tried in order.
    pub addrs: Vec<String>,
    /// The cluster token.
    pub token: ClusterToken,
    /// Fingerprint of the cluster CA.
    pub ca_hash: CaHash,
}

impl fmt::Debug for JoinTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinTicket")
            .field("addrs", &self.addrs)
            .field("token", &self.token)
            .field("ca_hash", &self.ca_hash)
            .finish()
    }
}

impl fmt::Display for JoinTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{TICKET_PREFIX}{}@{}?ca={}",
            self.token.to_hex(),
            self.addrs.join(","),
            self.ca_hash
        )
    }
}

impl FromStr for JoinTicket {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self, NetError> {
        let s = s.trim();
        let rest = s
            .strip_prefix(TICKET_PREFIX)
            .ok_or_else(|| NetError::Ticket(format!("a ticket starts with {TICKET_PREFIX}")))?;
        let (token, rest) = rest
            .split_once('@')
            .ok_or_else(|| NetError::Ticket("missing '@' after the token".into()))?;
        let (addrs, query) = rest
            .split_once("?ca=")
            .ok_or_else(|| NetError::Ticket("missing '?ca=sha256:...'".into()))?;
        let addrs: Vec<String> = addrs
            .split(',')
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect();
        if addrs.is_empty() {
            return Err(NetError::Ticket("no scheduler address".into()));
        }
        for a in &addrs {
            if !a.contains(':') {
                return Err(NetError::Ticket(format!("address {a:?} lacks a port")));
            }
        }
        Ok(Self {
            addrs,
            token: token.parse()?,
            ca_hash: query.parse()?,
        })
    }
}

impl JoinTicket {
    /// Addresses to put in a ticket for a listener bound to `listen`: the address itself, or for
    /// an unspecified address (`0.0.0.0` / `[::]`) the host's primary address (the source
    /// address of its default route) followed by loopback.
    pub fn addrs_for(listen: std::net::SocketAddr) -> Vec<String> {
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
        if !listen.ip().is_unspecified() {
            return vec![listen.to_string()];
        }
        let port = listen.port();
        let (any, probe, loopback): (IpAddr, IpAddr, IpAddr) = if listen.is_ipv4() {
            (
                Ipv4Addr::UNSPECIFIED.into(),
                Ipv4Addr::new(192, 0, 2, 1).into(),
                Ipv4Addr::LOCALHOST.into(),
            )
        } else {
            (
                Ipv6Addr::UNSPECIFIED.into(),
                "2001:db8::1"
                    .parse::<Ipv6Addr>()
                    .unwrap_or(Ipv6Addr::LOCALHOST)
                    .into(),
                Ipv6Addr::LOCALHOST.into(),
            )
        };
        let mut addrs = Vec::new();
        // Connecting a UDP socket sends nothing; it only selects the route and source address.
        if let Ok(sock) = UdpSocket::bind(SocketAddr::new(any, 0))
            && sock.connect(SocketAddr::new(probe, 9)).is_ok()
            && let Ok(local) = sock.local_addr()
            && !local.ip().is_loopback()
            && !local.ip().is_unspecified()
        {
            addrs.push(SocketAddr::new(local.ip(), port).to_string());
        }
        addrs.push(SocketAddr::new(loopback, port).to_string());
        addrs
    }

    /// Reads a ticket file (such as `<data-dir>/ticket`).
    pub fn read(path: &Path) -> Result<Self, NetError> {
        let text = fs::read_to_string(path).map_err(|e| identity_err(path, e))?;
        text.parse()
    }

    /// The ticket in `TASKHOST_TICKET`, if set.
    pub fn from_env() -> Result<Option<Self>, NetError> {
        match std::env::var(TICKET_ENV) {
            Ok(s) => s.parse().map(Some),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(e) => Err(NetError::Ticket(format!("{TICKET_ENV}: {e}"))),
        }
    }

    /// The credentials this ticket grants (token + pinned CA).
    pub fn credentials(&self) -> crate::Credentials {
        crate::Credentials::pinned(self.token.clone(), self.ca_hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticket_round_trip() {
        let t = JoinTicket {
            addrs: vec!["127.0.0.1:8786".into(), "[::1]:8786".into()],
            token: ClusterToken::from_bytes([0xab; 32]),
            ca_hash: CaHash([0x01; 32]),
        };
        let s = t.to_string();
        assert!(s.starts_with("taskhost://abab"));
        assert_eq!(s.parse::<JoinTicket>().unwrap(), t);
        assert!(!format!("{t:?}").contains("abab"));
        assert!(
            "taskhost://zz@1.2.3.4:1?ca=sha256:00"
                .parse::<JoinTicket>()
                .is_err()
        );
        assert!("http://x".parse::<JoinTicket>().is_err());
    }

    #[test]
    fn ticket_addresses() {
        let specific: std::net::SocketAddr = "10.1.2.3:8786".parse().unwrap();
        assert_eq!(JoinTicket::addrs_for(specific), vec!["10.1.2.3:8786"]);
        let any = JoinTicket::addrs_for("0.0.0.0:8786".parse().unwrap());
        assert_eq!(any.last().map(String::as_str), Some("127.0.0.1:8786"));
    }

    #[test]
    fn identity_persists() {
        let dir = tempfile::tempdir().unwrap();
        let (a, created) = ClusterIdentity::load_or_create(dir.path()).unwrap();
        assert!(created);
        let (b, created) = ClusterIdentity::load_or_create(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(a.token(), b.token());
        assert_eq!(a.ca_hash(), b.ca_hash());
        let t = a.ticket(vec!["127.0.0.1:1".into()]);
        let path = a.write_ticket(&t).unwrap();
        assert_eq!(JoinTicket::read(&path).unwrap(), t);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &fs::metadata(dir.path().join("identity/token"))
                .unwrap()
                .permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }
}
