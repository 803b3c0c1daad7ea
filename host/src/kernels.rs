//! The kernel entry points in the embedded PTX and how one is chosen.

use std::borrow::Cow;

use crate::abi::*;
use crate::error::{Error, Result};
use crate::options::ForwardOptions;
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

/// The TMA variant of a plain mma.sync kernel in [`HOPPER_PTX`] (`abi::for_each_tma_kernel!`):
/// the same tiles and body, K/V tiles by the copy engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TmaKernelInfo {
    /// Entry-point name in [`HOPPER_PTX`].
    pub name: &'static str,
    /// Tile configuration (as the kernel it varies).
    pub tile: TileConfig,
    /// Element type of its tensors.
    pub dtype: Dtype,
    /// Whether it applies a mask per query row.
    pub masked: bool,
}

macro_rules! tma_kernel_table {
    ($( ($config:ident, $tile:ident, $variant:ident, $dtype:ident, $masked:expr) ),* $(,)?) => {
        /// Every TMA variant of an mma.sync kernel in [`HOPPER_PTX`].
        pub static TMA_KERNELS: &[TmaKernelInfo] = &[ $(
            TmaKernelInfo {
                name: concat!("attention_fwd_hopper_mma_", stringify!($config), "_", stringify!($variant)),
                tile: $tile,
                dtype: Dtype::$dtype,
                masked: $masked,
            }
        ),* ];
    };
}
for_each_tma_kernel!(tma_kernel_table);

/// The TMA variant of `kernel`, if it has one (plain kernels of TMA-compatible tiles).
pub fn select_tma(kernel: &KernelInfo) -> Option<&'static TmaKernelInfo> {
    if kernel.score_mods || kernel.varlen {
        return None;
    }
    TMA_KERNELS.iter().find(|t| t.tile == kernel.tile && t.dtype == kernel.dtype && t.masked == kernel.masked)
}

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

/// The shape of an mma.sync tile configuration: query rows per CTA and keys per main-loop step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TileShape {
    /// Query rows per CTA.
    pub q_tile_rows: usize,
    /// Keys (K/V rows) per main-loop step.
    pub kv_tile_rows: usize,
}

impl TileShape {
    /// The shape of `tile`.
    pub const fn of(tile: &TileConfig) -> Self {
        Self { q_tile_rows: tile.q_tile_rows, kv_tile_rows: tile.kv_tile_rows }
    }
}

impl std::fmt::Display for TileShape {
    /// `q_tile_rows x kv_tile_rows`, e.g. `128x64`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.q_tile_rows, self.kv_tile_rows)
    }
}

/// What the kernel choice needs to know of the device it runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceLimits {
    /// Streaming multiprocessors (SMs).
    pub multiprocessors: usize,
    /// Shared memory of one SM, shared by the CTAs resident on it, in bytes.
    pub smem_per_multiprocessor: usize,
    /// Shared memory the driver reserves per CTA (1 KiB from sm_80), in bytes.
    pub reserved_smem_per_cta: usize,
}

impl DeviceLimits {
    /// How many CTAs of `tile` the shared memory of one SM holds at once.
    pub const fn ctas_by_smem(&self, tile: &TileConfig) -> usize {
        self.smem_per_multiprocessor / (tile.smem_bytes() + self.reserved_smem_per_cta)
    }
}

/// CTAs per SM that the 4-warp mma.sync kernels can have resident by registers: at up to 255
/// registers per thread, 128 threads take half of an SM's 64 Ki registers.
pub const RESIDENT_CTAS_BY_REGISTERS: usize = 2;

/// What a call needs of its kernel: element type, head dimension, whether it is masked (causal
/// or windowed), modifies scores (softcap, ALiBi) and reads sequence geometry from device arrays
/// (varlen, KV cache).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelVariant {
    /// Element type of Q, K, V and O.
    pub dtype: Dtype,
    /// Head dimension.
    pub head_dim: usize,
    /// Causal or sliding-window masking.
    pub masked: bool,
    /// Softcap or ALiBi.
    pub score_mods: bool,
    /// Variable lengths, KV cache, paging or split-KV.
    pub varlen: bool,
}

