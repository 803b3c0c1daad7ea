#!/usr/bin/env python3
"""Merge sustained-load tables of FlashCore and PyTorch SDPA from the same GPU run.

    python3 scripts/compare_sustained.py LOG [LOG ...]

Reads every Markdown table that follows a line containing "under sustained load": the bench's
`SustainedRow` table, `tiles --sustain`'s, `sdpa_sustained.py`'s (kernels `sdpa-flash`,
`sdpa-cudnn`), or all of them interleaved by `paired_sustained.sh`. A kernel timed several times
in a case (rounds) gets the mean of its steady-state times, and the ratio of each round is listed
too. Prints, per shape and causal setting, the steady-state µs per call of our mma.sync kernel
(the fastest where several ran), of the automatic choice where that is a Hopper kernel, of SDPA
flash and cudnn, and the ratios SDPA time / our time (above 1 means FlashCore is faster).
"""
import math
import re
import sys

ROW = re.compile(r"\| \((\d+),(\d+),(\d+),(\d+)\) \| (true|false) \| (\S+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \|")


def sustained_rows(paths):
    """{(shape, causal): {kernel: [steady µs of each run, in order]}} from the logs' sustained tables."""
    rows = {}
    for path in paths:
        inside = False
        for line in open(path):
            if "under sustained load" in line:
                inside = True
            elif inside and (m := ROW.match(line.strip())):
                key = (tuple(int(x) for x in m.group(1, 2, 3, 4)), m.group(5) == "true")
                rows.setdefault(key, {}).setdefault(m.group(6), []).append(float(m.group(8)))
    return rows


def mean(values):
    return sum(values) / len(values) if values else math.nan


def main(paths):
    rows = sustained_rows(paths)
    print("Steady-state µs per call under sustained load (graph of 20 calls replayed back to back; mean from 1 s on; "
          "the mean over runs where a kernel ran more than once); ratio = SDPA time / FlashCore time.\n")
    print("| shape (B,H,S,D) | causal | mma.sync kernel | µs | automatic choice | µs | SDPA flash µs | SDPA cudnn µs "
          "| mma.sync vs flash | per run | automatic vs flash | automatic vs cudnn |")
    print("|---|---|---|---:|---|---:|---:|---:|---:|---|---:|---:|")
    for key in sorted(rows, key=lambda k: (k[0][3], k[0][0] * k[0][1] * k[0][2] ** 2, k[1])):
        kernels = rows[key]
        flash_runs = kernels.get("sdpa-flash", [])
        flash, cudnn = mean(flash_runs), mean(kernels.get("sdpa-cudnn", []))
        ours = {k: v for k, v in kernels.items() if not k.startswith("sdpa-")}
        if not ours:
            continue
        mma_runs, mma_name = min(((v, k) for k, v in ours.items() if "hopper" not in k),
                                 key=lambda r: mean(r[0]), default=([], "-"))
        auto_runs, auto_name = min(((v, k) for k, v in ours.items() if "hopper" in k),
                                   key=lambda r: mean(r[0]), default=(mma_runs, mma_name))
        mma, auto = mean(mma_runs), mean(auto_runs)
        per_run = " ".join(f"{f / m:.3f}" for f, m in zip(flash_runs, mma_runs)) if len(flash_runs) > 1 else ""
        b, h, s, d = key[0]
        print(f"| ({b},{h},{s},{d}) | {str(key[1]).lower()} | {mma_name} | {mma:.1f} | {auto_name} | {auto:.1f} "
              f"| {flash:.1f} | {cudnn:.1f} | {flash / mma:.3f}× | {per_run} | {flash / auto:.3f}× | {cudnn / auto:.3f}× |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
