//! Tensors that stay where they are: device-resident elements handed to a peer in the same process.
//!
//! A simulated swarm runs every worker in one process, often on one GPU. Encoding an activation for the
//! wire would copy it from the device to host bytes, and decoding would copy it back: time the real
//! system spends on its network, not on the sender's and receiver's devices. A
//! [`TensorBytes::resident`](crate::TensorBytes::resident) tensor instead carries a handle to its
//! elements (a device tensor, to the transport an opaque `Any`). Its encoding holds the header only; the
//! handle travels beside the payload as an [`Attachment`], on transports whose peers share this process
//! ([`Transport::carries_attachments`](crate::Transport::carries_attachments): the simulated network).
//! The link still counts the bytes the elements would take on the wire ([`Attachment::wire_bytes`]), so
//! transfer times and traffic are those of the encoded message.
//!
//! The encoder collects the attachments of the message it encodes ([`collect`]), in the order it writes
//! the tensors; the decoder hands them back in the same order ([`provide`]). A transport that cannot carry
//! them refuses the send; a payload that names attachments that did not come with it fails to decode, as a
//! tensor whose elements are missing.

use std::any::Any;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::Arc;

/// A handle to a tensor's elements that stay in this process.
#[derive(Clone)]
pub struct Resident(Arc<dyn Any + Send + Sync>);

impl Resident {
    /// Wraps a handle (a device tensor, say).
    pub fn new(handle: Arc<dyn Any + Send + Sync>) -> Self {
        Self(handle)
    }

    /// The handle, to downcast to what was wrapped.
    pub fn handle(&self) -> &Arc<dyn Any + Send + Sync> {
        &self.0
    }
}

impl std::fmt::Debug for Resident {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resident")
    }
}

impl PartialEq for Resident {
    /// The same handle (not equal elements).
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Resident {}

/// A resident tensor travelling beside a payload that refers to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The elements.
    pub resident: Resident,
    /// The bytes the elements would add to the payload if they were encoded in it: what a link counts.
    pub wire_bytes: u64,
}

/// The bytes a set of attachments would add to their payload.
pub fn wire_bytes(attachments: &[Attachment]) -> u64 {
    attachments.iter().map(|a| a.wire_bytes).sum()
}

thread_local! {
    /// The attachments of the message being encoded on this thread, if one is.
    static OUTGOING: RefCell<Option<Vec<Attachment>>> = const { RefCell::new(None) };
    /// The attachments of the payload being decoded on this thread, if one is.
    static INCOMING: RefCell<Option<VecDeque<Attachment>>> = const { RefCell::new(None) };
}

/// Runs `encode` and returns what it returned with the attachments of the resident tensors it wrote.
/// Outside `collect`, encoding a resident tensor fails.
pub fn collect<R>(encode: impl FnOnce() -> R) -> (R, Vec<Attachment>) {
    let outer = OUTGOING.with(|o| o.replace(Some(Vec::new())));
    let out = encode();
    let attachments = OUTGOING.with(|o| o.replace(outer)).unwrap_or_default();
    (out, attachments)
}

/// Runs `decode` with `attachments` available to the resident tensors it reads, in order.
pub fn provide<R>(attachments: Vec<Attachment>, decode: impl FnOnce() -> R) -> R {
    let outer = INCOMING.with(|i| i.replace(Some(attachments.into())));
    let out = decode();
    INCOMING.with(|i| i.replace(outer));
    out
}

/// A new encoding pass of the same message begins (the codec measures, then writes): what an earlier
/// pass collected is dropped.
pub(crate) fn begin_pass() {
    OUTGOING.with(|o| {
        if let Some(v) = o.borrow_mut().as_mut() {
            v.clear();
        }
    });
}

/// Records an attachment for the message being encoded; `false` if none is being collected.
pub(crate) fn attach(attachment: Attachment) -> bool {
    OUTGOING.with(|o| match o.borrow_mut().as_mut() {
        Some(v) => {
            v.push(attachment);
            true
        }
        None => false,
    })
}

/// The next attachment of the payload being decoded, if any is left.
pub(crate) fn take() -> Option<Attachment> {
    INCOMING.with(|i| i.borrow_mut().as_mut().and_then(VecDeque::pop_front))
}
