"""PyTorch Dataset over a dataset file (ours or DDFF-12), with random crops for training.

Items are dicts (CONTRACTS.md): "stack" (S, 3, h, w) float32 in [0, 1], "focus_m" (S,) float32,
"depth_m" (1, h, w) float32, "mask" (1, h, w) bool, and "coc_px" (S, 1, h, w) float32 when the
file has CoC maps (stored, or derived from depth and focus: DatasetFile.coc_px). Stack, depth,
mask and CoC are cropped at the same place.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import Dataset

from dfdcap.dataset.h5io import DatasetFile
from dfdcap.errors import DatasetError


class FocusStackDataset(Dataset):
    """Samples of one split, cropped to `crop` (int or (h, w)); random crops when random_crop.

    frames: use this many frames of each stack (spread evenly, focus order kept); None = all.
    The HDF5 file is opened lazily in each worker process (h5py handles do not survive fork).
    """

    def __init__(
        self,
        h5_path: str | os.PathLike,
        split: str,
        crop: int | tuple[int, int] | None = 256,
        frames: int | None = None,
        random_crop: bool = True,
        seed: int | None = None,
        ddff_units: str = "m",
    ):
        self.h5_path = str(h5_path)
        self.split = split
        self.ddff_units = ddff_units
        with DatasetFile(self.h5_path, ddff_units=ddff_units) as f:
            self._n = f.n(split)
            S, H, W, _ = f.stack_shape(split)
            self.has_coc = f.has_coc(split)
            self.stored_coc = f.has_stored_coc(split)  # else derived per item, for the crop alone
            if not f.has_depth(split):
                raise DatasetError(f"{self.h5_path}: split {split!r} has no depth ground truth")
        self.full_size = (H, W)
        if crop is None:
            self.crop = (H, W)
        else:
            self.crop = (int(crop), int(crop)) if np.isscalar(crop) else (int(crop[0]), int(crop[1]))
        if self.crop[0] > H or self.crop[1] > W:
            raise DatasetError(f"{self.h5_path}: crop {self.crop[1]}x{self.crop[0]} is larger than the {W}x{H} images")
        if frames is not None and not (1 <= frames <= S):
            raise DatasetError(f"{self.h5_path}: asked for {frames} frames per stack, stacks have {S}")
        self.frame_idx = np.arange(S) if frames is None else np.round(np.linspace(0, S - 1, frames)).astype(int)
        self.random_crop = random_crop
        # seed=None: torch's generator, which DataLoader seeds differently in every worker
        self._rng = None if seed is None else np.random.default_rng(seed)
        self._file: DatasetFile | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return self._n

    def _f(self) -> DatasetFile:
        """This process's handle: opened on first use in each process (a DataLoader worker, a DDP
        rank), never inherited through fork -- an HDF5 handle shared across fork reads garbage."""
        if self._file is None or self._pid != os.getpid():
            self._file = DatasetFile(self.h5_path, ddff_units=self.ddff_units)
            self._pid = os.getpid()
        return self._file

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        return state

    def _window(self) -> tuple[slice, slice]:
        H, W = self.full_size
        h, w = self.crop
        if self.random_crop and self._rng is not None:
            y = int(self._rng.integers(0, H - h + 1))
            x = int(self._rng.integers(0, W - w + 1))
        elif self.random_crop:
            y = int(torch.randint(0, H - h + 1, ()).item())
            x = int(torch.randint(0, W - w + 1, ()).item())
        else:
            y, x = (H - h) // 2, (W - w) // 2
        return slice(y, y + h), slice(x, x + w)

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self._n:
            raise IndexError(i)
        f = self._f()
        ys, xs = self._window()
        fi = self.frame_idx
        stack = f.stack(self.split, i)[fi][:, ys, xs]  # (S, h, w, 3) uint8
        depth = f.depth_m(self.split, i)[ys, xs]
        mask = f.mask(self.split, i)[ys, xs] & (depth > 0)
        item = {
            "stack": torch.from_numpy(np.ascontiguousarray(stack.transpose(0, 3, 1, 2))).float().div_(255.0),
            "focus_m": torch.from_numpy(f.focus_m(self.split, i)[fi].astype(np.float32)),
            "depth_m": torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32))[None],
            "mask": torch.from_numpy(np.ascontiguousarray(mask))[None],
        }
        if self.has_coc:
            if self.stored_coc:
                coc = f.coc_px(self.split, i)[fi][:, ys, xs]
            else:
                coc = f.derive_coc(depth, item["focus_m"].numpy())
            item["coc_px"] = torch.from_numpy(np.ascontiguousarray(coc, dtype=np.float32))[:, None]
        return item
