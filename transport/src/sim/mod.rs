//! `sim::Network`: every peer in one process, time virtual, faults by seed.
//!
//! Run it on a current-thread tokio runtime with the clock paused (`#[tokio::test(start_paused = true)]`,
//! or `Builder::new_current_thread().start_paused(true)`). The network keeps its own virtual clock
//! ([`SimClock`], nanosecond-exact; tokio's timer wheel only has millisecond resolution) and one event
//! queue of deliveries and sleeps ordered by (time, sequence number). Its driver task waits until every
//! task of the runtime is idle — which the paused tokio clock detects for us — then jumps the clock to the
//! next event and fires every event due at that instant. So waiting costs no wall-clock time, and a
//! message of `B` bytes sent over a link arrives `queueing + B / bandwidth + latency + jitter` later in
//! virtual time (see [`LinkSpec`]). Agents that model compute time sleep on the [`SimClock`], not on tokio.
//!
//! Everything random (jitter, loss) comes from one ChaCha8 generator seeded by the network's seed. So for a
//! given seed and a deterministic program, the delivery trace — who received what, when — is the same on
//! every run and every machine.
//!
//! Fault model, and what each fault does to a message (never a hang):
//! - **loss** (per link): the message occupies the link, then vanishes; counted in
//!   [`LinkStats::lost_messages`].
//! - **partition** between two sets of peers: messages across it are dropped when sent
//!   ([`LinkStats::partitioned_messages`]).
//! - **crash** of a peer: its queued messages are discarded, messages in flight to it are dropped on
//!   arrival ([`LinkStats::crashed_messages`]), and every handle it had fails with
//!   [`TransportError::PeerDown`]. [`Network::rejoin`] brings it back with a fresh handle and an empty inbox.
//! - **slow peer**: every link touching it is `factor` times slower (latency times, bandwidth divided).
//! - sending to a peer the network does not know is an error ([`TransportError::UnknownPeer`]).

mod link;

pub use link::{LATENCY_MS, LinkSpec, MBIT_PER_S, RegionTable};

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::{Notify, oneshot};

use crate::codec::{Codec, FRAME_HEADER_LEN};
use crate::error::TransportError;
use crate::fxhash::FastMap;
use crate::identity::PeerId;
use crate::resident::{self, Attachment};
use crate::transport::{Envelope, Transport};

/// Counters for one direction of one link. Bytes include the frame header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// Messages handed to the link.
    pub sent_messages: u64,
    /// Bytes handed to the link.
    pub sent_bytes: u64,
    /// Of `sent_bytes`, those of resident tensors: counted as if encoded, but handed over on their
    /// device (see [`crate::resident`]).
    pub resident_bytes: u64,
    /// Messages that reached the receiver's inbox.
    pub delivered_messages: u64,
    /// Bytes that reached the receiver's inbox.
    pub delivered_bytes: u64,
    /// Messages lost to the link's loss rate.
    pub lost_messages: u64,
    /// Messages dropped because a partition separated the peers.
    pub partitioned_messages: u64,
    /// Messages dropped because the receiver had crashed.
    pub crashed_messages: u64,
}

impl LinkStats {
    fn add(&mut self, other: &Self) {
        self.sent_messages += other.sent_messages;
        self.sent_bytes += other.sent_bytes;
        self.resident_bytes += other.resident_bytes;
        self.delivered_messages += other.delivered_messages;
        self.delivered_bytes += other.delivered_bytes;
        self.lost_messages += other.lost_messages;
        self.partitioned_messages += other.partitioned_messages;
        self.crashed_messages += other.crashed_messages;
    }
}

/// One delivery, as recorded in the trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// Virtual time of arrival.
    pub at: Duration,
    /// Send sequence number (network-wide).
    pub seq: u64,
    /// Sender.
    pub from: PeerId,
    /// Receiver.
    pub to: PeerId,
    /// Bytes on the wire, header included.
    pub bytes: u64,
}

