//! The tuning table and its cache file (no GPU needed).

use flashcore::tuning::{cache_path, TuningKey, TuningTable};
use flashcore::TileShape;

const fn tile(q_tile_rows: usize, kv_tile_rows: usize) -> TileShape {
    TileShape { q_tile_rows, kv_tile_rows }
}

#[test]
fn keys_bucket_sizes_by_powers_of_two() {
    let key = |bh, s| TuningKey::new(64, false, bh, s);
    assert_eq!(key(1, 1).seq_bucket, 0);
    assert_eq!(key(1, 512).seq_bucket, 9);
    assert_eq!(key(1, 513).seq_bucket, 10);
    assert_eq!(key(128, 2048).batch_heads_bucket, 7);
    assert_eq!(key(129, 2048).batch_heads_bucket, 8);
    assert_eq!(key(1, 600), key(1, 1000));
    assert_ne!(TuningKey::new(64, false, 8, 512), TuningKey::new(64, true, 8, 512));
}

#[test]
fn table_round_trips_through_its_text_form_and_skips_junk() {
    let mut table = TuningTable::default();
    table.insert(TuningKey::new(64, true, 256, 512), tile(64, 64));
    table.insert(TuningKey::new(128, false, 128, 2048), tile(128, 64));
    let text = table.to_text();
    assert_eq!(TuningTable::from_text(&text), table);
    assert!(text.lines().any(|l| l == "128 0 11 7 128 64"), "{text}");
    // Junk, a masked flag out of range, and the old five-column form (no keys per step).
    let damaged = format!("{text}garbage line\n64 2 3 4 5 6\n64 1 3 4 128\n1 2\n");
    assert_eq!(TuningTable::from_text(&damaged), table);
    assert_eq!(table.get(&TuningKey::new(64, true, 200, 400)), Some(tile(64, 64)));
    assert_eq!(table.get(&TuningKey::new(64, false, 200, 400)), None);
}

#[test]
fn cache_file_is_per_device_and_kernel_build() {
    let dir = std::env::temp_dir().join(format!("flashcore-tuning-test-{}", std::process::id()));
    let path = dir.join("table.tune");
    let mut table = TuningTable::default();
    table.insert(TuningKey::new(64, false, 16, 4096), tile(128, 64));
    table.save(&path).unwrap();
    assert_eq!(TuningTable::load(&path).unwrap(), table);
    std::fs::remove_dir_all(&dir).unwrap();
    if let Some(p) = cache_path("NVIDIA H200") {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("nvidia-h200-") && name.ends_with(".tune"), "{name}");
        assert_eq!(cache_path("NVIDIA H200"), Some(p));
        assert_ne!(cache_path("NVIDIA H100 80GB HBM3"), cache_path("NVIDIA H200"));
    }
}
