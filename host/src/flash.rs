//! The loaded kernels and the forward call.

use std::ffi::c_void;

use cust::context::CurrentContext;
use cust::device::DeviceAttribute;
use cust::memory::DeviceSlice;
use cust::module::Module;
use cust::prelude::Stream;
use cust::sys as cu;

use crate::error::{driver, Result};
use crate::kernels::{check_device, KernelInfo, KERNELS, PTX};
use crate::options::ForwardOptions;
use crate::plan::{plan, ForwardProblem, LaunchPlan, LseArg, TensorArg};
use crate::tensor::{AttnTensor, AttnTensorMut};

/// FlashCore's kernels, loaded into the CUDA context that was current when it was created.
///
/// Create one per context and reuse it: loading JIT-compiles the PTX for the device (once per
/// context), and each forward call is then one validated kernel launch.
///
/// ```no_run
/// use cust::prelude::*;
/// use flashcore::{AttnTensor, AttnTensorMut, FlashAttention, ForwardOptions, TensorLayout};
/// ///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let _ctx = cust::quick_init()?;
/// let stream = Stream::new(StreamFlags::NON_BLOCKING, None)?;
/// let flash = FlashAttention::new()?;
///
/// let layout = TensorLayout::bhsd(1, 8, 512, 64);
/// let n = layout.required_len().unwrap();
/// let q = DeviceBuffer::from_slice(&vec![half::f16::from_f32(0.1); n])?;
/// let k = DeviceBuffer::from_slice(&vec![half::f16::from_f32(0.2); n])?;
/// let v = DeviceBuffer::from_slice(&vec![half::f16::from_f32(0.3); n])?;
/// let mut o = DeviceBuffer::from_slice(&vec![half::f16::ZERO; n])?;
///
/// flash.forward(
///     &stream,
///     &AttnTensor::new(&q, layout),
///     &AttnTensor::new(&k, layout),
///     &AttnTensor::new(&v, layout),
///     &mut AttnTensorMut::new(&mut o, layout),
///     &ForwardOptions::new().causal(true),
/// )?;
/// stream.synchronize()?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct FlashAttention {
    // Kept alive for `functions`, which point into it.
    _module: Module,
    functions: Vec<cu::CUfunction>,
    compute_capability: (i32, i32),
    multiprocessors: usize,
}

impl FlashAttention {
    /// Loads the kernels into the current context and raises each kernel's dynamic
    /// shared-memory limit. Fails with [`Error::UnsupportedDevice`](crate::Error::UnsupportedDevice)
    /// below sm_80.
    pub fn new() -> Result<Self> {
        let device = CurrentContext::get_device()?;
        let major = device.get_attribute(DeviceAttribute::ComputeCapabilityMajor)?;
        let minor = device.get_attribute(DeviceAttribute::ComputeCapabilityMinor)?;
        // cust 0.3.2's DeviceAttribute has no opt-in shared-memory limit; ask the driver.
        let mut smem_optin = 0i32;
        // SAFETY: valid out-pointer, attribute and device handle.
        driver("cuDeviceGetAttribute", unsafe {
            cu::cuDeviceGetAttribute(
                &mut smem_optin,
                cu::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
                device.as_raw(),
            )
        })?;
        check_device(major, minor, smem_optin as usize)?;
        let multiprocessors = device.get_attribute(DeviceAttribute::MultiprocessorCount)? as usize;
        let module = Module::from_ptx(PTX, &[])?;
        let mut functions = Vec::with_capacity(KERNELS.len());
        for kernel in KERNELS {
            let needed = kernel.tile.smem_bytes();
            let function = module.get_function(kernel.name)?.to_raw();
            // SAFETY: `function` belongs to `module`, which is alive; the attribute and value are valid.
            driver("cuFuncSetAttribute", unsafe {
                cu::cuFuncSetAttribute(
                    function,
                    cu::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    needed as i32,
                )
            })?;
            functions.push(function);
        }
        Ok(Self { _module: module, functions, compute_capability: (major, minor), multiprocessors })
    }

