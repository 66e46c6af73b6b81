//! `swarmlab codezero`: one CodeZero swarm on the simulated network — the warm start of both policies,
//! then every agent's game of proposer, solver and evaluator — with a table per agent and role.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use codezero::{CodeZeroConfig, CodeZeroRun, WarmStart};

use crate::files::{out_dir, write_atomic};

/// Reads a CodeZero configuration without checking it (for command-line overrides before the check).
pub(crate) fn read_config(path: &Path) -> Result<CodeZeroConfig> {
    let text = crate::files::read_text(path, crate::files::MAX_CONFIG_BYTES)?;
    toml::from_str(&text).with_context(|| format!("{} is not a CodeZero configuration", path.display()))
}

/// Reads and checks a CodeZero configuration.
pub(crate) fn load_config(path: &Path) -> Result<CodeZeroConfig> {
    let cfg = read_config(path)?;
    cfg.validate().with_context(|| format!("in {}", path.display()))?;
    Ok(cfg)
}

/// Parses and checks the text of a CodeZero configuration; `source` names it in errors.
pub(crate) fn parse_config(text: &str, source: &str) -> Result<CodeZeroConfig> {
    let cfg: CodeZeroConfig =
        toml::from_str(text).with_context(|| format!("{source} is not a CodeZero configuration"))?;
    cfg.validate().with_context(|| format!("in {source}"))?;
    Ok(cfg)
}

/// The warm start, with a line on how it went.
pub(crate) fn warm_start(cfg: &CodeZeroConfig) -> Result<WarmStart> {
    let t = Instant::now();
    let warm = codezero::warm_start(cfg)?;
    eprintln!(
        "  warm start: {} steps per policy, solver held-out pass rate {:.3}, proposer's greedy programs that run {:.2} ({:.0} s)",
        cfg.warm_start.steps,
        warm.held_out,
        warm.proposer_valid,
        t.elapsed().as_secs_f64()
    );
    Ok(warm)
}

/// Runs the swarm of `cfg` from `warm` with a progress line per round of agent 0.
pub(crate) fn run_swarm(label: &str, cfg: &CodeZeroConfig, warm: &WarmStart) -> Result<CodeZeroRun> {
    let rounds = cfg.rounds;
    let label = label.to_string();
    let run = codezero::run(cfg, warm, move |r| {
        if r == rounds || r % 10 == 0 {
            eprintln!("  {label}: round {r}/{rounds}");
        }
    })?;
    Ok(run)
}

/// Mean of the values a round gives, over the rounds that give one.
pub(crate) fn mean_of(xs: &[Option<f64>]) -> Option<f64> {
    let v: Vec<f64> = xs.iter().flatten().copied().collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// `swarmlab codezero`.
pub(crate) fn train(cfg: CodeZeroConfig, out: Option<PathBuf>) -> Result<()> {
    cfg.validate()?;
    let out = out_dir(out, "codezero")?;
    write_atomic(&out.join("config.toml"), toml::to_string(&cfg)?.as_bytes())?;
    eprintln!(
        "swarmlab codezero: {} agents + {} liars, {} rounds, roles {}",
        cfg.agents,
        cfg.liars,
        cfg.rounds,
        crate::studies::codezero::seats(&cfg.roles)
    );
    let warm = warm_start(&cfg)?;
    let run = run_swarm("swarm", &cfg, &warm)?;
    println!(
        "agent  solver reward  proposer reward  proposals run  held-out pass rate  dropped: forged false-pass unreadable no-signal"
    );
    for a in run.honest() {
        let solver = mean_of(&a.rounds.iter().map(|r| r.solver.map(|s| s.reward)).collect::<Vec<_>>());
        let proposer = mean_of(
            &a.rounds.iter().map(|r| r.proposer.filter(|p| p.learned > 0).map(|p| p.reward)).collect::<Vec<_>>(),
        );
        let (valid, proposed) =
            a.rounds.iter().filter_map(|r| r.proposer).fold((0, 0), |(v, n), p| (v + p.valid, n + p.proposed));
        let d = a.dropped;
        let f = |x: Option<f64>| x.map_or("–".to_string(), |x| format!("{x:.3}"));
        println!(
            "{:>5}  {:>13}  {:>15}  {:>6}/{:<6}  {:.3} → {:.3}       {} {} {} {}",
            a.index,
            f(solver),
            f(proposer),
            valid,
            proposed,
            run.warm_held_out,
            a.held_out,
            d.forged_problems,
            d.false_passes,
            d.unreadable,
            d.no_signal
        );
    }
    println!(
        "sandbox: {:.2} s of {:.1} s wall ({:.1}%)",
        run.sandbox_seconds(),
        run.wall_seconds,
        100.0 * run.sandbox_seconds() / run.wall_seconds.max(1e-9)
    );
    write_atomic(&out.join("codezero-run.json"), serde_json::to_string_pretty(&run)?.as_bytes())?;
    println!("written: {}", out.display());
    Ok(())
}

/// `swarmlab node --protocol codezero`: one agent of the swarm over QUIC, in real time; writes
/// agent-<index>.json (its rounds, held-out pass rate and what it dropped) and node-<index>.h5.
pub(crate) fn node(
    cfg: CodeZeroConfig,
    key: &Path,
    peers: &Path,
    out: Option<PathBuf>,
    net: crate::node::NodeNet,
) -> Result<()> {
    cfg.validate()?;
    let node = crate::node::AgentNode {
        protocol: "codezero",
        agents: cfg.agents,
        liars: cfg.liars,
        key,
        peers,
        out,
        net,
        profile: genrl::DeviceProfile::preset(&cfg.profile)?,
    };
    let rounds = cfg.rounds;
    let device = cfg.device.resolve()?;
    crate::node::agent_node(
        node,
        || warm_start(&cfg),
        |ctx, warm, index| {
            let (cfg, device) = (&cfg, &device);
            async move {
                let progress = move |round| eprintln!("round {round}/{rounds}");
                Ok(codezero::swarm::play(cfg, &warm, device, index, ctx, false, &progress).await?)
            }
        },
        summary_line,
    )
}

/// One agent's run in a few words.
pub(crate) fn summary_line(run: &codezero::AgentRun) -> String {
    let solver: Vec<f64> = run.rounds.iter().filter_map(|r| r.solver.map(|s| s.reward)).collect();
    let learned: usize = run.rounds.iter().filter_map(|r| r.proposer).map(|p| p.learned).sum();
    format!(
        "solver reward {:.3} → {:.3} over {} rounds, {learned} proposals rewarded, held-out pass rate {:.3}",
        solver.first().copied().unwrap_or(f64::NAN),
        solver.last().copied().unwrap_or(f64::NAN),
        run.rounds.len(),
        run.held_out
    )
}
