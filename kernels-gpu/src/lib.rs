//! FlashCore's GPU kernels, compiled to PTX by rustc's NVPTX backend (`host/build.rs` drives it).
//!
//! Layers, bottom up:
//! - [`arch`]: PTX special registers and instructions (ids, barriers, shuffles, shared memory,
//!   `ldmatrix`, `mma.sync`, `cp.async`, `ex2`);
//! - [`layout`]: where each element lives (swizzle, fragment ownership); shared with the host's
//!   tests;
//! - [`tile`]: register fragments and swizzled shared-memory tiles;
//! - [`attention`]: the generic FlashAttention-2 forward body; [`split_kv`]: the combine step of
//!   split-KV launches; [`kv_cache`]: appending rows to a KV cache;
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
// The sm_90a build stamps only the Hopper kernels; the mma.sync list and its stampers stay unused.
#![cfg_attr(feature = "hopper", allow(unused_macros))]
// Register tiles are fixed-size arrays indexed by loop counters that unroll to constants; the
// index form mirrors the fragment layout tables, so keep it.
#![allow(clippy::needless_range_loop)]

#[macro_use]
pub mod abi;
pub mod arch;
pub mod attention;
#[cfg(feature = "hopper")]
pub mod hopper;
pub mod kv_cache;
pub mod layout;
pub mod schedule;
pub mod split_kv;
pub mod tile;

use abi::*;
use attention::KernelTraits;
use tile::{AFrag, Bf16, CFrag, F16};

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // SAFETY: `trap` aborts the kernel; the host sees a launch failure.
    unsafe { core::arch::nvptx::trap() }
}

/// The `KernelTraits` type `Traits` of an mma.sync entry point: tile configuration, element type,
/// mask, score modifiers, varlen, K/V by TMA; the register tiles' lengths follow from the tile.
macro_rules! mma_sync_traits {
    ($tile:ident, $dtype:ident, $masked:tt, $score_mods:tt, $varlen:tt, $tma_kv:tt) => {
        struct Traits;
        impl KernelTraits for Traits {
            const TILE: TileConfig = $tile;
            type Elem = $dtype;
            const MASKED: bool = $masked;
            const SCORE_MODS: bool = $score_mods;
            const VARLEN: bool = $varlen;
            const TMA_KV: bool = $tma_kv;
            type QFrags = [AFrag; $tile.q_register_frags()];
            type Scores = [CFrag; $tile.m_tiles * $tile.kv_tile_rows / 8];
            type Output = [CFrag; $tile.m_tiles * $tile.head_dim / 8];
            type RowValues = [f32; 2 * $tile.m_tiles];
        }
    };
}

/// Stamps out, per entry of `for_each_kernel!`, a `KernelTraits` type and the
/// `extern "ptx-kernel"` entry point `attention_fwd_<config>_<variant>` that runs the generic body
/// with it (each in an anonymous scope of its own; the symbol name makes it unique).
macro_rules! stamp_entry_points {
    ($( ($config:ident, $tile:ident, $variant:ident, $dtype:ident, $masked:tt, $score_mods:tt, $varlen:tt) ),* $(,)?) => { $(
        const _: () = {
            mma_sync_traits!($tile, $dtype, $masked, $score_mods, $varlen, false);

            entry_point!(concat!("attention_fwd_", stringify!($config), "_", stringify!($variant)), $score_mods, $varlen);
        };
    )* };
}

/// The `extern "ptx-kernel"` function of one entry point, for `Traits` in scope: plain kernels
/// take [`AttentionParams`] alone, the others [`ExtendedParams`] too (see
/// [`abi::takes_extended_params`]).
macro_rules! entry_point {
    ($name:expr, false, false) => {
        /// Attention forward entry point; see `attention::attention_forward` for the contract.
        ///
        /// # Safety
        /// Launch configuration and parameters as validated and chosen by the host library.
        #[export_name = $name]
        unsafe extern "ptx-kernel" fn entry(params: AttentionParams) {
            // SAFETY: forwarded from the caller.
            unsafe { attention::attention_forward::<Traits>(&params, &ExtendedParams::NONE, 0) }
        }
    };
    ($name:expr, $score_mods:tt, $varlen:tt) => {
        /// Attention forward entry point; see `attention::attention_forward` for the contract.
        ///
        /// # Safety
        /// Launch configuration and parameters as validated and chosen by the host library.
        #[export_name = $name]
        unsafe extern "ptx-kernel" fn entry(params: AttentionParams, extended: ExtendedParams) {
            // SAFETY: forwarded from the caller.
            unsafe { attention::attention_forward::<Traits>(&params, &extended, 0) }
        }
    };
}

// The sm_80 PTX holds the mma.sync kernels, the sm_90a PTX (feature `hopper`) the Hopper ones.
#[cfg(not(feature = "hopper"))]
for_each_kernel!(stamp_entry_points);

