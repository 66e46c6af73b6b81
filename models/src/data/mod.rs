//! Training data: the byte-level tokenizer, the synthetic language with a known entropy rate (the
//! default corpus), the shipped public-domain prose, text corpora from files, and seeded batch sampling.

mod synthetic;
mod text;
mod tokenizer;

pub use synthetic::{SyntheticConfig, SyntheticLanguage};
pub use text::{PROSE, load_text, prose};
pub use tokenizer::ByteTokenizer;

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{Error, Result};

/// Token streams to train and evaluate on.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// Where it came from, for reports.
    pub name: String,
    /// Training tokens.
    pub train: Vec<u32>,
    /// Held-out tokens.
    pub val: Vec<u32>,
    /// The source's entropy rate in nats per token, when known exactly (the loss floor).
    pub entropy_floor: Option<f64>,
}

impl Corpus {
    /// Checks that both splits hold at least one window of `seq + 1` tokens.
    pub fn check_fits(&self, seq: usize) -> Result<()> {
        for (split, tokens) in [("train", &self.train), ("validation", &self.val)] {
            if tokens.len() < seq + 1 {
                return Err(Error::Corpus {
                    path: self.name.clone().into(),
                    reason: format!(
                        "{split} split has {} tokens, fewer than one sequence of {}",
                        tokens.len(),
                        seq + 1
                    ),
                });
            }
        }
        Ok(())
    }
}

fn mix(seed: u64, a: u64, b: u64) -> u64 {
    let mut z = seed ^ a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b.wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A batch of `batch` random windows of `seq + 1` tokens from `tokens`, as inputs and next-token targets
/// (`[batch, seq]` u32 each). The windows are a pure function of `(seed, step, stream)`: replicas that
/// use different `stream`s see different data, and a rerun sees the same.
pub fn sample_batch(
    tokens: &[u32],
    batch: usize,
    seq: usize,
    seed: u64,
    step: u64,
    stream: u64,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    if tokens.len() < seq + 1 {
        return Err(Error::Input(format!("{} tokens cannot fill a window of {}", tokens.len(), seq + 1)));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(mix(seed, step, stream));
    let starts: Vec<usize> = (0..batch).map(|_| rng.random_range(0..=tokens.len() - seq - 1)).collect();
    windows(tokens, &starts, seq, device)
}

/// `count` evenly spaced windows over `tokens` (the same every call): a fixed validation set.
pub fn eval_batches(
    tokens: &[u32],
    count: usize,
    batch: usize,
    seq: usize,
    device: &Device,
) -> Result<Vec<(Tensor, Tensor)>> {
    if tokens.len() < seq + 1 {
        return Err(Error::Input(format!("{} tokens cannot fill a window of {}", tokens.len(), seq + 1)));
    }
    let span = tokens.len() - seq - 1;
    let total = (count * batch).max(1);
    let starts: Vec<usize> = (0..total).map(|i| i * span / total).collect();
    starts.chunks(batch).map(|s| windows(tokens, s, seq, device)).collect()
}

fn windows(tokens: &[u32], starts: &[usize], seq: usize, device: &Device) -> Result<(Tensor, Tensor)> {
    let mut ids = Vec::with_capacity(starts.len() * seq);
    let mut tgt = Vec::with_capacity(starts.len() * seq);
    for &s in starts {
        ids.extend_from_slice(&tokens[s..s + seq]);
        tgt.extend_from_slice(&tokens[s + 1..s + seq + 1]);
    }
    Ok((Tensor::from_vec(ids, (starts.len(), seq), device)?, Tensor::from_vec(tgt, (starts.len(), seq), device)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_pure_functions_of_seed_step_and_stream() -> Result<()> {
        let tokens: Vec<u32> = (0..1000).collect();
        let dev = Device::Cpu;
        let (a, ta) = sample_batch(&tokens, 4, 16, 7, 3, 0, &dev)?;
        let (b, _) = sample_batch(&tokens, 4, 16, 7, 3, 0, &dev)?;
        let (c, _) = sample_batch(&tokens, 4, 16, 7, 3, 1, &dev)?;
        assert_eq!(a.to_vec2::<u32>()?, b.to_vec2::<u32>()?);
        assert_ne!(a.to_vec2::<u32>()?, c.to_vec2::<u32>()?);
        // Targets are the inputs shifted by one.
        let (a, ta) = (a.to_vec2::<u32>()?, ta.to_vec2::<u32>()?);
        assert_eq!(a[0][1..], ta[0][..15]);
        assert!(sample_batch(&tokens[..10], 1, 16, 0, 0, 0, &dev).is_err());
        assert_eq!(eval_batches(&tokens, 3, 2, 16, &dev)?.len(), 3);
        Ok(())
    }
}
