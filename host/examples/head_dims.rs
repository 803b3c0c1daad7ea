//! Every supported head dimension (32, 64, 96, 128, 256), and the typed error for another.
//! `cargo run --release -p flashcore --example head_dims`

mod common;

use flashcore::{ForwardOptions, SUPPORTED_HEAD_DIMS};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for d in SUPPORTED_HEAD_DIMS {
        common::run_and_check([1, 4, 300, d], [1, 4, 300, d], ForwardOptions::new())?;
    }
    match common::run_and_check([1, 4, 300, 80], [1, 4, 300, 80], ForwardOptions::new()) {
        Err(e) => println!("head_dim 80: {e}"),
        Ok(()) => unreachable!("head_dim 80 has no kernel"),
    }
    Ok(())
}
