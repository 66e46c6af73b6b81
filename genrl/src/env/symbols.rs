//! The symbolic families: propositional logic, list operations, calendar arithmetic and 1-D grids.

use rand::{Rng, RngCore};

use super::numbers::parse_int;
use super::{Family, Level, Question, TaskFamily, Verdict};

fn exact(question: &Question, answer: &str, well_formed: impl Fn(&str) -> bool) -> Verdict {
    if !well_formed(answer) {
        Verdict::Malformed
    } else if answer == question.answer {
        Verdict::Correct
    } else {
        Verdict::Wrong
    }
}

/// Truth values of `T`/`F` expressions under `!` (binds tightest), `&`, `^` and `|` (loosest): one
/// operator at level 1, two (and a possible negation) at level 2, three with `^` at level 3.
#[derive(Debug, Clone, Copy, Default)]
pub struct PropositionalLogic;

impl PropositionalLogic {
    /// Evaluates a generated expression; `None` if it is not one.
    fn eval(expr: &str) -> Option<bool> {
        // Operands with their negations applied, and the operators between them.
        let mut values = Vec::new();
        let mut ops = Vec::new();
        let mut negate = false;
        for c in expr.chars() {
            match c {
                '!' => negate = !negate,
                'T' | 'F' => {
                    values.push((c == 'T') != negate);
                    negate = false;
                }
                '&' | '^' | '|' => ops.push(c),
                _ => return None,
            }
        }
        if values.len() != ops.len() + 1 {
            return None;
        }
        // Reduce by precedence: & first, then ^, then |.
        for op in ['&', '^', '|'] {
            let mut i = 0;
            while i < ops.len() {
                if ops[i] == op {
                    let (a, b) = (values[i], values[i + 1]);
                    values[i] = match op {
                        '&' => a && b,
                        '^' => a != b,
                        _ => a || b,
                    };
                    values.remove(i + 1);
                    ops.remove(i);
                } else {
                    i += 1;
                }
            }
        }
        values.first().copied()
    }
}

impl TaskFamily for PropositionalLogic {
    fn name(&self) -> &'static str {
        "propositional_logic"
    }

    fn generate(&self, level: Level, rng: &mut dyn RngCore) -> Question {
        let (n_ops, ops, negations): (usize, &[char], u32) = match level.get() {
            1 => (1, &['&', '|'], 0),
            2 => (2, &['&', '|'], 1),
            _ => (3, &['&', '|', '^'], 2),
        };
        let mut expr = String::new();
        let mut negations_left = negations;
        for i in 0..=n_ops {
            if negations_left > 0 && rng.random_bool(0.4) {
                expr.push('!');
                negations_left -= 1;
            }
            expr.push(if rng.random_bool(0.5) { 'T' } else { 'F' });
            if i < n_ops {
                expr.push(ops[rng.random_range(0..ops.len())]);
            }
        }
        let value = Self::eval(&expr).unwrap_or(false);
        Question {
            family: Family::PropositionalLogic,
            level,
            prompt: format!("{expr}="),
            answer: if value { "T" } else { "F" }.into(),
        }
    }

    fn solve(&self, prompt: &str) -> Option<String> {
        let expr = prompt.strip_suffix('=')?;
        if expr.len() > 32 {
            return None;
        }
        Some(if Self::eval(expr)? { "T" } else { "F" }.into())
    }

    fn verify(&self, question: &Question, answer: &str) -> Verdict {
        exact(question, answer, |a| a == "T" || a == "F")
    }
}

/// Operations on digit lists: `srt 4213=` → `1234`; also `rev`, `max`, `min`. Level 1: sorting 3 digits;
/// level 2: any operation on 4 or 5; level 3: 6 or 7.
#[derive(Debug, Clone, Copy, Default)]
pub struct ListOps;

