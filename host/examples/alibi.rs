//! ALiBi (as in BLOOM and MPT): each head adds `-slope · |i - j|` to its scores, with the
//! geometric slopes `2^(-8 h / H)`. `cargo run --release -p flashcore --example alibi`

mod common;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let heads = 8;
    let slopes: Vec<f32> = (1..=heads).map(|h| 2f32.powf(-8.0 * h as f32 / heads as f32)).collect();
    let options = flashcore::ForwardOptions::new().causal(true);
    common::run_and_check_typed::<half::f16>([2, heads, 777, 128], [2, heads, 777, 128], options, Some(&slopes))
}
