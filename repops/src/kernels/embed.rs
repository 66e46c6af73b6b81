//! Embedding lookup and its backward pass, a scatter-add in token order.

use rayon::prelude::*;

/// `out[t] = table[ids[t]]`; ids must be `< vocab` (checked by the caller).
pub fn lookup(table: &[f32], ids: &[u32], out: &mut [f32], d: usize) {
    if d == 0 {
        return;
    }
    out.par_chunks_mut(d).zip(ids.par_iter()).for_each(|(o, &id)| {
        o.copy_from_slice(&table[id as usize * d..(id as usize + 1) * d]);
    });
}

/// `grad[v] = Σ_{t : ids[t] = v} dy[t]`, adding in increasing `t`. Threads split the embedding columns,
/// never the tokens, so every element's additions happen in the same order.
pub fn scatter_add(dy: &[f32], ids: &[u32], grad: &mut [f32], vocab: usize, d: usize) {
    const COLS: usize = 64;
    grad.fill(0.0);
    if d == 0 {
        return;
    }
    let col_blocks = d.div_ceil(COLS);
    // Each task owns a block of columns across all rows: gather them, then write back.
    let blocks: Vec<Vec<f32>> = (0..col_blocks)
        .into_par_iter()
        .map(|b| {
            let (c0, c1) = (b * COLS, ((b + 1) * COLS).min(d));
            let w = c1 - c0;
            let mut acc = vec![0f32; vocab * w];
            for (t, &id) in ids.iter().enumerate() {
                let dst = &mut acc[id as usize * w..(id as usize + 1) * w];
                for (o, &g) in dst.iter_mut().zip(&dy[t * d + c0..t * d + c1]) {
                    *o += g;
                }
            }
            acc
        })
        .collect();
    for (b, acc) in blocks.into_iter().enumerate() {
        let (c0, c1) = (b * COLS, ((b + 1) * COLS).min(d));
        let w = c1 - c0;
        for v in 0..vocab {
            grad[v * d + c0..v * d + c1].copy_from_slice(&acc[v * w..(v + 1) * w]);
        }
    }
}