impl TaskFamily for ListOps {
    fn name(&self) -> &'static str {
        "list_ops"
    }

    fn generate(&self, level: Level, rng: &mut dyn RngCore) -> Question {
        let (len, op) = match level.get() {
            1 => (3, "srt"),
            l => {
                let len = if l == 2 { rng.random_range(4..=5) } else { rng.random_range(6..=7) };
                (len, ["srt", "rev", "max", "min"][rng.random_range(0..4)])
            }
        };
        let digits: Vec<u8> = (0..len).map(|_| b'0' + rng.random_range(0..10u8)).collect();
        let mut out = digits.clone();
        match op {
            "srt" => out.sort_unstable(),
            "rev" => out.reverse(),
            "max" => out = vec![digits.iter().copied().max().unwrap_or(b'0')],
            _ => out = vec![digits.iter().copied().min().unwrap_or(b'0')],
        }
        let text = |d: &[u8]| d.iter().map(|&b| char::from(b)).collect::<String>();
        Question { family: Family::ListOps, level, prompt: format!("{op} {}=", text(&digits)), answer: text(&out) }
    }

    fn solve(&self, prompt: &str) -> Option<String> {
        let (op, digits) = prompt.strip_suffix('=')?.split_once(' ')?;
        if digits.is_empty() || digits.len() > 16 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let mut d: Vec<char> = digits.chars().collect();
        match op {
            "srt" => d.sort_unstable(),
            "rev" => d.reverse(),
            "max" => d = vec![d.iter().copied().max()?],
            "min" => d = vec![d.iter().copied().min()?],
            _ => return None,
        }
        Some(d.into_iter().collect())
    }

    fn verify(&self, question: &Question, answer: &str) -> Verdict {
        exact(question, answer, |a| !a.is_empty() && a.len() <= 16 && a.bytes().all(|b| b.is_ascii_digit()))
    }
}

const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const MONTH_DAYS: [u32; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

/// `(month index, day)` of day-of-year `d` (0-based) in a common year.
fn date_of(mut d: u32) -> (usize, u32) {
    for (m, &len) in MONTH_DAYS.iter().enumerate() {
        if d < len {
            return (m, d + 1);
        }
        d -= len;
    }
    (11, 31)
}

/// Parses `Mon d` (a month of a common year and a day that exists in it).
fn parse_date(s: &str) -> Option<(usize, u32)> {
    let (m, d) = s.split_once(' ')?;
    let month = MONTHS.iter().position(|&x| x == m)?;
    let day = u32::try_from(parse_int(d)?).ok()?;
    (1..=MONTH_DAYS[month]).contains(&day).then_some((month, day))
}

/// Weekday and date arithmetic in a common year: `Mon+2=` → `Wed` (level 1: 1 to 6 days forward),
/// `Fri-10=` (level 2: up to 30 days either way), `Mar 28+5=` → `Apr 2` (level 3: up to 40 days either
/// way, across the year's end).
#[derive(Debug, Clone, Copy, Default)]
pub struct CalendarArithmetic;

impl TaskFamily for CalendarArithmetic {
    fn name(&self) -> &'static str {
        "calendar_arithmetic"
    }

    fn generate(&self, level: Level, rng: &mut dyn RngCore) -> Question {
        let (max, both_ways) = match level.get() {
            1 => (6i64, false),
            2 => (30, true),
            _ => (40, true),
        };
        let k = rng.random_range(1..=max);
        let back = both_ways && rng.random_bool(0.5);
        let (sign, delta) = if back { ('-', -k) } else { ('+', k) };
        let (prompt, answer) = if level.get() < 3 {
            let w = rng.random_range(0..7i64);
            (format!("{}{sign}{k}=", WEEKDAYS[w as usize]), WEEKDAYS[(w + delta).rem_euclid(7) as usize].to_string())
        } else {
            let d = rng.random_range(0..365i64);
            let (m, day) = date_of(d as u32);
            let (m2, day2) = date_of((d + delta).rem_euclid(365) as u32);
            (format!("{} {day}{sign}{k}=", MONTHS[m]), format!("{} {day2}", MONTHS[m2]))
        };
        Question { family: Family::CalendarArithmetic, level, prompt, answer }
    }

    fn solve(&self, prompt: &str) -> Option<String> {
        let body = prompt.strip_suffix('=')?;
        let at = body.rfind(['+', '-'])?;
        let k = parse_int(&body[at + 1..]).filter(|k| (1..=366).contains(k))?;
        let delta = if body[at..].starts_with('-') { -k } else { k };
        let from = &body[..at];
        if let Some(w) = WEEKDAYS.iter().position(|&d| d == from) {
            return Some(WEEKDAYS[(w as i64 + delta).rem_euclid(7) as usize].to_string());
        }
        let (month, day) = parse_date(from)?;
        let day_of_year = MONTH_DAYS[..month].iter().sum::<u32>() + day - 1;
        let (m, d) = date_of((i64::from(day_of_year) + delta).rem_euclid(365) as u32);
        Some(format!("{} {d}", MONTHS[m]))
    }

    fn verify(&self, question: &Question, answer: &str) -> Verdict {
        if question.answer.contains(' ') {
            exact(question, answer, |a| parse_date(a).is_some())
        } else {
            exact(question, answer, |a| WEEKDAYS.contains(&a))
        }
    }
}

