//! A CodeZero swarm on the simulated network: a shared warm start of the proposer's and the solver's
//! policies, then every agent's game of roles, round by round, exchanging through a
//! [`genrl::comm::Inbox`] (never waiting for a slow peer). Every random choice is seeded by the run's
//! seed and the agent's index, so a run is repeatable.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor};
use genrl::comm::{CommunicationBackend, Inbox};
use genrl::env::code::{CodeProblem, Limits, random_inputs, random_program};
use genrl::roles::{RoleGame, RoleSchedule};
use genrl::{AgentCtx, Clock, DeviceProfile, SimSwarm, World, run_simulation};
use models::{AdamW, DeviceSpec};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sapo::policy::Example;
use sapo::{GrpoConfig, Policy, PolicyConfig, Sampling, WarmStartConfig};
use serde::{Deserialize, Serialize};
use transport::Transport;
use transport::sim::LinkSpec;

use crate::error::{Error, Result};
use crate::roles::{
    Dropped, Evaluator, EvaluatorReport, Proposer, ProposerReport, ROLES, Request, Rules, Solver, SolverReport,
};

/// One CodeZero experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CodeZeroConfig {
    /// Seeds the warm start, every agent's problems and sampling, and the network.
    pub seed: u64,
    /// Honest agents.
    pub agents: usize,
    /// Lying agents added to the swarm: they share problems with forged answers and verdicts that
    /// pass every solution.
    pub liars: usize,
    /// Rounds each agent plays.
    pub rounds: u64,
    /// Who plays which role (`proposer` 0, `solver` 1, `evaluator` 2) each round.
    pub roles: RoleSchedule,
    /// Programs a proposer writes per round (CodeZero: 3).
    pub proposals: usize,
    /// Programs a solver writes per problem (G).
    pub completions: usize,
    /// Problems of a solver's own stream per round (CodeZero: 1 from its dataset).
    pub stream: usize,
    /// Proposed problems a solver takes per round, at most (CodeZero: 1).
    pub proposed: usize,
    /// External solver groups per step (J).
    pub external: usize,
    /// Attempts an evaluator judges per round, at most.
    pub judge_per_round: usize,
    /// Tests per problem.
    pub tests: usize,
    /// Tests the prompt shows (the rest are hidden).
    pub shown: usize,
    /// The sandbox's limits.
    pub limits: Limits,
    /// Both policies' window and optimizer (learning rate 1e-4); the model is the `tiny` preset's.
    pub policy: PolicyConfig,
    /// How programs are drawn.
    pub sampling: Sampling,
    /// GRPO (solvers) and the clipped policy gradient (proposers).
    pub grpo: GrpoConfig,
    /// The supervised warm start of both policies on the format (random reference programs).
    pub warm_start: WarmStartConfig,
    /// Held-out problems the solvers are scored on (a third of each level).
    pub held_out: usize,
    /// Rounds a board remembers (a proposal's verdicts come back rounds after it).
    pub memory: u64,
    /// The simulated profile of every agent (`laptop`, `cpu32`, `a10`, `h100`).
    pub profile: String,
    /// Where the policies' tensors live.
    pub device: DeviceSpec,
    /// One-way latency between agents, in milliseconds.
    pub latency_ms: f64,
    /// Bandwidth between agents, in Mbit/s.
    pub bandwidth_mbit: f64,
    /// What carries the game (`sim`, or `quic` run by the `swarmlab` CLI as node processes).
    pub transport: genrl::TransportKind,
}

