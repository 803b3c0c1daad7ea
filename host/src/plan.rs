//! Validation of a forward call and the launch it maps to. Pure host code: it needs no device,
//! so every check is tested on any machine, and nothing invalid reaches a launch.

use crate::abi::{AppendParams, AttentionParams, CombineParams, Dtype, ExtendedParams, Strides, APPEND_THREADS};
use crate::error::{Dim, Error, Operand, Result};
use crate::kernels::{self, DeviceLimits, KernelInfo, KernelVariant};
use crate::options::ForwardOptions;
use crate::tensor::TensorLayout;

/// Largest element offset inside one (batch, head) that the kernels' 32-bit row math allows.
pub const MAX_HEAD_SPAN: u64 = i32::MAX as u64;
/// Largest batch size (the grid's z dimension).
pub const MAX_BATCH: u64 = 65_535;
/// Largest number of heads (the grid's y dimension).
pub const MAX_HEADS: u64 = 65_535;
/// Most CTAs that may share one query block's keys (split-KV).
pub const MAX_KV_SPLITS: usize = 128;

const ELEMENT_BYTES: u64 = 2;
const F32_BYTES: u64 = 4;
const CHUNK_BYTES: u64 = 16;

/// One f16/bf16 tensor argument as raw device memory: base address, buffer length and layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorArg {
    /// Device address of element `[0, 0, 0, 0]`.
    pub address: u64,
    /// Elements (16-bit) in the buffer starting at `address`.
    pub len: usize,
    /// The logical layout.
    pub layout: TensorLayout,
}

/// The optional f32 logsumexp output, `[batch, heads, seq_q]` contiguous.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LseArg {
    /// Device address of the first element.
    pub address: u64,
    /// Elements (f32) in the buffer.
    pub len: usize,
}

/// A variable-length batch: sequences packed along the rows of `[1, heads, total, head_dim]`
/// tensors, sequence `b` at rows `cu_seqlens[b]..cu_seqlens[b + 1]` (see
/// [`VarlenBatch`](crate::VarlenBatch), which builds and checks one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VarlenArg {
    /// Device address of the `batch + 1` u32 query offsets.
    pub cu_seqlens_q: u64,
    /// Device address of the `batch + 1` u32 key offsets.
    pub cu_seqlens_k: u64,
    /// Number of sequences.
    pub batch: usize,
    /// The longest query sequence.
    pub max_seqlen_q: usize,
    /// The longest key sequence.
    pub max_seqlen_k: usize,
    /// The last query offset: rows of Q and O in use.
    pub total_q: usize,
    /// The last key offset: rows of K and V in use.
    pub total_k: usize,
}

/// A complete forward call, described by addresses: what [`plan`] checks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ForwardProblem<'a> {
    /// Element type of Q, K, V and O.
    pub dtype: Dtype,
    /// Queries.
    pub q: TensorArg,
    /// Keys.
    pub k: TensorArg,
    /// Values.
    pub v: TensorArg,
    /// Output, shaped like Q.
    pub o: TensorArg,
    /// Optional logsumexp output.
    pub lse: Option<LseArg>,
    /// Variable-length batch, if any (the tensors are then `[1, heads, total, head_dim]`, and
    /// the logsumexp `[heads, total_q]`).
    pub varlen: Option<VarlenArg>,
    /// Causality, window, scale, softcap, ALiBi.
    pub options: ForwardOptions<'a>,
}

impl<'a> ForwardProblem<'a> {
    /// A fixed-length problem without logsumexp output.
    pub fn new(
        dtype: Dtype,
        q: TensorArg,
        k: TensorArg,
        v: TensorArg,
        o: TensorArg,
        options: ForwardOptions<'a>,
    ) -> Self {
        Self { dtype, q, k, v, o, lse: None, varlen: None, options }
    }
}

/// A validated attention launch: which kernel, its grid, block and shared memory, and its
/// parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LaunchPlan {
    /// The kernel configuration chosen.
    pub kernel: &'static KernelInfo,
    /// Grid: (query blocks, heads, batch).
    pub grid: (u32, u32, u32),
    /// Threads per CTA.
    pub block: u32,
    /// Dynamic shared memory per CTA in bytes.
    pub smem_bytes: u32,
    /// The kernel parameters.
    pub params: AttentionParams,
    /// The second parameter block, passed only to kernels that take it
    /// ([`KernelInfo::takes_extended_params`]).
    pub extended: ExtendedParams,
}

