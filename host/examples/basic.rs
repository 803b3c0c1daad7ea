//! The plain forward pass with the logsumexp: `cargo run --release -p flashcore --example basic`.

mod common;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::run_and_check([1, 8, 512, 64], [1, 8, 512, 64], flashcore::ForwardOptions::new())
}
