//! Shared pieces of FlashCore's benchmark and demo: the shapes, device workloads with rotating
//! input sets, and the result table.

use cust::memory::DeviceBuffer;
use cust::prelude::Stream;
use flashcore::{AttnTensor, AttnTensorMut, FlashAttention, ForwardOptions, TensorLayout};
use half::f16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

/// A `[batch, heads, seq, head_dim]` problem size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Batch size.
    pub batch: usize,
    /// Heads.
    pub heads: usize,
    /// Sequence length (queries = keys).
    pub seq: usize,
    /// Head dimension.
    pub head_dim: usize,
}

impl Shape {
    /// `(batch, heads, seq, head_dim)`.
    pub const fn new(batch: usize, heads: usize, seq: usize, head_dim: usize) -> Self {
        Self { batch, heads, seq, head_dim }
    }

    /// The contiguous `[B, H, S, D]` layout.
    pub const fn layout(&self) -> TensorLayout {
        TensorLayout::bhsd(self.batch, self.heads, self.seq, self.head_dim)
    }

    /// FLOPs of one forward call (`4·B·H·S²·D`, halved when causal).
    pub fn flops(&self, causal: bool) -> f64 {
        flashcore::forward_flops(&self.layout(), self.seq, causal)
    }

    /// TFLOP/s of one forward call that takes `micros` µs.
    pub fn tflops(&self, causal: bool, micros: f64) -> f64 {
        self.flops(causal) / (micros * 1e-6) / 1e12
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "({},{},{},{})", self.batch, self.heads, self.seq, self.head_dim)
    }
}

/// The benchmark's shapes: the test shapes plus larger ones that fill an H100/H200.
pub const BENCH_SHAPES: [Shape; 14] = [
    Shape::new(1, 1, 32, 64),
    Shape::new(1, 2, 64, 64),
    Shape::new(1, 4, 128, 64),
    Shape::new(1, 8, 512, 64),
    Shape::new(4, 8, 256, 64),
    Shape::new(2, 3, 1000, 64),
    Shape::new(1, 8, 512, 128),
    Shape::new(2, 4, 777, 128),
    Shape::new(16, 16, 512, 64),
    Shape::new(8, 16, 2048, 64),
    Shape::new(8, 16, 2048, 128),
    Shape::new(2, 16, 8192, 128),
    Shape::new(1, 32, 16384, 128),
    Shape::new(4, 16, 2048, 256),
];

/// The shapes the bench also times under sustained load ([`SustainedRow`]): issue 3's large
/// shapes, where the GPU runs at its power limit.
pub const SUSTAINED_SHAPES: [Shape; 4] = [
    Shape::new(16, 16, 512, 64),
    Shape::new(8, 16, 2048, 64),
    Shape::new(8, 16, 2048, 128),
    Shape::new(2, 16, 8192, 128),
];

/// Input sets rotated between calls so that consecutive calls do not hit in L2.
pub const INPUT_SETS: usize = 3;

/// Calls captured in one CUDA graph, as `sdpa_baseline.py` captures SDPA's.
pub const GRAPH_CALLS: usize = 20;

/// Device buffers for one shape: `INPUT_SETS` sets of random N(0,1) Q, K, V and one output.
pub struct Workload {
    /// The problem size.
    pub shape: Shape,
    inputs: Vec<[DeviceBuffer<f16>; 3]>,
    out: DeviceBuffer<f16>,
}

impl Workload {
    /// Allocates and fills the buffers (seeded, so runs are comparable).
    pub fn new(shape: Shape, seed: u64) -> flashcore::Result<Self> {
        let n = shape.layout().required_len().expect("bench shapes fit in memory");
        let mut rng = StdRng::seed_from_u64(seed);
        let mut random = || -> flashcore::Result<DeviceBuffer<f16>> {
            let host: Vec<f16> = (0..n).map(|_| f16::from_f32(rng.sample::<f32, _>(StandardNormal))).collect();
            Ok(DeviceBuffer::from_slice(&host)?)
        };
        let mut inputs = Vec::with_capacity(INPUT_SETS);
        for _ in 0..INPUT_SETS {
            inputs.push([random()?, random()?, random()?]);
        }
        Ok(Self { shape, inputs, out: DeviceBuffer::from_slice(&vec![f16::ZERO; n])? })
    }

