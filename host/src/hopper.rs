//! Hopper launches: which calls the wgmma + TMA kernels serve, and their TMA tensor maps.

use std::ffi::c_void;

use cust::sys as cu;

use crate::abi::{AttentionParams, Dtype, TensorMap, TensorMaps, HOPPER_BOX_COLS};
use crate::error::{Error, Result};
use crate::kernels::{select_hopper, select_tma, HopperKernelInfo, TmaKernelInfo};
use crate::options::KernelFamily;
use crate::plan::{ForwardProblem, LaunchPlan, TensorArg};

/// A validated Hopper launch: the kernel, its grid, block and shared memory, its parameters, and
/// what its tensor maps describe (encoded at launch).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HopperPlan {
    /// The kernel.
    pub kernel: &'static HopperKernelInfo,
    /// Grid: (CTAs, 1, 1). Each CTA loops over the work tiles `c, c + CTAs, ...`: persistent
    /// (one CTA per multiprocessor) without a mask; with a mask, whose query blocks differ in
    /// cost, one CTA per work tile, so that the hardware's dynamic CTA scheduling balances them
    /// (a static stride gave some CTAs only heavy blocks: +4–20% on causal shapes).
    pub grid: (u32, u32, u32),
    /// Work tiles: query blocks x heads x batch.
    pub tiles: usize,
    /// Batch size (the kernel's third parameter: it derives the work tiles from it).
    pub batch: u32,
    /// Threads per CTA.
    pub block: u32,
    /// Dynamic shared memory per CTA in bytes.
    pub smem_bytes: u32,
    /// The first kernel parameter (as for the mma.sync kernels).
    pub params: AttentionParams,
    /// Q, K and V as the copy engine sees them.
    pub maps: [TileMap; 3],
}

/// A 4-D tensor `[batch, heads, rows, head_dim]` (innermost last) to be read in boxes of
/// `HOPPER_BOX_COLS` columns by `box_rows` rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TileMap {
    /// Element type.
    pub dtype: Dtype,
    /// Device address of element [0, 0, 0, 0].
    pub address: u64,
    /// Extents, innermost first: head_dim, rows, heads, batch.
    pub dims: [u64; 4],
    /// Byte strides of rows, heads and batch entries.
    pub strides: [u64; 3],
    /// Rows per box.
    pub box_rows: u32,
}

/// TMA's limits on a global tensor: 16-byte-aligned address and strides, strides below 2^40.
const TMA_ALIGN: u64 = 16;
const TMA_MAX_STRIDE: u64 = 1 << 40;

/// The Hopper launch for a problem that `base` (its mma.sync plan) validated, or why the Hopper
/// kernels cannot serve it. Whether the device has them is the caller's question.
pub fn plan_hopper(
    problem: &ForwardProblem<'_>,
    base: &LaunchPlan,
    multiprocessors: usize,
) -> std::result::Result<HopperPlan, &'static str> {
    let options = &problem.options;
    if problem.varlen.is_some() {
        return Err("variable-length batches run the mma.sync kernels");
    }
    if base.kernel.score_mods {
        return Err("softcap and ALiBi run the mma.sync kernels");
    }
    if options.forces_tile() {
        return Err("a forced q_tile_rows or kv_tile_rows names an mma.sync configuration");
    }
    let [batch, heads, seq_q, head_dim] = problem.q.layout.shape;
    let kernel =
        select_hopper(problem.dtype, head_dim, options.is_masked()).ok_or("head dims other than 64 and 128")?;
    let config = kernel.config;
    let maps = tile_maps(problem, config.q_tile_rows(), config.kv_tile_rows)?;
    // The kernel counts work tiles in u32 and a 1-D grid holds at most 2^31 - 1 CTAs.
    let tiles = seq_q.div_ceil(config.q_tile_rows()) * heads * batch;
    if tiles > i32::MAX as usize {
        return Err("more than 2^31 - 1 query blocks in one call");
    }
    Ok(HopperPlan {
        kernel,
        grid: (if kernel.masked { tiles } else { tiles.min(multiprocessors.max(1)) } as u32, 1, 1),
        tiles,
        batch: batch as u32,
        block: config.threads() as u32,
        smem_bytes: config.smem_bytes() as u32,
        params: base.params,
        maps,
    })
}

