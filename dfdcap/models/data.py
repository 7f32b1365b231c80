"""Batches for training and evaluation: synthetic stacks drawn on the fly, and dataset files.

Every item is a dict of tensors in the FocusStackDataset form (CONTRACTS.md):
"stack" (S, 3, H, W) float32 in [0, 1], "focus_m" (S,) float32, "depth_m" (1, H, W) float32,
"mask" (1, H, W) bool, "coc_px" (S, 1, H, W) float32 (synthetic stacks always have it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from dfdcap.errors import DatasetError, ModelError


def item_from_sim(d: dict) -> dict[str, torch.Tensor]:
    """A random_focus_stack() dict -> a training item (tensors, CONTRACTS.md layout)."""
    depth = np.asarray(d["depth_m"], dtype=np.float32)
    return {
        "stack": torch.from_numpy(np.ascontiguousarray(d["stack"].transpose(0, 3, 1, 2))).float() / 255.0,
        "focus_m": torch.from_numpy(np.asarray(d["focus_m"], dtype=np.float32)),
        "depth_m": torch.from_numpy(depth)[None],
        "mask": torch.from_numpy(np.isfinite(depth) & (depth > 0))[None],
        "coc_px": torch.from_numpy(np.asarray(d["coc_px"], dtype=np.float32))[:, None],
    }


def draw_synthetic(rng: np.random.Generator, size: int, frames: int, max_coc_px: float | None = None) -> dict[str, torch.Tensor]:
    """One random synthetic focus stack (S = frames, size x size) from the thin-lens simulator.

    max_coc_px: the largest blur in the stack (pixels); None: the simulator's default (6-16).
    """
    try:
        from dfdcap.sim.render import random_focus_stack
    except ImportError as e:  # the simulator is part of this package; this only guards a broken install
        raise ModelError(f"synthetic pretraining needs dfdcap.sim.render ({e})") from None
    return item_from_sim(random_focus_stack(rng, (size, size), frames, max_coc_px=max_coc_px))


def process_rank() -> int:
    """This training process's global rank (0 without torch.distributed): set up by Lightning's DDP,
    and still readable in a DataLoader worker forked from that process."""
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class SyntheticStacks(IterableDataset):
    """An endless stream of random synthetic stacks; each worker of each training process (rank)
    gets its own seed, so no two draw the same stacks."""

    def __init__(self, size: int = 128, frames: int = 5, seed: int = 0):
        self.size, self.frames, self.seed = size, frames, seed

    def __iter__(self):
        info = get_worker_info()
        wid = info.id if info is not None else 0
        rng = np.random.default_rng([self.seed, process_rank(), wid, int(torch.initial_seed() % 2**31)])
        while True:
            yield draw_synthetic(rng, self.size, self.frames)


class FixedSynthetic(Dataset):
    """A fixed, seeded set of synthetic stacks (the same for every run with the seed).

    VAL_SEED draws the validation set that pretraining selects its best checkpoint on;
    TEST_SEED the held-out test set that benchmarks report (never seen in training or selection).
    blur_px: (lo, hi) largest blur per stack, drawn uniformly; None: the simulator's default.
    """

    VAL_SEED = 20240601
    TEST_SEED = 20240602

    def __init__(self, n: int = 32, size: int = 128, frames: int = 5, seed: int = VAL_SEED,
                 blur_px: tuple[float, float] | None = None):
        rng = np.random.default_rng(seed)
        self.items = [draw_synthetic(rng, size, frames, None if blur_px is None else float(rng.uniform(*blur_px)))
                      for _ in range(n)]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.items[i]


def dataset_splits(path: str | Path) -> list[str]:
    """Split names in a dataset file (keys stack_<split>)."""
    import h5py

    path = Path(path)
    if path.is_dir():
        raise DatasetError(f"{path}: a folder, expected a dataset .h5 file")
    if not path.is_file():
        raise DatasetError(f"{path}: dataset file not found")
    try:
        with h5py.File(path, "r") as f:
            return sorted(k[len("stack_"):] for k in f.keys() if k.startswith("stack_"))
    except OSError as e:
        raise DatasetError(f"{path}: not an HDF5 dataset ({str(e).splitlines()[0]})") from None


def image_size(path: str | Path, split: str) -> tuple[int, int]:
    """(H, W) of the stacks of one split (whose layout is checked on the way)."""
    from dfdcap.dataset.h5io import open_dataset

    with open_dataset(path) as f:
        _, h, w, _ = f.stack_shape(split)
    return int(h), int(w)


def check_trainable(path: str | Path, split: str) -> None:
    """DatasetError, before a run folder is made, unless the split's arrays fit together, the lens
    attributes (for CoC maps) are numbers and some stack has a valid depth pixel: training on none
    would report a loss of 0 and write a checkpoint that learnt nothing. Stops at the first such stack."""
    from dfdcap.dataset.h5io import open_dataset

    with open_dataset(path) as f:
        f.coc_lens()
        if not f.has_depth(split):
            raise DatasetError(f"{path}: split {split!r} has no depth ground truth to train on")
        for i in range(f.n(split)):
            d, m = f.depth_m(split, i), f.mask(split, i)
            if np.any(m & np.isfinite(d) & (d > 0)):
                return
    raise DatasetError(f"{path}: split {split!r} has no valid depth pixel (every mask is empty or every depth is 0, "
                       "negative or not finite): nothing to train on")


def check_val_crops(path: str | Path, val: Dataset, split: str, crop: int) -> None:
    """ModelError unless some validation item (centre crop, as validation scores it) has a valid depth
    pixel: otherwise every val/loss is 0 and best.pt is chosen on nothing. Stops at the first valid item."""
    from dfdcap.errors import ModelError

    for i in range(len(val)):
        if bool(val[i]["mask"].any()):
            return
    raise ModelError(f"{path}: the {crop}x{crop} centre crops of split {split!r}, on which validation scores, "
                     "hold no valid depth pixel; use a larger --crop")


def pick_split(path: str | Path, wanted: tuple[str, ...]) -> str:
    """The first of `wanted` present in the file; DatasetError naming what is there otherwise."""
    splits = dataset_splits(path)
    for s in wanted:
        if s in splits:
            return s
    raise DatasetError(f"{path}: no split among {', '.join(wanted)} (file has: {', '.join(splits) or 'none'})")


def open_split(path: str | Path, split: str, crop: int | None, random_crop: bool) -> Dataset:
    """The dataset stage's FocusStackDataset for one split of a dataset file."""
    from dfdcap.dataset.torch_data import FocusStackDataset

    return FocusStackDataset(str(path), split, crop=crop, random_crop=random_crop)
