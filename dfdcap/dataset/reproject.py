"""Reprojection of a sensor depth map into the phone camera's view (compiled with numba).

The sensor's depth is registered to its colour camera (a CameraModel); every valid source
pixel becomes a 3D point, moves by `T_phone_from_sensor`, and is projected through the phone's
pinhole + OpenCV distortion model (the model of CameraModel.project, in float32). A pinhole
sensor's pixel rays are computed on the fly; a distorted sensor's are cached per camera.

Surfaces: four neighbouring source pixels form a quad of one surface when their depths differ
by at most `edge_rel` (relative) and its projection's diagonals are at most
`max_footprint_px` long (Chebyshev). Footprints never bridge anything else.

Footprints without holes: each source point covers an axis-aligned box of target pixels around
its projection that reaches halfway to every neighbour it shares a surface quad with (its 8
neighbours, per side: left, right, up, down). Any pixel centre inside a surface quad lies within
half the quad of its nearest corner (in the quad's own coordinates), so it falls in that
corner's box: a sparse source covers a dense target at any scale and rotation, with no extra
points. Boxes reach at least 0.5 px (every point reaches its nearest pixel); points on a
surface's border (not all four of their quads on one surface) reach at least 1 px when the
target is denser than the source (some quad diagonal > 1 px), so silhouettes grow by at most
1 px beyond the outermost source point, as a 3x3 splat would.

Depth inside a box: the point's depth plus the surface's slope in target pixels (from the
neighbours it shares quads with: central differences, one-sided at borders), the slope scaled
down where the plane would leave +-`edge_rel` of the point's own depth inside the box. Where
boxes of one surface overlap they agree to second order, so the z-buffer's choice between them
does not bias the depth: a target pixel's depth is the surface's depth at the pixel centre, not
the depth of the nearest sample (0.17 ppm median error against the simulator's truth where
the nearest sample gives 46 ppm).

Z-buffer and validity: keys are the float32 depth bits (order-preserving for positive floats)
with the lowest mantissa bit as a flag, 1 = trusted; the nearest key wins. Source pixels next to
a nearer surface or a hole (a 3x3 neighbour more than `edge_rel` nearer) are uncertain by up to
one source pixel in where the edge lies: they still occlude what is behind them, but their
boxes carry flag 0 and end up invalid. So the region the phone sees but the sensor could not
(behind a foreground edge) stays invalid instead of taking background depth, and no valid
target pixel takes background depth inside a foreground silhouette. The output clears the flag
bit (one ulp, ~6e-8 relative) and is 0 where invalid.
An object that the sensor never saw at all (hidden behind a nearer one in its view) is beyond
any z-buffer: build-dataset then drops the phone pixels whose ray, in front of their depth,
crosses space the sensor did not see through (visibility.hidden_from_sensor).
A target coarser than the source (several sensor points a pixel) keeps the nearest of them: with
sensor noise, the most negative draw (0.6 % too near on a D405-like sensor into a 252x189 view).
reproject_depth_averaged renders such a target finely enough and averages each pixel's surface.

Speed (640x480 -> 1920x1080 in ~3.5 ms on one core; see benchmarks/reproject.py):
- _prepare: one pass over the source (positions, uncertainty, surface quads) in float32 loops
  that LLVM vectorises (error_model="numpy": no division check; fastmath stays off).
- per source row: _boxes computes every point's box and depth plane (vectorised, in L1), and
  _draw writes them into the z-buffer with explicit vector operations (LLVM intrinsics):
  a box row is a 4-lane min-update (load, compare, blend, plain store: AVX2's masked store,
  vpmaskmovd, is slow on AMD Zen; on a Zen 3 VM the blend made _render ~25 % faster), and four
  boxes of a row at once are one 16-lane operation where their columns do not overlap.
- target rows are finished (keys -> depth and mask) as soon as no later source row reaches
  them, so the z-buffer is a ring of 128 rows that stays in cache; where source rows reach the
  target out of order (a rotated camera), the whole z-buffer is used instead.
- every kernel asks LLVM for the CPU's widest vectors (_wide_vectors): on AVX-512 CPUs that LLVM
  tunes for 256-bit vectors it otherwise spills registers (5.1 ms instead of 3.6-4.2 ms on a
  Sapphire Rapids VM, where registerDepth takes 47-50 ms and Open3D 6.1-6.8 ms).
Scratch arrays are kept per thread; the kernels release the GIL (nogil), one thread each.
First use compiles the kernels (~7 s); numba caches them on disk (`cache=True`) beside this
module, or in the user's cache folder, or NUMBA_CACHE_DIR (~0.4 s to load).
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass

import numpy as np
from llvmlite import ir
from llvmlite.ir.values import FunctionAttributes
from numba import literally, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from dfdcap.cameras import CameraModel
from dfdcap.errors import DatasetError

_INF_BITS = int(np.float32(np.inf).view(np.int32))
_NO_RAYS = np.zeros((0, 0), np.float32)  # rays argument of a pinhole source: the kernel computes them
_EPS_PX = 1e-3  # box edges exactly on a pixel centre include it (both neighbouring boxes do)
_MIN_Z_M = 1e-6  # points nearer to the phone's centre than this (or behind it) are dropped
_JIT = dict(nogil=True, fastmath=False, error_model="numpy")  # numpy: x / 0 = inf, no check (vectorises)


def _kernel(fn):
    """njit(**_JIT), cached on disk where numba finds a writable folder for it (__pycache__
    beside this file, else the user's cache folder, or NUMBA_CACHE_DIR); where none is, each
    process compiles the kernels on first use instead of failing."""
    try:
        return njit(cache=True, **_JIT)(fn)
    except RuntimeError:  # "cannot cache function ...: no locator available"
        return njit(cache=False, **_JIT)(fn)


class _PreferWideVectors(FunctionAttributes):
    """A function's LLVM attributes plus "prefer-vector-width"="512" (llvmlite's own set only
    takes attributes without a value)."""

    def _to_list(self, *args):
        return [*super()._to_list(*args), '"prefer-vector-width"="512"']

    def __bool__(self) -> bool:  # llvmlite writes no attributes for an empty set
        return True


@intrinsic
def _wide_vectors(typingctx):
    """Let LLVM vectorise the calling kernel with the CPU's widest vectors. For AVX-512 CPUs
    that LLVM tunes for 256-bit vectors (Ice Lake, Sapphire Rapids) it otherwise uses 256 bits
    and spills: _prepare took 1.3 ms instead of 0.7 ms on a Sapphire Rapids VM. Harmless
    elsewhere: the attribute cannot widen vectors past what the CPU has."""

    def codegen(context, builder, sig, args):
        fn = builder.function
        if not isinstance(fn.attributes, _PreferWideVectors):
            try:
                wide = _PreferWideVectors(fn.attributes)
                wide.alignstack, wide.personality = fn.attributes.alignstack, fn.attributes.personality
            except (AttributeError, TypeError, ValueError):  # an llvmlite that builds attributes otherwise: LLVM's default width
                return context.get_dummy_value()
            fn.attributes = wide
        return context.get_dummy_value()

    return types.void(), codegen


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
    rays = cam.pixel_rays_interpolated().astype(np.float32)
    return _readonly(rays[..., 0]), _readonly(rays[..., 1])


def _cam_key(cam: CameraModel) -> tuple:
    return (cam.K.tobytes(), cam.dist.tobytes(), cam.size)


def camera_rays(cam: CameraModel) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) float32 undistorted normalised ray coordinates x/z, y/z of every pixel (cached, and
    interpolated from a grid: CameraModel.pixel_rays_interpolated, within 1e-4 px of the exact rays
    in ~10 ms for a new 1008x756 camera, which a breathing phone is at every new focus setting)."""
    return _rays_cached(_cam_key(cam))


