//! One pipeline worker: stage `s` of replica `r`, as a genrl agent.
//!
//! Per step, GPipe-style: all micro-batches forward (activations sent on to the next stage, the last
//! stage computing the loss and starting the backward pass at once), then the backward passes as their
//! gradients come back; then the outer synchronisation and one optimizer step. Compute time is charged
//! to the agent's clock from the stage's FLOPs and the agent's device profile.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use candle_core::{Device, Tensor, Var};
use genrl::{AgentCtx, Clock};
use models::data::{Corpus, eval_batches, sample_batch};
use models::{AdamW, Stage, StageInput};
use transport::{PeerId, Transport, TransportExt};

use crate::error::{Error, Result};
use crate::plug::{OuterSync, Recovery, Router};
use crate::spec::PipelineSpec;
use crate::wire::{Msg, from_wire, to_wire};

/// What a worker returns at the end.
#[derive(Debug)]
pub struct WorkerResult {
    /// Stage index.
    pub stage: usize,
    /// Replica index.
    pub replica: usize,
    /// Final weights of this stage, by name.
    pub weights: BTreeMap<String, Tensor>,
}

/// Messages that arrived before anyone asked for them.
struct Mailbox<T: Transport, C: Clock> {
    transport: T,
    clock: C,
    waiting: VecDeque<(PeerId, Msg)>,
    timeout: Duration,
    name: String,
    /// Bytes this worker has sent (frames, headers included).
    sent: u64,
}

impl<T: Transport, C: Clock> Mailbox<T, C> {
    async fn send(&mut self, to: PeerId, msg: &Msg) -> Result<()> {
        let payload = self.transport.codec().encode(msg)?;
        self.sent += (payload.len() + transport::FRAME_HEADER_LEN) as u64;
        Ok(self.transport.send(to, payload).await?)
    }

    /// The first message (waiting or arriving) that `wanted` accepts; others are kept for later.
    async fn take(&mut self, what: &str, wanted: impl Fn(&PeerId, &Msg) -> bool) -> Result<(PeerId, Msg)> {
        if let Some(i) = self.waiting.iter().position(|(p, m)| wanted(p, m)) {
            return self.waiting.remove(i).ok_or_else(|| self.stalled(what));
        }
        let deadline = self.clock.now() + self.timeout;
        loop {
            let left = deadline.saturating_sub(self.clock.now());
            let got = genrl::clock::timeout(&self.clock, left, self.transport.recv_msg::<Msg>()).await;
            match got {
                Err(_) => return Err(self.stalled(what)),
                Ok(Ok((from, msg))) => {
                    if wanted(&from, &msg) {
                        return Ok((from, msg));
                    }
                    self.waiting.push_back((from, msg));
                }
                Ok(Err(transport::TransportError::Decode { from, source })) => {
                    tracing::warn!(worker = %self.name, peer = %from.short(), %source, "undecodable message dropped");
                }
                Ok(Err(e)) => return Err(e.into()),
            }
        }
    }

    /// Sends `values` as round `round` of `step`'s all-reduce.
    async fn send_values(&mut self, to: PeerId, step: u64, round: u32, values: &[f32]) -> Result<()> {
        let data = transport::TensorBytes::from_f32(vec![values.len()], values)?;
        self.send(to, &Msg::Reduce { step, round, data }).await
    }

    /// Takes round `round` of `step`'s all-reduce from `from`: exactly `expected` values, or an error.
    async fn take_values(
        &mut self,
        what: &str,
        from: PeerId,
        step: u64,
        round: u32,
        expected: usize,
    ) -> Result<Vec<f32>> {
        let wanted = |f: &PeerId, m: &Msg| {
            *f == from && matches!(m, Msg::Reduce { step: st, round: rd, .. } if *st == step && *rd == round)
        };
        let (_, msg) = self.take(what, wanted).await?;
        let Msg::Reduce { data, .. } = msg else { return Err(unexpected()) };
        let values = data.to_f32_vec()?;
        if values.len() != expected {
            return Err(Error::config("all-reduce", format!("{what} of {} values, expected {expected}", values.len())));
        }
        Ok(values)
    }

