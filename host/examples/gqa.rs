//! Grouped-query attention: 32 query heads share 8 K/V heads (4 each), with no copies of K/V.
//! `cargo run --release -p flashcore --example gqa`

mod common;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::run_and_check([1, 32, 256, 128], [1, 8, 256, 128], flashcore::ForwardOptions::new().causal(true))
}
