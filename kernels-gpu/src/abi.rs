//! The contract between the host library and the kernels: the launch parameters, the tile
//! configurations and the list of entry points.
//!
//! This file is compiled into both crates (the host includes it with `#[path]`), so the struct
//! layout, the shared-memory size of a configuration and the entry-point names have one home.

/// Element strides of one `[batch, head, row, dim]` tensor; the head dimension is contiguous.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Strides {
    /// Elements between consecutive batch entries.
    pub batch: u64,
    /// Elements between consecutive heads.
    pub head: u64,
    /// Elements between consecutive rows (sequence positions). The host guarantees that every
    /// offset inside one head fits in 31 bits, so the kernels index rows with 32-bit math.
    pub row: u64,
}

/// Element type of Q, K, V and O (accumulation is always f32).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
}

/// What every attention launch needs, passed by value as the first kernel parameter. The plain
/// kernels (no score modifiers, fixed lengths) take only this block: it is kept as small as the
/// foundation's, because each launch copies it and small launches feel every byte.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionParams {
    /// Device address of Q, `[batch, heads, seq_q, head_dim]` through `q_strides`.
    pub q: u64,
    /// Device address of K, `[batch, heads / kv_group, seq_k, head_dim]` through `k_strides`
    /// (paged: `[page, kv_head, row in page, head_dim]`).
    pub k: u64,
    /// Device address of V, laid out as K through `v_strides`.
    pub v: u64,
    /// Device address of O, `[batch, heads, seq_q, head_dim]` through `o_strides`; with
    /// `kv_splits > 1`, f32 partial outputs (one set per split, `o_split_stride` apart).
    pub o: u64,
    /// Device address of the f32 logsumexp, 0 when not wanted. Plain kernels: `[batch, heads,
    /// seq_q]` contiguous; the others: through [`ExtendedParams::lse_strides`].
    pub lse: u64,
    /// Strides of Q.
    pub q_strides: Strides,
    /// Strides of K.
    pub k_strides: Strides,
    /// Strides of V.
    pub v_strides: Strides,
    /// Strides of O.
    pub o_strides: Strides,
    /// Query rows per (batch, head); varlen: the longest sequence (the grid is sized by it).
    pub seq_q: u32,
    /// Key rows per (batch, head); varlen: the longest sequence; KV cache: the capacity.
    pub seq_k: u32,
    /// Number of query heads (the grid's y dimension).
    pub heads: u32,
    /// Query heads per K/V head (GQA/MQA; 1 without): query head `h` reads K/V head
    /// `h / kv_group`.
    pub kv_group: u32,
    /// Softmax scale multiplied by log2(e): the kernels work in base 2 (`ex2`).
    pub scale_log2: f32,
    /// Masked kernels: query row i sees keys from `i + seq_k - seq_q - window_left` (unbounded
    /// when negative) ...
    pub window_left: i32,
    /// ... to `i + seq_k - seq_q + window_right` (unbounded when negative). Causal is (-1, 0).
    pub window_right: i32,
}

/// The second kernel parameter of the score-modifier and varlen kernels: score modifiers,
/// sequence geometry from device arrays, split-KV.
///
/// Optional device arrays are 0 when absent; the host validates every one that is present.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExtendedParams {
    /// Logsumexp element strides: batch, head, row (row stride 1).
    pub lse_strides: Strides,
    /// Split-KV: elements between the partial outputs (and, in `lse`, partial logsumexps) of
    /// consecutive splits.
    pub o_split_stride: u64,
    /// Split-KV: see `o_split_stride`.
    pub lse_split_stride: u64,
    /// Varlen: `[batch + 1]` u32 offsets of each sequence's first query row (the tensors then
    /// have batch stride 0), or 0.
    pub cu_seqlens_q: u64,
    /// Varlen: as `cu_seqlens_q` for the keys, or 0.
    pub cu_seqlens_k: u64,
    /// KV cache: `[batch]` u32 valid cache lengths; sequence b sees
    /// `min(seqused_k[b] + seqused_k_add, seq_k)` keys. 0 when absent.
    pub seqused_k: u64,
    /// Paged KV: `[batch, block_table_stride]` u32 page indices (K/V's batch stride is then the
    /// page stride), or 0.
    pub block_table: u64,
    /// ALiBi: f32 slopes at `alibi_slopes[batch * alibi_batch_stride + head]`, or 0.
    pub alibi_slopes: u64,
    /// Number of sequences (the grid's z dimension).
    pub batch: u32,
    /// Split-KV: CTAs sharing one query block's keys (1: no split).
    pub kv_splits: u32,
    /// See `seqused_k`.
    pub seqused_k_add: u32,
    /// Paged KV: entries per batch row of `block_table`.
    pub block_table_stride: u32,
    /// Paged KV: rows per page (a multiple of every configuration's `kv_tile_rows`).
    pub page_rows: u32,
    /// See `alibi_slopes`.
    pub alibi_batch_stride: u32,
    /// Score-modifier kernels: each score s becomes `softcap * tanh(s * softcap_scale)` (natural
    /// units; `scale_log2` is then log2(e)) when `softcap > 0`.
    pub softcap: f32,
    /// The softmax scale divided by `softcap`.
    pub softcap_scale: f32,
    /// Score-modifier kernels with ALiBi: the bias `-slope * |i + seq_k - seq_q - j|` is added to
    /// raw scores multiplied by this (1 / softmax scale, or 1 when softcapped).
    pub alibi_scale: f32,
}

