//! A SAPO swarm on the simulated network: the shared warm start, then every agent's game, round by
//! round, with the rollout exchange through a [`genrl::comm::Inbox`] (an agent trains on whatever has
//! arrived and never waits for a slow peer).
//!
//! Compute is charged in virtual time after each round, from the policy's FLOPs and the agent's
//! [`DeviceProfile`]; so a bigger policy (or a slower device) shares later and its rollouts reach the
//! others staler. Every random choice is seeded by the run's seed and the agent's index, so a run is
//! repeatable, and an agent that takes nothing from the swarm (`J = 0`) learns exactly what it would alone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use candle_core::{Device, Tensor};
use genrl::comm::Inbox;
use genrl::env::gym::GymSet;
use genrl::env::{Origin, Task, TaskSetConfig, TaskSource};
use genrl::game::Game;
use genrl::{AgentCtx, Clock, DeviceProfile, SimSwarm, World, run_simulation};
use models::{AdamW, DeviceSpec, OptimConfig};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use transport::Transport;
use transport::sim::LinkSpec;

use crate::adversary::{ForgedQuestions, Liar};
use crate::agent::{Dropped, Mix, PolicyTrainer, SwarmRewards, TaskStream, TrainReport};
use crate::codec::TextCodec;
use crate::error::{Error, Result};
use crate::grpo::GrpoConfig;
use crate::policy::{Example, Policy, PolicyConfig, Sampling};
use pretrained::Checkpoint;

/// The supervised warm start on the task format, shared by every agent of a policy size.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WarmStartConfig {
    /// Supervised steps.
    pub steps: usize,
    /// Examples (questions with their answers) per step.
    pub batch: usize,
    /// Peak learning rate (cosine decay to a tenth).
    pub lr: f32,
}

impl Default for WarmStartConfig {
    fn default() -> Self {
        Self { steps: 300, batch: 32, lr: 3e-3 }
    }
}

impl WarmStartConfig {
    /// The warm start's own schedule: warm-up over a tenth of the steps, cosine decay to a tenth of `lr`.
    pub fn optim(&self) -> OptimConfig {
        OptimConfig {
            lr: self.lr,
            min_lr: self.lr / 10.0,
            warmup_steps: (self.steps as u64 / 10).max(1),
            total_steps: self.steps.max(1) as u64,
            ..OptimConfig::default()
        }
    }
}

/// One SAPO experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SapoConfig {
    /// Seeds the warm start, every agent's questions and sampling, and the network.
    pub seed: u64,
    /// Honest agents.
    pub agents: usize,
    /// Lying agents added to the swarm (see [`crate::adversary`]).
    pub liars: usize,
    /// Rounds each agent plays.
    pub rounds: u64,
    /// Own (I) and external (J) question groups per training step.
    pub mix: Mix,
    /// Completions per question (G).
    pub completions: usize,
    /// Policy size of each agent, by index, cycled: `tiny`, `small`.
    pub sizes: Vec<String>,
    /// A pretrained checkpoint every honest agent starts from instead of a warm-started policy of
    /// `sizes`: a folder in Hugging Face layout, or a model id found in the Hugging Face cache. Its
    /// prompts have at most `policy.prompt_width` tokens and its completions `policy.max_new`.
    pub model: Option<String>,
    /// The policy's window and optimizer (its model is replaced by each agent's size).
    pub policy: PolicyConfig,
    /// How completions are drawn.
    pub sampling: Sampling,
    /// GRPO settings.
    pub grpo: GrpoConfig,
    /// The warm start.
    pub warm_start: WarmStartConfig,
    /// The questions: our task families, or a reasoning-gym export (`tasks.file`, with a `model`).
    pub tasks: TaskSetConfig,
    /// The simulated profile of every agent, its compute speed in virtual time (a preset: `laptop`,
    /// `cpu32`, `a10`, `h100`).
    pub profile: String,
    /// Where the policies' tensors live: `cpu`, `cuda`, `cuda:N` or `auto` (all agents share it).
    pub device: DeviceSpec,
    /// One-way latency between agents, in milliseconds.
    pub latency_ms: f64,
    /// Bandwidth between agents, in Mbit/s.
    pub bandwidth_mbit: f64,
    /// What carries the rollouts: the simulated network (`sim`), or one QUIC node process per agent on
    /// this machine with links emulated at `latency_ms` and `bandwidth_mbit` (`quic`; run by the
    /// `swarmlab` CLI: [`run`] itself always simulates).
    pub transport: genrl::TransportKind,
}

