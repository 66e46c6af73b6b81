//! Verifiable task environments, in the spirit of ReasoningGYM: procedural generators, seeded, with
//! exact verifiers.
//!
//! A [`TaskFamily`] generates [`Question`]s at a [`Level`] of difficulty from a random stream and checks
//! answers to them. Answers are parsed strictly by each family's grammar: output that does not parse is
//! [`Verdict::Malformed`] (reward 0), never a panic. Prompts and answers are short printable ASCII so a
//! byte-level policy can read and write them; an answer is complete when it ends with a newline.
//!
//! | family | prompt | answer |
//! |---|---|---|
//! | `basic_arithmetic` | `37-52=` | `-15` |
//! | `base_conversion` | `13:10>2=` | `1101` |
//! | `fraction_simplification` | `18/24=` | `3/4` |
//! | `decimal_arithmetic` | `1.5+2.25=` | `3.75` |
//! | `propositional_logic` | `!T|F&T=` | `F` |
//! | `list_ops` | `srt 4213=` | `1234` |
//! | `calendar_arithmetic` | `Mar 28+5=` | `Apr 2` |
//! | `arc_1d` | `>..##....=` | `...##...` |
//!
//! [`code`] is the sandboxed code domain: a stack language, its bounded interpreter and problems checked
//! by execution.
//!
//! [`gym`] reads task sets exported from the `reasoning-gym` package (JSON Lines) and scores answers to
//! them, with our families' verifiers where a task is one of theirs.
//!
//! [`TaskSet`] deals a round's questions from a seed and keeps a held-out evaluation set apart from them.
//! [`TaskSource`] is what an agent is dealt from, our families or a reasoning-gym export, and
//! [`Task`] what it deals and shares.

pub mod code;
pub mod gym;
mod numbers;
mod source;
mod symbols;

use std::collections::BTreeSet;
use std::fmt;

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub use source::{Origin, Task, TaskSource};
pub use numbers::{BaseConversion, BasicArithmetic, DecimalArithmetic, FractionSimplification};
pub use symbols::{Arc1d, CalendarArithmetic, ListOps, PropositionalLogic};

/// What ends an answer.
pub const END: char = '\n';

/// Difficulty, 1 (easiest) to 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Level(u8);

impl Level {
    /// The easiest level.
    pub const EASY: Self = Self(1);
    /// The middle level.
    pub const MEDIUM: Self = Self(2);
    /// The hardest level.
    pub const HARD: Self = Self(3);
    /// Every level, easiest first.
    pub const ALL: [Self; 3] = [Self::EASY, Self::MEDIUM, Self::HARD];

    /// Level `n` (1 to 3).
    pub fn new(n: u8) -> Result<Self> {
        if (1..=3).contains(&n) {
            Ok(Self(n))
        } else {
            Err(Error::config("env.level", format!("{n} is not a difficulty level (1 to 3)")))
        }
    }

    /// 1, 2 or 3.
    pub fn get(self) -> u8 {
        self.0
    }
}

/// One verifiable question.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Question {
    /// The family that made it (and verifies answers to it).
    pub family: Family,
    /// Its difficulty.
    pub level: Level,
    /// What the policy reads, ending in `=`.
    pub prompt: String,
    /// The canonical answer, without the final newline.
    pub answer: String,
}

impl Question {
    /// Checks a completion (the text after the prompt, ending in [`END`]) with the family's verifier.
    pub fn verify(&self, completion: &str) -> Verdict {
        let Some(text) = completion.strip_suffix(END) else {
            return Verdict::Malformed;
        };
        if text.contains(END) {
            return Verdict::Malformed;
        }
        self.family.task().verify(self, text)
    }

    /// Whether the question is one its family makes: the prompt parses and the stated answer is the one
    /// the family works out from it. Questions from peers are checked with this before any answer to
    /// them is scored.
    pub fn is_genuine(&self) -> bool {
        self.family.task().solve(&self.prompt).is_some_and(|a| a == self.answer)
    }

