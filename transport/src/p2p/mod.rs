//! `p2p::Endpoint`: the [`Transport`] for swarms whose nodes do not know each other's addresses, or cannot
//! reach each other (home routers, NAT): libp2p over QUIC, with Kademlia, identify, relay v2 and DCUtR.
//!
//! - **Joining.** A node starts with its key and one bootstrap address
//!   (`/ip4/…/udp/…/quic-v1/p2p/<libp2p id>`): a node of role [`Role::Relay`] that anyone can reach. It
//!   reserves a relayed address there (circuit relay v2) and publishes, in the swarm's Kademlia table kept
//!   by the relay, a record under its swarmlab [`PeerId`]: its public key and the addresses it can be
//!   reached at (its own, and the relayed one).
//! - **Finding a peer.** The first send to a peer looks its record up, checks that the key in it hashes
//!   to the peer's id, and dials every address in it at once; the first connection made wins.
//! - **Direct when it can, relayed when it cannot.** A connection made through the relay is upgraded by
//!   hole punching (DCUtR): both sides dial each other's observed addresses at the same moment. Until the
//!   punch succeeds or gives up, sends to that peer wait; once a direct connection exists the relayed one is
//!   closed, so that no message is cut off with it. Where the punch fails, traffic stays on the relay.
//! - **Identity.** libp2p's peer id is derived from the same ed25519 key as swarmlab's [`PeerId`] (its
//!   SHA-256), and QUIC's TLS and the relay's noise handshake prove it; the id of every incoming stream
//!   is computed from that proven key. A record can only name addresses: a wrong one fails to connect, it
//!   cannot impersonate. The peers file remains an allowlist ([`AcceptPolicy::Listed`]): messages from
//!   ids outside it are dropped and recorded as faults. The relay serves any node that reaches it.
//! - **Messages** travel one per stream, as a frame (length header + payload), as on
//!   [`quic::Endpoint`](crate::quic::Endpoint), with the same frame limit, stream timeout and faults.

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use libp2p::futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::kad::{self, GetRecordOk, QueryId, QueryResult, Quorum, Record, RecordKey};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError, NetworkBehaviour, SwarmEvent};
use libp2p::{StreamProtocol, Swarm, dcutr, identify, noise, relay, yamux};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info};

pub use libp2p::Multiaddr;

use crate::codec::{Codec, FRAME_HEADER_LEN};
use crate::error::{CodecError, TransportError};
use crate::identity::{Identity, PeerId};
use crate::peers::PeerBook;
pub use crate::quic::AcceptPolicy;
pub use crate::traffic::{EndpointStats, Fault, FaultKind};
use crate::traffic::{Inbox, Traffic};
use crate::transport::{Envelope, Transport};

/// The protocol swarmlab's messages travel on.
pub const MESSAGES: StreamProtocol = StreamProtocol::new("/swarmlab/msg/1");
/// The swarm's own Kademlia table (kept apart from any public DHT).
const KADEMLIA: StreamProtocol = StreamProtocol::new("/swarmlab/kad/1");
/// How long a node waits, after a relayed connection, for hole punching to settle before it sends
/// through the relay anyway (DCUtR makes up to three attempts, each a round trip or two).
const PUNCH_WAIT: Duration = Duration::from_secs(10);
/// How long a connection with no stream open stays up. QUIC's keep-alives and idle timeout find dead
/// peers; the swarm's own timeout would otherwise close a connection between two of a run's messages
/// (and, behind NAT, the hole punched for it).
const CONNECTION_LINGER: Duration = Duration::from_secs(3600);
/// How long sends wait for a new connection's other end to say which incarnation of its process it is
/// (identify, one round trip) before going anyway.
const IDENTIFY_WAIT: Duration = Duration::from_secs(2);
/// How often a node publishes its record again.
const REPUBLISH: Duration = Duration::from_secs(60);
/// How long a send waits on a lookup or dial that has not answered before trying again.
const RETRY_SILENT: Duration = Duration::from_secs(1);
/// How often pending lookups and punches are looked at again.
const TICK: Duration = Duration::from_millis(200);

/// What a node does for the swarm besides its own traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// An ordinary member: joins through a bootstrap relay, may be behind NAT.
    #[default]
    Member,
    /// A node every member can reach: it relays for the others, keeps the swarm's Kademlia table and
    /// is the bootstrap address members join with. It may also be a member of the swarm itself.
    Relay,
}

/// Settings of a peer-to-peer endpoint. `Default` gives sensible values; every duration must be positive.
#[derive(Debug, Clone)]
pub struct Config {
    /// Local UDP address to listen on (port 0 picks a free one).
    pub bind: SocketAddr,
    /// This node's part.
    pub role: Role,
    /// Relays to join through, each `/ip4/<addr>/udp/<port>/quic-v1/p2p/<libp2p id>` (at least one for a
    /// member).
    pub bootstrap: Vec<Multiaddr>,
    /// Publish only the relayed address and never punch holes: every connection goes through the relay
    /// (to measure what the relay costs).
    pub relay_only: bool,
    /// Frame limit and codec.
    pub codec: Codec,
    /// Whose messages are delivered.
    pub accept: AcceptPolicy,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// Longest wait to join (reserve and publish) and to reach a peer (lookup, dial, punch).
    pub connect_timeout: Duration,
    /// Longest time one incoming message may take from its stream opening to its end.
    pub stream_timeout: Duration,
    /// Messages received and not yet taken by `recv` before senders are slowed down.
    pub inbox_capacity: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            role: Role::Member,
            bootstrap: Vec::new(),
            relay_only: false,
            codec: Codec::default(),
            accept: AcceptPolicy::Listed,
            idle_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            stream_timeout: Duration::from_secs(60),
            inbox_capacity: 4096,
        }
    }
}

