//! Who runs where: the one description of a simulated swarm's hardware and geography that every
//! protocol builds on — each agent's simulated [`DeviceProfile`], its region and the links between
//! regions, and when agents fail. The pipeline runtime, SkipPipe's scheduler, SAPO's swarm, NoLoCo's
//! scaling study and Verde's disputes all take a [`World`]; none builds its own network description.
//!
//! Vocabulary: a *profile* is simulated hardware (it sets compute time in virtual time); the real device
//! the tensors live on (CPU or a GPU) is a `candle_core::Device`, and many simulated agents share it.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use transport::sim::{LinkSpec, RegionTable};

use crate::device::DeviceProfile;
use crate::error::{Error, Result};

/// Regions and the region of every agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Regions {
    /// The regions and the links between them.
    pub table: RegionTable,
    /// Every agent's region (a name in `table`), by agent index.
    pub of: Vec<String>,
}

/// When agents fail: `(step, agent index)` pairs. Each failure happens once, at the start of its step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FailurePlan {
    /// The failures, in any order.
    pub failures: Vec<(u64, usize)>,
}

/// A simulated swarm: agents with their simulated hardware and regions, the links, the failures.
#[derive(Debug, Clone, PartialEq)]
pub struct World {
    /// Every agent's simulated hardware, by index.
    pub profiles: Vec<DeviceProfile>,
    /// The link between two agents that no region table covers.
    pub link: LinkSpec,
    /// Where the agents are, for geo-distributed swarms; `None`: every link is `link`.
    pub regions: Option<Regions>,
    /// Which agents fail, and when.
    pub failures: FailurePlan,
    /// For a world placed from a larger description ([`World::permuted`]): each agent's number there, by
    /// agent index. Schedulers that break ties by node number use it, so a placement does not change
    /// what they find. `None`: agent `i` is node `i`.
    pub nodes: Option<Vec<usize>>,
}

impl World {
    /// `n` agents with the same profile on the same links, none failing.
    pub fn uniform(n: usize, profile: DeviceProfile, link: LinkSpec) -> Self {
        Self { profiles: vec![profile; n], link, regions: None, failures: FailurePlan::default(), nodes: None }
    }

    /// `n` agents spread over the twelve regions of [`RegionTable::geo_distributed`] (seeded), with
    /// heterogeneous hardware: a third H100-class, a third A10-class, a third A10-class at half speed
    /// (SkipPipe's setting).
    pub fn geo_distributed(n: usize, seed: u64) -> Self {
        let table = RegionTable::geo_distributed();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut names: Vec<String> = table.names().to_vec();
        names.shuffle(&mut rng);
        let a10 = DeviceProfile::a10();
        let half_a10 = DeviceProfile { name: "a10/2".into(), flops: a10.flops / 2.0, ..a10.clone() };
        let kinds = [DeviceProfile::h100(), a10, half_a10];
        let profiles = (0..n).map(|i| kinds[(i / 2) % 3].clone()).collect();
        let of = (0..n).map(|i| names[i % names.len()].clone()).collect();
        let regions = Some(Regions { table, of });
        Self { profiles, link: LinkSpec::default(), regions, failures: FailurePlan::default(), nodes: None }
    }

    /// Agents.
    pub fn len(&self) -> usize {
        self.profiles.len()
    }

