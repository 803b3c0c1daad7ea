//! A KV cache for incremental decoding: contiguous or paged, with the lengths of its sequences
//! tracked on the host and on the device.

use cust::memory::{CopyDestination, DeviceBuffer, DeviceSlice};
use cust::prelude::Stream;
use cust::sys as cu;

use crate::abi::Strides;
use crate::element::Element;
use crate::error::{driver, Error, Operand, Result};
use crate::kernels::SUPPORTED_HEAD_DIMS;
use crate::plan::{CacheArg, MAX_HEAD_SPAN};
use crate::tensor::TensorLayout;

/// K and V caches for `batch` sequences of up to `capacity` rows each, with `kv_heads` heads of
/// `head_dim`, owned on the device of the current context, zero-filled when made.
///
/// [`FlashAttention::forward_with_kvcache`](crate::FlashAttention::forward_with_kvcache)
/// appends new rows at each sequence's current length and attends over the valid prefix, as
/// FlashAttention's `flash_attn_with_kvcache` does. The lengths live on the host (so every append
/// is checked against the capacity before launch) and on the device (so the kernels of a call
/// read them in stream order); [`set_lengths`](Self::set_lengths) rewinds or sets them.
///
/// Paged ([`paged`](Self::paged)): rows live in fixed-size pages of a shared pool, and a block
/// table maps each sequence's `i`-th page to a pool page, as in FlashAttention ≥ 2.5 (vLLM's
/// layout).
///
/// Like any device buffer that kernels write, use one cache from one stream at a time (or order
/// the streams yourself).
#[derive(Debug)]
pub struct KvCache<T: Element> {
    k: DeviceBuffer<T>,
    v: DeviceBuffer<T>,
    layout: TensorLayout,
    batch: usize,
    capacity: usize,
    /// Two device copies of the lengths: a call's append reads one and writes the other.
    lengths: [DeviceBuffer<u32>; 2],
    current: usize,
    host_lengths: Vec<u32>,
    paging: Option<Paging>,
    scratch: DeviceBuffer<f32>,
}

#[derive(Debug)]
struct Paging {
    block_table: DeviceBuffer<u32>,
    host_table: Vec<u32>,
    pages_per_sequence: usize,
    page_rows: usize,
}

/// Rows per page must be a multiple of this: every configuration's K/V tile then lies inside one
/// page.
pub const PAGE_ROWS_MULTIPLE: usize = 64;

impl<T: Element> KvCache<T> {
    /// A contiguous cache: `[batch, capacity, kv_heads, head_dim]` (`bshd`) for K and for V, all
    /// sequences empty.
    pub fn new(batch: usize, kv_heads: usize, capacity: usize, head_dim: usize) -> Result<Self> {
        check_geometry(batch, kv_heads, capacity, head_dim)?;
        let layout = TensorLayout::bshd(batch, capacity, kv_heads, head_dim);
        Self::with_layout(layout, batch, capacity, None)
    }

