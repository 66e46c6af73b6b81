//! A paper's claim beside what our runs measured, and its verdict over several seeds.
//!
//! A study states each claim with the one figure it is judged on (a [`Measure`], oriented so that larger
//! is the paper's side). One run gives one value; `swarmlab reproduce --seeds N` gives N, and the
//! verdict follows from their whole range: "yes" only when every seed is on the paper's side, "no" when
//! every seed is on the other side, "inconclusive" otherwise.

use std::fmt::Write as _;

use serde::Serialize;

/// How far a paper's claim held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Verdict {
    /// It held (on every seed).
    Yes,
    /// The effect is there (on every seed) but smaller than claimed.
    Partly,
    /// It did not hold (on any seed).
    No,
    /// The seeds disagree: the range of values spans the claim's threshold.
    Inconclusive,
}

impl Verdict {
    /// The verdict as a report says it.
    pub(crate) fn text(self) -> &'static str {
        match self {
            Self::Yes => "yes",
            Self::Partly => "partly (smaller effect)",
            Self::No => "no",
            Self::Inconclusive => "inconclusive",
        }
    }
}

/// The figure a claim is judged on, oriented so that larger values are the paper's side.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Measure {
    /// What one run measured.
    pub(crate) value: f64,
    /// The claim holds when the value is above this (the direction of the effect).
    pub(crate) holds_above: f64,
    /// The size of the paper's effect: above `holds_above` but below this is "partly".
    pub(crate) paper: Option<f64>,
    /// What the value is, e.g. `% lower perplexity`.
    pub(crate) what: &'static str,
}

impl Measure {
    /// The verdict over values in `[lo, hi]`.
    pub(crate) fn verdict(&self, lo: f64, hi: f64) -> Verdict {
        if lo.is_nan() || hi.is_nan() {
            Verdict::Inconclusive
        } else if lo > self.holds_above {
            match self.paper {
                Some(p) if lo < p => Verdict::Partly,
                _ => Verdict::Yes,
            }
        } else if hi <= self.holds_above {
            Verdict::No
        } else {
            Verdict::Inconclusive
        }
    }
}

/// One of a paper's claims beside what a run measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Claim {
    /// A stable name, to match the claim across seeds.
    pub(crate) id: &'static str,
    /// The claim, in the paper's words or close to them.
    pub(crate) claim: String,
    /// What we measured, in words.
    pub(crate) ours: String,
    /// Whether it held.
    pub(crate) reproduced: Verdict,
    /// The figure it is judged on, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) measure: Option<Measure>,
}

impl Claim {
    /// A claim judged on `measure`.
    pub(crate) fn measured(id: &'static str, claim: impl Into<String>, ours: String, measure: Measure) -> Self {
        let reproduced = measure.verdict(measure.value, measure.value);
        Self { id, claim: claim.into(), ours, reproduced, measure: Some(measure) }
    }

    /// A claim judged without a figure (e.g. a target never reached).
    pub(crate) fn judged(id: &'static str, claim: impl Into<String>, ours: String, reproduced: Verdict) -> Self {
        Self { id, claim: claim.into(), ours, reproduced, measure: None }
    }
}

/// One claim over several seeds.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct SeededClaim {
    pub(crate) id: &'static str,
    pub(crate) claim: String,
    /// Each seed's value (none where that seed could not measure it).
    pub(crate) values: Vec<Option<f64>>,
    /// Each seed's words.
    pub(crate) ours: Vec<String>,
    /// Each seed's own verdict.
    pub(crate) per_seed: Vec<Verdict>,
    /// Mean and range (min–max) of the values, when every seed measured one.
    pub(crate) mean: Option<f64>,
    pub(crate) min: Option<f64>,
    pub(crate) max: Option<f64>,
    pub(crate) what: Option<&'static str>,
    /// Where the claim starts to hold and the paper's effect size (from the measure).
    pub(crate) holds_above: Option<f64>,
    pub(crate) paper: Option<f64>,
    pub(crate) reproduced: Verdict,
}

