//! The kernels against the f64 CPU reference on fresh N(0,1) inputs. Needs a GPU: `#[ignore]`d,
//! run with `cargo test -- --include-ignored` (the GPU runner does).
//!
//! Every case runs causal and non-causal, with every tile configuration, in three memory layouts; the output and logsumexp are
//! poisoned (NaN) before each run, every element is checked, padding must stay untouched, and a
//! second run must give identical bits.

use cust::memory::{CopyDestination, DeviceBuffer};
use flashcore::reference::{attention_f64, attention_f64_alibi};
use flashcore::{AttnTensor, AttnTensorMut, Dtype, Element, ForwardOptions, KernelFamily};
use flashcore_tests::{deviation, fill_layout, host_bhsd, layouts, normal, rng, Bar, Gpu};
use half::{bf16, f16};
use rand::Rng;

/// Largest |lse - ref| accepted (the logsumexp is f32 all the way).
const LSE_TOLERANCE: f64 = 1e-3;

fn check_shape(batch: usize, heads: usize, seq: usize, head_dim: usize) {
    check(batch, heads, seq, head_dim, None);
}

/// As `check_shape`, with a softmax scale other than the default when given.
fn check(batch: usize, heads: usize, seq: usize, head_dim: usize, scale: Option<f32>) {
    check_problem(Problem { scale, ..Problem::new(batch, heads, heads, seq, seq, head_dim) });
}

/// One problem: Q `[batch, heads, seq_q, head_dim]`, K/V `[batch, kv_heads, seq_k, head_dim]`.
struct Problem {
    batch: usize,
    heads: usize,
    kv_heads: usize,
    seq_q: usize,
    seq_k: usize,
    head_dim: usize,
    scale: Option<f32>,
    /// A sliding window `(left, right)`, applied with and without the causal mask.
    window: Option<(i32, i32)>,
    /// A softcap.
    softcap: Option<f32>,
    /// ALiBi: random slopes, per head (false) or per sequence and head (true).
    alibi: Option<bool>,
    /// Element type.
    dtype: Dtype,
}

impl Problem {
    /// Q `[batch, heads, seq_q, head_dim]`, K/V `[batch, kv_heads, seq_k, head_dim]`, default
    /// scale, no window, no softcap.
    fn new(batch: usize, heads: usize, kv_heads: usize, seq_q: usize, seq_k: usize, head_dim: usize) -> Self {
        Self {
            batch,
            heads,
            kv_heads,
            seq_q,
            seq_k,
            head_dim,
            scale: None,
            window: None,
            softcap: None,
            alibi: None,
            dtype: Dtype::F16,
        }
    }
}

fn check_problem(problem: Problem) {
    match problem.dtype {
        Dtype::F16 => check_typed::<f16>(problem),
        Dtype::Bf16 => check_typed::<bf16>(problem),
    }
}

