//! Shared by the examples: device setup, deterministic inputs, and the check against the CPU
//! reference. (Included with `mod common;`; not an example itself.)

#![allow(dead_code)] // each example uses part of this module

use cust::prelude::*;
use flashcore::reference::{attention_f64, attention_f64_alibi, HostTensor};
use flashcore::{AttnTensor, AttnTensorMut, Element, FlashAttention, ForwardOptions, TensorLayout};
use half::f16;

/// A CUDA context, a stream and the loaded kernels; exits with a message where no GPU is usable.
pub fn setup() -> (Context, Stream, FlashAttention) {
    let context = cust::quick_init().unwrap_or_else(|e| {
        eprintln!("this example needs an NVIDIA GPU (sm_80 or newer) and its driver: {e}");
        std::process::exit(2)
    });
    let stream = Stream::new(StreamFlags::NON_BLOCKING, None).expect("stream");
    let flash = FlashAttention::new().expect("loading FlashCore's kernels");
    (context, stream, flash)
}

/// `n` f16 values in [-1, 1) from a fixed sequence.
pub fn values(n: usize, seed: u32) -> Vec<f16> {
    values_of(n, seed)
}

/// `n` values of `T` in [-1, 1) from a fixed sequence.
pub fn values_of<T: Element>(n: usize, seed: u32) -> Vec<T> {
    (0..n as u32).map(|i| T::from_f32(((i.wrapping_mul(2_654_435_761) ^ seed) % 2000) as f32 / 1000.0 - 1.0)).collect()
}

/// Runs `options` on contiguous Q `[b, h, sq, d]` and K/V `[b, hk, sk, d]` and prints the largest
/// difference from the f64 CPU reference.
pub fn run_and_check(
    q_shape: [usize; 4],
    kv_shape: [usize; 4],
    options: ForwardOptions,
) -> Result<(), Box<dyn std::error::Error>> {
    run_and_check_typed::<f16>(q_shape, kv_shape, options, None)
}

/// As [`run_and_check`], for element type `T`, with ALiBi `slopes` (per head) when given.
pub fn run_and_check_typed<T: Element>(
    q_shape: [usize; 4],
    kv_shape: [usize; 4],
    options: ForwardOptions,
    slopes: Option<&[f32]>,
) -> Result<(), Box<dyn std::error::Error>> {
    let (_context, stream, flash) = setup();
    let d_slopes = DeviceBuffer::from_slice(slopes.unwrap_or(&[0.0]))?;
    let options = if slopes.is_some() { options.alibi_slopes(&d_slopes) } else { options };
    let [b, h, sq, d] = q_shape;
    let [_, hk, sk, _] = kv_shape;
    let (q_layout, kv_layout) = (TensorLayout::bhsd(b, h, sq, d), TensorLayout::bhsd(b, hk, sk, d));
    let (q, k, v): (Vec<T>, Vec<T>, Vec<T>) =
        (values_of(b * h * sq * d, 1), values_of(b * hk * sk * d, 2), values_of(b * hk * sk * d, 3));
    let (dq, dk, dv) = (DeviceBuffer::from_slice(&q)?, DeviceBuffer::from_slice(&k)?, DeviceBuffer::from_slice(&v)?);
    let mut out = DeviceBuffer::from_slice(&vec![T::default(); q.len()])?;
    let mut lse = DeviceBuffer::from_slice(&vec![0f32; b * h * sq])?;
    flash.forward_with_lse(
        &stream,
        &AttnTensor::new(&dq, q_layout),
        &AttnTensor::new(&dk, kv_layout),
        &AttnTensor::new(&dv, kv_layout),
        &mut AttnTensorMut::new(&mut out, q_layout),
        &mut lse,
        &options,
    )?;
    stream.synchronize()?;
    let out = out.as_host_vec()?;
    let (hq, hk, hv) = (HostTensor::new(&q, q_layout), HostTensor::new(&k, kv_layout), HostTensor::new(&v, kv_layout));
    let reference = match slopes {
        Some(slopes) => attention_f64_alibi(hq, hk, hv, &options, slopes)?,
        None => attention_f64(hq, hk, hv, &options)?,
    };
    let max_err = out.iter().zip(&reference.out).map(|(&o, r)| (o.into() - r).abs()).fold(0f64, f64::max);
    println!(
        "{:?} Q {q_shape:?}, K/V {kv_shape:?}, causal={} softcap={} alibi={}: max |out - f64 reference| = {max_err:.2e}",
        T::DTYPE,
        options.is_causal(),
        options.softcap_value(),
        slopes.is_some()
    );
    Ok(())
}
