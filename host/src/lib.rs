//! # FlashCore
//!
//! Fused attention (the FlashAttention-2 forward pass) for NVIDIA GPUs, written in Rust end to
//! end: the kernels are a Rust crate compiled to PTX by rustc's NVPTX backend, embedded in this
//! library at build time and launched through [`cust`].
//!
//! `O = softmax(Q·Kᵀ·scale [+ mask] [+ ALiBi])·V` in one kernel: f16 or bf16 inputs and output,
//! f32 accumulation on the tensor cores (`mma.sync.m16n8k16`), online softmax, K/V streamed
//! through a `cp.async` pipeline in shared memory. Head dimensions 32, 64, 96, 128 and 256;
//! causal, sliding-window or full attention; GQA/MQA; softcap; ALiBi; any sequence lengths
//! (Sq ≠ Sk); variable-length batches ([`VarlenBatch`]); KV-cache decoding with paging and
//! split-KV ([`KvCache`]); any strides with a contiguous head dimension.
//!
//! Start with [`FlashAttention`]; [`plan::plan`] validates a call without a GPU, and
//! [`mod@reference`] computes the same function on the CPU.
//!
//! Requirements: an NVIDIA GPU of compute capability 8.0 or newer (Ampere, Ada, Hopper) and its
//! driver. Building needs `rustup` (the kernels build with the nightly toolchain pinned in
//! `kernels-gpu/rust-toolchain.toml`) and a `libcuda.so` to link against (`CUDA_LIBRARY_PATH`).

#![warn(missing_docs)]

#[macro_use]
#[path = "../../kernels-gpu/src/abi.rs"]
pub mod abi;
mod element;
mod error;
mod flash;
pub mod hopper;
pub mod kernels;
mod kv_cache;
mod options;
pub mod plan;
pub mod reference;
mod register_caps;
mod tensor;
pub mod timing;
pub mod tuning;
mod varlen;

pub use abi::Dtype;
pub use element::Element;
pub use error::{Dim, Error, Operand, Result};
pub use flash::{FlashAttention, KernelResources};
pub use half::{bf16, f16};
pub use kernels::{DeviceLimits, TileShape, SUPPORTED_HEAD_DIMS};
pub use kv_cache::{KvCache, PAGE_ROWS_MULTIPLE};
pub use options::{ForwardOptions, KernelFamily, SlopesArg};
pub use tensor::{AttnTensor, AttnTensorMut, TensorLayout};
pub use varlen::VarlenBatch;

/// Floating-point operations of one forward call, as FlashAttention counts them:
/// `4·B·H·Sq·Sk·D` (two matrix products), halved when causal.
pub fn forward_flops(layout_q: &TensorLayout, seq_k: usize, causal: bool) -> f64 {
    let [b, h, s, d] = layout_q.shape.map(|x| x as f64);
    let flops = 4.0 * b * h * s * seq_k as f64 * d;
    if causal {
        flops / 2.0
    } else {
        flops
    }
}

/// The README's example compiles (rustdoc runs its code blocks as doctests).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
