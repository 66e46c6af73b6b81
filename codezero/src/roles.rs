//! The three roles of the game, as [`genrl::roles::Role`]s.
//!
//! - [`Proposer`]: asked for a problem of a level (`L2=`), its policy writes reference programs; a
//!   problem is a program and the inputs of its tests. Reward (CodeZero's proposer rule): with `p` the
//!   share of judged solutions that pass, `1 − p`, but 0 when every solution or none passes — problems
//!   that some but not all solve; −1 for a program that does not run on its inputs (the tests must
//!   run). The reward comes rounds later, from the evaluators' verdicts; the proposer learns by the
//!   clipped policy gradient with the advantage `reward − mean` over the proposals it learns from at
//!   once (CodeZero's proposer, PPO-style, one epoch).
//! - [`Solver`]: each round, problems from its own seeded stream and the newest proposed ones on the
//!   board it has not tried; `G` programs each, rewarded 1 when they pass every test (the hidden ones
//!   included) by its own execution in the sandbox, and trained with GRPO on its own groups and up to
//!   `J` groups shared by other solvers (SAPO: re-scored by its own execution).
//! - [`Evaluator`]: runs the solutions to proposed problems in the sandbox and shares a verdict per
//!   solution. It has no policy (execution-checked rewards need none).
//!
//! Receivers re-check what peers share: a shared problem's answers must be its reference program's
//! (the tests run), a shared solution is re-executed before it is learned from, and a verdict that
//! claims a pass is re-executed; what fails is dropped and counted ([`Dropped`]).

use std::collections::{BTreeMap, BTreeSet};

use genrl::env::code::{CodeProblem, Limits, random_inputs, random_program};
use genrl::game::{Entry, GameState};
use genrl::roles::{Board, Learned, Role};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sapo::policy::{Example, StepReport};
use sapo::{GrpoConfig, Policy, Sampling, grpo};
use serde::{Deserialize, Serialize};
use transport::PeerId;

/// The roles' names, by index in the game.
pub const ROLES: [&str; 3] = ["proposer", "solver", "evaluator"];

/// The settings every role of an agent shares.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// The sandbox's limits.
    pub limits: Limits,
    /// Tests per problem.
    pub tests: usize,
    /// Tests the prompt shows.
    pub shown: usize,
    /// Widest prompt a solver reads.
    pub max_prompt: usize,
    /// Longest program, its newline included.
    pub max_program: usize,
}

impl Rules {
    /// The problem of `reference` on `inputs` under these rules, if the reference runs on every input
    /// and the prompt fits.
    pub fn problem(&self, reference: &str, inputs: Vec<i64>) -> Option<CodeProblem> {
        CodeProblem::from_reference(reference, inputs, self.shown, self.max_prompt, &self.limits).ok()
    }

    /// A random reference program of `level` on random inputs, and its problem (a stream problem, a
    /// warm-start example, a held-out problem).
    pub fn random_problem(&self, level: u8, rng: &mut dyn RngCore) -> Option<CodeProblem> {
        let reference = random_program(level, rng);
        let inputs = random_inputs(self.tests, rng);
        self.problem(&reference, inputs)
    }
}

/// A request for a problem: its level and the inputs of its tests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Difficulty asked for, 1 to 3.
    pub level: u8,
    /// The tests' inputs.
    pub inputs: Vec<i64>,
}

impl Request {
    /// What the proposer's policy reads.
    pub fn prompt(&self) -> String {
        format!("L{}=", self.level)
    }
}

/// Where a proposed problem comes from: its proposer, round and place among that round's proposals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProblemId {
    /// The proposer.
    pub proposer: PeerId,
    /// The round it was proposed in.
    pub round: u64,
    /// Its place among the proposer's programs of that round.
    pub index: u32,
}

/// A problem a solver works on: proposed (with its id) or from its own stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// The proposal it comes from, if any.
    pub id: Option<ProblemId>,
    /// The problem.
    pub problem: CodeProblem,
}

/// A solver's programs for a proposed problem, as an evaluator judges them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// The solver.
    pub solver: PeerId,
    /// The proposal.
    pub id: ProblemId,
    /// The problem.
    pub problem: CodeProblem,
    /// The programs, newlines included.
    pub programs: Vec<String>,
}

