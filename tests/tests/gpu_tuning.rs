//! Autotuning on the GPU: measures every candidate, keeps the fastest, uses it afterwards, and
//! caches it for the next instance. Own binary: it points the user cache directory at a
//! temporary one. Needs a GPU: `#[ignore]`d.

use cust::memory::DeviceBuffer;
use flashcore::plan::{ForwardProblem, TensorArg};
use flashcore::tuning::TuningKey;
use flashcore::{Dtype, FlashAttention, ForwardOptions, TensorLayout, TileShape};
use flashcore_tests::Gpu;
use half::f16;

#[test]
#[ignore = "needs a CUDA GPU; run with --include-ignored"]
fn autotune_measures_keeps_the_fastest_and_caches_it() {
    let cache = std::env::temp_dir().join(format!("flashcore-gpu-tuning-{}", std::process::id()));
    std::env::set_var("XDG_CACHE_HOME", &cache);
    let gpu = Gpu::new();
    let shapes = [[16, 16, 512, 64], [2, 4, 300, 128]];
    let results = gpu.flash.autotune(&gpu.stream, &shapes, false).expect("autotune");
    assert_eq!(results.len(), 4);
    for r in &results {
        println!("{:?} causal={} -> {} ({:?})", r.shape, r.masked, r.chosen, r.micros);
        // Every tile shape of the head dim: 64 and 128 rows, and at head dim 128 and 128 rows
        // both 32 and 64 keys per step.
        let expected = if r.shape[3] == 128 { 3 } else { 2 };
        assert_eq!(r.micros.len(), expected, "every tile shape measured: {:?}", r.micros);
        let fastest = r.micros.iter().min_by(|a, b| a.1.total_cmp(&b.1)).unwrap().0;
        assert_eq!(r.chosen, fastest);
        let [b, h, s, d] = r.shape;
        assert_eq!(gpu.flash.tuning().get(&TuningKey::new(d, r.masked, b * h, s)), Some(r.chosen));
        // The next call on this problem class launches the chosen configuration.
        let layout = TensorLayout::bhsd(b, h, s, d);
        let buf = DeviceBuffer::from_slice(&vec![f16::ONE; layout.required_len().unwrap()]).unwrap();
        let out = DeviceBuffer::from_slice(&vec![f16::ZERO; layout.required_len().unwrap()]).unwrap();
        let arg = |b: &DeviceBuffer<f16>| TensorArg { address: b.as_device_ptr().as_raw(), len: b.len(), layout };
        let options = ForwardOptions::new().causal(r.masked);
        let problem = ForwardProblem::new(Dtype::F16, arg(&buf), arg(&buf), arg(&buf), arg(&out), options);
        assert_eq!(TileShape::of(&gpu.flash.selected_kernel(&problem).unwrap().tile), r.chosen);
    }
    // A new instance on this device finds the table in the cache.
    let again = FlashAttention::new().unwrap();
    assert_eq!(again.tuning(), gpu.flash.tuning());
    std::fs::remove_dir_all(&cache).unwrap();
}
