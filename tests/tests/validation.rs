//! Argument validation: every way to get a forward call wrong maps to its typed error before
//! anything is launched (`plan` is what every forward call runs first). No GPU needed.

use flashcore::kernels::{check_device, DeviceLimits};
use flashcore::plan::{plan, ForwardProblem, LseArg, TensorArg, MAX_HEAD_SPAN};
use flashcore::{Dim, Dtype, Error, ForwardOptions, Operand, TensorLayout};
use flashcore_tests::H100;

const GIB: u64 = 1 << 30;
/// Multiprocessors of the device the plans are made for.
const SMS: usize = H100.multiprocessors;

/// A valid problem: four disjoint, aligned fake device buffers of `[B,H,S,D]` tensors.
fn problem(b: usize, h: usize, s: usize, d: usize) -> ForwardProblem<'static> {
    let layout = TensorLayout::bhsd(b, h, s, d);
    let len = layout.required_len().unwrap();
    let arg = |i: u64| TensorArg { address: (i + 1) * 16 * GIB, len, layout };
    ForwardProblem::new(Dtype::F16, arg(0), arg(1), arg(2), arg(3), ForwardOptions::new())
}

fn err(p: &ForwardProblem) -> Error {
    plan(p, &H100).expect_err("the problem is invalid")
}

#[test]
fn valid_problem_plans_the_expected_launch() {
    let mut p = problem(2, 3, 1000, 64);
    p.lse = Some(LseArg { address: 80 * GIB, len: 2 * 3 * 1000 });
    let plan = plan(&p, &H100).unwrap();
    assert_eq!(plan.kernel.name, "attention_fwd_d64_q64_f16");
    assert_eq!(plan.grid, (1000usize.div_ceil(plan.kernel.tile.q_tile_rows) as u32, 3, 2));
    assert_eq!(plan.block as usize, plan.kernel.tile.threads());
    assert_eq!(plan.smem_bytes as usize, plan.kernel.tile.smem_bytes());
    assert_eq!((plan.params.seq_q, plan.params.seq_k, plan.params.heads), (1000, 1000, 3));
    assert_eq!(plan.params.q_strides.row, 64);
    assert_eq!(plan.params.lse, 80 * GIB);
    let expected = (1.0 / 8.0) * std::f32::consts::LOG2_E;
    assert!((plan.params.scale_log2 - expected).abs() < 1e-7);
}

#[test]
fn configuration_follows_head_dim_and_causality() {
    let mut p = problem(1, 1, 128, 128);
    p.options = ForwardOptions::new().causal(true);
    assert_eq!(plan(&p, &H100).unwrap().kernel.name, "attention_fwd_d128_q64_f16_masked");
    p.options = ForwardOptions::new().causal(true).softmax_scale(0.5);
    assert_eq!(plan(&p, &H100).unwrap().params.scale_log2, 0.5 * std::f32::consts::LOG2_E);
}

#[test]
fn tall_tiles_when_they_still_fill_the_gpu() {
    // 8·16 heads x 2048/128 blocks = 2048 CTAs: the 128-row tiles.
    let p = problem(8, 16, 2048, 128);
    assert_eq!(plan(&p, &H100).unwrap().kernel.tile.q_tile_rows, 128);
    // 1·8 heads x 512/128 = 32 CTAs for 132 SMs: the 64-row tiles (64 CTAs).
    let p = problem(1, 8, 512, 64);
    assert_eq!(plan(&p, &H100).unwrap().kernel.tile.q_tile_rows, 64);
    // ... which on a small GPU would be enough for the tall ones.
    assert_eq!(plan(&p, &DeviceLimits { multiprocessors: 24, ..H100 }).unwrap().kernel.tile.q_tile_rows, 128);
    // Forcing a configuration.
    let mut p = problem(8, 16, 2048, 64);
    p.options = ForwardOptions::new().q_tile_rows(64);
    assert_eq!(plan(&p, &H100).unwrap().kernel.name, "attention_fwd_d64_q64_f16");
    assert_eq!(plan(&p, &H100).unwrap().grid, (32, 16, 8));
    p.options = ForwardOptions::new().q_tile_rows(96);
    assert!(matches!(
        plan(&p, &H100),
        Err(Error::UnsupportedTile { q_tile_rows: Some(96), kv_tile_rows: None, head_dim: 64 })
    ));
}

