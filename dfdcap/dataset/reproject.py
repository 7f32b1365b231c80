"""Reprojection of a sensor depth map into the phone camera's view (numpy + OpenCV, vectorised).

The sensor's depth is registered to its colour camera (a CameraModel); every valid source
pixel becomes a 3D point, moves by `T_phone_from_sensor`, and is projected through the phone's
pinhole + OpenCV distortion model. Everything that does not depend on depth (the rotated
source pixel rays, the projection constants) is computed once per camera pair and cached.

Footprints without holes: each source point is written into the z-buffer at its nearest
phone pixel, and the z-buffer is then eroded (grey-level minimum) with a 3x3 kernel, which is
exactly "every point covers the 3x3 pixels around it, the nearest surface wins". A quad of
four neighbouring source pixels on one surface is covered without holes when every point of
it lies within 1.5 px (Chebyshev) of a corner, i.e. when both its diagonals are shorter than
3 px; quads that project larger (a denser or nearer target) get bilinearly interpolated extra
points first, so the guarantee holds at any scale. A target coarser than the source (all
diagonals < 1 px) needs no erosion at all. Footprints reach at most 1 px beyond the outermost
source point of a surface, so silhouettes are accurate to 1 px.

Occlusion: the source pixels next to a nearer surface or a hole (relative depth step
> `edge_rel`) are uncertain by up to one source pixel in where the edge lies; they still
occlude what is behind them, but their footprints are marked invalid (the lowest mantissa bit
of the z-buffer key, cleared in the output depth: one ulp, ~6e-8 relative). So the region the phone sees but the sensor
could not (behind a foreground edge) stays invalid instead of taking background depth, and no
valid target pixel takes background depth inside a foreground silhouette.

Depth values: a pixel that holds a source point of the winning surface keeps that point's
depth; the other pixels of a footprint take the nearest of the points around them (on a
slanted surface that is up to ~1.5 px of slope nearer than the pixel's own depth).

Speed: all intermediates live in per-thread scratch arrays (fresh large arrays cost page
faults on every call), the z-buffer is one np.minimum.at over ~1 entry per source pixel, and
the footprints are one cv2.erode instead of a scatter per footprint pixel.
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass

import numpy as np

from dfdcap.cameras import CameraModel
from dfdcap.errors import DatasetError

_INF_BITS = int(np.float32(np.inf).view(np.int32))
_KERNEL3 = np.ones((3, 3), np.uint8)
_QUAD_MAX_DIAG_PX = 3.0  # 3x3 footprints cover a quad whose diagonals are shorter than this
_ONE_PX_MAX_DIAG_PX = 1.001  # single-pixel footprints cover a quad whose diagonals are at most 1 px


@dataclass(frozen=True)
class Reprojected:
    """Depth in the phone's view.

    depth_m: (H, W) float32 z-depth in metres in the phone camera frame, 0 where mask is False.
    mask: (H, W) bool, True where a trusted sensor surface covers the pixel.
    """

    depth_m: np.ndarray
    mask: np.ndarray


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.flags.writeable = False
    return a


@functools.lru_cache(maxsize=8)
def _rays_cached(key: tuple) -> tuple[np.ndarray, np.ndarray]:
    K, dist, size = key
    cam = CameraModel(np.frombuffer(K).reshape(3, 3), np.frombuffer(dist), size)
    rays = cam.pixel_rays().astype(np.float32)
    return _readonly(rays[..., 0]), _readonly(rays[..., 1])


def _cam_key(cam: CameraModel) -> tuple:
    return (cam.K.tobytes(), cam.dist.tobytes(), cam.size)


def camera_rays(cam: CameraModel) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) float32 undistorted normalised ray coordinates x/z, y/z of every pixel (cached:
    a distorted camera's rays take an iterative undistortion of every pixel)."""
    return _rays_cached(_cam_key(cam))


@dataclass(frozen=True)
class _Plan:
    """What a reprojection needs that does not depend on depth, for one camera pair and pose.

    a_x, a_y, a_z: (h, w) float32, R @ (x, y, 1) of every source pixel ray, so that a source
    pixel at depth z lands at z * a + t in the phone frame. t: (3,) translation (metres).
    """

    a_x: np.ndarray
    a_y: np.ndarray
    a_z: np.ndarray
    t: tuple[float, float, float]
    fx_ratio: float


