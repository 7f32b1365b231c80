"""Checkpoints shipped inside the package, loaded by name (`dfdcap predict fvnet ...`).

A MODEL argument is either a checkpoint file or the name of a shipped one:
`dfdcap/models/weights/<name>.pt` (beside it `<name>.json` says how it was trained).
A path that exists always wins, so a local file called `fvnet` is not shadowed.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from dfdcap.errors import ModelError

WEIGHTS_PACKAGE = "dfdcap.models"
WEIGHTS_DIR = "weights"


def _weights_dir() -> Path:
    return Path(str(resources.files(WEIGHTS_PACKAGE).joinpath(WEIGHTS_DIR)))


def shipped_names() -> list[str]:
    """Names of the checkpoints shipped with the package (sorted; empty if none)."""
    d = _weights_dir()
    return sorted(p.stem for p in d.glob("*.pt")) if d.is_dir() else []


def shipped_path(name: str) -> Path | None:
    """The shipped checkpoint called `name`, or None."""
    p = _weights_dir() / f"{name}.pt"
    return p if p.is_file() else None


def resolve_checkpoint(spec: str | Path) -> Path:
    """A checkpoint file for `spec`: an existing path as is, else a shipped name's file.

    ModelError (one line) when it is neither, listing the shipped names.
    """
    path = Path(spec)
    if path.exists():
        return path
    name = str(spec)
    if name and "/" not in name and "\\" not in name:
        found = shipped_path(name[:-3] if name.endswith(".pt") else name)
        if found is not None:
            return found
    names = shipped_names()
    raise ModelError(
        f"{spec}: no such checkpoint file and not a shipped model name "
        f"(shipped: {', '.join(names) if names else 'none in this install'}); give a .pt path from pretrain/finetune"
    )