/// An A100 (sm_80): 108 SMs, 164 KiB of shared memory per SM.
const A100: DeviceLimits =
    DeviceLimits { multiprocessors: 108, smem_per_multiprocessor: 164 * 1024, reserved_smem_per_cta: 1024 };
/// An L4 (sm_89): 58 SMs, 100 KiB of shared memory per SM.
const L4: DeviceLimits =
    DeviceLimits { multiprocessors: 58, smem_per_multiprocessor: 100 * 1024, reserved_smem_per_cta: 1024 };

#[test]
fn keys_per_step_widen_only_where_two_ctas_still_fit_an_sm() {
    let name = |p: &ForwardProblem, device: &DeviceLimits| plan(p, device).unwrap().kernel.name;
    let mut p = problem(8, 16, 2048, 128);
    for causal in [false, true] {
        p.options = ForwardOptions::new().causal(causal);
        let suffix = if causal { "_masked" } else { "" };
        // 228 KiB per SM holds two 97 KiB CTAs (96 KiB of tiles + the 1 KiB reservation): 64 keys.
        assert_eq!(name(&p, &H100), format!("attention_fwd_d128_q128_k64_f16{suffix}"));
        // 164 KiB holds two 65 KiB CTAs but one of 97; 100 KiB one of either: 32 keys.
        for device in [A100, L4] {
            assert_eq!(name(&p, &device), format!("attention_fwd_d128_q128_f16{suffix}"), "{device:?}");
        }
        // Forcing either width, on any device (the kernels fit any supported SM's block limit).
        p.options = p.options.kv_tile_rows(32);
        assert_eq!(name(&p, &H100), format!("attention_fwd_d128_q128_f16{suffix}"));
        p.options = p.options.kv_tile_rows(64);
        assert_eq!(name(&p, &L4), format!("attention_fwd_d128_q128_k64_f16{suffix}"));
    }
    // The reservation counts: with 4 KiB per CTA, two 96 KiB CTAs no longer fit 196 KiB.
    let tight = DeviceLimits { smem_per_multiprocessor: 196 * 1024, ..H100 };
    p.options = ForwardOptions::new();
    assert_eq!(name(&p, &tight), "attention_fwd_d128_q128_k64_f16");
    assert_eq!(name(&p, &DeviceLimits { reserved_smem_per_cta: 4096, ..tight }), "attention_fwd_d128_q128_f16");
    // Score modifiers have no 64-key kernels of 128 rows: the 32-key ones on every device;
    // forcing 64 keys finds the 64-row tiles, which have them, and forcing both is an error, not
    // a silent substitute.
    p.options = ForwardOptions::new().softcap(30.0);
    assert_eq!(name(&p, &H100), "attention_fwd_d128_q128_f16_scoremod");
    p.options = p.options.kv_tile_rows(64);
    assert_eq!(name(&p, &H100), "attention_fwd_d128_q64_f16_scoremod");
    p.options = p.options.q_tile_rows(128);
    assert!(matches!(
        plan(&p, &H100),
        Err(Error::UnsupportedTile { q_tile_rows: Some(128), kv_tile_rows: Some(64), head_dim: 128 })
    ));
    // Short problems take the 64-row tiles, which come with 64 keys only.
    let p = problem(1, 8, 512, 128);
    assert_eq!(name(&p, &H100), "attention_fwd_d128_q64_f16");
    // Head dim 64 has one width per height; forcing another is an error that names it.
    let mut p = problem(8, 16, 2048, 64);
    p.options = ForwardOptions::new().q_tile_rows(128).kv_tile_rows(32);
    let e = plan(&p, &H100).unwrap_err();
    assert!(matches!(e, Error::UnsupportedTile { q_tile_rows: Some(128), kv_tile_rows: Some(32), head_dim: 64 }));
    assert_eq!(e.to_string(), "no kernel for this call with head_dim 64, 128 query rows per CTA and 32 keys per step");
}

#[test]
fn bshd_layout_is_accepted_with_its_strides() {
    let mut p = problem(2, 4, 100, 128);
    let layout = TensorLayout::bshd(2, 100, 4, 128);
    for t in [&mut p.q, &mut p.k, &mut p.v, &mut p.o] {
        t.layout = layout;
    }
    let plan = plan(&p, &H100).unwrap();
    assert_eq!(plan.params.k_strides.row, 4 * 128);
    assert_eq!(plan.params.k_strides.head, 128);
    assert_eq!(plan.params.k_strides.batch, 100 * 4 * 128);
}

