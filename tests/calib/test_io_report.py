"""Calibration file round trip, OpenCV YAML export and the report PNG."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from dfdcap.calib.boards import Board
from dfdcap.calib.calibrate import CalibrateOptions, calibrate_single
from dfdcap.calib.io import (
    CameraCalibration, export_opencv_yaml, load_any_calibration, load_calibration, save_calibration,
)
from dfdcap.calib.report import coverage_grid, write_calibration_report
from dfdcap.errors import CalibrationError


def test_round_trip_keeps_every_number(default_calibration, tmp_path):
    cal = default_calibration.calibration
    path = save_calibration(cal, tmp_path / "calibration.json")
    d = json.loads(path.read_text())
    assert {"schema", "board", "phone", "sensor", "stereo", "T_phone_from_sensor", "versions"} <= set(d)
    assert {"K", "dist", "size", "rms_px", "std", "per_view_px"} <= set(d["phone"])
    assert {"rms_px", "per_view_px", "views_used", "views_dropped"} <= set(d["stereo"])
    assert d["board"] == {"type": "checkerboard", "cols": 9, "rows": 6, "square_m": 1.0}
    back = load_calibration(path)
    for a, b in ((cal.phone, back.phone), (cal.sensor, back.sensor)):
        np.testing.assert_array_equal(a.K, b.K)
        np.testing.assert_array_equal(a.dist, b.dist)
        assert a.size == b.size
    np.testing.assert_array_equal(cal.T_phone_from_sensor, back.T_phone_from_sensor)
    assert back.phone_fit.rms_px == cal.phone_fit.rms_px and back.sensor_fit.std == cal.sensor_fit.std
    np.testing.assert_array_equal(back.phone_fit.per_view_px, cal.phone_fit.per_view_px)
    np.testing.assert_array_equal(back.stereo["per_view_px"], cal.stereo["per_view_px"])
    assert back.stereo["views_used"] == cal.stereo["views_used"]
    assert len(back.views["phone"]) == 13 and back.views["phone"][0].corners_px.shape == (54, 2)
    # residuals stored for the report are the fit's: their RMS is the camera's RMS
    r = np.concatenate([v.residuals_px for v in back.views["sensor"]])
    assert np.sqrt((r ** 2).sum(1).mean()) == pytest.approx(cal.sensor_fit.rms_px, rel=1e-3)
    # saving what was loaded gives the same file
    save_calibration(back, tmp_path / "again.json")
    assert json.loads((tmp_path / "again.json").read_text()) == d


def test_opencv_yaml_is_readable_by_filestorage(default_calibration, tmp_path):
    cal = default_calibration.calibration
    path = export_opencv_yaml(cal, tmp_path / "calibration.yaml")
    fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_READ)
    assert fs.isOpened()
    np.testing.assert_allclose(fs.getNode("phone_K").mat(), cal.phone.K, rtol=1e-12)
    np.testing.assert_allclose(fs.getNode("sensor_dist").mat().ravel(), cal.sensor.dist, rtol=1e-12)
    np.testing.assert_allclose(fs.getNode("R").mat(), cal.T_phone_from_sensor[:3, :3], rtol=1e-12)
    np.testing.assert_allclose(fs.getNode("T").mat().ravel(), cal.T_phone_from_sensor[:3, 3], rtol=1e-12)
    np.testing.assert_allclose(fs.getNode("M1").mat(), cal.sensor.K, rtol=1e-12)  # camera 1 = sensor
    assert fs.getNode("stereo_rms_px").real() == pytest.approx(cal.stereo["rms_px"])
    fs.release()


def test_single_camera_mode(stereo_pairs_dir, tmp_path):
    run = calibrate_single(stereo_pairs_dir / "sensor", CalibrateOptions(Board("checkerboard", 9, 6, 1.0)))
    cal = run.calibration
    assert isinstance(cal, CameraCalibration)
    assert cal.fit.rms_px < 0.25 and cal.camera.fx == pytest.approx(536.07, rel=0.01)
    assert set(cal.fit.std) == {"fx", "fy", "cx", "cy", "dist"} and 0 < cal.fit.std["fx"] < 2.0
    path = save_calibration(cal, tmp_path / "left.json")
    back = load_any_calibration(path)
    np.testing.assert_array_equal(back.camera.K, cal.camera.K)
    with pytest.raises(CalibrationError, match="single-camera"):
        load_calibration(path)
    fs = cv2.FileStorage(str(export_opencv_yaml(back, tmp_path / "left.yaml")), cv2.FILE_STORAGE_READ)
    np.testing.assert_allclose(fs.getNode("camera_matrix").mat(), cal.camera.K)
    assert int(fs.getNode("image_width").real()) == 640
    png = write_calibration_report(path, tmp_path / "left.png")
    assert cv2.imread(str(png)).shape[1] >= 600


def test_rational_model_has_eight_coefficients(stereo_pairs_dir):
    run = calibrate_single(stereo_pairs_dir / "phone", CalibrateOptions(Board("checkerboard", 9, 6, 1.0), distortion="rational"))
    assert run.calibration.camera.dist.size == 8 and len(run.calibration.fit.std["dist"]) == 8


def test_report_png(default_calibration, tmp_path):
    path = save_calibration(default_calibration.calibration, tmp_path / "calibration.json")
    from dfdcap.report import write_report  # the `dfdcap report` dispatcher

    png = write_report(path)
    assert png == tmp_path / "calibration.png"
    img = cv2.imread(str(png))
    assert img is not None and img.shape[0] > 1000 and img.shape[1] > 1000
    assert img.std() > 20  # something is drawn
    assert not list(tmp_path.glob(".*.tmp"))


def test_coverage_grid_counts_cells():
    pts = np.array([[0, 0], [639, 479], [639.9, 0], [320, 240], [330, 250]], float)
    g = coverage_grid(pts, (640, 480), (8, 6))
    assert g.shape == (6, 8) and g.sum() == 5
    assert g[0, 0] == 1 and g[5, 7] == 1 and g[0, 7] == 1 and g[3, 4] == 2


def test_load_refuses_broken_files(tmp_path):
    p = tmp_path / "x.json"
    p.write_text("{not json")
    with pytest.raises(CalibrationError, match="not valid JSON"):
        load_calibration(p)
    p.write_text(json.dumps({"schema": 1, "phone": {}}))
    with pytest.raises(CalibrationError, match="lacks"):
        load_calibration(p)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda T: T.__setitem__((0, 3), float("nan")), "non-finite"),
        (lambda T: T.__setitem__((slice(0, 3), slice(0, 3)), 1.01 * T[:3, :3]), "not a rotation"),
        (lambda T: T.__setitem__((slice(0, 3), 0), -T[:3, 0]), "det"),  # a reflection
        (lambda T: T.__setitem__((3, 0), 0.5), "last row"),
    ],
)
def test_load_refuses_non_rigid_or_non_finite_T(default_calibration, tmp_path, change, message):
    from dfdcap.calib.io import calibration_to_dict

    d = calibration_to_dict(default_calibration.calibration)
    T = np.asarray(d["T_phone_from_sensor"], np.float64)
    change(T)
    d["T_phone_from_sensor"] = T.tolist()
    p = tmp_path / "cal.json"
    p.write_text(json.dumps(d))  # NaN written as JSON's NaN token, as Python writes it
    with pytest.raises(CalibrationError, match=message) as e:
        load_calibration(p)
    assert "T_phone_from_sensor" in str(e.value) and "\n" not in str(e.value)


def test_load_refuses_non_finite_K(default_calibration, tmp_path):
    from dfdcap.calib.io import calibration_to_dict

    d = calibration_to_dict(default_calibration.calibration)
    d["phone"]["K"][0][0] = float("inf")
    p = tmp_path / "cal.json"
    p.write_text(json.dumps(d))
    with pytest.raises(CalibrationError, match="phone K holds non-finite"):
        load_calibration(p)
