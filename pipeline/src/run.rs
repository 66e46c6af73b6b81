//! Running a whole pipeline on the simulated network.

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::Tensor;
use genrl::{MetricsLog, SimSwarm};
use models::data::Corpus;

use crate::error::{Error, Result};
use crate::probe::WeightProbe;
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
    /// Of `bytes_sent`, those of tensors handed to the receiving worker on their device, never copied
    /// through host memory ([`PipelineSpec::resident_tensors`](crate::PipelineSpec::resident_tensors)).
    pub resident_bytes: u64,
}

/// Trains `spec` on `corpus` on a simulated network (inside a paused tokio runtime; see
/// [`genrl::run_simulation`]).
pub async fn run_simulated(spec: &PipelineSpec, corpus: Arc<Corpus>) -> Result<RunReport> {
    spec.validate()?;
    corpus.check_fits(spec.seq)?;
    let swarm = SimSwarm::build(&spec.world, spec.seed)?;
    let spec_arc = Arc::new(spec.clone());
    let probe = (spec.replicas > 1).then(|| Arc::new(WeightProbe::new(spec.replicas)));
    let worker_probe = probe.clone();
    let results = swarm
        .run(move |ctx| {
            let (spec, corpus, probe) = (spec_arc.clone(), corpus.clone(), worker_probe.clone());
            async move {
                run_worker(ctx, spec, corpus, probe).await.map_err(|e| genrl::Error::config("worker", e.to_string()))
            }
        })
        .await;
    let mut replica_weights = vec![BTreeMap::new(); spec.replicas];
    for result in results {
        let w = result?;
        replica_weights[w.replica].extend(w.weights);
    }
    let mut metrics = swarm.metrics().snapshot();
    for (step, variance) in probe.map(|p| p.variance_by_step()).unwrap_or_default() {
        metrics.series.entry("weight_variance".into()).or_default().push(genrl::metrics::Sample {
            agent: None,
            step,
            time: std::time::Duration::ZERO,
            value: variance,
        });
    }
    let weights = replica_weights.first().cloned().ok_or_else(|| Error::config("pipeline", "no replicas"))?;
    let total = swarm.network().total();
    Ok(RunReport {
        metrics,
        weights,
        replica_weights,
        virtual_time: swarm.network().now(),
        bytes_sent: total.sent_bytes,
        resident_bytes: total.resident_bytes,
    })
}