impl Config {
    /// Checks the settings; returns each bootstrap's libp2p id and its address without it.
    fn validate(&self) -> Result<Vec<(libp2p::PeerId, Multiaddr)>, TransportError> {
        for (field, d) in [
            ("idle_timeout", self.idle_timeout),
            ("connect_timeout", self.connect_timeout),
            ("stream_timeout", self.stream_timeout),
        ] {
            if d.is_zero() {
                return Err(TransportError::config(format!("p2p.{field}"), "must be positive"));
            }
        }
        if self.inbox_capacity == 0 {
            return Err(TransportError::config("p2p.inbox_capacity", "must be at least 1"));
        }
        if self.role == Role::Member && self.bootstrap.is_empty() {
            return Err(TransportError::config("p2p.bootstrap", "a member needs a relay to join through"));
        }
        self.bootstrap.iter().map(split_bootstrap).collect()
    }
}

/// A bootstrap address's libp2p id and the address without it.
fn split_bootstrap(addr: &Multiaddr) -> Result<(libp2p::PeerId, Multiaddr), TransportError> {
    let mut base = addr.clone();
    match base.pop() {
        Some(Protocol::P2p(id)) if !base.iter().any(|p| matches!(p, Protocol::P2pCircuit)) => Ok((id, base)),
        _ => Err(TransportError::config("p2p.bootstrap", format!("{addr} does not end in /p2p/<libp2p peer id>"))),
    }
}

/// How messages to a peer travel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerPath {
    /// A direct connection was made (dialled, or punched through NAT).
    pub direct: bool,
    /// A connection through the relay was made.
    pub relayed: bool,
    /// A relayed connection was upgraded to a direct one by hole punching.
    pub hole_punched: bool,
    /// Hole punching was tried and failed.
    pub punch_failed: bool,
}

impl std::fmt::Display for PeerPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match (self.direct, self.relayed, self.hole_punched) {
            (true, _, true) => "direct (hole punched after the relay's introduction)",
            (true, false, false) => "direct",
            (true, true, false) => "direct (upgraded from a relayed connection)",
            (false, true, _) => "through the relay",
            (false, false, _) => "not connected",
        })
    }
}

/// What a node publishes under its swarmlab id: the key that proves the id, and where it listens.
#[derive(Serialize, Deserialize)]
struct PeerRecord {
    /// libp2p's protobuf encoding of the ed25519 public key.
    public_key: Vec<u8>,
    /// Multiaddrs, as bytes.
    addrs: Vec<Vec<u8>>,
}

impl PeerRecord {
    /// The record `value` found under `peer`'s id, checked: the libp2p id its key gives (which must hash
    /// to `peer`) and the addresses to dial (only relayed ones if `relay_only`; at least one).
    fn read(
        peer: PeerId,
        value: &[u8],
        codec: Codec,
        relay_only: bool,
    ) -> Result<(libp2p::PeerId, Vec<Multiaddr>), String> {
        let found: Self = codec.decode(&Bytes::copy_from_slice(value)).map_err(|e| format!("malformed record: {e}"))?;
        let key = libp2p::identity::PublicKey::try_decode_protobuf(&found.public_key)
            .map_err(|e| format!("record's key: {e}"))?;
        let libp2p = key.to_peer_id();
        if swarmlab_id(&libp2p) != Some(peer) {
            return Err("the record's key does not prove this id".into());
        }
        let mut addrs: Vec<Multiaddr> = found.addrs.into_iter().filter_map(|a| Multiaddr::try_from(a).ok()).collect();
        if relay_only {
            addrs.retain(|a| a.iter().any(|p| matches!(p, Protocol::P2pCircuit)));
        }
        if addrs.is_empty() {
            return Err("the record names no address this node may dial".into());
        }
        Ok((libp2p, addrs))
    }
}

fn record_key(peer: PeerId) -> RecordKey {
    let mut key = b"/swarmlab/peer/".to_vec();
    key.extend_from_slice(peer.as_bytes());
    RecordKey::new(&key)
}

/// The swarmlab id of a libp2p peer: the SHA-256 of the ed25519 key its id embeds (libp2p puts short
/// keys in the id itself, as an identity multihash).
pub fn swarmlab_id(peer: &libp2p::PeerId) -> Option<PeerId> {
    let bytes = peer.to_bytes();
    // Identity multihash (code 0x00) of a 36-byte protobuf key.
    let protobuf = bytes.strip_prefix(&[0x00, 0x24])?;
    let key = libp2p::identity::PublicKey::try_decode_protobuf(protobuf).ok()?.try_into_ed25519().ok()?;
    Some(PeerId::from_public_key(&key.to_bytes()))
}