    /// 1 for a correct completion, 0 otherwise.
    pub fn reward(&self, completion: &str) -> f64 {
        f64::from(u8::from(self.verify(completion) == Verdict::Correct))
    }
}

/// A verifier's judgement of one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Verdict {
    /// Parses and is right.
    Correct,
    /// Parses and is wrong.
    Wrong,
    /// Does not parse (or is not finished by a newline).
    Malformed,
}

/// A procedural task family: a seeded generator and an exact verifier.
pub trait TaskFamily: Send + Sync {
    /// The family's name (ReasoningGYM's where there is one).
    fn name(&self) -> &'static str;

    /// A question at `level`, drawn from `rng`.
    fn generate(&self, level: Level, rng: &mut dyn RngCore) -> Question;

    /// The canonical answer to `prompt`, worked out from the prompt alone; `None` if the prompt is not
    /// one this family generates. A receiver checks shared questions with it, so a peer cannot pass off
    /// a wrong ground truth.
    fn solve(&self, prompt: &str) -> Option<String>;

    /// Judges `answer` (the completion without its final newline) to `question`.
    fn verify(&self, question: &Question, answer: &str) -> Verdict;
}

/// The eight task families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// Integer `+`, `-`, `*`.
    BasicArithmetic,
    /// Integers between bases 2, 8, 10 and 16.
    BaseConversion,
    /// Fractions to lowest terms.
    FractionSimplification,
    /// Exact decimal `+`, `-`, `*`.
    DecimalArithmetic,
    /// Truth values under `!`, `&`, `^`, `|`.
    PropositionalLogic,
    /// Sort, reverse, max and min of digit lists.
    ListOps,
    /// Weekdays and dates of a common year, forward and back.
    CalendarArithmetic,
    /// One-dimensional grid transformations (shift, mirror, fill), after ARC.
    Arc1d,
}

impl Family {
    /// Every family.
    pub const ALL: [Self; 8] = [
        Self::BasicArithmetic,
        Self::BaseConversion,
        Self::FractionSimplification,
        Self::DecimalArithmetic,
        Self::PropositionalLogic,
        Self::ListOps,
        Self::CalendarArithmetic,
        Self::Arc1d,
    ];

    /// The generator and verifier of this family.
    pub fn task(self) -> &'static dyn TaskFamily {
        match self {
            Self::BasicArithmetic => &BasicArithmetic,
            Self::BaseConversion => &BaseConversion,
            Self::FractionSimplification => &FractionSimplification,
            Self::DecimalArithmetic => &DecimalArithmetic,
            Self::PropositionalLogic => &PropositionalLogic,
            Self::ListOps => &ListOps,
            Self::CalendarArithmetic => &CalendarArithmetic,
            Self::Arc1d => &Arc1d,
        }
    }

    /// The family's name.
    pub fn name(self) -> &'static str {
        self.task().name()
    }

    /// The family called `name`.
    pub fn from_name(name: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name).ok_or_else(|| {
            let names: Vec<_> = Self::ALL.iter().map(|f| f.name()).collect();
            Error::config("env.families", format!("{name:?} is not one of {}", names.join(", ")))
        })
    }

    /// A question of this family at `level`, drawn from `rng`.
    pub fn generate(self, level: Level, rng: &mut dyn RngCore) -> Question {
        self.task().generate(level, rng)
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which questions an agent trains and is evaluated on: our families' (by default) or the tasks of a
/// reasoning-gym export (`file`); see [`TaskSource`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TaskSetConfig {
    /// Family names (all eight by default); not for a `file`.
    pub families: Vec<String>,
    /// Lowest level dealt; not for a `file`.
    pub min_level: u8,
    /// Highest level dealt; not for a `file`.
    pub max_level: u8,
    /// Questions per family and level in the held-out evaluation set (per dataset, for a `file`).
    pub eval_per_level: usize,
    /// A reasoning-gym export (JSON Lines) to deal tasks from instead of our families.
    pub file: Option<String>,
    /// The file's datasets to deal (all of them when empty); only with a `file`.
    pub datasets: Vec<String>,
    /// Tasks dealt per specialty (family or dataset) each round.
    pub per_specialty: usize,
}

