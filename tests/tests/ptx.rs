//! The embedded PTX: built for sm_80, and holding every entry point the host expects with the
//! instructions the design relies on. No GPU needed.

use flashcore::kernels::{KERNELS, PTX};

/// The body of entry point `name` (from its `.entry` line to the next entry or the end).
fn entry_body(name: &str) -> &'static str {
    let header = format!(".entry {name}(");
    let start = PTX.find(&header).unwrap_or_else(|| panic!("no entry point {name} in the PTX"));
    let rest = &PTX[start + header.len()..];
    let end = rest.find(".entry ").unwrap_or(rest.len());
    &rest[..end]
}

#[test]
fn ptx_targets_sm80() {
    assert!(PTX.lines().any(|l| l.trim() == ".target sm_80"), "PTX must target sm_80 so it runs on sm_80..sm_90");
}

#[test]
fn every_kernel_is_an_entry_point_with_the_expected_instructions() {
    assert_eq!(KERNELS.len(), 20);
    for kernel in KERNELS {
        let body = entry_body(kernel.name);
        for instruction in [
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32",
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
fn tile_configurations_are_consistent() {
    for kernel in KERNELS {
        assert!(kernel.tile.is_consistent(), "{}", kernel.name);
        // Fits sm_89's (and sm_86's) 99 KiB of shared memory per block.
        assert!(kernel.tile.smem_bytes() <= 99 * 1024, "{}", kernel.name);
    }
}