/// The libp2p key pair of a swarmlab identity (the same ed25519 key).
fn keypair(identity: &Identity) -> Result<libp2p::identity::Keypair, TransportError> {
    let seed = identity.ed25519_seed().map_err(|e| TransportError::Setup(e.to_string()))?;
    let keypair = libp2p::identity::Keypair::ed25519_from_bytes(seed)
        .map_err(|e| TransportError::Setup(format!("ed25519 key: {e}")))?;
    let public = keypair.public().try_into_ed25519().map_err(|e| TransportError::Setup(e.to_string()))?;
    if public.to_bytes()[..] != identity.public_key()[..] {
        return Err(TransportError::Setup("the key's libp2p form does not match its public key".into()));
    }
    Ok(keypair)
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    relay_client: relay::client::Behaviour,
    relay_server: Toggle<relay::Behaviour>,
    dcutr: Toggle<dcutr::Behaviour>,
    identify: identify::Behaviour,
    kademlia: kad::Behaviour<kad::store::MemoryStore>,
    messages: libp2p_stream::Behaviour,
}

/// State shared by the endpoint's handles, its driver and its readers.
struct Shared {
    config: Config,
    traffic: Traffic,
    allowed: RwLock<HashSet<PeerId>>,
    paths: Mutex<BTreeMap<PeerId, PeerPath>>,
}

impl Shared {
    fn update_path(&self, peer: PeerId, update: impl FnOnce(&mut PeerPath)) {
        update(self.paths.lock().unwrap_or_else(|e| e.into_inner()).entry(peer).or_default());
    }
}

type Reply = oneshot::Sender<Result<libp2p::PeerId, String>>;

enum Command {
    /// Make sure there is a settled connection to this peer, and name its libp2p id.
    Connect { peer: PeerId, reply: Reply },
    /// Stop the driver.
    Shutdown,
}

struct Inner {
    shared: Arc<Shared>,
    local: libp2p::PeerId,
    listen: Vec<Multiaddr>,
    commands: mpsc::UnboundedSender<Command>,
    control: libp2p_stream::Control,
    inbox: Inbox,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Shutdown);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A node's peer-to-peer endpoint; implements [`Transport`]. Cheap to clone; closed when the last clone
/// drops.
#[derive(Clone)]
pub struct Endpoint {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("p2p::Endpoint")
            .field("id", &self.inner.shared.traffic.id())
            .field("libp2p", &self.inner.local)
            .field("listen", &self.inner.listen)
            .finish()
    }
}