impl Default for TaskSetConfig {
    fn default() -> Self {
        Self {
            families: Family::ALL.iter().map(|f| f.name().to_string()).collect(),
            min_level: 1,
            max_level: 2,
            eval_per_level: 8,
            file: None,
            datasets: Vec::new(),
            per_specialty: 1,
        }
    }
}

/// Deals questions: one per family each round, at a level drawn uniformly; a question that is one of the
/// held-out evaluation questions is redrawn (up to 32 times — only a family with almost no questions at a
/// level could exhaust that).
#[derive(Debug, Clone)]
pub struct TaskSet {
    families: Vec<Family>,
    levels: Vec<Level>,
    held_out: Vec<Question>,
    held_out_prompts: BTreeSet<String>,
}

/// Seed of the held-out set: the same for every agent and every run.
const HELD_OUT_SEED: u64 = 0x5a90_e7a1;

/// Redraws allowed when a dealt question is held out.
const REDRAWS: usize = 32;

impl TaskSet {
    /// The task set of `cfg`; the error names a bad family or level.
    pub fn new(cfg: &TaskSetConfig) -> Result<Self> {
        let families = cfg.families.iter().map(|n| Family::from_name(n)).collect::<Result<Vec<_>>>()?;
        if families.is_empty() {
            return Err(Error::config("env.families", "at least one family is needed"));
        }
        let (lo, hi) = (Level::new(cfg.min_level)?, Level::new(cfg.max_level)?);
        if lo > hi {
            return Err(Error::config("env.min_level", "is above env.max_level"));
        }
        let levels: Vec<Level> = Level::ALL.into_iter().filter(|l| (lo..=hi).contains(l)).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(HELD_OUT_SEED);
        let mut held_out = Vec::new();
        let mut held_out_prompts = BTreeSet::new();
        for &family in &families {
            for &level in &levels {
                let mut made = 0;
                for _ in 0..cfg.eval_per_level * REDRAWS {
                    if made == cfg.eval_per_level {
                        break;
                    }
                    let q = family.generate(level, &mut rng);
                    if held_out_prompts.insert(q.prompt.clone()) {
                        held_out.push(q);
                        made += 1;
                    }
                }
            }
        }
        Ok(Self { families, levels, held_out, held_out_prompts })
    }

    /// The families dealt.
    pub fn families(&self) -> &[Family] {
        &self.families
    }

    /// The held-out evaluation questions (the same for every seed).
    pub fn held_out(&self) -> &[Question] {
        &self.held_out
    }

    /// One question per family for `round` of the stream `seed`; deterministic in both.
    pub fn round(&self, seed: u64, round: u64) -> Vec<Question> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(round);
        self.families.iter().map(|&f| self.deal(f, &mut rng)).collect()
    }

    /// `n` questions of any family for warm-start training, from `rng`.
    pub fn sample(&self, n: usize, rng: &mut dyn RngCore) -> Vec<Question> {
        (0..n)
            .map(|_| {
                let f = self.families[rng.random_range(0..self.families.len())];
                self.deal(f, rng)
            })
            .collect()
    }

    fn deal(&self, family: Family, rng: &mut dyn RngCore) -> Question {
        let level = self.levels[rng.random_range(0..self.levels.len())];
        let mut q = family.generate(level, rng);
        for _ in 0..REDRAWS {
            if !self.held_out_prompts.contains(&q.prompt) {
                break;
            }
            q = family.generate(level, rng);
        }
        q
    }
}

#[cfg(test)]
mod tests;
