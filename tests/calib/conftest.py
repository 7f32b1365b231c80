"""Fixtures of the calibration tests: OpenCV's real stereo chessboard set as phone/sensor pairs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "opencv_stereo_chessboard"
NAMES = [f"{i:02d}" for i in range(1, 15) if i != 10]  # OpenCV has no pair 10

# OpenCV 5.0 reference (shared/data/README.md): calibrateCamera default flags, stereoCalibrate
# with CALIB_FIX_INTRINSIC; left = camera 1 = our sensor, right = camera 2 = our phone.
REF_RMS_LEFT = 0.4080
REF_RMS_RIGHT = 0.4578
REF_STEREO_RMS = 0.4470
REF_T = (-3.3442, 0.0417, 0.0528)
REF_T_NORM = 3.3449
REF_RVEC = (0.000292, 0.003525, -0.004127)  # Rodrigues, rad


@pytest.fixture(scope="session")
def stereo_pairs_dir(tmp_path_factory) -> Path:
    """phone/NN.jpg -> rightNN.jpg, sensor/NN.jpg -> leftNN.jpg (symlinks), so T = OpenCV's T (left -> right)."""
    if not DATA.is_dir():
        pytest.skip(f"{DATA} missing")
    root = tmp_path_factory.mktemp("opencv_pairs")
    (root / "phone").mkdir()
    (root / "sensor").mkdir()
    for n in NAMES:
        os.symlink(DATA / f"right{n}.jpg", root / "phone" / f"{n}.jpg")
        os.symlink(DATA / f"left{n}.jpg", root / "sensor" / f"{n}.jpg")
    return root


@pytest.fixture(scope="session")
def default_calibration(stereo_pairs_dir):
    """The default pipeline on the real pairs (computed once: ~0.3 s)."""
    from dfdcap.calib.boards import Board
    from dfdcap.calib.calibrate import CalibrateOptions, calibrate_rig

    return calibrate_rig(stereo_pairs_dir, CalibrateOptions(Board("checkerboard", 9, 6, 1.0)))
