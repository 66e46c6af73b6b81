//! One SAPO agent as a genrl game: its task stream ([`TaskStream`]), its policy as the trainer
//! ([`PolicyTrainer`]: generate → train on I local and J external groups) and its own verifier as the
//! reward manager ([`SwarmRewards`]: re-scores everything, filters and samples what the swarm shared).
//!
//! SAPO, Algorithm 1 (PROTOCOLS.md §1.2): each round the agent samples questions, generates `G`
//! completions of each, shares them all, takes what has arrived from the swarm, subsamples `I` of its
//! own question groups and `J` external ones (after dropping groups with no signal), re-scores all of
//! them with its own verifier and takes one GRPO step.

use std::sync::Arc;

use genrl::env::{Task, TaskSource};
use genrl::game::{DataManager, Entry, GameState, RewardManager, Trainer};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::codec::TextCodec;
use crate::error::{Error, Result};
use crate::grpo::{self, GrpoConfig};
use crate::policy::{Example, Policy, Sampling, StepReport};

/// How many question groups of a training batch are the agent's own (I) and the swarm's (J).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mix {
    /// Own groups per step (I).
    pub local: usize,
    /// External groups per step (J).
    pub external: usize,
}

/// The most own or external groups a step may take.
pub const MAX_GROUPS: usize = 4096;

impl Mix {
    /// Parses `I/J`, e.g. `4/4`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || Error::config("sapo.mix", format!("{s:?} is not local/external, e.g. 4/4"));
        let (i, j) = s.split_once('/').ok_or_else(bad)?;
        let mix = Self { local: i.trim().parse().map_err(|_| bad())?, external: j.trim().parse().map_err(|_| bad())? };
        if mix.local > MAX_GROUPS || mix.external > MAX_GROUPS {
            return Err(Error::config("sapo.mix", format!("{s:?}: at most {MAX_GROUPS} groups of each kind")));
        }
        if mix.local + mix.external == 0 {
            return Err(Error::config("sapo.mix", "a step needs at least one group"));
        }
        Ok(mix)
    }
}

impl std::fmt::Display for Mix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.local, self.external)
    }
}

/// The agent's tasks: one per specialty (family or dataset) each round, from its own seed.
#[derive(Debug, Clone)]
pub struct TaskStream {
    /// Where the tasks come from.
    pub tasks: Arc<TaskSource>,
    /// The agent's stream.
    pub seed: u64,
}

impl DataManager for TaskStream {
    type Item = Task;

    fn round_data(&mut self, round: u64) -> Vec<Task> {
        self.tasks.round(self.seed, round)
    }
}

/// What one round's training step reports.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct TrainReport {
    /// Mean reward of the agent's own completions this round (before the step).
    pub reward: f64,
    /// Own groups trained on.
    pub local: usize,
    /// External groups trained on.
    pub external: usize,
    /// Groups trained on whose rewards differ (the others have zero advantage).
    pub informative: usize,
    /// Mean reward of the external completions trained on, by this agent's verifier.
    pub external_reward: f64,
    /// The GRPO step (all zero when no group carried a signal and no step was taken).
    pub step: StepReport,
}

/// The agent's policy as genrl's trainer.
#[derive(Debug)]
pub struct PolicyTrainer {
    /// The policy.
    pub policy: Policy,
    /// The warm-start policy, for the KL term (when `grpo.beta > 0`).
    pub reference: Option<Policy>,
    /// Completions per question (G).
    pub completions: usize,
    /// How they are drawn.
    pub sampling: Sampling,
    /// GRPO settings.
    pub grpo: GrpoConfig,
    /// Own groups per step (I); external ones are chosen by [`SwarmRewards`].
    pub local: usize,
    /// Sampling and subsampling randomness.
    pub rng: ChaCha8Rng,
}

impl PolicyTrainer {
    /// The GRPO step on `groups` (question, completions, rewards); no step when none carries a signal.
    fn learn(&mut self, groups: &[(&Task, &[String], &[f64])]) -> Result<(usize, StepReport)> {
        let mut examples = Vec::new();
        let mut informative = 0;
        for (q, completions, rewards) in groups {
            informative += usize::from(grpo::informative(rewards));
            if self.policy.encode_prompt(q.prompt()).is_err() {
                continue;
            }
            for (c, a) in completions.iter().zip(grpo::advantages(rewards)) {
                if self.policy.codec().encode_completion(c).is_ok() {
                    examples.push(Example { prompt: q.prompt(), completion: c, weight: a });
                }
            }
        }
        if informative == 0 || examples.is_empty() {
            return Ok((0, StepReport::default()));
        }
        let step = self.policy.grpo_step(&examples, &self.grpo, self.reference.as_ref())?;
        Ok((informative, step))
    }
}

