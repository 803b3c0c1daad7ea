#!/usr/bin/env python3
"""A model of how long a grid of attention CTAs takes, for comparing CTA orders (perf notes,
eighth session). No GPU: the hardware is modelled as starting CTAs in index order on whichever
SM has a free slot (greedy), each SM holding `slots` CTAs, an SM's throughput 1.0 tile per unit
time with two or more CTAs resident and `lone_rate` with one, and `overhead` tiles of work per
CTA (prologue, epilogue). It has no memory system: it cannot see L2 locality, which is what made
the all-heads order lose on the GPU.

    scripts/dispatch_model.py            prints, per shape, each order's time over the ideal
"""
import argparse


def makespan(jobs, sms, slots, lone_rate, overhead):
    """Time for `jobs` (tiles per CTA, in start order) on `sms` SMs of `slots` CTAs each."""
    pending = iter([j + overhead for j in jobs])
    resident = [[] for _ in range(sms)]
    for sm in resident:
        for _ in range(slots):
            job = next(pending, None)
            if job is not None:
                sm.append(job)
    def rate(n):
        """Each resident CTA's share of its SM's throughput."""
        return (1.0 if n >= 2 else lone_rate) / n

    t = 0.0
    while any(resident):
        dt = min(min(sm) / rate(len(sm)) for sm in resident if sm)
        t += dt
        for i, sm in enumerate(resident):
            if not sm:
                continue
            r = rate(len(sm))
            left = [w - r * dt for w in sm]
            kept = [w for w in left if w > 1e-9]
            for _ in range(len(left) - len(kept)):
                job = next(pending, None)
                if job is not None:
                    kept.append(job)
            resident[i] = kept
    return t


def causal_tiles(seq, q_rows, kv_rows):
    """Key tiles each query block of a causal problem sees, lightest block first."""
    return [((i + 1) * q_rows + kv_rows - 1) // kv_rows for i in range(seq // q_rows)]


def orders(heads, tiles, group_ctas):
    q_blocks = len(tiles)
    heavy_first = tiles[::-1]
    yield "per head, heavy first", [heavy_first[x] for _ in range(heads) for x in range(q_blocks)]
    yield "all heads, heavy first", [heavy_first[x] for x in range(q_blocks) for _ in range(heads)]
    group = max(1, group_ctas // q_blocks)
    grouped = []
    for first in range(0, heads, group):
        members = min(group, heads - first)
        grouped += [heavy_first[x] for x in range(q_blocks) for _ in range(members)]
    yield f"groups of {group} heads, heavy first", grouped


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sms", type=int, default=132)
    ap.add_argument("--slots", type=int, default=2, help="CTAs per SM")
    ap.add_argument("--lone-rate", type=float, default=0.65)
    ap.add_argument("--overhead", type=float, default=1.0)
    ap.add_argument("--group-ctas", type=int, default=256)
    args = ap.parse_args()
    shapes = [(8, 16, 2048, 128, 64), (8, 16, 2048, 128, 32), (2, 16, 8192, 128, 32), (16, 16, 512, 128, 64), (16, 16, 512, 64, 64)]
    for batch, heads, seq, q_rows, kv_rows in shapes:
        tiles = causal_tiles(seq, q_rows, kv_rows)
        total = batch * heads * sum(t + args.overhead for t in tiles)
        ideal = total / args.sms
        cells = []
        for name, jobs in orders(batch * heads, tiles, args.group_ctas):
            t = makespan(jobs, args.sms, args.slots, args.lone_rate, args.overhead)
            cells.append(f"{name}: +{100 * (t / ideal - 1):.1f}%")
        print(f"B={batch} H={heads} S={seq} q_rows={q_rows} kv_rows={kv_rows} causal: " + "; ".join(cells))


if __name__ == "__main__":
    main()
