//! Tile layer: register fragments and swizzled shared-memory tiles, built on `arch` and `layout`.

use crate::arch;
use crate::layout::{self, CHUNK_BYTES, CHUNK_ELEMS};
use core::ops::{Index, IndexMut};

/// 16x16 A operand of `mma.m16n8k16`: four registers of two 16-bit elements each.
pub type AFrag = [u32; 4];
/// 16x8 B operand of `mma.m16n8k16`: two registers of two 16-bit elements each.
pub type BFrag = [u32; 2];
/// 16x8 f32 accumulator of `mma.m16n8k16` (`layout::mma_c_coords`).
pub type CFrag = [f32; 4];

/// A 16-bit floating-point element type of the tensors: how its pairs are packed and which
/// tensor-core instruction multiplies them. Both types share every fragment layout.
pub trait Element {
    /// `d = a * b + c` on the tensor cores, f32 accumulation.
    fn mma(a: AFrag, b: BFrag, c: CFrag) -> CFrag;
    /// Two f32 rounded to this type and packed, `lo` in the low half.
    fn pack(lo: f32, hi: f32) -> u32;
    /// Two 1.0 of this type, packed: the B operand that makes an mma sum the rows of A.
    const ONES: u32;
    /// Whether the softmax's row sums add P as rounded to this type (on the tensor cores, P·1),
    /// the same P that multiplies V, so that O's numerator and denominator agree. f16: yes, its
    /// rounding moves a row sum, and so the logsumexp, by at most 2^-11 relatively. bf16: no, 2^-8
    /// would move the logsumexp by up to 4e-3; its sums add the unrounded P in f32.
    const SUMS_FROM_ROUNDED_P: bool;
}

/// IEEE half precision.
pub struct F16;

/// bfloat16.
pub struct Bf16;

impl Element for F16 {
    const ONES: u32 = 0x3c00_3c00;
    const SUMS_FROM_ROUNDED_P: bool = true;
    #[inline(always)]
    fn mma(a: AFrag, b: BFrag, c: CFrag) -> CFrag {
        arch::mma_m16n8k16_f16(a, b, c)
    }
    #[inline(always)]
    fn pack(lo: f32, hi: f32) -> u32 {
        arch::pack_f16x2(lo, hi)
    }
}

impl Element for Bf16 {
    const ONES: u32 = 0x3f80_3f80;
    const SUMS_FROM_ROUNDED_P: bool = false;
    #[inline(always)]
    fn mma(a: AFrag, b: BFrag, c: CFrag) -> CFrag {
        arch::mma_m16n8k16_bf16(a, b, c)
    }
    #[inline(always)]
    fn pack(lo: f32, hi: f32) -> u32 {
        arch::pack_bf16x2(lo, hi)
    }
}

/// A register array of fragments whose length a kernel configuration fixes (`[T; N]`), so the
/// generic kernel body can hold per-configuration register tiles without const-generic arithmetic.
pub trait FragArray<T: Copy>: Copy + Index<usize, Output = T> + IndexMut<usize> {
    /// Number of fragments.
    const LEN: usize;
    /// An array with every fragment equal to `value`.
    fn splat(value: T) -> Self;
}

impl<T: Copy, const N: usize> FragArray<T> for [T; N] {
    const LEN: usize = N;
    #[inline(always)]
    fn splat(value: T) -> Self {
        [value; N]
    }
}

/// A `rows x head_dim` tile of 16-bit elements in shared memory, row-major with rows of
/// `row_elems` elements (`TileConfig::smem_row_elems`) swizzled by `layout::swizzled_offset`.
#[derive(Clone, Copy)]
pub struct SharedTile {
    base: u32,
    rows: usize,
    /// Chunks per row in shared memory (a multiple of 8).
    chunks_per_row: usize,
    /// Chunks per row that hold data (`head_dim / 8`); the rest is padding, never read.
    data_chunks: usize,
}

impl SharedTile {
    /// The tile starting at shared address `base` (16-byte aligned).
    #[inline(always)]
    pub const fn new(base: u32, rows: usize, head_dim: usize, row_elems: usize) -> Self {
        Self { base, rows, chunks_per_row: row_elems / CHUNK_ELEMS, data_chunks: head_dim / CHUNK_ELEMS }
    }

    /// Shared address of the tile's first byte.
    #[inline(always)]
    pub const fn base(&self) -> u32 {
        self.base
    }

    /// Bytes the tile occupies.
    #[inline(always)]
    pub const fn bytes(&self) -> u32 {
        (self.rows * self.chunks_per_row * CHUNK_BYTES) as u32
    }

    /// Shared address of logical chunk `chunk` of row `row`.
    #[inline(always)]
    pub fn chunk_addr(&self, row: usize, chunk: usize) -> u32 {
        self.base + layout::swizzled_offset(row, chunk, self.chunks_per_row) as u32
    }

