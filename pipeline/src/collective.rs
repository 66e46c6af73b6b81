//! A worker's mailbox and the collectives built on it: ring and tree all-reduce (every member needed)
//! and gather-average-broadcast within a small group (members may be missing or rejected).
//!
//! Every collective is keyed by `(step, round)`, so rounds of different steps never mix, and a message
//! that arrives before it is wanted waits in the mailbox.
//!
//! Every collective works on any [`Summand`]: values on the host, or a tensor left on its device.

use std::collections::VecDeque;
use std::ops::Range;
use std::time::Duration;

use candle_core::{Device, Tensor};

use genrl::{AgentCtx, Clock, EventKind};
use transport::{PeerId, Transport, TransportExt};

use crate::error::{Error, Result};
use crate::sync::{Collective, OuterRound, OuterState, check_finite};
use crate::wire::{Incoming, Msg, Outgoing};

/// Messages that arrived before anyone asked for them, and what this worker has sent and waited.
///
/// Every message travels with its sender's recovery epoch, which rises each time the swarm resumes after
/// a worker was replaced ([`Msg::Resume`]): a message of an earlier epoch is void and dropped, one of a
/// later epoch waits until this worker resumes too. The messages of a replacement itself
/// ([`Msg::is_replacement`]) are heard in any epoch.
pub struct Mailbox<T: Transport, C: Clock> {
    transport: T,
    clock: C,
    /// `(sender, its epoch, message)`.
    waiting: VecDeque<(PeerId, u32, Msg)>,
    timeout: Duration,
    name: String,
    sent: u64,
    waited: Duration,
    epoch: u32,
    halts: bool,
    /// Whether [`for_peer`](Self::for_peer) leaves tensors resident where the transport allows.
    resident: bool,
}

impl<T: Transport, C: Clock> Mailbox<T, C> {
    /// A mailbox on `transport`, giving up on any awaited message after `timeout`; `name` labels errors.
    pub fn new(transport: T, clock: C, timeout: Duration, name: impl Into<String>) -> Self {
        Self {
            transport,
            clock,
            waiting: VecDeque::new(),
            timeout,
            name: name.into(),
            sent: 0,
            waited: Duration::ZERO,
            epoch: 0,
            halts: false,
            resident: false,
        }
    }

    /// Whether activations and their gradients go to peers as resident tensors where the transport
    /// carries them ([`PipelineSpec::resident_tensors`](crate::PipelineSpec::resident_tensors)).
    pub fn set_resident_tensors(&mut self, resident: bool) {
        self.resident = resident;
    }

    /// Whether tensors this mailbox sends stay where they are: it may leave them so
    /// ([`set_resident_tensors`](Self::set_resident_tensors)) and the transport carries resident tensors.
    pub fn leaves_tensors_resident(&self) -> bool {
        self.resident && self.transport.carries_attachments()
    }

    /// A tensor for a peer (an activation, its gradient, targets, weights, optimizer moments, an outer
    /// state's part): resident if [`leaves_tensors_resident`](Self::leaves_tensors_resident), else as bytes.
    pub fn for_peer(&self, t: &candle_core::Tensor) -> Result<transport::TensorBytes> {
        if self.leaves_tensors_resident() { crate::wire::to_resident(t) } else { crate::wire::to_wire(t) }
    }

    /// Whether a [`Msg::Replace`] that arrives while this worker waits for something else ends the wait
    /// with [`Error::Replaced`] (off unless set).
    pub fn set_halts(&mut self, halts: bool) {
        self.halts = halts;
    }

    /// The recovery epoch this worker is in.
    pub fn epoch(&self) -> u32 {
        self.epoch
    }

    /// Enters recovery epoch `epoch`: the waiting messages of earlier epochs are dropped.
    pub fn set_epoch(&mut self, epoch: u32) {
        self.epoch = epoch;
        let waiting = std::mem::take(&mut self.waiting);
        self.waiting = waiting.into_iter().filter(|(_, e, m)| !self.void(*e, m)).collect();
    }

    /// Whether a message of `epoch` was sent before this worker's epoch began, and so is void (a
    /// replacement's own messages never are).
    fn void(&self, epoch: u32, msg: &Msg) -> bool {
        epoch < self.epoch && !msg.is_replacement()
    }

