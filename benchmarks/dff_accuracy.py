"""Pretrain every DFF network for the same fixed budget on synthetic stacks, then evaluate them
on the fixed held-out synthetic test set beside the classical DFF baseline.

Goal (issue 6): the best network's RMS <= 0.5 x the baseline's and delta<1.25 >= 95 %.
The budget (optimiser steps x batch x stack size) is the same for every model; widths are
reduced from the defaults (BENCH_CONFIGS) so that a CPU run finishes in minutes.
Run: python benchmarks/dff_accuracy.py [--steps 300] [--size 64] [--models poolnet,ddff]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console

from dfdcap.models.checkpoint import load_checkpoint
from dfdcap.models.data import FixedSynthetic
from dfdcap.models.evaluate import evaluate_items, metrics_table
from dfdcap.models.registry import model_names
from dfdcap.models.train import pretrain

BENCH_CONFIGS = {
    "ddff": {"width": 0.125},
    "lstm-ddff": {"width": 0.125},
    "recurrent-ae": {"width": 8},
    "poolnet": {},
    "poolnet-coc": {},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--n-val", type=int, default=8)
    ap.add_argument("--n-test", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="1 is fastest when other work shares the cores")
    ap.add_argument("--models", default=",".join(model_names()))
    ap.add_argument("--out", default=None, help="folder for the checkpoints (default: a temporary one)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    con = Console(width=150, highlight=False)
    out = Path(a.out) if a.out else Path(tempfile.mkdtemp(prefix="dff_accuracy_"))
    out.mkdir(parents=True, exist_ok=True)
    test = FixedSynthetic(a.n_test, a.size, 5, seed=FixedSynthetic.TEST_SEED)
    models, times = {}, {}
    for name in a.models.split(","):
        t = time.perf_counter()
        r = pretrain(name, out / f"{name}.pt", steps=a.steps, size=a.size, batch_size=a.batch_size, lr=a.lr,
                     config=BENCH_CONFIGS.get(name, {}), n_val=a.n_val, progress=False)
        times[name] = time.perf_counter() - t
        models[name], _ = load_checkpoint(r.best_pt)
        con.print(f"{name}: {a.steps} steps in {times[name]:.0f} s, best val loss {r.best_val_loss:.4f} m²")
    metrics, n = evaluate_items(models, test)
    con.print(metrics_table(metrics, f"held-out synthetic test set: {n} stacks {a.size}x{a.size}x5 "
                                     f"(seed {FixedSynthetic.TEST_SEED}); budget {a.steps} steps x batch {a.batch_size}"))
    base = metrics["classical DFF"]
    nets = {k: v for k, v in metrics.items() if k != "classical DFF"}
    best = min(nets, key=lambda k: nets[k]["rms"])
    ratio = nets[best]["rms"] / base["rms"]
    con.print(f"best network {best}: RMS {nets[best]['rms']:.4f} m = {ratio:.2f} x baseline "
              f"({base['rms']:.4f} m) (goal <= 0.5: {'MET' if ratio <= 0.5 else 'NOT MET'}); "
              f"delta<1.25 {nets[best]['delta1']:.1f} % vs baseline {base['delta1']:.1f} % "
              f"(goal >= 95: {'MET' if nets[best]['delta1'] >= 95 else 'NOT MET'})", markup=False)
    con.print(f"checkpoints in {out}")


if __name__ == "__main__":
    main()
