//! Fuzzing the validation layer (proptest): over arbitrary shapes, strides, addresses, buffer
//! lengths and options, `plan` never panics, and it accepts exactly the problems that an
//! independent statement of the rules (below, in overflow-free u128 arithmetic) calls valid.

use flashcore::plan::{plan, ForwardProblem, LseArg, TensorArg};
use flashcore::{Dtype, ForwardOptions, TensorLayout};
use flashcore_tests::H100;
use proptest::prelude::*;

/// The rules, restated independently of the library's code.
fn is_valid(p: &ForwardProblem) -> bool {
    let tensors = [&p.q, &p.k, &p.v, &p.o];
    let [b, h, sq, d] = p.q.layout.shape;
    let sk = p.k.layout.shape[2];
    let scale = p.options.scale_for(d);
    let dims_ok = tensors.iter().all(|t| t.layout.shape.iter().all(|&x| x > 0) && t.layout.strides[3] == 1);
    // K defines the K/V head count: V must match it, and it must divide Q's (GQA/MQA).
    let hk = p.k.layout.shape[1];
    let shapes_ok = p.k.layout.shape == [b, hk, sk, d]
        && p.v.layout.shape == [b, hk, sk, d]
        && p.o.layout.shape == [b, h, sq, d]
        && hk > 0
        && h % hk == 0;
    let (left, right) = p.options.window_size();
    let cap = p.options.softcap_value();
    let options_ok = [32, 64, 96, 128, 256].contains(&d)
        && cap.is_finite()
        && cap >= 0.0
        && left >= -1
        && right >= -1
        && scale.is_finite()
        && scale > 0.0
        && matches!(p.options.forced_q_tile_rows(), None | Some(64) | Some(128));
    if !(dims_ok && shapes_ok && options_ok && b <= 65_535 && h <= 65_535) {
        return false;
    }
    let extent = |t: &TensorArg| -> u128 {
        1 + (0..4).map(|i| (t.layout.shape[i] as u128 - 1) * t.layout.strides[i] as u128).sum::<u128>()
    };
    let each_ok = tensors.iter().all(|t| {
        t.address % 16 == 0
            && (0..3).all(|i| t.layout.shape[i] == 1 || t.layout.strides[i] % 8 == 0)
            && extent(t) <= t.len as u128
            && (t.layout.shape[2] as u128 - 1) * t.layout.strides[2] as u128 + d as u128 <= i32::MAX as u128
    });
    if !each_ok {
        return false;
    }
    let range = |t: &TensorArg| (t.address as u128, t.address as u128 + 2 * extent(t));
    let disjoint = |(a0, a1): (u128, u128), (b0, b1): (u128, u128)| a1 <= b0 || b1 <= a0;
    let o = range(&p.o);
    if ![&p.q, &p.k, &p.v].iter().all(|t| disjoint(o, range(t))) {
        return false;
    }
    match p.lse {
        None => true,
        Some(lse) => {
            let need = (b * h * sq) as u128;
            let r = (lse.address as u128, lse.address as u128 + 4 * need);
            lse.address % 4 == 0 && need <= lse.len as u128 && tensors.iter().all(|t| disjoint(r, range(t)))
        }
    }
}

// Each kind of fault is one rare choice among valid ones, so that about half of the problems
// are valid and the invalid half spreads over every rule (`the_fuzzer_reaches_both_outcomes`).

fn dim() -> impl Strategy<Value = usize> {
    prop_oneof![12 => 1usize..4, 8 => 1usize..300, 1 => Just(0usize), 1 => Just(70_000usize), 1 => Just(1usize << 20)]
}

// The strategies below are boxed: nested unboxed, their values overflow the test thread's stack
// in a debug build.
fn layout(shape: [usize; 4]) -> BoxedStrategy<TensorLayout> {
    let [b, h, s, d] = shape;
    let stride =
        prop_oneof![Just(0usize), 1usize..200, Just(8 * 4096), Just(usize::MAX / 3), (1usize..64).prop_map(|x| 8 * x)];
    prop_oneof![
        12 => Just(TensorLayout::bhsd(b, h, s, d)),
        8 => Just(TensorLayout::bshd(b, s, h, d)),
        1 => (stride.clone(), stride.clone(), stride, prop_oneof![9 => Just(1usize), 1 => 0usize..4])
            .prop_map(move |(sb, sh, ss, sd)| TensorLayout::new(shape, [sb, sh, ss, sd])),
    ]
    .boxed()
}

