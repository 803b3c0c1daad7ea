//! The FlashAttention-2 forward pass, generic over a kernel configuration.
//!
//! One CTA computes one block of `q_tile_rows` query rows of one (batch, head); each warp owns
//! `m_tiles` 16-row m-tiles of those rows, adjacent or `16 * warps` rows apart
//! (`TileConfig::interleaved_m_tiles`). Q is loaded once; K/V tiles stream through a `stages`-deep
//! `cp.async` ring. Per K/V tile a warp computes S = Q·Kᵀ (mma.sync), the online softmax in base
//! 2 against a lazily moved reference max (O and the row sums rescaled only when it moves), and
//! adds P·V, with P converted to f16 in registers: S and P never touch shared or global memory.
//!
//! Around that core, all at launch time: variable-length batches (`cu_seqlens`), KV-cache
//! lengths (`seqused_k`), paged K/V (a block table), and split-KV (several CTAs share one query
//! block's keys and write f32 partial results that `combine` merges).
//!
//! Register tiles are flat arrays: fragment `(m, j)` of a tile with `J` fragments per 16-row
//! m-tile is element `m * J + j`.

use crate::abi::{AttentionParams, ExtendedParams, Strides, TileConfig};
use crate::arch;
use crate::layout;
use crate::schedule;
use crate::tile::{AFrag, BFrag, CFrag, Element, FragArray, SharedTile};

/// Everything fixed at compile time for one kernel entry point (FlashAttention-2's
/// `Kernel_traits`). The register-tile types carry lengths derived from `TILE`; the kernel checks
/// them at compile time.
pub trait KernelTraits {
    /// Tile sizes, warps and pipeline depth.
    const TILE: TileConfig;
    /// Element type of Q, K, V and O.
    type Elem: Element;
    /// Whether each query row sees only a window of keys (causal or local attention; the window
    /// comes with the launch, see `AttentionParams::window_left`).
    const MASKED: bool;
    /// Whether sequence geometry comes from device arrays: varlen offsets, KV-cache lengths, a
    /// block table, split-KV. Fixed-length kernels keep all of it out of their registers.
    const VARLEN: bool;
    /// Whether scores may be modified: softcapped (`AttentionParams::softcap`) and/or biased by
    /// ALiBi (`AttentionParams::alibi_slopes`), each when its launch parameter asks for it.
    const SCORE_MODS: bool;
    /// Whether the entry point takes [`ExtendedParams`] (else the body sees
    /// [`ExtendedParams::NONE`]): `SCORE_MODS || VARLEN`.
    const EXTENDED: bool = crate::abi::takes_extended_params(Self::SCORE_MODS, Self::VARLEN);
    /// Whether K/V tiles come through the copy engine (TMA, sm_90a PTX only): one thread starts
    /// each tile's copies and the warps wait on a per-stage `mbarrier`, instead of every thread
    /// issuing `cp.async` (`abi::for_each_tma_kernel!`). Plain kernels of `tma_compatible` tiles.
    const TMA_KV: bool = false;
    /// A fragments of one warp's Q rows kept in registers: `m_tiles * q_register_k_steps`,
    /// fragment `(m, k_step)` at `m * q_register_k_steps + k_step`.
    type QFrags: FragArray<AFrag>;
    /// Score accumulators of one warp's rows x `kv_tile_rows` keys: `m_tiles * kv_tile_rows / 8`.
    type Scores: FragArray<CFrag>;
    /// Output accumulators of one warp's rows x `head_dim`: `m_tiles * head_dim / 8`.
    type Output: FragArray<CFrag>;
    /// One value per row a thread holds (rows `g` and `g + 8` of each m-tile): `2 * m_tiles`.
    type RowValues: FragArray<f32>;
}

const LN_2: f32 = core::f32::consts::LN_2;

/// How far (log2 units) a scaled score may rise above its row's reference max before the
/// reference moves (FlashAttention-4's lazy rescale): P stays at most 2^8, exact enough in f16 and
/// bf16 and far from overflow in f32 O and sums, and after the first tiles most tiles move no
/// reference, so they skip the O rescale and the quad reduction of the row maxima.
const RESCALE_THRESHOLD: f32 = 8.0;

/// Address of element (batch, head, row 0) of a tensor, as a pointer to 16-bit elements.
#[inline(always)]
fn head_ptr(addr: u64, strides: &Strides, batch: u32, head: u32) -> *mut u16 {
    (addr + 2 * (batch as u64 * strides.batch + head as u64 * strides.head)) as *mut u16
}

/// Reads element `index` of a u32 device array.
///
/// # Safety
/// `addr` is a host-validated array of more than `index` elements.
#[inline(always)]
unsafe fn load_u32(addr: u64, index: u32) -> u32 {
    // SAFETY: guaranteed by the caller.
    unsafe { *(addr as *const u32).add(index as usize) }
}

/// Where one sequence of the batch lives and how long it is.
struct Sequence {
    /// Row of its first query in Q and O (varlen; else 0).
    q_offset: u32,
    /// Its query rows.
    seq_q: u32,
    /// Row of its first key in K and V (varlen; else 0).
    k_offset: u32,
    /// Its key rows.
    seq_k: u32,
}

impl Sequence {
    /// Sequence `batch` of a launch: fixed lengths, or varlen offsets, or KV-cache lengths.
    ///
    /// # Safety
    /// The optional arrays of `p` are host-validated and cover `batch`.
    #[inline(always)]
    unsafe fn of<C: KernelTraits>(p: &AttentionParams, x: &ExtendedParams, batch: u32) -> Self {
        if !C::VARLEN {
            return Self { q_offset: 0, seq_q: p.seq_q, k_offset: 0, seq_k: p.seq_k };
        }
        // SAFETY: `cu_seqlens_*` hold batch + 1 entries and `seqused_k` batch (caller).
        unsafe {
            let (q_offset, seq_q) = if x.cu_seqlens_q != 0 {
                let start = load_u32(x.cu_seqlens_q, batch);
                (start, load_u32(x.cu_seqlens_q, batch + 1) - start)
            } else {
                (0, p.seq_q)
            };
            let (k_offset, mut seq_k) = if x.cu_seqlens_k != 0 {
                let start = load_u32(x.cu_seqlens_k, batch);
                (start, load_u32(x.cu_seqlens_k, batch + 1) - start)
            } else {
                (0, p.seq_k)
            };
            if x.seqused_k != 0 {
                // The host keeps lengths within the capacity; the min keeps every read inside
                // the cache whatever the device array holds.
                seq_k = load_u32(x.seqused_k, batch).saturating_add(x.seqused_k_add).min(p.seq_k);
            }
            Self { q_offset, seq_q, k_offset, seq_k }
        }
    }
}

