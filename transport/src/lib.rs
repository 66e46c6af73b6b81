//! # swarmlab transport
//!
//! Peers and bytes: the layer every swarmlab protocol sends through.
//!
//! | module | what it holds |
//! |---|---|
//! | [`identity`] | [`PeerId`] (SHA-256 of an ed25519 public key) and [`Identity`] key files |
//! | [`codec`] | length-prefixed frames of bincode-2 messages with a hard size limit; [`RawBytes`] blobs |
//! | [`tensor`] | [`TensorBytes`]: dtype + shape header and raw little-endian data |
//! | [`resident`] | tensors handed to a peer in the same process as they are (a device buffer), counted as bytes |
//! | [`transport`](mod@transport) | the [`Transport`] trait and its typed extension [`TransportExt`] |
//! | [`sim`] | [`sim::Network`]: all peers in one process, virtual time, seeded faults |
//! | [`quic`] | [`quic::Endpoint`]: QUIC with mutual TLS bound to peer ids |
//! | [`p2p`] | [`p2p::Endpoint`]: libp2p over QUIC — joining from one bootstrap relay, Kademlia lookups, hole punching |
//! | [`peers`] | [`PeerBook`]: the peers file a real node bootstraps from |
//! | [`fsutil`] | atomic file replacement (key files, peers files, run logs) |
//!
//! The same protocol code runs on both networks:
//!
//! ```
//! use std::time::Duration;
//! use transport::{PeerId, Transport, TransportExt, sim::{LinkSpec, Network}};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build()?;
//! rt.block_on(async {
//!     let net = Network::builder(7).default_link(LinkSpec::mbit(20.0, 100.0)).build()?;
//!     let (a, b) = (net.add_peer(PeerId::simulated(0))?, net.add_peer(PeerId::simulated(1))?);
//!     a.send_msg(b.local_peer(), &"hello".to_string()).await?;
//!     let (from, text): (PeerId, String) = b.recv_msg().await?;
//!     assert_eq!((from, text.as_str()), (a.local_peer(), "hello"));
//!     // 20 ms of latency plus 14 bytes at 100 Mbit/s, in virtual time.
//!     assert!(net.now() > Duration::from_millis(20) && net.now() < Duration::from_millis(21));
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })
//! # }
//! ```

pub mod codec;
pub mod error;
pub mod fsutil;
mod fxhash;
pub mod hex;
pub mod identity;
pub mod p2p;
pub mod peers;
pub mod quic;
pub mod relay;
pub mod resident;
pub mod sim;
pub mod tensor;
mod traffic;
pub mod transport;

pub use codec::{Codec, DEFAULT_MAX_FRAME, FRAME_HEADER_LEN, FrameDecoder, RawBytes};
pub use error::{CodecError, IdentityError, TransportError};
pub use identity::{Identity, PeerId};
pub use peers::PeerBook;
pub use tensor::{DType, TensorBytes};
pub use transport::{Envelope, Transport, TransportExt};