/// A tensor argument in slot `slot` of a fake address space (slots are 2^44 bytes apart),
/// sometimes misaligned, sometimes in another tensor's slot, with an exact, short or huge
/// buffer length.
fn tensor(shape: [usize; 4], slot: u64) -> BoxedStrategy<TensorArg> {
    (
        layout(shape),
        prop_oneof![40 => Just(slot), 1 => 0u64..4],
        prop_oneof![40 => Just(0u64), 10 => Just(4096u64), 1 => Just(2u64), 1 => Just(8u64)],
        prop_oneof![40 => Just(0u8), 1 => Just(1u8), 10 => Just(2u8)],
    )
        .prop_map(move |(layout, slot, offset, len_kind)| {
            let required = layout.required_len().unwrap_or(usize::MAX);
            let len = match len_kind {
                0 => required,
                1 => required.saturating_sub(1),
                _ => usize::MAX,
            };
            TensorArg { address: (slot + 1) * (1 << 44) + offset, len, layout }
        })
        .boxed()
}

fn problem() -> impl Strategy<Value = ForwardProblem<'static>> {
    let head_dim = prop_oneof![12 => Just(64usize), 12 => Just(128usize), 1 => Just(96usize), 1 => Just(32usize), 1 => Just(48usize), 1 => Just(0usize)];
    let seq_k = prop_oneof![3 => Just(None), 1 => dim().prop_map(Some)];
    let v_shape = prop_oneof![30 => Just(0usize), 1 => 1usize..3];
    let kv_heads_kind = prop_oneof![12 => Just(0u8), 2 => Just(1u8), 2 => Just(2u8), 1 => Just(3u8)];
    ((dim(), dim(), dim(), head_dim), seq_k, v_shape, prop_oneof![3 => Just(false), 1 => Just(true)], kv_heads_kind)
        .prop_flat_map(|((b, h, s, d), seq_k, v_shape, causal, kv_heads_kind)| {
            let seq_k = seq_k.unwrap_or(s);
            let q = [b, h, s, d];
            // K/V heads: usually Q's, sometimes a divisor of it (GQA/MQA), sometimes not.
            let kv_heads = match kv_heads_kind {
                0 => h,
                1 => 1,
                2 => h / 2,
                _ => h + 1,
            };
            let kv = [b, kv_heads, seq_k, d];
            let v = match v_shape {
                0 => kv,
                1 => [b, kv_heads + 1, seq_k, d],
                _ => [b, kv_heads, seq_k + 1, d],
            };
            let lse = (prop_oneof![10 => 4u64..12, 1 => 0u64..4], prop_oneof![10 => Just(0u64), 1 => Just(2u64)])
                .prop_map(|(slot, offset)| Some(LseArg { address: (slot + 1) * (1 << 44) + offset, len: usize::MAX }));
            let short_lse = (4u64..12).prop_map(|slot| Some(LseArg { address: (slot + 1) * (1 << 44), len: 0 }));
            (
                tensor(q, 0),
                tensor(kv, 1),
                tensor(v, 2),
                tensor(q, 3),
                prop_oneof![10 => Just(None), 10 => lse, 1 => short_lse],
                prop_oneof![
                    30 => Just(None),
                    10 => Just(Some(0.125f32)),
                    1 => Just(Some(-1.0f32)),
                    1 => Just(Some(f32::NAN)),
                    1 => Just(Some(0.0f32))
                ],
                prop_oneof![20 => Just(None), 5 => Just(Some(64usize)), 5 => Just(Some(128usize)), 1 => Just(Some(96usize))],
                Just(causal),
            )
        })
        .prop_flat_map(|t| {
            let windows = prop_oneof![
                12 => Just((-1, -1)),
                2 => Just((16, 0)),
                2 => Just((-1, 8)),
                2 => Just((100, 100)),
                1 => Just((-2, 3)),
                1 => Just((5, -7))
            ];
            let softcaps = prop_oneof![12 => Just(0.0f32), 3 => Just(30.0f32), 1 => Just(-5.0f32), 1 => Just(f32::NAN)];
            (Just(t), windows, softcaps)
        })
        .prop_map(|((q, k, v, o, lse, scale, tile, causal), (left, right), cap)| {
            let mut options = ForwardOptions::new().causal(causal).window(left, right).softcap(cap);
            if let Some(scale) = scale {
                options = options.softmax_scale(scale);
            }
            if let Some(rows) = tile {
                options = options.q_tile_rows(rows);
            }
            ForwardProblem { lse, ..ForwardProblem::new(Dtype::F16, q, k, v, o, options) }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn plan_accepts_exactly_the_valid_problems(p in problem()) {
        let planned = plan(&p, &H100);
        prop_assert_eq!(planned.is_ok(), is_valid(&p), "{:?} -> {:?}", p, planned.err());
    }
}

#[test]
fn the_fuzzer_reaches_both_outcomes() {
    // Guard against a strategy that only ever produces invalid (or only valid) problems.
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut valid, mut invalid) = (0, 0);
    for _ in 0..4000 {
        let p = problem().new_tree(&mut runner).unwrap().current();
        if is_valid(&p) {
            valid += 1;
        } else {
            invalid += 1;
        }
    }
    println!("valid {valid}, invalid {invalid}");
    assert!(valid > 100 && invalid > 100, "valid {valid}, invalid {invalid}");
}