/// What one CTA computes: a query block of one (sequence, head), and with split-KV one share of
/// its keys.
struct Block {
    batch: u32,
    head: u32,
    split: u32,
    /// First query row of the block within its sequence.
    q_start: u32,
    seq: Sequence,
}

impl Block {
    /// The block of this CTA.
    ///
    /// # Safety
    /// As [`Sequence::of`].
    #[inline(always)]
    unsafe fn locate<C: KernelTraits>(p: &AttentionParams, x: &ExtendedParams) -> Self {
        let q_rows = C::TILE.q_tile_rows as u32;
        let q_blocks = p.seq_q.div_ceil(q_rows);
        // Masked: later query blocks see more keys; run them first so the grid's tail is short.
        // Varlen kernels keep the grid's order: their blocks' work follows each sequence's
        // lengths, and the renumbering's registers made one of them spill.
        let (block_x, head, batch) =
            if C::MASKED && !C::VARLEN { heaviest_first_block_idx(q_blocks) } else { arch::block_idx() };
        // kv_splits >= 1 (host-validated); `max` lets the compiler drop its division-by-zero panic.
        let splits = if C::VARLEN { x.kv_splits.max(1) } else { 1 };
        let (q_block_index, split) = (block_x / splits, block_x % splits);
        let q_block = if C::MASKED { q_blocks - 1 - q_block_index } else { q_block_index };
        // SAFETY: forwarded from the caller.
        let seq = unsafe { Sequence::of::<C>(p, x, batch) };
        Self { batch, head, split, q_start: q_block * q_rows, seq }
    }
}

/// CTAs per group of heads in the masked kernels' order (`schedule::heaviest_first`): about one
/// wave of two CTAs on each of an H100's or H200's 132 SMs.
const GROUP_CTAS: u32 = 256;

/// This CTA's `(query-block rank, head, batch)` in the masked kernels' order
/// (`schedule::heaviest_first`; rank 0 is the last, heaviest, query block) for a grid of
/// `(q_blocks, heads, batch)`.
#[inline(always)]
fn heaviest_first_block_idx(q_blocks: u32) -> (u32, u32, u32) {
    // Read afresh: merged with the reads of `Block::locate`'s first call, the values below stayed
    // live through the main loop for its second call, and one kernel spilled.
    let (x, y, z) = arch::block_idx_unmerged();
    let (x_dim, heads, batches) = arch::grid_dim();
    // (`max`: a grid has at least one head; lets the compiler drop a division-by-zero panic.)
    let heads = heads.max(1);
    let (rank, head_batch) =
        schedule::heaviest_first(x + x_dim * (y + heads * z), q_blocks, heads * batches, GROUP_CTAS);
    (rank, head_batch % heads, head_batch / heads)
}

/// The shared-memory tiles of one CTA: `[Q | K stage 0..stages | V stage 0..stages]`.
#[derive(Clone, Copy)]
struct SharedTiles {
    q: SharedTile,
    kv_base: u32,
    kv_bytes: u32,
    tile: TileConfig,
}

impl SharedTiles {
    #[inline(always)]
    fn carve(tile: TileConfig, tma: bool) -> Self {
        // The copy engine's 128-byte swizzle repeats every 1024 bytes from a 1024-byte boundary
        // (the host reserves the slack, `TileConfig::tma_smem_bytes`).
        let base = arch::dynamic_smem_base();
        let smem = if tma { (base + 1023) & !1023 } else { base };
        let q = SharedTile::new(smem, tile.q_tile_rows, tile.head_dim, tile.smem_row_elems());
        Self { q, kv_base: smem + q.bytes(), kv_bytes: tile.tile_bytes(tile.kv_tile_rows) as u32, tile }
    }

    #[inline(always)]
    fn kv_tile(&self, index: usize) -> SharedTile {
        let t = self.tile;
        SharedTile::new(self.kv_base + index as u32 * self.kv_bytes, t.kv_tile_rows, t.head_dim, t.smem_row_elems())
    }

    #[inline(always)]
    fn k(&self, stage: usize) -> SharedTile {
        self.kv_tile(stage)
    }

    #[inline(always)]
    fn v(&self, stage: usize) -> SharedTile {
        self.kv_tile(self.tile.stages + stage)
    }

    /// TMA variants: the `mbarrier` on which stage `stage`'s K and V copies complete (after the
    /// V tiles).
    #[inline(always)]
    fn kv_full(&self, stage: usize) -> u32 {
        self.kv_tile(2 * self.tile.stages).base() + 8 * stage as u32
    }
}

/// The copy-engine path of the TMA variants (`KernelTraits::TMA_KV`), which only the sm_90a PTX
/// stamps; the other build never reaches these functions (`TMA_KV` is false in all its kernels).
mod kv_tma {
    #[cfg(feature = "hopper")]
    use crate::abi::{TENSOR_MAP_K_OFFSET, TENSOR_MAP_V_OFFSET};
    #[cfg(feature = "hopper")]
    use crate::arch::hopper as hw;

    /// Thread 0 initialises one `mbarrier` per stage (one arrival: the thread that starts the
    /// copies); the caller's CTA barrier then publishes them.
    ///
    /// # Safety
    /// `bars` are the stages' barrier addresses, 8-byte aligned, not yet in use.
    #[inline(always)]
    pub unsafe fn init(bars: impl Iterator<Item = u32>, thread: usize) {
        #[cfg(feature = "hopper")]
        if thread == 0 {
            for bar in bars {
                // SAFETY: one thread initialises each barrier once (caller).
                unsafe { hw::mbarrier_init(bar, 1) };
            }
            hw::fence_barrier_init();
        }
        #[cfg(not(feature = "hopper"))]
        {
            let _ = (bars, thread);
            unreachable!()
        }
    }

