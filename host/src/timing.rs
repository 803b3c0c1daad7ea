//! GPU timing with CUDA events, for benchmarks and the demo.

use cust::event::{Event, EventFlags};
use cust::prelude::Stream;
use cust::sys;

use crate::error::{driver, Result};

/// Microseconds per call of `launch`, timed on the GPU with events around `calls` back-to-back
/// enqueues on `stream` (after `warmup` untimed calls; the timed ones are calls `warmup..`).
/// `launch(i)` enqueues call `i`; rotate inputs on `i` to keep them from living in L2.
pub fn time_per_call(
    stream: &Stream,
    warmup: usize,
    calls: usize,
    mut launch: impl FnMut(usize) -> Result<()>,
) -> Result<f64> {
    for i in 0..warmup {
        launch(i)?;
    }
    let start = Event::new(EventFlags::DEFAULT)?;
    let end = Event::new(EventFlags::DEFAULT)?;
    start.record(stream)?;
    for i in warmup..warmup + calls {
        launch(i)?;
    }
    end.record(stream)?;
    end.synchronize()?;
    let ms = end.elapsed_time_f32(&start)?;
    Ok(ms as f64 * 1e3 / calls.max(1) as f64)
}

/// The median of `samples` measurements of [`time_per_call`] with `calls` calls each, after
/// `warmup` untimed calls; the call index runs on across samples (so inputs keep rotating).
/// Each sample waits for its calls, so with `calls = 1` every call is timed alone, as
/// `sdpa_baseline.py` times PyTorch's "eager" column (the host's launch cost included).
pub fn median_per_call(
    stream: &Stream,
    warmup: usize,
    samples: usize,
    calls: usize,
    mut launch: impl FnMut(usize) -> Result<()>,
) -> Result<f64> {
    let mut times = Vec::with_capacity(samples);
    for sample in 0..samples.max(1) {
        let (untimed, first) = if sample == 0 { (warmup, 0) } else { (0, warmup + sample * calls) };
        times.push(time_per_call(stream, untimed, calls, |i| launch(first + i))?);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Replays of a captured graph before [`graph_per_call`] starts timing (as `sdpa_baseline.py`).
const GRAPH_WARMUP_REPLAYS: usize = 5;

/// Microseconds per call with the calls inside a CUDA graph, the method PyTorch's
/// `sdpa_baseline.py` uses: `calls` launches are captured from `stream` into one graph, which is
/// replayed `samples` times (after five warm-up replays), each replay timed with events; the
/// median replay over `calls`. Launch gaps shrink to the GPU's own, so this is GPU time even for
/// kernels shorter than a host-side launch.
pub fn graph_per_call(
    stream: &Stream,
    calls: usize,
    samples: usize,
    launch: impl FnMut(usize) -> Result<()>,
) -> Result<f64> {
    let graph = CapturedGraph::capture_and_warm_up(stream, calls, launch)?;
    let start = Event::new(EventFlags::DEFAULT)?;
    let end = Event::new(EventFlags::DEFAULT)?;
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples.max(1) {
        start.record(stream)?;
        graph.launch(stream)?;
        end.record(stream)?;
        end.synchronize()?;
        times.push(end.elapsed_time_f32(&start)? as f64 * 1e3 / calls.max(1) as f64);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Graph replays kept in flight by [`sustained_per_call`], so that the GPU never waits for the host.
const SUSTAINED_REPLAYS_IN_FLIGHT: usize = 4;

/// Microseconds per call over a sustained run, to see a kernel settle under the GPU's power
/// limit: `calls` launches are captured from `stream` into one graph, which is replayed back to
/// back for `duration` of wall-clock time (after five warm-up replays), an event recorded between
/// consecutive replays. Returns one `(seconds since the first timed replay began, µs per call)`
/// per replay. (Short measurements such as [`graph_per_call`]'s can finish inside the time the
/// power limiter takes to lower the clocks; this one runs into its steady state.)
pub fn sustained_per_call(
    stream: &Stream,
    calls: usize,
    duration: std::time::Duration,
    launch: impl FnMut(usize) -> Result<()>,
) -> Result<Vec<(f64, f64)>> {
    let graph = CapturedGraph::capture_and_warm_up(stream, calls, launch)?;
    let started = std::time::Instant::now();
    let first = Event::new(EventFlags::DEFAULT)?;
    first.record(stream)?;
    // Events recorded after the replays not yet timed; a replay's time runs from the event before
    // it (`previous`, at first `first`) to its own.
    let mut in_flight = std::collections::VecDeque::with_capacity(SUSTAINED_REPLAYS_IN_FLIGHT + 1);
    let mut previous = first;
    let (mut replays, mut elapsed_ms) = (Vec::new(), 0.0);
    let per_call = |ms: f32| ms as f64 * 1e3 / calls.max(1) as f64;
    while started.elapsed() < duration || !in_flight.is_empty() {
        if started.elapsed() < duration {
            graph.launch(stream)?;
            let end = Event::new(EventFlags::DEFAULT)?;
            end.record(stream)?;
            in_flight.push_back(end);
            if in_flight.len() <= SUSTAINED_REPLAYS_IN_FLIGHT {
                continue;
            }
        }
        let Some(end) = in_flight.pop_front() else { break };
        end.synchronize()?;
        let ms = end.elapsed_time_f32(&previous)?;
        replays.push((elapsed_ms / 1e3, per_call(ms)));
        elapsed_ms += ms as f64;
        previous = end;
    }
    Ok(replays)
}

/// An instantiated CUDA graph captured from a stream (cust 0.3.2 does not wrap stream capture).
struct CapturedGraph {
    graph: sys::CUgraph,
    exec: sys::CUgraphExec,
}

impl CapturedGraph {
    /// Captures what `enqueue` puts on `stream` (nothing runs during capture).
    fn capture(stream: &Stream, enqueue: impl FnOnce() -> Result<()>) -> Result<Self> {
        let raw = stream.as_inner();
        // SAFETY: a valid stream handle; capture mode per the driver API.
        driver("cuStreamBeginCapture", unsafe {
            sys::cuStreamBeginCapture_v2(raw, sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
        })?;
        let enqueued = enqueue();
        let mut graph = std::ptr::null_mut();
        // SAFETY: ends the capture begun above, whatever `enqueue` did, so the stream is usable.
        let ended = driver("cuStreamEndCapture", unsafe { sys::cuStreamEndCapture(raw, &mut graph) });
        let mut this = Self { graph, exec: std::ptr::null_mut() };
        enqueued?;
        ended?;
        // SAFETY: `graph` is the valid graph returned by the capture.
        driver("cuGraphInstantiateWithFlags", unsafe {
            sys::cuGraphInstantiateWithFlags(&mut this.exec, this.graph, 0)
        })?;
        Ok(this)
    }

    /// Captures `calls` launches (`launch(0..calls)`) and replays the graph
    /// [`GRAPH_WARMUP_REPLAYS`] times.
    fn capture_and_warm_up(stream: &Stream, calls: usize, mut launch: impl FnMut(usize) -> Result<()>) -> Result<Self> {
        let graph = Self::capture(stream, || (0..calls).try_for_each(&mut launch))?;
        for _ in 0..GRAPH_WARMUP_REPLAYS {
            graph.launch(stream)?;
        }
        Ok(graph)
    }

    fn launch(&self, stream: &Stream) -> Result<()> {
        // SAFETY: `exec` is an instantiated graph; the stream is valid.
        driver("cuGraphLaunch", unsafe { sys::cuGraphLaunch(self.exec, stream.as_inner()) })
    }
}

impl Drop for CapturedGraph {
    fn drop(&mut self) {
        // SAFETY: handles created by this object and destroyed once; null handles are skipped.
        unsafe {
            if !self.exec.is_null() {
                sys::cuGraphExecDestroy(self.exec);
            }
            if !self.graph.is_null() {
                sys::cuGraphDestroy(self.graph);
            }
        }
    }
}
