//! One pipeline worker: stage `s` of replica `r`, as a genrl agent.
//!
//! Per step, GPipe-style: every micro-batch whose path (from the [`Router`]) visits this
//! worker goes forward as its activations arrive (sent on to the next hop; the last hop computes the loss
//! and starts the backward pass at once), then the backward passes run as their gradients come back;
//! then the gradient synchronisation, one optimizer step and the outer round, if any. Failures planned
//! for a step are handled before it ([`Recovery`](crate::Recovery)). Compute time is charged to the agent's clock from
//! the stage's FLOPs and the agent's device profile.
//!
//! On real nodes a worker can also be killed for real and followed by a successor with its key
//! ([`Replacement`]): the successor sends every other worker [`Msg::Replace`], which ends whatever wait
//! each is in; each answers with the step it was training, and the successor has everyone go back to
//! the start of the earliest of them ([`Msg::Resume`], with a new recovery epoch so that nothing sent
//! before counts). A worker keeps its state as of the start of its last two steps for that, since one
//! may have finished a step that another had not. The successor then gets its state as a failed worker
//! of the simulated network does, from the same [`Source`].
//!
//! The same halt announces a worker gone for good ([`leave_run`]): the others resume without it, each
//! scheduling the paths again by itself from the new membership ([`Router::without`]: SkipPipe's router
//! searches its paths again, the baseline's rows go around it through another replica of its stage),
//! the stage's other replicas averaging gradients without it and standing in for it in its row (the
//! gradient norm, the evaluation). A later node with its key brings the place
//! back: it starts from a replica of its stage and the paths are scheduled with it again.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use candle_core::{DType, Device, Tensor, Var};
use genrl::{AgentCtx, Clock, EventKind};
use models::data::{Corpus, eval_batches, sample_batch};
use models::{AdamW, Stage, StageInput, StageSpec};
use transport::{PeerId, TensorBytes, Transport};

use crate::collective::{
    ATTEMPT_STRIDE, GRADIENT_TAG, JOIN_VIEW, Mailbox, OUTER_TAG, QuorumTimeouts, all_reduce_mean, is_group, quorum,
    run_outer_round, run_outer_round_tagged,
};
use crate::error::{Error, Result};
use crate::plug::{Hop, Router, check_path};
use crate::probe::WeightProbe;
use crate::rebuild::{Donor, DonorWeights};
use crate::recovery::{KeptCopy, Source};
use crate::spec::{GradientScaling, PipelineSpec, Replacement};
use crate::storage::{CheckpointStore, StoredState};
use crate::sync::{OuterRound, OuterState};
use crate::wire::{Msg, WeightsKind, from_wire, to_wire};

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