/// The claims of several seeds' runs (in the order the first run states them), each with its values,
/// range and verdict. A claim some seed did not state counts as unmeasured there.
pub(crate) fn across_seeds(runs: &[Vec<Claim>]) -> Vec<SeededClaim> {
    let mut ids: Vec<&'static str> = Vec::new();
    for c in runs.iter().flatten() {
        if !ids.contains(&c.id) {
            ids.push(c.id);
        }
    }
    ids.into_iter()
        .map(|id| {
            let found: Vec<Option<&Claim>> = runs.iter().map(|r| r.iter().find(|c| c.id == id)).collect();
            let first = found.iter().flatten().next().copied();
            let measure = first.and_then(|c| c.measure);
            let values: Vec<Option<f64>> =
                found.iter().map(|c| c.and_then(|c| c.measure).map(|m| m.value)).collect();
            let all: Option<Vec<f64>> = values.iter().copied().collect();
            let (mean, min, max) = match &all {
                Some(v) if !v.is_empty() => (
                    Some(v.iter().sum::<f64>() / v.len() as f64),
                    Some(v.iter().copied().fold(f64::INFINITY, f64::min)),
                    Some(v.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
                ),
                _ => (None, None, None),
            };
            let per_seed: Vec<Verdict> = found.iter().map(|c| c.map_or(Verdict::Inconclusive, |c| c.reproduced)).collect();
            let reproduced = match (measure, min, max) {
                (Some(m), Some(lo), Some(hi)) => m.verdict(lo, hi),
                _ if per_seed.windows(2).all(|w| w[0] == w[1]) => per_seed.first().copied().unwrap_or(Verdict::Inconclusive),
                _ => Verdict::Inconclusive,
            };
            SeededClaim {
                id,
                claim: first.map(|c| c.claim.clone()).unwrap_or_default(),
                values,
                ours: found.iter().map(|c| c.map_or_else(|| "not measured".to_owned(), |c| c.ours.clone())).collect(),
                per_seed,
                mean,
                min,
                max,
                what: measure.map(|m| m.what),
                holds_above: measure.map(|m| m.holds_above),
                paper: measure.and_then(|m| m.paper),
                reproduced,
            }
        })
        .collect()
}

/// A figure for a table: whole from 100 on, two decimals from 1 on, four significant digits below.
pub(crate) fn figure(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        format!("{v}")
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3e}")
    }
}

/// The claims table of several seeds: each claim's mean and range, and its verdict from the range.
pub(crate) fn seeded_table(claims: &[SeededClaim]) -> String {
    let mut md = String::from("| claim | ours: mean (min–max over seeds) | reproduced |\n|---|---|---|\n");
    for c in claims {
        let ours = match (c.mean, c.min, c.max, c.what) {
            (Some(mean), Some(lo), Some(hi), Some(what)) => {
                format!("{} {what} ({}–{}, {} seeds)", figure(mean), figure(lo), figure(hi), c.values.len())
            }
            _ => c.ours.join("; "),
        };
        let _ = writeln!(md, "| {} | {ours} | {} |", c.claim, c.reproduced.text());
    }
    md
}

/// How each claim moves from one model width to another: the mean at each (over its seeds), and whether
/// the wider model is nearer the paper's side. A measure's larger values are the paper's side, so the gap
/// to the paper shrinks with width when the mean rises (by more than the narrower width's spread, else
/// the words say it is within the spread).
pub(crate) fn trend_table(narrow: (usize, &[SeededClaim]), wide: (usize, &[SeededClaim])) -> String {
    let (nw, nc) = narrow;
    let (ww, wc) = wide;
    let mut md = format!(
        "| claim | width {nw}: mean (min–max) | width {ww}: mean (min–max) | with the wider model |\n|---|---|---|---|\n"
    );
    let cell = |c: &SeededClaim| match (c.mean, c.min, c.max) {
        (Some(m), Some(lo), Some(hi)) => format!("{} ({}–{})", figure(m), figure(lo), figure(hi)),
        _ => "not measured".to_owned(),
    };
    for w in wc {
        let Some(n) = nc.iter().find(|n| n.id == w.id) else { continue };
        let words = match (n.mean, n.min, n.max, w.mean) {
            (Some(a), Some(lo), Some(hi), Some(b)) => {
                let spread = (hi - lo).max(1e-12);
                if (b - a).abs() <= spread {
                    "about the same (within the narrower model's spread)".to_owned()
                } else if b > a {
                    format!("nearer the paper ({} → {}: {})", n.reproduced.text(), w.reproduced.text(), what(w))
                } else {
                    format!("further from the paper ({} → {}: {})", n.reproduced.text(), w.reproduced.text(), what(w))
                }
            }
            _ => "–".to_owned(),
        };
        let _ = writeln!(md, "| {} | {} | {} | {words} |", w.claim, cell(n), cell(w));
    }
    md
}

