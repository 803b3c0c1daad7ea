//! The kernel entry points in the embedded PTX and how one is chosen.

use std::borrow::Cow;

use crate::abi::*;
use crate::error::{Error, Result};
use crate::register_caps::capped_ptx;

/// The PTX of all kernels, built from `kernels-gpu` by `build.rs` (target `sm_80`, so it runs on
/// sm_80, sm_86, sm_89 and sm_90 through the driver's JIT).
pub static PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/flashcore_kernels.ptx"));

/// The PTX the driver compiles on a GPU of compute capability `major.minor`: [`PTX`] with the
/// per-architecture register caps of [`register_cap`] (unchanged where none applies).
pub fn ptx_for_device(major: i32, minor: i32) -> Cow<'static, str> {
    match capped_ptx(PTX, KERNELS.iter().map(|k| (k.name, k.tile)), major, minor) {
        Some(capped) => Cow::Owned(capped),
        None => Cow::Borrowed(PTX),
    }
}

/// The PTX of the Hopper kernels (target `sm_90a`: `wgmma`, TMA, `setmaxnreg`), loaded on
/// devices of compute capability 9.0 only, with a JIT register cap of
/// [`HOPPER_LAUNCH_REGISTERS`].
pub static HOPPER_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/flashcore_kernels_sm90a.ptx"));

/// One Hopper (wgmma + TMA) attention entry point and its configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HopperKernelInfo {
    /// Entry-point name in [`HOPPER_PTX`].
    pub name: &'static str,
    /// Pipeline configuration.
    pub config: HopperConfig,
    /// Element type of its tensors.
    pub dtype: Dtype,
    /// Whether it applies a mask per query row (causal or sliding-window attention).
    pub masked: bool,
}

macro_rules! hopper_kernel_table {
    ($( ($config:ident, $tile:ident, $variant:ident, $dtype:ident, $masked:expr) ),* $(,)?) => {
        /// Every attention entry point in [`HOPPER_PTX`].
        pub static HOPPER_KERNELS: &[HopperKernelInfo] = &[ $(
            HopperKernelInfo {
                name: concat!("attention_fwd_hopper_", stringify!($config), "_", stringify!($variant)),
                config: $tile,
                dtype: Dtype::$dtype,
                masked: $masked,
            }
        ),* ];
    };
}
for_each_hopper_kernel!(hopper_kernel_table);

/// The Hopper kernel for an element type, head dimension and mask, if there is one.
pub fn select_hopper(dtype: Dtype, head_dim: usize, masked: bool) -> Option<&'static HopperKernelInfo> {
    HOPPER_KERNELS.iter().find(|k| k.dtype == dtype && k.config.head_dim == head_dim && k.masked == masked)
}

/// One attention entry point and its compile-time configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelInfo {
    /// Entry-point name in the PTX.
    pub name: &'static str,
    /// Tile configuration.
    pub tile: TileConfig,
    /// Element type of its tensors.
    pub dtype: Dtype,
    /// Whether it applies a mask per query row (causal or sliding-window attention).
    pub masked: bool,
    /// Whether it can modify scores (softcap, ALiBi).
    pub score_mods: bool,
    /// Whether it takes sequence geometry from device arrays (varlen, KV cache, paging,
    /// split-KV).
    pub varlen: bool,
}

macro_rules! kernel_table {
    ($( ($config:ident, $tile:ident, $variant:ident, $dtype:ident, $masked:expr, $score_mods:expr, $varlen:expr) ),* $(,)?) => {
        /// Every attention entry point in [`PTX`].
        pub static KERNELS: &[KernelInfo] = &[ $(
            KernelInfo {
                name: concat!("attention_fwd_", stringify!($config), "_", stringify!($variant)),
                tile: $tile,
                dtype: Dtype::$dtype,
                masked: $masked,
                score_mods: $score_mods,
                varlen: $varlen,
            }
        ),* ];
    };
}
for_each_kernel!(kernel_table);

impl KernelInfo {
    /// Whether the entry point takes [`ExtendedParams`] as its second parameter (plain kernels
    /// take [`AttentionParams`] alone).
    pub const fn takes_extended_params(&self) -> bool {
        takes_extended_params(self.score_mods, self.varlen)
    }
}

/// The split-KV combine entry point for an element type (one warp per row, grid
/// `(seq_q, heads, batch)`).
pub const fn combine_kernel(dtype: Dtype) -> &'static str {
    match dtype {
        Dtype::F16 => "attention_combine_f16",
        Dtype::Bf16 => "attention_combine_bf16",
    }
}

/// The KV-cache append entry point (`abi::APPEND_THREADS` threads per CTA).
pub const APPEND_KERNEL: &str = "kv_cache_append";

/// Head dimensions with a kernel.
pub const SUPPORTED_HEAD_DIMS: [usize; 5] = [32, 64, 96, 128, 256];

/// The kernel for a problem: its element type and head dimension, whether it is masked (causal
/// or windowed), modifies scores (softcap, ALiBi) and reads sequence geometry from device arrays
/// (varlen, KV cache), and the tile height.
///
/// With `q_tile_rows` given, exactly that configuration (or `None`). Otherwise the tallest Q
/// tile that still gives at least one CTA per multiprocessor (`batch_heads · ⌈seq_q / rows⌉ ≥
/// multiprocessors`): tall tiles halve shared-memory traffic per FLOP, short ones fill the GPU
/// when there is little work; with too little work for any, the shortest.
#[allow(clippy::too_many_arguments)]
pub fn select(
    dtype: Dtype,
    head_dim: usize,
    masked: bool,
    score_mods: bool,
    varlen: bool,
    batch_heads: usize,
    seq_q: usize,
    multiprocessors: usize,
    q_tile_rows: Option<usize>,
) -> Option<&'static KernelInfo> {
    // Runs on every launch: iterate the static table, allocate nothing.
    let candidates = || {
        KERNELS.iter().filter(move |k| {
            k.dtype == dtype
                && k.tile.head_dim == head_dim
                && k.masked == masked
                && k.score_mods == score_mods
                && k.varlen == varlen
        })
    };
    if let Some(rows) = q_tile_rows {
        return candidates().find(|k| k.tile.q_tile_rows == rows);
    }
    let fills = |k: &&KernelInfo| batch_heads.saturating_mul(seq_q.div_ceil(k.tile.q_tile_rows)) >= multiprocessors;
    candidates()
        .filter(fills)
        .max_by_key(|k| k.tile.q_tile_rows)
        .or_else(|| candidates().min_by_key(|k| k.tile.q_tile_rows))
}

/// Checks that a device of compute capability `major.minor`, granting `smem_per_block` bytes of
/// (opt-in) shared memory to one block, can run every kernel.
pub fn check_device(major: i32, minor: i32, smem_per_block: usize) -> Result<()> {
    if major < 8 {
        return Err(Error::UnsupportedDevice { major, minor });
    }
    match KERNELS.iter().find(|k| k.tile.smem_bytes() > smem_per_block) {
        Some(k) => Err(Error::SharedMemory { kernel: k.name, needed: k.tile.smem_bytes(), available: smem_per_block }),
        None => Ok(()),
    }
}