impl ExtendedParams {
    /// No modifiers, no device arrays, one split, logsumexp strides 0 (the host fills them in).
    pub const NONE: Self = Self {
        lse_strides: Strides { batch: 0, head: 0, row: 0 },
        o_split_stride: 0,
        lse_split_stride: 0,
        cu_seqlens_q: 0,
        cu_seqlens_k: 0,
        seqused_k: 0,
        block_table: 0,
        alibi_slopes: 0,
        batch: 0,
        kv_splits: 1,
        seqused_k_add: 0,
        block_table_stride: 0,
        page_rows: 0,
        alibi_batch_stride: 0,
        softcap: 0.0,
        softcap_scale: 0.0,
        alibi_scale: 0.0,
    };
}

/// Whether the entry point with these flags takes [`ExtendedParams`] as its second parameter
/// (plain kernels take [`AttentionParams`] alone).
pub const fn takes_extended_params(score_mods: bool, varlen: bool) -> bool {
    score_mods || varlen
}

/// Compile-time tile parameters of one kernel configuration (FlashAttention-2's `Kernel_traits`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileConfig {
    /// Head dimension D (elements per row of Q, K, V and O).
    pub head_dim: usize,
    /// Query rows handled by one CTA: `16 * m_tiles` per warp (see [`TileConfig::m_tile_offset`]).
    pub q_tile_rows: usize,
    /// 16-row mma tiles per warp. With 2, every K/V fragment read from shared memory feeds two
    /// mma instead of one.
    pub m_tiles: usize,
    /// How many of the `head_dim / 16` k steps of this warp's Q fragments stay in registers for
    /// the whole kernel; the others are re-read from shared memory for each K tile. All of them
    /// where registers allow: every re-read is shared-memory traffic, which bounds these kernels
    /// on Hopper (see docs/perf-notes.md).
    pub q_register_k_steps: usize,
    /// Key/value rows loaded per main-loop step.
    pub kv_tile_rows: usize,
    /// Warps per CTA.
    pub warps: usize,
    /// Shared-memory stages of the K/V `cp.async` pipeline.
    pub stages: usize,
    /// Whether a warp's m-tiles are `16 * warps` rows apart (FlashAttention-2's order) instead of
    /// adjacent. Every warp then holds rows from each part of the Q tile: a causal diagonal
    /// weighs the same on every warp, and in the diagonal's last key tiles every warp skips its
    /// first m-tile, which sees none of their keys (the CTA waits for its slowest warp, so
    /// skipping on some warps alone gains nothing). Costs a mask test per m-tile instead of one
    /// per warp: set where registers allow (head dim 128 spilled).
    pub interleaved_m_tiles: bool,
}

/// Bytes of one element (f16 and bf16 alike).
pub const ELEMENT_BYTES: usize = 2;

impl TileConfig {
    /// Threads per CTA.
    pub const fn threads(&self) -> usize {
        self.warps * 32
    }

    /// Row of the Q tile where warp `warp`'s first m-tile starts.
    pub const fn warp_first_row(&self, warp: usize) -> usize {
        if self.interleaved_m_tiles {
            16 * warp
        } else {
            16 * self.m_tiles * warp
        }
    }

