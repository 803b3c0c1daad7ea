//! FlashCore's GPU kernels, compiled to PTX by rustc's NVPTX backend (`host/build.rs` drives it).
//!
//! Layers, bottom up:
//! - [`arch`]: PTX special registers and instructions (ids, barriers, shuffles, shared memory,
//!   `ldmatrix`, `mma.sync`, `cp.async`, `ex2`);
//! - [`layout`]: where each element lives (swizzle, fragment ownership); shared with the host's
//!   tests;
//! - [`tile`]: register fragments and swizzled shared-memory tiles;
//! - [`attention`]: the generic FlashAttention-2 forward body;
//! - the `extern "ptx-kernel"` entry points below, one per configuration in [`abi`], stamped out by
//!   a macro.
#![no_std]
#![feature(
    abi_ptx,
    stdarch_nvptx,
    asm_experimental_arch,
    core_intrinsics,
    gpu_intrinsics,
    gpu_launch_sized_workgroup_mem
)]
#![allow(internal_features)]
// Register tiles are fixed-size arrays indexed by loop counters that unroll to constants; the
// index form mirrors the fragment layout tables, so keep it.
#![allow(clippy::needless_range_loop)]

#[macro_use]
pub mod abi;
pub mod arch;
pub mod attention;
pub mod layout;
pub mod tile;

use abi::*;
use attention::KernelTraits;
use tile::{AFrag, CFrag};

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // SAFETY: `trap` aborts the kernel; the host sees a launch failure.
    unsafe { core::arch::nvptx::trap() }
}

/// Stamps out, per configuration, a `KernelTraits` type (in a module named after the entry point)
/// and the `extern "ptx-kernel"` entry point that runs the generic body with it.
macro_rules! stamp_entry_points {
    ($( ($name:ident, $tile:ident, $masked:expr, $softcap:expr) ),* $(,)?) => { $(
        #[allow(non_snake_case)]
        mod $name {
            use super::*;
            pub struct Traits;
            impl KernelTraits for Traits {
                const TILE: TileConfig = $tile;
                const MASKED: bool = $masked;
                const SOFTCAP: bool = $softcap;
                type QFrags = [AFrag; if $tile.q_in_registers { $tile.m_tiles * $tile.head_dim / 16 } else { 0 }];
                type Scores = [CFrag; $tile.m_tiles * $tile.kv_tile_rows / 8];
                type Output = [CFrag; $tile.m_tiles * $tile.head_dim / 8];
                type RowValues = [f32; 2 * $tile.m_tiles];
            }
        }

        /// Attention forward entry point; see `attention::attention_forward` for the contract.
        ///
        /// # Safety
        /// Launch configuration and parameters as validated and chosen by the host library.
        #[no_mangle]
        pub unsafe extern "ptx-kernel" fn $name(params: AttentionParams) {
            // SAFETY: forwarded from the caller.
            unsafe { attention::attention_forward::<$name::Traits>(&params) }
        }
    )* };
}

for_each_kernel!(stamp_entry_points);