/// What was dropped from peers, and why, counted over a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Dropped {
    /// Shared problems whose answers are not their reference program's, or whose tests do not run.
    pub forged_problems: usize,
    /// Verdicts that claim a pass the receiver's own run does not give.
    pub false_passes: usize,
    /// Programs too long or not ASCII, or more of them than asked for.
    pub unreadable: usize,
    /// Shared groups whose programs all score the same (no learning signal).
    pub no_signal: usize,
    /// Usable shared groups left over after sampling J.
    pub unsampled: usize,
}

/// Problems `problem`'s programs are read as: ASCII, at most `max` bytes each, at most `count` of them.
fn readable(programs: &[String], count: usize, max: usize) -> bool {
    !programs.is_empty() && programs.len() <= count && programs.iter().all(|p| p.is_ascii() && p.len() <= max)
}

/// The problem of `program` on `request`'s inputs, if the program runs on all of them and the prompt
/// fits.
pub fn problem_of(request: &Request, program: &str, rules: &Rules) -> Option<CodeProblem> {
    rules.problem(program.strip_suffix('\n')?, request.inputs.clone())
}

fn mean(xs: impl IntoIterator<Item = f64>) -> f64 {
    let (sum, n) = xs.into_iter().fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 { 0.0 } else { sum / n as f64 }
}

/// What the proposer's learning step reports.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct ProposerReport {
    /// Proposals this round whose program runs (a problem was made).
    pub valid: usize,
    /// Proposals this round.
    pub proposed: usize,
    /// Of the proposals that run, those whose tests ask for a constant or the input itself.
    pub trivial: usize,
    /// Proposals learned from this round (rewarded now: judged, or not running).
    pub learned: usize,
    /// Mean reward of those.
    pub reward: f64,
    /// Mean pass rate of the solutions judged for the proposals learned from (lower: harder).
    pub pass_rate: f64,
    /// The step.
    pub step: StepReport,
}

/// The proposer: a policy that writes reference programs.
#[derive(Debug)]
pub struct Proposer {
    /// Its policy.
    pub policy: Policy,
    /// The warm-start policy, for the KL term (when `grpo.beta > 0`).
    pub reference: Option<Policy>,
    /// Programs per request.
    pub proposals: usize,
    /// How they are drawn.
    pub sampling: Sampling,
    /// The clipped policy-gradient settings.
    pub grpo: GrpoConfig,
    /// Shared rules.
    pub rules: Rules,
    /// Solution verdicts a proposal waits for before it is rewarded.
    pub min_verdicts: usize,
    /// Requests and sampling.
    pub rng: ChaCha8Rng,
    /// Proposals already learned from.
    learned: BTreeSet<ProblemId>,
}

impl Proposer {
    /// A proposer with `policy`.
    pub fn new(
        policy: Policy,
        proposals: usize,
        sampling: Sampling,
        grpo: GrpoConfig,
        rules: Rules,
        seed: u64,
    ) -> Self {
        Self {
            policy,
            reference: None,
            proposals,
            sampling,
            grpo,
            rules,
            min_verdicts: 1,
            rng: ChaCha8Rng::seed_from_u64(seed),
            learned: BTreeSet::new(),
        }
    }
}

/// CodeZero's proposer reward from the verdicts on a problem's solutions.
pub fn proposer_reward(verdicts: &[bool]) -> f64 {
    let p = mean(verdicts.iter().map(|&v| f64::from(u8::from(v))));
    if p == 0.0 || p == 1.0 { 0.0 } else { 1.0 - p }
}

/// Verdicts per proposal from the evaluators' entries on `board`: one set per (solver, proposal), the
/// first that arrived.
pub fn verdicts_by_problem(board: &Board) -> genrl::Result<BTreeMap<ProblemId, Vec<bool>>> {
    let mut seen = BTreeSet::new();
    let mut out: BTreeMap<ProblemId, Vec<bool>> = BTreeMap::new();
    for (_, e) in board.entries::<Attempt, bool>(ROLES[2])? {
        if seen.insert((e.item.solver, e.item.id)) {
            out.entry(e.item.id).or_default().extend(&e.actions);
        }
    }
    Ok(out)
}

