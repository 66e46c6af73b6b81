//! `run.h5`: the config and corpus as attributes, every arm's series and events, the scaling points;
//! written to a temporary file and renamed, and read back by `swarmlab report`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use models::data::Corpus;
use noloco::scale::ScalePoint;

use super::{ArmResult, Series};
use crate::config::RunConfig;
use crate::files::{event_line, h5_attr_text, h5_text, h5_write_text, parse_event_line};
use crate::studies::{Parts, RunView};

/// Writes `run.h5`: the config and corpus as attributes; per arm its label, protocol, grid, every series
/// (`<name>_step`, `<name>_value`; the validation loss also by `val_time_s`) and its events; the scaling
/// points. Written to a temporary file and renamed, so an interrupted run never leaves a half-written log.
pub(super) fn write_hdf5(out: &Path, run: &RunView<'_>) -> Result<()> {
    let (cfg, corpus, results, scale) = (run.cfg, run.corpus, run.results, &run.parts.scale);
    let path = out.join("run.h5");
    transport::fsutil::replace_with(&path, |tmp| -> Result<()> {
        let file = hdf5::File::create(tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        let text_attr = h5_write_text;
        text_attr(&file, "name", &cfg.name)?;
        text_attr(&file, "corpus", &corpus.name)?;
        text_attr(&file, "config_toml", &toml::to_string(cfg).context("cannot serialise the config")?)?;
        file.new_attr::<f64>().create("entropy_floor")?.write_scalar(&corpus.entropy_floor.unwrap_or(f64::NAN))?;
        let arms = file.create_group("arms")?;
        for (i, r) in results.iter().enumerate() {
            let g = arms.create_group(&i.to_string())?;
            text_attr(&g, "label", &r.label)?;
            text_attr(&g, "sync", &r.sync)?;
            text_attr(&g, "recovery", &r.recovery)?;
            g.new_attr::<u64>().create("stages")?.write_scalar(&(r.stages as u64))?;
            g.new_attr::<u64>().create("replicas")?.write_scalar(&(r.replicas as u64))?;
            g.new_attr::<f64>().create("virtual_time_s")?.write_scalar(&r.virtual_time_s)?;
            g.new_attr::<f64>().create("wall_s")?.write_scalar(&r.wall_s)?;
            g.new_attr::<u64>().create("bytes_sent")?.write_scalar(&r.bytes_sent)?;
            if !r.events.is_empty() {
                let lines: Vec<hdf5::types::VarLenUnicode> =
                    r.events.iter().map(|(t, kind, detail)| event_line(*t, kind, detail)).collect::<Result<_>>()?;
                g.new_dataset::<hdf5::types::VarLenUnicode>().shape(lines.len()).create("events")?.write_raw(&lines)?;
            }
            for (name, series) in r.step_series() {
                if series.is_empty() {
                    continue;
                }
                let steps: Vec<u64> = series.iter().map(|v| v.0).collect();
                let values: Vec<f64> = series.iter().map(|v| v.1).collect();
                g.new_dataset::<u64>().shape(steps.len()).create(format!("{name}_step").as_str())?.write_raw(&steps)?;
                g.new_dataset::<f64>()
                    .shape(values.len())
                    .create(format!("{name}_value").as_str())?
                    .write_raw(&values)?;
            }
            if !r.val_time.is_empty() {
                let times: Vec<f64> = r.val_time.iter().map(|v| v.0).collect();
                g.new_dataset::<f64>().shape(times.len()).create("val_time_s")?.write_raw(&times)?;
            }
        }
        if !scale.is_empty() {
            let g = file.create_group("scale")?;
            let column = |name: &str, values: Vec<f64>| -> Result<()> {
                g.new_dataset::<f64>().shape(values.len()).create(name)?.write_raw(&values)?;
                Ok(())
            };
            column("replicas", scale.iter().map(|p| p.replicas as f64).collect())?;
            column("mean_latency_s", scale.iter().map(|p| p.mean_latency_s).collect())?;
            column("p90_latency_s", scale.iter().map(|p| p.p90_latency_s).collect())?;
            column("max_latency_s", scale.iter().map(|p| p.max_latency_s).collect())?;
            column("bytes_per_worker", scale.iter().map(|p| p.bytes_per_worker).collect())?;
            column("events", scale.iter().map(|p| p.events as f64).collect())?;
            let methods: Vec<hdf5::types::VarLenUnicode> =
                scale.iter().map(|p| h5_text(&p.method)).collect::<Result<_>>()?;
            g.new_dataset::<hdf5::types::VarLenUnicode>().shape(methods.len()).create("method")?.write_raw(&methods)?;
        }
        file.flush()?;
        Ok(())
    })
    .with_context(|| format!("cannot write {}", path.display()))
}

/// Reads a run back from its `run.h5`.
fn read_hdf5(path: &Path) -> Result<(RunConfig, Corpus, Vec<ArmResult>, Vec<ScalePoint>)> {
    let file = hdf5::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let text = |loc: &hdf5::Location, name: &str| h5_attr_text(loc, name).with_context(|| path.display().to_string());
    let cfg = RunConfig::from_toml(&text(&file, "config_toml")?)
        .with_context(|| format!("{}: config_toml", path.display()))?;
    let floor: f64 = file.attr("entropy_floor")?.read_scalar()?;
    let corpus = Corpus {
        name: text(&file, "corpus")?,
        train: vec![],
        val: vec![],
        entropy_floor: floor.is_finite().then_some(floor),
    };
    let arms = file.group("arms").with_context(|| format!("{}: no arms", path.display()))?;
    let mut results = Vec::new();
    for i in 0.. {
        let Ok(g) = arms.group(&i.to_string()) else { break };
        let series = |name: &str| -> Result<Vec<(u64, f64)>> {
            let (Ok(steps), Ok(values)) = (g.dataset(&format!("{name}_step")), g.dataset(&format!("{name}_value")))
            else {
                return Ok(vec![]);
            };
            let (steps, values): (Vec<u64>, Vec<f64>) = (steps.read_raw()?, values.read_raw()?);
            Ok(steps.into_iter().zip(values).collect())
        };
        let val = series("val")?;
        let val_time = match g.dataset("val_time_s") {
            Ok(d) => d.read_raw::<f64>()?.into_iter().zip(val.iter().map(|v| v.1)).collect(),
            Err(_) => vec![],
        };
        let events = match g.dataset("events") {
            Ok(d) => d
                .read_raw::<hdf5::types::VarLenUnicode>()?
                .iter()
                .filter_map(|line| {
                    parse_event_line(line.as_str()).map(|(t, kind, detail)| (t, kind.to_owned(), detail.to_owned()))
                })
                .collect(),
            Err(_) => vec![],
        };
        let label = text(&g, "label")?;
        let arm = cfg
            .arms
            .iter()
            .find(|a| a.label == label)
            .cloned()
            .with_context(|| format!("{}: arm {label:?} is not in the config", path.display()))?;
        let s = Series {
            train: series("train")?,
            val,
            val_time,
            bytes: series("bytes")?,
            weight_variance: series("weight_variance")?,
            sync_time: series("sync_time")?,
            sync_bytes: series("sync_bytes")?,
            idle: series("idle")?,
            recoveries: series("recovery")?,
        };
        let totals = (
            g.attr("virtual_time_s")?.read_scalar()?,
            g.attr("wall_s")?.read_scalar()?,
            g.attr("bytes_sent")?.read_scalar()?,
        );
        let names = (text(&g, "sync")?, text(&g, "recovery").unwrap_or_default());
        results.push(ArmResult::from_series(arm, names, s, totals, events));
    }
    let mut scale = Vec::new();
    if let Ok(g) = file.group("scale") {
        let column = |name: &str| -> Result<Vec<f64>> { Ok(g.dataset(name)?.read_raw::<f64>()?) };
        let methods: Vec<hdf5::types::VarLenUnicode> = g.dataset("method")?.read_raw()?;
        let (replicas, mean, p90, max, bytes, events) = (
            column("replicas")?,
            column("mean_latency_s")?,
            column("p90_latency_s")?,
            column("max_latency_s")?,
            column("bytes_per_worker")?,
            column("events")?,
        );
        for (i, method) in methods.iter().enumerate() {
            let at = |c: &[f64]| c.get(i).copied().unwrap_or(f64::NAN);
            scale.push(ScalePoint {
                replicas: at(&replicas) as usize,
                method: method.as_str().to_owned(),
                mean_latency_s: at(&mean),
                p90_latency_s: at(&p90),
                max_latency_s: at(&max),
                bytes_per_worker: at(&bytes),
                events: at(&events) as usize,
            });
        }
    }
    Ok((cfg, corpus, results, scale))
}

/// A run read back from its folder: what `swarmlab run` wrote there.
struct ReadBack {
    cfg: RunConfig,
    corpus: Corpus,
    results: Vec<ArmResult>,
    parts: Parts,
    /// The arms' wall seconds together.
    wall_s: f64,
}

impl ReadBack {
    fn read(run_dir: &Path) -> Result<Self> {
        let (cfg, corpus, results, scale) = read_hdf5(&run_dir.join("run.h5"))?;
        let wall_s = results.iter().map(|r| r.wall_s).filter(|w| w.is_finite()).sum::<f64>();
        let parts = Parts { scale, skip: crate::studies::skippipe::read_results(run_dir)? };
        Ok(Self { cfg, corpus, results, parts, wall_s })
    }

    fn view(&self) -> RunView<'_> {
        RunView { cfg: &self.cfg, corpus: &self.corpus, results: &self.results, parts: &self.parts }
    }
}

