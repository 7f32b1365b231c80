"""build-dataset on box-scene sessions: depth against the truth, the HDF5 keys, errors, the Dataset."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from dataset_scene import PHONE, SENSOR, T_PS, write_session
from dfdcap.capture.session import Session
from dfdcap.dataset.build import BuildOptions, RigGeometry, build_dataset
from dfdcap.dataset.h5io import DDFF12_BASELINE_X_FOCAL, ddff12_focus_m, open_dataset
from dfdcap.dataset.torch_data import FocusStackDataset
from dfdcap.errors import DatasetError

RIG = RigGeometry(PHONE, SENSOR, T_PS)


@pytest.fixture(scope="module")
def built(box_sessions, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ds") / "dataset.h5"
    build_dataset(box_sessions, RIG, out, BuildOptions(val=(box_sessions[1].name,)))
    return out


class TestBuild:
    def test_depth_matches_truth_and_keys_open_with_plain_h5py(self, built, box_sessions):
        with h5py.File(built, "r") as h5:
            for split in ("train", "val"):
                st = h5[f"stack_{split}"]
                assert st.dtype == np.uint8 and st.shape == (3, 5, 270, 480, 3)
                assert h5[f"depth_{split}"].shape == (3, 270, 480) and h5[f"depth_{split}"].dtype == np.float32
                assert h5[f"mask_{split}"].shape == (3, 270, 480)
                assert h5[f"focus_{split}"].shape == (3, 5)
                assert f"coc_{split}" not in h5  # derived by readers unless build-dataset --coc
                assert np.all(np.diff(h5[f"focus_{split}"][:], axis=1) > 0)
            for k in ("focal_length_m", "f_number", "pixel_pitch_m"):
                assert float(h5.attrs[k]) > 0
            prov = json.loads(h5["provenance_train"][1])
            depth = h5["depth_train"][1]
            mask = h5["mask_train"][1].astype(bool)
            stack = h5["stack_train"][1]
        assert prov["session"] == "a" and len(prov["phone_indices"]) == 5 and prov["reference_position"] == 2
        assert all(abs(g) < 20_000_000 for g in prov["gap_ns"])  # sync pairs within the sensor period
        s = Session(box_sessions[0])
        truth = s.read_truth_phone_depth(prov["reference_phone_index"])
        rel = np.abs(depth[mask] - truth[mask]) / truth[mask]
        assert np.median(rel) < 0.005  # millimetre quantisation of the sensor: measured ~0.03 %
        assert mask.mean() > 0.85
        ref_img = s.read_phone_frame(s.phone_frames[prov["reference_phone_index"]])
        assert np.array_equal(stack[2], ref_img)

    def test_derived_coc_maps_equal_the_stored_ones(self, built, box_sessions, tmp_path):
        stored = tmp_path / "coc.h5"
        build_dataset(box_sessions[:1], RIG, stored, BuildOptions(coc=True))
        with open_dataset(stored) as fs, open_dataset(built) as fd:
            assert fs.has_stored_coc("train") and not fd.has_stored_coc("train") and fd.has_coc("train")
            for i in range(fs.n("train")):
                assert np.array_equal(fd.coc_px("train", i), fs.coc_px("train", i))
            assert float(fs.coc_px("train", 1).max()) > 1.0  # real blur, not zeros
        a = FocusStackDataset(stored, "train", crop=(64, 96), seed=3)[1]["coc_px"]
        b = FocusStackDataset(built, "train", crop=(64, 96), seed=3)[1]["coc_px"]
        assert torch.equal(a, b)

    def test_reader_and_dataset_crops(self, built):
        with open_dataset(built) as f:
            assert f.kind == "dfdcap" and f.splits == ["train", "val"] and f.n("val") == 3
            assert f.provenance("val", 0)["session"] == "b"
            coc = f.coc_px("train", 0)
            assert coc.shape == (5, 270, 480) and np.all(coc[:, ~f.mask("train", 0)] >= 0)
        ds = FocusStackDataset(built, "train", crop=(128, 160), seed=0)
        item = ds[0]
        assert item["stack"].shape == (5, 3, 128, 160) and item["stack"].dtype == torch.float32
        assert 0 <= float(item["stack"].min()) and float(item["stack"].max()) <= 1
        assert item["depth_m"].shape == (1, 128, 160) and item["mask"].shape == (1, 128, 160)
        assert item["mask"].dtype == torch.bool and item["coc_px"].shape == (5, 1, 128, 160)
        assert torch.all(item["depth_m"][item["mask"]] > 0)
        # crops of stack, depth and mask come from the same window
        full = FocusStackDataset(built, "train", crop=None)[0]
        crops = [ds[0] for _ in range(4)]
        for c in crops:
            hits = [(y, x) for y in range(0, 270 - 127) for x in range(0, 480 - 159)
                    if torch.equal(full["stack"][0, 0, y, x:x + 4], c["stack"][0, 0, 0, :4])
                    and torch.equal(full["stack"][0, 0, y:y + 128, x:x + 160], c["stack"][0, 0])]
            assert len(hits) == 1
            y, x = hits[0]
            assert torch.equal(full["depth_m"][:, y:y + 128, x:x + 160], c["depth_m"])
            assert torch.equal(full["mask"][:, y:y + 128, x:x + 160], c["mask"])
        assert FocusStackDataset(built, "val", crop=64, frames=3)[0]["stack"].shape == (3, 3, 64, 64)
        with pytest.raises(DatasetError, match="larger than"):
            FocusStackDataset(built, "train", crop=1000)

    def test_options_size_crop_frames_median(self, box_sessions, tmp_path):
        out = tmp_path / "small.h5"
        summary = build_dataset(box_sessions[:1], RIG, out, BuildOptions(size="240x135", frames=3, fuse="median"))
        assert summary.counts == {"train": 3} and summary.phone_frames == 9
        with open_dataset(out) as f:
            assert f.stack_shape("train") == (3, 135, 240, 3)
            assert f.provenance("train", 0)["fuse"] == "median" and len(f.provenance("train", 0)["depth_sensor_indices"]) == 3
            assert f.attrs["pixel_pitch_m"] == pytest.approx(2 * 4.8e-3 / 480)
            assert f.mask("train", 0).mean() > 0.8
        out2 = tmp_path / "crop.h5"
        build_dataset(box_sessions[:1], RIG, out2, BuildOptions(crop="200,50,256,128"))
        with open_dataset(out2) as f, open_dataset(out) as g:
            assert f.stack_shape("train") == (5, 128, 256, 3)
            s = Session(box_sessions[0])
            truth = s.read_truth_phone_depth(f.provenance("train", 0)["reference_phone_index"])[50:178, 200:456]
            m = f.mask("train", 0)
            assert np.median(np.abs(f.depth_m("train", 0)[m] - truth[m]) / truth[m]) < 0.005

    def test_bad_input_is_one_line_and_writes_nothing(self, box_sessions, tmp_path):
        out = tmp_path / "x.h5"
        nophone = write_session(tmp_path, "nophone", phone_frames=False)
        with pytest.raises(DatasetError, match="no phone frames"):
            build_dataset([nophone], RIG, out)
        unsynced = write_session(tmp_path, "unsynced", ramps=1)
        with pytest.raises(DatasetError, match="run `dfdcap sync"):
            build_dataset([unsynced], RIG, out)
        other = RigGeometry(PHONE.scaled(2.0), SENSOR, T_PS)
        with pytest.raises(DatasetError, match="960x540"):
            build_dataset(box_sessions, other, out)
        assert not out.exists() and not list(tmp_path.glob(".x.h5*"))
        out.write_bytes(b"keep")
        with pytest.raises(DatasetError, match="--force"):
            build_dataset(box_sessions, RIG, out)
        assert out.read_bytes() == b"keep"
        with pytest.raises(DatasetError, match="not among"):
            build_dataset(box_sessions, RIG, tmp_path / "y.h5", BuildOptions(val=("nope",)))


def test_a_copied_session_is_refused(box_sessions, tmp_path):
    """A session folder copied under another name built as two sessions: given as --test, the copy
    put the training recording into the test split. Now one line names both; nothing is written."""
    import shutil

    copy = tmp_path / "a_copy"
    shutil.copytree(box_sessions[0], copy)
    out = tmp_path / "x.h5"
    with pytest.raises(DatasetError) as e:
        build_dataset([box_sessions[0], box_sessions[1], copy], RIG, out, BuildOptions(test=("a_copy",)))
    assert str(e.value) == (f"{copy}: the same recording as {box_sessions[0]} (identical phone/frames.csv and first "
                            "phone frame): a copied session would put one recording into the dataset twice")
    assert not out.exists() and not list(tmp_path.glob(".x.h5*"))


class TestDdff12Reader:
    def test_opens_a_ddff12_layout_file(self, tmp_path):
        p = tmp_path / "ddff.h5"
        disp = np.full((2, 38, 55), 0.1, np.float32)
        disp[:, 0, 0] = 0
        with h5py.File(p, "w") as h5:
            h5["stack_train"] = np.zeros((2, 10, 38, 55, 3), np.uint8)
            h5["disp_train"] = disp
            h5["stack_val"] = np.zeros((1, 10, 38, 55, 3), np.uint8)
            h5["disp_val"] = disp[:1]
        with open_dataset(p) as f:
            assert f.kind == "ddff12" and f.splits == ["train", "val"] and f.n("train") == 2
            d = f.depth_m("train", 0)
            assert d[1, 1] == pytest.approx(DDFF12_BASELINE_X_FOCAL / 0.1) and d[0, 0] == 0
            assert d[1, 1] == pytest.approx(1.4124, abs=1e-3)
            assert not f.mask("train", 0)[0, 0]
            fm = f.focus_m("train", 0)
            assert fm[0] == pytest.approx(0.5) and fm[-1] == pytest.approx(7.0) and np.all(np.diff(fm) > 0)
        with open_dataset(p, ddff_units="disparity") as f:
            assert f.depth_m("train", 0)[1, 1] == pytest.approx(0.1)
        item = FocusStackDataset(p, "val", crop=32)[0]
        assert item["stack"].shape == (10, 3, 32, 32) and "coc_px" not in item
        assert np.allclose(ddff12_focus_m(10), fm)

    def test_not_a_dataset(self, tmp_path):
        p = tmp_path / "n.h5"
        with h5py.File(p, "w") as h5:
            h5["x"] = np.zeros(3)
        with pytest.raises(DatasetError, match="no stack_"):
            open_dataset(p)
        (tmp_path / "t.h5").write_text("hello")
        with pytest.raises(DatasetError, match="not an HDF5"):
            open_dataset(tmp_path / "t.h5")


class TestReportExportCli:
    def test_report_png_and_ply(self, built, tmp_path):
        import cv2
        import open3d as o3d

        from dfdcap.dataset.export import export_ply
        from dfdcap.dataset.report import write_dataset_report

        png = write_dataset_report(built, tmp_path / "r.png")
        img = cv2.imread(str(png))
        assert img is not None and img.shape[1] > 1000 and img.std() > 10
        path, n = export_ply(built, tmp_path / "s.ply", "val", 1)
        pc = o3d.io.read_point_cloud(str(path))
        assert len(pc.points) == n > 100_000
        z = np.asarray(pc.points)[:, 2]
        assert 0.85 < z.min() and z.max() < 2.0  # the box (0.9-1.2 m) and the plane (1.5-1.7 m)

    def test_cli_bad_calibration_is_one_line(self, box_sessions, tmp_path):
        import subprocess
        import sys

        bad = tmp_path / "cal.json"
        bad.write_text("{}")
        r = subprocess.run([sys.executable, "-m", "dfdcap.cli", "build-dataset", str(box_sessions[0]), "--calib", str(bad),
                            "-o", str(tmp_path / "o.h5")], capture_output=True, text=True)
        assert r.returncode == 1 and "error:" in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "o.h5").exists()


class TestWorkers:
    @pytest.mark.slow
    def test_one_and_many_worker_processes_write_the_same_file(self, box_sessions, tmp_path):
        opts = dict(val=(box_sessions[1].name,), frames=4, coc=True)
        paths = []
        for workers in (1, 2, 3):
            out = tmp_path / f"w{workers}.h5"
            build_dataset(box_sessions, RIG, out, BuildOptions(workers=workers, **opts))
            paths.append(out)
        with h5py.File(paths[0], "r") as ref:
            keys = sorted(ref.keys())
            assert "provenance_val" in keys and "coc_train" in keys
            for other in paths[1:]:
                with h5py.File(other, "r") as h5:
                    assert sorted(h5.keys()) == keys
                    for k in keys:
                        a, b = ref[k][()], h5[k][()]
                        same = np.array_equal(a, b, equal_nan=a.dtype.kind == "f")  # NaN: slice not registered
                        assert a.dtype == b.dtype and a.shape == b.shape and same, k
                    assert dict(h5.attrs) .keys() == dict(ref.attrs).keys()
                    for k, v in ref.attrs.items():
                        assert np.array_equal(np.asarray(h5.attrs[k]), np.asarray(v)), k
        # provenance in session order, then stack order: samples of session "a" first
        with h5py.File(paths[2], "r") as h5:
            prov = [json.loads(p) for p in h5["provenance_train"][()]]
        assert [p["session"] for p in prov] == ["a"] * len(prov)
        assert [p["phone_indices"][0] for p in prov] == sorted(p["phone_indices"][0] for p in prov)
        assert paths[0].read_bytes() == paths[1].read_bytes() == paths[2].read_bytes()

    def test_workers_below_one_is_an_error(self, box_sessions, tmp_path):
        with pytest.raises(DatasetError, match="--workers 0"):
            build_dataset(box_sessions, RIG, tmp_path / "x.h5", BuildOptions(workers=0))
        assert not (tmp_path / "x.h5").exists()

    def test_an_error_in_a_worker_reaches_the_caller_as_one_line(self, box_sessions, tmp_path):
        import shutil

        from dfdcap.errors import DfdcapError

        bad = tmp_path / box_sessions[0].name
        shutil.copytree(box_sessions[0], bad)
        frame = sorted((bad / "phone" / "frames").iterdir())[-1]
        frame.write_bytes(b"not a png")
        with pytest.raises(DfdcapError) as e:
            build_dataset([bad, box_sessions[1]], RIG, tmp_path / "x.h5", BuildOptions(workers=2))
        assert frame.name in str(e.value) and "\n" not in str(e.value)
        assert not (tmp_path / "x.h5").exists()


def test_a_swallowed_ctrl_c_stops_at_the_next_stack(box_sessions, tmp_path, monkeypatch):
    """A Ctrl-C that the CLI's flag caught but a finalizer swallowed stops the build at its next stack
    (before, it ran to its end and only then exited 130), and leaves no file."""
    import os
    import signal
    import sys

    from dfdcap.interrupts import CtrlCFlag

    class CtrlCInFinalizer:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(sys, "unraisablehook", lambda u: None)
    done = []
    out = tmp_path / "dataset.h5"
    with CtrlCFlag():
        CtrlCInFinalizer()  # the KeyboardInterrupt is raised inside __del__ and swallowed
        with pytest.raises(KeyboardInterrupt):
            build_dataset(box_sessions[:1], RIG, out, BuildOptions(workers=1), progress=lambda k, n: done.append(k))
    assert done == [] and list(tmp_path.iterdir()) == []
