//! Variable-length batches and KV-cache decoding (contiguous and paged caches, split-KV) against
//! the f64 reference, sequence by sequence. Needs a GPU: `#[ignore]`d, run with
//! `cargo test -- --include-ignored` (the GPU runner does).
//!
//! Outputs and logsumexps are poisoned (NaN) before each run; every element of every sequence is
//! checked; reruns must give identical bits.

use cust::memory::{CopyDestination, DeviceBuffer};
use flashcore::reference::{attention_f64, HostTensor, Reference};
use flashcore::{AttnTensor, AttnTensorMut, Element, Error, ForwardOptions, KvCache, TensorLayout, VarlenBatch};
use flashcore_tests::{normal, rng, Bar, Deviation, Gpu};
use half::{bf16, f16};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

/// The f64 reference of one sequence: q `[1, heads, len_q, d]`, k/v `[1, kv_heads, len_k, d]`,
/// read through `layout_of(len)`; None when it has no key (its rows are then 0, lse −∞).
fn reference<T: Element>(
    q: (&[T], TensorLayout),
    k: (&[T], TensorLayout),
    v: (&[T], TensorLayout),
    options: &ForwardOptions<'_>,
) -> Option<Reference<f64>> {
    if k.1.seq_len() == 0 {
        return None;
    }
    Some(
        attention_f64(HostTensor::new(q.0, q.1), HostTensor::new(k.0, k.1), HostTensor::new(v.0, v.1), options)
            .expect("reference"),
    )
}

/// Compares rows of one sequence: `out(h, s, d)` and `lse(h, s)` read the kernel's results.
#[allow(clippy::too_many_arguments)]
fn compare<T: Element>(
    what: &str,
    heads: usize,
    len_q: usize,
    head_dim: usize,
    expected: &Option<Reference<f64>>,
    out: impl Fn(usize, usize, usize) -> T,
    lse: impl Fn(usize, usize) -> Option<f32>,
    failures: &mut Vec<String>,
) {
    let n = heads * len_q * head_dim;
    let zeros = vec![0.0; n];
    let reference = expected.as_ref().map_or(&zeros, |r| &r.out);
    let bar = Bar::for_output::<T>(reference);
    let outputs = (0..heads).flat_map(|h| (0..len_q).flat_map(move |s| (0..head_dim).map(move |d| (h, s, d))));
    let dev = Deviation::of(outputs.map(|(h, s, d)| out(h, s, d).into()).zip(reference.iter().copied()));
    let lse_bad = (0..heads)
        .flat_map(|h| (0..len_q).map(move |s| (h, s)))
        .filter(|&(h, s)| {
            let expected = expected.as_ref().map_or(f64::NEG_INFINITY, |r| r.lse[h * len_q + s]);
            lse(h, s).is_some_and(|l| {
                if expected.is_finite() {
                    (l as f64 - expected).abs() > 1e-3
                } else {
                    l as f64 != expected
                }
            })
        })
        .count();
    let (max_abs, rel_l2, bad) = (dev.max_abs, dev.rel_l2, dev.non_finite + lse_bad);
    let pass = lse_bad == 0 && dev.within(bar);
    println!("  {what}: max_abs={max_abs:.2e} rel_l2={rel_l2:.2e} bad={bad} {}", if pass { "ok" } else { "FAIL" });
    if !pass {
        failures.push(format!("{what}: max_abs={max_abs:e} rel_l2={rel_l2:e} bad={bad} bar={bar:?}"));
    }
}

/// Offsets of sequences of the given lengths.
fn offsets(lengths: &[usize]) -> Vec<u32> {
    std::iter::once(0)
        .chain(lengths.iter().scan(0u32, |acc, &l| Some(*acc + l as u32).inspect(|&x| *acc = x)))
        .collect()
}

