//! The embedded PTX: built for sm_80, and holding every entry point the host expects with the
//! instructions the design relies on. No GPU needed.

use flashcore::kernels::{combine_kernel, APPEND_KERNEL, KERNELS, PTX};
use flashcore::{Dtype, PAGE_ROWS_MULTIPLE, SUPPORTED_HEAD_DIMS};

/// The body of entry point `name` in the sm_80 PTX (from its `.entry` line to the next entry or
/// the end).
fn entry_body(name: &str) -> &'static str {
    entry_body_in(PTX, name)
}

/// The body of entry point `name` in `ptx`.
fn entry_body_in<'a>(ptx: &'a str, name: &str) -> &'a str {
    let header = format!(".entry {name}(");
    let start = ptx.find(&header).unwrap_or_else(|| panic!("no entry point {name} in the PTX"));
    let rest = &ptx[start + header.len()..];
    let end = rest.find(".entry ").unwrap_or(rest.len());
    &rest[..end]
}

#[test]
fn ptx_targets_sm80() {
    assert!(PTX.lines().any(|l| l.trim() == ".target sm_80"), "PTX must target sm_80 so it runs on sm_80..sm_90");
}

#[test]
fn every_kernel_is_an_entry_point_with_the_expected_instructions() {
    // 9 tile configurations x 8 variants, 1 x 4 without score modifiers, and 5 x 8 varlen ones.
    assert_eq!(KERNELS.len(), 116);
    for kernel in KERNELS {
        let body = entry_body(kernel.name);
        let mma = match kernel.dtype {
            Dtype::F16 => "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32",
            Dtype::Bf16 => "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32",
        };
        for instruction in [
            mma,
            "ldmatrix.sync.aligned.m8n8.x4.shared.b16",
            "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16",
            "cp.async.cg.shared.global",
            "cp.async.wait_group",
            "ex2.approx.ftz.f32",
            "shfl.sync.bfly.b32",
            "st.global.v4.b32",
        ] {
            assert!(body.contains(instruction), "{}: no {instruction}", kernel.name);
        }
        // Register tiles must stay in registers: no local-memory traffic.
        assert!(!body.contains("ld.local") && !body.contains("st.local"), "{}: uses local memory", kernel.name);
    }
}

#[test]
fn every_variant_exists_for_every_head_dim() {
    for head_dim in SUPPORTED_HEAD_DIMS {
        for dtype in [Dtype::F16, Dtype::Bf16] {
            for (masked, score_mods, varlen) in (0..8).map(|i| (i & 1 != 0, i & 2 != 0, i & 4 != 0)) {
                let found = KERNELS.iter().any(|k| {
                    (k.tile.head_dim, k.dtype, k.masked, k.score_mods, k.varlen)
                        == (head_dim, dtype, masked, score_mods, varlen)
                });
                assert!(
                    found,
                    "no kernel for d{head_dim} {dtype:?} masked={masked} score_mods={score_mods} varlen={varlen}"
                );
            }
        }
    }
    for name in [combine_kernel(Dtype::F16), combine_kernel(Dtype::Bf16), APPEND_KERNEL] {
        entry_body(name);
    }
}

#[test]
fn kv_tiles_never_straddle_pages() {
    for kernel in KERNELS.iter().filter(|k| k.varlen) {
        assert_eq!(PAGE_ROWS_MULTIPLE % kernel.tile.kv_tile_rows, 0, "{}", kernel.name);
    }
}

#[test]
fn tile_configurations_are_consistent() {
    for kernel in KERNELS {
        assert!(kernel.tile.is_consistent(), "{}", kernel.name);
        // Fits sm_89's (and sm_86's) 99 KiB of shared memory per block.
        assert!(kernel.tile.smem_bytes() <= 99 * 1024, "{}", kernel.name);
    }
}

#[test]
fn the_warps_m_tiles_cover_every_q_row_once() {
    for kernel in KERNELS {
        let tile = kernel.tile;
        let mut owners = vec![0; tile.q_tile_rows];
        for warp in 0..tile.warps {
            for m in 0..tile.m_tiles {
                for row in 0..16 {
                    owners[tile.warp_first_row(warp) + tile.m_tile_offset(m) + row] += 1;
                }
            }
        }
        assert!(owners.iter().all(|&n| n == 1), "{}: {owners:?}", kernel.name);
        if tile.interleaved_m_tiles {
            // M-tile m of every warp lies in the m-th of `m_tiles` equal parts of the tile: each
            // warp holds rows of every part, which evens out a causal diagonal's work.
            for m in 0..tile.m_tiles {
                assert_eq!(tile.m_tile_offset(m), m * tile.q_tile_rows / tile.m_tiles, "{}", kernel.name);
            }
        }
    }
}

/// The `.param` declarations of entry point `name`, as (size in bytes) in order.
fn entry_param_sizes(name: &str) -> Vec<usize> {
    let body = entry_body(name);
    let params = &body[..body.find(')').expect("parameter list closes")];
    params
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            line.starts_with(".param").then(|| {
                let size = &line[line.rfind('[').expect("by-value block") + 1..line.rfind(']').expect("closes")];
                size.parse().expect("a byte count")
            })
        })
        .collect()
}

