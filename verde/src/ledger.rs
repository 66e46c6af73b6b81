//! Stakes (Verde §3: trainers and challengers put up a stake; a lost dispute forfeits it to the winner).
//!
//! [`Ledger`] holds the balances in memory. [`LedgerFile`] keeps them in an append-only file of signed
//! entries — a stand-in for the on-chain contract a deployment would use — so that they survive a restart
//! and cannot be altered unnoticed: every entry names its sequence number and the hash of the entry
//! before it, and carries the ed25519 signature of a trusted node over both and its movement. Opening the
//! file replays and checks every entry; an entry from another node is accepted only if it is the next
//! one, follows the last, and is signed by a trusted key. Each append rewrites the file atomically (a
//! temporary file, then a rename), so a crash leaves the old ledger or the new one, never half an entry.
//!
//! The file: a first line `{"swarmlab_ledger":1}`, then one JSON object per entry.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use transport::{Identity, hex};

use crate::error::{Error, Result};
use crate::merkle::Hash;

/// Stakes in memory: every party deposits before taking part; the loser of a dispute is slashed by the
/// stake and the winner paid from it. ([`LedgerFile`] keeps them on disk as signed entries.)
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    balances: std::collections::BTreeMap<String, u64>,
}

impl Ledger {
    /// Adds `amount` to `who`'s balance.
    pub fn deposit(&mut self, who: &str, amount: u64) {
        *self.balances.entry(who.to_owned()).or_default() += amount;
    }

    /// Every party's balance, by name.
    pub fn balances(&self) -> impl Iterator<Item = (&str, u64)> {
        self.balances.iter().map(|(who, b)| (who.as_str(), *b))
    }

    /// `who`'s balance.
    pub fn balance(&self, who: &str) -> u64 {
        self.balances.get(who).copied().unwrap_or(0)
    }

    /// Makes `movement`.
    pub fn apply(&mut self, movement: &Movement) {
        match movement {
            Movement::Deposit { who, amount } => self.deposit(who, *amount),
            Movement::Settle { winner, loser, stake } => {
                self.settle(winner, loser, *stake);
            }
        }
    }

    /// Moves up to `stake` from the loser to the winner; returns what moved.
    pub fn settle(&mut self, winner: &str, loser: &str, stake: u64) -> u64 {
        let taken = self.balance(loser).min(stake);
        if let Some(b) = self.balances.get_mut(loser) {
            *b -= taken;
        }
        self.deposit(winner, taken);
        taken
    }
}

/// A change of balances an entry makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Movement {
    /// `who` puts up `amount`.
    Deposit {
        /// The party.
        who: String,
        /// What it puts up.
        amount: u64,
    },
    /// A settled dispute: up to `stake` moves from `loser` to `winner` ([`Ledger::settle`]).
    Settle {
        /// The party that won.
        winner: String,
        /// The party that lost.
        loser: String,
        /// The stake of the dispute.
        stake: u64,
    },
}

/// One signed entry of a [`LedgerFile`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// Its place: 0 for the first entry, then one more each.
    pub seq: u64,
    /// The hash of the entry before it (hex; zeros for the first).
    pub prev: String,
    /// What it does.
    pub movement: Movement,
    /// The signer's ed25519 public key (hex).
    pub signer: String,
    /// The signature over the sequence number, the previous hash and the movement (hex).
    pub signature: String,
}

/// The domain the signatures are made in, so that no other signed message of a node reads as an entry.
const DOMAIN: &[u8] = b"swarmlab verde ledger entry v1";

/// The largest ledger file read (64 MiB).
const MAX_FILE_BYTES: u64 = 64 << 20;

/// The file's first line.
const HEADER: &str = r#"{"swarmlab_ledger":1}"#;

impl Entry {
    /// The bytes the signature covers.
    fn signed_bytes(seq: u64, prev: &str, movement: &Movement) -> Result<Vec<u8>> {
        let body = serde_json::to_vec(&(seq, prev, movement))
            .map_err(|e| Error::Ledger(format!("cannot encode an entry: {e}")))?;
        Ok([DOMAIN, &body].concat())
    }

    /// A new entry after `prev`, signed by `signer`.
    fn signed(seq: u64, prev: Hash, movement: Movement, signer: &Identity) -> Result<Self> {
        let prev = hex::encode(&prev);
        let signature = signer.sign(&Self::signed_bytes(seq, &prev, &movement)?);
        Ok(Self { seq, prev, movement, signer: hex::encode(signer.public_key()), signature: hex::encode(&signature) })
    }

    /// Its hash, which the next entry names: over everything it says, its signature included.
    pub fn hash(&self) -> Result<Hash> {
        let bytes = serde_json::to_vec(self).map_err(|e| Error::Ledger(format!("cannot encode an entry: {e}")))?;
        Ok(*blake3::hash(&bytes).as_bytes())
    }

