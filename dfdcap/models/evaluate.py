"""`dfdcap evaluate`: the DDFF-12 metric table of a network beside the classical DFF baseline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from dfdcap.models.baseline import classical_dff
from dfdcap.models.metrics import METRIC_LABELS, METRIC_NAMES, MetricAccumulator


@dataclass(frozen=True)
class EvalResult:
    """Metrics per method ("network", "classical DFF"), pooled over n_samples stacks."""

    metrics: dict[str, dict[str, float]]
    n_samples: int
    source: str


def evaluate_items(
    models: dict[str, torch.nn.Module],
    items: Iterable[dict[str, torch.Tensor]],
    *,
    baseline: bool = True,
    baseline_window: int = 9,
    progress=None,
) -> tuple[dict[str, dict[str, float]], int]:
    """Run every model (and the classical baseline) on each item; pool the metrics.

    items: dicts in the FocusStackDataset form, one stack each (no batch dimension).
    progress: optional callable(i) called after each item.
    """
    accs = {name: MetricAccumulator() for name in models}
    if baseline:
        accs["classical DFF"] = MetricAccumulator()
    n = 0
    for item in items:
        gt = item["depth_m"][0].numpy()
        mask = item["mask"][0].numpy().astype(bool)
        with torch.inference_mode():
            for name, model in models.items():
                model.eval()
                pred = model(item["stack"][None], item["focus_m"][None])["depth"][0, 0].float().numpy()
                accs[name].add(pred, gt, mask)
        if baseline:
            stack = item["stack"].numpy().transpose(0, 2, 3, 1)
            accs["classical DFF"].add(classical_dff(stack, item["focus_m"].numpy(), baseline_window), gt, mask)
        n += 1
        if progress is not None:
            progress(n)
    return {k: a.result() for k, a in accs.items()}, n


def evaluate(
    checkpoint: str | Path,
    data: str | Path,
    *,
    split: str | None = None,
    max_samples: int | None = None,
    baseline_window: int = 9,
    show_progress: bool = True,
) -> EvalResult:
    """Evaluate a checkpoint on a split of a dataset file (full frames, masked pixels).

    split: default the first of test, val, train in the file.
    """
    from rich.progress import Progress

    from dfdcap.models.checkpoint import load_checkpoint
    from dfdcap.models.data import open_split, pick_split

    model, ckpt = load_checkpoint(checkpoint)
    split = split or pick_split(data, ("test", "val", "validation", "train"))
    ds = open_split(data, split, None, False)
    n = len(ds) if max_samples is None else min(len(ds), max_samples)
    with Progress(disable=not show_progress, transient=True) as bar:
        task = bar.add_task(f"evaluating {ckpt['model']} on {Path(data).name}:{split}", total=n)
        metrics, done = evaluate_items(
            {f"{ckpt['model']} (network)": model},
            (ds[i] for i in range(n)),
            baseline_window=baseline_window,
            progress=lambda i: bar.update(task, completed=i),
        )
    return EvalResult(metrics, done, f"{Path(data).name}:{split}")


def metrics_table(metrics: dict[str, dict[str, float]], title: str = ""):
    """A rich Table: one row per metric, one column per method."""
    from rich.table import Table

    table = Table(title=title or None)
    table.add_column("metric")
    for name in metrics:
        table.add_column(name, justify="right")
    for key in METRIC_NAMES:
        row = [METRIC_LABELS[key]]
        for m in metrics.values():
            row.append(_fmt(key, m[key]))
        table.add_row(*row)
    return table


def _fmt(key: str, v: float) -> str:
    if not np.isfinite(v):
        return "nan"
    if key.startswith("delta") or key in ("badpix", "bumpiness"):
        return f"{v:.2f}"
    return f"{v:.5f}" if key in ("mse", "sqr_rel") else f"{v:.4f}"