    /// Rows from a warp's first m-tile to its m-tile `m`: `16 * warps` with
    /// [`interleaved_m_tiles`](Self::interleaved_m_tiles), else 16 (adjacent m-tiles).
    pub const fn m_tile_offset(&self, m: usize) -> usize {
        if self.interleaved_m_tiles {
            16 * self.warps * m
        } else {
            16 * m
        }
    }

    /// Q fragments (A operands of 16 rows x 16 columns) a warp keeps in registers.
    pub const fn q_register_frags(&self) -> usize {
        self.m_tiles * self.q_register_k_steps
    }

    /// Elements per shared-memory row: the head dimension rounded up to a multiple of 64, so
    /// that every row is a whole number of 8-chunk swizzle groups (D = 32 and 96 leave the rest
    /// of the row unused).
    pub const fn smem_row_elems(&self) -> usize {
        self.head_dim.div_ceil(64) * 64
    }

    /// Bytes of one shared-memory tile of `rows` rows.
    pub const fn tile_bytes(&self, rows: usize) -> usize {
        rows * self.smem_row_elems() * ELEMENT_BYTES
    }

    /// Dynamic shared memory per CTA: the Q tile plus `stages` K tiles and `stages` V tiles.
    pub const fn smem_bytes(&self) -> usize {
        self.tile_bytes(self.q_tile_rows) + 2 * self.stages * self.tile_bytes(self.kv_tile_rows)
    }

    /// Dynamic shared memory per CTA of the configuration's TMA variant (sm_90, K/V tiles by the
    /// copy engine): the tiles from a 1024-byte boundary (the 128-byte swizzle's atom; up to 1024
    /// bytes of slack before it), then one 8-byte `mbarrier` per stage.
    pub const fn tma_smem_bytes(&self) -> usize {
        1024 + self.smem_bytes() + 8 * self.stages
    }

    /// Whether the configuration's tiles are laid out as the copy engine's 128-byte swizzle
    /// writes a box of 64 columns: rows of exactly 64 elements (`layout::sw128_offset` of one
    /// column block equals `layout::swizzled_offset`), so that TMA variants of it can exist.
    pub const fn tma_compatible(&self) -> bool {
        self.head_dim == 64 && self.smem_row_elems() == 64
    }

    /// Whether the parameters are internally consistent (checked at compile time in the kernels
    /// and by a host test).
    pub const fn is_consistent(&self) -> bool {
        // 16-byte chunks of data per row (shared-memory rows are padded to groups of 8).
        let chunks_per_row = self.head_dim / 8;
        self.q_tile_rows == 16 * self.m_tiles * self.warps
            && self.m_tiles >= 1
            && self.m_tiles <= 4
            // Interleaving places a second m-tile; a warp's only m-tile has no first to skip.
            && (!self.interleaved_m_tiles || self.m_tiles > 1)
            && self.q_register_k_steps <= self.head_dim / 16
            // K fragments come two 8-key tiles at a time (`SharedTile::load_b_transposed_n_pair`),
            // and P·V takes 16 keys per k step.
            && self.kv_tile_rows % 16 == 0
            // Every head dimension the host supports (`kernels::SUPPORTED_HEAD_DIMS`) is a multiple of 32.
            && self.head_dim % 32 == 0
            && self.stages >= 2
            && self.stages <= 4
            // Cooperative copies give every thread the same number of chunks.
            && (self.q_tile_rows * chunks_per_row) % self.threads() == 0
            && (self.kv_tile_rows * chunks_per_row) % self.threads() == 0
    }
}

/// Head dimension 32, small problems: 4 warps x 16 query rows, 64 keys per step, 2 stages
/// (rows padded to 64 elements: 40 KiB of shared memory).
pub const HEAD_DIM_32_Q64: TileConfig = TileConfig {
    head_dim: 32,
    q_tile_rows: 64,
    m_tiles: 1,
    q_register_k_steps: 2,
    kv_tile_rows: 64,
    warps: 4,
    stages: 2,
    interleaved_m_tiles: false,
};

/// Head dimension 32, large problems: 4 warps x 32 query rows (two interleaved m-tiles), 64 keys
/// per step, 2 stages (48 KiB of shared memory).
pub const HEAD_DIM_32_Q128: TileConfig = TileConfig {
    head_dim: 32,
    q_tile_rows: 128,
    m_tiles: 2,
    q_register_k_steps: 2,
    kv_tile_rows: 64,
    warps: 4,
    stages: 2,
    interleaved_m_tiles: true,
};

