//! Layout facts: where each element lives in shared memory and in which lane's registers.
//!
//! Pure index arithmetic, no device code. The kernels use these functions; the host crate compiles
//! this same file and tests every fact against a model of `ldmatrix` and `mma.sync` (PTX ISA,
//! "Matrix Fragments for mma.m16n8k16" and "ldmatrix").
//!
//! Conventions: a "chunk" is 16 bytes = 8 f16 values of one row; `g = lane / 4` is the lane's
//! group (row within an 8-row block) and `t = lane % 4` its position within the group.

/// f16 elements in one 16-byte chunk: the unit of `cp.async`, `ldmatrix` rows and 16-byte stores.
pub const CHUNK_ELEMS: usize = 8;

/// Bytes in one chunk.
pub const CHUNK_BYTES: usize = 16;

/// Physical chunk of logical chunk `chunk` in row `row` of a swizzled shared-memory tile.
///
/// Rows are at least 8 chunks (128 bytes, a full sweep of the 32 banks), so all rows start in
/// bank 0. XOR-ing the chunk with `row % 8` puts the same logical chunk of 8 consecutive rows in 8
/// different 16-byte bank groups: an `ldmatrix` phase (8 rows, one chunk each) and a warp of
/// `cp.async` writes are both free of bank conflicts. The XOR stays inside the aligned group of 8
/// chunks, so wider rows (D = 128) swizzle each half independently.
#[inline(always)]
pub const fn swizzled_chunk(row: usize, chunk: usize) -> usize {
    chunk ^ (row % 8)
}

/// Byte offset of (`row`, logical `chunk`) in a swizzled tile with `chunks_per_row` chunks per row.
#[inline(always)]
pub const fn swizzled_offset(row: usize, chunk: usize, chunks_per_row: usize) -> usize {
    (row * chunks_per_row + swizzled_chunk(row, chunk)) * CHUNK_BYTES
}

/// Splits the byte offset of (`row0 + row`, `chunk0 + chunk`) in a swizzled tile into a part
/// common to the lanes of an `ldmatrix` and an XOR on each lane's own offset: it is
/// `common + (swizzled_offset(row, chunk, chunks_per_row) ^ xor)` for `(common, xor)` returned
/// here, when `row0 % 8 == 0` (the lane's `row % 8` is the whole swizzle) and the lane's `chunk`
/// shares no bit with `chunk0 % 8` and stays in its 8-chunk group (`chunk0 % 8 + chunk < 8`).
///
/// Why: a lane then keeps one offset register per access pattern, not one address per
/// (row0, chunk0) it reads (FlashAttention-2 / CUTLASS precompute swizzled pointers the same way).
#[inline(always)]
pub const fn swizzle_split(row0: usize, chunk0: usize, chunks_per_row: usize) -> (usize, usize) {
    ((row0 * chunks_per_row + chunk0 / 8 * 8) * CHUNK_BYTES, (chunk0 % 8) * CHUNK_BYTES)
}

/// (row, logical chunk) that thread `thread` of `threads` copies in pass `pass` of a cooperative
/// tile copy (`cp.async`) of rows of `data_chunks` chunks; pass `i` covers chunks
/// `i * threads..(i + 1) * threads` of the tile in some order.
///
/// Consecutive threads copy consecutive chunks of one row (coalesced reads; no bank conflicts
/// after the swizzle). Where [`copy_passes_keep_swizzle`] holds, every pass moves all threads by
/// the same whole 8-row and 8-chunk blocks: row-major order does that when a pass spans a
/// multiple of 8 rows; wider rows (D = 256 with 128 threads) go in slices of `threads / 8`
/// chunks of 8 rows each.
#[inline(always)]
pub const fn copy_chunk(thread: usize, pass: usize, threads: usize, data_chunks: usize) -> (usize, usize) {
    if copy_in_slices(threads, data_chunks) {
        let slice = threads / 8;
        let slices = data_chunks / slice;
        (thread / slice + 8 * (pass / slices), thread % slice + slice * (pass % slices))
    } else {
        let idx = thread + pass * threads;
        (idx / data_chunks, idx % data_chunks)
    }
}

/// Whether `n` is a multiple of `m` (`m > 0`). (`usize::is_multiple_of` is const only from Rust
/// 1.87; the crates support 1.85.)
const fn divides(m: usize, n: usize) -> bool {
    n / m * m == n
}

/// Whether a pass of row-major order (`threads` consecutive chunks) spans a whole number of
/// 8-row swizzle blocks.
const fn pass_spans_8_row_blocks(threads: usize, data_chunks: usize) -> bool {
    divides(data_chunks, threads) && divides(8, threads / data_chunks)
}

/// Whether [`copy_chunk`] copies rows in slices: row-major passes would not span whole 8-row
/// blocks, and slices of `threads / 8` chunks are whole 8-chunk swizzle groups.
const fn copy_in_slices(threads: usize, data_chunks: usize) -> bool {
    !pass_spans_8_row_blocks(threads, data_chunks) && divides(64, threads) && divides(threads / 8, data_chunks)
}

