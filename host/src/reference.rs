//! A CPU reference of the same function, for tests and for checking results on any machine.
//!
//! Straightforward three-pass softmax per query row, in f64 ([`attention_f64`]) or f32
//! ([`attention_f32`]). Slow (O(B·H·Sq·Sk·D) on one core): meant for test-sized problems.

use std::ops::{Add, Div, Mul, Sub};

use crate::error::{Error, Operand, Result};
use crate::options::ForwardOptions;
use crate::plan::check_shapes;
use crate::tensor::TensorLayout;

/// A host tensor: a slice viewed through a [`TensorLayout`].
#[derive(Clone, Copy, Debug)]
pub struct HostTensor<'a, T> {
    /// The elements.
    pub data: &'a [T],
    /// The layout.
    pub layout: TensorLayout,
}

impl<'a, T> HostTensor<'a, T> {
    /// Views `data` through `layout`.
    pub fn new(data: &'a [T], layout: TensorLayout) -> Self {
        Self { data, layout }
    }
}

/// Reference results.
#[derive(Clone, Debug, PartialEq)]
pub struct Reference<F> {
    /// The output, contiguous `[batch, heads, seq_q, head_dim]`.
    pub out: Vec<F>,
    /// The natural-log logsumexp of the scaled scores, contiguous `[batch, heads, seq_q]`.
    pub lse: Vec<F>,
}

/// Attention forward in f64 arithmetic.
pub fn attention_f64<T: Copy + Into<f64>>(
    q: HostTensor<'_, T>,
    k: HostTensor<'_, T>,
    v: HostTensor<'_, T>,
    options: &ForwardOptions<'_>,
) -> Result<Reference<f64>> {
    attention_with(q, k, v, options, None)
}

/// Attention forward in f64 arithmetic with ALiBi: `slopes` holds one slope per head (`heads`
/// values) or per sequence and head (`batch · heads`, batch-major), as
/// [`ForwardOptions::alibi_slopes`](crate::ForwardOptions::alibi_slopes) takes them on the device.
pub fn attention_f64_alibi<T: Copy + Into<f64>>(
    q: HostTensor<'_, T>,
    k: HostTensor<'_, T>,
    v: HostTensor<'_, T>,
    options: &ForwardOptions<'_>,
    slopes: &[f32],
) -> Result<Reference<f64>> {
    let heads = q.layout.heads();
    if slopes.len() != heads && slopes.len() != q.layout.batch() * heads {
        return Err(Error::WrongLength {
            operand: Operand::AlibiSlopes,
            expected: format!("heads ({heads}) or batch x heads"),
            actual: slopes.len(),
        });
    }
    attention_with(q, k, v, options, Some(slopes))
}

/// Attention forward in f32 arithmetic (inputs converted exactly through f64).
pub fn attention_f32<T: Copy + Into<f64>>(
    q: HostTensor<'_, T>,
    k: HostTensor<'_, T>,
    v: HostTensor<'_, T>,
    options: &ForwardOptions<'_>,
) -> Result<Reference<f32>> {
    attention_with(q, k, v, options, None)
}

/// The arithmetic the reference needs, for f32 and f64.
trait Real: Copy + PartialOrd + Add<Output = Self> + Sub<Output = Self> + Mul<Output = Self> + Div<Output = Self> {
    const ZERO: Self;
    const NEG_INFINITY: Self;
    fn of(x: f64) -> Self;
    fn exp(self) -> Self;
    fn ln(self) -> Self;
    fn tanh(self) -> Self;
}

macro_rules! impl_real {
    ($($t:ident),*) => { $(
        impl Real for $t {
            const ZERO: Self = 0.0;
            const NEG_INFINITY: Self = $t::NEG_INFINITY;
            fn of(x: f64) -> Self {
                x as $t
            }
            fn exp(self) -> Self {
                $t::exp(self)
            }
            fn ln(self) -> Self {
                $t::ln(self)
            }
            fn tanh(self) -> Self {
                $t::tanh(self)
            }
        }
    )* };
}
impl_real!(f32, f64);

fn attention_with<T: Copy + Into<f64>, F: Real>(
    q: HostTensor<'_, T>,
    k: HostTensor<'_, T>,
    v: HostTensor<'_, T>,
    options: &ForwardOptions<'_>,
    alibi: Option<&[f32]>,
) -> Result<Reference<F>> {
    check_shapes(&q.layout, &k.layout, &v.layout, options)?;
    for (operand, t) in [(Operand::Q, &q), (Operand::K, &k), (Operand::V, &v)] {
        let required = t.layout.required_len().unwrap_or(usize::MAX);
        if required > t.data.len() {
            return Err(Error::BufferTooSmall { operand, required, len: t.data.len() });
        }
    }
    let [batch, heads, seq_q, head_dim] = q.layout.shape;
    let [_, kv_heads, seq_k, _] = k.layout.shape;
    let group = heads / kv_heads;
    let scale = F::of(options.scale_for(head_dim) as f64);
    let cap = F::of(options.softcap_value() as f64);
    let at = |t: &HostTensor<'_, T>, b, h, s, d| F::of(t.data[t.layout.offset(b, h, s, d)].into());

    let mut out = Vec::with_capacity(batch * heads * seq_q * head_dim);
    let mut lse = Vec::with_capacity(batch * heads * seq_q);
    let mut scores = vec![F::ZERO; seq_k];
    for b in 0..batch {
        for h in 0..heads {
            let hk = h / group;
            let slope = alibi.map_or(0.0, |s| if s.len() == heads { s[h] } else { s[b * heads + h] }) as f64;
            for i in 0..seq_q {
                // Row i sees keys i + shift - left ..= i + shift + right (bottom-right aligned;
                // -1 unbounded; causal sets right = 0), clipped to the keys that exist.
                let (left, right) = options.effective_window();
                let diagonal = i as i64 + seq_k as i64 - seq_q as i64;
                let first = if left >= 0 { (diagonal - left as i64).max(0) } else { 0 };
                let end = if right >= 0 { (diagonal + right as i64 + 1).min(seq_k as i64) } else { seq_k as i64 };
                let (first, visible) = (first as usize, end.max(first) as usize);
                if visible == first {
                    // No key to attend to: output 0 and logsumexp -inf, as FlashAttention.
                    out.extend(std::iter::repeat_n(F::ZERO, head_dim));
                    lse.push(F::NEG_INFINITY);
                    continue;
                }
                let mut max = F::NEG_INFINITY;
                for (j, score) in scores.iter_mut().enumerate().take(visible).skip(first) {
                    let mut dot = F::ZERO;
                    for d in 0..head_dim {
                        dot = dot + at(&q, b, h, i, d) * at(&k, b, hk, j, d);
                    }
                    *score = dot * scale;
                    if cap > F::ZERO {
                        *score = cap * (*score / cap).tanh();
                    }
                    if slope != 0.0 {
                        *score = *score - F::of(slope * (j as f64 - diagonal as f64).abs());
                    }
                    if *score > max {
                        max = *score;
                    }
                }
                let mut sum = F::ZERO;
                for score in &mut scores[first..visible] {
                    *score = (*score - max).exp();
                    sum = sum + *score;
                }
                for d in 0..head_dim {
                    let mut acc = F::ZERO;
                    for (j, &p) in scores.iter().enumerate().take(visible).skip(first) {
                        acc = acc + p * at(&v, b, hk, j, d);
                    }
                    out.push(acc / sum);
                }
                lse.push(max + sum.ln());
            }
        }
    }
    Ok(Reference { out, lse })
}
