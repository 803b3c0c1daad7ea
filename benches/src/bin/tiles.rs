//! The kernel author's timing loop: every mma.sync tile shape of each shape, causal and not,
//! then the kernel the library picks by itself when that is another one (a Hopper kernel on
//! compute capability 9.0), graph-timed (the bench's table, for a few shapes in seconds instead
//! of the whole bench).
//!
//!     tiles [--q-tile-rows N] [--kv-tile-rows N] [--mma-sync-only] [--chosen-mma-sync]
//!           [--causal BOOL] [--sustain SECONDS] B,H,S,D [B,H,S,D ...]
//!
//! e.g. `tiles 8,16,2048,64 8,16,2048,128`. Filters: `--q-tile-rows 128` times only the tiles
//! of that height, `--kv-tile-rows 64` only those of that width (alternate two runs to compare
//! two widths without a fixed order), `--mma-sync-only` leaves out the library's own pick
//! (shorter A/B runs on a GPU), `--chosen-mma-sync` times only the mma.sync kernel the library
//! picks by itself, and `--causal true` only causal cases. `--sustain 5` (2 or more) replaces
//! the table by the bench's sustained one: each kernel idles 1 s, then replays its graph of 20
//! calls back to back for 5 s (`SustainedRow`; `scripts/sdpa_sustained.py --seconds 5` times SDPA
//! so, and `scripts/paired_sustained.sh` alternates the two).

use cust::prelude::*;
use flashcore::kernels::KernelVariant;
use flashcore::{FlashAttention, ForwardOptions, KernelFamily};
use flashcore_benches::{
    device_name, forced_tile, gpu_context_or_exit, print_sustained_table, print_table, Row, Shape, SustainedRow,
    SustainedRun, Workload,
};

fn parse(arg: &str) -> Option<Shape> {
    let dims: Vec<usize> = arg.split(',').map(|d| d.trim().parse().ok()).collect::<Option<_>>()?;
    let [batch, heads, seq, head_dim] = dims[..] else { return None };
    Some(Shape::new(batch, heads, seq, head_dim))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const USAGE: &str =
        "usage: tiles [--q-tile-rows N] [--kv-tile-rows N] [--mma-sync-only] [--chosen-mma-sync] [--causal BOOL] \
         [--sustain SECONDS] B,H,S,D [B,H,S,D ...]";
    let (mut shapes, mut only_rows, mut only_keys, mut mma_sync_only) = (Vec::new(), None, None, false);
    let (mut sustain, mut only_causal, mut chosen_mma_sync) = (None, None, false);
    let mut sustained = Vec::new();
    let number = |arg: Option<String>| arg.and_then(|n| n.parse::<usize>().ok()).ok_or(USAGE);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--q-tile-rows" => only_rows = Some(number(args.next())?),
            "--kv-tile-rows" => only_keys = Some(number(args.next())?),
            "--mma-sync-only" => mma_sync_only = true,
            "--chosen-mma-sync" => chosen_mma_sync = true,
            "--causal" => only_causal = Some(args.next().and_then(|b| b.parse::<bool>().ok()).ok_or(USAGE)?),
            // Longer than the second that `SustainedRun` leaves out before its steady state.
            "--sustain" => {
                sustain = Some(SustainedRun::seconds(number(args.next()).ok().filter(|&s| s >= 2).ok_or(USAGE)? as u64))
            }
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
        for causal in [false, true].into_iter().filter(|c| only_causal.is_none_or(|only| *c == only)) {
            let shapes_of_kind = KernelVariant::plain_f16(shape.head_dim, causal)
                .kernels()
                .filter(|k| only_rows.is_none_or(|rows| k.tile.q_tile_rows == rows))
                .filter(|k| only_keys.is_none_or(|keys| k.tile.kv_tile_rows == keys));
            let auto = ForwardOptions::new().causal(causal);
            let forced: Vec<_> = if chosen_mma_sync {
                vec![auto.kernel_family(KernelFamily::MmaSync)]
            } else {
                shapes_of_kind.map(|kernel| forced_tile(causal, kernel)).collect()
            };
            let auto_is_mma_sync = workload.kernel(&flash, &auto).name == workload.kernel_name(&flash, &auto);
            let with_auto = !auto_is_mma_sync && !mma_sync_only && !chosen_mma_sync;
            for options in forced.into_iter().chain(with_auto.then_some(auto)) {
                let kernel = workload.kernel_name(&flash, &options).to_string();
                match sustain {
                    Some(run) => {
                        sustained.push(SustainedRow::measure(&mut workload, &flash, &stream, &options, kernel, run)?)
                    }
                    None => rows.push(Row::measure(&mut workload, &flash, &stream, &options, kernel)?),
                }
            }
        }
    }
    match sustain {
        Some(run) => print_sustained_table(&device_name(), run, &sustained),
        None => print_table(&device_name(), &rows),
    }
    Ok(())
}
