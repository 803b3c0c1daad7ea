//! FlashCore's main job: run the attention on the mission shape and a few others, check each
//! result against the CPU reference, and print a timing table. Without a GPU it says so.

use cust::prelude::*;
use flashcore::reference::{attention_f64, HostTensor};
use flashcore::{FlashAttention, ForwardOptions};
use flashcore_benches::{device_name, gpu_context_or_exit, print_table, Row, Shape, Workload};

const SHAPES: [Shape; 4] =
    [Shape::new(1, 8, 512, 64), Shape::new(4, 8, 256, 64), Shape::new(1, 8, 512, 128), Shape::new(8, 16, 2048, 64)];

fn main() {
    let _context = gpu_context_or_exit("FlashCore");
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let stream = Stream::new(StreamFlags::NON_BLOCKING, None)?;
    let flash = FlashAttention::new()?;
    let (major, minor) = flash.compute_capability();
    println!("device: {} (sm_{major}{minor})", device_name());
    let mut rows = Vec::new();
    let mut all_ok = true;
    for (i, shape) in SHAPES.into_iter().enumerate() {
        let mut workload = Workload::new(shape, 1000 + i as u64)?;
        for causal in [false, true] {
            let options = ForwardOptions::new().causal(causal);
            workload.launch(&flash, &stream, 0, &options)?;
            stream.synchronize()?;
            // Check against the f64 CPU reference (for the smaller shapes; the largest would take
            // minutes on one CPU core).
            if shape.batch * shape.heads * shape.seq * shape.seq <= 1 << 22 {
                let ([q, k, v], out) = workload.host_copies()?;
                let layout = shape.layout();
                let t = |x| HostTensor::new(x, layout);
                let reference = attention_f64(t(&q), t(&k), t(&v), &options)?;
                let max_err = out.iter().zip(&reference.out).map(|(o, r)| (o.to_f64() - r).abs()).fold(0f64, f64::max);
                let ok = max_err <= 2e-3 && out.iter().all(|o| o.is_finite());
                all_ok &= ok;
                println!(
                    "{shape} causal={causal}: max |out - reference| = {max_err:.2e} {}",
                    if ok { "ok" } else { "FAIL" }
                );
            }
            let kernel = workload.kernel_name(&flash, &options).to_string();
            rows.push(Row::measure(&mut workload, &flash, &stream, &options, kernel)?);
        }
    }
    print_table(&device_name(), &rows);
    if !all_ok {
        return Err("a result disagreed with the reference".into());
    }
    Ok(())
}