    fn stalled(&self, what: &str) -> Error {
        Error::Stalled { worker: self.name.clone(), what: format!("no {what} within {:?}", self.timeout) }
    }
}

/// Flattens gradients in parameter-name order.
fn flatten(
    names: &[String],
    grads: &BTreeMap<String, Tensor>,
    shapes: &BTreeMap<String, Vec<usize>>,
) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    for n in names {
        match grads.get(n) {
            Some(g) => out.extend(g.flatten_all()?.to_vec1::<f32>()?),
            None => out.extend(std::iter::repeat_n(0f32, shapes[n].iter().product())),
        }
    }
    Ok(out)
}

fn unflatten(
    names: &[String],
    flat: &[f32],
    shapes: &BTreeMap<String, Vec<usize>>,
    device: &Device,
) -> Result<BTreeMap<String, Tensor>> {
    let mut out = BTreeMap::new();
    let mut at = 0;
    for n in names {
        let len: usize = shapes[n].iter().product();
        out.insert(n.clone(), Tensor::from_vec(flat[at..at + len].to_vec(), shapes[n].as_slice(), device)?);
        at += len;
    }
    Ok(out)
}

fn accumulate(into: &mut BTreeMap<String, Tensor>, from: BTreeMap<String, Tensor>) -> Result<()> {
    for (n, g) in from {
        let sum = match into.remove(&n) {
            Some(acc) => (acc + g)?,
            None => g,
        };
        into.insert(n, sum);
    }
    Ok(())
}

