"""evaluate: --json keys, DDFF-12 disparity metrics, mDFF layout recognised (never read as DDFF-12)."""

import json

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from dfdcap.dataset.h5io import DDFF12_BASELINE_X_FOCAL, open_dataset
from dfdcap.dataset.torch_data import FocusStackDataset
from dfdcap.errors import DatasetError
from dfdcap.models.checkpoint import save_checkpoint
from dfdcap.models.evaluate import _run_items, depth_to_disparity, json_metrics
from dfdcap.models.metrics import METRIC_NAMES
from dfdcap.models.registry import TINY_CONFIGS, build_model

KEYS = {"mse", "rms", "log_rms", "absrel", "sqrrel", "delta1", "delta2", "delta3", "badpix", "bumpiness"}


class ConstantDepth(nn.Module):
    """A network that answers depth_m everywhere (for hand-computed metrics)."""

    def __init__(self, depth_m: float):
        super().__init__()
        self.depth_m = depth_m

    def forward(self, stack, focus_m):
        return {"depth": torch.full((stack.shape[0], 1, *stack.shape[-2:]), self.depth_m)}


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    p = tmp_path_factory.mktemp("ck") / "tiny.pt"
    return save_checkpoint(p, "poolnet", TINY_CONFIGS["poolnet"], build_model("poolnet", **TINY_CONFIGS["poolnet"]))


def _stack(rng, n, s, h, w, dtype=np.uint8):
    return rng.integers(0, 256, (n, s, h, w, 3)).astype(dtype)


@pytest.fixture
def ddff_file(tmp_path):
    """A DDFF-12-layout file: uint8 stacks of 10 frames, disparity 0.1 px (left half) / 0.2 px (right)."""
    rng = np.random.default_rng(0)
    disp = np.zeros((1, 16, 16), np.float32)
    disp[:, :, :8], disp[:, :, 8:] = 0.1, 0.2
    p = tmp_path / "ddff.h5"
    with h5py.File(p, "w") as f:
        f["stack_test"] = _stack(rng, 1, 10, 16, 16)
        f["disp_test"] = disp
    return p


def test_json_metrics_names_and_fractions():
    m = {k: 0.0 for k in METRIC_NAMES}
    m.update(abs_rel=0.1, sqr_rel=0.02, delta1=50.0, delta2=75.0, delta3=100.0, badpix=25.0, bumpiness=1.5, rms=0.2)
    j = json_metrics(m)
    assert set(j) == KEYS
    assert (j["absrel"], j["sqrrel"], j["delta1"], j["delta2"], j["delta3"], j["badpix"]) == (0.1, 0.02, 0.5, 0.75, 1.0, 0.25)
    assert j["bumpiness"] == 1.5 and j["rms"] == 0.2
    assert json_metrics(dict(m, rms=float("nan")))["rms"] is None


def test_cli_json_keys(cli, tiny_ckpt, h5_dataset, tmp_path):
    code, out, err = cli("evaluate", tiny_ckpt, "--data", h5_dataset, "--json", tmp_path / "m.json")
    assert code == 0, err
    doc = json.loads((tmp_path / "m.json").read_text())
    assert doc["split"] == "val" and doc["n"] == 2 and doc["kind"] == "dfdcap"
    for part in ("network", "classical"):
        assert set(doc[part]) == KEYS
        assert all(0 <= doc[part][k] <= 1 for k in ("delta1", "delta2", "delta3", "badpix"))
        assert doc[part]["delta1"] <= doc[part]["delta2"] <= doc[part]["delta3"]
        assert doc[part]["rms"] == pytest.approx(np.sqrt(doc[part]["mse"]))
    assert "disparity" not in doc