#[test]
fn different_key_lengths_are_fine_causal_or_not() {
    for causal in [false, true] {
        for seq_k in [300, 40] {
            let mut p = problem(1, 2, 100, 64);
            let kv = TensorLayout::bhsd(1, 2, seq_k, 64);
            for t in [&mut p.k, &mut p.v] {
                t.layout = kv;
                t.len = kv.required_len().unwrap();
            }
            p.options = ForwardOptions::new().causal(causal);
            let plan = plan(&p, &H100).unwrap();
            assert_eq!((plan.params.seq_q, plan.params.seq_k), (100, seq_k as u32));
        }
    }
}

#[test]
fn windows_select_the_masked_kernels_and_reach_the_launch() {
    let mut p = problem(1, 2, 100, 64);
    p.options = ForwardOptions::new().window(32, 8);
    let plan = plan(&p, &H100).unwrap();
    assert!(plan.kernel.masked);
    assert_eq!((plan.params.window_left, plan.params.window_right), (32, 8));
    // Causal sets the right side to 0; -1 is unbounded.
    p.options = ForwardOptions::new().causal(true).window(-1, 8);
    let plan = planned(&p);
    assert_eq!((plan.params.window_left, plan.params.window_right), (-1, 0));
    // No window, no causal: the unmasked kernels.
    p.options = ForwardOptions::new();
    assert!(!planned(&p).kernel.masked);
    // A window wider than both sequences covers every key: capped at seq_q + seq_k.
    p.options = ForwardOptions::new().window(i32::MAX, i32::MAX);
    let plan = planned(&p);
    assert_eq!((plan.params.window_left, plan.params.window_right), (200, 200));
    for (left, right) in [(-2, 0), (0, -3), (i32::MIN, -1)] {
        p.options = ForwardOptions::new().window(left, right);
        assert!(matches!(err(&p), Error::InvalidWindow { .. }), "({left}, {right})");
    }
}

fn planned(p: &ForwardProblem) -> flashcore::plan::LaunchPlan {
    plan(p, &H100).unwrap()
}

#[test]
fn softcap_selects_its_kernels_and_scales() {
    let mut p = problem(1, 2, 100, 128);
    p.options = ForwardOptions::new().causal(true).softcap(20.0).softmax_scale(0.5);
    let plan = planned(&p);
    assert!(plan.kernel.score_mods && plan.kernel.masked);
    assert_eq!(plan.extended.softcap, 20.0);
    assert_eq!(plan.extended.softcap_scale, 0.5 / 20.0);
    assert_eq!(plan.params.scale_log2, std::f32::consts::LOG2_E);
    p.options = ForwardOptions::new();
    assert!(!planned(&p).kernel.score_mods);
    for cap in [-1.0, f32::NAN, f32::INFINITY] {
        p.options = ForwardOptions::new().softcap(cap);
        assert!(matches!(err(&p), Error::InvalidSoftcap(_)), "{cap}");
    }
}

#[test]
fn grouped_query_attention_maps_query_heads_onto_kv_heads() {
    for (q_heads, kv_heads) in [(8, 2), (8, 1), (6, 3), (4, 4)] {
        let mut p = problem(2, q_heads, 128, 128);
        let kv = TensorLayout::bhsd(2, kv_heads, 128, 128);
        for t in [&mut p.k, &mut p.v] {
            t.layout = kv;
            t.len = kv.required_len().unwrap();
        }
        let plan = plan(&p, &H100).unwrap();
        assert_eq!(plan.params.kv_group as usize, q_heads / kv_heads);
        assert_eq!(plan.grid.1 as usize, q_heads);
    }
    let mut p = problem(1, 8, 64, 64);
    let kv = TensorLayout::bhsd(1, 3, 64, 64);
    for t in [&mut p.k, &mut p.v] {
        t.layout = kv;
        t.len = kv.required_len().unwrap();
    }
    assert!(matches!(err(&p), Error::HeadsNotDivisible { q_heads: 8, kv_heads: 3 }));
}