    /// Enqueues call `i` (input set `i % INPUT_SETS`).
    pub fn launch(
        &mut self,
        flash: &FlashAttention,
        stream: &Stream,
        i: usize,
        options: &ForwardOptions,
    ) -> flashcore::Result<()> {
        let layout = self.shape.layout();
        let [q, k, v] = &self.inputs[i % INPUT_SETS];
        flash.forward(
            stream,
            &AttnTensor::new(q, layout),
            &AttnTensor::new(k, layout),
            &AttnTensor::new(v, layout),
            &mut AttnTensorMut::new(&mut self.out, layout),
            options,
        )
    }

    /// [`launch`](Self::launch) as the `launch(i)` closure that `flashcore::timing` takes.
    pub fn launcher<'a>(
        &'a mut self,
        flash: &'a FlashAttention,
        stream: &'a Stream,
        options: &'a ForwardOptions,
    ) -> impl FnMut(usize) -> flashcore::Result<()> + 'a {
        move |i| self.launch(flash, stream, i, options)
    }

    /// The mma.sync kernel a call with `options` is planned with (autotuning applied).
    pub fn kernel(&self, flash: &FlashAttention, options: &ForwardOptions) -> &'static flashcore::kernels::KernelInfo {
        flash.selected_kernel(&self.problem(options)).expect("bench configurations exist")
    }

    /// The name of the kernel a call with `options` runs on `flash`'s device: a Hopper kernel
    /// where one applies, else [`kernel`](Self::kernel)'s.
    pub fn kernel_name(&self, flash: &FlashAttention, options: &ForwardOptions) -> &'static str {
        flash.selected_kernel_name(&self.problem(options)).expect("bench configurations exist")
    }

    fn problem<'a>(&self, options: &ForwardOptions<'a>) -> flashcore::plan::ForwardProblem<'a> {
        let layout = self.shape.layout();
        let arg = |b: &DeviceBuffer<f16>| flashcore::plan::TensorArg {
            address: b.as_device_ptr().as_raw(),
            len: b.len(),
            layout,
        };
        let [q, k, v] = &self.inputs[0];
        flashcore::plan::ForwardProblem::new(flashcore::Dtype::F16, arg(q), arg(k), arg(v), arg(&self.out), *options)
    }

    /// Input set 0 and the output, copied to the host.
    pub fn host_copies(&self) -> flashcore::Result<([Vec<f16>; 3], Vec<f16>)> {
        let copy = |b: &DeviceBuffer<f16>| b.as_host_vec();
        let [q, k, v] = &self.inputs[0];
        Ok(([copy(q)?, copy(k)?, copy(v)?], copy(&self.out)?))
    }
}

/// One row of the result table.
#[derive(Clone, Debug)]
pub struct Row {
    /// Problem size.
    pub shape: Shape,
    /// Causal or not.
    pub causal: bool,
    /// Kernel entry point that ran (in parentheses when forced rather than chosen).
    pub kernel: String,
    /// Median microseconds per call inside a CUDA graph (as SDPA's baseline is timed).
    pub micros: f64,
    /// Median microseconds of one call timed alone, host launch included (SDPA's "eager").
    pub eager_micros: f64,
    /// Median microseconds per call with back-to-back launches from the host.
    pub stream_micros: f64,
}

impl Row {
    /// Times `workload` with `options` as `sdpa_baseline.py` times SDPA, in its order: 5 warm-up
    /// calls and 50 calls timed alone, then 20 calls in a CUDA graph (5 warm-up replays, the
    /// median of 20); then back-to-back launches. `kernel` names what ran.
    pub fn measure(
        workload: &mut Workload,
        flash: &FlashAttention,
        stream: &Stream,
        options: &ForwardOptions,
        kernel: String,
    ) -> flashcore::Result<Self> {
        use flashcore::timing::{graph_per_call, median_per_call};
        let (shape, causal) = (workload.shape, options.is_causal());
        let mut launch = workload.launcher(flash, stream, options);
        // One call per sample, each waited for: SDPA's "eager" timing.
        let eager_micros = median_per_call(stream, 5, 50, 1, &mut launch)?;
        let micros = graph_per_call(stream, GRAPH_CALLS, 20, &mut launch)?;
        let stream_micros = median_per_call(stream, 3, 15, GRAPH_CALLS, &mut launch)?;
        Ok(Self { shape, causal, kernel, micros, eager_micros, stream_micros })
    }

    /// Achieved TFLOP/s.
    pub fn tflops(&self) -> f64 {
        self.shape.tflops(self.causal, self.micros)
    }
}

