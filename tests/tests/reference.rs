//! The CPU reference on cases small enough to check by hand. No GPU needed.

use approx::assert_relative_eq;
use flashcore::reference::{attention_f32, attention_f64, HostTensor};
use flashcore::{Error, ForwardOptions, TensorLayout};
use flashcore_tests::{fill_layout, host_bhsd, normal_f16, rng};

const D: usize = 64;

fn tensor(values: &[f64], seq: usize) -> HostTensor<'_, f64> {
    HostTensor::new(values, TensorLayout::bhsd(1, 1, seq, D))
}

/// Row `i` of a `[seq, D]` matrix whose rows are `f(i, d)`.
fn matrix(seq: usize, f: impl Fn(usize, usize) -> f64) -> Vec<f64> {
    (0..seq).flat_map(|i| (0..D).map(move |d| (i, d))).map(|(i, d)| f(i, d)).collect()
}

#[test]
fn one_key_returns_its_value_and_score() {
    let q = matrix(3, |i, d| (i + d) as f64 * 0.01);
    let k = matrix(1, |_, d| 1.0 - d as f64 * 0.02);
    let v = matrix(1, |_, d| d as f64 - 7.0);
    let options = ForwardOptions::new().softmax_scale(0.25);
    let r = attention_f64(tensor(&q, 3), tensor(&k, 1), tensor(&v, 1), &options).unwrap();
    for i in 0..3 {
        assert_eq!(&r.out[i * D..(i + 1) * D], &v[..], "row {i}");
        let score: f64 = (0..D).map(|d| q[i * D + d] * k[d]).sum::<f64>() * 0.25;
        assert_relative_eq!(r.lse[i], score, epsilon = 1e-12);
    }
}

#[test]
fn equal_scores_average_the_values() {
    let seq = 5;
    let q = vec![0.0; seq * D];
    let k = matrix(seq, |i, d| (i * d) as f64);
    let v = matrix(seq, |i, d| (i * 10 + d) as f64);
    let r = attention_f64(tensor(&q, seq), tensor(&k, seq), tensor(&v, seq), &ForwardOptions::new()).unwrap();
    for d in 0..D {
        // mean over i of (10 i + d) = 20 + d
        assert_relative_eq!(r.out[d], 20.0 + d as f64, epsilon = 1e-9);
    }
    assert_relative_eq!(r.lse[0], (seq as f64).ln(), epsilon = 1e-12);
}

#[test]
fn two_keys_by_hand() {
    // q = e0; k0 = 2 e0, k1 = 0; scale 1 -> scores 2 and 0, weights e^2/(e^2+1) and 1/(e^2+1).
    let q = matrix(1, |_, d| if d == 0 { 1.0 } else { 0.0 });
    let k = matrix(2, |i, d| if i == 0 && d == 0 { 2.0 } else { 0.0 });
    let v = matrix(2, |i, _| if i == 0 { 1.0 } else { -1.0 });
    let options = ForwardOptions::new().softmax_scale(1.0);
    let r = attention_f64(tensor(&q, 1), tensor(&k, 2), tensor(&v, 2), &options).unwrap();
    let e2 = 2f64.exp();
    let expected = (e2 - 1.0) / (e2 + 1.0);
    assert!(r.out.iter().all(|&x| (x - expected).abs() < 1e-12));
    assert_relative_eq!(r.lse[0], (e2 + 1.0).ln(), epsilon = 1e-12);
}

#[test]
fn causal_rows_see_only_earlier_keys() {
    let seq = 4;
    let q = matrix(seq, |i, d| ((i + 1) * (d % 3)) as f64 * 0.1);
    let k = matrix(seq, |i, d| ((i + 2) * (d % 5)) as f64 * 0.1);
    let v = matrix(seq, |i, d| (i * 100 + d) as f64);
    let causal = ForwardOptions::new().causal(true);
    let r = attention_f64(tensor(&q, seq), tensor(&k, seq), tensor(&v, seq), &causal).unwrap();
    // Row 0 sees key 0 only.
    assert_eq!(&r.out[..D], &v[..D]);
    // Row i equals non-causal attention over the first i + 1 keys.
    for i in 1..seq {
        let qi = &q[i * D..(i + 1) * D];
        let prefix = attention_f64(
            tensor(qi, 1),
            tensor(&k[..(i + 1) * D], i + 1),
            tensor(&v[..(i + 1) * D], i + 1),
            &ForwardOptions::new(),
        )
        .unwrap();
        for d in 0..D {
            assert_relative_eq!(r.out[i * D + d], prefix.out[d], epsilon = 1e-9);
        }
        assert_relative_eq!(r.lse[i], prefix.lse[0], epsilon = 1e-12);
    }
}

