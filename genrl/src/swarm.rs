//! A swarm of agents on the simulated network: one task per agent, each with its endpoint, clock,
//! device profile and metrics handle. The same agent function runs over QUIC with a
//! [`WallClock`](crate::WallClock); here the whole swarm is one process in virtual time, a pure
//! function of its seed.

use std::future::Future;
use std::time::Duration;

use transport::sim::{Network, SimClock, SimEndpoint};
use transport::{PeerId, Transport};

use crate::clock::Clock;
use crate::device::DeviceProfile;
use crate::error::{Error, Result};
use crate::metrics::{EventKind, Metrics};
use crate::world::World;

/// What one agent gets to work with.
#[derive(Debug, Clone)]
pub struct AgentCtx<T: Transport, C: Clock> {
    /// Position in the swarm (0-based), stable for the run.
    pub index: u32,
    /// Its network endpoint.
    pub transport: T,
    /// Its clock.
    pub clock: C,
    /// Its simulated hardware (what its compute costs in time).
    pub profile: DeviceProfile,
    /// Where it records measurements.
    pub metrics: Metrics,
    /// Every agent's id, by index.
    pub peers: Vec<PeerId>,
}

impl<T: Transport, C: Clock> AgentCtx<T, C> {
    /// Spends the time `flops` take on this agent's device; returns that time.
    pub async fn compute(&self, flops: f64) -> Duration {
        let d = self.profile.compute_time(flops);
        self.clock.sleep(d).await;
        d
    }

    /// Records `value` of `name` for this agent at `step`, stamped with the current time.
    pub fn record(&self, name: &str, step: u64, value: f64) {
        self.metrics.record(name, Some(self.index), step, self.clock.now(), value);
    }
}

/// What carries a swarm's messages; a configuration names it, and the same configuration runs either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// The simulated network, in virtual time.
    #[default]
    Sim,
    /// One node process per agent on this machine, over QUIC in real time, every link emulated with the
    /// configuration's latency and bandwidth.
    Quic,
}

/// A built swarm: the network and the agents' contexts.
#[derive(Debug)]
pub struct SimSwarm {
    network: Network,
    metrics: Metrics,
    contexts: Vec<AgentCtx<SimEndpoint, SimClock>>,
}

impl SimSwarm {
    /// Builds the network and the agents of `world`, its randomness (jitter, loss) from `seed` (inside a
    /// tokio runtime, see [`run_simulation`]).
    pub fn build(world: &World, seed: u64) -> Result<Self> {
        world.validate()?;
        let mut builder = Network::builder(seed).default_link(world.link);
        if let Some(regions) = &world.regions {
            builder = builder.regions(regions.table.clone());
        }
        let network = builder.build()?;
        let peers: Vec<PeerId> = (0..world.len() as u64).map(PeerId::simulated).collect();
        let metrics = Metrics::new();
        let mut contexts = Vec::with_capacity(peers.len());
        for (i, (&id, profile)) in peers.iter().zip(&world.profiles).enumerate() {
            let transport = match &world.regions {
                Some(regions) => network.add_peer_in_region(id, &regions.of[i])?,
                None => network.add_peer(id)?,
            };
            contexts.push(AgentCtx {
                index: i as u32,
                transport,
                clock: network.clock(),
                profile: profile.clone(),
                metrics: metrics.clone(),
                peers: peers.clone(),
            });
        }
        Ok(Self { network, metrics, contexts })
    }

    /// The simulated network (for faults and link statistics).
    pub fn network(&self) -> &Network {
        &self.network
    }

    /// The shared metrics sink.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The agents' contexts, by index.
    pub fn contexts(&self) -> &[AgentCtx<SimEndpoint, SimClock>] {
        &self.contexts
    }