impl Default for CodeZeroConfig {
    fn default() -> Self {
        let mut policy = PolicyConfig { prompt_width: 40, max_new: 28, ..PolicyConfig::default() };
        // A third of SAPO's: at 3e-4 the solvers collapsed onto one fallback program (`x x`) within 40
        // rounds (two agents: held-out pass rate 0.23 → 0.03 and 0.00); at 1e-4 three agents ended 60
        // rounds at 0.13, 0.03 and 0.17.
        policy.optim.lr = 1e-4;
        policy.optim.min_lr = 1e-4;
        Self {
            seed: 0,
            agents: 4,
            liars: 0,
            rounds: 40,
            roles: RoleSchedule::All,
            proposals: 3,
            completions: 4,
            stream: 1,
            proposed: 2,
            external: 2,
            judge_per_round: 8,
            tests: 4,
            shown: 3,
            limits: Limits::default(),
            policy,
            sampling: Sampling::default(),
            grpo: GrpoConfig::default(),
            warm_start: WarmStartConfig::default(),
            held_out: 30,
            memory: 8,
            profile: "laptop".into(),
            device: DeviceSpec::Cpu,
            latency_ms: 20.0,
            bandwidth_mbit: 100.0,
            transport: genrl::TransportKind::Sim,
        }
    }
}

impl CodeZeroConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        let positive = |field: &str, v: usize, max: usize| {
            if v == 0 || v > max {
                Err(Error::config(format!("codezero.{field}"), format!("{v} is not in 1..={max}")))
            } else {
                Ok(())
            }
        };
        positive("agents", self.agents, 64)?;
        positive("proposals", self.proposals, 64)?;
        positive("completions", self.completions, 64)?;
        positive("tests", self.tests, 10)?;
        positive("judge_per_round", self.judge_per_round, 4096)?;
        positive("held_out", self.held_out, 4096)?;
        if self.rounds == 0 || self.rounds > 1_000_000 {
            return Err(Error::config("codezero.rounds", format!("{} is not in 1..=1000000", self.rounds)));
        }
        if self.liars > 64 {
            return Err(Error::config("codezero.liars", format!("{} is over 64", self.liars)));
        }
        if self.shown == 0 || self.shown > self.tests {
            return Err(Error::config("codezero.shown", format!("{} is not in 1..={}", self.shown, self.tests)));
        }
        if self.stream + self.proposed == 0 || self.stream > 64 || self.proposed > 64 || self.external > 4096 {
            return Err(Error::config(
                "codezero.stream",
                "a solver needs 1 to 128 problems a round (stream + proposed), J up to 4096",
            ));
        }
        if self.memory < 2 || self.memory > 1024 {
            return Err(Error::config("codezero.memory", format!("{} is not in 2..=1024 rounds", self.memory)));
        }
        self.limits.validate()?;
        self.roles.validate(ROLES.len(), self.agents + self.liars).map_err(Error::from)?;
        self.policy().validate()?;
        self.sampling.validate()?;
        self.grpo.validate()?;
        DeviceProfile::preset(&self.profile)?;
        LinkSpec::mbit(self.latency_ms, self.bandwidth_mbit)
            .validate("codezero.link")
            .map_err(|e| Error::config("codezero.link", e.to_string()))?;
        Ok(())
    }

    /// The policies' configuration (the window's model fitted).
    pub fn policy(&self) -> PolicyConfig {
        self.policy.clone()
    }

    /// The rules every role shares.
    pub fn rules(&self) -> Rules {
        Rules {
            limits: self.limits,
            tests: self.tests,
            shown: self.shown,
            max_prompt: self.policy.prompt_width,
            max_program: self.policy.max_new,
        }
    }
}

/// The warm-started policies every agent starts from.
#[derive(Debug, Clone)]
pub struct WarmStart {
    /// The proposer's weights.
    pub proposer: BTreeMap<String, Tensor>,
    /// The solver's weights.
    pub solver: BTreeMap<String, Tensor>,
    /// The solver's pass rate on the held-out problems after the warm start.
    pub held_out: f64,
    /// Share of the proposer's greedy programs that run, one per level.
    pub proposer_valid: f64,
}

