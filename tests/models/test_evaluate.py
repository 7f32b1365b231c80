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
from h5_files import write_h5

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


# Foreign and damaged files (a fuzz pass): every one is a one-line DatasetError naming the file and the
# key, exit 1 and no output, or (report) a picture of what can be drawn; never a traceback or nan table.

def _dfdcap(path, splits=None, size=(16, 16)):
    write_h5(path, splits or {"test": 2}, size=size, coc=False)
    return path


def _replace(path, key, data=None, **kw):
    with h5py.File(path, "a") as f:
        old = f[key][()] if data is None else data
        del f[key]
        if isinstance(old, (h5py.ExternalLink, h5py.SoftLink)):
            f[key] = old
        else:
            f.create_dataset(key, data=old, **kw)


def _refused(cli, args, *needles):
    code, out, err = cli(*args)
    line = " ".join(err.split())
    assert code == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in line, err


class TestEmptySplit:
    @pytest.fixture
    def empty(self, tmp_path):
        p = _dfdcap(tmp_path / "z.h5")
        with h5py.File(p, "a") as f:
            for k in [k for k in f if k.endswith("_test")]:
                _data = f[k][:0]
                del f[k]
                f.create_dataset(k, data=_data, maxshape=(None, *_data.shape[1:]))
        return p

    def test_evaluate_refuses(self, empty, cli, tiny_ckpt, tmp_path):
        _refused(cli, ["evaluate", tiny_ckpt, "--data", empty, "--json", tmp_path / "m.json"],
                 f"{empty}: split 'test' holds 0 stacks")
        assert not (tmp_path / "m.json").exists()

    def test_report_refuses(self, empty, cli, tmp_path):
        _refused(cli, ["report", empty, "-o", tmp_path / "r.png"], "split 'test' holds 0 stacks")
        assert not (tmp_path / "r.png").exists()


class TestStackRanges:
    def test_uint16_scaled_by_its_maximum(self, tmp_path, cli, tiny_ckpt):
        p8, p16 = _dfdcap(tmp_path / "u8.h5"), _dfdcap(tmp_path / "u16.h5")
        with h5py.File(p8) as f:
            u8 = f["stack_test"][:]
        _replace(p16, "stack_test", u8.astype(np.uint16) * 257)
        with open_dataset(p16) as f:
            np.testing.assert_array_equal(f.stack("test", 1), u8[1])
        docs = []
        for p in (p8, p16):
            code, _, err = cli("evaluate", tiny_ckpt, "--data", p, "--json", tmp_path / "m.json")
            assert code == 0, err
            docs.append(json.loads((tmp_path / "m.json").read_text())["classical"])
        assert docs[0] == docs[1]

    def test_uint16_holding_8_bit_values_refused(self, tmp_path):
        p = _dfdcap(tmp_path / "a.h5")
        with h5py.File(p) as f:
            u8 = f["stack_test"][:]
        _replace(p, "stack_test", u8.astype(np.uint16))
        with open_dataset(p) as f, pytest.raises(DatasetError, match=r"stack_test\[0\] is uint16 with values 0-\d+ only: 8-bit values"):
            f.stack("test", 0)

    @pytest.mark.parametrize("scale,shift", [(1000.0, 0.0), (1.0, -30.0), (1 / 255, -0.5)])
    def test_float_outside_both_ranges_refused(self, tmp_path, scale, shift):
        p = _dfdcap(tmp_path / "f.h5")
        with h5py.File(p) as f:
            u8 = f["stack_test"][:]
        _replace(p, "stack_test", u8.astype(np.float32) * np.float32(scale) + np.float32(shift))
        with open_dataset(p) as f, pytest.raises(DatasetError, match=r"stack_test\[0\] holds values .* must lie in 0-1 or 0-255"):
            f.stack("test", 0)

    def test_other_integer_stacks_refused(self, tmp_path):
        p = _dfdcap(tmp_path / "i.h5")
        with h5py.File(p) as f:
            u8 = f["stack_test"][:]
        _replace(p, "stack_test", u8.astype(np.int32))
        with open_dataset(p) as f, pytest.raises(DatasetError, match="stack_test is int32; stacks must be uint8"):
            f.n("test")


