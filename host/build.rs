//! Builds `../kernels-gpu` to PTX with rustc's NVPTX backend, twice, and exposes both to the
//! crate (embedded with `include_str!`):
//! - `$OUT_DIR/flashcore_kernels.ptx`: the mma.sync kernels for sm_80 (runs on sm_80..sm_90);
//! - `$OUT_DIR/flashcore_kernels_sm90a.ptx`: the Hopper kernels (feature `hopper`, target
//!   `sm_90a`, which `wgmma` and `setmaxnreg` need), loaded on compute capability 9.0 only.
//!
//! - The kernel crate is built by a nested `cargo build` with the toolchain its
//!   `rust-toolchain.toml` pins, in its own target directories (the outer build holds the lock on
//!   ours), so `core` for nvptx is compiled once per target CPU and kernel edits rebuild in
//!   seconds.
//! - rustc's NVPTX calling convention caps parameter alignment at 16 bytes; the Hopper kernels'
//!   tensor-map parameter must be 64-byte aligned, so its declaration is raised in the PTX text.
//! - Reruns only when the kernel sources or build configuration change.
//! - `FLASHCORE_KERNELS_PTX` / `FLASHCORE_KERNELS_SM90A_PTX` = a path skips the nested build of
//!   that PTX and embeds the file instead.
use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

// The launch contract, shared with the kernels and the library: the Hopper kernels' register cap
// and tensor-map parameter come from here, not from copies.
#[allow(dead_code, unused_macros)]
#[macro_use]
#[path = "../kernels-gpu/src/abi.rs"]
mod abi;

// The per-architecture register caps, applied to the PTX as the host applies them at load.
#[path = "src/register_caps.rs"]
mod register_caps;

/// The configuration of every mma.sync entry point, by name (`abi::for_each_kernel!`).
macro_rules! entry_tiles {
    ($( ($config:ident, $tile:ident, $variant:ident, $dtype:ident, $masked:expr, $score_mods:expr, $varlen:expr) ),* $(,)?) => {
        const ENTRY_TILES: &[(&str, abi::TileConfig)] = &[ $(
            (concat!("attention_fwd_", stringify!($config), "_", stringify!($variant)), abi::$tile)
        ),* ];
    };
}
for_each_kernel!(entry_tiles);

/// The configuration of every TMA variant in the sm_90a PTX, by name (`abi::for_each_tma_kernel!`).
macro_rules! tma_entry_tiles {
    ($( ($config:ident, $tile:ident, $variant:ident, $dtype:ident, $masked:expr) ),* $(,)?) => {
        const TMA_ENTRY_TILES: &[(&str, abi::TileConfig)] = &[ $(
            (concat!("attention_fwd_hopper_mma_", stringify!($config), "_", stringify!($variant)), abi::$tile)
        ),* ];
    };
}
for_each_tma_kernel!(tma_entry_tiles);

const PTX_NAME: &str = "flashcore_kernels.ptx";
const SM90A_PTX_NAME: &str = "flashcore_kernels_sm90a.ptx";

/// One PTX build: which environment variable overrides it, the nested build's flags, where the
/// host embeds it, and which architectures `ptxas` reports it for (with extra flags).
struct PtxBuild {
    override_var: &'static str,
    target_dir: &'static str,
    target_cpu: &'static str,
    features: &'static [&'static str],
    name: &'static str,
    report: &'static [&'static str],
    /// Whether the mma.sync kernels' per-architecture caps (`abi::register_cap`) apply.
    per_arch_caps: bool,
    /// Whether the sm_90a module's caps apply (`register_caps::hopper_capped_ptx`).
    hopper_caps: bool,
}

const BUILDS: [PtxBuild; 2] = [
    PtxBuild {
        override_var: "FLASHCORE_KERNELS_PTX",
        target_dir: "kernels-gpu",
        target_cpu: "sm_80",
        features: &[],
        name: PTX_NAME,
        report: &["sm_80", "sm_89", "sm_90"],
        per_arch_caps: true,
        hopper_caps: false,
    },
    PtxBuild {
        override_var: "FLASHCORE_KERNELS_SM90A_PTX",
        target_dir: "kernels-gpu-sm90a",
        target_cpu: "sm_90a",
        features: &["hopper"],
        name: SM90A_PTX_NAME,
        report: &["sm_90a"],
        per_arch_caps: false,
        hopper_caps: true,
    },
];

fn main() {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for build in &BUILDS {
        println!("cargo:rerun-if-env-changed={}", build.override_var);
        let ptx = match env::var_os(build.override_var) {
            Some(path) => {
                let path = PathBuf::from(path);
                println!("cargo:rerun-if-changed={}", path.display());
                path
            }
            None => build_kernels(&out_dir, build),
        };
        let text =
            std::fs::read_to_string(&ptx).unwrap_or_else(|e| panic!("reading the kernel PTX {}: {e}", ptx.display()));
        let embedded = out_dir.join(build.name);
        std::fs::write(&embedded, align_tensor_map_params(&text))
            .unwrap_or_else(|e| panic!("writing {}: {e}", embedded.display()));
        report_resources(&embedded, build);
    }
}

