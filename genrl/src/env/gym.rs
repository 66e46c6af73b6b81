//! Task sets exported from the `reasoning-gym` package, read from JSON Lines and scored.
//!
//! Each line is one task: `question`, `answer` (a string, or `null` where the family has no single
//! answer), `metadata` (an object) and `source_dataset` (at the top level or in the metadata, as
//! reasoning-gym puts it). The README gives the few lines of Python that write such a file.
//!
//! A completion is scored on its answer: the text of its last `<answer>…</answer>` (trimmed), or the whole
//! completion trimmed when it has none. Where a task is one of our families' questions in other words
//! ([`GymTask::translate`]: the same computation on the same numbers, found in the task's metadata), our
//! family's verifier judges the answer; otherwise reasoning-gym's default rule does ([`default_score`]):
//! 1 for the exact answer, `len(answer) / len(given)` when the given text contains it, 0 otherwise.
//! Families whose reasoning-gym scorer is their own (decimal rounding, several right answers) are scored
//! by that default rule unless they translate; [`cross_check`] reports how many did.
//!
//! The translation is also a check of our verifiers: for each translated task, our family's answer must
//! be the one reasoning-gym wrote ([`cross_check`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Family, Level, Question, Verdict};
use crate::error::{Error, Result};

/// One task of a reasoning-gym export.
#[derive(Debug, Clone, PartialEq)]
pub struct GymTask {
    /// The question as the policy reads it.
    pub question: String,
    /// The oracle answer; `None` where the family has no single one.
    pub answer: Option<String>,
    /// The generator's parameters and the task's data (reasoning-gym's `metadata`).
    pub metadata: Map<String, Value>,
    /// The reasoning-gym dataset that made it (e.g. `basic_arithmetic`).
    pub source_dataset: String,
    /// Its index in that dataset, where the file gives it.
    pub source_index: Option<u64>,
}

/// A line of the file, before its checks.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    question: String,
    answer: Option<Value>,
    #[serde(default)]
    metadata: Map<String, Value>,
    source_dataset: Option<String>,
    source_index: Option<u64>,
}

/// Longest line read (a task with its examples); a longer one is refused.
const MAX_LINE: usize = 1 << 20;

/// The tasks of a reasoning-gym export, in file order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GymTasks {
    tasks: Vec<GymTask>,
}

impl GymTasks {
    /// Reads a JSON Lines file; the error names the file, the line and the field.
    pub fn read(path: &Path) -> Result<Self> {
        let field = format!("tasks file {}", path.display());
        let text = std::fs::read_to_string(path).map_err(|e| Error::config(&field, e.to_string()))?;
        Self::parse(&text, &field)
    }

    /// Parses JSON Lines (blank lines skipped); errors name `origin`, the line number and the field.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let mut tasks = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let raw = raw.trim();
            if raw.is_empty() {
                continue;
            }
            let bad = |reason: String| Error::config(format!("{origin}, line {}", n + 1), reason);
            if raw.len() > MAX_LINE {
                return Err(bad(format!("{} bytes; at most {MAX_LINE}", raw.len())));
            }
            let line: Line = serde_json::from_str(raw).map_err(|e| bad(e.to_string()))?;
            let answer = match line.answer {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s),
                // Some families write a number; its JSON text is the answer.
                Some(v @ (Value::Number(_) | Value::Bool(_))) => Some(v.to_string()),
                Some(other) => return Err(bad(format!("answer: {other} is not a string, number or null"))),
            };
            let source_dataset = match (line.source_dataset, line.metadata.get("source_dataset")) {
                (Some(s), _) => s,
                (None, Some(Value::String(s))) => s.clone(),
                _ => return Err(bad("source_dataset: missing (at the top level or in the metadata)".into())),
            };
            let source_index = line.source_index.or_else(|| line.metadata.get("source_index").and_then(Value::as_u64));
            tasks.push(GymTask {
                question: line.question,
                answer,
                metadata: line.metadata,
                source_dataset,
                source_index,
            });
        }
        if tasks.is_empty() {
            return Err(Error::config(origin, "no tasks"));
        }
        Ok(Self { tasks })
    }

    /// The tasks.
    pub fn tasks(&self) -> &[GymTask] {
        &self.tasks
    }

    /// Number of tasks.
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether there are none (never, for a parsed file).
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

