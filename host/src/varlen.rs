//! Variable-length batches: sequences of different lengths packed along the rows of one tensor.

use cust::memory::{DeviceBuffer, DeviceSlice};

use crate::error::{Error, Operand, Result};
use crate::plan::{VarlenArg, MAX_HEAD_SPAN};

/// The sequence boundaries of a packed batch, as `flash_attn_varlen_func` takes them: sequence
/// `b` owns query rows `cu_seqlens_q[b]..cu_seqlens_q[b + 1]` and key rows
/// `cu_seqlens_k[b]..cu_seqlens_k[b + 1]` of `[1, heads, total, head_dim]` tensors (for example
/// [`TensorLayout::thd`](crate::TensorLayout::thd)).
///
/// Checked on the host when built (offsets start at 0 and never decrease; both lists have
/// `batch + 1` entries) and uploaded once, so a model can reuse one batch description for all of
/// its layers. The maximum lengths are computed, not trusted.
#[derive(Debug)]
pub struct VarlenBatch {
    cu_q: DeviceBuffer<u32>,
    cu_k: DeviceBuffer<u32>,
    host_q: Vec<u32>,
    host_k: Vec<u32>,
    max_q: usize,
    max_k: usize,
}

impl VarlenBatch {
    /// Checks the offsets and copies them to the current context's device.
    pub fn new(cu_seqlens_q: &[u32], cu_seqlens_k: &[u32]) -> Result<Self> {
        let max_q = check_offsets(Operand::CuSeqlensQ, cu_seqlens_q)?;
        let max_k = check_offsets(Operand::CuSeqlensK, cu_seqlens_k)?;
        if cu_seqlens_k.len() != cu_seqlens_q.len() {
            return Err(Error::WrongLength {
                operand: Operand::CuSeqlensK,
                expected: format!("as many entries as cu_seqlens_q ({})", cu_seqlens_q.len()),
                actual: cu_seqlens_k.len(),
            });
        }
        Ok(Self {
            cu_q: DeviceBuffer::from_slice(cu_seqlens_q)?,
            cu_k: DeviceBuffer::from_slice(cu_seqlens_k)?,
            host_q: cu_seqlens_q.to_vec(),
            host_k: cu_seqlens_k.to_vec(),
            max_q,
            max_k,
        })
    }

    /// Number of sequences.
    pub fn batch(&self) -> usize {
        self.host_q.len() - 1
    }

    /// The query offsets.
    pub fn cu_seqlens_q(&self) -> &[u32] {
        &self.host_q
    }

    /// The key offsets.
    pub fn cu_seqlens_k(&self) -> &[u32] {
        &self.host_k
    }

    /// The longest query sequence.
    pub fn max_seqlen_q(&self) -> usize {
        self.max_q
    }

    /// The longest key sequence.
    pub fn max_seqlen_k(&self) -> usize {
        self.max_k
    }

    /// The device copies of the offsets (queries, keys).
    pub fn device_offsets(&self) -> (&DeviceSlice<u32>, &DeviceSlice<u32>) {
        (&self.cu_q, &self.cu_k)
    }

    /// The batch as the planner takes it.
    pub fn arg(&self) -> VarlenArg {
        let last = |v: &[u32]| v.last().copied().unwrap_or(0) as usize;
        VarlenArg {
            cu_seqlens_q: self.cu_q.as_device_ptr().as_raw(),
            cu_seqlens_k: self.cu_k.as_device_ptr().as_raw(),
            batch: self.batch(),
            max_seqlen_q: self.max_q,
            max_seqlen_k: self.max_k,
            total_q: last(&self.host_q),
            total_k: last(&self.host_k),
        }
    }
}

/// At least two entries, starting at 0, never decreasing, the last below 2^31. Returns the
/// longest sequence.
fn check_offsets(operand: Operand, offsets: &[u32]) -> Result<usize> {
    if offsets.len() < 2 {
        return Err(Error::WrongLength {
            operand,
            expected: "batch + 1 >= 2 entries".to_string(),
            actual: offsets.len(),
        });
    }
    let mut previous = 0;
    let mut longest = 0;
    for (index, &value) in offsets.iter().enumerate() {
        if (index == 0 && value != 0) || value < previous {
            return Err(Error::InvalidOffsets { operand, index, value, previous });
        }
        longest = longest.max(value - previous);
        previous = value;
    }
    if previous as u64 > MAX_HEAD_SPAN {
        return Err(Error::TooLarge { operand, what: "the total row count", limit: MAX_HEAD_SPAN });
    }
    Ok(longest as usize)
}
