"""Latency per 5 x 256 x 256 focus stack for every DFF network (default widths), CPU (and GPU
where one is available), beside the classical DFF baseline measured in the same run.

Goal: poolnet <= 50 ms on 2 CPU cores. Run: python benchmarks/dff_inference.py [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from dfdcap.models.baseline import classical_dff
from dfdcap.models.registry import build_model, model_names


def time_call(fn, repeats: int, warmup: int = 2) -> tuple[float, float]:
    """(median, best) seconds of fn() over `repeats` calls after `warmup` calls.

    The best of several calls is the figure least disturbed by other work on shared cores."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)), float(np.min(ts))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--frames", type=int, default=5)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    stack_u8 = rng.integers(0, 256, (a.frames, a.size, a.size, 3), dtype=np.uint8)
    focus = np.linspace(0.1, 0.5, a.frames).astype(np.float32)
    x = torch.from_numpy(stack_u8.transpose(0, 3, 1, 2).copy()).float()[None] / 255
    f = torch.from_numpy(focus)[None]
    t_base, b_base = time_call(lambda: classical_dff(stack_u8, focus), a.repeats)
    load = os.getloadavg()[0]
    print(f"CPU, {a.threads} threads, stack {a.frames}x{a.size}x{a.size}, median of {a.repeats}; "
          f"load average {load:.1f} on {os.cpu_count()} cores (other work inflates the times)")
    print(f"{'model':<16}{'params':>10}{'CPU ms':>10}{'best ms':>10}{'x baseline':>12}{'GPU ms':>10}")
    print(f"{'classical DFF':<16}{'-':>10}{t_base * 1e3:>10.1f}{b_base * 1e3:>10.1f}{1.0:>12.2f}{'-':>10}")
    results = {}
    for name in model_names():
        torch.manual_seed(0)
        m = build_model(name).eval().to(memory_format=torch.channels_last)
        with torch.inference_mode():
            t, best = time_call(lambda: m(x, f), a.repeats)
        gpu = "-"
        if torch.cuda.is_available():
            mg, xg, fg = m.cuda(), x.cuda(), f.cuda()

            def run_gpu():
                mg(xg, fg)
                torch.cuda.synchronize()

            with torch.inference_mode():
                gpu = f"{time_call(run_gpu, a.repeats)[0] * 1e3:.1f}"
        results[name] = (t, best)
        n_par = sum(p.numel() for p in m.parameters())
        print(f"{name:<16}{n_par:>10}{t * 1e3:>10.1f}{best * 1e3:>10.1f}{t / t_base:>12.2f}{gpu:>10}")
    goal = 0.050
    med, best = results["poolnet"]
    print(f"poolnet: median {med * 1e3:.1f} ms, best {best * 1e3:.1f} ms (goal <= {goal * 1e3:.0f} ms on 2 cores): "
          f"median {'MET' if med <= goal else 'NOT MET'}, best {'MET' if best <= goal else 'NOT MET'}")


if __name__ == "__main__":
    main()