#[test]
fn shape_mismatches() {
    // K defines the K/V head count; V must agree with it.
    let mut p = problem(1, 2, 64, 64);
    p.k.layout = TensorLayout::bhsd(1, 1, 64, 64);
    assert!(matches!(err(&p), Error::ShapeMismatch { operand: Operand::V, dim: Dim::Heads, expected: 1, actual: 2 }));

    let mut p = problem(1, 2, 64, 64);
    p.v.layout = TensorLayout::bhsd(1, 2, 32, 64);
    assert!(matches!(err(&p), Error::ShapeMismatch { operand: Operand::V, dim: Dim::SeqLen, .. }));

    let mut p = problem(2, 2, 64, 64);
    p.o.layout = TensorLayout::bhsd(1, 2, 64, 64);
    assert!(matches!(err(&p), Error::ShapeMismatch { operand: Operand::O, dim: Dim::Batch, .. }));

    let mut p = problem(1, 2, 64, 64);
    p.k.layout = TensorLayout::bhsd(1, 2, 64, 128);
    assert!(matches!(err(&p), Error::ShapeMismatch { operand: Operand::K, dim: Dim::HeadDim, .. }));
}

#[test]
fn unsupported_head_dims() {
    for d in [8, 16, 48, 100, 192, 512] {
        let p = problem(1, 1, 16, d);
        assert!(matches!(err(&p), Error::UnsupportedHeadDim(x) if x == d), "head_dim {d}");
    }
}

#[test]
fn head_dim_must_be_contiguous() {
    let mut p = problem(1, 1, 16, 64);
    p.v.layout = TensorLayout::new([1, 1, 16, 64], [64 * 16 * 2, 64 * 16 * 2, 128, 2]);
    p.v.len = p.v.layout.required_len().unwrap();
    assert!(matches!(err(&p), Error::HeadDimNotContiguous { operand: Operand::V, stride: 2 }));
}

#[test]
fn misaligned_pointers_and_strides() {
    let mut p = problem(1, 1, 16, 64);
    p.k.address += 2;
    assert!(matches!(err(&p), Error::MisalignedPointer { operand: Operand::K, alignment: 16, .. }));

    let mut p = problem(1, 2, 16, 64);
    p.q.layout = TensorLayout::new([1, 2, 16, 64], [2 * 16 * 68, 16 * 68, 68, 1]);
    p.q.len = p.q.layout.required_len().unwrap();
    assert!(matches!(err(&p), Error::MisalignedStride { operand: Operand::Q, dim: Dim::SeqLen, stride: 68 }));

    let mut p = problem(1, 2, 16, 64);
    p.o.layout = TensorLayout::new([1, 2, 16, 64], [4096, 16 * 64 + 4, 64, 1]);
    p.o.len = p.o.layout.required_len().unwrap();
    assert!(matches!(err(&p), Error::MisalignedStride { operand: Operand::O, dim: Dim::Heads, .. }));

    // A stride of a dimension of size 1 is never used, so it may be anything.
    let mut p = problem(1, 1, 16, 64);
    p.q.layout = TensorLayout::new([1, 1, 16, 64], [3, 5, 64, 1]);
    assert!(plan(&p, &H100).is_ok());

    let mut p = problem(1, 1, 16, 64);
    p.lse = Some(LseArg { address: 80 * GIB + 2, len: 16 });
    assert!(matches!(err(&p), Error::MisalignedPointer { operand: Operand::Lse, alignment: 4, .. }));
}

#[test]
fn zero_dimensions() {
    for (i, dim) in [Dim::Batch, Dim::Heads, Dim::SeqLen, Dim::HeadDim].into_iter().enumerate() {
        let mut p = problem(1, 2, 16, 64);
        let mut shape = [1, 2, 16, 64];
        shape[i] = 0;
        p.k.layout = TensorLayout::new(shape, p.k.layout.strides);
        assert!(matches!(err(&p), Error::ZeroDim { operand: Operand::K, dim: d } if d == dim), "{dim}");
    }
}

#[test]
fn buffers_too_small() {
    let mut p = problem(2, 2, 64, 64);
    p.v.len -= 1;
    assert!(matches!(err(&p), Error::BufferTooSmall { operand: Operand::V, .. }));

    let mut p = problem(2, 2, 64, 64);
    p.lse = Some(LseArg { address: 80 * GIB, len: 2 * 2 * 64 - 1 });
    assert!(matches!(err(&p), Error::BufferTooSmall { operand: Operand::Lse, required: 256, len: 255 }));
}