/// Builds a [`Network`].
#[derive(Debug, Clone)]
pub struct NetworkBuilder {
    seed: u64,
    default_link: LinkSpec,
    regions: Option<RegionTable>,
    overrides: HashMap<(PeerId, PeerId), LinkSpec>,
    codec: Codec,
    trace: bool,
}

impl NetworkBuilder {
    /// The link used where nothing more specific is set.
    pub fn default_link(mut self, spec: LinkSpec) -> Self {
        self.default_link = spec;
        self
    }

    /// Inter-region links; peers added with [`Network::add_peer_in_region`] use them.
    pub fn regions(mut self, table: RegionTable) -> Self {
        self.regions = Some(table);
        self
    }

    /// The link between `a` and `b`, both directions, overriding regions and the default.
    pub fn link(mut self, a: PeerId, b: PeerId, spec: LinkSpec) -> Self {
        self.overrides.insert((a, b), spec);
        self.overrides.insert((b, a), spec);
        self
    }

    /// The link from `from` to `to` only.
    pub fn directed_link(mut self, from: PeerId, to: PeerId, spec: LinkSpec) -> Self {
        self.overrides.insert((from, to), spec);
        self
    }

    /// The codec (frame limit) of every endpoint.
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// Records every delivery for [`Network::trace`] (off by default: it grows with the run).
    pub fn record_trace(mut self, on: bool) -> Self {
        self.trace = on;
        self
    }

    /// Builds the network and starts its driver task on the current tokio runtime.
    pub fn build(self) -> Result<Network, TransportError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| TransportError::Setup("sim::Network must be built inside a tokio runtime".into()))?;
        self.default_link.validate("links.default")?;
        for ((a, b), spec) in &self.overrides {
            spec.validate(&format!("links[{}->{}]", a.short(), b.short()))?;
        }
        let wake = Arc::new(Notify::new());
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                rng: ChaCha8Rng::seed_from_u64(self.seed),
                now: Duration::ZERO,
                seq: 0,
                peers: Vec::new(),
                index: FastMap::default(),
                links: FastMap::default(),
                overrides: self.overrides,
                default_link: self.default_link,
                regions: self.regions,
                partitions: BTreeMap::new(),
                next_partition: 0,
                events: BinaryHeap::new(),
                in_flight: 0,
                trace: self.trace.then(Vec::new),
            }),
            driver: wake.clone(),
            codec: self.codec,
        });
        runtime.spawn(drive(Arc::downgrade(&shared), wake));
        Ok(Network { shared })
    }
}

/// The simulated network. Cheap to clone; every clone controls the same network.
#[derive(Clone)]
pub struct Network {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.shared.lock();
        f.debug_struct("Network")
            .field("now", &inner.now)
            .field("peers", &inner.peers.len())
            .field("in_flight", &inner.in_flight)
            .finish()
    }
}

/// Identifies a partition, to heal it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionId(u64);

