//! The kernel entry points in the embedded PTX and how one is chosen.

use crate::abi::{TileConfig, HEAD_DIM_128, HEAD_DIM_64};
use crate::error::{Error, Result};

/// The PTX of all kernels, built from `kernels-gpu` by `build.rs` (target `sm_80`, so it runs on
/// sm_80, sm_86, sm_89 and sm_90 through the driver's JIT).
pub static PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/flashcore_kernels.ptx"));

/// One kernel entry point and its compile-time configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelInfo {
    /// Entry-point name in the PTX.
    pub name: &'static str,
    /// Tile configuration.
    pub tile: TileConfig,
    /// Whether it applies the causal mask.
    pub causal: bool,
}

macro_rules! kernel_table {
    ($( ($name:ident, $tile:ident, $causal:expr) ),* $(,)?) => {
        /// Every kernel entry point in [`PTX`].
        pub static KERNELS: &[KernelInfo] = &[
            $( KernelInfo { name: stringify!($name), tile: $tile, causal: $causal } ),*
        ];
    };
}
for_each_kernel!(kernel_table);

/// Head dimensions with a kernel.
pub const SUPPORTED_HEAD_DIMS: [usize; 2] = [64, 128];

/// The kernel for a head dimension and causality. One configuration per (head dim, causal) for
/// now; its shared memory (at most 80 KiB) fits every device from sm_80 on.
pub fn select(head_dim: usize, causal: bool) -> Option<&'static KernelInfo> {
    KERNELS.iter().find(|k| k.tile.head_dim == head_dim && k.causal == causal)
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
