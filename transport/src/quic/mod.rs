//! `quic::Endpoint`: the real-network [`Transport`], QUIC (quinn) with mutual TLS bound to peer ids.
//!
//! - **Identity.** Every endpoint presents a certificate made from its [`Identity`]; a dial succeeds only
//!   if the remote proves the dialled [`PeerId`], and an accept only if the remote proves an id in the
//!   [`PeerBook`] (unless the endpoint is configured to accept anyone). A certificate carries its node's
//!   own identity key, so proving the id means holding the key.
//! - **Connections** are made on first send and reused; either side's connection carries traffic both
//!   ways. A dead connection (peer restarted, idle timeout) is replaced on the next send, which retries once.
//!   The acceptor confirms every connection with an empty frame on its first stream, so a dialler whose
//!   certificate is refused learns it at once instead of sending into the void.
//! - **Messages** travel one per unidirectional stream, as a frame (length header + payload). A stream
//!   whose header claims more than the frame limit is stopped at once; a truncated, stalled or reset
//!   stream is dropped; each is recorded as a [`Fault`] and logged, and the endpoint keeps serving every
//!   other stream. Messages on different streams may overtake each other.

mod tls;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tracing::debug;

use crate::codec::{Codec, FRAME_HEADER_LEN};
use crate::error::{CodecError, TransportError};
use crate::identity::{Identity, PeerId};
use crate::peers::PeerBook;
pub use crate::traffic::{EndpointStats, Fault, FaultKind};
use crate::traffic::{Inbox, Traffic};
use crate::transport::{Envelope, Transport};

use tls::Credentials;

/// Application error code: a frame exceeded the receiver's limit.
pub const CODE_FRAME_TOO_LARGE: u32 = 1;
/// Application error code: a frame was malformed (truncated, trailing bytes).
pub const CODE_BAD_FRAME: u32 = 2;
/// Application error code: the stream stalled past the stream timeout.
pub const CODE_STREAM_TIMEOUT: u32 = 3;
/// Application error code: the endpoint is shutting down.
pub const CODE_SHUTDOWN: u32 = 4;

/// Who may connect to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AcceptPolicy {
    /// Only peers in the endpoint's [`PeerBook`] (the default).
    #[default]
    Listed,
    /// Any peer that proves some identity (it still cannot impersonate another id).
    Any,
}

/// Settings of a QUIC endpoint. `Default` gives sensible values; every duration must be positive.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// Local UDP address to bind (port 0 picks a free one).
    pub bind: SocketAddr,
    /// Frame limit and codec.
    pub codec: Codec,
    /// Who may connect.
    pub accept: AcceptPolicy,
    /// A connection with no traffic for this long is closed.
    pub idle_timeout: Duration,
    /// Keep-alive interval (must be below `idle_timeout`).
    pub keep_alive: Duration,
    /// Longest wait to establish a connection, handshake and confirmation included.
    pub connect_timeout: Duration,
    /// Longest time one incoming message may take from its stream opening to its end.
    pub stream_timeout: Duration,
    /// Messages received and not yet taken by `recv` before senders are slowed down (flow control).
    pub inbox_capacity: usize,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            codec: Codec::default(),
            accept: AcceptPolicy::Listed,
            idle_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            stream_timeout: Duration::from_secs(60),
            inbox_capacity: 4096,
        }
    }
}

impl EndpointConfig {
    fn validate(&self) -> Result<(), TransportError> {
        for (field, d) in [
            ("idle_timeout", self.idle_timeout),
            ("keep_alive", self.keep_alive),
            ("connect_timeout", self.connect_timeout),
            ("stream_timeout", self.stream_timeout),
        ] {
            if d.is_zero() {
                return Err(TransportError::config(format!("quic.{field}"), "must be positive"));
            }
        }
        if self.keep_alive >= self.idle_timeout {
            return Err(TransportError::config(
                "quic.keep_alive",
                format!("{:?} must be shorter than idle_timeout {:?}", self.keep_alive, self.idle_timeout),
            ));
        }
        if self.inbox_capacity == 0 {
            return Err(TransportError::config("quic.inbox_capacity", "must be at least 1"));
        }
        Ok(())
    }
}

/// State shared by the endpoint's handles and its background tasks.
struct Shared {
    config: EndpointConfig,
    traffic: Traffic,
}

type Slot = Arc<tokio::sync::Mutex<Option<quinn::Connection>>>;

