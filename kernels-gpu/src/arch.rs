//! Device layer: thin wrappers over PTX special registers and instructions.
//!
//! Warp-collective instructions (`ldmatrix`, `mma.sync`, `shfl.sync`) are deliberately not marked
//! `pure`: rustc does not mark inline asm `convergent`, and a side-effecting asm keeps LLVM from
//! merging, speculating or sinking it into divergent code.

use core::arch::asm;
use core::arch::nvptx;

#[cfg(feature = "hopper")]
pub mod hopper;

/// Thread index within the CTA (x dimension; the kernels use 1-D blocks).
#[inline(always)]
pub fn thread_idx() -> u32 {
    // SAFETY: reading a special register has no preconditions.
    unsafe { nvptx::_thread_idx_x() as u32 }
}

/// CTA index in the x, y and z dimensions of the grid.
#[inline(always)]
pub fn block_idx() -> (u32, u32, u32) {
    // SAFETY: reading special registers has no preconditions.
    unsafe { (nvptx::_block_idx_x() as u32, nvptx::_block_idx_y() as u32, nvptx::_block_idx_z() as u32) }
}

/// [`block_idx`], read by an `asm` statement that the compiler may not merge with another read
/// (it may merge the intrinsics): what is computed from it is computed again at each call, not
/// kept in registers between calls.
#[inline(always)]
pub fn block_idx_unmerged() -> (u32, u32, u32) {
    let (x, y, z): (u32, u32, u32);
    // SAFETY: reads special registers only.
    unsafe {
        asm!(
            "mov.u32 {x}, %ctaid.x;",
            "mov.u32 {y}, %ctaid.y;",
            "mov.u32 {z}, %ctaid.z;",
            x = out(reg32) x,
            y = out(reg32) y,
            z = out(reg32) z,
            options(nomem, nostack, preserves_flags)
        )
    };
    (x, y, z)
}

/// Number of CTAs in the grid's x, y and z dimensions.
#[inline(always)]
pub fn grid_dim() -> (u32, u32, u32) {
    // SAFETY: reading special registers has no preconditions.
    unsafe { (nvptx::_grid_dim_x() as u32, nvptx::_grid_dim_y() as u32, nvptx::_grid_dim_z() as u32) }
}

/// Lane index within the warp.
#[inline(always)]
pub fn lane_id() -> u32 {
    thread_idx() % 32
}

/// Warp index within the CTA.
#[inline(always)]
pub fn warp_id() -> u32 {
    thread_idx() / 32
}

/// CTA-wide barrier (`bar.sync 0`); orders shared-memory accesses of all threads of the CTA.
#[inline(always)]
pub fn sync_threads() {
    // SAFETY: every thread of the CTA reaches the kernels' barriers (no divergent early exits).
    unsafe { nvptx::_syncthreads() }
}

/// Warp-wide barrier; orders shared-memory accesses among the lanes of one warp.
#[inline(always)]
pub fn sync_warp() {
    // SAFETY: the full mask names the whole warp, and every lane calls it.
    unsafe { asm!("bar.warp.sync 0xffffffff;", options(nostack)) }
}

/// `v` from the lane whose index is this lane's XOR `lane_mask` (butterfly shuffle).
#[inline(always)]
pub fn shfl_xor(v: f32, lane_mask: u32) -> f32 {
    let r: f32;
    // SAFETY: all 32 lanes take part (full member mask); no memory is touched.
    unsafe {
        asm!(
            "shfl.sync.bfly.b32 {r}, {v}, {m}, 0x1f, 0xffffffff;",
            r = out(reg32) r, v = in(reg32) v, m = in(reg32) lane_mask,
            options(nomem, nostack),
        );
    }
    r
}

/// Whether `predicate` holds in any lane of the warp (`vote.sync.any`); the same in every lane.
#[inline(always)]
pub fn vote_any(predicate: bool) -> bool {
    let r: u32;
    // SAFETY: all 32 lanes take part (full member mask); no memory is touched.
    unsafe {
        asm!(
            "{{",
            ".reg .pred %p_in, %p_any;",
            "setp.ne.u32 %p_in, {v}, 0;",
            "vote.sync.any.pred %p_any, %p_in, 0xffffffff;",
            "selp.u32 {r}, 1, 0, %p_any;",
            "}}",
            r = out(reg32) r, v = in(reg32) predicate as u32,
            options(nomem, nostack),
        );
    }
    r != 0
}

/// `a * b + c` with a single rounding (`fma.rn.f32`).
#[inline(always)]
pub fn fma(a: f32, b: f32, c: f32) -> f32 {
    let r: f32;
    // SAFETY: pure arithmetic.
    unsafe {
        asm!("fma.rn.f32 {r}, {a}, {b}, {c};", r = out(reg32) r, a = in(reg32) a, b = in(reg32) b, c = in(reg32) c,
             options(pure, nomem, nostack))
    }
    r
}

