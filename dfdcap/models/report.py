"""`dfdcap report runs/x`: training curves and predictions of a training run, as one PNG."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from dfdcap.errors import ModelError
from dfdcap.fileio import read_json


def read_metrics_csv(path: str | Path) -> list[dict]:
    """Lightning's metrics.csv -> rows as {column: float} (empty cells dropped); [] if missing."""
    path = Path(path)
    if not path.is_file():
        return []
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ModelError(f"{path}: not a metrics CSV (not UTF-8 text at byte {e.start})") from None
    rows = []
    for r in csv.DictReader(io.StringIO(text, newline="")):
        row = {}
        for k, v in r.items():
            if k is None or v in (None, ""):
                continue
            try:
                row[k] = float(v)
            except ValueError:
                continue
        rows.append(row)
    return rows


def curves(rows: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one logged metric, in step order."""
    pts = sorted((r["step"], r[key]) for r in rows if key in r and "step" in r)
    if not pts:
        return np.zeros(0), np.zeros(0)
    a = np.array(pts, dtype=np.float64)
    return a[:, 0], a[:, 1]


def _examples(run_dir: Path, info: dict, n: int) -> tuple[list[dict], str]:
    """A few validation samples of the run's data (dataset file or the synthetic held-out set)."""
    from dfdcap.models.data import FixedSynthetic, open_split

    if info.get("kind") == "finetune" and info.get("data") and Path(info["data"]).is_file():
        ds = open_split(info["data"], info.get("val_split", "test"), None, False)
        return [ds[i] for i in range(min(n, len(ds)))], f"{Path(info['data']).name}:{info.get('val_split')}"
    size = int(info.get("size", 128))
    ds = FixedSynthetic(n, size, int(info.get("frames", 5)))
    return [ds[i] for i in range(len(ds))], "synthetic validation set"


def write_run_report(run_dir: str | Path, png: str | Path, n_examples: int = 3) -> Path:
    """Plot loss curves (train/val) and predictions next to ground truth and the classical baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from dfdcap.models.baseline import classical_dff
    from dfdcap.models.checkpoint import load_checkpoint
    from dfdcap.models.metrics import depth_metrics

    run_dir, png = Path(run_dir), Path(png)
    if not run_dir.is_dir():
        raise ModelError(f"{run_dir}: not a run folder")
    info = read_json(run_dir / "run.json") if (run_dir / "run.json").is_file() else {}
    if not isinstance(info, dict):
        raise ModelError(f"{run_dir / 'run.json'}: expected a JSON object, got {type(info).__name__}")
    rows = read_metrics_csv(run_dir / "metrics.csv")
    ckpt_path = next((p for p in (run_dir / "best.pt", run_dir / "last.pt", Path(info.get("checkpoint", "")))
                      if str(p) and p.is_file()), None)
    examples, source = [], ""
    model = None
    if ckpt_path is not None:
        model, _ = load_checkpoint(ckpt_path)
        examples, source = _examples(run_dir, info, n_examples)

    n_rows = 1 + len(examples)
    fig = plt.figure(figsize=(15, 3.4 * n_rows))
    gs = fig.add_gridspec(n_rows, 5)
    ax = fig.add_subplot(gs[0, :3])
    for key, label in (("train/loss_step", "train (step)"), ("train/loss_epoch", "train (epoch)"), ("val/loss", "validation")):
        x, y = curves(rows, key)
        if not len(x):
            continue
        if key == "train/loss_step":
            ax.plot(x, y, "-", color="C0", alpha=0.25, label=label)
            k = max(1, len(y) // 25)
            if k > 1:  # running mean, to see the trend through the per-batch noise
                sm = np.convolve(y, np.ones(k) / k, mode="valid")
                ax.plot(x[k - 1:], sm, "-", color="C0", label=f"train (mean of {k} steps)")
        else:
            ax.plot(x, y, "o-" if key == "val/loss" else "s-", label=label)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (diopter position L1)")
    ax.legend()
    ax.grid(alpha=0.3)
    ax.set_title(f"{info.get('kind', 'run')} {info.get('model', '')} -- {run_dir.name}")
    ax2 = fig.add_subplot(gs[0, 3:])
    x, y = curves(rows, "val/rms")
    if len(x):
        ax2.plot(x, y * 1000, "o-", color="C3")
    ax2.set_xlabel("step")
    ax2.set_ylabel("validation RMS (mm)")
    ax2.grid(alpha=0.3)
    if not rows:
        ax.text(0.5, 0.5, "no metrics.csv", transform=ax.transAxes, ha="center")

    for r, item in enumerate(examples, start=1):
        with torch.no_grad():
            pred = model(item["stack"][None], item["focus_m"][None])["depth"][0, 0].numpy()
        gt = item["depth_m"][0].numpy()
        mask = item["mask"][0].numpy().astype(bool)
        stack = (item["stack"].numpy().transpose(0, 2, 3, 1) * 255).astype(np.uint8)
        base = classical_dff(stack, item["focus_m"].numpy())
        vals = gt[mask]
        lo, hi = (float(np.percentile(vals, 1)), float(np.percentile(vals, 99))) if vals.size else (0.0, 1.0)
        mn, mb = depth_metrics(pred, gt, mask), depth_metrics(base, gt, mask)
        panels = [
            (stack[len(stack) // 2], f"{source} #{r - 1}: middle frame", None),
            (np.where(mask, gt, np.nan), "ground truth (m)", "turbo"),
            (pred, f"net RMS {mn['rms'] * 1000:.0f} mm, δ1 {mn['delta1']:.0f}%", "turbo"),
            (base, f"classical RMS {mb['rms'] * 1000:.0f} mm, δ1 {mb['delta1']:.0f}%", "turbo"),
            (np.where(mask, np.abs(pred - gt), np.nan), "|network - truth| (m)", "magma"),
        ]
        for c, (img, title, cmap) in enumerate(panels):
            a = fig.add_subplot(gs[r, c])
            if cmap is None:
                a.imshow(img)
            else:
                kw = {"vmin": lo, "vmax": hi} if cmap == "turbo" else {"vmin": 0, "vmax": max(1e-3, (hi - lo) / 2)}
                im = a.imshow(img, cmap=cmap, **kw)
                fig.colorbar(im, ax=a, fraction=0.046)
            a.set_title(title, fontsize=9)
            a.axis("off")
    fig.tight_layout()
    from dfdcap.fileio import atomic_path

    png.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return png


