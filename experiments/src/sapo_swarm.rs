//! `swarmlab sapo` (one SAPO swarm on the simulated network) and `swarmlab node --protocol sapo` (one
//! agent of a swarm over QUIC): their configuration, warm starts, training and output. The study that
//! compares swarms, `reproduce sapo`, is [`crate::studies::sapo`].

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use sapo::{SapoConfig, SapoRun, WarmStart};

use crate::files::{out_dir, write_atomic};
use crate::studies::sapo::last_tenth;

/// Reads and checks a SAPO configuration; the error names the file and the bad field.
pub(crate) fn load_config(path: &Path) -> Result<SapoConfig> {
    let cfg = read_config(path)?;
    cfg.validate().with_context(|| format!("in {}", path.display()))?;
    Ok(cfg)
}

/// Reads a SAPO configuration without checking it (for command-line overrides before the check).
pub(crate) fn read_config(path: &Path) -> Result<SapoConfig> {
    let text = crate::files::read_text(path, crate::files::MAX_CONFIG_BYTES)?;
    toml::from_str(&text).with_context(|| format!("{} is not a SAPO configuration", path.display()))
}

/// Parses and checks the text of a SAPO configuration; `source` names it in errors.
pub(crate) fn parse_config(text: &str, source: &str) -> Result<SapoConfig> {
    let cfg: SapoConfig = toml::from_str(text).with_context(|| format!("{source} is not a SAPO configuration"))?;
    cfg.validate().with_context(|| format!("in {source}"))?;
    Ok(cfg)
}

/// One line on the reasoning-gym export `cfg` deals from, if it does: its datasets and tasks, and what
/// of it cannot be scored.
pub(crate) fn describe_export(cfg: &SapoConfig) -> Result<Option<String>> {
    let source = genrl::env::TaskSource::new(&cfg.tasks)?;
    let (Some(file), genrl::env::Origin::Gym(set)) = (&cfg.tasks.file, source.origin()) else { return Ok(None) };
    let mut line = format!(
        "tasks: {file}: {} datasets ({}), {} tasks, {} a round",
        set.datasets().len(),
        set.datasets().join(", "),
        set.len(),
        source.per_round()
    );
    if !set.unscorable().is_empty() {
        line += &format!("; left out, without oracle answers: {}", set.unscorable().join(", "));
    }
    if set.left_out() > 0 {
        line += &format!("; {} tasks left out (no oracle answer, or a repeated question)", set.left_out());
    }
    Ok(Some(line))
}

/// Warm starts for every size `cfg` uses.
pub(crate) fn warm_starts(cfg: &SapoConfig) -> Result<Vec<WarmStart>> {
    let mut warm = Vec::new();
    for size in cfg.sizes_in_use() {
        let t = Instant::now();
        let w = sapo::warm_start(cfg, &size)?;
        let accuracy = w.eval.get("all").copied().unwrap_or(0.0);
        let secs = t.elapsed().as_secs_f64();
        match &cfg.model {
            Some(model) => eprintln!("  {model}: held-out accuracy {accuracy:.3} ({secs:.0} s)"),
            None => eprintln!(
                "  warm start {size}: {} steps, loss {:.3}, held-out accuracy {accuracy:.3} ({secs:.0} s)",
                cfg.warm_start.steps, w.loss
            ),
        }
        warm.push(w);
    }
    Ok(warm)
}

/// Runs one arm with progress on stderr.
pub(crate) fn run_arm(name: &str, cfg: &SapoConfig, warm: &[WarmStart]) -> Result<(SapoRun, f64)> {
    let t = Instant::now();
    let rounds = cfg.rounds;
    let label = name.to_string();
    let run = sapo::run(cfg, warm, move |r| {
        if r % 25 == 0 || r == rounds {
            eprint!("\r  {label}: round {r}/{rounds}   ");
        }
    })?;
    let seconds = t.elapsed().as_secs_f64();
    eprintln!(
        "\r  {name}: cumulative reward {:.1}, held-out accuracy {:.3} ({seconds:.0} s)",
        run.cumulative_reward(),
        run.eval().get("all").copied().unwrap_or(0.0)
    );
    Ok((run, seconds))
}

/// `swarmlab sapo`: one swarm.
pub(crate) fn train(cfg: SapoConfig, out: Option<PathBuf>) -> Result<()> {
    cfg.validate()?;
    let out = out_dir(out, "sapo")?;
    write_atomic(&out.join("config.toml"), toml::to_string(&cfg)?.as_bytes())?;
    eprintln!(
        "swarmlab sapo: {} agents ({}) + {} liars, mix {}, {} rounds",
        cfg.agents,
        cfg.model.clone().unwrap_or_else(|| cfg.sizes.join(", ")),
        cfg.liars,
        cfg.mix,
        cfg.rounds
    );
    if let Some(line) = describe_export(&cfg)? {
        eprintln!("  {line}");
    }
    let warm = warm_starts(&cfg)?;
    let (run, _) = run_arm(&cfg.mix.to_string(), &cfg, &warm)?;
    let n = cfg.rounds as usize;
    let tail = last_tenth(n);
    println!(
        "agent  size   reward(first round → last tenth)  held-out  shared used/round  dropped: forged unreadable no-signal"
    );
    for a in run.honest() {
        let r = a.rewards();
        let last = &r[tail.start.min(r.len())..];
        let used = a.rounds.iter().map(|x| x.external as f64).sum::<f64>() / n.max(1) as f64;
        println!(
            "{:>5}  {:<5}  {:.3} → {:.3}                     {:.3}     {:>5.2}              {} {} {}",
            a.index,
            a.size,
            r.first().copied().unwrap_or(0.0),
            last.iter().sum::<f64>() / last.len().max(1) as f64,
            a.eval.get("all").copied().unwrap_or(0.0),
            used,
            a.dropped.forged,
            a.dropped.unreadable,
            a.dropped.no_signal
        );
    }
    println!("cumulative reward {:.1} (of at most {})", run.cumulative_reward(), cfg.agents * n);
    write_atomic(&out.join("sapo-run.json"), serde_json::to_string_pretty(&run)?.as_bytes())?;
    println!("wrote {}", out.join("sapo-run.json").display());
    Ok(())
}

/// `swarmlab node`: one agent of the swarm over QUIC, in real time; writes agent-<index>.json.
pub(crate) fn node(
    cfg: SapoConfig,
    key: &Path,
    peers: &Path,
    out: Option<PathBuf>,
    net: crate::node::NodeNet,
) -> Result<()> {
    cfg.validate()?;
    let node = crate::node::AgentNode {
        protocol: "sapo",
        agents: cfg.agents,
        liars: cfg.liars,
        key,
        peers,
        out,
        net,
        profile: genrl::DeviceProfile::preset(&cfg.profile)?,
    };
    let rounds = cfg.rounds;
    crate::node::agent_node(
        node,
        || warm_starts(&cfg),
        |ctx, warm, index| {
            let cfg = &cfg;
            let progress = move |round| eprintln!("round {round}/{rounds}");
            async move { Ok(sapo::swarm::play_agent(cfg, &warm, index, ctx, progress).await?) }
        },
        |run: &sapo::AgentRun| {
            let r = run.rewards();
            format!(
                "reward {:.3} → {:.3}, held-out accuracy {:.3}, dropped {:?}",
                r.first().copied().unwrap_or(0.0),
                r.last().copied().unwrap_or(0.0),
                run.eval.get("all").copied().unwrap_or(0.0),
                run.dropped
            )
        },
    )
}
