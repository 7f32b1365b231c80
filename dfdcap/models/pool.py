"""A pool of synthetic training stacks rendered once (worker processes) and reused with augmentation.

Rendering a stack costs 0.2-0.4 s, a training step on it a few ms: so the pool renders
`n` stacks once, in parallel, and every draw takes a random crop, flip, 90-degree
rotation, brightness/contrast change of one of them. Blur covers 4-24 px at the largest
(the simulator's default is 6-16 px; the close-range demo rig reaches ~21 px). Frame subsets
(keeping both end frames) and frame order are drawn per batch (`subsample_keep_ends`,
`shuffle_frames`), so that a batch shares one stack length.
"""

from __future__ import annotations

import multiprocessing as mp
import os

import numpy as np
import torch
from torch.utils.data import Dataset

BLUR_RANGE_PX = (4.0, 24.0)


def _render_one(args: tuple[int, int, int, int]) -> dict[str, np.ndarray]:
    """One pool stack (uint8 stack to keep the pool small); seeded by (seed, index) alone.

    NumPy arrays, not tensors: a tensor returned from a worker process arrives in shared memory
    and holds a file descriptor open in the receiving process for as long as it lives, one per
    tensor: under the common 1,024-descriptor limit a 600-stack pool (2,400 tensors) died with
    "received 0 items of ancdata", and under a lower one rendering hung. Arrays travel by value."""
    from dfdcap.models.data import draw_synthetic

    seed, i, size, frames = args
    torch.set_num_threads(1)
    rng = np.random.default_rng([seed, i])
    item = draw_synthetic(rng, size, frames, max_coc_px=float(rng.uniform(*BLUR_RANGE_PX)))
    item["stack"] = (item["stack"] * 255.0 + 0.5).to(torch.uint8)
    item.pop("coc_px")
    return {k: v.numpy() for k, v in item.items()}


def packed(items: list[dict]) -> list[dict[str, torch.Tensor]]:
    """The same items as views into one tensor per key (all items alike in shape).

    Few storages, not four per stack: pickled to DataLoader workers started by a fork server
    (distributed runs) each storage goes through shared memory with its own file descriptor."""
    if all(it[k].untyped_storage().data_ptr() == items[0][k].untyped_storage().data_ptr() for it in items for k in it):
        return items
    return _pack(len(items), items)


def _pack(n: int, items, progress=None) -> list[dict[str, torch.Tensor]]:
    """n items (arrays or tensors, from any iterable) copied into one preallocated tensor per key,
    one at a time (peak memory: the pool and one item); the result is views into those tensors."""
    big: dict[str, torch.Tensor] = {}
    for i, item in enumerate(items):
        for k, v in item.items():
            v = torch.as_tensor(v)
            if k not in big:
                big[k] = torch.empty((n, *v.shape), dtype=v.dtype)
            big[k][i] = v
        if progress:
            progress(i + 1)
    return [{k: t[i] for k, t in big.items()} for i in range(n)] if big else []


def render_pool(n: int, size: int, frames: int, seed: int, workers: int | None = None, progress=None) -> list[dict]:
    """n stacks (size x size, `frames` frames) rendered by `workers` processes (default: all cores).

    The result depends on (n, size, frames, seed) only, not on the number of workers. The items
    are views into one tensor per key (see `packed`).
    progress: optional callable(done) after each stack.
    """
    workers = max(1, workers or os.cpu_count() or 1)
    jobs = [(seed, i, size, frames) for i in range(n)]
    if workers == 1:
        return _pack(n, map(_render_one, jobs), progress)
    with mp.get_context("spawn").Pool(workers) as p:
        return _pack(n, p.imap(_render_one, jobs, chunksize=4), progress)


def augment(item: dict[str, torch.Tensor], crop: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """Random crop, flips, 90-degree rotation, brightness and contrast of one pool item."""
    stack, depth = item["stack"], item["depth_m"]
    h, w = depth.shape[-2:]
    c = min(crop, h, w)
    y, x = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
    st = stack[..., y:y + c, x:x + c].float() / 255.0
    de = depth[..., y:y + c, x:x + c]
    dims = (-2, -1)
    k = int(rng.integers(0, 4))
    flip = bool(rng.integers(0, 2))
    def geo(t: torch.Tensor) -> torch.Tensor:  # noqa: E306
        t = torch.rot90(t, k, dims)
        return torch.flip(t, (-1,)) if flip else t
    st, de = geo(st), geo(de)
    gain = float(rng.uniform(0.6, 1.4))
    offset = float(rng.uniform(-0.15, 0.15))
    mean = st.mean()
    st = ((st - mean) * gain + mean + offset).clamp(0.0, 1.0)
    return {
        "stack": st.contiguous(),
        "focus_m": item["focus_m"],
        "depth_m": de.contiguous(),
        "mask": torch.isfinite(de) & (de > 0),
    }


class AugmentedPool(Dataset):
    """`length` augmented draws (crop x crop) from a rendered pool; draw i is seeded by (seed, i, epoch)."""

    def __init__(self, items: list[dict], crop: int, length: int, seed: int = 0):
        self.items, self.crop, self.length, self.seed = items, crop, length, seed
        self.epoch = 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, i, self.epoch])
        return augment(self.items[int(rng.integers(0, len(self.items)))], self.crop, rng)


def subsample_keep_ends(batch: dict[str, torch.Tensor], k: int, gen: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Keep k frames of every per-frame tensor: the first and last (the swept range) and k-2 random ones."""
    s = batch["stack"].shape[1]
    if k >= s:
        return batch
    k = max(k, 2)
    inner = torch.randperm(s - 2, generator=gen)[: k - 2] + 1
    idx = torch.sort(torch.cat([torch.tensor([0, s - 1]), inner])).values
    return _take_frames(batch, idx)


def shuffle_frames(batch: dict[str, torch.Tensor], gen: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The same frames (with their focus distances) in a random order."""
    return _take_frames(batch, torch.randperm(batch["stack"].shape[1], generator=gen))


def _take_frames(batch: dict[str, torch.Tensor], idx: torch.Tensor) -> dict[str, torch.Tensor]:
    out = dict(batch)
    for key in ("stack", "focus_m", "coc_px"):
        if key in out:
            out[key] = out[key][:, idx]
    return out
