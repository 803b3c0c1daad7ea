//! Runs one configuration a few times on plain stream launches, for a profiler to capture
//! (e.g. `ncu --launch-skip 2 --launch-count 1 profile 8 16 2048 128 0 128`).
//!
//!     profile BATCH HEADS SEQ HEAD_DIM CAUSAL(0|1) [Q_TILE_ROWS]
//!
//! With a tile height, the mma.sync kernel of that height runs even where the library would
//! choose a Hopper kernel.

use cust::prelude::*;
use flashcore::{FlashAttention, ForwardOptions, KernelFamily};
use flashcore_benches::{gpu_context_or_exit, Shape, Workload};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse()).collect::<Result<_, _>>()?;
    let [batch, heads, seq, head_dim, causal, ref rest @ ..] = args[..] else {
        return Err("usage: profile BATCH HEADS SEQ HEAD_DIM CAUSAL(0|1) [Q_TILE_ROWS]".into());
    };
    let _context = gpu_context_or_exit("profile");
    let stream = Stream::new(StreamFlags::NON_BLOCKING, None)?;
    let flash = FlashAttention::new()?;
    let mut options = ForwardOptions::new().causal(causal == 1);
    if let [rows] = *rest {
        options = options.kernel_family(KernelFamily::MmaSync).q_tile_rows(rows);
    }
    let mut workload = Workload::new(Shape::new(batch, heads, seq, head_dim), 7)?;
    for i in 0..4 {
        workload.launch(&flash, &stream, i, &options)?;
    }
    stream.synchronize()?;
    println!("ran {} x4", workload.kernel_name(&flash, &options));
    Ok(())
}