/// Q, K and V as the copy engine sees them, in boxes of `q_rows` and `kv_rows` rows, or why TMA
/// cannot read them.
pub(crate) fn tile_maps(
    problem: &ForwardProblem<'_>,
    q_rows: usize,
    kv_rows: usize,
) -> std::result::Result<[TileMap; 3], &'static str> {
    let map = |t: &TensorArg, box_rows: usize| -> std::result::Result<TileMap, &'static str> {
        let [b, h, s, d] = t.layout.shape;
        let [sb, sh, sr, sd] = t.layout.strides;
        if sd != 1 {
            return Err("the head dimension must be contiguous");
        }
        // A stride of an extent-1 dimension is never followed: give TMA a valid one.
        let stride = |extent: usize, stride: usize| if extent == 1 { TMA_ALIGN } else { 2 * stride as u64 };
        let strides = [stride(s, sr), stride(h, sh), stride(b, sb)];
        let aligned =
            t.address % TMA_ALIGN == 0 && strides.iter().all(|&s| s % TMA_ALIGN == 0 && s > 0 && s < TMA_MAX_STRIDE);
        if !aligned {
            return Err(
                "TMA needs 16-byte-aligned addresses and nonzero row, head and batch strides in multiples of 16 bytes",
            );
        }
        let dims = [d as u64, s as u64, h as u64, b as u64];
        Ok(TileMap { dtype: problem.dtype, address: t.address, dims, strides, box_rows: box_rows as u32 })
    };
    Ok([map(&problem.q, q_rows)?, map(&problem.k, kv_rows)?, map(&problem.v, kv_rows)?])
}