/// A measure's unit, for the trend's words.
fn what(c: &SeededClaim) -> &'static str {
    c.what.unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(id: &'static str, value: f64) -> Claim {
        let m = Measure { value, holds_above: 0.0, paper: Some(10.0), what: "%" };
        Claim::measured(id, "c", format!("{value}"), m)
    }

    #[test]
    fn a_verdict_follows_from_the_whole_range() {
        let m = Measure { value: 0.0, holds_above: 0.0, paper: Some(10.0), what: "%" };
        assert_eq!(m.verdict(12.0, 20.0), Verdict::Yes);
        assert_eq!(m.verdict(3.0, 20.0), Verdict::Partly, "on the paper's side, but not always by its size");
        assert_eq!(m.verdict(-3.0, 20.0), Verdict::Inconclusive, "the range spans the threshold");
        assert_eq!(m.verdict(-3.0, 0.0), Verdict::No);
        assert_eq!(m.verdict(f64::NAN, 1.0), Verdict::Inconclusive);
        let direction_only = Measure { paper: None, ..m };
        assert_eq!(direction_only.verdict(0.1, 0.2), Verdict::Yes);
    }

    #[test]
    fn seeds_are_matched_by_id_and_summarised() {
        let runs = vec![vec![claim("a", 12.0), claim("b", 1.0)], vec![claim("a", 14.0)], vec![claim("a", -1.0), claim("b", 2.0)]];
        let got = across_seeds(&runs);
        assert_eq!(got.len(), 2);
        let a = &got[0];
        assert_eq!(a.values, vec![Some(12.0), Some(14.0), Some(-1.0)]);
        assert_eq!((a.min, a.max), (Some(-1.0), Some(14.0)));
        assert!((a.mean.unwrap_or_default() - 25.0 / 3.0).abs() < 1e-12);
        assert_eq!(a.reproduced, Verdict::Inconclusive, "one seed of three went the other way");
        assert_eq!(a.per_seed, vec![Verdict::Yes, Verdict::Yes, Verdict::No]);
        let b = &got[1];
        assert_eq!(b.values, vec![Some(1.0), None, Some(2.0)]);
        assert_eq!(b.reproduced, Verdict::Inconclusive, "a seed that could not measure it leaves it open");
        let table = seeded_table(&got);
        assert!(table.contains("8.33 % (-1.00–14.00, 3 seeds) | inconclusive"), "{table}");
        let all_yes = across_seeds(&[vec![claim("a", 12.0)], vec![claim("a", 11.0)]]);
        assert_eq!(all_yes[0].reproduced, Verdict::Yes);
    }

    #[test]
    fn the_width_trend_says_which_way_each_claim_moves() {
        let narrow = across_seeds(&[vec![claim("a", -2.0), claim("b", 5.0), claim("c", 1.0)], vec![claim("a", -1.0), claim("b", 6.0), claim("c", 3.0)]]);
        let wide = across_seeds(&[vec![claim("a", 4.0), claim("b", 1.0), claim("c", 2.0)], vec![claim("a", 5.0), claim("b", 2.0), claim("c", 2.5)]]);
        let table = trend_table((32, &narrow), (64, &wide));
        let row = |id: usize| table.lines().nth(2 + id).unwrap_or_default().to_owned();
        assert!(row(0).contains("nearer the paper (no → partly"), "{table}");
        assert!(row(1).contains("further from the paper"), "{table}");
        assert!(row(2).contains("about the same"), "{table}");
        assert!(table.starts_with("| claim | width 32"), "{table}");
    }
}