/// The held-out problems (the same for every run of a configuration's `held_out`).
pub fn held_out(cfg: &CodeZeroConfig) -> Vec<CodeProblem> {
    let rules = cfg.rules();
    let mut rng = ChaCha8Rng::seed_from_u64(0x0004_e1d0_u64 ^ cfg.held_out as u64);
    let mut out = Vec::with_capacity(cfg.held_out);
    let mut level = 0;
    while out.len() < cfg.held_out {
        if let Some(p) = rules.random_problem((level % 3) as u8 + 1, &mut rng) {
            out.push(p);
            level += 1;
        }
    }
    out
}

/// Greedy pass rate of `policy` on `problems` (every test, the hidden ones included).
pub fn pass_rate(policy: &Policy, problems: &[CodeProblem], limits: &Limits) -> Result<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut passed = 0;
    for chunk in problems.chunks(64) {
        let prompts: Vec<String> = chunk.iter().map(CodeProblem::prompt).collect();
        let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
        let programs = policy.sample(&prompts, 1, Sampling::GREEDY, &mut rng)?;
        for (p, c) in chunk.iter().zip(&programs) {
            tracing::debug!(prompt = p.prompt(), reference = p.reference, program = ?c, "held-out answer");
        }
        passed +=
            chunk.iter().zip(&programs).filter(|(p, c)| c.first().is_some_and(|c| p.reward(c, limits) > 0.0)).count();
    }
    Ok(passed as f64 / problems.len().max(1) as f64)
}

/// Trains both policies on the format: the solver on problems with their reference programs, the
/// proposer on `L<level>=` with a reference program of that level.
pub fn warm_start(cfg: &CodeZeroConfig) -> Result<WarmStart> {
    cfg.validate()?;
    let rules = cfg.rules();
    let device = cfg.device.resolve()?;
    let ws = &cfg.warm_start;
    let optim_cfg = ws.optim();
    let policy_cfg = cfg.policy();
    let mut solver = Policy::new(&policy_cfg, &device)?;
    let mut proposer = Policy::new(&policy_cfg, &device)?;
    let mut solver_optim = AdamW::new(optim_cfg.clone(), policy_cfg.model.backend)?;
    let mut proposer_optim = AdamW::new(optim_cfg, policy_cfg.model.backend)?;
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x000c_0de0);
    for _ in 0..ws.steps {
        let mut problems = Vec::with_capacity(ws.batch);
        while problems.len() < ws.batch {
            let level = rng.random_range(1..=3);
            problems.extend(rules.random_problem(level, &mut rng));
        }
        let prompts: Vec<String> = problems.iter().map(CodeProblem::prompt).collect();
        let programs: Vec<String> = problems.iter().map(|p| format!("{}\n", p.reference)).collect();
        let examples: Vec<Example<'_>> = prompts
            .iter()
            .zip(&programs)
            .map(|(prompt, completion)| Example { prompt, completion, weight: 1.0 })
            .collect();
        solver.supervised_step(&examples, &mut solver_optim)?;
        let requests: Vec<String> = (0..ws.batch).map(|i| format!("L{}=", i % 3 + 1)).collect();
        let references: Vec<String> =
            (0..ws.batch).map(|i| format!("{}\n", random_program((i % 3 + 1) as u8, &mut rng))).collect();
        let examples: Vec<Example<'_>> = requests
            .iter()
            .zip(&references)
            .map(|(prompt, completion)| Example { prompt, completion, weight: 1.0 })
            .collect();
        proposer.supervised_step(&examples, &mut proposer_optim)?;
    }
    let held_out = pass_rate(&solver, &held_out(cfg), &rules.limits)?;
    let prompts = ["L1=", "L2=", "L3="];
    let greedy = proposer.sample(&prompts, 1, Sampling::GREEDY, &mut rng)?;
    let inputs = random_inputs(rules.tests, &mut rng);
    let valid = greedy
        .iter()
        .enumerate()
        .filter(|(i, g)| {
            let request = Request { level: *i as u8 + 1, inputs: inputs.clone() };
            g.first().is_some_and(|p| crate::roles::problem_of(&request, p, &rules).is_some())
        })
        .count();
    Ok(WarmStart {
        proposer: proposer.weights(),
        solver: solver.weights(),
        held_out,
        proposer_valid: valid as f64 / prompts.len() as f64,
    })
}

