//! The forward pass on Hopper (sm_90a): warp-specialised, TMA + `wgmma`.
//!
//! One CTA computes `64 * consumer_warpgroups` query rows of one (batch, head):
//! - warpgroup 0 is the producer: after giving up registers (`setmaxnreg.dec`), one thread loads
//!   Q once and streams K and V tiles with TMA into a `stages`-deep ring of shared-memory
//!   buffers. Each buffer has a "full" `mbarrier` (the copy engine completes its bytes on it) and
//!   an "empty" one (the consumers arrive when they are done reading it);
//! - warpgroups 1.. are consumers of 64 query rows each (`setmaxnreg.inc`): per K/V tile,
//!   S = Q·Kᵀ with `wgmma` from shared memory, the online softmax and masks of the mma.sync
//!   kernels on the S fragments (each warp's 16 rows have `mma.sync`'s accumulator layout),
//!   then O += P·V with P straight from registers.
//!
//! Tiles are 128-byte swizzled by the copy engine (`layout::sw128_offset`); `wgmma` reads them
//! through descriptors of the same swizzle.

use crate::abi::{
    AttentionParams, HopperConfig, HOPPER_BOX_COLS, HOPPER_CONSUMER_REGISTERS, HOPPER_PRODUCER_REGISTERS,
    TENSOR_MAP_K_OFFSET, TENSOR_MAP_Q_OFFSET, TENSOR_MAP_V_OFFSET,
};
use crate::arch::{self, hopper as hw};
use crate::attention::{mask, rescale_output, softmax_update, KernelTraits, Rescale, RowState};
use crate::layout::{self, SW128_ROW_BYTES};
use crate::tile::{AFrag, CFrag, Element, FragArray, WgmmaAccumulator};

/// A Hopper kernel configuration: the mma.sync kernels' traits (the per-warp view, for the
/// softmax and masks) plus the warp-specialised pipeline's parameters.
pub trait HopperTraits:
    KernelTraits<Scores: WgmmaAccumulator<Self::Elem>, Output: WgmmaAccumulator<Self::Elem>>
{
    /// Stages, tile sizes and warpgroups.
    const CONFIG: HopperConfig;
}

/// The CTA's shared memory: `[Q | K stages | V stages | barriers]`, tiles 1024-byte aligned.
#[derive(Clone, Copy)]
struct SharedLayout {
    q: u32,
    kv: u32,
    barriers: u32,
    config: HopperConfig,
}

impl SharedLayout {
    #[inline(always)]
    fn carve(config: HopperConfig) -> Self {
        // The swizzle pattern repeats every 1024 bytes and the copy engine and `wgmma` assume
        // atoms aligned to it (the host reserves the slack).
        let q = (arch::dynamic_smem_base() + 1023) & !1023;
        let kv = q + config.tile_bytes(config.q_tile_rows()) as u32;
        let barriers = kv + (2 * config.stages * config.tile_bytes(config.kv_tile_rows)) as u32;
        Self { q, kv, barriers, config }
    }

    #[inline(always)]
    fn k(&self, stage: usize) -> u32 {
        self.kv + (stage * self.config.tile_bytes(self.config.kv_tile_rows)) as u32
    }

    #[inline(always)]
    fn v(&self, stage: usize) -> u32 {
        self.k(self.config.stages + stage)
    }

    /// Completes when Q has landed.
    #[inline(always)]
    fn q_full(&self) -> u32 {
        self.barriers
    }

    /// Completes when K of the stage's current tile has landed.
    #[inline(always)]
    fn k_full(&self, stage: usize) -> u32 {
        self.barriers + 8 * (1 + stage) as u32
    }

    /// Completes when V of the stage's current tile has landed.
    #[inline(always)]
    fn v_full(&self, stage: usize) -> u32 {
        self.barriers + 8 * (1 + self.config.stages + stage) as u32
    }

    /// Completes when every consumer warp is done with the stage's current K (its S = Q·Kᵀ has
    /// completed): K is released a whole P·V earlier than V.
    #[inline(always)]
    fn k_empty(&self, stage: usize) -> u32 {
        self.barriers + 8 * (1 + 2 * self.config.stages + stage) as u32
    }