    /// Thread 0 starts the copies of K and V rows `row..row + rows` of (`kv_head`, `batch`) into
    /// `k_dst` and `v_dst`; they complete `2 * tile_bytes` on `bar`. Rows past the sequence
    /// arrive as zeros.
    ///
    /// # Safety
    /// `maps` is the address of the kernel's `TensorMaps` parameter; the destinations are
    /// 1024-byte-aligned tiles no warp reads until the barrier's phase completes; `bar` is
    /// initialised and its current phase expects this arrival.
    #[inline(always)]
    pub unsafe fn load(maps: u64, k_dst: u32, v_dst: u32, coords: [i32; 4], bar: u32, tile_bytes: u32, thread: usize) {
        #[cfg(feature = "hopper")]
        if thread == 0 {
            // SAFETY: forwarded from the caller.
            unsafe {
                hw::mbarrier_arrive_expect_tx(bar, 2 * tile_bytes);
                hw::tma_load_4d(k_dst, maps + TENSOR_MAP_K_OFFSET as u64, coords, bar);
                hw::tma_load_4d(v_dst, maps + TENSOR_MAP_V_OFFSET as u64, coords, bar);
            }
        }
        #[cfg(not(feature = "hopper"))]
        {
            let _ = (maps, k_dst, v_dst, coords, bar, tile_bytes, thread);
            unreachable!()
        }
    }

    /// The whole warp waits until phase `parity` of `bar` completed: its tiles have landed.
    ///
    /// # Safety
    /// `bar` is initialised; all 32 lanes call it together.
    #[inline(always)]
    pub unsafe fn wait(bar: u32, parity: u32) {
        #[cfg(feature = "hopper")]
        // SAFETY: forwarded from the caller.
        unsafe {
            hw::mbarrier_wait_warp(bar, parity)
        };
        #[cfg(not(feature = "hopper"))]
        {
            let _ = (bar, parity);
            unreachable!()
        }
    }
}

/// Running softmax state of the rows whose scores a thread holds.
pub(crate) struct RowState<C: KernelTraits> {
    /// Reference max of the scaled scores, in log2 units: the running max (Hopper loop), or
    /// below it by at most [`RESCALE_THRESHOLD`] (mma.sync loop, `online_softmax`).
    pub(crate) max: C::RowValues,
    /// The running sum of `2^(score - max)`: this thread's part, the quad's parts added at the
    /// end; in the mma.sync loop with `Element::SUMS_FROM_ROUNDED_P`, the whole row's.
    pub(crate) sum: C::RowValues,
}

