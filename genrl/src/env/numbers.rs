//! The numeric families: integer arithmetic, base conversion, fraction simplification, decimal
//! arithmetic.

use rand::{Rng, RngCore};

use super::{Family, Level, Question, TaskFamily, Verdict};

/// Parses `-?(0|[1-9][0-9]*)`, at most 15 digits.
pub(super) fn parse_int(s: &str) -> Option<i64> {
    let digits = s.strip_prefix('-').unwrap_or(s);
    let canonical = !digits.is_empty()
        && digits.len() <= 15
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && !(s.starts_with('-') && digits == "0");
    if !canonical {
        return None;
    }
    digits.parse::<i64>().ok().map(|v| if s.starts_with('-') { -v } else { v })
}

fn judge<T: PartialEq>(parsed: Option<T>, expected: Option<T>) -> Verdict {
    match (parsed, expected) {
        (None, _) | (_, None) => Verdict::Malformed,
        (Some(a), Some(b)) if a == b => Verdict::Correct,
        _ => Verdict::Wrong,
    }
}

fn question(family: Family, level: Level, prompt: String, answer: String) -> Question {
    Question { family, level, prompt, answer }
}

/// Integer arithmetic: `a+b` (level 1: one digit), `a±b` (level 2: two digits), `a*b+c` (level 3).
#[derive(Debug, Clone, Copy, Default)]
pub struct BasicArithmetic;

impl TaskFamily for BasicArithmetic {
    fn name(&self) -> &'static str {
        "basic_arithmetic"
    }

    fn generate(&self, level: Level, rng: &mut dyn RngCore) -> Question {
        let (prompt, value) = match level.get() {
            1 => {
                let (a, b) = (rng.random_range(0..10i64), rng.random_range(0..10i64));
                (format!("{a}+{b}="), a + b)
            }
            2 => {
                let (a, b) = (rng.random_range(0..100i64), rng.random_range(0..100i64));
                if rng.random_bool(0.5) { (format!("{a}+{b}="), a + b) } else { (format!("{a}-{b}="), a - b) }
            }
            _ => {
                let (a, b, c) = (rng.random_range(2..13i64), rng.random_range(2..10i64), rng.random_range(0..100i64));
                (format!("{a}*{b}+{c}="), a * b + c)
            }
        };
        question(Family::BasicArithmetic, level, prompt, value.to_string())
    }

    fn solve(&self, prompt: &str) -> Option<String> {
        let body = prompt.strip_suffix('=')?;
        let natural = |t: &str| parse_int(t).filter(|v| *v >= 0);
        let value = if let Some((a, rest)) = body.split_once('*') {
            let (b, c) = rest.split_once('+')?;
            natural(a)?.checked_mul(natural(b)?)?.checked_add(natural(c)?)?
        } else {
            let at = body.char_indices().skip(1).find(|(_, c)| *c == '+' || *c == '-')?.0;
            let (a, b) = (natural(&body[..at])?, natural(&body[at + 1..])?);
            if body[at..].starts_with('+') { a.checked_add(b)? } else { a.checked_sub(b)? }
        };
        Some(value.to_string())
    }

    fn verify(&self, question: &Question, answer: &str) -> Verdict {
        judge(parse_int(answer), parse_int(&question.answer))
    }
}