    /// Completes when every consumer warp is done with the stage's current V.
    #[inline(always)]
    fn v_empty(&self, stage: usize) -> u32 {
        self.barriers + 8 * (1 + 3 * self.config.stages + stage) as u32
    }
}

/// The K/V tiles a query block sees and its rows' key window (as in the mma.sync kernels:
/// query row i sees keys i + lo ..= i + hi, aligned to the bottom-right corner).
struct KeyRange {
    first_tile: u32,
    tiles: u32,
    lo: i32,
    hi: i32,
}

impl KeyRange {
    #[inline(always)]
    fn of<C: HopperTraits>(p: &AttentionParams, q_start: u32) -> Self {
        const UNBOUNDED: i32 = 1 << 30;
        let (kv_rows, q_rows) = (C::CONFIG.kv_tile_rows as u32, C::CONFIG.q_tile_rows() as i32);
        let shift = p.seq_k as i32 - p.seq_q as i32;
        let lo = if p.window_left >= 0 { shift - p.window_left } else { -UNBOUNDED };
        let hi = if p.window_right >= 0 { shift + p.window_right } else { UNBOUNDED };
        let seq_k = p.seq_k as i32;
        let (begin, end) = if C::MASKED {
            ((q_start as i32 + lo).clamp(0, seq_k) as u32, (q_start as i32 + q_rows + hi).clamp(0, seq_k) as u32)
        } else {
            (0, p.seq_k)
        };
        let first_tile = begin / kv_rows;
        Self { first_tile, tiles: end.div_ceil(kv_rows).saturating_sub(first_tile), lo, hi }
    }
}

/// Named barriers 1.. order the consumer warpgroups' GEMMs (0 is `bar.sync 0`).
const SCHEDULER_BARRIER: u32 = 1;

/// P of one K/V tile as `wgmma` A fragments, one per 16 keys (128 keys at most).
type Probs = [AFrag; 8];

/// Converts the probabilities in the score accumulators to A fragments of the element type.
#[inline(always)]
fn pack_probs<C: HopperTraits>(scores: &C::Scores, probs: &mut Probs) {
    for key_step in 0..C::CONFIG.kv_tile_rows / 16 {
        probs[key_step] = core::array::from_fn(|reg| {
            let (t0, e0) = layout::p_from_scores(reg, 0);
            let (t1, e1) = layout::p_from_scores(reg, 1);
            C::Elem::pack(scores[2 * key_step + t0][e0], scores[2 * key_step + t1][e1])
        });
    }
}

/// Computes one query block of one (batch, head).
///
/// # Safety
/// Launched with grid `(ceil(seq_q / q_tile_rows), heads, batch)`, `CONFIG.threads()` threads,
/// `CONFIG.smem_bytes()` bytes of dynamic shared memory, compiled with a cap of
/// `HOPPER_LAUNCH_REGISTERS` registers; `maps` is the generic address of the kernel's
/// `TensorMaps` parameter, encoded by the host for these tensors; parameters host-validated.
#[inline(always)]
pub unsafe fn attention_forward<C: HopperTraits>(p: &AttentionParams, maps: u64) {
    let config = C::CONFIG;
    const {
        assert!(C::CONFIG.is_consistent());
        assert!(C::Scores::LEN == C::CONFIG.kv_tile_rows / 8);
        assert!(C::Output::LEN == C::CONFIG.head_dim / 8);
        assert!(C::RowValues::LEN == 2);
        assert!(C::CONFIG.kv_tile_rows / 16 <= 8); // `Probs`
    }
    let smem = SharedLayout::carve(config);
    let thread = arch::thread_idx();
    let (block_x, head, batch) = arch::block_idx();
    let q_rows = config.q_tile_rows() as u32;
    // Causal: later query blocks see more keys; run them first so the grid's tail is short.
    let q_blocks = p.seq_q.div_ceil(q_rows);
    let q_start = if C::MASKED { q_blocks - 1 - block_x } else { block_x } * q_rows;
    let keys = KeyRange::of::<C>(p, q_start);

    if thread == 0 {
        // SAFETY: one thread initialises each barrier once, before the CTA barrier below.
        unsafe {
            hw::mbarrier_init(smem.q_full(), 1);
            for stage in 0..config.stages {
                hw::mbarrier_init(smem.k_full(stage), 1);
                hw::mbarrier_init(smem.v_full(stage), 1);
                hw::mbarrier_init(smem.k_empty(stage), 4 * config.consumer_warpgroups as u32);
                hw::mbarrier_init(smem.v_empty(stage), 4 * config.consumer_warpgroups as u32);
            }
        }
        hw::fence_barrier_init();
    }
    arch::sync_threads();

    if thread < 128 {
        // SAFETY: the whole warpgroup; the kernel was compiled with a register cap.
        unsafe { hw::setmaxnreg_dec::<HOPPER_PRODUCER_REGISTERS>() };
        if thread == 0 {
            // SAFETY: forwarded launch contract.
            unsafe { produce::<C>(&smem, maps, &keys, q_start, head, head / p.kv_group.max(1), batch) };
        }
    } else {
        // SAFETY: the whole warpgroup; see above.
        unsafe { hw::setmaxnreg_inc::<HOPPER_CONSUMER_REGISTERS>() };
        // SAFETY: forwarded launch contract.
        unsafe { consume::<C>(p, &smem, &keys, q_start, head, batch) };
    }
}