impl KernelVariant {
    /// The variant a call with `options` needs: masked and score modifiers from the options.
    pub fn for_call(dtype: Dtype, head_dim: usize, options: &ForwardOptions<'_>, varlen: bool) -> Self {
        Self { dtype, head_dim, masked: options.is_masked(), score_mods: options.modifies_scores(), varlen }
    }

    /// The plain f16 variant, masked or not (fixed lengths, no score modifiers): what
    /// autotuning and the benchmarks time.
    pub const fn plain_f16(head_dim: usize, masked: bool) -> Self {
        Self { dtype: Dtype::F16, head_dim, masked, score_mods: false, varlen: false }
    }

    /// Every kernel of this variant, one per tile configuration.
    pub fn kernels(self) -> impl Iterator<Item = &'static KernelInfo> {
        KERNELS.iter().filter(move |k| {
            k.dtype == self.dtype
                && k.tile.head_dim == self.head_dim
                && k.masked == self.masked
                && k.score_mods == self.score_mods
                && k.varlen == self.varlen
        })
    }
}

/// The kernel of `variant` for `batch_heads` (batch · heads) query blocks of `seq_q` rows on
/// `device`; `q_tile_rows` and `kv_tile_rows`, where given, force that part of the tile shape
/// (`None` when no kernel has it).
///
/// - The tile height: the tallest Q tile that still gives at least one CTA per multiprocessor
///   (`batch_heads · ⌈seq_q / rows⌉ ≥ multiprocessors`): tall tiles halve shared-memory traffic
///   per FLOP, short ones fill the GPU when there is little work; with too little work for any,
///   the shortest.
/// - Keys per step, where a height has more than one: the most of which
///   [`RESIDENT_CTAS_BY_REGISTERS`] CTAs fit an SM's shared memory, else the fewest. Wider steps
///   read Q once per more keys, but not at the cost of a resident CTA (an A100's 164 KiB holds
///   two 64 KiB CTAs, one of 96 KiB). At head dim 128 and 128 rows on an H100 (two CTAs of
///   either per SM) the 64-key step was 0.5–2.5% faster in most runs from 1024 to 16384 rows,
///   and up to 3.6% slower in others: about the spread between runs (docs/perf-notes.md, tenth
///   and eleventh sessions). sm_86 and sm_89, where one CTA of either fits, keep the fewest: the
///   wider was not measured there.
pub fn select(
    variant: KernelVariant,
    batch_heads: usize,
    seq_q: usize,
    device: &DeviceLimits,
    q_tile_rows: Option<usize>,
    kv_tile_rows: Option<usize>,
) -> Option<&'static KernelInfo> {
    // Runs on every launch: iterate the static table, allocate nothing.
    let candidates = || {
        variant.kernels().filter(move |k| {
            q_tile_rows.is_none_or(|rows| k.tile.q_tile_rows == rows)
                && kv_tile_rows.is_none_or(|rows| k.tile.kv_tile_rows == rows)
        })
    };
    let fills =
        |k: &&KernelInfo| batch_heads.saturating_mul(seq_q.div_ceil(k.tile.q_tile_rows)) >= device.multiprocessors;
    let height = candidates()
        .filter(fills)
        .map(|k| k.tile.q_tile_rows)
        .max()
        .or_else(|| candidates().map(|k| k.tile.q_tile_rows).min())?;
    let at_height = || candidates().filter(move |k| k.tile.q_tile_rows == height);
    at_height()
        .filter(|k| device.ctas_by_smem(&k.tile) >= RESIDENT_CTAS_BY_REGISTERS)
        .max_by_key(|k| k.tile.kv_tile_rows)
        .or_else(|| at_height().min_by_key(|k| k.tile.kv_tile_rows))
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