impl Role for Proposer {
    type Item = Request;
    type Action = String;
    type Report = ProposerReport;

    fn name(&self) -> &'static str {
        ROLES[0]
    }

    fn max_entries_per_peer(&self) -> usize {
        1
    }

    fn items(&mut self, round: u64, _board: &Board) -> genrl::Result<Vec<Request>> {
        let level = (round % 3) as u8 + 1;
        Ok(vec![Request { level, inputs: random_inputs(self.rules.tests, &mut self.rng) }])
    }

    fn generate(
        &mut self,
        _round: u64,
        _stage: usize,
        items: &[Request],
        _state: &GameState<Request, String>,
        _board: &Board,
    ) -> genrl::Result<Vec<Vec<String>>> {
        let prompts: Vec<String> = items.iter().map(Request::prompt).collect();
        let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
        self.policy
            .sample(&prompts, self.proposals, self.sampling, &mut self.rng)
            .map_err(|e| genrl::Error::role("proposer", e))
    }

    fn select(
        &mut self,
        _round: u64,
        _own: &[Entry<Request, String>],
        external: Vec<Entry<Request, String>>,
        _board: &Board,
    ) -> Vec<Entry<Request, String>> {
        // Others' proposals only pass through to the solvers, who make problems of them by running them.
        let (max, count) = (self.rules.max_program, self.proposals);
        external.into_iter().filter(|e| readable(&e.actions, count, max) && e.item.inputs.len() <= 16).collect()
    }

    fn learn(&mut self, state: &GameState<Request, String>, board: &Board) -> genrl::Result<Learned<ProposerReport>> {
        let role = |e| genrl::Error::role("proposer", e);
        let verdicts = verdicts_by_problem(board)?;
        let mut report = ProposerReport::default();
        // (prompt, program, reward, pass rate if judged)
        let mut ready: Vec<(String, String, f64, Option<f64>)> = Vec::new();
        for (round, e) in board.entries::<Request, String>(ROLES[0])? {
            if e.source != state.local {
                continue;
            }
            for (k, program) in e.actions.iter().enumerate() {
                let id = ProblemId { proposer: e.source, round, index: k as u32 };
                if self.learned.contains(&id) {
                    continue;
                }
                let judged = verdicts.get(&id).filter(|v| v.len() >= self.min_verdicts);
                let outcome = match (problem_of(&e.item, program, &self.rules), judged) {
                    (None, _) => Some((-1.0, None)),
                    (Some(_), Some(v)) => {
                        Some((proposer_reward(v), Some(mean(v.iter().map(|&b| f64::from(u8::from(b)))))))
                    }
                    (Some(_), None) => None,
                };
                if let Some((reward, pass)) = outcome {
                    tracing::debug!(
                        round,
                        level = e.item.level,
                        program = program.trim_end(),
                        reward,
                        "proposal rewarded"
                    );
                    self.learned.insert(id);
                    ready.push((e.item.prompt(), program.clone(), reward, pass));
                }
            }
        }
        // The rewards known now: −1 for a program that does not run, 0 while the verdicts are pending.
        let mut rewards = Vec::with_capacity(state.entries.len());
        for e in &state.entries {
            let problems: Vec<Option<CodeProblem>> =
                e.actions.iter().map(|p| problem_of(&e.item, p, &self.rules)).collect();
            rewards.push(problems.iter().map(|p| if p.is_some() { 0.0 } else { -1.0 }).collect());
            if e.source == state.local {
                report.proposed += problems.len();
                for problem in problems.iter().flatten() {
                    report.valid += 1;
                    report.trivial += usize::from(problem.is_trivial());
                }
            }
        }
        report.learned = ready.len();
        report.reward = mean(ready.iter().map(|r| r.2));
        report.pass_rate = mean(ready.iter().filter_map(|r| r.3));
        let baseline = report.reward;
        let examples: Vec<Example<'_>> = ready
            .iter()
            .filter(|(p, c, ..)| self.policy.can_read(p, c))
            .map(|(p, c, r, _)| Example { prompt: p, completion: c, weight: r - baseline })
            .collect();
        if examples.iter().any(|e| e.weight != 0.0) {
            report.step = self.policy.grpo_step(&examples, &self.grpo, self.reference.as_ref()).map_err(role)?;
        }
        Ok(Learned { rewards, report })
    }
}