fn check_typed<T: Element>(problem: Problem) {
    let Problem { batch, heads, kv_heads, seq_q: seq, seq_k, head_dim, scale, window, softcap, alibi, dtype } = problem;
    let gpu = Gpu::new();
    let mut rng = rng(&format!("attention {dtype:?} q {batch}x{heads}x{seq}x{head_dim} kv {kv_heads}x{seq_k}"));
    let shape = [batch, heads, seq, head_dim];
    let kv_shape = [batch, kv_heads, seq_k, head_dim];
    let (n, nk) = (batch * heads * seq * head_dim, batch * kv_heads * seq_k * head_dim);
    let (q, k, v): (Vec<T>, Vec<T>, Vec<T>) = (normal(&mut rng, n), normal(&mut rng, nk), normal(&mut rng, nk));
    // ALiBi slopes in the usual range (2^-8/H .. 1), random per head or per sequence and head.
    let slopes: Vec<f32> = match alibi {
        None => Vec::new(),
        Some(per_batch) => {
            let count = if per_batch { batch * heads } else { heads };
            (0..count).map(|_| 2f32.powf(-rng.random_range(0.0..8.0f32))).collect()
        }
    };
    let d_slopes = DeviceBuffer::from_slice(&slopes).unwrap();
    let mut failures = Vec::new();
    // Cases that ran the TMA variant of an mma.sync kernel (compute capability 9.0).
    let mut tma_cases = 0;
    for causal in [false, true] {
        let options = ForwardOptions::new().causal(causal);
        let options = scale.map_or(options, |s| options.softmax_scale(s));
        let options = window.map_or(options, |(l, r)| options.window(l, r));
        let options = softcap.map_or(options, |c| options.softcap(c));
        let options = if alibi.is_some() { options.alibi_slopes(&d_slopes) } else { options };
        let masked = options.is_masked();
        let (hq, hk, hv) = (host_bhsd(&q, shape), host_bhsd(&k, kv_shape), host_bhsd(&v, kv_shape));
        let reference = if alibi.is_some() {
            attention_f64_alibi(hq, hk, hv, &options, &slopes)
        } else {
            attention_f64(hq, hk, hv, &options)
        }
        .expect("reference");
        let bar = Bar::for_output::<T>(&reference.out);
        // Every kernel configuration for this element type and head dim (forced), in every layout.
        let tiles = flashcore::kernels::KernelVariant::for_call(T::DTYPE, head_dim, &options, false).kernels();
        let mut kernels: Vec<(String, ForwardOptions)> = tiles
            .map(|k| {
                let forced = options.q_tile_rows(k.tile.q_tile_rows).kv_tile_rows(k.tile.kv_tile_rows);
                (format!("tile={}", flashcore::TileShape::of(&k.tile)), forced)
            })
            .collect();
        // On compute capability 9.0, the Hopper kernel too (forced: an error if it cannot run).
        let hopper =
            flashcore::kernels::select_hopper(T::DTYPE, head_dim, masked).is_some() && !options.modifies_scores();
        if hopper && gpu.flash.has_hopper_kernels() {
            kernels.push(("hopper".to_string(), options.kernel_family(KernelFamily::Wgmma)));
        }
        let kv_layouts = layouts(kv_shape);
        let cases = kernels.iter().flat_map(|(kernel, options)| {
            layouts(shape).into_iter().zip(kv_layouts.clone()).map(move |(l, kl)| (kernel, *options, l, kl.1))
        });
        for (kernel, options, (name, layout), kv_layout) in cases {
            let dq = DeviceBuffer::from_slice(&fill_layout(&q, shape, &layout)).unwrap();
            let dk = DeviceBuffer::from_slice(&fill_layout(&k, kv_shape, &kv_layout)).unwrap();
            let dv = DeviceBuffer::from_slice(&fill_layout(&v, kv_shape, &kv_layout)).unwrap();
            let len = layout.required_len().unwrap();
            let poison = vec![T::NAN; len];
            let mut d_o = DeviceBuffer::from_slice(&poison).unwrap();
            let mut d_lse = DeviceBuffer::from_slice(&vec![f32::NAN; batch * heads * seq]).unwrap();

            let arg = |address: u64, len: usize, layout| flashcore::plan::TensorArg { address, len, layout };
            let problem = flashcore::plan::ForwardProblem::new(
                T::DTYPE,
                arg(dq.as_device_ptr().as_raw(), dq.len(), layout),
                arg(dk.as_device_ptr().as_raw(), dk.len(), kv_layout),
                arg(dv.as_device_ptr().as_raw(), dv.len(), kv_layout),
                arg(d_o.as_device_ptr().as_raw(), d_o.len(), layout),
                options,
            );
            let ran = gpu.flash.selected_kernel_name(&problem).expect("plan");
            tma_cases += ran.starts_with("attention_fwd_hopper_mma_") as usize;
            let run = |d_o: &mut DeviceBuffer<T>, d_lse: &mut DeviceBuffer<f32>| -> (Vec<T>, Vec<f32>) {
                d_o.copy_from(&poison).unwrap();
                d_lse.copy_from(&vec![f32::NAN; batch * heads * seq]).unwrap();
                gpu.flash
                    .forward_with_lse(
                        &gpu.stream,
                        &AttnTensor::new(&dq, layout),
                        &AttnTensor::new(&dk, kv_layout),
                        &AttnTensor::new(&dv, kv_layout),
                        &mut AttnTensorMut::new(d_o, layout),
                        d_lse,
                        &options,
                    )
                    .expect("forward");
                gpu.stream.synchronize().expect("kernel execution");
                let mut out = vec![T::default(); len];
                d_o.copy_to(&mut out).unwrap();
                let mut lse = vec![0f32; batch * heads * seq];
                d_lse.copy_to(&mut lse).unwrap();
                (out, lse)
            };
            let (out, lse) = run(&mut d_o, &mut d_lse);
            let (out2, lse2) = run(&mut d_o, &mut d_lse);

            let dev = deviation(&out, &layout, &reference);
            // Rows that see no key (causal, seq_q > seq_k) have logsumexp -inf on both sides.
            let lse_pairs = || lse.iter().zip(&reference.lse).map(|(&x, &r)| (x as f64, r));
            let lse_err = lse_pairs().filter(|(_, r)| r.is_finite()).map(|(x, r)| (x - r).abs()).fold(0f64, f64::max);
            let lse_ok = lse_pairs().all(|(x, r)| if r.is_finite() { x.is_finite() } else { x == r })
                && lse_err <= LSE_TOLERANCE;
            let written: Vec<bool> = {
                let mut w = vec![false; len];
                for b in 0..batch {
                    for h in 0..heads {
                        for s in 0..seq {
                            for d in 0..head_dim {
                                w[layout.offset(b, h, s, d)] = true;
                            }
                        }
                    }
                }
                w
            };
            let padding_intact = out.iter().zip(&written).all(|(x, &w)| w || x.to_bits() == T::NAN.to_bits());
            let same_bits = out.iter().map(|x| x.to_bits()).eq(out2.iter().map(|x| x.to_bits()))
                && lse.iter().map(|x| x.to_bits()).eq(lse2.iter().map(|x| x.to_bits()));
            println!(
                "  causal={causal:<5} {kernel:<15} {ran:<45} layout={name:<6} max_abs={:.2e} rel_l2={:.2e} non_finite={} lse_err={lse_err:.2e} \
                 padding_intact={padding_intact} rerun_identical={same_bits}",
                dev.max_abs, dev.rel_l2, dev.non_finite
            );
            if !(dev.within(bar) && lse_ok && padding_intact && same_bits) {
                failures.push(format!("causal={causal} {kernel} {ran} layout={name}: {dev:?} lse_err={lse_err:e} padding_intact={padding_intact} identical={same_bits}"));
            }
        }
    }
    assert!(failures.is_empty(), "failing cases:\n{}", failures.join("\n"));
    // Where TMA variants exist (plain head-dim-64 128-row tiles, forced above in every layout),
    // the checks above must have covered them.
    let tma_expected = gpu.flash.has_hopper_kernels()
        && flashcore::kernels::TMA_KERNELS.iter().any(|k| k.dtype == T::DTYPE && k.tile.head_dim == head_dim)
        && softcap.is_none()
        && alibi.is_none();
    assert!(!tma_expected || tma_cases > 0, "no case ran a TMA variant on a compute-capability-9.0 device");
}

