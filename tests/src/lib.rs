//! Helpers shared by FlashCore's test suites: seeded random inputs, GPU setup, and comparison of
//! kernel output against the f64 reference.

use cust::context::Context;
use cust::prelude::*;
use flashcore::reference::{HostTensor, Reference};
use flashcore::{DeviceLimits, Element, FlashAttention, TensorLayout};
use half::f16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

/// The device the validation suites plan for: an H100/H200, 132 SMs with 228 KiB of shared
/// memory each (1 KiB reserved per CTA).
pub const H100: DeviceLimits =
    DeviceLimits { multiprocessors: 132, smem_per_multiprocessor: 228 * 1024, reserved_smem_per_cta: 1024 };

/// An RNG seeded from `FLASHCORE_TEST_SEED` if set (to replay a failure), else freshly; the seed
/// is printed so any failure can be replayed.
pub fn rng(test: &str) -> StdRng {
    let seed = std::env::var("FLASHCORE_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random::<u64>());
    println!("{test}: seed {seed} (replay with FLASHCORE_TEST_SEED={seed})");
    StdRng::seed_from_u64(seed)
}

/// `n` values drawn from N(0, 1), rounded to f16.
pub fn normal_f16(rng: &mut StdRng, n: usize) -> Vec<f16> {
    normal(rng, n)
}

/// `n` values drawn from N(0, 1), rounded to `T`.
pub fn normal<T: Element>(rng: &mut StdRng, n: usize) -> Vec<T> {
    (0..n).map(|_| T::from_f32(rng.sample::<f32, _>(StandardNormal))).collect()
}

/// A logical `[batch, heads, seq, dim]` tensor of random values, stored through `layout`
/// (elements outside the layout, such as padding, hold a NaN that must never be read).
pub fn fill_layout<T: Element>(values: &[T], shape: [usize; 4], layout: &TensorLayout) -> Vec<T> {
    let mut data = vec![T::NAN; layout.required_len().expect("test layouts fit in memory")];
    let [b_n, h_n, s_n, d_n] = shape;
    let mut i = 0;
    for b in 0..b_n {
        for h in 0..h_n {
            for s in 0..s_n {
                for d in 0..d_n {
                    data[layout.offset(b, h, s, d)] = values[i];
                    i += 1;
                }
            }
        }
    }
    data
}

/// The memory layouts every GPU case runs in: `[B,H,S,D]`, `[B,S,H,D]`, and `[B,H,S,D]` with
/// padding after each row and each head.
pub fn layouts(shape: [usize; 4]) -> Vec<(&'static str, TensorLayout)> {
    let [b, h, s, d] = shape;
    let row = d + 16;
    let head = s * row + 64;
    vec![
        ("bhsd", TensorLayout::bhsd(b, h, s, d)),
        ("bshd", TensorLayout::bshd(b, s, h, d)),
        ("padded", TensorLayout::new(shape, [h * head, head, row, 1])),
    ]
}

/// A contiguous host tensor of `values` in `[B,H,S,D]` order.
pub fn host_bhsd<T>(values: &[T], shape: [usize; 4]) -> HostTensor<'_, T> {
    let [b, h, s, d] = shape;
    HostTensor::new(values, TensorLayout::bhsd(b, h, s, d))
}

/// A context on device 0, a stream, and the loaded kernels.
pub struct Gpu {
    /// The loaded kernels.
    pub flash: FlashAttention,
    /// A non-blocking stream.
    pub stream: Stream,
    /// The device's primary context (make it current on other threads before using `flash`).
    pub context: Context,
}

impl Gpu {
    /// Sets up device 0. Panics (failing the test) when there is no usable GPU: GPU tests are
    /// `#[ignore]`d, so they only run when asked to.
    pub fn new() -> Self {
        let context =
            cust::quick_init().expect("GPU tests need a CUDA device (they are #[ignore]d on CPU-only machines)");
        let stream = Stream::new(StreamFlags::NON_BLOCKING, None).expect("stream");
        let flash = FlashAttention::new().expect("loading the FlashCore kernels");
        Self { flash, stream, context }
    }
}

impl Default for Gpu {
    fn default() -> Self {
        Self::new()
    }
}

/// How far a kernel result is from the reference.
#[derive(Clone, Copy, Debug)]
pub struct Deviation {
    /// Largest |out - ref|.
    pub max_abs: f64,
    /// ‖out − ref‖₂ / ‖ref‖₂.
    pub rel_l2: f64,
    /// Elements that are NaN or infinite.
    pub non_finite: usize,
}

impl Deviation {
    /// Whether it meets the project's bar: max abs ≤ 2e-3, relative L2 ≤ 1e-3, all finite.
    pub fn passes(&self) -> bool {
        self.within(Bar::FOUNDATION)
    }

