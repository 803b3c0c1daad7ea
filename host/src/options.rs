//! Options of a forward call.

use std::marker::PhantomData;

use cust::memory::DeviceSlice;

/// ALiBi slopes in device memory, as [`ForwardOptions::alibi_slopes`] records them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlopesArg {
    /// Device address of the first f32 slope.
    pub address: u64,
    /// Number of slopes: `heads` (one per head) or `batch * heads` (per sequence and head).
    pub len: usize,
}

/// Which family of kernels runs a forward call ([`ForwardOptions::kernel_family`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KernelFamily {
    /// The Hopper kernels where they apply (compute capability 9.0; f16/bf16; head dim 64 or
    /// 128; fixed lengths; no softcap or ALiBi; no forced tile height; TMA-compatible strides),
    /// else the mma.sync kernels.
    #[default]
    Auto,
    /// The `mma.sync` kernels (every GPU from sm_80), whatever the device.
    MmaSync,
    /// The Hopper kernels (`wgmma` + TMA, warp-specialised); a call they cannot serve is an
    /// error ([`Error::KernelFamilyUnavailable`](crate::Error::KernelFamilyUnavailable)) rather
    /// than a silent fallback.
    Wgmma,
}

/// Options of [`FlashAttention::forward`](crate::FlashAttention::forward), built with chained
/// setters:
///
/// ```
/// let options = flashcore::ForwardOptions::new().causal(true).softmax_scale(0.125);
/// assert!(options.is_causal());
/// ```
///
/// The lifetime is that of borrowed device memory ([`alibi_slopes`](Self::alibi_slopes)); options
/// without it are `ForwardOptions<'static>`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ForwardOptions<'a> {
    causal: bool,
    window: (i32, i32),
    softcap: f32,
    softmax_scale: Option<f32>,
    q_tile_rows: Option<usize>,
    kv_tile_rows: Option<usize>,
    num_splits: usize,
    family: KernelFamily,
    alibi: Option<SlopesArg>,
    slopes: PhantomData<&'a DeviceSlice<f32>>,
}

impl Default for ForwardOptions<'_> {
    fn default() -> Self {
        ForwardOptions::new()
    }
}

impl ForwardOptions<'static> {
    /// Non-causal attention with scale `1 / sqrt(head_dim)`.
    pub const fn new() -> Self {
        Self {
            causal: false,
            window: (-1, -1),
            softcap: 0.0,
            softmax_scale: None,
            q_tile_rows: None,
            kv_tile_rows: None,
            num_splits: 0,
            family: KernelFamily::Auto,
            alibi: None,
            slopes: PhantomData,
        }
    }
}

impl<'a> ForwardOptions<'a> {
    /// Causal masking, aligned to the bottom-right corner as in FlashAttention ≥ 2.1: query row
    /// `i` attends to keys `0..=i + seq_k - seq_q` (with equal lengths, `0..=i`). A row that sees
    /// no key (only when `seq_q > seq_k`) gets output 0 and logsumexp −∞.
    pub const fn causal(mut self, causal: bool) -> Self {
        self.causal = causal;
        self
    }

    /// Sliding-window (local) attention, as FlashAttention's `window_size`: query row `i` sees
    /// keys `i + seq_k - seq_q - left ..= i + seq_k - seq_q + right`; −1 leaves a side unbounded
    /// (the default, `(-1, -1)`, is no window). With [`causal`](Self::causal) the right side is
    /// 0. K/V tiles outside every row's window are never loaded. Values below −1 are an error.
    pub const fn window(mut self, left: i32, right: i32) -> Self {
        self.window = (left, right);
        self
    }

    /// The window as given to [`window`](Self::window) (without the causal mask's right side).
    pub const fn window_size(&self) -> (i32, i32) {
        self.window
    }

    /// Whether rows see only part of the keys (causal or a window): the masked kernels run.
    pub const fn is_masked(&self) -> bool {
        self.causal || self.window.0 >= 0 || self.window.1 >= 0
    }

    /// The window the kernels apply: [`window_size`](Self::window_size) with the right side set
    /// to 0 when causal.
    pub const fn effective_window(&self) -> (i32, i32) {
        if self.causal {
            (self.window.0, 0)
        } else {
            self.window
        }
    }

    /// Softcapping, as FlashAttention's `softcap`: each scaled score `s` becomes
    /// `cap · tanh(s / cap)` before the softmax (and the logsumexp is of those). 0 (the default)
    /// is off; otherwise `cap` must be finite and positive.
    pub const fn softcap(mut self, cap: f32) -> Self {
        self.softcap = cap;
        self
    }