/// Runs worker `ctx.index` (stage `index / replicas`, replica `index % replicas`) for the whole run.
pub async fn run_worker<T: Transport, C: Clock>(
    ctx: AgentCtx<T, C>,
    spec: Arc<PipelineSpec>,
    corpus: Arc<Corpus>,
    router: Arc<dyn Router>,
) -> Result<WorkerResult> {
    let replicas = spec.replicas;
    let (s, r) = (ctx.index as usize / replicas, ctx.index as usize % replicas);
    let peer = |stage: usize, replica: usize| ctx.peers[stage * replicas + replica];
    let device = Device::Cpu;
    let specs = models::split_layers(spec.model.n_layers, spec.stages)?;
    let stage = Stage::new(&spec.model, specs[s].clone(), &device)?;
    let params = stage.params().clone();
    let names: Vec<String> = params.iter().map(|(n, _)| n.clone()).collect();
    let shapes: BTreeMap<String, Vec<usize>> = params.iter().map(|(n, v)| (n.clone(), v.dims().to_vec())).collect();
    let mut optim = AdamW::new(spec.optim.clone(), spec.model.backend)?;
    let mut mail = Mailbox {
        transport: ctx.transport.clone(),
        clock: ctx.clock.clone(),
        waiting: VecDeque::new(),
        timeout: spec.peer_timeout,
        name: format!("s{s}r{r}"),
        sent: 0,
    };
    let (mb, seq, m) = (spec.micro_batch, spec.seq, spec.micro_batches as u32);
    let fwd_flops = stage.forward_flops(mb, seq);
    let last = s + 1 == spec.stages;
    let eval_set = if spec.eval_every > 0 && r == 0 && s == 0 {
        eval_batches(&corpus.val, spec.eval_batches, mb, seq, &device)?
    } else {
        Vec::new()
    };

    let Recovery::CheckpointRestart { every: ckpt_every, bytes_per_s } = spec.recovery;
    let state_bytes = 3 * 4 * params.numel(); // weights and two Adam moments, f32
    let io_time = Duration::from_secs_f64(state_bytes as f64 / bytes_per_s);
    let mut checkpoint: Option<(u64, BTreeMap<String, Tensor>, AdamW)> = None;
    let mut pending_failures: Vec<(u64, usize)> = spec.failures.failures.clone();
    let mut step = 0u64;
    while step <= spec.steps {
        // A failure anywhere stops the swarm; everyone rolls back to its last checkpoint. (Every worker
        // knows the plan, as a coordinator would announce it.)
        if let Some(i) = pending_failures.iter().position(|&(at, _)| at == step) {
            let (_, failed) = pending_failures.remove(i);
            let (at, weights, saved_optim) = match &checkpoint {
                Some((at, w, o)) => (*at, w.clone(), o.clone()),
                None => (0, BTreeMap::new(), AdamW::new(spec.optim.clone(), spec.model.backend)?),
            };
            if ctx.index == 0 {
                ctx.metrics.event(
                    ctx.clock.now(),
                    Some(failed as u32),
                    genrl::EventKind::Failure,
                    format!("worker {failed} failed at step {step}"),
                );
            }
            if weights.is_empty() {
                // No checkpoint yet: start over from the initial weights.
                let fresh = Stage::new(&spec.model, specs[s].clone(), &device)?;
                for (name, t) in fresh.params().snapshot() {
                    params.set(&name, &t)?;
                }
            } else {
                for (name, t) in &weights {
                    params.set(name, t)?;
                }
            }
            optim = saved_optim;
            ctx.clock.sleep(io_time).await;
            if ctx.index == 0 {
                ctx.metrics.event(
                    ctx.clock.now(),
                    None,
                    genrl::EventKind::Recovery,
                    format!("restored the step-{at} checkpoint; redoing {} steps", step - at),
                );
            }
            step = at;
            continue;
        }
        if step.is_multiple_of(ckpt_every) && step < spec.steps {
            checkpoint = Some((step, params.snapshot(), optim.clone()));
            ctx.clock.sleep(io_time).await;
        }
        if spec.eval_every > 0 && r == 0 && (step.is_multiple_of(spec.eval_every) || step == spec.steps) {
            let next = (!last).then(|| peer(s + 1, 0));
            evaluate(&ctx, &stage, &mut mail, &eval_set, spec.eval_batches, step, fwd_flops, next).await?;
        }
        if step == spec.steps {
            break;
        }
        let mut grads: BTreeMap<String, Tensor> = BTreeMap::new();
        // Kept for the backward pass of each micro-batch: its input variable, output and sender.
        let mut saved: BTreeMap<u32, (Option<Var>, Tensor, Option<PeerId>)> = BTreeMap::new();
        let mut losses = Vec::new();
        for micro in 0..m {
            let (input, targets, sender) = if s == 0 {
                let draw = step * u64::from(m) + u64::from(micro);
                let (ids, targets) = sample_batch(&corpus.train, mb, seq, spec.seed, draw, r as u64, &device)?;
                (Input::Tokens(ids), targets, None)
            } else {
                let wanted = |_: &PeerId, msg: &Msg| matches!(msg, Msg::Forward { step: st, micro: mi, .. } if *st == step && *mi == micro);
                let (from, msg) = mail.take("activations", wanted).await?;
                let Msg::Forward { hidden, targets, .. } = msg else { return Err(unexpected()) };
                let h = Var::from_tensor(&from_wire(&hidden, &device)?)?;
                (Input::Hidden(h), from_wire(&targets, &device)?, Some(from))
            };
            let out = match &input {
                Input::Tokens(ids) => stage.forward(StageInput::Tokens(ids))?,
                Input::Hidden(h) => stage.forward(StageInput::Hidden(h.as_tensor()))?,
            };
            ctx.compute(fwd_flops).await;
            let input_var = match input {
                Input::Hidden(h) => Some(h),
                Input::Tokens(_) => None,
            };
            if last {
                let loss = stage.loss(&out, &targets)?;
                losses.push(f64::from(loss.to_vec0::<f32>()?));
                // Each micro-batch's loss is a mean over its tokens: scale so the step's gradient is the
                // mean over all micro-batches.
                let store = (loss / f64::from(m))?.backward()?;
                ctx.compute(2.0 * fwd_flops).await;
                accumulate(&mut grads, params.grads(&store))?;
                if let (Some(h), Some(from)) = (&input_var, sender) {
                    let g = store
                        .get(h.as_tensor())
                        .ok_or_else(|| Error::config("pipeline", "no gradient for the stage input"))?;
                    mail.send(from, &Msg::Backward { step, micro, grad: to_wire(g)? }).await?;
                }
            } else {
                let next = router.next_replica(step, micro, s, r, replicas);
                mail.send(
                    peer(s + 1, next),
                    &Msg::Forward { step, micro, hidden: to_wire(&out)?, targets: to_wire(&targets)? },
                )
                .await?;
                saved.insert(micro, (input_var, out, sender));
            }
        }
        // Backward passes of the earlier stages, in the order their gradients arrive.
        for _ in 0..saved.len() {
            let wanted = |_: &PeerId, msg: &Msg| matches!(msg, Msg::Backward { step: st, .. } if *st == step);
            let (_, msg) = mail.take("gradients", wanted).await?;
            let Msg::Backward { micro, grad, .. } = msg else { return Err(unexpected()) };
            let (input_var, out, sender) = saved
                .remove(&micro)
                .ok_or_else(|| Error::config("pipeline", format!("gradient for unknown micro-batch {micro}")))?;
            let g = from_wire(&grad, &device)?;
            let store = (out * g)?.sum_all()?.backward()?;
            ctx.compute(2.0 * fwd_flops).await;
            accumulate(&mut grads, params.grads(&store))?;
            if let (Some(h), Some(from)) = (&input_var, sender) {
                let gh = store
                    .get(h.as_tensor())
                    .ok_or_else(|| Error::config("pipeline", "no gradient for the stage input"))?;
                mail.send(from, &Msg::Backward { step, micro, grad: to_wire(gh)? }).await?;
            }
        }
        if !losses.is_empty() {
            ctx.record("train_loss", step, losses.iter().sum::<f64>() / losses.len() as f64);
        }
        ctx.record("bytes_sent", step, mail.sent as f64);
        let grads = match spec.sync {
            sync @ (OuterSync::AllReduce | OuterSync::TreeAllReduce) if replicas > 1 => {
                let group: Vec<PeerId> = (0..replicas).map(|q| peer(s, q)).collect();
                let flat = flatten(&names, &grads, &shapes)?;
                let mut summed = if sync == OuterSync::AllReduce {
                    ring_all_reduce(&mut mail, &group, r, step, flat).await?
                } else {
                    tree_all_reduce(&mut mail, &group, r, step, flat).await?
                };
                let scale = 1.0 / replicas as f32;
                summed.iter_mut().for_each(|x| *x *= scale);
                unflatten(&names, &summed, &shapes, &device)?
            }
            _ => grads,
        };
        let stats = optim.step(&params, &grads)?;
        if last && r == 0 {
            ctx.record("lr", step, f64::from(stats.lr));
            ctx.record("grad_norm", step, f64::from(stats.grad_norm));
            if let Some(progress) = &spec.progress {
                progress.store(step + 1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        step += 1;
    }
    Ok(WorkerResult { stage: s, replica: r, weights: params.snapshot() })
}

/// Runs the validation batches forward through replica 0's row of stages (`next`: the next stage's
/// replica 0, if any); the last stage records `val_loss`, the mean over the batches, at `step`.
#[allow(clippy::too_many_arguments)]
async fn evaluate<T: Transport, C: Clock>(
    ctx: &AgentCtx<T, C>,
    stage: &Stage,
    mail: &mut Mailbox<T, C>,
    eval_set: &[(Tensor, Tensor)],
    count: usize,
    step: u64,
    fwd_flops: f64,
    next: Option<PeerId>,
) -> Result<()> {
    let device = Device::Cpu;
    let mut losses = Vec::with_capacity(count);
    for index in 0..count as u32 {
        let (out, targets) = if stage.spec().first {
            let (ids, targets) = eval_set
                .get(index as usize)
                .ok_or_else(|| Error::config("pipeline.eval_batches", "validation set too small"))?;
            (stage.forward(StageInput::Tokens(ids))?, targets.clone())
        } else {
            let wanted =
                |_: &PeerId, m: &Msg| matches!(m, Msg::Eval { step: st, index: i, .. } if *st == step && *i == index);
            let (_, msg) = mail.take("validation activations", wanted).await?;
            let Msg::Eval { hidden, targets, .. } = msg else { return Err(unexpected()) };
            (stage.forward(StageInput::Hidden(&from_wire(&hidden, &device)?))?, from_wire(&targets, &device)?)
        };
        ctx.compute(fwd_flops).await;
        match next {
            Some(to) => {
                let msg = Msg::Eval { step, index, hidden: to_wire(&out)?, targets: to_wire(&targets)? };
                mail.send(to, &msg).await?;
            }
            None => losses.push(f64::from(stage.loss(&out, &targets)?.to_vec0::<f32>()?)),
        }
    }
    if !losses.is_empty() {
        ctx.record("val_loss", step, losses.iter().sum::<f64>() / losses.len() as f64);
    }
    Ok(())
}

enum Input {
    Tokens(Tensor),
    Hidden(Var),
}

fn unexpected() -> Error {
    Error::config("message", "unexpected message kind")
}

/// Binary-tree all-reduce (sum) of `data` among `group`, this worker at `me`: at level `d = 1, 2, 4…`
/// rank `k·2d + d` sends its partial sum to rank `k·2d`, which adds it; then the total goes back down the
/// same edges. Every replica ends with the root's bits.
async fn tree_all_reduce<T: Transport, C: Clock>(
    mail: &mut Mailbox<T, C>,
    group: &[PeerId],
    me: usize,
    step: u64,
    mut data: Vec<f32>,
) -> Result<Vec<f32>> {
    let n = group.len();
    let mut levels = Vec::new();
    let mut d = 1;
    while d < n {
        levels.push(d);
        d *= 2;
    }
    const DOWN: u32 = 1 << 16;
    // Up: sum into the lower rank of each pair.
    for (level, &d) in levels.iter().enumerate() {
        if me % (2 * d) == d {
            mail.send_values(group[me - d], step, level as u32, &data).await?;
            break;
        }
        if me.is_multiple_of(2 * d) && me + d < n {
            let incoming = mail.take_values("tree partial sum", group[me + d], step, level as u32, data.len()).await?;
            for (x, y) in data.iter_mut().zip(incoming) {
                *x += y;
            }
        }
    }
    // Down: the total travels back along the same edges, highest level first.
    for (level, &d) in levels.iter().enumerate().rev() {
        let round = DOWN + level as u32;
        if me.is_multiple_of(2 * d) && me + d < n {
            mail.send_values(group[me + d], step, round, &data).await?;
        } else if me % (2 * d) == d {
            data = mail.take_values("tree total", group[me - d], step, round, data.len()).await?;
        }
    }
    Ok(data)
}

/// Ring all-reduce (sum) of `data` among `ring`, this worker at `me`: R−1 reduce-scatter rounds, then
/// R−1 all-gather rounds, each sending one chunk of about `len / R` values to the next replica. Every
/// replica ends with the same bits (the all-gather copies the reduced chunks).
async fn ring_all_reduce<T: Transport, C: Clock>(
    mail: &mut Mailbox<T, C>,
    ring: &[PeerId],
    me: usize,
    step: u64,
    mut data: Vec<f32>,
) -> Result<Vec<f32>> {
    let n = ring.len();
    let len = data.len();
    let chunk = |i: usize| (i * len / n)..((i + 1) * len / n);
    let (next, prev) = (ring[(me + 1) % n], ring[(me + n - 1) % n]);
    for round in 0..2 * (n - 1) {
        let (send_idx, recv_idx) = if round < n - 1 {
            ((me + n - round) % n, (me + n - round - 1) % n)
        } else {
            let k = round - (n - 1);
            ((me + 1 + n - k) % n, (me + n - k) % n)
        };
        mail.send_values(next, step, round as u32, &data[chunk(send_idx)]).await?;
        let range = chunk(recv_idx);
        let incoming = mail.take_values("ring chunk", prev, step, round as u32, range.len()).await?;
        if round < n - 1 {
            for (d, x) in data[range].iter_mut().zip(incoming) {
                *d += x;
            }
        } else {
            data[range].copy_from_slice(&incoming);
        }
    }
    Ok(data)
}
