#!/usr/bin/env python3
"""Plot TFLOP/s against sequence length from one GPU run of the sweep and of sdpa_baseline.py.

    python3 scripts/plot_sweep.py SWEEP_LOG SDPA_JSON OUT.png

SWEEP_LOG: the Markdown table printed by the `sweep` binary; SDPA_JSON: sdpa_baseline.json from
the same device call. Both sides are per call inside a CUDA graph. Needs matplotlib.
"""
import json
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

ROW = re.compile(r"\| \((\d+),(\d+),(\d+),(\d+)\) \| (true|false) \| (\S+) \| ([\d.]+) \| ([\d.]+) \|")


def main(sweep_log, sdpa_json, out):
    # FlashCore per kernel family: the Hopper (wgmma) kernels and the mma.sync ones (forced
    # rows are in parentheses).
    ours = {"wgmma": {}, "mma.sync": {}}
    for line in open(sweep_log):
        m = ROW.match(line.strip())
        if m:
            b, h, s, d = (int(x) for x in m.group(1, 2, 3, 4))
            family = "wgmma" if "hopper" in m.group(6) else "mma.sync"
            ours[family][(d, s, m.group(5) == "true")] = float(m.group(8))
    data = json.load(open(sdpa_json))
    sdpa = {}
    for r in data["rows"]:
        sdpa[(r["backend"], r["D"], r["S"], bool(r["causal"]))] = r["tflops_graph"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), sharey=True)
    for ax, d in zip(axes, (64, 128)):
        for causal, style in ((False, "-"), (True, "--")):
            seqs = sorted({s for fam in ours.values() for (dd, s, c) in fam if dd == d and c == causal})
            label = " causal" if causal else ""
            for family, color in (("wgmma", "tab:red"), ("mma.sync", "tab:orange")):
                if ours[family]:
                    ys = [ours[family].get((d, s, causal), float("nan")) for s in seqs]
                    ax.plot(seqs, ys, "o" + style, color=color, label=f"FlashCore {family}" + label)
            for backend, color in (("flash", "tab:blue"), ("cudnn", "tab:green")):
                ys = [sdpa.get((backend, d, s, causal), float("nan")) for s in seqs]
                ax.plot(seqs, ys, "s" + style, color=color, label=f"SDPA {backend}" + label, markersize=4)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sequence length (batch x seq = 16384, 16 heads)")
        ax.set_title(f"head dim {d}")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("TFLOP/s (per call in a CUDA graph)")
    # Below both panels, where it hides no line.
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=4)
    fig.suptitle(f"Attention forward, fp16, {data.get('device', '?')}")
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main(*sys.argv[1:4])
