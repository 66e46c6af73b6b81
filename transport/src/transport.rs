//! The [`Transport`] trait: what every protocol needs from a network.

use std::future::Future;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::Codec;
use crate::error::TransportError;
use crate::identity::PeerId;
use crate::resident::{self, Attachment};

/// One received message and who sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// The authenticated sender.
    pub from: PeerId,
    /// The message payload (a frame's contents, without its header).
    pub payload: Bytes,
    /// The resident tensors the payload refers to (only from a peer in this process; see
    /// [`crate::resident`]). Decode the payload inside [`resident::provide`] with them.
    pub attachments: Vec<Attachment>,
}

impl Envelope {
    /// A message with no attachments.
    pub fn new(from: PeerId, payload: Bytes) -> Self {
        Self { from, payload, attachments: Vec::new() }
    }
}

/// Moves framed messages between peers.
///
/// Implementations: [`sim::SimEndpoint`](crate::sim::SimEndpoint) (in-process, virtual time),
/// [`quic::Endpoint`](crate::quic::Endpoint) (real network, peers dialled at known addresses) and
/// [`p2p::Endpoint`](crate::p2p::Endpoint) (real network, peers found through a relay, NAT traversed). All
/// are cheap to clone and can be used from many tasks at once. Delivery is at most once and, per pair of
/// peers, in order on the simulated network (both real ones send each message on its own stream, so
/// messages may overtake each other).
///
/// `recv` is cancellation-safe: if its future is dropped before completing, no message is lost.
pub trait Transport: Clone + Send + Sync + 'static {
    /// This endpoint's own id.
    fn local_peer(&self) -> PeerId;

    /// The codec (and so the frame limit) this transport uses.
    fn codec(&self) -> Codec;

    /// Sends `payload` to `to`. Returns once the message is handed to the network, not when it arrives.
    fn send(&self, to: PeerId, payload: Bytes) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Whether this transport's peers share this process, so that [`send_with`](Self::send_with) can
    /// hand them resident tensors (see [`crate::resident`]). Only the simulated network's do.
    fn carries_attachments(&self) -> bool {
        false
    }

    /// Sends `payload` with the resident tensors it refers to. A transport that does not
    /// [carry attachments](Self::carries_attachments) sends a payload without any, and refuses one with some.
    fn send_with(
        &self,
        to: PeerId,
        payload: Bytes,
        attachments: Vec<Attachment>,
    ) -> impl Future<Output = Result<(), TransportError>> + Send {
        async move {
            if attachments.is_empty() {
                self.send(to, payload).await
            } else {
                Err(TransportError::config(
                    "tensors",
                    "resident tensors only reach peers in this process; send their bytes instead",
                ))
            }
        }
    }

    /// The next message for this endpoint, waiting until one arrives.
    fn recv(&self) -> impl Future<Output = Result<Envelope, TransportError>> + Send;

    /// Sends the same payload to every peer in `to` (the payload's buffer is shared, not copied).
    /// Stops at the first error.
    fn broadcast(&self, to: &[PeerId], payload: Bytes) -> impl Future<Output = Result<(), TransportError>> + Send {
        async move {
            for &peer in to {
                self.send(peer, payload.clone()).await?;
            }
            Ok(())
        }
    }
}

/// Typed messages over any [`Transport`]: encode with the transport's [`Codec`] on send, decode on receive.
pub trait TransportExt: Transport {
    /// Encodes and sends a message.
    fn send_msg<M: Serialize + Sync>(
        &self,
        to: PeerId,
        message: &M,
    ) -> impl Future<Output = Result<(), TransportError>> + Send {
        let (payload, attachments) = resident::collect(|| self.codec().encode(message));
        async move { self.send_with(to, payload?, attachments).await }
    }

    /// Encodes once and sends to every peer in `to`.
    fn broadcast_msg<M: Serialize + Sync>(
        &self,
        to: &[PeerId],
        message: &M,
    ) -> impl Future<Output = Result<(), TransportError>> + Send {
        let (payload, attachments) = resident::collect(|| self.codec().encode(message));
        async move {
            if attachments.is_empty() {
                return self.broadcast(to, payload?).await;
            }
            let payload = payload?;
            for &peer in to {
                self.send_with(peer, payload.clone(), attachments.clone()).await?;
            }
            Ok(())
        }
    }

    /// Receives the next message and decodes it as an `M`. A message that does not decode is returned as
    /// [`TransportError::Decode`] naming its sender; the next call receives the next message.
    fn recv_msg<M: DeserializeOwned>(&self) -> impl Future<Output = Result<(PeerId, M), TransportError>> + Send {
        async move {
            let envelope = self.recv().await?;
            let message = resident::provide(envelope.attachments, || self.codec().decode(&envelope.payload))
                .map_err(|source| TransportError::Decode { from: envelope.from, source })?;
            Ok((envelope.from, message))
        }
    }
}

impl<T: Transport> TransportExt for T {}