/// Head dimension 64, small problems: 4 warps x 16 query rows (64-row Q tiles, twice as many
/// CTAs), 64 keys per step, 2 stages (40 KiB of shared memory).
pub const HEAD_DIM_64_Q64: TileConfig = TileConfig {
    head_dim: 64,
    q_tile_rows: 64,
    m_tiles: 1,
    q_register_k_steps: 4,
    kv_tile_rows: 64,
    warps: 4,
    stages: 2,
    interleaved_m_tiles: false,
};

/// Head dimension 64, large problems: 4 warps x 32 query rows (two interleaved m-tiles), Q
/// fragments in registers (a fifth less shared-memory traffic per mma than re-reading them),
/// 64 keys per step, 2 stages (48 KiB of shared memory).
pub const HEAD_DIM_64_Q128: TileConfig = TileConfig {
    head_dim: 64,
    q_tile_rows: 128,
    m_tiles: 2,
    q_register_k_steps: 4,
    kv_tile_rows: 64,
    warps: 4,
    stages: 2,
    interleaved_m_tiles: true,
};

/// Head dimension 96, small problems: 4 warps x 16 query rows, 64 keys per step, 2 stages
/// (rows padded to 128 elements: 80 KiB of shared memory).
pub const HEAD_DIM_96_Q64: TileConfig = TileConfig {
    head_dim: 96,
    q_tile_rows: 64,
    m_tiles: 1,
    q_register_k_steps: 6,
    kv_tile_rows: 64,
    warps: 4,
    stages: 2,
    interleaved_m_tiles: false,
};

/// Head dimension 96, large problems: 4 warps x 32 query rows, Q re-read from shared memory,
/// 32 keys per step (as D = 128: 64 spilled registers), 2 stages (64 KiB of shared memory).
pub const HEAD_DIM_96_Q128: TileConfig = TileConfig {
    head_dim: 96,
    q_tile_rows: 128,
    m_tiles: 2,
    q_register_k_steps: 0,
    kv_tile_rows: 32,
    warps: 4,
    stages: 2,
    interleaved_m_tiles: false,
};

/// Head dimension 128, small problems: 4 warps x 16 query rows, Q re-read from shared memory
/// (all of it in registers fits but measured 11% slower on an H200), 64 keys per step, 2 stages
/// (80 KiB of shared memory).
pub const HEAD_DIM_128_Q64: TileConfig = TileConfig {
    head_dim: 128,
    q_tile_rows: 64,
    m_tiles: 1,
    q_register_k_steps: 0,
    kv_tile_rows: 64,
    warps: 4,
    stages: 2,
    interleaved_m_tiles: false,
};

/// Head dimension 128, large problems: 4 warps x 32 query rows, the first 2 of Q's 8 k steps in
/// registers and the rest re-read from shared memory (4 in registers spill on sm_90), 32 keys per
/// step, 2 stages (64 KiB of shared memory): two CTAs per SM on every GPU from sm_80 with
/// 164 KiB or more per SM.
pub const HEAD_DIM_128_Q128: TileConfig = TileConfig {
    head_dim: 128,
    q_tile_rows: 128,
    m_tiles: 2,
    q_register_k_steps: 2,
    kv_tile_rows: 32,
    warps: 4,
    stages: 2,
    interleaved_m_tiles: false,
};

/// Head dimension 128, large problems, 64 keys per step: as [`HEAD_DIM_128_Q128`] with Q
/// re-read from shared memory for every k step (S's 64 registers take the room of Q's), so each
/// K/V step reads Q once per 64 keys instead of 32. 96 KiB of shared memory: two CTAs per SM
/// only where an SM has 194 KiB or more (sm_90), which is where the host chooses it
/// (`kernels::select`); on an H100, 0.5–2.5% faster than 32-key tiles in most runs from 1024 to
/// 16384 rows and up to 3.6% slower in others (docs/perf-notes.md, tenth and eleventh
/// sessions). Plain and masked kernels only: the score-modifier variants spill.
pub const HEAD_DIM_128_Q128_K64: TileConfig = TileConfig {
    head_dim: 128,
    q_tile_rows: 128,
    m_tiles: 2,
    q_register_k_steps: 0,
    kv_tile_rows: 64,
    warps: 4,
    stages: 2,
    interleaved_m_tiles: false,
};

