//! What a run leaves behind: config.toml, metrics.csv, summary.json, run.h5 and report.md, each written
//! atomically (a temporary file, then a rename).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use models::data::Corpus;
use pipeline::RunReport;
use serde::Serialize;

use crate::config::{ArmConfig, RunConfig};

/// Writes `bytes` to `path` atomically.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    transport::fsutil::write_atomic(path, bytes, false).with_context(|| format!("cannot write {}", path.display()))
}

/// The headline figures of one arm.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ArmResult {
    pub(crate) label: String,
    pub(crate) stages: usize,
    pub(crate) replicas: usize,
    pub(crate) first_val_loss: Option<f64>,
    pub(crate) final_val_loss: Option<f64>,
    pub(crate) final_train_loss: Option<f64>,
    pub(crate) virtual_time_s: f64,
    pub(crate) wall_s: f64,
    pub(crate) bytes_sent: u64,
    #[serde(skip)]
    pub(crate) train: Vec<(u64, f64)>,
    #[serde(skip)]
    pub(crate) val: Vec<(u64, f64)>,
    /// Bytes sent by all workers together by the end of each step.
    #[serde(skip)]
    pub(crate) bytes: Vec<(u64, f64)>,
    /// Events (failures, recoveries…) as `time_s`, `kind`, `detail`.
    #[serde(skip)]
    pub(crate) events: Vec<(f64, String, String)>,
}

impl ArmResult {
    pub(crate) fn new(arm: ArmConfig, report: &RunReport, wall: Duration) -> Self {
        let train = report.metrics.mean_by_step("train_loss");
        let val = report.metrics.mean_by_step("val_loss");
        let bytes = report
            .metrics
            .mean_by_step("bytes_sent")
            .into_iter()
            .map(|(step, mean)| {
                let workers = report.metrics.series("bytes_sent").iter().filter(|s| s.step == step).count();
                (step, mean * workers as f64)
            })
            .collect();
        let events = report
            .metrics
            .events
            .iter()
            .map(|e| (e.time.as_secs_f64(), format!("{:?}", e.kind), e.detail.clone()))
            .collect();
        Self {
            label: arm.label,
            stages: arm.stages,
            replicas: arm.replicas,
            first_val_loss: val.first().map(|v| v.1),
            final_val_loss: val.last().map(|v| v.1),
            final_train_loss: train.last().map(|v| v.1),
            virtual_time_s: report.virtual_time.as_secs_f64(),
            wall_s: wall.as_secs_f64(),
            bytes_sent: report.bytes_sent,
            train,
            val,
            bytes,
            events,
        }
    }
}

#[derive(Serialize)]
struct Claim {
    claim: String,
    ours: String,
    reproduced: bool,
}

#[derive(Serialize)]
struct Summary<'a> {
    name: &'a str,
    corpus: &'a str,
    entropy_floor: Option<f64>,
    steps: u64,
    wall_s: f64,
    arms: &'a [ArmResult],
    claims: Vec<Claim>,
}

fn claims(results: &[ArmResult]) -> Vec<Claim> {
    let find = |stages: usize, replicas: usize| results.iter().find(|r| r.stages == stages && r.replicas == replicas);
    let mut out = Vec::new();
    if let (Some(one), Some(four)) = (find(1, 1), find(1, 4))
        && let (Some(a), Some(b)) = (one.final_val_loss, four.final_val_loss)
    {
        out.push(Claim {
            claim: "data parallelism over 4 replicas beats 1 replica at equal steps (4x the data per step)".into(),
            ours: format!("val loss {b:.3} (R=4) vs {a:.3} (R=1)"),
            reproduced: b < a,
        });
    }
    out
}