/// Checks every argument of `problem` and returns the launch it maps to on `device` (whose SM
/// count and shared memory steer the tile choice, see [`kernels::select`]), or the first error.
pub fn plan(problem: &ForwardProblem<'_>, device: &DeviceLimits) -> Result<LaunchPlan> {
    let ForwardProblem { dtype, q, k, v, o, lse, varlen, options } = *problem;
    check_shapes(&q.layout, &k.layout, &v.layout, &options)?;
    check_dims(Operand::O, &o.layout)?;
    let [batch, heads, seq_q, head_dim] = q.layout.shape;
    let seq_k = k.layout.seq_len();
    check_shape(Operand::O, &o.layout, [batch, heads, seq_q, head_dim])?;
    let ranges = check_tensors([(Operand::Q, q), (Operand::K, k), (Operand::V, v), (Operand::O, o)])?;
    check_no_overlap(Operand::O, ranges[3], &ranges[..3])?;
    if let Some(lse) = lse {
        // Fixed lengths: [batch, heads, seq_q]; varlen: [heads, total_q] (batch is 1 here).
        let range = check_f32_array(Operand::Lse, lse.address, lse.len, batch as u64 * heads as u64 * seq_q as u64)?;
        check_no_overlap(Operand::Lse, range, &ranges)?;
    }

    // The sequences: the tensors' batch, or the varlen offsets into their rows.
    let (sequences, max_q, max_k) = match varlen {
        None => (batch, seq_q, seq_k),
        Some(varlen) => {
            for (operand, layout) in [(Operand::Q, &q.layout), (Operand::K, &k.layout), (Operand::O, &o.layout)] {
                if layout.batch() != 1 {
                    return Err(Error::ShapeMismatch { operand, dim: Dim::Batch, expected: 1, actual: layout.batch() });
                }
            }
            for (operand, total, rows) in [(Operand::Q, varlen.total_q, seq_q), (Operand::K, varlen.total_k, seq_k)] {
                if total > rows {
                    return Err(Error::ShapeMismatch { operand, dim: Dim::SeqLen, expected: total, actual: rows });
                }
            }
            (varlen.batch, varlen.max_seqlen_q.max(1), varlen.max_seqlen_k)
        }
    };
    if sequences as u64 > MAX_BATCH {
        return Err(Error::TooLarge { operand: Operand::Q, what: "batch", limit: MAX_BATCH });
    }
    if heads as u64 > MAX_HEADS {
        return Err(Error::TooLarge { operand: Operand::Q, what: "heads", limit: MAX_HEADS });
    }
    let alibi_batch_stride = check_alibi(&options, sequences, heads)?;

    let kernel = select_kernel(dtype, &options, head_dim, varlen.is_some(), sequences * heads, max_q, device)?;
    let (mut params, mut extended) = attention_params(&options, kernel, head_dim);
    params.q = q.address;
    params.k = k.address;
    params.v = v.address;
    params.o = o.address;
    params.q_strides = strides(&q.layout);
    params.k_strides = strides(&k.layout);
    params.v_strides = strides(&v.layout);
    params.o_strides = strides(&o.layout);
    params.seq_q = max_q as u32;
    params.seq_k = max_k as u32;
    extended.batch = sequences as u32;
    params.heads = heads as u32;
    params.kv_group = (heads / k.layout.heads()) as u32;
    params.window_left = kernel_window(options.effective_window().0, max_q, max_k);
    params.window_right = kernel_window(options.effective_window().1, max_q, max_k);
    extended.alibi_batch_stride = alibi_batch_stride;
    // seq_q is below 2^31 (head span check), so these fit in u64 math.
    extended.lse_strides = Strides { batch: (heads * seq_q) as u64, head: seq_q as u64, row: 1 };
    if let Some(lse) = lse {
        params.lse = lse.address;
    }
    if let Some(varlen) = varlen {
        extended.cu_seqlens_q = varlen.cu_seqlens_q;
        extended.cu_seqlens_k = varlen.cu_seqlens_k;
        // Sequences are found through the offsets, not the batch stride.
        for s in [&mut params.q_strides, &mut params.k_strides, &mut params.v_strides, &mut params.o_strides] {
            s.batch = 0;
        }
        extended.lse_strides.batch = 0;
    }
    Ok(LaunchPlan {
        kernel,
        grid: (max_q.div_ceil(kernel.tile.q_tile_rows) as u32, heads as u32, sequences as u32),
        block: kernel.tile.threads() as u32,
        smem_bytes: kernel.tile.smem_bytes() as u32,
        params,
        extended,
    })
}