struct Inner {
    shared: Arc<Shared>,
    endpoint: quinn::Endpoint,
    credentials: Credentials,
    book: RwLock<PeerBook>,
    allowed: Arc<RwLock<HashSet<PeerId>>>,
    slots: Arc<Mutex<HashMap<PeerId, Slot>>>,
    inbox: Inbox,
    transport_config: Arc<quinn::TransportConfig>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.endpoint.close(CODE_SHUTDOWN.into(), b"shutdown");
        self.accept_task.abort();
    }
}

/// A node's QUIC endpoint; implements [`Transport`]. Cheap to clone; closed when the last clone drops.
#[derive(Clone)]
pub struct Endpoint {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("quic::Endpoint")
            .field("id", &self.inner.shared.traffic.id())
            .field("addr", &self.local_addr().ok())
            .finish()
    }
}

impl Endpoint {
    /// Binds an endpoint for `identity` that knows the peers in `book`. Must run inside a tokio runtime.
    pub fn bind(identity: &Identity, book: PeerBook, config: EndpointConfig) -> Result<Self, TransportError> {
        config.validate()?;
        let credentials = Credentials::new(identity)?;
        let allowed: HashSet<PeerId> = book.ids().collect();
        let allowed = Arc::new(RwLock::new(allowed));
        let policy = match config.accept {
            AcceptPolicy::Listed => Some(allowed.clone()),
            AcceptPolicy::Any => None,
        };
        let transport_config = Arc::new(transport_config(&config)?);
        let server_tls = credentials.server_config(policy)?;
        let server_crypto = quinn::crypto::rustls::QuicServerConfig::try_from(server_tls)
            .map_err(|e| TransportError::Setup(format!("QUIC server TLS: {e}")))?;
        let mut server_config = quinn::ServerConfig::with_crypto(Arc::new(server_crypto));
        server_config.transport_config(transport_config.clone());
        let endpoint = quinn::Endpoint::server(server_config, config.bind)
            .map_err(|e| TransportError::Setup(format!("bind {}: {e}", config.bind)))?;

        let (traffic, rx) = Traffic::new(identity.peer_id(), config.inbox_capacity);
        let shared = Arc::new(Shared { config, traffic });
        let slots: Arc<Mutex<HashMap<PeerId, Slot>>> = Arc::default();
        let accept_task = tokio::spawn(accept_loop(endpoint.clone(), shared.clone(), Arc::downgrade(&slots)));
        let inner = Inner {
            shared,
            endpoint,
            credentials,
            book: RwLock::new(book),
            allowed,
            slots,
            inbox: rx,
            transport_config,
            accept_task,
        };
        Ok(Self { inner: Arc::new(inner) })
    }

    /// The UDP address the endpoint is bound to.
    pub fn local_addr(&self) -> Result<SocketAddr, TransportError> {
        self.inner.endpoint.local_addr().map_err(|e| TransportError::Setup(format!("local address: {e}")))
    }

    /// Adds (or moves) a peer: it may now be dialled and, under [`AcceptPolicy::Listed`], connect.
    pub fn add_peer(&self, id: PeerId, addr: SocketAddr, name: Option<String>) {
        if let Ok(mut book) = self.inner.book.write() {
            book.insert(id, addr, name);
        }
        if let Ok(mut allowed) = self.inner.allowed.write() {
            allowed.insert(id);
        }
    }

    /// A copy of the peers this endpoint knows.
    pub fn peer_book(&self) -> PeerBook {
        self.inner.book.read().map(|b| b.clone()).unwrap_or_default()
    }

    /// The most recent faults (up to 1024), oldest first.
    pub fn faults(&self) -> Vec<Fault> {
        self.inner.shared.traffic.faults()
    }

    /// Traffic counters.
    pub fn stats(&self) -> EndpointStats {
        self.inner.shared.traffic.stats()
    }

