//! Matrix multiplication with one fixed order per output element.
//!
//! `C = A · B` with `A` m×k, `B` k×n, all row-major and contiguous, is *defined* as
//! `C[i][j] = fma(A[i][k-1], B[k-1][j], … fma(A[i][1], B[1][j], fma(A[i][0], B[0][j], 0.0)))`:
//! one fused multiply-add per term, in increasing `k`, starting from +0. Every path computes exactly that.
//! The AVX2 and AVX-512 paths are register-blocked kernels (tiles of 6 rows × 16 columns and 12 rows × 32
//! columns of accumulators, `B` packed into panels as wide as a tile, `k` split into cache-sized blocks
//! whose partial sums are stored and reloaded — which continues the same sequence; a transposed `A` read
//! where it is stored); threads split the rows (or, in a batch, the products), never a sum. So the bits
//! do not depend on the thread count, the tiling or the instruction set.

use std::borrow::Cow;
use std::cell::Cell;

use rayon::prelude::*;

use crate::simd::SimdLevel;

/// Rows of `C` in one block of the split between threads where no kernel's tile sets it.
const ROW_BLOCK: usize = 6;

/// Tasks per thread when a product's rows are split: equal tasks of whole row blocks, a few per thread
/// so that a helper that starts late still takes its share.
const TASKS_PER_THREAD: usize = 2;

/// Multiply-adds below which a task is not worth handing to another thread (a few microseconds).
const MIN_TASK_WORK: usize = 1 << 17;

/// One product `C = op(A) · op(B)`: `C` is m×n, the inner dimension k; `op` transposes an operand
/// stored the other way round (`A` as k×m, `B` as n×k). Each element of `C` is the defining fma chain
/// whichever way its operands are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Form {
    /// Rows of `C`.
    pub m: usize,
    /// The inner dimension.
    pub k: usize,
    /// Columns of `C`.
    pub n: usize,
    /// `A` is stored k×m.
    pub transpose_a: bool,
    /// `B` is stored n×k.
    pub transpose_b: bool,
}

/// `c = a · b` for row-major `a` (m×k), `b` (k×n), `c` (m×n).
pub fn matmul(a: &[f32], b: &[f32], c: &mut [f32], m: usize, k: usize, n: usize, level: SimdLevel) {
    product(a, b, c, Form { m, k, n, transpose_a: false, transpose_b: false }, level);
}

/// `c = op(a) · op(b)` as `form` says, `c` row-major m×n, on the current rayon pool.
pub fn product(a: &[f32], b: &[f32], c: &mut [f32], form: Form, level: SimdLevel) {
    product_on(a, b, c, form, level, rayon::current_num_threads());
}

/// [`product`] split among `threads` threads (1: on this thread alone).
#[allow(unsafe_code)] // calls the AVX2 and AVX-512 kernels after checking the CPU supports them
fn product_on(a: &[f32], b: &[f32], c: &mut [f32], form: Form, level: SimdLevel, threads: usize) {
    let Form { m, k, n, transpose_a, transpose_b } = form;
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n, "matmul buffer too small");
    let c = &mut c[..m * n];
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c.fill(0.0);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if level.has_avx2_fma() {
        use x86::{avx2, avx512};
        // SAFETY: the level is Avx512 only when the CPU has AVX-512F, and any level above Scalar only
        // when it has AVX2 and FMA (see `simd::detected`).
        unsafe {
            if level == SimdLevel::Avx512 {
                x86::product::<{ avx512::NR }>(avx512::MR, avx512::rows, a, b, c, form, threads);
            } else {
                x86::product::<{ avx2::NR }>(avx2::MR, avx2::rows, a, b, c, form, threads);
            }
        }
        return;
    }
    let _ = level;
    // The scalar path reads `A` row by row: a transposed `A` is turned first (an exact copy).
    let a: Cow<'_, [f32]> = if transpose_a { Cow::Owned(transpose(&a[..k * m], k, m)) } else { Cow::Borrowed(a) };
    let b: Cow<'_, [f32]> = if transpose_b { Cow::Owned(transpose(&b[..n * k], n, k)) } else { Cow::Borrowed(b) };
    for_row_tasks(c, (m, k, n), ROW_BLOCK, threads, |row0, c_rows| {
        for (r, c_row) in c_rows.chunks_exact_mut(n).enumerate() {
            scalar_row(&a[(row0 + r) * k..(row0 + r + 1) * k], &b, c_row, n);
        }
    });
}