struct Shared {
    inner: Mutex<Inner>,
    driver: Arc<Notify>,
    codec: Codec,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing in `Inner` can be left inconsistent by a panicking holder in a way that matters more
        // than the panic itself: keep serving the other peers rather than poisoning all of them.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds an event and wakes the driver if it became the earliest.
    fn schedule(&self, inner: &mut Inner, at: Duration, kind: EventKind) {
        let seq = inner.seq;
        inner.seq += 1;
        let head = inner.events.peek().is_none_or(|e| at < e.at);
        inner.events.push(Event { at, seq, kind });
        if head {
            self.driver.notify_one();
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.driver.notify_one();
    }
}

struct PeerSlot {
    id: PeerId,
    alive: bool,
    epoch: u64,
    region: Option<usize>,
    slowdown: f64,
    egress: Option<f64>,
    egress_free_at: Duration,
    inbox: VecDeque<Envelope>,
    notify: Arc<Notify>,
}

#[derive(Default)]
struct LinkState {
    free_at: Duration,
    last_arrival: Duration,
    stats: LinkStats,
}

struct Message {
    from: usize,
    to: usize,
    epoch: u64,
    payload: Bytes,
    attachments: Vec<Attachment>,
}

impl Message {
    /// The bytes the link carries: the frame, resident tensors counted as if encoded in it.
    fn wire_bytes(&self) -> u64 {
        (self.payload.len() + FRAME_HEADER_LEN) as u64 + resident::wire_bytes(&self.attachments)
    }
}

enum EventKind {
    Deliver(Message),
    Wake(oneshot::Sender<()>),
}

struct Event {
    at: Duration,
    seq: u64,
    kind: EventKind,
}

impl PartialEq for Event {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Event {
    /// Reversed, so that `BinaryHeap` pops the earliest (time, seq) first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

struct Inner {
    rng: ChaCha8Rng,
    now: Duration,
    seq: u64,
    peers: Vec<PeerSlot>,
    index: FastMap<PeerId, usize>,
    links: FastMap<(usize, usize), LinkState>,
    overrides: HashMap<(PeerId, PeerId), LinkSpec>,
    default_link: LinkSpec,
    regions: Option<RegionTable>,
    partitions: BTreeMap<PartitionId, (HashSet<PeerId>, HashSet<PeerId>)>,
    next_partition: u64,
    events: BinaryHeap<Event>,
    in_flight: usize,
    trace: Option<Vec<Delivery>>,
}

impl Inner {
    fn slot(&self, id: PeerId) -> Result<usize, TransportError> {
        self.index.get(&id).copied().ok_or(TransportError::UnknownPeer(id))
    }

    fn link_spec(&self, from: usize, to: usize) -> LinkSpec {
        let (from, to) = (&self.peers[from], &self.peers[to]);
        let explicit = if self.overrides.is_empty() { None } else { self.overrides.get(&(from.id, to.id)).copied() };
        let base = explicit.or_else(|| {
            let table = self.regions.as_ref()?;
            table.link(from.region?, to.region?)
        });
        base.unwrap_or(self.default_link).slowed(from.slowdown * to.slowdown)
    }

    fn partitioned(&self, from: PeerId, to: PeerId) -> bool {
        !self.partitions.is_empty()
            && self
                .partitions
                .values()
                .any(|(x, y)| (x.contains(&from) && y.contains(&to)) || (y.contains(&from) && x.contains(&to)))
    }

    fn check_handle(&self, slot: usize, epoch: u64) -> Result<&PeerSlot, TransportError> {
        let peer = &self.peers[slot];
        if peer.alive && peer.epoch == epoch { Ok(peer) } else { Err(TransportError::PeerDown(peer.id)) }
    }

    fn stats_by_id(&self) -> impl Iterator<Item = ((PeerId, PeerId), LinkStats)> + '_ {
        self.links.iter().map(|(&(f, t), l)| ((self.peers[f].id, self.peers[t].id), l.stats))
    }

    /// Advances the clock to the earliest event and fires every event due then. False if none is queued.
    fn step(&mut self) -> bool {
        let Some(at) = self.events.peek().map(|e| e.at) else { return false };
        self.now = self.now.max(at);
        while self.events.peek().is_some_and(|e| e.at <= self.now) {
            let Some(event) = self.events.pop() else { break };
            match event.kind {
                EventKind::Wake(tx) => {
                    // A sleeper that was cancelled has dropped its receiver: nothing to wake.
                    let _ = tx.send(());
                }
                EventKind::Deliver(m) => self.deliver(event.at, event.seq, m),
            }
        }
        true
    }

