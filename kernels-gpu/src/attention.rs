//! The FlashAttention-2 forward pass, generic over a kernel configuration.
//!
//! One CTA computes one block of `q_tile_rows` query rows of one (batch, head); each warp owns
//! 16 of those rows. Q is loaded once; K/V tiles stream through a `stages`-deep `cp.async` ring.
//! Per K/V tile a warp computes S = Q·Kᵀ (mma.sync), updates the running row max and row sum in
//! base 2 (online softmax), rescales its O accumulator, and adds P·V, with P converted to f16 in
//! registers: S and P never touch shared or global memory.

use crate::abi::{AttentionParams, Strides, TileConfig};
use crate::arch;
use crate::layout;
use crate::tile::{AFrag, CFrag, FragArray, SharedTile};

/// Everything fixed at compile time for one kernel entry point (FlashAttention-2's
/// `Kernel_traits`). The register-tile types carry lengths derived from `TILE`; the kernel checks
/// them at compile time.
pub trait KernelTraits {
    /// Tile sizes, warps and pipeline depth.
    const TILE: TileConfig;
    /// Whether query row `i` sees only keys `0..=i` (top-left aligned).
    const CAUSAL: bool;
    /// A fragments of one warp's 16 query rows: `head_dim / 16`.
    type QFrags: FragArray<AFrag>;
    /// Score accumulators of 16 rows x `kv_tile_rows` keys: `kv_tile_rows / 8`.
    type Scores: FragArray<CFrag>;
    /// Output accumulators of 16 rows x `head_dim`: `head_dim / 8`.
    type Output: FragArray<CFrag>;
}

const LN_2: f32 = core::f32::consts::LN_2;

/// Address of element (batch, head, row 0) of a tensor, as a pointer to f16 bits.
#[inline(always)]
fn head_ptr(addr: u64, strides: &Strides, batch: u32, head: u32) -> *mut u16 {
    (addr + 2 * (batch as u64 * strides.batch + head as u64 * strides.head)) as *mut u16
}

/// Running softmax state of the two rows (`g` and `g + 8`) whose scores a thread holds.
struct RowState {
    /// Running max of the scaled scores, in log2 units.
    max: [f32; 2],
    /// This thread's part of the running sum of `2^(score - max)`; the quad's parts are added at
    /// the end.
    sum: [f32; 2],
}