/// Stamps out, per entry of `for_each_hopper_kernel!`, the traits and the entry point
/// `attention_fwd_hopper_<config>_<variant>(AttentionParams, TensorMaps, batch: u32)` (a
/// persistent grid: the work tiles come from the batch size, not the grid). The tensor maps are
/// used in place, in the parameter space, through their address (`param_address!`).
#[cfg(feature = "hopper")]
macro_rules! stamp_hopper_entry_points {
    ($( ($config:ident, $tile:ident, $variant:ident, $dtype:ident, $masked:tt) ),* $(,)?) => { $(
        const _: () = {
            struct Traits;
            impl KernelTraits for Traits {
                const TILE: TileConfig = $tile.warp_tile();
                type Elem = $dtype;
                const MASKED: bool = $masked;
                const SCORE_MODS: bool = false;
                const VARLEN: bool = false;
                type QFrags = [AFrag; 0];
                type Scores = [CFrag; $tile.kv_tile_rows / 8];
                type Output = [CFrag; $tile.head_dim / 8];
                type RowValues = [f32; 2];
            }
            impl hopper::HopperTraits for Traits {
                const CONFIG: HopperConfig = $tile;
            }

            /// Hopper attention forward entry point; see `hopper::attention_forward`.
            ///
            /// # Safety
            /// Launch configuration and parameters as validated and chosen by the host library.
            #[export_name = concat!("attention_fwd_hopper_", stringify!($config), "_", stringify!($variant))]
            unsafe extern "ptx-kernel" fn entry(params: AttentionParams, _maps: TensorMaps, batch: u32) {
                let maps = param_address!(
                    concat!("attention_fwd_hopper_", stringify!($config), "_", stringify!($variant), "_param_1"),
                    0
                );
                // SAFETY: forwarded from the caller.
                unsafe { hopper::attention_forward::<Traits>(&params, maps, batch) }
            }
        };
    )* };
}
#[cfg(feature = "hopper")]
for_each_hopper_kernel!(stamp_hopper_entry_points);

/// Stamps out, per entry of `for_each_tma_kernel!`, the TMA variant of a plain mma.sync kernel:
/// `attention_fwd_hopper_mma_<config>_<variant>(AttentionParams, TensorMaps)`, the generic body
/// with K/V tiles by the copy engine (`KernelTraits::TMA_KV`). Its tensor maps are used in place,
/// as the Hopper kernels' are.
#[cfg(feature = "hopper")]
macro_rules! stamp_tma_entry_points {
    ($( ($config:ident, $tile:ident, $variant:ident, $dtype:ident, $masked:tt) ),* $(,)?) => { $(
        const _: () = {
            mma_sync_traits!($tile, $dtype, $masked, false, false, true);

            /// Attention forward entry point (TMA variant); see `attention::attention_forward`.
            ///
            /// # Safety
            /// Launch configuration and parameters as validated and chosen by the host library,
            /// with `TILE.tma_smem_bytes()` bytes of dynamic shared memory.
            #[export_name = concat!("attention_fwd_hopper_mma_", stringify!($config), "_", stringify!($variant))]
            unsafe extern "ptx-kernel" fn entry(params: AttentionParams, _maps: TensorMaps) {
                let maps = param_address!(
                    concat!("attention_fwd_hopper_mma_", stringify!($config), "_", stringify!($variant), "_param_1"),
                    0
                );
                // SAFETY: forwarded from the caller.
                unsafe { attention::attention_forward::<Traits>(&params, &ExtendedParams::NONE, maps) }
            }
        };
    )* };
}
#[cfg(feature = "hopper")]
for_each_tma_kernel!(stamp_tma_entry_points);

/// Split-KV combine, f16 output; see `split_kv::combine`.
///
/// # Safety
/// Launch configuration and parameters as validated and chosen by the host library.
#[cfg(not(feature = "hopper"))]
#[no_mangle]
pub unsafe extern "ptx-kernel" fn attention_combine_f16(params: CombineParams) {
    // SAFETY: forwarded from the caller.
    unsafe { split_kv::combine::<F16>(&params) }
}

/// Split-KV combine, bf16 output; see `split_kv::combine`.
///
/// # Safety
/// Launch configuration and parameters as validated and chosen by the host library.
#[cfg(not(feature = "hopper"))]
#[no_mangle]
pub unsafe extern "ptx-kernel" fn attention_combine_bf16(params: CombineParams) {
    // SAFETY: forwarded from the caller.
    unsafe { split_kv::combine::<Bf16>(&params) }
}

/// KV-cache append; see `kv_cache::append`.
///
/// # Safety
/// Launch configuration and parameters as validated and chosen by the host library.
#[cfg(not(feature = "hopper"))]
#[no_mangle]
pub unsafe extern "ptx-kernel" fn kv_cache_append(params: AppendParams) {
    // SAFETY: forwarded from the caller.
    unsafe { kv_cache::append(&params) }
}
