//! Per-architecture register caps in PTX text: a `.maxnreg` directive before the body of each
//! entry point that has a cap on the target GPU (see [`crate::abi::register_cap`]). The host
//! applies it before the driver's JIT compiles the PTX; `build.rs` includes this file too, so
//! that its `ptxas` report shows the kernels as each GPU gets them.

use crate::abi::{register_cap, TileConfig, HOPPER_LAUNCH_REGISTERS};

/// `ptx` as a GPU of compute capability `major.minor` gets it: `.maxnreg` added to each of
/// `entries` (entry-point name, configuration) that has a register cap there; `None` when none
/// has (the PTX is used unchanged).
pub fn capped_ptx<'a>(
    ptx: &str,
    entries: impl IntoIterator<Item = (&'a str, TileConfig)>,
    major: i32,
    minor: i32,
) -> Option<String> {
    let caps: Vec<(&str, usize)> =
        entries.into_iter().filter_map(|(name, tile)| Some((name, register_cap(&tile, major, minor)?))).collect();
    if caps.is_empty() {
        return None;
    }
    Some(with_register_caps(ptx, |name| caps.iter().find(|(entry, _)| *entry == name).map(|&(_, cap)| cap)))
}

/// The sm_90a PTX as a GPU of compute capability 9.0 gets it: every wgmma kernel capped at
/// [`HOPPER_LAUNCH_REGISTERS`] (its `setmaxnreg` budget), and the TMA variants of mma.sync kernels
/// (`tma_entries`: entry-point name, configuration) at their own 9.0 `register_cap`, if any.
pub fn hopper_capped_ptx<'a>(ptx: &str, tma_entries: impl IntoIterator<Item = (&'a str, TileConfig)>) -> String {
    let tma: Vec<(&str, TileConfig)> = tma_entries.into_iter().collect();
    with_register_caps(ptx, |name| match tma.iter().find(|(entry, _)| *entry == name) {
        Some((_, tile)) => register_cap(tile, 9, 0),
        None => Some(HOPPER_LAUNCH_REGISTERS),
    })
}

/// `ptx` with `.maxnreg <cap>` added to every entry point for which `cap_of(name)` gives a cap.
fn with_register_caps(ptx: &str, cap_of: impl Fn(&str) -> Option<usize>) -> String {
    let mut out = String::with_capacity(ptx.len() + 4096);
    let mut pending = None;
    for line in ptx.lines() {
        if let Some(rest) = line.strip_prefix(".visible .entry ") {
            pending = cap_of(rest.split('(').next().unwrap_or_default());
        } else if line == "{" {
            // The first `{` after an entry's parameter list opens its body (PTX performance
            // directives go between the two); later ones are inline-asm scopes.
            if let Some(cap) = pending.take() {
                out.push_str(&format!(".maxnreg {cap}\n"));
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}
