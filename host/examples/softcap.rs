//! Softcapped attention (as in Gemma 2): scores pass through `50 · tanh(s / 50)` before the
//! softmax. `cargo run --release -p flashcore --example softcap`

mod common;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::run_and_check(
        [1, 8, 1024, 128],
        [1, 8, 1024, 128],
        flashcore::ForwardOptions::new().causal(true).softcap(50.0),
    )
}