impl Endpoint {
    /// Starts an endpoint for `identity`, accepting messages from the peers in `book` (their addresses
    /// are not used). Returns once it listens and, for a member, once it holds a reservation on a
    /// bootstrap relay and its record is published (at most `connect_timeout`). Must run inside a tokio
    /// runtime.
    pub async fn start(identity: &Identity, book: PeerBook, config: Config) -> Result<Self, TransportError> {
        let bootstrap = config.validate()?;
        let keypair = keypair(identity)?;
        let (local, public_key) = (keypair.public().to_peer_id(), keypair.public().encode_protobuf());
        let mut swarm = build_swarm(keypair, &config)?;
        let listen = Multiaddr::from(config.bind.ip()).with(Protocol::Udp(config.bind.port())).with(Protocol::QuicV1);
        swarm.listen_on(listen.clone()).map_err(|e| TransportError::Setup(format!("listen on {listen}: {e}")))?;
        for (id, addr) in &bootstrap {
            swarm.behaviour_mut().kademlia.add_address(id, addr.clone());
            if config.role == Role::Member {
                let circuit = addr.clone().with(Protocol::P2p(*id)).with(Protocol::P2pCircuit);
                swarm
                    .listen_on(circuit.clone())
                    .map_err(|e| TransportError::Setup(format!("reserve {circuit}: {e}")))?;
            } else {
                let _ = swarm.dial(addr.clone().with(Protocol::P2p(*id)));
            }
        }
        let control = swarm.behaviour().messages.new_control();
        let (traffic, inbox) = Traffic::new(identity.peer_id(), config.inbox_capacity);
        let shared = Arc::new(Shared {
            config,
            traffic,
            allowed: RwLock::new(book.ids().collect()),
            paths: Mutex::new(BTreeMap::new()),
        });
        let (commands, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let connect_timeout = shared.config.connect_timeout;
        let driver = Driver::new(swarm, shared.clone(), public_key, bootstrap, ready_tx);
        let mut tasks = vec![tokio::spawn(driver.run(rx))];
        let incoming = control.clone().accept(MESSAGES).map_err(|e| TransportError::Setup(e.to_string()))?;
        tasks.push(tokio::spawn(accept_streams(incoming, shared.clone())));
        let joined = tokio::time::timeout(connect_timeout, ready_rx).await;
        let listen = match joined {
            Ok(Ok(Ok(listen))) => listen,
            Ok(Ok(Err(reason))) => return Err(TransportError::Setup(reason)),
            Ok(Err(_)) => return Err(TransportError::Setup("the endpoint's driver stopped while joining".into())),
            Err(_) => {
                for task in &tasks {
                    task.abort();
                }
                return Err(TransportError::Setup(format!(
                    "could not join the swarm within {connect_timeout:?}: no reservation on a bootstrap relay, or \
                     the record was not published"
                )));
            }
        };
        let inner = Inner { shared, local, listen, commands, control, inbox, tasks };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// This node's libp2p id (derived from the same key as its [`PeerId`]).
    pub fn libp2p_id(&self) -> libp2p::PeerId {
        self.inner.local
    }

    /// The addresses this node listens on, each ending in `/p2p/<libp2p id>`: a relay's are the bootstrap
    /// addresses members join with; a member's include its relayed address.
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.inner.listen.clone()
    }

    /// Accepts messages from `id` from now on (under [`AcceptPolicy::Listed`]).
    pub fn allow_peer(&self, id: PeerId) {
        if let Ok(mut allowed) = self.inner.shared.allowed.write() {
            allowed.insert(id);
        }
    }

    /// How this node's traffic with each peer it has connected to travelled.
    pub fn paths(&self) -> BTreeMap<PeerId, PeerPath> {
        self.inner.shared.paths.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// The most recent faults (up to 1024), oldest first.
    pub fn faults(&self) -> Vec<Fault> {
        self.inner.shared.traffic.faults()
    }

    /// Traffic counters.
    pub fn stats(&self) -> EndpointStats {
        self.inner.shared.traffic.stats()
    }

    /// Stops the endpoint: its connections close.
    pub async fn close(&self) {
        let _ = self.inner.commands.send(Command::Shutdown);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    /// A settled connection to `peer` (direct, or relayed once punching has settled): its libp2p id.
    async fn connect(&self, peer: PeerId) -> Result<libp2p::PeerId, TransportError> {
        let (reply, answer) = oneshot::channel();
        self.inner.commands.send(Command::Connect { peer, reply }).map_err(|_| TransportError::Closed)?;
        match answer.await {
            Ok(Ok(id)) => Ok(id),
            Ok(Err(reason)) => Err(TransportError::Connection { peer, reason }),
            Err(_) => Err(TransportError::Closed),
        }
    }

    /// Sends one frame to another peer: over a settled connection, on a stream of its own.
    async fn send_to_peer(
        &self,
        to: PeerId,
        header: [u8; FRAME_HEADER_LEN],
        payload: Bytes,
    ) -> Result<(), TransportError> {
        let deadline = Instant::now() + self.inner.shared.config.connect_timeout;
        let mut broken_once = false;
        loop {
            let id = self.connect(to).await?;
            match self.write_message(id, header, &payload).await {
                Ok(()) => return Ok(()),
                // The stream went to a connection that had just closed (one to the peer's previous
                // process, say) and sent nothing: try again until a live one takes it.
                Err(WriteFailure::NotOpened(_)) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                // The connection broke mid-message (the peer restarted, or idled out): once more.
                Err(WriteFailure::Broken(_)) if !broken_once => broken_once = true,
                Err(WriteFailure::NotOpened(reason) | WriteFailure::Broken(reason)) => {
                    return Err(TransportError::Connection { peer: to, reason });
                }
            }
        }
    }

    /// Writes one message on a stream of its own. A stream that could not be opened sent nothing.
    async fn write_message(
        &self,
        peer: libp2p::PeerId,
        header: [u8; FRAME_HEADER_LEN],
        payload: &[u8],
    ) -> Result<(), WriteFailure> {
        let mut stream = self
            .inner
            .control
            .clone()
            .open_stream(peer, MESSAGES)
            .await
            .map_err(|e| WriteFailure::NotOpened(e.to_string()))?;
        let broken = |e: std::io::Error| WriteFailure::Broken(e.to_string());
        stream.write_all(&header).await.map_err(broken)?;
        stream.write_all(payload).await.map_err(broken)?;
        stream.close().await.map_err(broken)
    }
}

fn build_swarm(keypair: libp2p::identity::Keypair, config: &Config) -> Result<Swarm<Behaviour>, TransportError> {
    let setup = |e: &dyn std::fmt::Display| TransportError::Setup(format!("libp2p: {e}"));
    let idle = config.idle_timeout;
    let handshake = config.connect_timeout;
    let (role, relay_only) = (config.role, config.relay_only);
    // Told to every peer (identify's agent version): a restarted process is a new incarnation.
    let incarnation: u64 = rand::random();
    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_quic_config(|mut quic| {
            quic.handshake_timeout = handshake;
            quic.max_idle_timeout = u32::try_from(idle.as_millis()).unwrap_or(u32::MAX);
            quic.keep_alive_interval = idle / 4;
            // Windows sized for bulk tensors on fast links, as on the plain QUIC endpoint.
            quic.max_stream_data = 16 << 20;
            quic.max_connection_data = 64 << 20;
            quic
        })
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|e| setup(&e))?
        .with_behaviour(|key, relay_client| {
            let id = key.public().to_peer_id();
            let mut kad_config = kad::Config::new(KADEMLIA);
            // Records never expire, and each node publishes its own again every minute: a relay that
            // restarted (and lost its table) knows everyone again a minute later.
            kad_config
                .set_record_ttl(None)
                .set_publication_interval(Some(REPUBLISH))
                .set_replication_interval(Some(REPUBLISH))
                .set_query_timeout(handshake);
            let mut kademlia = kad::Behaviour::with_config(id, kad::store::MemoryStore::new(id), kad_config);
            kademlia.set_mode(Some(if role == Role::Relay { kad::Mode::Server } else { kad::Mode::Client }));
            let relay_server = (role == Role::Relay).then(|| relay::Behaviour::new(id, swarm_relay_config()));
            Behaviour {
                relay_client,
                relay_server: relay_server.into(),
                dcutr: (!relay_only).then(|| dcutr::Behaviour::new(id)).into(),
                identify: identify::Behaviour::new(
                    identify::Config::new("/swarmlab/1".into(), key.public())
                        .with_agent_version(format!("swarmlab/{} {incarnation:016x}", env!("CARGO_PKG_VERSION"))),
                ),
                kademlia,
                messages: libp2p_stream::Behaviour::new(),
            }
        })
        .map_err(|e| setup(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(CONNECTION_LINGER))
        .build();
    Ok(swarm)
}

/// A relay for one swarm's nodes: no caps on circuits' bytes or time, nor on how often they are made (the
/// defaults suit a public relay serving strangers, and would cut a training run's tensors off).
fn swarm_relay_config() -> relay::Config {
    relay::Config {
        max_reservations: 4096,
        max_reservations_per_peer: 8,
        reservation_duration: Duration::from_secs(60 * 60),
        reservation_rate_limiters: Vec::new(),
        max_circuits: 4096,
        max_circuits_per_peer: 64,
        max_circuit_duration: Duration::from_secs(24 * 60 * 60),
        max_circuit_bytes: 0,
        circuit_src_rate_limiters: Vec::new(),
    }
}

/// One connection to a peer.
struct Link {
    relayed: bool,
    /// When it was made.
    at: Instant,
    /// The incarnation of the peer's process at the other end, once identify has told it.
    incarnation: Option<String>,
}

/// Connections to one libp2p peer.
#[derive(Default)]
struct Links {
    links: HashMap<ConnectionId, Link>,
    /// Hole punching may still upgrade a relayed connection until then.
    punch_until: Option<Instant>,
}

impl Links {
    /// Whether sends may go: every connection's other end is known (or took too long to say), and there
    /// is a direct connection, or a relayed one punching will not replace.
    fn settled(&self, now: Instant) -> bool {
        let known = self.links.values().all(|l| l.incarnation.is_some() || now >= l.at + IDENTIFY_WAIT);
        let relayed = self.links.values().any(|l| l.relayed);
        known && (self.has_direct() || (relayed && self.punch_until.is_none_or(|t| t <= now)))
    }

    fn any(&self) -> bool {
        !self.links.is_empty()
    }

    fn has_direct(&self) -> bool {
        self.links.values().any(|l| !l.relayed)
    }

    /// Takes out the connections `keep` says no to.
    fn take_unless(&mut self, keep: impl Fn(&Link) -> bool) -> Vec<ConnectionId> {
        let gone: Vec<ConnectionId> = self.links.iter().filter(|(_, l)| !keep(l)).map(|(id, _)| *id).collect();
        self.links.retain(|_, l| keep(l));
        gone
    }
}

/// A connection being made on behalf of sends.
struct Pending {
    deadline: Instant,
    waiters: Vec<Reply>,
    libp2p: Option<libp2p::PeerId>,
    /// Look the peer up (and dial) again then, unless connected by then: soon after a failure, a while
    /// after a lookup or dial that has not answered (a lost query must not stall the send).
    next_try: Instant,
    last_error: String,
}

/// Owns the libp2p swarm: joins, publishes, looks peers up, dials, and keeps track of each peer's links.
struct Driver {
    swarm: Swarm<Behaviour>,
    shared: Arc<Shared>,
    public_key: Vec<u8>,
    bootstrap: HashSet<libp2p::PeerId>,
    /// Fires once the node has joined, with its listen addresses.
    ready: Option<oneshot::Sender<Result<Vec<Multiaddr>, String>>>,
    listen: Vec<Multiaddr>,
    relayed_listen: Vec<Multiaddr>,
    publish: Option<QueryId>,
    publish_retry: Option<Instant>,
    lookups: HashMap<QueryId, PeerId>,
    pending: HashMap<PeerId, Pending>,
    links: HashMap<libp2p::PeerId, Links>,
    /// The libp2p id behind each swarmlab id seen so far.
    known: HashMap<PeerId, libp2p::PeerId>,
}

impl Driver {
    fn new(
        swarm: Swarm<Behaviour>,
        shared: Arc<Shared>,
        public_key: Vec<u8>,
        bootstrap: Vec<(libp2p::PeerId, Multiaddr)>,
        ready: oneshot::Sender<Result<Vec<Multiaddr>, String>>,
    ) -> Self {
        Self {
            swarm,
            shared,
            public_key,
            bootstrap: bootstrap.into_iter().map(|(id, _)| id).collect(),
            ready: Some(ready),
            listen: Vec::new(),
            relayed_listen: Vec::new(),
            publish: None,
            publish_retry: None,
            lookups: HashMap::new(),
            pending: HashMap::new(),
            links: HashMap::new(),
            known: HashMap::new(),
        }
    }

    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_event(event),
                command = commands.recv() => match command {
                    Some(Command::Connect { peer, reply }) => self.connect(peer, reply),
                    Some(Command::Shutdown) | None => return,
                },
                _ = tick.tick() => self.on_tick(),
            }
        }
    }