/// One-dimensional grid puzzles after ARC: `>` shifts the pattern one cell right (level 1, a block of
/// `#` in 8 cells), `<` shifts left or `|` mirrors (level 2, coloured cells `1`–`9` in 10 cells), `f`
/// fills between two equal markers or `>>` shifts two cells (level 3, 12 cells). Cells are `.` or a colour.
#[derive(Debug, Clone, Copy, Default)]
pub struct Arc1d;

impl Arc1d {
    fn cell(b: u8) -> bool {
        b == b'.' || b == b'#' || (b'1'..=b'9').contains(&b)
    }
}

impl TaskFamily for Arc1d {
    fn name(&self) -> &'static str {
        "arc_1d"
    }

    fn generate(&self, level: Level, rng: &mut dyn RngCore) -> Question {
        let (len, ops): (usize, &[&str]) = match level.get() {
            1 => (8, &[">"]),
            2 => (10, &["<", "|"]),
            _ => (12, &["f", ">>"]),
        };
        let op = ops[rng.random_range(0..ops.len())];
        let colour = if level.get() == 1 { b'#' } else { b'1' + rng.random_range(0..9u8) };
        let mut grid = vec![b'.'; len];
        let mut out = vec![b'.'; len];
        if op == "f" {
            let a = rng.random_range(0..len - 2);
            let b = rng.random_range(a + 2..len);
            grid[a] = colour;
            grid[b] = colour;
            out[a..=b].fill(colour);
        } else {
            let shift: isize = match op {
                ">" => 1,
                ">>" => 2,
                "<" => -1,
                _ => 0,
            };
            let margin = shift.unsigned_abs();
            let block = rng.random_range(1..=3usize);
            let start = rng.random_range(0..=len - block - margin) + if shift < 0 { margin } else { 0 };
            grid[start..start + block].fill(colour);
            if op == "|" {
                out = grid.iter().rev().copied().collect();
            } else {
                let to = start.checked_add_signed(shift).unwrap_or(0);
                out[to..to + block].fill(colour);
            }
        }
        let text = |g: &[u8]| g.iter().map(|&b| char::from(b)).collect::<String>();
        Question { family: Family::Arc1d, level, prompt: format!("{op}{}=", text(&grid)), answer: text(&out) }
    }

    fn solve(&self, prompt: &str) -> Option<String> {
        let body = prompt.strip_suffix('=')?;
        let (op, grid) = [">>", ">", "<", "|", "f"].into_iter().find_map(|op| Some((op, body.strip_prefix(op)?)))?;
        let grid = grid.as_bytes();
        if grid.is_empty() || grid.len() > 16 || !grid.iter().all(|&b| Self::cell(b)) {
            return None;
        }
        let mut out = vec![b'.'; grid.len()];
        match op {
            "|" => out = grid.iter().rev().copied().collect(),
            "f" => {
                let marked: Vec<usize> = (0..grid.len()).filter(|&i| grid[i] != b'.').collect();
                let [a, b] = marked[..] else { return None };
                if grid[a] != grid[b] {
                    return None;
                }
                out[a..=b].fill(grid[a]);
            }
            _ => {
                let shift: isize = match op {
                    ">>" => 2,
                    ">" => 1,
                    _ => -1,
                };
                for (i, &c) in grid.iter().enumerate().filter(|(_, c)| **c != b'.') {
                    *out.get_mut(i.checked_add_signed(shift)?)? = c;
                }
            }
        }
        Some(out.into_iter().map(char::from).collect())
    }

    fn verify(&self, question: &Question, answer: &str) -> Verdict {
        exact(question, answer, |a| a.len() == question.answer.len() && a.bytes().all(Self::cell))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logic_follows_precedence() {
        assert_eq!(PropositionalLogic::eval("T|F&F"), Some(true));
        assert_eq!(PropositionalLogic::eval("!T|F&T"), Some(false));
        assert_eq!(PropositionalLogic::eval("T^T|F"), Some(false));
        assert_eq!(PropositionalLogic::eval("T^T&F"), Some(true));
        assert_eq!(PropositionalLogic::eval("!!T"), Some(true));
        assert_eq!(PropositionalLogic::eval("T&"), None);
    }

    #[test]
    fn dates_wrap_the_year() {
        assert_eq!(date_of(0), (0, 1));
        assert_eq!(date_of(58), (1, 28));
        assert_eq!(date_of(59), (2, 1));
        assert_eq!(date_of(364), (11, 31));
        assert_eq!(parse_date("Feb 29"), None);
        assert_eq!(parse_date("Apr 02"), None);
        assert_eq!(parse_date("Apr 2"), Some((3, 2)));
    }
}