/// 2^x with the hardware approximation (`ex2.approx.ftz.f32`, max relative error 2^-22).
/// `ex2(-inf) = +0`, which the online softmax relies on for masked scores.
#[inline(always)]
pub fn ex2(x: f32) -> f32 {
    let r: f32;
    // SAFETY: pure arithmetic.
    unsafe { asm!("ex2.approx.ftz.f32 {r}, {x};", r = out(reg32) r, x = in(reg32) x, options(pure, nomem, nostack)) }
    r
}

/// tanh(x) to about 1e-6 absolute, from `ex2`: tanh|x| = 1 - 2 / (2^(2|x| log2 e) + 1), sign
/// restored. (`tanh.approx.f32` is only good to ~2^-11, too coarse once multiplied by a
/// softcap.) Saturates to ±1 for large |x|.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let e = ex2(2.0 * core::f32::consts::LOG2_E * x.abs());
    let t = 1.0 - 2.0 / (e + 1.0);
    if x < 0.0 {
        -t
    } else {
        t
    }
}

/// log2(x) with the hardware approximation (`lg2.approx.ftz.f32`).
#[inline(always)]
pub fn lg2(x: f32) -> f32 {
    let r: f32;
    // SAFETY: pure arithmetic.
    unsafe { asm!("lg2.approx.ftz.f32 {r}, {x};", r = out(reg32) r, x = in(reg32) x, options(pure, nomem, nostack)) }
    r
}

/// Two f32 rounded (to nearest even) to f16 and packed: `lo` in bits 0..16, `hi` in 16..32.
#[inline(always)]
pub fn pack_f16x2(lo: f32, hi: f32) -> u32 {
    let r: u32;
    // SAFETY: pure arithmetic. `cvt.rn.f16x2.f32 d, a, b` puts `a` in the upper half.
    unsafe {
        asm!("cvt.rn.f16x2.f32 {r}, {hi}, {lo};", r = out(reg32) r, hi = in(reg32) hi, lo = in(reg32) lo,
             options(pure, nomem, nostack))
    }
    r
}

/// Two f32 rounded (to nearest even) to bf16 and packed: `lo` in bits 0..16, `hi` in 16..32.
#[inline(always)]
pub fn pack_bf16x2(lo: f32, hi: f32) -> u32 {
    let r: u32;
    // SAFETY: pure arithmetic. `cvt.rn.bf16x2.f32 d, a, b` puts `a` in the upper half.
    unsafe {
        asm!("cvt.rn.bf16x2.f32 {r}, {hi}, {lo};", r = out(reg32) r, hi = in(reg32) hi, lo = in(reg32) lo,
             options(pure, nomem, nostack))
    }
    r
}

/// 16-byte-aligned element type of the dynamic shared memory, so the symbol gets `.align 16`.
#[repr(C, align(16))]
#[derive(Clone, Copy)]
pub struct Chunk(pub [u32; 4]);

/// Address of the start of the CTA's dynamic shared memory in the `.shared` window (the form
/// `ldmatrix`, `cp.async` and `ld/st.shared` take).
#[inline(always)]
#[allow(clippy::pointers_in_nomem_asm_block)] // address arithmetic only: nothing is dereferenced
pub fn dynamic_smem_base() -> u32 {
    let generic = core::intrinsics::gpu::gpu_launch_sized_workgroup_mem::<Chunk>();
    let r: u32;
    // SAFETY: converts a generic pointer that points into shared memory to its shared address.
    unsafe {
        asm!(
            "cvta.to.shared.u64 {t}, {p};",
            "cvt.u32.u64 {r}, {t};",
            p = in(reg64) generic, t = out(reg64) _, r = out(reg32) r,
            options(pure, nomem, nostack),
        );
    }
    r
}

