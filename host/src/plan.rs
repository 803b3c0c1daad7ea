//! Validation of a forward call and the launch it maps to. Pure host code: it needs no device,
//! so every check is tested on any machine, and nothing invalid reaches a launch.

use crate::abi::{AttentionParams, Strides};
use crate::error::{Dim, Error, Operand, Result};
use crate::kernels::{self, KernelInfo};
use crate::options::ForwardOptions;
use crate::tensor::TensorLayout;

/// Largest element offset inside one (batch, head) that the kernels' 32-bit row math allows.
pub const MAX_HEAD_SPAN: u64 = i32::MAX as u64;
/// Largest batch size (the grid's z dimension).
pub const MAX_BATCH: u64 = 65_535;
/// Largest number of heads (the grid's y dimension).
pub const MAX_HEADS: u64 = 65_535;

const F16_BYTES: u64 = 2;
const F32_BYTES: u64 = 4;
const CHUNK_BYTES: u64 = 16;

/// One f16 tensor argument as raw device memory: base address, buffer length and layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorArg {
    /// Device address of element `[0, 0, 0, 0]`.
    pub address: u64,
    /// Elements (f16) in the buffer starting at `address`.
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

/// A complete forward call, described by addresses: what [`plan`] checks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ForwardProblem {
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
    /// Causality and scale.
    pub options: ForwardOptions,
}

/// A validated launch: which kernel, its grid, block and shared memory, and its parameters.
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
}

/// Checks every argument of `problem` and returns the launch it maps to on a device with
/// `multiprocessors` SMs (which steers the tile choice, see [`kernels::select`]), or the first
/// error.
pub fn plan(problem: &ForwardProblem, multiprocessors: usize) -> Result<LaunchPlan> {
    let ForwardProblem { q, k, v, o, lse, options } = *problem;
    let tensors = [(Operand::Q, q), (Operand::K, k), (Operand::V, v), (Operand::O, o)];

    check_shapes(&q.layout, &k.layout, &v.layout, &options)?;
    check_dims(Operand::O, &o.layout)?;
    let [batch, heads, seq_q, head_dim] = q.layout.shape;
    let seq_k = k.layout.seq_len();
    check_shape(Operand::O, &o.layout, [batch, heads, seq_q, head_dim])?;
    let scale = options.scale_for(head_dim);
    if batch as u64 > MAX_BATCH {
        return Err(Error::TooLarge { operand: Operand::Q, what: "batch", limit: MAX_BATCH });
    }
    if heads as u64 > MAX_HEADS {
        return Err(Error::TooLarge { operand: Operand::Q, what: "heads", limit: MAX_HEADS });
    }

    let mut ranges = [(Operand::Q, 0u64, 0u64); 4];
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
        ranges[i] = (operand, t.address, byte_len(required as u64, F16_BYTES, operand)?);
    }
    let (_, o_start, o_bytes) = ranges[3];
    for &(input, start, bytes) in &ranges[..3] {
        if overlaps((o_start, o_bytes), (start, bytes)) {
            return Err(Error::Aliasing { output: Operand::O, input });
        }
    }

    let lse_address = match lse {
        None => 0,
        Some(lse) => {
            if lse.address % F32_BYTES != 0 {
                return Err(Error::MisalignedPointer {
                    operand: Operand::Lse,
                    address: lse.address,
                    alignment: F32_BYTES,
                });
            }
            let required = (batch as u64 * heads as u64).checked_mul(seq_q as u64).ok_or(Error::TooLarge {
                operand: Operand::Lse,
                what: "the element count",
                limit: u64::MAX,
            })?;
            if required > lse.len as u64 {
                return Err(Error::BufferTooSmall { operand: Operand::Lse, required: required as usize, len: lse.len });
            }
            let lse_range = (lse.address, byte_len(required, F32_BYTES, Operand::Lse)?);
            for (input, start, bytes) in ranges {
                if overlaps(lse_range, (start, bytes)) {
                    return Err(Error::Aliasing { output: Operand::Lse, input });
                }
            }
            lse.address
        }
    };

    let forced = options.forced_q_tile_rows();
    let softcap = options.softcap_value() > 0.0;
    let kernel = kernels::select(head_dim, options.is_masked(), softcap, batch * heads, seq_q, multiprocessors, forced)
        .ok_or(Error::UnsupportedTile { q_tile_rows: forced.unwrap_or(0), head_dim })?;
    let q_blocks = seq_q.div_ceil(kernel.tile.q_tile_rows);
    Ok(LaunchPlan {
        kernel,
        // seq_q fits in 31 bits (head span check), so q_blocks and the casts below do too.
        grid: (q_blocks as u32, heads as u32, batch as u32),
        block: kernel.tile.threads() as u32,
        smem_bytes: kernel.tile.smem_bytes() as u32,
        params: AttentionParams {
            q: q.address,
            k: k.address,
            v: v.address,
            o: o.address,
            lse: lse_address,
            q_strides: strides(&q.layout),
            k_strides: strides(&k.layout),
            v_strides: strides(&v.layout),
            o_strides: strides(&o.layout),
            seq_q: seq_q as u32,
            seq_k: seq_k as u32,
            heads: heads as u32,
            kv_group: (heads / k.layout.heads()) as u32,
            // Softcapped scores are already scaled (natural units): only log2(e) remains.
            scale_log2: if softcap { std::f32::consts::LOG2_E } else { scale * std::f32::consts::LOG2_E },
            softcap: options.softcap_value(),
            softcap_scale: if softcap { scale / options.softcap_value() } else { 0.0 },
            window_left: kernel_window(options.effective_window().0, seq_q, seq_k),
            window_right: kernel_window(options.effective_window().1, seq_q, seq_k),
        },
    })
}

/// Checks the inputs' shapes against each other and the options: no zero dimension, contiguous
/// head dimensions, a supported head dimension, K and V matching Q in batch and head dim and each
/// other in everything, Q heads a multiple of K/V heads (GQA/MQA), a finite positive scale.
/// Sequence lengths of Q and K/V may differ, causal or not (the causal mask is aligned to the
/// bottom-right corner).
pub fn check_shapes(q: &TensorLayout, k: &TensorLayout, v: &TensorLayout, options: &ForwardOptions) -> Result<()> {
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
    let scale = options.scale_for(head_dim);
    if !(scale.is_finite() && scale > 0.0) {
        return Err(Error::InvalidScale(scale));
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
        if size > 1 && stride % (CHUNK_BYTES / F16_BYTES) as usize != 0 {
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
