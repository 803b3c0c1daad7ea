//! The order in which masked kernels take their query blocks: pure index arithmetic, no device
//! code (the tests crate compiles this file and checks it).
//!
//! The hardware starts a grid's CTAs in index order. In causal attention a query block's work
//! grows with its position, so a grid numbered (batch, head)-major ends on whichever heads come
//! last, their heavy blocks included, and SMs idle while those finish. Numbered heaviest block
//! first over all heads, the grid ends on light blocks, but the CTAs running together then span
//! every head, and their K/V no longer fits in L2 (measured slower, `docs/perf-notes.md`). So the
//! heads go in groups of about `group_ctas / q_blocks`, each group heaviest block first: the CTAs
//! running together share a few heads' K/V, and only the last group's light blocks form the tail.

/// The work of the CTA started `linear`-th: `(q_block_rank, head_batch)`, where rank 0 is the
/// heaviest query block (the caller maps ranks to blocks) and `head_batch` indexes
/// `heads · batch`. Groups hold `group_ctas / q_blocks` heads (at least one); the last group may
/// hold fewer. A bijection of `0..q_blocks · head_batches` onto `0..q_blocks` x `0..head_batches`.
#[inline(always)]
pub fn heaviest_first(linear: u32, q_blocks: u32, head_batches: u32, group_ctas: u32) -> (u32, u32) {
    // Grids are never empty (host-validated).
    let (q_blocks, head_batches) = (q_blocks.max(1), head_batches.max(1));
    let group_heads = (group_ctas / q_blocks).max(1).min(head_batches);
    // (Each `max(1)` only lets the compiler drop a division-by-zero panic.)
    let group_ctas = (group_heads * q_blocks).max(1);
    let group = linear / group_ctas;
    let first_head = group * group_heads;
    let heads_in_group = (head_batches - first_head).min(group_heads).max(1);
    let within = linear - group * group_ctas;
    (within / heads_in_group, first_head + within % heads_in_group)
}