/// Rewrites `report.md`, `summary.json`, the plots and the studies' files of a run folder from its
/// `run.h5` (and the tables studies keep beside it).
pub(crate) fn rewrite(run_dir: &Path) -> Result<()> {
    let run = ReadBack::read(run_dir)?;
    // Wall times come from the file: a sum too large (or not a number) for a duration reads as zero.
    super::write_run(run_dir, &run.view(), Duration::try_from_secs_f64(run.wall_s).unwrap_or_default())
}

/// The claims and wall seconds of the run in `run_dir` if it finished every arm of exactly `cfg`
/// (compared as the TOML it writes); `None` if the folder holds no such run (none, another
/// configuration, an interrupted or unreadable one).
pub(crate) fn finished_run(run_dir: &Path, cfg: &RunConfig) -> Option<(Vec<crate::claims::Claim>, f64)> {
    if !run_dir.join("run.h5").is_file() {
        return None;
    }
    let run = ReadBack::read(run_dir).ok()?;
    let same = toml::to_string(&run.cfg).ok()? == toml::to_string(cfg).ok()?;
    let complete = run.cfg.arms.iter().all(|a| run.results.iter().any(|r| r.label == a.label));
    // The run's whole wall time (its measurements after the arms included) is in its summary.
    let wall = crate::files::read_text(&run_dir.join("summary.json"), crate::files::MAX_RESULTS_BYTES)
        .ok()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok()?["wall_s"].as_f64())
        .filter(|w| w.is_finite() && *w >= 0.0)
        .unwrap_or(run.wall_s);
    (same && complete).then(|| (crate::studies::claims(&run.view()), wall))
}