/// Head dimension 256: 4 warps x 16 query rows, Q re-read from shared memory, 32 keys per step,
/// 2 stages (96 KiB of shared memory, inside sm_89's 99 KiB per block).
pub const HEAD_DIM_256_Q64: TileConfig = TileConfig {
    head_dim: 256,
    q_tile_rows: 64,
    m_tiles: 1,
    q_register_k_steps: 0,
    kv_tile_rows: 32,
    warps: 4,
    stages: 2,
    interleaved_m_tiles: false,
};

/// Registers per thread that a configuration's kernels are capped at on a GPU of compute
/// capability `major.minor`, where the cap fits one more CTA per SM without spilling (the host
/// adds `.maxnreg` to their PTX before the driver compiles it); `None`: the compiler's choice,
/// up to 255.
///
/// d64_q64 kernels took 170–205 registers uncapped, so two 128-thread CTAs per SM; at 168 they
/// do not spill (ptxas, every variant), and three CTAs fit where shared memory holds three of
/// their 40 KiB (sm_80: 164 KiB per SM, sm_90: 228 KiB; not sm_86/sm_89 with 100 KiB). Measured
/// on an H200: causal (16,16,512,64) 56.4 → 49.6 µs, the small launches unchanged
/// (docs/perf-notes.md). Since the ldmatrix addresses became one register per lane
/// (`layout::swizzle_split`) they take 129–173 uncapped: the cap now binds only on the masked
/// varlen variants with score modifiers (169–173), and keeps the three CTAs there too.
pub const fn register_cap(tile: &TileConfig, major: i32, minor: i32) -> Option<usize> {
    let three_ctas_fit = matches!((major, minor), (8, 0) | (9, 0));
    let d64_q64 = tile.head_dim == HEAD_DIM_64_Q64.head_dim && tile.q_tile_rows == HEAD_DIM_64_Q64.q_tile_rows;
    if d64_q64 && three_ctas_fit {
        Some(168)
    } else {
        None
    }
}

/// Calls `$callback! { (config, TILE_CONFIG, variant, dtype, masked, score_mods, varlen), ... }`
/// with every attention entry point: each tile configuration x {f16, bf16} x masked x score
/// modifiers (the `unmodified` configurations without score modifiers), and for one
/// configuration per head dimension the same again with varlen. The entry point is named
/// `attention_fwd_<config>_<variant>`.
///
/// - masked: causal or sliding-window attention (the window is a launch parameter);
/// - score modifiers: softcap and/or ALiBi (launch parameters);
/// - varlen: sequence geometry from device arrays (varlen offsets, KV-cache lengths, paging,
///   split-KV).
///
/// Each is a kernel of its own so that the others pay nothing for it in registers.
///
/// The kernel crate stamps out the entry points from it and the host builds its table from it,
/// so the two cannot disagree. (Textually scoped: declare this module with `#[macro_use]`.)
macro_rules! for_each_kernel {
    ($callback:ident) => {
        for_each_kernel! { @expand $callback
            fixed: [
                (d32_q64, HEAD_DIM_32_Q64)
                (d32_q128, HEAD_DIM_32_Q128)
                (d64_q64, HEAD_DIM_64_Q64)
                (d64_q128, HEAD_DIM_64_Q128)
                (d96_q64, HEAD_DIM_96_Q64)
                (d96_q128, HEAD_DIM_96_Q128)
                (d128_q64, HEAD_DIM_128_Q64)
                (d128_q128, HEAD_DIM_128_Q128)
                (d256_q64, HEAD_DIM_256_Q64)
            ]
            unmodified: [
                (d128_q128_k64, HEAD_DIM_128_Q128_K64)
            ]
            varlen: [
                (d32_q64, HEAD_DIM_32_Q64)
                (d64_q64, HEAD_DIM_64_Q64)
                (d96_q64, HEAD_DIM_96_Q64)
                (d128_q64, HEAD_DIM_128_Q64)
                (d256_q64, HEAD_DIM_256_Q64)
            ]
        }
    };
    (@expand $callback:ident
        fixed: [ $( ($config:ident, $tile:ident) )* ]
        unmodified: [ $( ($uconfig:ident, $utile:ident) )* ]
        varlen: [ $( ($vconfig:ident, $vtile:ident) )* ]
    ) => {
        $callback! {
            $(
                ($config, $tile, f16, F16, false, false, false),
                ($config, $tile, f16_masked, F16, true, false, false),
                ($config, $tile, f16_scoremod, F16, false, true, false),
                ($config, $tile, f16_masked_scoremod, F16, true, true, false),
                ($config, $tile, bf16, Bf16, false, false, false),
                ($config, $tile, bf16_masked, Bf16, true, false, false),
                ($config, $tile, bf16_scoremod, Bf16, false, true, false),
                ($config, $tile, bf16_masked_scoremod, Bf16, true, true, false),
            )*
            $(
                ($uconfig, $utile, f16, F16, false, false, false),
                ($uconfig, $utile, f16_masked, F16, true, false, false),
                ($uconfig, $utile, bf16, Bf16, false, false, false),
                ($uconfig, $utile, bf16_masked, Bf16, true, false, false),
            )*
            $(
                ($vconfig, $vtile, f16_varlen, F16, false, false, true),
                ($vconfig, $vtile, f16_masked_varlen, F16, true, false, true),
                ($vconfig, $vtile, f16_scoremod_varlen, F16, false, true, true),
                ($vconfig, $vtile, f16_masked_scoremod_varlen, F16, true, true, true),
                ($vconfig, $vtile, bf16_varlen, Bf16, false, false, true),
                ($vconfig, $vtile, bf16_masked_varlen, Bf16, true, false, true),
                ($vconfig, $vtile, bf16_scoremod_varlen, Bf16, false, true, true),
                ($vconfig, $vtile, bf16_masked_scoremod_varlen, Bf16, true, true, true),
            )*
        }
    };
}

