//! The loaded kernels and the forward call.

use std::ffi::c_void;

use cust::context::CurrentContext;
use cust::device::DeviceAttribute;
use cust::memory::DeviceSlice;
use cust::module::Module;
use cust::prelude::Stream;
use cust::sys as cu;

use std::sync::RwLock;

use cust::memory::DeviceBuffer;
use half::f16;
use indicatif::{ProgressBar, ProgressStyle};

use crate::abi::{AttentionParams, Dtype, APPEND_THREADS};
use crate::element::Element;
use crate::error::{driver, Error, Operand, Result};
use crate::hopper::{encode_tensor_maps, plan_hopper, plan_tma, use_hopper, HopperPlan, TileMap};
use crate::kernels::{
    check_device, combine_kernel, ptx_for_device, DeviceLimits, KernelInfo, KernelVariant, TileShape, TmaKernelInfo,
    APPEND_KERNEL, HOPPER_KERNELS, HOPPER_PTX, KERNELS, TMA_KERNELS,
};
use crate::kv_cache::KvCache;
use crate::options::ForwardOptions;
use crate::plan::{plan, plan_kv_cache, ForwardProblem, KvCacheProblem, LaunchPlan, LseArg, TensorArg};
use crate::register_caps::hopper_capped_ptx;
use crate::tensor::{AttnTensor, AttnTensorMut};
use crate::timing;
use crate::tuning::{cache_path, TuningKey, TuningResult, TuningTable};
use crate::varlen::VarlenBatch;
use crate::TensorLayout;

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
///
/// `FlashAttention` is `Send` and `Sync`: one instance may serve several threads and streams at
/// once, each thread with the instance's context current.
#[derive(Debug)]
pub struct FlashAttention {
    // Kept alive for `functions`, which point into it.
    _module: Module,
    /// One per entry of `KERNELS`.
    functions: Vec<KernelFunction>,
    /// Split-KV combine, per element type (f16, bf16).
    combine: [KernelFunction; 2],
    /// KV-cache append.
    append: KernelFunction,
    /// The Hopper kernels, on compute capability 9.0.
    hopper: Option<HopperModule>,
    context: ContextHandle,
    compute_capability: (i32, i32),
    limits: DeviceLimits,
    device_name: String,
    tuning: RwLock<TuningTable>,
}

/// Resources of one kernel on the device ([`FlashAttention::kernel_resources`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelResources {
    /// The kernel.
    pub kernel: &'static KernelInfo,
    /// Registers per thread.
    pub registers: usize,
    /// Local memory per thread in bytes: stack frame and register spills (0 is the goal).
    pub local_bytes: usize,
    /// Dynamic shared memory per CTA in bytes.
    pub shared_bytes: usize,
}

/// The loaded sm_90a module and one function per entry of `HOPPER_KERNELS`.
#[derive(Debug)]
struct HopperModule {
    // Kept alive for `functions` and `tma_functions`, which point into it.
    _module: Module,
    functions: Vec<KernelFunction>,
    /// One per entry of `TMA_KERNELS`.
    tma_functions: Vec<KernelFunction>,
}

