//! Sequence-length sweep for the README's plot: B·S = 16 384 tokens, 16 heads, head dims 64 and
//! 128, S from 512 to 16 384, causal and not, each kernel family that runs on the device;
//! prints the bench's Markdown table (graph-timed) and the `--shapes` argument for
//! `sdpa_baseline.py` to time the same shapes.

use cust::prelude::*;
use flashcore::{FlashAttention, ForwardOptions, KernelFamily};
use flashcore_benches::{device_name, gpu_context_or_exit, print_table, Row, Shape, Workload};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _context = gpu_context_or_exit("the sweep");
    let stream = Stream::new(StreamFlags::NON_BLOCKING, None)?;
    let flash = FlashAttention::new()?;
    let mut shapes = Vec::new();
    for head_dim in [64, 128] {
        for seq in [512, 1024, 2048, 4096, 8192, 16384] {
            shapes.push(Shape::new(16384 / seq, 16, seq, head_dim));
        }
    }
    let mut rows = Vec::new();
    for (i, shape) in shapes.iter().enumerate() {
        let mut workload = Workload::new(*shape, 500 + i as u64)?;
        for causal in [false, true] {
            // The automatic choice (the Hopper kernels on compute capability 9.0), then the
            // mma.sync kernels forced (in parentheses), when they are not the automatic choice.
            let auto = ForwardOptions::new().causal(causal);
            let mma_sync = auto.kernel_family(KernelFamily::MmaSync);
            let mma_sync_differs = workload.kernel_name(&flash, &mma_sync) != workload.kernel_name(&flash, &auto);
            for (options, forced) in [(auto, false), (mma_sync, true)] {
                if forced && !mma_sync_differs {
                    continue;
                }
                let name = workload.kernel_name(&flash, &options);
                let kernel = if forced { format!("({name})") } else { name.to_string() };
                rows.push(Row::measure(&mut workload, &flash, &stream, &options, kernel)?);
            }
        }
    }
    print_table(&device_name(), &rows);
    let spec: Vec<String> =
        shapes.iter().map(|s| format!("{},{},{},{}", s.batch, s.heads, s.seq, s.head_dim)).collect();
    println!("\nsdpa_baseline.py --shapes \"{}\"", spec.join(";"));
    Ok(())
}
