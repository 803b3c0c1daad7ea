//! Reliability on the GPU: random property cases, numerical edge cases, determinism, several
//! threads and streams on one instance, memory leaks, and the checks against the driver
//! (contexts, allocations). Needs a GPU: `#[ignore]`d, run with `--include-ignored`.

use std::sync::{Mutex, MutexGuard};

use cust::context::{legacy, CurrentContext};
use cust::memory::{CopyDestination, DeviceBuffer};
use cust::prelude::*;
use flashcore::kernels::KernelVariant;
use flashcore::plan::{ForwardProblem, TensorArg};
use flashcore::reference::{attention_f64, HostTensor, Reference};
use flashcore::{
    AttnTensor, AttnTensorMut, Dtype, Error, FlashAttention, ForwardOptions, Operand, TensorLayout, TileShape,
};
use flashcore_tests::{deviation, fill_layout, gather, normal_f16, random_layout, rng, Gpu};
use half::f16;
use rand::rngs::StdRng;
use rand::Rng;

/// Device copies of one problem and a runner that poisons the outputs before each call.
struct Case {
    layouts: [TensorLayout; 4],
    buffers: [DeviceBuffer<f16>; 4],
    lse: DeviceBuffer<f32>,
    options: ForwardOptions<'static>,
}

impl Case {
    /// Logical `q` `[b,h,sq,d]` and `k`, `v` `[b,h,sk,d]` values, stored through the layouts.
    fn new(
        values: [&[f16]; 3],
        shape_q: [usize; 4],
        seq_k: usize,
        layouts: [TensorLayout; 4],
        options: ForwardOptions<'static>,
    ) -> Self {
        let [b, h, _, d] = shape_q;
        Self::with_kv_shape(values, shape_q, [b, h, seq_k, d], layouts, options)
    }

    /// As [`Case::new`], with K/V of shape `shape_k` (fewer heads for GQA/MQA).
    fn with_kv_shape(
        values: [&[f16]; 3],
        shape_q: [usize; 4],
        shape_k: [usize; 4],
        layouts: [TensorLayout; 4],
        options: ForwardOptions<'static>,
    ) -> Self {
        let [b, h, _, _] = shape_q;
        let upload =
            |v: &[f16], shape, layout: &TensorLayout| DeviceBuffer::from_slice(&fill_layout(v, shape, layout)).unwrap();
        let buffers = [
            upload(values[0], shape_q, &layouts[0]),
            upload(values[1], shape_k, &layouts[1]),
            upload(values[2], shape_k, &layouts[2]),
            DeviceBuffer::from_slice(&vec![f16::NAN; layouts[3].required_len().unwrap()]).unwrap(),
        ];
        let lse = DeviceBuffer::from_slice(&vec![f32::NAN; b * h * shape_q[2]]).unwrap();
        Self { layouts, buffers, lse, options }
    }

    /// Poisons O and the logsumexp, runs on `stream`, and returns O (logical, contiguous) and
    /// the logsumexp.
    fn run(&mut self, flash: &FlashAttention, stream: &Stream) -> Result<(Vec<f16>, Vec<f32>), Error> {
        let [q, k, v, o] = &mut self.buffers;
        let (o_len, lse_len) = (o.len(), self.lse.len());
        o.copy_from(&vec![f16::NAN; o_len])?;
        self.lse.copy_from(&vec![f32::NAN; lse_len])?;
        let [lq, lk, lv, lo] = self.layouts;
        flash.forward_with_lse(
            stream,
            &AttnTensor::new(q, lq),
            &AttnTensor::new(k, lk),
            &AttnTensor::new(v, lv),
            &mut AttnTensorMut::new(o, lo),
            &mut self.lse,
            &self.options,
        )?;
        stream.synchronize()?;
        Ok((gather(&o.as_host_vec()?, &lo), self.lse.as_host_vec()?))
    }
}

/// The leak check reads the device's free memory, which every other test of this binary moves
/// while it runs (the harness runs tests in parallel): the GPU tests here take turns.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// This test's turn on the GPU (a test that panicked before gives it up all the same).
fn take_turn() -> MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn reference(values: [&[f16]; 3], shape_q: [usize; 4], seq_k: usize, options: &ForwardOptions) -> Reference<f64> {
    let [b, h, _, d] = shape_q;
    reference_kv(values, shape_q, [b, h, seq_k, d], options)
}

