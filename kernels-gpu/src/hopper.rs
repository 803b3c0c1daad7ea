//! The forward pass on Hopper (sm_90a): warp-specialised, TMA + `wgmma`.
//!
//! A CTA works through query blocks ("work tiles") of `64 * consumer_warpgroups` rows of one
//! (batch, head) each: `Schedule` hands CTA c the tiles c, c + grid, ... (the host launches one
//! CTA per SM without a mask, one per tile with one). Within a CTA:
//! - warpgroup 0 is the producer: after giving up registers (`setmaxnreg.dec`), one thread loads
//!   each work tile's Q and streams K and V tiles with TMA into a `stages`-deep ring of shared-memory
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
use crate::attention::{mask, quad_sum, rescale_output, softmax_update, KernelTraits, Rescale, RowState};
use crate::layout::{self, SW128_ROW_BYTES};
use crate::schedule;
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

    /// Completes when every consumer warp is done with the Q tile (and the output it staged
    /// there): the next work tile's Q may be loaded.
    #[inline(always)]
    fn q_empty(&self) -> u32 {
        self.barriers + 8 * (1 + 4 * self.config.stages) as u32
    }
}

/// One unit of work of the persistent grid: a query block of one (batch, head).
#[derive(Clone, Copy)]
struct WorkTile {
    q_start: u32,
    head: u32,
    batch: u32,
}

/// The static schedule of the persistent grid: CTA `c` of `n` takes work tiles `c, c + n, ...`
/// of `q_blocks · heads · batch`. Unmasked tiles are numbered query block first (the CTAs running
/// at once then mostly share heads, so their K/V stays in L2). Masked kernels launch one CTA per
/// tile, which the hardware starts in index order, heaviest query block first in groups of heads
/// (`schedule::heaviest_first`).
#[derive(Clone, Copy)]
struct Schedule {
    q_blocks: u32,
    heads: u32,
    tiles: u32,
    stride: u32,
}

/// Work tiles per group of heads in the masked order: about one wave of one CTA per SM.
const GROUP_CTAS: u32 = 128;

impl Schedule {
    #[inline(always)]
    fn new<C: HopperTraits>(p: &AttentionParams, batch: u32) -> Self {
        let q_blocks = p.seq_q.div_ceil(C::CONFIG.q_tile_rows() as u32);
        Self { q_blocks, heads: p.heads, tiles: q_blocks * p.heads * batch, stride: arch::grid_dim().0 }
    }