    fn local(&self) -> libp2p::PeerId {
        *self.swarm.local_peer_id()
    }

    /// Publishes this node's record once it listens (and, for a member, holds a relayed address).
    fn try_publish(&mut self) {
        let member = self.shared.config.role == Role::Member;
        if self.publish.is_some() || self.ready.is_none() || self.listen.is_empty() {
            return;
        }
        if member && self.relayed_listen.is_empty() {
            return;
        }
        let addrs: Vec<&Multiaddr> = if self.shared.config.relay_only {
            self.relayed_listen.iter().collect()
        } else {
            self.listen.iter().chain(&self.relayed_listen).collect()
        };
        let record =
            PeerRecord { public_key: self.public_key.clone(), addrs: addrs.iter().map(|a| a.to_vec()).collect() };
        let value = match self.shared.config.codec.encode(&record) {
            Ok(value) => value.to_vec(),
            Err(e) => return self.joined(Err(format!("cannot encode this node's record: {e}"))),
        };
        let record = Record::new(record_key(self.shared.traffic.id()), value);
        match self.swarm.behaviour_mut().kademlia.put_record(record, Quorum::One) {
            // A relay keeps the table: its own record is stored once it is in its store.
            Ok(_) if !member => self.joined(Ok(())),
            Ok(query) => self.publish = Some(query),
            Err(e) => self.joined(Err(format!("cannot store this node's record: {e}"))),
        }
    }

