//! Local attention: each query sees the 256 keys before it and itself (window (256, 0)); K/V tiles
//! outside every row's window are never loaded.
//! `cargo run --release -p flashcore --example sliding_window`

mod common;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::run_and_check([2, 4, 2048, 128], [2, 4, 2048, 128], flashcore::ForwardOptions::new().window(256, 0))
}