impl Default for SapoConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            agents: 8,
            liars: 0,
            rounds: 300,
            mix: Mix { local: 4, external: 4 },
            completions: 8,
            sizes: vec!["tiny".into()],
            model: None,
            policy: PolicyConfig::default(),
            sampling: Sampling::default(),
            grpo: GrpoConfig::default(),
            warm_start: WarmStartConfig::default(),
            tasks: TaskSetConfig::default(),
            profile: "laptop".into(),
            device: DeviceSpec::Cpu,
            latency_ms: 20.0,
            bandwidth_mbit: 100.0,
            transport: genrl::TransportKind::Sim,
        }
    }
}

impl SapoConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        let in_range = |field: &str, value: u64, range: std::ops::RangeInclusive<u64>| {
            if range.contains(&value) {
                Ok(())
            } else {
                Err(Error::config(field, format!("{value} is outside [{}, {}]", range.start(), range.end())))
            }
        };
        in_range("sapo.agents", self.agents as u64, 1..=1024)?;
        in_range("sapo.liars", self.liars as u64, 0..=1024)?;
        in_range("sapo.rounds", self.rounds, 1..=10_000_000)?;
        in_range("sapo.completions", self.completions as u64, 2..=256)?;
        in_range("sapo.warm_start.batch", self.warm_start.batch as u64, 1..=4096)?;
        in_range("sapo.warm_start.steps", self.warm_start.steps as u64, 0..=10_000_000)?;
        // Each agent draws one task per specialty (task family, or dataset of an export) a round: its own
        // groups come from those, the external ones from what the others share.
        in_range("sapo.tasks.eval_per_level", self.tasks.eval_per_level as u64, 0..=100_000)?;
        in_range("sapo.tasks.families", self.tasks.families.len() as u64, 1..=64)?;
        if let Some((i, name)) = self.tasks.families.iter().enumerate().find(|(i, n)| self.tasks.families[..*i].contains(n)) {
            return Err(Error::config(format!("sapo.tasks.families[{i}]"), format!("{name:?} is listed twice")));
        }
        if self.tasks.file.is_some() && self.model.is_none() {
            return Err(Error::config(
                "sapo.tasks.file",
                "reasoning-gym tasks need a pretrained policy (sapo.model): their questions are prose, longer than a byte policy's window",
            ));
        }
        let source = TaskSource::new(&self.tasks)?;
        in_range("sapo.tasks.datasets", source.specialties().len() as u64, 1..=64)?;
        let families = source.per_round();
        if self.mix.local + self.mix.external == 0 {
            return Err(Error::config("sapo.mix", "a step needs at least one group"));
        }
        if self.mix.local > families {
            return Err(Error::config(
                "sapo.mix",
                format!(
                    "{} own groups, but an agent draws {families} questions a round ({} per {}; more with tasks.per_specialty)",
                    self.mix.local,
                    match self.tasks.per_specialty {
                        1 => "one".to_owned(),
                        n => n.to_string(),
                    },
                    if self.tasks.file.is_some() { "dataset" } else { "task family" }
                ),
            ));
        }
        let shared = (self.agents + self.liars - 1) * families;
        if self.mix.external > shared {
            return Err(Error::config(
                "sapo.mix",
                format!("{} external groups, but the other agents share at most {shared} a round", self.mix.external),
            ));
        }
        if self.model.is_none() {
            if self.sizes.is_empty() {
                return Err(Error::config("sapo.sizes", "at least one policy size"));
            }
            for s in &self.sizes {
                PolicyConfig::sized(s)?;
            }
        }
        if self.warm_start.batch == 0 {
            return Err(Error::config("sapo.warm_start.batch", "at least one question per step"));
        }
        match LinkSpec::try_mbit(self.latency_ms, self.bandwidth_mbit, ("sapo.latency_ms", "sapo.bandwidth_mbit")) {
            Ok(_) => {}
            Err(transport::TransportError::Config { field, reason }) => return Err(Error::config(field, reason)),
            Err(e) => return Err(Error::config("sapo.link", e.to_string())),
        }
        DeviceProfile::preset(&self.profile)?;
        self.sampling.validate()?;
        self.grpo.validate()?;
        match &self.model {
            None => self.policy.validate(),
            Some(model) => {
                if model.is_empty() {
                    return Err(Error::config("sapo.model", "an empty name"));
                }
                in_range("sapo.policy.prompt_width", self.policy.prompt_width as u64, 1..=1 << 16)?;
                in_range("sapo.policy.max_new", self.policy.max_new as u64, 1..=1 << 16)?;
                Ok(self.policy.optim.validate()?)
            }
        }
    }

    /// The policy configuration of a size.
    pub fn policy_of(&self, size: &str) -> Result<PolicyConfig> {
        Ok(PolicyConfig { model: PolicyConfig::sized(size)?.model, ..self.policy.clone() })
    }

    /// The size of agent `index` ([`PRETRAINED`] for every agent when a model is given).
    pub fn size_of(&self, index: usize) -> &str {
        if self.model.is_some() { PRETRAINED } else { &self.sizes[index % self.sizes.len()] }
    }

    /// The sizes the agents have, each once, sorted: each needs a [`warm_start`].
    pub fn sizes_in_use(&self) -> Vec<String> {
        if self.model.is_some() {
            return vec![PRETRAINED.to_owned()];
        }
        let mut sizes = self.sizes.clone();
        sizes.sort();
        sizes.dedup();
        sizes
    }

    /// A policy of agent size `size` with `weights` (its warm start) on `device`: the pretrained model's
    /// or a byte policy of that size.
    pub fn policy_with(
        &self,
        size: &str,
        weights: &BTreeMap<String, Tensor>,
        device: &candle_core::Device,
    ) -> Result<Policy> {
        match &self.model {
            Some(model) if size == PRETRAINED => {
                Policy::pretrained_with(&Checkpoint::open(model)?, &self.policy, weights, device)
            }
            _ => Policy::from_weights(&self.policy_of(size)?, weights, device),
        }
    }
}