/// The producer thread: Q once, then K and V of each visible tile into the ring, each stage
/// refilled once every consumer warp has released it.
///
/// # Safety
/// As [`attention_forward`]; called by one thread.
#[inline(always)]
unsafe fn produce<C: HopperTraits>(
    smem: &SharedLayout,
    maps: u64,
    keys: &KeyRange,
    q_start: u32,
    head: u32,
    kv_head: u32,
    batch: u32,
) {
    let config = C::CONFIG;
    let blocks = config.head_dim / HOPPER_BOX_COLS;
    let (q_rows, kv_rows) = (config.q_tile_rows(), config.kv_tile_rows);
    let block_bytes = |rows: usize| (rows * SW128_ROW_BYTES) as u32;
    // SAFETY: the barriers are initialised and their phases expect exactly these arrivals and
    // bytes; each destination is a 1024-byte-aligned block of its tile.
    unsafe {
        hw::mbarrier_arrive_expect_tx(smem.q_full(), config.tile_bytes(q_rows) as u32);
        for b in 0..blocks {
            let coords = [(b * HOPPER_BOX_COLS) as i32, q_start as i32, head as i32, batch as i32];
            hw::tma_load_4d(
                smem.q + b as u32 * block_bytes(q_rows),
                maps + TENSOR_MAP_Q_OFFSET as u64,
                coords,
                smem.q_full(),
            );
        }
        for j in 0..keys.tiles as usize {
            let (stage, round) = (j % config.stages, j / config.stages);
            let row = ((keys.first_tile + j as u32) * kv_rows as u32) as i32;
            // Refill a buffer once the consumers released its previous tile.
            let load = |empty: u32, full: u32, tile: u32, map_offset: usize| {
                if round > 0 {
                    hw::mbarrier_wait(empty, ((round - 1) & 1) as u32);
                }
                hw::mbarrier_arrive_expect_tx(full, config.tile_bytes(kv_rows) as u32);
                for b in 0..blocks {
                    let coords = [(b * HOPPER_BOX_COLS) as i32, row, kv_head as i32, batch as i32];
                    hw::tma_load_4d(tile + b as u32 * block_bytes(kv_rows), maps + map_offset as u64, coords, full);
                }
            };
            load(smem.k_empty(stage), smem.k_full(stage), smem.k(stage), TENSOR_MAP_K_OFFSET);
            load(smem.v_empty(stage), smem.v_full(stage), smem.v(stage), TENSOR_MAP_V_OFFSET);
        }
    }
}

/// What one consumer warpgroup works on: where its operands are and which rows it owns.
struct Consumer<'a, C: HopperTraits> {
    p: &'a AttentionParams,
    smem: &'a SharedLayout,
    keys: &'a KeyRange,
    /// This warpgroup's index among the consumers.
    warpgroup: usize,
    /// The first query row of this thread's warp, in the sequence.
    first_row: u32,
    _traits: core::marker::PhantomData<C>,
}

