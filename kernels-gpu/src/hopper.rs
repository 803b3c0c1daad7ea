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
use crate::attention::{mask, online_softmax, KernelTraits, RowState};
use crate::layout::{self, SW128_ROW_BYTES};
use crate::tile::{CFrag, Element, FragArray, WgmmaAccumulator};

/// A Hopper kernel configuration: the mma.sync kernels' traits (the per-warp view, for the
/// softmax and masks) plus the warp-specialised pipeline's parameters.
pub trait HopperTraits: KernelTraits<Scores: WgmmaAccumulator<Self::Elem>, Output: WgmmaAccumulator<Self::Elem>> {
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

    /// Completes when every consumer warp is done with the stage's current K and V.
    #[inline(always)]
    fn kv_empty(&self, stage: usize) -> u32 {
        self.barriers + 8 * (1 + 2 * self.config.stages + stage) as u32
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
                hw::mbarrier_init(smem.kv_empty(stage), 4 * config.consumer_warpgroups as u32);
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
            hw::tma_load_4d(smem.q + b as u32 * block_bytes(q_rows), maps + TENSOR_MAP_Q_OFFSET as u64, coords, smem.q_full());
        }
        for j in 0..keys.tiles as usize {
            let (stage, round) = (j % config.stages, j / config.stages);
            if round > 0 {
                // Wait for the consumers' release of this stage's previous tile.
                hw::mbarrier_wait(smem.kv_empty(stage), ((round - 1) & 1) as u32);
            }
            let row = ((keys.first_tile + j as u32) * kv_rows as u32) as i32;
            let load = |full: u32, tile: u32, map_offset: usize| {
                hw::mbarrier_arrive_expect_tx(full, config.tile_bytes(kv_rows) as u32);
                for b in 0..blocks {
                    let coords = [(b * HOPPER_BOX_COLS) as i32, row, kv_head as i32, batch as i32];
                    hw::tma_load_4d(tile + b as u32 * block_bytes(kv_rows), maps + map_offset as u64, coords, full);
                }
            };
            load(smem.k_full(stage), smem.k(stage), TENSOR_MAP_K_OFFSET);
            load(smem.v_full(stage), smem.v(stage), TENSOR_MAP_V_OFFSET);
        }
    }
}