class TestDDFF12Disparity:
    def test_hand_computed(self, ddff_file):
        items = FocusStackDataset(ddff_file, "test", crop=None, random_crop=False)
        accs, disp, n = _run_items({"const": ConstantDepth(1.0)}, (items[i] for i in range(len(items))), False, 9, None,
                                   DDFF12_BASELINE_X_FOCAL)
        d = disp["const"].result()
        bf = 0.14124  # m * px: a network saying 1 m everywhere says 0.14124 px
        assert DDFF12_BASELINE_X_FOCAL == pytest.approx(bf, abs=1e-5)
        assert d["rms"] == pytest.approx(np.sqrt(((bf - 0.1) ** 2 + (bf - 0.2) ** 2) / 2), rel=1e-4)
        assert d["abs_rel"] == pytest.approx((abs(bf - 0.1) / 0.1 + abs(bf - 0.2) / 0.2) / 2, rel=1e-4)
        assert d["delta1"] == 0.0 and d["delta2"] == 100.0  # ratios 1.412 and 1.416
        assert d["badpix"] == 0.0  # |error| 0.041 and 0.059 px < 0.07
        # the same stacks in metres: ground truth 1.4124 m and 0.7062 m
        m = accs["const"].result()
        assert m["rms"] == pytest.approx(np.sqrt(((1 - bf / 0.1) ** 2 + (1 - bf / 0.2) ** 2) / 2), rel=1e-4)

    def test_round_trip(self):
        d = np.array([[0.5, 0.0], [7.0, 1.0]])
        disp = depth_to_disparity([d], DDFF12_BASELINE_X_FOCAL)[0]
        assert disp[0, 1] == 0 and disp[0, 0] == pytest.approx(DDFF12_BASELINE_X_FOCAL / 0.5)

    def test_cli_reports_both(self, cli, tiny_ckpt, ddff_file, tmp_path):
        code, out, err = cli("evaluate", tiny_ckpt, "--data", ddff_file, "--json", tmp_path / "d.json")
        assert code == 0, err
        doc = json.loads((tmp_path / "d.json").read_text())
        assert doc["kind"] == "ddff12" and doc["split"] == "test"
        assert set(doc["disparity"]["network"]) == KEYS and set(doc["disparity"]["classical"]) == KEYS
        assert "DDFF-12 disparity" in out
        # the baseline answers inside DDFF-12's focus range (0.5-7 m = 0.02-0.28 px) against 0.1 / 0.2 px
        assert doc["disparity"]["classical"]["rms"] < 0.19


class TestMDFFLayout:
    @pytest.fixture
    def mdff_file(self, tmp_path):
        """mDFF's layout: DDFF-12's keys, float32 stacks 0-255, disp_* in metres (0.5-2 m, 0 = invalid)."""
        rng = np.random.default_rng(1)
        depth = rng.uniform(0.5, 2.0, (2, 16, 16)).astype(np.float32)
        depth[:, 0] = 0
        p = tmp_path / "mdff.h5"
        with h5py.File(p, "w") as f:
            f["stack_train"] = _stack(rng, 2, 5, 16, 16, np.float32)
            f["disp_train"] = depth
        return p, depth

    def test_recognised_and_read_as_metres(self, mdff_file):
        p, depth = mdff_file
        with open_dataset(p) as f:
            assert f.kind == "mdff"
            np.testing.assert_array_equal(f.depth_m("train", 1), depth[1])  # metres, not B*f / value
            assert f.stack("train", 0).dtype == np.uint8
            assert not f.mask("train", 0)[0].any() and f.mask("train", 0)[1:].all()
            with pytest.raises(DatasetError, match="mDFF-layout file .* no focus distances; add focus_train"):
                f.focus_m("train", 0)

    def test_evaluate_refuses_without_focus(self, mdff_file, cli, tiny_ckpt):
        code, out, err = cli("evaluate", tiny_ckpt, "--data", mdff_file[0])
        assert code == 1 and "mDFF-layout" in err and "Traceback" not in err

    def test_with_focus_it_evaluates_in_metres(self, mdff_file, cli, tiny_ckpt, tmp_path):
        p, depth = mdff_file
        with h5py.File(p, "a") as f:
            f["focus_train"] = np.tile(np.float32([0.5, 0.7, 1.0, 1.4, 2.0]), (2, 1))
        code, out, err = cli("evaluate", tiny_ckpt, "--data", p, "--json", tmp_path / "m.json")
        assert code == 0, err
        doc = json.loads((tmp_path / "m.json").read_text())
        assert doc["kind"] == "mdff" and "disparity" not in doc
        assert doc["n"] == 2 and 0 < doc["classical"]["rms"] < 1.5  # within the 0.5-2 m scene

    def test_uint8_stacks_with_metres_refused(self, tmp_path):
        p = tmp_path / "odd.h5"
        with h5py.File(p, "w") as f:
            f["stack_test"] = np.zeros((1, 3, 8, 8, 3), np.uint8)
            f["disp_test"] = np.full((1, 8, 8), 1.5, np.float32)
        with open_dataset(p) as f:
            assert f.kind == "ddff12"
            with pytest.raises(DatasetError, match="not DDFF-12 disparities"):
                f.depth_m("test", 0)
