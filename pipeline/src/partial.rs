//! Inference with stages dropped: a trained model run through only some of its stages (the others act as
//! the identity), the way SkipPipe measures how robust a model is to layer omission.

use std::collections::BTreeMap;

use candle_core::Tensor;
use models::{Stage, StageInput};

use crate::error::{Error, Result};
use crate::plug::stage_order_problem;
use crate::spec::PipelineSpec;

/// A trained model, stage by stage, ready to be evaluated with any subset of its stages.
#[derive(Debug)]
pub struct StagedModel {
    stages: Vec<Stage>,
}

impl StagedModel {
    /// Builds the stages of `spec` and loads `weights` (by global parameter name, as
    /// [`RunReport::weights`](crate::RunReport) holds them); every parameter must be there, shaped right.
    pub fn new(spec: &PipelineSpec, weights: &BTreeMap<String, Tensor>) -> Result<Self> {
        let device = spec.device.clone();
        let mut stages = Vec::with_capacity(spec.stages);
        for stage_spec in spec.stage_specs()? {
            let stage = Stage::new(&spec.model, stage_spec, &device)?;
            let names: Vec<String> = stage.params().iter().map(|(n, _)| n.clone()).collect();
            for name in names {
                let w = weights.get(&name).ok_or_else(|| Error::config("weights", format!("no tensor for {name}")))?;
                stage.params().set(&name, w)?;
            }
            stages.push(stage);
        }
        Ok(Self { stages })
    }

    /// How many stages the model has.
    pub fn len(&self) -> usize {
        self.stages.len()
    }

    /// Whether the model has no stages.
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// The mean loss over `batches` (token ids, targets) running only the stages in `keep`, in that
    /// order. `keep` must start with the first stage (the embedding), end with the last (the head) and
    /// name no stage twice.
    pub fn loss_with(&self, keep: &[usize], batches: &[(Tensor, Tensor)]) -> Result<f64> {
        Ok(self.evaluate(keep, batches)?.loss)
    }

    /// The mean loss and the perplexity over `batches` running only the stages in `keep` (as
    /// [`StagedModel::loss_with`]). The perplexity is SkipPipe's: the mean over sequences of
    /// `exp(the sequence's mean loss)`, which weighs hard sequences more than `exp(mean loss)` does.
    pub fn evaluate(&self, keep: &[usize], batches: &[(Tensor, Tensor)]) -> Result<Evaluation> {
        let n = self.stages.len();
        if let Some(why) = stage_order_problem(keep.iter().copied(), n) {
            return Err(Error::config("keep", format!("stages {keep:?}: {why}")));
        }
        if batches.is_empty() {
            return Err(Error::config("batches", "no batches to evaluate"));
        }
        let (mut loss, mut perplexity, mut sequences) = (0.0, 0.0, 0usize);
        for (ids, targets) in batches {
            let mut hidden = self.stages[0].forward(StageInput::Tokens(ids))?;
            for &k in &keep[1..] {
                hidden = self.stages[k].forward(StageInput::Hidden(&hidden))?;
            }
            let head = &self.stages[n - 1];
            let rows = hidden.dim(0)?;
            let mut batch = 0.0;
            for i in 0..rows {
                let one = f64::from(head.loss(&hidden.narrow(0, i, 1)?, &targets.narrow(0, i, 1)?)?.to_vec0::<f32>()?);
                batch += one;
                perplexity += one.exp();
            }
            loss += batch / rows.max(1) as f64;
            sequences += rows;
        }
        Ok(Evaluation { loss: loss / batches.len() as f64, perplexity: perplexity / sequences.max(1) as f64 })
    }
}

/// What [`StagedModel::evaluate`] measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// Mean next-token loss, in nats (each batch's mean over its tokens, averaged over the batches).
    pub loss: f64,
    /// The mean over sequences of `exp(the sequence's mean loss)`.
    pub perplexity: f64,
}
