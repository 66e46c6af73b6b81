//! How synchronisation scales with the swarm: one outer round of `R` replicas of one stage shard, on
//! internet-like links, with no model compute — the part of an outer step that grows with `R`.
//!
//! Every replica sits behind its own access link: a one-way latency drawn from half the configured range
//! (so a pair's latency, the sum of both ends, spans the whole range) and a bandwidth drawn log-uniformly;
//! a pair's bandwidth is the smaller of its ends', and each replica's total upload is capped at its own.
//! Replicas reach the round at times spread uniformly over `arrival_spread_s` (stragglers), and each
//! measures its *sync latency*: from its own arrival until it may continue. An all-reduce makes everyone
//! wait for the last arrival and for 2·(R−1) ring rounds or 2·⌈log2 R⌉ tree levels; a gossip group waits
//! only for its own members.
//!
//! Shard sizes of real models (tens of millions of parameters) would make the simulation move gigabytes,
//! so it sends `simulated_values` floats and scales every bandwidth by `simulated_values / shard_params`:
//! transfer times are those of the real shard (up to per-message header bytes, which the scaling
//! inflates slightly), and the reported bytes are scaled back.

use std::time::Duration;

use candle_core::{Device, Tensor};
use genrl::{DeviceProfile, SimSwarm, World};
use pipeline::collective::{Mailbox, run_outer_round};
use pipeline::sync::{Collective, OuterSync};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use transport::PeerId;
use transport::sim::{LATENCY_MS, LinkSpec, MBIT_PER_S};

use crate::diloco::DiLoCo;
use crate::gossip::NoLoCo;
use pipeline::{Error, Result};

/// The widest spread of the replicas' arrivals at a round, in seconds (a million: eleven days).
pub const MAX_ARRIVAL_SPREAD_S: f64 = 1e6;

/// How the replicas synchronise in the scale study.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMethod {
    /// DiLoCo's all-reduce of one shard-sized pseudo-gradient, as a ring.
    RingAllReduce,
    /// The same, as a binary tree.
    TreeAllReduce,
    /// NoLoCo: average `[φ, θ − φ]` (two shards) within random groups of `group_size`.
    Gossip {
        /// Replicas per group.
        group_size: usize,
    },
}

impl SyncMethod {
    /// A name for tables.
    pub fn label(&self) -> String {
        match self {
            Self::RingAllReduce => "ring all-reduce".into(),
            Self::TreeAllReduce => "tree all-reduce".into(),
            Self::Gossip { group_size } => format!("NoLoCo gossip n={group_size}"),
        }
    }
}

/// Internet-like links: ranges of pair latency and of access bandwidth.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InternetLinks {
    /// Pair one-way latency range, milliseconds.
    pub latency_ms: (f64, f64),
    /// Access bandwidth range, megabits per second.
    pub mbit_per_s: (f64, f64),
}

impl Default for InternetLinks {
    /// 20–200 ms, 100 Mbit/s – 1 Gbit/s.
    fn default() -> Self {
        Self { latency_ms: (20.0, 200.0), mbit_per_s: (100.0, 1000.0) }
    }
}

/// One measurement: a swarm size, a method, the links.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleSpec {
    /// Replicas of the stage.
    pub replicas: usize,
    /// How they synchronise.
    pub method: SyncMethod,
    /// Parameters of one stage shard of the real model.
    pub shard_params: usize,
    /// Floats actually sent per shard-sized vector (bandwidths are scaled to match).
    pub simulated_values: usize,
    /// The links.
    pub links: InternetLinks,
    /// Replicas reach the round uniformly within this many seconds.
    pub arrival_spread_s: f64,
    /// How long a gossip root waits for its members, seconds.
    pub gossip_timeout_s: f64,
    /// Replicas that never show up (only gossip tolerates them).
    pub absent: Vec<usize>,
    /// Seed of links, arrivals and groups.
    pub seed: u64,
}

impl ScaleSpec {
    /// `replicas` replicas synchronising a 25M-parameter shard with `method`, default links.
    pub fn new(replicas: usize, method: SyncMethod) -> Self {
        Self {
            replicas,
            method,
            shard_params: 25_000_000,
            simulated_values: 1 << 18,
            links: InternetLinks::default(),
            arrival_spread_s: 2.0,
            gossip_timeout_s: 120.0,
            absent: Vec::new(),
            seed: 1,
        }
    }