    /// Whether a message of `epoch` is for now: of this worker's epoch, or a replacement's.
    fn current(&self, epoch: u32, msg: &Msg) -> bool {
        epoch == self.epoch || msg.is_replacement()
    }

    /// Bytes sent so far (frames, headers included).
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Time spent so far waiting for messages.
    pub fn waited(&self) -> Duration {
        self.waited
    }

    /// The clock.
    pub fn clock(&self) -> &C {
        &self.clock
    }

    /// Keeps `msg` from `from` for a later [`take`](Self::take), first in line.
    pub fn put_back(&mut self, from: PeerId, msg: Msg) {
        self.waiting.push_front((from, self.epoch, msg));
    }

    /// Sets how long an awaited message may take from now on; returns the previous limit.
    pub fn set_timeout(&mut self, timeout: Duration) -> Duration {
        std::mem::replace(&mut self.timeout, timeout)
    }

    /// Whether messages may carry resident tensors to their peers (see [`transport::resident`]).
    pub fn carries_attachments(&self) -> bool {
        self.transport.carries_attachments()
    }

    /// `msg` encoded, with the resident tensors it refers to; counted as sent.
    fn encode(&mut self, msg: &Msg) -> Result<(bytes::Bytes, Vec<transport::resident::Attachment>)> {
        let outgoing = Outgoing { epoch: self.epoch, msg };
        let (payload, attachments) = transport::resident::collect(|| self.transport.codec().encode(&outgoing));
        let payload = payload?;
        self.sent +=
            (payload.len() + transport::FRAME_HEADER_LEN) as u64 + transport::resident::wire_bytes(&attachments);
        Ok((payload, attachments))
    }

    /// Sends `msg` to `to`.
    pub async fn send(&mut self, to: PeerId, msg: &Msg) -> Result<()> {
        let (payload, attachments) = self.encode(msg)?;
        Ok(self.transport.send_with(to, payload, attachments).await?)
    }

    /// Sends `msg` to `to` without waiting for it to be handed to the network (a send to a peer that
    /// is gone can take as long as connecting does); a send that fails is logged.
    pub fn send_in_background(&mut self, to: PeerId, msg: &Msg) -> Result<()> {
        let (payload, attachments) = self.encode(msg)?;
        let (transport, name) = (self.transport.clone(), self.name.clone());
        tokio::spawn(async move {
            if let Err(e) = transport.send_with(to, payload, attachments).await {
                tracing::warn!(worker = %name, peer = %to.short(), error = %e, "message not delivered");
            }
        });
        Ok(())
    }

    /// The first message (waiting or arriving) that `wanted` accepts; others are kept for later. Fails
    /// with [`Error::Stalled`] after the mailbox's timeout, and with [`Error::Replaced`] when a
    /// replacement asks this worker to halt (if [`set_halts`](Self::set_halts)).
    pub async fn take(&mut self, what: &str, wanted: impl Fn(&PeerId, &Msg) -> bool) -> Result<(PeerId, Msg)> {
        let deadline = self.clock.now() + self.timeout;
        self.take_until(deadline, &wanted).await?.ok_or_else(|| self.stalled(what))
    }

    /// Like [`take`](Self::take), but waits only until `deadline` (on the mailbox's clock) and then
    /// answers `None`.
    pub async fn take_until(
        &mut self,
        deadline: Duration,
        wanted: impl Fn(&PeerId, &Msg) -> bool,
    ) -> Result<Option<(PeerId, Msg)>> {
        if let Some(i) = self.waiting.iter().position(|(p, e, m)| self.current(*e, m) && wanted(p, m)) {
            return Ok(self.waiting.remove(i).map(|(p, _, m)| (p, m)));
        }
        if self.halts
            && let Some(i) = self.waiting.iter().position(|(_, _, m)| matches!(m, Msg::Replace))
            && let Some((by, _, _)) = self.waiting.remove(i)
        {
            return Err(Error::Replaced { worker: self.name.clone(), by });
        }
        let started = self.clock.now();
        let out = loop {
            let left = deadline.saturating_sub(self.clock.now());
            match genrl::clock::timeout(&self.clock, left, self.transport.recv_msg::<Incoming>()).await {
                Err(_) => break None,
                Ok(Ok((from, Incoming { epoch, msg }))) => {
                    if self.void(epoch, &msg) {
                        continue;
                    }
                    if self.current(epoch, &msg) && wanted(&from, &msg) {
                        break Some((from, msg));
                    }
                    if self.halts && matches!(msg, Msg::Replace) {
                        self.waited += self.clock.now().saturating_sub(started);
                        return Err(Error::Replaced { worker: self.name.clone(), by: from });
                    }
                    self.waiting.push_back((from, epoch, msg));
                }
                Ok(Err(transport::TransportError::Decode { from, source })) => {
                    tracing::warn!(worker = %self.name, peer = %from.short(), %source, "undecodable message dropped");
                }
                Ok(Err(e)) => return Err(e.into()),
            }
        };
        self.waited += self.clock.now().saturating_sub(started);
        Ok(out)
    }