/// What the solver's learning step reports.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct SolverReport {
    /// Mean reward of its own programs this round.
    pub reward: f64,
    /// Mean reward of its own programs for proposed problems.
    pub proposed_reward: f64,
    /// Own problems this round, and of them proposed ones.
    pub problems: usize,
    /// Proposed problems among them.
    pub proposed: usize,
    /// External groups trained on.
    pub external: usize,
    /// Steps the sandbox took judging the round's programs.
    pub sandbox_steps: u64,
    /// Seconds (wall) the sandbox took judging them.
    pub sandbox_seconds: f64,
    /// The GRPO step (zero when no group carried a signal).
    pub step: StepReport,
}

/// The solver: a policy that writes programs for problems.
#[derive(Debug)]
pub struct Solver {
    /// Its policy.
    pub policy: Policy,
    /// The warm-start policy, for the KL term (when `grpo.beta > 0`).
    pub reference: Option<Policy>,
    /// Programs per problem (G).
    pub completions: usize,
    /// How they are drawn.
    pub sampling: Sampling,
    /// GRPO settings.
    pub grpo: GrpoConfig,
    /// Shared rules.
    pub rules: Rules,
    /// Problems of its own stream per round.
    pub stream: usize,
    /// Proposed problems per round, at most.
    pub proposed: usize,
    /// External groups per step (J).
    pub external: usize,
    /// Sends problems with forged answers (a lying agent).
    pub forge: bool,
    /// Problems, sampling and the choice of shared groups.
    pub rng: ChaCha8Rng,
    /// What was dropped from peers.
    pub dropped: Dropped,
    tried: BTreeSet<ProblemId>,
}

impl Solver {
    /// A solver with `policy`; `stream` own and up to `proposed` proposed problems a round, `J` external
    /// groups a step.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        policy: Policy,
        completions: usize,
        sampling: Sampling,
        grpo: GrpoConfig,
        rules: Rules,
        (stream, proposed, external): (usize, usize, usize),
        seed: u64,
    ) -> Self {
        Self {
            policy,
            reference: None,
            completions,
            sampling,
            grpo,
            rules,
            stream,
            proposed,
            external,
            forge: false,
            rng: ChaCha8Rng::seed_from_u64(seed),
            dropped: Dropped::default(),
            tried: BTreeSet::new(),
        }
    }

    fn score(&self, e: &Entry<Task, String>) -> Vec<f64> {
        e.actions.iter().map(|a| e.item.problem.reward(a, &self.rules.limits)).collect()
    }
}

impl Role for Solver {
    type Item = Task;
    type Action = String;
    type Report = SolverReport;

