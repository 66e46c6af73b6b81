//! What a launch leaves behind besides the nodes' own files: report.md (each node's outcome and result,
//! every node's events, and with emulated links the time per step beside the simulated network's).

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitStatus;

use anyhow::{Context, Result};
use genrl::EventKind;

use super::{Launch, Outcome, Running};
use crate::config::RunConfig;
use crate::node::NodeLog;

/// A QUIC run's time per step beside the simulated network's prediction for the same configuration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Fidelity {
    pub(super) quic_s: f64,
    pub(super) sim_s: f64,
}

/// Mean over workers of the time per training step: from a worker's first end-of-step record to its
/// last (so start-up and connection set-up do not count), over the steps between.
pub(super) fn time_per_step<'a>(samples: impl Iterator<Item = &'a genrl::Sample>) -> Option<f64> {
    let mut by_agent: std::collections::BTreeMap<Option<u32>, (u64, f64, u64, f64)> = Default::default();
    for s in samples {
        let t = s.time.as_secs_f64();
        let e = by_agent.entry(s.agent).or_insert((s.step, t, s.step, t));
        if s.step < e.0 {
            (e.0, e.1) = (s.step, t);
        }
        if s.step > e.2 {
            (e.2, e.3) = (s.step, t);
        }
    }
    let per: Vec<f64> = by_agent.values().filter(|e| e.2 > e.0).map(|e| (e.3 - e.1) / (e.2 - e.0) as f64).collect();
    (!per.is_empty()).then(|| per.iter().sum::<f64>() / per.len() as f64)
}

/// Runs the first arm of `config` on the simulated network and compares its time per step with the
/// nodes'.
pub(super) fn link_fidelity(config: &Path, logs: &[NodeLog]) -> Result<Fidelity> {
    let cfg = RunConfig::load(config)?;
    let spec = cfg.spec(0)?;
    let corpus = std::sync::Arc::new(crate::run::corpus(&cfg)?);
    eprintln!("[launch] running the same arm on the simulated network for comparison");
    let report = genrl::run_simulation(pipeline::run_simulated(&spec, corpus))??;
    let sim_s =
        time_per_step(report.metrics.series("bytes_sent").iter()).context("the simulated run recorded no steps")?;
    let quic_s =
        time_per_step(logs.iter().flat_map(|l| l.log.series("bytes_sent"))).context("the nodes recorded no steps")?;
    Ok(Fidelity { quic_s, sim_s })
}

pub(super) fn outcome(status: ExitStatus) -> Outcome {
    if status.success() { Outcome::Finished } else { Outcome::Failed(format!("exited with {status}")) }
}

/// What a node's progress counts: SAPO rounds, training steps, or questions a trainer answered.
pub(super) fn unit(protocol: &str) -> &'static str {
    match protocol {
        "pipeline" => "step",
        "verify" => "question",
        _ => "round",
    }
}

pub(super) fn describe(outcome: Option<&Outcome>, unit: &str) -> String {
    match outcome {
        Some(Outcome::Finished) => "finished".into(),
        Some(Outcome::Killed { round }) => format!("killed at {unit} {round}"),
        Some(Outcome::Stopped { round }) => format!("stopped at {unit} {round} (the launch was interrupted)"),
        Some(Outcome::Failed(why)) => format!("failed: {why}"),
        Some(Outcome::NeverStarted) => "never started".into(),
        None => "running".into(),
    }
}

/// What a node's result file says, in a few words.
pub(super) fn result_of(results: &Path, protocol: &str, place: usize) -> String {
    if protocol == "verify" {
        return crate::verify_node::result_of(results, place);
    }
    if protocol == "codezero" {
        return std::fs::read_to_string(results.join(format!("agent-{place}.json")))
            .ok()
            .and_then(|t| serde_json::from_str::<codezero::AgentRun>(&t).ok())
            .map_or("no result".into(), |run| crate::codezero_swarm::summary_line(&run));
    }
    let file = if protocol == "pipeline" { format!("worker-{place}.json") } else { format!("agent-{place}.json") };
    let Some(v) = std::fs::read_to_string(results.join(&file))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
    else {
        return "no result".into();
    };
    if protocol == "pipeline" {
        let loss = v["final_train_loss"].as_f64().map_or("-".into(), |l| format!("{l:.4}"));
        let hash = v["weights_blake3"].as_str().unwrap_or("-");
        format!("train loss {loss}, weights {}", hash.chars().take(16).collect::<String>())
    } else {
        let rewards: Vec<f64> =
            v["rounds"].as_array().into_iter().flatten().filter_map(|r| r["reward"].as_f64()).collect();
        let held_out = v["eval"]["all"].as_f64().unwrap_or(f64::NAN);
        format!(
            "reward {:.3} → {:.3} over {} rounds, held-out accuracy {held_out:.3}",
            rewards.first().copied().unwrap_or(f64::NAN),
            rewards.last().copied().unwrap_or(f64::NAN),
            rewards.len()
        )
    }
}

