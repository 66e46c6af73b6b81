//! What pipeline workers say to each other, and tensors to and from the wire.

use std::sync::Arc;

use bytes::Bytes;
use candle_core::{DType as CDType, Device, Tensor};
use serde::{Deserialize, Serialize};
use transport::resident::Resident;
use transport::{DType, TensorBytes};

use crate::error::{Error, Result};

/// A pipeline message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Msg {
    /// Activations of micro-batch `micro` of `step`, with its next-token targets, for the next hop.
    Forward {
        /// Training step.
        step: u64,
        /// The replica of stage 0 whose data this micro-batch is.
        origin: u32,
        /// Micro-batch within the step.
        micro: u32,
        /// Hidden states `[batch, seq, d_model]`.
        hidden: TensorBytes,
        /// Targets `[batch, seq]` (u32), carried to the last stage.
        targets: TensorBytes,
    },
    /// The gradient of the loss with respect to the activations a stage sent.
    Backward {
        /// Training step.
        step: u64,
        /// The replica of stage 0 whose data this micro-batch is.
        origin: u32,
        /// Micro-batch within the step.
        micro: u32,
        /// Gradient, shaped like the activations.
        grad: TensorBytes,
    },
    /// Activations of validation batch `index`, evaluated before training step `step` (forward only).
    Eval {
        /// The step the evaluation belongs to.
        step: u64,
        /// The data replica whose row evaluates (a worker may stand in for a departed one of another row).
        row: u32,
        /// Validation batch.
        index: u32,
        /// Hidden states.
        hidden: TensorBytes,
        /// Targets (u32).
        targets: TensorBytes,
    },
    /// A stage's weights, by stage-local name, sent before training step `step`.
    Weights {
        /// The step they are sent before (or after which, for [`WeightsKind::Shadow`]).
        step: u64,
        /// Why.
        kind: WeightsKind,
        /// The stage the weights belong to.
        stage: u32,
        /// The sender's gradient norm after clipping at its last step.
        grad_norm: f32,
        /// `(stage-local name, tensor)` pairs.
        tensors: Vec<(String, TensorBytes)>,
    },
    /// A worker that starts late asks a replica of its stage for the weights to join with.
    JoinRequest {
        /// The stage it serves.
        stage: u32,
    },
    /// A stage's squared gradient norm at `step`, for the whole model's clip
    /// ([`GradientScaling::WholeModel`](crate::GradientScaling::WholeModel)).
    GradNorm {
        /// Training step.
        step: u64,
        /// The sending stage.
        stage: u32,
        /// Sum of the squares of the stage's gradient.
        squared: f32,
    },
    /// Elastic data parallelism: a replica is ready to reduce `step`'s gradients (attempt `attempt`),
    /// sent to the group's leader, with the replicas it has handed weights to join with since its last
    /// group ([`quorum`](crate::collective::quorum)).
    Alive {
        /// Training step.
        step: u64,
        /// The try at agreeing on this step's group (a new try after a leader or a member went silent).
        attempt: u32,
        /// Replicas that joined through the sender, which the leader then waits for.
        joiners: Vec<u32>,
    },
    /// Elastic data parallelism: the replicas that reduce `step`'s gradients in attempt `attempt`, sent by
    /// the leader to each of them (in increasing order); empty to a replica that asked too late, which
    /// must join again.
    Members {
        /// Training step.
        step: u64,
        /// The try it settles.
        attempt: u32,
        /// The members, by replica index.
        members: Vec<u32>,
    },
    /// A node that takes a worker's place (it has that worker's key) tells every other worker to halt:
    /// the successor of a killed worker, a node announcing that the worker left the run for good, or
    /// the worker coming back to the place it left. Like [`Halted`](Msg::Halted) and
    /// [`Resume`](Msg::Resume), it is heard in any recovery epoch.
    Replace,
    /// A worker's answer to [`Replace`](Msg::Replace): the step it was training (not yet completed), the
    /// recovery epoch it was in and the checkpoints it holds.
    Halted {
        /// The step it halted in.
        step: u64,
        /// Its recovery epoch.
        epoch: u32,
        /// The steps of the checkpoints it holds (checkpoint-restart).
        checkpoints: Vec<u64>,
        /// The workers (grid indices) that have left the run for good, as it knows them.
        departed: Vec<u32>,
    },
    /// The replacement's word to every worker: go back to the start of `step`, and from now on hear
    /// only messages of recovery epoch `epoch` (what was sent before the halt is void).
    Resume {
        /// The step everyone trains again from.
        step: u64,
        /// The new recovery epoch.
        epoch: u32,
        /// Whether everyone restores their checkpoint of `step` (checkpoint-restart), rather than the
        /// state they kept of its start.
        checkpoint: bool,
        /// The workers (grid indices) out of the run from now on: one more when the sender left for
        /// good, one fewer when it came back (routers schedule their paths again for them).
        departed: Vec<u32>,
    },
    /// Instead of [`Resume`](Msg::Resume): the workers that halted cannot train on together (the
    /// reason says why), so each stops with an error rather than wait for a word that will not come.
    NoResume {
        /// Why, for the workers' errors.
        reason: String,
    },
    /// One chunk of a ring all-reduce among the replicas of a stage.
    Reduce {
        /// Training step.
        step: u64,
        /// Ring round (reduce-scatter rounds first, then all-gather rounds).
        round: u32,
        /// The chunk's values.
        data: TensorBytes,
    },
}

