//! The library's error type.

use cust::error::CudaError;

/// Which argument of a forward call an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    /// The query tensor.
    Q,
    /// The key tensor.
    K,
    /// The value tensor.
    V,
    /// The output tensor.
    O,
    /// The optional logsumexp output.
    Lse,
    /// The ALiBi slopes.
    AlibiSlopes,
    /// Varlen: the cumulative query offsets.
    CuSeqlensQ,
    /// Varlen: the cumulative key offsets.
    CuSeqlensK,
    /// KV cache: the keys to append.
    KNew,
    /// KV cache: the values to append.
    VNew,
    /// KV cache: the block table of a paged cache.
    BlockTable,
    /// KV cache: the cache itself.
    Cache,
}

impl std::fmt::Display for Operand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Operand::Q => "Q",
            Operand::K => "K",
            Operand::V => "V",
            Operand::O => "O",
            Operand::Lse => "logsumexp",
            Operand::AlibiSlopes => "ALiBi slopes",
            Operand::CuSeqlensQ => "cu_seqlens_q",
            Operand::CuSeqlensK => "cu_seqlens_k",
            Operand::KNew => "new K",
            Operand::VNew => "new V",
            Operand::BlockTable => "block table",
            Operand::Cache => "KV cache",
        })
    }
}

/// A dimension of a `[batch, heads, seq_len, head_dim]` tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dim {
    /// Batch size.
    Batch,
    /// Number of heads.
    Heads,
    /// Sequence length.
    SeqLen,
    /// Head dimension.
    HeadDim,
}

impl std::fmt::Display for Dim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Dim::Batch => "batch",
            Dim::Heads => "heads",
            Dim::SeqLen => "seq_len",
            Dim::HeadDim => "head_dim",
        })
    }
}