    /// Drops waiting collective messages of steps before `step` (late arrivals from peers that a
    /// deadline already left out).
    pub fn discard_reduce_before(&mut self, step: u64) {
        self.waiting.retain(|(_, _, m)| !matches!(m, Msg::Reduce { step: s, .. } if *s < step));
    }

    /// Drops the waiting chunks of `step`'s all-reduce numbered before `round` (a failed attempt's).
    pub fn discard_reduce_rounds_before(&mut self, step: u64, round: u32) {
        self.waiting
            .retain(|(_, _, m)| !matches!(m, Msg::Reduce { step: s, round: r, .. } if *s == step && *r < round));
    }

    /// Sends `part` as round `round` of `step`'s collective (a tensor resident where
    /// [`for_peer`](Self::for_peer) would leave one).
    pub async fn send_values<S: Summand>(&mut self, to: PeerId, step: u64, round: u32, part: &S) -> Result<()> {
        let data = part.to_message(self.leaves_tensors_resident())?;
        self.send(to, &Msg::Reduce { step, round, data }).await
    }

    /// Takes round `round` of `step`'s collective from `from`: exactly `expected` values, like `like`
    /// (on its device), or an error.
    pub async fn take_values<S: Summand>(
        &mut self,
        what: &str,
        from: PeerId,
        step: u64,
        round: u32,
        expected: usize,
        like: &S,
    ) -> Result<S> {
        let deadline = self.clock.now() + self.timeout;
        self.take_values_until(deadline, from, step, round, like).await?.ok_or_else(|| self.stalled(what)).and_then(
            |v| {
                if v.len() == expected {
                    Ok(v)
                } else {
                    Err(Error::config("collective", format!("{what} of {} values, expected {expected}", v.len())))
                }
            },
        )
    }

    /// Round `round` of `step` from `from` if it arrives before `deadline` (any length: the caller checks).
    async fn take_values_until<S: Summand>(
        &mut self,
        deadline: Duration,
        from: PeerId,
        step: u64,
        round: u32,
        like: &S,
    ) -> Result<Option<S>> {
        let wanted = |f: &PeerId, m: &Msg| {
            *f == from && matches!(m, Msg::Reduce { step: st, round: rd, .. } if *st == step && *rd == round)
        };
        match self.take_until(deadline, wanted).await? {
            Some((_, Msg::Reduce { data, .. })) => Ok(Some(S::from_message(&data, like)?)),
            Some(_) => Err(Error::config("message", "unexpected message kind")),
            None => Ok(None),
        }
    }

    fn stalled(&self, what: &str) -> Error {
        Error::Stalled { worker: self.name.clone(), what: format!("no {what} within {:?}", self.timeout) }
    }
}

/// What the all-reduces sum: values on the host (`Vec<f32>`), or a flat f32 tensor that stays on its
/// device — its chunks go to peers as resident tensors where the transport carries them, so a GPU's
/// gradients never pass through host memory between simulated workers. Both add one IEEE f32 sum per
/// element, in the same order, and scale by one product: the same bits either way.
pub trait Summand: Sized {
    /// Its number of values.
    fn len(&self) -> usize;
    /// Whether it holds no values.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The values in `range`.
    fn slice(&self, range: Range<usize>) -> Result<Self>;
    /// The parts one after another.
    fn concat(parts: Vec<Self>) -> Result<Self>;
    /// Adds `other` (of the same length) element by element.
    fn accumulate(&mut self, other: &Self) -> Result<()>;
    /// Multiplies every value by `factor`.
    fn scale(self, factor: f32) -> Result<Self>;
    /// Divides every value by `divisor`.
    fn divide(self, divisor: f32) -> Result<Self>;
    /// The index and value of the first value that is infinite or NaN, if any.
    fn first_non_finite(&self) -> Result<Option<(usize, f32)>>;
    /// The values as a message's tensor: resident if `resident` (where that makes sense), else bytes.
    fn to_message(&self, resident: bool) -> Result<transport::TensorBytes>;
    /// The values a message carries, placed like `like`.
    fn from_message(data: &transport::TensorBytes, like: &Self) -> Result<Self>;
}