    /// Checks that it is entry number `seq`, follows `prev`, and is signed by one of `trusted`.
    fn check(&self, seq: u64, prev: &Hash, trusted: &[Vec<u8>]) -> Result<()> {
        if self.seq < seq {
            return Err(Error::Ledger(format!(
                "entry {} is replayed: the ledger already holds {seq} entries",
                self.seq
            )));
        }
        if self.seq != seq {
            return Err(Error::Ledger(format!("entry {} is out of order: the next entry is {seq}", self.seq)));
        }
        if self.prev != hex::encode(prev) {
            return Err(Error::Ledger(format!(
                "entry {seq} does not follow entry {}: its previous hash differs",
                seq.wrapping_sub(1)
            )));
        }
        let key = hex::decode(&self.signer)
            .ok_or_else(|| Error::Ledger(format!("entry {seq}: the signer is not a hex key")))?;
        if !trusted.contains(&key) {
            return Err(Error::Ledger(format!(
                "entry {seq} is signed by {}, which this ledger does not trust",
                short(&self.signer)
            )));
        }
        let signature = hex::decode(&self.signature)
            .ok_or_else(|| Error::Ledger(format!("entry {seq}: the signature is not hex")))?;
        let message = Self::signed_bytes(self.seq, &self.prev, &self.movement)?;
        if !transport::identity::verify_signature(&key, &message, &signature) {
            return Err(Error::Ledger(format!("entry {seq} is forged: its signature does not match what it says")));
        }
        Ok(())
    }
}

/// A stake ledger kept in a file of signed entries (see the module docs).
#[derive(Debug)]
pub struct LedgerFile {
    path: PathBuf,
    trusted: Vec<Vec<u8>>,
    entries: Vec<Entry>,
    last: Hash,
    balances: Ledger,
}

impl LedgerFile {
    /// Opens the ledger at `path` (an empty one if there is no file yet), checking every entry against
    /// `trusted`, the public keys of the nodes allowed to write it. A file that is not a ledger, or holds
    /// an entry that is forged, replayed, out of order or signed by another key, is refused with the line
    /// and the reason.
    pub fn open(path: impl AsRef<Path>, trusted: &[&[u8]]) -> Result<Self> {
        let path = path.as_ref().to_owned();
        let mut file = Self {
            path: path.clone(),
            trusted: trusted.iter().map(|k| k.to_vec()).collect(),
            entries: Vec::new(),
            last: [0; 32],
            balances: Ledger::default(),
        };
        let text = match transport::fsutil::read_text_bounded(&path, MAX_FILE_BYTES) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(file),
            Err(e) => return Err(Error::Ledger(format!("{}: {e}", path.display()))),
        };
        let mut lines = text.lines().enumerate();
        match lines.next() {
            Some((_, HEADER)) => {}
            _ => return Err(Error::Ledger(format!("{}: not a ledger file (no {HEADER} first line)", path.display()))),
        }
        for (i, line) in lines {
            let at = |e: Error| {
                Error::Ledger(format!(
                    "{}, line {}: {}",
                    path.display(),
                    i + 1,
                    e.to_string().trim_start_matches("ledger ")
                ))
            };
            let entry: Entry = serde_json::from_str(line)
                .map_err(|e| Error::Ledger(format!("{}, line {}: not an entry: {e}", path.display(), i + 1)))?;
            file.admit(entry).map_err(at)?;
        }
        Ok(file)
    }

    /// Where it is kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The balances after every entry.
    pub fn ledger(&self) -> &Ledger {
        &self.balances
    }

    /// The entries, in order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Signs `movement` with `signer` (a trusted key), writes it as the next entry and returns it (to
    /// send to the other nodes, which [`LedgerFile::accept`] it).
    pub fn append(&mut self, movement: Movement, signer: &Identity) -> Result<Entry> {
        let entry = Entry::signed(self.entries.len() as u64, self.last, movement, signer)?;
        self.accept(entry.clone())?;
        Ok(entry)
    }

    /// Checks an entry made elsewhere and writes it if it is the next one, follows the last, and is
    /// signed by a trusted key; nothing changes otherwise (the file is written before the entry is
    /// taken in memory).
    pub fn accept(&mut self, entry: Entry) -> Result<()> {
        let hash = self.check(&entry)?;
        self.save(Some(&entry))?;
        self.take(entry, hash);
        Ok(())
    }

    /// Checks `entry` as the next one and takes it in memory (opening a file).
    fn admit(&mut self, entry: Entry) -> Result<()> {
        let hash = self.check(&entry)?;
        self.take(entry, hash);
        Ok(())
    }

    /// Checks `entry` as the next one; returns its hash.
    fn check(&self, entry: &Entry) -> Result<Hash> {
        entry.check(self.entries.len() as u64, &self.last, &self.trusted)?;
        entry.hash()
    }

    /// Applies a checked entry.
    fn take(&mut self, entry: Entry, hash: Hash) {
        self.balances.apply(&entry.movement);
        self.last = hash;
        self.entries.push(entry);
    }

    /// Writes the whole ledger, and `next` after it, atomically.
    fn save(&self, next: Option<&Entry>) -> Result<()> {
        let mut text = format!("{HEADER}\n");
        for e in self.entries.iter().chain(next) {
            let line = serde_json::to_string(e).map_err(|e| Error::Ledger(format!("cannot encode an entry: {e}")))?;
            text.push_str(&line);
            text.push('\n');
        }
        transport::fsutil::write_atomic(&self.path, text.as_bytes(), false)
            .map_err(|e| Error::Ledger(format!("cannot write {}: {e}", self.path.display())))
    }
}