/// What one agent did in one round.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RoundRecord {
    /// The proposer's step, when it played the role.
    pub proposer: Option<ProposerReport>,
    /// The solver's step, when it played the role.
    pub solver: Option<SolverReport>,
    /// The evaluator's work, when it played the role.
    pub evaluator: Option<EvaluatorReport>,
    /// Payloads and entries rejected this round, over all roles.
    pub rejected: usize,
}

/// One agent's run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRun {
    /// Its index in the swarm.
    pub index: usize,
    /// Whether it is a lying agent.
    pub liar: bool,
    /// Its rounds.
    pub rounds: Vec<RoundRecord>,
    /// Its solver's greedy pass rate on the held-out problems at the end.
    pub held_out: f64,
    /// What it dropped from peers, and why (its solver's and evaluator's checks together).
    pub dropped: Dropped,
}

/// A whole run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CodeZeroRun {
    /// The solver's held-out pass rate after the warm start (every agent's start).
    pub warm_held_out: f64,
    /// Every agent, by index (liars last).
    pub agents: Vec<AgentRun>,
    /// Wall seconds of the whole swarm (all agents on one thread).
    pub wall_seconds: f64,
}

impl CodeZeroRun {
    /// The honest agents.
    pub fn honest(&self) -> impl Iterator<Item = &AgentRun> {
        self.agents.iter().filter(|a| !a.liar)
    }