/// Defines an `ldmatrix.x4` wrapper that takes each lane's address as `base + (lane_offset ^ xor)`
/// and forms it inside the asm: LLVM sees no address arithmetic to hoist out of the main loop, so
/// it does not keep one address register per (tile, k step) alive across it (D = 128 and 256
/// kept 15–30 and spilled); `layout::swizzle_split` says why the XOR form is exact.
macro_rules! ldmatrix_x4 {
    ($(#[$doc:meta])* $name:ident, $ptx:literal) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// All 32 lanes must call it together with 16-byte-aligned addresses inside shared
        /// memory.
        #[inline(always)]
        pub unsafe fn $name(base: u32, lane_offset: u32, xor: u32) -> [u32; 4] {
            let (a, b, c, d);
            // SAFETY: the caller guarantees converged lanes and valid shared addresses.
            unsafe {
                asm!(
                    "{{",
                    ".reg .b32 addr;",
                    "xor.b32 addr, {lane}, {xor};",
                    "add.u32 addr, addr, {base};",
                    concat!($ptx, " {{{0}, {1}, {2}, {3}}}, [addr];"),
                    "}}",
                    out(reg32) a, out(reg32) b, out(reg32) c, out(reg32) d,
                    base = in(reg32) base, lane = in(reg32) lane_offset, xor = in(reg32) xor,
                    options(nostack, readonly),
                );
            }
            [a, b, c, d]
        }
    };
}

ldmatrix_x4!(
    /// Loads four 8x8 b16 matrices from shared memory; lane `l` gives the address
    /// (`base + (lane_offset ^ xor)`) of row `l % 8` of matrix `l / 8`. Register `m` holds this
    /// lane's part of matrix `m` (see `layout::ldmatrix_dest`).
    ldmatrix_x4,
    "ldmatrix.sync.aligned.m8n8.x4.shared.b16"
);
ldmatrix_x4!(
    /// As [`ldmatrix_x4`], with each 8x8 matrix transposed on the way (`.trans`).
    ldmatrix_x4_trans,
    "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16"
);

/// One `mma.sync.aligned.m16n8k16.row.col.f32.<ab>.<ab>.f32`: A is 16x16 (4 registers), B is
/// 16x8 (2 registers) of the element type `ab`, C and D are 16x8 f32 (layouts in `layout`).
macro_rules! mma_m16n8k16 {
    ($(#[$doc:meta])* $name:ident, $ptx:literal) => {
        $(#[$doc])*
        #[inline(always)]
        pub fn $name(a: [u32; 4], b: [u32; 2], c: [f32; 4]) -> [f32; 4] {
            let (d0, d1, d2, d3);
            // SAFETY: register-only warp-collective instruction; the kernels call it with all
            // lanes converged (not `pure`: see the module comment).
            unsafe {
                asm!(
                    $ptx,
                    out(reg32) d0, out(reg32) d1, out(reg32) d2, out(reg32) d3,
                    in(reg32) a[0], in(reg32) a[1], in(reg32) a[2], in(reg32) a[3],
                    in(reg32) b[0], in(reg32) b[1],
                    in(reg32) c[0], in(reg32) c[1], in(reg32) c[2], in(reg32) c[3],
                    options(nomem, nostack),
                );
            }
            [d0, d1, d2, d3]
        }
    };
}

mma_m16n8k16!(
    /// `d = a * b + c`, f16 inputs, f32 accumulation.
    mma_m16n8k16_f16,
    "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 \
     {{{0}, {1}, {2}, {3}}}, {{{4}, {5}, {6}, {7}}}, {{{8}, {9}}}, {{{10}, {11}, {12}, {13}}};"
);

mma_m16n8k16!(
    /// `d = a * b + c`, bf16 inputs, f32 accumulation.
    mma_m16n8k16_bf16,
    "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 \
     {{{0}, {1}, {2}, {3}}}, {{{4}, {5}, {6}, {7}}}, {{{8}, {9}}}, {{{10}, {11}, {12}, {13}}};"
);

/// Starts an asynchronous 16-byte copy global -> shared (`cp.async.cg`, cached in L2 only).
/// Copies `src_bytes` (0 or 16) bytes and zero-fills the rest, so rows past the end of a tensor
/// arrive as zeros without reading memory.
///
/// # Safety
/// `dst` must be a 16-byte-aligned shared address; when `src_bytes > 0`, `src` must point to 16
/// readable, 16-byte-aligned bytes of global memory.
#[inline(always)]
pub unsafe fn cp_async_16(dst: u32, src: *const u8, src_bytes: u32) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!(
            "cvta.to.global.u64 {g}, {p};",
            "cp.async.cg.shared.global [{d}], [{g}], 16, {n};",
            d = in(reg32) dst, p = in(reg64) src, g = out(reg64) _, n = in(reg32) src_bytes,
            options(nostack),
        );
    }
}

/// Closes the current group of `cp.async` copies.
#[inline(always)]
pub fn cp_async_commit() {
    // SAFETY: no preconditions.
    unsafe { asm!("cp.async.commit_group;", options(nostack)) }
}

/// Waits until at most `pending` committed `cp.async` groups are still in flight. The copies are
/// visible to this thread only; a barrier makes them visible to the CTA. `pending` must be a
/// compile-time constant after inlining (the PTX instruction takes an immediate).
#[inline(always)]
pub fn cp_async_wait(pending: usize) {
    // SAFETY: no preconditions.
    unsafe {
        match pending {
            0 => asm!("cp.async.wait_group 0;", options(nostack)),
            1 => asm!("cp.async.wait_group 1;", options(nostack)),
            2 => asm!("cp.async.wait_group 2;", options(nostack)),
            _ => asm!("cp.async.wait_group 3;", options(nostack)),
        }
    }
}

/// Stores a 32-bit word to shared memory.
///
/// # Safety
/// `addr` must be a 4-byte-aligned shared address inside the CTA's allocation.
#[inline(always)]
pub unsafe fn st_shared_u32(addr: u32, v: u32) {
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("st.shared.b32 [{a}], {v};", a = in(reg32) addr, v = in(reg32) v, options(nostack)) }
}