/// Computes one query block of one (batch, head), or with split-KV one share of its keys.
///
/// # Safety
/// Launched with grid `(ceil(seq_q / q_tile_rows) * kv_splits, heads, batch)`, `TILE.threads()`
/// threads, `TILE.smem_bytes()` bytes of dynamic shared memory, and parameters the host validated.
#[inline(always)]
pub unsafe fn attention_forward<C: KernelTraits>(p: &AttentionParams, x: &ExtendedParams, maps: u64) {
    const {
        let t = C::TILE;
        assert!(t.is_consistent());
        assert!(C::QFrags::LEN == t.q_register_frags());
        assert!(C::Scores::LEN == t.m_tiles * t.kv_tile_rows / 8);
        assert!(C::Output::LEN == t.m_tiles * t.head_dim / 8);
        assert!(C::RowValues::LEN == 2 * t.m_tiles);
        assert!(!C::TMA_KV || (t.tma_compatible() && !C::VARLEN && !C::SCORE_MODS));
    }
    let tile = C::TILE;
    let (q_rows, kv_rows, stages) = (tile.q_tile_rows as u32, tile.kv_tile_rows as u32, tile.stages);
    let thread = arch::thread_idx() as usize;
    let warp_row0 = tile.warp_first_row(arch::warp_id() as usize);
    // SAFETY: host-validated parameters.
    let Block { batch, head, split, q_start, seq } = unsafe { Block::locate::<C>(p, x) };
    // Varlen: the grid covers the longest sequence; shorter ones leave blocks with no rows.
    // (A uniform exit before any barrier. Fixed lengths: the grid is exact, no test needed.)
    if C::VARLEN && q_start >= seq.seq_q {
        return;
    }
    // Masked kernels: query row i sees keys i + lo ..= i + hi, aligned to the bottom-right corner
    // (as FlashAttention >= 2.1); with seq_q > seq_k, or a window, a row may see no key at all.
    // Only the K/V tiles that some row of this block sees are loaded.
    // (The host bounds lengths by 2^31 / head_dim and windows likewise, so i32 holds all below.)
    const UNBOUNDED: i32 = 1 << 30;
    let shift = seq.seq_k as i32 - seq.seq_q as i32;
    let lo = if p.window_left >= 0 { shift - p.window_left } else { -UNBOUNDED };
    let hi = if p.window_right >= 0 { shift + p.window_right } else { UNBOUNDED };
    let seq_k = seq.seq_k as i32;
    let (visible_first_tile, kv_end) = if C::MASKED {
        let begin = (q_start as i32 + lo).max(0).min(seq_k) as u32;
        let end = (q_start as i32 + q_rows as i32 + hi).max(0).min(seq_k) as u32;
        (begin / kv_rows, end)
    } else {
        (0, seq.seq_k)
    };
    // Split-KV: this CTA takes an equal share of the visible tiles (possibly none: it then
    // writes an empty partial result, logsumexp -inf, which the combine step ignores).
    let visible_tiles = kv_end.div_ceil(kv_rows).saturating_sub(visible_first_tile);
    let tiles_per_split = if C::VARLEN { visible_tiles.div_ceil(x.kv_splits.max(1)) } else { visible_tiles };
    let first_tile = visible_first_tile + split * tiles_per_split;
    let kv_blocks = tiles_per_split.min(visible_tiles.saturating_sub(split * tiles_per_split)) as usize;

    let q_row_stride = p.q_strides.row as u32;
    let (k_row_stride, v_row_stride) = (p.k_strides.row as u32, p.v_strides.row as u32);
    // SAFETY: q_start < seq_q, and the host checked that every row of every sequence and head
    // is in bounds.
    let q_ptr =
        unsafe { head_ptr(p.q, &p.q_strides, batch, head).add(((seq.q_offset + q_start) * q_row_stride) as usize) };
    // kv_group >= 1 (host-validated); `max` lets the compiler drop its division-by-zero panic.
    let kv_head = head / p.kv_group.max(1);
    // K/V rows of this (sequence, head) start at `k_ptr`/`v_ptr`; paged, the head's rows of page
    // 0 do, and each tile adds its page's offset (a tile never straddles pages).
    let paged = C::VARLEN && x.block_table != 0;
    let (kv_batch, kv_row0) = if paged { (0, 0) } else { (batch, seq.k_offset) };
    // SAFETY: in bounds of K and V (host-validated); only an address is formed here.
    let (k_ptr, v_ptr) = unsafe {
        (
            head_ptr(p.k, &p.k_strides, kv_batch, kv_head).add((kv_row0 * k_row_stride) as usize),
            head_ptr(p.v, &p.v_strides, kv_batch, kv_head).add((kv_row0 * v_row_stride) as usize),
        )
    };
    let kv_rows_at = |base: *mut u16, strides: &Strides, row0: u32| -> *const u16 {
        let offset = if paged {
            let page_rows = x.page_rows.max(1);
            // SAFETY: row0 < seq_k <= block_table_stride * page_rows (host-validated).
            let page = unsafe { load_u32(x.block_table, batch * x.block_table_stride + row0 / page_rows) };
            page as u64 * strides.batch + ((row0 % page_rows) * strides.row as u32) as u64
        } else {
            (row0 * strides.row as u32) as u64
        };
        // SAFETY: the row is inside K or V (host-validated).
        unsafe { base.add(offset as usize) }
    };

    let tiles = SharedTiles::carve(tile, C::TMA_KV);
    if C::TMA_KV {
        // SAFETY: the barriers lie after the tiles, inside the CTA's shared memory.
        unsafe { kv_tma::init((0..stages).map(|s| tiles.kv_full(s)), thread) };
        arch::sync_threads();
    }
    // Group g of `cp.async` copies holds K and V tile g (before them, one group holds Q). Every
    // group is committed even when empty, so that at iteration j "tile j has landed" is always
    // "at most stages - 2 groups pending", and a stage is refilled only after the barrier that
    // follows its last reader.
    let load_group = |g: usize| {
        if C::TMA_KV {
            if g < kv_blocks {
                let row0 = (first_tile + g as u32) * kv_rows;
                let coords = [0, row0 as i32, kv_head as i32, batch as i32];
                let (k, v, bar) = (tiles.k(g % stages).base(), tiles.v(g % stages).base(), tiles.kv_full(g % stages));
                // SAFETY: the stage's last readers passed the CTA barrier before this call (or
                // never read it); its barrier's phase waits for these copies.
                unsafe { kv_tma::load(maps, k, v, coords, bar, tile.tile_bytes(tile.kv_tile_rows) as u32, thread) };
            }
            return;
        }
        if g < kv_blocks {
            let row0 = (first_tile + g as u32) * kv_rows;
            // SAFETY: row0 < seq_k; rows past seq_k are zero-filled, not read.
            unsafe {
                let (k_src, v_src) = (kv_rows_at(k_ptr, &p.k_strides, row0), kv_rows_at(v_ptr, &p.v_strides, row0));
                tiles.k(g % stages).load_async(k_src, k_row_stride, seq.seq_k - row0, thread, tile.threads());
                tiles.v(g % stages).load_async(v_src, v_row_stride, seq.seq_k - row0, thread, tile.threads());
            }
        }
        arch::cp_async_commit();
    };
    // SAFETY: q_start < seq_q, so at least one Q row is valid.
    unsafe { tiles.q.load_async(q_ptr, q_row_stride, seq.seq_q - q_start, thread, tile.threads()) };
    arch::cp_async_commit();
    for g in 0..stages - 1 {
        load_group(g);
    }
    // Q's group has landed once at most stages - 1 are pending (TMA variants: Q's is the only one).
    arch::cp_async_wait(if C::TMA_KV { 0 } else { stages - 1 });
    arch::sync_threads();

    let mut q_frags = C::QFrags::splat([0; 4]);
    // (`max`: without Q fragments in registers the loop is empty, and no division by 0 exists.)
    let q_register_k_steps = tile.q_register_k_steps.max(1);
    for i in 0..C::QFrags::LEN {
        let (m, k_step) = (i / q_register_k_steps, i % q_register_k_steps);
        // SAFETY: converged warp; the warp's rows are inside the Q tile.
        q_frags[i] = unsafe { tiles.q.load_a(warp_row0 + tile.m_tile_offset(m), k_step) };
    }
    let mut out = C::Output::splat([0.0; 4]);
    let mut rows = RowState::<C> { max: C::RowValues::splat(f32::NEG_INFINITY), sum: C::RowValues::splat(0.0) };
    let first_row = q_start + warp_row0 as u32;
    // ALiBi: the bias of a score is -slope·|key - (row + shift)|, here in units of raw scores.
    let alibi_slope = if C::SCORE_MODS && x.alibi_slopes != 0 {
        // SAFETY: the host checked that the slopes cover every (batch, head).
        let slope = unsafe { *(x.alibi_slopes as *const f32).add((batch * x.alibi_batch_stride + head) as usize) };
        slope * x.alibi_scale
    } else {
        0.0
    };
    let warp = WarpRows::<C> {
        q: &tiles.q,
        q_frags: &q_frags,
        row0: warp_row0,
        first_lo: first_row as i32 + lo,
        first_hi: first_row as i32 + hi,
        seq_k: seq.seq_k,
        scale_log2: p.scale_log2,
        x,
        alibi_slope,
        alibi_row: first_row as i32 + shift,
    };

    for block in 0..kv_blocks {
        if C::TMA_KV {
            // Every warp is done with the stage the next load refills; then this tile's copies.
            arch::sync_threads();
            load_group(block + stages - 1);
            // SAFETY: converged warp; the stage's barrier completes one phase per tile it holds.
            unsafe { kv_tma::wait(tiles.kv_full(block % stages), ((block / stages) & 1) as u32) };
        } else {
            arch::cp_async_wait(stages - 2);
            arch::sync_threads();
            load_group(block + stages - 1);
        }

        let stage = block % stages;
        let (k, v) = (tiles.k(stage), tiles.v(stage));
        let kv_start = (first_tile + block as u32) * kv_rows;
        // The diagonal's last key tiles: the warp's first m-tile sees none of their keys.
        // (A warp-uniform branch between two copies of the step; the test is at compile time
        // false without a mask or interleaved m-tiles.)
        if C::MASKED && tile.interleaved_m_tiles && kv_start as i32 > warp.first_hi + 15 {
            warp.key_tile::<1>(&k, &v, kv_start, &mut rows, &mut out);
        } else {
            warp.key_tile::<0>(&k, &v, kv_start, &mut rows, &mut out);
        }
    }
    arch::cp_async_wait(0);

    // Where the rows go is found again rather than kept in registers through the loop.
    // SAFETY: host-validated parameters.
    let Block { batch, head, split, seq, .. } = unsafe { Block::locate::<C>(p, x) };
    let at =
        OutputRows { batch, head, split, q_offset: seq.q_offset, seq_q: seq.seq_q, warp_start: first_row, warp_row0 };
    let mut total = C::RowValues::splat(0.0);
    for r in 0..C::RowValues::LEN {
        // bf16: each thread of the quad holds its own keys' part.
        total[r] = if C::Elem::SUMS_FROM_ROUNDED_P { rows.sum[r] } else { quad_sum(rows.sum[r]) };
    }
    // SAFETY: launch contract of this function.
    unsafe { epilogue::<C>(p, x, &tiles.q, &rows.max, &total, &mut out, &at) };
}