class TestBrokenKeys:
    @pytest.mark.parametrize("cmd", ["evaluate", "report"])
    @pytest.mark.parametrize("case,needle", [
        ("prov_int", "provenance_test is int64 of shape (2,), expected 2 JSON strings"),
        ("prov_json", "provenance_test[0] is not JSON"),
        ("prov_list", "provenance_test[0] is a JSON list, expected an object"),
        ("prov_group", "provenance_test is a group"),
        ("ext_link", "depth_test cannot be opened (Unable to synchronously open object (can't open file))"),
        ("loop", "depth_test cannot be opened (Special link traversal failed (too many links))"),
        ("format", "attribute 'format' is int64 (2,), expected the string 'dfdcap'"),
    ])
    def test_one_line(self, tmp_path, cli, tiny_ckpt, cmd, case, needle):
        p = _dfdcap(tmp_path / "d.h5")
        s = h5py.string_dtype()
        if case == "prov_int":
            _replace(p, "provenance_test", np.array([1, 2]))
        elif case in ("prov_json", "prov_list"):
            _replace(p, "provenance_test", np.array(["{not json", "{}"] if case == "prov_json" else ["[1]", "[2]"], object), dtype=s)
        with h5py.File(p, "a") as f:
            if case == "prov_group":
                del f["provenance_test"]
                f.create_group("provenance_test")
            elif case == "ext_link":
                del f["depth_test"]
                f["depth_test"] = h5py.ExternalLink(str(tmp_path / "nothing.h5"), "/x")
            elif case == "loop":
                del f["depth_test"]
                f["depth_test"], f["loop"] = h5py.SoftLink("/loop"), h5py.SoftLink("/depth_test")
            elif case == "format":
                f.attrs["format"] = np.array([1, 2])
        args = ["evaluate", tiny_ckpt, "--data", p] if cmd == "evaluate" else ["report", p, "-o", tmp_path / "r.png"]
        _refused(cli, args, f"{p}: {needle}")

    def test_finetune_refuses_unreadable_provenance(self, tmp_path, cli, tiny_ckpt):
        """A train stack whose session cannot be read could be the val session's: finetune must not guess."""
        p = _dfdcap(tmp_path / "d.h5", {"train": 2, "val": 1})
        _replace(p, "provenance_train", np.array(['{"session": "a"}', "{cut short"], object), dtype=h5py.string_dtype())
        _refused(cli, ["finetune", "--data", p, "--init", tiny_ckpt, "-o", tmp_path / "run", "--epochs", "1"],
                 f"{p}: provenance_train[1] is not JSON")
        assert not (tmp_path / "run").exists()


class TestReportDrawsWhatItCan:
    @pytest.mark.parametrize("case", ["no_f_number", "align_3x5", "val_3_frames", "val_no_depth"])
    def test_writes_png(self, tmp_path, cli, case):
        p = _dfdcap(tmp_path / "d.h5", {"train": 2, "val": 1})
        with h5py.File(p, "a") as f:
            f.create_dataset("align_train", data=np.tile(np.eye(3, dtype=np.float32), (2, 5, 1, 1)))
            if case == "no_f_number":
                del f.attrs["f_number"]
            elif case == "align_3x5":
                del f["align_train"]
                f["align_train"] = np.zeros((3, 5), np.float32)
            elif case == "val_3_frames":
                for k in ("stack_val", "focus_val"):
                    v = f[k][:, :3]
                    del f[k]
                    f[k] = v
            else:
                del f["depth_val"], f["mask_val"]
        code, out, err = cli("report", p, "-o", tmp_path / "r.png")
        assert code == 0 and "Traceback" not in err, err
        assert (tmp_path / "r.png").stat().st_size > 1000


