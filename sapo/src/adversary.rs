//! A lying peer, for robustness tests: it shares wrong answers "marked" correct by forging the question's
//! ground truth, wrong answers to genuine questions, text the receiver cannot read, and oversized text.
//! It never learns. Receivers must drop all of it and still improve.

use std::sync::Arc;

use genrl::env::{Task, TaskSource};
use genrl::game::{DataManager, GameState, Trainer};

use crate::agent::TrainReport;

/// Whether the liar forges question `i` of `round` (every other one, alternating by round).
fn forged(round: u64, i: usize) -> bool {
    (i as u64 + round).is_multiple_of(2)
}

/// The liar's tasks: genuine ones, with the ground truth of every other one forged.
#[derive(Debug, Clone)]
pub struct ForgedQuestions {
    /// Where the tasks come from.
    pub tasks: Arc<TaskSource>,
    /// The liar's stream.
    pub seed: u64,
}

/// A wrong answer in the same format: the canonical answer with its last character changed.
fn wrong(answer: &str) -> String {
    let mut chars: Vec<char> = answer.chars().collect();
    if let Some(last) = chars.last_mut() {
        *last = if *last == '1' { '2' } else { '1' };
    }
    chars.into_iter().collect()
}

impl DataManager for ForgedQuestions {
    type Item = Task;

    fn round_data(&mut self, round: u64) -> Vec<Task> {
        let dealt = self.tasks.round(self.seed, round).into_iter().enumerate();
        dealt
            .map(|(i, t)| {
                if forged(round, i) {
                    let lie = wrong(t.answer());
                    t.with_answer(lie)
                } else {
                    t
                }
            })
            .collect()
    }
}

/// The liar's "policy": for forged questions, the forged answer (right by the forged truth); for the
/// others, in turn, wrong answers, non-ASCII garbage and oversized text.
#[derive(Debug, Clone, Copy, Default)]
pub struct Liar {
    /// Completions per question.
    pub completions: usize,
}

impl Trainer<Task> for Liar {
    type Action = String;
    type Report = TrainReport;

    fn generate(
        &mut self,
        round: u64,
        _stage: usize,
        items: &[Task],
        _state: &GameState<Task, String>,
    ) -> genrl::Result<Vec<Vec<String>>> {
        let n = self.completions.max(1);
        Ok(items
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let text = if forged(round, i) {
                    format!("{}\n", q.answer())
                } else {
                    match ((i as u64 + round) / 2) % 3 {
                        0 => format!("{}\n", wrong(q.answer())),
                        1 => "\u{fffd}\u{0}garbage ✓\n".to_string(),
                        _ => "9".repeat(4096),
                    }
                };
                vec![text; n]
            })
            .collect())
    }

    fn train(&mut self, _state: &GameState<Task, String>, _rewards: &[Vec<f64>]) -> genrl::Result<TrainReport> {
        Ok(TrainReport::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use genrl::env::TaskSetConfig;

    #[test]
    fn forged_questions_are_not_genuine_and_wrong_answers_score_zero() -> crate::Result<()> {
        let tasks = Arc::new(TaskSource::new(&TaskSetConfig::default())?);
        let mut data = ForgedQuestions { tasks: tasks.clone(), seed: 3 };
        let qs = data.round_data(0);
        for (i, q) in qs.iter().enumerate() {
            assert_eq!(tasks.is_genuine(q), !forged(0, i), "{q:?}");
            assert_eq!(tasks.reward(q, &format!("{}\n", wrong(q.answer()))), 0.0);
        }
        Ok(())
    }
}