    fn joined(&mut self, result: Result<(), String>) {
        if let Some(ready) = self.ready.take() {
            let local = self.local();
            let with_id = |a: &Multiaddr| {
                if a.iter().last() == Some(Protocol::P2p(local)) {
                    a.clone()
                } else {
                    a.clone().with(Protocol::P2p(local))
                }
            };
            let listen = self.listen.iter().chain(&self.relayed_listen).map(with_id).collect();
            let _ = ready.send(result.map(|()| listen));
        }
    }

    fn connect(&mut self, peer: PeerId, reply: Reply) {
        let now = Instant::now();
        if let Some(id) = self.known.get(&peer)
            && self.links.get(id).is_some_and(|l| l.settled(now))
        {
            let _ = reply.send(Ok(*id));
            return;
        }
        if let Some(pending) = self.pending.get_mut(&peer) {
            pending.waiters.push(reply);
            return;
        }
        let deadline = now + self.shared.config.connect_timeout;
        let libp2p = self.known.get(&peer).copied();
        let next_try = now + RETRY_SILENT;
        let pending = Pending { deadline, waiters: vec![reply], libp2p, next_try, last_error: String::new() };
        self.pending.insert(peer, pending);
        if libp2p.is_none_or(|id| !self.links.get(&id).is_some_and(Links::any)) {
            self.look_up(peer);
        }
    }

    fn look_up(&mut self, peer: PeerId) {
        let query = self.swarm.behaviour_mut().kademlia.get_record(record_key(peer));
        self.lookups.insert(query, peer);
    }

    /// A record found for `peer`: check it, then dial every address in it.
    fn on_record(&mut self, peer: PeerId, record: &Record) -> Result<(), String> {
        let config = &self.shared.config;
        let (libp2p, addrs) = PeerRecord::read(peer, &record.value, config.codec, config.relay_only)?;
        self.known.insert(peer, libp2p);
        if let Some(pending) = self.pending.get_mut(&peer) {
            pending.libp2p = Some(libp2p);
        }
        if self.links.get(&libp2p).is_some_and(Links::any) {
            return Ok(());
        }
        debug!(local = %self.shared.traffic.id().short(), peer = %peer.short(), ?addrs, "dialling");
        let opts =
            DialOpts::peer_id(libp2p).addresses(addrs).condition(PeerCondition::DisconnectedAndNotDialing).build();
        match self.swarm.dial(opts) {
            // A dial (or a connection) is already under way: it will answer.
            Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => Ok(()),
            Err(e) => Err(format!("dial: {e}")),
        }
    }

    /// Connection `id` to `peer` leads to the process `incarnation`. A peer that restarted (a killed
    /// node's successor, with its key) is a new incarnation: its old connections lead nowhere until they
    /// idle out, and no message may go down them, so they are closed. (Both sides dialling at once make
    /// two connections to the same incarnation, and both stay.)
    fn identified(&mut self, peer: libp2p::PeerId, id: ConnectionId, incarnation: String) {
        let Some(links) = self.links.get_mut(&peer) else { return };
        let Some(link) = links.links.get_mut(&id) else { return };
        link.incarnation = Some(incarnation.clone());
        let stale = links.take_unless(|l| l.incarnation.as_ref().is_none_or(|i| *i == incarnation));
        for old in stale {
            debug!(%peer, "closing a connection to the peer's previous incarnation");
            self.swarm.close_connection(old);
        }
        self.answer_pending();
    }