/// The answer in a completion: the text of its last `<answer>…</answer>`, trimmed; `None` without one.
pub fn extract_answer(completion: &str) -> Option<&str> {
    let open = completion.rfind("<answer>")?;
    let rest = &completion[open + "<answer>".len()..];
    let close = rest.find("</answer>")?;
    Some(rest[..close].trim())
}

/// reasoning-gym's default score of `given` against the oracle `answer`: 1 when equal, the share of
/// `given` that is the oracle when `given` contains it, 0 otherwise (and for an empty or missing answer).
pub fn default_score(given: Option<&str>, answer: &str) -> f64 {
    match given {
        Some(g) if !g.is_empty() && g == answer => 1.0,
        Some(g) if !g.is_empty() && !answer.is_empty() && g.contains(answer) => answer.len() as f64 / g.len() as f64,
        _ => 0.0,
    }
}

/// A task as one of our families' questions, with reasoning-gym's answer in our grammar.
#[derive(Debug, Clone, PartialEq)]
pub struct Translation {
    /// Our question, with the answer our family works out.
    pub question: Question,
    /// reasoning-gym's answer, written in our family's grammar.
    pub theirs: Option<String>,
}

/// Weekdays by their full names, Monday first: ours are their first three letters.
const WEEKDAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];

impl GymTask {
    /// Which of our families computes what this task asks, if one does (by the reasoning-gym dataset).
    pub fn family(&self) -> Option<Family> {
        Some(match self.source_dataset.as_str() {
            "basic_arithmetic" => Family::BasicArithmetic,
            "base_conversion" => Family::BaseConversion,
            "fraction_simplification" => Family::FractionSimplification,
            "decimal_arithmetic" => Family::DecimalArithmetic,
            "calendar_arithmetic" => Family::CalendarArithmetic,
            "arc_1d" => Family::Arc1d,
            _ => return None,
        })
    }

    /// The task as our family's question, when its parameters fit our family's grammar: integer `+`/`-`
    /// of two naturals, conversions between bases 2, 8, 10 and 16, plain fractions, two-term decimal
    /// `+`/`-`/`*`, a weekday offset of up to 366 days, and 1-D grids of at most 16 cells moved one or two
    /// cells without wrapping or filled between two points.
    pub fn translate(&self) -> Option<Translation> {
        let family = self.family()?;
        let (prompt, theirs) = match family {
            Family::BasicArithmetic => (format!("{}=", self.text("expression")?.replace(' ', "")), self.answer.clone()),
            Family::BaseConversion => {
                let (from, to) = (self.int("source_base")?, self.int("target_base")?);
                (format!("{}:{from}>{to}=", self.text("source_repr")?), self.answer.clone())
            }
            Family::FractionSimplification => {
                if self.metadata.get("style").and_then(Value::as_str).is_some_and(|s| s != "plain") {
                    return None;
                }
                (format!("{}/{}=", self.int("numerator")?, self.int("denominator")?), self.answer.clone())
            }
            Family::DecimalArithmetic => {
                // The expression is the question's last line, `a+b = ?`, possibly in parentheses.
                let last = self.question.trim_end().lines().last()?.strip_suffix(" = ?")?;
                let inner = last.strip_prefix('(').and_then(|s| s.strip_suffix(')')).unwrap_or(last);
                (format!("{inner}="), self.answer.clone())
            }
            Family::CalendarArithmetic => {
                if self.text("task")? != "weekday_offset" {
                    return None;
                }
                let start = weekday_of(self.text("start_date")?)?;
                let offset = self.metadata.get("offset_days")?.as_i64()?;
                let sign = if offset < 0 { '-' } else { '+' };
                let prompt = format!("{}{sign}{}=", &WEEKDAYS[start][..3], offset.unsigned_abs());
                (prompt, self.answer.as_deref().and_then(short_weekday))
            }
            Family::Arc1d => {
                let op = match self.text("task_name")? {
                    "move_1pix_solid_right" | "move_1pix_colorful_right" => ">",
                    "move_2pix_solid_right" | "move_2pix_colorful_right" => ">>",
                    "move_1pix_solid_left" | "move_1pix_colorful_left" => "<",
                    "two_points_and_fill" => "f",
                    _ => return None,
                };
                let test = self.metadata.get("test_example")?;
                let grid = grid_text(test.get("input")?.as_array()?)?;
                (format!("{op}{grid}="), self.answer.as_deref().and_then(grid_answer))
            }
            _ => return None,
        };
        let answer = family.task().solve(&prompt)?;
        Some(Translation { question: Question { family, level: Level::EASY, prompt, answer }, theirs })
    }