/// Raises the declared alignment of every `attention_fwd_hopper_*` kernel's second parameter
/// (its `abi::TensorMaps`) from rustc's 16 to the `abi::HOPPER_MAPS_PARAM_ALIGN` (64) that TMA
/// requires of a tensor map.
fn align_tensor_map_params(ptx: &str) -> String {
    let maps_param = format!("_param_1[{}]", std::mem::size_of::<abi::TensorMaps>());
    let aligned = format!(".align {}", abi::HOPPER_MAPS_PARAM_ALIGN);
    ptx.lines()
        .map(|line| {
            let trimmed = line.trim_start();
            let is_maps =
                trimmed.starts_with(".param .align 16 .b8 attention_fwd_hopper_") && trimmed.contains(&maps_param);
            if is_maps {
                line.replacen(".align 16", &aligned, 1)
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// The kernel author's loop: when `ptxas` is available (`FLASHCORE_PTXAS`, or on `PATH`, e.g.
/// from PyPI's `nvidia-cuda-nvcc`), report each kernel's registers, stack and spills for sm_80,
/// sm_89 and sm_90 as build warnings, so the cost of an edit shows at once: one summary line per
/// architecture, plus one line per kernel that uses local memory (all of them with
/// `FLASHCORE_PTXAS_ALL=1`). Without ptxas, nothing is printed (on a GPU,
/// `FlashAttention::kernel_resources` reports the driver's view).
fn report_resources(ptx: &Path, build: &PtxBuild) {
    println!("cargo:rerun-if-env-changed=FLASHCORE_PTXAS");
    println!("cargo:rerun-if-env-changed=FLASHCORE_PTXAS_ALL");
    let all = env::var_os("FLASHCORE_PTXAS_ALL").is_some();
    let ptxas = env::var_os("FLASHCORE_PTXAS").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("ptxas"));
    if Command::new(&ptxas).arg("--version").output().is_err() {
        return;
    }
    // Read once; each architecture's caps are applied to it below.
    let text = if build.per_arch_caps || build.hopper_caps { std::fs::read_to_string(ptx).ok() } else { None };
    for &arch in build.report {
        // The PTX as a GPU of this architecture gets it: with its register caps.
        let capped = ptx.with_extension(format!("{arch}.ptx"));
        let capped_text = match (&text, arch_version(arch)) {
            (Some(text), _) if build.hopper_caps => {
                Some(register_caps::hopper_capped_ptx(text, TMA_ENTRY_TILES.iter().copied()))
            }
            (Some(text), Some((major, minor))) => {
                register_caps::capped_ptx(text, ENTRY_TILES.iter().copied(), major, minor)
            }
            _ => None,
        };
        let ptx_for_arch = match capped_text {
            Some(text) if std::fs::write(&capped, &text).is_ok() => capped.as_path(),
            _ => ptx,
        };
        let mut command = Command::new(&ptxas);
        command.args(["-v", "-arch", arch, "-o", "/dev/null"]).arg(ptx_for_arch);
        let Ok(output) = command.output() else {
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

/// (major, minor) of an `sm_XY` architecture name.
fn arch_version(arch: &str) -> Option<(i32, i32)> {
    let digits = arch.strip_prefix("sm_")?;
    let major = digits.get(..1)?.parse().ok()?;
    let minor = digits.get(1..2)?.parse().ok()?;
    Some((major, minor))
}

fn build_kernels(out_dir: &Path, build: &PtxBuild) -> PathBuf {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let kernels = manifest_dir.join("../kernels-gpu");
    let kernels = kernels.canonicalize().unwrap_or_else(|e| panic!("{}: {e}", kernels.display()));
    for input in ["src", "Cargo.toml", "Cargo.lock", ".cargo/config.toml", "rust-toolchain.toml", "tools"] {
        println!("cargo:rerun-if-changed={}", kernels.join(input).display());
    }

    // <target>/<profile>/build/flashcore-<hash>/out -> <target>/kernels-gpu, shared by all
    // profiles of the outer build.
    let target_dir = out_dir.ancestors().nth(4).unwrap_or(out_dir).join(build.target_dir);
    let toolchain = pinned_toolchain(&kernels.join("rust-toolchain.toml"));

    let mut cmd = Command::new("rustup");
    cmd.args(["run", &toolchain, "cargo", "build", "--release", "--locked", "--target-dir"])
        .arg(&target_dir)
        .args(build.features.iter().flat_map(|f| ["--features", f]))
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
    // The same flags as kernels-gpu/.cargo/config.toml, for this build's target CPU.
    cmd.env(
        "CARGO_TARGET_NVPTX64_NVIDIA_CUDA_RUSTFLAGS",
        format!("-C target-cpu={} -C llvm-args=-unroll-threshold=4000", build.target_cpu),
    );
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
