//! The masked kernels' CTA order (`kernels-gpu/src/schedule.rs`, compiled here): every CTA gets
//! one distinct piece of work, and within a group of heads the heavy query blocks come first.

#[allow(dead_code)]
#[path = "../../kernels-gpu/src/schedule.rs"]
mod schedule;

use proptest::prelude::*;
use schedule::heaviest_first;
use std::collections::HashSet;

/// Checks the order of one grid and returns, per CTA in start order, its (rank, head_batch).
fn check(q_blocks: u32, head_batches: u32, group_ctas: u32) -> Vec<(u32, u32)> {
    let order: Vec<_> =
        (0..q_blocks * head_batches).map(|i| heaviest_first(i, q_blocks, head_batches, group_ctas)).collect();
    let distinct: HashSet<_> = order.iter().copied().collect();
    assert_eq!(distinct.len(), order.len(), "not a bijection: {q_blocks} blocks, {head_batches} heads, {group_ctas}");
    assert!(order.iter().all(|&(rank, hb)| rank < q_blocks && hb < head_batches));
    let group_heads = (group_ctas / q_blocks).clamp(1, head_batches);
    for (i, pair) in order.windows(2).enumerate() {
        let ((rank0, hb0), (rank1, hb1)) = (pair[0], pair[1]);
        if hb0 / group_heads == hb1 / group_heads {
            // Same group: heaviest (rank 0) first, heads in turn within a rank.
            assert!(rank1 > rank0 || (rank1 == rank0 && hb1 == hb0 + 1), "CTA {i}: {:?}", pair);
        } else {
            // The next group starts once this one is done, on its heaviest blocks.
            assert_eq!((hb1 / group_heads, rank0, rank1), (hb0 / group_heads + 1, q_blocks - 1, 0), "CTA {i}");
        }
    }
    order
}

#[test]
fn groups_of_heads_heaviest_block_first() {
    // 16 query blocks and 256 CTAs per group: 16 heads per group.
    let order = check(16, 128, 256);
    assert_eq!(order[0], (0, 0));
    assert_eq!(order[15], (0, 15));
    assert_eq!(order[16], (1, 0));
    assert_eq!(order[255], (15, 15));
    assert_eq!(order[256], (0, 16));
    assert_eq!(order.last(), Some(&(15, 127)));
}

#[test]
fn a_last_group_with_fewer_heads_and_more_blocks_than_a_group() {
    check(16, 20, 256); // the second group holds 4 heads
    check(300, 3, 256); // one head per group
    check(1, 1, 256);
    check(7, 1, 1);
}

proptest! {
    #[test]
    fn every_grid_is_covered_once(q_blocks in 1u32..80, head_batches in 1u32..80, group_ctas in 1u32..600) {
        check(q_blocks, head_batches, group_ctas);
    }
}