/// How [`SustainedRow::measure`] runs a kernel: idle first, then back to back for a while.
#[derive(Clone, Copy, Debug)]
pub struct SustainedRun {
    /// Idle time before the run, so that every run starts from a GPU that has been idle as long.
    pub idle: std::time::Duration,
    /// Length of the run (wall clock).
    pub run: std::time::Duration,
    /// Replays that start before this point of the run are left out of the steady-state time.
    pub settle: std::time::Duration,
}

impl SustainedRun {
    /// Runs of `run` seconds after one second of idling, steady from one second in; the bench
    /// uses 4 s. `scripts/sdpa_sustained.py` times PyTorch's SDPA the same way.
    pub fn seconds(run: u64) -> Self {
        let second = std::time::Duration::from_secs(1);
        Self { idle: second, run: std::time::Duration::from_secs(run), settle: second }
    }
}

/// Width of the windows whose medians [`SustainedRow`] keeps, in seconds.
pub const SUSTAINED_WINDOW_SECONDS: f64 = 0.5;

/// One kernel under sustained load: its graph of 20 calls replayed back to back for seconds. A
/// GPU at its power limit moves its clocks up and down over about a second, so a measurement of a
/// quarter second (the table's, and `sdpa_baseline.py`'s) lands on a fast or a slow phase and
/// depends on what ran just before it; the steady-state mean takes in whole cycles, after the
/// same idle lead-in for every kernel.
#[derive(Clone, Debug)]
pub struct SustainedRow {
    /// Problem size.
    pub shape: Shape,
    /// Causal or not.
    pub causal: bool,
    /// Kernel entry point that ran.
    pub kernel: String,
    /// Median µs per call of the replays of the first window (before the clocks fall).
    pub first_window_micros: f64,
    /// Mean µs per call over the replays that start after [`SustainedRun::settle`].
    pub steady_micros: f64,
    /// Median µs per call of each window of [`SUSTAINED_WINDOW_SECONDS`].
    pub window_micros: Vec<f64>,
}

impl SustainedRow {
    /// Idles, then runs `workload` with `options` as `run` says (see
    /// [`flashcore::timing::sustained_per_call`]). `kernel` names what ran.
    pub fn measure(
        workload: &mut Workload,
        flash: &FlashAttention,
        stream: &Stream,
        options: &ForwardOptions,
        kernel: String,
        run: SustainedRun,
    ) -> flashcore::Result<Self> {
        std::thread::sleep(run.idle);
        let shape = workload.shape;
        let launch = workload.launcher(flash, stream, options);
        let replays = flashcore::timing::sustained_per_call(stream, GRAPH_CALLS, run.run, launch)?;
        Ok(Self::from_replays(shape, options.is_causal(), kernel, &replays, run.settle))
    }

    /// The row of a run's `replays`: `(seconds since the run began, µs per call)` each, in order
    /// (what [`flashcore::timing::sustained_per_call`] returns). The steady-state time is NaN when
    /// no replay started after `settle`.
    pub fn from_replays(
        shape: Shape,
        causal: bool,
        kernel: String,
        replays: &[(f64, f64)],
        settle: std::time::Duration,
    ) -> Self {
        let mut windows: Vec<Vec<f64>> = Vec::new();
        for &(seconds, micros) in replays {
            let window = (seconds / SUSTAINED_WINDOW_SECONDS) as usize;
            windows.resize_with(windows.len().max(window + 1), Vec::new);
            windows[window].push(micros);
        }
        let window_micros: Vec<f64> = windows.iter_mut().filter(|w| !w.is_empty()).map(|w| median(w)).collect();
        // Every replay holds the same number of calls, so the mean of their per-call times is the
        // steady state's total time over its calls.
        let steady: Vec<f64> =
            replays.iter().filter(|(seconds, _)| *seconds >= settle.as_secs_f64()).map(|r| r.1).collect();
        let steady_micros = if steady.is_empty() { f64::NAN } else { steady.iter().sum::<f64>() / steady.len() as f64 };
        let first_window_micros = window_micros.first().copied().unwrap_or(f64::NAN);
        Self { shape, causal, kernel, first_window_micros, steady_micros, window_micros }
    }