    fn lookup_failed(&mut self, peer: PeerId, reason: String) {
        if let Some(pending) = self.pending.get_mut(&peer) {
            pending.last_error = reason;
            pending.next_try = Instant::now() + TICK;
        }
    }

    /// Answers every send waiting on a peer whose links have settled, or whose time is up.
    fn answer_pending(&mut self) {
        let now = Instant::now();
        let mut done = Vec::new();
        for (peer, pending) in &self.pending {
            let links = pending.libp2p.and_then(|id| self.links.get(&id));
            if links.is_some_and(|l| l.settled(now)) || (now >= pending.deadline && links.is_some_and(Links::any)) {
                done.push((*peer, pending.libp2p.ok_or_else(String::new)));
            } else if now >= pending.deadline {
                let reason = if pending.last_error.is_empty() { "no connection" } else { &pending.last_error };
                done.push((*peer, Err(format!("{reason} within {:?}", self.shared.config.connect_timeout))));
            }
        }
        for (peer, result) in done {
            if let Some(pending) = self.pending.remove(&peer) {
                for waiter in pending.waiters {
                    let _ = waiter.send(result.clone());
                }
            }
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let links = &self.links;
        let retry: Vec<PeerId> = self
            .pending
            .iter_mut()
            .filter(|(_, p)| p.next_try <= now && !p.libp2p.and_then(|id| links.get(&id)).is_some_and(Links::any))
            .map(|(peer, p)| {
                p.next_try = now + RETRY_SILENT;
                *peer
            })
            .collect();
        for peer in retry {
            self.look_up(peer);
        }
        if self.publish_retry.is_some_and(|t| t <= now) {
            self.publish_retry = None;
            self.try_publish();
        }
        self.answer_pending();
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                if address.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
                    self.relayed_listen.push(address);
                } else {
                    // A relay is reachable where it listens, by definition of its role; its reservations
                    // hand these addresses to the members that make them.
                    if self.shared.config.role == Role::Relay {
                        self.swarm.add_external_address(address.clone());
                    }
                    self.listen.push(address);
                }
                self.try_publish();
            }
            SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, .. } => {
                let relayed = endpoint.is_relayed();
                let now = Instant::now();
                let punching = relayed && !self.shared.config.relay_only;
                let links = self.links.entry(peer_id).or_default();
                links.links.insert(connection_id, Link { relayed, at: now, incarnation: None });
                if relayed {
                    if punching && !links.has_direct() {
                        links.punch_until = Some(now + PUNCH_WAIT);
                    }
                } else {
                    links.punch_until = None;
                    // Sends waited for a direct connection: no stream uses the relayed ones, which may go.
                    for relayed in links.take_unless(|l| !l.relayed) {
                        self.swarm.close_connection(relayed);
                    }
                }
                if let Some(peer) = swarmlab_id(&peer_id) {
                    self.known.insert(peer, peer_id);
                    if let Some(pending) = self.pending.get_mut(&peer) {
                        pending.libp2p = Some(peer_id);
                    }
                    self.shared
                        .update_path(peer, |path| if relayed { path.relayed = true } else { path.direct = true });
                }
                debug!(local = %self.shared.traffic.id().short(), peer = %peer_id, relayed, "connected");
                self.answer_pending();
            }
            SwarmEvent::ConnectionClosed { peer_id, connection_id, .. } => {
                if let Some(links) = self.links.get_mut(&peer_id) {
                    links.links.remove(&connection_id);
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id: Some(peer_id), error, .. } => {
                if let Some(peer) = swarmlab_id(&peer_id) {
                    self.lookup_failed(peer, format!("dial failed: {error}"));
                }
            }
            SwarmEvent::Behaviour(event) => self.on_behaviour(event),
            _ => {}
        }
    }

    fn on_behaviour(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Kademlia(kad::Event::OutboundQueryProgressed { id, result, .. }) => match result {
                QueryResult::GetRecord(found) => {
                    let Some(peer) = self.lookups.remove(&id) else { return };
                    let outcome = match found {
                        Ok(GetRecordOk::FoundRecord(found)) => self.on_record(peer, &found.record),
                        Ok(GetRecordOk::FinishedWithNoAdditionalRecord { .. }) => Err("no record".into()),
                        Err(e) => Err(format!("lookup: {e}")),
                    };
                    if let Some(mut query) = self.swarm.behaviour_mut().kademlia.query_mut(&id) {
                        query.finish();
                    }
                    match outcome {
                        // Already connected: the sends waiting on it may go now.
                        Ok(()) => self.answer_pending(),
                        Err(reason) => self.lookup_failed(peer, reason),
                    }
                }
                QueryResult::PutRecord(put) if self.publish == Some(id) => match put {
                    Ok(_) => {
                        info!(local = %self.shared.traffic.id().short(), "joined the swarm");
                        self.joined(Ok(()));
                    }
                    Err(e) => {
                        debug!("publishing this node's record: {e}; trying again");
                        self.publish = None;
                        self.publish_retry = Some(Instant::now() + TICK);
                    }
                },
                _ => {}
            },
            BehaviourEvent::Dcutr(dcutr::Event { remote_peer_id, result }) => {
                let now = Instant::now();
                let links = self.links.entry(remote_peer_id).or_default();
                links.punch_until = None;
                if let Some(peer) = swarmlab_id(&remote_peer_id) {
                    let ok = result.is_ok();
                    self.shared
                        .update_path(peer, |path| if ok { path.hole_punched = true } else { path.punch_failed = true });
                }
                debug!(peer = %remote_peer_id, ?result, settled = links.settled(now), "hole punching");
                self.answer_pending();
            }
            BehaviourEvent::RelayClient(relay::client::Event::ReservationReqAccepted { relay_peer_id, .. }) => {
                debug!(relay = %relay_peer_id, "reservation accepted");
            }
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, connection_id }) => {
                if self.bootstrap.contains(&peer_id) {
                    // What a relay we joined through sees of us: the address hole punching will try.
                    debug!(observed = %info.observed_addr, "observed by the relay");
                }
                self.identified(peer_id, connection_id, info.agent_version);
            }
            _ => {}
        }
    }
}