#[test]
fn sizes_past_the_kernels_index_math() {
    // One head spanning more than 2^31 elements.
    let mut p = problem(1, 1, 1 << 16, 64);
    p.q.layout = TensorLayout::new([1, 1, 1 << 16, 64], [0, 0, 1 << 16, 1]);
    p.q.len = usize::MAX;
    assert!(matches!(err(&p), Error::TooLarge { operand: Operand::Q, limit, .. } if limit == MAX_HEAD_SPAN));

    // More heads than the grid's y dimension holds.
    let p = problem(1, 70_000, 1, 64);
    assert!(matches!(err(&p), Error::TooLarge { what: "heads", .. }));
    let p = problem(70_000, 1, 1, 64);
    assert!(matches!(err(&p), Error::TooLarge { what: "batch", .. }));

    // A layout whose extent overflows usize.
    let mut p = problem(3, 1, 16, 64);
    p.k.layout = TensorLayout::new([3, 1, 16, 64], [usize::MAX / 2 + 1, 0, 64, 1]);
    assert!(matches!(err(&p), Error::TooLarge { operand: Operand::K, .. }));
}

#[test]
fn outputs_must_not_alias_inputs() {
    let mut p = problem(1, 2, 64, 64);
    p.o.address = p.q.address;
    assert!(matches!(err(&p), Error::Aliasing { output: Operand::O, input: Operand::Q }));

    // Partial overlap: O starts inside V.
    let mut p = problem(1, 2, 64, 64);
    p.o.address = p.v.address + 1024;
    assert!(matches!(err(&p), Error::Aliasing { output: Operand::O, input: Operand::V }));

    let mut p = problem(1, 2, 64, 64);
    p.lse = Some(LseArg { address: p.o.address + 4096, len: 128 });
    assert!(matches!(err(&p), Error::Aliasing { output: Operand::Lse, input: Operand::O }));

    // Reading K and V from the same memory is fine: only outputs may not overlap.
    let mut p = problem(1, 2, 64, 64);
    p.v.address = p.k.address;
    assert!(plan(&p, &H100).is_ok());
}

#[test]
fn scale_must_be_finite_and_positive() {
    for scale in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.125] {
        let mut p = problem(1, 1, 16, 64);
        p.options = ForwardOptions::new().softmax_scale(scale);
        assert!(matches!(err(&p), Error::InvalidScale(_)));
    }
}

#[test]
fn devices_below_sm80_and_small_shared_memory_are_refused() {
    assert!(matches!(check_device(7, 5, 64 * 1024), Err(Error::UnsupportedDevice { major: 7, minor: 5 })));
    assert!(matches!(check_device(6, 1, 96 * 1024), Err(Error::UnsupportedDevice { .. })));
    assert!(matches!(check_device(8, 0, 48 * 1024), Err(Error::SharedMemory { available: 49152, .. })));
    // sm_89 (L4) grants 99 KiB per block; sm_86 too; sm_80 163 KiB; sm_90 227 KiB.
    for (major, minor, kib) in [(8, 0, 163), (8, 6, 99), (8, 9, 99), (9, 0, 227)] {
        assert!(check_device(major, minor, kib * 1024).is_ok(), "sm_{major}{minor}");
    }
}

#[test]
fn errors_read_well() {
    let mut p = problem(1, 2, 64, 64);
    p.k.layout = TensorLayout::bhsd(1, 1, 64, 64);
    assert_eq!(err(&p).to_string(), "V: heads is 2, expected 1");
    assert_eq!(
        err(&problem(1, 1, 16, 48)).to_string(),
        "head_dim 48 is not supported (supported: [32, 64, 96, 128, 256])"
    );
}

mod hopper {
    use super::*;
    use flashcore::hopper::{plan_hopper, use_hopper};
    use flashcore::KernelFamily;