/// What one warp's main loop holds fixed: its rows, their windows, the score modifications.
struct WarpRows<'a, C: KernelTraits> {
    q: &'a SharedTile,
    q_frags: &'a C::QFrags,
    /// Row of the Q tile where the warp's first m-tile starts.
    row0: usize,
    /// The window of the warp's first row (query row `first_row`, not stored): row `first_row + r`
    /// sees keys `first_lo + r ..= first_hi + r`.
    first_lo: i32,
    first_hi: i32,
    seq_k: u32,
    scale_log2: f32,
    x: &'a ExtendedParams,
    /// ALiBi's slope in raw-score units (0: none).
    alibi_slope: f32,
    /// `first_row + shift`: the key on the bottom-right-aligned diagonal of the warp's first row.
    alibi_row: i32,
}

impl<C: KernelTraits> WarpRows<'_, C> {
    /// One K/V tile for the warp's m-tiles `FIRST_M..`: S = Q·Kᵀ, score modifications and masks,
    /// the online softmax, O += P·V. The m-tiles before `FIRST_M` must see no key of the tile:
    /// skipped, they are exactly as if computed (P = 0 adds nothing, and their max stays).
    #[inline(always)]
    fn key_tile<const FIRST_M: usize>(
        &self,
        k: &SharedTile,
        v: &SharedTile,
        kv_start: u32,
        rows: &mut RowState<C>,
        out: &mut C::Output,
    ) {
        let tile = C::TILE;
        let mut scores = q_k_transposed::<C, FIRST_M>(self.q, self.q_frags, k, self.row0);
        if C::SCORE_MODS {
            if self.x.softcap > 0.0 {
                soft_cap::<C, FIRST_M>(&mut scores, self.x.softcap, self.x.softcap_scale);
            }
            if self.alibi_slope != 0.0 {
                alibi::<C, FIRST_M>(&mut scores, self.alibi_slope, kv_start as i32 - self.alibi_row);
            }
        }
        // Only tiles with keys past the end or outside some row's window pay for the mask (the
        // tests are uniform per warp): with interleaved m-tiles, per m-tile (a diagonal crosses
        // each at another key); else one test for the warp's adjacent rows.
        let kv_last = (kv_start + tile.kv_tile_rows as u32 - 1) as i32;
        let past_end = kv_last as u32 >= self.seq_k;
        let outside = |first: i32, last: i32| {
            C::MASKED && (kv_last > self.first_hi + first || (kv_start as i32) < self.first_lo + last)
        };
        let mask_m_tile = |scores: &mut C::Scores, m: usize| {
            let offset = tile.m_tile_offset(m) as i32;
            mask::<C>(scores, m, kv_start, self.seq_k, self.first_lo + offset, self.first_hi + offset);
        };
        if tile.interleaved_m_tiles {
            for m in FIRST_M..tile.m_tiles {
                let offset = tile.m_tile_offset(m) as i32;
                if past_end || outside(offset, offset + 15) {
                    mask_m_tile(&mut scores, m);
                }
            }
        } else if past_end || outside(0, tile.m_tile_offset(tile.m_tiles - 1) as i32 + 15) {
            for m in FIRST_M..tile.m_tiles {
                mask_m_tile(&mut scores, m);
            }
        }
        // The row sums grow by this tile's P: bf16, this thread's part of the unrounded P; f16,
        // whole rows of the P that multiplied V (`Element::SUMS_FROM_ROUNDED_P`).
        // (bf16 adds its sums before P·V: kept across it they cost registers, and d128 spilled.)
        let exact_sums = online_softmax::<C, FIRST_M>(&mut scores, self.scale_log2, rows, out);
        if !C::Elem::SUMS_FROM_ROUNDED_P {
            add_row_values::<C>(&mut rows.sum, &exact_sums);
        }
        let rounded_sums = add_p_v::<C, FIRST_M>(&scores, v, out);
        if C::Elem::SUMS_FROM_ROUNDED_P {
            add_row_values::<C>(&mut rows.sum, &rounded_sums);
        }
    }
}

/// S = Q·Kᵀ for the warp's m-tiles `FIRST_M..` and one K tile, one 16-wide k step at a time (the
/// scores of the m-tiles before `FIRST_M` stay 0). K fragments are read once and used by every
/// m-tile; Q fragments come from registers or, per k step, from the Q tile, so that only one k
/// step of them is live.
#[inline(always)]
fn q_k_transposed<C: KernelTraits, const FIRST_M: usize>(
    q: &SharedTile,
    q_frags: &C::QFrags,
    k: &SharedTile,
    warp_row0: usize,
) -> C::Scores {
    let tile = C::TILE;
    let (k_steps, n_tiles) = (tile.head_dim / 16, tile.kv_tile_rows / 8);
    let mut scores = C::Scores::splat([0.0; 4]);
    for k_step in 0..k_steps {
        let mut a = [[0u32; 4]; 4];
        for m in FIRST_M..tile.m_tiles {
            a[m] = if k_step < tile.q_register_k_steps {
                q_frags[m * tile.q_register_k_steps + k_step]
            } else {
                // SAFETY: converged warp; the warp's rows are inside the Q tile.
                unsafe { q.load_a(warp_row0 + tile.m_tile_offset(m), k_step) }
            };
        }
        for n_pair in 0..n_tiles / 2 {
            // SAFETY: converged warp; keys n_pair*16..+16 are inside the K tile.
            let b: [BFrag; 2] = unsafe { k.load_b_transposed_n_pair(16 * n_pair, k_step) };
            for m in FIRST_M..tile.m_tiles {
                for half in 0..2 {
                    let s = &mut scores[m * n_tiles + 2 * n_pair + half];
                    *s = C::Elem::mma(a[m], b[half], *s);
                }
            }
        }
    }
    scores
}

