"""PyTorch SDPA under sustained load, timed as FlashCore's bench times its kernels (`SustainedRow`).

    python3 sdpa_sustained.py [--seconds 4] [--backends flash,cudnn] [--causal 0|1|both] [B,H,S,D ...]

For each shape (default: the bench's `SUSTAINED_SHAPES`), causal setting and backend: idle 1 s,
then replay a CUDA graph of 20 calls (three input sets in turn) back to back for SECONDS after five
warm-up replays, an event between consecutive replays. Prints the bench's sustained table: the
median µs per call of the first half-second window, the mean µs per call of the replays that
start 1 s or later (the steady state), and the median of each half-second window. At a GPU's
power limit the clocks move up and down over about a second, so `sdpa_baseline.py`'s burst of
25 replays lands on a fast or a slow phase; the steady mean takes in whole cycles. Writes
sdpa_sustained.json under $OUT when OUT is set.
"""
import argparse
import json
import os
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}
SHAPES = ["16,16,512,64", "8,16,2048,64", "8,16,2048,128", "2,16,8192,128"]
IDLE_SECONDS = 1.0
SETTLE_SECONDS = 1.0
WINDOW_SECONDS = 0.5
IN_FLIGHT = 4
CALLS = 20


def replay_for(graph, seconds):
    """(seconds since the first timed replay began, µs per call) of each replay."""
    for _ in range(5):
        graph.replay()
    previous = torch.cuda.Event(enable_timing=True)
    previous.record()
    pending, out, elapsed_ms = [], [], 0.0
    start = time.monotonic()
    while time.monotonic() - start < seconds or pending:
        if time.monotonic() - start < seconds:
            graph.replay()
            end = torch.cuda.Event(enable_timing=True)
            end.record()
            pending.append(end)
            if len(pending) <= IN_FLIGHT:
                continue
        end = pending.pop(0)
        end.synchronize()
        ms = previous.elapsed_time(end)
        out.append((elapsed_ms / 1e3, ms * 1e3 / CALLS))
        elapsed_ms += ms
        previous = end
    return out


def median(values):
    values = sorted(values)
    return values[len(values) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("shapes", nargs="*", default=SHAPES, help="B,H,S,D")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--backends", default="flash,cudnn")
    ap.add_argument("--causal", default="both", choices=["0", "1", "both"])
    a = ap.parse_args()
    causals = {"0": (False,), "1": (True,), "both": (False, True)}[a.causal]
    device = torch.cuda.get_device_name()
    print(f"\nPyTorch SDPA under sustained load, {device}, torch {torch.__version__}; each backend idle {IDLE_SECONDS} s, "
          f"then its graph of {CALLS} calls replayed back to back for {a.seconds} s; steady µs: mean per call from "
          f"{SETTLE_SECONDS} s on; windows: median µs per call of each {WINDOW_SECONDS} s:\n")
    print("| shape (B,H,S,D) | causal | kernel | first window µs | steady µs | steady TFLOP/s | windows |")
    print("|---|---|---|---:|---:|---:|---|")
    rows = []
    for shape in a.shapes:
        B, H, S, D = (int(x) for x in shape.split(","))
        for causal in causals:
            g = torch.Generator(device="cuda").manual_seed(0)
            sets = [[torch.randn(B, H, S, D, device="cuda", dtype=torch.float16, generator=g) for _ in range(3)]
                    for _ in range(3)]
            flops = 4 * B * H * S * S * D / (2 if causal else 1)
            for name in a.backends.split(","):
                with sdpa_kernel([BACKENDS[name]]):
                    side = torch.cuda.Stream()
                    side.wait_stream(torch.cuda.current_stream())
                    with torch.cuda.stream(side):
                        for q, k, v in sets:
                            F.scaled_dot_product_attention(q, k, v, is_causal=causal)
                    torch.cuda.current_stream().wait_stream(side)
                    graph = torch.cuda.CUDAGraph()
                    with torch.cuda.graph(graph):
                        for i in range(CALLS):
                            q, k, v = sets[i % 3]
                            F.scaled_dot_product_attention(q, k, v, is_causal=causal)
                    torch.cuda.synchronize()
                    time.sleep(IDLE_SECONDS)
                    replays = replay_for(graph, a.seconds)
                windows = {}
                for seconds, us in replays:
                    windows.setdefault(int(seconds / WINDOW_SECONDS), []).append(us)
                window_us = [median(windows[w]) for w in sorted(windows)]
                steady = [us for seconds, us in replays if seconds >= SETTLE_SECONDS]
                steady_us = sum(steady) / max(len(steady), 1)
                rows.append(dict(B=B, H=H, S=S, D=D, causal=causal, backend=name, first_window_us=window_us[0],
                                 steady_us=steady_us, window_us=window_us))
                print(f"| ({B},{H},{S},{D}) | {str(causal).lower()} | sdpa-{name} | {window_us[0]:.1f} | {steady_us:.1f} "
                      f"| {flops / (steady_us * 1e-6) / 1e12:.1f} | {' '.join(f'{w:.1f}' for w in window_us)} |",
                      flush=True)
    out = os.environ.get("OUT")
    if out:
        with open(os.path.join(out, "sdpa_sustained.json"), "w") as f:
            json.dump(dict(device=device, torch=torch.__version__, rows=rows), f, indent=1)


if __name__ == "__main__":
    main()