    fn deliver(&mut self, at: Duration, seq: u64, m: Message) {
        self.in_flight -= 1;
        let bytes = m.wire_bytes();
        let (from, to) = (m.from, m.to);
        let from_id = self.peers[from].id;
        let slot = &mut self.peers[to];
        let delivered = slot.alive && slot.epoch == m.epoch;
        if delivered {
            slot.inbox.push_back(Envelope { from: from_id, payload: m.payload, attachments: m.attachments });
            slot.notify.notify_waiters();
        }
        let to_id = slot.id;
        let stats = &mut self.links.entry((from, to)).or_default().stats;
        if delivered {
            stats.delivered_messages += 1;
            stats.delivered_bytes += bytes;
            if let Some(trace) = &mut self.trace {
                trace.push(Delivery { at, seq, from: from_id, to: to_id, bytes });
            }
        } else {
            stats.crashed_messages += 1;
        }
    }
}

/// The driver: whenever the whole runtime is idle, jump to the next event and fire it.
async fn drive(shared: Weak<Shared>, wake: Arc<Notify>) {
    loop {
        // With the clock paused, a timer only fires once every other task is waiting: this is the
        // "all quiet" signal. The 1 ns becomes one tick of tokio's own clock, which nothing here reads.
        tokio::time::sleep(Duration::from_nanos(1)).await;
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let stepped = {
            let Some(shared) = shared.upgrade() else { return };
            let mut inner = shared.lock();
            inner.step()
        };
        if !stepped {
            notified.await;
        }
    }
}

impl Network {
    /// Starts building a network whose randomness comes from `seed`.
    pub fn builder(seed: u64) -> NetworkBuilder {
        NetworkBuilder {
            seed,
            default_link: LinkSpec::default(),
            regions: None,
            overrides: HashMap::new(),
            codec: Codec::default(),
            trace: false,
        }
    }

    /// Adds a peer (using the default link) and returns its endpoint.
    pub fn add_peer(&self, id: PeerId) -> Result<SimEndpoint, TransportError> {
        self.insert_peer(id, None)
    }

    /// Adds a peer located in `region` of the network's [`RegionTable`].
    pub fn add_peer_in_region(&self, id: PeerId, region: &str) -> Result<SimEndpoint, TransportError> {
        let index = {
            let inner = self.shared.lock();
            let table = inner
                .regions
                .as_ref()
                .ok_or_else(|| TransportError::config("region", "this network has no region table"))?;
            table.index(region)?
        };
        self.insert_peer(id, Some(index))
    }

    fn insert_peer(&self, id: PeerId, region: Option<usize>) -> Result<SimEndpoint, TransportError> {
        let mut inner = self.shared.lock();
        if inner.index.contains_key(&id) {
            return Err(TransportError::config("peer", format!("peer {id} is already on the network")));
        }
        let now = inner.now;
        let slot = inner.peers.len();
        inner.index.insert(id, slot);
        inner.peers.push(PeerSlot {
            id,
            alive: true,
            epoch: 0,
            region,
            slowdown: 1.0,
            egress: None,
            egress_free_at: now,
            inbox: VecDeque::new(),
            notify: Arc::new(Notify::new()),
        });
        Ok(SimEndpoint { shared: self.shared.clone(), id, slot, epoch: 0 })
    }

    /// The network's virtual clock.
    pub fn clock(&self) -> SimClock {
        SimClock { shared: self.shared.clone() }
    }

    /// Virtual time since the network was built.
    pub fn now(&self) -> Duration {
        self.shared.lock().now
    }

    /// The ids of all peers, alive or not, in order.
    pub fn peers(&self) -> Vec<PeerId> {
        let mut ids: Vec<_> = self.shared.lock().peers.iter().map(|p| p.id).collect();
        ids.sort();
        ids
    }

    /// Whether `peer` is on the network and alive.
    pub fn is_alive(&self, peer: PeerId) -> bool {
        let inner = self.shared.lock();
        inner.slot(peer).is_ok_and(|i| inner.peers[i].alive)
    }