    /// The softcap (0: off).
    pub const fn softcap_value(&self) -> f32 {
        self.softcap
    }

    /// ALiBi, as FlashAttention's `alibi_slopes`: the bias `-slope · |i + seq_k - seq_q - j|`
    /// is added to the scaled score of query row `i` and key `j` (after the softcap, if any).
    /// `slopes` are f32, one per head (`heads` values) or per sequence and head (`batch · heads`,
    /// batch-major); any other length is an error at launch. The values stay on the device and
    /// are not read by the host: like Q, K and V, a non-finite slope gives non-finite rows.
    pub fn alibi_slopes<'b>(self, slopes: &'b DeviceSlice<f32>) -> ForwardOptions<'b>
    where
        'a: 'b,
    {
        ForwardOptions {
            alibi: Some(SlopesArg { address: slopes.as_device_ptr().as_raw(), len: slopes.len() }),
            slopes: PhantomData,
            ..self
        }
    }

    /// The ALiBi slopes, if any.
    pub const fn alibi(&self) -> Option<SlopesArg> {
        self.alibi
    }

    /// Whether the score-modifier kernels run (softcap or ALiBi).
    pub fn modifies_scores(&self) -> bool {
        self.softcap > 0.0 || self.alibi.is_some()
    }

    /// KV-cache calls ([`forward_with_kvcache`](crate::FlashAttention::forward_with_kvcache)):
    /// how many CTAs share each query block's keys (split-KV, merged by a combine kernel).
    /// 0 (the default) chooses from the work and the device; 1 turns splitting off. At most
    /// [`MAX_KV_SPLITS`](crate::plan::MAX_KV_SPLITS).
    pub const fn num_splits(mut self, splits: usize) -> Self {
        self.num_splits = splits;
        self
    }

    /// The requested number of KV splits (0: automatic).
    pub const fn num_splits_value(&self) -> usize {
        self.num_splits
    }

    /// The factor applied to `Q·Kᵀ` before the softmax (default `1 / sqrt(head_dim)`); must be
    /// finite and positive.
    pub const fn softmax_scale(mut self, scale: f32) -> Self {
        self.softmax_scale = Some(scale);
        self
    }

    /// Forces an mma.sync kernel configuration with this many query rows per CTA (64 or 128)
    /// instead of the automatic choice; for benchmarking and tuning. Values no configuration of
    /// the call's kind has are an error at launch
    /// ([`Error::UnsupportedTile`](crate::Error::UnsupportedTile)).
    pub const fn q_tile_rows(mut self, rows: usize) -> Self {
        self.q_tile_rows = Some(rows);
        self
    }

    /// The forced query rows per CTA, if any.
    pub const fn forced_q_tile_rows(&self) -> Option<usize> {
        self.q_tile_rows
    }

    /// Forces an mma.sync kernel configuration with this many keys per main-loop step (the
    /// configurations have 32 or 64; head dim 128 at 128 query rows has both) instead of the
    /// automatic choice; for benchmarking, tuning and tests. As with
    /// [`q_tile_rows`](Self::q_tile_rows), a value no configuration of the call's kind has is an
    /// error at launch.
    pub const fn kv_tile_rows(mut self, rows: usize) -> Self {
        self.kv_tile_rows = Some(rows);
        self
    }

    /// The forced keys per main-loop step, if any.
    pub const fn forced_kv_tile_rows(&self) -> Option<usize> {
        self.kv_tile_rows
    }

    /// Whether part of the mma.sync tile shape is forced ([`q_tile_rows`](Self::q_tile_rows) or
    /// [`kv_tile_rows`](Self::kv_tile_rows)).
    pub const fn forces_tile(&self) -> bool {
        self.q_tile_rows.is_some() || self.kv_tile_rows.is_some()
    }

    /// Chooses the kernel family (default [`KernelFamily::Auto`]): to compare the two on
    /// Hopper, or to insist on one.
    pub const fn kernel_family(mut self, family: KernelFamily) -> Self {
        self.family = family;
        self
    }

    /// The kernel family asked for.
    pub const fn kernel_family_value(&self) -> KernelFamily {
        self.family
    }

    /// Whether causal masking is on.
    pub const fn is_causal(&self) -> bool {
        self.causal
    }

    /// The softmax scale for a given head dimension.
    pub fn scale_for(&self, head_dim: usize) -> f32 {
        self.softmax_scale.unwrap_or_else(|| 1.0 / (head_dim as f32).sqrt())
    }
}