/// Computes one query block of one (batch, head).
///
/// # Safety
/// Launched with grid `(ceil(seq_q / q_tile_rows), heads, batch)`, `TILE.threads()` threads,
/// `TILE.smem_bytes()` bytes of dynamic shared memory, and parameters the host validated.
#[inline(always)]
pub unsafe fn attention_forward<C: KernelTraits>(p: &AttentionParams) {
    const {
        assert!(C::TILE.is_consistent());
        assert!(C::QFrags::LEN == C::TILE.head_dim / 16);
        assert!(C::Scores::LEN == C::TILE.kv_tile_rows / 8);
        assert!(C::Output::LEN == C::TILE.head_dim / 8);
    }
    let tile = C::TILE;
    let (q_rows, kv_rows, stages) = (tile.q_tile_rows as u32, tile.kv_tile_rows as u32, tile.stages);
    let thread = arch::thread_idx() as usize;
    let lane = arch::lane_id() as usize;
    let warp_row0 = 16 * arch::warp_id() as usize;
    let (block_x, head, batch) = arch::block_idx();

    // Causal: later query blocks see more keys; run them first so the grid's tail is short.
    let q_blocks = p.seq_q.div_ceil(q_rows);
    let q_block = if C::CAUSAL { q_blocks - 1 - block_x } else { block_x };
    let q_start = q_block * q_rows;
    let kv_end = if C::CAUSAL { p.seq_k.min(q_start + q_rows) } else { p.seq_k };
    let kv_blocks = kv_end.div_ceil(kv_rows) as usize;

    let q_row_stride = p.q_strides.row as u32;
    let k_row_stride = p.k_strides.row as u32;
    let v_row_stride = p.v_strides.row as u32;
    let o_row_stride = p.o_strides.row as u32;
    // SAFETY: q_start < seq_q, and the host checked that every row of every head is in bounds.
    let q_ptr = unsafe { head_ptr(p.q, &p.q_strides, batch, head).add((q_start * q_row_stride) as usize) };
    let k_ptr = head_ptr(p.k, &p.k_strides, batch, head);
    let v_ptr = head_ptr(p.v, &p.v_strides, batch, head);

    // Shared memory: [Q tile | K stage 0..stages | V stage 0..stages].
    let smem = arch::dynamic_smem_base();
    let q_tile = SharedTile::new(smem, tile.q_tile_rows, tile.head_dim);
    let kv_bytes = tile.tile_bytes(tile.kv_tile_rows) as u32;
    let k_tile = |stage: usize| {
        SharedTile::new(smem + q_tile.bytes() + stage as u32 * kv_bytes, tile.kv_tile_rows, tile.head_dim)
    };
    let v_tile = |stage: usize| {
        SharedTile::new(smem + q_tile.bytes() + (stages + stage) as u32 * kv_bytes, tile.kv_tile_rows, tile.head_dim)
    };
    let load_kv = |block: usize| {
        let stage = block % stages;
        let row0 = block as u32 * kv_rows;
        let valid = p.seq_k - row0;
        // SAFETY: row0 < seq_k; rows past seq_k are zero-filled, not read.
        unsafe {
            k_tile(stage).load_async(
                k_ptr.add((row0 * k_row_stride) as usize),
                k_row_stride,
                valid,
                thread,
                tile.threads(),
            );
            v_tile(stage).load_async(
                v_ptr.add((row0 * v_row_stride) as usize),
                v_row_stride,
                valid,
                thread,
                tile.threads(),
            );
        }
    };

    // Prologue: Q rides in the group of K/V tile 0; one group per tile, committed even when empty
    // so that "tile j has landed" is always "at most stages - 2 groups pending".
    // SAFETY: q_start < seq_q, so at least one Q row is valid.
    unsafe { q_tile.load_async(q_ptr, q_row_stride, p.seq_q - q_start, thread, tile.threads()) };
    for block in 0..stages - 1 {
        if block < kv_blocks {
            load_kv(block);
        }
        arch::cp_async_commit();
    }

    let mut q_frags = C::QFrags::splat([0; 4]);
    let mut out = C::Output::splat([0.0; 4]);
    let mut rows = RowState { max: [f32::NEG_INFINITY; 2], sum: [0.0; 2] };

    for block in 0..kv_blocks {
        arch::cp_async_wait(stages - 2);
        // After this barrier tile `block` is visible to all, and every warp is done with the
        // stage that the refill below overwrites (it held tile `block - 1`).
        arch::sync_threads();
        if block + stages - 1 < kv_blocks {
            load_kv(block + stages - 1);
        }
        arch::cp_async_commit();

        if block == 0 {
            for k_step in 0..C::QFrags::LEN {
                // SAFETY: converged warp; rows warp_row0..+16 are inside the Q tile.
                q_frags[k_step] = unsafe { q_tile.load_a(warp_row0, k_step) };
            }
        }
        let stage = block % stages;
        let kv_start = block as u32 * kv_rows;

        // S = Q·Kᵀ for this warp's 16 rows and the tile's keys.
        let mut scores = C::Scores::splat([0.0; 4]);
        for n_tile in 0..C::Scores::LEN {
            for k_pair in 0..C::QFrags::LEN / 2 {
                // SAFETY: converged warp; keys n_tile*8..+8 are inside the K tile.
                let b = unsafe { k_tile(stage).load_b_transposed_pair(8 * n_tile, k_pair) };
                scores[n_tile] = arch::mma_m16n8k16(q_frags[2 * k_pair], b[0], scores[n_tile]);
                scores[n_tile] = arch::mma_m16n8k16(q_frags[2 * k_pair + 1], b[1], scores[n_tile]);
            }
        }

        // Scale into log2 units; mask keys past the end and, if causal, above the diagonal.
        // Only tiles that hold such keys pay for the mask (the test is uniform per warp).
        let first_row = q_start + warp_row0 as u32;
        let needs_mask = kv_start + kv_rows > p.seq_k || (C::CAUSAL && kv_start + kv_rows - 1 > first_row);
        for n_tile in 0..C::Scores::LEN {
            for i in 0..4 {
                let mut x = scores[n_tile][i] * p.scale_log2;
                if needs_mask {
                    let (row, col) = layout::mma_c_coords(lane, i);
                    let key = kv_start + (8 * n_tile + col) as u32;
                    if key >= p.seq_k || (C::CAUSAL && key > first_row + row as u32) {
                        x = f32::NEG_INFINITY;
                    }
                }
                scores[n_tile][i] = x;
            }
        }

        // Online softmax: new row max over the quad, rescale of the old state, P = 2^(S - max).
        let mut rescale = [0.0f32; 2];
        for r in 0..2 {
            let mut tile_max = rows.max[r];
            for n_tile in 0..C::Scores::LEN {
                tile_max = tile_max.max(scores[n_tile][2 * r]).max(scores[n_tile][2 * r + 1]);
            }
            tile_max = tile_max.max(arch::shfl_xor(tile_max, 1));
            tile_max = tile_max.max(arch::shfl_xor(tile_max, 2));
            // A row with every key so far masked keeps max = -inf; use 0 so -inf - -inf is no NaN.
            let base = if tile_max == f32::NEG_INFINITY { 0.0 } else { tile_max };
            rescale[r] = arch::ex2(rows.max[r] - base);
            rows.max[r] = tile_max;
            let mut tile_sum = 0.0;
            for n_tile in 0..C::Scores::LEN {
                for h in 0..2 {
                    let e = arch::ex2(scores[n_tile][2 * r + h] - base);
                    scores[n_tile][2 * r + h] = e;
                    tile_sum += e;
                }
            }
            rows.sum[r] = rows.sum[r] * rescale[r] + tile_sum;
        }
        for d_tile in 0..C::Output::LEN {
            for i in 0..4 {
                out[d_tile][i] *= rescale[i / 2];
            }
        }

        // O += P·V with P packed to f16 straight from the score accumulators.
        for k_step in 0..C::Scores::LEN / 2 {
            let p_frag: AFrag = core::array::from_fn(|reg| {
                let (t0, e0) = layout::p_from_scores(reg, 0);
                let (t1, e1) = layout::p_from_scores(reg, 1);
                arch::pack_f16x2(scores[2 * k_step + t0][e0], scores[2 * k_step + t1][e1])
            });
            for n_pair in 0..C::Output::LEN / 2 {
                // SAFETY: converged warp; keys k_step*16..+16 are inside the V tile.
                let b = unsafe { v_tile(stage).load_b_pair(16 * k_step, n_pair) };
                out[2 * n_pair] = arch::mma_m16n8k16(p_frag, b[0], out[2 * n_pair]);
                out[2 * n_pair + 1] = arch::mma_m16n8k16(p_frag, b[1], out[2 * n_pair + 1]);
            }
        }
    }
    arch::cp_async_wait(0);

    // Epilogue: finish the row sums over the quad, normalise, stage the f16 rows in this warp's
    // part of the Q tile (only this warp read it) and write them out with 16-byte stores.
    let mut total = [0.0f32; 2];
    let mut inverse = [0.0f32; 2];
    for r in 0..2 {
        let mut sum = rows.sum[r];
        sum += arch::shfl_xor(sum, 1);
        sum += arch::shfl_xor(sum, 2);
        total[r] = sum;
        // Every valid row sees at least one key, so sum > 0; the guard keeps padding rows finite.
        inverse[r] = if sum > 0.0 { 1.0 / sum } else { 0.0 };
    }
    // The staging rows were last read by this warp's ldmatrix of Q (other lanes' addresses).
    arch::sync_warp();
    for d_tile in 0..C::Output::LEN {
        let mut frag = out[d_tile];
        for i in 0..4 {
            frag[i] *= inverse[i / 2];
        }
        // SAFETY: this warp's own 16 rows of the Q tile; no other warp touches them.
        unsafe { q_tile.store_c_f16(warp_row0, d_tile, frag) };
    }
    arch::sync_warp();
    let warp_start = q_start + warp_row0 as u32;
    if warp_start < p.seq_q {
        let valid = (p.seq_q - warp_start).min(16);
        // SAFETY: rows warp_start..warp_start+valid of O are in bounds (host-validated).
        unsafe {
            let o_ptr = head_ptr(p.o, &p.o_strides, batch, head).add((warp_start * o_row_stride) as usize);
            q_tile.store_rows16(warp_row0, o_ptr, o_row_stride, valid);
        }
    }

    if p.lse != 0 && lane % 4 == 0 {
        for r in 0..2 {
            let (row, _) = layout::mma_c_coords(lane, 2 * r);
            let q_row = warp_start + row as u32;
            if q_row < p.seq_q {
                let index = (batch as u64 * p.heads as u64 + head as u64) * p.seq_q as u64 + q_row as u64;
                let lse = (rows.max[r] + arch::lg2(total[r])) * LN_2;
                // SAFETY: the host checked that the lse buffer holds batch * heads * seq_q f32.
                unsafe { *(p.lse as *mut f32).add(index as usize) = lse };
            }
        }
    }
}
