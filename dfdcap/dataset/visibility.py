"""Phone pixels whose depth the sensor cannot vouch for: the phone's ray crosses space that the
sensor never saw.

The z-buffer in reproject.py keeps the nearest sensor surface on each phone pixel, so it can only
hide background behind foreground that the sensor also saw. At close range the two cameras see
round different edges: an object that the phone sees but the sensor does not (hidden behind a
nearer object in the sensor's view, or lost in the sensor's holes along an edge) leaves the
background behind it with nothing to hide it, and those phone pixels took the background's depth.
A pixel's depth is vouched for only when the sensor saw through every point of the phone ray in
front of it: each such point, projected into the sensor, must lie in front of what it saw there.

Measured against the simulator's true phone depth (one reprojected frame each):
- close range (the demo's D405-like rig, 10-45 cm, 1008x756): 2.4 % of the valid pixels were
  > 5 % off; the check drops 70 % of them (nearly all on hidden objects, most edge leaks) and 8 % of
  the right ones (rays through the sensor's shadows, which it cannot vouch for). Built with the
  demo's calibration: pixels > 5 % off beyond 2 px of a depth edge 8281 -> 343 per stack, valid
  depth 75.5 % -> 67.7 %.
- Xtion-like rig at 0.5-3 m: 0.22 % off, 75 % of them dropped, 0.33 % of the right ones.
- ~15 ms per 1008x756 frame (build-dataset: 66 -> 60 phone frames/s on 2 cores).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from dfdcap.cameras import CameraModel, invert_transform
from dfdcap.dataset.reproject import _kernel, camera_rays, to_pinhole_grid
from dfdcap.errors import DatasetError

HOLE_REACH_PX = 3  # a sensor hole takes the nearest surface within this many pixels (edge holes)
MAX_STEPS = 4096  # samples along one phone ray (one per sensor pixel it crosses)
_TILE = 8  # the march skips _TILE - 2 samples at once where the sensor saw nothing that near
_BIG = 4  # ... and 4 * _TILE - 2 where nothing that near lies in the 4 * _TILE tiles around


def sensor_free_depth(depth_m: np.ndarray, reach_px: int = HOLE_REACH_PX) -> np.ndarray:
    """(h, w) float32: how far each sensor ray is known empty. A valid pixel: its depth; a hole:
    the nearest surface within `reach_px` (an edge hole hides the foreground's edge, not free
    space); 0 where nothing is known."""
    import cv2

    d = np.asarray(depth_m, np.float32)
    valid = d > 0  # NaN too
    kernel = np.ones((2 * reach_px + 1, 2 * reach_px + 1), np.uint8)
    near = cv2.erode(np.where(valid, d, np.float32(np.inf)), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=np.inf)
    free = np.where(valid, d, near)
    return np.where(np.isfinite(free), free, np.float32(0)).astype(np.float32)


def _tile_min(free: np.ndarray, tile: int) -> np.ndarray:
    """(h/tile, w/tile) float32: the nearest known surface in each tile and its 8 neighbours
    (inf where nothing is known): no sample within `tile` pixels of the tile can be blocked by
    anything nearer."""
    from scipy.ndimage import minimum_filter

    h, w = free.shape
    th, tw = -(-h // tile), -(-w // tile)
    pad = np.full((th * tile, tw * tile), np.inf, np.float32)
    pad[:h, :w] = np.where(free > 0, free, np.float32(np.inf))
    tiles = pad.reshape(th, tile, tw, tile).min(axis=(1, 3))
    return minimum_filter(tiles, size=3, mode="nearest").astype(np.float32)


@njit(inline="always")
def _ray_hidden(y, x, z_p, rx, ry, free, tmin, bmin, R, t, k, tol, d_min):
    """Whether a sensor surface lies nearer than some point of phone pixel (x, y)'s ray in front
    of depth z_p (by more than tol). free / tmin / bmin: on the sensor's pinhole grid (k = fx,
    fy, cx, cy, skew), where the ray's image is affine in w = 1 / (sensor depth): samples are
    uniform in w (at most one sensor pixel apart) and need no division; where even a sample
    _TILE - 2 (_BIG * _TILE - 2) ahead lies nearer than anything around in tmin (bmin), the
    ones between are skipped."""
    h, w = free.shape
    fx, fy, cx, cy, skew = k[0], k[1], k[2], k[3], k[4]
    one = np.float32(1)
    lim = one + tol
    # the ray in the sensor frame: P(z) = z * a + t, a = R @ (rx, ry, 1)
    ax = R[0, 0] * rx[y, x] + R[0, 1] * ry[y, x] + R[0, 2]
    ay = R[1, 0] * rx[y, x] + R[1, 1] * ry[y, x] + R[1, 2]
    az = R[2, 0] * rx[y, x] + R[2, 1] * ry[y, x] + R[2, 2]
    if az <= 1e-6:
        return False
    # from where the sensor depth reaches its nearest surface (nothing nearer can be hidden; and
    # in front of the phone) to the pixel's own surface less the tolerance
    zs0 = max(d_min * (one - tol), t[2] + az * np.float32(1e-3))
    zs1 = (z_p * (one - tol)) * az + t[2]
    if zs1 <= zs0:
        return False
    w0, w1 = one / zs0, one / zs1
    # P / zs = a / az + w * (t - a * t_z / az): pixel = p0 + w * dp
    x0, y0 = ax / az, ay / az
    kx, ky = t[0] - ax * t[2] / az, t[1] - ay * t[2] / az
    u0, v0 = fx * x0 + skew * y0 + cx, fy * y0 + cy
    du, dv = fx * kx + skew * ky, fy * ky
    n = min(int(max(abs(du), abs(dv)) * (w0 - w1)) + 2, MAX_STEPS)
    step = (w1 - w0) / np.float32(n - 1)
    i = 0
    while i < n:
        wi = w0 + step * np.float32(i)
        ui = int(math.floor(u0 + du * wi + np.float32(0.5)))
        vi = int(math.floor(v0 + dv * wi + np.float32(0.5)))
        if ui < 0 or vi < 0 or ui >= w or vi >= h:
            i += 1
            continue  # outside the sensor's view: no evidence either way
        f = free[vi, ui]
        if f > 0 and f * lim * wi < one:  # f (1 + tol) < this point's sensor depth
            return True
        # samples i+1..j-1 lie within the tile size, in front of everything there: skip them
        j = min(i + _BIG * _TILE - 2, n - 1)
        if j > i + 1 and bmin[vi // (_BIG * _TILE), ui // (_BIG * _TILE)] * lim * (w0 + step * np.float32(j)) >= one:
            i = j
            continue
        j = min(i + _TILE - 2, n - 1)
        if j > i + 1 and tmin[vi // _TILE, ui // _TILE] * lim * (w0 + step * np.float32(j)) >= one:
            i = j
        else:
            i += 1
    return False


@_kernel
def _hidden(depth, rx, ry, free, tmin, bmin, R, t, k, tol, d_min, out):
    """out = _ray_hidden of every pixel with depth. Rays of neighbouring pixels differ by less
    than a sensor pixel, so the rays of every 4th pixel in both directions are marched first;
    then, halving the spacing twice, a pixel between four marched ones (or two, or one at the
    borders) that agree, with depths within tol of its own, takes their answer, and the others
    are marched too."""
    H, W = depth.shape
    for y in range(0, H, 4):
        for x in range(0, W, 4):
            z = depth[y, x]
            out[y, x] = z > 0 and _ray_hidden(y, x, z, rx, ry, free, tmin, bmin, R, t, k, tol, d_min)
    for s in (2, 1):
        c = 2 * s  # the spacing of the pixels already done
        y_last, x_last = (H - 1) - (H - 1) % c, (W - 1) - (W - 1) % c
        for y in range(0, H, s):
            for x in range(0, W, s):
                if y % c == 0 and x % c == 0:
                    continue
                z = depth[y, x]
                if not z > 0:
                    out[y, x] = False
                    continue
                ya, xa = y - y % c, x - x % c
                yb = min(ya + c, y_last) if y % c else ya
                xb = min(xa + c, x_last) if x % c else xa
                votes, agree = 0, True
                for yy in (ya, yb):
                    for xx in (xa, xb):
                        zn = depth[yy, xx]
                        if not (zn > 0 and abs(zn - z) <= tol * z):
                            agree = False
                        votes += out[yy, xx]
                if agree and (votes == 0 or votes == 4):
                    out[y, x] = votes == 4
                else:
                    out[y, x] = _ray_hidden(y, x, z, rx, ry, free, tmin, bmin, R, t, k, tol, d_min)


def hidden_from_sensor(
    depth_phone_m: np.ndarray,
    phone: CameraModel,
    sensor_depth_m: np.ndarray,
    sensor: CameraModel,
    T_phone_from_sensor: np.ndarray,
    tol: float = 0.03,
) -> np.ndarray:
    """(H, W) bool: phone pixels (with depth) whose ray, in front of that depth, passes behind a
    surface the sensor saw: something the sensor could not see may stand there.

    depth_phone_m: (H, W) phone-view z-depth (0 = none), e.g. reproject_depth's output.
    sensor_depth_m: the (h, w) sensor depth it came from (registered to `sensor`).
    tol: relative depth margin (the sensor's noise; reproject's edge_rel).
    """
    d = np.ascontiguousarray(depth_phone_m, np.float32)
    s = np.asarray(sensor_depth_m, np.float32)
    if d.shape != (phone.height, phone.width) or s.shape != (sensor.height, sensor.width):
        raise DatasetError(f"hidden_from_sensor: depth {d.shape} / sensor depth {s.shape} do not match the cameras")
    out = np.zeros(d.shape, bool)
    valid = s[s > 0]
    if valid.size == 0 or not (d > 0).any():
        return out
    T = invert_transform(np.asarray(T_phone_from_sensor, np.float64))
    rx, ry = camera_rays(phone)
    free = sensor_free_depth(s)
    if sensor.has_distortion:  # onto the sensor's ideal pinhole grid, where rays image as lines
        free = to_pinhole_grid(free, sensor)
    K = sensor.K
    _hidden(d, rx, ry, free, _tile_min(free, _TILE), _tile_min(free, _BIG * _TILE), np.ascontiguousarray(T[:3, :3], np.float32),
            np.ascontiguousarray(T[:3, 3], np.float32), np.array([K[0, 0], K[1, 1], K[0, 2], K[1, 2], K[0, 1]], np.float32),
            np.float32(tol), np.float32(valid.min()), out)
    return out


def warm_up() -> None:
    """Compile (or load from numba's disk cache) the reprojection kernels and this check's, before
    build-dataset forks its workers: they inherit the compiled code instead of each compiling it."""
    from dfdcap.dataset.reproject import warm_up as warm_up_reprojection

    warm_up_reprojection()
    depth = np.full((12, 16), 1.0, np.float32)
    cam = CameraModel(np.array([[20.0, 0, 7.5], [0, 20.0, 5.5], [0, 0, 1]]), np.zeros(5), (16, 12))
    T = np.eye(4)
    T[0, 3] = -0.05
    hidden_from_sensor(depth, cam, depth, cam, T)
