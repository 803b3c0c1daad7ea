//! Hopper (sm_90a) instructions: `mbarrier` transaction barriers, the TMA copy engine
//! (`cp.async.bulk.tensor`), warpgroup MMA (`wgmma.mma_async`) and its shared-memory matrix
//! descriptors, `setmaxnreg`, and named barriers. Built only into the sm_90a PTX (feature
//! `hopper`).
//!
//! Every asm here that synchronises, waits or touches memory is side-effecting (not `pure`), so
//! LLVM keeps it in place and in program order with the others.

use core::arch::asm;

/// Initialises the `mbarrier` at shared address `bar` to expect `count` arrivals per phase.
///
/// # Safety
/// `bar` is an 8-byte-aligned shared address that no thread uses as a barrier yet; one thread
/// initialises it, then [`fence_barrier_init`] and a CTA barrier publish it.
#[inline(always)]
pub unsafe fn mbarrier_init(bar: u32, count: u32) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!("mbarrier.init.shared::cta.b64 [{b}], {c};", b = in(reg32) bar, c = in(reg32) count, options(nostack))
    }
}

/// Makes `mbarrier` initialisations visible to the async proxy (the TMA unit) and the cluster.
#[inline(always)]
pub fn fence_barrier_init() {
    // SAFETY: a fence has no preconditions.
    unsafe { asm!("fence.mbarrier_init.release.cluster;", options(nostack)) }
}

/// Orders this thread's earlier ordinary shared-memory accesses before later async-proxy
/// (TMA, `wgmma`) accesses of the CTA's shared memory.
#[inline(always)]
pub fn fence_proxy_async() {
    // SAFETY: a fence has no preconditions.
    unsafe { asm!("fence.proxy.async.shared::cta;", options(nostack)) }
}

/// Arrives on the barrier and adds `bytes` to the transaction count its current phase waits for
/// (the TMA copies that complete on it subtract what they write).
///
/// # Safety
/// `bar` is an initialised `mbarrier` whose phase still expects this arrival.
#[inline(always)]
pub unsafe fn mbarrier_arrive_expect_tx(bar: u32, bytes: u32) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!(
            "mbarrier.arrive.expect_tx.shared::cta.b64 _, [{b}], {n};",
            b = in(reg32) bar, n = in(reg32) bytes,
            options(nostack),
        )
    }
}

/// Arrives on the barrier (one of the `count` arrivals its phase waits for).
///
/// # Safety
/// `bar` is an initialised `mbarrier` whose phase still expects this arrival.
#[inline(always)]
pub unsafe fn mbarrier_arrive(bar: u32) {
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("mbarrier.arrive.shared::cta.b64 _, [{b}];", b = in(reg32) bar, options(nostack)) }
}

/// Waits until the phase of parity `parity` (0 or 1) of the barrier has completed. The phase's
/// writes (TMA copies that completed on it, and memory operations of threads before their
/// arrival) are then visible to this thread. Any single thread may call it (the producer);
/// warps that issue `wgmma` use [`mbarrier_wait_warp`].
///
/// # Safety
/// `bar` is an initialised `mbarrier`.
#[inline(always)]
// PTX scopes a label to its enclosing `{ }` block, so inlined copies of this asm do not clash
// (the lint guards against assemblers without such scoping).
#[allow(named_asm_labels)]
pub unsafe fn mbarrier_wait(bar: u32, parity: u32) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!(
            "{{",
            ".reg .pred %p_done;",
            "wait_again:",
            "mbarrier.try_wait.parity.shared::cta.b64 %p_done, [{b}], {p};",
            "@!%p_done bra wait_again;",
            "}}",
            b = in(reg32) bar, p = in(reg32) parity,
            options(nostack),
        );
    }
}

