"""Dataset files in the build-dataset layout (DESIGN.md), written with h5py directly for the
models tests. A module of its own (not conftest.py) so that tests import it by a name no other
test folder shares."""

from __future__ import annotations

import h5py
import numpy as np

from dfdcap.sim.render import random_focus_stack


def write_h5(path, splits: dict[str, int], size=(40, 48), frames=5, seed=3, coc=True) -> None:
    """A dataset file: stack/depth/mask/focus(/coc)/provenance per split, lens attrs on the root."""
    rng = np.random.default_rng(seed)
    H, W = size
    with h5py.File(path, "w") as f:
        f.attrs["format"] = "dfdcap"
        f.attrs["schema"] = 1
        f.attrs["focal_length_m"] = 0.0042
        f.attrs["f_number"] = 1.7
        f.attrs["pixel_pitch_m"] = 1.4e-6
        for split, n in splits.items():
            st = f.create_dataset(f"stack_{split}", (n, frames, H, W, 3), np.uint8)
            de = f.create_dataset(f"depth_{split}", (n, H, W), np.float32)
            ma = f.create_dataset(f"mask_{split}", (n, H, W), np.uint8)
            fo = f.create_dataset(f"focus_{split}", (n, frames), np.float32)
            co = f.create_dataset(f"coc_{split}", (n, frames, H, W), np.float32) if coc else None
            pr = f.create_dataset(f"provenance_{split}", (n,), h5py.string_dtype("utf-8"))
            for i in range(n):
                d = random_focus_stack(rng, (H, W), frames)
                st[i], fo[i] = d["stack"], d["focus_m"]
                depth = d["depth_m"].copy()
                mask = np.ones((H, W), np.uint8)
                mask[:, :4] = 0  # a strip without ground truth, as reprojection leaves
                depth[:, :4] = 0
                de[i], ma[i] = depth, mask
                if co is not None:
                    co[i] = d["coc_px"]
                pr[i] = '{"session": "synthetic", "index": %d}' % i