class TestUnits:
    def test_integer_depth_refused(self, tmp_path, cli, tiny_ckpt):
        p = _dfdcap(tmp_path / "mm.h5")
        with h5py.File(p) as f:
            mm = (f["depth_test"][:] * 1000).astype(np.uint16)
        _replace(p, "depth_test", mm)
        _refused(cli, ["evaluate", tiny_ckpt, "--data", p], f"{p}: depth_test is uint16; dfdcap stores depth as float metres",
                 "store depth / 1000")

    def test_depth_beyond_1000_m_refused(self, tmp_path, cli, tiny_ckpt):
        p = _dfdcap(tmp_path / "mmf.h5")
        with h5py.File(p, "a") as f:
            f["depth_test"][...] = np.where(f["depth_test"][:] > 0, np.float32(1500.0), 0)  # 1.5 km: millimetres
        _refused(cli, ["evaluate", tiny_ckpt, "--data", p], f"{p}: depth_test[0] holds depths up to", "millimetres? divide by 1000")

    @pytest.mark.parametrize("key,factor", [("depth_test", 1000.0), ("focus_test", 1000.0), ("focus_test", 0.001)])
    def test_depth_and_focus_in_different_units_refused(self, tmp_path, cli, tiny_ckpt, key, factor):
        """Close-range depth in millimetres stays under 1000 "m" (a 0.3 m scene: 300) and was scored as metres;
        so were focus distances in millimetres, or in km, against depth in metres."""
        p = _dfdcap(tmp_path / "u.h5")
        with h5py.File(p, "a") as f:
            f[key][...] = f[key][:] * np.float32(factor)
            assert f["depth_test"][:].max() < 1000 and f["focus_test"][:].max() < 1e4  # the older checks pass
        _refused(cli, ["evaluate", tiny_ckpt, "--data", p], f"{p}: depth_test[0] has median",
                 "depth and focus must both be metres")

    def test_scene_beyond_the_sweep_is_read(self, tmp_path, cli, tiny_ckpt):
        """A scene 20 x beyond the sweep's far end (a background) is a scene, not a unit error."""
        p = _dfdcap(tmp_path / "far.h5")
        with h5py.File(p, "a") as f:
            far = f["focus_test"][:].max()
            f["depth_test"][...] = np.where(f["depth_test"][:] > 0, np.float32(20 * far), 0)
        code, out, err = cli("evaluate", tiny_ckpt, "--data", p)
        assert code == 0, err

    def test_focus_beyond_1e4_m_refused(self, tmp_path, cli, tiny_ckpt):
        p = _dfdcap(tmp_path / "fh.h5")
        with h5py.File(p, "a") as f:
            f["focus_test"][...] = f["focus_test"][:] * 1e30
        _refused(cli, ["evaluate", tiny_ckpt, "--data", p], f"{p}: focus_test[0] holds focus distances up to", "beyond 10000 m")


def _zero_first_chunk(path, key):
    """Compress `key` with gzip, one chunk per sample, and zero the bytes of sample 0's chunk."""
    with h5py.File(path, "a") as f:
        v = f[key][:]
        del f[key]
        f.create_dataset(key, data=v, compression="gzip", chunks=(1, *v.shape[1:]))
    with h5py.File(path) as f:
        info = f[key].id.get_chunk_info(0)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset)
        fh.write(bytes(info.size))


class TestDamagedChunks:
    def test_evaluate_and_report(self, tmp_path, cli, tiny_ckpt):
        p = _dfdcap(tmp_path / "gz.h5")
        _zero_first_chunk(p, "stack_test")
        for args in (["evaluate", tiny_ckpt, "--data", p], ["report", p, "-o", tmp_path / "r.png"]):
            _refused(cli, args, f"{p}: stack_test[0] is damaged (Can't synchronously read data")

    def test_finetune_leaves_no_run_folder(self, tmp_path, cli):
        p = _dfdcap(tmp_path / "gz.h5", {"train": 2, "val": 1})
        _zero_first_chunk(p, "stack_train")
        _refused(cli, ["finetune", "--model", "poolnet", "--data", p, "-o", tmp_path / "run", "--epochs", "1", "--crop", "16"],
                 f"{p}: stack_train[0] is damaged")
        assert not (tmp_path / "run").exists()


def test_dfdcap_file_without_focus_named_as_such(tmp_path, cli, tiny_ckpt):
    p = _dfdcap(tmp_path / "nf.h5")
    with h5py.File(p, "a") as f:
        del f["focus_test"]
    _refused(cli, ["evaluate", tiny_ckpt, "--data", p], f"{p}: dfdcap dataset lacks focus_test")