    #[inline(always)]
    fn tile<C: HopperTraits>(&self, index: u32) -> WorkTile {
        let (q_block_index, rest) = if C::MASKED {
            // heads · batch as tiles / q_blocks: one division per work tile, and a masked grid
            // has one work tile per CTA; a field would hold one more register through the loops
            // of kernels that already spill (head dim 128).
            schedule::heaviest_first(index, self.q_blocks, self.tiles / self.q_blocks.max(1), GROUP_CTAS)
        } else {
            (index % self.q_blocks, index / self.q_blocks)
        };
        // Masked: later query blocks see more keys; run them first so the grid's tail is short.
        let q_block = if C::MASKED { self.q_blocks - 1 - q_block_index } else { q_block_index };
        WorkTile {
            q_start: q_block * C::CONFIG.q_tile_rows() as u32,
            head: rest % self.heads,
            batch: rest / self.heads,
        }
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
/// Launched with a 1-D grid of at most `ceil(seq_q / q_tile_rows) · heads · batch` CTAs (each
/// loops over its share of those work tiles), `CONFIG.threads()` threads,
/// `CONFIG.smem_bytes()` bytes of dynamic shared memory, compiled with a cap of
/// `HOPPER_LAUNCH_REGISTERS` registers; `maps` is the generic address of the kernel's
/// `TensorMaps` parameter, encoded by the host for these tensors; parameters host-validated.
#[inline(always)]
pub unsafe fn attention_forward<C: HopperTraits>(p: &AttentionParams, maps: u64, batch: u32) {
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
    let schedule = Schedule::new::<C>(p, batch);
    let consumer_warps = 4 * config.consumer_warpgroups as u32;

    if thread == 0 {
        // SAFETY: one thread initialises each barrier once, before the CTA barrier below.
        unsafe {
            hw::mbarrier_init(smem.q_full(), 1);
            hw::mbarrier_init(smem.q_empty(), consumer_warps);
            for stage in 0..config.stages {
                hw::mbarrier_init(smem.k_full(stage), 1);
                hw::mbarrier_init(smem.v_full(stage), 1);
                hw::mbarrier_init(smem.k_empty(stage), consumer_warps);
                hw::mbarrier_init(smem.v_empty(stage), consumer_warps);
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
            unsafe { produce::<C>(p, &smem, maps, &schedule) };
        }
    } else {
        // SAFETY: the whole warpgroup; see above.
        unsafe { hw::setmaxnreg_inc::<HOPPER_CONSUMER_REGISTERS>() };
        // SAFETY: forwarded launch contract.
        unsafe { consume::<C>(p, &smem, &schedule) };
    }
}

/// The producer thread: for each work tile of this CTA, Q (once the consumers are done with
/// the previous tile's), then K and V of each visible K/V tile into the ring, each buffer
/// refilled once every consumer warp has released it. The ring's position runs on across work
/// tiles, so the next tile's loads overlap the consumers' last steps and output of this one.
///
/// # Safety
/// As [`attention_forward`]; called by one thread.
#[inline(always)]
unsafe fn produce<C: HopperTraits>(p: &AttentionParams, smem: &SharedLayout, maps: u64, schedule: &Schedule) {
    let config = C::CONFIG;
    let blocks = config.head_dim / HOPPER_BOX_COLS;
    let (q_rows, kv_rows) = (config.q_tile_rows(), config.kv_tile_rows);
    let block_bytes = |rows: usize| (rows * SW128_ROW_BYTES) as u32;
    // K/V tiles loaded so far, and work tiles started, by this CTA.
    let (mut loaded, mut started) = (0usize, 0u32);
    let mut index = arch::block_idx().0;
    while index < schedule.tiles {
        let WorkTile { q_start, head, batch } = schedule.tile::<C>(index);
        let kv_head = head / p.kv_group.max(1);
        let keys = KeyRange::of::<C>(p, q_start);
        // SAFETY: the barriers are initialised and their phases expect exactly these arrivals
        // and bytes; each destination is a 1024-byte-aligned block of its tile.
        unsafe {
            if started > 0 {
                hw::mbarrier_wait(smem.q_empty(), (started - 1) & 1);
            }
            hw::mbarrier_arrive_expect_tx(smem.q_full(), config.tile_bytes(q_rows) as u32);
            for b in 0..blocks {
                let coords = [(b * HOPPER_BOX_COLS) as i32, q_start as i32, head as i32, batch as i32];
                let dst = smem.q + b as u32 * block_bytes(q_rows);
                hw::tma_load_4d(dst, maps + TENSOR_MAP_Q_OFFSET as u64, coords, smem.q_full());
            }
            for j in 0..keys.tiles as usize {
                let (stage, round) = (loaded % config.stages, loaded / config.stages);
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
                loaded += 1;
            }
        }
        started += 1;
        index += schedule.stride;
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
    /// K/V tiles this CTA consumed before this work tile: where in the ring (and in which
    /// phase of its barriers) the work tile's first K/V tile is.
    ring: usize,
    _traits: core::marker::PhantomData<C>,
}

impl<C: HopperTraits> Consumer<'_, C> {
    /// The ring stage of the work tile's K/V tile `j`, and the parity of its barriers' phase.
    #[inline(always)]
    fn slot(&self, j: usize) -> (usize, u32) {
        let stages = C::CONFIG.stages;
        ((self.ring + j) % stages, (((self.ring + j) / stages) & 1) as u32)
    }

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
        let (stage, parity) = self.slot(j);
        // SAFETY: K of tile j has landed once k_full completes; the warpgroup issues the group
        // together (after a `wgmma_fence` by the caller) and leaves the operands alone until the
        // caller's wait.
        unsafe {
            hw::mbarrier_wait_warp(self.smem.k_full(stage), parity);
            for k_step in 0..C::CONFIG.head_dim / 16 {
                scores.mma_ss(self.q_desc(k_step), self.k_desc(stage, k_step), k_step > 0);
            }
        }
        hw::wgmma_commit();
    }

    /// Issues O += P·V for tile `j` as one commit group, P from registers; for `j == 0`,
    /// O = P·V (whatever the registers held before: no instruction but `wgmma` writes the
    /// accumulators, which keeps `ptxas` from serialising the `wgmma` of the persistent loop).
    #[inline(always)]
    fn issue_output(&self, j: usize, probs: &Probs, out: &mut C::Output) {
        let (stage, parity) = self.slot(j);
        // SAFETY: as for the scores, for V of tile j, `out` and `probs`.
        unsafe {
            hw::mbarrier_wait_warp(self.smem.v_full(stage), parity);
            for key_step in 0..C::CONFIG.kv_tile_rows / 16 {
                out.mma_rs(probs[key_step], self.v_desc(stage, key_step), j > 0 || key_step > 0);
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
            mask::<C>(scores, 0, kv_start, p.seq_k, first_lo, first_hi);
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

/// A consumer warpgroup: for each work tile of this CTA, its 64 query rows against every
/// visible K/V tile, then the output.
///
/// Software-pipelined as FlashAttention-3: at step j the warpgroup issues S_j = Q·K_jᵀ and
/// O += P_{j-1}·V_{j-1} back to back, waits for S_j only, and runs the softmax of tile j while
/// the tensor cores finish P_{j-1}·V_{j-1}; K_j is released as soon as S_j is done, V_{j-1} once
/// its product is, Q once the output has left shared memory.
///
/// # Safety
/// As [`attention_forward`]; called by every thread of a consumer warpgroup.
#[inline(always)]
unsafe fn consume<C: HopperTraits>(p: &AttentionParams, smem: &SharedLayout, schedule: &Schedule) {
    let config = C::CONFIG;
    let thread = arch::thread_idx() as usize - 128;
    let (warpgroup, warp_in_group) = (thread / 128, (thread / 32) % 4);
    let warp_row0 = 64 * warpgroup + 16 * warp_in_group;
    let turns = Turns::new(warpgroup, config.consumer_warpgroups);
    // K/V tiles consumed so far, and work tiles finished, by this CTA.
    let (mut consumed, mut finished) = (0usize, 0u32);
    // Accumulators and P live across work tiles: each tile's first `wgmma` overwrites them.
    let mut out = C::Output::splat([0.0; 4]);
    let mut scores = C::Scores::splat([0.0; 4]);
    let mut probs: Probs = [[0; 4]; 8];
    let mut index = arch::block_idx().0;
    while index < schedule.tiles {
        let WorkTile { q_start, head, batch } = schedule.tile::<C>(index);
        let keys = KeyRange::of::<C>(p, q_start);
        let first_row = q_start + warp_row0 as u32;
        let me = Consumer::<C> {
            p,
            smem,
            keys: &keys,
            warpgroup,
            first_row,
            ring: consumed,
            _traits: core::marker::PhantomData,
        };
        let mut rows = RowState::<C> { max: C::RowValues::splat(f32::NEG_INFINITY), sum: C::RowValues::splat(0.0) };
        // SAFETY: initialised barrier; one phase per work tile.
        unsafe { hw::mbarrier_wait_warp(smem.q_full(), finished & 1) };
        let tiles = keys.tiles as usize;
        if tiles > 0 {
            // Tile 0: its scores alone (O is still zero: nothing to rescale).
            turns.take();
            hw::wgmma_fence();
            me.issue_scores(0, &mut scores);
            turns.pass();
            hw::wgmma_wait::<0>();
            me.release(smem.k_empty(me.slot(0).0));
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
            me.release(smem.k_empty(me.slot(j).0));
            let rescale = me.softmax(j, &mut scores, &mut rows);
            hw::wgmma_wait::<0>();
            me.release(smem.v_empty(me.slot(j - 1).0));
            rescale_output::<C>(&mut out, &rescale);
            pack_probs::<C>(&scores, &mut probs);
        }
        if tiles > 0 {
            hw::wgmma_fence();
            me.issue_output(tiles - 1, &probs, &mut out);
            hw::wgmma_wait::<0>();
            me.release(smem.v_empty(me.slot(tiles - 1).0));
        }
        // SAFETY: launch contract; every `wgmma` of this warpgroup has completed.
        unsafe { write_output::<C>(p, smem, &rows, &out, q_start, warp_row0, head, batch) };
        // The next Q arrives by TMA (the async proxy) where this warp just read and wrote with
        // ordinary accesses: order those first.
        hw::fence_proxy_async();
        me.release(smem.q_empty());
        consumed += tiles;
        finished += 1;
        index += schedule.stride;
    }
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
        let sum = quad_sum(rows.sum[half]);
        // A row that sees no key has sum 0: output 0 and logsumexp -inf.
        let inverse = if sum > 0.0 { 1.0 / sum } else { 0.0 };
        let (row, _) = layout::mma_c_coords(lane, 2 * half);
        for i in 0..C::Output::LEN {
            let frag: CFrag = out[i];
            let (_, col) = layout::mma_c_coords(lane, 2 * half);
            // Rows without keys: 0, whatever O's registers hold (a work tile with no K/V tile
            // never wrote them).
            let scaled = |x: f32| if sum > 0.0 { x * inverse } else { 0.0 };
            let packed = C::Elem::pack(scaled(frag[2 * half]), scaled(frag[2 * half + 1]));
            let offset = layout::sw128_offset(warp_row0 + row, 8 * i + col, q_rows);
            // SAFETY: inside this warp's own rows of the Q tile.
            unsafe { arch::st_shared_u32(smem.q + offset as u32, packed) };
        }
        let q_row = first_row + row as u32;
        if p.lse != 0 {
            let index = (batch as u64 * p.heads as u64 + head as u64) * p.seq_q as u64 + q_row as u64;
            let lse = (rows.max[half] + arch::lg2(sum)) * core::f32::consts::LN_2;
            // SAFETY: the host checked that the logsumexp buffer covers every row of every head;
            // only rows inside the sequence are written (predicated, not branched around: the
            // persistent loop issues `wgmma` after this).
            let dst = (p.lse as *mut f32).wrapping_add(index as usize);
            unsafe { arch::st_global_f32_if(lane % 4 == 0 && q_row < p.seq_q, dst, lse) };
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
        let dst = o_head + 2 * (q_row as u64 * p.o_strides.row + 8 * chunk as u64);
        // SAFETY: for rows inside the sequence, (q_row, 8 chunk..+8) is inside O and 16-byte
        // aligned (host-validated); the others are not stored.
        unsafe { arch::st_global_v4_if(q_row < p.seq_q, dst as *mut u8, v) };
    }
}
