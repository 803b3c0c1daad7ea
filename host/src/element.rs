//! The element types FlashCore computes on.

use cust::memory::DeviceCopy;
use half::{bf16, f16};

use crate::abi::Dtype;

mod sealed {
    pub trait Sealed {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
}

/// A 16-bit floating-point element type of Q, K, V and O: [`struct@f16`] or [`struct@bf16`] (accumulation is
/// f32 either way). Sealed: the kernels exist for these two only.
pub trait Element: DeviceCopy + Copy + Default + Into<f64> + sealed::Sealed + Send + Sync + 'static {
    /// The kernels' name for the type.
    const DTYPE: Dtype;
    /// Rounds an f32 to the type (to nearest even).
    fn from_f32(x: f32) -> Self;
    /// A quiet NaN (for poisoning outputs in tests).
    const NAN: Self;
    /// The raw bits.
    fn to_bits(self) -> u16;
}

impl Element for f16 {
    const DTYPE: Dtype = Dtype::F16;
    const NAN: Self = f16::NAN;
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
    fn to_bits(self) -> u16 {
        f16::to_bits(self)
    }
}

impl Element for bf16 {
    const DTYPE: Dtype = Dtype::Bf16;
    const NAN: Self = bf16::NAN;
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
    fn to_bits(self) -> u16 {
        bf16::to_bits(self)
    }
}