/// What a forward call launches.
enum Launch {
    /// An mma.sync kernel (every GPU).
    MmaSync(LaunchPlan),
    /// A Hopper kernel (compute capability 9.0).
    Hopper(HopperPlan),
    /// The TMA variant of an mma.sync kernel (compute capability 9.0), with the tensor maps of
    /// its K/V copies (Q's map is encoded too, the parameter holds three).
    MmaSyncTma(LaunchPlan, &'static TmaKernelInfo, [TileMap; 3]),
}

/// A kernel handle of the loaded module.
#[derive(Clone, Copy, Debug)]
struct KernelFunction(cu::CUfunction);

/// The context the module was loaded into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ContextHandle(cu::CUcontext);

// SAFETY: CUfunction and CUcontext are opaque, immutable driver handles; the CUDA driver API is
// thread-safe and accepts them from any thread (cust marks its own Function and Context `Send`
// and `Sync` for the same reason). FlashAttention never mutates them after `new`.
unsafe impl Send for KernelFunction {}
// SAFETY: as above.
unsafe impl Sync for KernelFunction {}
// SAFETY: as above.
unsafe impl Send for ContextHandle {}
// SAFETY: as above.
unsafe impl Sync for ContextHandle {}

impl FlashAttention {
    /// Loads the kernels into the current context and raises each kernel's dynamic
    /// shared-memory limit. Fails with [`Error::UnsupportedDevice`](crate::Error::UnsupportedDevice)
    /// below sm_80.
    pub fn new() -> Result<Self> {
        let device = CurrentContext::get_device()?;
        let major = device.get_attribute(DeviceAttribute::ComputeCapabilityMajor)?;
        let minor = device.get_attribute(DeviceAttribute::ComputeCapabilityMinor)?;
        // cust 0.3.2's DeviceAttribute has neither the opt-in shared-memory limit nor the
        // reservation per block; ask the driver.
        let raw_attribute = |attribute| -> Result<usize> {
            let mut value = 0i32;
            // SAFETY: valid out-pointer, attribute and device handle.
            driver("cuDeviceGetAttribute", unsafe {
                cu::cuDeviceGetAttribute(&mut value, attribute, device.as_raw())
            })?;
            Ok(value as usize)
        };
        use cu::CUdevice_attribute::*;
        let smem_optin = raw_attribute(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?;
        check_device(major, minor, smem_optin)?;
        let limits = DeviceLimits {
            multiprocessors: device.get_attribute(DeviceAttribute::MultiprocessorCount)? as usize,
            smem_per_multiprocessor: device.get_attribute(DeviceAttribute::MaxSharedMemoryPerMultiprocessor)? as usize,
            reserved_smem_per_cta: raw_attribute(CU_DEVICE_ATTRIBUTE_RESERVED_SHARED_MEMORY_PER_BLOCK)?,
        };
        let context = current_context()?;
        let module = Module::from_ptx(ptx_for_device(major, minor), &[])?;
        let mut functions = Vec::with_capacity(KERNELS.len());
        for kernel in KERNELS {
            functions.push(load_function(&module, kernel.name, kernel.tile.smem_bytes())?);
        }
        let combine = [Dtype::F16, Dtype::Bf16].map(|dtype| module.get_function(combine_kernel(dtype)));
        let [combine_f16, combine_bf16] = combine;
        let combine = [KernelFunction(combine_f16?.to_raw()), KernelFunction(combine_bf16?.to_raw())];
        let append = KernelFunction(module.get_function(APPEND_KERNEL)?.to_raw());
        // sm_90a code runs on compute capability 9.0 exactly.
        let hopper = if (major, minor) == (9, 0) { Some(load_hopper(smem_optin)?) } else { None };
        let device_name = device.name()?;
        // A cache from an earlier `autotune` on this device and these kernels, if any.
        let tuning = cache_path(&device_name).and_then(|path| TuningTable::load(&path).ok()).unwrap_or_default();
        Ok(Self {
            _module: module,
            functions,
            combine,
            append,
            hopper,
            context,
            compute_capability: (major, minor),
            limits,
            device_name,
            tuning: RwLock::new(tuning),
        })
    }

    /// The compute capability (major, minor) of the device the kernels were loaded for.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.compute_capability
    }

    /// What each kernel costs on this device, as the driver compiled it: registers per thread,
    /// local memory (stack and spills) per thread, and shared memory per CTA.
    pub fn kernel_resources(&self) -> Result<Vec<KernelResources>> {
        let attribute = |function: KernelFunction, attribute| -> Result<usize> {
            let mut value = 0i32;
            // SAFETY: a function handle of our loaded module and a valid out-pointer.
            driver("cuFuncGetAttribute", unsafe { cu::cuFuncGetAttribute(&mut value, attribute, function.0) })?;
            Ok(value as usize)
        };
        use cu::CUfunction_attribute::*;
        KERNELS
            .iter()
            .zip(&self.functions)
            .map(|(kernel, &function)| {
                Ok(KernelResources {
                    kernel,
                    registers: attribute(function, CU_FUNC_ATTRIBUTE_NUM_REGS)?,
                    local_bytes: attribute(function, CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES)?,
                    shared_bytes: kernel.tile.smem_bytes(),
                })
            })
            .collect()
    }

