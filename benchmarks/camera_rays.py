"""Benchmark: the undistorted ray of every pixel of a new distorted camera, as build-dataset needs
for each new phone camera (occlusion test in dfdcap.dataset.visibility, depth fusion).

With a focus-breathing calibration the phone is a new camera at every new focus setting: the
stack's reference slice sets it, and a real phone (Open Camera) rarely repeats a focus distance
exactly, so the per-camera cache seldom hits. Ours (CameraModel.pixel_rays_interpolated: the
iterative undistortion on a grid every 8 px, Catmull-Rom cubics in between) against the peer,
OpenCV's cv2.undistortPoints on every pixel (CameraModel.pixel_rays), same run; prints the speed
ratio and our largest error against the peer in pixels.

Run: python benchmarks/camera_rays.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from associate import best_of  # noqa: E402  (fastest of `repeat` timed calls)

from dfdcap.cameras import CameraModel  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    dist = np.array([0.05, -0.099, 0.0005, -0.0003, 0.0])  # the simulated phone's distortion, as calibrated
    for w, h in ((1008, 756), (2016, 1512), (4032, 3024)):
        f = 0.83 * w
        cam = CameraModel(np.array([[f, 0, (w - 1) / 2 + 2.5], [0, f, (h - 1) / 2 - 1.5], [0, 0, 1]]), dist, (w, h))
        reps = args.repeat if w <= 2016 else 1
        cam.pixel_rays_interpolated()  # untimed first call: imports (scipy.sparse)
        t_ours, ours = best_of(cam.pixel_rays_interpolated, reps)
        t_cv, exact = best_of(cam.pixel_rays, reps)
        err = float(np.abs(ours - exact).max() * f)
        print(f"{w}x{h}: ours {1e3 * t_ours:7.1f} ms, cv2.undistortPoints on every pixel {1e3 * t_cv:7.1f} ms: "
              f"ratio {t_cv / t_ours:5.1f}x; largest difference {err:.1e} px")


if __name__ == "__main__":
    main()
