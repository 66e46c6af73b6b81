//! What an agent is dealt from ([`TaskSource`]: our families, or the tasks of a reasoning-gym export)
//! and what it deals and shares ([`Task`]).
//!
//! Whatever the source, a receiver trusts nothing a peer states about a task: it checks the task against
//! its own source ([`TaskSource::is_genuine`]) and scores answers with its own verifier
//! ([`TaskSource::reward`]).

use std::path::Path;

use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::gym::{GymQuestion, GymSet, GymTasks};
use super::{END, Question, TaskSet, TaskSetConfig};
use crate::error::{Error, Result};

/// A task an agent is dealt and shares: one of our families' questions, or a reasoning-gym task.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Task {
    /// A question one of our families generated.
    Generated(Question),
    /// A task of a reasoning-gym export.
    Gym(GymQuestion),
}

impl Task {
    /// What the policy reads.
    pub fn prompt(&self) -> &str {
        match self {
            Self::Generated(q) => &q.prompt,
            Self::Gym(g) => &g.question,
        }
    }

    /// The answer the task states (a receiver checks it: see [`TaskSource::is_genuine`]).
    pub fn answer(&self) -> &str {
        match self {
            Self::Generated(q) => &q.answer,
            Self::Gym(g) => &g.answer,
        }
    }

    /// The same task stating `answer` instead (what a lying peer sends).
    pub fn with_answer(mut self, answer: String) -> Self {
        match &mut self {
            Self::Generated(q) => q.answer = answer,
            Self::Gym(g) => g.answer = answer,
        }
        self
    }

    /// The specialty it belongs to: its family's name, or its reasoning-gym dataset.
    pub fn specialty(&self) -> &str {
        match self {
            Self::Generated(q) => q.family.name(),
            Self::Gym(g) => &g.dataset,
        }
    }
}

/// Where an agent's tasks come from: each round `per_specialty` tasks of each specialty (a family, or a
/// dataset of the export), with a held-out evaluation set kept apart.
#[derive(Debug, Clone)]
pub struct TaskSource {
    origin: Origin,
    per_specialty: usize,
}

/// What a [`TaskSource`] deals from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// Our procedural families.
    Generated(TaskSet),
    /// A reasoning-gym export.
    Gym(GymSet),
}

/// Most tasks dealt per specialty a round.
const MAX_PER_SPECIALTY: usize = 64;

impl TaskSource {
    /// The source `cfg` describes; the error names the bad field (or the file, its line and field).
    pub fn new(cfg: &TaskSetConfig) -> Result<Self> {
        if !(1..=MAX_PER_SPECIALTY).contains(&cfg.per_specialty) {
            return Err(Error::config(
                "tasks.per_specialty",
                format!("{} is outside [1, {MAX_PER_SPECIALTY}]", cfg.per_specialty),
            ));
        }
        let per_specialty = cfg.per_specialty;
        let Some(file) = &cfg.file else {
            if !cfg.datasets.is_empty() {
                return Err(Error::config("tasks.datasets", "only with a tasks.file (a reasoning-gym export)"));
            }
            return Ok(Self { origin: Origin::Generated(TaskSet::new(cfg)?), per_specialty });
        };
        let defaults = TaskSetConfig::default();
        if cfg.families != defaults.families {
            return Err(Error::config(
                "tasks.families",
                "does not apply to a tasks.file: choose the file's datasets with tasks.datasets",
            ));
        }
        if (cfg.min_level, cfg.max_level) != (defaults.min_level, defaults.max_level) {
            return Err(Error::config("tasks.min_level", "levels do not apply to a tasks.file"));
        }
        let tasks = GymTasks::read(Path::new(file))?;
        let set = GymSet::new(&tasks, &cfg.datasets, cfg.eval_per_level)?;
        Ok(Self { origin: Origin::Gym(set), per_specialty })
    }

    /// What it deals from.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The specialties, in dealing order: family names, or the export's datasets.
    pub fn specialties(&self) -> Vec<&str> {
        match &self.origin {
            Origin::Generated(set) => set.families().iter().map(|f| f.name()).collect(),
            Origin::Gym(set) => set.datasets().iter().map(String::as_str).collect(),
        }
    }

    /// Tasks dealt a round: `per_specialty` of each specialty.
    pub fn per_round(&self) -> usize {
        self.specialties().len() * self.per_specialty
    }