@functools.lru_cache(maxsize=8)
def _pinhole_maps_cached(key: tuple) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    K, dist, size = key
    K = np.frombuffer(K).reshape(3, 3)
    m1, m2 = cv2.initUndistortRectifyMap(K, np.frombuffer(dist), None, K, size, cv2.CV_32FC1)
    return _readonly(m1), _readonly(m2)


def to_pinhole_grid(image: np.ndarray, cam: CameraModel) -> np.ndarray:
    """Resample an image of a distorted camera onto its ideal pinhole grid (same K and size),
    nearest neighbour so depth edges stay sharp; 0 outside. The maps are cached per camera."""
    import cv2

    m1, m2 = _pinhole_maps_cached(_cam_key(cam))
    return cv2.remap(image, m1, m2, cv2.INTER_NEAREST, borderValue=0)


def _projection_params(cam: CameraModel) -> tuple:
    """(fx, fy, cx, cy, skew, k1, k2, p1, p2, k3, k4, k5, k6, s1, s2, s3, s4) as float32: the
    terms of CameraModel.project (which, like it, ignores the two tilt coefficients)."""
    d = np.zeros(14)
    d[: cam.dist.size] = cam.dist
    K = cam.K
    return tuple(np.float32(x) for x in (K[0, 0], K[1, 1], K[0, 2], K[1, 2], K[0, 1], *d[:12]))


@njit(inline="always")
def _project(X, Y, Z, c, rational):
    """Camera-frame point (float32 metres, Z > 0) -> float32 pixel (u, v): pinhole + OpenCV
    distortion, c = _projection_params(...) as float32 (float32 keeps LLVM's vectors 16 wide).
    rational: k4, k5 or k6 is not 0 (without, the loops skip a division)."""
    fx, fy, cx, cy, skew, k1, k2, p1, p2, k3, k4, k5, k6, s1, s2, s3, s4 = c
    one, two = np.float32(1), np.float32(2)
    iz = one / Z
    x = X * iz
    y = Y * iz
    r2 = x * x + y * y
    radial = one + r2 * (k1 + r2 * (k2 + r2 * k3))
    if rational:
        radial = radial / (one + r2 * (k4 + r2 * (k5 + r2 * k6)))
    xy2 = two * x * y
    xd = x * radial + p1 * xy2 + p2 * (r2 + two * x * x) + r2 * (s1 + s2 * r2)
    yd = y * radial + p1 * (r2 + two * y * y) + p2 * xy2 + r2 * (s3 + s4 * r2)
    return fx * xd + skew * yd + cx, fy * yd + cy


@_kernel
def _project_many(X, Y, Z, c, u, v):
    """u, v (N,) float32 <- projection of the (N,) float32 points X, Y, Z (metres, Z > 0)."""
    _wide_vectors()
    rational = (c[10] != 0) | (c[11] != 0) | (c[12] != 0)
    for k in range(X.size):
        u[k], v[k] = _project(X[k], Y[k], Z[k], c, rational)