    /// Mean over honest agents of `f` of each round where it gives a value, by round.
    pub fn by_round(&self, f: impl Fn(&RoundRecord) -> Option<f64>) -> Vec<Option<f64>> {
        let rounds = self.agents.iter().map(|a| a.rounds.len()).max().unwrap_or(0);
        (0..rounds)
            .map(|r| {
                let xs: Vec<f64> = self.honest().filter_map(|a| a.rounds.get(r).and_then(&f)).collect();
                (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
            })
            .collect()
    }

    /// Sandbox seconds over all agents and rounds.
    pub fn sandbox_seconds(&self) -> f64 {
        self.agents
            .iter()
            .flat_map(|a| &a.rounds)
            .map(|r| r.solver.map_or(0.0, |s| s.sandbox_seconds) + r.evaluator.map_or(0.0, |e| e.sandbox_seconds))
            .sum()
    }

    /// Mean held-out pass rate of the honest agents at the end.
    pub fn held_out(&self) -> f64 {
        let xs: Vec<f64> = self.honest().map(|a| a.held_out).collect();
        xs.iter().sum::<f64>() / xs.len().max(1) as f64
    }

    /// What the honest agents dropped, summed.
    pub fn dropped(&self) -> Dropped {
        self.honest().fold(Dropped::default(), |d, a| add(d, a.dropped))
    }
}

fn add(a: Dropped, b: Dropped) -> Dropped {
    Dropped {
        forged_problems: a.forged_problems + b.forged_problems,
        false_passes: a.false_passes + b.false_passes,
        unreadable: a.unreadable + b.unreadable,
        no_signal: a.no_signal + b.no_signal,
        unsampled: a.unsampled + b.unsampled,
    }
}

/// Payloads an agent's inbox keeps per peer until it takes them.
const KEEP_PAYLOADS: usize = 16;

/// Seeds of agent `index`: its proposals, its problems and sampling.
fn seeds(cfg: &CodeZeroConfig, index: usize) -> [u64; 2] {
    let base = cfg.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (index as u64).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    [base ^ 0x5151, base ^ 0x7373]
}

/// Builds agent `index`'s game on `comm`.
pub fn game<B: CommunicationBackend>(
    cfg: &CodeZeroConfig,
    warm: &WarmStart,
    device: &Device,
    index: usize,
    comm: B,
) -> Result<RoleGame<B>> {
    let rules = cfg.rules();
    let policy = cfg.policy();
    let [proposals, problems] = seeds(cfg, index);
    let liar = index >= cfg.agents;
    let mut proposer = Proposer::new(
        Policy::from_weights(&policy, &warm.proposer, device)?,
        cfg.proposals,
        cfg.sampling,
        cfg.grpo.clone(),
        rules.clone(),
        proposals,
    );
    let mut solver = Solver::new(
        Policy::from_weights(&policy, &warm.solver, device)?,
        cfg.completions,
        cfg.sampling,
        cfg.grpo.clone(),
        rules.clone(),
        (cfg.stream, cfg.proposed, cfg.external),
        problems,
    );
    solver.forge = liar;
    if cfg.grpo.beta > 0.0 {
        proposer.reference = Some(Policy::from_weights(&policy, &warm.proposer, device)?);
        solver.reference = Some(Policy::from_weights(&policy, &warm.solver, device)?);
    }
    let mut evaluator = Evaluator::new(rules, cfg.judge_per_round);
    evaluator.lie = liar;
    Ok(RoleGame::new(comm, cfg.roles.clone(), index, cfg.agents + cfg.liars, cfg.memory)
        .with_role(proposer)
        .with_role(solver)
        .with_role(evaluator))
}

/// Plays agent `index`'s rounds on `ctx`, charging the policies' compute to its simulated clock when
/// `simulated`; `progress` hears of each finished round.
pub async fn play<T: Transport, C: Clock>(
    cfg: &CodeZeroConfig,
    warm: &WarmStart,
    device: &Device,
    index: usize,
    ctx: AgentCtx<T, C>,
    simulated: bool,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<AgentRun> {
    // Agents in different roles run rounds of different lengths: keep a fast peer's every payload.
    let comm = Inbox::new(ctx.transport.clone(), ctx.clock.clone(), ctx.peers.clone())
        .keeping(KEEP_PAYLOADS)
        .with_events(ctx.metrics.clone(), ctx.index);
    let mut g = game(cfg, warm, device, index, comm)?;
    let mut rounds = Vec::with_capacity(cfg.rounds as usize);
    for round in 0..cfg.rounds {
        let out = g.play_round(round).await?;
        let mut record = RoundRecord { rejected: out.iter().map(|o| o.rejected).sum(), ..RoundRecord::default() };
        record.proposer = out[0].report::<ProposerReport>().copied();
        record.solver = out[1].report::<SolverReport>().copied();
        record.evaluator = out[2].report::<EvaluatorReport>().copied();
        if let Some(s) = &record.solver {
            ctx.record("solver_reward", round, s.reward);
        }
        if let Some(p) = record.proposer.filter(|p| p.learned > 0) {
            ctx.record("proposer_reward", round, p.reward);
        }
        if simulated {
            let proposer = g.role::<Proposer>(0).map(|p| &p.policy);
            let solver = g.role::<Solver>(1).map(|s| &s.policy);
            let mut flops = 0.0;
            if let (Some(p), Some(r)) = (proposer, &record.proposer) {
                flops +=
                    p.generation_flops(r.proposed.div_ceil(cfg.proposals), cfg.proposals) + p.training_flops(r.learned);
            }
            if let (Some(s), Some(r)) = (solver, &record.solver) {
                let groups = r.problems + r.external;
                flops += s.generation_flops(r.problems, cfg.completions) + s.training_flops(groups * cfg.completions);
            }
            ctx.compute(flops).await;
        }
        rounds.push(record);
        if ctx.index == 0 || !simulated {
            progress(round + 1);
        }
    }
    let solver = g.role::<Solver>(1).ok_or_else(|| Error::config("codezero", "the solver role is missing"))?;
    let evaluator = g.role::<Evaluator>(2).ok_or_else(|| Error::config("codezero", "the evaluator role is missing"))?;
    let held_out = pass_rate(&solver.policy, &held_out(cfg), &cfg.limits)?;
    Ok(AgentRun { index, liar: index >= cfg.agents, rounds, held_out, dropped: add(solver.dropped, evaluator.dropped) })
}

/// Runs the swarm of `cfg` on the simulated network from `warm`; `progress` hears of each round.
pub fn run(
    cfg: &CodeZeroConfig,
    warm: &WarmStart,
    progress: impl Fn(u64) + Send + Sync + 'static,
) -> Result<CodeZeroRun> {
    cfg.validate()?;
    let profile = DeviceProfile::preset(&cfg.profile)?;
    let device = cfg.device.resolve()?;
    let link = LinkSpec::mbit(cfg.latency_ms, cfg.bandwidth_mbit);
    let shared = Arc::new((cfg.clone(), warm.clone(), device, Box::new(progress) as Box<dyn Fn(u64) + Send + Sync>));
    let start = Instant::now();
    let results = run_simulation(async move {
        let world = World::uniform(shared.0.agents + shared.0.liars, profile, link);
        let swarm = SimSwarm::build(&world, shared.0.seed)?;
        Ok::<_, Error>(
            swarm
                .run(move |ctx| {
                    let shared = shared.clone();
                    async move {
                        let (cfg, warm, device, progress) = &*shared;
                        let index = ctx.index as usize;
                        play(cfg, warm, device, index, ctx, true, progress.as_ref())
                            .await
                            .map_err(|e| genrl::Error::role("codezero agent", e))
                    }
                })
                .await,
        )
    })??;
    let agents = results.into_iter().map(|r| r.map_err(Error::from)).collect::<Result<Vec<_>>>()?;
    Ok(CodeZeroRun { warm_held_out: warm.held_out, agents, wall_seconds: start.elapsed().as_secs_f64() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> CodeZeroConfig {
        CodeZeroConfig {
            agents: 3,
            rounds: 8,
            warm_start: WarmStartConfig { steps: 40, batch: 16, lr: 3e-3 },
            held_out: 9,
            ..CodeZeroConfig::default()
        }
    }

    #[test]
    fn a_three_role_swarm_proposes_solves_judges_and_rewards_proposers() -> Result<()> {
        let cfg = tiny();
        let warm = warm_start(&cfg)?;
        let run = run(&cfg, &warm, |_| {})?;
        assert_eq!(run.agents.len(), 3);
        for a in &run.agents {
            assert_eq!(a.rounds.len(), 8);
            assert!(a.rounds.iter().all(|r| r.proposer.is_some() && r.solver.is_some() && r.evaluator.is_some()));
            // Proposed problems reach the solvers, their solutions the evaluators, the verdicts the proposers.
            let solved_proposed: usize = a.rounds.iter().filter_map(|r| r.solver).map(|s| s.proposed).sum();
            let judged: usize = a.rounds.iter().filter_map(|r| r.evaluator).map(|e| e.judged).sum();
            let learned: usize = a.rounds.iter().filter_map(|r| r.proposer).map(|p| p.learned).sum();
            assert!(solved_proposed > 0 && judged > 0 && learned > 0, "{a:?}");
        }
        assert!(run.sandbox_seconds() > 0.0);
        let again = super::run(&cfg, &warm, |_| {})?;
        assert_eq!(untimed(run), untimed(again), "a run is repeatable");
        Ok(())
    }

    /// The agents' records without the wall times (which vary from run to run).
    fn untimed(run: CodeZeroRun) -> Vec<AgentRun> {
        let mut agents = run.agents;
        for r in agents.iter_mut().flat_map(|a| a.rounds.iter_mut()) {
            if let Some(s) = &mut r.solver {
                s.sandbox_seconds = 0.0;
            }
            if let Some(e) = &mut r.evaluator {
                e.sandbox_seconds = 0.0;
            }
        }
        agents
    }
}