#[test]
fn f32_agrees_with_f64_and_layout_does_not_matter() {
    let mut rng = rng("reference f32 vs f64");
    let shape = [2, 3, 37, 64];
    let n = shape.iter().product();
    let (q, k, v) = (normal_f16(&mut rng, n), normal_f16(&mut rng, n), normal_f16(&mut rng, n));
    for causal in [false, true] {
        let options = ForwardOptions::new().causal(causal);
        let r64 = attention_f64(host_bhsd(&q, shape), host_bhsd(&k, shape), host_bhsd(&v, shape), &options).unwrap();
        let r32 = attention_f32(host_bhsd(&q, shape), host_bhsd(&k, shape), host_bhsd(&v, shape), &options).unwrap();
        for (a, b) in r64.out.iter().zip(&r32.out) {
            assert!((a - *b as f64).abs() < 1e-5, "{a} vs {b}");
        }
        let bshd = TensorLayout::bshd(2, 37, 3, 64);
        let (qs, ks, vs) =
            (fill_layout(&q, shape, &bshd), fill_layout(&k, shape, &bshd), fill_layout(&v, shape, &bshd));
        let r =
            attention_f64(HostTensor::new(&qs, bshd), HostTensor::new(&ks, bshd), HostTensor::new(&vs, bshd), &options)
                .unwrap();
        assert_eq!(r, r64);
    }
}

#[test]
fn reference_validates_its_inputs() {
    let q = [0.0f64; 10];
    let t = HostTensor::new(&q[..], TensorLayout::bhsd(1, 1, 1, 64));
    assert!(matches!(attention_f64(t, t, t, &ForwardOptions::new()), Err(Error::BufferTooSmall { .. })));
}

#[test]
fn causal_mask_is_aligned_to_the_bottom_right() {
    // Sq = 2, Sk = 4: row 0 sees keys 0..=2, row 1 all four (chunked prefill).
    let (sq, sk) = (2, 4);
    let q = matrix(sq, |i, d| ((i + 2) * (d % 4)) as f64 * 0.05);
    let k = matrix(sk, |j, d| ((j + 1) * (d % 3)) as f64 * 0.05);
    let v = matrix(sk, |j, d| (j * 10 + d) as f64);
    let causal = ForwardOptions::new().causal(true);
    let r = attention_f64(tensor(&q, sq), tensor(&k, sk), tensor(&v, sk), &causal).unwrap();
    for (i, visible) in [(0, 3), (1, 4)] {
        let qi = &q[i * D..(i + 1) * D];
        let prefix = attention_f64(
            tensor(qi, 1),
            tensor(&k[..visible * D], visible),
            tensor(&v[..visible * D], visible),
            &ForwardOptions::new(),
        )
        .unwrap();
        for d in 0..D {
            assert_relative_eq!(r.out[i * D + d], prefix.out[d], epsilon = 1e-9);
        }
    }
    // Sq = 4, Sk = 2: rows 0 and 1 see no key (output 0, logsumexp -inf), row 2 sees key 0.
    let r = attention_f64(tensor(&v, 4), tensor(&k[..2 * D], 2), tensor(&q, 2), &causal).unwrap();
    assert!(r.out[..2 * D].iter().all(|&x| x == 0.0));
    assert_eq!(&r.lse[..2], &[f64::NEG_INFINITY, f64::NEG_INFINITY]);
    assert_eq!(&r.out[2 * D..3 * D], &q[..D]);
    assert!(r.lse[2..].iter().all(|x| x.is_finite()));
}

