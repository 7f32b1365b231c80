"""A fine-tune run folder that survives mistakes, crashes and Ctrl-C.

- Checked before anything in it is rewritten (`check_run_folder`): a resume with another --model or
  another --data, an unreadable run.json or last.ckpt, --no-resume onto an earlier run, or a resume
  of a run whose last.ckpt is gone (best.pt would be replaced) is a one-line ModelError and the
  folder stays as it was.
- metrics.csv is history: Lightning's CSV logger deletes it when a run resumes; `AppendingCSVLogger`
  keeps it, drops only the rows the resumed run logs again (steps after last.ckpt), and rewrites it
  atomically.
- Lightning checkpoints (last.ckpt, best.ckpt) are written to a temporary name and renamed
  (`AtomicCheckpointIO`), so a kill -9 leaves the previous last.ckpt, never half of one.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.plugins.io import TorchCheckpointIO

from dfdcap.errors import DfdcapError, ModelError
from dfdcap.fileio import atomic_path, atomic_write_text, check_writable_folder, nearest_existing, read_json


class TrainingInterrupted(ModelError):
    """Ctrl-C (exit 130) or SIGTERM (exit 143) during training: the run folder keeps its last
    complete checkpoint."""

    exit_code = 130

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code


def _lightning_ckpt_model(path: Path) -> tuple[str | None, int]:
    """(model name, global step) of a Lightning checkpoint; ModelError if it cannot be read."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        hp = ckpt.get("hyper_parameters") or {}
        return hp.get("model_name"), int(ckpt.get("global_step", 0))
    except Exception as e:  # torch.load raises many types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ModelError(
            f"{path}: cannot resume from it ({first[:120]}); move the run folder aside or choose a new -o folder"
        ) from None


RUN_FILES = ("last.ckpt", "best.ckpt", "best.pt", "last.pt", "metrics.csv")  # what a run writes besides run.json


def earlier_run_files(run_dir: Path) -> list[str]:
    """The files of an earlier training run in run_dir (run.json alone is only a run that never started)."""
    return [name for name in RUN_FILES if (Path(run_dir) / name).is_file()]


def check_run_folder(run_dir: Path, model_name: str, data: Path, resume: bool) -> Path | None:
    """Check the run folder before training; returns the last.ckpt to resume from (or None).

    Nothing is created or changed here.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ModelError(f"{run_dir}: run folder is a file; choose a folder name for -o")
    # a run folder is made by the run, with its parents (`-o runs/x`); the nearest existing
    # ancestor must be a folder that takes new files
    ancestor = nearest_existing(run_dir)
    if not ancestor.is_dir():
        raise ModelError(f"{run_dir}: {ancestor} is a file, not a folder; choose another -o folder")
    try:
        check_writable_folder(ancestor, "run folder")
    except DfdcapError as e:
        raise ModelError(str(e)) from None
    if not run_dir.exists():
        return None
    prev: dict = {}
    if (run_dir / "run.json").is_file():
        try:
            prev = read_json(run_dir / "run.json")
        except DfdcapError as e:
            raise ModelError(f"{e}; move the run folder aside or choose a new -o folder") from None
        if not isinstance(prev, dict):
            raise ModelError(f"{run_dir / 'run.json'}: not a run description; choose a new -o folder")
        if prev.get("model") not in (None, model_name):
            raise ModelError(
                f"{run_dir}: holds a {prev.get('model')!r} run (run.json), not {model_name!r}; "
                f"use --model {prev.get('model')} to continue it or a new -o folder"
            )
    last = run_dir / "last.ckpt"
    earlier = earlier_run_files(run_dir)
    if not resume:
        if earlier:
            raise ModelError(f"{run_dir}: holds an earlier run ({', '.join(earlier)}); "
                             f"{'continue it with --resume or ' if last.is_file() else ''}choose a new -o folder")
        return None
    if not last.is_file():
        # starting over would replace best.pt and cut metrics.csv; metrics.csv alone is an interrupted
        # first epoch (no checkpoint to resume from, nothing worth keeping): that run starts over
        if set(earlier) - {"metrics.csv"}:
            raise ModelError(f"{run_dir}: holds an earlier run ({', '.join(earlier)}) but no last.ckpt to resume from; "
                             "choose a new -o folder or move it aside")
        return None
    ckpt_model, _ = _lightning_ckpt_model(last)
    if ckpt_model not in (None, model_name):
        raise ModelError(f"{last}: is a {ckpt_model!r} run, not {model_name!r}; use --model {ckpt_model} or a new -o folder")
    prev_data = prev.get("data")
    if prev_data and Path(prev_data) != Path(data).resolve():
        raise ModelError(f"{run_dir}: was trained on {prev_data}, not {Path(data).resolve()}; pass that --data to "
                         "continue it, or choose a new -o folder")
    return last


def _read_rows(path: Path) -> tuple[list[str], list[dict]]:
    if not path.is_file():
        return [], []
    with open(path, newline="") as f:
        r = csv.DictReader(f)
        return list(r.fieldnames or []), list(r)


def _write_rows(path: Path, columns: list[str], rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, restval="", extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer, but an existing metrics.csv is continued, not deleted."""

    def _check_log_dir_exists(self) -> None:
        cols, _ = _read_rows(Path(self.metrics_file_path))
        self.metrics_keys = sorted(cols)
        self._trim_pending = bool(cols)

    def save(self) -> None:
        if getattr(self, "_trim_pending", False) and self.metrics:
            first = min(float(m["step"]) for m in self.metrics)  # the resumed run logs from here on
            path = Path(self.metrics_file_path)
            cols, rows = _read_rows(path)
            keep = [r for r in rows if r.get("step") and float(r["step"]) < first]
            self.metrics_keys = sorted(set(cols).union(*self.metrics))
            _write_rows(path, self.metrics_keys, keep)
            self._trim_pending = False
        super().save()

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        path = Path(self.metrics_file_path)
        _, rows = _read_rows(path)
        _write_rows(path, fieldnames, rows)


class AppendingCSVLogger(CSVLogger):
    """CSVLogger whose metrics.csv keeps the rows of earlier (resumed) runs."""

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written to a temporary name, then renamed."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        path = Path(path)
        os.makedirs(path.parent, exist_ok=True)
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)