macro_rules! gpu_cases {
    ($( $name:ident: ($b:expr, $h:expr, $s:expr, $d:expr), )*) => { $(
        #[test]
        #[ignore = "needs a CUDA GPU; run with --include-ignored"]
        fn $name() {
            check_shape($b, $h, $s, $d);
        }
    )* };
}

gpu_cases! {
    b1_h1_s32_d64: (1, 1, 32, 64),
    b1_h2_s64_d64: (1, 2, 64, 64),
    b1_h4_s128_d64: (1, 4, 128, 64),
    b1_h8_s512_d64: (1, 8, 512, 64),
    b4_h8_s256_d64: (4, 8, 256, 64),
    b2_h3_s1000_d64: (2, 3, 1000, 64),
    b1_h8_s512_d128: (1, 8, 512, 128),
    b2_h4_s777_d128: (2, 4, 777, 128),
    b1_h1_s1_d64: (1, 1, 1, 64),
    b3_h2_s65_d128: (3, 2, 65, 128),
    b1_h2_s300_d256: (1, 2, 300, 256),
    b2_h1_s33_d256: (2, 1, 33, 256),
}

#[test]
#[ignore = "needs a CUDA GPU; run with --include-ignored"]
fn custom_scale_b2_h4_s200_d64() {
    check(2, 4, 200, 64, Some(0.3));
}

#[test]
#[ignore = "needs a CUDA GPU; run with --include-ignored"]
fn custom_scale_b1_h2_s130_d128() {
    check(1, 2, 130, 128, Some(0.02));
}

#[test]
#[ignore = "needs a CUDA GPU; run with --include-ignored"]
fn gqa_8_query_heads_on_2_kv_heads() {
    check_problem(Problem::new(2, 8, 2, 300, 300, 64));
}

#[test]
#[ignore = "needs a CUDA GPU; run with --include-ignored"]
fn mqa_4_query_heads_on_1_kv_head() {
    check_problem(Problem::new(1, 4, 1, 200, 200, 128));
}

#[test]
#[ignore = "needs a CUDA GPU; run with --include-ignored"]
fn fewer_queries_than_keys_chunked_prefill() {
    check_problem(Problem::new(2, 2, 2, 100, 333, 64));
    check_problem(Problem::new(1, 4, 2, 1, 517, 128));
}

#[test]
#[ignore = "needs a CUDA GPU; run with --include-ignored"]
fn more_queries_than_keys_rows_without_keys() {
    check_problem(Problem::new(1, 2, 2, 300, 100, 128));
    check_problem(Problem::new(2, 2, 1, 200, 7, 64));
}

