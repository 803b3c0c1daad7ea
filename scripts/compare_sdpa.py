#!/usr/bin/env python3
"""Merge FlashCore's bench table with sdpa_baseline.py's JSON from the same GPU run.

    python3 scripts/compare_sdpa.py BENCH_LOG SDPA_JSON [--mma-sync]

BENCH_LOG holds the Markdown table the bench prints (only the automatically chosen kernel's row
of each case is used; with --mma-sync, the fastest mma.sync kernel of each case instead, chosen
or forced: the tile height `FlashAttention::autotune` would pick); SDPA_JSON is
sdpa_baseline.json. Prints a
Markdown table: our µs and TFLOP/s beside SDPA flash and cudnn timed in a CUDA graph, and the
speed ratios (SDPA time / our time; above 1 means FlashCore is faster).
"""
import json
import re
import sys

ROW = re.compile(r"\| \((\d+),(\d+),(\d+),(\d+)\) \| (true|false) \| (\S+) \| ([\d.]+) \| ([\d.]+) \|")


def main(bench_log, sdpa_json, mma_sync=False):
    ours = {}
    for line in open(bench_log):
        if "under sustained load" in line:
            break  # the bench's second table (scripts/compare_sustained.py reads it)
        m = ROW.match(line.strip())
        if not m:
            continue
        kernel = m.group(6)
        key = (tuple(int(x) for x in m.group(1, 2, 3, 4)), m.group(5) == "true")
        row = (float(m.group(7)), float(m.group(8)))
        if mma_sync:
            if "hopper" not in kernel and (key not in ours or row[0] < ours[key][0]):
                ours[key] = row
        # Rows whose kernel is in parentheses were forced for comparison, not chosen: skip them.
        elif not kernel.startswith("("):
            ours[key] = row
    data = json.load(open(sdpa_json))
    sdpa = {}
    for r in data["rows"]:
        sdpa.setdefault(((r["B"], r["H"], r["S"], r["D"]), bool(r["causal"])), {})[r["backend"]] = r
    print(f"Device: {data.get('device', '?')}; both sides per call inside a CUDA graph of 20 calls "
          "(FlashCore tables before v3's graph timing: back-to-back launches); ratio = SDPA time / FlashCore time.\n")
    print("| shape (B,H,S,D) | causal | FlashCore µs | TFLOP/s | SDPA flash µs | SDPA cudnn µs | vs flash | vs cudnn |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for key in sorted(ours, key=lambda k: (k[0][3], k[0][0] * k[0][1] * k[0][2] ** 2, k[1])):
        if key not in sdpa:
            continue
        us, tf = ours[key]
        flash, cudnn = sdpa[key].get("flash"), sdpa[key].get("cudnn")
        f_us = flash["us_graph"] if flash else float("nan")
        c_us = cudnn["us_graph"] if cudnn else float("nan")
        b, h, s, d = key[0]
        print(f"| ({b},{h},{s},{d}) | {str(key[1]).lower()} | {us:.1f} | {tf:.1f} | {f_us:.1f} | {c_us:.1f} "
              f"| {f_us / us:.2f}× | {c_us / us:.2f}× |")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], "--mma-sync" in sys.argv[3:])