/// [`mbarrier_wait`] by a whole warp, retried until every lane sees the phase complete (a vote),
/// so the retry branch is warp-uniform (`bra.uni`). A per-lane retry loop is a divergent branch
/// to `ptxas`, which then serialises the `wgmma` of a loop that contains it (C7519).
///
/// # Safety
/// `bar` is an initialised `mbarrier`; all 32 lanes of the warp call it together.
#[inline(always)]
// As for `mbarrier_wait`.
#[allow(named_asm_labels)]
pub unsafe fn mbarrier_wait_warp(bar: u32, parity: u32) {
    // SAFETY: guaranteed by the caller. A completed phase stays complete until the barrier's
    // next phase completes, which needs this warp's own later arrival, so lanes that saw it
    // early still see it when the vote succeeds.
    unsafe {
        asm!(
            "{{",
            ".reg .pred %p_done, %p_all;",
            "wait_again:",
            "mbarrier.try_wait.parity.shared::cta.b64 %p_done, [{b}], {p};",
            "vote.sync.all.pred %p_all, %p_done, 0xffffffff;",
            "@!%p_all bra.uni wait_again;",
            "}}",
            b = in(reg32) bar, p = in(reg32) parity,
            options(nostack),
        );
    }
}

/// Arrives on the barrier from lane 0 of the warp only (a predicated arrive: no branch), once
/// the whole warp got here.
///
/// # Safety
/// `bar` is an initialised `mbarrier` whose phase expects one arrival per calling warp; all 32
/// lanes call it.
#[inline(always)]
pub unsafe fn mbarrier_arrive_warp(bar: u32) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!(
            "{{",
            ".reg .pred %p_lane0;",
            ".reg .b32 %r_lane;",
            "bar.warp.sync 0xffffffff;",
            "mov.u32 %r_lane, %laneid;",
            "setp.eq.u32 %p_lane0, %r_lane, 0;",
            "@%p_lane0 mbarrier.arrive.shared::cta.b64 _, [{b}];",
            "}}",
            b = in(reg32) bar,
            options(nostack),
        );
    }
}

/// Starts a TMA copy of one box of a 4-D tensor (`tensor_map`, coordinates innermost first)
/// into shared memory at `dst`, completing `bytes` of the transaction count of barrier `bar`.
/// Elements outside the tensor arrive as zeros.
///
/// # Safety
/// `tensor_map` is the generic address of a valid `CUtensorMap` in parameter, constant or global
/// memory; `dst` is a shared address aligned as its swizzle mode needs (1024 bytes for 128-byte
/// swizzling) with room for the box; `bar` is an initialised `mbarrier` whose phase expects the
/// bytes.
#[inline(always)]
pub unsafe fn tma_load_4d(dst: u32, tensor_map: u64, coords: [i32; 4], bar: u32) {
    // SAFETY: guaranteed by the caller.
    unsafe {
        asm!(
            "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes [{d}], [{m}, {{{c0}, {c1}, {c2}, {c3}}}], [{b}];",
            d = in(reg32) dst, m = in(reg64) tensor_map, b = in(reg32) bar,
            c0 = in(reg32) coords[0], c1 = in(reg32) coords[1], c2 = in(reg32) coords[2], c3 = in(reg32) coords[3],
            options(nostack),
        )
    }
}

/// Raises this warpgroup's register allocation to `N` per thread (`setmaxnreg.inc`).
///
/// # Safety
/// Every thread of the warpgroup executes it together; the kernel was compiled with a register
/// cap at entry, and the CTA's warpgroups together stay within the SM's register file.
#[inline(always)]
pub unsafe fn setmaxnreg_inc<const N: u32>() {
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("setmaxnreg.inc.sync.aligned.u32 {n};", n = const N, options(nostack)) }
}

/// Lowers this warpgroup's register allocation to `N` per thread (`setmaxnreg.dec`).
///
/// # Safety
/// As [`setmaxnreg_inc`].
#[inline(always)]
pub unsafe fn setmaxnreg_dec<const N: u32>() {
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("setmaxnreg.dec.sync.aligned.u32 {n};", n = const N, options(nostack)) }
}

/// Waits on named barrier `id` until `threads` threads (a multiple of 32) have arrived
/// (`bar.sync id, threads`).
///
/// # Safety
/// Exactly `threads` threads use barrier `id` in each phase, whole warps at a time.
#[inline(always)]
pub unsafe fn named_barrier_sync(id: u32, threads: u32) {
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("bar.sync {i}, {n};", i = in(reg32) id, n = in(reg32) threads, options(nostack)) }
}

