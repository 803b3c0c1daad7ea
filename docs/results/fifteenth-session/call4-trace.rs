//! EXPERIMENT (not committed): per-CTA SM id, start and end (globaltimer) of the last of 30
//! back-to-back calls, read back from each CTA's first O row. Prints `b h qb smid start end`.
use cust::prelude::*;
use flashcore::{FlashAttention, ForwardOptions, KernelFamily};
use flashcore_benches::{gpu_context_or_exit, Shape, Workload};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _context = gpu_context_or_exit("trace");
    let stream = Stream::new(StreamFlags::NON_BLOCKING, None)?;
    let flash = FlashAttention::new()?;
    for arg in std::env::args().skip(1) {
        let v: Vec<usize> = arg.split(',').map(|x| x.parse().unwrap()).collect();
        let shape = Shape::new(v[0], v[1], v[2], v[3]);
        let mut w = Workload::new(shape, 7)?;
        let options = ForwardOptions::new().kernel_family(KernelFamily::MmaSync);
        let name = w.kernel_name(&flash, &options);
        for i in 0..30 {
            w.launch(&flash, &stream, i, &options)?;
        }
        stream.synchronize()?;
        let (_, out) = w.host_copies()?;
        println!("# {arg} {name}");
        let q_blocks = v[2] / 128;
        for b in 0..v[0] {
            for h in 0..v[1] {
                for qb in 0..q_blocks {
                    let row = ((b * v[1] + h) * v[2] + qb * 128) * v[3];
                    let word = |k: usize| (out[row + 2 * k].to_bits() as u32) | ((out[row + 2 * k + 1].to_bits() as u32) << 16);
                    println!("{b} {h} {qb} {} {} {}", word(0), word(1), word(2));
                }
            }
        }
    }
    Ok(())
}