/// Launch parameters of the split-KV combine kernel (`attention_combine_<dtype>`): one warp per
/// (row, head, batch) merges `splits` partial outputs by their logsumexps.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CombineParams {
    /// f32 partial outputs, `[split, batch, heads, seq_q, head_dim]` contiguous.
    pub o_partial: u64,
    /// f32 partial logsumexps, `[split, batch, heads, seq_q]` contiguous.
    pub lse_partial: u64,
    /// The output (f16 or bf16) through `o_strides`.
    pub o: u64,
    /// The f32 logsumexp output, `[batch, heads, seq_q]` contiguous, or 0.
    pub lse: u64,
    /// Strides of O.
    pub o_strides: Strides,
    /// Number of splits.
    pub splits: u32,
    /// Batch size (the grid's z dimension).
    pub batch: u32,
    /// Heads (the grid's y dimension).
    pub heads: u32,
    /// Query rows (the grid's x dimension).
    pub seq_q: u32,
    /// Head dimension (a multiple of 32).
    pub head_dim: u32,
}

/// Launch parameters of the KV-cache append kernel (`kv_cache_append`): copies `rows` new K and V
/// rows of each sequence into the cache at rows `lengths[b]..lengths[b] + rows`, and writes
/// `lengths[b] + rows` to `next_lengths[b]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AppendParams {
    /// New keys, `[batch, kv_heads, rows, head_dim]` through `k_new_strides`.
    pub k_new: u64,
    /// New values through `v_new_strides`.
    pub v_new: u64,
    /// The key cache through `cache_strides` (paged: batch stride = page stride).
    pub k_cache: u64,
    /// The value cache, laid out as the key cache.
    pub v_cache: u64,
    /// `[batch]` u32 current lengths (read).
    pub lengths: u64,
    /// `[batch]` u32 lengths after the append (written).
    pub next_lengths: u64,
    /// Paged cache: `[batch, block_table_stride]` u32 page indices, or 0.
    pub block_table: u64,
    /// Strides of the new keys.
    pub k_new_strides: Strides,
    /// Strides of the new values.
    pub v_new_strides: Strides,
    /// Strides of both caches.
    pub cache_strides: Strides,
    /// New rows per sequence.
    pub rows: u32,
    /// K/V heads (the grid's y dimension).
    pub kv_heads: u32,
    /// Head dimension (a multiple of 8).
    pub head_dim: u32,
    /// Rows each sequence's cache holds (capacity).
    pub capacity: u32,
    /// Paged cache: entries per row of `block_table`.
    pub block_table_stride: u32,
    /// Paged cache: rows per page.
    pub page_rows: u32,
}

