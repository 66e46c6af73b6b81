//! The peers file: who is in the swarm and where to reach them.
//!
//! ```toml
//! [[peer]]
//! id = "3f0c…64 hex digits…"
//! addr = "127.0.0.1:4100"
//! name = "node-0"          # optional, for logs
//! ```
//!
//! A real node bootstraps from it: it dials peers at these addresses, and (by default) only accepts
//! connections from the ids listed here.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::TransportError;
use crate::identity::PeerId;

/// The largest peers file read (1 MiB: thousands of peers).
pub const MAX_PEERS_FILE_BYTES: u64 = 1 << 20;

/// One peer of the swarm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerEntry {
    /// Where it listens.
    pub addr: SocketAddr,
    /// A human name for logs, if given.
    pub name: Option<String>,
}

/// Every known peer, by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerBook {
    peers: BTreeMap<PeerId, PeerEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    id: String,
    addr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    peer: Vec<FileEntry>,
}

impl PeerBook {
    /// An empty book.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a peer.
    pub fn insert(&mut self, id: PeerId, addr: SocketAddr, name: Option<String>) {
        self.peers.insert(id, PeerEntry { addr, name });
    }

    /// The entry for `id`.
    pub fn get(&self, id: &PeerId) -> Option<&PeerEntry> {
        self.peers.get(id)
    }

    /// Whether `id` is listed.
    pub fn contains(&self, id: &PeerId) -> bool {
        self.peers.contains_key(id)
    }

    /// All ids, in ascending `PeerId` order (a node's place in a swarm is its id's rank here).
    pub fn ids(&self) -> impl Iterator<Item = PeerId> + '_ {
        self.peers.keys().copied()
    }

    /// All entries, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (&PeerId, &PeerEntry)> {
        self.peers.iter()
    }

    /// Number of peers.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether the book is empty.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }

    /// Parses a peers file's text. Errors name the entry and field at fault.
    pub fn from_toml(text: &str) -> Result<Self, TransportError> {
        let file: File =
            toml::from_str(text).map_err(|e| TransportError::config("peers file", e.message().to_owned()))?;
        let mut book = Self::new();
        for (i, entry) in file.peer.into_iter().enumerate() {
            let id: PeerId =
                entry.id.parse().map_err(|e| TransportError::config(format!("peer[{i}].id"), format!("{e}")))?;
            let addr: SocketAddr = entry.addr.parse().map_err(|_| {
                TransportError::config(format!("peer[{i}].addr"), format!("{:?} is not an IP:port address", entry.addr))
            })?;
            if book.contains(&id) {
                return Err(TransportError::config(format!("peer[{i}].id"), format!("{id} is listed twice")));
            }
            if addr.port() == 0 {
                return Err(TransportError::config(format!("peer[{i}].addr"), format!("{addr}: port 0 is no address to dial")));
            }
            if let Some((other, _)) = book.iter().find(|(_, e)| e.addr == addr) {
                return Err(TransportError::config(
                    format!("peer[{i}].addr"),
                    format!("{addr} is already the address of {other}: two peers cannot listen on one address"),
                ));
            }
            book.insert(id, addr, entry.name);
        }
        Ok(book)
    }

    /// The peers file's text.
    pub fn to_toml(&self) -> String {
        let file = File {
            peer: self
                .peers
                .iter()
                .map(|(id, e)| FileEntry { id: id.to_string(), addr: e.addr.to_string(), name: e.name.clone() })
                .collect(),
        };
        toml::to_string(&file).unwrap_or_default()
    }

    /// Loads a peers file (at most [`MAX_PEERS_FILE_BYTES`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, TransportError> {
        let path = path.as_ref();
        let text = crate::fsutil::read_text_bounded(path, MAX_PEERS_FILE_BYTES)
            .map_err(|source| TransportError::Io { path: path.to_owned(), source })?;
        Self::from_toml(&text).map_err(|e| match e {
            TransportError::Config { field, reason } => {
                TransportError::Config { field: format!("{}: {field}", path.display()), reason }
            }
            other => other,
        })
    }

    /// Writes the peers file atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), TransportError> {
        let path = path.as_ref();
        crate::fsutil::write_atomic(path, self.to_toml().as_bytes(), false)
            .map_err(|source| TransportError::Io { path: path.to_owned(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_a_file() -> Result<(), Box<dyn std::error::Error>> {
        let mut book = PeerBook::new();
        book.insert(PeerId::simulated(1), "127.0.0.1:4000".parse()?, Some("a".into()));
        book.insert(PeerId::simulated(2), "[::1]:4001".parse()?, None);
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("peers.toml");
        book.save(&path)?;
        assert_eq!(PeerBook::load(&path)?, book);
        Ok(())
    }

    #[test]
    fn errors_name_the_field() {
        let id = PeerId::simulated(1);
        let bad_addr = format!("[[peer]]\nid = \"{id}\"\naddr = \"localhost\"\n");
        let err = PeerBook::from_toml(&bad_addr).unwrap_err().to_string();
        assert!(err.contains("peer[0].addr"), "{err}");
        let bad_id = "[[peer]]\nid = \"abc\"\naddr = \"127.0.0.1:1\"\n";
        let err = PeerBook::from_toml(bad_id).unwrap_err().to_string();
        assert!(err.contains("peer[0].id"), "{err}");
        let twice = format!("{bad_addr}{bad_addr}").replace("localhost", "127.0.0.1:5");
        let err = PeerBook::from_toml(&twice).unwrap_err().to_string();
        assert!(err.contains("peer[1].id") && err.contains("twice"), "{err}");
        let entry = |n: u64, addr: &str| format!("[[peer]]\nid = \"{}\"\naddr = \"{addr}\"\n", PeerId::simulated(n));
        let err = PeerBook::from_toml(&entry(1, "127.0.0.1:0")).unwrap_err().to_string();
        assert!(err.contains("peer[0].addr") && err.contains("port 0"), "{err}");
        let shared = format!("{}{}", entry(1, "127.0.0.1:7"), entry(2, "127.0.0.1:7"));
        let err = PeerBook::from_toml(&shared).unwrap_err().to_string();
        assert!(err.contains("peer[1].addr") && err.contains("already"), "{err}");
        let dir = tempfile::tempdir().expect("dir");
        #[cfg(unix)]
        {
            let err = PeerBook::load("/dev/zero").unwrap_err().to_string();
            assert!(err.contains("/dev/zero") && err.contains("more than"), "an endless file is refused: {err}");
        }
        let big = dir.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; (MAX_PEERS_FILE_BYTES + 1) as usize]).expect("write");
        assert!(PeerBook::load(&big).is_err());
        let unknown = "[[peer]]\nidd = \"x\"\n";
        assert!(PeerBook::from_toml(unknown).is_err());
        assert!(PeerBook::from_toml("not toml [").is_err());
    }
}