    /// Sets the link between `a` and `b` (both directions) from now on.
    pub fn set_link(&self, a: PeerId, b: PeerId, spec: LinkSpec) -> Result<(), TransportError> {
        spec.validate("link")?;
        let mut inner = self.shared.lock();
        inner.overrides.insert((a, b), spec);
        inner.overrides.insert((b, a), spec);
        Ok(())
    }

    /// The link currently used from `from` to `to` (slowdowns applied).
    pub fn link_spec(&self, from: PeerId, to: PeerId) -> Result<LinkSpec, TransportError> {
        let inner = self.shared.lock();
        let (a, b) = (inner.slot(from)?, inner.slot(to)?);
        Ok(inner.link_spec(a, b))
    }

    /// Limits how fast `peer` can send in total, over all its links (`None`: only the links limit it).
    pub fn set_egress(&self, peer: PeerId, bytes_per_s: Option<f64>) -> Result<(), TransportError> {
        if let Some(b) = bytes_per_s
            && !(b.is_finite() && b > 0.0)
        {
            return Err(TransportError::config("egress", format!("{b} is not a positive bandwidth")));
        }
        let mut inner = self.shared.lock();
        let slot = inner.slot(peer)?;
        inner.peers[slot].egress = bytes_per_s;
        Ok(())
    }

    /// Makes every link touching `peer` `factor` times slower (1.0 restores it).
    pub fn slow_down(&self, peer: PeerId, factor: f64) -> Result<(), TransportError> {
        if !(factor.is_finite() && factor > 0.0) {
            return Err(TransportError::config("slowdown", format!("{factor} is not a positive factor")));
        }
        let mut inner = self.shared.lock();
        let slot = inner.slot(peer)?;
        inner.peers[slot].slowdown = factor;
        Ok(())
    }

    /// Cuts every link between a peer in `a` and a peer in `b` until [`Network::heal`].
    pub fn partition(&self, a: &[PeerId], b: &[PeerId]) -> PartitionId {
        let mut inner = self.shared.lock();
        let id = PartitionId(inner.next_partition);
        inner.next_partition += 1;
        inner.partitions.insert(id, (a.iter().copied().collect(), b.iter().copied().collect()));
        id
    }

    /// Removes a partition. Healing one that is already healed does nothing.
    pub fn heal(&self, partition: PartitionId) {
        self.shared.lock().partitions.remove(&partition);
    }

    /// Removes every partition.
    pub fn heal_all(&self) {
        self.shared.lock().partitions.clear();
    }

    /// Crashes `peer`: its inbox is lost, messages in flight to it will be dropped, its handles fail.
    /// Crashing a crashed peer does nothing.
    pub fn crash(&self, peer: PeerId) -> Result<(), TransportError> {
        let mut inner = self.shared.lock();
        let index = inner.slot(peer)?;
        let slot = &mut inner.peers[index];
        if !slot.alive {
            return Ok(());
        }
        slot.alive = false;
        slot.epoch += 1;
        let lost: Vec<PeerId> = slot.inbox.drain(..).map(|e| e.from).collect();
        slot.notify.notify_waiters();
        for from in lost {
            if let Ok(from) = inner.slot(from) {
                inner.links.entry((from, index)).or_default().stats.crashed_messages += 1;
            }
        }
        Ok(())
    }

    /// Brings a crashed peer back with an empty inbox, returning its new endpoint.
    pub fn rejoin(&self, peer: PeerId) -> Result<SimEndpoint, TransportError> {
        let mut inner = self.shared.lock();
        let now = inner.now;
        let index = inner.slot(peer)?;
        let slot = &mut inner.peers[index];
        if slot.alive {
            return Err(TransportError::config("rejoin", format!("peer {peer} has not crashed")));
        }
        slot.alive = true;
        slot.egress_free_at = now;
        Ok(SimEndpoint { shared: self.shared.clone(), id: peer, slot: index, epoch: slot.epoch })
    }