impl Msg {
    /// Whether the message belongs to the replacement of a worker, which every worker hears whatever
    /// its recovery epoch.
    pub fn is_replacement(&self) -> bool {
        matches!(self, Self::Replace | Self::Halted { .. } | Self::Resume { .. } | Self::NoResume { .. })
    }
}

/// A message as a mailbox sends it: with the sender's recovery epoch (see [`Msg::Resume`]).
#[derive(Debug, Serialize)]
pub(crate) struct Outgoing<'a> {
    pub(crate) epoch: u32,
    pub(crate) msg: &'a Msg,
}

/// A message as a mailbox receives it (an [`Outgoing`] on the wire).
#[derive(Debug, Deserialize)]
pub(crate) struct Incoming {
    pub(crate) epoch: u32,
    pub(crate) msg: Msg,
}

/// Why a stage's weights are on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WeightsKind {
    /// For the replacement of a failed worker.
    Donor,
    /// A redundant copy of the sender's stage, kept by its predecessor.
    Shadow,
    /// A copy of an edge stage (embedding or head), kept by its neighbour.
    EdgeCopy,
    /// For a worker joining the run late: the weights before the training step sent with them.
    Join,
}

/// A tensor (f32 or u32) as wire bytes.
pub fn to_wire(t: &Tensor) -> Result<TensorBytes> {
    let shape = t.dims().to_vec();
    let flat = t.flatten_all()?;
    Ok(match t.dtype() {
        CDType::U32 => {
            let v = flat.to_vec1::<u32>()?;
            TensorBytes::new(
                DType::U32,
                shape,
                Bytes::from(v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()),
            )?
        }
        _ => TensorBytes::from_f32(shape, &flat.to_dtype(CDType::F32)?.to_vec1::<f32>()?)?,
    })
}

/// A tensor for a worker in this process: its elements stay where they are (on its device), and the
/// link counts the bytes [`to_wire`] would send (see [`transport::resident`]).
pub fn to_resident(t: &Tensor) -> Result<TensorBytes> {
    // What `to_wire` sends: u32 as it is, anything else as f32.
    let (t, dtype) = match t.dtype() {
        CDType::U32 => (t.detach(), DType::U32),
        _ => (t.to_dtype(CDType::F32)?.detach(), DType::F32),
    };
    let shape = t.dims().to_vec();
    Ok(TensorBytes::resident(dtype, shape, Resident::new(Arc::new(t)))?)
}

/// Wire bytes back to a tensor on `device`.
pub fn from_wire(t: &TensorBytes, device: &Device) -> Result<Tensor> {
    if let Some(resident) = t.resident_elements() {
        let tensor = resident.handle().downcast_ref::<Tensor>().filter(|x| x.dims() == t.shape());
        let tensor = tensor.ok_or_else(|| Error::config("wire", "a resident tensor that is not the one announced"))?;
        return Ok(tensor.to_device(device)?);
    }
    Ok(match t.dtype() {
        DType::F32 => Tensor::from_vec(t.to_f32_vec()?, t.shape(), device)?,
        DType::U32 => {
            let v: Vec<u32> = t.data().chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            Tensor::from_vec(v, t.shape(), device)?
        }
        other => return Err(Error::config("wire", format!("unexpected tensor dtype {other:?}"))),
    })
}
