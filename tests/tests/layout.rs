//! Every layout fact the kernels rely on, checked against a model of `ldmatrix` and
//! `mma.m16n8k16` (PTX ISA fragment tables). The kernels' own `layout.rs` is compiled here.

#[allow(dead_code)]
#[path = "../../kernels-gpu/src/layout.rs"]
mod layout;

use layout::*;
use std::collections::HashSet;

/// What `ldmatrix.x4` delivers: lane `l`, register `reg`, half `i` of a matrix stored as rows of
/// `matrix[row][col]`, when lane `a` supplies the address of (row, chunk) = `addr(a)`.
fn ldmatrix(
    lane: usize,
    reg: usize,
    i: usize,
    transposed: bool,
    addr: impl Fn(usize) -> (usize, usize),
) -> (usize, usize) {
    let (m, r, c) = ldmatrix_dest(lane, reg, i, transposed);
    let (row, chunk) = addr(8 * m + r);
    (row, chunk * CHUNK_ELEMS + c)
}

#[test]
fn q_fragment_from_ldmatrix_is_the_mma_a_fragment() {
    for lane in 0..32 {
        for reg in 0..4 {
            for i in 0..2 {
                let got = ldmatrix(lane, reg, i, false, ldmatrix_x4_rows16_lane);
                assert_eq!(got, mma_a_coords(lane, 2 * reg + i), "lane {lane} reg {reg} half {i}");
            }
        }
    }
}

#[test]
fn k_fragments_from_ldmatrix_are_b_fragments_of_k_transposed() {
    // K tile rows are keys (n), columns dims (k); registers 0,1 feed key tile 0, 2,3 key tile 1,
    // each pair in the order `mma` takes it.
    for lane in 0..32 {
        for reg in 0..4 {
            for i in 0..2 {
                let (key, dim) = ldmatrix(lane, reg, i, false, ldmatrix_x4_keys16_lane);
                let (k, n) = mma_b_coords(lane, 2 * (reg % 2) + i);
                assert_eq!((key, dim), (8 * (reg / 2) + n, k), "lane {lane} reg {reg} half {i}");
            }
        }
    }
}

#[test]
fn v_fragments_from_ldmatrix_trans_are_b_fragments_of_v() {
    // V tile rows are keys (k), columns dims (n); registers 0,1 feed dim tile 0, 2,3 dim tile 1.
    for lane in 0..32 {
        for reg in 0..4 {
            for i in 0..2 {
                let (key, dim) = ldmatrix(lane, reg, i, true, ldmatrix_x4_rows16_lane);
                let (k, n) = mma_b_coords(lane, 2 * (reg % 2) + i);
                assert_eq!((key, dim), (k, 8 * (reg / 2) + n), "lane {lane} reg {reg} half {i}");
            }
        }
    }
}

#[test]
fn score_accumulators_are_the_p_operand() {
    // Element i of A register reg for a 16-key step comes from C element e of 8-key tile t.
    for lane in 0..32 {
        for reg in 0..4 {
            for i in 0..2 {
                let (tile, e) = p_from_scores(reg, i);
                let (row, key) = mma_c_coords(lane, e);
                assert_eq!((row, 8 * tile + key), mma_a_coords(lane, 2 * reg + i), "lane {lane} reg {reg} half {i}");
            }
        }
    }
}

#[test]
fn fragments_cover_their_tiles_exactly_once() {
    let a: HashSet<_> = (0..32).flat_map(|l| (0..8).map(move |i| mma_a_coords(l, i))).collect();
    assert_eq!(a.len(), 16 * 16);
    let b: HashSet<_> = (0..32).flat_map(|l| (0..4).map(move |i| mma_b_coords(l, i))).collect();
    assert_eq!(b.len(), 16 * 8);
    let c: HashSet<_> = (0..32).flat_map(|l| (0..4).map(move |i| mma_c_coords(l, i))).collect();
    assert_eq!(c.len(), 16 * 8);
}

#[test]
fn swizzle_is_a_permutation_of_each_row() {
    for chunks_per_row in [8, 16] {
        for row in 0..64 {
            let chunks: HashSet<_> = (0..chunks_per_row).map(|c| swizzled_chunk(row, c)).collect();
            assert_eq!(chunks, (0..chunks_per_row).collect(), "row {row}, {chunks_per_row} chunks");
        }
    }
}