    /// Starts `cp.async` copies of the tile from global memory, all `threads` threads of the CTA
    /// taking part: tile row `r` comes from `src + r * row_stride` elements; rows at or past
    /// `valid_rows` are zero-filled without reading memory.
    ///
    /// # Safety
    /// Rows `0..valid_rows` (at least one) of `src` must be readable and 16-byte aligned.
    #[inline(always)]
    pub unsafe fn load_async(&self, src: *const u16, row_stride: u32, valid_rows: u32, thread: usize, threads: usize) {
        let chunks = self.rows * self.data_chunks;
        let keep_swizzle = layout::copy_passes_keep_swizzle(threads, self.data_chunks);
        let (first_row, first_chunk) = layout::copy_chunk(thread, 0, threads, self.data_chunks);
        let first_addr = self.chunk_addr(first_row, first_chunk);
        for pass in 0..chunks / threads {
            let (row, chunk) = layout::copy_chunk(thread, pass, threads, self.data_chunks);
            let dst = if keep_swizzle {
                // The same move for every thread (thread 0's), in whole swizzle blocks: a constant.
                let (rows_moved, chunks_moved) = layout::copy_chunk(0, pass, threads, self.data_chunks);
                first_addr + layout::swizzled_offset(rows_moved, chunks_moved, self.chunks_per_row) as u32
            } else {
                self.chunk_addr(row, chunk)
            };
            let in_bounds = (row as u32) < valid_rows;
            // Out-of-bounds rows read nothing; point them at row 0 so the address stays valid.
            let src_row = if in_bounds { row as u32 } else { 0 };
            let offset = src_row * row_stride + (chunk * CHUNK_ELEMS) as u32;
            // SAFETY: the destination is inside this tile; the source row is valid (caller).
            unsafe {
                arch::cp_async_16(
                    dst,
                    src.add(offset as usize) as *const u8,
                    if in_bounds { CHUNK_BYTES as u32 } else { 0 },
                )
            };
        }
    }

    /// The operands of an `ldmatrix` of the block at (`row0`, `chunk0`) whose lanes address
    /// (row, chunk) `lane_pattern(lane)` of it: `(base, lane_offset, xor)`, the address being
    /// `base + (lane_offset ^ xor)` (`layout::swizzle_split`; `row0` a multiple of 8).
    #[inline(always)]
    fn ldmatrix_operands(
        &self,
        row0: usize,
        chunk0: usize,
        lane_pattern: fn(usize) -> (usize, usize),
    ) -> (u32, u32, u32) {
        let (row, chunk) = lane_pattern(arch::lane_id() as usize);
        let (common, xor) = layout::swizzle_split(row0, chunk0, self.chunks_per_row);
        let lane_offset = layout::swizzled_offset(row, chunk, self.chunks_per_row);
        (self.base + common as u32, lane_offset as u32, xor as u32)
    }

    /// The A fragment of rows `row0..row0 + 16`, columns `16 * k_step..16 * k_step + 16`.
    ///
    /// # Safety
    /// All lanes of the warp call it together; the rows lie inside the tile.
    #[inline(always)]
    pub unsafe fn load_a(&self, row0: usize, k_step: usize) -> AFrag {
        let (base, lane_offset, xor) = self.ldmatrix_operands(row0, 2 * k_step, layout::ldmatrix_x4_rows16_lane);
        // SAFETY: converged warp, address inside the tile (caller).
        unsafe { arch::ldmatrix_x4(base, lane_offset, xor) }
    }

    /// B fragments of `B = tileᵀ` for the 16 rows `row0..row0 + 16` (two 8-row n tiles) and
    /// the 16 columns of k step `k_step`: K for S = Q·Kᵀ.
    ///
    /// # Safety
    /// All lanes of the warp call it together; the rows lie inside the tile.
    #[inline(always)]
    pub unsafe fn load_b_transposed_n_pair(&self, row0: usize, k_step: usize) -> [BFrag; 2] {
        let (base, lane_offset, xor) = self.ldmatrix_operands(row0, 2 * k_step, layout::ldmatrix_x4_keys16_lane);
        // SAFETY: converged warp, address inside the tile (caller).
        let r = unsafe { arch::ldmatrix_x4(base, lane_offset, xor) };
        [[r[0], r[1]], [r[2], r[3]]]
    }

    /// B fragments of `B = tile` for the 16 rows `row0..row0 + 16` (the k dimension) and the two
    /// 8-column n tiles `2 * n_pair` and `2 * n_pair + 1`: V for O = P·V.
    ///
    /// # Safety
    /// All lanes of the warp call it together; the rows lie inside the tile.
    #[inline(always)]
    pub unsafe fn load_b_pair(&self, row0: usize, n_pair: usize) -> [BFrag; 2] {
        let (base, lane_offset, xor) = self.ldmatrix_operands(row0, 2 * n_pair, layout::ldmatrix_x4_rows16_lane);
        // SAFETY: converged warp, address inside the tile (caller).
        let r = unsafe { arch::ldmatrix_x4_trans(base, lane_offset, xor) };
        [[r[0], r[1]], [r[2], r[3]]]
    }