fn check_varlen<T: Element>(
    lens_q: &[usize],
    lens_k: &[usize],
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    options: ForwardOptions<'static>,
) {
    let gpu = Gpu::new();
    let mut rng = rng(&format!("varlen {:?} q {lens_q:?} k {lens_k:?} h {heads}/{kv_heads} d {head_dim}", T::DTYPE));
    let (cu_q, cu_k) = (offsets(lens_q), offsets(lens_k));
    let (total_q, total_k) = (*cu_q.last().unwrap() as usize, *cu_k.last().unwrap() as usize);
    let (lq, lk) = (TensorLayout::thd(total_q, heads, head_dim), TensorLayout::thd(total_k, kv_heads, head_dim));
    let q: Vec<T> = normal(&mut rng, lq.required_len().unwrap());
    let (k, v): (Vec<T>, Vec<T>) =
        (normal(&mut rng, lk.required_len().unwrap()), normal(&mut rng, lk.required_len().unwrap()));
    let batch = VarlenBatch::new(&cu_q, &cu_k).expect("valid offsets");
    let (dq, dk, dv) = (
        DeviceBuffer::from_slice(&q).unwrap(),
        DeviceBuffer::from_slice(&k).unwrap(),
        DeviceBuffer::from_slice(&v).unwrap(),
    );
    let mut d_o = DeviceBuffer::from_slice(&vec![T::NAN; q.len()]).unwrap();
    let mut d_lse = DeviceBuffer::from_slice(&vec![f32::NAN; heads * total_q]).unwrap();
    let mut run = || -> (Vec<T>, Vec<f32>) {
        d_o.copy_from(&vec![T::NAN; q.len()]).unwrap();
        d_lse.copy_from(&vec![f32::NAN; heads * total_q]).unwrap();
        gpu.flash
            .forward_varlen(
                &gpu.stream,
                &AttnTensor::new(&dq, lq),
                &AttnTensor::new(&dk, lk),
                &AttnTensor::new(&dv, lk),
                &mut AttnTensorMut::new(&mut d_o, lq),
                Some(&mut d_lse),
                &batch,
                &options,
            )
            .expect("forward_varlen");
        gpu.stream.synchronize().expect("kernel execution");
        (d_o.as_host_vec().unwrap(), d_lse.as_host_vec().unwrap())
    };
    let (out, lse) = run();
    let (out2, lse2) = run();
    let mut failures = Vec::new();
    for b in 0..lens_q.len() {
        let (q0, k0) = (cu_q[b] as usize, cu_k[b] as usize);
        fn seq<T>(t: &[T], start: usize, h: usize, len: usize, d: usize) -> (&[T], TensorLayout) {
            (&t[start * h * d..], TensorLayout::new([1, h, len, d], [0, d, h * d, 1]))
        }
        if lens_q[b] == 0 {
            continue;
        }
        let expected = reference(
            seq(&q, q0, heads, lens_q[b], head_dim),
            seq(&k, k0, kv_heads, lens_k[b], head_dim),
            seq(&v, k0, kv_heads, lens_k[b], head_dim),
            &options,
        );
        compare(
            &format!("sequence {b} (q {}, k {})", lens_q[b], lens_k[b]),
            heads,
            lens_q[b],
            head_dim,
            &expected,
            |h, s, d| out[lq.offset(0, h, q0 + s, d)],
            |h, s| Some(lse[h * total_q + q0 + s]),
            &mut failures,
        );
    }
    let identical = out.iter().map(|x| x.to_bits()).eq(out2.iter().map(|x| x.to_bits()))
        && lse.iter().map(|x| x.to_bits()).eq(lse2.iter().map(|x| x.to_bits()));
    assert!(identical, "reruns differ");
    assert!(failures.is_empty(), "failing sequences:\n{}", failures.join("\n"));
}

#[test]
#[ignore = "needs a CUDA GPU; run with --include-ignored"]
fn varlen_self_attention() {
    let lens = [1, 100, 0, 257, 64, 3];
    for causal in [false, true] {
        check_varlen::<f16>(&lens, &lens, 4, 4, 64, ForwardOptions::new().causal(causal));
    }
}

#[test]
#[ignore = "needs a CUDA GPU; run with --include-ignored"]
fn varlen_chunked_prefill_gqa_and_empty_keys() {
    // Fewer queries than keys (bottom-right causal), one sequence without keys (rows 0, lse -inf).
    check_varlen::<f16>(&[30, 200, 5, 17], &[100, 200, 300, 0], 4, 2, 128, ForwardOptions::new().causal(true));
    check_varlen::<bf16>(&[64, 129], &[64, 300], 2, 1, 96, ForwardOptions::new().window(32, 8));
    check_varlen::<f16>(&[70, 1, 150], &[70, 90, 150], 2, 2, 32, ForwardOptions::new().softcap(5.0));
    check_varlen::<bf16>(&[33, 100], &[33, 100], 2, 2, 256, ForwardOptions::new().causal(true));
}