impl Summand for Vec<f32> {
    fn len(&self) -> usize {
        self.as_slice().len()
    }

    fn slice(&self, range: Range<usize>) -> Result<Self> {
        Ok(self[range].to_vec())
    }

    fn concat(parts: Vec<Self>) -> Result<Self> {
        Ok(parts.concat())
    }

    fn accumulate(&mut self, other: &Self) -> Result<()> {
        for (d, x) in self.iter_mut().zip(other) {
            *d += x;
        }
        Ok(())
    }

    fn scale(mut self, factor: f32) -> Result<Self> {
        self.iter_mut().for_each(|x| *x *= factor);
        Ok(self)
    }

    fn divide(mut self, divisor: f32) -> Result<Self> {
        self.iter_mut().for_each(|x| *x /= divisor);
        Ok(self)
    }

    fn first_non_finite(&self) -> Result<Option<(usize, f32)>> {
        Ok(self.iter().position(|x| !x.is_finite()).map(|i| (i, self[i])))
    }

    fn to_message(&self, _resident: bool) -> Result<transport::TensorBytes> {
        Ok(transport::TensorBytes::from_f32(vec![self.len()], self)?)
    }

    fn from_message(data: &transport::TensorBytes, _like: &Self) -> Result<Self> {
        if data.resident_elements().is_some() {
            return Ok(crate::wire::from_wire(data, &Device::Cpu)?.flatten_all()?.to_vec1()?);
        }
        Ok(data.to_f32_vec()?)
    }
}

/// A flat (one-dimensional) f32 tensor on its device.
impl Summand for Tensor {
    fn len(&self) -> usize {
        self.elem_count()
    }

    fn slice(&self, range: Range<usize>) -> Result<Self> {
        Ok(self.narrow(0, range.start, range.len())?)
    }

    fn concat(parts: Vec<Self>) -> Result<Self> {
        Ok(Self::cat(&parts, 0)?)
    }

    fn accumulate(&mut self, other: &Self) -> Result<()> {
        *self = (&*self + other)?;
        Ok(())
    }

    fn scale(self, factor: f32) -> Result<Self> {
        // A product with a scalar tensor, as the host's `x * factor` (candle's affine adds a zero,
        // which turns −0 into +0).
        Ok(self.broadcast_mul(&Self::new(factor, self.device())?)?)
    }

    fn divide(self, divisor: f32) -> Result<Self> {
        Ok(self.broadcast_div(&Self::new(divisor, self.device())?)?)
    }

    fn first_non_finite(&self) -> Result<Option<(usize, f32)>> {
        // x·0 is ±0 for a finite x and NaN otherwise, so the sum is NaN exactly when a value is not
        // finite: one pass on the device, and the values come to the host only to name the culprit.
        let poisoned = self.broadcast_mul(&Self::new(0f32, self.device())?)?.sum_all()?.to_scalar::<f32>()?;
        if !poisoned.is_nan() {
            return Ok(None);
        }
        self.flatten_all()?.to_vec1::<f32>()?.first_non_finite()
    }

    fn to_message(&self, resident: bool) -> Result<transport::TensorBytes> {
        if resident { crate::wire::to_resident(self) } else { crate::wire::to_wire(self) }
    }

    fn from_message(data: &transport::TensorBytes, like: &Self) -> Result<Self> {
        Ok(crate::wire::from_wire(data, like.device())?.flatten_all()?)
    }
}