/// Runs `f(first_row, rows_of_c)` over `c`'s m rows (of n columns, each k multiply-adds) split into
/// equal tasks of whole blocks of `block` rows (a kernel's tile) — about [`TASKS_PER_THREAD`] per
/// thread, sizes differing by at most one block, none under [`MIN_TASK_WORK`] — in parallel when there
/// is more than one.
fn for_row_tasks(
    c: &mut [f32],
    (m, k, n): (usize, usize, usize),
    block: usize,
    threads: usize,
    f: impl Fn(usize, &mut [f32]) + Sync,
) {
    let blocks = m.div_ceil(block);
    let by_work = (m * k * n / MIN_TASK_WORK).max(1);
    let tasks = (threads * TASKS_PER_THREAD).min(blocks).min(by_work);
    if tasks <= 1 {
        f(0, c);
        return;
    }
    let mut pieces = Vec::with_capacity(tasks);
    let (mut rest, mut row0) = (c, 0);
    for t in 1..=tasks {
        let end = (t * blocks / tasks * block).min(m);
        let (piece, tail) = rest.split_at_mut((end - row0) * n);
        pieces.push((row0, piece));
        (rest, row0) = (tail, end);
    }
    pieces.into_par_iter().for_each(|(row0, piece)| f(row0, piece));
}

/// Floats of packing buffer a thread keeps between products (4 MiB): a larger one, for a product long
/// enough that allocating it costs little beside the product, is freed after it, so that many threads
/// do not each hold one.
const KEPT_SCRATCH: usize = 1 << 20;