    /// The score of `completion`: our family's verifier on its answer where the task translates,
    /// reasoning-gym's default rule otherwise (0 for a task without an oracle answer).
    pub fn score(&self, completion: &str) -> f64 {
        score(self.translate().map(|t| t.question).as_ref(), self.answer.as_deref(), completion)
    }

    fn text(&self, key: &str) -> Option<&str> {
        self.metadata.get(key)?.as_str()
    }

    fn int(&self, key: &str) -> Option<i64> {
        self.metadata.get(key)?.as_i64()
    }
}

/// The score of `completion` to a task that translates into `ours` (our family's question) or, if it
/// does not, has the oracle `answer`: see [`GymTask::score`].
fn score(ours: Option<&Question>, answer: Option<&str>, completion: &str) -> f64 {
    let given = extract_answer(completion).unwrap_or_else(|| completion.trim());
    if let Some(question) = ours {
        let in_our_grammar = match question.family {
            Family::CalendarArithmetic => short_weekday(given),
            Family::Arc1d => grid_answer(given),
            _ => Some(given.to_owned()),
        };
        return in_our_grammar.map_or(0.0, |a| question.reward(&format!("{a}\n")));
    }
    answer.map_or(0.0, |a| default_score(Some(given), a))
}

/// A reasoning-gym task as agents deal and share it: its dataset, its question and the oracle answer.
/// A receiver judges it by its own copy of the task set ([`GymSet::find`]), never by what a peer sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GymQuestion {
    /// The reasoning-gym dataset (the agent's specialty it belongs to).
    pub dataset: String,
    /// The question as the policy reads it.
    pub question: String,
    /// The oracle answer as the file gives it.
    pub answer: String,
}

/// One task of a [`GymSet`]: as shared, and as our family's question where it translates.
#[derive(Debug, Clone)]
struct SetTask {
    shared: GymQuestion,
    ours: Option<Question>,
}

/// Seed of a [`GymSet`]'s held-out choice: the same for every agent and every run.
const GYM_HELD_OUT_SEED: u64 = 0x09ea_75e7;

/// The tasks of an export that agents are dealt: grouped by dataset (one specialty each), a held-out
/// evaluation set kept apart, every task scored as [`GymTask::score`] scores it (its translation worked
/// out once). Tasks without an oracle answer cannot be scored and are left out, as are repeats of a
/// question already in its dataset.
#[derive(Debug, Clone)]
pub struct GymSet {
    tasks: Vec<SetTask>,
    datasets: Vec<String>,
    /// Datasets of the file without a task that has an oracle answer, left out.
    unscorable: Vec<String>,
    /// Per dataset, the tasks dealt in training.
    dealt: Vec<Vec<usize>>,
    held_out: Vec<usize>,
    /// Each task by dataset, then question.
    by_question: HashMap<String, HashMap<String, usize>>,
    left_out: usize,
}