#[test]
fn grouped_query_heads_share_their_kv_head() {
    let mut rng = rng("reference gqa");
    let (q_heads, kv_heads, s) = (6, 2, 20);
    let q = normal_f16(&mut rng, q_heads * s * D);
    let (k, v) = (normal_f16(&mut rng, kv_heads * s * D), normal_f16(&mut rng, kv_heads * s * D));
    let gqa = attention_f64(
        HostTensor::new(&q, TensorLayout::bhsd(1, q_heads, s, D)),
        HostTensor::new(&k, TensorLayout::bhsd(1, kv_heads, s, D)),
        HostTensor::new(&v, TensorLayout::bhsd(1, kv_heads, s, D)),
        &ForwardOptions::new(),
    )
    .unwrap();
    // The same as attending with query head h to K/V head h / 3 alone.
    fn head(x: &[half::f16], i: usize, s: usize) -> HostTensor<'_, half::f16> {
        HostTensor::new(&x[i * s * D..(i + 1) * s * D], TensorLayout::bhsd(1, 1, s, D))
    }
    for h in 0..q_heads {
        let per_head =
            attention_f64(head(&q, h, s), head(&k, h / 3, s), head(&v, h / 3, s), &ForwardOptions::new()).unwrap();
        assert_eq!(&gqa.out[h * s * D..(h + 1) * s * D], &per_head.out[..]);
    }
}

#[test]
fn sliding_windows_by_hand() {
    // Six keys, window (1, 1): row i averages the values of keys i-1, i, i+1 that exist, when Q
    // is zero (all scores equal).
    let seq = 6;
    let q = vec![0.0; seq * D];
    let k = matrix(seq, |j, d| (j + d) as f64 * 0.1);
    let v = matrix(seq, |j, _| j as f64);
    let local = ForwardOptions::new().window(1, 1);
    let r = attention_f64(tensor(&q, seq), tensor(&k, seq), tensor(&v, seq), &local).unwrap();
    let expected = [0.5, 1.0, 2.0, 3.0, 4.0, 4.5];
    for (i, e) in expected.iter().enumerate() {
        assert_relative_eq!(r.out[i * D], *e, epsilon = 1e-12);
    }
    // With causal, the right side is 0: keys i-1 and i.
    let r = attention_f64(tensor(&q, seq), tensor(&k, seq), tensor(&v, seq), &local.causal(true)).unwrap();
    let expected = [0.0, 0.5, 1.5, 2.5, 3.5, 4.5];
    for (i, e) in expected.iter().enumerate() {
        assert_relative_eq!(r.out[i * D], *e, epsilon = 1e-12);
    }
    // Window (-1, 0) is exactly causal.
    let a =
        attention_f64(tensor(&k, seq), tensor(&k, seq), tensor(&v, seq), &ForwardOptions::new().window(-1, 0)).unwrap();
    let b =
        attention_f64(tensor(&k, seq), tensor(&k, seq), tensor(&v, seq), &ForwardOptions::new().causal(true)).unwrap();
    assert_eq!(a, b);
}

#[test]
fn softcap_bounds_scores_and_vanishes_when_wide() {
    let mut rng = rng("reference softcap");
    let shape = [1, 2, 40, 64];
    let n = shape.iter().product();
    let (q, k, v) = (normal_f16(&mut rng, n), normal_f16(&mut rng, n), normal_f16(&mut rng, n));
    let t = |x| host_bhsd(x, shape);
    let plain = attention_f64(t(&q), t(&k), t(&v), &ForwardOptions::new().softmax_scale(1.0)).unwrap();
    let wide = attention_f64(t(&q), t(&k), t(&v), &ForwardOptions::new().softmax_scale(1.0).softcap(1e6)).unwrap();
    for (a, b) in plain.out.iter().zip(&wide.out) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
    // With cap 1 every score lies in (-1, 1): the logsumexp of 40 keys is below 1 + ln 40.
    let tight = attention_f64(t(&q), t(&k), t(&v), &ForwardOptions::new().softmax_scale(1.0).softcap(1.0)).unwrap();
    assert!(tight.lse.iter().all(|&l| l < 1.0 + 40f64.ln() && l > -1.0 + 40f64.ln()));
}