/// The kernel for the options (masked, score modifiers, forced tile shape) and the problem size.
fn select_kernel(
    dtype: Dtype,
    options: &ForwardOptions<'_>,
    head_dim: usize,
    varlen: bool,
    batch_heads: usize,
    seq_q: usize,
    device: &DeviceLimits,
) -> Result<&'static KernelInfo> {
    let variant = KernelVariant::for_call(dtype, head_dim, options, varlen);
    let (q_tile_rows, kv_tile_rows) = (options.forced_q_tile_rows(), options.forced_kv_tile_rows());
    kernels::select(variant, batch_heads, seq_q, device, q_tile_rows, kv_tile_rows).ok_or(Error::UnsupportedTile {
        q_tile_rows,
        kv_tile_rows,
        head_dim,
    })
}

/// Parameters that follow from the options alone; every address, stride and length is 0.
fn attention_params(
    options: &ForwardOptions<'_>,
    kernel: &KernelInfo,
    head_dim: usize,
) -> (AttentionParams, ExtendedParams) {
    let scale = options.scale_for(head_dim);
    let softcap = options.softcap_value() > 0.0;
    let zero = Strides::default();
    let params = AttentionParams {
        q: 0,
        k: 0,
        v: 0,
        o: 0,
        lse: 0,
        q_strides: zero,
        k_strides: zero,
        v_strides: zero,
        o_strides: zero,
        seq_q: 0,
        seq_k: 0,
        heads: 0,
        kv_group: 1,
        // Softcapped scores are already scaled (natural units): only log2(e) remains.
        scale_log2: if softcap { std::f32::consts::LOG2_E } else { scale * std::f32::consts::LOG2_E },
        window_left: -1,
        window_right: -1,
    };
    let extended = ExtendedParams {
        alibi_slopes: if kernel.score_mods { options.alibi().map_or(0, |a| a.address) } else { 0 },
        softcap: options.softcap_value(),
        softcap_scale: if softcap { scale / options.softcap_value() } else { 0.0 },
        // The bias is added to raw scores, which the softmax then multiplies by the scale.
        alibi_scale: if softcap { 1.0 } else { 1.0 / scale },
        ..ExtendedParams::NONE
    };
    (params, extended)
}

/// ALiBi slopes must be 4-byte aligned and number `heads` (shared by all sequences: batch
/// stride 0) or `batch · heads` (batch stride `heads`).
fn check_alibi(options: &ForwardOptions<'_>, batch: usize, heads: usize) -> Result<u32> {
    let Some(slopes) = options.alibi() else { return Ok(0) };
    check_f32_array(Operand::AlibiSlopes, slopes.address, slopes.len, slopes.len as u64)?;
    if slopes.len == heads {
        Ok(0)
    } else if slopes.len == batch * heads {
        Ok(heads as u32)
    } else {
        Err(Error::WrongLength {
            operand: Operand::AlibiSlopes,
            expected: format!("heads ({heads}) or batch x heads ({})", batch * heads),
            actual: slopes.len,
        })
    }
}

/// Per tensor: 16-byte alignment, the layout inside the buffer, the 32-bit head span. Returns
/// each tensor's byte range.
fn check_tensors<const N: usize>(tensors: [(Operand, TensorArg); N]) -> Result<[ByteRange; N]> {
    let mut ranges = [(Operand::Q, 0u64, 0u64); N];
    for (i, (operand, t)) in tensors.into_iter().enumerate() {
        check_alignment(operand, &t)?;
        let required = t.layout.required_len().ok_or(Error::TooLarge {
            operand,
            what: "the element count",
            limit: usize::MAX as u64,
        })?;
        if required > t.len {
            return Err(Error::BufferTooSmall { operand, required, len: t.len });
        }
        check_head_span(operand, &t.layout)?;
        ranges[i] = (operand, t.address, byte_len(required as u64, ELEMENT_BYTES, operand)?);
    }
    Ok(ranges)
}