    /// Runs `agent` once per agent, concurrently, and returns each one's result by index. An agent
    /// that fails or panics yields an error for its slot (and an event); the others run on.
    pub async fn run<F, Fut, R>(&self, agent: F) -> Vec<Result<R>>
    where
        F: Fn(AgentCtx<SimEndpoint, SimClock>) -> Fut,
        Fut: Future<Output = Result<R>> + Send + 'static,
        R: Send + 'static,
    {
        let handles: Vec<_> = self.contexts.iter().map(|ctx| tokio::spawn(agent(ctx.clone()))).collect();
        let mut out = Vec::with_capacity(handles.len());
        for (i, h) in handles.into_iter().enumerate() {
            let result = match h.await {
                Ok(r) => r,
                Err(e) => Err(Error::config(format!("agent[{i}]"), format!("task failed: {e}"))),
            };
            if let Err(e) = &result {
                self.metrics.event(self.network.now(), Some(i as u32), EventKind::Failure, e.to_string());
            }
            out.push(result);
        }
        out
    }
}

/// Runs `f` on a fresh single-threaded runtime with the clock paused: the way to drive a [`SimSwarm`].
pub fn run_simulation<R>(f: impl Future<Output = R>) -> Result<R> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|e| Error::config("runtime", e.to_string()))?;
    Ok(rt.block_on(f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::comm::{BroadcastGather, CommunicationBackend};
    use bytes::Bytes;
    use transport::sim::LinkSpec;

    fn heterogeneous() -> World {
        let profiles = vec![DeviceProfile::h100(), DeviceProfile::a10(), DeviceProfile::cpu32(), DeviceProfile::a10()];
        World { profiles, ..World::uniform(0, DeviceProfile::a10(), LinkSpec::mbit(25.0, 1000.0)) }
    }

    /// Each agent computes 1 TFLOP, then all gather: returns each agent's finishing time.
    async fn one_round(swarm: &SimSwarm) -> Vec<Result<Duration>> {
        swarm
            .run(|ctx| async move {
                ctx.compute(1e12).await;
                ctx.record("computed", 0, ctx.clock.now().as_secs_f64());
                let mut comm = BroadcastGather::new(
                    ctx.transport.clone(),
                    ctx.clock.clone(),
                    ctx.peers.clone(),
                    Duration::from_secs(10),
                );
                let g = comm.all_gather(0, Bytes::from(vec![ctx.index as u8])).await?;
                assert_eq!(g.payloads.len(), 4);
                Ok(ctx.clock.now())
            })
            .await
    }

    #[test]
    fn the_slowest_device_sets_the_pace_deterministically() -> Result<()> {
        let run = || -> Result<Vec<Duration>> {
            run_simulation(async {
                let swarm = SimSwarm::build(&heterogeneous(), 5)?;
                one_round(&swarm).await.into_iter().collect::<Result<Vec<_>>>()
            })?
        };
        let a = run()?;
        assert_eq!(a, run()?, "same seed, same virtual times");
        // The CPU node computes 1 TFLOP in 2 s; its payload then needs 25 ms (plus transfer) to arrive.
        let slowest = DeviceProfile::cpu32().compute_time(1e12);
        assert!(a.iter().all(|&t| t >= slowest && t < slowest + Duration::from_millis(30)), "{a:?}");
        Ok(())
    }

    #[test]
    fn failures_are_reported_per_agent() -> Result<()> {
        run_simulation(async {
            let swarm = SimSwarm::build(&World::uniform(3, DeviceProfile::a10(), LinkSpec::default()), 1)?;
            let results = swarm
                .run(|ctx| async move {
                    if ctx.index == 1 {
                        return Err(Error::config("agent", "gave up"));
                    }
                    Ok(ctx.index)
                })
                .await;
            assert!(results[0].is_ok() && results[1].is_err() && results[2].is_ok());
            assert_eq!(swarm.metrics().snapshot().events_of(&EventKind::Failure).len(), 1);
            assert!(SimSwarm::build(&World::uniform(0, DeviceProfile::a10(), LinkSpec::default()), 1).is_err());
            Ok(())
        })?
    }
}