    /// Checks the settings; the error names the first bad one.
    pub fn check(&self) -> Result<()> {
        if self.replicas < 2 {
            return Err(Error::config("scale.replicas", "need at least 2 replicas"));
        }
        if self.shard_params == 0 || self.simulated_values == 0 || self.simulated_values > self.shard_params {
            return Err(Error::config("scale.simulated_values", "must be between 1 and shard_params"));
        }
        let (l0, l1) = self.links.latency_ms;
        let (b0, b1) = self.links.mbit_per_s;
        // Both ends of each range are configured link numbers: finite and within the links' ranges.
        let links_ok =
            [l0, l1].iter().all(|l| LATENCY_MS.contains(l)) && [b0, b1].iter().all(|b| MBIT_PER_S.contains(b));
        if !(links_ok && l1 >= l0 && b1 >= b0) {
            return Err(Error::config(
                "scale.links",
                format!(
                    "latency {l0}–{l1} ms and bandwidth {b0}–{b1} Mbit/s must be ordered ranges within [{}, {}] ms and [{}, {}] Mbit/s",
                    LATENCY_MS.start(),
                    LATENCY_MS.end(),
                    MBIT_PER_S.start(),
                    MBIT_PER_S.end()
                ),
            ));
        }
        if !(0.0..=MAX_ARRIVAL_SPREAD_S).contains(&self.arrival_spread_s) {
            return Err(Error::config(
                "scale.arrival_spread_s",
                format!("{} is outside [0, {MAX_ARRIVAL_SPREAD_S}] seconds", self.arrival_spread_s),
            ));
        }
        if let Some(a) = self.absent.iter().find(|&&a| a >= self.replicas) {
            return Err(Error::config("scale.absent", format!("replica {a} does not exist")));
        }
        Ok(())
    }

    fn sync(&self) -> Box<dyn OuterSync> {
        match self.method {
            SyncMethod::RingAllReduce => {
                Box::new(DiLoCo { every: 1, collective: Collective::Ring, ..DiLoCo::default() })
            }
            SyncMethod::TreeAllReduce => {
                Box::new(DiLoCo { every: 1, collective: Collective::Tree, ..DiLoCo::default() })
            }
            SyncMethod::Gossip { group_size } => Box::new(NoLoCo {
                every: 1,
                group_size,
                seed: self.seed,
                timeout_s: self.gossip_timeout_s,
                ..NoLoCo::default()
            }),
        }
    }
}

/// What one round cost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScalePoint {
    /// Replicas.
    pub replicas: usize,
    /// The method's label.
    pub method: String,
    /// Mean sync latency over the replicas that took part, seconds.
    pub mean_latency_s: f64,
    /// 90th percentile of the sync latency, seconds.
    pub p90_latency_s: f64,
    /// Longest sync latency, seconds.
    pub max_latency_s: f64,
    /// Mean bytes sent per replica, scaled to the real shard.
    pub bytes_per_worker: f64,
    /// Timeouts and rejections logged.
    pub events: usize,
}