    /// A paged cache: a pool of `pages` pages of `page_rows` rows (`[pages, page_rows, kv_heads,
    /// head_dim]` for K and for V), and a block table of `batch` rows of equal length: sequence
    /// `b`'s rows `i·page_rows..(i+1)·page_rows` live in pool page `block_table[b · n + i]`,
    /// where `n = block_table.len() / batch`. `page_rows` must be a positive multiple of
    /// [`PAGE_ROWS_MULTIPLE`]; every entry must name a page of the pool. Pages may be shared
    /// between sequences for reading (a common prefix); appending into a shared page changes it
    /// for all of them.
    pub fn paged(
        batch: usize,
        kv_heads: usize,
        head_dim: usize,
        pages: usize,
        page_rows: usize,
        block_table: &[u32],
    ) -> Result<Self> {
        if page_rows == 0 || page_rows % PAGE_ROWS_MULTIPLE != 0 {
            return Err(Error::InvalidPaging(format!(
                "rows per page ({page_rows}) must be a positive multiple of {PAGE_ROWS_MULTIPLE}"
            )));
        }
        if pages == 0 {
            return Err(Error::InvalidPaging("the pool has no pages".to_string()));
        }
        if batch == 0 || block_table.is_empty() || block_table.len() % batch != 0 {
            return Err(Error::WrongLength {
                operand: Operand::BlockTable,
                expected: format!("a positive multiple of batch ({batch})"),
                actual: block_table.len(),
            });
        }
        if let Some(i) = block_table.iter().position(|&page| page as usize >= pages) {
            return Err(Error::InvalidPaging(format!(
                "block table entry {i} names page {}, the pool has {pages}",
                block_table[i]
            )));
        }
        let pages_per_sequence = block_table.len() / batch;
        let capacity = pages_per_sequence * page_rows;
        check_geometry(batch, kv_heads, capacity, head_dim)?;
        let layout = TensorLayout::bshd(pages, page_rows, kv_heads, head_dim);
        let paging = Paging {
            block_table: DeviceBuffer::from_slice(block_table)?,
            host_table: block_table.to_vec(),
            pages_per_sequence,
            page_rows,
        };
        Self::with_layout(layout, batch, capacity, Some(paging))
    }

    fn with_layout(layout: TensorLayout, batch: usize, capacity: usize, paging: Option<Paging>) -> Result<Self> {
        let elements = layout.required_len().ok_or(Error::TooLarge {
            operand: Operand::Cache,
            what: "the element count",
            limit: usize::MAX as u64,
        })?;
        Ok(Self {
            k: zeroed(elements)?,
            v: zeroed(elements)?,
            layout,
            batch,
            capacity,
            lengths: [DeviceBuffer::from_slice(&vec![0u32; batch])?, DeviceBuffer::from_slice(&vec![0u32; batch])?],
            current: 0,
            host_lengths: vec![0; batch],
            paging,
            scratch: DeviceBuffer::from_slice(&[0f32])?,
        })
    }

    /// Number of sequences.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// K/V heads.
    pub fn kv_heads(&self) -> usize {
        self.layout.heads()
    }

    /// Head dimension.
    pub fn head_dim(&self) -> usize {
        self.layout.head_dim()
    }

    /// Rows each sequence can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Rows per page of a paged cache.
    pub fn page_rows(&self) -> Option<usize> {
        self.paging.as_ref().map(|p| p.page_rows)
    }

    /// The block table of a paged cache.
    pub fn block_table(&self) -> Option<&[u32]> {
        self.paging.as_ref().map(|p| p.host_table.as_slice())
    }

    /// Valid rows of each sequence.
    pub fn lengths(&self) -> &[u32] {
        &self.host_lengths
    }

    /// Sets the valid rows of each sequence (to rewind, or after filling the cache through
    /// [`keys_mut`](Self::keys_mut)). Waits for `stream`, the stream the cache is used on, so
    /// that no kernel still reads the old lengths.
    pub fn set_lengths(&mut self, stream: &Stream, lengths: &[u32]) -> Result<()> {
        if lengths.len() != self.batch {
            return Err(Error::WrongLength {
                operand: Operand::Cache,
                expected: format!("one length per sequence ({})", self.batch),
                actual: lengths.len(),
            });
        }
        if let Some(sequence) = lengths.iter().position(|&l| l as usize > self.capacity) {
            return Err(Error::CacheFull {
                sequence,
                length: lengths[sequence],
                appending: 0,
                capacity: self.capacity,
            });
        }
        stream.synchronize()?;
        self.lengths[self.current].copy_from(lengths)?;
        self.host_lengths.copy_from_slice(lengths);
        Ok(())
    }

    /// The key cache and its layout: `[batch, capacity, kv_heads, head_dim]`, or for a paged
    /// cache `[pages, page_rows, kv_heads, head_dim]` (as [`TensorLayout`]s with the heads
    /// second).
    pub fn keys(&self) -> (&DeviceSlice<T>, TensorLayout) {
        (&self.k, self.layout)
    }