fn reference_kv(
    values: [&[f16]; 3],
    shape_q: [usize; 4],
    shape_k: [usize; 4],
    options: &ForwardOptions,
) -> Reference<f64> {
    let [b, h, _, d] = shape_q;
    let kv = TensorLayout::bhsd(b, shape_k[1], shape_k[2], d);
    let q = HostTensor::new(values[0], TensorLayout::new(shape_q, TensorLayout::bhsd(b, h, shape_q[2], d).strides));
    attention_f64(q, HostTensor::new(values[1], kv), HostTensor::new(values[2], kv), options).unwrap()
}

/// A random problem: Q shape, K/V shape (heads dividing Q's; length equal or not, causal too),
/// and options.
fn random_case(rng: &mut StdRng) -> ([usize; 4], [usize; 4], ForwardOptions<'static>) {
    let causal = rng.random_bool(0.5);
    let shape = [
        rng.random_range(1..=3),
        rng.random_range(1..=4),
        rng.random_range(1..=300),
        [64, 128, 256][rng.random_range(0..3)],
    ];
    let seq_k = if rng.random_bool(0.5) { shape[2] } else { rng.random_range(1..=300) };
    let divisors: Vec<usize> = (1..=shape[1]).filter(|kv| shape[1] % kv == 0).collect();
    let shape_k = [shape[0], divisors[rng.random_range(0..divisors.len())], seq_k, shape[3]];
    let mut options = ForwardOptions::new().causal(causal);
    if rng.random_bool(0.3) {
        options = options.softmax_scale(rng.random_range(0.01..1.0));
    }
    if rng.random_bool(0.2) {
        options = options.softcap(rng.random_range(1.0..50.0));
    }
    if rng.random_bool(0.25) {
        let side = |rng: &mut StdRng| if rng.random_bool(0.2) { -1 } else { rng.random_range(0..200) };
        options = options.window(side(rng), side(rng));
    }
    // Sometimes force one of the tile shapes that exist for this kind of call.
    let variant = KernelVariant::for_call(Dtype::F16, shape[3], &options, false);
    let tiles: Vec<TileShape> = variant.kernels().map(|k| TileShape::of(&k.tile)).collect();
    if rng.random_bool(0.6) {
        let tile = tiles[rng.random_range(0..tiles.len())];
        options = options.q_tile_rows(tile.q_tile_rows).kv_tile_rows(tile.kv_tile_rows);
    }
    (shape, shape_k, options)
}