    /// Times every mma.sync tile shape (query rows per CTA x keys per step) on `stream` for each
    /// `[batch, heads, seq, head_dim]` in `shapes`, masked (timed causal) and not, and from then
    /// on uses the fastest for problems of the same class ([`TuningKey`]); the table is saved
    /// under the user's cache directory (and loaded by later [`new`](Self::new) calls on this
    /// device). `show_progress` draws a progress bar on the terminal. Inputs are pseudo-random;
    /// timing is per call in a CUDA graph.
    pub fn autotune(&self, stream: &Stream, shapes: &[[usize; 4]], show_progress: bool) -> Result<Vec<TuningResult>> {
        let candidates = |head_dim: usize, masked: bool| -> Vec<TileShape> {
            KernelVariant::plain_f16(head_dim, masked).kernels().map(|k| TileShape::of(&k.tile)).collect()
        };
        let total: usize = shapes.iter().map(|s| candidates(s[3], false).len() + candidates(s[3], true).len()).sum();
        let bar = if show_progress { ProgressBar::new(total as u64) } else { ProgressBar::hidden() };
        if let Ok(style) = ProgressStyle::with_template("autotune [{bar:30}] {pos}/{len} {msg}") {
            bar.set_style(style);
        }
        let mut results = Vec::new();
        for &shape in shapes {
            let [batch, heads, seq, head_dim] = shape;
            let layout = TensorLayout::bhsd(batch, heads, seq, head_dim);
            let n = layout.required_len().ok_or(Error::TooLarge {
                operand: Operand::Q,
                what: "the element count",
                limit: usize::MAX as u64,
            })?;
            let [q, k, v] = [1u64, 2, 3].map(|seed| DeviceBuffer::from_slice(&pseudo_random_f16(n, seed)));
            let (q, k, v) = (q?, k?, v?);
            let mut o = DeviceBuffer::from_slice(&vec![f16::ZERO; n])?;
            // The masked kernels are timed with the causal mask, their most common use.
            for masked in [false, true] {
                let mut micros = Vec::new();
                for tile in candidates(head_dim, masked) {
                    bar.set_message(format!("{shape:?} masked={masked} tile={tile}"));
                    let options = ForwardOptions::new()
                        .causal(masked)
                        .q_tile_rows(tile.q_tile_rows)
                        .kv_tile_rows(tile.kv_tile_rows);
                    let (tq, tk, tv) =
                        (AttnTensor::new(&q, layout), AttnTensor::new(&k, layout), AttnTensor::new(&v, layout));
                    let us = timing::graph_per_call(stream, 10, 5, |_| {
                        self.forward(stream, &tq, &tk, &tv, &mut AttnTensorMut::new(&mut o, layout), &options)
                    })?;
                    micros.push((tile, us));
                    bar.inc(1);
                }
                let Some(&(chosen, _)) = micros.iter().min_by(|a, b| a.1.total_cmp(&b.1)) else { continue };
                write(&self.tuning).insert(TuningKey::new(head_dim, masked, batch * heads, seq), chosen);
                results.push(TuningResult { shape, masked, micros, chosen });
            }
        }
        bar.finish_and_clear();
        if let Some(path) = cache_path(&self.device_name) {
            read(&self.tuning).save(&path).map_err(|e| Error::TuningCache { path, source: e })?;
        }
        Ok(results)
    }

    /// The measured choices in use (from [`autotune`](Self::autotune) or the cache).
    pub fn tuning(&self) -> TuningTable {
        read(&self.tuning).clone()
    }

    /// The kernel a call of `problem` would launch (validating it as the call would, tuning
    /// applied).
    pub fn selected_kernel(&self, problem: &ForwardProblem<'_>) -> Result<&'static KernelInfo> {
        Ok(plan(&self.tuned(problem), &self.limits)?.kernel)
    }

    /// `problem` with its tile shape taken from the tuning table, unless part of the shape is
    /// forced or there is no entry or it names no kernel of this build (then `kernels::select`'s
    /// rule decides).
    fn tuned<'a>(&self, problem: &ForwardProblem<'a>) -> ForwardProblem<'a> {
        let mut problem = *problem;
        let options = problem.options;
        let [batch, heads, seq_q, head_dim] = problem.q.layout.shape;
        if options.forces_tile() {
            return problem;
        }
        let key = TuningKey::new(head_dim, options.is_masked(), batch.saturating_mul(heads), seq_q);
        // Tuning is timed on the plain f16 kernels; a shape the call's own variant lacks (the
        // score-modifier kernels have no 64-key head-dim-128 tiles) keeps only its height.
        let variant = KernelVariant::for_call(problem.dtype, head_dim, &options, problem.varlen.is_some());
        let exists = |q_rows: usize, kv_rows: Option<usize>| {
            variant
                .kernels()
                .any(|k| k.tile.q_tile_rows == q_rows && kv_rows.is_none_or(|rows| k.tile.kv_tile_rows == rows))
        };
        let Some(TileShape { q_tile_rows, kv_tile_rows }) = read(&self.tuning).get(&key) else {
            return problem;
        };
        if exists(q_tile_rows, None) {
            problem.options = options.q_tile_rows(q_tile_rows);
            if exists(q_tile_rows, Some(kv_tile_rows)) {
                problem.options = problem.options.kv_tile_rows(kv_tile_rows);
            }
        }
        problem
    }