/// A key's first eight hex digits, for messages.
fn short(key: &str) -> &str {
    key.get(..8).unwrap_or(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Result<(Identity, Identity)> {
        let k = || Identity::generate().map_err(|e| Error::Ledger(e.to_string()));
        Ok((k()?, k()?))
    }

    #[test]
    fn the_ledger_slashes_the_loser_and_pays_the_winner() {
        let mut ledger = Ledger::default();
        ledger.deposit("honest", 100);
        ledger.deposit("cheat", 30);
        assert_eq!(ledger.settle("honest", "cheat", 50), 30, "never more than the loser has");
        assert_eq!((ledger.balance("honest"), ledger.balance("cheat")), (130, 0));
    }

    #[test]
    fn balances_survive_a_restart_and_every_entry_is_checked_on_opening() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Ledger(e.to_string()))?;
        let path = dir.path().join("stakes.ledger");
        let (referee, _) = keys()?;
        let trusted = [referee.public_key()];
        let mut ledger = LedgerFile::open(&path, &trusted)?;
        ledger.append(Movement::Deposit { who: "honest".into(), amount: 100 }, &referee)?;
        ledger.append(Movement::Deposit { who: "cheat".into(), amount: 30 }, &referee)?;
        ledger.append(Movement::Settle { winner: "honest".into(), loser: "cheat".into(), stake: 50 }, &referee)?;
        let reopened = LedgerFile::open(&path, &trusted)?;
        assert_eq!(reopened.entries(), ledger.entries());
        assert_eq!((reopened.ledger().balance("honest"), reopened.ledger().balance("cheat")), (130, 0));
        Ok(())
    }

    #[test]
    fn forged_replayed_reordered_and_untrusted_entries_are_refused_and_change_nothing() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| Error::Ledger(e.to_string()))?;
        let path = dir.path().join("stakes.ledger");
        let (referee, stranger) = keys()?;
        let trusted = [referee.public_key()];
        let mut ledger = LedgerFile::open(&path, &trusted)?;
        let first = ledger.append(Movement::Deposit { who: "a".into(), amount: 10 }, &referee)?;
        let on_disk = std::fs::read_to_string(&path).map_err(|e| Error::Ledger(e.to_string()))?;
        let refused = |ledger: &mut LedgerFile, entry: Entry, why: &str| -> Result<()> {
            let err = ledger.accept(entry).err().ok_or_else(|| Error::Ledger(format!("accepted ({why})")))?;
            assert!(err.to_string().contains(why), "{err}");
            assert_eq!(ledger.entries().len(), 1);
            assert_eq!(
                std::fs::read_to_string(&path).map_err(|e| Error::Ledger(e.to_string()))?,
                on_disk,
                "the file is unchanged"
            );
            Ok(())
        };
        // Replayed: the same entry again.
        refused(&mut ledger, first.clone(), "replayed")?;
        let last = ledger.last;
        // Forged: a signed entry whose amount was changed after signing.
        let mut forged = Entry::signed(1, last, Movement::Deposit { who: "a".into(), amount: 1 }, &referee)?;
        forged.movement = Movement::Deposit { who: "a".into(), amount: 1_000_000 };
        refused(&mut ledger, forged, "forged")?;
        // Out of order, and not following the last entry.
        refused(
            &mut ledger,
            Entry::signed(2, last, Movement::Deposit { who: "a".into(), amount: 1 }, &referee)?,
            "out of order",
        )?;
        refused(
            &mut ledger,
            Entry::signed(1, [7; 32], Movement::Deposit { who: "a".into(), amount: 1 }, &referee)?,
            "does not follow",
        )?;
        // Signed by a key the ledger does not trust.
        refused(
            &mut ledger,
            Entry::signed(1, last, Movement::Deposit { who: "a".into(), amount: 1 }, &stranger)?,
            "does not trust",
        )?;
        // A tampered file is refused on opening, naming the line.
        std::fs::write(&path, on_disk.replace("\"amount\":10", "\"amount\":99"))
            .map_err(|e| Error::Ledger(e.to_string()))?;
        let err =
            LedgerFile::open(&path, &trusted).err().ok_or_else(|| Error::Ledger("a tampered file opened".into()))?;
        assert!(err.to_string().contains("line 2") && err.to_string().contains("forged"), "{err}");
        std::fs::write(&path, "not a ledger\n").map_err(|e| Error::Ledger(e.to_string()))?;
        let err = LedgerFile::open(&path, &trusted).err().ok_or_else(|| Error::Ledger("a non-ledger opened".into()))?;
        assert!(err.to_string().contains("not a ledger file"), "{err}");
        Ok(())
    }
}