#[test]
#[ignore = "needs a CUDA GPU; run with --include-ignored"]
fn varlen_rejects_bad_offsets() {
    let _gpu = Gpu::new();
    assert!(matches!(VarlenBatch::new(&[0, 5, 3], &[0, 5, 6]), Err(Error::InvalidOffsets { index: 2, .. })));
    assert!(matches!(VarlenBatch::new(&[1, 5], &[0, 5]), Err(Error::InvalidOffsets { index: 0, .. })));
    assert!(matches!(VarlenBatch::new(&[0, 5], &[0, 5, 6]), Err(Error::WrongLength { .. })));
    assert!(matches!(VarlenBatch::new(&[0], &[0]), Err(Error::WrongLength { .. })));
}

/// The host's model of one sequence's cache: K and V rows `[kv_heads][row][d]` as `[row][head][d]`.
#[derive(Clone, Default)]
struct HostCache<T> {
    k: Vec<T>,
    v: Vec<T>,
}

/// Decode steps against a cache: each step appends `rows` (for `rows > 0`) new K/V rows to every
/// sequence and attends from `rows` (or, without append, `1`) new queries; `rewind` sets the
/// lengths in between. Checks every step against the reference on the host's copy of the cache.
#[allow(clippy::too_many_arguments)]
fn check_kv_cache<T: Element>(
    cache: &mut KvCache<T>,
    rng: &mut StdRng,
    heads: usize,
    steps: &[Step],
    options: ForwardOptions<'static>,
    gpu: &Gpu,
) {
    let (batch, kv_heads, head_dim) = (cache.batch(), cache.kv_heads(), cache.head_dim());
    let row = kv_heads * head_dim;
    let mut host: Vec<HostCache<T>> = vec![HostCache::default(); batch];
    let mut failures = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let rows = match *step {
            Step::Rewind(ref lengths) => {
                cache.set_lengths(&gpu.stream, lengths).expect("set_lengths");
                for (h, &l) in host.iter_mut().zip(lengths) {
                    h.k.truncate(l as usize * row);
                    h.v.truncate(l as usize * row);
                }
                continue;
            }
            Step::Append(rows) => rows,
        };
        let seq_q = rows.max(1);
        let lq = TensorLayout::bhsd(batch, heads, seq_q, head_dim);
        let ln = TensorLayout::bshd(batch, rows, kv_heads, head_dim);
        let q: Vec<T> = normal(rng, lq.required_len().unwrap());
        let (k_new, v_new): (Vec<T>, Vec<T>) = (normal(rng, batch * rows * row), normal(rng, batch * rows * row));
        let dq = DeviceBuffer::from_slice(&q).unwrap();
        let (dk, dv) = (DeviceBuffer::from_slice(&k_new).unwrap(), DeviceBuffer::from_slice(&v_new).unwrap());
        let mut d_o = DeviceBuffer::from_slice(&vec![T::NAN; q.len()]).unwrap();
        let (tk, tv) = (AttnTensor::new(&dk, ln), AttnTensor::new(&dv, ln));
        let (k_arg, v_arg) = if rows > 0 { (Some(&tk), Some(&tv)) } else { (None, None) };
        gpu.flash
            .forward_with_kvcache(
                &gpu.stream,
                &AttnTensor::new(&dq, lq),
                k_arg,
                v_arg,
                cache,
                &mut AttnTensorMut::new(&mut d_o, lq),
                &options,
            )
            .expect("forward_with_kvcache");
        gpu.stream.synchronize().expect("kernel execution");
        let out = d_o.as_host_vec().unwrap();
        for (b, h) in host.iter_mut().enumerate() {
            let new = b * rows * row..(b + 1) * rows * row;
            h.k.extend_from_slice(&k_new[new.clone()]);
            h.v.extend_from_slice(&v_new[new]);
            let len = h.k.len() / row;
            assert_eq!(cache.lengths()[b] as usize, len, "host lengths after step {i}");
            let kv_layout = TensorLayout::bshd(1, len, kv_heads, head_dim);
            let q_layout = TensorLayout::new([1, heads, seq_q, head_dim], [0, seq_q * head_dim, head_dim, 1]);
            let expected = reference(
                (&q[b * heads * seq_q * head_dim..], q_layout),
                (&h.k, kv_layout),
                (&h.v, kv_layout),
                &options,
            );
            compare(
                &format!("step {i} sequence {b} (rows {rows}, keys {len})"),
                heads,
                seq_q,
                head_dim,
                &expected,
                |hh, s, d| out[lq.offset(b, hh, s, d)],
                |_, _| None,
                &mut failures,
            );
        }
    }
    assert!(failures.is_empty(), "failing steps:\n{}", failures.join("\n"));
}

