//! Shared by the transport benches: print a ratio of two benchmarks measured in the same run.

use std::path::PathBuf;

/// Where criterion writes its estimates.
fn criterion_dir() -> PathBuf {
    if let Ok(home) = std::env::var("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("criterion")
}

/// Mean time per iteration (ns) of `group/bench` from this run's estimates, if present.
fn mean_ns(group: &str, bench: &str) -> Option<f64> {
    let path = criterion_dir().join(group).join(bench).join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["mean"]["point_estimate"].as_f64()
}

/// Prints `subject` throughput as a fraction of `baseline` (both in `group`, same work per iteration).
pub(crate) fn print_ratio(group: &str, subject: &str, baseline: &str, what: &str) {
    match (mean_ns(group, subject), mean_ns(group, baseline)) {
        (Some(s), Some(b)) => {
            println!("RATIO {group}: {subject} runs at {:.3} x the speed of {baseline} ({what})", b / s)
        }
        _ => println!("RATIO {group}: not available (run without a filter to measure both)"),
    }
}
