"""`dfdcap evaluate`: the DDFF-12 metric table of a network beside the classical DFF baseline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from dfdcap.errors import ModelError
from dfdcap.models.baseline import classical_dff
from dfdcap.models.metrics import METRIC_LABELS, METRIC_NAMES, MetricAccumulator


CLASSICAL = "classical DFF"
# --json keys (the names DFF papers use) for the table's metric names
JSON_KEYS = {"mse": "mse", "rms": "rms", "log_rms": "log_rms", "abs_rel": "absrel", "sqr_rel": "sqrrel",
             "delta1": "delta1", "delta2": "delta2", "delta3": "delta3", "badpix": "badpix", "bumpiness": "bumpiness"}
_FRACTIONS = ("delta1", "delta2", "delta3", "badpix")  # percentages in the table, fractions 0-1 in JSON


@dataclass(frozen=True)
class EvalResult:
    """Metrics per method (network labels, then "classical DFF"), pooled over n_samples stacks.

    split: the split scored; kind: dfdcap | ddff12 | mdff; disparity: for DDFF-12 files the same
    metrics in disparity (B*f / depth, pixels) as the DDFF-12 papers report them, else None;
    warnings: one line per network that was trained or selected on the scored stacks.
    """

    metrics: dict[str, dict[str, float]]
    n_samples: int
    source: str
    split: str = ""
    kind: str = "dfdcap"
    disparity: dict[str, dict[str, float]] | None = None
    warnings: tuple[str, ...] = ()
    networks: tuple[str, ...] = ()


def _run_items(models, items, baseline, baseline_window, progress, disparity_bf):
    """Pool metrics of every model (+ baseline) over items; also in disparity when disparity_bf is set."""
    names = list(models) + ([CLASSICAL] if baseline else [])
    accs = {k: MetricAccumulator() for k in names}
    disp = {k: MetricAccumulator() for k in names} if disparity_bf else None
    n = 0
    for item in items:
        gt = item["depth_m"][0].numpy()
        mask = item["mask"][0].numpy().astype(bool)
        preds = {}
        with torch.inference_mode():
            for name, model in models.items():
                model.eval()
                preds[name] = model(item["stack"][None], item["focus_m"][None])["depth"][0, 0].float().numpy()
                if not np.isfinite(preds[name]).all():  # the metrics would mask it: a result that is not one
                    raise ModelError(f"{name}: the network's depth is NaN or infinite on stack {n} "
                                     "(damaged or diverged weights?); no metrics for it")
        if baseline:
            stack = item["stack"].numpy().transpose(0, 2, 3, 1)
            preds[CLASSICAL] = classical_dff(stack, item["focus_m"].numpy(), baseline_window)
        for name, pred in preds.items():
            accs[name].add(pred, gt, mask)
            if disp is not None:
                disp[name].add(*depth_to_disparity([pred, gt], disparity_bf), mask)
        n += 1
        if progress is not None:
            progress(n)
    return accs, disp, n


def depth_to_disparity(depths_m: list[np.ndarray], bf: float) -> list[np.ndarray]:
    """Depth maps (metres) -> disparity maps (pixels) = bf / depth; depth <= 0 stays 0 (invalid)."""
    out = []
    for d in depths_m:
        d = np.asarray(d, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            out.append(np.where(d > 0, bf / np.where(d > 0, d, 1.0), 0.0))
    return out


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
    accs, _, n = _run_items(models, items, baseline, baseline_window, progress, None)
    return {k: a.result() for k, a in accs.items()}, n


def network_label(spec: str | Path, model_name: str) -> str:
    """"fvnet (shipped)" for a shipped name, "poolnet (runs/x/best.pt)"-style for a file."""
    from dfdcap.models.shipped import shipped_path

    p = Path(spec)
    if not p.exists() and shipped_path(str(spec)) is not None:
        return f"{model_name} (shipped)"
    return f"{model_name} ({'/'.join(p.parts[-2:])})"


def evaluate(
    checkpoint: str | Path | list,
    data: str | Path,
    *,
    split: str | None = None,
    max_samples: int | None = None,
    baseline_window: int = 9,
    show_progress: bool = True,
) -> EvalResult:
    """Evaluate checkpoint(s) (files or shipped names) on a split of a dataset file beside the baseline.

    split: default the first of test, val, train in the file. Full frames, masked pixels.
    """
    from rich.progress import Progress

    from dfdcap.dataset.h5io import DDFF12_BASELINE_X_FOCAL, open_dataset
    from dfdcap.models.checkpoint import load_checkpoint
    from dfdcap.models.data import open_split, pick_split
    from dfdcap.models.shipped import resolve_checkpoint
    from dfdcap.models.splits import split_sessions, training_use

    specs = checkpoint if isinstance(checkpoint, (list, tuple)) else [checkpoint]
    loaded = [(spec, *load_checkpoint(resolve_checkpoint(spec))) for spec in specs]
    split = split or pick_split(data, ("test", "val", "validation", "train"))
    with open_dataset(data) as f:
        kind = f.kind
    ds = open_split(data, split, None, False)
    sessions = split_sessions(data, split)
    models, warnings = {}, []
    for spec, model, ckpt in loaded:
        label = network_label(spec, ckpt["model"])
        label = label if label not in models else f"{label} #{len(models) + 1}"
        models[label] = model
        use = training_use(ckpt.get("meta") or {}, data, split, sessions)
        if use:
            warnings.append(f"{spec}: split {split!r} of {Path(data).name} holds stacks this checkpoint was {use}; "
                            f"these are not held-out numbers")
    n = len(ds) if max_samples is None else min(len(ds), max_samples)
    with Progress(disable=not show_progress, transient=True) as bar:
        task = bar.add_task(f"evaluating on {Path(data).name}:{split}", total=n)
        accs, disp, done = _run_items(models, (ds[i] for i in range(n)), True, baseline_window,
                                      lambda i: bar.update(task, completed=i),
                                      DDFF12_BASELINE_X_FOCAL if kind == "ddff12" else None)
    if done and accs[CLASSICAL].n == 0:  # a table of nan would read as a result
        raise ModelError(f"{data}: split {split!r} has no valid depth pixel in its {done} stack(s) scored "
                         "(every mask is empty or every depth is 0, negative or not finite): nothing to score")
    return EvalResult(
        {k: a.result() for k, a in accs.items()}, done, f"{Path(data).name}:{split}", split, kind,
        None if disp is None else {k: a.result() for k, a in disp.items()}, tuple(warnings), tuple(models),
    )


def json_metrics(m: dict[str, float]) -> dict[str, float | None]:
    """Table metrics -> --json metrics: paper key names, deltas and badpix as fractions 0-1, NaN -> null."""
    out: dict[str, float | None] = {}
    for key, name in JSON_KEYS.items():
        v = float(m[key])
        v = v / 100.0 if key in _FRACTIONS else v
        out[name] = v if np.isfinite(v) else None
    return out


def result_json(r: EvalResult) -> dict:
    """{"split", "n", "network", "classical"} (+ "networks" for several, "disparity" for DDFF-12)."""
    doc: dict = {"split": r.split, "n": r.n_samples, "data": r.source.rsplit(":", 1)[0], "kind": r.kind}
    doc["network"] = json_metrics(r.metrics[r.networks[0]]) if r.networks else None
    doc["classical"] = json_metrics(r.metrics[CLASSICAL])
    doc["networks"] = {k: json_metrics(r.metrics[k]) for k in r.networks}
    if r.disparity is not None:
        doc["disparity"] = {
            "network": json_metrics(r.disparity[r.networks[0]]) if r.networks else None,
            "classical": json_metrics(r.disparity[CLASSICAL]),
            "networks": {k: json_metrics(r.disparity[k]) for k in r.networks},
        }
    doc["warnings"] = list(r.warnings)
    return doc


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