/// Ring all-reduce (sum) of `data` among `ring`, this worker at `me`: R−1 reduce-scatter rounds, then
/// R−1 all-gather rounds, each sending one chunk of about `len / R` values to the next member. Every
/// member ends with the same bits (the all-gather copies the reduced chunks). Rounds are numbered from
/// `tag`.
pub async fn ring_all_reduce<T: Transport, C: Clock, S: Summand>(
    mail: &mut Mailbox<T, C>,
    ring: &[PeerId],
    me: usize,
    step: u64,
    tag: u32,
    data: S,
) -> Result<S> {
    let n = ring.len();
    let len = data.len();
    let chunk = |i: usize| (i * len / n)..((i + 1) * len / n);
    let mut chunks = (0..n).map(|i| data.slice(chunk(i))).collect::<Result<Vec<S>>>()?;
    drop(data);
    let (next, prev) = (ring[(me + 1) % n], ring[(me + n - 1) % n]);
    for round in 0..2 * (n - 1) {
        let (send_idx, recv_idx) = if round < n - 1 {
            ((me + n - round) % n, (me + n - round - 1) % n)
        } else {
            let k = round - (n - 1);
            ((me + 1 + n - k) % n, (me + n - k) % n)
        };
        let tagged = tag + round as u32;
        mail.send_values(next, step, tagged, &chunks[send_idx]).await?;
        let expected = chunk(recv_idx).len();
        let incoming = mail.take_values("ring chunk", prev, step, tagged, expected, &chunks[recv_idx]).await?;
        if round < n - 1 {
            chunks[recv_idx].accumulate(&incoming)?;
        } else {
            chunks[recv_idx] = incoming;
        }
    }
    S::concat(chunks)
}

/// Binary-tree all-reduce (sum) of `data` among `group`, this worker at `me`: at level `d = 1, 2, 4…`
/// rank `k·2d + d` sends its partial sum to rank `k·2d`, which adds it; then the total goes back down the
/// same edges. Every member ends with the root's bits. Rounds are numbered from `tag`.
pub async fn tree_all_reduce<T: Transport, C: Clock, S: Summand>(
    mail: &mut Mailbox<T, C>,
    group: &[PeerId],
    me: usize,
    step: u64,
    tag: u32,
    mut data: S,
) -> Result<S> {
    let n = group.len();
    let mut levels = Vec::new();
    let mut d = 1;
    while d < n {
        levels.push(d);
        d *= 2;
    }
    let down = tag + 64;
    // Up: sum into the lower rank of each pair.
    for (level, &d) in levels.iter().enumerate() {
        let round = tag + level as u32;
        if me % (2 * d) == d {
            mail.send_values(group[me - d], step, round, &data).await?;
            break;
        }
        if me.is_multiple_of(2 * d) && me + d < n {
            let incoming = mail.take_values("tree partial sum", group[me + d], step, round, data.len(), &data).await?;
            data.accumulate(&incoming)?;
        }
    }
    // Down: the total travels back along the same edges, highest level first.
    for (level, &d) in levels.iter().enumerate().rev() {
        let round = down + level as u32;
        if me.is_multiple_of(2 * d) && me + d < n {
            mail.send_values(group[me + d], step, round, &data).await?;
        } else if me % (2 * d) == d {
            data = mail.take_values("tree total", group[me - d], step, round, data.len(), &data).await?;
        }
    }
    Ok(data)
}

/// The element-wise mean of `first` and `others` (all of one length), summed in the order given, then
/// divided by their count: the same inputs in the same order give the same bits on every machine, on
/// the host or on a device.
pub fn mean_in_order<S: Summand>(first: S, others: &[&S]) -> Result<S> {
    let mut sum = first;
    for v in others {
        sum.accumulate(v)?;
    }
    sum.divide((others.len() + 1) as f32)
}

/// What a [`gather_mean`] produced, and who was left out of it.
#[derive(Debug, Clone, PartialEq)]
pub struct GatherOutcome<S = Vec<f32>> {
    /// The mean of the admitted contributions (this worker's own alone if its root went silent).
    pub mean: S,
    /// How many contributions the mean averages.
    pub members: usize,
    /// (Root only) members whose contribution did not arrive before the deadline.
    pub missing: Vec<PeerId>,
    /// (Root only) members whose contribution was rejected, and why.
    pub rejected: Vec<(PeerId, String)>,
    /// (Member only) the root could not be reached or sent no usable mean before the deadline; `mean`
    /// is this worker's own.
    pub root_lost: bool,
}

