//! A kernel fault leaves the CUDA context unusable (a "sticky" error). FlashCore must then
//! answer with a typed error that names the CUDA error, not panic or hang. This is its own test
//! binary because the context never recovers. Needs a GPU: `#[ignore]`d.

use std::ffi::c_void;

use cust::error::CudaError;
use cust::memory::DeviceBuffer;
use cust::module::Module;
use flashcore::{AttnTensor, AttnTensorMut, Error, ForwardOptions, TensorLayout};
use flashcore_tests::Gpu;
use half::f16;

/// One thread stores to the address it is given.
const STORE_TO_ADDRESS_PTX: &str = r#"
.version 7.0
.target sm_80
.address_size 64
.visible .entry store_to(.param .u64 address)
{
    .reg .b64 %rd<2>;
    .reg .b32 %r<2>;
    ld.param.u64 %rd1, [address];
    mov.u32 %r1, 7;
    st.global.u32 [%rd1], %r1;
    ret;
}
"#;

#[test]
#[ignore = "needs a CUDA GPU; run with --include-ignored"]
fn a_faulted_context_surfaces_as_typed_errors() {
    let gpu = Gpu::new();
    let layout = TensorLayout::bhsd(1, 2, 100, 64);
    let n = layout.required_len().unwrap();
    let x = DeviceBuffer::from_slice(&vec![f16::from_f32(0.25); n]).unwrap();
    let mut o = DeviceBuffer::from_slice(&vec![f16::ZERO; n]).unwrap();
    let forward = |o: &mut DeviceBuffer<f16>| {
        let t = AttnTensor::new(&x, layout);
        gpu.flash.forward(&gpu.stream, &t, &t, &t, &mut AttnTensorMut::new(o, layout), &ForwardOptions::new())
    };
    forward(&mut o).expect("a healthy context runs");
    gpu.stream.synchronize().expect("and finishes");

    // Fault the context: store through an address that maps nothing.
    let module = Module::from_ptx(STORE_TO_ADDRESS_PTX, &[]).unwrap();
    let store_to = module.get_function("store_to").unwrap();
    let mut address: u64 = 0x10;
    // SAFETY: the kernel's one parameter is a u64; the fault it causes is the point of the test.
    unsafe { gpu.stream.launch(&store_to, 1, 1, 0, &[&mut address as *mut u64 as *mut c_void]).unwrap() };
    assert_eq!(gpu.stream.synchronize(), Err(CudaError::IllegalAddress));

    // Every later call reports the sticky error, typed and named.
    for attempt in 0..3 {
        let result = forward(&mut o).and_then(|()| gpu.stream.synchronize().map_err(Error::from));
        let error = result.expect_err("a faulted context cannot run kernels");
        let message = error.to_string();
        println!("attempt {attempt}: {message}");
        assert!(message.contains("ILLEGAL_ADDRESS") || message.contains("IllegalAddress"), "{message}");
    }
}
