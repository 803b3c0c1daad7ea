//! Causal attention of a chunk of 128 new queries against a cache of 1 024 keys: the mask is
//! aligned to the bottom-right corner, so the last query sees every key.
//! `cargo run --release -p flashcore --example chunked_prefill`

mod common;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    common::run_and_check([1, 8, 128, 64], [1, 8, 1024, 64], flashcore::ForwardOptions::new().causal(true))
}
