//! GPU timing with CUDA events, for benchmarks and the demo.

use cust::event::{Event, EventFlags};
use cust::prelude::Stream;

use crate::error::Result;

/// Microseconds per call of `launch`, timed on the GPU with events around `calls` back-to-back
/// enqueues on `stream` (after `warmup` untimed calls). `launch(i)` enqueues call `i`; rotate
/// inputs on `i` to keep them from living in L2.
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
    for i in 0..calls {
        launch(i)?;
    }
    end.record(stream)?;
    end.synchronize()?;
    let ms = end.elapsed_time_f32(&start)?;
    Ok(ms as f64 * 1e3 / calls.max(1) as f64)
}

/// The median of `samples` measurements of [`time_per_call`] with `calls` calls each.
pub fn median_per_call(
    stream: &Stream,
    samples: usize,
    calls: usize,
    mut launch: impl FnMut(usize) -> Result<()>,
) -> Result<f64> {
    let mut times = Vec::with_capacity(samples);
    for sample in 0..samples.max(1) {
        let warmup = if sample == 0 { 3 } else { 0 };
        times.push(time_per_call(stream, warmup, calls, &mut launch)?);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}