/// Loads 16 bytes from shared memory.
///
/// # Safety
/// `addr` must be a 16-byte-aligned shared address inside the CTA's allocation.
#[inline(always)]
pub unsafe fn ld_shared_v4(addr: u32) -> [u32; 4] {
    let (a, b, c, d);
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!(
            "ld.shared.v4.b32 {{{0}, {1}, {2}, {3}}}, [{4}];",
            out(reg32) a, out(reg32) b, out(reg32) c, out(reg32) d, in(reg32) addr,
            options(nostack, readonly),
        );
    }
    [a, b, c, d]
}

/// Loads 16 bytes from global memory with one vector load.
///
/// # Safety
/// `src` must point to 16 readable, 16-byte-aligned bytes of global memory.
#[inline(always)]
pub unsafe fn ld_global_v4(src: *const u8) -> [u32; 4] {
    let (a, b, c, d);
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!(
            "cvta.to.global.u64 {g}, {p};",
            "ld.global.v4.b32 {{{0}, {1}, {2}, {3}}}, [{g}];",
            out(reg32) a, out(reg32) b, out(reg32) c, out(reg32) d,
            p = in(reg64) src, g = out(reg64) _,
            options(nostack, readonly),
        );
    }
    [a, b, c, d]
}

/// Defines a store to global memory predicated on `store`: a predicated instruction rather than
/// a branch, so that code around it stays free of divergent control flow (which would make
/// `ptxas` serialise `wgmma` across it). `$store` is the PTX store with its value operands,
/// `$operands` their `asm!` operands.
macro_rules! st_global_if {
    ($(#[$doc:meta])* $name:ident($value:ident: $value_ty:ty, $dst_ty:ty), $store:literal, $($operands:tt)*) => {
        $(#[$doc])*
        #[inline(always)]
        pub unsafe fn $name(store: bool, dst: $dst_ty, $value: $value_ty) {
            // SAFETY: guaranteed by the caller.
            unsafe {
                asm!(
                    "{{",
                    ".reg .pred %p_store;",
                    "setp.ne.u32 %p_store, {s}, 0;",
                    "cvta.to.global.u64 {g}, {p};",
                    concat!("@%p_store ", $store),
                    "}}",
                    $($operands)*
                    s = in(reg32) store as u32, p = in(reg64) dst, g = out(reg64) _,
                    options(nostack),
                );
            }
        }
    };
}

st_global_if!(
    /// Stores 16 bytes to global memory with one vector store if `store` holds.
    ///
    /// # Safety
    /// When `store` holds, `dst` must point to 16 writable, 16-byte-aligned bytes of global
    /// memory.
    st_global_v4_if(v: [u32; 4], *mut u8),
    "st.global.v4.b32 [{g}], {{{0}, {1}, {2}, {3}}};",
    in(reg32) v[0], in(reg32) v[1], in(reg32) v[2], in(reg32) v[3],
);
st_global_if!(
    /// Stores an f32 to global memory if `store` holds.
    ///
    /// # Safety
    /// When `store` holds, `dst` must point to 4 writable, 4-byte-aligned bytes of global memory.
    st_global_f32_if(v: f32, *mut f32),
    "st.global.f32 [{g}], {v};",
    v = in(reg32) v,
);

/// Stores 16 bytes to global memory with one vector store.
///
/// # Safety
/// `dst` must point to 16 writable, 16-byte-aligned bytes of global memory.
#[inline(always)]
pub unsafe fn st_global_v4(dst: *mut u8, v: [u32; 4]) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!(
            "cvta.to.global.u64 {g}, {p};",
            "st.global.v4.b32 [{g}], {{{0}, {1}, {2}, {3}}};",
            in(reg32) v[0], in(reg32) v[1], in(reg32) v[2], in(reg32) v[3],
            p = in(reg64) dst, g = out(reg64) _,
            options(nostack),
        );
    }
}
