"""Validation on centre crops without valid depth: such batches must not count as a loss of 0, and a
validation set with no valid pixel in its crops is refused before training (fuzz finding)."""

import h5py
import pytest

from dfdcap.errors import ModelError
from dfdcap.models.train import finetune

from h5_files import write_h5

KW = dict(epochs=1, batch_size=1, crop=16, tiny=True, progress=False, lr=1e-3)


def _blank_val_centres(path, items) -> None:
    """No valid depth in the 16x16 centre (the validation crop of the 40x48 images) of these val items."""
    with h5py.File(path, "r+") as f:
        for i in items:
            m = f["mask_val"][i]
            m[12:28, 16:32] = 0
            f["mask_val"][i] = m


def test_val_crops_without_valid_pixels_refused(tmp_path):
    """It used to report "best validation loss 0.00000 -> best.pt", best.pt chosen on nothing."""
    path = tmp_path / "d.h5"
    write_h5(path, {"train": 2, "val": 2})
    _blank_val_centres(path, [0, 1])
    with pytest.raises(ModelError, match=r"d.h5: the 16x16 centre crops of split 'val'.*no valid depth pixel; "
                                         "use a larger --crop"):
        finetune("poolnet", path, tmp_path / "run", **KW)
    assert not (tmp_path / "run").exists()


def test_batches_without_valid_pixels_do_not_lower_the_val_loss(tmp_path):
    """val item 0 has no valid pixel in its crop: the mean is item 1's loss, not half of it."""
    both, one = tmp_path / "both.h5", tmp_path / "one.h5"
    write_h5(both, {"train": 2, "val": 2})
    _blank_val_centres(both, [0])
    write_h5(one, {"train": 2, "val": 2})
    with h5py.File(one, "r+") as f:  # item 1 alone: the same stacks, the val split cut to its second item
        keep = {k: f[k][1:2] for k in list(f) if k.endswith("_val")}
        for k, v in keep.items():
            del f[k]
            f.create_dataset(k, data=v)
    r_both = finetune("poolnet", both, tmp_path / "a", **KW)
    r_one = finetune("poolnet", one, tmp_path / "b", **KW)
    assert r_both.best_val_loss > 0
    assert r_both.best_val_loss == pytest.approx(r_one.best_val_loss, rel=1e-5)