/// An f32 (or u32) array of at least `required` elements at a 4-byte aligned address; returns its
/// byte range.
fn check_f32_array(operand: Operand, address: u64, len: usize, required: u64) -> Result<ByteRange> {
    if address % F32_BYTES != 0 {
        return Err(Error::MisalignedPointer { operand, address, alignment: F32_BYTES });
    }
    if required > len as u64 {
        return Err(Error::BufferTooSmall { operand, required: required as usize, len });
    }
    Ok((operand, address, byte_len(required, F32_BYTES, operand)?))
}

/// An output's bytes must not overlap any of `others`.
fn check_no_overlap(output: Operand, range: ByteRange, others: &[ByteRange]) -> Result<()> {
    match others.iter().find(|other| other.0 != output && overlaps((range.1, range.2), (other.1, other.2))) {
        Some(&(input, _, _)) => Err(Error::Aliasing { output, input }),
        None => Ok(()),
    }
}

/// An argument's device bytes: (which, start, length).
type ByteRange = (Operand, u64, u64);

/// Checks the inputs' shapes against each other and the options: no zero dimension, contiguous
/// head dimensions, a supported head dimension, K and V matching Q in batch and head dim and each
/// other in everything, Q heads a multiple of K/V heads (GQA/MQA), a finite positive scale.
/// Sequence lengths of Q and K/V may differ, causal or not (the causal mask is aligned to the
/// bottom-right corner).
pub fn check_shapes(q: &TensorLayout, k: &TensorLayout, v: &TensorLayout, options: &ForwardOptions<'_>) -> Result<()> {
    for (operand, layout) in [(Operand::Q, q), (Operand::K, k), (Operand::V, v)] {
        check_dims(operand, layout)?;
    }
    let [batch, heads, _, head_dim] = q.shape;
    if !kernels::SUPPORTED_HEAD_DIMS.contains(&head_dim) {
        return Err(Error::UnsupportedHeadDim(head_dim));
    }
    let [_, kv_heads, seq_k, _] = k.shape;
    check_shape(Operand::K, k, [batch, kv_heads, seq_k, head_dim])?;
    check_shape(Operand::V, v, [batch, kv_heads, seq_k, head_dim])?;
    if heads % kv_heads != 0 {
        return Err(Error::HeadsNotDivisible { q_heads: heads, kv_heads });
    }
    check_options(options, head_dim)
}

/// Scale, window, softcap and split count of the options.
fn check_options(options: &ForwardOptions<'_>, head_dim: usize) -> Result<()> {
    let scale = options.scale_for(head_dim);
    if !(scale.is_finite() && scale > 0.0) {
        return Err(Error::InvalidScale(scale));
    }
    if options.num_splits_value() > MAX_KV_SPLITS {
        return Err(Error::InvalidSplits(options.num_splits_value()));
    }
    let (left, right) = options.window_size();
    if left < -1 || right < -1 {
        return Err(Error::InvalidWindow { left, right });
    }
    let cap = options.softcap_value();
    if !(cap.is_finite() && cap >= 0.0) {
        return Err(Error::InvalidSoftcap(cap));
    }
    Ok(())
}

/// A window side as the kernels take it: −1 stays unbounded; anything past `seq_q + seq_k`
/// already covers every key, so it is capped there (which keeps the kernels' 32-bit window
/// arithmetic far from overflow).
fn kernel_window(side: i32, seq_q: usize, seq_k: usize) -> i32 {
    if side < 0 {
        -1
    } else {
        side.min((seq_q + seq_k) as i32)
    }
}

const DIMS: [Dim; 4] = [Dim::Batch, Dim::Heads, Dim::SeqLen, Dim::HeadDim];

fn check_dims(operand: Operand, layout: &TensorLayout) -> Result<()> {
    if let Some(i) = layout.shape.iter().position(|&n| n == 0) {
        return Err(Error::ZeroDim { operand, dim: DIMS[i] });
    }
    if layout.strides[3] != 1 {
        return Err(Error::HeadDimNotContiguous { operand, stride: layout.strides[3] });
    }
    Ok(())
}