/// Threads per CTA of the append kernel.
pub const APPEND_THREADS: usize = 128;

/// A TMA tensor map (`CUtensorMap`): 128 opaque bytes that the host encodes with
/// `cuTensorMapEncodeTiled` and the kernel hands to `cp.async.bulk.tensor` straight from its
/// parameter space. The copy engine needs them 64-byte aligned; rustc's NVPTX calling convention
/// caps a parameter's alignment at 16, so the host's build script raises the declared alignment
/// of the Hopper kernels' tensor-map parameter to 64 in the PTX (`HOPPER_MAPS_PARAM_ALIGN`).
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorMap(pub [u64; 16]);

/// The second parameter of the Hopper kernels: one tensor map per input, each over the tensor
/// as `[batch, heads, rows, head_dim]` (innermost last) with a box of `HOPPER_BOX_COLS` columns
/// by the tile's rows, 128-byte swizzled.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorMaps {
    /// Q, box `q_tile_rows` rows.
    pub q: TensorMap,
    /// K (`heads / kv_group` heads), box `kv_tile_rows` rows.
    pub k: TensorMap,
    /// V, as K.
    pub v: TensorMap,
}

/// Alignment the Hopper kernels' `TensorMaps` parameter is declared with in the PTX.
pub const HOPPER_MAPS_PARAM_ALIGN: usize = 64;

/// Byte offsets of the tensor maps inside [`TensorMaps`] (the kernels address them in their
/// parameter space).
pub const TENSOR_MAP_Q_OFFSET: usize = core::mem::offset_of!(TensorMaps, q);
/// See [`TENSOR_MAP_Q_OFFSET`].
pub const TENSOR_MAP_K_OFFSET: usize = core::mem::offset_of!(TensorMaps, k);
/// See [`TENSOR_MAP_Q_OFFSET`].
pub const TENSOR_MAP_V_OFFSET: usize = core::mem::offset_of!(TensorMaps, v);

/// Columns of one TMA box: 64 16-bit elements, one 128-byte swizzle row. Wider head dims are
/// loaded as several column blocks.
pub const HOPPER_BOX_COLS: usize = 64;

/// Compile-time parameters of a Hopper (wgmma + TMA) kernel configuration: a producer warpgroup
/// that loads Q once and streams K/V through a `stages`-deep ring of shared-memory buffers
/// guarded by `mbarrier`s, and `consumer_warpgroups` warpgroups of 64 query rows each that run
/// `wgmma` and the online softmax.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HopperConfig {
    /// Head dimension (a multiple of 64).
    pub head_dim: usize,
    /// Key/value rows per pipeline stage (the N of S = Q·Kᵀ).
    pub kv_tile_rows: usize,
    /// Depth of the K/V ring.
    pub stages: usize,
    /// Consumer warpgroups, 64 query rows each.
    pub consumer_warpgroups: usize,
}

/// Registers per thread of a Hopper kernel at launch (the JIT's cap, so that `setmaxnreg` can
/// move registers between warpgroups): 384 threads x 168 fit the SM's 64 Ki registers.
pub const HOPPER_LAUNCH_REGISTERS: usize = 168;
/// Registers per thread the producer warpgroup keeps after `setmaxnreg.dec`.
pub const HOPPER_PRODUCER_REGISTERS: u32 = 40;
/// Registers per thread the consumer warpgroups get with `setmaxnreg.inc`
/// (40 · 128 + 232 · 256 ≤ 65 536).
pub const HOPPER_CONSUMER_REGISTERS: u32 = 232;

impl HopperConfig {
    /// Query rows per CTA.
    pub const fn q_tile_rows(&self) -> usize {
        64 * self.consumer_warpgroups
    }

    /// Threads per CTA: the producer warpgroup and the consumers.
    pub const fn threads(&self) -> usize {
        128 * (1 + self.consumer_warpgroups)
    }

    /// Bytes of a `rows`-row tile in shared memory (column blocks of 64 x 128-byte rows).
    pub const fn tile_bytes(&self, rows: usize) -> usize {
        rows * self.head_dim * ELEMENT_BYTES
    }

    /// Bytes of the `mbarrier`s: Q full, per stage K full, V full, K empty and V empty, and Q
    /// empty.
    pub const fn barrier_bytes(&self) -> usize {
        8 * (2 + 4 * self.stages)
    }