/// Gather-average-broadcast within `group` (this worker at `me`; the root is `group[0]`): members send
/// `own` to the root; the root waits up to `timeout`, keeps the contributions `admissible` accepts
/// (judged against its own), sums them in group order and sends the mean back to every member it heard
/// from. A member waits up to `2 · timeout` for the mean; without it, it carries on with its own
/// contribution. A send that fails is a peer gone: a member carries on alone, the root leaves it out. A
/// missing, unreachable or misbehaving peer therefore never stalls the group.
#[allow(clippy::too_many_arguments)]
pub async fn gather_mean<T: Transport, C: Clock, S: Summand>(
    mail: &mut Mailbox<T, C>,
    group: &[PeerId],
    me: usize,
    step: u64,
    tag: u32,
    own: S,
    timeout: Duration,
    admissible: impl Fn(&S, &S) -> std::result::Result<(), String>,
) -> Result<GatherOutcome<S>> {
    let (up, down) = (tag, tag + 1);
    let alone =
        |own, root_lost| GatherOutcome { mean: own, members: 1, missing: Vec::new(), rejected: Vec::new(), root_lost };
    if me != 0 {
        // A root that cannot be reached (gone) is one that sends no mean: carry on alone.
        if let Err(e) = mail.send_values(group[0], step, up, &own).await {
            tracing::warn!(root = %group[0].short(), error = %e, "contribution not delivered to the group root");
            return Ok(alone(own, true));
        }
        let deadline = mail.clock.now() + 2 * timeout;
        return Ok(match mail.take_values_until(deadline, group[0], step, down, &own).await? {
            Some(mean) if check_finite(&own, &mean).is_ok() => {
                GatherOutcome { members: group.len(), ..alone(mean, false) }
            }
            _ => alone(own, true),
        });
    }
    let deadline = mail.clock.now() + timeout;
    let mut arrived: Vec<Option<S>> = Vec::with_capacity(group.len());
    for &peer in &group[1..] {
        arrived.push(mail.take_values_until(deadline, peer, step, up, &own).await?);
    }
    let (mut admitted, mut heard, mut missing, mut rejected) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (&peer, contribution) in group[1..].iter().zip(&arrived) {
        let Some(values) = contribution else {
            missing.push(peer);
            continue;
        };
        heard.push(peer);
        match admissible(&own, values) {
            Ok(()) => admitted.push(values),
            Err(why) => rejected.push((peer, why)),
        }
    }
    let members = admitted.len() + 1;
    let mean = mean_in_order(own, &admitted)?;
    for peer in heard {
        // A member gone since it contributed waits for nothing; the others still get the mean.
        if let Err(e) = mail.send_values(peer, step, down, &mean).await {
            tracing::warn!(member = %peer.short(), error = %e, "mean not delivered to a group member");
        }
    }
    Ok(GatherOutcome { mean, members, missing, rejected, root_lost: false })
}

/// The mean of `data` over `round`'s group through an all-reduce (ring or tree) that needs every
/// member; `group` are the members' peer ids, this worker at `me`.
pub async fn all_reduce_mean<T: Transport, C: Clock, S: Summand>(
    mail: &mut Mailbox<T, C>,
    round: &OuterRound,
    group: &[PeerId],
    me: usize,
    step: u64,
    tag: u32,
    data: S,
) -> Result<S> {
    let sum = match round.collective {
        Collective::Tree => tree_all_reduce(mail, group, me, step, tag, data).await?,
        _ => ring_all_reduce(mail, group, me, step, tag, data).await?,
    };
    sum.scale(1.0 / group.len() as f32)
}

/// First round number of the per-step gradient all-reduce.
pub const GRADIENT_TAG: u32 = 0;
/// Round numbers each new attempt at an elastic step's all-reduce moves on by, so that chunks of a
/// failed attempt never mix with the next one's.
pub const ATTEMPT_STRIDE: u32 = 4096;
/// The attempt number of the [`Msg::Members`] a replica sends with the weights a joiner starts from:
/// its own view of the group.
pub const JOIN_VIEW: u32 = u32::MAX;

/// How long an elastic group waits: the leader for the members' [`Msg::Alive`], a member for the
/// leader's [`Msg::Members`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuorumTimeouts {
    /// The leader's wait for a member it expects (a member that misses it is left out of the step).
    pub members: Duration,
    /// A member's wait for the leader's answer (a leader that misses it is presumed gone), and for a
    /// chunk of the all-reduce.
    pub leader: Duration,
}

impl QuorumTimeouts {
    /// How many times the leader's wait a member waits for the leader.
    pub const LEADER_FACTOR: u32 = 4;

    /// The waits of a group whose leader waits `wait` for a member: members wait
    /// [`Self::LEADER_FACTOR`] times as long for the leader.
    pub fn from_wait(wait: Duration) -> Self {
        Self { members: wait, leader: wait * Self::LEADER_FACTOR }
    }
}