/// The size of every agent of a swarm of a pretrained model.
pub const PRETRAINED: &str = "pretrained";

/// A warm-started policy of one size, and how well it does on the held-out questions.
#[derive(Debug, Clone)]
pub struct WarmStart {
    /// The size.
    pub size: String,
    /// Its weights.
    pub weights: BTreeMap<String, Tensor>,
    /// Mean greedy reward (accuracy, where rewards are 0 or 1) on the held-out tasks, by specialty.
    pub eval: BTreeMap<String, f64>,
    /// Supervised loss of the last step.
    pub loss: f64,
}

/// Trains a fresh policy of `size` on correct answers (the task format), as every agent of that size
/// starts from it.
pub fn warm_start(cfg: &SapoConfig, size: &str) -> Result<WarmStart> {
    let tasks = TaskSource::new(&cfg.tasks)?;
    if let (Some(model), PRETRAINED) = (&cfg.model, size) {
        // A pretrained model starts as it is.
        let p = Policy::pretrained(&Checkpoint::open(model)?, &cfg.policy, &cfg.device.resolve()?)?;
        check_readable(&p, &tasks)?;
        let eval = evaluate(&p, &tasks)?;
        return Ok(WarmStart { size: size.to_string(), weights: p.weights(), eval, loss: f64::NAN });
    }
    let policy = cfg.policy_of(size)?;
    let mut p = Policy::new(&policy, &cfg.device.resolve()?)?;
    let ws = &cfg.warm_start;
    let mut optim = AdamW::new(ws.optim(), policy.model.backend)?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x3a7d_57a2);
    let mut loss = f64::NAN;
    for _ in 0..ws.steps {
        let questions = tasks
            .sample(ws.batch, &mut rng)
            .ok_or_else(|| Error::config("sapo.tasks.file", "a byte policy warm-starts on our task families only"))?;
        let answers: Vec<String> = questions.iter().map(|q| format!("{}\n", q.answer())).collect();
        let examples: Vec<Example<'_>> = questions
            .iter()
            .zip(&answers)
            .map(|(q, a)| Example { prompt: q.prompt(), completion: a, weight: 1.0 })
            .collect();
        loss = p.supervised_step(&examples, &mut optim)?;
    }
    let eval = evaluate(&p, &tasks)?;
    Ok(WarmStart { size: size.to_string(), weights: p.weights(), eval, loss })
}