/// Writes every output file of a run into `out`.
pub(crate) fn write_run(
    out: &Path,
    cfg: &RunConfig,
    corpus: &Corpus,
    results: &[ArmResult],
    wall: Duration,
) -> Result<()> {
    write_atomic(&out.join("config.toml"), toml::to_string(cfg).context("cannot serialise the config")?.as_bytes())?;

    let mut csv = String::from("arm,step,train_loss,val_loss\n");
    for r in results {
        let steps: std::collections::BTreeSet<u64> = r.train.iter().chain(&r.val).map(|v| v.0).collect();
        for step in steps {
            let t = r.train.iter().find(|v| v.0 == step).map_or(String::new(), |v| format!("{:.6}", v.1));
            let v = r.val.iter().find(|v| v.0 == step).map_or(String::new(), |v| format!("{:.6}", v.1));
            let _ = writeln!(csv, "{},{step},{t},{v}", r.label.replace(',', ";"));
        }
    }
    write_atomic(&out.join("metrics.csv"), csv.as_bytes())?;

    let summary = Summary {
        name: &cfg.name,
        corpus: &corpus.name,
        entropy_floor: corpus.entropy_floor,
        steps: cfg.steps,
        wall_s: wall.as_secs_f64(),
        arms: results,
        claims: claims(results),
    };
    write_atomic(&out.join("summary.json"), serde_json::to_string_pretty(&summary)?.as_bytes())?;
    write_hdf5(out, cfg, corpus, results)?;
    crate::plots::write_plots(out, results, corpus.entropy_floor)?;
    write_atomic(&out.join("report.md"), markdown(cfg, corpus, results, &summary.claims, wall).as_bytes())
}

fn markdown(cfg: &RunConfig, corpus: &Corpus, results: &[ArmResult], claims: &[Claim], wall: Duration) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# swarmlab run `{}`\n", cfg.name);
    let _ = writeln!(md, "Corpus: {}  ", corpus.name);
    match corpus.entropy_floor {
        Some(h) => {
            let _ = writeln!(md, "Loss floor (the source's exact entropy rate): **{h:.3} nats/token**  ");
        }
        None => {
            let _ = writeln!(md, "Loss floor: unknown for a text corpus  ");
        }
    }
    let _ = writeln!(
        md,
        "Model: `{}` ({} parameters), {} steps of {} micro-batches x {} sequences x {} tokens per replica, device `{}`, links {} ms / {} Mbit/s.\n",
        cfg.model_preset,
        cfg.spec(0).map(|s| s.model.param_count()).unwrap_or(0),
        cfg.steps,
        cfg.micro_batches,
        cfg.micro_batch,
        cfg.seq,
        cfg.device,
        cfg.network.latency_ms,
        cfg.network.mbit_per_s
    );
    let _ = writeln!(
        md,
        "| arm | stages x replicas | val loss: first → last | gap to floor | virtual time | sent | wall |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|");
    for r in results {
        let gap = match (r.final_val_loss, corpus.entropy_floor) {
            (Some(v), Some(h)) => format!("{:.3}", v - h),
            _ => "–".into(),
        };
        let _ = writeln!(
            md,
            "| {} | {} x {} | {:.3} → {:.3} | {gap} | {:.3} s | {:.1} MiB | {:.1} s |",
            r.label,
            r.stages,
            r.replicas,
            r.first_val_loss.unwrap_or(f64::NAN),
            r.final_val_loss.unwrap_or(f64::NAN),
            r.virtual_time_s,
            r.bytes_sent as f64 / (1 << 20) as f64,
            r.wall_s
        );
    }
    if !claims.is_empty() {
        let _ = writeln!(md, "\n## Claims\n\n| claim | ours | reproduced |\n|---|---|---|");
        for c in claims {
            let _ = writeln!(md, "| {} | {} | {} |", c.claim, c.ours, if c.reproduced { "yes" } else { "no" });
        }
    }
    let _ = writeln!(md, "\n## Validation loss by step\n");
    let _ = writeln!(
        md,
        "![validation loss by step](val_loss_by_step.svg) ![validation loss by virtual time](val_loss_by_time.svg) ![bytes sent](bytes_sent.svg)\n"
    );
    let _ = write!(md, "| step |");
    for r in results {
        let _ = write!(md, " {} |", r.label);
    }
    let _ = write!(md, "\n|---|");
    for _ in results {
        let _ = write!(md, "---|");
    }
    let _ = writeln!(md);
    let steps: std::collections::BTreeSet<u64> = results.iter().flat_map(|r| r.val.iter().map(|v| v.0)).collect();
    for step in steps {
        let _ = write!(md, "| {step} |");
        for r in results {
            let v = r.val.iter().find(|v| v.0 == step).map_or("–".to_string(), |v| format!("{:.3}", v.1));
            let _ = write!(md, " {v} |");
        }
        let _ = writeln!(md);
    }
    let _ = writeln!(
        md,
        "\nRaw data: `run.h5` (config, loss and bytes series, events), `metrics.csv` (per step), `summary.json` (headline figures). Plots: the `.svg` files. Total wall time {:.1} s.",
        wall.as_secs_f64()
    );
    md
}