/// Whether each pass of [`copy_chunk`] moves every thread by the same whole number of 8-row
/// blocks and 8-chunk groups. Then a thread's destination keeps its swizzle XOR in every pass,
/// and its shared address in pass `p` is its address in pass 0 plus the constant
/// `swizzled_offset` of that move: one register instead of one per pass kept through the main
/// loop (which D = 256 spilled).
#[inline(always)]
pub const fn copy_passes_keep_swizzle(threads: usize, data_chunks: usize) -> bool {
    copy_in_slices(threads, data_chunks) || pass_spans_8_row_blocks(threads, data_chunks)
}

/// (row, column) of accumulator element `i` (0..4) held by `lane` in an m16n8 f32 C/D fragment.
#[inline(always)]
pub const fn mma_c_coords(lane: usize, i: usize) -> (usize, usize) {
    (lane / 4 + 8 * (i / 2), 2 * (lane % 4) + i % 2)
}

/// (row, k) of f16 element `i` (0..8; register `i / 2`, low half first) held by `lane` in an
/// m16k16 A fragment.
#[inline(always)]
pub const fn mma_a_coords(lane: usize, i: usize) -> (usize, usize) {
    let reg = i / 2;
    (lane / 4 + 8 * (reg % 2), 2 * (lane % 4) + i % 2 + 8 * (reg / 2))
}

/// (k, n) of f16 element `i` (0..4; register `i / 2`, low half first) held by `lane` in a k16n8
/// B fragment.
#[inline(always)]
pub const fn mma_b_coords(lane: usize, i: usize) -> (usize, usize) {
    let reg = i / 2;
    (2 * (lane % 4) + i % 2 + 8 * reg, lane / 4)
}

/// Which 8x8 matrix, and which (row, column) of it, element `i` (0..2, low half first) of
/// destination register `reg` of `lane` receives from `ldmatrix` (`.trans` when `transposed`).
/// Matrix `m` is read from the row addresses given by lanes `8m..8m+8`.
#[inline(always)]
pub const fn ldmatrix_dest(lane: usize, reg: usize, i: usize, transposed: bool) -> (usize, usize, usize) {
    if transposed {
        (reg, 2 * (lane % 4) + i, lane / 4)
    } else {
        (reg, lane / 4, 2 * (lane % 4) + i)
    }
}

/// Row (0..16) and chunk (0..2) a lane addresses for an `ldmatrix.x4` that reads a 16x16 block
/// as matrices (rows 0-7, chunk 0), (rows 8-15, chunk 0), (rows 0-7, chunk 1), (rows 8-15, chunk 1).
///
/// Used for the A operand (Q: 16 query rows x 16 dims -> registers a0..a3) and, with `.trans`,
/// for V (16 keys x 16 dims -> B fragments of two 8-wide dim tiles).
#[inline(always)]
pub const fn ldmatrix_x4_rows16_lane(lane: usize) -> (usize, usize) {
    (lane % 8 + 8 * ((lane / 8) % 2), lane / 16)
}

/// Row (0..16) and chunk (0..2) a lane addresses for an `ldmatrix.x4` that reads a 16x16 block
/// as matrices (rows 0-7, chunk 0), (rows 0-7, chunk 1), (rows 8-15, chunk 0), (rows 8-15,
/// chunk 1): the B operand of S = Q.K^T for two 8-key tiles and one 16-wide k step, each tile's
/// two registers adjacent as `mma` takes them.
#[inline(always)]
pub const fn ldmatrix_x4_keys16_lane(lane: usize) -> (usize, usize) {
    (lane % 8 + 8 * (lane / 16), (lane / 8) % 2)
}

/// Index (0..4) of the C element of score tile `2 * kk + (reg / 2)` that feeds f16 element
/// `i` of A register `reg` of the P.V `mma` for k step `kk`: the C fragments of two adjacent
/// 8-key tiles, packed in pairs, are exactly the A fragment of a 16-key step, so P never leaves
/// registers.
#[inline(always)]
pub const fn p_from_scores(reg: usize, i: usize) -> (usize, usize) {
    (reg / 2, 2 * (reg % 2) + i)
}

/// Bytes of one row of a Hopper tile's column block: 64 16-bit elements, the width of the TMA
/// 128-byte swizzle.
pub const SW128_ROW_BYTES: usize = 128;

/// Byte offset of element (`row`, `col`) in a Hopper shared-memory tile of `rows` rows as TMA
/// writes it with 128-byte swizzling: column blocks of 64 elements one after the other, each
/// `rows` x 128 bytes; within a block, the 16-byte chunk `c` of row `r` sits at chunk
/// `c ^ (r % 8)` (the same XOR as [`swizzled_chunk`], over 1024-byte atoms of 8 rows).
pub const fn sw128_offset(row: usize, col: usize, rows: usize) -> usize {
    let (block, col_in_block) = (col / 64, col % 64);
    block * rows * SW128_ROW_BYTES
        + row * SW128_ROW_BYTES
        + swizzled_chunk(row, col_in_block / CHUNK_ELEMS) * CHUNK_BYTES
        + (col_in_block % CHUNK_ELEMS) * 2
}

/// Where the `wgmma` descriptor of k step `k_step` (columns `16 * k_step..+16`) of a K-major
/// Hopper tile of `rows` rows starts, relative to the tile: the column block, plus 32 bytes per
/// step inside the 128-byte row (the hardware applies the swizzle to the address it forms).
pub const fn sw128_k_step_offset(k_step: usize, rows: usize) -> usize {
    (k_step / 4) * rows * SW128_ROW_BYTES + (k_step % 4) * 32
}