    /// Whether there are no agents.
    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty()
    }

    /// The same world with every profile's speed multiplied by `factor`.
    pub fn sped_up(mut self, factor: f64) -> Self {
        for p in &mut self.profiles {
            p.flops *= factor;
        }
        self
    }

    /// The agents reordered: agent `i` of the result is agent `order[i]` of this world (placing nodes
    /// into a grid's worker slots). Failures are dropped: they are planned per slot, after placing.
    pub fn permuted(&self, order: &[usize]) -> Result<Self> {
        if let Some(&bad) = order.iter().find(|&&i| i >= self.len()) {
            return Err(Error::config("world.order", format!("agent {bad} does not exist: there are {}", self.len())));
        }
        Ok(Self {
            profiles: order.iter().map(|&i| self.profiles[i].clone()).collect(),
            link: self.link,
            regions: self
                .regions
                .as_ref()
                .map(|r| Regions { table: r.table.clone(), of: order.iter().map(|&i| r.of[i].clone()).collect() }),
            failures: FailurePlan::default(),
            nodes: Some(order.iter().map(|&i| self.node(i)).collect()),
        })
    }

    /// Agent `i`'s node number ([`World::nodes`]).
    pub fn node(&self, i: usize) -> usize {
        self.nodes.as_ref().and_then(|n| n.get(i).copied()).unwrap_or(i)
    }

    /// The link from agent `i` to agent `j`.
    pub fn link(&self, i: usize, j: usize) -> Result<LinkSpec> {
        let Some(r) = &self.regions else { return Ok(self.link) };
        let region = |n: usize| {
            let name = r.of.get(n).ok_or_else(|| Error::config("world.regions", format!("no agent {n}")))?;
            r.table.index(name).map_err(|e| Error::config("world.regions", e.to_string()))
        };
        Ok(r.table.link(region(i)?, region(j)?).unwrap_or(self.link))
    }

    /// Seconds to send `bytes` from agent `i` to agent `j`: latency plus bytes over bandwidth, each in
    /// seconds (zero to itself).
    pub fn transfer_seconds(&self, i: usize, j: usize, bytes: usize) -> Result<f64> {
        if i == j {
            return Ok(0.0);
        }
        let link = self.link(i, j)?;
        Ok(link.latency.as_secs_f64() + link.transfer_time(bytes).as_secs_f64())
    }

    /// Checks every profile, the links, the regions and the failures; the error names the field.
    pub fn validate(&self) -> Result<()> {
        if self.profiles.is_empty() {
            return Err(Error::config("world.agents", "a swarm needs at least one agent"));
        }
        for p in &self.profiles {
            p.validate()?;
        }
        self.link.validate("world.link").map_err(|e| Error::config("world.link", e.to_string()))?;
        if let Some(r) = &self.regions {
            if r.of.len() != self.len() {
                return Err(Error::config(
                    "world.regions",
                    format!("{} regions for {} agents", r.of.len(), self.len()),
                ));
            }
            for (i, name) in r.of.iter().enumerate() {
                r.table.index(name).map_err(|e| Error::config(format!("world.regions[{i}]"), e.to_string()))?;
            }
        }
        if let Some(&(step, a)) = self.failures.failures.iter().find(|f| f.1 >= self.len()) {
            return Err(Error::config(
                "world.failures",
                format!("agent {a} (at step {step}) does not exist: there are {}", self.len()),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_geo_world_is_seeded_heterogeneous_and_linked_by_region() -> Result<()> {
        let w = World::geo_distributed(12, 3);
        assert_eq!(w, World::geo_distributed(12, 3), "the same seed, the same world");
        assert_ne!(w, World::geo_distributed(12, 4));
        w.validate()?;
        let speeds: std::collections::BTreeSet<u64> = w.profiles.iter().map(|p| p.flops as u64).collect();
        assert_eq!(speeds.len(), 3, "three kinds of hardware");
        assert_eq!(w.transfer_seconds(2, 2, 1 << 20)?, 0.0);
        let latency = w.link(0, 1)?.latency.as_secs_f64();
        assert!(w.transfer_seconds(0, 1, 1 << 20)? > latency, "bytes take time on top of latency");
        let swapped = w.permuted(&[1, 0])?;
        assert_eq!(swapped.len(), 2);
        assert_eq!((swapped.node(0), swapped.node(1)), (1, 0), "a placed world remembers its nodes");
        assert_eq!(swapped.permuted(&[1])?.node(0), 0, "through placements");
        assert_eq!(swapped.profiles[0], w.profiles[1]);
        assert_eq!(swapped.link(0, 1)?, w.link(1, 0)?);
        assert!(w.permuted(&[12]).is_err());
        Ok(())
    }

    #[test]
    fn bad_worlds_name_the_field() {
        let mut w = World::uniform(2, DeviceProfile::a10(), LinkSpec::default());
        w.failures.failures.push((3, 2));
        assert!(w.validate().err().map(|e| e.to_string()).unwrap_or_default().contains("world.failures"));
        assert!(World::uniform(0, DeviceProfile::a10(), LinkSpec::default()).validate().is_err());
    }
}