/// One step of a decode test.
enum Step {
    /// Append this many rows (0: attend without appending).
    Append(usize),
    /// Set the lengths.
    Rewind(Vec<u32>),
}

fn decode_steps() -> Vec<Step> {
    use Step::*;
    vec![
        Append(100),
        Append(1),
        Append(1),
        Append(0),
        Append(7),
        Rewind(vec![108, 37, 0]),
        Append(1),
        Append(64),
        Append(1),
    ]
}

#[test]
#[ignore = "needs a CUDA GPU; run with --include-ignored"]
fn kv_cache_contiguous_with_and_without_split() {
    let gpu = Gpu::new();
    for (splits, causal) in [(1, true), (0, true), (7, false), (0, false)] {
        let mut rng = rng(&format!("kv cache contiguous splits {splits} causal {causal}"));
        let mut cache = KvCache::<f16>::new(3, 2, 300, 128).unwrap();
        let options = ForwardOptions::new().causal(causal).num_splits(splits);
        check_kv_cache(&mut cache, &mut rng, 4, &decode_steps(), options, &gpu);
    }
}

#[test]
#[ignore = "needs a CUDA GPU; run with --include-ignored"]
fn kv_cache_paged_shuffled_pages() {
    let gpu = Gpu::new();
    for (splits, head_dim) in [(0, 64), (1, 96), (5, 32)] {
        let mut rng = rng(&format!("kv cache paged splits {splits} d {head_dim}"));
        // 3 sequences x 3 pages of 128 rows, scattered over a pool of 12.
        let mut pool: Vec<u32> = (0..12).collect();
        pool.shuffle(&mut rng);
        let mut cache = KvCache::<bf16>::paged(3, 1, head_dim, 12, 128, &pool[..9]).unwrap();
        let options = ForwardOptions::new().causal(true).num_splits(splits);
        check_kv_cache(&mut cache, &mut rng, 2, &decode_steps(), options, &gpu);
    }
}

#[test]
#[ignore = "needs a CUDA GPU; run with --include-ignored"]
fn kv_cache_refuses_overflow_and_unpaired_appends() {
    let gpu = Gpu::new();
    let mut cache = KvCache::<f16>::new(1, 1, 64, 64).unwrap();
    let lq = TensorLayout::bhsd(1, 1, 65, 64);
    let buf = DeviceBuffer::from_slice(&vec![f16::ONE; lq.required_len().unwrap()]).unwrap();
    let mut out = DeviceBuffer::from_slice(&vec![f16::ZERO; lq.required_len().unwrap()]).unwrap();
    let t = AttnTensor::new(&buf, lq);
    let options = ForwardOptions::new();
    let mut o = AttnTensorMut::new(&mut out, lq);
    let e = gpu.flash.forward_with_kvcache(&gpu.stream, &t, Some(&t), Some(&t), &mut cache, &mut o, &options);
    assert!(matches!(e, Err(Error::CacheFull { appending: 65, capacity: 64, .. })), "{e:?}");
    let e = gpu.flash.forward_with_kvcache(&gpu.stream, &t, Some(&t), None, &mut cache, &mut o, &options);
    assert!(matches!(e, Err(Error::UnpairedAppend)), "{e:?}");
    assert_eq!(cache.lengths(), &[0]);
    assert!(matches!(KvCache::<f16>::paged(1, 1, 64, 4, 100, &[0]), Err(Error::InvalidPaging(_))));
    assert!(matches!(KvCache::<f16>::paged(1, 1, 64, 4, 64, &[4]), Err(Error::InvalidPaging(_))));
    assert!(matches!(KvCache::<f16>::new(1, 1, 64, 48), Err(Error::UnsupportedHeadDim(48))));
}