/// Mean greedy reward of `policy` on the held-out tasks of `tasks`, by specialty (and `all`): the
/// accuracy, where rewards are 0 or 1 (our families'; reasoning-gym's default rule gives partial credit).
pub fn evaluate(policy: &Policy, tasks: &TaskSource) -> Result<BTreeMap<String, f64>> {
    let mut sums: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    for chunk in tasks.held_out().chunks(64) {
        let prompts: Vec<&str> = chunk.iter().map(Task::prompt).collect();
        let answers = policy.sample(&prompts, 1, Sampling::GREEDY, &mut rng)?;
        for (task, a) in chunk.iter().zip(answers) {
            let reward = a.first().map_or(0.0, |a| policy.codec().reward(tasks, task, a));
            for key in [task.specialty().to_string(), "all".to_string()] {
                let e = sums.entry(key).or_default();
                e.0 += reward;
                e.1 += 1;
            }
        }
    }
    Ok(sums.into_iter().map(|(k, (r, n))| (k, r / n as f64)).collect())
}

/// The longest prompt of an export's tasks (`cfg.tasks.file`) as a policy of `cfg.model` reads it: its
/// tokens (the chat template and system turn included) and its dataset. `None` for our families, whose
/// prompts are a few characters, or without a model.
pub fn longest_prompt(cfg: &SapoConfig) -> Result<Option<(usize, String)>> {
    let source = TaskSource::new(&cfg.tasks)?;
    let (Some(model), Origin::Gym(set)) = (&cfg.model, source.origin()) else {
        return Ok(None);
    };
    let p = &cfg.policy;
    let codec = TextCodec::tokenizer(&Checkpoint::open(model)?, p.prompt_width, p.max_new, p.system.clone())?;
    Ok(longest(&codec, set)?.map(|(n, dataset)| (n, dataset.to_owned())))
}

fn longest<'a>(codec: &TextCodec, set: &'a GymSet) -> Result<Option<(usize, &'a str)>> {
    let mut longest: Option<(usize, &str)> = None;
    for task in set.tasks() {
        let n = codec.prompt_tokens(&task.question)?.len();
        if longest.is_none_or(|(m, _)| n > m) {
            longest = Some((n, &task.dataset));
        }
    }
    Ok(longest)
}

/// Checks that `policy` reads every task of an export, dealt or held out; the error names the dataset
/// with the longest prompt and the width it needs.
fn check_readable(policy: &Policy, tasks: &TaskSource) -> Result<()> {
    let Origin::Gym(set) = tasks.origin() else { return Ok(()) };
    let codec = policy.codec();
    match longest(codec, set)? {
        Some((n, dataset)) if n > codec.prompt_width() => Err(Error::config(
            "sapo.policy.prompt_width",
            format!(
                "{} tokens, but a task of dataset {dataset:?} is {n} tokens long as the policy reads it; raise it to {n} or choose other datasets",
                codec.prompt_width()
            ),
        )),
        _ => Ok(()),
    }
}

/// One agent's run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRun {
    /// Its index in the swarm.
    pub index: usize,
    /// Its policy size.
    pub size: String,
    /// Whether it is a lying agent (which does not learn).
    pub liar: bool,
    /// Each round's report.
    pub rounds: Vec<TrainReport>,
    /// Mean greedy reward on the held-out tasks at the end, by specialty (and `all`).
    pub eval: BTreeMap<String, f64>,
    /// Shared groups it dropped, by reason.
    pub dropped: Dropped,
    /// Payloads from peers that did not decode, or entries over the per-peer cap.
    pub rejected: usize,
    /// Its virtual time at the end.
    pub virtual_time: Duration,
}

impl AgentRun {
    /// Mean reward of its own completions, by round.
    pub fn rewards(&self) -> Vec<f64> {
        self.rounds.iter().map(|r| r.reward).collect()
    }
}

/// A swarm's run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SapoRun {
    /// The mix every agent used.
    pub mix: Mix,
    /// Every agent, honest ones first.
    pub agents: Vec<AgentRun>,
}

impl SapoRun {
    /// The honest agents.
    pub fn honest(&self) -> impl Iterator<Item = &AgentRun> {
        self.agents.iter().filter(|a| !a.liar)
    }

    /// SAPO's headline figure: the sum over honest agents and rounds of each round's mean reward.
    pub fn cumulative_reward(&self) -> f64 {
        self.honest().flat_map(|a| a.rounds.iter().map(|r| r.reward)).sum()
    }

    /// Mean over honest agents of the mean reward in rounds `range` (clamped to the run).
    pub fn mean_reward(&self, range: std::ops::Range<usize>) -> f64 {
        let per_agent: Vec<f64> = self
            .honest()
            .filter_map(|a| {
                let r = &a.rounds[range.start.min(a.rounds.len())..range.end.min(a.rounds.len())];
                (!r.is_empty()).then(|| r.iter().map(|x| x.reward).sum::<f64>() / r.len() as f64)
            })
            .collect();
        if per_agent.is_empty() { 0.0 } else { per_agent.iter().sum::<f64>() / per_agent.len() as f64 }
    }

