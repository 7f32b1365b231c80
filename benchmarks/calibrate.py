"""Benchmark of `dfdcap calibrate`: 40 pairs of 4032x3024 phone + 640x480 sensor board images.

Times the full calibration (detection on a downscaled copy + full-resolution cornerSubPix on
2 threads, intrinsics, stereo, outlier rounds, joint refinement) against plain
cv2.findChessboardCornersSB at full resolution, run sequentially over the same 80 images in
the same run, and prints both and the ratio. Rendering the boards is not timed.

    python benchmarks/calibrate.py [--views 40] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--views", type=int, default=40)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--data", type=Path, default=None, help="reuse rendered pairs in this folder (rendered if empty)")
    args = ap.parse_args()

    from dfdcap.calib.boards import Board
    from dfdcap.calib.calibrate import CalibrateOptions, calibrate_rig
    from dfdcap.cameras import rotation_angle_deg
    from dfdcap.fileio import read_json
    from dfdcap.sim.boards import BoardSpec, write_board_pairs

    tmp = None
    if args.data is None:
        tmp = tempfile.TemporaryDirectory(prefix="dfdcap_bench_calib_")
        data = Path(tmp.name)
    else:
        data = args.data
        data.mkdir(parents=True, exist_ok=True)
    if not (data / "truth.json").is_file():
        t = time.perf_counter()
        write_board_pairs(data, args.views, BoardSpec("checkerboard", 9, 6, 0.025), phone_size=(4032, 3024), seed=7,
                          progress=True)
        print(f"rendered {args.views} pairs in {time.perf_counter() - t:.1f} s (not timed)")
    truth = read_json(data / "truth.json")

    t = time.perf_counter()
    run = calibrate_rig(data, CalibrateOptions(Board("checkerboard", 9, 6, 0.025), workers=args.workers))
    t_ours = time.perf_counter() - t
    cal = run.calibration
    T = np.asarray(truth["T_phone_from_sensor"])
    rot = rotation_angle_deg(T[:3, :3].T @ cal.T_phone_from_sensor[:3, :3])
    tr = 1000 * np.linalg.norm(T[:3, 3] - cal.T_phone_from_sensor[:3, 3])
    f_rel = abs(cal.phone.fx / np.asarray(truth["phone"]["K"])[0, 0] - 1)
    print(f"dfdcap calibrate ({args.workers} threads): {t_ours:.2f} s for {run.n_images} images; "
          f"stereo RMS {cal.stereo['rms_px']:.3f} px, rotation error {rot:.4f} deg, translation error {tr:.3f} mm, "
          f"phone fx error {100 * f_rel:.3f} %, {len(cal.stereo['views_dropped'])} dropped")

    cv2.setNumThreads(1)  # the baseline is sequential
    t = time.perf_counter()
    found = 0
    images = sorted((data / "phone").glob("*.png")) + sorted((data / "sensor").glob("*.png"))
    for p in images:
        g = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        ok, _ = cv2.findChessboardCornersSB(g, (9, 6), flags=cv2.CALIB_CB_NORMALIZE_IMAGE)
        found += bool(ok)
    t_sb = time.perf_counter() - t
    print(f"plain findChessboardCornersSB at full resolution, sequential (detection only): {t_sb:.2f} s "
          f"({found}/{len(images)} boards found)")
    print(f"ratio SB / dfdcap calibrate: {t_sb / t_ours:.1f}x   (goal: calibrate <= 30 s: {'met' if t_ours <= 30 else 'MISSED'})")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