/// Writes `run.h5`: the config and corpus as attributes, and per arm its label, grid and the train and
/// validation loss series (steps and values). Written to a temporary file and renamed, so an
/// interrupted run never leaves a half-written log.
pub(crate) fn write_hdf5(out: &Path, cfg: &RunConfig, corpus: &Corpus, results: &[ArmResult]) -> Result<()> {
    let path = out.join("run.h5");
    transport::fsutil::replace_with(&path, |tmp| -> Result<()> {
        let file = hdf5::File::create(tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        let text = |s: &str| -> Result<hdf5::types::VarLenUnicode> {
            s.parse().map_err(|e| anyhow::anyhow!("not storable as HDF5 text: {e:?}"))
        };
        file.new_attr::<hdf5::types::VarLenUnicode>().create("name")?.write_scalar(&text(&cfg.name)?)?;
        file.new_attr::<hdf5::types::VarLenUnicode>().create("corpus")?.write_scalar(&text(&corpus.name)?)?;
        let config = toml::to_string(cfg).context("cannot serialise the config")?;
        file.new_attr::<hdf5::types::VarLenUnicode>().create("config_toml")?.write_scalar(&text(&config)?)?;
        file.new_attr::<f64>().create("entropy_floor")?.write_scalar(&corpus.entropy_floor.unwrap_or(f64::NAN))?;
        let arms = file.create_group("arms")?;
        for (i, r) in results.iter().enumerate() {
            let g = arms.create_group(&i.to_string())?;
            g.new_attr::<hdf5::types::VarLenUnicode>().create("label")?.write_scalar(&text(&r.label)?)?;
            g.new_attr::<u64>().create("stages")?.write_scalar(&(r.stages as u64))?;
            g.new_attr::<u64>().create("replicas")?.write_scalar(&(r.replicas as u64))?;
            g.new_attr::<f64>().create("virtual_time_s")?.write_scalar(&r.virtual_time_s)?;
            g.new_attr::<u64>().create("bytes_sent")?.write_scalar(&r.bytes_sent)?;
            if !r.events.is_empty() {
                let lines: Vec<hdf5::types::VarLenUnicode> = r
                    .events
                    .iter()
                    .map(|(t, kind, detail)| text(&format!("{t:.6}\t{kind}\t{detail}")))
                    .collect::<Result<_>>()?;
                g.new_dataset::<hdf5::types::VarLenUnicode>().shape(lines.len()).create("events")?.write_raw(&lines)?;
            }
            for (name, series) in [("train", &r.train), ("val", &r.val), ("bytes", &r.bytes)] {
                if series.is_empty() {
                    continue;
                }
                let steps: Vec<u64> = series.iter().map(|v| v.0).collect();
                let values: Vec<f64> = series.iter().map(|v| v.1).collect();
                g.new_dataset::<u64>().shape(steps.len()).create(format!("{name}_step").as_str())?.write_raw(&steps)?;
                g.new_dataset::<f64>()
                    .shape(values.len())
                    .create(format!("{name}_loss").as_str())?
                    .write_raw(&values)?;
            }
        }
        file.flush()?;
        Ok(())
    })
    .with_context(|| format!("cannot write {}", path.display()))
}

/// Reads the arms back from a run's `run.h5`.
fn read_hdf5(path: &Path) -> Result<(RunConfig, Corpus, Vec<ArmResult>)> {
    let file = hdf5::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let text = |name: &str| -> Result<String> {
        let v: hdf5::types::VarLenUnicode = file
            .attr(name)
            .and_then(|a| a.read_scalar())
            .with_context(|| format!("{}: no attribute {name:?}", path.display()))?;
        Ok(v.as_str().to_owned())
    };
    let cfg =
        RunConfig::from_toml(&text("config_toml")?).with_context(|| format!("{}: config_toml", path.display()))?;
    let floor: f64 = file.attr("entropy_floor")?.read_scalar()?;
    let corpus =
        Corpus { name: text("corpus")?, train: vec![], val: vec![], entropy_floor: floor.is_finite().then_some(floor) };
    let arms = file.group("arms").with_context(|| format!("{}: no arms", path.display()))?;
    let mut results = Vec::new();
    for i in 0.. {
        let Ok(g) = arms.group(&i.to_string()) else { break };
        let label: hdf5::types::VarLenUnicode = g.attr("label")?.read_scalar()?;
        let series = |name: &str| -> Result<Vec<(u64, f64)>> {
            let (Ok(steps), Ok(values)) = (g.dataset(&format!("{name}_step")), g.dataset(&format!("{name}_loss")))
            else {
                return Ok(vec![]);
            };
            let (steps, values): (Vec<u64>, Vec<f64>) = (steps.read_raw()?, values.read_raw()?);
            Ok(steps.into_iter().zip(values).collect())
        };
        let (train, val) = (series("train")?, series("val")?);
        let bytes = match (g.dataset("bytes_step"), g.dataset("bytes_sent")) {
            (Ok(st), Ok(v)) => {
                let (st, v): (Vec<u64>, Vec<f64>) = (st.read_raw()?, v.read_raw()?);
                st.into_iter().zip(v).collect()
            }
            _ => vec![],
        };
        let stages: u64 = g.attr("stages")?.read_scalar()?;
        let replicas: u64 = g.attr("replicas")?.read_scalar()?;
        results.push(ArmResult {
            label: label.as_str().to_owned(),
            stages: stages as usize,
            replicas: replicas as usize,
            first_val_loss: val.first().map(|v| v.1),
            final_val_loss: val.last().map(|v| v.1),
            final_train_loss: train.last().map(|v| v.1),
            virtual_time_s: g.attr("virtual_time_s")?.read_scalar()?,
            wall_s: f64::NAN,
            bytes_sent: g.attr("bytes_sent")?.read_scalar()?,
            train,
            val,
            bytes,
            events: vec![],
        });
    }
    Ok((cfg, corpus, results))
}

/// Rewrites `report.md`, `summary.json` and the plots of a run folder from its `run.h5`.
pub(crate) fn rewrite(run_dir: &Path) -> Result<()> {
    let (cfg, corpus, results) = read_hdf5(&run_dir.join("run.h5"))?;
    let claims = claims(&results);
    let summary = Summary {
        name: &cfg.name,
        corpus: &corpus.name,
        entropy_floor: corpus.entropy_floor,
        steps: cfg.steps,
        wall_s: f64::NAN,
        arms: &results,
        claims,
    };
    write_atomic(&run_dir.join("summary.json"), serde_json::to_string_pretty(&summary)?.as_bytes())?;
    crate::plots::write_plots(run_dir, &results, corpus.entropy_floor)?;
    write_atomic(
        &run_dir.join("report.md"),
        markdown(&cfg, &corpus, &results, &summary.claims, Duration::ZERO).as_bytes(),
    )
}