    fn name(&self) -> &'static str {
        ROLES[1]
    }

    fn max_entries_per_peer(&self) -> usize {
        self.stream + self.proposed
    }

    fn items(&mut self, _round: u64, board: &Board) -> genrl::Result<Vec<Task>> {
        let mut tasks = Vec::new();
        for _ in 0..self.stream {
            let level = rand::Rng::random_range(&mut self.rng, 1..=3);
            if let Some(problem) = self.rules.random_problem(level, &mut self.rng) {
                tasks.push(Task { id: None, problem });
            }
        }
        let mut proposed = Vec::new();
        for (round, e) in board.entries::<Request, String>(ROLES[0])?.into_iter().rev() {
            for (k, program) in e.actions.iter().enumerate() {
                let id = ProblemId { proposer: e.source, round, index: k as u32 };
                if proposed.len() < self.proposed
                    && !self.tried.contains(&id)
                    && let Some(problem) = problem_of(&e.item, program, &self.rules)
                {
                    proposed.push(Task { id: Some(id), problem });
                }
            }
        }
        self.tried.extend(proposed.iter().filter_map(|t| t.id));
        tasks.extend(proposed);
        if self.forge {
            for t in &mut tasks {
                if let Some(a) = t.problem.answers.last_mut() {
                    a.push('0');
                }
            }
        }
        Ok(tasks)
    }

    fn generate(
        &mut self,
        _round: u64,
        _stage: usize,
        items: &[Task],
        _state: &GameState<Task, String>,
        _board: &Board,
    ) -> genrl::Result<Vec<Vec<String>>> {
        let prompts: Vec<String> = items.iter().map(|t| t.problem.prompt()).collect();
        let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
        self.policy
            .sample(&prompts, self.completions, self.sampling, &mut self.rng)
            .map_err(|e| genrl::Error::role("solver", e))
    }

    fn select(
        &mut self,
        _round: u64,
        _own: &[Entry<Task, String>],
        external: Vec<Entry<Task, String>>,
        _board: &Board,
    ) -> Vec<Entry<Task, String>> {
        let mut usable = Vec::new();
        for e in external {
            if e.item.problem.check(self.rules.max_prompt, &self.rules.limits).is_err() {
                self.dropped.forged_problems += 1;
            } else if !readable(&e.actions, self.completions, self.rules.max_program) {
                self.dropped.unreadable += 1;
            } else if !grpo::informative(&self.score(&e)) {
                self.dropped.no_signal += 1;
            } else {
                usable.push(e);
            }
        }
        let (kept, left_over) = sapo::agent::sample_groups(usable, self.external, &mut self.rng);
        self.dropped.unsampled += left_over;
        kept
    }

    fn learn(&mut self, state: &GameState<Task, String>, _board: &Board) -> genrl::Result<Learned<SolverReport>> {
        let limits = &self.rules.limits;
        let start = std::time::Instant::now();
        let judged: Vec<Vec<_>> = state
            .entries
            .iter()
            .map(|e| e.actions.iter().map(|a| e.item.problem.judge_completion(a, limits)).collect())
            .collect();
        let rewards: Vec<Vec<f64>> =
            judged.iter().map(|js| js.iter().map(|j| f64::from(u8::from(j.all()))).collect()).collect();
        let mut report = SolverReport {
            sandbox_steps: judged.iter().flatten().map(|j| j.steps).sum(),
            sandbox_seconds: start.elapsed().as_secs_f64(),
            ..SolverReport::default()
        };
        let own: Vec<usize> = (0..state.entries.len()).filter(|&i| state.entries[i].source == state.local).collect();
        report.problems = own.len();
        report.proposed = own.iter().filter(|&&i| state.entries[i].item.id.is_some()).count();
        report.external = state.entries.len() - own.len();
        report.reward = mean(own.iter().flat_map(|&i| rewards[i].iter().copied()));
        report.proposed_reward =
            mean(own.iter().filter(|&&i| state.entries[i].item.id.is_some()).flat_map(|&i| rewards[i].iter().copied()));
        let prompts: Vec<String> = state.entries.iter().map(|e| e.item.problem.prompt()).collect();
        let mut examples = Vec::new();
        for ((e, r), prompt) in state.entries.iter().zip(&rewards).zip(&prompts) {
            if !grpo::informative(r) {
                continue;
            }
            for (c, a) in e.actions.iter().zip(grpo::advantages(r)) {
                if self.policy.can_read(prompt, c) {
                    examples.push(Example { prompt, completion: c, weight: a });
                }
            }
        }
        if !examples.is_empty() {
            report.step = self
                .policy
                .grpo_step(&examples, &self.grpo, self.reference.as_ref())
                .map_err(|e| genrl::Error::role("solver", e))?;
        }
        Ok(Learned { rewards, report })
    }
}

/// What the evaluator reports.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct EvaluatorReport {
    /// Solutions judged this round.
    pub judged: usize,
    /// Of them, passing.
    pub passed: usize,
    /// Steps the sandbox took.
    pub sandbox_steps: u64,
    /// Seconds (wall) the sandbox took.
    pub sandbox_seconds: f64,
}

/// The evaluator: runs solutions to proposed problems and shares verdicts.
#[derive(Debug)]
pub struct Evaluator {
    /// Shared rules.
    pub rules: Rules,
    /// Claims every solution passes (a lying agent).
    pub lie: bool,
    /// Most attempts judged per round.
    pub per_round: usize,
    /// What was dropped from peers.
    pub dropped: Dropped,
    judged: BTreeSet<(PeerId, ProblemId)>,
    /// Sandbox steps and seconds of the round's judging.
    spent: (u64, f64),
}

