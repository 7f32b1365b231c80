"""Guards of two stereo-calibration details that a silent slip would break without failing any fit:
the per-view residual columns ([phone, sensor], not OpenCV's [cam1, cam2]) and the 180-degree
corner-order check that rescues pairs whose detectors numbered the board from opposite ends."""

from __future__ import annotations

import numpy as np
import pytest

from dfdcap.calib.boards import Board, detect_files
from dfdcap.calib.calibrate import CalibrateOptions, find_folder_pairs, fit_rig
from dfdcap.calib.stereo import calibrate_stereo
from dfdcap.cameras import CameraModel


def _board_views(n: int = 6) -> list[tuple[np.ndarray, np.ndarray]]:
    """(rvec, tvec) of a 9x6 board (0.025 m squares) at n poses about 0.5 m in front of the sensor."""
    rng = np.random.default_rng(5)
    return [(rng.normal(0, 0.25, 3), np.array([-0.1, -0.06, 0.5]) + rng.normal(0, 0.03, 3)) for _ in range(n)]


def test_per_view_residuals_are_phone_then_sensor():
    """Noise on the phone's corners only: the phone column carries it, the sensor column does not."""
    import cv2

    board = Board("checkerboard", 9, 6, 0.025)
    obj = board.object_points()
    sensor = CameraModel(np.array([[525.0, 0, 319.5], [0, 525.0, 239.5], [0, 0, 1]]), np.zeros(5), (640, 480))
    phone = CameraModel(np.array([[1500.0, 0, 959.5], [0, 1500.0, 539.5], [0, 0, 1]]), np.zeros(5), (1920, 1080))
    R_ps, t_ps = cv2.Rodrigues(np.array([0.01, -0.02, 0.005]))[0], np.array([-0.04, 0.005, 0.002])
    rng = np.random.default_rng(2)
    objs, pp, sp = [], [], []
    for rvec, tvec in _board_views():
        s_pts = cv2.projectPoints(obj, rvec, tvec, sensor.K, sensor.dist)[0].reshape(-1, 2)
        R_sb = cv2.Rodrigues(rvec)[0]
        p_pts = cv2.projectPoints(obj, cv2.Rodrigues(R_ps @ R_sb)[0], R_ps @ tvec + t_ps, phone.K, phone.dist)[0].reshape(-1, 2)
        objs.append(obj)
        pp.append(p_pts + rng.normal(0, 1.5, p_pts.shape))
        sp.append(s_pts)
    fit = calibrate_stereo(objs, pp, sp, [f"v{i}" for i in range(len(objs))], phone, sensor)
    assert fit.per_view_px.shape == (6, 2)
    assert np.all(fit.per_view_px[:, 0] > 1.0)  # phone: ~1.5 px of noise per axis
    assert np.all(fit.per_view_px[:, 1] < 0.5 * fit.per_view_px[:, 0])


def test_pairs_numbered_from_opposite_ends_are_turned_back(stereo_pairs_dir):
    """Two sensor detections reversed (corner k -> N-1-k): the fit finds and fixes both, keeps every
    pair, and ends at the reference stereo RMS; without the check they would be dropped as outliers."""
    board = Board("checkerboard", 9, 6, 1.0)
    inputs = find_folder_pairs(stereo_pairs_dir)
    phone, _ = detect_files(inputs.phone, board, workers=1)
    sensor, _ = detect_files(inputs.sensor, board, workers=1)
    reference = fit_rig(phone, dict(sensor), CalibrateOptions(board), [])
    turned = sorted(set(phone) & set(sensor))[1:3]
    for name in turned:
        sensor[name] = sensor[name].reversed()
    warnings: list[str] = []
    cal = fit_rig(phone, sensor, CalibrateOptions(board), warnings)
    assert any("180 degrees" in w and w.startswith("2 pair") for w in warnings), warnings
    assert set(turned) <= set(cal.stereo["views_used"]) and cal.stereo["views_used"] == reference.stereo["views_used"]
    assert cal.stereo["rms_px"] == pytest.approx(reference.stereo["rms_px"], rel=1e-6)
    assert np.allclose(cal.T_phone_from_sensor, reference.T_phone_from_sensor, atol=1e-9)
