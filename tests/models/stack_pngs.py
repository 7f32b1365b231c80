"""A synthetic stack item written as the PNG frames `dfdcap predict` reads (a module of its own, not
conftest.py, so that tests import it by a name no other test folder shares)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dfdcap.fileio import write_image


def write_stack_pngs(item: dict, folder: Path) -> tuple[list[Path], str]:
    """The item's frames as folder/f<i>.png, and its focus distances as a --focus argument."""
    paths = []
    for i, fr in enumerate(item["stack"]):
        paths.append(folder / f"f{i}.png")
        write_image(paths[-1], (fr.numpy().transpose(1, 2, 0) * 255).round().astype(np.uint8))
    return paths, ",".join(f"{v:.4f}" for v in item["focus_m"].tolist())