impl Evaluator {
    /// An evaluator judging at most `per_round` attempts a round.
    pub fn new(rules: Rules, per_round: usize) -> Self {
        Self { rules, lie: false, per_round, dropped: Dropped::default(), judged: BTreeSet::new(), spent: (0, 0.0) }
    }

    fn passes(&self, problem: &CodeProblem, program: &str) -> bool {
        problem.judge_completion(program, &self.rules.limits).all()
    }
}

impl Role for Evaluator {
    type Item = Attempt;
    type Action = bool;
    type Report = EvaluatorReport;

    fn name(&self) -> &'static str {
        ROLES[2]
    }

    fn max_entries_per_peer(&self) -> usize {
        self.per_round
    }

    fn items(&mut self, _round: u64, board: &Board) -> genrl::Result<Vec<Attempt>> {
        let mut out = Vec::new();

        for (_, e) in board.entries::<Task, String>(ROLES[1])?.into_iter().rev() {
            let Some(id) = e.item.id else { continue };
            if out.len() < self.per_round && self.judged.insert((e.source, id)) {
                out.push(Attempt {
                    solver: e.source,
                    id,
                    problem: e.item.problem.clone(),
                    programs: e.actions.clone(),
                });
            }
        }
        Ok(out)
    }

    fn generate(
        &mut self,
        _round: u64,
        _stage: usize,
        items: &[Attempt],
        _state: &GameState<Attempt, bool>,
        _board: &Board,
    ) -> genrl::Result<Vec<Vec<bool>>> {
        let limits = &self.rules.limits;
        let start = std::time::Instant::now();
        let mut verdicts = Vec::with_capacity(items.len());
        let mut steps = 0;
        for a in items {
            let judged: Vec<_> = a.programs.iter().map(|p| a.problem.judge_completion(p, limits)).collect();
            steps += judged.iter().map(|j| j.steps).sum::<u64>();
            verdicts.push(judged.iter().map(|j| self.lie || j.all()).collect());
        }
        self.spent = (steps, start.elapsed().as_secs_f64());
        Ok(verdicts)
    }

    fn select(
        &mut self,
        _round: u64,
        _own: &[Entry<Attempt, bool>],
        external: Vec<Entry<Attempt, bool>>,
        _board: &Board,
    ) -> Vec<Entry<Attempt, bool>> {
        let mut kept = Vec::new();
        for e in external {
            if e.item.problem.check(self.rules.max_prompt, &self.rules.limits).is_err() {
                self.dropped.forged_problems += 1;
            } else if e.actions.len() != e.item.programs.len()
                || e.item.programs.iter().any(|p| p.len() > self.rules.max_program)
            {
                self.dropped.unreadable += 1;
            } else if e.item.programs.iter().zip(&e.actions).any(|(p, &pass)| pass && !self.passes(&e.item.problem, p))
            {
                tracing::debug!(peer = %e.source.short(), "a verdict claims a pass its program does not give: dropped");
                self.dropped.false_passes += 1;
            } else {
                kept.push(e);
            }
        }
        kept
    }

    fn learn(&mut self, state: &GameState<Attempt, bool>, _board: &Board) -> genrl::Result<Learned<EvaluatorReport>> {
        let (sandbox_steps, sandbox_seconds) = std::mem::take(&mut self.spent);
        let mut report = EvaluatorReport { sandbox_steps, sandbox_seconds, ..EvaluatorReport::default() };
        for e in state.own() {
            report.judged += e.actions.len();
            report.passed += e.actions.iter().filter(|&&v| v).count();
        }
        let rewards = state.entries.iter().map(|e| vec![0.0; e.actions.len()]).collect();
        Ok(Learned { rewards, report })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proposer_reward_favours_problems_some_but_not_all_solve() {
        assert_eq!(proposer_reward(&[true, true]), 0.0, "too easy");
        assert_eq!(proposer_reward(&[false, false]), 0.0, "too hard (or wrong)");
        assert_eq!(proposer_reward(&[true, false, false, false]), 0.75);
        assert!(
            proposer_reward(&[true, true, true, false]) < proposer_reward(&[true, false, false, false]),
            "harder pays more"
        );
        assert_eq!(proposer_reward(&[]), 0.0);
    }
}