    /// The number of multiprocessors (SMs) of the device.
    pub fn multiprocessors(&self) -> usize {
        self.limits.multiprocessors
    }

    /// What the kernel choice knows of the device: SMs and shared memory.
    pub fn device_limits(&self) -> DeviceLimits {
        self.limits
    }

    /// Enqueues `o = softmax(q·kᵀ·scale [+ mask] [+ ALiBi])·v` on `stream`, for f16 or bf16
    /// tensors ([`Element`]).
    ///
    /// Every argument is checked before launch (see [`plan`](crate::plan::plan)), and so are
    /// the current context, the stream's context and each buffer's allocation; the call returns
    /// once the kernel is enqueued.
    ///
    /// The element type is part of the signature: all four tensors share it, and tensors of
    /// anything but f16 or bf16 do not compile.
    ///
    /// ```compile_fail
    /// # use cust::prelude::*;
    /// # use flashcore::{AttnTensor, AttnTensorMut, FlashAttention, ForwardOptions, TensorLayout};
    /// # fn f(flash: &FlashAttention, stream: &Stream, x: &DeviceBuffer<f32>, o: &mut DeviceBuffer<f32>) {
    /// let layout = TensorLayout::bhsd(1, 1, 16, 64);
    /// let t = AttnTensor::new(x, layout);
    /// flash.forward(stream, &t, &t, &t, &mut AttnTensorMut::new(o, layout), &ForwardOptions::new());
    /// # }
    /// ```
    pub fn forward<T: Element>(
        &self,
        stream: &Stream,
        q: &AttnTensor<'_, T>,
        k: &AttnTensor<'_, T>,
        v: &AttnTensor<'_, T>,
        o: &mut AttnTensorMut<'_, T>,
        options: &ForwardOptions<'_>,
    ) -> Result<()> {
        let problem = ForwardProblem::new(T::DTYPE, arg(q), arg(k), arg(v), arg_mut(o), *options);
        self.run(stream, &problem)
    }