/// A stage's tensors by name (weights or gradients) as one flat tensor on `device`, in parameter-name
/// order, zeros for a name without one: the layout of every flat vector a stage exchanges.
fn flatten_tensor(
    names: &[String],
    tensors: &BTreeMap<String, Tensor>,
    shapes: &BTreeMap<String, Vec<usize>>,
    device: &Device,
) -> Result<Tensor> {
    let parts = names
        .iter()
        .map(|n| match tensors.get(n) {
            Some(t) => Ok(t.flatten_all()?),
            None => Ok(Tensor::zeros(shapes[n].iter().product::<usize>(), DType::F32, device)?),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Tensor::cat(&parts, 0)?)
}

/// The tensors by name again from [`flatten_tensor`]'s layout (views of `flat`).
fn unflatten_tensor(
    names: &[String],
    flat: &Tensor,
    shapes: &BTreeMap<String, Vec<usize>>,
) -> Result<BTreeMap<String, Tensor>> {
    let mut at = 0;
    let mut out = BTreeMap::new();
    for n in names {
        let len: usize = shapes[n].iter().product();
        out.insert(n.clone(), flat.narrow(0, at, len)?.reshape(shapes[n].as_slice())?);
        at += len;
    }
    Ok(out)
}

/// [`flatten_tensor`] on the host, for the weight probe.
fn flatten(
    names: &[String],
    tensors: &BTreeMap<String, Tensor>,
    shapes: &BTreeMap<String, Vec<usize>>,
    device: &Device,
) -> Result<Vec<f32>> {
    Ok(flatten_tensor(names, tensors, shapes, device)?.to_vec1::<f32>()?)
}

/// The stage's weights as one flat tensor on `device` ([`flatten_tensor`]'s layout): a copy, which
/// later updates of the weights leave as it is.
fn flat_weights(
    names: &[String],
    params: &models::Params,
    shapes: &BTreeMap<String, Vec<usize>>,
    device: &Device,
) -> Result<Tensor> {
    flatten_tensor(names, &params.snapshot(), shapes, device)
}

/// Sets the stage's weights from one flat tensor in [`flatten_tensor`]'s layout.
fn set_flat_weights(
    names: &[String],
    params: &models::Params,
    flat: &Tensor,
    shapes: &BTreeMap<String, Vec<usize>>,
) -> Result<()> {
    for (name, t) in unflatten_tensor(names, flat, shapes)? {
        params.set(&name, &t)?;
    }
    Ok(())
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
    probe: Option<Arc<WeightProbe>>,
) -> Result<WorkerResult> {
    let mut w = Worker::new(ctx, spec, corpus)?;
    let spec = w.spec.clone();
    let (s, r) = (w.s, w.r);
    // Every data replica holds the validation batches: the row that evaluates is replica 0's, or every
    // replica's, and the next one's once a data replica left the run for good.
    let eval_set = if spec.eval_every > 0 && s == 0 {
        eval_batches(&w.corpus.val, spec.eval_batches, spec.micro_batch, spec.seq, &w.device)?
    } else {
        Vec::new()
    };
    let replaceable = spec.replacement != Replacement::Off;
    w.mail.set_halts(replaceable);
    let mut step = if spec.replacement == Replacement::Replaces {
        w.replace().await?
    } else if spec.late_join && w.replicas > 1 {
        w.join().await?
    } else {
        0
    };
    let plan = StepPlan { eval_set, probe };
    while step <= spec.steps {
        if replaceable {
            w.remember(step);
        }
        match w.step(step, &plan).await {
            Ok(Some(next)) => step = next,
            Ok(None) => break,
            Err(Error::Replaced { by, .. }) => step = w.halt(by, step).await?,
            Err(e) => return Err(e),
        }
    }
    if let Some(wait) = spec.sync.elastic_wait()
        && w.replicas > 1
    {
        w.linger(step, QuorumTimeouts::from_wait(wait)).await?;
    }
    Ok(WorkerResult { stage: s, replica: r, weights: w.params.snapshot() })
}

/// Announces, with worker `ctx.index`'s key, that the worker has left the run for good (its node is
/// gone): the other workers halt, go back to the earliest step any of them was training, and go on
/// without it on paths their router schedules again (SkipPipe's; routers that cannot leave a worker out
/// refuse, and the run goes on as it was). Returns the step they train again from.
pub async fn leave_run<T: Transport, C: Clock>(
    ctx: AgentCtx<T, C>,
    spec: Arc<PipelineSpec>,
    corpus: Arc<Corpus>,
) -> Result<u64> {
    Worker::new(ctx, spec, corpus)?.leave().await
}

/// What every step of a worker uses: its validation batches (a data replica's) and the probe of the
/// replicas' weights.
struct StepPlan {
    eval_set: Vec<(Tensor, Tensor)>,
    probe: Option<Arc<WeightProbe>>,
}

/// One worker's state between steps.
struct Worker<T: Transport, C: Clock> {
    ctx: AgentCtx<T, C>,
    spec: Arc<PipelineSpec>,
    corpus: Arc<Corpus>,
    device: Device,
    /// Stage and replica.
    s: usize,
    r: usize,
    replicas: usize,
    /// Every stage's part of the model.
    specs: Vec<StageSpec>,
    stage: Stage,
    params: models::Params,
    names: Vec<String>,
    shapes: BTreeMap<String, Vec<usize>>,
    optim: AdamW,
    mail: Mailbox<T, C>,
    outer: Option<Box<dyn OuterState>>,
    fwd_flops: f64,
    /// Forward FLOPs of the other stage whose forward pass this worker also runs, if the recovery
    /// strategy asks for one (redundant computation).
    shadow_flops: Option<f64>,
    /// The copies of state the recovery strategy keeps that this stage sends or keeps.
    kept: Vec<KeptCopy>,
    last: bool,
    /// Checkpoint-restart: the last two checkpoints (a worker may have taken one that another has not
    /// yet), and where they are also stored on real nodes.
    checkpoints: VecDeque<Checkpoint>,
    store: Option<CheckpointStore>,
    /// A replaceable worker's state as of the start of its last two steps ([`Replacement::Ready`]).
    undo: VecDeque<Checkpoint>,
    /// This stage's gradient norm after clipping, at the last step.
    last_grad_norm: f32,
    /// The copies of other stages' state this worker keeps ([`KeptCopy`]), by the stage copied.
    copies: BTreeMap<usize, Kept>,
    pending_failures: Vec<(u64, usize)>,
    /// Elastic data parallelism: the replicas of the last group this worker agreed on (a joiner's
    /// donor's), and those that joined through it since.
    view: Vec<usize>,
    announced: Vec<usize>,
    /// The workers (grid indices, increasing) that left the run for good, and the router that schedules
    /// the paths without them (the spec's while nobody has left).
    departed: Vec<usize>,
    router: Arc<dyn Router>,
}

/// What forming an elastic group gave a worker.
enum Group {
    /// The group (increasing replica indices) and the try that settled it.
    Members(Vec<usize>, u32),
    /// The worker joined the group again instead: it goes on from this step.
    Rejoined(u64),
}

/// What the gradient average gave a worker.
enum Synced {
    /// The group's mean gradients.
    Mean(BTreeMap<String, Tensor>),
    /// The worker came too late for its group and joined again: it goes on from this step.
    Rejoined(u64),
}

/// A copy of another stage's state: the step after which it was sent and its tensors (stage-local
/// names; optimizer moments under [`MOMENT_PREFIX`]).
#[derive(Clone)]
struct Kept {
    step: u64,
    tensors: Vec<(String, TensorBytes)>,
}

impl<T: Transport, C: Clock> Worker<T, C> {
    fn new(ctx: AgentCtx<T, C>, spec: Arc<PipelineSpec>, corpus: Arc<Corpus>) -> Result<Self> {
        let replicas = spec.replicas;
        let (s, r) = (ctx.index as usize / replicas, ctx.index as usize % replicas);
        let device = spec.device.clone();
        let specs = spec.stage_specs()?;
        let stage = Stage::new(&spec.model, specs[s].clone(), &device)?;
        let shadow_flops = match spec.recovery.shadow_forward(s, spec.stages) {
            Some(other) => {
                Some(Stage::new(&spec.model, specs[other].clone(), &device)?.forward_flops(spec.micro_batch, spec.seq))
            }
            None => None,
        };
        let kept = spec.recovery.copies(spec.stages).into_iter().filter(|c| c.of == s || c.at == s).collect();
        let params = stage.params().clone();
        let names: Vec<String> = params.iter().map(|(n, _)| n.clone()).collect();
        let shapes = params.iter().map(|(n, v)| (n.clone(), v.dims().to_vec())).collect();
        let optim = AdamW::new(spec.optim.clone(), spec.model.backend)?;
        let mut mail = Mailbox::new(ctx.transport.clone(), ctx.clock.clone(), spec.peer_timeout, format!("s{s}r{r}"));
        mail.set_resident_tensors(spec.resident_tensors);
        let store = spec.checkpoint_dir.as_ref().map(|dir| CheckpointStore::new(dir, ctx.index as usize));
        let mut w = Self {
            fwd_flops: stage.forward_flops(spec.micro_batch, spec.seq),
            shadow_flops,
            kept,
            last: s + 1 == spec.stages,
            pending_failures: spec.world.failures.failures.clone(),
            ctx,
            corpus,
            device,
            s,
            r,
            replicas,
            specs,
            stage,
            params,
            names,
            shapes,
            optim,
            mail,
            outer: None,
            checkpoints: VecDeque::new(),
            store,
            undo: VecDeque::new(),
            last_grad_norm: 0.0,
            copies: BTreeMap::new(),
            view: (0..replicas).collect(),
            announced: Vec::new(),
            departed: Vec::new(),
            router: spec.router.clone(),
            spec,
        };
        w.restart_outer()?;
        Ok(w)
    }

    /// Step `step` of the run: joiners served, planned failures handled, a checkpoint and an
    /// evaluation when due, then the training step, the gradient average, the optimizer step, the outer
    /// round and the kept copies. Returns the step to train next; `None` after the evaluation that
    /// follows the last step.
    async fn step(&mut self, step: u64, plan: &StepPlan) -> Result<Option<u64>> {
        let spec = self.spec.clone();
        let (s, r) = (self.s, self.r);
        if self.replicas > 1 {
            self.serve_joiners(step).await?;
        }
        if let Some(rollback) = self.handle_failures(step).await? {
            return Ok(Some(rollback));
        }
        if let Some((every, bytes_per_s)) = spec.recovery.checkpoints()
            && step.is_multiple_of(every)
            && step < spec.steps
        {
            if let Some(store) = &self.store {
                store.write(&StoredState { step, tensors: self.full_state(Bound::Storage)? })?;
            }
            let state = self.state_at(step);
            keep_last_two(&mut self.checkpoints, state);
            self.ctx.clock.sleep(self.state_io_time(bytes_per_s)).await;
        }
        let evaluating = spec.eval_every > 0 && (step.is_multiple_of(spec.eval_every) || step == spec.steps);
        if evaluating {
            // The evaluating rows this worker stands in (its own, and a departed worker's of its stage).
            let rows: Vec<(u32, Option<PeerId>)> = self
                .eval_rows()
                .into_iter()
                .filter(|&row| self.stand_in(s, row) == r)
                .map(|row| (row as u32, (!self.last).then(|| self.peer(s + 1, self.stand_in(s + 1, row)))))
                .collect();
            if !rows.is_empty() {
                let (ctx, stage, mail) = (&self.ctx, &self.stage, &mut self.mail);
                evaluate(ctx, stage, mail, &plan.eval_set, spec.eval_batches, step, self.fwd_flops, &rows).await?;
            }
        }
        if let Some(probe) = &plan.probe
            && evaluating
        {
            probe.add(step, s, &flatten(&self.names, &self.params.snapshot(), &self.shapes, &self.device)?);
        }
        if step == spec.steps {
            return Ok(None);
        }
        let waited_before = self.mail.waited();
        let grads = self.train_step(step).await?;
        let grads = match self.sync_gradients(step, grads).await? {
            Synced::Mean(grads) => grads,
            // Left out of the group for being late: this worker now has the group's state of step `at`.
            Synced::Rejoined(at) => return Ok(Some(at)),
        };
        let stats = match spec.gradients {
            GradientScaling::PerStage => self.optim.step(&self.params, &grads)?,
            GradientScaling::WholeModel => {
                let norm = self.model_grad_norm(step, &grads).await?;
                self.optim.step_with_norm(&self.params, &grads, norm)?
            }
        };
        let clip = self.optim.config().grad_clip;
        self.last_grad_norm = if clip > 0.0 { stats.grad_norm.min(clip) } else { stats.grad_norm };
        if self.last && r == 0 {
            self.ctx.record("lr", step, f64::from(stats.lr));
            self.ctx.record("grad_norm", step, f64::from(stats.grad_norm));
        }
        if self.outer.is_some()
            && let Some(round) = spec.sync.round(step + 1, r, self.replicas)
        {
            let (t0, b0) = (self.ctx.clock.now(), self.mail.sent());
            match spec.sync.elastic_wait() {
                Some(wait) if self.replicas > 1 => {
                    if let Some(at) = self.elastic_outer_round(step, &round, wait).await? {
                        // Left out for being late: this worker now has the group's state of step `at`.
                        return Ok(Some(at));
                    }
                }
                _ => {
                    let at = (s, r, self.replicas);
                    let state = self.outer.as_mut().ok_or_else(unexpected)?;
                    let (ctx, mail) = (&self.ctx, &mut self.mail);
                    outer_round(ctx, mail, state.as_mut(), &round, at, step, &self.params, &self.names, &self.shapes)
                        .await?;
                }
            }
            self.ctx.record("sync_time", step, (self.ctx.clock.now() - t0).as_secs_f64());
            self.ctx.record("sync_bytes", step, (self.mail.sent() - b0) as f64);
        }
        self.keep_copies(step).await?;
        self.ctx.record("idle_time", step, (self.mail.waited() - waited_before).as_secs_f64());
        self.ctx.record("bytes_sent", step, self.mail.sent() as f64);
        if let Some(progress) = &spec.progress {
            // Once all of the step is done, what it sends included. Every worker reports (a real node
            // runs only one); the count only rises.
            progress.fetch_max(step + 1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(Some(step + 1))
    }

    /// This worker's state as of the start of `step`.
    fn state_at(&self, step: u64) -> Checkpoint {
        Checkpoint {
            step,
            weights: self.params.snapshot(),
            optim: self.optim.clone(),
            outer: self.outer.as_ref().map(|o| o.snapshot()),
            last_grad_norm: self.last_grad_norm,
            copies: self.copies.clone(),
        }
    }

    /// Puts back a state [`state_at`](Self::state_at) took.
    fn restore_state(&mut self, state: Checkpoint) -> Result<()> {
        for (name, t) in &state.weights {
            self.params.set(name, t)?;
        }
        self.optim = state.optim;
        match state.outer {
            Some(o) => self.outer = Some(o),
            None => self.restart_outer()?,
        }
        self.last_grad_norm = state.last_grad_norm;
        self.copies = state.copies;
        Ok(())
    }

    /// A replaceable worker keeps its state as of the start of its last two steps: when a replacement
    /// halts the swarm, a worker one step ahead of the others goes back one.
    fn remember(&mut self, step: u64) {
        let state = self.state_at(step);
        keep_last_two(&mut self.undo, state);
    }

    /// This node takes a place in the run (it has that place's key): a killed worker's, or one that left
    /// the run for good. It tells every other worker to halt, waits for each one's step, has everyone
    /// train again from the earliest of them (in a new recovery epoch, so that nothing sent before
    /// counts), and gets its state: a killed worker's from the recovery strategy's source, as a failed
    /// worker of the simulated network does; a departed one's from a replica of its stage, the paths
    /// being scheduled again with it. Returns the step to train next.
    async fn replace(&mut self) -> Result<u64> {
        let t0 = self.ctx.clock.now();
        let (s, r) = (self.s, self.r);
        // Checked before anyone halts: checkpoint-restart needs the killed worker's stored checkpoints.
        if self.spec.recovery.checkpoints().is_some() && self.store.is_none() {
            return Err(Error::config(
                "replacement",
                format!(
                    "{} needs the killed worker's checkpoints in storage (checkpoint_dir)",
                    self.spec.recovery.name()
                ),
            ));
        }
        let halted = self.halt_everyone().await?;
        let me = self.ctx.index as usize;
        let back = halted.departed.contains(&me);
        self.set_departed(halted.departed.iter().copied().filter(|&w| w != me).collect())?;
        let source = self.source_for((s, r), back)?;
        // Checkpoint-restart: the checkpoints the killed worker stored (the state before step 0, the
        // seeded initial weights, is always at hand).
        let stored = match (&source, &self.store) {
            (Source::Checkpoint, Some(store)) => store.steps()?,
            _ => Vec::new(),
        };
        let (earliest, ahead) = halted.steps();
        let checkpoint = source == Source::Checkpoint;
        let resume = if checkpoint {
            // The latest checkpoint every worker has, this one's predecessor included.
            let held = |c: &u64| halted.answers.values().all(|h| h.checkpoints.contains(c));
            stored.iter().copied().filter(held).max().unwrap_or(0)
        } else {
            self.common_step_or_stop(&halted).await?
        };
        let epoch = self.resume_everyone(&halted, resume, checkpoint).await?;
        if checkpoint {
            let read = match &self.store {
                Some(store) if stored.contains(&resume) => Some(store.read(resume)?),
                _ => None,
            };
            if let Some(state) = read {
                self.install_full_state(resume, state.tensors)?;
            }
            let now = self.ctx.clock.now();
            let detail = format!("s{s}r{r} failed at step {earliest}");
            self.ctx.metrics.event(now, Some(self.ctx.index), EventKind::Failure, detail);
            let detail = format!(
                "s{s}r{r}: read its predecessor's step-{resume} checkpoint from storage; everyone restored theirs"
            );
            self.ctx.metrics.event(now, Some(self.ctx.index), EventKind::Recovery, detail);
        } else {
            // The learning-rate schedule goes on from the step everyone resumes at.
            self.optim.restore(resume, &BTreeMap::new())?;
            self.recover(resume, &source, !back).await?;
        }
        let took = (self.ctx.clock.now() - t0).as_secs_f64();
        let what = if back {
            format!("s{s}r{r} came back to the run (paths scheduled again for it)")
        } else {
            format!("s{s}r{r} replaced the killed worker")
        };
        let detail = format!(
            "{what}: {} others halted at steps {earliest} to {ahead}; everyone trains again from step {resume} (epoch {epoch}), {took:.3} s after this node started",
            halted.answers.len()
        );
        self.ctx.metrics.event(self.ctx.clock.now(), Some(self.ctx.index), EventKind::Join, detail);
        Ok(resume)
    }

    /// This node announces, with a worker's key, that the worker has left the run for good: it halts
    /// the others, has them go back to the earliest step any of them was training, without it (the
    /// router schedules the paths again for those left, each worker by itself), and is done. Returns
    /// the step the others train again from. What cannot go on without the worker is refused before
    /// anyone is halted; a router that finds no paths without it has everyone go on as they were.
    async fn leave(&mut self) -> Result<u64> {
        let (s, r) = (self.s, self.r);
        let refuse = |why: String| Err(Error::config("leave", format!("s{s}r{r} cannot leave the run: {why}")));
        if self.outer.is_some() {
            return refuse("its stage's outer rounds count on every replica".into());
        }
        if !self.spec.recovery.copies(self.spec.stages).is_empty() {
            return refuse(format!("{} keeps copies of each stage on its neighbours", self.spec.recovery.name()));
        }
        let me = self.ctx.index as usize;
        if let Err(e) = self.spec.router.without(&[me], self.spec.stages, self.replicas) {
            return refuse(e.to_string());
        }
        let halted = self.halt_everyone().await?;
        let mut departed = halted.departed.clone();
        departed.push(me);
        let (earliest, ahead) = halted.steps();
        let resume = self.common_step_or_stop(&halted).await?;
        let rerouted = self.set_departed(departed);
        if rerouted.is_err() {
            // Nobody goes on without this worker: everyone trains again as they were.
            self.set_departed(halted.departed.clone())?;
        }
        let epoch = self.resume_everyone(&halted, resume, false).await?;
        rerouted?;
        let detail = format!(
            "s{s}r{r} left the run for good: {} others halted at steps {earliest} to {ahead}; they train again from step {resume} (epoch {epoch}) without workers {:?}",
            halted.answers.len(),
            self.departed
        );
        self.ctx.metrics.event(self.ctx.clock.now(), Some(self.ctx.index), EventKind::Failure, detail);
        Ok(resume)
    }

    /// Tells every other worker to halt ([`Msg::Replace`]) and waits for the answer of each one still
    /// in the run. A worker that left does not answer (nor, if its node is gone, take the message: the
    /// halts go out side by side, so that one stuck connecting to it holds up no other).
    async fn halt_everyone(&mut self) -> Result<Halts> {
        let me = self.ctx.transport.local_peer();
        let others: Vec<PeerId> = self.ctx.peers.iter().copied().filter(|p| *p != me).collect();
        for &peer in &others {
            self.mail.send_in_background(peer, &Msg::Replace)?;
        }
        let mut answers: BTreeMap<PeerId, Halt> = BTreeMap::new();
        // Who left, as the first answer says (every answer must say the same).
        let mut departed: Option<Vec<usize>> = None;
        loop {
            let gone = |p: &PeerId| {
                let place = self.ctx.peers.iter().position(|q| q == p);
                departed.as_ref().is_some_and(|d| place.is_some_and(|w| d.contains(&w)))
            };
            if departed.is_some() && others.iter().all(|p| gone(p) || answers.contains_key(p)) {
                break;
            }
            let wanted = |f: &PeerId, m: &Msg| others.contains(f) && matches!(m, Msg::Halted { .. });
            let (from, Msg::Halted { step, epoch, checkpoints, departed: theirs }) =
                self.mail.take("every other worker's halt", wanted).await?
            else {
                return Err(unexpected());
            };
            let mut theirs: Vec<usize> = theirs.into_iter().map(|w| w as usize).collect();
            theirs.sort_unstable();
            match &departed {
                Some(known) if *known != theirs => {
                    return Err(Error::config(
                        "replacement",
                        format!("{} says workers {theirs:?} left the run, another said {known:?}", from.short()),
                    ));
                }
                Some(_) => {}
                None => departed = Some(theirs),
            }
            answers.insert(from, Halt { step, epoch, checkpoints });
        }
        Ok(Halts { answers, departed: departed.unwrap_or_default() })
    }

    /// The step every worker that halted can train again from ([`Halts::common_step`]); if there is none,
    /// tells them so ([`Msg::NoResume`]), so that they stop at once with the reason, and fails with it.
    async fn common_step_or_stop(&mut self, halted: &Halts) -> Result<u64> {
        let why = match halted.common_step() {
            Ok(step) => return Ok(step),
            Err(why) => why,
        };
        for &peer in halted.answers.keys() {
            let msg = Msg::NoResume { reason: why.to_string() };
            if let Err(e) = self.mail.send(peer, &msg).await {
                tracing::warn!(peer = %peer.short(), error = %e, "could not tell a halted worker that the run stops");
            }
        }
        Err(why)
    }

    /// Tells every worker that halted to train again from `step` (restoring their checkpoint of it if
    /// `checkpoint`) with the run's membership as this worker now has it, in a new recovery epoch, and
    /// enters that epoch; returns it.
    async fn resume_everyone(&mut self, halted: &Halts, step: u64, checkpoint: bool) -> Result<u32> {
        let epoch = halted.answers.values().map(|h| h.epoch).max().unwrap_or(0) + 1;
        let departed: Vec<u32> = self.departed.iter().map(|&w| w as u32).collect();
        for &peer in halted.answers.keys() {
            self.mail.send(peer, &Msg::Resume { step, epoch, checkpoint, departed: departed.clone() }).await?;
        }
        self.mail.set_epoch(epoch);
        Ok(epoch)
    }

    /// Where worker `failed` gets its state when it takes its place again: the recovery strategy's
    /// source for a killed worker (never a worker that left the run); for one that left the run and
    /// comes `back`, its stage's first other replica in the run (weights and optimizer moments, as a
    /// joiner).
    fn source_for(&self, failed: Hop, back: bool) -> Result<Source> {
        if !back {
            // Workers that left are as good as failed: the strategy must not name one as a source.
            let mut gone = vec![failed];
            gone.extend(self.departed.iter().map(|&w| (w / self.replicas, w % self.replicas)));
            return Ok(self.spec.recovery.source(failed, &gone, self.spec.stages, self.replicas));
        }
        match self.live_replicas(failed.0).into_iter().find(|&q| q != failed.1) {
            Some(q) => Ok(Source::Replica(q)),
            None => Err(Error::config("replacement", format!("no other replica of stage {} is in the run", failed.0))),
        }
    }

    /// A replacement (`by`) asked this worker to halt while it trained `step`: tells it that step, waits
    /// for the step everyone resumes from, goes back to its state at that step's start, enters the new
    /// recovery epoch and sends the replacement what the recovery strategy has it send. Returns the step
    /// to train next.
    async fn halt(&mut self, by: PeerId, step: u64) -> Result<u64> {
        let place = self
            .ctx
            .peers
            .iter()
            .position(|p| *p == by)
            .ok_or_else(|| Error::config("replacement", format!("{} is not a worker of this swarm", by.short())))?;
        let failed = (place / self.replicas, place % self.replicas);
        let checkpoints = self.checkpoints.iter().map(|c| c.step).collect();
        let departed = self.departed.iter().map(|&w| w as u32).collect();
        self.mail.send(by, &Msg::Halted { step, epoch: self.mail.epoch(), checkpoints, departed }).await?;
        let wanted = |f: &PeerId, m: &Msg| *f == by && matches!(m, Msg::Resume { .. } | Msg::NoResume { .. });
        let (resume, epoch, checkpoint, departed) = match self.mail.take("the step to resume from", wanted).await? {
            (_, Msg::Resume { step, epoch, checkpoint, departed }) => (step, epoch, checkpoint, departed),
            (_, Msg::NoResume { reason }) => {
                return Err(Error::config(
                    "replacement",
                    format!(
                        "s{}r{} halted at step {step}, and {} cannot resume the run: {reason}",
                        self.s,
                        self.r,
                        by.short()
                    ),
                ));
            }
            _ => return Err(unexpected()),
        };
        // `by` left the run for good, came back to it, or took a killed worker's place.
        let departed: Vec<usize> = departed.into_iter().map(|w| w as usize).collect();
        let (was_out, is_out) = (self.departed.contains(&place), departed.contains(&place));
        let (kept, what) = if checkpoint { (&self.checkpoints, "checkpoints") } else { (&self.undo, "states") };
        let state = match kept.iter().find(|u| u.step == resume) {
            Some(state) => state.clone(),
            None if checkpoint && resume == 0 => self.initial_state()?,
            None => {
                let steps: Vec<u64> = kept.iter().map(|u| u.step).collect();
                return Err(Error::config(
                    "replacement",
                    format!(
                        "s{}r{} halted at step {step} with the {what} of steps {steps:?}, not of step {resume}",
                        self.s, self.r
                    ),
                ));
            }
        };
        self.checkpoints.retain(|c| c.step <= resume);
        self.restore_state(state)?;
        // A copy kept without waiting: what arrived of it before the halt is all there will be (the
        // killed worker may have sent it, or not).
        let lazy: Vec<usize> = self.kept.iter().filter(|c| c.at == self.s && !c.wait).map(|c| c.of).collect();
        if resume > 0 {
            for of in lazy {
                self.refresh_copy(of, resume - 1, false).await?;
            }
        }
        self.mail.set_epoch(epoch);
        self.set_departed(departed)?;
        let (s, r) = (self.s, self.r);
        if is_out {
            let detail = format!(
                "s{s}r{r} halted at step {step}: s{}r{} left the run for good; trains again from step {resume} (epoch {epoch}) on paths scheduled without workers {:?}",
                failed.0, failed.1, self.departed
            );
            self.ctx.metrics.event(self.ctx.clock.now(), Some(self.ctx.index), EventKind::Failure, detail);
            return Ok(resume);
        }
        let source = self.source_for(failed, was_out)?;
        self.send_recovery(resume, failed, &source, false).await?;
        let why = if was_out { "the return" } else { "the replacement" };
        let mut detail = format!(
            "s{s}r{r} halted at step {step} for {why} of s{}r{}; trains again from step {resume} (epoch {epoch})",
            failed.0, failed.1
        );
        if source == Source::CopyAt((s, r)) {
            detail += &match self.copies.get(&failed.0) {
                Some(c) => format!("; sent its copy of stage {}'s state after step {}", failed.0, c.step),
                None => format!("; had no copy of stage {} to send", failed.0),
            };
        }
        self.ctx.metrics.event(self.ctx.clock.now(), Some(self.ctx.index), EventKind::Recovery, detail);
        Ok(resume)
    }

    /// Starts the outer protocol's state (anchor, momentum…) afresh from the current weights: at the
    /// start, and whenever the weights came from elsewhere (a recovery, a join).
    fn restart_outer(&mut self) -> Result<()> {
        self.outer = self.spec.sync.start(&flat_weights(&self.names, &self.params, &self.shapes, &self.device)?)?;
        Ok(())
    }

    fn peer(&self, stage: usize, replica: usize) -> PeerId {
        self.ctx.peers[stage * self.replicas + replica]
    }

    /// Whether worker `(stage, replica)` is still in the run (has not left it for good).
    fn live(&self, stage: usize, replica: usize) -> bool {
        crate::plug::in_run(&self.departed, (stage, replica), self.replicas)
    }

    /// The replicas of `stage` still in the run.
    fn live_replicas(&self, stage: usize) -> Vec<usize> {
        (0..self.replicas).filter(|&q| self.live(stage, q)).collect()
    }

    /// The replica of `stage` that stands in row `row` ([`crate::plug::stand_in`]).
    fn stand_in(&self, stage: usize, row: usize) -> usize {
        crate::plug::stand_in(&self.departed, stage, row, self.replicas)
    }

    /// The rows that evaluate: every data replica's still in the run, or only the first of them.
    fn eval_rows(&self) -> Vec<usize> {
        let rows = self.live_replicas(0);
        if self.spec.eval_all_replicas { rows } else { rows.into_iter().take(1).collect() }
    }

    /// The run goes on without the workers `departed` (grid indices): the paths are scheduled again for
    /// those left (by this worker alone; every worker finds the same ones).
    fn set_departed(&mut self, departed: Vec<usize>) -> Result<()> {
        let departed = crate::plug::departed_set(&departed);
        if departed == self.departed {
            return Ok(());
        }
        self.router = if departed.is_empty() {
            self.spec.router.clone()
        } else {
            self.spec.router.without(&departed, self.spec.stages, self.replicas)?
        };
        self.departed = departed;
        Ok(())
    }

    /// Time to write or read this stage's weights and Adam moments at `bytes_per_s`.
    fn state_io_time(&self, bytes_per_s: f64) -> Duration {
        Duration::from_secs_f64((3 * 4 * self.params.numel()) as f64 / bytes_per_s)
    }

    /// Handles the failures planned for `step`; `Some(step)` if every worker must roll back to the
    /// checkpoint taken before that step.
    async fn handle_failures(&mut self, step: u64) -> Result<Option<u64>> {
        let now: Vec<usize> = self.pending_failures.iter().filter(|f| f.0 == step).map(|f| f.1).collect();
        if now.is_empty() {
            return Ok(None);
        }
        self.pending_failures.retain(|f| f.0 != step);
        let failed: Vec<(usize, usize)> = now.iter().map(|&w| (w / self.replicas, w % self.replicas)).collect();
        let (stages, replicas) = (self.spec.stages, self.replicas);
        let sources: Vec<Source> =
            failed.iter().map(|&hit| self.spec.recovery.source(hit, &failed, stages, replicas)).collect();
        if sources.contains(&Source::Checkpoint) {
            return self.roll_back(step, &failed).await.map(Some);
        }
        // First send what others need from us, then (if we failed) rebuild from what arrives.
        for (&hit, source) in failed.iter().zip(&sources) {
            self.send_recovery(step, hit, source, true).await?;
        }
        let Some(i) = failed.iter().position(|&hit| hit == (self.s, self.r)) else { return Ok(None) };
        self.recover(step, &sources[i], true).await?;
        Ok(None)
    }

    /// Sends the failed worker `failed` what its recovery from `source` needs of this worker before
    /// `step`, if anything. A kept copy is the one as of step `step − 1`, waited for if `wait_copy` and it
    /// is still on its way; otherwise the one at hand.
    async fn send_recovery(&mut self, step: u64, failed: Hop, source: &Source, wait_copy: bool) -> Result<()> {
        let (fs, fr) = failed;
        let to = self.peer(fs, fr);
        match source {
            Source::Replica(q) if (self.s, self.r) == (fs, *q) => {
                let mut tensors = self.local_weights(Bound::Peer)?;
                tensors.extend(self.moments(Bound::Peer)?);
                self.send_weights(to, step, WeightsKind::Donor, fs, tensors).await?;
            }
            Source::Donors(donors) if self.r == fr => {
                let me = self.s;
                for donor in donors.iter().filter(|d| d.stage() == me) {
                    let tensors = match donor {
                        Donor::Stage(_) => self.local_weights(Bound::Peer)?,
                        Donor::CopyHeldBy(_) => self.copies.get(&fs).map(|c| c.tensors.clone()).unwrap_or_default(),
                    };
                    self.send_weights(to, step, WeightsKind::Donor, fs, tensors).await?;
                }
            }
            Source::CopyAt(holder) if (self.s, self.r) == *holder => {
                let tensors = if wait_copy {
                    self.copy_of(fs, step).await?
                } else {
                    self.copies.get(&fs).map(|c| c.tensors.clone()).unwrap_or_default()
                };
                self.send_weights(to, step, WeightsKind::Shadow, fs, tensors).await?;
            }
            _ => {}
        }
        Ok(())
    }

    /// The state every worker starts the run with (its seeded initial weights): the checkpoint before
    /// step 0, whether or not one was taken.
    fn initial_state(&self) -> Result<Checkpoint> {
        Ok(Checkpoint {
            step: 0,
            weights: self.fresh_weights()?,
            optim: AdamW::new(self.spec.optim.clone(), self.spec.model.backend)?,
            outer: None,
            last_grad_norm: 0.0,
            copies: BTreeMap::new(),
        })
    }

    /// Every worker restores its last checkpoint; returns the step to continue from.
    async fn roll_back(&mut self, step: u64, failed: &[(usize, usize)]) -> Result<u64> {
        let bytes_per_s = self.spec.recovery.checkpoints().map_or(f64::INFINITY, |c| c.1);
        let state = match self.checkpoints.back() {
            Some(c) => c.clone(),
            None => self.initial_state()?,
        };
        let at = state.step;
        self.restore_state(state)?;
        self.ctx.clock.sleep(self.state_io_time(bytes_per_s)).await;
        if self.ctx.index == 0 {
            let who: Vec<String> = failed.iter().map(|(s, r)| format!("s{s}r{r}")).collect();
            let now = self.ctx.clock.now();
            let detail = format!("{} failed at step {step}", who.join(", "));
            self.ctx.metrics.event(now, None, EventKind::Failure, detail);
            let detail = format!("restored the step-{at} checkpoint; redoing {} steps", step - at);
            self.ctx.metrics.event(now, None, EventKind::Recovery, detail);
        }
        self.ctx.record("recovery", step, ROLLBACK);
        Ok(at)
    }

    /// This worker failed at `step` (or, unless `failed`, comes back to the place it left): it loses its
    /// weights, optimizer and outer state and gets the weights back from `source` (the outer state
    /// restarts from them).
    async fn recover(&mut self, step: u64, source: &Source, failed: bool) -> Result<()> {
        let t0 = self.ctx.clock.now();
        let fresh = self.fresh_weights()?;
        for (name, t) in &fresh {
            self.params.set(name, t)?;
        }
        self.optim.restart_moments();
        let (s, r) = (self.s, self.r);
        let detail = match source {
            Source::Replica(q) => {
                let got = self.take_weights(step, WeightsKind::Donor, self.peer(s, *q)).await?;
                self.install_state(got.2)?;
                format!("copied the weights and optimizer moments of replica {q}")
            }
            Source::Donors(donors) => {
                let recovery = self.spec.recovery.clone();
                let mut received = Vec::with_capacity(donors.len());
                for &donor in donors {
                    let (_, grad_norm, tensors) =
                        self.take_weights(step, WeightsKind::Donor, self.peer(donor.stage(), r)).await?;
                    received.push(DonorWeights { donor, grad_norm, weights: self.to_tensors(&tensors)? });
                }
                let local_fresh: BTreeMap<String, Tensor> =
                    fresh.iter().map(|(n, t)| (self.stage.spec().local_name(n), t.clone())).collect();
                let rebuilt = recovery.rebuild(s, &received, &local_fresh)?;
                self.install_tensors(&rebuilt)?;
                self.optim.set_lr_factor(recovery.lr_scale());
                let from: Vec<String> = donors.iter().map(|d| format!("{d:?}")).collect();
                format!("rebuilt by {} from {}", recovery.name(), from.join(" + "))
            }
            &Source::CopyAt((holder, holder_replica)) => {
                let got = self.take_weights(step, WeightsKind::Shadow, self.peer(holder, holder_replica)).await?;
                if got.2.is_empty() {
                    "no redundant copy yet: started from the initial weights".to_owned()
                } else {
                    self.install_state(got.2)?;
                    format!("restored from stage {holder}'s redundant copy")
                }
            }
            Source::ReInit => "no source to rebuild from: re-initialised".to_owned(),
            Source::Checkpoint => return Err(unexpected()),
        };
        // The outer state (an outer optimizer's anchor and momentum) was lost with the rest: it starts
        // again from the recovered weights, as it would on a node that joins the swarm.
        self.restart_outer()?;
        let now = self.ctx.clock.now();
        let index = Some(self.ctx.index);
        if failed {
            self.ctx.metrics.event(now, index, EventKind::Failure, format!("s{s}r{r} failed at step {step}"));
        }
        let took = (now - t0).as_secs_f64();
        self.ctx.metrics.event(now, index, EventKind::Recovery, format!("s{s}r{r}: {detail} in {took:.3} s"));
        self.ctx.record("recovery", step, REBUILT);
        Ok(())
    }

    /// The stage's initial weights (what a replacement node starts from).
    fn fresh_weights(&self) -> Result<BTreeMap<String, Tensor>> {
        Ok(Stage::new(&self.spec.model, self.specs[self.s].clone(), &self.device)?.params().snapshot())
    }

    /// `t` as a wire tensor bound for `to`: a peer gets it resident where the mailbox leaves tensors so
    /// ([`Mailbox::for_peer`]), storage always as bytes.
    fn pack(&self, t: &Tensor, to: Bound) -> Result<TensorBytes> {
        match to {
            Bound::Peer => self.mail.for_peer(t),
            Bound::Storage => to_wire(t),
        }
    }

    /// This stage's weights under stage-local names, as wire tensors bound for `to`.
    fn local_weights(&self, to: Bound) -> Result<Vec<(String, TensorBytes)>> {
        self.params.snapshot().iter().map(|(n, t)| Ok((self.stage.spec().local_name(n), self.pack(t, to)?))).collect()
    }

    fn to_tensors(&self, tensors: &[(String, TensorBytes)]) -> Result<BTreeMap<String, Tensor>> {
        tensors.iter().map(|(n, t)| Ok((n.clone(), from_wire(t, &self.device)?))).collect()
    }

    /// Sets this stage's weights from stage-local wire tensors.
    fn install(&self, tensors: &[(String, TensorBytes)]) -> Result<()> {
        self.install_tensors(&self.to_tensors(tensors)?)
    }

    /// This stage's whole state as wire tensors bound for `to`: its weights (stage-local names),
    /// optimizer moments (behind [`MOMENT_PREFIX`]) and outer state (its exported parts, behind
    /// [`OUTER_PREFIX`]).
    fn full_state(&self, to: Bound) -> Result<Vec<(String, TensorBytes)>> {
        let mut tensors = self.local_weights(to)?;
        tensors.extend(self.moments(to)?);
        for (i, part) in self.outer.iter().flat_map(|o| o.export()).enumerate() {
            tensors.push((format!("{OUTER_PREFIX}{i}"), self.pack(&part, to)?));
        }
        Ok(tensors)
    }

    /// Installs a state [`full_state`](Self::full_state) wrote, as of the start of `step`.
    fn install_full_state(&mut self, step: u64, tensors: Vec<(String, TensorBytes)>) -> Result<()> {
        let (outer, state): (Vec<_>, Vec<_>) = tensors.into_iter().partition(|(n, _)| n.starts_with(OUTER_PREFIX));
        self.optim.restore(step, &BTreeMap::new())?;
        self.install_state(state)?;
        // The outer state (DiLoCo's outer weights and momentum), in the order it was exported.
        self.restart_outer()?;
        let mut parts: Vec<(usize, Tensor)> = outer
            .iter()
            .map(|(n, t)| {
                let index = n[OUTER_PREFIX.len()..].parse().map_err(|_| unexpected())?;
                Ok((index, from_wire(t, &self.device)?.flatten_all()?))
            })
            .collect::<Result<_>>()?;
        parts.sort_by_key(|(i, _)| *i);
        if let Some(state) = self.outer.as_mut() {
            state
                .import(parts.into_iter().map(|(_, v)| v).collect())
                .map_err(|why| Error::config("state", format!("the outer state: {why}")))?;
        }
        Ok(())
    }

    /// Sets this stage's weights and optimizer moments from wire tensors (the moments under
    /// [`MOMENT_PREFIX`]); the optimizer stays at its step.
    fn install_state(&mut self, tensors: Vec<(String, TensorBytes)>) -> Result<()> {
        let (moments, weights): (Vec<_>, Vec<_>) = tensors.into_iter().partition(|(n, _)| n.starts_with(MOMENT_PREFIX));
        self.install(&weights)?;
        let moments = self.moments_from_wire(&moments)?;
        Ok(self.optim.restore(self.optim.steps(), &moments)?)
    }

    /// Sets this stage's weights from stage-local tensors; every parameter must be there, shaped right.
    fn install_tensors(&self, local: &BTreeMap<String, Tensor>) -> Result<()> {
        for name in &self.names {
            let key = self.stage.spec().local_name(name);
            let t = local.get(&key).ok_or_else(|| Error::config("recovery", format!("no weights for {key}")))?;
            if t.dims() != self.shapes[name].as_slice() {
                return Err(Error::config(
                    "recovery",
                    format!("{key}: shape {:?}, expected {:?}", t.dims(), self.shapes[name]),
                ));
            }
            self.params.set(name, t)?;
        }
        Ok(())
    }

    /// Joins a run under way: asks every other replica of this worker's stage for its weights, takes the
    /// answer of the one furthest on (among those answering within a second of the first), and returns
    /// the step it was sent before — where this worker starts. The optimizer starts there with fresh
    /// moments, the outer state from the received weights; in an elastic group, with the sender's
    /// moments and outer state, so that it is one of the group's replicas again.
    async fn join(&mut self) -> Result<u64> {
        let (s, r) = (self.s, self.r);
        let others: Vec<PeerId> = (0..self.replicas).filter(|&q| q != r).map(|q| self.peer(s, q)).collect();
        let mut asked = 0;
        for &peer in &others {
            // A replica that cannot be reached now simply does not answer.
            match self.mail.send(peer, &Msg::JoinRequest { stage: s as u32 }).await {
                Ok(()) => asked += 1,
                Err(e) => tracing::warn!(peer = %peer.short(), error = %e, "join request not delivered"),
            }
        }
        if asked == 0 {
            return Err(Error::config("join", format!("no other replica of stage {s} could be reached")));
        }
        let wanted =
            |f: &PeerId, m: &Msg| others.contains(f) && matches!(m, Msg::Weights { kind: WeightsKind::Join, .. });
        // The first answer, then whatever else comes within a second: the replica furthest on wins.
        let mut answers = vec![self.mail.take("weights to join with", wanted).await?];
        let deadline = self.ctx.clock.now() + Duration::from_secs(1).min(self.spec.peer_timeout);
        while answers.len() < others.len() {
            match self.mail.take_until(deadline, wanted).await? {
                Some(answer) => answers.push(answer),
                None => break,
            }
        }
        let best = answers.into_iter().max_by_key(|(_, m)| match m {
            Msg::Weights { step, .. } => *step,
            _ => 0,
        });
        let Some((from, Msg::Weights { step, tensors, .. })) = best else { return Err(unexpected()) };
        if self.spec.sync.elastic_wait().is_some() {
            // An elastic group: the same weights, optimizer moments and outer state as it, and its view.
            self.install_full_state(step, tensors)?;
            let wanted = |f: &PeerId, m: &Msg| {
                *f == from && matches!(m, Msg::Members { step: st, attempt: JOIN_VIEW, .. } if *st == step)
            };
            match self.mail.take("the group to join", wanted).await? {
                (_, Msg::Members { members, .. }) if is_group(&members, self.replicas) => {
                    self.view = members.into_iter().map(|q| q as usize).collect();
                }
                (_, Msg::Members { members, .. }) => {
                    return Err(Error::config(
                        "join",
                        format!("{members:?} is not a group of {} replicas", self.replicas),
                    ));
                }
                _ => return Err(unexpected()),
            }
        } else {
            self.install(&tensors)?;
            self.optim.restore(step, &BTreeMap::new())?;
            self.optim.restart_moments();
            self.restart_outer()?;
        }
        let now = self.ctx.clock.now();
        let detail = format!("stage {s} replica {r} joined before step {step} with the weights of {}", from.short());
        self.ctx.metrics.event(now, Some(self.ctx.index), EventKind::Join, detail);
        Ok(step)
    }

    /// Answers the join requests that have arrived with this worker's weights before `step`.
    async fn serve_joiners(&mut self, step: u64) -> Result<()> {
        let now = self.ctx.clock.now();
        let me = self.s as u32;
        let wanted = |_: &PeerId, m: &Msg| matches!(m, Msg::JoinRequest { stage } if *stage == me);
        let elastic = self.spec.sync.elastic_wait().is_some();
        while let Some((from, _)) = self.mail.take_until(now, wanted).await? {
            let tensors = if elastic { self.full_state(Bound::Peer)? } else { self.local_weights(Bound::Peer)? };
            // A joiner gone again is not this worker's problem.
            if let Err(e) = self.send_weights(from, step, WeightsKind::Join, self.s, tensors).await {
                tracing::warn!(peer = %from.short(), error = %e, "weights not delivered to a joining replica");
                continue;
            }
            if elastic {
                let members = self.view.iter().map(|&q| q as u32).collect();
                let _ = self.mail.send(from, &Msg::Members { step, attempt: JOIN_VIEW, members }).await;
                if let Some(q) = (0..self.replicas).find(|&q| self.peer(self.s, q) == from) {
                    self.announced.push(q);
                }
            }
        }
        Ok(())
    }

    /// Elastic data parallelism: joins the group again (its members answer between their steps, or
    /// while they linger after the last one), waiting twice as long as for a leader.
    async fn rejoin(&mut self, timeouts: QuorumTimeouts) -> Result<u64> {
        let usual = self.mail.set_timeout(2 * timeouts.leader);
        let joined = self.join().await;
        self.mail.set_timeout(usual);
        joined
    }

    /// Elastic data parallelism, after the last step: for twice as long as a member waits for its
    /// leader, answers replicas still behind — a late ask for a group with an empty one, a join request
    /// with the final state — so that a replica the group left behind ends with the group's weights
    /// rather than alone.
    async fn linger(&mut self, step: u64, timeouts: QuorumTimeouts) -> Result<()> {
        let deadline = self.ctx.clock.now() + 2 * timeouts.leader;
        let (me, row) = (self.s as u32, self.row());
        loop {
            let wanted = |from: &PeerId, m: &Msg| {
                row.contains(from)
                    && (matches!(m, Msg::JoinRequest { stage } if *stage == me) || matches!(m, Msg::Alive { .. }))
            };
            match self.mail.take_until(deadline, wanted).await? {
                None => return Ok(()),
                Some((from, Msg::Alive { step, attempt, .. })) => {
                    let _ = self.mail.send(from, &Msg::Members { step, attempt, members: Vec::new() }).await;
                }
                Some((from, request)) => {
                    // Put it back for the usual answer, which sends the state and the group.
                    self.mail.put_back(from, request);
                    self.serve_joiners(step).await?;
                }
            }
        }
    }

    /// The optimizer's moments as wire tensors bound for `to`, under stage-local names behind
    /// [`MOMENT_PREFIX`].
    fn moments(&self, to: Bound) -> Result<Vec<(String, TensorBytes)>> {
        let (_, moments) = self.optim.state();
        moments
            .iter()
            .map(|(name, t)| Ok((format!("{MOMENT_PREFIX}{}", self.stage.spec().local_name(name)), self.pack(t, to)?)))
            .collect()
    }

    /// Moments sent as [`Self::moments`] writes them, under this worker's names.
    fn moments_from_wire(&self, moments: &[(String, TensorBytes)]) -> Result<BTreeMap<String, Tensor>> {
        moments
            .iter()
            .map(|(n, t)| {
                let local = n.trim_start_matches(MOMENT_PREFIX);
                Ok((self.stage.spec().global_name(local), from_wire(t, &self.device)?))
            })
            .collect()
    }

    async fn send_weights(
        &mut self,
        to: PeerId,
        step: u64,
        kind: WeightsKind,
        stage: usize,
        tensors: Vec<(String, TensorBytes)>,
    ) -> Result<()> {
        let msg = Msg::Weights { step, kind, stage: stage as u32, grad_norm: self.last_grad_norm, tensors };
        self.mail.send(to, &msg).await
    }

    /// Takes the `kind` weights for `step` from `from`: `(stage, grad_norm, tensors)`.
    async fn take_weights(
        &mut self,
        step: u64,
        kind: WeightsKind,
        from: PeerId,
    ) -> Result<(u32, f32, Vec<(String, TensorBytes)>)> {
        let wanted = |f: &PeerId, m: &Msg| {
            *f == from && matches!(m, Msg::Weights { step: st, kind: k, .. } if *st == step && *k == kind)
        };
        match self.mail.take("recovery weights", wanted).await? {
            (_, Msg::Weights { stage, grad_norm, tensors, .. }) => Ok((stage, grad_norm, tensors)),
            _ => Err(unexpected()),
        }
    }

    /// The copy this worker keeps of stage `of`, as of the end of step `step − 1`, waiting for the last
    /// refresh if it is still on its way. Empty before the first step, or if no copy was kept.
    async fn copy_of(&mut self, of: usize, step: u64) -> Result<Vec<(String, TensorBytes)>> {
        if step == 0 {
            return Ok(Vec::new());
        }
        let lazy = self.kept.iter().any(|c| c.of == of && c.at == self.s && !c.wait);
        if lazy {
            self.refresh_copy(of, step - 1, true).await?;
        }
        Ok(self.copies.get(&of).map(|c| c.tensors.clone()).unwrap_or_default())
    }

    /// Takes stage `of`'s refreshes of its copy up to the one sent after `step` (waiting for that one
    /// only if `wait`).
    async fn refresh_copy(&mut self, of: usize, step: u64, wait: bool) -> Result<()> {
        let from = self.peer(of, self.r);
        if self.copies.get(&of).is_some_and(|c| c.step >= step) {
            return Ok(());
        }
        let wanted = |f: &PeerId, m: &Msg| {
            *f == from && matches!(m, Msg::Weights { step: st, kind: WeightsKind::Shadow, .. } if *st <= step)
        };
        loop {
            let got = if wait {
                Some(self.mail.take("kept copy", wanted).await?)
            } else {
                let now = self.ctx.clock.now();
                self.mail.take_until(now, wanted).await?
            };
            let Some((_, Msg::Weights { step: at, tensors, .. })) = got else { return Ok(()) };
            if self.copies.get(&of).is_none_or(|c| c.step < at) {
                self.copies.insert(of, Kept { step: at, tensors });
            }
            if at >= step {
                return Ok(());
            }
        }
    }

    /// After a step: the copies the recovery strategy keeps — send this stage's state where it is kept,
    /// then take the copies this worker keeps (waiting for them, or picking them up as they arrive).
    async fn keep_copies(&mut self, step: u64) -> Result<()> {
        let due: Vec<KeptCopy> = self.kept.iter().copied().filter(|c| (step + 1).is_multiple_of(c.every)).collect();
        let me = self.s;
        for c in due.iter().filter(|c| c.of == me) {
            let mut tensors = self.local_weights(Bound::Peer)?;
            if c.moments {
                tensors.extend(self.moments(Bound::Peer)?);
            }
            let kind = if c.wait { WeightsKind::EdgeCopy } else { WeightsKind::Shadow };
            self.send_weights(self.peer(c.at, self.r), step, kind, self.s, tensors).await?;
        }
        for c in due.iter().filter(|c| c.at == me) {
            if c.wait {
                let (_, _, tensors) = self.take_weights(step, WeightsKind::EdgeCopy, self.peer(c.of, self.r)).await?;
                self.copies.insert(c.of, Kept { step, tensors });
            } else {
                self.refresh_copy(c.of, step, false).await?;
            }
        }
        Ok(())
    }

    /// Forward and backward passes of every micro-batch whose path visits this worker; returns the
    /// stage's summed gradients.
    async fn train_step(&mut self, step: u64) -> Result<BTreeMap<String, Tensor>> {
        let spec = self.spec.clone();
        let (s, r, replicas, stages) = (self.s, self.r, self.replicas, spec.stages);
        let m = spec.micro_batches as u32;
        // Every micro-batch's path this step; which of them visit this worker, and at which hop.
        let mut mine: BTreeMap<(u32, u32), (Vec<Hop>, usize)> = BTreeMap::new();
        // How many micro-batches visit this stage, over all its replicas.
        let mut stage_visits = 0usize;
        // The micro-batches of the data replicas still in the run.
        for origin in (0..replicas).filter(|&o| self.live(0, o)) {
            for micro in 0..m {
                let path = self.router.path(step, micro, origin, stages, replicas);
                check_path(&path, origin, stages, replicas)?;
                if let Some((ds, dr)) = path.iter().find(|h| !self.live(h.0, h.1)) {
                    return Err(Error::config(
                        "router",
                        format!("the path of micro-batch {origin}/{micro} visits s{ds}r{dr}, which left the run"),
                    ));
                }
                stage_visits += usize::from(path.iter().any(|h| h.0 == s));
                if let Some(hop) = path.iter().position(|&h| h == (s, r)) {
                    mine.insert((origin as u32, micro), (path, hop));
                }
            }
        }
        let mut grads: BTreeMap<String, Tensor> = BTreeMap::new();
        // Kept for the backward pass of each micro-batch: its input variable, output and sender.
        let mut saved: BTreeMap<(u32, u32), Saved> = BTreeMap::new();
        let mut losses = Vec::new();
        // Micro-batches that start here first (stage 0), then the others as their activations arrive.
        let starting: Vec<(u32, u32)> = mine.iter().filter(|(_, (_, hop))| *hop == 0).map(|(k, _)| *k).collect();
        for i in 0..mine.len() {
            let ((origin, micro), input, targets, sender) = if i < starting.len() {
                let (origin, micro) = starting[i];
                let draw = step * u64::from(m) + u64::from(micro);
                let (ids, targets) = sample_batch(
                    &self.corpus.train,
                    spec.micro_batch,
                    spec.seq,
                    spec.seed,
                    draw,
                    u64::from(origin),
                    &self.device,
                )?;
                ((origin, micro), Input::Tokens(ids), targets, None)
            } else {
                let wanted = |_: &PeerId, msg: &Msg| matches!(msg, Msg::Forward { step: st, .. } if *st == step);
                let (from, msg) = self.mail.take("activations", wanted).await?;
                let Msg::Forward { origin, micro, hidden, targets, .. } = msg else { return Err(unexpected()) };
                if !mine.contains_key(&(origin, micro)) || saved.contains_key(&(origin, micro)) {
                    return Err(Error::config(
                        "pipeline",
                        format!("unexpected activations of micro-batch {origin}/{micro}"),
                    ));
                }
                let h = Var::from_tensor(&from_wire(&hidden, &self.device)?)?;
                ((origin, micro), Input::Hidden(h), from_wire(&targets, &self.device)?, Some(from))
            };
            let (path, hop) = mine[&(origin, micro)].clone();
            let out = match &input {
                Input::Tokens(ids) => self.stage.forward(StageInput::Tokens(ids))?,
                Input::Hidden(h) => self.stage.forward(StageInput::Hidden(h.as_tensor()))?,
            };
            self.ctx.compute(self.fwd_flops).await;
            if let Some(flops) = self.shadow_flops {
                // Another stage's forward pass, run again here on the copy this worker keeps.
                self.ctx.compute(flops).await;
            }
            let input_var = match input {
                Input::Hidden(h) => Some(h),
                Input::Tokens(_) => None,
            };
            if hop + 1 == path.len() {
                let loss = self.stage.loss(&out, &targets)?;
                losses.push(f64::from(loss.to_vec0::<f32>()?));
                // Each micro-batch's loss is a mean over its tokens: scale so the step's gradient is the
                // mean over the micro-batches of one replica's batch.
                let store = (loss / f64::from(m))?.backward()?;
                self.ctx.compute(2.0 * self.fwd_flops).await;
                accumulate(&mut grads, self.params.grads(&store))?;
                if let (Some(h), Some(from)) = (&input_var, sender) {
                    let g = store
                        .get(h.as_tensor())
                        .ok_or_else(|| Error::config("pipeline", "no gradient for the stage input"))?;
                    self.mail.send(from, &Msg::Backward { step, origin, micro, grad: self.mail.for_peer(g)? }).await?;
                }
            } else {
                let (ns, nr) = path[hop + 1];
                let (hidden, targets_out) = (self.mail.for_peer(&out)?, self.mail.for_peer(&targets)?);
                let msg = Msg::Forward { step, origin, micro, hidden, targets: targets_out };
                self.mail.send(self.peer(ns, nr), &msg).await?;
                saved.insert((origin, micro), (input_var, out, sender));
            }
        }
        // Backward passes, in the order their gradients arrive.
        for _ in 0..saved.len() {
            let wanted = |_: &PeerId, msg: &Msg| matches!(msg, Msg::Backward { step: st, .. } if *st == step);
            let (_, msg) = self.mail.take("gradients", wanted).await?;
            let Msg::Backward { origin, micro, grad, .. } = msg else { return Err(unexpected()) };
            let (input_var, out, sender) = saved.remove(&(origin, micro)).ok_or_else(|| {
                Error::config("pipeline", format!("gradient for unknown micro-batch {origin}/{micro}"))
            })?;
            let g = from_wire(&grad, &self.device)?;
            let store = (out * g)?.sum_all()?.backward()?;
            self.ctx.compute(2.0 * self.fwd_flops).await;
            accumulate(&mut grads, self.params.grads(&store))?;
            if let (Some(h), Some(from)) = (&input_var, sender) {
                let gh = store
                    .get(h.as_tensor())
                    .ok_or_else(|| Error::config("pipeline", "no gradient for the stage input"))?;
                self.mail.send(from, &Msg::Backward { step, origin, micro, grad: self.mail.for_peer(gh)? }).await?;
            }
        }
        if !losses.is_empty() {
            self.ctx.record("train_loss", step, losses.iter().sum::<f64>() / losses.len() as f64);
        }
        // Each micro-batch contributed its gradient / m, so the mean over the stage's replicas in the run
        // (all of them, unless some left) is the mean over replicas × m micro-batches. A stage that some
        // paths skip averages only over the micro-batches that visited it (SkipPipe): rescale by
        // replicas × m / visits. With every path through every stage (any routing without skips) the
        // factor is 1.
        //
        // As one model, the stage's gradient is the sum over the micro-batches that visited it, averaged
        // over the data replicas; the mean over the stage's replicas gives that while every replica is in
        // the run. Once some left, a stage's replicas and the data replicas may differ in number (a
        // replica of the stage runs a departed one's row too): rescale by replicas / data replicas.
        let live = self.live_replicas(s).len();
        let factor = match spec.gradients {
            GradientScaling::PerStage if stage_visits > 0 => (live * spec.micro_batches) as f64 / stage_visits as f64,
            GradientScaling::WholeModel => live as f64 / self.live_replicas(0).len().max(1) as f64,
            GradientScaling::PerStage => 1.0,
        };
        if factor != 1.0 {
            for g in grads.values_mut() {
                *g = (&*g * factor)?;
            }
        }
        Ok(grads)
    }

    /// The norm of the whole model's gradient: this stage's squared norm sent to every other stage of its
    /// row, theirs received and summed (the row's replica of each stage, or the one standing in for it
    /// once it left the run; after a data-parallel average every row finds the same norm).
    async fn model_grad_norm(&mut self, step: u64, grads: &BTreeMap<String, Tensor>) -> Result<f32> {
        let squared = self.optim.squared_norm(grads)?;
        let (s, r, stages) = (self.s, self.r, self.spec.stages);
        for other in (0..stages).filter(|&k| k != s) {
            let rows: Vec<usize> =
                (0..self.replicas).filter(|&row| self.live(other, row) && self.stand_in(s, row) == r).collect();
            for row in rows {
                self.mail.send(self.peer(other, row), &Msg::GradNorm { step, stage: s as u32, squared }).await?;
            }
        }
        let mut by_stage = vec![None; stages];
        by_stage[s] = Some(squared);
        for _ in 1..stages {
            let wanted = |_: &PeerId, msg: &Msg| matches!(msg, Msg::GradNorm { step: st, .. } if *st == step);
            let (_, msg) = self.mail.take("gradient norms", wanted).await?;
            let Msg::GradNorm { stage, squared, .. } = msg else { return Err(unexpected()) };
            if !squared.is_finite() || squared < 0.0 {
                return Err(Error::config("pipeline", format!("a stage sent a squared gradient norm of {squared}")));
            }
            match by_stage.get_mut(stage as usize) {
                Some(slot @ None) => *slot = Some(squared),
                _ => return Err(Error::config("pipeline", format!("an unexpected gradient norm of stage {stage}"))),
            }
        }
        // Summed in stage order, not in the order they came: every row finds the same norm, bit for bit
        // (a clip that binds would otherwise set the replicas of a stage apart).
        Ok(by_stage.into_iter().flatten().sum::<f32>().sqrt())
    }

    /// The data-parallel gradient average, if the protocol asks for one.
    async fn sync_gradients(&mut self, step: u64, grads: BTreeMap<String, Tensor>) -> Result<Synced> {
        let replicas = self.replicas;
        match (self.spec.sync.gradient_collective(), self.spec.sync.elastic_wait()) {
            (Some(collective), Some(wait)) if replicas > 1 => self.elastic_mean(step, grads, collective, wait).await,
            (Some(collective), None) if self.live_replicas(self.s).len() > 1 => {
                let (t0, b0) = (self.ctx.clock.now(), self.mail.sent());
                // The stage's replicas still in the run (all of them, unless some left for good).
                let members = self.live_replicas(self.s);
                let me = members.iter().position(|&q| q == self.r).ok_or_else(unexpected)?;
                let group: Vec<PeerId> = members.iter().map(|&q| self.peer(self.s, q)).collect();
                let round = OuterRound { group: members, collective, timeout: self.spec.peer_timeout };
                let flat = self.flat_gradients(&grads)?;
                let mean = all_reduce_mean(&mut self.mail, &round, &group, me, step, GRADIENT_TAG, flat).await?;
                self.ctx.record("sync_time", step, (self.ctx.clock.now() - t0).as_secs_f64());
                self.ctx.record("sync_bytes", step, (self.mail.sent() - b0) as f64);
                Ok(Synced::Mean(self.unflatten_gradients(&mean)?))
            }
            _ => Ok(Synced::Mean(grads)),
        }
    }

    /// Elastic data parallelism: the gradient mean over this step's group ([`Self::settle_group`]),
    /// formed again without whoever goes silent during the all-reduce.
    async fn elastic_mean(
        &mut self,
        step: u64,
        grads: BTreeMap<String, Tensor>,
        collective: crate::sync::Collective,
        wait: Duration,
    ) -> Result<Synced> {
        let (t0, b0) = (self.ctx.clock.now(), self.mail.sent());
        let row = self.row();
        let flat = self.flat_gradients(&grads)?;
        let timeouts = QuorumTimeouts::from_wait(wait);
        let mut next_attempt = 0u32;
        let mean = loop {
            let (members, attempt) = match self.settle_group(step, next_attempt, timeouts).await? {
                Group::Rejoined(at) => return Ok(Synced::Rejoined(at)),
                Group::Members(members, attempt) => (members, attempt),
            };
            if members.len() == 1 {
                break flat;
            }
            let me = members.iter().position(|&q| q == self.r).ok_or_else(unexpected)?;
            let group: Vec<PeerId> = members.iter().map(|&q| row[q]).collect();
            let round = OuterRound { group: members, collective, timeout: self.spec.peer_timeout };
            // Each try numbers its chunks apart, so a failed try's never mix with the next one's.
            let tag = GRADIENT_TAG + attempt * ATTEMPT_STRIDE;
            self.mail.discard_reduce_rounds_before(step, tag);
            // A member silent as long as a leader would be presumed gone is: the group forms again.
            let usual = self.mail.set_timeout(timeouts.leader);
            let reduced = all_reduce_mean(&mut self.mail, &round, &group, me, step, tag, flat.clone()).await;
            self.mail.set_timeout(usual);
            match reduced {
                Ok(mean) => break mean,
                Err(Error::Stalled { what, .. }) => {
                    tracing::warn!(step, %what, "the all-reduce stalled: forming the group again");
                    next_attempt = attempt + 1;
                }
                Err(e) => return Err(e),
            }
        };
        self.ctx.record("sync_time", step, (self.ctx.clock.now() - t0).as_secs_f64());
        self.ctx.record("sync_bytes", step, (self.mail.sent() - b0) as f64);
        Ok(Synced::Mean(self.unflatten_gradients(&mean)?))
    }

    /// This stage's gradients as one tensor on the worker's device ([`flatten_tensor`]), for the
    /// all-reduce: they stay there, and its chunks go to peers resident or as bytes, as the mailbox sends
    /// tensors ([`Mailbox::leaves_tensors_resident`]).
    fn flat_gradients(&self, grads: &BTreeMap<String, Tensor>) -> Result<Tensor> {
        flatten_tensor(&self.names, grads, &self.shapes, &self.device)
    }

    /// The gradients by name again from [`flat_gradients`](Self::flat_gradients)' layout.
    fn unflatten_gradients(&self, flat: &Tensor) -> Result<BTreeMap<String, Tensor>> {
        unflatten_tensor(&self.names, flat, &self.shapes)
    }

    /// An elastic outer round (DiLoCo's): its all-reduce among the round's group of replicas that are
    /// there, formed again without whoever goes silent during it. Returns the step to go on from when
    /// this worker joined the group again instead.
    async fn elastic_outer_round(&mut self, step: u64, round: &OuterRound, wait: Duration) -> Result<Option<u64>> {
        let row = self.row();
        let timeouts = QuorumTimeouts::from_wait(wait);
        let mut next_attempt = 0u32;
        loop {
            let (members, attempt) = match self.settle_group(step, next_attempt, timeouts).await? {
                Group::Rejoined(at) => return Ok(Some(at)),
                Group::Members(members, attempt) => (members, attempt),
            };
            let group = members.into_iter().filter(|q| round.group.contains(q)).collect();
            let this_round = OuterRound { group, ..round.clone() };
            let theta = flat_weights(&self.names, &self.params, &self.shapes, &self.device)?;
            let mut state = self.outer.take().ok_or_else(unexpected)?;
            let tag = OUTER_TAG + attempt * ATTEMPT_STRIDE;
            let usual = self.mail.set_timeout(timeouts.leader);
            let at = (self.s, self.r);
            let reduced = run_outer_round_tagged(
                &self.ctx,
                &mut self.mail,
                state.as_mut(),
                &this_round,
                &row,
                at,
                step,
                &theta,
                tag,
            )
            .await;
            self.mail.set_timeout(usual);
            self.outer = Some(state);
            match reduced {
                Ok(theta) => {
                    set_flat_weights(&self.names, &self.params, &theta, &self.shapes)?;
                    return Ok(None);
                }
                Err(Error::Stalled { what, .. }) => {
                    tracing::warn!(step, %what, "the outer all-reduce stalled: forming the group again");
                    next_attempt = attempt + 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The peer ids of this worker's stage's replicas.
    fn row(&self) -> Vec<PeerId> {
        (0..self.replicas).map(|q| self.peer(self.s, q)).collect()
    }

    /// Agrees with the replicas that are there on the group of `step`'s try `next_attempt`
    /// ([`quorum`]), logging who left and who came. A worker the leader found too late joins again; so
    /// does one that heard from nobody although its last group had others (they may have gone on without
    /// it), which goes on alone only if nobody answers.
    async fn settle_group(&mut self, step: u64, next_attempt: u32, timeouts: QuorumTimeouts) -> Result<Group> {
        let row = self.row();
        let joiners = std::mem::take(&mut self.announced);
        let at = (step, next_attempt);
        let Some((members, attempt)) = quorum(&mut self.mail, &row, self.r, &self.view, &joiners, at, timeouts).await?
        else {
            let now = self.ctx.clock.now();
            let detail = format!("s{}r{} came too late for the group of step {step}: joining again", self.s, self.r);
            self.ctx.metrics.event(now, Some(self.ctx.index), EventKind::Failure, detail);
            return Ok(Group::Rejoined(self.rejoin(timeouts).await?));
        };
        if members == [self.r] && self.view.iter().any(|&q| q != self.r) {
            match self.rejoin(timeouts).await {
                Ok(at) => return Ok(Group::Rejoined(at)),
                Err(Error::Stalled { .. } | Error::Config { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let left: Vec<usize> = self.view.iter().copied().filter(|q| !members.contains(q)).collect();
        let came: Vec<usize> = members.iter().copied().filter(|q| !self.view.contains(q)).collect();
        let now = self.ctx.clock.now();
        if !left.is_empty() {
            let detail = format!("s{} step {step}: replicas {left:?} left the group, now {members:?}", self.s);
            self.ctx.metrics.event(now, Some(self.ctx.index), EventKind::Failure, detail);
        }
        if !came.is_empty() {
            let detail = format!("s{} step {step}: replicas {came:?} joined the group, now {members:?}", self.s);
            self.ctx.metrics.event(now, Some(self.ctx.index), EventKind::Join, detail);
        }
        self.view = members.clone();
        Ok(Group::Members(members, attempt))
    }
}

/// Runs the validation batches forward through the evaluating rows this worker stands in (`rows`: each
/// row with the next stage's worker in it, if any), one row after the other; the last stage records
/// `val_loss`, the mean over the batches, at `step`.
#[allow(clippy::too_many_arguments)]
async fn evaluate<T: Transport, C: Clock>(
    ctx: &AgentCtx<T, C>,
    stage: &Stage,
    mail: &mut Mailbox<T, C>,
    eval_set: &[(Tensor, Tensor)],
    count: usize,
    step: u64,
    fwd_flops: f64,
    rows: &[(u32, Option<PeerId>)],
) -> Result<()> {
    let device = stage.device().clone();
    let mut losses = Vec::with_capacity(count * rows.len());
    for (row, index, next) in rows.iter().flat_map(|&(row, next)| (0..count as u32).map(move |i| (row, i, next))) {
        let (out, targets) = if stage.spec().first {
            let (ids, targets) = eval_set
                .get(index as usize)
                .ok_or_else(|| Error::config("pipeline.eval_batches", "validation set too small"))?;
            (stage.forward(StageInput::Tokens(ids))?, targets.clone())
        } else {
            let wanted = |_: &PeerId, m: &Msg| matches!(m, Msg::Eval { step: st, row: w, index: i, .. } if (*st, *w, *i) == (step, row, index));
            let (_, msg) = mail.take("validation activations", wanted).await?;
            let Msg::Eval { hidden, targets, .. } = msg else { return Err(unexpected()) };
            (stage.forward(StageInput::Hidden(&from_wire(&hidden, &device)?))?, from_wire(&targets, &device)?)
        };
        ctx.compute(fwd_flops).await;
        match next {
            Some(to) => {
                let msg =
                    Msg::Eval { step, row, index, hidden: mail.for_peer(&out)?, targets: mail.for_peer(&targets)? };
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

/// A worker's answer to a halt ([`Msg::Halted`]).
struct Halt {
    step: u64,
    epoch: u32,
    checkpoints: Vec<u64>,
}

/// The answers of every worker in the run to a halt, and the workers that had left it.
struct Halts {
    answers: BTreeMap<PeerId, Halt>,
    departed: Vec<usize>,
}

impl Halts {
    /// The earliest and the latest step the workers halted in.
    fn steps(&self) -> (u64, u64) {
        let steps = self.answers.values().map(|h| h.step);
        (steps.clone().min().unwrap_or(0), steps.max().unwrap_or(0))
    }

    /// The step everyone can train again from without checkpoints: the earliest, as long as none is
    /// more than one step ahead of it (a worker keeps the start of its last two steps).
    fn common_step(&self) -> Result<u64> {
        let (earliest, ahead) = self.steps();
        if ahead > earliest + 1 {
            return Err(Error::config(
                "replacement",
                format!(
                    "the other workers halted at steps {earliest} to {ahead}; a worker keeps one step to go back, \
                     so a swarm whose workers drift apart by more (rows without a per-step gradient average) \
                     cannot resume together"
                ),
            ));
        }
        Ok(earliest)
    }
}

/// What a checkpoint holds: the step it was taken before, the stage's weights, optimizer and outer state.
/// A worker's state as of the start of a step: a checkpoint, or a replaceable worker's way back.
struct Checkpoint {
    step: u64,
    weights: BTreeMap<String, Tensor>,
    optim: AdamW,
    outer: Option<Box<dyn OuterState>>,
    last_grad_norm: f32,
    copies: BTreeMap<usize, Kept>,
}

/// Adds `state` to `states`, the states of steps before it, keeping the last two (a state of the same
/// step or later, from before the swarm went back, is replaced).
fn keep_last_two(states: &mut VecDeque<Checkpoint>, state: Checkpoint) {
    states.retain(|s| s.step < state.step);
    states.push_back(state);
    while states.len() > 2 {
        states.pop_front();
    }
}

impl Clone for Checkpoint {
    fn clone(&self) -> Self {
        Self {
            step: self.step,
            weights: self.weights.clone(),
            optim: self.optim.clone(),
            outer: self.outer.as_ref().map(|o| o.snapshot()),
            last_grad_norm: self.last_grad_norm,
            copies: self.copies.clone(),
        }
    }
}

/// One outer round of this worker after inner step `step`, on its stage's weights.
#[allow(clippy::too_many_arguments)]
async fn outer_round<T: Transport, C: Clock>(
    ctx: &AgentCtx<T, C>,
    mail: &mut Mailbox<T, C>,
    state: &mut dyn OuterState,
    round: &OuterRound,
    (s, r, replicas): (usize, usize, usize),
    step: u64,
    params: &models::Params,
    names: &[String],
    shapes: &BTreeMap<String, Vec<usize>>,
) -> Result<()> {
    let device = params.iter().next().map_or(Device::Cpu, |(_, v)| v.device().clone());
    let theta = flat_weights(names, params, shapes, &device)?;
    let row: Vec<PeerId> = (0..replicas).map(|q| ctx.peers[s * replicas + q]).collect();
    let theta = run_outer_round(ctx, mail, state, round, &row, (s, r), step, &theta).await?;
    set_flat_weights(names, params, &theta, shapes)
}

/// Values of the `recovery` metric: a failed worker was brought back in place, or everyone rolled back.
pub const REBUILT: f64 = 1.0;
/// See [`REBUILT`].
pub const ROLLBACK: f64 = 2.0;

/// Where a stage's state goes as wire tensors ([`Worker::pack`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    /// To a worker: resident tensors where the mailbox leaves them so.
    Peer,
    /// To a checkpoint file: bytes.
    Storage,
}

/// Marks optimizer moments among a redundant copy's tensors.
const MOMENT_PREFIX: &str = "adam:";

/// Marks the parts of an outer state among the tensors a joiner of an elastic group is sent.
const OUTER_PREFIX: &str = "outer:";

/// What a micro-batch's backward pass needs: the stage's input variable, its output and who sent it.
type Saved = (Option<Var>, Tensor, Option<PeerId>);

enum Input {
    Tokens(Tensor),
    Hidden(Var),
}

fn unexpected() -> Error {
    Error::config("message", "unexpected message kind")
}