impl<C: HopperTraits> Consumer<'_, C> {
    /// Descriptor of k step `k_step` of this warpgroup's 64 Q rows (K-major: 8-row groups 1024
    /// bytes apart; the leading offset is unused).
    #[inline(always)]
    fn q_desc(&self, k_step: usize) -> u64 {
        let rows = C::CONFIG.q_tile_rows();
        let offset = 64 * self.warpgroup * SW128_ROW_BYTES + layout::sw128_k_step_offset(k_step, rows);
        hw::smem_descriptor_sw128(self.smem.q + offset as u32, 0, 1024)
    }

    /// Descriptor of k step `k_step` of the K tile in `stage` (K-major, as Q).
    #[inline(always)]
    fn k_desc(&self, stage: usize, k_step: usize) -> u64 {
        let offset = layout::sw128_k_step_offset(k_step, C::CONFIG.kv_tile_rows);
        hw::smem_descriptor_sw128(self.smem.k(stage) + offset as u32, 0, 1024)
    }

    /// Descriptor of keys `16 * key_step..+16` of the V tile in `stage`. V is MN-major for P·V
    /// (its rows are the k dimension): the 16 keys are two 8-row groups 1024 bytes apart, and the
    /// next 64 columns of the head dim are a column block further.
    #[inline(always)]
    fn v_desc(&self, stage: usize, key_step: usize) -> u64 {
        let kv_rows = C::CONFIG.kv_tile_rows;
        let addr = self.smem.v(stage) + (16 * key_step * SW128_ROW_BYTES) as u32;
        hw::smem_descriptor_sw128(addr, (kv_rows * SW128_ROW_BYTES) as u32, 1024)
    }

    /// Issues S = Q·Kᵀ for tile `j` as one commit group, once K has landed; `scores` may be
    /// touched only after a wait that covers the group.
    #[inline(always)]
    fn issue_scores(&self, j: usize, scores: &mut C::Scores) {
        let stages = C::CONFIG.stages;
        let stage = j % stages;
        // SAFETY: K of tile j has landed once k_full completes; the warpgroup issues the group
        // together (after a `wgmma_fence` by the caller) and leaves the operands alone until the
        // caller's wait.
        unsafe {
            hw::mbarrier_wait(self.smem.k_full(stage), ((j / stages) & 1) as u32);
            for k_step in 0..C::CONFIG.head_dim / 16 {
                scores.mma_ss(self.q_desc(k_step), self.k_desc(stage, k_step), k_step > 0);
            }
        }
        hw::wgmma_commit();
    }

    /// Issues O += P·V for tile `j` as one commit group, P from registers.
    #[inline(always)]
    fn issue_output(&self, j: usize, probs: &Probs, out: &mut C::Output) {
        let stages = C::CONFIG.stages;
        let stage = j % stages;
        // SAFETY: as for the scores, for V of tile j, `out` and `probs`.
        unsafe {
            hw::mbarrier_wait(self.smem.v_full(stage), ((j / stages) & 1) as u32);
            for key_step in 0..C::CONFIG.kv_tile_rows / 16 {
                out.mma_rs(probs[key_step], self.v_desc(stage, key_step));
            }
        }
        hw::wgmma_commit();
    }

    /// Tile `j`'s softmax: masks, P in place of the scores, the new row state; returns O's
    /// rescale factors (O may still be in use by the tensor cores).
    #[inline(always)]
    fn softmax(&self, j: usize, scores: &mut C::Scores, rows: &mut RowState<C>) -> Rescale<C> {
        let (p, keys) = (self.p, self.keys);
        let kv_rows = C::CONFIG.kv_tile_rows as u32;
        let (first_lo, first_hi) = (self.first_row as i32 + keys.lo, self.first_row as i32 + keys.hi);
        let kv_start = (keys.first_tile + j as u32) * kv_rows;
        let kv_last = (kv_start + kv_rows - 1) as i32;
        // Only tiles that hold keys past the end or outside some row's window pay for the mask.
        let outside = kv_last > first_hi || (kv_start as i32) < first_lo + 15;
        if kv_start + kv_rows > p.seq_k || (C::MASKED && outside) {
            mask::<C>(scores, kv_start, p.seq_k, first_lo, first_hi);
        }
        softmax_update::<C>(scores, p.scale_log2, rows)
    }

    /// Lets the warp's lane 0 arrive on a stage's "empty" barrier.
    #[inline(always)]
    fn release(&self, bar: u32) {
        // SAFETY: the barrier's phase expects one arrival per consumer warp, and every consumer
        // warp releases every tile once.
        unsafe { hw::mbarrier_arrive_warp(bar) }
    }
}