#[test]
fn plain_kernels_take_the_small_parameter_block_and_the_others_both() {
    use flashcore::abi::{AttentionParams, ExtendedParams};
    let (core, extended) = (size_of::<AttentionParams>(), size_of::<ExtendedParams>());
    // Each launch copies the block: the plain kernels' must not outgrow the foundation's 176 B.
    assert!(core <= 176, "AttentionParams is {core} bytes");
    for kernel in KERNELS {
        let expected = if kernel.takes_extended_params() { vec![core, extended] } else { vec![core] };
        assert_eq!(entry_param_sizes(kernel.name), expected, "{}", kernel.name);
        assert_eq!(kernel.takes_extended_params(), kernel.score_mods || kernel.varlen, "{}", kernel.name);
    }
}

#[test]
fn hopper_ptx_targets_sm90a_with_every_entry_point() {
    use flashcore::abi::{TensorMaps, HOPPER_MAPS_PARAM_ALIGN, TENSOR_MAP_K_OFFSET, TENSOR_MAP_V_OFFSET};
    use flashcore::kernels::{HOPPER_KERNELS, HOPPER_PTX};
    assert!(HOPPER_PTX.lines().any(|l| l.trim() == ".target sm_90a"), "wgmma and setmaxnreg need sm_90a");
    assert_eq!(size_of::<TensorMaps>(), 384);
    assert_eq!((TENSOR_MAP_K_OFFSET, TENSOR_MAP_V_OFFSET), (128, 256));
    // f16/bf16 x masked or not x head dims 64 and 128.
    assert_eq!(HOPPER_KERNELS.len(), 8);
    for kernel in HOPPER_KERNELS {
        let body = entry_body_in(HOPPER_PTX, kernel.name);
        let maps = format!(".param .align {HOPPER_MAPS_PARAM_ALIGN} .b8 {}_param_1[384]", kernel.name);
        assert!(body.contains(&maps), "{}: tensor maps not declared 64-byte aligned", kernel.name);
        let ab = match kernel.dtype {
            Dtype::F16 => "f16",
            Dtype::Bf16 => "bf16",
        };
        for instruction in [
            format!("wgmma.mma_async.sync.aligned.m64n128k16.f32.{ab}.{ab}"),
            "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes".to_string(),
            "mbarrier.try_wait.parity.shared::cta.b64".to_string(),
            "mbarrier.arrive.expect_tx.shared::cta.b64".to_string(),
            "setmaxnreg.inc.sync.aligned.u32".to_string(),
            "setmaxnreg.dec.sync.aligned.u32".to_string(),
        ] {
            assert!(body.contains(&instruction), "{}: no {instruction}", kernel.name);
        }
        // The tensor maps are addressed in the parameter space, not copied.
        let in_place =
            body.lines().any(|l| l.contains("cvta.param.u64") && l.contains(&format!("{}_param_1;", kernel.name)));
        assert!(in_place, "{}: tensor maps not used in place", kernel.name);
        assert!(!body.contains("ld.local") && !body.contains("st.local"), "{}: uses local memory", kernel.name);
    }
}

/// The `.maxnreg` of entry point `name` in `ptx` (the directive between its parameter list and
/// its body), if any.
fn maxnreg(ptx: &str, name: &str) -> Option<usize> {
    let entry = entry_body_in(ptx, name);
    let head = &entry[..entry.find("\n{\n").expect("a body")];
    head.lines().find_map(|l| l.strip_prefix(".maxnreg ")).map(|n| n.trim().parse().expect("a count"))
}

#[test]
fn per_architecture_register_caps_reach_exactly_the_capped_entry_points() {
    use flashcore::abi::register_cap;
    use flashcore::kernels::ptx_for_device;
    for (major, minor) in [(8, 0), (8, 6), (8, 9), (9, 0)] {
        let ptx = ptx_for_device(major, minor);
        let mut capped = 0;
        for kernel in KERNELS {
            let expected = register_cap(&kernel.tile, major, minor);
            assert_eq!(maxnreg(&ptx, kernel.name), expected, "{} on sm_{major}{minor}", kernel.name);
            capped += expected.is_some() as usize;
        }
        // Only the directives were added: the same entry points, the same instructions.
        let added = ptx.lines().filter(|l| l.starts_with(".maxnreg ")).count();
        assert_eq!(added, capped, "sm_{major}{minor}");
        let without: String = ptx.lines().filter(|l| !l.starts_with(".maxnreg ")).map(|l| format!("{l}\n")).collect();
        assert_eq!(without.trim_end(), PTX.trim_end(), "sm_{major}{minor}");
    }
    // The d64_q64 kernels get 168 registers where three of their CTAs fit in shared memory
    // (sm_80, sm_90), nothing elsewhere (sm_86, sm_89: 100 KiB per SM).
    assert_eq!(maxnreg(&ptx_for_device(9, 0), "attention_fwd_d64_q64_f16_masked"), Some(168));
    assert_eq!(maxnreg(&ptx_for_device(8, 0), "attention_fwd_d64_q64_bf16"), Some(168));
    assert_eq!(maxnreg(&ptx_for_device(8, 9), "attention_fwd_d64_q64_f16"), None);
    assert_eq!(maxnreg(&ptx_for_device(9, 0), "attention_fwd_d64_q128_f16"), None);
}
