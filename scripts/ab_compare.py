#!/usr/bin/env python3
"""Side-by-side table of several benchmark logs (the Markdown table `cargo bench` prints).

    scripts/ab_compare.py before=a.log after=b.log before=c.log after=d.log

Logs with the same label are averaged; the last column is the mean of the last label over the
mean of the first. Only the automatically chosen kernel's rows are compared (forced tile heights
are in parentheses in the logs).
"""
import re
import sys
from collections import OrderedDict

ROW = re.compile(r"^\| (\([^)]*\)) \| (true|false) \| ([^|(][^|]*) \| ([0-9.]+) \|")


def parse(path):
    times = OrderedDict()
    with open(path) as f:
        for line in f:
            m = ROW.match(line)
            if m:
                times[(m.group(1), m.group(2))] = float(m.group(4))
    return times


def main(args):
    runs = [(a.split("=", 1)[0], parse(a.split("=", 1)[1])) for a in args]
    labels = list(OrderedDict.fromkeys(label for label, _ in runs))
    first, last = labels[0], labels[-1]
    print("| shape (B,H,S,D) | causal | " + " | ".join(f"{label} µs" for label, _ in runs) + f" | {last} / {first} |")
    print("|---|---|" + "---:|" * (len(runs) + 1))
    for key in runs[0][1]:
        if not all(key in r for _, r in runs):
            continue
        mean = {lab: sum(r[key] for l, r in runs if l == lab) / sum(1 for l, _ in runs if l == lab) for lab in labels}
        cells = " | ".join(f"{r[key]:.1f}" for _, r in runs)
        print(f"| {key[0]} | {key[1]} | {cells} | {mean[last] / mean[first]:.3f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