    /// Closes every connection and waits (briefly) for the peers to be told.
    pub async fn close(&self) {
        self.inner.endpoint.close(CODE_SHUTDOWN.into(), b"shutdown");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.inner.endpoint.wait_idle()).await;
    }

    fn slot(&self, peer: PeerId) -> Slot {
        let mut slots = self.inner.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.entry(peer).or_default().clone()
    }

    /// A live connection to `peer`: the cached one, or a new dial.
    async fn connection(&self, peer: PeerId) -> Result<quinn::Connection, TransportError> {
        let slot = self.slot(peer);
        let mut guard = slot.lock().await;
        if let Some(conn) = guard.as_ref()
            && conn.close_reason().is_none()
        {
            return Ok(conn.clone());
        }
        let conn = self.dial(peer).await?;
        *guard = Some(conn.clone());
        tokio::spawn(serve_connection(conn.clone(), peer, self.inner.shared.clone()));
        Ok(conn)
    }

    /// Sends one frame to another peer, over its connection (made if need be), on a stream of its own.
    async fn send_to_peer(
        &self,
        to: PeerId,
        header: [u8; FRAME_HEADER_LEN],
        payload: Bytes,
    ) -> Result<(), TransportError> {
        let mut attempt = 0;
        loop {
            let conn = self.connection(to).await?;
            match write_message(&conn, header, payload.clone()).await {
                Ok(()) => return Ok(()),
                // The cached connection died (the peer restarted, or idled out): redial once.
                Err(_) if attempt == 0 && conn.close_reason().is_some() => attempt += 1,
                Err(reason) => return Err(TransportError::Connection { peer: to, reason }),
            }
        }
    }

    async fn dial(&self, peer: PeerId) -> Result<quinn::Connection, TransportError> {
        let err = |reason: String| TransportError::Connection { peer, reason };
        let addr = {
            let book = self.inner.book.read().map_err(|_| err("peer book unavailable".into()))?;
            book.get(&peer).map(|e| e.addr).ok_or(TransportError::UnknownPeer(peer))?
        };
        let tls = self.inner.credentials.client_config(peer)?;
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| TransportError::Setup(format!("QUIC client TLS: {e}")))?;
        let mut client = quinn::ClientConfig::new(Arc::new(crypto));
        client.transport_config(self.inner.transport_config.clone());
        let timeout = self.inner.shared.config.connect_timeout;
        let connecting = self
            .inner
            .endpoint
            .connect_with(client, addr, tls::SERVER_NAME)
            .map_err(|e| err(format!("dial {addr}: {e}")))?;
        let establish = async {
            let conn = connecting.await.map_err(|e| err(format!("handshake with {addr}: {e}")))?;
            // The acceptor confirms with an empty frame once it has accepted our certificate.
            let mut confirm = conn.accept_uni().await.map_err(|e| err(format!("refused by {addr}: {e}")))?;
            let mut header = [0u8; FRAME_HEADER_LEN];
            confirm.read_exact(&mut header).await.map_err(|e| err(format!("confirmation from {addr}: {e}")))?;
            if header != [0u8; FRAME_HEADER_LEN] {
                return Err(err(format!("unexpected confirmation from {addr}")));
            }
            Ok(conn)
        };
        let conn = tokio::time::timeout(timeout, establish)
            .await
            .map_err(|_| err(format!("no connection to {addr} within {timeout:?}")))??;
        debug!(local = %self.inner.shared.traffic.id().short(), peer = %peer.short(), %addr, "connected");
        Ok(conn)
    }
}

fn transport_config(config: &EndpointConfig) -> Result<quinn::TransportConfig, TransportError> {
    let mut t = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(config.idle_timeout)
        .map_err(|_| TransportError::config("quic.idle_timeout", "too large"))?;
    t.max_idle_timeout(Some(idle));
    t.keep_alive_interval(Some(config.keep_alive));
    t.max_concurrent_uni_streams(1024u32.into());
    t.max_concurrent_bidi_streams(0u32.into());
    // Windows sized for bulk tensors on fast links.
    t.stream_receive_window((16u32 << 20).into());
    t.receive_window((64u32 << 20).into());
    t.send_window(64 << 20);
    Ok(t)
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    shared: Arc<Shared>,
    slots: std::sync::Weak<Mutex<HashMap<PeerId, Slot>>>,
) {
    while let Some(incoming) = endpoint.accept().await {
        let shared = shared.clone();
        let slots = slots.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match incoming.await {
                Ok(conn) => conn,
                Err(e) => {
                    shared.traffic.fault(None, FaultKind::HandshakeRejected(format!("{remote}: {e}")));
                    return;
                }
            };
            let peer = match connection_peer(&conn) {
                Ok(peer) => peer,
                Err(reason) => {
                    conn.close(CODE_BAD_FRAME.into(), b"no identity");
                    shared.traffic.fault(None, FaultKind::HandshakeRejected(format!("{remote}: {reason}")));
                    return;
                }
            };
            // Confirm the connection: an empty frame on our first stream.
            let confirmed = async {
                let mut s = conn.open_uni().await?;
                s.write_all(&[0u8; FRAME_HEADER_LEN]).await?;
                s.finish()?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
            };
            if let Err(e) = confirmed.await {
                shared.traffic.fault(Some(peer), FaultKind::StreamBroken(format!("confirmation: {e}")));
                return;
            }
            debug!(local = %shared.traffic.id().short(), peer = %peer.short(), %remote, "accepted");
            // Our own sends to the peer take the newest connection it opened: a peer that dials again
            // may have restarted (a killed node's successor, with its key), and the old connection then
            // leads nowhere until it idles out. A dial of ours under way finishes first.
            if let Some(slots) = slots.upgrade() {
                let slot = slots.lock().unwrap_or_else(|e| e.into_inner()).entry(peer).or_default().clone();
                *slot.lock().await = Some(conn.clone());
            }
            serve_connection(conn, peer, shared).await;
        });
    }
}