    /// TFLOP/s at the steady-state time.
    pub fn steady_tflops(&self) -> f64 {
        self.shape.tflops(self.causal, self.steady_micros)
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Prints sustained rows as a Markdown table (the format `scripts/sdpa_sustained.py` prints too).
pub fn print_sustained_table(device: &str, run: SustainedRun, rows: &[SustainedRow]) {
    println!(
        "\nFlashCore forward under sustained load, {device}; each kernel idle {:?}, then its graph of {GRAPH_CALLS} calls \
         replayed back to back for {:?}; steady µs: mean per call from {:?} on; windows: median µs per call of each \
         {SUSTAINED_WINDOW_SECONDS} s:\n",
        run.idle, run.run, run.settle
    );
    println!("| shape (B,H,S,D) | causal | kernel | first window µs | steady µs | steady TFLOP/s | windows |");
    println!("|---|---|---|---:|---:|---:|---|");
    for r in rows {
        let windows: Vec<String> = r.window_micros.iter().map(|w| format!("{w:.1}")).collect();
        println!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {} |",
            r.shape,
            r.causal,
            r.kernel,
            r.first_window_micros,
            r.steady_micros,
            r.steady_tflops(),
            windows.join(" ")
        );
    }
}

/// Options that force `kernel`'s tile shape (query rows and keys per step) on the mma.sync
/// kernels, causal or not.
pub fn forced_tile(causal: bool, kernel: &flashcore::kernels::KernelInfo) -> ForwardOptions<'static> {
    ForwardOptions::new()
        .causal(causal)
        .kernel_family(flashcore::KernelFamily::MmaSync)
        .q_tile_rows(kernel.tile.q_tile_rows)
        .kv_tile_rows(kernel.tile.kv_tile_rows)
}

/// Prints rows as a Markdown table.
pub fn print_table(device: &str, rows: &[Row]) {
    println!(
        "\nFlashCore forward, {device}; µs: median per call inside a CUDA graph of {GRAPH_CALLS} calls; eager µs: one call \
         timed alone; stream µs: back-to-back launches:\n"
    );
    println!("| shape (B,H,S,D) | causal | kernel | µs | TFLOP/s | stream µs | eager µs |");
    println!("|---|---|---|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} |",
            r.shape,
            r.causal,
            r.kernel,
            r.micros,
            r.tflops(),
            r.stream_micros,
            r.eager_micros
        );
    }
}

/// The name of the current context's device.
pub fn device_name() -> String {
    cust::context::CurrentContext::get_device()
        .and_then(|d| d.name())
        .unwrap_or_else(|e| format!("unknown device ({e})"))
}

/// A CUDA context on device 0, or — where no GPU is usable — a message saying so on stderr and
/// exit status 2 (`program` names what needed the GPU). The context must be kept alive.
pub fn gpu_context_or_exit(program: &str) -> cust::context::Context {
    cust::quick_init().unwrap_or_else(|e| {
        eprintln!(
            "{program} needs an NVIDIA GPU (compute capability 8.0 or newer) and its driver; none is usable \
             here (CUDA: {e}). Nothing was run."
        );
        std::process::exit(2)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn row(replays: &[(f64, f64)], settle_ms: u64) -> SustainedRow {
        let shape = Shape::new(1, 1, 64, 64);
        SustainedRow::from_replays(shape, false, "k".into(), replays, Duration::from_millis(settle_ms))
    }

    #[test]
    fn sustained_row_windows_and_steady_mean() {
        // Window 0: 10, 11, 30 (median 11); window 1: 20, 21 (median 21); none in window 2;
        // window 3: 40.
        let replays = [(0.0, 10.0), (0.1, 30.0), (0.2, 11.0), (0.5, 20.0), (0.9, 21.0), (1.6, 40.0)];
        let r = row(&replays, 500);
        assert_eq!(r.window_micros, vec![11.0, 21.0, 40.0]);
        assert_eq!(r.first_window_micros, 11.0);
        // Replays from 0.5 s on: (20 + 21 + 40) / 3.
        assert_eq!(r.steady_micros, 27.0);
        let flops = r.shape.flops(false);
        assert!((r.steady_tflops() - flops / 27e-6 / 1e12).abs() < 1e-12);
    }

    #[test]
    fn sustained_row_without_a_steady_replay_is_nan() {
        let r = row(&[(0.0, 10.0), (0.4, 12.0)], 1000);
        assert!(r.steady_micros.is_nan());
        assert_eq!(r.window_micros, vec![12.0]);
        let empty = row(&[], 0);
        assert!(empty.steady_micros.is_nan() && empty.first_window_micros.is_nan() && empty.window_micros.is_empty());
    }
}
