//! TLS configuration: rustls with the ring provider, TLS 1.3 only, CA pinning by fingerprint, and
//! the token proofs bound to the TLS session.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use taskhost_proto::{AuthProof, Role};

use crate::identity::{CaHash, ClusterToken, PEER_SERVER_NAME, SCHEDULER_SERVER_NAME};
use crate::{NetError, ServerIdentity};

/// ALPN protocol id; the protocol version is negotiated by the hello, not by ALPN.
pub(crate) const ALPN: &[u8] = b"taskhost";
const EXPORTER_LABEL: &[u8] = b"EXPORTER-taskhost-hello";

/// How a connecting side authenticates the server.
#[derive(Debug, Clone)]
pub enum Trust {
    /// The server must present a chain `[leaf, CA]` where the CA's SHA-256 matches and the leaf
    /// is valid for `taskhost-scheduler` under that CA. Used to reach the scheduler.
    PinnedCa(CaHash),
    /// Any certificate (its handshake signature is still checked); the server is authenticated
    /// by its token proof in the hello reply. Used between workers.
    TokenOnly,
}

/// What a connecting side presents: the cluster token and how to check the server.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The cluster token (proved, never sent).
    pub token: ClusterToken,
    /// How the server certificate is checked.
    pub trust: Trust,
}

impl Credentials {
    /// Token plus a pinned CA: for connections to the scheduler.
    pub fn pinned(token: ClusterToken, ca_hash: CaHash) -> Self {
        Self {
            token,
            trust: Trust::PinnedCa(ca_hash),
        }
    }

    /// Token only: for worker-to-worker connections.
    pub fn peer(token: ClusterToken) -> Self {
        Self {
            token,
            trust: Trust::TokenOnly,
        }
    }

    pub(crate) fn server_name(&self) -> &'static str {
        match self.trust {
            Trust::PinnedCa(_) => SCHEDULER_SERVER_NAME,
            Trust::TokenOnly => PEER_SERVER_NAME,
        }
    }
}

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(e: impl std::fmt::Display) -> NetError {
    NetError::Tls(e.to_string())
}

pub(crate) fn server_config(identity: &ServerIdentity) -> Result<rustls::ServerConfig, NetError> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .with_no_client_auth()
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())
        .map_err(tls_err)?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

pub(crate) fn client_config(trust: &Trust) -> Result<rustls::ClientConfig, NetError> {
    let provider = provider();
    let pin = match trust {
        Trust::PinnedCa(hash) => Some(*hash),
        Trust::TokenOnly => None,
    };
    let verifier: Arc<dyn ServerCertVerifier> = Arc::new(ServerVerifier {
        pin,
        provider: provider.clone(),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_err)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN.to_vec()];
    Ok(config)
}

#[derive(Debug)]
struct PinMismatch(String);

impl std::fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PinMismatch {}

/// Checks the server's certificate: against a CA pinned by fingerprint when `pin` is set
/// (connections to the scheduler); otherwise any certificate is accepted and authentication
/// comes from the hello's token proofs (connections between workers). Either way the
/// handshake signatures prove that the server holds its certificate's key.
#[derive(Debug)]
struct ServerVerifier {
    pin: Option<CaHash>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(pin) = self.pin else {
            return Ok(ServerCertVerified::assertion());
        };
        let Some(ca) = intermediates.iter().find(|c| CaHash::of(c) == pin) else {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(PinMismatch(
                    format!(
                        "the server's CA does not match the pinned {pin} (wrong cluster or wrong ticket)"
                    ),
                )))),
            ));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            self.provider.clone(),
        )
        .build()
        .map_err(|e| rustls::Error::General(e.to_string()))?;
        verifier.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Which side of the hello a proof is for.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Side {
    Connector = 1,
    Acceptor = 2,
}

fn role_byte(role: Role) -> u8 {
    match role {
        Role::Client => 1,
        Role::Worker => 2,
        Role::Scheduler => 3,
        Role::Peer => 4,
    }
}

/// TLS exported keying material of this connection (the same on both ends, unique per session).
pub(crate) fn session_binding(conn: &quinn::Connection) -> Result<[u8; 32], NetError> {
    let mut out = [0u8; 32];
    conn.export_keying_material(&mut out, EXPORTER_LABEL, b"")
        .map_err(|_| NetError::Tls("cannot export keying material".into()))?;
    Ok(out)
}

/// `BLAKE3-keyed(derive_key(token), binding || side || role)`.
pub(crate) fn proof(token: &ClusterToken, binding: &[u8; 32], side: Side, role: Role) -> AuthProof {
    let key = blake3::derive_key("taskhost cluster token proof v1", token.as_bytes());
    let mut hasher = blake3::Hasher::new_keyed(&key);
    hasher.update(binding);
    hasher.update(&[side as u8, role_byte(role)]);
    AuthProof(*hasher.finalize().as_bytes())
}

/// Constant-time check of a received proof.
pub(crate) fn check_proof(
    token: &ClusterToken,
    binding: &[u8; 32],
    side: Side,
    role: Role,
    received: &AuthProof,
) -> bool {
    let expected = proof(token, binding, side, role);
    blake3::Hash::from_bytes(expected.0) == blake3::Hash::from_bytes(received.0)
}