/// The peer id proven by a connection's TLS certificate.
fn connection_peer(conn: &quinn::Connection) -> Result<PeerId, String> {
    let identity = conn.peer_identity().ok_or("no peer certificate")?;
    let certs = identity
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .map_err(|_| "unexpected peer identity type")?;
    let cert = certs.first().ok_or("empty certificate chain")?;
    tls::peer_id_of(cert).map_err(|e| e.to_string())
}

/// Reads every incoming stream of a connection until it closes.
async fn serve_connection(conn: quinn::Connection, peer: PeerId, shared: Arc<Shared>) {
    loop {
        match conn.accept_uni().await {
            Ok(stream) => {
                tokio::spawn(read_stream(stream, peer, shared.clone()));
            }
            Err(e) => {
                debug!(local = %shared.traffic.id().short(), peer = %peer.short(), "connection ended: {e}");
                return;
            }
        }
    }
}

enum ReadFailure {
    Frame(CodecError),
    Broken(String),
}

async fn read_frame(stream: &mut quinn::RecvStream, codec: Codec) -> Result<Bytes, ReadFailure> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    stream.read_exact(&mut header).await.map_err(|e| match e {
        quinn::ReadExactError::FinishedEarly(got) => {
            ReadFailure::Frame(CodecError::Truncated { expected: FRAME_HEADER_LEN as u64, got: got as u64 })
        }
        quinn::ReadExactError::ReadError(e) => ReadFailure::Broken(e.to_string()),
    })?;
    let len = codec.parse_header(header).map_err(ReadFailure::Frame)?;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).await.map_err(|e| match e {
        quinn::ReadExactError::FinishedEarly(got) => ReadFailure::Frame(CodecError::Truncated {
            expected: (FRAME_HEADER_LEN + len) as u64,
            got: (FRAME_HEADER_LEN + got) as u64,
        }),
        quinn::ReadExactError::ReadError(e) => ReadFailure::Broken(e.to_string()),
    })?;
    // One message per stream: anything after the frame is a protocol violation.
    let mut extra = [0u8; 1];
    match stream.read(&mut extra).await {
        Ok(None) => Ok(Bytes::from(payload)),
        Ok(Some(n)) => Err(ReadFailure::Frame(CodecError::TrailingBytes { extra: n })),
        Err(e) => Err(ReadFailure::Broken(e.to_string())),
    }
}

async fn read_stream(mut stream: quinn::RecvStream, peer: PeerId, shared: Arc<Shared>) {
    let codec = shared.config.codec;
    match tokio::time::timeout(shared.config.stream_timeout, read_frame(&mut stream, codec)).await {
        Ok(Ok(payload)) => {
            // An error here means the endpoint closed: the message has nowhere to go.
            let _ = shared.traffic.deliver(peer, payload).await;
        }
        Ok(Err(ReadFailure::Frame(e))) => {
            let code =
                if matches!(e, CodecError::FrameTooLarge { .. }) { CODE_FRAME_TOO_LARGE } else { CODE_BAD_FRAME };
            let _ = stream.stop(code.into());
            shared.traffic.fault(Some(peer), FaultKind::BadFrame(e));
        }
        Ok(Err(ReadFailure::Broken(reason))) => shared.traffic.fault(Some(peer), FaultKind::StreamBroken(reason)),
        Err(_) => {
            let _ = stream.stop(CODE_STREAM_TIMEOUT.into());
            shared.traffic.fault(Some(peer), FaultKind::StreamTimeout);
        }
    }
}

async fn write_message(conn: &quinn::Connection, header: [u8; FRAME_HEADER_LEN], payload: Bytes) -> Result<(), String> {
    let mut stream = conn.open_uni().await.map_err(|e| e.to_string())?;
    stream.write_all(&header).await.map_err(|e| e.to_string())?;
    stream.write_chunk(payload).await.map_err(|e| e.to_string())?;
    stream.finish().map_err(|e| e.to_string())?;
    Ok(())
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

#[cfg(test)]
mod tests;