impl Trainer<Task> for PolicyTrainer {
    type Action = String;
    type Report = TrainReport;

    fn generate(
        &mut self,
        _round: u64,
        _stage: usize,
        items: &[Task],
        _state: &GameState<Task, String>,
    ) -> genrl::Result<Vec<Vec<String>>> {
        let prompts: Vec<&str> = items.iter().map(Task::prompt).collect();
        self.policy
            .sample(&prompts, self.completions, self.sampling, &mut self.rng)
            .map_err(|e| genrl::Error::role("trainer", e))
    }

    fn train(&mut self, state: &GameState<Task, String>, rewards: &[Vec<f64>]) -> genrl::Result<TrainReport> {
        let own: Vec<usize> = (0..state.entries.len()).filter(|&i| state.entries[i].source == state.local).collect();
        let external: Vec<usize> =
            (0..state.entries.len()).filter(|&i| state.entries[i].source != state.local).collect();
        let own_rewards: Vec<f64> = own.iter().flat_map(|&i| rewards[i].iter().copied()).collect();
        let reward = mean(&own_rewards);
        let mut chosen = own.clone();
        chosen.shuffle(&mut self.rng);
        chosen.truncate(self.local);
        chosen.sort_unstable();
        let ext_rewards: Vec<f64> = external.iter().flat_map(|&i| rewards[i].iter().copied()).collect();
        let local_count = chosen.len();
        chosen.extend(&external);
        let groups: Vec<(&Task, &[String], &[f64])> = chosen
            .iter()
            .map(|&i| (&state.entries[i].item, state.entries[i].actions.as_slice(), rewards[i].as_slice()))
            .collect();
        let (informative, step) = self.learn(&groups).map_err(|e| genrl::Error::role("trainer", e))?;
        Ok(TrainReport {
            reward,
            local: local_count,
            external: external.len(),
            informative,
            external_reward: mean(&ext_rewards),
            step,
        })
    }
}

fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() { 0.0 } else { xs.iter().sum::<f64>() / xs.len() as f64 }
}

/// Why shared groups were dropped, counted over a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Dropped {
    /// The task's stated answer is not the one its prompt has (a forged ground truth), or the task is not
    /// one the agent's own source deals.
    pub forged: usize,
    /// Completions the policy cannot read (not ASCII, too long), or more completions than asked for.
    pub unreadable: usize,
    /// Groups whose completions all score the same (zero advantage).
    pub no_signal: usize,
    /// Usable groups left over after sampling J.
    pub unsampled: usize,
}

/// The agent's own rules: rewards from its verifier (shared claims are never trusted) and the choice of
/// external groups.
#[derive(Debug)]
pub struct SwarmRewards {
    /// External groups per step (J).
    pub external: usize,
    /// Completions a group may have.
    pub completions: usize,
    /// How the agent's policy reads text (what it can read, and the answer in a completion).
    pub codec: TextCodec,
    /// The agent's own task source, which judges every task and answer.
    pub tasks: Arc<TaskSource>,
    /// Sampling randomness.
    pub rng: ChaCha8Rng,
    /// What was dropped so far.
    pub dropped: Dropped,
}

impl SwarmRewards {
    /// The reward rules of an agent whose policy is `policy` and whose tasks come from `tasks`.
    pub fn new(policy: &Policy, tasks: Arc<TaskSource>, external: usize, completions: usize, seed: u64) -> Self {
        Self {
            external,
            completions,
            codec: policy.codec().clone(),
            tasks,
            rng: ChaCha8Rng::seed_from_u64(seed),
            dropped: Dropped::default(),
        }
    }

    fn readable(&self, e: &Entry<Task, String>) -> bool {
        !e.actions.is_empty()
            && e.actions.len() <= self.completions
            && self.codec.encode_prompt(e.item.prompt()).is_ok()
            && e.actions.iter().all(|a| self.codec.encode_completion(a).is_ok())
    }

