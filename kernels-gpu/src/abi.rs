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

/// Everything one attention launch needs, passed by value as a single kernel parameter.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionParams {
    /// Device address of Q (f16), `[batch, heads, seq_q, head_dim]` through `q_strides`.
    pub q: u64,
    /// Device address of K (f16), `[batch, heads / kv_group, seq_k, head_dim]` through `k_strides`.
    pub k: u64,
    /// Device address of V (f16), `[batch, heads / kv_group, seq_k, head_dim]` through `v_strides`.
    pub v: u64,
    /// Device address of O (f16), `[batch, heads, seq_q, head_dim]` through `o_strides`.
    pub o: u64,
    /// Device address of the f32 logsumexp, contiguous `[batch, heads, seq_q]`; 0 when not wanted.
    pub lse: u64,
    /// Strides of Q.
    pub q_strides: Strides,
    /// Strides of K.
    pub k_strides: Strides,
    /// Strides of V.
    pub v_strides: Strides,
    /// Strides of O.
    pub o_strides: Strides,
    /// Number of query rows per (batch, head).
    pub seq_q: u32,
    /// Number of key/value rows per (batch, head).
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
    /// Softcap kernels: each score s becomes `softcap * tanh(s * softcap_scale)` (natural units)
    /// before the softmax; `scale_log2` is then log2(e). Ignored by the other kernels.
    pub softcap: f32,
    /// The softmax scale divided by `softcap`.
    pub softcap_scale: f32,
}

/// Compile-time tile parameters of one kernel configuration (FlashAttention-2's `Kernel_traits`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileConfig {
    /// Head dimension D (elements per row of Q, K, V and O).
    pub head_dim: usize,
    /// Query rows handled by one CTA: `16 * m_tiles` per warp.
    pub q_tile_rows: usize,
    /// 16-row mma tiles per warp. With 2, every K/V fragment read from shared memory feeds two
    /// mma instead of one.
    pub m_tiles: usize,
    /// Keep this warp's Q fragments in registers for the whole kernel (else re-read them from
    /// shared memory for each K tile, which frees registers for large head dims).
    pub q_in_registers: bool,
    /// Key/value rows loaded per main-loop step.
    pub kv_tile_rows: usize,
    /// Warps per CTA.
    pub warps: usize,
    /// Shared-memory stages of the K/V `cp.async` pipeline.
    pub stages: usize,
}

/// Bytes of one f16 element.
pub const ELEMENT_BYTES: usize = 2;

impl TileConfig {
    /// Threads per CTA.
    pub const fn threads(&self) -> usize {
        self.warps * 32
    }

    /// Bytes of one shared-memory tile of `rows` rows.
    pub const fn tile_bytes(&self, rows: usize) -> usize {
        rows * self.head_dim * ELEMENT_BYTES
    }

    /// Dynamic shared memory per CTA: the Q tile plus `stages` K tiles and `stages` V tiles.
    pub const fn smem_bytes(&self) -> usize {
        self.tile_bytes(self.q_tile_rows) + 2 * self.stages * self.tile_bytes(self.kv_tile_rows)
    }

    /// Whether the parameters are internally consistent (checked at compile time in the kernels
    /// and by a host test).
    pub const fn is_consistent(&self) -> bool {
        // 16-byte chunks per row; the XOR swizzle permutes aligned groups of 8 chunks.
        let chunks_per_row = self.head_dim / 8;
        self.q_tile_rows == 16 * self.m_tiles * self.warps
            && self.m_tiles >= 1
            && self.m_tiles <= 4
            && self.kv_tile_rows % 16 == 0
            && self.head_dim % 64 == 0
            && self.stages >= 2
            && self.stages <= 4
            // Cooperative copies give every thread the same number of chunks.
            && (self.q_tile_rows * chunks_per_row) % self.threads() == 0
            && (self.kv_tile_rows * chunks_per_row) % self.threads() == 0
    }
}

/// Head dimension 64, small problems: 4 warps x 16 query rows (64-row Q tiles, twice as many
/// CTAs), 64 keys per step, 2 stages (40 KiB of shared memory).
pub const HEAD_DIM_64_Q64: TileConfig = TileConfig {
    head_dim: 64,
    q_tile_rows: 64,
    m_tiles: 1,
    q_in_registers: true,
    kv_tile_rows: 64,
    warps: 4,
    stages: 2,
};