    /// Stores accumulator `frag` of rows `row0..row0 + 16`, columns `8 * n_tile..8 * n_tile + 8`,
    /// rounded to the element type `E`.
    ///
    /// # Safety
    /// The rows lie inside the tile and no other thread accesses them concurrently.
    #[inline(always)]
    pub unsafe fn store_c<E: Element>(&self, row0: usize, n_tile: usize, frag: CFrag) {
        let lane = arch::lane_id() as usize;
        for half in 0..2 {
            let (row, col) = layout::mma_c_coords(lane, 2 * half);
            let addr = self.chunk_addr(row0 + row, n_tile) + (2 * (col % CHUNK_ELEMS)) as u32;
            // SAFETY: 4-byte-aligned address inside the tile (caller).
            unsafe { arch::st_shared_u32(addr, E::pack(frag[2 * half], frag[2 * half + 1])) };
        }
    }

    /// Copies rows `row0..row0 + 16` to global memory with 16-byte stores, the 32 lanes of one
    /// warp taking part: tile row `row0 + r` goes to `dst + r * row_stride` elements, for
    /// `r < valid_rows` only.
    ///
    /// # Safety
    /// Rows `0..valid_rows` of `dst` must be writable and 16-byte aligned; the tile rows must
    /// have been written and made visible to this warp.
    #[inline(always)]
    pub unsafe fn store_rows16(&self, row0: usize, dst: *mut u16, row_stride: u32, valid_rows: u32) {
        let lane = arch::lane_id() as usize;
        let chunks = 16 * self.data_chunks;
        for i in 0..chunks / 32 {
            let idx = lane + 32 * i;
            let row = idx / self.data_chunks;
            let chunk = idx % self.data_chunks;
            if (row as u32) < valid_rows {
                let offset = row as u32 * row_stride + (chunk * CHUNK_ELEMS) as u32;
                // SAFETY: tile address inside the tile; destination row is valid (caller).
                unsafe {
                    let v = arch::ld_shared_v4(self.chunk_addr(row0 + row, chunk));
                    arch::st_global_v4(dst.add(offset as usize) as *mut u8, v);
                }
            }
        }
    }
}

/// A warpgroup's `wgmma` accumulator for an element type `E`: `N / 8` fragments of
/// `mma.sync`'s C layout per thread, for the N (64 or 128) its length implies.
#[cfg(feature = "hopper")]
pub trait WgmmaAccumulator<E: Element> {
    /// `self = A·B (+ self if accumulate)` for one 16-wide k step, A (64 x 16, K-major) and
    /// B (16 x N, K-major) from shared-memory descriptors.
    ///
    /// # Safety
    /// As `arch::hopper::wgmma_ss_*`: the whole warpgroup, after `wgmma_fence`, operands
    /// unchanged and `self` untouched until `wgmma_wait`.
    unsafe fn mma_ss(&mut self, a: u64, b: u64, accumulate: bool);
    /// `self = A·B (+ self if accumulate)` for one 16-wide k step, A (64 x 16) from registers in
    /// `mma.sync`'s A layout, B (16 x N, MN-major) from a shared-memory descriptor.
    ///
    /// # Safety
    /// As [`WgmmaAccumulator::mma_ss`].
    unsafe fn mma_rs(&mut self, a: AFrag, b: u64, accumulate: bool);
}

/// Implements [`WgmmaAccumulator`] for the accumulator of N columns with the given wrappers.
#[cfg(feature = "hopper")]
macro_rules! wgmma_accumulator {
    ($elem:ty, $n:literal, $ss:ident, $rs:ident) => {
        impl WgmmaAccumulator<$elem> for [CFrag; $n / 8] {
            #[inline(always)]
            unsafe fn mma_ss(&mut self, a: u64, b: u64, accumulate: bool) {
                // SAFETY: forwarded from the caller.
                unsafe { arch::hopper::$ss(self, a, b, accumulate) }
            }
            #[inline(always)]
            unsafe fn mma_rs(&mut self, a: AFrag, b: u64, accumulate: bool) {
                // SAFETY: forwarded from the caller.
                unsafe { arch::hopper::$rs(self, a, b, accumulate) }
            }
        }
    };
}
#[cfg(feature = "hopper")]
wgmma_accumulator!(F16, 64, wgmma_ss_m64n64k16_f16, wgmma_rs_m64n64k16_f16);
#[cfg(feature = "hopper")]
wgmma_accumulator!(F16, 128, wgmma_ss_m64n128k16_f16, wgmma_rs_m64n128k16_f16);
#[cfg(feature = "hopper")]
wgmma_accumulator!(Bf16, 64, wgmma_ss_m64n64k16_bf16, wgmma_rs_m64n64k16_bf16);
#[cfg(feature = "hopper")]
wgmma_accumulator!(Bf16, 128, wgmma_ss_m64n128k16_bf16, wgmma_rs_m64n128k16_bf16);
