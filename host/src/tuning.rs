//! Autotuning: the fastest tile shape per (head dim, causality, problem size), measured
//! on the device by [`FlashAttention::autotune`](crate::FlashAttention::autotune) and cached per
//! device under the user's cache directory. Without an entry, the built-in rule of
//! [`kernels::select`](crate::kernels::select) decides from the device's limits (the taller tile
//! when it still gives every SM a CTA; the widest key step that keeps the resident CTAs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::kernels::{TileShape, PTX};

/// The class of problems one tuning entry covers: head dim, masking, and the sizes that steer
/// the choice (query rows per head and batch·heads) rounded up to powers of two.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TuningKey {
    /// Head dimension.
    pub head_dim: usize,
    /// Masked (causal or windowed) or not.
    pub masked: bool,
    /// ⌈log2(seq_q)⌉.
    pub seq_bucket: u32,
    /// ⌈log2(batch · heads)⌉.
    pub batch_heads_bucket: u32,
}

impl TuningKey {
    /// The key of a problem.
    pub fn new(head_dim: usize, masked: bool, batch_heads: usize, seq_q: usize) -> Self {
        Self { head_dim, masked, seq_bucket: ceil_log2(seq_q), batch_heads_bucket: ceil_log2(batch_heads) }
    }
}

/// ⌈log2(n)⌉, with 0 for n ≤ 1.
fn ceil_log2(n: usize) -> u32 {
    usize::BITS - n.max(1).saturating_sub(1).leading_zeros()
}

/// Measured choices: the tile shape for each [`TuningKey`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TuningTable {
    entries: BTreeMap<TuningKey, TileShape>,
}

impl TuningTable {
    /// The tuned tile shape for `key`, if measured.
    pub fn get(&self, key: &TuningKey) -> Option<TileShape> {
        self.entries.get(key).copied()
    }

    /// Records a choice.
    pub fn insert(&mut self, key: TuningKey, tile: TileShape) {
        self.entries.insert(key, tile);
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The text form: one `head_dim masked seq_bucket batch_heads_bucket q_tile_rows
    /// kv_tile_rows` line per entry.
    pub fn to_text(&self) -> String {
        let mut text = String::from(
            "# flashcore tuning: head_dim masked seq_bucket batch_heads_bucket q_tile_rows kv_tile_rows\n",
        );
        for (k, tile) in &self.entries {
            let TileShape { q_tile_rows, kv_tile_rows } = tile;
            let (masked, seq, bh) = (k.masked as u8, k.seq_bucket, k.batch_heads_bucket);
            text += &format!("{} {masked} {seq} {bh} {q_tile_rows} {kv_tile_rows}\n", k.head_dim);
        }
        text
    }

    /// Parses [`to_text`](Self::to_text)'s form; lines that do not parse are skipped (a cache
    /// from another version is only a hint).
    pub fn from_text(text: &str) -> Self {
        let mut table = Self::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let fields: Vec<usize> = line.split_whitespace().filter_map(|f| f.parse().ok()).collect();
            if let [head_dim, masked @ (0 | 1), seq_bucket, batch_heads_bucket, q_tile_rows, kv_tile_rows] = fields[..]
            {
                let key = TuningKey {
                    head_dim,
                    masked: masked == 1,
                    seq_bucket: seq_bucket as u32,
                    batch_heads_bucket: batch_heads_bucket as u32,
                };
                table.insert(key, TileShape { q_tile_rows, kv_tile_rows });
            }
        }
        table
    }

    /// Reads a table from `path`.
    pub fn load(path: &Path) -> std::io::Result<Self> {
        Ok(Self::from_text(&std::fs::read_to_string(path)?))
    }

    /// Writes the table to `path`, creating its directory.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, self.to_text())
    }
}

/// Where the tuning of a device is cached: `<user cache dir>/flashcore/<device>-<kernels>.tune`,
/// where `<kernels>` identifies the embedded PTX (other kernels, other timings). `None` when the
/// platform has no cache directory.
pub fn cache_path(device_name: &str) -> Option<PathBuf> {
    let device: String =
        device_name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    Some(dirs::cache_dir()?.join("flashcore").join(format!("{device}-{:016x}.tune", fnv1a(PTX.as_bytes()))))
}

/// 64-bit FNV-1a: a stable fingerprint (std's hasher may change between Rust versions).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3))
}

/// One measured problem of [`FlashAttention::autotune`](crate::FlashAttention::autotune).
#[derive(Clone, Debug, PartialEq)]
pub struct TuningResult {
    /// `[batch, heads, seq, head_dim]`.
    pub shape: [usize; 4],
    /// Masked (timed with the causal mask) or not.
    pub masked: bool,
    /// Microseconds per call (CUDA graph) for each candidate tile shape.
    pub micros: Vec<(TileShape, f64)>,
    /// The fastest candidate, now used for this problem class.
    pub chosen: TileShape,
}