/// Elastic data parallelism: agrees with the live replicas of a stage on who reduces `step`'s
/// gradients. `row` holds the stage's replicas' peer ids, `me` is this worker's index in it, `view` the
/// last group agreed on (for a joiner, its donor's), `joiners` the replicas that joined through this
/// worker since; attempts are numbered from `first_attempt` (0, or one past a try whose all-reduce
/// failed). The leader is the lowest replica of the view: it waits for every member of the view and
/// every announced joiner — or for [`QuorumTimeouts::members`] — and sends the group to each member.
/// A member that hears nothing from the leader within [`QuorumTimeouts::leader`] presumes it gone and
/// tries again (`attempt + 1`) under the next one. Returns the group (increasing replica indices, this
/// worker among them) and the attempt that settled it, or `None` when the leader answered that this
/// worker came too late (it must join again). Asks from replicas still at earlier steps are answered
/// with an empty group first, so that they join again.
#[allow(clippy::too_many_arguments)]
pub async fn quorum<T: Transport, C: Clock>(
    mail: &mut Mailbox<T, C>,
    row: &[PeerId],
    me: usize,
    view: &[usize],
    joiners: &[usize],
    (step, first_attempt): (u64, u32),
    timeouts: QuorumTimeouts,
) -> Result<Option<(Vec<usize>, u32)>> {
    answer_stale(mail, row, step).await;
    let index_of = |peer: &PeerId| row.iter().position(|p| p == peer);
    let mut alive: Vec<usize> = view.to_vec();
    let mut attempt = first_attempt;
    loop {
        // A joiner is not in its donor's view, so never leads it; alone, a worker leads itself.
        let leader = alive.iter().copied().min().unwrap_or(me);
        if leader == me {
            let mut expected: std::collections::BTreeSet<usize> =
                alive.iter().chain(joiners).copied().filter(|&q| q != me && q < row.len()).collect();
            let mut heard = std::collections::BTreeSet::from([me]);
            let deadline = mail.clock.now() + timeouts.members;
            while !expected.is_subset(&heard) {
                let wanted = |from: &PeerId, m: &Msg| {
                    index_of(from).is_some()
                        && matches!(m, Msg::Alive { step: s, attempt: a, .. } if *s == step && *a == attempt)
                };
                let Some((from, Msg::Alive { joiners, .. })) = mail.take_until(deadline, wanted).await? else { break };
                let Some(q) = index_of(&from) else { continue };
                heard.insert(q);
                expected.insert(q);
                expected.extend(joiners.iter().map(|&j| j as usize).filter(|&j| j < row.len()));
            }
            let members: Vec<usize> = heard.into_iter().collect();
            let listed: Vec<u32> = members.iter().map(|&q| q as u32).collect();
            for &q in members.iter().filter(|&&q| q != me) {
                let msg = Msg::Members { step, attempt, members: listed.clone() };
                if let Err(e) = mail.send(row[q], &msg).await {
                    // It will be missed in the all-reduce, and the group formed again without it.
                    tracing::warn!(peer = %row[q].short(), error = %e, "group not delivered");
                }
            }
            return Ok(Some((members, attempt)));
        }
        let alive_msg = Msg::Alive { step, attempt, joiners: joiners.iter().map(|&q| q as u32).collect() };
        let answer = match mail.send(row[leader], &alive_msg).await {
            Err(_) => None,
            Ok(()) => {
                let deadline = mail.clock.now() + timeouts.leader;
                // A group naming replicas the stage does not have is no answer.
                let wanted = |from: &PeerId, m: &Msg| {
                    *from == row[leader]
                        && matches!(m, Msg::Members { step: s, attempt: a, members }
                            if *s == step && *a == attempt && is_group(members, row.len()))
                };
                mail.take_until(deadline, wanted).await?
            }
        };
        match answer {
            Some((_, Msg::Members { members, .. })) => {
                let members: Vec<usize> = members.into_iter().map(|q| q as usize).collect();
                return Ok(members.contains(&me).then_some((members, attempt)));
            }
            _ => {
                tracing::warn!(leader, step, attempt, "the group's leader is silent: trying without it");
                alive.retain(|&q| q != leader);
                attempt += 1;
            }
        }
    }
}