impl GymSet {
    /// The set of `tasks` restricted to `datasets` (when empty, every dataset of the file with a task
    /// that can be scored, in file order), with `held_out_per_dataset` tasks of each held out. Errors name
    /// a dataset the file lacks, one without an oracle answer, and one left with nothing to deal.
    pub fn new(tasks: &GymTasks, datasets: &[String], held_out_per_dataset: usize) -> Result<Self> {
        let mut names: Vec<String> = Vec::new();
        let mut with_answers: HashSet<&str> = HashSet::new();
        for t in tasks.tasks() {
            if !names.contains(&t.source_dataset) {
                names.push(t.source_dataset.clone());
            }
            if t.answer.is_some() {
                with_answers.insert(&t.source_dataset);
            }
        }
        let scorable = |d: &str| with_answers.contains(d);
        let mut unscorable = Vec::new();
        let datasets = if datasets.is_empty() {
            let (kept, left): (Vec<String>, Vec<String>) = names.into_iter().partition(|d| scorable(d));
            if kept.is_empty() {
                return Err(Error::config("tasks.file", "no task has an oracle answer: none can be scored"));
            }
            unscorable = left;
            kept
        } else {
            for (i, d) in datasets.iter().enumerate() {
                let field = format!("tasks.datasets[{i}]");
                if !names.contains(d) {
                    return Err(Error::config(
                        field,
                        format!("{d:?} is not in the file, which has {}", names.join(", ")),
                    ));
                }
                if datasets[..i].contains(d) {
                    return Err(Error::config(field, format!("{d:?} is listed twice")));
                }
                if !scorable(d) {
                    return Err(Error::config(
                        field,
                        format!(
                            "{d:?} has no task with an oracle answer (reasoning-gym writes none for it): none can be scored"
                        ),
                    ));
                }
            }
            datasets.to_vec()
        };
        let mut set = Self {
            tasks: Vec::new(),
            dealt: vec![Vec::new(); datasets.len()],
            datasets,
            unscorable,
            held_out: Vec::new(),
            by_question: HashMap::new(),
            left_out: 0,
        };
        let mut of_dataset: Vec<Vec<usize>> = vec![Vec::new(); set.datasets.len()];
        for t in tasks.tasks() {
            let Some(d) = set.datasets.iter().position(|d| *d == t.source_dataset) else { continue };
            let of_this = set.by_question.entry(t.source_dataset.clone()).or_default();
            let Some(answer) = t.answer.clone().filter(|_| !of_this.contains_key(&t.question)) else {
                set.left_out += 1;
                continue;
            };
            of_this.insert(t.question.clone(), set.tasks.len());
            of_dataset[d].push(set.tasks.len());
            let shared = GymQuestion { dataset: t.source_dataset.clone(), question: t.question.clone(), answer };
            set.tasks.push(SetTask { shared, ours: t.translate().map(|t| t.question) });
        }
        let mut rng = ChaCha8Rng::seed_from_u64(GYM_HELD_OUT_SEED);
        for (d, mut indices) in of_dataset.into_iter().enumerate() {
            indices.shuffle(&mut rng);
            let held = held_out_per_dataset.min(indices.len());
            if held == indices.len() {
                return Err(Error::config(
                    "tasks.eval_per_level",
                    format!(
                        "dataset {:?} has {} scorable tasks, all held out: none is left to train on",
                        set.datasets[d],
                        indices.len()
                    ),
                ));
            }
            let mut held_out = indices.split_off(indices.len() - held);
            held_out.sort_unstable();
            indices.sort_unstable();
            set.held_out.extend(held_out);
            set.dealt[d] = indices;
        }
        Ok(set)
    }

    /// The datasets dealt, one specialty each.
    pub fn datasets(&self) -> &[String] {
        &self.datasets
    }

    /// Datasets of the file left out because none of their tasks has an oracle answer (when the datasets
    /// were not chosen: a chosen one without is an error).
    pub fn unscorable(&self) -> &[String] {
        &self.unscorable
    }

    /// Tasks of the dealt datasets left out: without an oracle answer, or a repeat of a question.
    pub fn left_out(&self) -> usize {
        self.left_out
    }

    /// Tasks in the set (dealt and held out).
    pub fn len(&self) -> usize {
        self.tasks.len()
    }

