//! Running a whole pipeline on the simulated network.

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::Tensor;
use genrl::{MetricsLog, SimSwarm, SwarmSpec};
use models::data::Corpus;

use crate::error::{Error, Result};
use crate::plug::{FixedRouter, Router};
use crate::spec::PipelineSpec;
use crate::worker::run_worker;

/// The outcome of a run.
#[derive(Debug)]
pub struct RunReport {
    /// Everything the workers measured.
    pub metrics: MetricsLog,
    /// Final weights of replica 0, all stages, by parameter name.
    pub weights: BTreeMap<String, Tensor>,
    /// Final weights of every replica, by replica.
    pub replica_weights: Vec<BTreeMap<String, Tensor>>,
    /// Virtual time the run took.
    pub virtual_time: std::time::Duration,
    /// Bytes sent over the network in all.
    pub bytes_sent: u64,
}

/// Trains `spec` on `corpus` on a simulated network (inside a paused tokio runtime; see
/// [`genrl::run_simulation`]). `router` defaults to [`FixedRouter`].
pub async fn run_simulated(
    spec: &PipelineSpec,
    corpus: Arc<Corpus>,
    router: Option<Arc<dyn Router>>,
) -> Result<RunReport> {
    spec.validate()?;
    corpus.check_fits(spec.seq)?;
    let workers = spec.stages * spec.replicas;
    let swarm = SimSwarm::build(&SwarmSpec::uniform(spec.seed, workers, spec.device.clone(), spec.link))?;
    let spec_arc = Arc::new(spec.clone());
    let router: Arc<dyn Router> = router.unwrap_or_else(|| Arc::new(FixedRouter));
    let results = swarm
        .run(move |ctx| {
            let (spec, corpus, router) = (spec_arc.clone(), corpus.clone(), router.clone());
            async move {
                run_worker(ctx, spec, corpus, router)
                    .await
                    .map_err(|e| genrl::Error::Config { field: "worker".into(), reason: e.to_string() })
            }
        })
        .await;
    let mut replica_weights = vec![BTreeMap::new(); spec.replicas];
    for result in results {
        let w = result?;
        replica_weights[w.replica].extend(w.weights);
    }
    let weights = replica_weights.first().cloned().ok_or_else(|| Error::config("pipeline", "no replicas"))?;
    Ok(RunReport {
        metrics: swarm.metrics().snapshot(),
        weights,
        replica_weights,
        virtual_time: swarm.network().now(),
        bytes_sent: swarm.network().total().sent_bytes,
    })
}
