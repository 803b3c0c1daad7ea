//! Incremental decoding with a paged KV cache: a prompt is appended and attended to in one call,
//! then tokens one at a time (split-KV spreads each step's keys over the SMs), and the last step
//! is checked against the f64 reference. `cargo run --release -p flashcore --example kv_cache`

mod common;

use cust::prelude::*;
use flashcore::reference::{attention_f64, HostTensor};
use flashcore::{AttnTensor, AttnTensorMut, ForwardOptions, KvCache, TensorLayout};
use half::f16;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (_context, stream, flash) = common::setup();
    let (batch, heads, kv_heads, d, page_rows) = (2, 8, 2, 128, 256);
    // 4 pages per sequence from a pool of 8, in scattered order.
    let block_table = [5, 0, 7, 2, 1, 6, 3, 4];
    let mut cache = KvCache::<f16>::paged(batch, kv_heads, d, 8, page_rows, &block_table)?;
    let options = ForwardOptions::new().causal(true);
    let (mut keys, mut values) = (vec![Vec::new(); batch], vec![Vec::new(); batch]);
    let mut step = |rows: usize, seed: u32| -> Result<Vec<f16>, Box<dyn std::error::Error>> {
        let (lq, lkv) = (TensorLayout::bhsd(batch, heads, rows, d), TensorLayout::bhsd(batch, kv_heads, rows, d));
        let q = common::values(batch * heads * rows * d, seed);
        let (k, v) = (
            common::values(batch * kv_heads * rows * d, seed + 1),
            common::values(batch * kv_heads * rows * d, seed + 2),
        );
        for b in 0..batch {
            let r = b * kv_heads * rows * d..(b + 1) * kv_heads * rows * d;
            keys[b].push(k[r.clone()].to_vec());
            values[b].push(v[r].to_vec());
        }
        let (dq, dk, dv) =
            (DeviceBuffer::from_slice(&q)?, DeviceBuffer::from_slice(&k)?, DeviceBuffer::from_slice(&v)?);
        let mut out = DeviceBuffer::from_slice(&vec![f16::ZERO; q.len()])?;
        let (tk, tv) = (AttnTensor::new(&dk, lkv), AttnTensor::new(&dv, lkv));
        flash.forward_with_kvcache(
            &stream,
            &AttnTensor::new(&dq, lq),
            Some(&tk),
            Some(&tv),
            &mut cache,
            &mut AttnTensorMut::new(&mut out, lq),
            &options,
        )?;
        stream.synchronize()?;
        Ok([q, out.as_host_vec()?].concat())
    };
    step(700, 10)?;
    let mut last = Vec::new();
    for token in 0..20 {
        last = step(1, 100 + 3 * token)?;
    }
    println!("cache lengths after a 700-row prompt and 20 tokens: {:?}", cache.lengths());

    // The last step against the reference over each sequence's whole history.
    let (q, out) = last.split_at(batch * heads * d);
    let mut max_err = 0f64;
    for b in 0..batch {
        // History chunks are [kv_heads, rows, d]; gather them as [1, kv_heads, len, d].
        let len: usize = keys[b].iter().map(|c| c.len() / (kv_heads * d)).sum();
        let gather = |chunks: &[Vec<f16>]| -> Vec<f16> {
            let mut all = Vec::with_capacity(kv_heads * len * d);
            for h in 0..kv_heads {
                for c in chunks {
                    let rows = c.len() / (kv_heads * d);
                    all.extend_from_slice(&c[h * rows * d..(h + 1) * rows * d]);
                }
            }
            all
        };
        let (k, v) = (gather(&keys[b]), gather(&values[b]));
        let kv = TensorLayout::bhsd(1, kv_heads, len, d);
        let ql = TensorLayout::bhsd(1, heads, 1, d);
        let qb = &q[b * heads * d..(b + 1) * heads * d];
        let reference =
            attention_f64(HostTensor::new(qb, ql), HostTensor::new(&k, kv), HostTensor::new(&v, kv), &options)?;
        for (i, r) in reference.out.iter().enumerate() {
            max_err = max_err.max((out[b * heads * d + i].to_f64() - r).abs());
        }
    }
    println!("last decode step: max |out - f64 reference| = {max_err:.2e}");
    Ok(())
}