    /// Whether the set has no tasks (never, for a built one).
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }

    /// Every task of the set, in file order.
    pub fn tasks(&self) -> impl Iterator<Item = &GymQuestion> {
        self.tasks.iter().map(|t| &t.shared)
    }

    /// The held-out evaluation tasks (the same for every seed).
    pub fn held_out(&self) -> impl Iterator<Item = &GymQuestion> {
        self.held_out.iter().map(|&i| &self.tasks[i].shared)
    }

    /// One task per dataset for `round` of the stream `seed`, drawn uniformly from the dataset's dealt
    /// tasks; deterministic in both.
    pub fn round(&self, seed: u64, round: u64) -> Vec<GymQuestion> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(round);
        self.dealt.iter().map(|d| self.tasks[d[rng.random_range(0..d.len())]].shared.clone()).collect()
    }

    /// This set's copy of `task`, if the set has it with the same answer: a task a peer shares is
    /// genuine when it is.
    pub fn find(&self, task: &GymQuestion) -> Option<&GymQuestion> {
        self.copy_of(task).map(|t| &t.shared).filter(|mine| mine.answer == task.answer)
    }

    /// The score of `completion` to `task` by this set's copy of it (0 for a task it lacks).
    pub fn score(&self, task: &GymQuestion, completion: &str) -> f64 {
        self.copy_of(task).map_or(0.0, |t| score(t.ours.as_ref(), Some(&t.shared.answer), completion))
    }

    /// This set's task with `task`'s dataset and question, whatever answer `task` states.
    fn copy_of(&self, task: &GymQuestion) -> Option<&SetTask> {
        let i = *self.by_question.get(&task.dataset)?.get(&task.question)?;
        Some(&self.tasks[i])
    }
}

/// Monday = 0 … Sunday = 6 of a `YYYY-MM-DD` date of the proleptic Gregorian calendar.
fn weekday_of(date: &str) -> Option<usize> {
    let mut parts = date.split('-');
    let (y, m, d): (i64, i64, i64) =
        (parts.next()?.parse().ok()?, parts.next()?.parse().ok()?, parts.next()?.parse().ok()?);
    if parts.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Days since 1970-01-01 (a Thursday), counting years from March so that leap days come last.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let day_of_year = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    Some((days + 3).rem_euclid(7) as usize)
}

/// `Friday` (any case) or `Fri` as our `Fri`.
fn short_weekday(s: &str) -> Option<String> {
    let s = s.trim().trim_end_matches('.');
    WEEKDAYS.iter().find(|w| w.eq_ignore_ascii_case(s) || w[..3].eq_ignore_ascii_case(s)).map(|w| w[..3].to_owned())
}

/// A reasoning-gym grid (colours 0–9) as our cells: 0 is `.`, colour `c` the digit `c`; at most 16.
fn grid_text(cells: &[Value]) -> Option<String> {
    if cells.is_empty() || cells.len() > 16 {
        return None;
    }
    cells
        .iter()
        .map(|c| match c.as_u64()? {
            0 => Some('.'),
            c @ 1..=9 => char::from_digit(c as u32, 10),
            _ => None,
        })
        .collect()
}

/// A grid answer written as space-separated colours (`0 0 5 4`) as our cells (`..54`).
fn grid_answer(s: &str) -> Option<String> {
    let cells: Vec<Value> =
        s.split_whitespace().map(|t| t.parse::<u64>().ok().map(Value::from)).collect::<Option<_>>()?;
    grid_text(&cells)
}

/// How one reasoning-gym dataset's tasks compare with our family's verifier.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DatasetCheck {
    /// The reasoning-gym dataset.
    pub dataset: String,
    /// Our family that computes the same thing, if one does.
    pub family: Option<Family>,
    /// Tasks of the dataset in the file.
    pub tasks: usize,
    /// Tasks that translate into our family's grammar.
    pub translated: usize,
    /// Translated tasks where our verifier accepts reasoning-gym's answer.
    pub agree: usize,
    /// Translated tasks where it does not: the task, reasoning-gym's answer in our grammar (if it has
    /// one), and ours.
    pub disagreements: Vec<Disagreement>,
}