    /// The value cache and its layout (as [`keys`](Self::keys)).
    pub fn values(&self) -> (&DeviceSlice<T>, TensorLayout) {
        (&self.v, self.layout)
    }

    /// The key cache, writable (for example to fill it with a prompt's keys).
    pub fn keys_mut(&mut self) -> &mut DeviceSlice<T> {
        &mut self.k
    }

    /// The value cache, writable.
    pub fn values_mut(&mut self) -> &mut DeviceSlice<T> {
        &mut self.v
    }

    /// The cache as the planner takes it.
    pub(crate) fn arg(&self) -> CacheArg {
        let s = self.layout.strides;
        let bytes = (self.k.len() * std::mem::size_of::<T>()) as u64;
        CacheArg {
            k: self.k.as_device_ptr().as_raw(),
            v: self.v.as_device_ptr().as_raw(),
            bytes,
            strides: Strides { batch: s[0] as u64, head: s[1] as u64, row: s[2] as u64 },
            batch: self.batch,
            kv_heads: self.kv_heads(),
            head_dim: self.head_dim(),
            capacity: self.capacity,
            lengths: self.lengths[self.current].as_device_ptr().as_raw(),
            next_lengths: self.lengths[1 - self.current].as_device_ptr().as_raw(),
            block_table: self.paging.as_ref().map_or(0, |p| p.block_table.as_device_ptr().as_raw()),
            block_table_stride: self.paging.as_ref().map_or(0, |p| p.pages_per_sequence),
            page_rows: self.paging.as_ref().map_or(0, |p| p.page_rows),
        }
    }

    /// Scratch of at least `len` f32 for split-KV partials: (address, elements). Grows the buffer
    /// (freeing the old one waits for the device, so no kernel still uses it).
    pub(crate) fn scratch(&mut self, len: usize) -> Result<(u64, usize)> {
        if self.scratch.len() < len {
            self.scratch = zeroed(len)?;
        }
        Ok((self.scratch.as_device_ptr().as_raw(), self.scratch.len()))
    }

    /// After a call that appended `rows` rows (and wrote the new lengths to the other device
    /// buffer): that buffer is now current.
    pub(crate) fn advance(&mut self, rows: usize) {
        if rows > 0 {
            self.current = 1 - self.current;
            for length in &mut self.host_lengths {
                *length += rows as u32;
            }
        }
    }
}

/// A positive size of everything, a supported head dimension, and each sequence inside the
/// kernels' 32-bit row math.
fn check_geometry(batch: usize, kv_heads: usize, capacity: usize, head_dim: usize) -> Result<()> {
    if !SUPPORTED_HEAD_DIMS.contains(&head_dim) {
        return Err(Error::UnsupportedHeadDim(head_dim));
    }
    let dims = [(batch, crate::Dim::Batch), (kv_heads, crate::Dim::Heads), (capacity, crate::Dim::SeqLen)];
    if let Some(&(_, dim)) = dims.iter().find(|(n, _)| *n == 0) {
        return Err(Error::ZeroDim { operand: Operand::Cache, dim });
    }
    if (capacity as u64).saturating_mul((kv_heads * head_dim) as u64) > MAX_HEAD_SPAN {
        return Err(Error::TooLarge {
            operand: Operand::Cache,
            what: "the element span of one sequence",
            limit: MAX_HEAD_SPAN,
        });
    }
    Ok(())
}

/// A zero-filled device buffer of `len` (at least 1) elements. Only for types whose all-zero
/// bytes are a value: f16, bf16, f32.
fn zeroed<T: cust::memory::DeviceCopy>(len: usize) -> Result<DeviceBuffer<T>> {
    // SAFETY: the buffer is filled with zero bytes before it is returned, and the callers' types
    // read all-zero bytes as +0.0.
    unsafe {
        let buffer = DeviceBuffer::<T>::uninitialized(len.max(1))?;
        driver(
            "cuMemsetD8",
            cu::cuMemsetD8_v2(buffer.as_device_ptr().as_raw(), 0, buffer.len() * std::mem::size_of::<T>()),
        )?;
        Ok(buffer)
    }
}
