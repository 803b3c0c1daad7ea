//! The kernel author's timing loop: every mma.sync tile shape of each shape, causal and not,
//! then the kernel the library picks by itself when that is another one (a Hopper kernel on
//! compute capability 9.0), graph-timed (the bench's table, for a few shapes in seconds instead
//! of the whole bench).
//!
//!     tiles [--q-tile-rows N] [--kv-tile-rows N] [--mma-sync-only] B,H,S,D [B,H,S,D ...]
//!
//! e.g. `tiles 8,16,2048,64 8,16,2048,128`; `--q-tile-rows 128` times only the tiles of that
//! height, `--kv-tile-rows 64` only those of that width (alternate two runs to compare two
//! widths without a fixed order), and `--mma-sync-only` leaves out the library's own pick
//! (shorter A/B runs on a GPU).

use cust::prelude::*;
use flashcore::kernels::KernelVariant;
use flashcore::{FlashAttention, ForwardOptions};
use flashcore_benches::{device_name, forced_tile, gpu_context_or_exit, print_table, Row, Shape, Workload};

fn parse(arg: &str) -> Option<Shape> {
    let dims: Vec<usize> = arg.split(',').map(|d| d.trim().parse().ok()).collect::<Option<_>>()?;
    let [batch, heads, seq, head_dim] = dims[..] else { return None };
    Some(Shape::new(batch, heads, seq, head_dim))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const USAGE: &str = "usage: tiles [--q-tile-rows N] [--kv-tile-rows N] [--mma-sync-only] B,H,S,D [B,H,S,D ...]";
    let (mut shapes, mut only_rows, mut only_keys, mut mma_sync_only) = (Vec::new(), None, None, false);
    let number = |arg: Option<String>| arg.and_then(|n| n.parse::<usize>().ok()).ok_or(USAGE);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--q-tile-rows" => only_rows = Some(number(args.next())?),
            "--kv-tile-rows" => only_keys = Some(number(args.next())?),
            "--mma-sync-only" => mma_sync_only = true,
            _ => shapes.push(parse(&arg).ok_or_else(|| format!("expected B,H,S,D, got {arg:?}; {USAGE}"))?),
        }
    }
    if shapes.is_empty() {
        return Err(USAGE.into());
    }
    let _context = gpu_context_or_exit("tiles");
    let stream = Stream::new(StreamFlags::NON_BLOCKING, None)?;
    let flash = FlashAttention::new()?;
    let mut rows = Vec::new();
    for (i, shape) in shapes.iter().enumerate() {
        let mut workload = Workload::new(*shape, 900 + i as u64)?;
        for causal in [false, true] {
            let shapes_of_kind = KernelVariant::plain_f16(shape.head_dim, causal)
                .kernels()
                .filter(|k| only_rows.is_none_or(|rows| k.tile.q_tile_rows == rows))
                .filter(|k| only_keys.is_none_or(|keys| k.tile.kv_tile_rows == keys));
            let forced = shapes_of_kind.map(|kernel| forced_tile(causal, kernel));
            let auto = ForwardOptions::new().causal(causal);
            let auto_is_mma_sync = workload.kernel(&flash, &auto).name == workload.kernel_name(&flash, &auto);
            for options in forced.chain((!auto_is_mma_sync && !mma_sync_only).then_some(auto)) {
                let kernel = workload.kernel_name(&flash, &options).to_string();
                rows.push(Row::measure(&mut workload, &flash, &stream, causal, &options, kernel)?);
            }
        }
    }
    print_table(&device_name(), &rows);
    Ok(())
}
