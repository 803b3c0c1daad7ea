//! EXPERIMENT (not committed): per-CTA SM id, start, end of the first segment and end, of the
//! last of 30 back-to-back calls, from records the trace build writes after the logsumexp.
use cust::prelude::*;
use flashcore::{AttnTensor, AttnTensorMut, FlashAttention, ForwardOptions, KernelFamily, TensorLayout};
use half::f16;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _context = cust::quick_init()?;
    let stream = Stream::new(StreamFlags::NON_BLOCKING, None)?;
    let flash = FlashAttention::new()?;
    for arg in std::env::args().skip(1) {
        let (spec, sk) = arg.split_once(':').unwrap();
        let v: Vec<usize> = spec.split(',').map(|x| x.parse().unwrap()).collect();
        let layout = TensorLayout::bhsd(v[0], v[1], v[2], v[3]);
        let n = layout.required_len().unwrap();
        let host: Vec<f16> = (0..n).map(|i| f16::from_f32(((i * 2654435761usize) % 1000) as f32 / 500.0 - 1.0)).collect();
        let (q, k, vv) = (DeviceBuffer::from_slice(&host)?, DeviceBuffer::from_slice(&host)?, DeviceBuffer::from_slice(&host)?);
        let mut o = DeviceBuffer::from_slice(&vec![f16::ZERO; n])?;
        let rows = v[0] * v[1] * v[2];
        let mut lse = DeviceBuffer::from_slice(&vec![0f32; rows + 4 * 8192])?;
        let options = ForwardOptions::new().kernel_family(KernelFamily::MmaSync).stream_k(sk == "on");
        for _ in 0..30 {
            flash.forward_with_lse(&stream, &AttnTensor::new(&q, layout), &AttnTensor::new(&k, layout), &AttnTensor::new(&vv, layout), &mut AttnTensorMut::new(&mut o, layout), &mut lse, &options)?;
        }
        stream.synchronize()?;
        let out = lse.as_host_vec()?;
        println!("# {arg}");
        for c in 0..8192 {
            let w: Vec<u32> = (0..4).map(|j| out[rows + 4 * c + j].to_bits()).collect();
            if w[1] != 0 { println!("{c} {} {} {} {}", w[0], w[1], w[2], w[3]); }
        }
    }
    Ok(())
}