#[test]
#[ignore = "needs a CUDA GPU; run with --include-ignored"]
fn property_300_random_cases_against_the_f64_reference() {
    let _turn = take_turn();
    let gpu = Gpu::new();
    let mut rng = rng("property cases");
    let mut failures = Vec::new();
    for case in 0..300 {
        let (shape, shape_k, options) = random_case(&mut rng);
        let [b, h, sq, d] = shape;
        let nq = b * h * sq * d;
        let nk = shape_k.iter().product();
        let (q, k, v) = (normal_f16(&mut rng, nq), normal_f16(&mut rng, nk), normal_f16(&mut rng, nk));
        let layouts = [
            random_layout(&mut rng, shape),
            random_layout(&mut rng, shape_k),
            random_layout(&mut rng, shape_k),
            random_layout(&mut rng, shape),
        ];
        let mut c = Case::with_kv_shape([&q, &k, &v], shape, shape_k, layouts, options);
        let (out, lse) = c.run(&gpu.flash, &gpu.stream).expect("forward");
        let r = reference_kv([&q, &k, &v], shape, shape_k, &options);
        let dev = deviation(&out, &TensorLayout::bhsd(b, h, sq, d), &r);
        // Rows that see no key (causal, seq_q > seq_k) have logsumexp -inf on both sides; f64::max
        // skips NaN, so finiteness is checked on its own.
        let pairs = || lse.iter().zip(&r.lse).map(|(&x, &y)| (x as f64, y));
        let lse_err = pairs().filter(|(_, y)| y.is_finite()).map(|(x, y)| (x - y).abs()).fold(0f64, f64::max);
        let lse_ok = pairs().all(|(x, y)| if y.is_finite() { x.is_finite() } else { x == y }) && lse_err <= 1e-3;
        if !dev.passes() || !lse_ok {
            failures.push(format!("case {case}: shape {shape:?} kv {shape_k:?} {options:?} layouts {layouts:?}: {dev:?} lse_err {lse_err:e}"));
        }
    }
    println!("300 random cases, {} failures", failures.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Runs one contiguous case with the given values and checks the bar against the reference.
fn check_values(
    gpu: &Gpu,
    q: &[f16],
    k: &[f16],
    v: &[f16],
    shape_q: [usize; 4],
    seq_k: usize,
    options: ForwardOptions<'static>,
) -> Vec<f16> {
    let [b, h, sq, d] = shape_q;
    let layouts = [
        TensorLayout::bhsd(b, h, sq, d),
        TensorLayout::bhsd(b, h, seq_k, d),
        TensorLayout::bhsd(b, h, seq_k, d),
        TensorLayout::bhsd(b, h, sq, d),
    ];
    let mut c = Case::new([q, k, v], shape_q, seq_k, layouts, options);
    let (out, _) = c.run(&gpu.flash, &gpu.stream).expect("forward");
    let r = reference([q, k, v], shape_q, seq_k, &options);
    let dev = deviation(&out, &layouts[3], &r);
    assert!(dev.non_finite == 0 && dev.rel_l2 <= 1e-3, "{shape_q:?} seq_k {seq_k} {options:?}: {dev:?}");
    out
}

#[test]
#[ignore = "needs a CUDA GPU; run with --include-ignored"]
fn large_magnitude_scores_beyond_f16_range() {
    // Q uniform in ±1000, each K row ±1000 on one dimension: scores reach ±125 000 (past f16's
    // 65 504) and are exact in f32, so the comparison is well conditioned.
    let _turn = take_turn();
    let gpu = Gpu::new();
    let mut rng = rng("large magnitudes");
    for (shape, causal) in
        [([1, 2, 256, 64], false), ([1, 2, 256, 64], true), ([2, 1, 200, 128], false), ([2, 1, 200, 128], true)]
    {
        let [b, h, s, d] = shape;
        let q: Vec<f16> = (0..b * h * s * d).map(|_| f16::from_f32(rng.random_range(-1000.0..1000.0))).collect();
        let k: Vec<f16> = (0..b * h * s)
            .flat_map(|row| {
                let sign = if row % 3 == 0 { -1000.0 } else { 1000.0 };
                (0..d).map(move |i| f16::from_f32(if i == row % d { sign } else { 0.0 }))
            })
            .collect();
        let v = normal_f16(&mut rng, b * h * s * d);
        for tile in [64, 128] {
            check_values(&gpu, &q, &k, &v, shape, s, ForwardOptions::new().causal(causal).q_tile_rows(tile));
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU; run with --include-ignored"]
fn equal_scores_dominant_scores_and_length_one() {
    let _turn = take_turn();
    let gpu = Gpu::new();
    let mut rng = rng("edge cases");
    let d = 64;
    // All scores equal (Q = 0): the mean of the visible values.
    let (s, n) = (150, 2 * 150 * d);
    let v = normal_f16(&mut rng, n);
    for causal in [false, true] {
        check_values(
            &gpu,
            &vec![f16::ZERO; n],
            &normal_f16(&mut rng, n),
            &v,
            [1, 2, s, d],
            s,
            ForwardOptions::new().causal(causal),
        );
    }
    // One dominant score per row: k_i = 8 q_i puts each row's weight on its own key.
    let q = normal_f16(&mut rng, n);
    let k: Vec<f16> = q.iter().map(|x| f16::from_f32(8.0 * x.to_f32())).collect();
    for causal in [false, true] {
        check_values(&gpu, &q, &k, &v, [1, 2, s, d], s, ForwardOptions::new().causal(causal));
    }
    // Sq = 1 and/or Sk = 1.
    for (sq, sk) in [(1, 1), (1, 1000), (100, 1)] {
        let (q, k, v) =
            (normal_f16(&mut rng, 2 * sq * d), normal_f16(&mut rng, 2 * sk * d), normal_f16(&mut rng, 2 * sk * d));
        check_values(&gpu, &q, &k, &v, [1, 2, sq, d], sk, ForwardOptions::new());
    }
    check_values(&gpu, &q[..2 * d], &k[..2 * d], &v[..2 * d], [1, 2, 1, d], 1, ForwardOptions::new().causal(true));
}

/// Which output rows (of `[1, 1, s, d]`) hold a non-finite value.
fn non_finite_rows(out: &[f16], d: usize) -> Vec<usize> {
    out.chunks(d).enumerate().filter(|(_, row)| row.iter().any(|x| !x.is_finite())).map(|(i, _)| i).collect()
}

#[test]
#[ignore = "needs a CUDA GPU; run with --include-ignored"]
fn nan_and_inf_reach_only_the_rows_that_use_them() {
    let _turn = take_turn();
    let gpu = Gpu::new();
    let mut rng = rng("nan propagation");
    let (s, d) = (200, 64);
    let layout = TensorLayout::bhsd(1, 1, s, d);
    let layouts = [layout; 4];
    let fresh = |rng: &mut StdRng| (normal_f16(rng, s * d), normal_f16(rng, s * d), normal_f16(rng, s * d));
    for tile in [64, 128] {
        // NaN in query row 37: only output row 37.
        let (mut q, k, v) = fresh(&mut rng);
        q[37 * d + 5] = f16::NAN;
        let (out, _) = Case::new([&q, &k, &v], [1, 1, s, d], s, layouts, ForwardOptions::new().q_tile_rows(tile))
            .run(&gpu.flash, &gpu.stream)
            .unwrap();
        assert_eq!(non_finite_rows(&out, d), vec![37], "tile {tile}");
        // NaN in key row 90, causal: rows 90.. see it, rows ..90 must not.
        let (q, mut k, v) = fresh(&mut rng);
        k[90 * d] = f16::NAN;
        let options = ForwardOptions::new().causal(true).q_tile_rows(tile);
        let (out, _) = Case::new([&q, &k, &v], [1, 1, s, d], s, layouts, options).run(&gpu.flash, &gpu.stream).unwrap();
        assert_eq!(non_finite_rows(&out, d), (90..s).collect::<Vec<_>>(), "tile {tile}");
        let r = reference([&q, &k, &v], [1, 1, s, d], s, &options);
        for (i, (x, y)) in out.iter().zip(&r.out).enumerate().take(90 * d) {
            assert!((x.to_f64() - y).abs() <= 2e-3, "tile {tile}: element {i}: {x} vs {y}");
        }
        // +Inf in value row 3, not causal: every row weighs key 3.
        let (q, k, mut v) = fresh(&mut rng);
        v[3 * d + 1] = f16::INFINITY;
        let (out, _) = Case::new([&q, &k, &v], [1, 1, s, d], s, layouts, ForwardOptions::new().q_tile_rows(tile))
            .run(&gpu.flash, &gpu.stream)
            .unwrap();
        assert_eq!(non_finite_rows(&out, d), (0..s).collect::<Vec<_>>(), "tile {tile}");
    }
}

#[test]
#[ignore = "needs a CUDA GPU; run with --include-ignored"]
fn bitwise_identical_across_100_reruns_and_two_streams() {
    let _turn = take_turn();
    let gpu = Gpu::new();
    let mut rng = rng("determinism");
    let (shape, s) = ([2, 4, 333, 128], 333);
    let n = shape.iter().product();
    let (q, k, v) = (normal_f16(&mut rng, n), normal_f16(&mut rng, n), normal_f16(&mut rng, n));
    for causal in [false, true] {
        let layouts = [TensorLayout::bhsd(2, 4, s, 128); 4];
        let mut c = Case::new([&q, &k, &v], shape, s, layouts, ForwardOptions::new().causal(causal));
        let first = c.run(&gpu.flash, &gpu.stream).unwrap();
        for run in 1..100 {
            assert!(c.run(&gpu.flash, &gpu.stream).unwrap() == first, "causal {causal}: run {run} differs");
        }
        // Two streams at once, each with its own output.
        let other = Stream::new(StreamFlags::NON_BLOCKING, None).unwrap();
        let mut d = Case::new([&q, &k, &v], shape, s, layouts, ForwardOptions::new().causal(causal));
        for _ in 0..10 {
            let [q1, k1, v1, o1] = &mut c.buffers;
            let [q2, k2, v2, o2] = &mut d.buffers;
            for (stream, (q, k, v, o)) in [(&gpu.stream, (q1, k1, v1, o1)), (&other, (q2, k2, v2, o2))] {
                gpu.flash
                    .forward(
                        stream,
                        &AttnTensor::new(q, layouts[0]),
                        &AttnTensor::new(k, layouts[1]),
                        &AttnTensor::new(v, layouts[2]),
                        &mut AttnTensorMut::new(o, layouts[3]),
                        &c.options,
                    )
                    .unwrap();
            }
            gpu.stream.synchronize().unwrap();
            other.synchronize().unwrap();
            assert!(c.buffers[3]
                .as_host_vec()
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .eq(first.0.iter().map(|x| x.to_bits())));
            assert!(d.buffers[3]
                .as_host_vec()
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .eq(first.0.iter().map(|x| x.to_bits())));
        }
    }
}

#[test]
fn flash_attention_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<FlashAttention>();
}

#[test]
#[ignore = "needs a CUDA GPU; run with --include-ignored"]
fn eight_threads_share_one_instance_and_nothing_leaks() {
    let _turn = take_turn();
    let gpu = Gpu::new();
    let seeds: Vec<u64> = {
        let mut r = rng("concurrency");
        (0..8).map(|_| r.random()).collect()
    };
    let checked = Mutex::new(0usize);
    std::thread::scope(|scope| {
        for seed in &seeds {
            let (gpu, checked) = (&gpu, &checked);
            scope.spawn(move || {
                CurrentContext::set_current(&gpu.context).unwrap();
                let stream = Stream::new(StreamFlags::NON_BLOCKING, None).unwrap();
                let mut rng: StdRng = rand::SeedableRng::seed_from_u64(*seed);
                let (shape, s) = ([1, 3, 190, 64], 190);
                let n = shape.iter().product();
                let (q, k, v) = (normal_f16(&mut rng, n), normal_f16(&mut rng, n), normal_f16(&mut rng, n));
                let options = ForwardOptions::new().causal(seed % 2 == 0);
                let r = reference([&q, &k, &v], shape, s, &options);
                let mut c = Case::new([&q, &k, &v], shape, s, [TensorLayout::bhsd(1, 3, s, 64); 4], options);
                for call in 0..50 {
                    let (out, _) = c.run(&gpu.flash, &stream).unwrap();
                    let dev = deviation(&out, &TensorLayout::bhsd(1, 3, s, 64), &r);
                    assert!(dev.passes(), "thread seed {seed} call {call}: {dev:?}");
                    *checked.lock().unwrap() += 1;
                }
            });
        }
    });
    assert_eq!(*checked.lock().unwrap(), 8 * 50);

    // Device memory in use after 1000 calls equals that after 10.
    let (shape, s) = ([2, 2, 128, 64], 128);
    let n = shape.iter().product::<usize>();
    let zeros = vec![f16::from_f32(0.5); n];
    let mut c =
        Case::new([&zeros, &zeros, &zeros], shape, s, [TensorLayout::bhsd(2, 2, s, 64); 4], ForwardOptions::new());
    let free_after = |calls: usize, c: &mut Case| {
        for _ in 0..calls {
            c.run(&gpu.flash, &gpu.stream).unwrap();
        }
        cust::memory::mem_get_info().unwrap().0
    };
    let after_10 = free_after(10, &mut c);
    let after_1000 = free_after(990, &mut c);
    println!("free device memory after 10 calls: {after_10} B, after 1000: {after_1000} B");
    assert_eq!(after_10, after_1000);
}

#[test]
#[ignore = "needs a CUDA GPU; run with --include-ignored"]
fn other_contexts_and_memory_outside_allocations_are_refused() {
    let _turn = take_turn();
    let gpu = Gpu::new();
    let layout = TensorLayout::bhsd(1, 2, 64, 64);
    let n = layout.required_len().unwrap();
    let q = DeviceBuffer::from_slice(&vec![f16::ONE; n]).unwrap();
    let mut o = DeviceBuffer::from_slice(&vec![f16::ZERO; n]).unwrap();
    let options = ForwardOptions::new();

    // A second context on the same device, with its own buffer and stream.
    let device = cust::device::Device::get_device(0).unwrap();
    let other = legacy::Context::create_and_push(legacy::ContextFlags::SCHED_AUTO, device).unwrap();
    let foreign = DeviceBuffer::from_slice(&vec![f16::ONE; n]).unwrap();
    let foreign_stream = Stream::new(StreamFlags::NON_BLOCKING, None).unwrap();
    // With the other context current, the instance refuses to launch.
    let e = gpu.flash.forward(
        &gpu.stream,
        &AttnTensor::new(&q, layout),
        &AttnTensor::new(&q, layout),
        &AttnTensor::new(&q, layout),
        &mut AttnTensorMut::new(&mut o, layout),
        &options,
    );
    assert!(matches!(e, Err(Error::WrongContext { what: "current context" })), "{e:?}");
    CurrentContext::set_current(&gpu.context).unwrap();
    // The other context's memory and stream.
    let e = gpu.flash.forward(
        &gpu.stream,
        &AttnTensor::new(&q, layout),
        &AttnTensor::new(&foreign, layout),
        &AttnTensor::new(&q, layout),
        &mut AttnTensorMut::new(&mut o, layout),
        &options,
    );
    assert!(matches!(e, Err(Error::ForeignMemory { operand: Operand::K, .. })), "{e:?}");
    let e = gpu.flash.forward(
        &foreign_stream,
        &AttnTensor::new(&q, layout),
        &AttnTensor::new(&q, layout),
        &AttnTensor::new(&q, layout),
        &mut AttnTensorMut::new(&mut o, layout),
        &options,
    );
    assert!(matches!(e, Err(Error::WrongContext { what: "stream's context" })), "{e:?}");

    // Raw addresses: a length past the allocation, and an address that is no allocation. K
    // and V claim 64 MiB from a 16 KiB allocation; Q and O sit in an 80 MiB allocation at offsets
    // outside that window, so `plan` (no overlap of outputs and inputs) accepts the problem and
    // only the driver-side extent check can refuse it.
    let small = DeviceBuffer::from_slice(&vec![f16::ONE; n]).unwrap();
    let big = DeviceBuffer::from_slice(&vec![f16::ONE; 40 << 20]).unwrap();
    let long = TensorLayout::bhsd(1, 2, 262_144, 64);
    let k_start = small.as_device_ptr().as_raw();
    let k_end = k_start + 2 * long.required_len().unwrap() as u64;
    let tensor_bytes = 2 * n as u64;
    let big_start = big.as_device_ptr().as_raw();
    let outside = |from: u64| {
        (from..)
            .step_by(1 << 20)
            .take(80)
            .find(|&a| a + tensor_bytes <= k_start || a >= k_end)
            .expect("80 MiB cannot all lie inside a 64 MiB window")
    };
    let (q_at, o_at) = (outside(big_start), outside(big_start + (1 << 20)));
    let q_at = if q_at == o_at { outside(o_at + (1 << 20)) } else { q_at };
    let arg = |address: u64, len: usize| TensorArg { address, len, layout };
    let long_arg = TensorArg { address: k_start, len: long.required_len().unwrap(), layout: long };
    let problem = ForwardProblem::new(Dtype::F16, arg(q_at, n), long_arg, long_arg, arg(o_at, n), options);
    // SAFETY: the call is refused before launch (that is what is tested).
    let e = unsafe { gpu.flash.forward_raw(&gpu.stream, &problem) };
    assert!(matches!(e, Err(Error::OutsideAllocation { operand: Operand::K, .. })), "{e:?}");
    let nowhere =
        ForwardProblem::new(Dtype::F16, arg(0x7000_0000_0000, n), arg(q_at, n), arg(q_at, n), arg(o_at, n), options);
    // SAFETY: as above.
    let e = unsafe { gpu.flash.forward_raw(&gpu.stream, &nowhere) };
    assert!(matches!(e, Err(Error::ForeignMemory { operand: Operand::Q, .. })), "{e:?}");
    drop((small, big));
    drop((foreign, foreign_stream, other));
}
