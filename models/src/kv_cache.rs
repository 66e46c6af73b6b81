//! The key/value cache of incremental decoding.
//!
//! Generating a token with a decoder re-reads the whole prefix unless the attention keys and values of
//! the positions already seen are kept: with a [`KvCache`], each step runs the model on the new tokens
//! only, at their positions, and attends over the cached keys and values plus the new ones. The cache
//! is inference-only: what it holds is detached from the autograd graph.
//!
//! Rows are sequences. A batch of generations can share a prompt's cache ([`KvCache::select_rows`]
//! with repeated rows after one prefill of the unique prompts) and drop the rows that finished.

use candle_core::Tensor;

use crate::error::{Error, Result};

/// The cached keys and values of one block: each `[rows, heads, positions, head_dim]`.
#[derive(Debug, Clone)]
struct Entry {
    keys: Tensor,
    values: Tensor,
}

/// Keys and values of every position seen so far, per transformer block, for a batch of sequences.
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    /// Indexed by the block's global layer number; `None` until that block has run.
    layers: Vec<Option<Entry>>,
}

impl KvCache {
    /// An empty cache: the next forward pass starts at position 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Positions cached (the position of the next token), read from the first block that has run;
    /// 0 when none has.
    pub fn len(&self) -> usize {
        self.layers.iter().flatten().next().map_or(0, |e| e.keys.dims()[2])
    }

    /// Whether no position is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sequences (rows) cached; 0 when empty.
    pub fn rows(&self) -> usize {
        self.layers.iter().flatten().next().map_or(0, |e| e.keys.dims()[0])
    }

    /// Positions cached for block `layer` (0 if it has not run).
    pub(crate) fn past(&self, layer: usize) -> usize {
        self.layers.get(layer).and_then(Option::as_ref).map_or(0, |e| e.keys.dims()[2])
    }

    /// Appends the new positions' `keys` and `values` (`[rows, heads, new, head_dim]`) to block
    /// `layer`'s and returns the block's whole keys and values.
    pub(crate) fn append(&mut self, layer: usize, keys: &Tensor, values: &Tensor) -> Result<(Tensor, Tensor)> {
        if self.layers.len() <= layer {
            self.layers.resize(layer + 1, None);
        }
        let (keys, values) = (keys.detach(), values.detach());
        let entry = match self.layers[layer].take() {
            None => Entry { keys, values },
            Some(old) => {
                if old.keys.dims()[0] != keys.dims()[0] {
                    return Err(Error::Input(format!(
                        "{} new rows for a cache of {} rows",
                        keys.dims()[0],
                        old.keys.dims()[0]
                    )));
                }
                Entry { keys: Tensor::cat(&[&old.keys, &keys], 2)?, values: Tensor::cat(&[&old.values, &values], 2)? }
            }
        };
        let out = (entry.keys.clone(), entry.values.clone());
        self.layers[layer] = Some(entry);
        Ok(out)
    }

    /// Keeps the rows `rows` of the cache, in that order; a row may repeat (to share a prompt's cache
    /// between several continuations) or be left out (a finished sequence). Keeping none empties it.
    pub fn select_rows(&mut self, rows: &[usize]) -> Result<()> {
        let have = self.rows();
        if let Some(&bad) = rows.iter().find(|&&r| r >= have) {
            return Err(Error::Input(format!("row {bad} of a cache of {have} rows")));
        }
        if rows.is_empty() {
            self.layers.clear();
            return Ok(());
        }
        let Some(first) = self.layers.iter().flatten().next() else { return Ok(()) };
        let index: Vec<u32> = rows.iter().map(|&r| r as u32).collect();
        let index = Tensor::from_vec(index, rows.len(), first.keys.device())?;
        for entry in self.layers.iter_mut().flatten() {
            entry.keys = entry.keys.index_select(&index, 0)?;
            entry.values = entry.values.index_select(&index, 0)?;
        }
        Ok(())
    }
}