/// Runs one round as `spec` says (inside [`genrl::run_simulation`]).
pub async fn measure(spec: &ScaleSpec) -> Result<ScalePoint> {
    spec.check()?;
    let n = spec.replicas;
    let sync = spec.sync();
    sync.validate(n)?;
    let swarm = SimSwarm::build(&World::uniform(n, DeviceProfile::a10(), LinkSpec::default()), spec.seed)?;
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed ^ 0x11AB_5CA1E);
    let (l0, l1) = spec.links.latency_ms;
    let (b0, b1) = spec.links.mbit_per_s;
    let scale = spec.simulated_values as f64 / spec.shard_params as f64;
    let access: Vec<(f64, f64)> = (0..n)
        .map(|_| {
            let latency = rng.random_range(l0 / 2.0..=l1 / 2.0);
            let mbit = (b0.ln() + rng.random::<f64>() * (b1.ln() - b0.ln())).exp();
            (latency, mbit * 1e6 / 8.0 * scale)
        })
        .collect();
    let arrivals: Vec<f64> = (0..n).map(|_| rng.random::<f64>() * spec.arrival_spread_s).collect();
    let peers: Vec<PeerId> = swarm.contexts().iter().map(|c| c.peers[c.index as usize]).collect();
    let net = swarm.network();
    for (i, &(_, up)) in access.iter().enumerate() {
        net.set_egress(peers[i], Some(up))?;
    }
    // Links only between the pairs this round uses.
    let set = |a: usize, b: usize| -> Result<()> {
        let latency = Duration::from_secs_f64((access[a].0 + access[b].0) / 1e3);
        let spec = LinkSpec { latency, bandwidth: access[a].1.min(access[b].1), ..LinkSpec::default() };
        Ok(net.set_link(peers[a], peers[b], spec)?)
    };
    for r in 0..n {
        let round = sync.round(1, r, n).ok_or_else(|| Error::config("scale", "the method has no round"))?;
        match round.collective {
            Collective::Ring => set(r, (r + 1) % n)?,
            Collective::Tree => {
                let mut d = 1;
                while d < n {
                    if r % (2 * d) == d {
                        set(r, r - d)?;
                    }
                    d *= 2;
                }
            }
            Collective::Gather => {
                if round.group[0] != r {
                    set(round.group[0], r)?;
                }
            }
        }
    }
    let values = spec.simulated_values;
    let absent = spec.absent.clone();
    let sync: std::sync::Arc<dyn OuterSync> = std::sync::Arc::from(sync);
    let arrivals = std::sync::Arc::new(arrivals);
    let results = swarm
        .run(move |ctx| {
            let (sync, arrivals, absent) = (sync.clone(), arrivals.clone(), absent.clone());
            async move {
                let r = ctx.index as usize;
                if absent.contains(&r) {
                    return Ok(None);
                }
                ctx.clock.sleep(Duration::from_secs_f64(arrivals[r])).await;
                let t0 = ctx.clock.now();
                let mut mail =
                    Mailbox::new(ctx.transport.clone(), ctx.clock.clone(), Duration::from_secs(24 * 3600), "scale");
                let failed = |e: pipeline::Error| genrl::Error::config("scale", e.to_string());
                let phi: Vec<f32> = (0..values).map(|i| ((i * 7 + r) % 13) as f32 * 1e-3).collect();
                let theta: Vec<f32> = phi.iter().map(|p| p + 1e-4 * (r % 3) as f32).collect();
                let on_host = |v: Vec<f32>| Tensor::from_vec(v, values, &Device::Cpu).map_err(|e| failed(e.into()));
                let (phi, theta) = (on_host(phi)?, on_host(theta)?);
                let round = sync.round(1, r, n).ok_or_else(|| genrl::Error::config("scale", "no round"))?;
                let mut state =
                    sync.start(&phi).map_err(failed)?.ok_or_else(|| genrl::Error::config("scale", "no outer state"))?;
                run_outer_round(&ctx, &mut mail, state.as_mut(), &round, &ctx.peers, (0, r), 0, &theta)
                    .await
                    .map_err(failed)?;
                Ok(Some(((ctx.clock.now() - t0).as_secs_f64(), mail.sent())))
            }
        })
        .await;
    let mut latencies = Vec::new();
    let mut bytes = 0.0;
    for result in results {
        if let Some((latency, sent)) = result? {
            latencies.push(latency);
            bytes += sent as f64 / scale;
        }
    }
    if latencies.is_empty() {
        return Err(Error::config("scale.absent", "every replica is absent"));
    }
    latencies.sort_by(f64::total_cmp);
    let count = latencies.len();
    let events = swarm.metrics().snapshot().events.len();
    Ok(ScalePoint {
        replicas: n,
        method: spec.method.label(),
        mean_latency_s: latencies.iter().sum::<f64>() / count as f64,
        p90_latency_s: latencies[((count as f64 * 0.9).ceil() as usize).clamp(1, count) - 1],
        max_latency_s: latencies[count - 1],
        bytes_per_worker: bytes / count as f64,
        events,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use genrl::run_simulation;

    fn small(replicas: usize, method: SyncMethod) -> ScaleSpec {
        ScaleSpec { simulated_values: 4096, ..ScaleSpec::new(replicas, method) }
    }

    #[test]
    fn gossip_is_faster_than_all_reduce_and_sends_a_fixed_amount() {
        let point = |m| run_simulation(async move { measure(&small(16, m)).await }).unwrap().unwrap();
        let (ring, tree, gossip) = (
            point(SyncMethod::RingAllReduce),
            point(SyncMethod::TreeAllReduce),
            point(SyncMethod::Gossip { group_size: 2 }),
        );
        assert!(gossip.mean_latency_s < ring.mean_latency_s, "{gossip:?} vs {ring:?}");
        assert!(gossip.mean_latency_s < tree.mean_latency_s, "{gossip:?} vs {tree:?}");
        // Ring: 2·(R−1)/R shards per worker; gossip n=2: half the workers send 2 shards up, the roots 2 back.
        let shard = 4.0 * 25e6;
        assert!((ring.bytes_per_worker / shard - 2.0 * 15.0 / 16.0).abs() < 0.1, "{ring:?}");
        assert!((gossip.bytes_per_worker / shard - 2.0).abs() < 0.1, "{gossip:?}");
    }

    #[test]
    fn numbers_that_would_overflow_a_duration_are_refused() {
        let base = small(8, SyncMethod::RingAllReduce);
        let bad = [
            ScaleSpec { links: InternetLinks { latency_ms: (20.0, f64::INFINITY), ..base.links }, ..base.clone() },
            ScaleSpec { links: InternetLinks { mbit_per_s: (100.0, f64::INFINITY), ..base.links }, ..base.clone() },
            ScaleSpec { links: InternetLinks { latency_ms: (f64::NAN, 1.0), ..base.links }, ..base.clone() },
            ScaleSpec { arrival_spread_s: 1e300, ..base.clone() },
            ScaleSpec { arrival_spread_s: f64::NAN, ..base.clone() },
        ];
        for spec in bad {
            assert!(spec.check().is_err(), "{spec:?} accepted");
        }
        assert!(base.check().is_ok());
    }

    #[test]
    fn an_absent_replica_does_not_stall_its_group() {
        let spec =
            ScaleSpec { absent: vec![3], gossip_timeout_s: 30.0, ..small(8, SyncMethod::Gossip { group_size: 2 }) };
        let point = run_simulation(async move { measure(&spec).await }).unwrap().unwrap();
        assert!(point.events >= 1, "the missing peer is logged: {point:?}");
        assert!(point.max_latency_s < 3.0 * 30.0, "nobody waits past the deadlines: {point:?}");
        let ring = ScaleSpec { absent: vec![3], ..small(4, SyncMethod::RingAllReduce) };
        assert!(ring.check().is_ok(), "the ring accepts the spec but would wait for replica 3");
    }
}