#[test]
#[ignore = "needs a CUDA GPU; run with --include-ignored"]
fn sliding_windows() {
    // Local attention (with and without the causal mask, which sets the right side to 0): rows
    // see a band of keys; tiles outside every row's band are skipped.
    for (window, seq_q, seq_k, head_dim) in
        [((32, 0), 300, 300, 64), ((48, 16), 257, 257, 128), ((-1, 8), 200, 200, 64), ((70, 5), 100, 333, 128)]
    {
        check_problem(Problem { window: Some(window), ..Problem::new(2, 2, 1, seq_q, seq_k, head_dim) });
    }
}

#[test]
#[ignore = "needs a CUDA GPU; run with --include-ignored"]
fn softcapped_scores() {
    // Caps that bite (scores of N(0,1) inputs reach ~±4 at scale 1/8, ±30 at scale 1) and one
    // that barely does; with and without masks.
    for (cap, scale, head_dim, window) in
        [(5.0, None, 64, None), (2.0, Some(1.0), 128, Some((40, 10))), (30.0, None, 64, None)]
    {
        check_problem(Problem { scale, window, softcap: Some(cap), ..Problem::new(2, 2, 2, 150, 150, head_dim) });
    }
}

#[test]
#[ignore = "needs a CUDA GPU; run with --include-ignored"]
fn head_dim_256_with_gqa_window_and_softcap() {
    check_problem(Problem { window: Some((64, 8)), ..Problem::new(1, 4, 2, 130, 200, 256) });
    check_problem(Problem { softcap: Some(10.0), ..Problem::new(1, 2, 1, 100, 100, 256) });
}

#[test]
#[ignore = "needs a CUDA GPU; run with --include-ignored"]
fn bf16_head_dims_64_128_256() {
    for (b, h, s, d) in [(1, 8, 512, 64), (2, 3, 1000, 64), (2, 4, 777, 128), (1, 2, 300, 256)] {
        check_problem(Problem { dtype: Dtype::Bf16, ..Problem::new(b, h, h, s, s, d) });
    }
}

#[test]
#[ignore = "needs a CUDA GPU; run with --include-ignored"]
fn bf16_with_gqa_window_and_softcap() {
    check_problem(Problem { dtype: Dtype::Bf16, window: Some((48, 16)), ..Problem::new(2, 4, 2, 257, 300, 128) });
    check_problem(Problem { dtype: Dtype::Bf16, softcap: Some(5.0), ..Problem::new(2, 2, 1, 150, 150, 64) });
}

#[test]
#[ignore = "needs a CUDA GPU; run with --include-ignored"]
fn head_dim_32() {
    for (b, h, s) in [(1, 1, 1), (2, 3, 300), (4, 8, 256), (1, 2, 1000)] {
        check_problem(Problem::new(b, h, h, s, s, 32));
    }
    check_problem(Problem { window: Some((40, 3)), ..Problem::new(2, 4, 1, 130, 250, 32) });
    check_problem(Problem { dtype: Dtype::Bf16, ..Problem::new(2, 2, 2, 333, 333, 32) });
}

#[test]
#[ignore = "needs a CUDA GPU; run with --include-ignored"]
fn head_dim_96() {
    for (b, h, s) in [(1, 1, 1), (2, 3, 300), (1, 8, 512), (1, 2, 777)] {
        check_problem(Problem::new(b, h, h, s, s, 96));
    }
    check_problem(Problem { softcap: Some(8.0), ..Problem::new(2, 4, 2, 200, 150, 96) });
    check_problem(Problem { dtype: Dtype::Bf16, ..Problem::new(2, 2, 2, 333, 333, 96) });
}

#[test]
#[ignore = "needs a CUDA GPU; run with --include-ignored"]
fn alibi_per_head_and_per_sequence() {
    check_problem(Problem { alibi: Some(false), ..Problem::new(2, 4, 4, 300, 300, 64) });
    check_problem(Problem { alibi: Some(true), ..Problem::new(3, 2, 1, 100, 257, 128) });
    check_problem(Problem { alibi: Some(false), window: Some((64, 0)), ..Problem::new(1, 4, 2, 200, 200, 32) });
    check_problem(Problem { alibi: Some(true), dtype: Dtype::Bf16, ..Problem::new(2, 2, 2, 150, 150, 96) });
}

#[test]
#[ignore = "needs a CUDA GPU; run with --include-ignored"]
fn alibi_with_softcap() {
    check_problem(Problem { alibi: Some(false), softcap: Some(5.0), ..Problem::new(2, 2, 2, 200, 200, 64) });
    check_problem(Problem { alibi: Some(true), softcap: Some(3.0), ..Problem::new(1, 2, 1, 65, 130, 256) });
}