/// Arrives on named barrier `id` without waiting (`bar.arrive id, threads`).
///
/// # Safety
/// As [`named_barrier_sync`].
#[inline(always)]
pub unsafe fn named_barrier_arrive(id: u32, threads: u32) {
    // SAFETY: guaranteed by the caller.
    unsafe { asm!("bar.arrive {i}, {n};", i = in(reg32) id, n = in(reg32) threads, options(nostack)) }
}

/// Shared-memory matrix descriptor of `wgmma` for the 128-byte swizzle that TMA writes: 8-row
/// groups of 128-byte rows (1024-byte atoms). Fields (in 16-byte units): start address (bits
/// 0..14), leading-dimension byte offset (16..30), stride-dimension byte offset (32..46); layout
/// type 1 = 128-byte swizzle (bits 62..64); base offset 0 (atoms are 1024-byte aligned).
///
/// K-major operands (Q, K): `stride_bytes` is the distance between 8-row groups (1024), the
/// leading offset is unused. MN-major operands (V): `leading_bytes` is the distance between
/// 64-element column blocks, `stride_bytes` between 8-row groups along K.
#[inline(always)]
pub const fn smem_descriptor_sw128(addr: u32, leading_bytes: u32, stride_bytes: u32) -> u64 {
    const SWIZZLE_128B: u64 = 1;
    ((addr as u64 >> 4) & 0x3fff)
        | (((leading_bytes as u64 >> 4) & 0x3fff) << 16)
        | (((stride_bytes as u64 >> 4) & 0x3fff) << 32)
        | (SWIZZLE_128B << 62)
}

/// Makes the registers and shared memory that the next `wgmma` reads ready for it
/// (`wgmma.fence`): required before the first `wgmma` of a sequence and whenever its
/// accumulator or A registers were written by other instructions.
#[inline(always)]
pub fn wgmma_fence() {
    // SAFETY: executed by the whole warpgroup with the `wgmma` that follows.
    unsafe { asm!("wgmma.fence.sync.aligned;", options(nostack)) }
}

/// Closes the group of `wgmma` issued since the last commit.
#[inline(always)]
pub fn wgmma_commit() {
    // SAFETY: executed by the whole warpgroup.
    unsafe { asm!("wgmma.commit_group.sync.aligned;", options(nostack)) }
}

/// Waits until at most `N` committed `wgmma` groups are pending; their accumulators are then
/// valid and their shared-memory operands free.
#[inline(always)]
pub fn wgmma_wait<const N: u32>() {
    // SAFETY: executed by the whole warpgroup.
    unsafe { asm!("wgmma.wait_group.sync.aligned {n};", n = const N, options(nostack)) }
}

/// Keeps LLVM from moving reads or writes of `v` across this point (a no-op instruction that
/// claims to read and write it); used on `wgmma` accumulators around the asynchronous window.
#[inline(always)]
pub fn fence_operand(v: &mut f32) {
    // SAFETY: emits no instruction.
    unsafe { asm!("/* fence_operand {v} */", v = inout(reg32) * v, options(nostack, nomem)) }
}

