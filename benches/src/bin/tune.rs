//! Autotunes FlashCore on this GPU for the benchmark's shapes (progress bar on the terminal) and
//! saves the choices under the user's cache directory, where every later `FlashAttention::new`
//! on this device finds them. Prints each measured candidate.

use cust::prelude::*;
use flashcore::FlashAttention;
use flashcore_benches::{device_name, gpu_context_or_exit, BENCH_SHAPES};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _context = gpu_context_or_exit("autotuning");
    let stream = Stream::new(StreamFlags::NON_BLOCKING, None)?;
    let flash = FlashAttention::new()?;
    let shapes: Vec<[usize; 4]> = BENCH_SHAPES.iter().map(|s| [s.batch, s.heads, s.seq, s.head_dim]).collect();
    let results = flash.autotune(&stream, &shapes, true)?;
    println!("autotuned on {}; µs per call (CUDA graph) per tile shape (query rows x keys per step):", device_name());
    for r in &results {
        let candidates: Vec<String> = r.micros.iter().map(|(tile, us)| format!("{tile}: {us:.1}")).collect();
        println!("  {:?} masked={:<5} -> {}   ({})", r.shape, r.masked, r.chosen, candidates.join(", "));
    }
    if let Some(path) = flashcore::tuning::cache_path(&device_name()) {
        println!("saved to {}", path.display());
    }
    Ok(())
}