    /// The compute capability (major, minor) of the device the kernels were loaded for.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.compute_capability
    }

    /// The number of multiprocessors (SMs) of the device.
    pub fn multiprocessors(&self) -> usize {
        self.multiprocessors
    }

    /// Enqueues `o = softmax(q·kᵀ·scale [+ causal mask])·v` on `stream`.
    ///
    /// Every argument is checked before launch (see [`plan`](crate::plan::plan)); the call
    /// returns once the kernel is enqueued.
    pub fn forward(
        &self,
        stream: &Stream,
        q: &AttnTensor<'_>,
        k: &AttnTensor<'_>,
        v: &AttnTensor<'_>,
        o: &mut AttnTensorMut<'_>,
        options: &ForwardOptions,
    ) -> Result<()> {
        let problem = ForwardProblem { q: arg(q), k: arg(k), v: arg(v), o: arg_mut(o), lse: None, options: *options };
        self.launch(stream, &plan(&problem, self.multiprocessors)?)
    }

    /// As [`forward`](Self::forward), and also writes the f32 logsumexp of each query row
    /// (natural log, of the scaled scores, as FlashAttention returns it) to `lse`, a contiguous
    /// `[batch, heads, seq_q]` buffer.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_with_lse(
        &self,
        stream: &Stream,
        q: &AttnTensor<'_>,
        k: &AttnTensor<'_>,
        v: &AttnTensor<'_>,
        o: &mut AttnTensorMut<'_>,
        lse: &mut DeviceSlice<f32>,
        options: &ForwardOptions,
    ) -> Result<()> {
        let lse = Some(LseArg { address: lse.as_raw_ptr(), len: lse.len() });
        let problem = ForwardProblem { q: arg(q), k: arg(k), v: arg(v), o: arg_mut(o), lse, options: *options };
        self.launch(stream, &plan(&problem, self.multiprocessors)?)
    }

    /// Enqueues a forward call described by raw device addresses.
    ///
    /// # Safety
    /// Every address in `problem` must point to device memory of the current context holding at
    /// least the stated number of elements, which must stay allocated, and not be written by
    /// anything else, until the kernel has finished. (Shapes, strides, alignment and overlap are
    /// still checked.)
    pub unsafe fn forward_raw(&self, stream: &Stream, problem: &ForwardProblem) -> Result<()> {
        self.launch(stream, &plan(problem, self.multiprocessors)?)
    }

    fn launch(&self, stream: &Stream, plan: &LaunchPlan) -> Result<()> {
        let function = self.function(plan.kernel);
        let mut params = plan.params;
        let mut args = [&mut params as *mut _ as *mut c_void];
        let (x, y, z) = plan.grid;
        // SAFETY: `plan` was validated: grid, block and shared memory match the kernel's
        // configuration, and every address in `params` covers what the kernel reads or writes.
        // The parameter block matches the kernel's single by-value `AttentionParams` argument.
        driver("cuLaunchKernel", unsafe {
            cu::cuLaunchKernel(
                function,
                x,
                y,
                z,
                plan.block,
                1,
                1,
                plan.smem_bytes,
                stream.as_inner(),
                args.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        })
    }

    fn function(&self, kernel: &KernelInfo) -> cu::CUfunction {
        let index = KERNELS.iter().position(|k| std::ptr::eq(k, kernel)).expect("plans name kernels from KERNELS");
        self.functions[index]
    }
}

fn arg(t: &AttnTensor<'_>) -> TensorArg {
    TensorArg { address: t.data().as_raw_ptr(), len: t.data().len(), layout: t.layout() }
}

fn arg_mut(t: &AttnTensorMut<'_>) -> TensorArg {
    TensorArg { address: t.data().as_raw_ptr(), len: t.data().len(), layout: t.layout() }
}

/// Raw device address of a slice.
trait RawAddress {
    fn as_raw_ptr(&self) -> u64;
}

impl<T: cust::memory::DeviceCopy> RawAddress for DeviceSlice<T> {
    fn as_raw_ptr(&self) -> u64 {
        self.as_device_ptr().as_raw()
    }
}