/// Which (row, chunk) a lane addresses in one `ldmatrix.x4`.
type LaneAddress = fn(usize) -> (usize, usize);

/// 16-byte bank group (0..8) of a byte offset: a 16-byte access per lane is served 8 lanes at a
/// time, conflict-free when those 8 lanes hit 8 different groups.
fn bank_group(offset: usize) -> usize {
    (offset / 16) % 8
}

#[test]
fn ldmatrix_phases_are_free_of_bank_conflicts() {
    for chunks_per_row in [8, 16] {
        let patterns: [(&str, LaneAddress, usize); 2] =
            [("rows16", ldmatrix_x4_rows16_lane, 2), ("keys16", ldmatrix_x4_keys16_lane, 2)];
        for (name, lane_addr, chunk_span) in patterns {
            for row0 in (0..64).step_by(8) {
                for chunk0 in (0..chunks_per_row).step_by(chunk_span) {
                    for matrix in 0..4 {
                        let groups: HashSet<_> = (0..8)
                            .map(|j| {
                                let (r, c) = lane_addr(8 * matrix + j);
                                bank_group(swizzled_offset(row0 + r, chunk0 + c, chunks_per_row))
                            })
                            .collect();
                        assert_eq!(groups.len(), 8, "{name} row0 {row0} chunk0 {chunk0} matrix {matrix}");
                    }
                }
            }
        }
    }
}

/// (threads, data chunks per row, chunks per shared-memory row, tile rows) of every cooperative
/// copy the kernels make: 4 warps, D = 32, 64, 96, 128, 256, tiles of 32 to 128 rows.
const COPIES: [(usize, usize, usize, usize); 10] = [
    (128, 4, 8, 64),
    (128, 4, 8, 128),
    (128, 8, 8, 64),
    (128, 8, 8, 128),
    (128, 12, 16, 64),
    (128, 12, 16, 32),
    (128, 16, 16, 32),
    (128, 16, 16, 128),
    (128, 32, 32, 32),
    (128, 32, 32, 64),
];

#[test]
fn cooperative_copies_cover_each_chunk_once_coalesced() {
    for (threads, data_chunks, _, rows) in COPIES {
        let passes = rows * data_chunks / threads;
        let mut seen = HashSet::new();
        for pass in 0..passes {
            for t in 0..threads {
                let (row, chunk) = copy_chunk(t, pass, threads, data_chunks);
                assert!(row < rows && chunk < data_chunks, "{threads} {data_chunks}: ({row}, {chunk})");
                assert!(seen.insert((row, chunk)), "{threads} {data_chunks}: ({row}, {chunk}) twice");
                // Coalesced: within each 4-thread group (64 bytes), consecutive chunks of one row.
                if t % 4 != 0 {
                    let (prev_row, prev_chunk) = copy_chunk(t - 1, pass, threads, data_chunks);
                    assert_eq!((row, chunk), (prev_row, prev_chunk + 1), "{threads} {data_chunks} thread {t}");
                }
            }
        }
        assert_eq!(seen.len(), rows * data_chunks);
    }
}

#[test]
fn cooperative_copy_writes_are_free_of_bank_conflicts() {
    // Rows of whole 8-chunk groups only. D = 32 and D = 96 (4 and 12 data chunks) have 8-thread
    // phases that straddle two rows, which the row XOR maps onto the same bank groups: a 2-way
    // conflict on their copies (known, not yet worth a layout of their own).
    for (threads, data_chunks, chunks_per_row, rows) in COPIES.into_iter().filter(|c| c.1 % 8 == 0) {
        for pass in 0..rows * data_chunks / threads {
            for first in (0..threads).step_by(8) {
                let groups: HashSet<_> = (first..first + 8)
                    .map(|t| {
                        let (row, chunk) = copy_chunk(t, pass, threads, data_chunks);
                        bank_group(swizzled_offset(row, chunk, chunks_per_row))
                    })
                    .collect();
                assert_eq!(groups.len(), 8, "{threads} {data_chunks} pass {pass} threads {first}..");
            }
        }
    }
}