    /// Whether it is within `bar` and all finite.
    pub fn within(&self, bar: Bar) -> bool {
        self.non_finite == 0 && self.max_abs <= bar.max_abs && self.rel_l2 <= bar.rel_l2
    }
}

/// Error limits against the f64 reference.
#[derive(Clone, Copy, Debug)]
pub struct Bar {
    /// Largest |out − ref|.
    pub max_abs: f64,
    /// Largest ‖out − ref‖₂ / ‖ref‖₂.
    pub rel_l2: f64,
}

impl Bar {
    /// The foundation's bar: max abs ≤ 2e-3, relative L2 ≤ 1e-3.
    pub const FOUNDATION: Bar = Bar { max_abs: 2e-3, rel_l2: 1e-3 };

    /// The bar for outputs of type `T`. For f16, the foundation's. bf16 keeps 8 significant bits:
    /// merely rounding the exact result to bf16 already costs a relative L2 error of about
    /// 1.5e-3 (above 1e-3) and up to 2^-9 of each value, and the algorithm rounds P to bf16
    /// once more before P·V (as FlashAttention does). So for bf16, as FlashAttention's own tests
    /// do against a bf16 implementation, twice the cost of one bf16 rounding of the exact result
    /// is allowed, plus the foundation's margins.
    pub fn for_output<T: Element>(reference: &[f64]) -> Bar {
        if T::DTYPE == flashcore::Dtype::F16 {
            return Bar::FOUNDATION;
        }
        let floor = Deviation::of(reference.iter().map(|&r| (T::from_f32(r as f32).into(), r)));
        Bar {
            max_abs: 2.0 * floor.max_abs + Bar::FOUNDATION.max_abs,
            rel_l2: 2.0 * floor.rel_l2 + Bar::FOUNDATION.rel_l2,
        }
    }
}

/// Compares every element of `out` (read through `layout`) with the contiguous reference.
pub fn deviation<T: Element>(out: &[T], layout: &TensorLayout, reference: &Reference<f64>) -> Deviation {
    let [b_n, h_n, s_n, d_n] = layout.shape;
    let outputs = (0..b_n).flat_map(move |b| {
        (0..h_n).flat_map(move |h| (0..s_n).flat_map(move |s| (0..d_n).map(move |d| layout.offset(b, h, s, d))))
    });
    Deviation::of(outputs.map(|i| out[i].into()).zip(reference.out.iter().copied()))
}

impl Deviation {
    /// The deviation of `(value, reference)` pairs. Relative L2 is against the reference's norm,
    /// or absolute where the reference is all zeros (rows that see no key).
    pub fn of(pairs: impl Iterator<Item = (f64, f64)>) -> Deviation {
        let (mut max_abs, mut err2, mut ref2, mut non_finite) = (0f64, 0f64, 0f64, 0usize);
        for (x, r) in pairs {
            if !x.is_finite() {
                non_finite += 1;
                continue;
            }
            max_abs = max_abs.max((x - r).abs());
            err2 += (x - r) * (x - r);
            ref2 += r * r;
        }
        let rel_l2 = if ref2 > 0.0 { (err2 / ref2).sqrt() } else { err2.sqrt() };
        Deviation { max_abs, rel_l2, non_finite }
    }
}

/// A random layout for a logical `[b, h, s, d]` tensor: `[B,H,S,D]`, `[B,S,H,D]`, or `[B,H,S,D]`
/// with random padding (multiples of 8 elements) after each row and each head.
pub fn random_layout(rng: &mut StdRng, shape: [usize; 4]) -> TensorLayout {
    let [b, h, s, d] = shape;
    match rng.random_range(0..3) {
        0 => TensorLayout::bhsd(b, h, s, d),
        1 => TensorLayout::bshd(b, s, h, d),
        _ => {
            let row = d + 8 * rng.random_range(0..4);
            let head = s * row + 8 * rng.random_range(0..4);
            TensorLayout::new(shape, [h * head + 8 * rng.random_range(0..3), head, row, 1])
        }
    }
}

/// Reads a `[B,H,S,D]`-logical tensor out of `data` through `layout`, contiguous.
pub fn gather<T: Copy>(data: &[T], layout: &TensorLayout) -> Vec<T> {
    let [b_n, h_n, s_n, d_n] = layout.shape;
    let mut out = Vec::with_capacity(b_n * h_n * s_n * d_n);
    for b in 0..b_n {
        for h in 0..h_n {
            for s in 0..s_n {
                for d in 0..d_n {
                    out.push(data[layout.offset(b, h, s, d)]);
                }
            }
        }
    }
    out
}
