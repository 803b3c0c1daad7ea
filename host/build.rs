//! Builds `../kernels-gpu` to PTX with rustc's NVPTX backend and exposes it to the crate as
//! `$OUT_DIR/flashcore_kernels.ptx` (embedded with `include_str!`).
//!
//! - The kernel crate is built by a nested `cargo build` with the toolchain its
//!   `rust-toolchain.toml` pins, in its own target directory (the outer build holds the lock on
//!   ours), so `core` for nvptx is compiled once and kernel edits rebuild in seconds.
//! - Reruns only when the kernel sources or build configuration change.
//! - `FLASHCORE_KERNELS_PTX=/path/to.ptx` skips the nested build and embeds that file instead.
use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const PTX_NAME: &str = "flashcore_kernels.ptx";

fn main() {
    println!("cargo:rerun-if-env-changed=FLASHCORE_KERNELS_PTX");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let ptx = match env::var_os("FLASHCORE_KERNELS_PTX") {
        Some(path) => {
            let path = PathBuf::from(path);
            println!("cargo:rerun-if-changed={}", path.display());
            path
        }
        None => build_kernels(&out_dir),
    };
    std::fs::copy(&ptx, out_dir.join(PTX_NAME))
        .unwrap_or_else(|e| panic!("copying the kernel PTX from {}: {e}", ptx.display()));
    report_resources(&ptx);
}

/// The kernel author's loop: when `ptxas` is available (`FLASHCORE_PTXAS`, or on `PATH`, e.g.
/// from PyPI's `nvidia-cuda-nvcc`), report each kernel's registers, stack and spills for sm_80,
/// sm_89 and sm_90 as build warnings, so the cost of an edit shows at once: one summary line per
/// architecture, plus one line per kernel that uses local memory (all of them with
/// `FLASHCORE_PTXAS_ALL=1`). Without ptxas, nothing is printed (on a GPU,
/// `FlashAttention::kernel_resources` reports the driver's view).
fn report_resources(ptx: &Path) {
    println!("cargo:rerun-if-env-changed=FLASHCORE_PTXAS");
    println!("cargo:rerun-if-env-changed=FLASHCORE_PTXAS_ALL");
    let all = env::var_os("FLASHCORE_PTXAS_ALL").is_some();
    let ptxas = env::var_os("FLASHCORE_PTXAS").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("ptxas"));
    for arch in ["sm_80", "sm_89", "sm_90"] {
        let Ok(output) = Command::new(&ptxas).args(["-v", "-arch", arch, "-o", "/dev/null"]).arg(ptx).output() else {
            return;
        };
        let log = String::from_utf8_lossy(&output.stderr);
        let (mut kernel, mut frame) = (String::new(), String::new());
        let (mut kernels, mut spilling, mut max_registers) = (0, 0, 0);
        for line in log.lines() {
            if let Some(rest) = line.split("Compiling entry function '").nth(1) {
                kernel = rest.split('\'').next().unwrap_or("").to_string();
            } else if line.contains("bytes stack frame") {
                frame = line.rsplit(':').next().unwrap_or("").trim().to_string();
            } else if let Some(used) = line.split("Used ").nth(1) {
                let registers = used.split(' ').next().unwrap_or("?");
                max_registers = max_registers.max(registers.parse().unwrap_or(0));
                kernels += 1;
                let local = !frame.starts_with("0 bytes stack frame");
                spilling += local as usize;
                if all || local {
                    println!("cargo:warning={arch} {kernel}: {registers} registers; {frame}");
                }
            }
        }
        println!("cargo:warning={arch}: {kernels} kernels, at most {max_registers} registers, {spilling} with local memory (stack or spills)");
    }
}

fn build_kernels(out_dir: &Path) -> PathBuf {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let kernels = manifest_dir.join("../kernels-gpu");
    let kernels = kernels.canonicalize().unwrap_or_else(|e| panic!("{}: {e}", kernels.display()));
    for input in ["src", "Cargo.toml", "Cargo.lock", ".cargo/config.toml", "rust-toolchain.toml", "tools"] {
        println!("cargo:rerun-if-changed={}", kernels.join(input).display());
    }

    // <target>/<profile>/build/flashcore-<hash>/out -> <target>/kernels-gpu, shared by all
    // profiles of the outer build.
    let target_dir = out_dir.ancestors().nth(4).unwrap_or(out_dir).join("kernels-gpu");
    let toolchain = pinned_toolchain(&kernels.join("rust-toolchain.toml"));

    let mut cmd = Command::new("rustup");
    cmd.args(["run", &toolchain, "cargo", "build", "--release", "--locked", "--target-dir"])
        .arg(&target_dir)
        // cargo reads kernels-gpu/.cargo/config.toml (target, build-std, linker) from the cwd.
        .current_dir(&kernels)
        // Our stdout is read by cargo as build directives; send the nested build's to stderr,
        // which cargo shows when this script fails.
        .stdout(Stdio::from(std::io::stderr()));
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy();
        if leaks_into_nested_build(&key) {
            cmd.env_remove(key.as_ref());
        }
    }
    let status =
        cmd.status().unwrap_or_else(|e| panic!("running `rustup run {toolchain} cargo build` for kernels-gpu: {e}"));
    if !status.success() {
        panic!("building the GPU kernels failed ({status}); the compiler's errors are above");
    }
    let ptx = target_dir.join("nvptx64-nvidia-cuda/release").join(PTX_NAME);
    assert!(ptx.is_file(), "the kernel build produced no PTX at {}", ptx.display());
    ptx
}

/// Variables cargo sets for build scripts (or the outer build uses) that would point the nested
/// build at the outer toolchain, profile or target.
fn leaks_into_nested_build(key: &str) -> bool {
    let keep = ["CARGO_HOME", "CARGO_MAKEFLAGS", "CARGO_NET_OFFLINE"];
    (key.starts_with("CARGO_") && !keep.contains(&key))
        || key.starts_with("RUSTC")
        || key.starts_with("RUSTDOC")
        || key.starts_with("RUSTUP_TOOLCHAIN")
        || key == "RUSTFLAGS"
        || ["TARGET", "HOST", "PROFILE", "OPT_LEVEL", "DEBUG", "OUT_DIR", "NUM_JOBS"].contains(&key)
}

/// The `channel` of a `rust-toolchain.toml`.
fn pinned_toolchain(file: &Path) -> String {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.trim().strip_prefix('='))
        .map(|value| value.trim().trim_matches('"').to_string())
        .next()
        .unwrap_or_else(|| panic!("{} names no channel", file.display()))
}