/// Why a message was not written.
enum WriteFailure {
    /// No stream could be opened: nothing was sent.
    NotOpened(String),
    /// The stream broke while the message was being written.
    Broken(String),
}

/// Serves every incoming message stream.
async fn accept_streams(mut incoming: libp2p_stream::IncomingStreams, shared: Arc<Shared>) {
    while let Some((peer, stream)) = incoming.next().await {
        tokio::spawn(read_stream(peer, stream, shared.clone()));
    }
}

async fn read_frame(stream: &mut libp2p::Stream, codec: Codec) -> Result<Bytes, FaultKind> {
    let broken = |e: std::io::Error| FaultKind::StreamBroken(e.to_string());
    let mut header = [0u8; FRAME_HEADER_LEN];
    let got = read_up_to(stream, &mut header).await.map_err(broken)?;
    if got < FRAME_HEADER_LEN {
        return Err(FaultKind::BadFrame(CodecError::Truncated { expected: FRAME_HEADER_LEN as u64, got: got as u64 }));
    }
    let len = codec.parse_header(header).map_err(FaultKind::BadFrame)?;
    let mut payload = vec![0u8; len];
    let got = read_up_to(stream, &mut payload).await.map_err(broken)?;
    if got < len {
        let (expected, got) = ((FRAME_HEADER_LEN + len) as u64, (FRAME_HEADER_LEN + got) as u64);
        return Err(FaultKind::BadFrame(CodecError::Truncated { expected, got }));
    }
    // One message per stream: anything after the frame is a protocol violation.
    let mut extra = [0u8; 1];
    match stream.read(&mut extra).await.map_err(broken)? {
        0 => Ok(Bytes::from(payload)),
        n => Err(FaultKind::BadFrame(CodecError::TrailingBytes { extra: n })),
    }
}

/// Reads until `buf` is full or the stream ends; how many bytes were read.
async fn read_up_to(stream: &mut libp2p::Stream, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match stream.read(&mut buf[filled..]).await? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

async fn read_stream(from: libp2p::PeerId, mut stream: libp2p::Stream, shared: Arc<Shared>) {
    let Some(peer) = swarmlab_id(&from) else {
        shared.traffic.fault(None, FaultKind::HandshakeRejected(format!("{from}: not an ed25519 identity")));
        return;
    };
    let listed = shared.allowed.read().map(|a| a.contains(&peer)).unwrap_or(false);
    if shared.config.accept == AcceptPolicy::Listed && !listed {
        shared.traffic.fault(Some(peer), FaultKind::HandshakeRejected(format!("{peer} is not in the peers file")));
        return;
    }
    match tokio::time::timeout(shared.config.stream_timeout, read_frame(&mut stream, shared.config.codec)).await {
        Ok(Ok(payload)) => {
            // An error here means the endpoint closed: the message has nowhere to go.
            let _ = shared.traffic.deliver(peer, payload).await;
        }
        Ok(Err(fault)) => shared.traffic.fault(Some(peer), fault),
        Err(_) => shared.traffic.fault(Some(peer), FaultKind::StreamTimeout),
    }
}

impl Transport for Endpoint {
    fn local_peer(&self) -> PeerId {
        self.inner.shared.traffic.id()
    }

    fn codec(&self) -> Codec {
        self.inner.shared.config.codec
    }

    async fn send(&self, to: PeerId, payload: Bytes) -> Result<(), TransportError> {
        let shared = &self.inner.shared;
        shared
            .traffic
            .send(to, payload, shared.config.codec, |header, payload| self.send_to_peer(to, header, payload))
            .await
    }

    async fn recv(&self) -> Result<Envelope, TransportError> {
        self.inner.inbox.recv().await
    }
}