thread_local! {
    /// Each thread's buffer for packed operands, kept between products up to [`KEPT_SCRATCH`].
    static SCRATCH: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` with this thread's scratch buffer (a fresh one if it is in use further up the stack).
fn with_scratch<R>(f: impl FnOnce(&mut Vec<f32>) -> R) -> R {
    let mut scratch = SCRATCH.take();
    let out = f(&mut scratch);
    if scratch.capacity() <= KEPT_SCRATCH {
        SCRATCH.set(scratch);
    }
    out
}

/// One row of `C` by the defining formula; the inner loop walks `B` row by row for locality, which
/// does not change any element's sequence of operations.
fn scalar_row(a_row: &[f32], b: &[f32], c_row: &mut [f32], n: usize) {
    c_row.fill(0.0);
    for (p, &a_ip) in a_row.iter().enumerate() {
        let b_row = &b[p * n..(p + 1) * n];
        for (c, &b_pj) in c_row.iter_mut().zip(b_row) {
            *c = a_ip.mul_add(b_pj, *c);
        }
    }
}

/// Batched `c[i] = op(a[i]) · op(b[i])` over `batch` products stored one after another; with `shared_b`
/// one `b` serves the whole batch.
pub fn batched_matmul(a: &[f32], b: &[f32], c: &mut [f32], batch: usize, form: Form, shared_b: bool, level: SimdLevel) {
    let Form { m, k, n, .. } = form;
    if shared_b && !form.transpose_a {
        // One right-hand side and plain rows of `A`: a single product over all the batch's rows.
        product(a, b, c, Form { m: batch * m, ..form }, level);
        return;
    }
    if m * n == 0 {
        return;
    }
    let b_stride = if shared_b { 0 } else { k * n };
    let threads = rayon::current_num_threads();
    let one = |i: usize, c: &mut [f32], threads: usize| {
        let (a, b) = (&a[i * m * k..(i + 1) * m * k], &b[i * b_stride..i * b_stride + k * n]);
        product_on(a, b, c, form, level, threads);
    };
    let c = &mut c[..batch * m * n];
    if batch >= threads * TASKS_PER_THREAD && batch * m * k * n >= 2 * MIN_TASK_WORK {
        // Enough products, and work, to share them out whole: each runs on one thread.
        c.par_chunks_mut(m * n).enumerate().for_each(|(i, c)| one(i, c, 1));
    } else {
        for (i, c) in c.chunks_mut(m * n).enumerate() {
            one(i, c, threads);
        }
    }
}

/// Transpose of a row-major `rows × cols` matrix (an exact copy).
pub fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0f32; rows * cols];
    const T: usize = 32;
    for r0 in (0..rows).step_by(T) {
        for c0 in (0..cols).step_by(T) {
            for r in r0..(r0 + T).min(rows) {
                for c in c0..(c0 + T).min(cols) {
                    out[c * rows + r] = x[r * cols + c];
                }
            }
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86 {
    //! Register-blocked kernels: `B` packed into panels of `NR` columns, `C` computed in tiles of up to
    //! `MR` rows × `NR` columns held in registers, `k` split into blocks of [`KC`] whose partial sums are
    //! stored and reloaded (which continues each element's chain of multiply-adds where it stopped).

    use rayon::prelude::*;

    /// Depth of one cache block of `k`.
    const KC: usize = 256;

    /// Floats of `B` below which packing stays on one thread.
    const PARALLEL_PACK: usize = 1 << 16;

    /// A kernel's entry: rows of `A` (laid out as the strides say) times packed `B` into rows of `C`, given
    /// the rows, `k` and `n` (see [`sweep`]).
    pub(super) type Rows = unsafe fn(&[f32], Strides, &[f32], &mut [f32], usize, usize, usize);

    /// `c = op(a) · op(b)` as `form` says, `c` the m×n product (k, m, n > 0): `B` packed in panels of
    /// `NR` columns, then the kernel `rows`, whose tiles are `mr` rows high, on tasks of whole tiles
    /// split among `threads`.
    ///
    /// # Safety
    ///
    /// The CPU has the features `rows` is compiled for.
    pub(super) unsafe fn product<const NR: usize>(
        mr: usize,
        rows: Rows,
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
        form: super::Form,
        threads: usize,
    ) {
        let super::Form { m, k, n, transpose_a, transpose_b } = form;
        // Packing reads `B` either way round at the same cost, and the kernel reads `A` where it is
        // stored: element (i, p) at `i·rows + p·columns`.
        let strides = if transpose_a { Strides { rows: 1, columns: m } } else { Strides { rows: k, columns: 1 } };
        let a = &a[..m * k];
        super::with_scratch(|scratch| {
            let packed = pack_b::<NR>(b, k, n, transpose_b, scratch, threads);
            super::for_row_tasks(c, (m, k, n), mr, threads, |row0, c_rows| {
                let count = c_rows.len() / n;
                // SAFETY: the caller vouches for the CPU's features; `a` holds every row.
                unsafe { rows(&a[row0 * strides.rows..], strides, packed, c_rows, count, k, n) };
            });
        });
    }

    /// Where `A`'s elements are: element (i, p) at `i·rows + p·columns` (`(k, 1)` for a row-major
    /// m×k `A`, `(1, m)` for one stored transposed).
    #[derive(Debug, Clone, Copy)]
    pub(super) struct Strides {
        pub(super) rows: usize,
        pub(super) columns: usize,
    }

    /// `B` (k×n, or n×k stored `transposed`) as ceil(n/NR) panels, each k rows of `NR` columns,
    /// zero-padded on the right; in `scratch`, whose first elements it returns. Panels are packed on
    /// up to `threads` threads.
    pub(super) fn pack_b<'s, const NR: usize>(
        b: &[f32],
        k: usize,
        n: usize,
        transposed: bool,
        scratch: &'s mut Vec<f32>,
        threads: usize,
    ) -> &'s [f32] {
        let len = n.div_ceil(NR) * k * NR;
        if scratch.len() < len {
            scratch.resize(len, 0.0);
        }
        let packed = &mut scratch[..len];
        let panel = |(jp, panel): (usize, &mut [f32])| {
            if transposed {
                pack_panel_transposed::<NR>(b, k, n, jp * NR, panel)
            } else {
                pack_panel::<NR>(b, k, n, jp * NR, panel)
            }
        };
        if threads > 1 && k * n >= PARALLEL_PACK {
            packed.par_chunks_mut(k * NR).enumerate().for_each(panel);
        } else {
            packed.chunks_mut(k * NR).enumerate().for_each(panel);
        }
        packed
    }

    /// Columns `j0..j0 + NR` of a k×n `B` (zeros past n) into `panel`, row by row.
    fn pack_panel<const NR: usize>(b: &[f32], k: usize, n: usize, j0: usize, panel: &mut [f32]) {
        let w = NR.min(n - j0);
        for (p, out) in panel.chunks_exact_mut(NR).enumerate().take(k) {
            let row = &b[p * n + j0..p * n + j0 + w];
            if let (Ok(out), Ok(row)) = (<&mut [f32; NR]>::try_from(&mut *out), <&[f32; NR]>::try_from(row)) {
                // A copy of a known number of floats is a few vector moves, not a call to memcpy.
                *out = *row;
            } else {
                out[..w].copy_from_slice(row);
                out[w..].fill(0.0);
            }
        }
    }

    /// [`pack_panel`] for `B` stored transposed (n×k): panel row p is element p of rows `j0..j0 + NR`.
    /// Taken in squares of NR × NR, which stay in the L1 cache while they are turned.
    fn pack_panel_transposed<const NR: usize>(bt: &[f32], k: usize, n: usize, j0: usize, panel: &mut [f32]) {
        let w = NR.min(n - j0);
        for p0 in (0..k).step_by(NR) {
            let depth = NR.min(k - p0);
            let square = &mut panel[p0 * NR..(p0 + depth) * NR];
            for jj in 0..w {
                let column = &bt[(j0 + jj) * k + p0..(j0 + jj) * k + p0 + depth];
                for (p, &x) in column.iter().enumerate() {
                    square[p * NR + jj] = x;
                }
            }
            if w < NR {
                square.chunks_exact_mut(NR).for_each(|row| row[w..].fill(0.0));
            }
        }
    }

    /// One tile's work, as a kernel is called for it: up to `MR` rows of `A` from the tile's first row
    /// and the block's first `p`, the panel's rows of the block, the block's depth, `C` from the tile's
    /// first element, `C`'s row stride, the tile's columns, and whether the block is the first (the sums
    /// start at +0 rather than from `C`).
    struct Tile<'a> {
        a: &'a [f32],
        panel: &'a [f32],
        kc: usize,
        c: &'a mut [f32],
        ldc: usize,
        cols: usize,
        first: bool,
    }

    /// Rows `a` (rows×k, laid out as `strides` say) times packed `B` (panels of `NR`), into `c` (rows×n),
    /// calling `tile(rows_in_tile, …)` for each tile of up to `MR` rows: for each block of `k`, for each
    /// panel, down the rows.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn sweep<const NR: usize, const MR: usize>(
        a: &[f32],
        strides: Strides,
        packed: &[f32],
        c: &mut [f32],
        rows: usize,
        k: usize,
        n: usize,
        mut tile: impl FnMut(usize, Strides, Tile<'_>),
    ) {
        let panels = n.div_ceil(NR);
        let mut p0 = 0;
        while p0 < k {
            let kc = KC.min(k - p0);
            for jp in 0..panels {
                let j0 = jp * NR;
                let panel = &packed[jp * k * NR + p0 * NR..jp * k * NR + (p0 + kc) * NR];
                let mut r0 = 0;
                while r0 < rows {
                    let mr = MR.min(rows - r0);
                    let t = Tile {
                        a: &a[r0 * strides.rows + p0 * strides.columns..],
                        panel,
                        kc,
                        c: &mut c[r0 * n + j0..],
                        ldc: n,
                        cols: NR.min(n - j0),
                        first: p0 == 0,
                    };
                    tile(mr, strides, t);
                    r0 += mr;
                }
            }
            p0 += kc;
        }
    }

    /// Defines a kernel module's entry, `rows` (a [`Rows`]), compiled with the CPU features `$features`:
    /// [`sweep`] over the module's `NR`-column panels and `MR`-row tiles, each tile handed to the
    /// module's `kernel::<R>` for its row count `R`, one of those listed (the last also takes any other).
    macro_rules! rows_entry {
        ($features:literal; $($r:literal),+; $last:literal) => {
            /// Rows `a` times `packed` (panels of [`NR`]) into `c`: see [`super::sweep`].
            #[target_feature(enable = $features)]
            pub(in super::super) unsafe fn rows(
                a: &[f32],
                strides: Strides,
                packed: &[f32],
                c: &mut [f32],
                rows: usize,
                k: usize,
                n: usize,
            ) {
                super::sweep::<NR, MR>(a, strides, packed, c, rows, k, n, |mr, strides, tile| {
                    // SAFETY: this function's CPU features; `sweep` hands each tile slices that hold
                    // its rows of `A` and `C` and its panel rows.
                    unsafe {
                        match mr {
                            $($r => kernel::<$r>(strides, tile),)+
                            _ => kernel::<$last>(strides, tile),
                        }
                    }
                });
            }
        };
    }

    /// Eight-lane kernels: tiles of 6 rows × 16 columns (12 accumulators).
    pub(super) mod avx2 {
        use std::arch::x86_64::*;

        use super::{Strides, Tile};

        /// Columns per packed panel (two 8-lane registers).
        pub(in super::super) const NR: usize = 16;
        /// Rows per tile.
        pub(in super::super) const MR: usize = 6;

        rows_entry!("avx2,fma"; 6, 5, 4, 3, 2; 1);

        /// `R` rows × 16 columns of C, continuing their sums over `kc` more terms (or starting them).
        #[target_feature(enable = "avx2,fma")]
        unsafe fn kernel<const R: usize>(strides: Strides, t: Tile<'_>) {
            let Tile { a, panel, kc, c, ldc, cols, first } = t;
            let mut lo = [_mm256_setzero_ps(); R];
            let mut hi = [_mm256_setzero_ps(); R];
            let full = cols == NR;
            assert!(c.len() >= (R - 1) * ldc + cols);
            if !first && full {
                for r in 0..R {
                    // SAFETY: row r's 16 elements are inside `c` (the assert above).
                    unsafe {
                        lo[r] = _mm256_loadu_ps(c.as_ptr().add(r * ldc));
                        hi[r] = _mm256_loadu_ps(c.as_ptr().add(r * ldc + 8));
                    }
                }
            } else if !first {
                for r in 0..R {
                    let mut tile = [0f32; NR];
                    tile[..cols].copy_from_slice(&c[r * ldc..r * ldc + cols]);
                    // SAFETY: `tile` holds 16 f32s.
                    unsafe {
                        lo[r] = _mm256_loadu_ps(tile.as_ptr());
                        hi[r] = _mm256_loadu_ps(tile.as_ptr().add(8));
                    }
                }
            }
            let Strides { rows: rs, columns: cs } = strides;
            assert!(panel.len() >= kc * NR && a.len() > (R - 1) * rs + (kc - 1) * cs);
            let (pp, ap) = (panel.as_ptr(), a.as_ptr());
            for p in 0..kc {
                // SAFETY: p < kc, and the assert above bounds both reads.
                unsafe {
                    let b0 = _mm256_loadu_ps(pp.add(p * NR));
                    let b1 = _mm256_loadu_ps(pp.add(p * NR + 8));
                    for r in 0..R {
                        let av = _mm256_broadcast_ss(&*ap.add(r * rs + p * cs));
                        lo[r] = _mm256_fmadd_ps(av, b0, lo[r]);
                        hi[r] = _mm256_fmadd_ps(av, b1, hi[r]);
                    }
                }
            }
            for r in 0..R {
                if full {
                    // SAFETY: as for the loads.
                    unsafe {
                        _mm256_storeu_ps(c.as_mut_ptr().add(r * ldc), lo[r]);
                        _mm256_storeu_ps(c.as_mut_ptr().add(r * ldc + 8), hi[r]);
                    }
                    continue;
                }
                let mut tile = [0f32; NR];
                // SAFETY: `tile` holds 16 f32s.
                unsafe {
                    _mm256_storeu_ps(tile.as_mut_ptr(), lo[r]);
                    _mm256_storeu_ps(tile.as_mut_ptr().add(8), hi[r]);
                }
                c[r * ldc..r * ldc + cols].copy_from_slice(&tile[..cols]);
            }
        }
    }

    /// Sixteen-lane kernels: tiles of 12 rows × 32 columns (24 of the 32 vector registers accumulate).
    /// Each lane runs the same fused multiply-add chain as an AVX2 lane or the scalar definition.
    pub(super) mod avx512 {
        use std::arch::x86_64::*;

        use super::{Strides, Tile};

        /// Columns per packed panel (two 16-lane registers).
        pub(in super::super) const NR: usize = 32;
        /// Rows per tile.
        pub(in super::super) const MR: usize = 12;

        rows_entry!("avx512f"; 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2; 1);

        /// The lanes of a 16-lane half of a tile row that hold columns of `C`, of `cols` from the row's
        /// first column `from`.
        fn lanes(cols: usize, from: usize) -> __mmask16 {
            let live = cols.saturating_sub(from).min(16);
            ((1u32 << live) - 1) as __mmask16
        }

        /// `R` rows × 32 columns of C, continuing their sums over `kc` more terms (or starting them).
        /// Columns past `cols` are neither read nor written (masked loads and stores).
        #[target_feature(enable = "avx512f")]
        unsafe fn kernel<const R: usize>(strides: Strides, t: Tile<'_>) {
            let Tile { a, panel, kc, c, ldc, cols, first } = t;
            let mut lo = [_mm512_setzero_ps(); R];
            let mut hi = [_mm512_setzero_ps(); R];
            let (lo_lanes, hi_lanes) = (lanes(cols, 0), lanes(cols, 16));
            // Whether the tile reaches into the second half (else that half is padding, never touched).
            let two = cols > 16;
            assert!(c.len() >= (R - 1) * ldc + cols);
            if !first {
                for r in 0..R {
                    // SAFETY: the masks enable only the row's `cols` elements, which are inside `c`
                    // (the assert above); the second half's pointer is formed only when it has some.
                    unsafe {
                        lo[r] = _mm512_maskz_loadu_ps(lo_lanes, c.as_ptr().add(r * ldc));
                        if two {
                            hi[r] = _mm512_maskz_loadu_ps(hi_lanes, c.as_ptr().add(r * ldc + 16));
                        }
                    }
                }
            }
            let Strides { rows: rs, columns: cs } = strides;
            assert!(panel.len() >= kc * NR && a.len() > (R - 1) * rs + (kc - 1) * cs);
            let (pp, ap) = (panel.as_ptr(), a.as_ptr());
            for p in 0..kc {
                // SAFETY: p < kc, and the assert above bounds both reads.
                unsafe {
                    let b0 = _mm512_loadu_ps(pp.add(p * NR));
                    let b1 = _mm512_loadu_ps(pp.add(p * NR + 16));
                    for r in 0..R {
                        let av = _mm512_set1_ps(*ap.add(r * rs + p * cs));
                        lo[r] = _mm512_fmadd_ps(av, b0, lo[r]);
                        hi[r] = _mm512_fmadd_ps(av, b1, hi[r]);
                    }
                }
            }
            for r in 0..R {
                // SAFETY: as for the loads.
                unsafe {
                    _mm512_mask_storeu_ps(c.as_mut_ptr().add(r * ldc), lo_lanes, lo[r]);
                    if two {
                        _mm512_mask_storeu_ps(c.as_mut_ptr().add(r * ldc + 16), hi_lanes, hi[r]);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd;

    fn data(len: usize, seed: u32) -> Vec<f32> {
        let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    fn reference(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0f32;
                for p in 0..k {
                    acc = a[i * k + p].mul_add(b[p * n + j], acc);
                }
                c[i * n + j] = acc;
            }
        }
        c
    }

    #[test]
    fn every_path_and_thread_count_matches_the_definition() {
        // 50×513×40 and 31×300×230 are split into row tasks, the latter packed on several threads
        // (k·n ≥ 2^16); the others end in partial tiles of both kernels' widths.
        let shapes = [
            (1, 1, 1),
            (7, 300, 33),
            (13, 5, 17),
            (6, 256, 16),
            (12, 256, 32),
            (97, 64, 3),
            (50, 513, 40),
            (31, 300, 230),
            (25, 70, 48),
        ];
        for &(m, k, n) in &shapes {
            let (a, b) = (data(m * k, 1), data(k * n, 2));
            let want = reference(&a, &b, m, k, n);
            for level in simd::available() {
                for threads in [1, 2, 3, 8] {
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
                    let mut c = vec![f32::NAN; m * n];
                    pool.install(|| matmul(&a, &b, &mut c, m, k, n, level));
                    let same = c.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(same, "{m}x{k}x{n} {level:?} {threads} threads");
                }
            }
            // Operands stored transposed give the same bits.
            let (at, bt) = (transpose(&a, m, k), transpose(&b, k, n));
            for level in simd::available() {
                for threads in [1, 3] {
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
                    for (transpose_a, transpose_b) in [(true, false), (false, true), (true, true)] {
                        let form = Form { m, k, n, transpose_a, transpose_b };
                        let (a, b) = (if transpose_a { &at } else { &a }, if transpose_b { &bt } else { &b });
                        let mut c = vec![f32::NAN; m * n];
                        pool.install(|| product(a, b, &mut c, form, level));
                        let same = c.iter().zip(&want).all(|(x, y)| x.to_bits() == y.to_bits());
                        assert!(same, "{form:?} {level:?} {threads} threads");
                    }
                }
            }
            // And it is a matrix product: close to the f64 result.
            for i in 0..m {
                for j in 0..n {
                    let exact: f64 = (0..k).map(|p| a[i * k + p] as f64 * b[p * n + j] as f64).sum();
                    assert!((want[i * n + j] as f64 - exact).abs() <= 1e-5 * k as f64);
                }
            }
        }
    }

    /// A batch of products, each the defining chains whichever way the operands are stored: shared out
    /// whole among threads (9 products on up to 3 threads) or one after another, each split (8 threads).
    #[test]
    fn a_batch_is_each_product_on_any_thread_count() {
        let (batch, m, k, n) = (9, 13, 64, 45);
        let (a, b) = (data(batch * m * k, 4), data(batch * k * n, 5));
        let item = |x: &[f32], i: usize, len: usize| x[i * len..(i + 1) * len].to_vec();
        let want: Vec<f32> =
            (0..batch).flat_map(|i| reference(&item(&a, i, m * k), &item(&b, i, k * n), m, k, n)).collect();
        let shared: Vec<f32> =
            (0..batch).flat_map(|i| reference(&item(&a, i, m * k), &item(&b, 0, k * n), m, k, n)).collect();
        let turned = |x: &[f32], rows: usize, cols: usize| -> Vec<f32> {
            (0..batch).flat_map(|i| transpose(&item(x, i, rows * cols), rows, cols)).collect()
        };
        let (at, bt) = (turned(&a, m, k), turned(&b, k, n));
        for level in simd::available() {
            for threads in [1, 2, 3, 8] {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
                for (transpose_a, transpose_b) in [(false, false), (true, false), (false, true), (true, true)] {
                    let form = Form { m, k, n, transpose_a, transpose_b };
                    let (a, b) = (if transpose_a { &at } else { &a }, if transpose_b { &bt } else { &b });
                    for (shared_b, want) in [(false, &want), (true, &shared)] {
                        let mut c = vec![f32::NAN; batch * m * n];
                        pool.install(|| batched_matmul(a, b, &mut c, batch, form, shared_b, level));
                        let same = c.iter().zip(want).all(|(x, y)| x.to_bits() == y.to_bits());
                        assert!(same, "{form:?} shared {shared_b} {level:?} {threads} threads");
                    }
                }
            }
        }
    }

    /// A thread keeps a packing buffer for the next product, but not one over [`KEPT_SCRATCH`].
    #[test]
    fn a_thread_keeps_only_a_small_packing_buffer() {
        let kept = || {
            SCRATCH.with(|s| {
                let v = s.take();
                let cap = v.capacity();
                s.set(v);
                cap
            })
        };
        let level = simd::available().into_iter().last().expect("a level");
        // Each product runs on the one thread of a new pool, which then reports what it kept.
        let product_with_b = |k: usize, n: usize| {
            let (a, b) = (data(3 * k, 1), data(k * n, 2));
            let mut c = vec![0f32; 3 * n];
            let form = Form { m: 3, k, n, transpose_a: false, transpose_b: true };
            rayon::ThreadPoolBuilder::new().num_threads(1).build().expect("pool").install(|| {
                product(&a, &b, &mut c, form, level);
                kept()
            })
        };
        if level.has_avx2_fma() {
            assert!(product_with_b(64, 64) >= 64 * 64, "a small buffer is kept");
        }
        assert!(product_with_b(1024, 1040) == 0, "a buffer over 4 MiB is freed");
    }

    #[test]
    fn empty_inner_dimension_gives_zeros() {
        let mut c = vec![1f32; 6];
        matmul(&[], &[], &mut c, 2, 0, 3, simd::current());
        assert!(c.iter().all(|&x| x == 0.0));
    }

    #[test]
    fn transpose_round_trips() {
        let x = data(37 * 45, 3);
        assert_eq!(transpose(&transpose(&x, 37, 45), 45, 37), x);
    }
}