fn check_shape(operand: Operand, layout: &TensorLayout, expected: [usize; 4]) -> Result<()> {
    for ((dim, &actual), expected) in DIMS.into_iter().zip(&layout.shape).zip(expected) {
        if actual != expected {
            return Err(Error::ShapeMismatch { operand, dim, expected, actual });
        }
    }
    Ok(())
}

/// Base address and every stride that is used (dimension larger than 1) must be 16-byte aligned.
fn check_alignment(operand: Operand, t: &TensorArg) -> Result<()> {
    if t.address % CHUNK_BYTES != 0 {
        return Err(Error::MisalignedPointer { operand, address: t.address, alignment: CHUNK_BYTES });
    }
    // The head dimension's stride is 1 (checked earlier); the other three must be aligned.
    let outer = DIMS.into_iter().zip(t.layout.shape).zip(t.layout.strides).take(3);
    for ((dim, size), stride) in outer {
        if size > 1 && stride % (CHUNK_BYTES / ELEMENT_BYTES) as usize != 0 {
            return Err(Error::MisalignedStride { operand, dim, stride });
        }
    }
    Ok(())
}

/// The kernels index inside one (batch, head) with 32-bit math.
fn check_head_span(operand: Operand, layout: &TensorLayout) -> Result<()> {
    let span = (layout.seq_len() as u64 - 1)
        .checked_mul(layout.strides[2] as u64)
        .and_then(|rows| rows.checked_add(layout.head_dim() as u64));
    match span {
        Some(span) if span <= MAX_HEAD_SPAN => Ok(()),
        _ => Err(Error::TooLarge { operand, what: "the element span of one head", limit: MAX_HEAD_SPAN }),
    }
}

fn byte_len(elements: u64, element_bytes: u64, operand: Operand) -> Result<u64> {
    elements.checked_mul(element_bytes).ok_or(Error::TooLarge { operand, what: "the byte size", limit: u64::MAX })
}

/// Whether the byte ranges `[start, start + len)` intersect (empty ranges never do).
fn overlaps((a, a_len): (u64, u64), (b, b_len): (u64, u64)) -> bool {
    a_len > 0 && b_len > 0 && a < b.saturating_add(b_len) && b < a.saturating_add(a_len)
}

fn strides(layout: &TensorLayout) -> Strides {
    Strides { batch: layout.strides[0] as u64, head: layout.strides[1] as u64, row: layout.strides[2] as u64 }
}

/// A KV cache as the kernels see it. [`KvCache`](crate::KvCache) builds it from memory it owns
/// and has checked, so [`plan_kv_cache`] trusts its layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheArg {
    /// Device address of the key cache.
    pub k: u64,
    /// Device address of the value cache.
    pub v: u64,
    /// Bytes of each of the two caches.
    pub bytes: u64,
    /// Element strides: per sequence (contiguous) or per page (paged), per head, per row.
    pub strides: Strides,
    /// Sequences.
    pub batch: usize,
    /// K/V heads.
    pub kv_heads: usize,
    /// Head dimension.
    pub head_dim: usize,
    /// Rows each sequence can hold.
    pub capacity: usize,
    /// Device address of the `batch` u32 current lengths.
    pub lengths: u64,
    /// Device address of `batch` u32 lengths the append writes (a second buffer, so that no
    /// kernel of the call writes what another reads).
    pub next_lengths: u64,
    /// Paged: device address of the `[batch, block_table_stride]` u32 block table, else 0.
    pub block_table: u64,
    /// Paged: pages per sequence.
    pub block_table_stride: usize,
    /// Paged: rows per page.
    pub page_rows: usize,
}

/// A KV-cache forward call: optionally append `k_new`/`v_new` at each sequence's current
/// length, then attend from `q` over the cache's valid rows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KvCacheProblem<'a> {
    /// Element type.
    pub dtype: Dtype,
    /// Queries, `[batch, heads, seq_q, head_dim]`.
    pub q: TensorArg,
    /// Output, shaped like Q.
    pub o: TensorArg,
    /// Keys to append, `[batch, kv_heads, rows, head_dim]`.
    pub k_new: Option<TensorArg>,
    /// Values to append, shaped like `k_new`.
    pub v_new: Option<TensorArg>,
    /// The cache.
    pub cache: CacheArg,
    /// The cache's current lengths (the host's copy of `cache.lengths`).
    pub lengths: &'a [u32],
    /// Options (`num_splits` included).
    pub options: ForwardOptions<'a>,
}