/// Whether `members` is a group of a stage of `replicas`: increasing replica indices below `replicas`
/// (possibly none: the answer to a replica that came too late).
pub fn is_group(members: &[u32], replicas: usize) -> bool {
    members.windows(2).all(|w| w[0] < w[1]) && members.iter().all(|&q| (q as usize) < replicas)
}

/// Answers every waiting [`Msg::Alive`] of a step before `step` with an empty group: its sender fell
/// behind and must join again.
async fn answer_stale<T: Transport, C: Clock>(mail: &mut Mailbox<T, C>, row: &[PeerId], step: u64) {
    let now = mail.clock.now();
    let stale = |from: &PeerId, m: &Msg| row.contains(from) && matches!(m, Msg::Alive { step: s, .. } if *s < step);
    while let Ok(Some((from, Msg::Alive { step, attempt, .. }))) = mail.take_until(now, stale).await {
        let _ = mail.send(from, &Msg::Members { step, attempt, members: Vec::new() }).await;
    }
}
/// First round number of an outer round (kept apart from the gradient all-reduce's).
pub const OUTER_TAG: u32 = 1 << 20;

/// One outer round on flat weights `theta` (one f32 tensor on the worker's device; this worker is
/// replica `r` of stage `s`; `row` holds the peer ids of the stage's replicas): contribute, reach the
/// group's mean through the round's collective (on the device, its messages resident tensors where the
/// mailbox leaves them so), let the protocol update its state; returns the weights to train on next.
/// Peers left out of a gather round are logged as events; an all-reduce that yields non-finite values
/// is an error.
#[allow(clippy::too_many_arguments)]
pub async fn run_outer_round<T: Transport, C: Clock>(
    ctx: &AgentCtx<T, C>,
    mail: &mut Mailbox<T, C>,
    state: &mut dyn OuterState,
    round: &OuterRound,
    row: &[PeerId],
    at: (usize, usize),
    step: u64,
    theta: &Tensor,
) -> Result<Tensor> {
    run_outer_round_tagged(ctx, mail, state, round, row, at, step, theta, OUTER_TAG).await
}

/// [`run_outer_round`] with its rounds numbered from `tag` (an elastic round's retry moves it on).
#[allow(clippy::too_many_arguments)]
pub async fn run_outer_round_tagged<T: Transport, C: Clock>(
    ctx: &AgentCtx<T, C>,
    mail: &mut Mailbox<T, C>,
    state: &mut dyn OuterState,
    round: &OuterRound,
    row: &[PeerId],
    (s, r): (usize, usize),
    step: u64,
    theta: &Tensor,
    tag: u32,
) -> Result<Tensor> {
    let me = round
        .group
        .iter()
        .position(|&q| q == r)
        .ok_or_else(|| Error::config("sync", format!("replica {r} is not in its own group {:?}", round.group)))?;
    let group = round.group.iter().map(|&q| row.get(q).copied()).collect::<Option<Vec<PeerId>>>().ok_or_else(|| {
        Error::config("sync", format!("group {:?} names a replica beyond {}", round.group, row.len()))
    })?;
    let own = state.contribution(theta)?;
    mail.discard_reduce_before(step);
    let mean = match round.collective {
        Collective::Gather => {
            let outcome =
                gather_mean(mail, &group, me, step, tag, own, round.timeout, |a, b| state.admissible(a, b)).await?;
            let now = ctx.clock.now();
            let at = format!("stage {s} replica {r}, step {step}");
            for peer in &outcome.missing {
                let detail = format!("{at}: no contribution from {} in time; averaged without it", peer.short());
                ctx.metrics.event(now, Some(ctx.index), EventKind::Timeout, detail);
            }
            for (peer, why) in &outcome.rejected {
                let detail = format!("{at}: contribution of {} rejected: {why}", peer.short());
                ctx.metrics.event(now, Some(ctx.index), EventKind::Rejected, detail);
            }
            if outcome.root_lost {
                let detail = format!("{at}: no mean from the group root in time; continuing alone");
                ctx.metrics.event(now, Some(ctx.index), EventKind::Timeout, detail);
            }
            outcome.mean
        }
        _ => {
            let mean = all_reduce_mean(mail, round, &group, me, step, tag, own.clone()).await?;
            check_finite(&own, &mean).map_err(|why| Error::config("sync", format!("all-reduce: {why}")))?;
            mean
        }
    };
    state.finish(theta, &mean)
}