/// ALiBi: adds `-slope·|key - row - shift|` to each score of m-tiles `FIRST_M..`, where
/// `key_minus_row` is the first key of the tile minus (the warp's first row + shift), and `slope`
/// is in raw-score units.
#[inline(always)]
fn alibi<C: KernelTraits, const FIRST_M: usize>(scores: &mut C::Scores, slope: f32, key_minus_row: i32) {
    let n_tiles = C::TILE.kv_tile_rows / 8;
    let lane = arch::lane_id() as usize;
    for i in FIRST_M * n_tiles..C::Scores::LEN {
        let (m, n_tile) = (i / n_tiles, i % n_tiles);
        for e in 0..4 {
            let (row, col) = layout::mma_c_coords(lane, e);
            let row = C::TILE.m_tile_offset(m) + row;
            let distance = (key_minus_row + (8 * n_tile + col) as i32 - row as i32).unsigned_abs();
            scores[i][e] = arch::fma(-slope, distance as f32, scores[i][e]);
        }
    }
}

/// Softcapping of m-tiles `FIRST_M..`: `s = cap * tanh(s * scale / cap)`, in natural units (the
/// host then passes log2(e) as the softmax's scale). Runs before the mask, which overwrites with
/// -inf.
#[inline(always)]
fn soft_cap<C: KernelTraits, const FIRST_M: usize>(scores: &mut C::Scores, cap: f32, scale_over_cap: f32) {
    for i in FIRST_M * C::TILE.kv_tile_rows / 8..C::Scores::LEN {
        for e in 0..4 {
            scores[i][e] = cap * arch::tanh(scores[i][e] * scale_over_cap);
        }
    }
}

/// Sets the scores of m-tile `m` for keys past `seq_k` and (masked kernels) keys outside each
/// row's window to -inf. The m-tile's first row sees keys `first_lo..=first_hi`; each further row
/// one key more on both ends.
#[inline(always)]
pub(crate) fn mask<C: KernelTraits>(
    scores: &mut C::Scores,
    m: usize,
    kv_start: u32,
    seq_k: u32,
    first_lo: i32,
    first_hi: i32,
) {
    let n_tiles = C::TILE.kv_tile_rows / 8;
    let lane = arch::lane_id() as usize;
    // One unsigned compare per score tests both window ends: a key below the window wraps around
    // to a value above the window's width.
    let width = first_hi.wrapping_sub(first_lo) as u32;
    for n_tile in 0..n_tiles {
        let i = m * n_tiles + n_tile;
        for e in 0..4 {
            let (row, col) = layout::mma_c_coords(lane, e);
            let key = kv_start + (8 * n_tile + col) as u32;
            let outside = (key as i32).wrapping_sub(first_lo + row as i32) as u32 > width;
            if key >= seq_k || (C::MASKED && outside) {
                scores[i][e] = f32::NEG_INFINITY;
            }
        }
    }
}

/// Online softmax step on raw scores `s`, with c = scale·log2(e) > 0: P = 2^(s·c − m) in place
/// of the scores, O and the row sums kept relative to each row's reference max m. The reference
/// is lazy: it moves to the row's running max (rescaling O and the sums) only on tiles where some
/// score of the warp exceeds its row's reference by more than [`RESCALE_THRESHOLD`]; the test
/// needs neither the quad's shuffles nor the rescale multiplies, and once the maxima settle it
/// fails on almost every tile. The first tile with a visible key always moves it (from -inf).
/// Returns this thread's part of each row's sum of this tile's P (unrounded); adding it to the
/// row sums is the caller's choice.
#[inline(always)]
pub(crate) fn online_softmax<C: KernelTraits, const FIRST_M: usize>(
    scores: &mut C::Scores,
    scale_log2: f32,
    rows: &mut RowState<C>,
    out: &mut C::Output,
) -> C::RowValues {
    let thread_max = thread_row_maxima::<C, FIRST_M>(scores);
    let mut exceeds = false;
    for r in 0..C::RowValues::LEN {
        // A masked row (-inf) never exceeds; its first visible key always does (-inf + 8).
        exceeds |= thread_max[r] * scale_log2 > rows.max[r] + RESCALE_THRESHOLD;
    }
    if arch::vote_any(exceeds) {
        let rescale = softmax_max::<C, FIRST_M>(&thread_max, scale_log2, rows);
        multiply_output::<C, FIRST_M>(out, &rescale.factors);
        for r in 0..C::RowValues::LEN {
            rows.sum[r] *= rescale.factors[r];
        }
    }
    softmax_exp::<C, FIRST_M>(scores, scale_log2, rows)
}

/// `values[r] += more[r]` for each row the thread holds.
#[inline(always)]
fn add_row_values<C: KernelTraits>(values: &mut C::RowValues, more: &C::RowValues) {
    for r in 0..C::RowValues::LEN {
        values[r] += more[r];
    }
}

/// The sum of `x` over the lane quad that holds one row of an mma C fragment.
#[inline(always)]
pub(crate) fn quad_sum(x: f32) -> f32 {
    let x = x + arch::shfl_xor(x, 1);
    x + arch::shfl_xor(x, 2)
}

/// The part of [`online_softmax`] that leaves O alone (the Hopper loop rescales O at its own
/// point): updates the row maxima and sums, turns the scores into P, and returns the factor each
/// row's O must be multiplied by (1 where the max did not change) and whether any row of the warp
/// changed.
#[cfg(feature = "hopper")]
#[inline(always)]
pub(crate) fn softmax_update<C: KernelTraits>(
    scores: &mut C::Scores,
    scale_log2: f32,
    rows: &mut RowState<C>,
) -> Rescale<C> {
    let rescale = softmax_max::<C, 0>(&thread_row_maxima::<C, 0>(scores), scale_log2, rows);
    let tile_sums = softmax_exp::<C, 0>(scores, scale_log2, rows);
    for r in 0..C::RowValues::LEN {
        rows.sum[r] = rows.sum[r] * rescale.factors[r] + tile_sums[r];
    }
    rescale
}