    /// Counters of the link from `from` to `to`.
    pub fn link_stats(&self, from: PeerId, to: PeerId) -> LinkStats {
        let inner = self.shared.lock();
        let (Ok(f), Ok(t)) = (inner.slot(from), inner.slot(to)) else { return LinkStats::default() };
        inner.links.get(&(f, t)).map(|l| l.stats).unwrap_or_default()
    }

    /// Counters of every link that carried traffic, keyed by (from, to).
    pub fn stats(&self) -> BTreeMap<(PeerId, PeerId), LinkStats> {
        self.shared.lock().stats_by_id().collect()
    }

    /// Totals over every link out of `peer`.
    pub fn sent_by(&self, peer: PeerId) -> LinkStats {
        let inner = self.shared.lock();
        let mut total = LinkStats::default();
        for ((from, _), stats) in inner.stats_by_id() {
            if from == peer {
                total.add(&stats);
            }
        }
        total
    }

    /// Totals over every link.
    pub fn total(&self) -> LinkStats {
        let inner = self.shared.lock();
        let mut total = LinkStats::default();
        for link in inner.links.values() {
            total.add(&link.stats);
        }
        total
    }

    /// Messages sent and not yet delivered or dropped.
    pub fn in_flight(&self) -> usize {
        self.shared.lock().in_flight
    }

    /// Every delivery so far, in delivery order (empty unless built with [`NetworkBuilder::record_trace`]).
    pub fn trace(&self) -> Vec<Delivery> {
        self.shared.lock().trace.clone().unwrap_or_default()
    }
}

/// The simulated network's virtual clock. Cheap to clone.
///
/// Agents model compute and wait on timeouts through it; the network's driver advances it.
#[derive(Clone)]
pub struct SimClock {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SimClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SimClock({:?})", self.now())
    }
}

/// A [`SimClock::timeout`] ran out before its future completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("timed out after {0:?} of virtual time")]
pub struct Elapsed(pub Duration);

impl SimClock {
    /// Virtual time since the network was built.
    pub fn now(&self) -> Duration {
        self.shared.lock().now
    }

    /// Waits `duration` of virtual time. Cancellation-safe.
    pub async fn sleep(&self, duration: Duration) {
        let at = self.now() + duration;
        self.sleep_until(at).await;
    }

    /// Waits until the virtual clock reads `at` (returns at once if it already does).
    pub async fn sleep_until(&self, at: Duration) {
        let rx = {
            let mut inner = self.shared.lock();
            if at <= inner.now {
                return;
            }
            let (tx, rx) = oneshot::channel();
            self.shared.schedule(&mut inner, at, EventKind::Wake(tx));
            rx
        };
        // The sender lives in the event queue until the event fires; it is only dropped unfired if the
        // network itself is gone, in which case there is nothing left to wait for.
        let _ = rx.await;
    }

    /// Runs `future` for at most `duration` of virtual time.
    pub async fn timeout<F: Future>(&self, duration: Duration, future: F) -> Result<F::Output, Elapsed> {
        tokio::select! {
            biased;
            out = future => Ok(out),
            () = self.sleep(duration) => Err(Elapsed(duration)),
        }
    }
}

/// One peer's handle on the simulated network; implements [`Transport`]. Cheap to clone.
///
/// A handle belongs to one life of its peer: after [`Network::crash`] it fails forever with
/// [`TransportError::PeerDown`], and [`Network::rejoin`] hands out a new one.
#[derive(Clone)]
pub struct SimEndpoint {
    shared: Arc<Shared>,
    id: PeerId,
    slot: usize,
    epoch: u64,
}

impl std::fmt::Debug for SimEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimEndpoint").field("id", &self.id).field("epoch", &self.epoch).finish()
    }
}

impl SimEndpoint {
    /// The network this endpoint is on.
    pub fn network(&self) -> Network {
        Network { shared: self.shared.clone() }
    }

    /// The network's virtual clock.
    pub fn clock(&self) -> SimClock {
        SimClock { shared: self.shared.clone() }
    }

