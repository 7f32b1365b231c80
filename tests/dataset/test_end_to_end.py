"""The whole chain on the simulated rig, through the CLI: record -> sim boards -> calibrate ->
sync -> build-dataset (+ --ply, report), checked against the simulator's true phone-view depth.

Nothing here uses the simulator's truth to build the dataset: the calibration comes from the
rendered boards, the pairing from sync.json. The truth only judges the result.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from dfdcap.cameras import CameraModel, invert_transform, transform_points
from dfdcap.capture.session import Session
from dfdcap.cli import app
from dfdcap.dataset.h5io import open_dataset

pytestmark = pytest.mark.slow  # ~15 s: a recording, 10 board pairs, a calibration


def _ok(args: list[str]) -> str:
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, f"dfdcap {' '.join(args)}:\n{res.output}"
    return res.output


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("e2e")
    _ok(["record", "--sensor", "sim", "--phone", "sim", "-o", str(tmp / "sessions"), "--name", "e2e",
         "--stacks", "2", "--steps", "5", "--phone-size", "504x378", "--seed", "1"])
    session = next((tmp / "sessions").iterdir())
    _ok(["sim", "checkerboard", str(tmp / "boards"), "--views", "10", "--phone-size", "504x378", "--seed", "1"])
    _ok(["calibrate", str(tmp / "boards"), "--board", "9x6", "--square", "0.025", "-o", str(tmp / "cal.json")])
    _ok(["sync", str(session)])
    out = _ok(["build-dataset", str(session), "--calib", str(tmp / "cal.json"), "-o", str(tmp / "d.h5"),
               "--ply", str(tmp / "d.ply")])
    return {"session": session, "h5": tmp / "d.h5", "ply": tmp / "d.ply", "out": out, "tmp": tmp}


def covisible(truth: np.ndarray, phone: CameraModel, sensor: CameraModel, T: np.ndarray, sensor_depth: np.ndarray) -> np.ndarray:
    """Phone pixels whose true surface point the sensor saw in its depth frame (within 3 %: its noise)."""
    uv, z = sensor.project(transform_points(invert_transform(T), phone.unproject_depth(truth)))
    ui = np.round(np.nan_to_num(uv[..., 0], nan=-1)).astype(int)
    vi = np.round(np.nan_to_num(uv[..., 1], nan=-1)).astype(int)
    inside = (ui >= 0) & (ui < sensor.width) & (vi >= 0) & (vi < sensor.height)
    zs = np.zeros_like(z)
    zs[inside] = sensor_depth[vi[inside], ui[inside]]
    return inside & (np.abs(zs - z) < 0.03 * z)


def test_dataset_depth_against_the_true_phone_depth(chain):
    s = Session(chain["session"])
    rig = s.truth_rig()
    phone, sensor = CameraModel.from_dict(rig["phone"]), CameraModel.from_dict(rig["sensor"])
    T = np.asarray(rig["T_phone_from_sensor"])
    sensor_by_index = {r.index: r for r in s.sensor_frames}
    with open_dataset(chain["h5"]) as f:
        assert f.splits == ["train"] and f.n("train") == 2
        for i in range(2):
            prov = f.provenance("train", i)
            depth, mask = f.depth_m("train", i), f.mask("train", i)
            truth = s.read_truth_phone_depth(prov["reference_phone_index"])
            assert depth.shape == truth.shape == (378, 504)
            rel = np.abs(depth[mask] - truth[mask]) / truth[mask]
            assert np.median(rel) <= 0.005  # measured 0.29 % (the sim Xtion's noise and 1 mm steps)
            raw = s.read_sensor_depth_m(sensor_by_index[prov["depth_sensor_indices"][0]], s.sensor_intrinsics.depth_scale_m)
            cov = covisible(truth, phone, sensor, T, raw)
            assert cov.mean() > 0.5
            assert (mask & cov).sum() / cov.sum() >= 0.90  # measured 97.7 %
            # occlusion: valid pixels > 5 % off (another surface) lie within 2 px of a depth edge, all
            # but a few. 2 px, not 1: the sim phone breathes and these boards (one locked focus) give no
            # K(focus), so the reference slice's true camera differs from the calibrated one by up to
            # ~0.4 % in scale, ~1 px at the borders. A few, not none: which sensor frame pairs with the
            # reference slice (so the depth noise drawn) depends on the recording's timing, and a noise
            # draw left one such pixel in two loaded runs so far (none on a quiet host). Losing the
            # occlusion test would not: points the phone cannot see (hidden behind a nearer surface)
            # land on ~1900 phone pixels > 2 px from an edge in one of these sensor frames.
            log_t = np.log(np.where(truth > 0, truth, 1)).astype(np.float32)
            k = np.ones((3, 3), np.uint8)
            edge = (cv2.dilate(log_t, k) - cv2.erode(log_t, k)) > 0.05
            dist = cv2.distanceTransform((~edge).astype(np.uint8), cv2.DIST_L2, 5)
            wrong = mask & (np.abs(depth - truth) > 0.05 * truth)
            assert edge.sum() > 100  # the scene has occlusion boundaries to check
            assert (wrong & (dist > 2.0)).sum() <= 5, (wrong & (dist > 2.0)).sum()


def test_cli_success_path_writes_dataset_ply_and_report(chain):
    import open3d as o3d

    assert "wrote" in chain["out"] and "2 stacks" in chain["out"]
    with h5py.File(chain["h5"], "r") as h5:
        assert h5["stack_train"].shape == (2, 5, 378, 504, 3) and h5["depth_train"].dtype == np.float32
        assert "coc_train" not in h5 and h5["focus_train"].shape == (2, 5)
        assert float(h5.attrs["pixel_pitch_m"]) > 0
    pc = o3d.io.read_point_cloud(str(chain["ply"]))
    assert len(pc.points) > 50_000
    png = chain["tmp"] / "report.png"
    _ok(["report", str(chain["h5"]), "-o", str(png)])
    img = cv2.imread(str(png))
    assert img is not None and img.shape[1] > 1000 and img.std() > 10
    # a second build to the same path needs --force (main() prints DfdcapErrors as one line)
    res = CliRunner().invoke(app, ["build-dataset", str(chain["session"]), "--calib", str(chain["tmp"] / "cal.json"),
                                   "-o", str(chain["h5"])])
    assert res.exit_code != 0 and "--force" in str(res.exception)
