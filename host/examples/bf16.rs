//! bf16 inputs and output (f32 accumulation), here with head dimension 96 and a causal mask.
//! `cargo run --release -p flashcore --example bf16`

mod common;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = flashcore::ForwardOptions::new().causal(true);
    common::run_and_check_typed::<flashcore::bf16>([2, 8, 1000, 96], [2, 8, 1000, 96], options, None)
}