def project_points_f32(cam: CameraModel, X: np.ndarray, Y: np.ndarray, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project camera-frame coordinates (any equal shapes, metres, Z > 0) to pixels.

    The model of CameraModel.project (OpenCV pinhole + distortion up to 12 coefficients), the
    same compiled code the reprojection uses. Returns (u, v) float32 pixels of the input shape.
    """
    X, Y, Z = np.broadcast_arrays(*(np.asarray(a, np.float32) for a in (X, Y, Z)))
    u = np.empty(X.shape, np.float32)
    v = np.empty(X.shape, np.float32)
    _project_many(np.ravel(X), np.ravel(Y), np.ravel(Z), _projection_params(cam), u.reshape(-1), v.reshape(-1))
    return u, v


@njit(inline="always")
def _position(z, x0, y0, m, c, rational):
    """A source pixel of depth z (float32 metres) on ray (x0, y0): (cleaned depth, phone-frame z
    (0 where invalid), phone pixel u, v). m: [R | t] as 12 float32 (row major); c, rational:
    as _project takes them."""
    f0, inf, zmin = np.float32(0), np.float32(np.inf), np.float32(_MIN_Z_M)
    z = z if (z > f0) & (z < inf) else f0
    X = (m[0] * x0 + m[1] * y0 + m[2]) * z + m[3]
    Y = (m[4] * x0 + m[5] * y0 + m[6]) * z + m[7]
    Z = (m[8] * x0 + m[9] * y0 + m[10]) * z + m[11]
    ok = (z > f0) & (Z > zmin)
    u, v = _project(X, Y, max(Z, zmin), c, rational)
    return z, Z if ok else f0, u, v


@_kernel
def _prepare(zin, rx, ry, lin, M, c, tol, max_fp, zs, Zt, U, V, Q, unc, colmax):
    """One pass over the source: positions, uncertainty flags and surface quads.

    zin: (h, w) float32 depth (metres; <= 0, NaN, inf invalid). rx, ry: (h, w) float32 source
    rays, or, where they are empty, the rays of the pinhole lin = (fx, fy, cx, cy, skew)
    (computed here, cheaper than reading them). M: (3, 4) float32 [R | t] phone_from_sensor.
    Writes, in padded (h + 2, w + 2) layout (source pixel (r, c) at [r + 1, c + 1]): zs cleaned
    source depth (border replicated), Zt phone-frame z (0 = invalid; border 0), U, V phone
    pixels, unc 1 = uncertain; Q (h + 1, w + 1): 1 where the quad with top-left corner [a, b]
    is one surface. Returns the longest quad diagonal (px).
    """
    _wide_vectors()
    h, w = zin.shape
    f0 = np.float32(0)
    m = (M[0, 0], M[0, 1], M[0, 2], M[0, 3], M[1, 0], M[1, 1], M[1, 2], M[1, 3], M[2, 0], M[2, 1], M[2, 2], M[2, 3])
    rational = (c[10] != 0) | (c[11] != 0) | (c[12] != 0)
    pinhole = rx.size == 0
    ifx, ify = np.float32(1.0 / lin[0]), np.float32(1.0 / lin[1])
    for r in range(h):
        z_in = zin[r]  # row views: simpler addressing, faster loops
        z_s, z_t, u_t, v_t = zs[r + 1, 1:], Zt[r + 1, 1:], U[r + 1, 1:], V[r + 1, 1:]
        if pinhole:
            y0 = np.float32((r - lin[3]) / lin[1])
            x_off = np.float32(-(lin[2] + lin[4] * y0) / lin[0])
            for k in range(w):
                z_s[k], z_t[k], u_t[k], v_t[k] = _position(z_in[k], np.float32(k) * ifx + x_off, y0, m, c, rational)
        else:
            x_in, y_in = rx[r], ry[r]
            for k in range(w):
                z_s[k], z_t[k], u_t[k], v_t[k] = _position(z_in[k], x_in[k], y_in[k], m, c, rational)
    for k in range(w + 2):  # replicate the border (as a 3x3 erosion with BORDER_REPLICATE sees it)
        zs[0, k] = zs[1, k]
        zs[h + 1, k] = zs[h, k]
    for r in range(h + 2):
        zs[r, 0] = zs[r, 1]
        zs[r, w + 1] = zs[r, w]
    keep = np.float32(1.0 - tol)
    for i in range(1, h + 1):
        za, zb, zc, fl = zs[i - 1], zs[i], zs[i + 1], unc[i]
        for j in range(1, w + 1):
            nearest = min(min(min(za[j - 1], za[j]), min(za[j + 1], zb[j - 1])),
                          min(min(zb[j + 1], zc[j - 1]), min(zc[j], zc[j + 1])))
            fl[j] = nearest < zb[j] * keep
    for b in range(w + 1):
        colmax[b] = 0.0
    tol32, fp32, f0 = np.float32(tol), np.float32(max_fp), np.float32(0)
    for a in range(h + 1):
        s0, s1, t0, t1 = zs[a], zs[a + 1], Zt[a], Zt[a + 1]
        u0, u1, v0, v1, q = U[a], U[a + 1], V[a], V[a + 1], Q[a]
        for b in range(w + 1):
            z00, z01, z10, z11 = s0[b], s0[b + 1], s1[b], s1[b + 1]
            mn = min(min(z00, z01), min(z10, z11))
            mx = max(max(z00, z01), max(z10, z11))
            valid = min(min(t0[b], t0[b + 1]), min(t1[b], t1[b + 1])) > f0
            diag = max(max(abs(u1[b + 1] - u0[b]), abs(v1[b + 1] - v0[b])),
                       max(abs(u1[b] - u0[b + 1]), abs(v1[b] - v0[b + 1])))
            ok = valid & (mx - mn <= mn * tol32) & (diag <= fp32)
            q[b] = ok
            colmax[b] = max(colmax[b], np.float64(diag) if ok else 0.0)
    best = 0.0
    for b in range(w + 1):
        best = max(best, colmax[b])
    return best


_SPAN = 4  # lanes of _span_min: the z-buffer has this many columns of padding
_ROWS = 4  # boxes up to this many rows are written with a fixed (well predicted) row count
_RING = 128  # z-buffer rows kept when source rows reach target rows in order (a power of 2)
_META_BITS = 12  # META packs nx | ny << 12 | flag << 24
_GROUP = 4  # points (every other one) that _draw_group draws together
_GROUP_PAD = 2 * _GROUP  # the per-row box arrays have this many spare elements (_draw_group reads 2 _GROUP)


@intrinsic
def _span_min(typingctx, zb, y, x0, n, d0, gx, flag):
    """zb[y, x0 + k] = min(zb[y, x0 + k], key(d0 + k * gx)) for k < min(n, _SPAN), as one
    vector operation: load, blend, store all _SPAN lanes (lanes past the box get their own value).
    zb: (rows, cols) int32, C order, readable and writable up to [y, x0 + _SPAN - 1].
    key(d) = float32 bits of d with the lowest bit replaced by `flag` (1 trusted, 0 uncertain)."""
    lanes = _SPAN

    def codegen(context, builder, sig, args):
        arrty = sig.args[0]
        arr = context.make_array(arrty)(context, builder, value=args[0])
        y_, x_, n_, d0_, gx_, fl_ = args[1:]
        ptr = cgutils.get_item_pointer(context, builder, arrty, arr, [y_, x_], wraparound=False)
        i32, f32 = ir.IntType(32), ir.FloatType()
        vi, vf = ir.VectorType(i32, lanes), ir.VectorType(f32, lanes)

        def splat(val, vty):
            undef = ir.Constant(vty, ir.Undefined)
            one = builder.insert_element(undef, val, ir.Constant(i32, 0))
            return builder.shuffle_vector(one, undef, ir.Constant(vi, [0] * lanes))

        vptr = builder.bitcast(ptr, vi.as_pointer())
        old = builder.load(vptr, align=4)
        d = builder.fadd(splat(d0_, vf), builder.fmul(splat(gx_, vf), ir.Constant(vf, [float(k) for k in range(lanes)])))
        keys = builder.or_(builder.and_(builder.bitcast(d, vi), ir.Constant(vi, [-2] * lanes)), splat(fl_, vi))
        inbox = builder.icmp_signed("<", ir.Constant(vi, list(range(lanes))), splat(builder.trunc(n_, i32), vi))
        take = builder.and_(inbox, builder.icmp_signed("<", keys, old))
        builder.store(builder.select(take, keys, old), vptr, align=4)  # a blend and a plain store (see _draw_group)
        return context.get_dummy_value()

    return types.void(zb, types.intp, types.intp, types.intp, types.float32, types.float32, types.int32), codegen


@intrinsic
def _draw_group(typingctx, zb, ymask, rows, X0, Y0, META, D0, GX, GY, c):
    """Draw the boxes of points c, c + 2, .., c + 2 (_GROUP - 1) of a row (arrays of _boxes,
    readable up to c + 2 _GROUP - 1) as vector operations of 4 lanes a point, one per box row:
    `rows` (a literal) rows. Only if all have boxes of 1..rows rows and 1.._SPAN columns whose
    column ranges are disjoint and in order (so that no two lanes write one pixel); returns 1
    if drawn, 0 if not (then draw them one by one)."""
    if not isinstance(rows, types.IntegerLiteral):
        return None
    n_rows, G = rows.literal_value, _GROUP
    L = 4 * G  # lanes

    def codegen(context, builder, sig, args):
        zb_t = sig.args[0]
        zb_a = context.make_array(zb_t)(context, builder, value=args[0])
        ymask_, c_ = args[1], args[9]
        i1, i32, i64, f32 = ir.IntType(1), ir.IntType(32), ir.IntType(64), ir.FloatType()

        def vec(t, n):
            return ir.VectorType(t, n)

        def const(t, values):
            return ir.Constant(vec(t, len(values)), values)

        def load(k):  # <2G x T> at element c of array argument k
            arr_t = sig.args[k]
            arr = context.make_array(arr_t)(context, builder, value=args[k])
            ptr = cgutils.get_item_pointer(context, builder, arr_t, arr, [c_], wraparound=False)
            el = context.get_data_type(arr_t.dtype)
            return builder.load(builder.bitcast(ptr, vec(el, 2 * G).as_pointer()), align=4)

        def shuffle(v, idx):
            return builder.shuffle_vector(v, v, const(i32, idx))

        def splat(v, n):
            one = builder.insert_element(ir.Constant(vec(v.type, n), ir.Undefined), v, ir.Constant(i32, 0))
            return builder.shuffle_vector(one, ir.Constant(vec(v.type, n), ir.Undefined), const(i32, [0] * n))

        xa, ya, ma, da, gxa, gya = (load(k) for k in range(3, 9))
        even, even_l = [2 * k for k in range(G)], [k // 4 * 2 for k in range(L)]
        # eligibility: 1 <= ny <= rows, 1 <= nx <= _SPAN, column ranges disjoint and in order
        low12 = const(i32, [(1 << _META_BITS) - 1] * G)
        mg = shuffle(ma, even)
        nxg = builder.and_(mg, low12)
        nyg = builder.and_(builder.ashr(mg, const(i32, [_META_BITS] * G)), low12)
        xg = shuffle(xa, even)
        endg = builder.select(const(i1, [1] * (G - 1) + [0]), builder.add(xg, nxg), xg)  # last: nothing after it
        nxtg = shuffle(xg, list(range(1, G)) + [G - 1])
        ok = builder.and_(builder.icmp_signed(">=", nyg, const(i32, [1] * G)), builder.icmp_signed("<=", nyg, const(i32, [n_rows] * G)))
        ok = builder.and_(ok, builder.icmp_signed(">=", nxg, const(i32, [1] * G)))
        ok = builder.and_(ok, builder.icmp_signed("<=", nxg, const(i32, [_SPAN] * G)))
        ok = builder.and_(ok, builder.icmp_signed(">=", nxtg, endg))
        all_ok = builder.icmp_unsigned("==", builder.bitcast(ok, ir.IntType(G)), ir.Constant(ir.IntType(G), (1 << G) - 1))
        result = cgutils.alloca_once_value(builder, ir.Constant(i64, 0))
        with builder.if_then(all_ok, likely=True):
            lane_i = const(i32, [k % 4 for k in range(L)])
            lane_f = const(f32, [float(k % 4) for k in range(L)])
            ml = shuffle(ma, even_l)
            nxl = builder.and_(ml, const(i32, [(1 << _META_BITS) - 1] * L))
            nyl = builder.and_(builder.ashr(ml, const(i32, [_META_BITS] * L)), const(i32, [(1 << _META_BITS) - 1] * L))
            flag = builder.ashr(ml, const(i32, [2 * _META_BITS] * L))
            in_x = builder.icmp_signed("<", lane_i, nxl)
            base = builder.fadd(shuffle(da, even_l), builder.fmul(shuffle(gxa, even_l), lane_f))
            gyl = shuffle(gya, even_l)
            # the boxes' row addresses as one <G x i64> vector: data + row * stride + x * 4
            yg = builder.sext(shuffle(ya, even), vec(i64, G))
            cols = builder.add(builder.mul(builder.sext(xg, vec(i64, G)), const(i64, [4] * G)),
                               splat(builder.ptrtoint(zb_a.data, i64), G))
            stride = splat(builder.extract_value(zb_a.strides, 0), G)
            ymask_g = splat(ymask_, G)
            for dy in range(n_rows):
                addr = builder.add(cols, builder.mul(builder.and_(builder.add(yg, const(i64, [dy] * G)), ymask_g), stride))
                ptrs = [builder.inttoptr(builder.extract_element(addr, ir.Constant(i32, k)), vec(i32, 4).as_pointer())
                        for k in range(G)]
                parts = [builder.load(p, align=4) for p in ptrs]
                while len(parts) > 1:  # concatenate into one <L x i32>
                    n = parts[0].type.count
                    parts = [builder.shuffle_vector(parts[k], parts[k + 1], const(i32, list(range(2 * n))))
                             for k in range(0, len(parts), 2)]
                old = parts[0]
                d = builder.fadd(base, builder.fmul(gyl, const(f32, [float(dy)] * L)))
                keys = builder.or_(builder.and_(builder.bitcast(d, vec(i32, L)), const(i32, [-2] * L)), flag)
                take = builder.and_(in_x, builder.icmp_signed(">", nyl, const(i32, [dy] * L)))
                take = builder.and_(take, builder.icmp_signed("<", keys, old))
                new = builder.select(take, keys, old)
                for k in range(G):  # in order: a span's lanes past its box (old values) may lie under the next box
                    builder.store(builder.shuffle_vector(new, new, const(i32, list(range(4 * k, 4 * k + 4)))), ptrs[k], align=4)
            builder.store(ir.Constant(i64, 1), result)
        return builder.load(result)

    return types.int64(zb, ymask, rows, X0, Y0, META, D0, GX, GY, c), codegen


@njit(inline="always")
def _offsets(flag, du, dv, lo_u, hi_u, lo_v, hi_v):
    """Widen the range of offsets (px) to same-surface neighbours by (du, dv) if `flag`."""
    du = du if flag else np.float32(0)
    dv = dv if flag else np.float32(0)
    return min(lo_u, du), max(hi_u, du), min(lo_v, dv), max(hi_v, dv)


@_kernel
def _boxes(i, Zt, U, V, Q, unc, tol, e_border, max_fp, W, H, X0, Y0, META, D0, GX, GY):
    """The box and depth plane of every point of padded source row i (branch-free float32, so
    that LLVM vectorises it).

    Arrays of _prepare in; out, per source pixel of the row (w,): X0, Y0 int32 the box's first
    target pixel, META int32 nx | ny << 12 | trusted << 24 (ny = 0: nothing to draw), D0
    float32 the depth at (X0, Y0), GX, GY float32 its slope (m/px, scaled down where it would
    leave +-tol of the point's depth inside the box). Returns the most rows of a box.
    """
    _wide_vectors()
    hp, wp = Zt.shape
    f0, f1 = np.float32(0), np.float32(1)
    e_cap = np.float32(max_fp + 1.0)
    e_in, e_out, half = np.float32(0.5), np.float32(e_border), np.float32(0.5)
    eps, tol32 = np.float32(_EPS_PX), np.float32(tol)
    u_lo, u_hi = -e_cap, np.float32(W - 1) + e_cap
    v_lo, v_hi = -e_cap, np.float32(H - 1) + e_cap
    w_last, h_last = np.float32(W - 1), np.float32(H - 1)
    most_rows = np.int32(0)
    zu, zc, zd = Zt[i - 1], Zt[i], Zt[i + 1]  # row views: simpler addressing, faster loops
    uu, uc, ud = U[i - 1], U[i], U[i + 1]
    vu, vc, vd = V[i - 1], V[i], V[i + 1]
    qa, qb, un = Q[i - 1], Q[i], unc[i]
    for j in range(1, wp - 1):
        z, u, v = zc[j], uc[j], vc[j]
        qtl, qtr, qbl, qbr = qa[j - 1] != 0, qa[j] != 0, qb[j - 1] != 0, qb[j] != 0
        nL, nR, nU, nD = qtl | qbl, qtr | qbr, qtl | qtr, qbl | qbr
        uL, uR, uU, uD = uc[j - 1], uc[j + 1], uu[j], ud[j]
        vL, vR, vU, vD = vc[j - 1], vc[j + 1], vu[j], vd[j]
        lu = hu = lv = hv = f0
        lu, hu, lv, hv = _offsets(nL, uL - u, vL - v, lu, hu, lv, hv)
        lu, hu, lv, hv = _offsets(nR, uR - u, vR - v, lu, hu, lv, hv)
        lu, hu, lv, hv = _offsets(nU, uU - u, vU - v, lu, hu, lv, hv)
        lu, hu, lv, hv = _offsets(nD, uD - u, vD - v, lu, hu, lv, hv)
        lu, hu, lv, hv = _offsets(qtl, uu[j - 1] - u, vu[j - 1] - v, lu, hu, lv, hv)
        lu, hu, lv, hv = _offsets(qtr, uu[j + 1] - u, vu[j + 1] - v, lu, hu, lv, hv)
        lu, hu, lv, hv = _offsets(qbl, ud[j - 1] - u, vd[j - 1] - v, lu, hu, lv, hv)
        lu, hu, lv, hv = _offsets(qbr, ud[j + 1] - u, vd[j + 1] - v, lu, hu, lv, hv)
        # reach halfway to the farthest same-surface neighbour on each side, at least e0
        e0 = e_in if qtl & qtr & qbl & qbr else e_out
        eL, eR = max(e0, -half * lu), max(e0, half * hu)
        eT, eB = max(e0, -half * lv), max(e0, half * hv)
        # slope: central differences along the source row and column, one-sided at borders
        cu = (uR if nR else u) - (uL if nL else u)
        cv = (vR if nR else v) - (vL if nL else v)
        cz = (zc[j + 1] if nR else z) - (zc[j - 1] if nL else z)
        ru = (uD if nD else u) - (uU if nU else u)
        rv = (vD if nD else v) - (vU if nU else v)
        rz = (zd[j] if nD else z) - (zu[j] if nU else z)
        det = cu * rv - cv * ru
        nc = cu * cu + cv * cv
        nr = ru * ru + rv * rv
        both = (nL | nR) & (nU | nD) & (abs(det) > np.float32(1e-6))
        only_c = (nL | nR) & (nc > np.float32(1e-6))
        only_r = (nU | nD) & (nr > np.float32(1e-6))
        # one division: the 2x2 solve, or the slope along the one known direction
        a = cz * rv - rz * cv if both else (cz * cu if only_c else (rz * ru if only_r else f0))
        b = cu * rz - ru * cz if both else (cz * cv if only_c else (rz * rv if only_r else f0))
        den = det if both else (nc if only_c else (nr if only_r else f1))
        inv = f1 / den
        gx, gy = a * inv, b * inv
        inside = (z > f0) & (u > u_lo) & (u < u_hi) & (v > v_lo) & (v < v_hi)
        u = u if inside else f0
        v = v if inside else f0
        # the box in float32 (exact for these integers), converted once
        fx0 = max(np.ceil(u - min(eL, e_cap) - eps), f0)
        fx1 = min(np.floor(u + min(eR, e_cap) + eps), w_last)
        fy0 = max(np.ceil(v - min(eT, e_cap) - eps), f0)
        fy1 = min(np.floor(v + min(eB, e_cap) + eps), h_last)
        ok = inside & (fx1 >= fx0) & (fy1 >= fy0)
        x0, y0 = np.int32(fx0), np.int32(fy0)
        nx = np.int32(fx1 - fx0 + f1) if ok else np.int32(0)
        ny = np.int32(fy1 - fy0 + f1) if ok else np.int32(0)
        # where the plane would leave +-tol * z inside the box, scale the slope down to reach it
        reach = abs(gx) * max(u - fx0, fx1 - u) + abs(gy) * max(v - fy0, fy1 - v)
        lim = tol32 * z
        s = lim / reach if reach > lim else f1
        gx *= s
        gy *= s
        X0[j - 1] = x0
        Y0[j - 1] = y0
        META[j - 1] = nx | (ny << _META_BITS) | ((np.int32(1) - np.int32(un[j])) << (2 * _META_BITS))
        D0[j - 1] = z + gx * (fx0 - u) + gy * (fy0 - v)
        GX[j - 1] = gx
        GY[j - 1] = gy
        most_rows = max(most_rows, ny)
    return most_rows


@_kernel
def _draw(X0, Y0, META, D0, GX, GY, rows, ymask, zb):
    """Draw one source row's boxes (of _boxes) into the z-buffer zb (int32 keys, _SPAN columns
    of padding; target row y is zb row y & ymask). `rows` is a compile-time constant (one
    specialisation per value): boxes of at most `rows` rows and _SPAN columns -- nearly all --
    take exactly `rows` row operations, the spare ones masked, so no branch depends on a box:
    four at a time with _draw_group where they allow, else one _span_min per box row."""
    _wide_vectors()
    literally(rows)
    w = X0.size - _GROUP_PAD
    mask12 = (1 << _META_BITS) - 1
    # even columns, then odd ones: a span's load must not overlap the span stored just
    # before it (a partly overlapping store does not forward to a load; the load would wait)
    group = False
    for c0 in range(2):
        for c in range(c0, w, 2):
            if (c - c0) % (2 * _GROUP) == 0:  # first point of a group: draw them together if they allow
                group = c + 2 * _GROUP - 2 < w and _draw_group(zb, ymask, rows, X0, Y0, META, D0, GX, GY, c) == 1
            if group:
                continue
            m = META[c]
            ny = np.int64((m >> _META_BITS) & mask12)
            if ny == 0:
                continue
            nx = np.int64(m & mask12)
            flag = np.int32(m >> (2 * _META_BITS))
            y0, x0 = np.int64(Y0[c]), np.int64(X0[c])
            d0, gx, gy = D0[c], GX[c], GY[c]
            if (nx <= _SPAN) & (ny <= rows):
                for dy in range(rows):
                    _span_min(zb, (y0 + dy) & ymask, x0, nx if dy < ny else 0, d0 + gy * np.float32(dy), gx, flag)
            else:
                for dy in range(ny):
                    dr = d0 + gy * np.float32(dy)
                    for xs in range(0, nx, _SPAN):
                        _span_min(zb, (y0 + dy) & ymask, x0 + xs, nx - xs, dr + gx * np.float32(xs), gx, flag)


@_kernel
def _row_bounds(Zt, V, e_cap, H, ylo, yhi):
    """Target rows [ylo[r], yhi[r]) that source row r's boxes can reach (from its points'
    rows and the longest reach e_cap); empty rows get [H, 0). Integer reductions vectorise."""
    _wide_vectors()
    hp, wp = Zt.shape
    big = np.float32(4 * H + 4 * e_cap + 16)
    reach = np.int32(math.ceil(e_cap)) + np.int32(2)
    for i in range(1, hp - 1):
        lo = np.int32(H + reach)
        hi = np.int32(-reach)
        for j in range(1, wp - 1):
            ok = (Zt[i, j] > np.float32(0)) & (V[i, j] > -big) & (V[i, j] < big)
            vf = np.int32(np.floor(V[i, j] if ok else np.float32(0)))
            lo = min(lo, vf if ok else np.int32(H + reach))
            hi = max(hi, vf if ok else np.int32(-reach))
        ylo[i - 1] = min(max(lo - reach, 0), H)
        yhi[i - 1] = min(max(hi + reach, 0), H)


@_kernel
def _finish_rows(zb, ymask, y_from, y_to, bits, mask):
    """Target rows [y_from, y_to) are final: keys (z-buffer row y & ymask) -> depth bits (flag
    bit cleared; 0 where untrusted or empty) and mask; the z-buffer rows are left empty (+inf)."""
    _wide_vectors()
    inf = np.int32(_INF_BITS)
    for y in range(y_from, y_to):
        row = zb[y & ymask]
        out, m = bits[y], mask[y]
        for x in range(out.size):
            b = row[x]
            t = b & np.int32(1)
            out[x] = b & (np.int32(-2) * t)
            m[x] = t != 0
            row[x] = inf


@_kernel
def _plan_rows(ylo, yhi, H, fin):
    """fin[r]: the target rows below which no source row after r draws (suffix minimum of ylo).
    Returns the most z-buffer rows in use at once (rows drawn but not final)."""
    _wide_vectors()
    h = ylo.size
    low = H
    for r in range(h - 1, -1, -1):
        fin[r] = low
        low = min(low, ylo[r])
    most = 0
    done = 0
    for r in range(h):
        if yhi[r] > ylo[r]:
            most = max(most, yhi[r] - done)
        done = max(done, fin[r])
    return most


@_kernel
def _prepare_all(zin, rx, ry, lin, M, c, tol, max_fp, H, ws):
    """_prepare, the target rows each source row reaches and the schedule of final rows.
    Returns (longest quad diagonal in px, the most z-buffer rows in use at once)."""
    _wide_vectors()
    zs, Zt, U, V, Q, unc, colmax, X0, Y0, META, D0, GX, GY, ylo, yhi, fin = ws
    max_diag = _prepare(zin, rx, ry, lin, M, c, tol, max_fp, zs, Zt, U, V, Q, unc, colmax)
    _row_bounds(Zt, V, max_fp + 1.0, H, ylo, yhi)
    return max_diag, _plan_rows(ylo, yhi, H, fin)


@_kernel
def _render(tol, max_fp, e_border, ws, zb, ymask, bits, mask):
    """Draw every source row's boxes, finishing target rows as soon as no later source row
    reaches them: the z-buffer only holds the rows in flight (a ring of ymask + 1 rows when
    the source rows map to target rows in order, the whole image otherwise)."""
    _wide_vectors()
    zs, Zt, U, V, Q, unc, colmax, X0, Y0, META, D0, GX, GY, ylo, yhi, fin = ws
    H, W = bits.shape
    done = 0
    for i in range(1, Zt.shape[0] - 1):  # boxes of a source row (in L1), then draw them
        if yhi[i - 1] > ylo[i - 1]:
            most_rows = _boxes(i, Zt, U, V, Q, unc, tol, e_border, max_fp, W, H, X0, Y0, META, D0, GX, GY)
            if most_rows == 1:
                _draw(X0, Y0, META, D0, GX, GY, 1, ymask, zb)
            elif most_rows == 2:
                _draw(X0, Y0, META, D0, GX, GY, 2, ymask, zb)
            elif most_rows == 3:
                _draw(X0, Y0, META, D0, GX, GY, 3, ymask, zb)
            elif most_rows > 3:
                _draw(X0, Y0, META, D0, GX, GY, _ROWS, ymask, zb)
        if fin[i - 1] > done:
            _finish_rows(zb, ymask, done, fin[i - 1], bits, mask)
            done = fin[i - 1]
    _finish_rows(zb, ymask, done, H, bits, mask)


class _Workspace:
    """Scratch arrays of one thread for one (source, target) size: fresh arrays cost page
    faults on every call. Padded source layout as in _prepare."""

    def __init__(self, h: int, w: int, H: int, W: int):
        f32 = lambda shape: np.zeros(shape, np.float32)  # noqa: E731
        self.arrays = (
            f32((h + 2, w + 2)), f32((h + 2, w + 2)), f32((h + 2, w + 2)), f32((h + 2, w + 2)),  # zs, Zt, U, V
            np.zeros((h + 1, w + 1), np.uint8), np.zeros((h + 2, w + 2), np.uint8),  # Q, unc
            np.zeros(w + 1, np.float64),  # colmax
            *(np.zeros(w + _GROUP_PAD, np.int32) for _ in range(3)),  # X0, Y0, META of a row
            *(f32(w + _GROUP_PAD) for _ in range(3)),  # D0, GX, GY of a row
            np.zeros(h, np.int32), np.zeros(h, np.int32), np.zeros(h, np.int32),  # ylo, yhi, fin
        )
        self.ring = np.full((_RING, W + _SPAN), _INF_BITS, np.int32)  # z-buffer rows in flight
        self.full: np.ndarray | None = None  # the whole z-buffer, where rows do not come in order
        self.empty = {"ring": True, "full": True}  # the buffer holds +inf (no call stopped midway)


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
    depth_m = np.asarray(depth_m)
    if depth_m.shape != (sensor.height, sensor.width):
        raise DatasetError(
            f"reproject_depth: depth is {depth_m.shape[1] if depth_m.ndim > 1 else '?'}x{depth_m.shape[0]}, "
            f"sensor camera is {sensor.width}x{sensor.height}"
        )
    T = np.ascontiguousarray(T_phone_from_sensor, dtype=np.float64)
    if T.shape != (4, 4):
        raise DatasetError(f"reproject_depth: T_phone_from_sensor must be 4x4, got {T.shape}")
    if not 0 < edge_rel < 1:
        raise DatasetError(f"reproject_depth: edge_rel must be in (0, 1), got {edge_rel}")
    if not 0 < max_footprint_px <= 1000:
        raise DatasetError(f"reproject_depth: max_footprint_px must be in (0, 1000], got {max_footprint_px}")
    if sensor.has_distortion:
        rx, ry = camera_rays(sensor)
    else:  # the kernel computes a pinhole's rays
        rx = ry = _NO_RAYS
    h, w = depth_m.shape
    W, H = phone.size
    ws = _workspace(h, w, H, W)
    tol, max_fp = float(edge_rel), float(max_footprint_px)
    max_diag, rows_in_flight = _prepare_all(
        np.ascontiguousarray(depth_m, dtype=np.float32), rx, ry,
        (sensor.fx, sensor.fy, sensor.cx, sensor.cy, float(sensor.K[0, 1])), np.ascontiguousarray(T[:3], dtype=np.float32),
        _projection_params(phone), tol, max_fp, H, ws.arrays,
    )
    # a denser target (a quad diagonal > 1 px) or no surface at all: border points reach 1 px
    e_border = 1.0 if max_diag > 1.001 or max_diag <= 0.0 else 0.5
    if rows_in_flight + _ROWS <= _RING:
        name, zb, ymask = "ring", ws.ring, _RING - 1
    else:
        if ws.full is None:
            ws.full = np.empty((H + _ROWS - 1, W + _SPAN), np.int32)
            ws.empty["full"] = False
        name, zb, ymask = "full", ws.full, -1
    if not ws.empty[name]:
        zb.fill(_INF_BITS)
    depth = np.empty((H, W), np.float32)
    mask = np.empty((H, W), bool)
    ws.empty[name] = False  # until the call completes
    _render(tol, max_fp, e_border, ws.arrays, zb, ymask, depth.view(np.int32), mask)
    ws.empty[name] = True
    return Reprojected(depth, mask)


MAX_SUPERSAMPLE = 31  # a 20x20 px target from a 640x480 sensor is still rendered at least as dense as its source


def supersample_factor(sensor: CameraModel, phone: CameraModel) -> int:
    """The odd factor k that renders `phone` at least as densely as `sensor`'s pixels land in it.

    1 where the phone samples the scene at least as finely as the sensor (fx, fy ratio >= 1);
    else the smallest odd k with k * ratio >= 1 (odd: the centre sub-pixel of each k x k block
    is the pixel's own centre), at most MAX_SUPERSAMPLE."""
    ratio = min(phone.fx / sensor.fx, phone.fy / sensor.fy)
    if not ratio < 1.0:
        return 1
    k = int(math.ceil(1.0 / ratio - 1e-9))
    return int(min(k + (1 - k % 2), MAX_SUPERSAMPLE))


def reproject_depth_averaged(
    depth_m: np.ndarray,
    sensor: CameraModel,
    phone: CameraModel,
    T_phone_from_sensor: np.ndarray,
    edge_rel: float = 0.03,
    max_footprint_px: int = 12,
    supersample: int | None = None,
) -> Reprojected:
    """reproject_depth into a target that may be coarser than the source, without the z-buffer's bias.

    Where several sensor points land in one target pixel the z-buffer keeps the nearest of them,
    and with sensor noise that is the most negative noise draw: on a D405-like sensor seen by a
    252x189 phone view (~4 points a pixel) the median depth came out 0.6 % too near. So the depth is
    rendered k times finer (k = supersample_factor, or `supersample`, odd) where each sub-pixel
    sees about one point, and each target pixel takes the surface at its centre sub-pixel (its
    mask, so silhouettes and occlusion are decided at the pixel centre as reproject_depth does)
    with the mean depth of the block's valid sub-pixels on that surface (within edge_rel of it):
    a symmetric block about the centre, so a slanted surface's mean is its depth at the centre.
    k = 1 is reproject_depth itself."""
    k = supersample_factor(sensor, phone) if supersample is None else int(supersample)
    if k < 1 or k % 2 == 0:
        raise DatasetError(f"reproject_depth_averaged: supersample must be an odd integer >= 1, got {supersample}")
    if k == 1:
        return reproject_depth(depth_m, sensor, phone, T_phone_from_sensor, edge_rel, max_footprint_px)
    fine = reproject_depth(depth_m, sensor, phone.scaled(k), T_phone_from_sensor, edge_rel, min(max_footprint_px * k, 1000))
    W, H = phone.size
    if fine.depth_m.shape != (H * k, W * k):  # scaled() rounds the size; the blocks need it exact
        raise DatasetError(f"reproject_depth_averaged: {W}x{H} scaled by {k} is not {W * k}x{H * k}")
    depth = np.empty((H, W), np.float32)
    mask = np.empty((H, W), bool)
    _block_surface_mean(fine.depth_m, fine.mask, k, np.float32(edge_rel), depth, mask)
    return Reprojected(depth, mask)


@_kernel
def _block_surface_mean(zf, mf, k, tol, depth, mask):
    """Per k x k block: the centre sub-pixel's mask, the mean of the valid sub-pixels within tol of its depth."""
    _wide_vectors()
    H, W = depth.shape
    c = k // 2
    for y in range(H):
        for x in range(W):
            zc = zf[y * k + c, x * k + c]
            if not mf[y * k + c, x * k + c] or not zc > 0:
                depth[y, x] = 0.0
                mask[y, x] = False
                continue
            lim = tol * zc
            total = 0.0
            n = 0
            for dy in range(k):
                for dx in range(k):
                    z = zf[y * k + dy, x * k + dx]
                    if mf[y * k + dy, x * k + dx] and abs(z - zc) <= lim:
                        total += z
                        n += 1
            depth[y, x] = total / n
            mask[y, x] = True


def warm_up() -> None:
    """Compile every kernel specialisation reproject_depth uses (pinhole and distorted sources), or
    load them from numba's on-disk cache: scripts/setup.sh runs this once after installing, so
    the first build-dataset spends ~0.4 s loading instead of seconds compiling; build-dataset
    calls it before forking its workers, which then inherit the compiled code."""
    K = np.array([[20.0, 0, 7.5], [0, 20.0, 5.5], [0, 0, 1]])
    pinhole = CameraModel(K, np.zeros(5), (16, 12))
    distorted = CameraModel(K, np.array([0.05, -0.02, 0.001, 0.0, 0.0]), (16, 12))
    target = pinhole.scaled(3.0)
    depth = np.full((12, 16), 1.0, np.float32)
    for source in (pinhole, distorted):
        reproject_depth(depth, source, target, np.eye(4))
    reproject_depth_averaged(depth, pinhole, pinhole.scaled(0.5), np.eye(4))  # a coarser target: _block_surface_mean
    project_points_f32(target, np.zeros(1), np.zeros(1), np.ones(1))