    /// As [`forward`](Self::forward), and also writes the f32 logsumexp of each query row
    /// (natural log, of the scaled scores, as FlashAttention returns it) to `lse`, a contiguous
    /// `[batch, heads, seq_q]` buffer.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_with_lse<T: Element>(
        &self,
        stream: &Stream,
        q: &AttnTensor<'_, T>,
        k: &AttnTensor<'_, T>,
        v: &AttnTensor<'_, T>,
        o: &mut AttnTensorMut<'_, T>,
        lse: &mut DeviceSlice<f32>,
        options: &ForwardOptions<'_>,
    ) -> Result<()> {
        let lse = Some(lse_arg(lse));
        let problem =
            ForwardProblem { lse, ..ForwardProblem::new(T::DTYPE, arg(q), arg(k), arg(v), arg_mut(o), *options) };
        self.run(stream, &problem)
    }

    /// Attention over a variable-length batch, as `flash_attn_varlen_func`: the sequences of
    /// `batch` are packed along the rows of Q, K, V and O, each `[1, heads, total, head_dim]`
    /// (e.g. [`TensorLayout::thd`]); sequence `b`'s queries attend only to its own keys, with
    /// the causal mask and windows aligned to its own bottom-right corner. With `lse`, the f32
    /// logsumexp is written as `[heads, total_q]`, as FlashAttention's varlen call returns it.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_varlen<T: Element>(
        &self,
        stream: &Stream,
        q: &AttnTensor<'_, T>,
        k: &AttnTensor<'_, T>,
        v: &AttnTensor<'_, T>,
        o: &mut AttnTensorMut<'_, T>,
        lse: Option<&mut DeviceSlice<f32>>,
        batch: &VarlenBatch,
        options: &ForwardOptions<'_>,
    ) -> Result<()> {
        let lse = lse.map(|lse| lse_arg(lse));
        let problem = ForwardProblem {
            lse,
            varlen: Some(batch.arg()),
            ..ForwardProblem::new(T::DTYPE, arg(q), arg(k), arg(v), arg_mut(o), *options)
        };
        self.run(stream, &problem)
    }

    /// Incremental decoding, as `flash_attn_with_kvcache`: appends `k_new`/`v_new`
    /// (`[batch, kv_heads, rows, head_dim]`, given together or not at all) to `cache` at each
    /// sequence's current length, then attends from `q` (`[batch, heads, seq_q, head_dim]`) over
    /// each sequence's valid rows (old length + rows), causal and windows aligned to the
    /// bottom-right corner; the cache's lengths then include the new rows.
    ///
    /// When the grid would leave SMs idle (few sequences and heads, short `seq_q`, long
    /// caches), several CTAs share each query block's keys and a combine kernel merges their
    /// results (split-KV; [`ForwardOptions::num_splits`] overrides the choice). Every argument
    /// is checked first: an append that does not fit is [`Error::CacheFull`] and changes
    /// nothing.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_with_kvcache<T: Element>(
        &self,
        stream: &Stream,
        q: &AttnTensor<'_, T>,
        k_new: Option<&AttnTensor<'_, T>>,
        v_new: Option<&AttnTensor<'_, T>>,
        cache: &mut KvCache<T>,
        o: &mut AttnTensorMut<'_, T>,
        options: &ForwardOptions<'_>,
    ) -> Result<()> {
        // The plan reads the cache's lengths where they live; planned again only when the
        // split-KV scratch has to grow first.
        let plan_with = |cache: &KvCache<T>, scratch| {
            let problem = KvCacheProblem {
                dtype: T::DTYPE,
                q: arg(q),
                o: arg_mut(o),
                k_new: k_new.map(arg),
                v_new: v_new.map(arg),
                cache: cache.arg(),
                lengths: cache.lengths(),
                options: *options,
            };
            plan_kv_cache(&problem, &self.limits, scratch)
        };
        let scratch = cache.scratch(0)?;
        let mut kv_plan = plan_with(cache, scratch)?;
        if kv_plan.scratch_len > scratch.1 {
            let scratch = cache.scratch(kv_plan.scratch_len)?;
            kv_plan = plan_with(cache, scratch)?;
        }
        self.check_context(stream)?;
        let mut tensors = vec![(Operand::Q, arg(q)), (Operand::O, arg_mut(o))];
        tensors.extend(k_new.map(|t| (Operand::KNew, arg(t))));
        tensors.extend(v_new.map(|t| (Operand::VNew, arg(t))));
        for (operand, t) in tensors {
            self.check_allocation(operand, t.address, tensor_bytes(&t))?;
        }
        let cache_arg = cache.arg();
        self.check_allocation(Operand::Cache, cache_arg.k, cache_arg.bytes)?;
        self.check_allocation(Operand::Cache, cache_arg.v, cache_arg.bytes)?;
        self.check_slopes(options)?;

        if let Some((grid, mut params)) = kv_plan.append {
            self.launch_raw(stream, self.append, grid, APPEND_THREADS as u32, 0, &mut params)?;
        }
        self.launch(stream, &kv_plan.attention)?;
        if let Some((grid, mut params)) = kv_plan.combine {
            let function = self.combine[(T::DTYPE == Dtype::Bf16) as usize];
            self.launch_raw(stream, function, grid, 32, 0, &mut params)?;
        }
        cache.advance(k_new.map_or(0, |k| k.layout().seq_len()));
        Ok(())
    }

    /// Enqueues a forward call described by raw device addresses.
    ///
    /// Everything [`forward`](Self::forward) checks is still checked, and each tensor must lie
    /// inside one device allocation of this context (asked of the driver).
    ///
    /// # Safety
    /// The memory must stay allocated, and the inputs must not be written by anything else,
    /// until the kernel has finished; `len` fields must not overstate the caller's buffers; the
    /// memory must hold elements of `problem.dtype`; a `varlen` batch must describe valid offsets
    /// in device memory (as [`VarlenBatch::arg`] does).
    pub unsafe fn forward_raw(&self, stream: &Stream, problem: &ForwardProblem<'_>) -> Result<()> {
        self.run(stream, problem)
    }

    /// Validates `problem` (pure checks, then the context and every buffer against the driver)
    /// and launches it.
    fn run(&self, stream: &Stream, problem: &ForwardProblem<'_>) -> Result<()> {
        let launch = self.choose(problem)?;
        self.check_device_memory(stream, problem)?;
        match launch {
            Launch::Hopper(plan) => self.launch_hopper(stream, &plan),
            Launch::MmaSync(plan) => self.launch(stream, &plan),
            Launch::MmaSyncTma(plan, kernel, maps) => self.launch_tma(stream, &plan, kernel, &maps),
        }
    }

    /// The launch a call of `problem` maps to (validated, tuning applied): a Hopper kernel where
    /// the kernel family and the device allow one, else an mma.sync kernel.
    fn choose(&self, problem: &ForwardProblem<'_>) -> Result<Launch> {
        let plan = plan(&self.tuned(problem), &self.limits)?;
        // The Hopper kernels have no tile shapes to tune: judge them on the caller's options.
        let multiprocessors = self.limits.multiprocessors;
        let hopper = plan_hopper(problem, &plan, multiprocessors);
        let family = problem.options.kernel_family_value();
        Ok(match hopper {
            Ok(h) if use_hopper(family, self.hopper.is_some(), &hopper, multiprocessors)? => Launch::Hopper(h),
            // On compute capability 9.0 an mma.sync kernel with a TMA variant runs it (elsewhere
            // no tensor maps are made).
            _ => match self.hopper.as_ref().map(|_| plan_tma(problem, &plan)) {
                Some(Ok((kernel, maps))) => Launch::MmaSyncTma(plan, kernel, maps),
                _ => Launch::MmaSync(plan),
            },
        })
    }

    /// Whether the Hopper (wgmma + TMA) kernels are loaded: compute capability 9.0.
    pub fn has_hopper_kernels(&self) -> bool {
        self.hopper.is_some()
    }

    /// The name of the kernel a call of `problem` would launch, Hopper kernels included
    /// (validating it as the call would).
    pub fn selected_kernel_name(&self, problem: &ForwardProblem<'_>) -> Result<&'static str> {
        Ok(match self.choose(problem)? {
            Launch::Hopper(plan) => plan.kernel.name,
            Launch::MmaSync(plan) => plan.kernel.name,
            Launch::MmaSyncTma(_, kernel, _) => kernel.name,
        })
    }

    fn launch_hopper(&self, stream: &Stream, plan: &HopperPlan) -> Result<()> {
        let module = self.hopper.as_ref().expect("Hopper plans are launched only when the module is loaded");
        let index = HOPPER_KERNELS
            .iter()
            .position(|k| std::ptr::eq(k, plan.kernel))
            .expect("plans name kernels from HOPPER_KERNELS");
        let (mut params, mut batch) = (plan.params, plan.batch);
        let mut maps = encode_tensor_maps(&plan.maps)?;
        let args = [
            &mut params as *mut AttentionParams as *mut c_void,
            maps.as_param(),
            &mut batch as *mut u32 as *mut c_void,
        ];
        self.launch_args(stream, module.functions[index], plan.grid, plan.block, plan.smem_bytes, args)
    }

    fn launch_tma(
        &self,
        stream: &Stream,
        plan: &LaunchPlan,
        kernel: &TmaKernelInfo,
        maps: &[TileMap; 3],
    ) -> Result<()> {
        let module = self.hopper.as_ref().expect("TMA plans are made only when the sm_90a module is loaded");
        let index =
            TMA_KERNELS.iter().position(|k| std::ptr::eq(k, kernel)).expect("plans name kernels from TMA_KERNELS");
        let mut params = plan.params;
        let mut maps = encode_tensor_maps(maps)?;
        let args = [&mut params as *mut AttentionParams as *mut c_void, maps.as_param()];
        let smem = kernel.tile.tma_smem_bytes() as u32;
        self.launch_args(stream, module.tma_functions[index], plan.grid, plan.block, smem, args)
    }

    /// The current context and the stream's must be ours, and every buffer must lie inside one
    /// device allocation of our context.
    fn check_device_memory(&self, stream: &Stream, problem: &ForwardProblem<'_>) -> Result<()> {
        self.check_context(stream)?;
        let tensors =
            [(Operand::Q, &problem.q), (Operand::K, &problem.k), (Operand::V, &problem.v), (Operand::O, &problem.o)];
        for (operand, t) in tensors {
            self.check_allocation(operand, t.address, tensor_bytes(t))?;
        }
        if let Some(lse) = problem.lse {
            let [batch, heads, seq_q, _] = problem.q.layout.shape;
            self.check_allocation(Operand::Lse, lse.address, (batch * heads * seq_q) as u64 * 4)?;
        }
        self.check_slopes(&problem.options)?;
        if let Some(varlen) = problem.varlen {
            let bytes = (varlen.batch as u64 + 1) * 4;
            self.check_allocation(Operand::CuSeqlensQ, varlen.cu_seqlens_q, bytes)?;
            self.check_allocation(Operand::CuSeqlensK, varlen.cu_seqlens_k, bytes)?;
        }
        Ok(())
    }

    /// ALiBi slopes, if any, must lie in one allocation of our context.
    fn check_slopes(&self, options: &ForwardOptions<'_>) -> Result<()> {
        match options.alibi() {
            Some(slopes) => self.check_allocation(Operand::AlibiSlopes, slopes.address, slopes.len as u64 * 4),
            None => Ok(()),
        }
    }

    /// The current context and the stream's must be ours.
    fn check_context(&self, stream: &Stream) -> Result<()> {
        if current_context()? != self.context {
            return Err(Error::WrongContext { what: "current context" });
        }
        let mut stream_context = std::ptr::null_mut();
        // SAFETY: a valid stream handle and out-pointer.
        driver("cuStreamGetCtx", unsafe { cu::cuStreamGetCtx(stream.as_inner(), &mut stream_context) })?;
        if ContextHandle(stream_context) != self.context {
            return Err(Error::WrongContext { what: "stream's context" });
        }
        Ok(())
    }

    fn check_allocation(&self, operand: Operand, address: u64, bytes: u64) -> Result<()> {
        let foreign = Error::ForeignMemory { operand, address };
        let mut context: cu::CUcontext = std::ptr::null_mut();
        // SAFETY: valid out-pointer of the attribute's type (CUcontext); any address may be asked.
        let asked = unsafe {
            cu::cuPointerGetAttribute(
                &mut context as *mut cu::CUcontext as *mut c_void,
                cu::CUpointer_attribute::CU_POINTER_ATTRIBUTE_CONTEXT,
                address,
            )
        };
        match asked {
            cu::CUresult::CUDA_SUCCESS if ContextHandle(context) == self.context => {}
            // Not memory the driver knows, or another context's.
            cu::CUresult::CUDA_SUCCESS | cu::CUresult::CUDA_ERROR_INVALID_VALUE => return Err(foreign),
            // Anything else (a sticky error of the context, say) is itself the answer.
            code => return Err(Error::Driver { call: "cuPointerGetAttribute", code }),
        }
        let (mut base, mut size) = (0u64, 0usize);
        // SAFETY: valid out-pointers; `address` is device memory of our context (checked above).
        driver("cuMemGetAddressRange", unsafe { cu::cuMemGetAddressRange_v2(&mut base, &mut size, address) })?;
        if address.saturating_add(bytes) > base.saturating_add(size as u64) {
            return Err(Error::OutsideAllocation { operand, address, bytes });
        }
        Ok(())
    }

    fn launch(&self, stream: &Stream, plan: &LaunchPlan) -> Result<()> {
        let (mut params, mut extended) = (plan.params, plan.extended);
        let function = self.function(plan.kernel);
        let (grid, block, smem) = (plan.grid, plan.block, plan.smem_bytes);
        if plan.kernel.takes_extended_params() {
            let args = [&mut params as *mut AttentionParams as *mut c_void, &mut extended as *mut _ as *mut c_void];
            self.launch_args(stream, function, grid, block, smem, args)
        } else {
            self.launch_raw(stream, function, grid, block, smem, &mut params)
        }
    }

    /// Launches `function` with one by-value parameter block `P`; see [`Self::launch_args`].
    fn launch_raw<P>(
        &self,
        stream: &Stream,
        function: KernelFunction,
        grid: (u32, u32, u32),
        block: u32,
        smem_bytes: u32,
        params: &mut P,
    ) -> Result<()> {
        self.launch_args(stream, function, grid, block, smem_bytes, [params as *mut P as *mut c_void])
    }

    /// Launches `function` with `N` by-value parameters, `args[i]` pointing at the i-th. Callers
    /// pass a validated plan: grid, block and shared memory match the kernel's configuration, the
    /// parameters are the kernel's parameter types in order, and every address in them is memory
    /// of this context that covers what the kernel reads or writes.
    fn launch_args<const N: usize>(
        &self,
        stream: &Stream,
        function: KernelFunction,
        (x, y, z): (u32, u32, u32),
        block: u32,
        smem_bytes: u32,
        mut args: [*mut c_void; N],
    ) -> Result<()> {
        // SAFETY: the plan's guarantees above; `args` outlives the call, which copies the
        // parameter block.
        driver("cuLaunchKernel", unsafe {
            cu::cuLaunchKernel(
                function.0,
                x,
                y,
                z,
                block,
                1,
                1,
                smem_bytes,
                stream.as_inner(),
                args.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        })
    }

    fn function(&self, kernel: &KernelInfo) -> KernelFunction {
        let index = KERNELS.iter().position(|k| std::ptr::eq(k, kernel)).expect("plans name kernels from KERNELS");
        self.functions[index]
    }
}

/// Loads the sm_90a module (the wgmma kernels with the register cap their `setmaxnreg` needs,
/// the TMA variants with their own) and raises each entry point's dynamic shared-memory limit.
fn load_hopper(smem_optin: usize) -> Result<HopperModule> {
    // Caps per entry point (`.maxnreg`), not for the module: its TMA variants of mma.sync kernels
    // keep their own budget.
    let ptx = hopper_capped_ptx(HOPPER_PTX, TMA_KERNELS.iter().map(|k| (k.name, k.tile)));
    let module = Module::from_ptx(&ptx, &[])?;
    // Entry points (name, shared memory needed), each checked against the device's opt-in limit.
    let load_all = |entries: &mut dyn Iterator<Item = (&'static str, usize)>| -> Result<Vec<KernelFunction>> {
        entries
            .map(|(kernel, needed)| {
                if needed > smem_optin {
                    return Err(Error::SharedMemory { kernel, needed, available: smem_optin });
                }
                load_function(&module, kernel, needed)
            })
            .collect()
    };
    let functions = load_all(&mut HOPPER_KERNELS.iter().map(|k| (k.name, k.config.smem_bytes())))?;
    let tma_functions = load_all(&mut TMA_KERNELS.iter().map(|k| (k.name, k.tile.tma_smem_bytes())))?;
    Ok(HopperModule { _module: module, functions, tma_functions })
}

/// Entry point `name` of `module`, its dynamic shared-memory limit raised to `smem_bytes`.
fn load_function(module: &Module, name: &str, smem_bytes: usize) -> Result<KernelFunction> {
    let function = module.get_function(name)?.to_raw();
    // SAFETY: `function` belongs to `module`, which the caller keeps alive; the attribute and
    // value are valid.
    driver("cuFuncSetAttribute", unsafe {
        cu::cuFuncSetAttribute(
            function,
            cu::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            smem_bytes as i32,
        )
    })?;
    Ok(KernelFunction(function))
}

/// The tuning table for reading; a panic elsewhere cannot leave it half-written (entries are
/// inserted whole), so a poisoned lock is still usable.
fn read(table: &RwLock<TuningTable>) -> std::sync::RwLockReadGuard<'_, TuningTable> {
    table.read().unwrap_or_else(|e| e.into_inner())
}