/// The max of the raw scores this thread holds of each row r = 2 * m + half, which is row
/// `g + 8 * half` of m-tile m: C elements 2 * half and 2 * half + 1 of each of its fragments
/// (-inf for the m-tiles before `FIRST_M`).
#[inline(always)]
fn thread_row_maxima<C: KernelTraits, const FIRST_M: usize>(scores: &C::Scores) -> C::RowValues {
    let n_tiles = C::TILE.kv_tile_rows / 8;
    let mut maxima = C::RowValues::splat(f32::NEG_INFINITY);
    for r in 2 * FIRST_M..C::RowValues::LEN {
        let (m, half) = (r / 2, r % 2);
        for n_tile in 0..n_tiles {
            let s = scores[m * n_tiles + n_tile];
            maxima[r] = maxima[r].max(s[2 * half]).max(s[2 * half + 1]);
        }
    }
    maxima
}

/// First half of a softmax step, from this thread's row maxima of the raw scores: the new row
/// maxima (over the lane quad), and how O and the row sums must be rescaled for them (the rows
/// of the m-tiles before `FIRST_M` keep theirs, factor 1).
#[inline(always)]
fn softmax_max<C: KernelTraits, const FIRST_M: usize>(
    thread_max: &C::RowValues,
    scale_log2: f32,
    rows: &mut RowState<C>,
) -> Rescale<C> {
    let mut factors = C::RowValues::splat(1.0);
    let mut changed = false;
    for r in 2 * FIRST_M..C::RowValues::LEN {
        let mut raw_max = thread_max[r];
        raw_max = raw_max.max(arch::shfl_xor(raw_max, 1));
        raw_max = raw_max.max(arch::shfl_xor(raw_max, 2));
        // max(s)·c = max(s·c) because c > 0; a fully masked row keeps -inf (not -inf·c).
        let tile_max = if raw_max == f32::NEG_INFINITY { raw_max } else { raw_max * scale_log2 };
        let new_max = rows.max[r].max(tile_max);
        if new_max != rows.max[r] {
            // new_max > rows.max[r] >= -inf: finite, and a row leaving -inf gets factor 0.
            changed = true;
            factors[r] = arch::ex2(rows.max[r] - new_max);
            rows.max[r] = new_max;
        }
    }
    Rescale { factors, changed }
}

/// Second half of a softmax step: P = 2^(s·c − max) in place of the scores of m-tiles
/// `FIRST_M..`; returns this thread's part of each row's sum of P (0 before `FIRST_M`).
#[inline(always)]
fn softmax_exp<C: KernelTraits, const FIRST_M: usize>(
    scores: &mut C::Scores,
    scale_log2: f32,
    rows: &RowState<C>,
) -> C::RowValues {
    let n_tiles = C::TILE.kv_tile_rows / 8;
    let mut tile_sums = C::RowValues::splat(0.0);
    for r in 2 * FIRST_M..C::RowValues::LEN {
        let (m, half) = (r / 2, r % 2);
        let base = exponent_base(rows.max[r]);
        let mut tile_sum = 0.0;
        for n_tile in 0..n_tiles {
            for e in 2 * half..2 * half + 2 {
                let p = arch::ex2(arch::fma(scores[m * n_tiles + n_tile][e], scale_log2, -base));
                scores[m * n_tiles + n_tile][e] = p;
                tile_sum += p;
            }
        }
        tile_sums[r] = tile_sum;
    }
    tile_sums
}

/// What exponentials of a row are taken against: its running max, or 0 while every key so far
/// was masked (max = -inf), so that -inf - -inf is no NaN.
#[inline(always)]
fn exponent_base(max: f32) -> f32 {
    if max == f32::NEG_INFINITY {
        0.0
    } else {
        max
    }
}

/// How a softmax step rescales O: a factor per row the thread holds, and whether any row of the
/// thread changed.
pub(crate) struct Rescale<C: KernelTraits> {
    factors: C::RowValues,
    /// Read by the Hopper loop's rescale (the mma.sync loop decides before the factors exist).
    #[cfg_attr(not(feature = "hopper"), allow(dead_code))]
    changed: bool,
}

/// Multiplies O by the factors of a softmax step. Once the row maxima settle, most tiles change
/// none of them: the multiply (a no-op then) is skipped for the whole warp.
#[cfg(feature = "hopper")]
#[inline(always)]
pub(crate) fn rescale_output<C: KernelTraits>(out: &mut C::Output, rescale: &Rescale<C>) {
    if arch::vote_any(rescale.changed) {
        multiply_output::<C, 0>(out, &rescale.factors);
    }
}

/// O's rows of m-tiles `FIRST_M..` times their factors.
#[inline(always)]
fn multiply_output<C: KernelTraits, const FIRST_M: usize>(out: &mut C::Output, factors: &C::RowValues) {
    let d_tiles = C::TILE.head_dim / 8;
    for i in FIRST_M * d_tiles..C::Output::LEN {
        let m = i / d_tiles;
        for e in 0..4 {
            out[i][e] *= factors[2 * m + e / 2];
        }
    }
}