/// The launches of a KV-cache call, in order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct KvCachePlan {
    /// The append kernel's grid and parameters (when rows are appended).
    pub append: Option<((u32, u32, u32), AppendParams)>,
    /// The attention kernel (with split-KV, it writes f32 partials to the scratch buffer).
    pub attention: LaunchPlan,
    /// The combine kernel's grid and parameters (split-KV only; one warp per CTA).
    pub combine: Option<((u32, u32, u32), CombineParams)>,
    /// f32 elements of scratch the split-KV launch needs (0 without).
    pub scratch_len: usize,
}

/// Checks a KV-cache call and returns its launches on `device`; `scratch` is the f32 scratch
/// buffer (address, elements) for split-KV partials. If [`KvCachePlan::scratch_len`] exceeds the
/// scratch given, grow it and plan again.
pub fn plan_kv_cache(
    problem: &KvCacheProblem<'_>,
    device: &DeviceLimits,
    scratch: (u64, usize),
) -> Result<KvCachePlan> {
    let KvCacheProblem { dtype, q, o, k_new, v_new, cache, lengths, options } = *problem;
    for (operand, layout) in [(Operand::Q, &q.layout), (Operand::O, &o.layout)] {
        check_dims(operand, layout)?;
    }
    let [batch, heads, seq_q, head_dim] = q.layout.shape;
    if !kernels::SUPPORTED_HEAD_DIMS.contains(&head_dim) {
        return Err(Error::UnsupportedHeadDim(head_dim));
    }
    check_options(&options, head_dim)?;
    check_shape(Operand::Q, &q.layout, [cache.batch, heads, seq_q, cache.head_dim])?;
    check_shape(Operand::O, &o.layout, [batch, heads, seq_q, head_dim])?;
    if heads % cache.kv_heads != 0 {
        return Err(Error::HeadsNotDivisible { q_heads: heads, kv_heads: cache.kv_heads });
    }
    if heads as u64 > MAX_HEADS {
        return Err(Error::TooLarge { operand: Operand::Q, what: "heads", limit: MAX_HEADS });
    }
    let appended = match (k_new, v_new) {
        (None, None) => None,
        (Some(k), Some(v)) => Some((k, v)),
        _ => return Err(Error::UnpairedAppend),
    };
    let rows = appended.map_or(0, |(k, _)| k.layout.seq_len());
    let mut ranges = vec![(Operand::Cache, cache.k, cache.bytes), (Operand::Cache, cache.v, cache.bytes)];
    ranges.extend(check_tensors([(Operand::Q, q), (Operand::O, o)])?);
    if let Some((k, v)) = appended {
        for (operand, t) in [(Operand::KNew, k), (Operand::VNew, v)] {
            check_dims(operand, &t.layout)?;
            check_shape(operand, &t.layout, [batch, cache.kv_heads, rows, head_dim])?;
        }
        let new = check_tensors([(Operand::KNew, k), (Operand::VNew, v)])?;
        // The append writes the caches: the new rows must not live in them.
        for range in new {
            check_no_overlap(Operand::Cache, (Operand::Cache, cache.k, cache.bytes), &[range])?;
            check_no_overlap(Operand::Cache, (Operand::Cache, cache.v, cache.bytes), &[range])?;
        }
        ranges.extend(new);
    }
    let o_range = ranges.iter().copied().find(|r| r.0 == Operand::O).unwrap_or((Operand::O, 0, 0));
    check_no_overlap(Operand::O, o_range, &ranges)?;
    for (sequence, &length) in lengths.iter().enumerate() {
        if length as usize + rows > cache.capacity {
            return Err(Error::CacheFull { sequence, length, appending: rows, capacity: cache.capacity });
        }
    }
    let alibi_batch_stride = check_alibi(&options, batch, heads)?;

    let kernel = select_kernel(dtype, &options, head_dim, true, batch * heads, seq_q, device)?;
    let q_blocks = seq_q.div_ceil(kernel.tile.q_tile_rows);
    let longest = lengths.iter().map(|&l| l as usize).max().unwrap_or(0) + rows;
    let splits = match options.num_splits_value() {
        0 => auto_splits(batch * heads * q_blocks, longest.div_ceil(kernel.tile.kv_tile_rows), device.multiprocessors),
        n => n,
    };

    let (mut params, mut extended) = attention_params(&options, kernel, head_dim);
    params.q = q.address;
    params.k = cache.k;
    params.v = cache.v;
    params.q_strides = strides(&q.layout);
    params.k_strides = cache.strides;
    params.v_strides = cache.strides;
    params.seq_q = seq_q as u32;
    params.seq_k = cache.capacity as u32;
    extended.batch = batch as u32;
    params.heads = heads as u32;
    params.kv_group = (heads / cache.kv_heads) as u32;
    params.window_left = kernel_window(options.effective_window().0, seq_q, cache.capacity);
    params.window_right = kernel_window(options.effective_window().1, seq_q, cache.capacity);
    extended.alibi_batch_stride = alibi_batch_stride;
    extended.seqused_k = cache.lengths;
    extended.seqused_k_add = rows as u32;
    extended.block_table = cache.block_table;
    extended.block_table_stride = cache.block_table_stride as u32;
    extended.page_rows = cache.page_rows as u32;
    extended.kv_splits = splits as u32;

    let rows_total = batch * heads * seq_q;
    let (mut scratch_len, mut combine) = (0, None);
    if splits > 1 {
        // Partials: O as [split, batch, heads, seq_q, head_dim], then the logsumexps as
        // [split, batch, heads, seq_q], all f32.
        let o_len = splits * rows_total * head_dim;
        scratch_len = o_len + splits * rows_total;
        let (o_partial, lse_partial) = (scratch.0, scratch.0 + o_len as u64 * F32_BYTES);
        params.o = o_partial;
        params.o_strides =
            Strides { batch: (heads * seq_q * head_dim) as u64, head: (seq_q * head_dim) as u64, row: head_dim as u64 };
        extended.o_split_stride = (rows_total * head_dim) as u64;
        params.lse = lse_partial;
        extended.lse_strides = Strides { batch: (heads * seq_q) as u64, head: seq_q as u64, row: 1 };
        extended.lse_split_stride = rows_total as u64;
        combine = Some((
            (seq_q as u32, heads as u32, batch as u32),
            CombineParams {
                o_partial,
                lse_partial,
                o: o.address,
                lse: 0,
                o_strides: strides(&o.layout),
                splits: splits as u32,
                batch: batch as u32,
                heads: heads as u32,
                seq_q: seq_q as u32,
                head_dim: head_dim as u32,
            },
        ));
    } else {
        params.o = o.address;
        params.o_strides = strides(&o.layout);
    }
    let append = appended.filter(|_| rows > 0).map(|(k, v)| {
        let chunks = rows * head_dim / 8;
        (
            (chunks.div_ceil(APPEND_THREADS) as u32, cache.kv_heads as u32, batch as u32),
            AppendParams {
                k_new: k.address,
                v_new: v.address,
                k_cache: cache.k,
                v_cache: cache.v,
                lengths: cache.lengths,
                next_lengths: cache.next_lengths,
                block_table: cache.block_table,
                k_new_strides: strides(&k.layout),
                v_new_strides: strides(&v.layout),
                cache_strides: cache.strides,
                rows: rows as u32,
                kv_heads: cache.kv_heads as u32,
                head_dim: head_dim as u32,
                capacity: cache.capacity as u32,
                block_table_stride: cache.block_table_stride as u32,
                page_rows: cache.page_rows as u32,
            },
        )
    });
    if scratch_len > scratch.1 {
        // The caller grows its scratch and plans again; nothing here is launched.
        params.o = 0;
    }
    Ok(KvCachePlan {
        append,
        attention: LaunchPlan {
            kernel,
            grid: ((q_blocks * splits) as u32, heads as u32, batch as u32),
            block: kernel.tile.threads() as u32,
            smem_bytes: kernel.tile.smem_bytes() as u32,
            params,
            extended,
        },
        combine,
        scratch_len,
    })
}

/// Split-KV for small grids: enough splits to give every SM about two CTAs, while each split
/// keeps at least two K/V tiles; none when the grid already fills the device.
pub fn auto_splits(ctas: usize, kv_tiles: usize, multiprocessors: usize) -> usize {
    if ctas == 0 || ctas >= multiprocessors {
        return 1;
    }
    (2 * multiprocessors / ctas).min(kv_tiles / 2).clamp(1, MAX_KV_SPLITS)
}