/// Ping-pong between the consumer warpgroups: they take turns to issue their GEMMs (named
/// barrier `SCHEDULER_BARRIER + g` is warpgroup g's turn), so that one's softmax runs while the
/// other's GEMMs use the tensor cores. Each barrier phase has 256 participants: the 128 threads
/// whose turn it is (sync) and the 128 of the warpgroup before them (arrive).
struct Turns {
    mine: u32,
    next: u32,
    active: bool,
}

impl Turns {
    /// Warpgroup `warpgroup` of `consumers`; the first goes first.
    #[inline(always)]
    fn new(warpgroup: usize, consumers: usize) -> Self {
        let turns = Self {
            mine: SCHEDULER_BARRIER + warpgroup as u32,
            next: SCHEDULER_BARRIER + ((warpgroup + 1) % consumers) as u32,
            active: consumers == 2,
        };
        if turns.active && warpgroup == 0 {
            // SAFETY: the first phase of the first warpgroup's barrier: its own 128 arrivals
            // here and its 128 syncs in its first `take`.
            unsafe { hw::named_barrier_arrive(turns.mine, 256) };
        }
        turns
    }

    /// Waits for this warpgroup's turn.
    #[inline(always)]
    fn take(&self) {
        if self.active {
            // SAFETY: see `Turns`; both warpgroups take and pass the same number of turns.
            unsafe { hw::named_barrier_sync(self.mine, 256) }
        }
    }

    /// Gives the turn to the other warpgroup.
    #[inline(always)]
    fn pass(&self) {
        if self.active {
            // SAFETY: as for `take`.
            unsafe { hw::named_barrier_arrive(self.next, 256) }
        }
    }
}

/// A consumer warpgroup: its 64 query rows against every visible K/V tile, then the output.
///
/// Software-pipelined as FlashAttention-3: at step j the warpgroup issues S_j = Q·K_jᵀ and
/// O += P_{j-1}·V_{j-1} back to back, waits for S_j only, and runs the softmax of tile j while
/// the tensor cores finish P_{j-1}·V_{j-1}; K_j is released as soon as S_j is done, V_{j-1} once
/// its product is.
///
/// # Safety
/// As [`attention_forward`]; called by every thread of a consumer warpgroup.
#[inline(always)]
unsafe fn consume<C: HopperTraits>(
    p: &AttentionParams,
    smem: &SharedLayout,
    keys: &KeyRange,
    q_start: u32,
    head: u32,
    batch: u32,
) {
    let config = C::CONFIG;
    let thread = arch::thread_idx() as usize - 128;
    let (warpgroup, warp_in_group) = (thread / 128, (thread / 32) % 4);
    let first_row = q_start + (64 * warpgroup + 16 * warp_in_group) as u32;
    let me = Consumer::<C> { p, smem, keys, warpgroup, first_row, _traits: core::marker::PhantomData };
    let turns = Turns::new(warpgroup, config.consumer_warpgroups);

    let mut out = C::Output::splat([0.0; 4]);
    let mut rows = RowState::<C> { max: C::RowValues::splat(f32::NEG_INFINITY), sum: C::RowValues::splat(0.0) };
    let mut scores = C::Scores::splat([0.0; 4]);
    let mut probs: Probs = [[0; 4]; 8];
    // SAFETY: initialised barrier.
    unsafe { hw::mbarrier_wait(smem.q_full(), 0) };
    let tiles = keys.tiles as usize;
    if tiles > 0 {
        // Tile 0: its scores alone (O is still zero: nothing to rescale).
        turns.take();
        hw::wgmma_fence();
        me.issue_scores(0, &mut scores);
        turns.pass();
        hw::wgmma_wait::<0>();
        me.release(smem.k_empty(0));
        me.softmax(0, &mut scores, &mut rows);
        pack_probs::<C>(&scores, &mut probs);
    }
    for j in 1..tiles {
        turns.take();
        hw::wgmma_fence();
        me.issue_scores(j, &mut scores);
        me.issue_output(j - 1, &probs, &mut out);
        turns.pass();
        hw::wgmma_wait::<1>();
        me.release(smem.k_empty(j % config.stages));
        let rescale = me.softmax(j, &mut scores, &mut rows);
        hw::wgmma_wait::<0>();
        me.release(smem.v_empty((j - 1) % config.stages));
        rescale_output::<C>(&mut out, &rescale);
        pack_probs::<C>(&scores, &mut probs);
    }
    if tiles > 0 {
        hw::wgmma_fence();
        me.issue_output(tiles - 1, &probs, &mut out);
        hw::wgmma_wait::<0>();
    }
    // SAFETY: launch contract.
    let warp_row0 = 64 * warpgroup + 16 * warp_in_group;
    unsafe { write_output::<C>(p, smem, &rows, &out, q_start, warp_row0, head, batch) };
}

