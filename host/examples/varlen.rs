//! A variable-length batch: three sequences of different lengths packed along the rows of
//! `[total, heads, head_dim]` tensors, as `flash_attn_varlen_func` takes them.
//! `cargo run --release -p flashcore --example varlen`

mod common;

use cust::prelude::*;
use flashcore::reference::{attention_f64, HostTensor};
use flashcore::{AttnTensor, AttnTensorMut, ForwardOptions, TensorLayout, VarlenBatch};
use half::f16;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (_context, stream, flash) = common::setup();
    let (heads, d) = (4, 64);
    let lengths = [300usize, 17, 1000];
    let cu_seqlens: Vec<u32> = std::iter::once(0)
        .chain(lengths.iter().scan(0u32, |end, &l| {
            *end += l as u32;
            Some(*end)
        }))
        .collect();
    let total = *cu_seqlens.last().unwrap() as usize;
    let layout = TensorLayout::thd(total, heads, d);
    let n = layout.required_len().unwrap();
    let (q, k, v) = (common::values(n, 1), common::values(n, 2), common::values(n, 3));
    let batch = VarlenBatch::new(&cu_seqlens, &cu_seqlens)?;
    let (dq, dk, dv) = (DeviceBuffer::from_slice(&q)?, DeviceBuffer::from_slice(&k)?, DeviceBuffer::from_slice(&v)?);
    let mut out = DeviceBuffer::from_slice(&vec![f16::ZERO; n])?;
    let options = ForwardOptions::new().causal(true);
    flash.forward_varlen(
        &stream,
        &AttnTensor::new(&dq, layout),
        &AttnTensor::new(&dk, layout),
        &AttnTensor::new(&dv, layout),
        &mut AttnTensorMut::new(&mut out, layout),
        None,
        &batch,
        &options,
    )?;
    stream.synchronize()?;
    let out = out.as_host_vec()?;
    for (b, &len) in lengths.iter().enumerate() {
        // Sequence b on its own, as a [1, heads, len, d] tensor inside the packed one.
        let start = cu_seqlens[b] as usize * heads * d;
        let seq = TensorLayout::new([1, heads, len, d], [0, d, heads * d, 1]);
        let reference = attention_f64(
            HostTensor::new(&q[start..], seq),
            HostTensor::new(&k[start..], seq),
            HostTensor::new(&v[start..], seq),
            &options,
        )?;
        let mut max_err = 0f64;
        for h in 0..heads {
            for s in 0..len {
                for i in 0..d {
                    let got = out[start + seq.offset(0, h, s, i)].to_f64();
                    max_err = max_err.max((got - reference.out[(h * len + s) * d + i]).abs());
                }
            }
        }
        println!("sequence {b} ({len} rows): max |out - f64 reference| = {max_err:.2e}");
    }
    Ok(())
}