@functools.lru_cache(maxsize=8)
def _plan_cached(sensor_key: tuple, T_bytes: bytes, phone_fx: float) -> _Plan:
    rx, ry = _rays_cached(sensor_key)
    T = np.frombuffer(T_bytes).reshape(4, 4)
    R = T[:3, :3].astype(np.float32)
    a = [_readonly(R[i, 0] * rx + R[i, 1] * ry + R[i, 2]) for i in range(3)]
    sensor_fx = float(np.frombuffer(sensor_key[0])[0])
    return _Plan(a[0], a[1], a[2], tuple(float(v) for v in T[:3, 3]), phone_fx / sensor_fx)


def project_points_f32(cam: CameraModel, X: np.ndarray, Y: np.ndarray, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project camera-frame coordinates (any equal shapes, float32, metres, Z > 0) to pixels.

    The same model as CameraModel.project (OpenCV pinhole + distortion up to 12 coefficients),
    in float32 and skipping zero terms, for speed. Returns (u, v) float32 pixels.
    """
    d = np.zeros(14)
    d[: cam.dist.size] = cam.dist
    if np.any(d[12:] != 0):
        uv, _ = cam.project(np.stack([X, Y, Z], axis=-1))
        return uv[..., 0].astype(np.float32), uv[..., 1].astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.float32(1.0) / Z
    x = X * inv
    y = Y * inv
    if cam.has_distortion:
        k1, k2, p1, p2, k3, k4, k5, k6, s1, s2, s3, s4 = (float(c) for c in d[:12])
        r2 = x * x
        r2 += y * y
        if k2 or k3:
            radial = r2 * np.float32(k3) if k3 else None
            if radial is None:
                radial = r2 * np.float32(k2)
            else:
                radial += np.float32(k2)
                radial *= r2
            radial += np.float32(k1)
            radial *= r2
            radial += np.float32(1)
        else:
            radial = r2 * np.float32(k1)
            radial += np.float32(1)
        if k4 or k5 or k6:
            radial = radial / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
        xd = x * radial
        yd = y * radial
        if p1 or p2:
            xy2 = x * y
            xy2 *= np.float32(2)
            xd += np.float32(p1) * xy2
            xd += np.float32(p2) * (r2 + np.float32(2) * x * x)
            yd += np.float32(p1) * (r2 + np.float32(2) * y * y)
            yd += np.float32(p2) * xy2
        if s1 or s2 or s3 or s4:
            r4 = r2 * r2
            xd += s1 * r2 + s2 * r4
            yd += s3 * r2 + s4 * r4
        x, y = xd, yd
    K = cam.K
    u = x * np.float32(K[0, 0])
    u += np.float32(K[0, 2])
    if K[0, 1] != 0:
        u += np.float32(K[0, 1]) * y
    v = y * np.float32(K[1, 1])
    v += np.float32(K[1, 2])
    return u, v


class _Workspace:
    """Scratch arrays of one thread for one (source, target) size: fresh large arrays cost page
    faults on every call, so every intermediate is computed in place into these."""

    def __init__(self, h: int, w: int, H: int, W: int):
        f32 = lambda: np.empty((h, w), np.float32)  # noqa: E731
        self.zs, self.Zt, self.Xt, self.Yt, self.u, self.v, self.t1, self.t2, self.t3 = (f32() for _ in range(9))
        self.d1, self.d2, self.d3 = (np.empty((h - 1, w - 1), np.float32) for _ in range(3))
        self.valid, self.b1, self.uncertain = (np.empty((h, w), bool) for _ in range(3))
        self.quad_ok, self.q1 = (np.empty((h - 1, w - 1), bool) for _ in range(2))
        self.key, self.idx, self.i1 = (np.empty((h, w), np.int32) for _ in range(3))
        self.buf = np.empty((H + 2) * (W + 2), np.int32)
        self.ebuf = np.empty((H + 2, W + 2), np.float32)
        self.obuf = np.empty((H, W), np.int32)
        self.tbuf = np.empty((H + 2, W + 2), np.float32)
        self.mbuf = np.empty((H + 2, W + 2), np.uint8)


_local = threading.local()


def _workspace(h: int, w: int, H: int, W: int) -> _Workspace:
    cache = getattr(_local, "ws", None)
    if cache is None:
        cache = _local.ws = {}
    key = (h, w, H, W)
    if key not in cache:
        if len(cache) >= 4:
            cache.clear()
        cache[key] = _Workspace(h, w, H, W)
    return cache[key]


def _project_into(cam: CameraModel, ws: _Workspace) -> None:
    """ws.u, ws.v <- projection of (ws.Xt, ws.Yt, ws.Zt) (Zt > 0) through `cam`, in place."""
    d = np.zeros(14)
    d[: cam.dist.size] = cam.dist
    x, y, r2 = ws.t1, ws.t2, ws.t3
    np.divide(np.float32(1), ws.Zt, out=r2)
    np.multiply(ws.Xt, r2, out=x)
    np.multiply(ws.Yt, r2, out=y)
    u, v = ws.u, ws.v
    if cam.has_distortion:
        k1, k2, p1, p2, k3, k4, k5, k6, s1, s2, s3, s4 = (float(c) for c in d[:12])
        if d[4:].any():  # rational / thin-prism terms: the general (allocating) path
            xd, yd = project_points_f32(cam, x * ws.Zt, y * ws.Zt, ws.Zt)
            np.copyto(u, xd)
            np.copyto(v, yd)
            return
        np.multiply(x, x, out=r2)
        r2 += y * y
        # radial factor into u (scratch), then xd into Xt, yd into Yt (no longer needed)
        np.multiply(r2, np.float32(k2), out=u)
        u += np.float32(k1)
        u *= r2
        u += np.float32(1)
        np.multiply(x, u, out=ws.Xt)
        np.multiply(y, u, out=ws.Yt)
        if p1 or p2:
            np.multiply(x, y, out=u)
            u *= np.float32(2)  # 2xy
            np.multiply(u, np.float32(p1), out=v)
            ws.Xt += v
            np.multiply(u, np.float32(p2), out=v)
            ws.Yt += v
            np.multiply(x, x, out=v)
            v *= np.float32(2)
            v += r2
            v *= np.float32(p2)
            ws.Xt += v
            np.multiply(y, y, out=v)
            v *= np.float32(2)
            v += r2
            v *= np.float32(p1)
            ws.Yt += v
        x, y = ws.Xt, ws.Yt
    K = cam.K
    np.multiply(x, np.float32(K[0, 0]), out=u)
    u += np.float32(K[0, 2])
    if K[0, 1] != 0:
        u += np.float32(K[0, 1]) * y
    np.multiply(y, np.float32(K[1, 1]), out=v)
    v += np.float32(K[1, 2])


def reproject_depth(
    depth_m: np.ndarray,
    sensor: CameraModel,
    phone: CameraModel,
    T_phone_from_sensor: np.ndarray,
    edge_rel: float = 0.03,
    max_footprint_px: int = 12,
) -> Reprojected:
    """Move a sensor depth map into the phone view with hole-free footprints and a z-buffer.

    depth_m: (h, w) float32 metres, z-depth in the sensor colour camera frame (`sensor`,
        whose size must be (w, h)); 0 or NaN = invalid.
    phone: the target camera (its size is the output size; use CameraModel.scaled for smaller).
    T_phone_from_sensor: (4, 4) maps sensor-colour-frame points to the phone frame (metres).
    edge_rel: four neighbouring source pixels lie on one surface when their depths differ by at
        most this fraction; footprints never bridge a larger step.
    max_footprint_px: a quad of same-surface source pixels whose diagonal projects longer than
        this (a grazing surface) is not filled between its corners.
    Returns Reprojected (depth_m, mask) of shape (phone.height, phone.width).
    """
    import cv2

    depth_m = np.asarray(depth_m)
    if depth_m.shape != (sensor.height, sensor.width):
        raise DatasetError(
            f"reproject_depth: depth is {depth_m.shape[1]}x{depth_m.shape[0]}, sensor camera is "
            f"{sensor.width}x{sensor.height}"
        )
    T = np.ascontiguousarray(T_phone_from_sensor, dtype=np.float64)
    if T.shape != (4, 4):
        raise DatasetError(f"reproject_depth: T_phone_from_sensor must be 4x4, got {T.shape}")
    plan = _plan_cached(_cam_key(sensor), T.tobytes(), phone.fx)
    W, H = phone.size
    h, w = depth_m.shape
    Wp = W + 2  # the z-buffer has a 1 px margin so that points just outside still cover the border
    ws = _workspace(h, w, H, W)
    f32 = np.float32

    # depth -> phone frame -> phone pixels, on the full source grid (float32, in place)
    zs = ws.zs
    np.fmax(depth_m.astype(np.float32, copy=False), f32(0), out=zs)  # NaN, negative -> 0
    cv2.threshold(zs, 1e30, 0, cv2.THRESH_TOZERO_INV, dst=zs)  # inf -> 0
    tx, ty, tz = (f32(c) for c in plan.t)
    np.multiply(plan.a_z, zs, out=ws.Zt)
    ws.Zt += tz
    valid = np.greater(zs, f32(0), out=ws.valid)
    valid &= np.greater(ws.Zt, f32(1e-6), out=ws.b1)
    np.maximum(ws.Zt, f32(1e-6), out=ws.Zt)  # keeps the division finite; invalid points get no key
    np.multiply(plan.a_x, zs, out=ws.Xt)
    ws.Xt += tx
    np.multiply(plan.a_y, zs, out=ws.Yt)
    ws.Yt += ty
    _project_into(phone, ws)
    u, v = ws.u, ws.v

    # uncertain: a nearer neighbour beyond the edge threshold, or a hole next to it
    tol = f32(edge_rel)
    cv2.erode(zs, _KERNEL3, dst=ws.t1, borderType=cv2.BORDER_REPLICATE)
    np.multiply(zs, f32(1) - tol, out=ws.t2)
    uncertain = np.less(ws.t1, ws.t2, out=ws.uncertain)

    # quads of 4 neighbouring source pixels on one surface, and the size of their projection
    cv2.erode(zs, _KERNEL3[:2, :2], dst=ws.t1, anchor=(0, 0), borderType=cv2.BORDER_REPLICATE)
    cv2.dilate(zs, _KERNEL3[:2, :2], dst=ws.t2, anchor=(0, 0), borderType=cv2.BORDER_REPLICATE)
    qmin, qmax = ws.t1[:-1, :-1], ws.t2[:-1, :-1]
    d1, d2, d3 = ws.d1, ws.d2, ws.d3
    np.subtract(qmax, qmin, out=d1)
    np.multiply(qmin, tol, out=d2)
    quad_ok = np.less_equal(d1, d2, out=ws.quad_ok)
    quad_ok &= np.greater(qmin, f32(0), out=ws.q1)
    np.subtract(u[1:, 1:], u[:-1, :-1], out=d1)
    np.abs(d1, out=d1)
    np.subtract(v[1:, 1:], v[:-1, :-1], out=d2)
    np.abs(d2, out=d2)
    np.fmax(d1, d2, out=d3)
    np.subtract(u[1:, :-1], u[:-1, 1:], out=d1)
    np.abs(d1, out=d1)
    np.fmax(d3, d1, out=d3)
    np.subtract(v[1:, :-1], v[:-1, 1:], out=d2)
    np.abs(d2, out=d2)
    diag = np.fmax(d3, d2, out=d3)
    quad_ok &= np.less_equal(diag, f32(max_footprint_px), out=ws.q1)
    max_diag = float(np.max(diag, where=quad_ok, initial=0.0))

    # z-buffer keys: float32 depth bits (order-preserving for positive floats); lowest mantissa
    # bit 1 = trusted, 0 = uncertain; invalid or far-outside points get +inf (they never win)
    inside = valid
    inside &= np.greater(u, f32(-1.5), out=ws.b1)
    inside &= np.less(u, f32(W + 0.5), out=ws.b1)
    inside &= np.greater(v, f32(-1.5), out=ws.b1)
    inside &= np.less(v, f32(H + 0.5), out=ws.b1)
    key = np.bitwise_or(ws.Zt.view(np.int32), np.int32(1), out=ws.key)
    key ^= uncertain  # lowest bit: 1 trusted, 0 uncertain
    np.logical_not(inside, out=ws.b1)
    np.copyto(key, np.int32(_INF_BITS), where=ws.b1)
    np.clip(u, f32(-1.5), f32(W + 0.49), out=ws.t1)
    ws.t1 += f32(1.5)
    np.clip(v, f32(-1.5), f32(H + 0.49), out=ws.t2)
    ws.t2 += f32(1.5)
    idx = ws.idx
    np.copyto(idx, ws.t2, casting="unsafe")
    idx *= np.int32(Wp)
    np.copyto(ws.i1, ws.t1, casting="unsafe")
    idx += ws.i1
    idx_f, key_f = idx.ravel(), key.ravel()

    if max_diag >= _QUAD_MAX_DIAG_PX:
        np.greater_equal(diag, f32(_QUAD_MAX_DIAG_PX), out=ws.q1)
        ws.q1 &= quad_ok
        extra_idx, extra_key = _densify(u, v, ws.Zt, uncertain, ws.q1, diag, W, H)
        idx_f = np.concatenate([idx_f, extra_idx])
        key_f = np.concatenate([key_f, extra_key])

    buf = ws.buf
    buf.fill(_INF_BITS)
    np.minimum.at(buf, idx_f, key_f)
    zbuf = buf.view(np.float32).reshape(H + 2, Wp)
    if max_diag > _ONE_PX_MAX_DIAG_PX or not quad_ok.any():
        eroded = cv2.erode(zbuf, _KERNEL3, dst=ws.ebuf, borderType=cv2.BORDER_CONSTANT, borderValue=float("inf"))
        # a pixel that holds a point of the winning surface keeps that point's own depth
        np.multiply(eroded, f32(1) + tol, out=ws.tbuf)
        cv2.compare(zbuf, ws.tbuf, cv2.CMP_LE, dst=ws.mbuf)
        cv2.copyTo(zbuf, ws.mbuf, eroded)
        zbuf = eroded
    zbuf = zbuf[1:-1, 1:-1]

    # outputs: uncertain footprints (lowest key bit 0) and uncovered pixels (+inf, bit 0) -> 0
    bits = zbuf.view(np.int32)
    keep = ws.obuf
    np.bitwise_and(bits, np.int32(1), out=keep)
    keep *= np.int32(-2)  # ...11110 where trusted (clears the flag bit), 0 elsewhere
    depth = np.empty((H, W), np.float32)
    np.bitwise_and(bits, keep, out=depth.view(np.int32))
    mask = depth > 0
    return Reprojected(depth, mask)


def _densify(
    u: np.ndarray, v: np.ndarray, Zt: np.ndarray, uncertain: np.ndarray, quads: np.ndarray, diag: np.ndarray, W: int, H: int
) -> tuple[np.ndarray, np.ndarray]:
    """Extra z-buffer entries (padded flat index, key) for source quads that project too large.

    quads: (h-1, w-1) bool, the quads (by top-left corner) to fill; diag: their projected
    diagonal (px). A quad gets the points of a (k+1) x (k+1) grid bilinearly interpolated
    between its corners (k = ceil(diag / 2.9)), corners excluded, so that its sub-quads'
    diagonals are below 3 px; a sub-point takes its nearest corner's uncertain flag.
    """
    w = u.shape[1]
    q = np.flatnonzero(quads)
    kq = np.ceil(diag.ravel()[q] * np.float32(1 / (_QUAD_MAX_DIAG_PX - 0.1))).astype(np.int32)
    base = q + q // (w - 1)  # quad (r, c) -> flat source index r * w + c
    attrs = (u.ravel(), v.ravel(), Zt.ravel())
    flags = uncertain.ravel()
    out_idx, out_key = [], []
    ks = range(2, int(kq.max()) + 1)
    for k in ks:
        b = base[kq == k] if len(ks) > 1 else base
        if b.size == 0:
            continue
        corners = np.stack([b, b + 1, b + w, b + w + 1])  # (4, n)
        A = [np.take(a, corners) for a in attrs]  # 3 x (4, n)
        F = np.take(flags, corners)  # (4, n)
        fr = [(a / k, c / k) for a in range(k + 1) for c in range(k + 1) if not (a in (0, k) and c in (0, k))]
        fy = np.array([p[0] for p in fr], np.float32)[:, None]
        fx = np.array([p[1] for p in fr], np.float32)[:, None]
        wts = np.concatenate([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx], axis=1)  # (P, 4)
        us, vs, zq = (wts @ A[i] for i in range(3))  # (P, n) each
        nearest = 2 * (2 * fy[:, 0] > 1) + (2 * fx[:, 0] > 1)  # (P,) nearest corner
        flag = F[nearest.astype(int)]  # (P, n)
        ok = (us > -1.5) & (us < W + 0.5) & (vs > -1.5) & (vs < H + 0.5)
        key = zq.view(np.int32) | np.int32(1)
        key ^= flag
        key[~ok] = _INF_BITS
        np.clip(us, -1.5, W + 0.49, out=us)
        us += np.float32(1.5)
        np.clip(vs, -1.5, H + 0.49, out=vs)
        vs += np.float32(1.5)
        idx = vs.astype(np.int32)
        idx *= np.int32(W + 2)
        idx += us.astype(np.int32)
        out_idx.append(idx.ravel())
        out_key.append(key.ravel())
    return np.concatenate(out_idx), np.concatenate(out_key)