    /// Mean held-out reward of honest agents, by specialty (and `all`).
    pub fn eval(&self) -> BTreeMap<String, f64> {
        let mut sum: BTreeMap<String, (f64, usize)> = BTreeMap::new();
        for a in self.honest() {
            for (k, v) in &a.eval {
                let e = sum.entry(k.clone()).or_default();
                e.0 += v;
                e.1 += 1;
            }
        }
        sum.into_iter().map(|(k, (s, n))| (k, s / n as f64)).collect()
    }
}

/// Runs the swarm: every honest agent from the warm start of its size (one of `warm`), then the liars.
/// `progress` is called with each round agent 0 finishes.
pub fn run(cfg: &SapoConfig, warm: &[WarmStart], progress: impl Fn(u64) + Send + Sync + 'static) -> Result<SapoRun> {
    let all: Vec<usize> = (0..cfg.agents + cfg.liars).collect();
    run_agents(cfg, warm, &all, progress)
}

/// Runs only agent `index` of the swarm `cfg` describes, alone on the network (what it would learn in silo).
pub fn run_alone(cfg: &SapoConfig, warm: &[WarmStart], index: usize) -> Result<AgentRun> {
    let mut run = run_agents(cfg, warm, &[index], |_| {})?;
    run.agents.pop().ok_or_else(|| Error::config("sapo.agents", format!("no agent {index}")))
}

struct Shared {
    cfg: SapoConfig,
    tasks: Arc<TaskSource>,
    warm: Vec<WarmStart>,
    indices: Vec<usize>,
    /// Where the policies' tensors live (the real device every agent of this process shares).
    device: Device,
    /// Whether compute is charged in virtual time (the simulated network) or simply takes its time.
    simulated: bool,
    progress: Box<dyn Fn(u64) + Send + Sync>,
}

/// Plays agent `index` of the swarm `cfg` describes over any transport and clock — a QUIC endpoint in
/// real time, say — instead of the simulated network: the same game, seeds and rules as [`run`], with
/// compute taking the time it really takes. `ctx.peers` are the swarm's agents (this one included).
/// `progress` is called with each round the agent finishes.
pub async fn play_agent<T: Transport, C: Clock>(
    cfg: &SapoConfig,
    warm: &[WarmStart],
    index: usize,
    ctx: AgentCtx<T, C>,
    progress: impl Fn(u64) + Send + Sync + 'static,
) -> Result<AgentRun> {
    cfg.validate()?;
    let shared = Arc::new(Shared {
        cfg: cfg.clone(),
        tasks: Arc::new(TaskSource::new(&cfg.tasks)?),
        warm: warm.to_vec(),
        indices: Vec::new(),
        device: cfg.device.resolve()?,
        simulated: false,
        progress: Box::new(progress),
    });
    Ok(play(shared, index, ctx).await?)
}

fn run_agents(
    cfg: &SapoConfig,
    warm: &[WarmStart],
    indices: &[usize],
    progress: impl Fn(u64) + Send + Sync + 'static,
) -> Result<SapoRun> {
    cfg.validate()?;
    for i in 0..cfg.agents.min(cfg.sizes.len()) {
        let size = cfg.size_of(i);
        if !warm.iter().any(|w| w.size == size) {
            return Err(Error::config("sapo.sizes", format!("no warm start of size {size:?}")));
        }
    }
    let profile = DeviceProfile::preset(&cfg.profile)?;
    let device = cfg.device.resolve()?;
    let link = LinkSpec::mbit(cfg.latency_ms, cfg.bandwidth_mbit);
    let shared = Arc::new(Shared {
        cfg: cfg.clone(),
        tasks: Arc::new(TaskSource::new(&cfg.tasks)?),
        warm: warm.to_vec(),
        indices: indices.to_vec(),
        device,
        simulated: true,
        progress: Box::new(progress),
    });
    let results = run_simulation(async move {
        let world = World::uniform(shared.indices.len(), profile, link);
        let swarm = SimSwarm::build(&world, shared.cfg.seed)?;
        Ok::<_, Error>(
            swarm
                .run(move |ctx| {
                    let index = shared.indices[ctx.index as usize];
                    play(shared.clone(), index, ctx)
                })
                .await,
        )
    })??;
    let agents = results.into_iter().map(|r| r.map_err(Error::from)).collect::<Result<Vec<_>>>()?;
    Ok(SapoRun { mix: cfg.mix, agents })
}