/// O += P·V for m-tiles `FIRST_M..`, with P packed to the element type straight from the score
/// accumulators (`layout::p_from_scores`). V fragments are read once and used by every m-tile.
/// With `Element::SUMS_FROM_ROUNDED_P`, also returns the sums of the rows of the packed P (the
/// whole rows, from P·1 on the tensor cores; 0 before `FIRST_M`); else zeros.
#[inline(always)]
fn add_p_v<C: KernelTraits, const FIRST_M: usize>(
    probs: &C::Scores,
    v: &SharedTile,
    out: &mut C::Output,
) -> C::RowValues {
    let tile = C::TILE;
    let (n_tiles, d_tiles) = (tile.kv_tile_rows / 8, tile.head_dim / 8);
    // Per m-tile, the C fragment of P·1: every column holds the row sum (elements 0, 1: row g;
    // 2, 3: row g + 8). Live only through this tile's product.
    let mut sums = [[0.0f32; 4]; 4];
    for k_step in 0..n_tiles / 2 {
        let mut a = [[0u32; 4]; 4];
        for m in FIRST_M..tile.m_tiles {
            a[m] = core::array::from_fn(|reg| {
                let (t0, e0) = layout::p_from_scores(reg, 0);
                let (t1, e1) = layout::p_from_scores(reg, 1);
                let row = m * n_tiles + 2 * k_step;
                C::Elem::pack(probs[row + t0][e0], probs[row + t1][e1])
            });
            if C::Elem::SUMS_FROM_ROUNDED_P {
                sums[m] = C::Elem::mma(a[m], [C::Elem::ONES; 2], sums[m]);
            }
        }
        for n_pair in 0..d_tiles / 2 {
            // SAFETY: converged warp; keys k_step*16..+16 are inside the V tile.
            let b = unsafe { v.load_b_pair(16 * k_step, n_pair) };
            for m in FIRST_M..tile.m_tiles {
                let o = m * d_tiles + 2 * n_pair;
                out[o] = C::Elem::mma(a[m], b[0], out[o]);
                out[o + 1] = C::Elem::mma(a[m], b[1], out[o + 1]);
            }
        }
    }
    let mut row_sums = C::RowValues::splat(0.0);
    for r in 0..C::RowValues::LEN {
        row_sums[r] = sums[r / 2][2 * (r % 2)];
    }
    row_sums
}

/// Where a warp's output rows go.
struct OutputRows {
    batch: u32,
    head: u32,
    /// Split-KV: which share of the keys this CTA took.
    split: u32,
    /// Row of the sequence's first query in O (varlen).
    q_offset: u32,
    /// Query rows of the sequence.
    seq_q: u32,
    /// The warp's first query row within the sequence.
    warp_start: u32,
    /// The warp's first row within the CTA's Q tile.
    warp_row0: usize,
}

/// Normalises O by the row sums (`total`, whole rows) and writes it: staged as 16-bit rows in
/// this warp's part of the Q tile (only this warp reads it) and written out with 16-byte stores,
/// or with split-KV as f32 partials straight from the registers. Writes the logsumexp if asked
/// for (always with split-KV: the combine step weighs the partials by it).
///
/// # Safety
/// As for [`attention_forward`].
#[inline(always)]
unsafe fn epilogue<C: KernelTraits>(
    p: &AttentionParams,
    x: &ExtendedParams,
    staging: &SharedTile,
    max: &C::RowValues,
    total: &C::RowValues,
    out: &mut C::Output,
    at: &OutputRows,
) {
    let d_tiles = C::TILE.head_dim / 8;
    let lane = arch::lane_id() as usize;
    let mut inverse = C::RowValues::splat(0.0);
    for r in 0..C::RowValues::LEN {
        let sum = total[r];
        // A row that sees no key (masked with seq_q > seq_k or a window, an empty split, or
        // padding) has sum 0: its output is 0 and its logsumexp -inf, as FlashAttention defines
        // them.
        inverse[r] = if sum > 0.0 { 1.0 / sum } else { 0.0 };
    }
    let o_row_stride = p.o_strides.row as u32;
    if C::VARLEN && x.kv_splits > 1 {
        for i in 0..C::Output::LEN {
            let (m, d_tile) = (i / d_tiles, i % d_tiles);
            for half in 0..2 {
                let (row, col) = layout::mma_c_coords(lane, 2 * half);
                let q_row = at.warp_start + (C::TILE.m_tile_offset(m) + row) as u32;
                if q_row < at.seq_q {
                    let index = at.split as u64 * x.o_split_stride
                        + at.batch as u64 * p.o_strides.batch
                        + at.head as u64 * p.o_strides.head
                        + q_row as u64 * p.o_strides.row
                        + (8 * d_tile + col) as u64;
                    let scale = inverse[2 * m + half];
                    // SAFETY: the host sized the f32 partial buffer for every split, row and dim.
                    unsafe {
                        let dst = (p.o as *mut f32).add(index as usize);
                        *dst = out[i][2 * half] * scale;
                        *dst.add(1) = out[i][2 * half + 1] * scale;
                    }
                }
            }
        }
    } else {
        // The staging rows were last read by this warp's ldmatrix of Q (other lanes' addresses).
        arch::sync_warp();
        for i in 0..C::Output::LEN {
            let (m, d_tile) = (i / d_tiles, i % d_tiles);
            let mut frag = out[i];
            for e in 0..4 {
                frag[e] *= inverse[2 * m + e / 2];
            }
            // SAFETY: this warp's own rows of the Q tile; no other warp touches them.
            unsafe { staging.store_c::<C::Elem>(at.warp_row0 + C::TILE.m_tile_offset(m), d_tile, frag) };
        }
        arch::sync_warp();
        for m in 0..C::TILE.m_tiles {
            let start = at.warp_start + C::TILE.m_tile_offset(m) as u32;
            if start < at.seq_q {
                // SAFETY: rows start..start+valid of O are in bounds (host-validated).
                unsafe {
                    let o_ptr = head_ptr(p.o, &p.o_strides, at.batch, at.head)
                        .add(((at.q_offset + start) * o_row_stride) as usize);
                    staging.store_rows16(
                        at.warp_row0 + C::TILE.m_tile_offset(m),
                        o_ptr,
                        o_row_stride,
                        (at.seq_q - start).min(16),
                    );
                }
            }
        }
    }

    // Plain kernels do without `ExtendedParams`: their logsumexp is `[batch, heads, seq_q]`.
    let lse_strides = if C::EXTENDED {
        x.lse_strides
    } else {
        Strides { batch: p.heads as u64 * p.seq_q as u64, head: p.seq_q as u64, row: 1 }
    };
    if p.lse != 0 && lane % 4 == 0 {
        for r in 0..C::RowValues::LEN {
            let (row, _) = layout::mma_c_coords(lane, 2 * (r % 2));
            let q_row = at.warp_start + (C::TILE.m_tile_offset(r / 2) + row) as u32;
            if q_row < at.seq_q {
                let index = at.split as u64 * x.lse_split_stride
                    + at.batch as u64 * lse_strides.batch
                    + at.head as u64 * lse_strides.head
                    + (at.q_offset + q_row) as u64;
                let lse = (max[r] + arch::lg2(total[r])) * LN_2;
                // SAFETY: the host checked that the lse buffer covers every row of every head.
                unsafe { *(p.lse as *mut f32).add(index as usize) = lse };
            }
        }
    }
}