    /// Queues `payload` (with the resident tensors it refers to) on the link to `to`: see the module docs
    /// for the timing and fault rules. Resident tensors count as the bytes they would add to the payload.
    fn enqueue(&self, to: PeerId, payload: Bytes, attachments: Vec<Attachment>) -> Result<(), TransportError> {
        let extra = resident::wire_bytes(&attachments);
        self.shared.codec.check_len(payload.len() as u64 + extra)?;
        let bytes = payload.len() + FRAME_HEADER_LEN + extra as usize;
        let mut guard = self.shared.lock();
        let inner = &mut *guard;
        let (from, from_epoch) = (self.slot, self.epoch);
        let sender = inner.check_handle(from, from_epoch)?;
        let (egress, egress_free_at) = (sender.egress, sender.egress_free_at);
        let to_slot = inner.slot(to)?;
        let to_epoch = inner.peers[to_slot].epoch;
        let spec = inner.link_spec(from, to_slot);
        let partitioned = inner.partitioned(self.id, to);
        let now = inner.now;
        let lost = spec.loss > 0.0 && inner.rng.random::<f64>() < spec.loss;
        let jitter = if spec.jitter > Duration::ZERO && !partitioned {
            spec.jitter.mul_f64(inner.rng.random::<f64>())
        } else {
            Duration::ZERO
        };

        let link = inner.links.entry((from, to_slot)).or_default();
        link.stats.sent_messages += 1;
        link.stats.sent_bytes += bytes as u64;
        link.stats.resident_bytes += extra;
        if partitioned {
            link.stats.partitioned_messages += 1;
            return Ok(());
        }
        // Transmission starts once the link and the sender's egress are both free.
        let start = now.max(link.free_at).max(egress_free_at);
        let mut done = start + spec.transfer_time(bytes);
        if let Some(rate) = egress {
            done = done.max(start + Duration::from_secs_f64(bytes as f64 / rate));
        }
        link.free_at = done;
        if lost {
            link.stats.lost_messages += 1;
        } else {
            // Per link, messages arrive in the order they were sent, even with jitter.
            let arrival = (done + spec.latency + jitter).max(link.last_arrival);
            link.last_arrival = arrival;
            inner.in_flight += 1;
            let message = Message { from, to: to_slot, epoch: to_epoch, payload, attachments };
            self.shared.schedule(inner, arrival, EventKind::Deliver(message));
        }
        if egress.is_some() {
            inner.peers[from].egress_free_at = done;
        }
        Ok(())
    }

    /// Takes the next message if one is waiting, without waiting.
    pub fn try_recv(&self) -> Result<Option<Envelope>, TransportError> {
        let mut inner = self.shared.lock();
        inner.check_handle(self.slot, self.epoch)?;
        Ok(inner.peers[self.slot].inbox.pop_front())
    }

    /// Messages waiting in this peer's inbox.
    pub fn pending(&self) -> usize {
        self.shared.lock().peers[self.slot].inbox.len()
    }
}

impl Transport for SimEndpoint {
    fn local_peer(&self) -> PeerId {
        self.id
    }

    fn codec(&self) -> Codec {
        self.shared.codec
    }

    async fn send(&self, to: PeerId, payload: Bytes) -> Result<(), TransportError> {
        self.enqueue(to, payload, Vec::new())
    }

    fn carries_attachments(&self) -> bool {
        true
    }

    async fn send_with(&self, to: PeerId, payload: Bytes, attachments: Vec<Attachment>) -> Result<(), TransportError> {
        self.enqueue(to, payload, attachments)
    }

    async fn recv(&self) -> Result<Envelope, TransportError> {
        let notify = {
            let inner = self.shared.lock();
            inner.check_handle(self.slot, self.epoch)?.notify.clone()
        };
        loop {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(envelope) = self.try_recv()? {
                return Ok(envelope);
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests;
