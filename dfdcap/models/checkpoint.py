"""Plain-dict checkpoints: {"model": name, "config": {...}, "state_dict": {...}, "meta": {...}}.

Loadable with torch.load(weights_only=True) (no pickled classes): config and meta hold only
str/int/float/bool/None, lists and dicts of them. Written atomically.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from dfdcap.errors import ModelError
from dfdcap.fileio import atomic_path
from dfdcap.models.registry import MODELS, build_model

FORMAT = "dfdcap-checkpoint-1"


def save_checkpoint(path: str | Path, model_name: str, config: dict, model: nn.Module, meta: dict | None = None) -> Path:
    """Write the model's weights and how to rebuild it to `path` (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ckpt = {
        "format": FORMAT,
        "model": model_name,
        "config": dict(config),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "meta": dict(meta or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return path


def read_checkpoint(path: str | Path) -> dict:
    """Read and check a checkpoint file; any problem is a one-line ModelError naming the file."""
    path = Path(path)
    if path.is_dir():
        raise ModelError(f"{path}: is a folder, not a checkpoint file (a run folder holds best.pt and last.pt)")
    if not path.is_file():
        raise ModelError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises many types (struct.error, UnpicklingError, ...)
        text = str(e)
        if "weights only load failed" in text.lower():  # never pass on torch's advice to load unsafely
            lines = [ln.strip() for ln in text.splitlines()[1:] if ln.strip()]
            why = next((ln.split("error:", 1)[-1].strip() for ln in lines
                        if "weights_only" not in ln and "documentation" not in ln.lower()), "")
            why = why.split(" Please")[0]  # torch goes on with how to allow it
            if "global" in why.lower():
                raise ModelError(
                    f"{path}: not a readable dfdcap checkpoint: refused, it holds pickled Python objects "
                    f"({why[:100]}), which could run code when loaded; dfdcap reads only plain checkpoints"
                ) from None
            raise ModelError(f"{path}: not a readable dfdcap checkpoint (the safe loader found {why[:100] or 'no tensors'})") from None
        first = text.strip().splitlines()[0].split(". ")[0] if text.strip() else type(e).__name__
        if "zip archive" in first or "central directory" in first or isinstance(e, OSError):
            # a zip cut short makes torch seek past the end: "[Errno 22] Invalid argument"
            first = f"a PyTorch zip file cut short or damaged: {first}"
        elif len(first) < 12:  # pickle's bare opcode numbers and the like
            first = f"not a PyTorch checkpoint file: {type(e).__name__} {first}"
        raise ModelError(f"{path}: not a readable dfdcap checkpoint ({first[:160]})") from None
    if not isinstance(ckpt, dict) or not {"model", "config", "state_dict"} <= set(ckpt):
        raise ModelError(f"{path}: not a dfdcap checkpoint (expected a dict with model, config, state_dict)")
    _check_types(path, ckpt)
    if ckpt["model"] not in MODELS:
        raise ModelError(f"{path}: checkpoint is for unknown model {ckpt['model']!r}")
    return ckpt


def _check_types(path: Path, ckpt: dict) -> None:
    """Wrong types in the keys would otherwise fail later as tracebacks (unhashable, not a mapping);
    non-finite weights would give NaN depth maps that read as results."""
    bad = f"{path}: not a valid dfdcap checkpoint:"
    if not isinstance(ckpt["model"], str):
        raise ModelError(f"{bad} 'model' is a {type(ckpt['model']).__name__}, expected a model name")
    for key in ("config", "meta"):
        if key in ckpt and not isinstance(ckpt[key], dict):
            raise ModelError(f"{bad} {key!r} is a {type(ckpt[key]).__name__}, expected a dict")
    sd = ckpt["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise ModelError(f"{bad} 'state_dict' must map parameter names to tensors")
    for k, v in sd.items():
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):
            raise ModelError(f"{path}: weight {k!r} holds NaN or inf values (a diverged training?); "
                             "use an earlier checkpoint")


def load_checkpoint(path: str | Path, expected_model: str | None = None) -> tuple[nn.Module, dict]:
    """Rebuild the network from a checkpoint; returns (model in eval mode, checkpoint dict).

    expected_model: if given and the checkpoint holds another model, ModelError.
    """
    ckpt = read_checkpoint(path)
    if expected_model is not None and ckpt["model"] != expected_model:
        raise ModelError(f"{path}: checkpoint is for model {ckpt['model']!r}, not {expected_model!r}")
    try:
        model = build_model(ckpt["model"], **ckpt["config"])
    except ModelError as e:  # e.g. a config key the model does not have, or levels out of range
        raise ModelError(f"{path}: {e}") from None
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise ModelError(f"{path}: weights do not fit model {ckpt['model']!r} with config {ckpt['config']} ({first[:160]})") from None
    model.eval()
    return model, ckpt