pub(super) fn report(
    launch: &Launch,
    out: &Path,
    nodes: &[Running],
    logs: &[NodeLog],
    journal: &[String],
    wall_s: f64,
    fidelity: Option<&Fidelity>,
) -> String {
    let results = out.join("nodes");
    let mut md = format!(
        "# swarmlab launch: {} {} nodes on this machine\n\nEach node is its own `swarmlab node` process talking QUIC over {} (idle timeout {:.1} s). Total wall time {wall_s:.1} s.\n\n| node | peer | outcome | wall s | result |\n|---|---|---|---|---|\n",
        launch.nodes,
        launch.protocol,
        if launch.netns { "veth pairs between network namespaces, one per node" } else { "loopback" },
        launch.net.idle_timeout.as_secs_f64()
    );
    for n in nodes {
        let log = logs.iter().find(|l| l.place == n.place);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            n.place,
            log.map_or("-".into(), |l| l.peer.chars().take(12).collect::<String>()),
            if let Some((at, back)) = n.left_at {
                let unit = unit(&launch.protocol);
                if back {
                    format!("killed at {unit} {at}, left the run; came back and {}", describe(n.outcome.as_ref(), unit))
                } else {
                    format!("killed at {unit} {at}; left the run for good")
                }
            } else if n.replaced_at.is_empty() {
                describe(n.outcome.as_ref(), unit(&launch.protocol))
            } else {
                let at: Vec<String> = n.replaced_at.iter().map(u64::to_string).collect();
                let unit = unit(&launch.protocol);
                let units = if at.len() > 1 { "s" } else { "" };
                format!(
                    "killed at {unit}{units} {}; its successor {}",
                    at.join(", "),
                    describe(n.outcome.as_ref(), unit)
                )
            },
            log.map_or("-".into(), |l| format!("{:.1}", l.wall_s)),
            result_of(&results, &launch.protocol, n.place)
        );
    }
    if launch.protocol == "pipeline" {
        let hashes: Vec<String> = (0..launch.nodes)
            .filter_map(|i| std::fs::read_to_string(results.join(format!("worker-{i}.json"))).ok())
            .filter_map(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .filter_map(|v| v["weights_blake3"].as_str().map(str::to_owned))
            .collect();
        if hashes.len() == launch.nodes && hashes.windows(2).all(|w| w[0] == w[1]) {
            md.push_str("\nEvery node ended with the same weights, bit for bit.\n");
        }
    }
    if launch.p2p {
        md.push_str(&paths_table(launch.nodes, journal));
    }
    if let Some(f) = fidelity {
        let _ = write!(
            md,
            "\n## Real network against the simulated one\n\nEvery node sat behind a link emulator with the configuration's link model; the same arm then ran on the simulated network.\n\n| | time per step |\n|---|---|\n| QUIC nodes, emulated links | {:.1} ms |\n| simulated network (prediction) | {:.1} ms |\n| ratio | {:.2} |\n\nThe nodes' time includes their real computation besides the device profile's modelled one (which they also spend, sleeping) and QUIC's own overheads (handshakes, acknowledgements, congestion control); the simulation has neither.\n",
            f.quic_s * 1e3,
            f.sim_s * 1e3,
            f.quic_s / f.sim_s
        );
    }
    md.push_str("\n## Events\n\n");
    for line in journal {
        let _ = writeln!(md, "- launch: {line}");
    }
    for log in logs {
        for e in &log.log.events {
            if matches!(e.kind, EventKind::Other(_)) {
                continue;
            }
            let _ = writeln!(md, "- node {} at {:.1} s: {:?}: {}", log.place, e.time.as_secs_f64(), e.kind, e.detail);
        }
    }
    md.push_str(
        "\nFiles: `config.toml` (what every node ran), `peers.toml` and `keys/` (the swarm), `logs/node-<i>.log` (each node's output; `node-<i>-successor.log`, `-successor-2.log`, … for a killed node's successors, `node-<i>-leave.log` for the announcement that it left, `node-<i>-back.log` for its return), `nodes/` (each node's result and `node-<i>.h5`), `launch.h5` (every node's series and events, a group `nodes/<i>` each), `launch.log` (what the launcher did).\n",
    );
    md
}

/// With `--p2p`: how each node's messages to each other node travelled, as the nodes reported at their
/// end (`p2p path to node j: …` lines, which the launcher keeps in its journal as `node i: …`).
pub(super) fn paths_table(nodes: usize, journal: &[String]) -> String {
    let mut md = String::from(
        "\n## How the nodes talked\n\nEach node joined through the relay and reported, at its end, how its messages to each other node travelled (row: the sender).\n\n| from \\ to |",
    );
    for j in 0..nodes {
        let _ = write!(md, " {j} |");
    }
    md.push_str("\n|---|");
    md.push_str(&"---|".repeat(nodes));
    md.push('\n');
    for i in 0..nodes {
        let _ = write!(md, "| {i} |");
        for j in 0..nodes {
            let prefix = format!("node {i}: p2p path to node {j}: ");
            let cell = if i == j { "" } else { journal.iter().find_map(|l| l.strip_prefix(&prefix)).unwrap_or("-") };
            let _ = write!(md, " {cell} |");
        }
        md.push('\n');
    }
    md
}