/// A task where our verifier rejects reasoning-gym's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Disagreement {
    /// Our prompt for it.
    pub prompt: String,
    /// reasoning-gym's answer (in our grammar where it converts; as written otherwise).
    pub theirs: String,
    /// Our family's answer.
    pub ours: String,
}

/// Checks each translated task's reasoning-gym answer with our family's verifier, dataset by dataset.
pub fn cross_check(tasks: &GymTasks) -> Vec<DatasetCheck> {
    let mut by_dataset: BTreeMap<&str, DatasetCheck> = BTreeMap::new();
    for task in tasks.tasks() {
        let check = by_dataset.entry(&task.source_dataset).or_insert_with(|| DatasetCheck {
            dataset: task.source_dataset.clone(),
            family: task.family(),
            ..DatasetCheck::default()
        });
        check.tasks += 1;
        let Some(t) = task.translate() else { continue };
        check.translated += 1;
        let verdict = t.theirs.as_deref().map_or(Verdict::Malformed, |a| t.question.verify(&format!("{a}\n")));
        if verdict == Verdict::Correct {
            check.agree += 1;
        } else {
            let theirs = t.theirs.or_else(|| task.answer.clone()).unwrap_or_default();
            check.disagreements.push(Disagreement { prompt: t.question.prompt, theirs, ours: t.question.answer });
        }
    }
    by_dataset.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tasks in reasoning-gym's export format, written for these tests.
    const TASKS: &str = r#"
{"question": "What is 17 - 40?", "answer": "-23", "metadata": {"source_dataset": "basic_arithmetic", "expression": "17 - 40"}}
{"question": "What is 3 * 4 * 5?", "answer": "60", "metadata": {"source_dataset": "basic_arithmetic", "expression": "3 * 4 * 5"}}
{"question": "Base 16 number ff in base 2?", "answer": "11111111", "metadata": {"source_dataset": "base_conversion", "source_base": 16, "target_base": 2, "source_repr": "ff"}}
{"question": "Base 7 number 16 in base 10?", "answer": "13", "metadata": {"source_dataset": "base_conversion", "source_base": 7, "target_base": 10, "source_repr": "16"}}
{"question": "Simplify 18/24.", "answer": "3/4", "metadata": {"source_dataset": "fraction_simplification", "numerator": 18, "denominator": 24, "style": "plain"}}
{"question": "Simplify 6/8.", "answer": "3/5", "metadata": {"source_dataset": "fraction_simplification", "numerator": 6, "denominator": 8, "style": "plain"}}
{"question": "Work it out.\n(1.250+2.500) = ?", "answer": "3.75", "metadata": {"source_dataset": "decimal_arithmetic", "num_terms": 2}}
{"question": "Seven days after a Friday?", "answer": "Friday", "metadata": {"source_dataset": "calendar_arithmetic", "task": "weekday_offset", "start_date": "2022-10-28", "offset_days": -10}}
{"question": "Shift the grid.", "answer": "0 0 5 4 0", "metadata": {"source_dataset": "arc_1d", "task_name": "move_1pix_solid_right", "test_example": {"input": [0, 5, 4, 0, 0]}}}
{"question": "Conclude.", "answer": null, "metadata": {"source_dataset": "propositional_logic"}}
{"question": "Spell it.", "answer": "abc", "source_dataset": "spell_backward", "metadata": {}}
"#;

    fn tasks() -> GymTasks {
        GymTasks::parse(TASKS, "test").expect("parses")
    }

    #[test]
    fn answers_are_extracted_and_scored_by_our_verifier_or_the_default_rule() {
        assert_eq!(extract_answer("think <answer>1</answer> then <answer> 42 </answer>."), Some("42"));
        assert_eq!(extract_answer("no tags"), None);
        assert_eq!(default_score(Some("abc"), "abc"), 1.0);
        assert_eq!(default_score(Some("x abc"), "abc"), 0.6);
        assert_eq!(default_score(Some(""), "abc"), 0.0);
        let t = tasks();
        let score = |i: usize, c: &str| t.tasks()[i].score(c);
        assert_eq!(score(0, "<answer>-23</answer>"), 1.0);
        // Our verifier is strict: a number in another form is wrong, not partly right.
        assert_eq!(score(0, "<answer>-023</answer>"), 0.0);
        // 2022-10-28 is a Friday; ten days before, a Tuesday (the oracle of this test task is wrong).
        assert_eq!((score(7, "<answer>Tuesday</answer>"), score(7, "Tue"), score(7, "Friday")), (1.0, 1.0, 0.0));
        assert_eq!(score(8, "0 0 5 4 0"), 1.0);
        // Untranslated: reasoning-gym's rule, partial credit included.
        assert_eq!(score(1, "<answer>60</answer>"), 1.0);
        assert_eq!(score(10, "<answer>abcd</answer>"), 0.75);
        assert_eq!(score(9, "<answer>P</answer>"), 0.0);
    }

    #[test]
    fn the_cross_check_finds_a_wrong_oracle_and_counts_what_does_not_translate() {
        let checks = cross_check(&tasks());
        let by: BTreeMap<&str, &DatasetCheck> = checks.iter().map(|c| (c.dataset.as_str(), c)).collect();
        let arithmetic = by["basic_arithmetic"];
        assert_eq!((arithmetic.tasks, arithmetic.translated, arithmetic.agree), (2, 1, 1), "three terms: not ours");
        assert_eq!((by["base_conversion"].translated, by["base_conversion"].agree), (1, 1), "base 7 is not ours");
        let fractions = by["fraction_simplification"];
        assert_eq!((fractions.translated, fractions.agree), (2, 1));
        assert_eq!(
            fractions.disagreements,
            vec![Disagreement { prompt: "6/8=".into(), theirs: "3/5".into(), ours: "3/4".into() }]
        );
        assert_eq!((by["decimal_arithmetic"].translated, by["decimal_arithmetic"].agree), (1, 1));
        assert_eq!(by["calendar_arithmetic"].agree, 0, "the oracle here says Friday; it is a Tuesday");
        assert_eq!(by["calendar_arithmetic"].disagreements[0].ours, "Tue");
        assert_eq!((by["arc_1d"].translated, by["arc_1d"].agree), (1, 1));
        assert_eq!((by["propositional_logic"].family, by["propositional_logic"].translated), (None, 0));
        assert_eq!(by["spell_backward"].tasks, 1);
    }

    #[test]
    fn malformed_files_are_named_by_line_and_field() {
        let err = |text: &str| GymTasks::parse(text, "t.jsonl").expect_err("refused").to_string();
        assert!(err("").contains("no tasks"));
        assert!(err("{\"question\": \"q\", \"answer\": \"a\", \"metadata\": {}}").contains("line 1: source_dataset"));
        let e = err("\n{\"question\": 1}");
        assert!(e.contains("t.jsonl, line 2") && e.contains("invalid type"), "{e}");
        assert!(err("{\"question\": \"q\", \"answer\": [1], \"source_dataset\": \"x\"}").contains("answer: [1]"));
        assert!(err("{\"question\": \"q\", \"extra\": 1, \"source_dataset\": \"x\"}").contains("unknown field"));
        assert!(err("not json").contains("line 1"));
        let e = GymTasks::read(Path::new("/nonexistent/tasks.jsonl")).expect_err("missing").to_string();
        assert!(e.contains("/nonexistent/tasks.jsonl"), "{e}");
    }

    #[test]
    fn weekdays_of_dates() {
        assert_eq!(weekday_of("1970-01-01"), Some(3));
        assert_eq!(weekday_of("2022-10-28"), Some(4));
        assert_eq!(weekday_of("2000-02-29"), Some(1));
        assert_eq!(weekday_of("2024-13-01"), None);
        assert_eq!(short_weekday("friday"), Some("Fri".into()));
        assert_eq!(short_weekday("Fri"), Some("Fri".into()));
        assert_eq!(short_weekday("Fry"), None);
    }
}