    /// Scores each completion of `e` by the agent's own verifier, on the completion's answer.
    fn score(&self, e: &Entry<Task, String>) -> Vec<f64> {
        e.actions.iter().map(|a| self.codec.reward(&self.tasks, &e.item, a)).collect()
    }
}

/// SAPO's choice of the swarm's groups: `j` of the `usable` ones, uniformly at random. Returns them and
/// how many usable groups were left over.
pub fn sample_groups<T>(mut usable: Vec<T>, j: usize, rng: &mut impl Rng) -> (Vec<T>, usize) {
    usable.shuffle(rng);
    let left_over = usable.len().saturating_sub(j);
    usable.truncate(j);
    (usable, left_over)
}

impl RewardManager<Task, String> for SwarmRewards {
    fn rewards(&mut self, state: &GameState<Task, String>) -> Vec<Vec<f64>> {
        state.entries.iter().map(|e| self.score(e)).collect()
    }

    fn select_external(
        &mut self,
        _round: u64,
        _own: &[Entry<Task, String>],
        external: Vec<Entry<Task, String>>,
    ) -> Vec<Entry<Task, String>> {
        if self.external == 0 {
            return Vec::new();
        }
        let mut usable = Vec::new();
        for e in external {
            if !self.tasks.is_genuine(&e.item) {
                self.dropped.forged += 1;
            } else if !self.readable(&e) {
                self.dropped.unreadable += 1;
            } else if !grpo::informative(&self.score(&e)) {
                self.dropped.no_signal += 1;
            } else {
                usable.push(e);
            }
        }
        let (usable, left_over) = sample_groups(usable, self.external, &mut self.rng);
        self.dropped.unsampled += left_over;
        if self.dropped != Dropped::default() {
            tracing::debug!(dropped = ?self.dropped, "shared groups dropped so far");
        }
        usable
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use genrl::env::{Family, Level, TaskSetConfig};
    use transport::PeerId;

    #[test]
    fn mixes_parse_and_bad_ones_are_named() -> Result<()> {
        assert_eq!(Mix::parse("4/4")?, Mix { local: 4, external: 4 });
        assert_eq!(Mix::parse("8/0")?.to_string(), "8/0");
        for bad in ["4", "a/b", "0/0", "-1/2", "4/4/4"] {
            assert!(Mix::parse(bad).unwrap_err().to_string().contains("sapo.mix"), "{bad}");
        }
        Ok(())
    }

    #[test]
    fn shared_groups_are_rescored_filtered_and_sampled() -> Result<()> {
        let policy = Policy::new(&crate::policy::PolicyConfig::default(), &candle_core::Device::Cpu)?;
        let tasks = Arc::new(TaskSource::new(&TaskSetConfig::default())?);
        let mut rules = SwarmRewards::new(&policy, tasks.clone(), 2, 4, 0);
        let q = Task::Generated(Family::BasicArithmetic.generate(Level::EASY, &mut ChaCha8Rng::seed_from_u64(1)));
        let right = format!("{}\n", q.answer());
        let entry = |item: Task, actions: Vec<String>| Entry { source: PeerId::simulated(1), stage: 0, item, actions };
        let forged = q.clone().with_answer("99999".into());
        let external = vec![
            entry(q.clone(), vec![right.clone(), "x\n".into()]),
            entry(q.clone(), vec!["x\n".into(), right.clone(), "y\n".into()]),
            entry(q.clone(), vec![right.clone(), "x\n".into(), "z\n".into()]),
            // A liar: its wrong answer "marked" right by forging the ground truth.
            entry(forged, vec!["99999\n".into(), "1\n".into()]),
            // Garbage: no signal (all wrong), unreadable, too many completions.
            entry(q.clone(), vec!["x\n".into(), "y\n".into()]),
            entry(q.clone(), vec!["ü\n".into(), right.clone()]),
            entry(q.clone(), vec!["7".repeat(500), right.clone()]),
            entry(q.clone(), vec![right.clone(); 5]),
        ];
        let kept = rules.select_external(0, &[], external);
        assert_eq!(kept.len(), 2);
        assert!(kept.iter().all(|e| tasks.is_genuine(&e.item) && grpo::informative(&rules.score(e))));
        assert_eq!(rules.dropped, Dropped { forged: 1, unreadable: 3, no_signal: 1, unsampled: 1 });
        Ok(())
    }
}