/// Head dimension 64, large problems: 4 warps x 32 query rows, 64 keys per step, 2 stages
/// (48 KiB of shared memory).
pub const HEAD_DIM_64_Q128: TileConfig = TileConfig {
    head_dim: 64,
    q_tile_rows: 128,
    m_tiles: 2,
    q_in_registers: false,
    kv_tile_rows: 64,
    warps: 4,
    stages: 2,
};

/// Head dimension 128, small problems: 4 warps x 16 query rows, 64 keys per step, 2 stages
/// (80 KiB of shared memory).
pub const HEAD_DIM_128_Q64: TileConfig = TileConfig {
    head_dim: 128,
    q_tile_rows: 64,
    m_tiles: 1,
    q_in_registers: false,
    kv_tile_rows: 64,
    warps: 4,
    stages: 2,
};

/// Head dimension 128, large problems: 4 warps x 32 query rows, Q re-read from shared memory,
/// 64 keys per step, 2 stages (96 KiB of shared memory, inside sm_89's 99 KiB per block).
pub const HEAD_DIM_128_Q128: TileConfig = TileConfig {
    head_dim: 128,
    q_tile_rows: 128,
    m_tiles: 2,
    q_in_registers: false,
    kv_tile_rows: 32,
    warps: 4,
    stages: 2,
};

/// Head dimension 256: 4 warps x 16 query rows, Q re-read from shared memory, 32 keys per step,
/// 2 stages (96 KiB of shared memory, inside sm_89's 99 KiB per block).
pub const HEAD_DIM_256_Q64: TileConfig = TileConfig {
    head_dim: 256,
    q_tile_rows: 64,
    m_tiles: 1,
    q_in_registers: false,
    kv_tile_rows: 32,
    warps: 4,
    stages: 2,
};

/// Calls `$callback! { (entry_name, TILE_CONFIG, masked, softcap), ... }` with every kernel entry
/// point (masked: causal or sliding-window attention, the window a launch parameter; softcap:
/// `cap * tanh(s / cap)` on the scores, in kernels of their own so the others pay nothing).
/// The kernel crate stamps out the entry points from it and the host builds its table from it,
/// so the two cannot disagree. (Textually scoped: declare this module with `#[macro_use]`.)
macro_rules! for_each_kernel {
    ($callback:ident) => {
        $callback! {
            (attention_fwd_d64_q64, HEAD_DIM_64_Q64, false, false),
            (attention_fwd_d64_q64_masked, HEAD_DIM_64_Q64, true, false),
            (attention_fwd_d64_q64_softcap, HEAD_DIM_64_Q64, false, true),
            (attention_fwd_d64_q64_masked_softcap, HEAD_DIM_64_Q64, true, true),
            (attention_fwd_d64_q128, HEAD_DIM_64_Q128, false, false),
            (attention_fwd_d64_q128_masked, HEAD_DIM_64_Q128, true, false),
            (attention_fwd_d64_q128_softcap, HEAD_DIM_64_Q128, false, true),
            (attention_fwd_d64_q128_masked_softcap, HEAD_DIM_64_Q128, true, true),
            (attention_fwd_d128_q64, HEAD_DIM_128_Q64, false, false),
            (attention_fwd_d128_q64_masked, HEAD_DIM_128_Q64, true, false),
            (attention_fwd_d128_q64_softcap, HEAD_DIM_128_Q64, false, true),
            (attention_fwd_d128_q64_masked_softcap, HEAD_DIM_128_Q64, true, true),
            (attention_fwd_d128_q128, HEAD_DIM_128_Q128, false, false),
            (attention_fwd_d128_q128_masked, HEAD_DIM_128_Q128, true, false),
            (attention_fwd_d128_q128_softcap, HEAD_DIM_128_Q128, false, true),
            (attention_fwd_d128_q128_masked_softcap, HEAD_DIM_128_Q128, true, true),
            (attention_fwd_d256_q64, HEAD_DIM_256_Q64, false, false),
            (attention_fwd_d256_q64_masked, HEAD_DIM_256_Q64, true, false),
            (attention_fwd_d256_q64_softcap, HEAD_DIM_256_Q64, false, true),
            (attention_fwd_d256_q64_masked_softcap, HEAD_DIM_256_Q64, true, true),
        }
    };
}