/// The tuning table for writing (see [`read`]).
fn write(table: &RwLock<TuningTable>) -> std::sync::RwLockWriteGuard<'_, TuningTable> {
    table.write().unwrap_or_else(|e| e.into_inner())
}

/// `n` f16 values spread over [-2, 2) from a xorshift generator: realistic data for timing
/// (zeros run faster than real data), not for statistics.
fn pseudo_random_f16(n: usize, seed: u64) -> Vec<f16> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            f16::from_f32((state >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0)
        })
        .collect()
}

/// The calling thread's current context.
fn current_context() -> Result<ContextHandle> {
    let mut context = std::ptr::null_mut();
    // SAFETY: valid out-pointer.
    driver("cuCtxGetCurrent", unsafe { cu::cuCtxGetCurrent(&mut context) })?;
    Ok(ContextHandle(context))
}

fn arg<T: Element>(t: &AttnTensor<'_, T>) -> TensorArg {
    tensor_arg(t.data(), t.layout())
}

fn arg_mut<T: Element>(t: &AttnTensorMut<'_, T>) -> TensorArg {
    tensor_arg(t.data(), t.layout())
}

fn tensor_arg<T: Element>(data: &DeviceSlice<T>, layout: TensorLayout) -> TensorArg {
    TensorArg { address: data.as_raw_ptr(), len: data.len(), layout }
}

fn lse_arg(lse: &DeviceSlice<f32>) -> LseArg {
    LseArg { address: lse.as_raw_ptr(), len: lse.len() }
}

/// Bytes a validated tensor reaches (its extent is known not to overflow).
fn tensor_bytes(t: &TensorArg) -> u64 {
    t.layout.required_len().unwrap_or(0) as u64 * 2
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