/// Everything that can go wrong in FlashCore. Argument errors are found before anything is
/// launched; CUDA errors carry the driver's error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A dimension of `operand` disagrees with the one implied by Q (and K for V).
    #[error("{operand}: {dim} is {actual}, expected {expected}")]
    ShapeMismatch {
        /// The tensor with the wrong dimension.
        operand: Operand,
        /// The dimension.
        dim: Dim,
        /// What Q (or K) implies.
        expected: usize,
        /// What the tensor has.
        actual: usize,
    },
    /// No kernel exists for this head dimension.
    #[error("head_dim {0} is not supported (supported: {supported:?})", supported = crate::SUPPORTED_HEAD_DIMS)]
    UnsupportedHeadDim(usize),
    /// The head dimension must be the innermost, contiguous one.
    #[error("{operand}: the head dimension must be contiguous (stride 1), got stride {stride}")]
    HeadDimNotContiguous {
        /// The tensor.
        operand: Operand,
        /// Its head-dimension stride in elements.
        stride: usize,
    },
    /// A base address is not aligned (16 bytes for f16/bf16 tensors, which the kernels move in
    /// 16-byte chunks; 4 bytes for f32 and u32 arrays).
    #[error("{operand}: device address {address:#x} is not {alignment}-byte aligned")]
    MisalignedPointer {
        /// The tensor.
        operand: Operand,
        /// Its device address.
        address: u64,
        /// The alignment it needs.
        alignment: u64,
    },
    /// A stride is not a multiple of 16 bytes (8 elements).
    #[error("{operand}: the {dim} stride {stride} (elements) is not a multiple of 16 bytes")]
    MisalignedStride {
        /// The tensor.
        operand: Operand,
        /// Which stride.
        dim: Dim,
        /// The stride in elements.
        stride: usize,
    },
    /// A dimension is zero.
    #[error("{operand}: {dim} is zero")]
    ZeroDim {
        /// The tensor.
        operand: Operand,
        /// The empty dimension.
        dim: Dim,
    },
    /// The problem is too large for the kernels' index math or the launch grid.
    #[error("{operand}: {what} exceeds the kernel limit of {limit}")]
    TooLarge {
        /// The tensor.
        operand: Operand,
        /// What overflowed.
        what: &'static str,
        /// The limit it exceeded.
        limit: u64,
    },
    /// The buffer is shorter than the layout addresses.
    #[error("{operand}: the layout needs {required} elements, the buffer holds {len}")]
    BufferTooSmall {
        /// The tensor.
        operand: Operand,
        /// Elements the layout reaches.
        required: usize,
        /// Elements in the buffer.
        len: usize,
    },
    /// An output's memory overlaps an input's or the other output's.
    #[error("{output} overlaps {input} in device memory")]
    Aliasing {
        /// The output.
        output: Operand,
        /// The tensor it overlaps.
        input: Operand,
    },
    /// K and V have a head count that does not divide Q's (GQA/MQA needs Q heads to be a multiple
    /// of K/V heads).
    #[error("Q has {q_heads} heads, not a multiple of K/V's {kv_heads}")]
    HeadsNotDivisible {
        /// Query heads.
        q_heads: usize,
        /// Key/value heads.
        kv_heads: usize,
    },
    /// [`KernelFamily::Wgmma`](crate::KernelFamily::Wgmma) was asked for a call that the Hopper
    /// kernels cannot serve.
    #[error("the Hopper (wgmma) kernels cannot run this call: {reason}")]
    KernelFamilyUnavailable {
        /// Why not.
        reason: &'static str,
    },
    /// No kernel of the call's kind (element type, head dimension, mask, score modifiers) has
    /// the forced tile shape.
    #[error("no kernel for this call with head_dim {head_dim}, {} query rows per CTA and {} keys per step", forced(.q_tile_rows), forced(.kv_tile_rows))]
    UnsupportedTile {
        /// The forced query rows per CTA, if forced.
        q_tile_rows: Option<usize>,
        /// The forced keys per step, if forced.
        kv_tile_rows: Option<usize>,
        /// The head dimension.
        head_dim: usize,
    },
    /// A 1-D argument (ALiBi slopes, offsets, lengths, a block table) has the wrong number of
    /// elements.
    #[error("{operand}: expected {expected}, got {actual} elements")]
    WrongLength {
        /// The argument.
        operand: Operand,
        /// What it must hold.
        expected: String,
        /// What it holds.
        actual: usize,
    },
    /// Varlen offsets that do not start at 0 or decrease somewhere.
    #[error("{operand}: offsets must start at 0 and never decrease (entry {index} is {value} after {previous})")]
    InvalidOffsets {
        /// Which offsets.
        operand: Operand,
        /// The first bad entry.
        index: usize,
        /// Its value.
        value: u32,
        /// The entry before it (0 for the first).
        previous: u32,
    },
    /// Appending would run a sequence's KV cache past its capacity.
    #[error("KV cache: sequence {sequence} holds {length} rows; {appending} more exceed the capacity {capacity}")]
    CacheFull {
        /// The sequence.
        sequence: usize,
        /// Rows it holds.
        length: u32,
        /// Rows to append.
        appending: usize,
        /// Rows it can hold.
        capacity: usize,
    },
    /// A paged KV cache's page size or block table is unusable.
    #[error("paged KV cache: {0}")]
    InvalidPaging(String),
    /// New K is given without new V or the other way round.
    #[error("KV cache: new keys and new values must be given together")]
    UnpairedAppend,
    /// The number of KV splits is out of range.
    #[error("num_splits {0} is out of range (1..={max}, or 0 for automatic)", max = crate::plan::MAX_KV_SPLITS)]
    InvalidSplits(usize),
    /// The softcap is negative, NaN or infinite (0 turns it off).
    #[error("the softcap {0} is not a finite number >= 0")]
    InvalidSoftcap(f32),
    /// A window side below −1 (−1 means unbounded).
    #[error("window ({left}, {right}): each side must be -1 (unbounded) or a key count >= 0")]
    InvalidWindow {
        /// Keys before the diagonal.
        left: i32,
        /// Keys after the diagonal.
        right: i32,
    },
    /// The softmax scale is not a finite positive number (the kernels fold it into the
    /// exponent and rely on it preserving the order of the scores).
    #[error("the softmax scale {0} is not a finite positive number")]
    InvalidScale(f32),
    /// The device is older than sm_80 (Ampere).
    #[error("compute capability {major}.{minor} is not supported: FlashCore needs 8.0 or newer")]
    UnsupportedDevice {
        /// Major compute capability.
        major: i32,
        /// Minor compute capability.
        minor: i32,
    },
    /// A kernel needs more shared memory than the device grants one block.
    #[error("kernel {kernel} needs {needed} bytes of shared memory; the device allows {available}")]
    SharedMemory {
        /// The kernel entry point.
        kernel: &'static str,
        /// Bytes it needs.
        needed: usize,
        /// Bytes the device allows per block.
        available: usize,
    },
    /// The calling thread's current CUDA context, or the stream's, is not the one the kernels
    /// were loaded into.
    #[error("the {what} is not the CUDA context FlashAttention was created in")]
    WrongContext {
        /// "current context" or "stream's context".
        what: &'static str,
    },
    /// A buffer is not device memory of FlashAttention's context (another device's or
    /// context's memory, host memory, or no allocation at all).
    #[error("{operand}: address {address:#x} is not device memory of FlashAttention's CUDA context")]
    ForeignMemory {
        /// The tensor.
        operand: Operand,
        /// Its device address.
        address: u64,
    },
    /// A tensor's extent runs past the end of the device allocation it starts in.
    #[error("{operand}: {bytes} bytes from {address:#x} run past the end of its device allocation")]
    OutsideAllocation {
        /// The tensor.
        operand: Operand,
        /// Its device address.
        address: u64,
        /// Bytes its layout reaches.
        bytes: u64,
    },
    /// The autotuning results could not be written to the cache.
    #[error("writing the tuning cache {path}: {source}")]
    TuningCache {
        /// The cache file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The CUDA driver reported an error through `cust` (for example a failed kernel, which
    /// makes the context unusable: a sticky error).
    #[error("CUDA error {0:?}: {0}")]
    Cuda(#[from] CudaError),
    /// A CUDA driver call made directly (a launch, an attribute) failed; `code` names the error.
    #[error("{call} failed: {code:?}")]
    Driver {
        /// The driver function.
        call: &'static str,
        /// The driver's result code, e.g. `CUDA_ERROR_LAUNCH_FAILED`.
        code: cust::sys::CUresult,
    },
}

/// `Ok` for `CUDA_SUCCESS`, else [`Error::Driver`] naming `call`.
pub(crate) fn driver(call: &'static str, code: cust::sys::CUresult) -> Result<()> {
    match code {
        cust::sys::CUresult::CUDA_SUCCESS => Ok(()),
        code => Err(Error::Driver { call, code }),
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A forced tile dimension in an error message: the number, or "any".
fn forced(rows: &Option<usize>) -> String {
    rows.map_or_else(|| "any".to_string(), |rows| rows.to_string())
}
