//! Appending new K/V rows to a KV cache (contiguous or paged) before attention runs over it.

use crate::abi::{AppendParams, Strides, APPEND_THREADS};
use crate::arch;
use crate::layout::{CHUNK_BYTES, CHUNK_ELEMS};

/// Copies 16-byte chunk `idx` of the new rows of one (kv head, sequence) into the caches, and
/// advances that sequence's length.
///
/// # Safety
/// Launched with grid `(ceil(rows * head_dim / 8 / APPEND_THREADS), kv_heads, batch)`,
/// `APPEND_THREADS` threads, and parameters the host validated.
#[inline(always)]
pub unsafe fn append(p: &AppendParams) {
    let (block_x, kv_head, batch) = arch::block_idx();
    let thread = arch::thread_idx();
    let chunks_per_row = p.head_dim / CHUNK_ELEMS as u32;
    let idx = block_x * APPEND_THREADS as u32 + thread;
    let (row, chunk) = (idx / chunks_per_row.max(1), idx % chunks_per_row.max(1));
    // SAFETY: `lengths` and `next_lengths` hold `batch` entries (host-validated).
    let length = unsafe { *(p.lengths as *const u32).add(batch as usize) };
    let position = length.saturating_add(row);
    // The host keeps length + rows within the capacity; the test keeps every write inside the
    // cache whatever the device array holds.
    if row < p.rows && position < p.capacity {
        let (page, page_row) = if p.block_table != 0 {
            let page_rows = p.page_rows.max(1);
            // SAFETY: position < capacity = block_table_stride * page_rows (host-validated).
            let page = unsafe {
                *(p.block_table as *const u32).add((batch * p.block_table_stride + position / page_rows) as usize)
            };
            (page, position % page_rows)
        } else {
            (batch, position)
        };
        let element = |s: &Strides, outer: u32, head: u32, r: u32| -> u64 {
            2 * (outer as u64 * s.batch + head as u64 * s.head + r as u64 * s.row)
                + (chunk as usize * CHUNK_BYTES) as u64
        };
        let dst = element(&p.cache_strides, page, kv_head, page_row);
        // SAFETY: source rows and cache rows are in bounds and 16-byte aligned (host-validated).
        unsafe {
            let k = arch::ld_global_v4((p.k_new + element(&p.k_new_strides, batch, kv_head, row)) as *const u8);
            let v = arch::ld_global_v4((p.v_new + element(&p.v_new_strides, batch, kv_head, row)) as *const u8);
            arch::st_global_v4((p.k_cache + dst) as *mut u8, k);
            arch::st_global_v4((p.v_cache + dst) as *mut u8, v);
        }
    }
    if block_x == 0 && kv_head == 0 && thread == 0 {
        // SAFETY: as above. A different array than `lengths`, which other threads still read.
        unsafe { *(p.next_lengths as *mut u32).add(batch as usize) = length.saturating_add(p.rows).min(p.capacity) };
    }
}
