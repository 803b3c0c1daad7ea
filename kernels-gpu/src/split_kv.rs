//! The split-KV combine step: merges the f32 partial outputs that CTAs sharing one query block's
//! keys wrote, each weighted by its share of the softmax mass.
//!
//! With partial logsumexps `lse_s` and normalised partial outputs `O_s`, the row's logsumexp is
//! `lse = log Σ exp(lse_s)` and its output `O = Σ exp(lse_s − lse) · O_s`. An empty split has
//! `lse_s = −∞` and weight 0; a row with no visible key at all gets 0 and −∞.

use crate::abi::CombineParams;
use crate::arch;
use crate::tile::Element;

const LOG2_E: f32 = core::f32::consts::LOG2_E;
const LN_2: f32 = core::f32::consts::LN_2;

/// One warp merges the partial results of one (row, head, batch).
///
/// # Safety
/// Launched with grid `(seq_q, heads, batch)`, 32 threads, and parameters the host validated.
#[inline(always)]
pub unsafe fn combine<E: Element>(p: &CombineParams) {
    let (row, head, batch) = arch::block_idx();
    let lane = arch::lane_id();
    let rows_per_split = p.batch as u64 * p.heads as u64 * p.seq_q as u64;
    let row_index = (batch as u64 * p.heads as u64 + head as u64) * p.seq_q as u64 + row as u64;
    let partial_lse = |split: u32| -> f32 {
        // SAFETY: the host sized the partial logsumexps for every split and row.
        unsafe { *(p.lse_partial as *const f32).add((split as u64 * rows_per_split + row_index) as usize) }
    };
    let mut max = f32::NEG_INFINITY;
    for split in 0..p.splits {
        max = max.max(partial_lse(split));
    }
    let base = if max == f32::NEG_INFINITY { 0.0 } else { max };
    let mut sum = 0.0;
    for split in 0..p.splits {
        sum += arch::ex2((partial_lse(split) - base) * LOG2_E);
    }
    let lse = if sum > 0.0 { base + arch::lg2(sum) * LN_2 } else { f32::NEG_INFINITY };

    let head_dim = p.head_dim;
    let o_row = (p.o
        + 2 * (batch as u64 * p.o_strides.batch + head as u64 * p.o_strides.head + row as u64 * p.o_strides.row))
        as *mut u16;
    let mut d = lane;
    while d < head_dim {
        let mut acc = 0.0;
        for split in 0..p.splits {
            let weight = if sum > 0.0 { arch::ex2((partial_lse(split) - lse) * LOG2_E) } else { 0.0 };
            let index = (split as u64 * rows_per_split + row_index) * head_dim as u64 + d as u64;
            // SAFETY: the host sized the partial outputs for every split, row and dim.
            acc += weight * unsafe { *(p.o_partial as *const f32).add(index as usize) };
        }
        // SAFETY: element d of this row of O (host-validated).
        unsafe { *o_row.add(d as usize) = E::pack(acc, 0.0) as u16 };
        d += 32;
    }
    if p.lse != 0 && lane == 0 {
        // SAFETY: the host checked that the lse buffer covers every row of every head.
        unsafe { *(p.lse as *mut f32).add(row_index as usize) = lse };
    }
}
