//! The world a run's arms train on: every worker on the configuration's profile and links, or — with
//! `[geo]` — SkipPipe's geo-distributed, heterogeneous swarm with its nodes assigned to the grid's stages.

use anyhow::{Result, bail};
use genrl::{DeviceProfile, World};
use pipeline::PipelineSpec;
use serde::{Deserialize, Serialize};
use transport::sim::LinkSpec;

/// The swarm every arm runs on when `[geo]` is set: nodes over twelve cloud regions, a third H100-class,
/// a third A10-class, a third half-speed A10s ([`World::geo_distributed`]), assigned to the grid's stages
/// by `assignment` (SkipPipe's node-to-stage assignment).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct GeoConfig {
    /// Seed of the regions and devices.
    pub(crate) seed: u64,
    /// `local_search` or `random`.
    pub(crate) assignment: String,
}

impl Default for GeoConfig {
    fn default() -> Self {
        Self { seed: 1, assignment: "local_search".into() }
    }
}

impl GeoConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        if !matches!(self.assignment.as_str(), "local_search" | "random") {
            bail!("invalid geo.assignment: {:?} is not local_search or random", self.assignment);
        }
        Ok(())
    }

    /// The geo-distributed world of `spec`'s grid: its nodes (the fastest at `tflops` TFLOP/s, if set;
    /// `link` where no region link applies) assigned to the stages, in worker order.
    pub(crate) fn place(&self, spec: &PipelineSpec, tflops: Option<f64>, link: LinkSpec) -> Result<World> {
        let nodes = spec.stages * spec.replicas;
        let mut world = World::geo_distributed(nodes, self.seed);
        world.link = link;
        if let Some(t) = tflops {
            world = world.sped_up(t * 1e12 / DeviceProfile::h100().flops);
        }
        let workload = skippipe::Workload {
            stage_flops: spec.stage_forward_flops()?,
            activation_bytes: spec.micro_batch * spec.seq * spec.model.d_model * 4,
            micro_batches: spec.micro_batches,
            memory: 1,
        };
        let partition = vec![spec.replicas; spec.stages];
        let assignment = match self.assignment.as_str() {
            "random" => skippipe::assign_random(&world, &partition, self.seed)?,
            _ => skippipe::assign_local_search(&world, &partition, &workload, self.seed, 4)?,
        };
        Ok(assignment.place(&world, spec.replicas)?)
    }
}