    fn hopper_plan(p: &ForwardProblem) -> Result<flashcore::hopper::HopperPlan, &'static str> {
        plan_hopper(p, &plan(p, &H100).expect("valid"), SMS)
    }

    #[test]
    fn plain_and_masked_head_dims_64_and_128_get_a_hopper_plan() {
        for (d, causal, name) in
            [(64, false, "attention_fwd_hopper_d64_f16"), (128, true, "attention_fwd_hopper_d128_f16_masked")]
        {
            let mut p = problem(2, 4, 1000, d);
            p.options = ForwardOptions::new().causal(causal);
            let h = hopper_plan(&p).expect("eligible");
            assert_eq!(h.kernel.name, name);
            // 8 query blocks x 4 heads x 2 sequences = 64 work tiles, one CTA each (fewer than
            // the SMs, and masked kernels always get one per tile).
            assert_eq!((h.tiles, h.grid, h.batch), (64, (64, 1, 1), 2));
            assert_eq!(h.block, 384);
            assert_eq!(h.maps[0].dims, [d as u64, 1000, 4, 2]);
            assert_eq!(h.maps[1].strides, [2 * d as u64, 2 * 1000 * d as u64, 2 * 4 * 1000 * d as u64]);
            assert_eq!((h.maps[0].box_rows, h.maps[1].box_rows), (128, 128));
        }
    }

    #[test]
    fn what_the_hopper_kernels_leave_to_mma_sync() {
        let p = problem(1, 2, 100, 32);
        assert!(hopper_plan(&p).unwrap_err().contains("head dims"));
        let mut p = problem(1, 2, 100, 64);
        p.options = ForwardOptions::new().softcap(30.0);
        assert!(hopper_plan(&p).unwrap_err().contains("softcap"));
        p.options = ForwardOptions::new().q_tile_rows(64);
        assert!(hopper_plan(&p).unwrap_err().contains("q_tile_rows"));
        p.options = ForwardOptions::new().kv_tile_rows(64);
        assert!(hopper_plan(&p).unwrap_err().contains("kv_tile_rows"));
        // K/V shared by every sequence (batch stride 0): valid, but not a TMA tensor.
        let mut p = problem(2, 2, 100, 64);
        p.k.layout = TensorLayout::new([2, 2, 100, 64], [0, 100 * 64, 64, 1]);
        p.v = p.k;
        assert!(plan(&p, &H100).is_ok());
        assert!(hopper_plan(&p).unwrap_err().contains("16-byte"));
    }

    #[test]
    fn families_choose_and_insist() {
        let big = problem(8, 16, 2048, 64);
        let ok = hopper_plan(&big);
        assert!(!use_hopper(KernelFamily::MmaSync, true, &ok, SMS).unwrap());
        assert!(use_hopper(KernelFamily::Auto, true, &ok, SMS).unwrap());
        assert!(!use_hopper(KernelFamily::Auto, false, &ok, SMS).unwrap());
        assert!(use_hopper(KernelFamily::Wgmma, true, &ok, SMS).unwrap());
        let no_device = use_hopper(KernelFamily::Wgmma, false, &ok, SMS).unwrap_err();
        assert!(matches!(no_device, Error::KernelFamilyUnavailable { .. }), "{no_device}");
        // Large problems: one CTA per SM, looping over the work tiles; masked, one per tile.
        assert_eq!(ok.as_ref().unwrap().grid, (SMS as u32, 1, 1));
        let mut causal = problem(8, 16, 2048, 64);
        causal.options = ForwardOptions::new().causal(true);
        assert_eq!(hopper_plan(&causal).unwrap().grid, (16 * 8 * 16, 1, 1));
        let small = hopper_plan(&problem(1, 8, 512, 64));
        // Auto keeps small head-dim-64 launches on mma.sync (faster to start); Wgmma insists.
        assert!(!use_hopper(KernelFamily::Auto, true, &small, SMS).unwrap());
        assert!(use_hopper(KernelFamily::Wgmma, true, &small, SMS).unwrap());
        // Masked head dim 64: up to 512 query rows on mma.sync (three capped 64-row CTAs per SM
        // beat it), from 1024 on the Hopper kernel; unmasked ones of the same size on Hopper.
        for (seq, batch, hopper) in [(256, 64, false), (512, 16, false), (1024, 8, true)] {
            let mut p = problem(batch, 16, seq, 64);
            p.options = ForwardOptions::new().causal(true);
            assert_eq!(use_hopper(KernelFamily::Auto, true, &hopper_plan(&p), SMS).unwrap(), hopper, "causal S={seq}");
            assert!(use_hopper(KernelFamily::Wgmma, true, &hopper_plan(&p), SMS).unwrap());
            let plain = problem(batch, 16, seq, 64);
            assert!(use_hopper(KernelFamily::Auto, true, &hopper_plan(&plain), SMS).unwrap(), "S={seq}");
        }
        let mut p = problem(1, 2, 100, 64);
        p.options = ForwardOptions::new().softcap(30.0);
        let refused = use_hopper(KernelFamily::Wgmma, true, &hopper_plan(&p), SMS).unwrap_err();
        assert!(matches!(refused, Error::KernelFamilyUnavailable { reason } if reason.contains("softcap")));
    }
}
