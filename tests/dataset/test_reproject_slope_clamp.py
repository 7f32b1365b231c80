"""The reprojection's slope clamp, on real Kinect depth (shared/data/rgbd_frames).

Each source point's box carries a depth plane from its neighbours' slope; the clamp scales the
slope down where the plane would leave +-edge_rel of the point's own depth inside the box. On a
real sensor's noisy depth, central differences give steep slopes; where a box is wide in source
pixels (a target coarser than the source in one direction, finer in the other, so border boxes
reach a whole target pixel) an unclamped plane reaches depths no source pixel nearby has: without
the clamp, hundreds of pixels per frame come out up to 13 % nearer than anything around them.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy.ndimage import maximum_filter

from dfdcap.cameras import CameraModel
from dfdcap.dataset.reproject import reproject_depth

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "rgbd_frames"
SENSOR = CameraModel(np.array([[518.0, 0, 325.5], [0, 519.0, 253.5], [0, 0, 1]]), np.zeros(5), (640, 480))
TOL = 0.03


def _depth(k: int) -> np.ndarray:
    path = DATA / "depth_png" / f"{k}.png"
    if not path.is_file():
        pytest.skip(f"{path} missing")
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED).astype(np.float32) / 1000.0  # mm -> m, 0 = no data


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("sx,sy", [(0.25, 2.0), (0.2, 1.5)])
def test_output_stays_within_edge_rel_of_the_source_around_it(k, sx, sy):
    d = _depth(k)
    W, H = int(640 * sx), int(480 * sy)
    target = CameraModel(np.array([[518 * sx, 0, 326 * sx - 0.5], [0, 519 * sy, 254 * sy - 0.5], [0, 0, 1]]),
                         np.zeros(5), (W, H))
    r = reproject_depth(d, SENSOR, target, np.eye(4), edge_rel=TOL)
    m = r.mask & (r.depth_m > 0)
    assert m.sum() > 0.4 * m.size
    # the source pixels a target pixel can draw from: its own footprint (1 / scale source px) and a
    # box's reach of one target pixel, plus a source pixel of rounding
    rx, ry = int(np.ceil(1 / sx)) + 2, int(np.ceil(1 / sy)) + 2
    size = (2 * ry + 1, 2 * rx + 1)
    hi = maximum_filter(d, size=size)
    lo = -maximum_filter(np.where(d > 0, -d, -np.inf), size=size)
    vt, ut = np.nonzero(m)
    us = np.clip(np.round((ut + 0.5) / sx - 0.5).astype(int), 0, 639)
    vs = np.clip(np.round((vt + 0.5) / sy - 0.5).astype(int), 0, 479)
    z = r.depth_m[m]
    rel_hi = z / hi[vs, us] - 1
    rel_lo = z / lo[vs, us] - 1
    assert rel_hi.max() <= TOL + 1e-5 and rel_lo.min() >= -TOL - 1e-5, (rel_hi.max(), rel_lo.min())