const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// `n` written in `base` (2 to 16), lower-case, no leading zeros.
pub(super) fn to_base(mut n: u64, base: u64) -> String {
    if n == 0 {
        return "0".into();
    }
    let mut out = Vec::new();
    while n > 0 {
        out.push(DIGITS[(n % base) as usize]);
        n /= base;
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// Parses lower-case digits of `base` with no leading zeros, at most 20 of them.
fn from_base(s: &str, base: u64) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.bytes().try_fold(0u64, |acc, b| {
        let d = DIGITS.iter().position(|&x| x == b)? as u64;
        (d < base).then(|| acc.checked_mul(base)?.checked_add(d))?
    })
}

/// Integers between bases: `n:from>to=` (level 1: decimal below 16 to binary; level 2: decimal below
/// 256 to base 2, 8 or 16; level 3: below 1024, from base 2, 8 or 16 to any other of 2, 8, 10, 16).
#[derive(Debug, Clone, Copy, Default)]
pub struct BaseConversion;

impl BaseConversion {
    /// The target base of a question (what follows `>` in its prompt).
    fn target(question: &Question) -> Option<u64> {
        question.prompt.strip_suffix('=')?.rsplit_once('>')?.1.parse().ok()
    }
}

impl TaskFamily for BaseConversion {
    fn name(&self) -> &'static str {
        "base_conversion"
    }

    fn generate(&self, level: Level, rng: &mut dyn RngCore) -> Question {
        let bases = [2u64, 8, 16];
        let (n, from, to) = match level.get() {
            1 => (rng.random_range(0..16u64), 10, 2),
            2 => (rng.random_range(0..256u64), 10, bases[rng.random_range(0..3)]),
            _ => {
                let from = bases[rng.random_range(0..3)];
                let others: Vec<u64> = [2u64, 8, 10, 16].into_iter().filter(|&b| b != from).collect();
                (rng.random_range(0..1024u64), from, others[rng.random_range(0..others.len())])
            }
        };
        let prompt = format!("{}:{from}>{to}=", to_base(n, from));
        question(Family::BaseConversion, level, prompt, to_base(n, to))
    }

    fn solve(&self, prompt: &str) -> Option<String> {
        let (digits, bases) = prompt.strip_suffix('=')?.split_once(':')?;
        let (from, to) = bases.split_once('>')?;
        let base = |t: &str| [2u64, 8, 10, 16].into_iter().find(|b| b.to_string() == t);
        Some(to_base(from_base(digits, base(from)?)?, base(to)?))
    }

    fn verify(&self, question: &Question, answer: &str) -> Verdict {
        let Some(base) = Self::target(question) else {
            return Verdict::Malformed;
        };
        judge(from_base(answer, base), from_base(&question.answer, base))
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Parses `p/q` with canonical positive integers.
fn parse_fraction(s: &str) -> Option<(i64, i64)> {
    let (p, q) = s.split_once('/')?;
    let (p, q) = (parse_int(p)?, parse_int(q)?);
    (p >= 0 && q > 0).then_some((p, q))
}

/// Fractions to lowest terms: `18/24=` → `3/4` (the denominator is never 1). Levels scale the reduced
/// denominator (up to 6, 12, 20) and the common factor (up to 4, 9, 15); a fraction not in lowest terms
/// is wrong even when its value is right.
#[derive(Debug, Clone, Copy, Default)]
pub struct FractionSimplification;

impl TaskFamily for FractionSimplification {
    fn name(&self) -> &'static str {
        "fraction_simplification"
    }

    fn generate(&self, level: Level, rng: &mut dyn RngCore) -> Question {
        let (max_q, max_k, improper) = match level.get() {
            1 => (6u64, 4u64, false),
            2 => (12, 9, true),
            _ => (20, 15, true),
        };
        let q = rng.random_range(2..=max_q);
        let top = if improper { 2 * q } else { q - 1 };
        let mut p = rng.random_range(1..=top);
        while gcd(p, q) != 1 {
            p = rng.random_range(1..=top);
        }
        let k = rng.random_range(2..=max_k);
        question(Family::FractionSimplification, level, format!("{}/{}=", p * k, q * k), format!("{p}/{q}"))
    }

    fn solve(&self, prompt: &str) -> Option<String> {
        let (p, q) = parse_fraction(prompt.strip_suffix('=')?)?;
        let g = gcd(p.unsigned_abs(), q.unsigned_abs()) as i64;
        (p > 0).then(|| format!("{}/{}", p / g, q / g))
    }

    fn verify(&self, question: &Question, answer: &str) -> Verdict {
        judge(parse_fraction(answer), parse_fraction(&question.answer))
    }
}

/// Decimal places a decimal answer may have.
const MAX_PLACES: usize = 6;

/// Parses `-?(0|[1-9][0-9]*)(\.[0-9]+)?` as millionths.
fn parse_decimal(s: &str) -> Option<i64> {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    let negative = int.starts_with('-');
    let whole = if int == "-0" { 0 } else { parse_int(int)?.abs() };
    let mut value = whole.checked_mul(1_000_000)?;
    if let Some(f) = frac {
        if f.is_empty() || f.len() > MAX_PLACES || !f.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let scaled: i64 = format!("{f:0<MAX_PLACES$}").parse().ok()?;
        value = value.checked_add(scaled)?;
    } else if int == "-0" {
        return None;
    }
    Some(if negative { -value } else { value })
}

/// `v / 10^places` written with no trailing zeros (and no point for whole numbers).
fn format_decimal(v: i64, places: u32) -> String {
    let scale = 10i64.pow(places);
    let (sign, a) = if v < 0 { ("-", -v) } else { ("", v) };
    let frac = format!("{:0width$}", a % scale, width = places as usize);
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() { format!("{sign}{}", a / scale) } else { format!("{sign}{}.{frac}", a / scale) }
}

/// Exact decimal arithmetic: `1.5+2.3` (level 1), `12.25-3.5` (level 2: two places, either sign),
/// `1.5*2.2` (level 3). Any correct value is accepted (`3.750` for `3.75`); the grammar is strict
/// (no `.5`, `3.`, `+3` or leading zeros).
#[derive(Debug, Clone, Copy, Default)]
pub struct DecimalArithmetic;

impl TaskFamily for DecimalArithmetic {
    fn name(&self) -> &'static str {
        "decimal_arithmetic"
    }

    fn generate(&self, level: Level, rng: &mut dyn RngCore) -> Question {
        let (prompt, value, places) = match level.get() {
            1 => {
                let (a, b) = (rng.random_range(1..100i64), rng.random_range(1..100i64));
                (format!("{}+{}=", format_decimal(a, 1), format_decimal(b, 1)), a + b, 1)
            }
            2 => {
                let (a, b) = (rng.random_range(1..10_000i64), rng.random_range(1..10_000i64));
                let (sa, sb) = (format_decimal(a, 2), format_decimal(b, 2));
                if rng.random_bool(0.5) { (format!("{sa}+{sb}="), a + b, 2) } else { (format!("{sa}-{sb}="), a - b, 2) }
            }
            _ => {
                let (a, b) = (rng.random_range(1..100i64), rng.random_range(1..100i64));
                (format!("{}*{}=", format_decimal(a, 1), format_decimal(b, 1)), a * b, 2)
            }
        };
        question(Family::DecimalArithmetic, level, prompt, format_decimal(value, places))
    }

    fn solve(&self, prompt: &str) -> Option<String> {
        let body = prompt.strip_suffix('=')?;
        let at = body.char_indices().skip(1).find(|(_, c)| matches!(c, '+' | '-' | '*'))?.0;
        let (a, b) = (parse_decimal(&body[..at])?, parse_decimal(&body[at + 1..])?);
        let value = match &body[at..at + 1] {
            "+" => a.checked_add(b)?,
            "-" => a.checked_sub(b)?,
            _ => {
                let product = i128::from(a) * i128::from(b);
                // Millionths times millionths: exact only if it has at most six places.
                if product % 1_000_000 != 0 {
                    return None;
                }
                i64::try_from(product / 1_000_000).ok()?
            }
        };
        Some(format_decimal(value, MAX_PLACES as u32))
    }

    fn verify(&self, question: &Question, answer: &str) -> Verdict {
        judge(parse_decimal(answer), parse_decimal(&question.answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_grammar_is_strict() {
        assert_eq!(parse_int("0"), Some(0));
        assert_eq!(parse_int("-15"), Some(-15));
        for bad in ["", "-", "-0", "01", "+1", "1 ", " 1", "1.0", "x", "1234567890123456"] {
            assert_eq!(parse_int(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn decimals_parse_to_exact_values() {
        assert_eq!(parse_decimal("3.75"), Some(3_750_000));
        assert_eq!(parse_decimal("3.750"), Some(3_750_000));
        assert_eq!(parse_decimal("-0.5"), Some(-500_000));
        assert_eq!(parse_decimal("4"), Some(4_000_000));
        for bad in [".5", "3.", "03.5", "+3", "-0", "1.2345678", "1..2", "1.-2", ""] {
            assert_eq!(parse_decimal(bad), None, "{bad:?}");
        }
        assert_eq!(format_decimal(375, 2), "3.75");
        assert_eq!(format_decimal(400, 2), "4");
        assert_eq!(format_decimal(-5, 1), "-0.5");
        assert_eq!(format_decimal(-1250, 2), "-12.5");
    }

    #[test]
    fn bases_round_trip() {
        for n in [0u64, 1, 13, 255, 1023] {
            for b in [2, 8, 10, 16] {
                assert_eq!(from_base(&to_base(n, b), b), Some(n));
            }
        }
        assert_eq!(from_base("012", 10), None);
        assert_eq!(from_base("12", 2), None);
        assert_eq!(from_base("FF", 16), None, "upper case is not the canonical form");
    }
}