/// Seeds of agent `index`: its questions, its sampling, its choice of shared groups.
fn seeds(cfg: &SapoConfig, index: usize) -> [u64; 3] {
    let base = cfg.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (index as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    [base, base ^ 0x1111, base ^ 0x2222]
}

async fn play<T: Transport, C: Clock>(
    shared: Arc<Shared>,
    index: usize,
    ctx: AgentCtx<T, C>,
) -> genrl::Result<AgentRun> {
    let cfg = &shared.cfg;
    let liar = index >= cfg.agents;
    let comm = Inbox::new(ctx.transport.clone(), ctx.clock.clone(), ctx.peers.clone())
        .with_events(ctx.metrics.clone(), ctx.index);
    let families = shared.tasks.per_round();
    let [questions, sampling, choice] = seeds(cfg, index);
    if liar {
        let data = ForgedQuestions { tasks: shared.tasks.clone(), seed: questions };
        let trainer = Liar { completions: cfg.completions };
        let policy = Policy::new(&cfg.policy, &shared.device).map_err(|e| genrl::Error::role("liar", e))?;
        let rewards = SwarmRewards::new(&policy, shared.tasks.clone(), 0, cfg.completions, choice);
        // It keeps the pace of an honest agent of the default size, so its rollouts arrive as often.
        let flops = policy.generation_flops(families, cfg.completions)
            + policy.training_flops(cfg.completions * (cfg.mix.local + cfg.mix.external));
        let mut game = Game { data, trainer, rewards, comm, stages: 1, max_entries_per_peer: families };
        for round in 0..cfg.rounds {
            game.play_round(round).await?;
            if shared.simulated {
                ctx.compute(flops).await;
            } else {
                // In real time a liar computes nothing: pace it rather than flood the swarm.
                ctx.clock.sleep(Duration::from_millis(50)).await;
            }
        }
        return Ok(AgentRun {
            index,
            size: "liar".into(),
            liar,
            rounds: Vec::new(),
            eval: BTreeMap::new(),
            dropped: Dropped::default(),
            rejected: 0,
            virtual_time: ctx.clock.now(),
        });
    }
    let role = |e: Error| genrl::Error::role("agent", e);
    let size = cfg.size_of(index).to_string();
    let warm = shared
        .warm
        .iter()
        .find(|w| w.size == size)
        .ok_or_else(|| genrl::Error::config("sapo.sizes", format!("no warm start of size {size:?}")))?;
    let policy = cfg.policy_with(&size, &warm.weights, &shared.device).map_err(role)?;
    let reference = if cfg.grpo.beta > 0.0 {
        Some(cfg.policy_with(&size, &warm.weights, &shared.device).map_err(role)?)
    } else {
        None
    };
    let rewards = SwarmRewards::new(&policy, shared.tasks.clone(), cfg.mix.external, cfg.completions, choice);
    let trainer = PolicyTrainer {
        policy,
        reference,
        completions: cfg.completions,
        sampling: cfg.sampling,
        grpo: cfg.grpo.clone(),
        local: cfg.mix.local,
        rng: ChaCha8Rng::seed_from_u64(sampling),
    };
    let data = TaskStream { tasks: shared.tasks.clone(), seed: questions };
    let mut game = Game { data, trainer, rewards, comm, stages: 1, max_entries_per_peer: families };
    let mut rounds = Vec::with_capacity(cfg.rounds as usize);
    let mut rejected = 0;
    for round in 0..cfg.rounds {
        let out = game.play_round(round).await?;
        rejected += out.state.rejected;
        let report = out.report;
        ctx.record("reward", round, report.reward);
        let policy = &game.trainer.policy;
        let trained = cfg.completions * (report.local + report.external);
        let flops = policy.generation_flops(families, cfg.completions) + policy.training_flops(trained);
        if shared.simulated {
            ctx.compute(flops).await;
        }
        rounds.push(report);
        // On the simulated network one agent speaks for the swarm; a real node reports its own rounds.
        if ctx.index == 0 || !shared.simulated {
            (shared.progress)(round + 1);
        }
    }
    let eval = evaluate(&game.trainer.policy, &shared.tasks).map_err(role)?;
    Ok(AgentRun {
        index,
        size,
        liar,
        rounds,
        eval,
        dropped: game.rewards.dropped,
        rejected,
        virtual_time: ctx.clock.now(),
    })
}
