//! Peer identities: an ed25519 key pair per node and the [`PeerId`] derived from its public key.
//!
//! A node's identity lives in a key file, the way a swarm keeps its `swarm.pem`: the ed25519 private key
//! as PKCS#8 DER inside a PEM block labelled `PRIVATE KEY` (the format `openssl genpkey -algorithm ed25519`
//! writes, so keys can be made and inspected with standard tools). The [`PeerId`] is the SHA-256 of the
//! 32-byte public key; the QUIC transport binds every TLS certificate to it, so a peer cannot claim an id
//! whose private key it does not hold.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};

use crate::error::IdentityError;

/// The PEM label of a key file.
const PEM_LABEL: &str = "PRIVATE KEY";
/// Key files larger than this are not key files: refuse before reading them whole.
const MAX_KEY_FILE_BYTES: u64 = 16 * 1024;

/// A peer's identity on the swarm: the SHA-256 of its ed25519 public key.
///
/// Ordered and hashable, so it can key maps; printed as 64 lowercase hex digits, and parsed back from them.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PeerId([u8; 32]);

impl PeerId {
    /// The id of the holder of an ed25519 public key.
    pub fn from_public_key(public_key: &[u8; 32]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, public_key);
        let mut id = [0u8; 32];
        id.copy_from_slice(digest.as_ref());
        Self(id)
    }

    /// Wraps raw id bytes (no key behind them: for simulations and tests, where peers are just names).
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// A deterministic id for the `index`-th simulated peer, distinct for every index.
    pub fn simulated(index: u64) -> Self {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&index.to_le_bytes());
        seed[8..24].copy_from_slice(b"swarmlab-sim-id!");
        Self::from_public_key(&seed)
    }

    /// The raw 32 bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first 8 hex digits: enough to tell peers apart in logs and reports.
    pub fn short(&self) -> String {
        crate::hex::encode(&self.0[..4])
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::hex::encode(&self.0))
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", self.short())
    }
}

impl FromStr for PeerId {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let bad = || IdentityError::BadPeerId { text: s.chars().take(80).collect() };
        if s.len() != 64 {
            return Err(bad());
        }
        let bytes = crate::hex::decode(s).ok_or_else(bad)?;
        let id: [u8; 32] = bytes.try_into().map_err(|_| bad())?;
        Ok(Self(id))
    }
}

/// A node's ed25519 key pair and the [`PeerId`] it proves.
pub struct Identity {
    pkcs8: Vec<u8>,
    key_pair: Ed25519KeyPair,
    peer_id: PeerId,
}

impl Identity {
    /// A fresh identity from the operating system's random source.
    pub fn generate() -> Result<Self, IdentityError> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| IdentityError::Random)?;
        Self::from_pkcs8_der(pkcs8.as_ref().to_vec())
    }

    /// An identity from a PKCS#8 DER ed25519 private key (v1 or v2).
    pub fn from_pkcs8_der(pkcs8: Vec<u8>) -> Result<Self, IdentityError> {
        let key_pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8)
            .map_err(|e| IdentityError::NotEd25519 { reason: e.to_string() })?;
        let public: [u8; 32] = key_pair
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| IdentityError::NotEd25519 { reason: "public key is not 32 bytes".into() })?;
        Ok(Self { pkcs8, key_pair, peer_id: PeerId::from_public_key(&public) })
    }

    /// Parses the PEM text of a key file.
    pub fn from_pem(text: &str) -> Result<Self, IdentityError> {
        let block = pem::parse(text).map_err(|e| IdentityError::NotPem { reason: e.to_string() })?;
        if block.tag() != PEM_LABEL {
            return Err(IdentityError::WrongPemLabel { found: block.tag().to_owned() });
        }
        Self::from_pkcs8_der(block.into_contents())
    }

    /// The key file's text: one `PRIVATE KEY` PEM block.
    pub fn to_pem(&self) -> String {
        pem::encode(&pem::Pem::new(PEM_LABEL, self.pkcs8.clone()))
    }

    /// Loads a key file. A missing, oversized, truncated or non-ed25519 file is an error that names the path.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, IdentityError> {
        let path = path.as_ref();
        let bytes = match crate::fsutil::read_bounded(path, MAX_KEY_FILE_BYTES) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                let bytes =
                    std::fs::metadata(path).map_or(MAX_KEY_FILE_BYTES + 1, |m| m.len().max(MAX_KEY_FILE_BYTES + 1));
                return Err(IdentityError::KeyFile {
                    path: path.to_owned(),
                    source: Box::new(IdentityError::TooLarge { bytes }),
                });
            }
            Err(source) => return Err(IdentityError::Io { path: path.to_owned(), source }),
        };
        let text = String::from_utf8(bytes).map_err(|_| IdentityError::KeyFile {
            path: path.to_owned(),
            source: Box::new(IdentityError::NotPem { reason: "file is not UTF-8 text".into() }),
        })?;
        Self::from_pem(&text).map_err(|e| IdentityError::KeyFile { path: path.to_owned(), source: Box::new(e) })
    }

    /// Writes the key file atomically and exclusively (a temporary file in the same directory, then a
    /// hard link that fails if the path exists), readable by its owner only on Unix. Refuses to overwrite
    /// an existing file, even one created by a racing writer after this call began.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), IdentityError> {
        let path = path.as_ref();
        crate::fsutil::write_new(path, self.to_pem().as_bytes(), true).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                IdentityError::Exists { path: path.to_owned() }
            } else {
                IdentityError::Io { path: path.to_owned(), source }
            }
        })
    }

    /// Loads the key file at `path`, or creates and saves a new identity there if none exists.
    pub fn load_or_generate(path: impl AsRef<Path>) -> Result<Self, IdentityError> {
        let path = path.as_ref();
        if path.exists() {
            Self::load(path)
        } else {
            let identity = Self::generate()?;
            identity.save(path)?;
            Ok(identity)
        }
    }

    /// The id this key proves.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The 32-byte ed25519 public key.
    pub fn public_key(&self) -> &[u8] {
        self.key_pair.public_key().as_ref()
    }

    /// Signs `message` with the private key (ed25519, 64-byte signature).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        let mut sig = [0u8; 64];
        sig.copy_from_slice(self.key_pair.sign(message).as_ref());
        sig
    }

    /// The private key as PKCS#8 DER, for the TLS layer.
    pub(crate) fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The 32-byte ed25519 secret seed, for stacks that take the raw key (libp2p). Both PKCS#8 forms of
    /// an ed25519 key (RFC 8410 v1, and v2 with the public key) hold it at the same place: after the
    /// version, the algorithm (OID 1.3.101.112) and the `OCTET STRING { OCTET STRING (32) }` that wraps it.
    pub(crate) fn ed25519_seed(&self) -> Result<[u8; 32], IdentityError> {
        const BEFORE_SEED: [u8; 9] = [0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];
        let malformed = || IdentityError::NotEd25519 { reason: "no ed25519 seed where PKCS#8 puts it".into() };
        if self.pkcs8.get(7..16) != Some(&BEFORE_SEED[..]) {
            return Err(malformed());
        }
        self.pkcs8.get(16..48).and_then(|seed| seed.try_into().ok()).ok_or_else(malformed)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity").field("peer_id", &self.peer_id).finish_non_exhaustive()
    }
}

