//! The metrics sink: scalar series per agent and step, and timestamped events (join, leave, failure…).
//!
//! Agents record into a shared [`Metrics`] handle; the experiment layer reads a [`MetricsLog`] snapshot
//! and writes it out (HDF5, plots, reports). Recording never fails and never blocks for long.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One scalar measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// Which agent measured it (`None` for swarm-wide values).
    pub agent: Option<u32>,
    /// Training step or round.
    pub step: u64,
    /// Virtual (or wall-clock) time of the measurement.
    pub time: Duration,
    /// The value.
    pub value: f64,
}

/// What kind of thing happened.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// An agent joined the swarm.
    Join,
    /// An agent left the swarm.
    Leave,
    /// An agent or link failed.
    Failure,
    /// A failure was recovered from.
    Recovery,
    /// A peer missed a deadline and was skipped.
    Timeout,
    /// A message or update was rejected as invalid.
    Rejected,
    /// Anything else, named.
    Other(String),
}

/// A timestamped event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// When.
    pub time: Duration,
    /// Which agent reports it.
    pub agent: Option<u32>,
    /// What kind.
    pub kind: EventKind,
    /// Details for humans.
    pub detail: String,
}

/// Everything recorded so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricsLog {
    /// Series by metric name, in recording order.
    pub series: BTreeMap<String, Vec<Sample>>,
    /// Events in recording order.
    pub events: Vec<Event>,
}

impl MetricsLog {
    /// The samples of `name` (empty if none).
    pub fn series(&self, name: &str) -> &[Sample] {
        self.series.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The samples of `name` for one agent.
    pub fn agent_series(&self, name: &str, agent: u32) -> Vec<&Sample> {
        self.series(name).iter().filter(|s| s.agent == Some(agent)).collect()
    }

    /// The last value of `name` (any agent).
    pub fn last(&self, name: &str) -> Option<f64> {
        self.series(name).last().map(|s| s.value)
    }

    /// The mean over agents of `name` at each step, in step order.
    pub fn mean_by_step(&self, name: &str) -> Vec<(u64, f64)> {
        let mut by_step: BTreeMap<u64, (f64, usize)> = BTreeMap::new();
        for s in self.series(name) {
            let e = by_step.entry(s.step).or_default();
            e.0 += s.value;
            e.1 += 1;
        }
        by_step.into_iter().map(|(k, (sum, n))| (k, sum / n as f64)).collect()
    }

    /// The `n`-th samples of `name` of every agent, taken together for each `n`: `(time, step, mean)`,
    /// with the latest of their times and the first agent's step. For a figure each agent measures once
    /// per occasion (each replica's validation loss), this is the mean per occasion in time order, even
    /// where an occasion repeats a step (steps trained again after a rollback).
    pub fn mean_by_occasion(&self, name: &str) -> Vec<(Duration, u64, f64)> {
        let mut by_agent: BTreeMap<Option<u32>, Vec<&Sample>> = BTreeMap::new();
        for s in self.series(name) {
            by_agent.entry(s.agent).or_default().push(s);
        }
        let occasions = by_agent.values().map(Vec::len).max().unwrap_or(0);
        (0..occasions)
            .map(|n| {
                let at: Vec<&Sample> = by_agent.values().filter_map(|v| v.get(n).copied()).collect();
                let time = at.iter().map(|s| s.time).max().unwrap_or_default();
                let mean = at.iter().map(|s| s.value).sum::<f64>() / at.len() as f64;
                (time, at[0].step, mean)
            })
            .collect()
    }

    /// Events of one kind.
    pub fn events_of(&self, kind: &EventKind) -> Vec<&Event> {
        self.events.iter().filter(|e| &e.kind == kind).collect()
    }
}

/// A shared, cheaply cloned handle on a [`MetricsLog`].
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    log: Arc<Mutex<MetricsLog>>,
}

impl Metrics {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut MetricsLog) -> R) -> R {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut log)
    }

    /// Records `value` of metric `name`.
    pub fn record(&self, name: &str, agent: Option<u32>, step: u64, time: Duration, value: f64) {
        self.with(|log| log.series.entry(name.to_owned()).or_default().push(Sample { agent, step, time, value }));
    }

    /// Records an event (and logs it).
    pub fn event(&self, time: Duration, agent: Option<u32>, kind: EventKind, detail: impl Into<String>) {
        let detail = detail.into();
        tracing::info!(?time, ?agent, ?kind, %detail, "event");
        self.with(|log| log.events.push(Event { time, agent, kind, detail }));
    }

    /// A copy of everything recorded so far.
    pub fn snapshot(&self) -> MetricsLog {
        self.with(|log| log.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_series_and_events() {
        let m = Metrics::new();
        let t = Duration::from_millis(5);
        m.record("loss", Some(0), 1, t, 2.0);
        m.record("loss", Some(1), 1, t, 4.0);
        m.record("loss", Some(0), 2, t, 1.0);
        m.event(t, Some(1), EventKind::Failure, "crashed");
        let log = m.clone().snapshot();
        assert_eq!(log.mean_by_step("loss"), vec![(1, 3.0), (2, 1.0)]);
        let later = Duration::from_millis(7);
        m.record("loss", Some(1), 2, later, 3.0);
        m.record("loss", Some(0), 1, later, 5.0);
        let occasions = m.clone().snapshot().mean_by_occasion("loss");
        // Agent 0 measured steps 1, 2, 1 (a rollback); agent 1 steps 1, 2.
        assert_eq!(occasions, vec![(t, 1, 3.0), (later, 2, 2.0), (later, 1, 5.0)]);
        assert_eq!(log.agent_series("loss", 0).len(), 2);
        assert_eq!(log.last("loss"), Some(1.0));
        assert_eq!(log.events_of(&EventKind::Failure).len(), 1);
        assert!(log.series("nope").is_empty());
    }
}
