//! Tensor layouts and borrowed device tensors.

use cust::memory::{DeviceCopy, DeviceSlice};
use half::f16;

/// Shape and element strides of a logical `[batch, heads, seq_len, head_dim]` tensor.
///
/// Any order in memory is allowed as long as the head dimension is contiguous (stride 1), so
/// `[B, H, S, D]` ([`TensorLayout::bhsd`]) and `[B, S, H, D]` ([`TensorLayout::bshd`]) both work
/// without copies, as do padded rows and heads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TensorLayout {
    /// Sizes: `[batch, heads, seq_len, head_dim]`.
    pub shape: [usize; 4],
    /// Element strides of the same four dimensions.
    pub strides: [usize; 4],
}

impl TensorLayout {
    /// A layout with explicit strides (elements) for `[batch, heads, seq_len, head_dim]`.
    pub const fn new(shape: [usize; 4], strides: [usize; 4]) -> Self {
        Self { shape, strides }
    }

    /// A contiguous `[batch, heads, seq_len, head_dim]` tensor.
    pub const fn bhsd(batch: usize, heads: usize, seq_len: usize, head_dim: usize) -> Self {
        Self::new([batch, heads, seq_len, head_dim], [heads * seq_len * head_dim, seq_len * head_dim, head_dim, 1])
    }

    /// A contiguous `[batch, seq_len, heads, head_dim]` tensor (the layout of
    /// `flash_attn_func`'s inputs).
    pub const fn bshd(batch: usize, seq_len: usize, heads: usize, head_dim: usize) -> Self {
        Self::new([batch, heads, seq_len, head_dim], [seq_len * heads * head_dim, head_dim, heads * head_dim, 1])
    }

    /// A packed variable-length tensor `[total, heads, head_dim]` (FlashAttention's varlen
    /// layout), as a `[1, heads, total, head_dim]` layout.
    pub const fn thd(total: usize, heads: usize, head_dim: usize) -> Self {
        Self::bshd(1, total, heads, head_dim)
    }

    /// Batch size.
    pub const fn batch(&self) -> usize {
        self.shape[0]
    }

    /// Number of heads.
    pub const fn heads(&self) -> usize {
        self.shape[1]
    }

    /// Sequence length.
    pub const fn seq_len(&self) -> usize {
        self.shape[2]
    }

    /// Head dimension.
    pub const fn head_dim(&self) -> usize {
        self.shape[3]
    }

    /// Element offset of `[b, h, s, d]`.
    pub const fn offset(&self, b: usize, h: usize, s: usize, d: usize) -> usize {
        b * self.strides[0] + h * self.strides[1] + s * self.strides[2] + d * self.strides[3]
    }

    /// Elements a buffer needs to hold every element of the layout (one past the largest
    /// offset), or `None` if that overflows `usize`. Zero for an empty shape.
    pub fn required_len(&self) -> Option<usize> {
        if self.shape.contains(&0) {
            return Some(0);
        }
        let mut last = 0usize;
        for (size, stride) in self.shape.iter().zip(self.strides) {
            last = last.checked_add((size - 1).checked_mul(stride)?)?;
        }
        last.checked_add(1)
    }
}

/// A borrowed device tensor: a slice of device memory viewed through a [`TensorLayout`].
#[derive(Clone, Copy, Debug)]
pub struct AttnTensor<'a, T: DeviceCopy = f16> {
    data: &'a DeviceSlice<T>,
    layout: TensorLayout,
}

impl<'a, T: DeviceCopy> AttnTensor<'a, T> {
    /// Views `data` through `layout`. Nothing is checked until the tensor is used.
    pub fn new(data: &'a DeviceSlice<T>, layout: TensorLayout) -> Self {
        Self { data, layout }
    }

    /// The device memory.
    pub fn data(&self) -> &'a DeviceSlice<T> {
        self.data
    }

    /// The layout.
    pub fn layout(&self) -> TensorLayout {
        self.layout
    }
}

/// A mutably borrowed device tensor (an output).
#[derive(Debug)]
pub struct AttnTensorMut<'a, T: DeviceCopy = f16> {
    data: &'a mut DeviceSlice<T>,
    layout: TensorLayout,
}

impl<'a, T: DeviceCopy> AttnTensorMut<'a, T> {
    /// Views `data` through `layout`. Nothing is checked until the tensor is used.
    pub fn new(data: &'a mut DeviceSlice<T>, layout: TensorLayout) -> Self {
        Self { data, layout }
    }

    /// The device memory.
    pub fn data(&self) -> &DeviceSlice<T> {
        self.data
    }

    /// The layout.
    pub fn layout(&self) -> TensorLayout {
        self.layout
    }
}
