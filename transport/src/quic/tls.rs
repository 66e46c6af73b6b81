//! TLS for QUIC with certificates bound to peer ids.
//!
//! Each endpoint presents a self-signed certificate made from its own ed25519 identity key. There is no
//! certificate authority: a certificate is trusted exactly when the key inside it hashes to the expected
//! [`PeerId`] (the one dialled, or one on the allow-list), and the TLS 1.3 handshake signature proves the
//! presenter holds that key. Both sides authenticate (mutual TLS).

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::error::TransportError;
use crate::identity::{Identity, PeerId};

/// The ALPN protocol name of swarmlab's QUIC transport.
pub(crate) const ALPN: &[u8] = b"swarmlab/1";
/// The TLS server name used on every dial (the verifier checks the peer id, not the name).
pub(crate) const SERVER_NAME: &str = "swarmlab";

/// DER prefix of an ed25519 SubjectPublicKeyInfo: SEQUENCE { SEQUENCE { OID 1.3.101.112 }, BIT STRING }.
const ED25519_SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];

/// This endpoint's certificate and key, made from its identity.
pub(crate) struct Credentials {
    pub(crate) cert: CertificateDer<'static>,
    pub(crate) key: PrivatePkcs8KeyDer<'static>,
    pub(crate) provider: Arc<CryptoProvider>,
}

impl Credentials {
    pub(crate) fn new(identity: &Identity) -> Result<Self, TransportError> {
        let setup = |what: &str, e: &dyn std::fmt::Display| TransportError::Setup(format!("{what}: {e}"));
        let key = PrivatePkcs8KeyDer::from(identity.pkcs8_der().to_vec());
        let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&key, &rcgen::PKCS_ED25519)
            .map_err(|e| setup("identity key", &e))?;
        let mut params =
            rcgen::CertificateParams::new(vec![SERVER_NAME.to_owned()]).map_err(|e| setup("certificate", &e))?;
        params.distinguished_name.push(rcgen::DnType::CommonName, identity.peer_id().to_string());
        let cert = params.self_signed(&key_pair).map_err(|e| setup("certificate", &e))?;
        Ok(Self { cert: cert.der().clone(), key, provider: Arc::new(rustls::crypto::ring::default_provider()) })
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.clone_key())
    }

    /// TLS config for dialling `expected`: only a certificate proving that id is accepted.
    pub(crate) fn client_config(&self, expected: PeerId) -> Result<rustls::ClientConfig, TransportError> {
        let verifier = Arc::new(ExpectPeer { expected, algorithms: self.algorithms() });
        let mut config = rustls::ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TransportError::Setup(format!("TLS: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(vec![self.cert.clone()], self.key())
            .map_err(|e| TransportError::Setup(format!("TLS client certificate: {e}")))?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }

    /// TLS config for accepting: clients must prove an id on `allowed` (or any id if `allowed` is `None`).
    pub(crate) fn server_config(
        &self,
        allowed: Option<Arc<RwLock<HashSet<PeerId>>>>,
    ) -> Result<rustls::ServerConfig, TransportError> {
        let verifier = Arc::new(AllowPeers { allowed, algorithms: self.algorithms() });
        let mut config = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TransportError::Setup(format!("TLS: {e}")))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![self.cert.clone()], self.key())
            .map_err(|e| TransportError::Setup(format!("TLS server certificate: {e}")))?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        Ok(config)
    }

    fn algorithms(&self) -> WebPkiSupportedAlgorithms {
        self.provider.signature_verification_algorithms
    }
}

/// The peer id proven by a certificate: the hash of its ed25519 public key.
pub(crate) fn peer_id_of(cert: &CertificateDer<'_>) -> Result<PeerId, rustls::Error> {
    let parsed = webpki::EndEntityCert::try_from(cert)
        .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
    let spki = parsed.subject_public_key_info();
    let spki = spki.as_ref();
    if spki.len() != ED25519_SPKI_PREFIX.len() + 32 || !spki.starts_with(&ED25519_SPKI_PREFIX) {
        return Err(rustls::Error::General("peer certificate key is not ed25519".into()));
    }
    let mut key = [0u8; 32];
    key.copy_from_slice(&spki[ED25519_SPKI_PREFIX.len()..]);
    Ok(PeerId::from_public_key(&key))
}

/// Verifies the TLS 1.3 handshake signature with the key in the certificate (ed25519 only).
fn verify_signature(
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    algorithms: &WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    if dss.scheme != SignatureScheme::ED25519 {
        return Err(rustls::Error::PeerMisbehaved(rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme));
    }
    rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
}

/// The handshake-signature methods that both verifier traits require, identical for both sides:
/// TLS 1.3 only, ed25519 only, checked against the key in the presented certificate.
macro_rules! handshake_signature_checks {
    () => {
        fn verify_tls12_signature(
            &self,
            _message: &[u8],
            _cert: &CertificateDer<'_>,
            _dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::General("TLS 1.2 is not used by swarmlab".into()))
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_signature(message, cert, dss, &self.algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            vec![SignatureScheme::ED25519]
        }
    };
}

/// Client side: the server must prove the dialled id.
#[derive(Debug)]
struct ExpectPeer {
    expected: PeerId,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ExpectPeer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = peer_id_of(end_entity)?;
        if presented == self.expected {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "peer presented id {}, expected {}",
                presented.short(),
                self.expected.short()
            )))
        }
    }

    handshake_signature_checks!();
}

/// Server side: the client must prove an id on the allow-list.
#[derive(Debug)]
struct AllowPeers {
    allowed: Option<Arc<RwLock<HashSet<PeerId>>>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AllowPeers {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let presented = peer_id_of(end_entity)?;
        let Some(allowed) = &self.allowed else { return Ok(ClientCertVerified::assertion()) };
        let listed = allowed.read().map(|set| set.contains(&presented)).unwrap_or(false);
        if listed {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!("peer {} is not in the peers file", presented.short())))
        }
    }

    handshake_signature_checks!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_proves_the_identity_it_was_made_from() -> Result<(), Box<dyn std::error::Error>> {
        let identity = Identity::generate()?;
        let creds = Credentials::new(&identity)?;
        assert_eq!(peer_id_of(&creds.cert)?, identity.peer_id());
        assert!(peer_id_of(&CertificateDer::from(vec![0u8; 10])).is_err());
        Ok(())
    }
}
