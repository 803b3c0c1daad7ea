//! `cargo bench`: FlashCore's forward kernel on every benchmark shape, causal and not.
//!
//! First a Markdown table, printed at the end: per case and per tile shape, the median µs per
//! call inside a CUDA graph of 20 calls (the method of `sdpa_baseline.py`'s graph column, so the
//! two compare directly), TFLOP/s, and the back-to-back µs. Then a second table, also printed at
//! the end: the large shapes under sustained load (`SustainedRow`, 4 s per kernel: the automatic
//! choice and, where that is a Hopper kernel, the mma.sync family's own choice), the method of
//! `scripts/sdpa_sustained.py`. Then criterion measures each case with CUDA events around
//! back-to-back launches (`iter_custom`), rotating three input sets.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use cust::prelude::*;
use flashcore::kernels::KernelVariant;
use flashcore::timing::time_per_call;
use flashcore::{FlashAttention, ForwardOptions, KernelFamily};
use flashcore_benches::{
    device_name, forced_tile, gpu_context_or_exit, print_sustained_table, print_table, Row, SustainedRow, SustainedRun,
    Workload, BENCH_SHAPES, SUSTAINED_SHAPES,
};

fn main() {
    let _context = gpu_context_or_exit("the FlashCore benchmark");
    let stream = Stream::new(StreamFlags::NON_BLOCKING, None).expect("stream");
    let flash = FlashAttention::new().expect("loading the kernels");
    for r in flash.kernel_resources().expect("kernel attributes") {
        println!(
            "{}: {} registers, {} B local (stack+spills), {} B shared",
            r.kernel.name, r.registers, r.local_bytes, r.shared_bytes
        );
    }
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(20)
        .configure_from_args();

    // The table first, each case timed as `sdpa_baseline.py` times SDPA, before criterion's
    // seconds of back-to-back launches per case. The table's own runs still reach an H100's
    // power cap, as SDPA's do (docs/perf-notes.md, "Eleventh session").
    let mut rows = Vec::new();
    for (i, shape) in BENCH_SHAPES.into_iter().enumerate() {
        let mut workload = Workload::new(shape, i as u64).expect("allocating inputs");
        for causal in [false, true] {
            // The mma.sync family's own choice first, then the automatic choice where that is a
            // Hopper kernel, then the other mma.sync tile shapes, forced. So the first row of a
            // case follows mma.sync kernels, as SDPA flash, the first backend `sdpa_baseline.py`
            // times per case, follows the mem-efficient one: a burst at the power limit starts
            // from what ran before it (docs/perf-notes.md, "Thirteenth session").
            let auto = ForwardOptions::new().causal(causal);
            let mma_sync = auto.kernel_family(KernelFamily::MmaSync);
            let chosen = workload.kernel_name(&flash, &auto);
            let chosen_mma_sync = workload.kernel_name(&flash, &mma_sync);
            let first = std::iter::once((mma_sync, chosen == chosen_mma_sync));
            let hopper = (chosen != chosen_mma_sync).then_some((auto, true));
            let others = KernelVariant::plain_f16(shape.head_dim, causal)
                .kernels()
                // (Off Hopper the automatic choice is the mma.sync one; on Hopper it is no
                // mma.sync kernel: excluding the family's own choice excludes both.)
                .filter(|k| k.name != chosen_mma_sync)
                .map(|k| (forced_tile(causal, k), false));
            for (options, is_auto) in first.chain(hopper).chain(others) {
                let kernel = workload.kernel_name(&flash, &options);
                let kernel = if is_auto { kernel.to_string() } else { format!("({kernel})") };
                rows.push(Row::measure(&mut workload, &flash, &stream, &options, kernel).expect("timed launches"));
            }
        }
    }

    // A short measurement at a GPU's power limit lands on a fast or a slow phase of its clocks
    // and depends on what ran before it; sustained runs take in whole cycles, each after the same
    // idle second (docs/perf-notes.md, "Twelfth session").
    let run = SustainedRun::seconds(4);
    let mut sustained = Vec::new();
    for (i, shape) in SUSTAINED_SHAPES.into_iter().enumerate() {
        let mut workload = Workload::new(shape, 100 + i as u64).expect("allocating inputs");
        for causal in [false, true] {
            let auto = ForwardOptions::new().causal(causal);
            let mma_sync = auto.kernel_family(KernelFamily::MmaSync);
            let auto_is_mma_sync = workload.kernel_name(&flash, &auto) == workload.kernel_name(&flash, &mma_sync);
            for options in std::iter::once(auto).chain((!auto_is_mma_sync).then_some(mma_sync)) {
                let kernel = workload.kernel_name(&flash, &options).to_string();
                sustained.push(
                    SustainedRow::measure(&mut workload, &flash, &stream, &options, kernel, run)
                        .expect("timed launches"),
                );
            }
        }
    }

    // The inputs again, one shape at a time: keeping every shape's buffers from the table pass
    // would hold about 5 GB of device memory at once.
    let mut group = criterion.benchmark_group("forward");
    for (i, shape) in BENCH_SHAPES.into_iter().enumerate() {
        let mut workload = Workload::new(shape, i as u64).expect("allocating inputs");
        for causal in [false, true] {
            let auto = ForwardOptions::new().causal(causal);
            let id = format!("{shape} causal={causal}");
            group.throughput(Throughput::Elements(shape.flops(causal) as u64));
            group.bench_function(BenchmarkId::from_parameter(&id), |b| {
                b.iter_custom(|iters| {
                    let us = time_per_call(&stream, 0, iters as usize, workload.launcher(&flash, &stream, &auto))
                        .expect("timed launches");
                    Duration::from_secs_f64(us * 1e-6 * iters as f64)
                })
            });
        }
    }
    group.finish();
    criterion.final_summary();
    print_table(&device_name(), &rows);
    print_sustained_table(&device_name(), run, &sustained);
}