/// Defines `wgmma.mma_async.sync.aligned.m64n<N>k16.f32.<ab>.<ab>` with both operands in shared
/// memory (`_ss`: A K-major, B K-major) and with A in registers (`_rs`: B MN-major, transposed
/// on the way). The accumulator is `N / 8` fragments of 4 f32 per thread in the layout of
/// `mma.sync`'s C (`layout::mma_c_coords`, per warp rows `16 * (warp % 4)..`); A in registers
/// is `mma.sync`'s A fragment (`layout::mma_a_coords`).
macro_rules! wgmma_m64nk16 {
    ($ss:ident, $rs:ident, $n:literal, $ab:literal, [$first:literal $($i:literal)*]) => {
        /// `D = A·B + (scale_d ? D : 0)`, A (64x16) and B (16xN) from shared-memory descriptors.
        ///
        /// # Safety
        /// The whole warpgroup calls it together after [`wgmma_fence`]; the descriptors point
        /// at the operands inside shared memory, which stay unchanged until [`wgmma_wait`]
        /// covers this instruction; `d` is not touched before then.
        #[inline(always)]
        pub unsafe fn $ss(d: &mut [[f32; 4]; $n / 8], a: u64, b: u64, scale_d: bool) {
            // SAFETY: guaranteed by the caller.
            unsafe {
                asm!(
                    "{{",
                    ".reg .pred %p_scale;",
                    "setp.ne.u32 %p_scale, {scale}, 0;",
                    concat!(
                        "wgmma.mma_async.sync.aligned.m64n", $n, "k16.f32.", $ab, ".", $ab, " {{",
                        "{", $first, "}", $( ", {", $i, "}", )*
                        "}}, {a}, {b}, %p_scale, 1, 1, 0, 0;"
                    ),
                    "}}",
                    inout(reg32) d[$first / 4][$first % 4], $( inout(reg32) d[$i / 4][$i % 4], )*
                    a = in(reg64) a, b = in(reg64) b, scale = in(reg32) scale_d as u32,
                    options(nostack),
                );
            }
        }

        /// `D = A·B + (scale_d ? D : 0)`, A (64x16) from registers, B (16xN, MN-major) from a
        /// shared-memory descriptor.
        ///
        /// # Safety
        /// As the shared-memory form; `a` stays unchanged until the wait as well.
        #[inline(always)]
        pub unsafe fn $rs(d: &mut [[f32; 4]; $n / 8], a: [u32; 4], b: u64, scale_d: bool) {
            // SAFETY: guaranteed by the caller.
            unsafe {
                asm!(
                    "{{",
                    ".reg .pred %p_accumulate;",
                    "setp.ne.u32 %p_accumulate, {scale}, 0;",
                    concat!(
                        "wgmma.mma_async.sync.aligned.m64n", $n, "k16.f32.", $ab, ".", $ab, " {{",
                        "{", $first, "}", $( ", {", $i, "}", )*
                        "}}, {{{a0}, {a1}, {a2}, {a3}}}, {b}, %p_accumulate, 1, 1, 1;"
                    ),
                    "}}",
                    inout(reg32) d[$first / 4][$first % 4], $( inout(reg32) d[$i / 4][$i % 4], )*
                    a0 = in(reg32) a[0], a1 = in(reg32) a[1], a2 = in(reg32) a[2], a3 = in(reg32) a[3],
                    b = in(reg64) b, scale = in(reg32) scale_d as u32,
                    options(nostack),
                );
            }
        }
    };
}

wgmma_m64nk16!(wgmma_ss_m64n64k16_f16, wgmma_rs_m64n64k16_f16, 64, "f16", [
    0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
]);
wgmma_m64nk16!(wgmma_ss_m64n64k16_bf16, wgmma_rs_m64n64k16_bf16, 64, "bf16", [
    0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
]);
wgmma_m64nk16!(wgmma_ss_m64n128k16_f16, wgmma_rs_m64n128k16_f16, 128, "f16", [
    0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
    32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63
]);
wgmma_m64nk16!(wgmma_ss_m64n128k16_bf16, wgmma_rs_m64n128k16_bf16, 128, "bf16", [
    0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
    32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63
]);

/// The generic address of kernel parameter `$param` (a symbol such as `my_kernel_param_1`) plus
/// `$offset` bytes: how a kernel hands a `__grid_constant__`-style parameter, a TMA tensor map,
/// to `cp.async.bulk.tensor` without LLVM first copying it to local memory (it would, were the
/// parameter's address taken in Rust). Only valid inside that kernel.
#[macro_export]
macro_rules! param_address {
    ($param:expr, $offset:expr) => {{
        let address: u64;
        // SAFETY: reads the address of one of the calling kernel's own parameters.
        unsafe {
            core::arch::asm!(
                concat!("cvta.param.u64 {a}, ", $param, ";"),
                "add.u64 {a}, {a}, {o};",
                a = out(reg64) address, o = in(reg64) $offset as u64,
                options(pure, nomem, nostack),
            );
        }
        address
    }};
}