    /// Dynamic shared memory per CTA: 1 KiB of slack to align the tiles to the 1024-byte
    /// swizzle atom, Q, `stages` K and V tiles, the barriers.
    pub const fn smem_bytes(&self) -> usize {
        1024 + self.tile_bytes(self.q_tile_rows())
            + 2 * self.stages * self.tile_bytes(self.kv_tile_rows)
            + self.barrier_bytes()
    }

    /// The per-warp view that the online softmax and masks share with the mma.sync kernels:
    /// each consumer warp owns 16 query rows and `kv_tile_rows` scores per row.
    pub const fn warp_tile(&self) -> TileConfig {
        TileConfig {
            head_dim: self.head_dim,
            q_tile_rows: self.q_tile_rows(),
            m_tiles: 1,
            q_register_k_steps: 0,
            kv_tile_rows: self.kv_tile_rows,
            warps: 4 * self.consumer_warpgroups,
            stages: self.stages,
            interleaved_m_tiles: false,
        }
    }

    /// Whether the parameters are internally consistent.
    pub const fn is_consistent(&self) -> bool {
        self.head_dim % HOPPER_BOX_COLS == 0
            && (self.kv_tile_rows == 64 || self.kv_tile_rows == 128)
            && self.kv_tile_rows <= 256
            && self.stages >= 2
            && self.consumer_warpgroups >= 1
            && self.warp_tile().is_consistent()
            && HOPPER_PRODUCER_REGISTERS as usize * 128
                + HOPPER_CONSUMER_REGISTERS as usize * 128 * self.consumer_warpgroups
                <= 65536
    }
}

/// Hopper, head dimension 64: 2 consumer warpgroups (128 query rows), 128 keys per stage,
/// 2 stages (81 KiB of shared memory).
pub const HOPPER_HEAD_DIM_64: HopperConfig =
    HopperConfig { head_dim: 64, kv_tile_rows: 128, stages: 2, consumer_warpgroups: 2 };

/// Hopper, head dimension 128: 2 consumer warpgroups, 128 keys per stage, 2 stages (161 KiB).
pub const HOPPER_HEAD_DIM_128: HopperConfig =
    HopperConfig { head_dim: 128, kv_tile_rows: 128, stages: 2, consumer_warpgroups: 2 };

/// Calls `$callback! { (config, HOPPER_CONFIG, variant, dtype, masked), ... }` with every Hopper
/// entry point, named `attention_fwd_hopper_<config>_<variant>`: f16/bf16, masked or not, fixed
/// lengths without score modifiers (everything else runs the mma.sync kernels on Hopper too).
// Only the sm_90a build (feature `hopper`) stamps these out; the host's table always uses it.
/// Calls `$callback!` with the list of mma.sync configurations that also have a TMA variant in the
/// sm_90a PTX, `attention_fwd_hopper_mma_<config>_<variant>(AttentionParams, TensorMaps)`: the
/// plain kernels (fixed lengths, no score modifiers) of tiles that are `tma_compatible`. Tuples:
/// `(config, tile, variant, dtype, masked)`.
// (A plain allow: this file is also compiled by the host crate, which has no such feature.)
#[allow(unused_macros)]
macro_rules! for_each_tma_kernel {
    ($callback:ident) => {
        $callback! {
            (d64_q128, HEAD_DIM_64_Q128, f16, F16, false),
            (d64_q128, HEAD_DIM_64_Q128, f16_masked, F16, true),
            (d64_q128, HEAD_DIM_64_Q128, bf16, Bf16, false),
            (d64_q128, HEAD_DIM_64_Q128, bf16_masked, Bf16, true),
        }
    };
}

// (A plain allow: this file is also compiled by the host crate, which has no such feature.)
#[allow(unused_macros)]
macro_rules! for_each_hopper_kernel {
    ($callback:ident) => {
        for_each_hopper_kernel! { @expand $callback [(d64, HOPPER_HEAD_DIM_64) (d128, HOPPER_HEAD_DIM_128)] }
    };
    (@expand $callback:ident [ $( ($config:ident, $tile:ident) )* ]) => {
        $callback! {
            $(
                ($config, $tile, f16, F16, false),
                ($config, $tile, f16_masked, F16, true),
                ($config, $tile, bf16, Bf16, false),
                ($config, $tile, bf16_masked, Bf16, true),
            )*
        }
    };
}