    /// The tasks of `round` of the stream `seed`, deterministic in both: one per specialty, in the order
    /// of [`Self::specialties`], then again from the stream `seed + k·φ` for the `k`-th repeat
    /// (`per_specialty` times in all).
    pub fn round(&self, seed: u64, round: u64) -> Vec<Task> {
        let mut tasks = Vec::with_capacity(self.per_round());
        for k in 0..self.per_specialty as u64 {
            let seed = seed.wrapping_add(k.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            match &self.origin {
                Origin::Generated(set) => tasks.extend(set.round(seed, round).into_iter().map(Task::Generated)),
                Origin::Gym(set) => tasks.extend(set.round(seed, round).into_iter().map(Task::Gym)),
            }
        }
        tasks
    }

    /// The held-out evaluation tasks (the same for every seed).
    pub fn held_out(&self) -> Vec<Task> {
        match &self.origin {
            Origin::Generated(set) => set.held_out().iter().cloned().map(Task::Generated).collect(),
            Origin::Gym(set) => set.held_out().cloned().map(Task::Gym).collect(),
        }
    }

    /// `n` tasks with their answers for supervised training, from `rng`; `None` for an export, whose
    /// answers are not all a policy could write (a pretrained model starts as it is).
    pub fn sample(&self, n: usize, rng: &mut dyn RngCore) -> Option<Vec<Task>> {
        match &self.origin {
            Origin::Generated(set) => Some(set.sample(n, rng).into_iter().map(Task::Generated).collect()),
            Origin::Gym(_) => None,
        }
    }

    /// Whether `task` is one this source deals, stating the right answer: a family's question whose
    /// prompt parses and whose answer is the one the family works out, or a task of the export as the
    /// export has it. Tasks from peers are checked with this before any answer to them is scored.
    pub fn is_genuine(&self, task: &Task) -> bool {
        match (&self.origin, task) {
            (Origin::Generated(_), Task::Generated(q)) => q.is_genuine(),
            (Origin::Gym(set), Task::Gym(g)) => set.find(g).is_some(),
            _ => false,
        }
    }

    /// The reward of `answer` (a completion's answer, ending in [`END`]) to `task`, by this source's
    /// verifier: 1 or 0 for a family's question; for an export's task, [`super::gym::GymTask::score`]
    /// of this source's own copy (0 for a task it lacks).
    pub fn reward(&self, task: &Task, answer: &str) -> f64 {
        match (&self.origin, task) {
            (Origin::Generated(_), Task::Generated(q)) => q.reward(answer),
            (Origin::Gym(set), Task::Gym(g)) => set.score(g, answer.strip_suffix(END).unwrap_or(answer)),
            _ => 0.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::{Family, Level};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    /// Three datasets: two of three tasks (one of them without an oracle, one a repeat), one of two; and
    /// a dataset without oracle answers.
    const EXPORT: &str = r#"
{"question": "What is 17 - 40?", "answer": "-23", "metadata": {"source_dataset": "basic_arithmetic", "expression": "17 - 40"}}
{"question": "What is 2 + 2?", "answer": "4", "metadata": {"source_dataset": "basic_arithmetic", "expression": "2 + 2"}}
{"question": "What is 2 + 2?", "answer": "5", "metadata": {"source_dataset": "basic_arithmetic", "expression": "2 + 2"}}
{"question": "Spell cat backward.", "answer": "tac", "metadata": {"source_dataset": "spell_backward"}}
{"question": "Spell dog backward.", "answer": "god", "metadata": {"source_dataset": "spell_backward"}}
{"question": "Conclude.", "answer": null, "metadata": {"source_dataset": "spell_backward"}}
{"question": "Sort 3 1 2.", "answer": "1, 2, 3", "metadata": {"source_dataset": "number_sorting"}}
{"question": "Sort 9 7.", "answer": "7, 9", "metadata": {"source_dataset": "number_sorting"}}
{"question": "Prove it.", "answer": null, "metadata": {"source_dataset": "proof"}}
"#;

    fn export() -> (tempfile::TempDir, TaskSetConfig) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tasks.jsonl");
        std::fs::write(&path, EXPORT).expect("write");
        let cfg =
            TaskSetConfig { file: Some(path.display().to_string()), eval_per_level: 1, ..TaskSetConfig::default() };
        (dir, cfg)
    }

    #[test]
    fn an_export_deals_one_task_per_dataset_and_holds_some_out() -> Result<()> {
        let (_dir, cfg) = export();
        let source = TaskSource::new(&cfg)?;
        assert_eq!(source.specialties(), ["basic_arithmetic", "spell_backward", "number_sorting"]);
        let Origin::Gym(set) = source.origin() else { panic!("an export") };
        assert_eq!((set.len(), set.left_out()), (6, 2), "no oracle, or a repeat: left out");
        assert_eq!(set.unscorable(), ["proof"], "a dataset without oracles: left out");
        let held = source.held_out();
        assert_eq!(held.len(), 3);
        for round in 0..20 {
            let dealt = source.round(7, round);
            let specialties: Vec<&str> = dealt.iter().map(Task::specialty).collect();
            assert_eq!(specialties, source.specialties());
            assert!(dealt.iter().all(|t| source.is_genuine(t) && !held.contains(t)), "{dealt:?}");
            assert_eq!(dealt, source.round(7, round), "deterministic");
        }
        assert!(source.sample(4, &mut ChaCha8Rng::seed_from_u64(0)).is_none());
        // Several per specialty: the first repeat is the round of one, then new draws (here, of the one
        // task each dataset deals).
        let three = TaskSource::new(&TaskSetConfig { per_specialty: 3, ..cfg.clone() })?;
        assert_eq!(three.per_round(), 9);
        assert_eq!(three.round(7, 4), [source.round(7, 4), source.round(7, 4), source.round(7, 4)].concat());
        let families = TaskSource::new(&TaskSetConfig::default())?;
        let twice = TaskSource::new(&TaskSetConfig { per_specialty: 2, ..TaskSetConfig::default() })?;
        let dealt = twice.round(7, 4);
        assert_eq!(dealt[..8], families.round(7, 4)[..]);
        assert!(dealt[8..].iter().zip(families.specialties()).all(|(t, s)| t.specialty() == s));
        assert_ne!(dealt[8..], dealt[..8], "repeats draw anew");
        Ok(())
    }

    #[test]
    fn a_receiver_checks_tasks_against_its_own_source_and_scores_with_its_own_copy() -> Result<()> {
        let (_dir, cfg) = export();
        let source = TaskSource::new(&cfg)?;
        let task = |dataset: &str, question: &str, answer: &str| {
            Task::Gym(GymQuestion { dataset: dataset.into(), question: question.into(), answer: answer.into() })
        };
        let genuine = task("spell_backward", "Spell cat backward.", "tac");
        assert!(source.is_genuine(&genuine));
        assert_eq!(source.reward(&genuine, "tac\n"), 1.0);
        assert_eq!(source.reward(&genuine, "<answer>tac</answer>"), 1.0);
        // reasoning-gym's rule: partial credit when the answer is inside what was given.
        assert_eq!(source.reward(&genuine, "tac!\n"), 0.75);
        // A forged oracle is not genuine, and the receiver's copy judges: the forged answer scores 0.
        let forged = genuine.clone().with_answer("cat".into());
        assert!(!source.is_genuine(&forged));
        assert_eq!(source.reward(&forged, "cat\n"), 0.0);
        // A task the receiver's file lacks, or a question of our families, is not genuine here.
        assert!(!source.is_genuine(&task("spell_backward", "Spell owl backward.", "lwo")));
        let ours = Family::BasicArithmetic.generate(Level::EASY, &mut ChaCha8Rng::seed_from_u64(1));
        assert!(!source.is_genuine(&Task::Generated(ours.clone())));
        // Our verifier judges a task that translates into our family: strict, no partial credit.
        let sum = task("basic_arithmetic", "What is 17 - 40?", "-23");
        assert_eq!((source.reward(&sum, "-23\n"), source.reward(&sum, "-23.0\n")), (1.0, 0.0));
        // And our own source accepts our questions, not the export's.
        let families = TaskSource::new(&TaskSetConfig::default())?;
        assert!(families.is_genuine(&Task::Generated(ours.clone())) && !families.is_genuine(&genuine));
        assert_eq!(families.reward(&Task::Generated(ours.clone()), &format!("{}\n", ours.answer)), 1.0);
        Ok(())
    }

    #[test]
    fn bad_export_settings_are_named() {
        let (_dir, cfg) = export();
        let err = |cfg: TaskSetConfig| TaskSource::new(&cfg).expect_err("refused").to_string();
        let e = err(TaskSetConfig { datasets: vec!["chess".into()], ..cfg.clone() });
        assert!(e.contains("tasks.datasets[0]") && e.contains("number_sorting"), "{e}");
        let e = err(TaskSetConfig { datasets: vec!["spell_backward".into(), "spell_backward".into()], ..cfg.clone() });
        assert!(e.contains("tasks.datasets[1]") && e.contains("twice"), "{e}");
        let e = err(TaskSetConfig { datasets: vec!["spell_backward".into(), "proof".into()], ..cfg.clone() });
        assert!(e.contains("tasks.datasets[1]") && e.contains("no task with an oracle"), "{e}");
        let e = err(TaskSetConfig { eval_per_level: 2, ..cfg.clone() });
        assert!(e.contains("tasks.eval_per_level") && e.contains("none is left"), "{e}");
        let e = err(TaskSetConfig { families: vec!["list_ops".into()], ..cfg.clone() });
        assert!(e.contains("tasks.families"), "{e}");
        let e = err(TaskSetConfig { max_level: 3, ..cfg.clone() });
        assert!(e.contains("levels"), "{e}");
        let e = err(TaskSetConfig { per_specialty: 0, ..cfg.clone() });
        assert!(e.contains("tasks.per_specialty"), "{e}");
        let e = err(TaskSetConfig { datasets: vec!["x".into()], ..TaskSetConfig::default() });
        assert!(e.contains("tasks.datasets") && e.contains("tasks.file"), "{e}");
        let e = err(TaskSetConfig { file: Some("/nonexistent/tasks.jsonl".into()), ..TaskSetConfig::default() });
        assert!(e.contains("/nonexistent/tasks.jsonl"), "{e}");
    }
}