/// Finishes the row sums over the quad, normalises O and writes it (and the logsumexp if asked
/// for). O goes through this warp's 16 rows of the Q tile (free once its last S = Q·Kᵀ has
/// completed; no other warp uses them), so that the global stores are whole 16-byte chunks of
/// rows.
///
/// # Safety
/// O and the logsumexp cover every row of every (batch, head) (host-validated, 16-byte-aligned
/// rows); every `wgmma` of this warpgroup has completed.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn write_output<C: HopperTraits>(
    p: &AttentionParams,
    smem: &SharedLayout,
    rows: &RowState<C>,
    out: &C::Output,
    q_start: u32,
    warp_row0: usize,
    head: u32,
    batch: u32,
) {
    let config = C::CONFIG;
    let q_rows = config.q_tile_rows();
    let lane = arch::lane_id() as usize;
    let first_row = q_start + warp_row0 as u32;
    for half in 0..2 {
        let mut sum = rows.sum[half];
        sum += arch::shfl_xor(sum, 1);
        sum += arch::shfl_xor(sum, 2);
        // A row that sees no key has sum 0: output 0 and logsumexp -inf.
        let inverse = if sum > 0.0 { 1.0 / sum } else { 0.0 };
        let (row, _) = layout::mma_c_coords(lane, 2 * half);
        for i in 0..C::Output::LEN {
            let frag: CFrag = out[i];
            let (_, col) = layout::mma_c_coords(lane, 2 * half);
            let packed = C::Elem::pack(frag[2 * half] * inverse, frag[2 * half + 1] * inverse);
            let offset = layout::sw128_offset(warp_row0 + row, 8 * i + col, q_rows);
            // SAFETY: inside this warp's own rows of the Q tile.
            unsafe { arch::st_shared_u32(smem.q + offset as u32, packed) };
        }
        let q_row = first_row + row as u32;
        if p.lse != 0 && lane % 4 == 0 && q_row < p.seq_q {
            let index = (batch as u64 * p.heads as u64 + head as u64) * p.seq_q as u64 + q_row as u64;
            let lse = (rows.max[half] + arch::lg2(sum)) * core::f32::consts::LN_2;
            // SAFETY: the host checked that the logsumexp buffer covers every row of every head.
            unsafe { *(p.lse as *mut f32).add(index as usize) = lse };
        }
    }
    arch::sync_warp();
    // 16 rows of head_dim / 8 chunks each, a chunk per lane per step.
    let chunks_per_row = config.head_dim / 8;
    let o_head = p.o + 2 * (batch as u64 * p.o_strides.batch + head as u64 * p.o_strides.head);
    for step in 0..16 * chunks_per_row / 32 {
        let index = 32 * step + lane;
        let (row, chunk) = (index / chunks_per_row, index % chunks_per_row);
        let q_row = first_row + row as u32;
        // SAFETY: this warp's rows of the Q tile, written above (before the warp barrier).
        let v = unsafe { arch::ld_shared_v4(smem.q + layout::sw128_offset(warp_row0 + row, 8 * chunk, q_rows) as u32) };
        if q_row < p.seq_q {
            let dst = o_head + 2 * (q_row as u64 * p.o_strides.row + 8 * chunk as u64);
            // SAFETY: (q_row, 8 chunk..+8) is inside O and 16-byte aligned (host-validated).
            unsafe { arch::st_global_v4(dst as *mut u8, v) };
        }
    }
}