/// The TMA variant of an mma.sync launch (`base`, validated), or why it cannot run: only
/// `kernels::select_tma` kernels, and tensors TMA can read. Whether the device has the sm_90a
/// module is the caller's question.
pub fn plan_tma(
    problem: &ForwardProblem<'_>,
    base: &LaunchPlan,
) -> std::result::Result<(&'static TmaKernelInfo, [TileMap; 3]), &'static str> {
    let kernel = select_tma(base.kernel).ok_or("no TMA variant of this mma.sync kernel")?;
    let maps = tile_maps(problem, kernel.tile.q_tile_rows, kernel.tile.kv_tile_rows)?;
    Ok((kernel, maps))
}

/// Whether `family` lets a call that the Hopper kernels can serve (`hopper` is `Ok`) run them on
/// a device that has them, or the error when the family insists on one the call cannot get.
///
/// [`KernelFamily::Auto`] also weighs the size of the work: a Hopper CTA (128 query rows, a
/// producer warpgroup, barrier set-up) starts slower than an mma.sync CTA of 64 rows, which wins
/// small launches (H200: 2.6 vs 3.8 µs at (1,1,32,64); 8.4 vs 8.9 µs at (1,8,512,64)) while the
/// Hopper kernel wins as soon as head dim 128 has a few CTAs ((1,8,512,128): 11.4 vs 12.9 µs,
/// 32 CTAs) or head dim 64 fills the SMs ((16,16,512,64): 66.8 vs 70.0 µs). Masked head-dim-64
/// problems of up to 512 query rows stay on mma.sync, whose 64-row tiles run three CTAs per SM
/// on this GPU ([`register_cap`](crate::abi::register_cap)): H200, causal, (16,16,512,64) 49.5
/// vs 52.3 µs, (64,16,256,64) 60.0 vs 77.7; from 1024 rows the Hopper kernel wins
/// ((8,16,1024,64) 74.3 vs 84.7).
pub fn use_hopper(
    family: KernelFamily,
    device_has_hopper: bool,
    hopper: &std::result::Result<HopperPlan, &'static str>,
    multiprocessors: usize,
) -> Result<bool> {
    match (family, device_has_hopper, hopper) {
        (KernelFamily::MmaSync, _, _) => Ok(false),
        (KernelFamily::Auto, has, Ok(plan)) => {
            let head_dim_64 = plan.kernel.config.head_dim < 128;
            let enough = if head_dim_64 { multiprocessors } else { multiprocessors / 8 };
            let short_masked = head_dim_64 && plan.kernel.masked && plan.params.seq_q <= 512;
            Ok(has && plan.tiles >= enough && !short_masked)
        }
        (KernelFamily::Auto, _, Err(_)) => Ok(false),
        (KernelFamily::Wgmma, false, _) => {
            Err(Error::KernelFamilyUnavailable { reason: "the device is not compute capability 9.0" })
        }
        (KernelFamily::Wgmma, true, Err(reason)) => Err(Error::KernelFamilyUnavailable { reason }),
        (KernelFamily::Wgmma, true, Ok(_)) => Ok(true),
    }
}

// The driver's tensor-map encoder (CUDA 12.0+); cust 0.3.2 does not bind it. libcuda is linked
// by cust.
extern "C" {
    fn cuTensorMapEncodeTiled(
        tensor_map: *mut TensorMap,
        data_type: u32,
        rank: u32,
        global_address: *mut c_void,
        global_dim: *const u64,
        global_strides: *const u64,
        box_dim: *const u32,
        element_strides: *const u32,
        interleave: u32,
        swizzle: u32,
        l2_promotion: u32,
        oob_fill: u32,
    ) -> i32;
}

/// `CUtensorMapDataType` values.
const TENSOR_MAP_FLOAT16: u32 = 6;
const TENSOR_MAP_BFLOAT16: u32 = 9;
/// `CU_TENSOR_MAP_INTERLEAVE_NONE`, `CU_TENSOR_MAP_SWIZZLE_128B`, `CU_TENSOR_MAP_L2_PROMOTION_L2_256B`,
/// `CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE` (elements outside the tensor read as zeros).
const INTERLEAVE_NONE: u32 = 0;
const SWIZZLE_128B: u32 = 3;
const L2_PROMOTION_256B: u32 = 3;
const OOB_FILL_ZEROS: u32 = 0;

/// The encoder writes a 64-byte-aligned `CUtensorMap`.
#[repr(C, align(64))]
pub(crate) struct Aligned<T>(T);

/// Encodes one tensor map (a host-side driver call; nothing is enqueued).
fn encode(map: &TileMap) -> Result<TensorMap> {
    let mut out = Aligned(TensorMap([0; 16]));
    let data_type = match map.dtype {
        Dtype::F16 => TENSOR_MAP_FLOAT16,
        Dtype::Bf16 => TENSOR_MAP_BFLOAT16,
    };
    let box_dim = [HOPPER_BOX_COLS as u32, map.box_rows, 1, 1];
    let element_strides = [1u32; 4];
    // SAFETY: valid pointers to arrays of the rank's length (strides: rank - 1) and a 64-byte-
    // aligned output; the address is device memory that the caller checked.
    let code = unsafe {
        cuTensorMapEncodeTiled(
            &mut out.0,
            data_type,
            4,
            map.address as *mut c_void,
            map.dims.as_ptr(),
            map.strides.as_ptr(),
            box_dim.as_ptr(),
            element_strides.as_ptr(),
            INTERLEAVE_NONE,
            SWIZZLE_128B,
            L2_PROMOTION_256B,
            OOB_FILL_ZEROS,
        )
    };
    match code {
        0 => Ok(out.0),
        // The plan checked every documented constraint; report what the driver said.
        1 => Err(Error::Driver { call: "cuTensorMapEncodeTiled", code: cu::CUresult::CUDA_ERROR_INVALID_VALUE }),
        _ => Err(Error::Driver { call: "cuTensorMapEncodeTiled", code: cu::CUresult::CUDA_ERROR_UNKNOWN }),
    }
}

/// The second parameter of the Hopper kernels and TMA variants, 64-byte aligned as the kernels
/// declare it.
pub(crate) fn encode_tensor_maps(maps: &[TileMap; 3]) -> Result<AlignedMaps> {
    let [q, k, v] = maps;
    Ok(Aligned(TensorMaps { q: encode(q)?, k: encode(k)?, v: encode(v)? }))
}

/// [`TensorMaps`] at the alignment of its kernel parameter.
pub(crate) type AlignedMaps = Aligned<TensorMaps>;

impl AlignedMaps {
    /// Pointer for `cuLaunchKernel`'s parameter array.
    pub fn as_param(&mut self) -> *mut c_void {
        &mut self.0 as *mut TensorMaps as *mut c_void
    }
}