/// A consumer warpgroup: its 64 query rows against every visible K/V tile, then the output.
///
/// # Safety
/// As [`attention_forward`]; called by every thread of a consumer warpgroup.
#[inline(always)]
unsafe fn consume<C: HopperTraits>(p: &AttentionParams, smem: &SharedLayout, keys: &KeyRange, q_start: u32, head: u32, batch: u32) {
    let config = C::CONFIG;
    let (q_rows, kv_rows) = (config.q_tile_rows(), config.kv_tile_rows);
    let thread = arch::thread_idx() as usize - 128;
    let (warpgroup, warp_in_group) = (thread / 128, (thread / 32) % 4);
    let group_row0 = 64 * warpgroup;
    let first_row = q_start + (group_row0 + 16 * warp_in_group) as u32;
    let (first_lo, first_hi) = (first_row as i32 + keys.lo, first_row as i32 + keys.hi);
    let last_row_offset = 15;

    // K-major operands: 8-row groups 1024 bytes apart; the leading offset is unused.
    let q_desc = |k_step: usize| {
        let addr = smem.q + (group_row0 * SW128_ROW_BYTES + layout::sw128_k_step_offset(k_step, q_rows)) as u32;
        hw::smem_descriptor_sw128(addr, 0, 1024)
    };
    let k_desc = |stage: usize, k_step: usize| {
        hw::smem_descriptor_sw128(smem.k(stage) + layout::sw128_k_step_offset(k_step, kv_rows) as u32, 0, 1024)
    };
    // V is MN-major for P·V (its rows are the k dimension): 16 keys are two 8-row groups
    // 1024 bytes apart; the next 64 columns of the head dim are a column block further.
    let v_desc = |stage: usize, key_step: usize| {
        let addr = smem.v(stage) + (16 * key_step * SW128_ROW_BYTES) as u32;
        hw::smem_descriptor_sw128(addr, (kv_rows * SW128_ROW_BYTES) as u32, 1024)
    };

    let mut out = C::Output::splat([0.0; 4]);
    let mut rows = RowState::<C> { max: C::RowValues::splat(f32::NEG_INFINITY), sum: C::RowValues::splat(0.0) };
    // SAFETY: initialised barrier.
    unsafe { hw::mbarrier_wait(smem.q_full(), 0) };
    for j in 0..keys.tiles as usize {
        let (stage, parity) = (j % config.stages, ((j / config.stages) & 1) as u32);
        // S = Q·Kᵀ.
        let mut scores = C::Scores::splat([0.0; 4]);
        // SAFETY: K of this tile has landed once k_full completes; the warpgroup issues the
        // whole sequence together and waits for it before touching `scores`.
        unsafe {
            hw::mbarrier_wait(smem.k_full(stage), parity);
            hw::wgmma_fence();
            for k_step in 0..config.head_dim / 16 {
                scores.mma_ss(q_desc(k_step), k_desc(stage, k_step), k_step > 0);
            }
            hw::wgmma_commit();
            hw::wgmma_wait::<0>();
        }
        let kv_start = (keys.first_tile + j as u32) * kv_rows as u32;
        let kv_last = (kv_start + kv_rows as u32 - 1) as i32;
        let outside = kv_last > first_hi || (kv_start as i32) < first_lo + last_row_offset;
        if kv_start + kv_rows as u32 > p.seq_k || (C::MASKED && outside) {
            mask::<C>(&mut scores, kv_start, p.seq_k, first_lo, first_hi);
        }
        online_softmax::<C>(&mut scores, p.scale_log2, &mut rows, &mut out);

        // O += P·V, P converted to the element type in registers (`layout::p_from_scores`).
        // SAFETY: as above, for V and `out`.
        unsafe {
            hw::mbarrier_wait(smem.v_full(stage), parity);
            hw::wgmma_fence();
            for key_step in 0..kv_rows / 16 {
                let a = core::array::from_fn(|reg| {
                    let (t0, e0) = layout::p_from_scores(reg, 0);
                    let (t1, e1) = layout::p_from_scores(reg, 1);
                    C::Elem::pack(scores[2 * key_step + t0][e0], scores[2 * key_step + t1][e1])
                });
                out.mma_rs(a, v_desc(stage, key_step));
            }
            hw::wgmma_commit();
            hw::wgmma_wait::<0>();
        }
        // This warp is done with the stage (its `wgmma` reads have completed).
        arch::sync_warp();
        if arch::lane_id() == 0 {
            // SAFETY: the barrier's phase expects one arrival per consumer warp.
            unsafe { hw::mbarrier_arrive(smem.kv_empty(stage)) };
        }
    }
    // SAFETY: launch contract.
    unsafe { write_output::<C>(p, &rows, &out, first_row, head, batch) };
}

/// Finishes the row sums over the quad, normalises O and writes it (and the logsumexp if asked
/// for) from the registers: each thread writes pairs of elements of its two rows.
///
/// # Safety
/// O and the logsumexp cover every row of every (batch, head) (host-validated).
#[inline(always)]
unsafe fn write_output<C: HopperTraits>(
    p: &AttentionParams,
    rows: &RowState<C>,
    out: &C::Output,
    first_row: u32,
    head: u32,
    batch: u32,
) {
    let lane = arch::lane_id() as usize;
    let o_head = p.o + 2 * (batch as u64 * p.o_strides.batch + head as u64 * p.o_strides.head);
    for half in 0..2 {
        let mut sum = rows.sum[half];
        sum += arch::shfl_xor(sum, 1);
        sum += arch::shfl_xor(sum, 2);
        // A row that sees no key has sum 0: output 0 and logsumexp -inf.
        let inverse = if sum > 0.0 { 1.0 / sum } else { 0.0 };
        let (row, _) = layout::mma_c_coords(lane, 2 * half);
        let q_row = first_row + row as u32;
        if q_row >= p.seq_q {
            continue;
        }
        let row_addr = o_head + 2 * q_row as u64 * p.o_strides.row;
        for i in 0..C::Output::LEN {
            let frag: CFrag = out[i];
            let (_, col) = layout::mma_c_coords(lane, 2 * half);
            let packed = C::Elem::pack(frag[2 * half] * inverse, frag[2 * half + 1] * inverse);
            // SAFETY: (q_row, 8 i + col) is inside O (host-validated); col is even, so the
            // 4-byte store is aligned.
            unsafe { *((row_addr + 2 * (8 * i + col) as u64) as *mut u32) = packed };
        }
        if p.lse != 0 && lane % 4 == 0 {
            let index = (batch as u64 * p.heads as u64 + head as u64) * p.seq_q as u64 + q_row as u64;
            let lse = (rows.max[half] + arch::lg2(sum)) * core::f32::consts::LN_2;
            // SAFETY: the host checked that the logsumexp buffer covers every row of every head.
            unsafe { *(p.lse as *mut f32).add(index as usize) = lse };
        }
    }
}
