"""Helpers for the real-sensor tests (H7): real RGB-D content, a private OpenNI2 driver folder,
and a virtual RealSense recorded to .db3. Imported by test_openni/test_realsense/test_devices
(the shared tests/capture/conftest.py belongs to the recorder tests)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "rgbd_frames"


def real_rgbd_frames(n: int, size: tuple[int, int] = (160, 120)) -> tuple[np.ndarray, np.ndarray]:
    """n real Kinect-type frames (slambook2 ch5): depth (n, H, W) uint16 mm, rgb (n, H, W, 3) uint8.

    Windows of `size` = (W, H) cut from the five 640x480 frames at offsets that move with the
    frame number, so consecutive frames differ like a moving camera's."""
    import cv2

    w, h = size
    colors = [cv2.imread(str(DATA / "color" / f"{i}.png"))[..., ::-1] for i in range(1, 6)]
    depths = [cv2.imread(str(DATA / "depth_png" / f"{i}.png"), cv2.IMREAD_UNCHANGED) for i in range(1, 6)]
    if any(c is None for c in colors) or any(d is None for d in depths):
        raise FileNotFoundError(f"{DATA}: real RGB-D test frames missing")
    H, W = depths[0].shape
    d_out = np.empty((n, h, w), np.uint16)
    c_out = np.empty((n, h, w, 3), np.uint8)
    for k in range(n):
        x = (37 * k) % (W - w + 1)
        y = (23 * k) % (H - h + 1)
        d_out[k] = depths[k % 5][y:y + h, x:x + w]
        c_out[k] = colors[k % 5][y:y + h, x:x + w]
    return d_out, c_out


def private_openni_redist(folder: Path) -> Path:
    """Point dfdcap at an OpenNI2 folder that loads only the file player and the Dummy device
    (no USB probing). Effective if OpenNI2 is not yet initialized in this process."""
    from dfdcap.capture.openni import ENV_REDIST, make_redist_dir

    make_redist_dir(folder, ("OniFile", "DummyDevice"))
    os.environ[ENV_REDIST] = str(folder)
    return folder


def record_virtual_realsense(path: Path, depth: np.ndarray, rgb: np.ndarray, depth_intr: dict, color_intr: dict,
                             rotation_colmajor: list[float], translation_m: list[float], depth_units_m: float,
                             fps: int = 30, serial: str = "VIRT-405") -> list[int]:
    """A virtual RealSense recorded to .db3 (dfdcap.capture.realsense.write_db3)."""
    from dfdcap.capture.realsense import write_db3

    return write_db3(path, depth, rgb, depth_intr, color_intr, rotation_colmajor, translation_m, depth_units_m,
                     fps=fps, serial=serial)