#[test]
fn copy_passes_that_keep_the_swizzle_move_by_a_constant() {
    for (threads, data_chunks, chunks_per_row, rows) in COPIES {
        if !copy_passes_keep_swizzle(threads, data_chunks) {
            continue;
        }
        assert_eq!(copy_chunk(0, 0, threads, data_chunks), (0, 0));
        for pass in 0..rows * data_chunks / threads {
            let (rows_moved, chunks_moved) = copy_chunk(0, pass, threads, data_chunks);
            let moved = swizzled_offset(rows_moved, chunks_moved, chunks_per_row);
            for t in 0..threads {
                let (row0, chunk0) = copy_chunk(t, 0, threads, data_chunks);
                let (row, chunk) = copy_chunk(t, pass, threads, data_chunks);
                assert_eq!(
                    swizzled_offset(row, chunk, chunks_per_row),
                    swizzled_offset(row0, chunk0, chunks_per_row) + moved,
                    "{threads} {data_chunks} thread {t} pass {pass}"
                );
            }
        }
    }
    // The wide rows that spilled address registers are among them.
    assert!(copy_passes_keep_swizzle(128, 32) && copy_passes_keep_swizzle(128, 16) && copy_passes_keep_swizzle(128, 8));
}

#[test]
fn swizzle_split_is_the_swizzled_offset() {
    let patterns: [(LaneAddress, usize); 2] = [(ldmatrix_x4_rows16_lane, 2), (ldmatrix_x4_keys16_lane, 2)];
    for chunks_per_row in [8, 16, 32] {
        for (lane_addr, chunk_span) in patterns {
            for row0 in (0..128).step_by(8) {
                for chunk0 in (0..chunks_per_row).step_by(chunk_span) {
                    let (common, xor) = swizzle_split(row0, chunk0, chunks_per_row);
                    for lane in 0..32 {
                        let (row, chunk) = lane_addr(lane);
                        assert_eq!(
                            common + (swizzled_offset(row, chunk, chunks_per_row) ^ xor),
                            swizzled_offset(row0 + row, chunk0 + chunk, chunks_per_row),
                            "row0 {row0} chunk0 {chunk0} lane {lane} chunks/row {chunks_per_row}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn output_staging_stores_are_free_of_bank_conflicts() {
    // store_c_f16: lane writes 4 bytes at (row of C element 0 or 2, chunk n_tile) + 4 * (col / 2).
    for chunks_per_row in [8, 16] {
        for n_tile in 0..chunks_per_row {
            for half in 0..2 {
                let banks: HashSet<_> = (0..32)
                    .map(|lane| {
                        let (row, col) = mma_c_coords(lane, 2 * half);
                        (swizzled_offset(row, n_tile, chunks_per_row) + 2 * col) / 4 % 32
                    })
                    .collect();
                assert_eq!(banks.len(), 32, "n_tile {n_tile} half {half}");
            }
        }
    }
}

/// A model of TMA's 128-byte swizzle (CUDA's `CU_TENSOR_MAP_SWIZZLE_128B`): in each 1024-byte
/// span, address bits 4..7 (the 16-byte chunk within a 128-byte row) are XOR-ed with bits 7..10
/// (the row within the span), applied to the dense layout of 64-column blocks.
fn tma_sw128(row: usize, col: usize, rows: usize) -> usize {
    let dense = (col / 64) * rows * 128 + row * 128 + (col % 64) * 2;
    dense ^ (((dense >> 7) & 7) << 4)
}

#[test]
fn hopper_tiles_are_what_tma_writes() {
    for rows in [64, 128] {
        for head_dim in [64, 128] {
            let mut seen = HashSet::new();
            for row in 0..rows {
                for col in 0..head_dim {
                    let offset = sw128_offset(row, col, rows);
                    assert_eq!(offset, tma_sw128(row, col, rows), "row {row} col {col} rows {rows}");
                    assert!(seen.insert(offset), "two elements at byte {offset}");
                    assert!(offset < rows * head_dim * 2);
                }
            }
        }
    }
}

#[test]
fn wgmma_k_steps_start_at_their_first_column() {
    // A K-major descriptor's start address is that of row 0 of its 16 columns (row 0 is not
    // swizzled); rows 1..8 follow at 128 bytes, 8-row groups at 1024.
    for rows in [64, 128] {
        for k_step in 0..8 {
            assert_eq!(sw128_k_step_offset(k_step, rows), sw128_offset(0, 16 * k_step, rows));
            for row in 0..rows {
                let start = sw128_offset(row, 16 * k_step, rows) & !(CHUNK_BYTES * 8 - 1);
                assert_eq!(start, sw128_k_step_offset(k_step, rows) - (k_step % 4) * 32 + row * 128);
            }
        }
    }
}
