//! What a real-network endpoint keeps about its traffic, whatever stack carries it: the inbox `recv` reads,
//! the traffic counters and the faults it dealt with. Shared by [`quic::Endpoint`](crate::quic::Endpoint)
//! and [`p2p::Endpoint`](crate::p2p::Endpoint).

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::warn;

use crate::codec::{Codec, FRAME_HEADER_LEN};
use crate::error::{CodecError, TransportError};

use crate::identity::PeerId;
use crate::transport::Envelope;

/// How many recent faults an endpoint remembers.
const FAULT_HISTORY: usize = 1024;

/// Something that went wrong with incoming traffic and was dealt with (the endpoint kept serving).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    /// The remote peer, when known (a refused handshake may not have proven one).
    pub peer: Option<PeerId>,
    /// What happened.
    pub kind: FaultKind,
}

/// The kinds of [`Fault`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultKind {
    /// An incoming frame was oversized, truncated or had trailing bytes; its stream was stopped.
    BadFrame(CodecError),
    /// An incoming stream did not finish within the stream timeout.
    StreamTimeout,
    /// The sender reset the stream or the connection broke mid-message.
    StreamBroken(String),
    /// An incoming connection failed its handshake (e.g. an unlisted or impersonating peer).
    HandshakeRejected(String),
}

/// Traffic counters of an endpoint (payload bytes plus frame headers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Messages sent.
    pub sent_messages: u64,
    /// Bytes sent.
    pub sent_bytes: u64,
    /// Messages received and delivered to `recv`.
    pub received_messages: u64,
    /// Bytes received and delivered.
    pub received_bytes: u64,
    /// Faults recorded since start.
    pub faults: u64,
}

/// The inbox, counters and fault history of one endpoint, shared by its handles and background tasks.
pub(crate) struct Traffic {
    id: PeerId,
    inbox: mpsc::Sender<Envelope>,
    faults: Mutex<VecDeque<Fault>>,
    fault_count: AtomicU64,
    sent_messages: AtomicU64,
    sent_bytes: AtomicU64,
    received_messages: AtomicU64,
    received_bytes: AtomicU64,
}

impl Traffic {
    /// The traffic of endpoint `id`, and the receiving end of its inbox (`capacity` messages before
    /// senders are slowed down). The inbox belongs to the endpoint's handles, not to its background tasks:
    /// once the endpoint is dropped, what they still deliver fails instead of waiting for room.
    pub(crate) fn new(id: PeerId, capacity: usize) -> (Self, Inbox) {
        let (inbox, rx) = mpsc::channel(capacity);
        let traffic = Self {
            id,
            inbox,
            faults: Mutex::new(VecDeque::new()),
            fault_count: AtomicU64::new(0),
            sent_messages: AtomicU64::new(0),
            sent_bytes: AtomicU64::new(0),
            received_messages: AtomicU64::new(0),
            received_bytes: AtomicU64::new(0),
        };
        (traffic, Inbox(tokio::sync::Mutex::new(rx)))
    }

    /// The endpoint's own id.
    pub(crate) fn id(&self) -> PeerId {
        self.id
    }

    /// Records a fault (and logs it).
    pub(crate) fn fault(&self, peer: Option<PeerId>, kind: FaultKind) {
        warn!(local = %self.id.short(), peer = ?peer.map(|p| p.short()), ?kind, "incoming traffic fault");
        self.fault_count.fetch_add(1, Ordering::Relaxed);
        let mut faults = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        if faults.len() == FAULT_HISTORY {
            faults.pop_front();
        }
        faults.push_back(Fault { peer, kind });
    }

    /// Hands a received message to `recv` (waiting while the inbox is full) and counts it.
    pub(crate) async fn deliver(&self, from: PeerId, payload: Bytes) -> Result<(), TransportError> {
        let bytes = (payload.len() + FRAME_HEADER_LEN) as u64;
        self.inbox.send(Envelope::new(from, payload)).await.map_err(|_| TransportError::Closed)?;
        self.received_messages.fetch_add(1, Ordering::Relaxed);
        self.received_bytes.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    /// Sends `payload` to `to` as one frame of `codec`: into this endpoint's own inbox if `to` is this
    /// endpoint, else by `remote` (given the frame's header and the payload); counts it once sent.
    pub(crate) async fn send<Fut>(
        &self,
        to: PeerId,
        payload: Bytes,
        codec: Codec,
        remote: impl FnOnce([u8; FRAME_HEADER_LEN], Bytes) -> Fut,
    ) -> Result<(), TransportError>
    where
        Fut: Future<Output = Result<(), TransportError>>,
    {
        let header = codec.header(payload.len())?;
        let bytes = (payload.len() + FRAME_HEADER_LEN) as u64;
        if to == self.id {
            self.deliver(to, payload).await?;
        } else {
            remote(header, payload).await?;
        }
        self.sent_messages.fetch_add(1, Ordering::Relaxed);
        self.sent_bytes.fetch_add(bytes, Ordering::Relaxed);
        Ok(())
    }

    /// The most recent faults, oldest first.
    pub(crate) fn faults(&self) -> Vec<Fault> {
        self.faults.lock().map(|f| f.iter().cloned().collect()).unwrap_or_default()
    }

    /// The counters.
    pub(crate) fn stats(&self) -> EndpointStats {
        EndpointStats {
            sent_messages: self.sent_messages.load(Ordering::Relaxed),
            sent_bytes: self.sent_bytes.load(Ordering::Relaxed),
            received_messages: self.received_messages.load(Ordering::Relaxed),
            received_bytes: self.received_bytes.load(Ordering::Relaxed),
            faults: self.fault_count.load(Ordering::Relaxed),
        }
    }
}

/// The receiving end of an endpoint's inbox: what `recv` reads.
pub(crate) struct Inbox(tokio::sync::Mutex<mpsc::Receiver<Envelope>>);

impl Inbox {
    /// The next message, waiting until one arrives. Cancellation-safe: a dropped call loses nothing.
    pub(crate) async fn recv(&self) -> Result<Envelope, TransportError> {
        self.0.lock().await.recv().await.ok_or(TransportError::Closed)
    }
}