/// Checks an ed25519 `signature` of `message` by the holder of `public_key`.
pub fn verify_signature(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public_key).verify(message, signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_round_trips_through_hex() -> Result<(), IdentityError> {
        let id = Identity::generate()?.peer_id();
        let parsed: PeerId = id.to_string().parse()?;
        assert_eq!(parsed, id);
        assert_eq!(id.short().len(), 8);
        assert!("xyz".parse::<PeerId>().is_err());
        assert!("zz".repeat(32).parse::<PeerId>().is_err());
        Ok(())
    }

    #[test]
    fn key_file_round_trip_keeps_the_id() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("node.key");
        let identity = Identity::generate()?;
        identity.save(&path)?;
        let loaded = Identity::load(&path)?;
        assert_eq!(loaded.peer_id(), identity.peer_id());
        let sig = loaded.sign(b"hello");
        assert!(verify_signature(identity.public_key(), b"hello", &sig));
        assert!(!verify_signature(identity.public_key(), b"hellp", &sig));
        // Saving over an existing key is refused, never silently replacing an identity.
        assert!(matches!(identity.save(&path), Err(IdentityError::Exists { .. })));
        Ok(())
    }

    #[test]
    fn bad_key_files_give_clear_errors() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let missing = Identity::load(dir.path().join("nope.key")).map(|_| ()).unwrap_err();
        assert!(missing.to_string().contains("nope.key"), "{missing}");

        let pem = Identity::generate()?.to_pem();
        let truncated = dir.path().join("truncated.key");
        std::fs::write(&truncated, &pem[..pem.len() / 2])?;
        let err = Identity::load(&truncated).map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("truncated.key"), "{err}");

        let foreign = dir.path().join("cert.pem");
        std::fs::write(&foreign, pem.replace("PRIVATE KEY", "CERTIFICATE"))?;
        let err = Identity::load(&foreign).map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("CERTIFICATE"), "{err}");

        let garbage_der = dir.path().join("garbage.key");
        std::fs::write(&garbage_der, pem::encode(&pem::Pem::new("PRIVATE KEY", vec![7u8; 48])))?;
        let err = Identity::load(&garbage_der).map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("ed25519"), "{err}");

        let binary = dir.path().join("binary.key");
        std::fs::write(&binary, [0xffu8, 0xfe, 0x00])?;
        assert!(Identity::load(&binary).is_err());
        Ok(())
    }

    #[test]
    fn simulated_ids_are_distinct() {
        let ids: std::collections::BTreeSet<_> = (0..1000).map(PeerId::simulated).collect();
        assert_eq!(ids.len(), 1000);
    }
}
