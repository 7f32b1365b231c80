"""Occlusion-aware thin-lens defocus, sensor noise, and random focus stacks for pretraining.

The defocus renderer splits the image into depth layers evenly spaced in diopters (the CoC is
linear in diopters: c_px = k * |1/F - 1/D| with k = A f F / ((F - f) pitch)), blurs each
layer's premultiplied colour and alpha with a disk of the layer's CoC diameter, and composites
the layers far to near with the "over" operator. So a blurred foreground spreads over the
background, and a sharp foreground is never smeared by a blurred background. A far layer is
extended (nearest-pixel fill) a CoC radius behind nearer occluders, so that a blurred
foreground edge reveals a plausible background instead of a dark halo.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from dfdcap.errors import DfdcapError
from dfdcap.lens import ThinLens

_DISK_CACHE: dict[int, np.ndarray] = {}


def disk_kernel(diameter_px: float) -> np.ndarray:
    """(K, K) float32 anti-aliased disk of the given diameter in pixels, summing to 1.

    Diameters below 1 px give the identity kernel (1x1).
    """
    if not diameter_px > 1.0:
        return np.ones((1, 1), np.float32)
    key = int(round(diameter_px * 32))
    k = _DISK_CACHE.get(key)
    if k is None:
        r = key / 64.0
        n = int(math.ceil(r - 0.5)) if r > 0.5 else 0
        n = max(n, 1)
        y, x = np.mgrid[-n : n + 1, -n : n + 1].astype(np.float64)
        # coverage of each pixel by the disk, approximated with 4x4 supersampling
        ss = 4
        o = (np.arange(ss) + 0.5) / ss - 0.5
        cov = np.zeros_like(x)
        for dy in o:
            for dx in o:
                cov += ((x + dx) ** 2 + (y + dy) ** 2) <= r * r
        cov /= ss * ss
        k = (cov / cov.sum()).astype(np.float32)
        _DISK_CACHE[key] = k
    return k


def coc_px_per_diopter(lens: ThinLens, focus_m: float, pixel_pitch_m: float) -> float:
    """k such that CoC_px = k * |1/focus_m - 1/depth_m| (thin lens)."""
    f = lens.focal_length_m
    F = float(focus_m)
    if math.isinf(F):
        return lens.aperture_m / pixel_pitch_m  # c = A f / (D - f) ~ A f / D for D >> f
    if not F > f:
        raise DfdcapError(f"render_defocus: focus distance {F} m must exceed the focal length {f} m")
    return lens.aperture_m * f * F / ((F - f) * pixel_pitch_m)


def _to_float(rgb: np.ndarray) -> np.ndarray:
    if rgb.dtype == np.uint8:
        return rgb.astype(np.float32) * np.float32(1.0 / 255.0)
    return np.asarray(rgb, dtype=np.float32)


def _from_float(img: np.ndarray, like: np.ndarray) -> np.ndarray:
    if like.dtype == np.uint8:
        return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return img.astype(like.dtype, copy=False)


def layer_indices(
    depth_m: np.ndarray, lens: ThinLens, focus_m: float, pixel_pitch_m: float, layer_px: float = 1.0, max_layers: int = 48
) -> tuple[np.ndarray, np.ndarray]:
    """Assign pixels to depth layers evenly spaced in diopters.

    depth_m: (H, W) metres, <= 0 or NaN = invalid (treated as the farthest depth).
    Returns (idx (H, W) int32 in 0..L-1, far to near; coc_px (L,) the CoC diameter of each layer,
    the mean of its pixels' CoCs).
    """
    D = np.asarray(depth_m, dtype=np.float32)
    valid = np.isfinite(D) & (D > 0)
    if not valid.any():
        return np.zeros(D.shape, np.int32), np.zeros(1, np.float32)
    dpt = np.where(valid, 1.0 / np.where(valid, D, 1.0), np.float32(0.0)).astype(np.float32)
    dmin_valid = float(dpt[valid].min())
    dpt = np.where(valid, dpt, np.float32(dmin_valid))
    dmax = float(dpt.max())
    k = coc_px_per_diopter(lens, focus_m, pixel_pitch_m)
    span_px = k * (dmax - dmin_valid)
    n = int(np.clip(math.ceil(span_px / max(layer_px, 1e-3)), 1, max_layers))
    if n == 1:
        idx = np.zeros(D.shape, np.int32)
    else:
        scale = n / (dmax - dmin_valid)
        idx = np.minimum(((dpt - dmin_valid) * scale).astype(np.int32), n - 1)
    F_d = 0.0 if math.isinf(focus_m) else 1.0 / focus_m
    coc = np.abs(dpt - np.float32(F_d)) * np.float32(k)
    counts = np.bincount(idx.ravel(), minlength=n)
    sums = np.bincount(idx.ravel(), weights=coc.ravel(), minlength=n)
    layer_coc = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0).astype(np.float32)
    return idx, layer_coc


def composite_layers(
    img: np.ndarray, idx: np.ndarray, layer_coc: np.ndarray, extend_occluded: bool = True
) -> np.ndarray:
    """Blur and composite depth layers far (index 0) to near.

    img: (H, W, 3) float32; idx: (H, W) int layer of each pixel; layer_coc: (L,) CoC diameters px.
    Returns (H, W, 3) float32.
    """
    H, W = idx.shape
    L = len(layer_coc)
    acc = np.zeros((H, W, 4), np.float32)
    present = np.bincount(idx.ravel(), minlength=L) > 0
    # largest CoC among layers at least 2 nearer than each layer (the occluders worth filling behind)
    coc_present = np.where(present, layer_coc, 0.0)
    max_near = np.zeros(L, np.float32)
    for i in range(L - 3, -1, -1):
        max_near[i] = max(max_near[i + 1], coc_present[i + 2])
    for i in range(L):
        if not present[i]:
            continue
        own_full = idx == i
        rows = np.flatnonzero(own_full.any(axis=1))
        cols = np.flatnonzero(own_full.any(axis=0))
        kern = disk_kernel(float(layer_coc[i]))
        r = kern.shape[0] // 2
        fill_r = int(math.ceil(max_near[i] / 2.0)) + 1 if extend_occluded else 0
        g = r + (fill_r if fill_r > 1 else 0)
        y0, y1 = max(rows[0] - g, 0), min(rows[-1] + g + 1, H)
        x0, x1 = max(cols[0] - g, 0), min(cols[-1] + g + 1, W)
        own = own_full[y0:y1, x0:x1]
        img_c = img[y0:y1, x0:x1]
        rgba = np.zeros((y1 - y0, x1 - x0, 4), np.float32)
        rgba[..., :3] = img_c
        alpha = own.astype(np.float32)
        if fill_r > 1:
            nearer = idx[y0:y1, x0:x1] >= i + 2
            if nearer.any():
                dist, labels = cv2.distanceTransformWithLabels(
                    (~own).astype(np.uint8), cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_PIXEL
                )
                fill = nearer & (dist <= fill_r)
                if fill.any():
                    src = np.flatnonzero(own.ravel())
                    nearest = src[labels[fill] - 1]
                    rgba[..., :3][fill] = img_c.reshape(-1, 3)[nearest]
                    alpha[fill] = 1.0
        rgba[..., :3] *= alpha[..., None]
        rgba[..., 3] = alpha
        if kern.shape[0] > 1:
            rgba = cv2.filter2D(rgba, -1, kern, borderType=cv2.BORDER_CONSTANT)
        a = acc[y0:y1, x0:x1]
        a *= 1.0 - rgba[..., 3:4]
        a += rgba
    out = acc[..., :3] / np.maximum(acc[..., 3:4], 1e-6)
    return np.where(acc[..., 3:4] > 1e-6, out, img)


def render_defocus(
    rgb: np.ndarray,
    depth_m: np.ndarray,
    lens: ThinLens,
    focus_m: float,
    pixel_pitch_m: float,
    *,
    layer_px: float = 1.0,
    max_layers: int = 48,
    extend_occluded: bool = True,
    noise: "SensorNoise | None" = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Thin-lens defocus of a sharp image with its depth, occlusion-aware.

    rgb: (H, W, 3) uint8 or float in [0, 1]; depth_m: (H, W) metres, camera z-depth
    (0/NaN = invalid, treated as the farthest depth); focus_m: focus distance (m, may be inf);
    pixel_pitch_m: metres per pixel on the sensor. Layers are spaced so the CoC changes by at
    most layer_px pixels inside one (up to max_layers). noise: optional SensorNoise applied
    after defocus (needs rng). Returns the same dtype as rgb.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise DfdcapError(f"render_defocus: rgb must be (H, W, 3), got {rgb.shape}")
    if depth_m.shape != rgb.shape[:2]:
        raise DfdcapError(f"render_defocus: depth is {depth_m.shape}, image is {rgb.shape[:2]}")
    img = _to_float(rgb)
    idx, layer_coc = layer_indices(depth_m, lens, focus_m, pixel_pitch_m, layer_px, max_layers)
    out = composite_layers(img, idx, layer_coc, extend_occluded)
    if noise is not None:
        out = noise.apply(out, rng if rng is not None else np.random.default_rng())
    return _from_float(out, rgb)


class SensorNoise:
    """Poisson-Gaussian sensor noise on [0, 1] intensities: var = read_sigma^2 + shot_gain * I."""

    def __init__(self, read_sigma: float = 0.004, shot_gain: float = 0.0004):
        self.read_sigma = float(read_sigma)
        self.shot_gain = float(shot_gain)

    def apply(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """img: (H, W, C) float32 in [0, 1] -> noisy float32 clipped to [0, 1]."""
        sigma = np.sqrt(self.read_sigma**2 + self.shot_gain * np.clip(img, 0, 1))
        n = rng.standard_normal(img.shape, dtype=np.float32)
        return np.clip(img + sigma * n, 0.0, 1.0)


def add_sensor_noise(
    rgb: np.ndarray, rng: np.random.Generator, read_sigma: float = 0.004, shot_gain: float = 0.0004
) -> np.ndarray:
    """Poisson-Gaussian noise; uint8 or float [0, 1] in, same dtype out."""
    return _from_float(SensorNoise(read_sigma, shot_gain).apply(_to_float(rgb), rng), rgb)


# --- textures and random focus stacks -------------------------------------------------


def random_texture(rng: np.random.Generator, h: int, w: int, fine_px: float = 1.0) -> np.ndarray:
    """(h, w, 3) float32 in [0, 1]: periodic (tileable) coloured power-law noise.

    Amplitude falls as 1/f^a (a random in 0.6-1.2) down to a period of about 2*fine_px pixels,
    sometimes with stripes or checks added, so defocus removes visible detail at every scale.
    """
    fy = np.fft.fftfreq(h).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(w).astype(np.float32)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    a = rng.uniform(0.6, 1.2)
    amp = f ** np.float32(-a) * np.exp(-((f * np.float32(fine_px) * 1.6) ** 4))
    amp[0, 0] = 0.0
    fields = []
    for _ in range(3):
        spec = amp * (rng.standard_normal(amp.shape, dtype=np.float32) + 1j * rng.standard_normal(amp.shape, dtype=np.float32))
        g = np.fft.irfft2(spec, s=(h, w)).astype(np.float32)
        fields.append(g / (g.std() + 1e-12))
    out = np.stack(fields, axis=-1)
    # correlate the channels: mostly luminance texture with some colour
    mix = np.full((3, 3), rng.uniform(0.4, 0.8), np.float32) + rng.uniform(-0.3, 0.3, size=(3, 3)).astype(np.float32)
    mix += np.eye(3, dtype=np.float32) * rng.uniform(0.2, 0.6)
    out = out @ mix.T
    out *= rng.uniform(0.12, 0.2) / (out.std() + 1e-6)
    r = rng.random()
    if r < 0.3:  # periodic stripes or checks with integer wave numbers (the texture stays tileable)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        kx = int(rng.integers(0, max(w // int(8 * fine_px), 2)))
        ky = int(rng.integers(1 if kx == 0 else 0, max(h // int(8 * fine_px), 2)))
        ph = np.sin(2 * np.pi * (kx * xx / w + ky * yy / h))
        if r < 0.15:
            ph = ph * np.sin(2 * np.pi * (-ky * xx / w + kx * yy / h))
        out += (np.sign(ph) * rng.uniform(0.1, 0.25))[..., None]
    out += rng.uniform(0.2, 0.8, size=3).astype(np.float32)
    return np.clip(out, 0.0, 1.0)


def _random_depth_map(rng: np.random.Generator, h: int, w: int, near_m: float, far_m: float) -> tuple[np.ndarray, np.ndarray]:
    """A 'dead leaves' depth map: a slanted background and nearer random shapes, with ids.

    Returns (depth_m (h, w) float32, region id (h, w) int32).
    """
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    xn, yn = xx / w - 0.5, yy / h - 0.5
    d_near, d_far = 1.0 / near_m, 1.0 / far_m
    # work in diopters so that shapes are spread evenly in CoC
    bg = rng.uniform(d_far, d_far + 0.3 * (d_near - d_far))
    gx, gy = rng.uniform(-0.3, 0.3, size=2) * (d_near - d_far) * 0.5
    dpt = np.clip(bg + gx * xn + gy * yn, d_far, d_near).astype(np.float32)
    ids = np.zeros((h, w), np.int32)
    n_shapes = int(rng.integers(2, 7))
    levels = np.sort(rng.uniform(d_far, d_near, size=n_shapes))
    for k, lv in enumerate(levels, start=1):
        cx, cy = rng.uniform(-0.4, 0.4, size=2)
        sx, sy = rng.uniform(0.08, 0.35, size=2)
        kind = rng.integers(0, 3)
        if kind == 0:  # ellipse
            m = ((xn - cx) / sx) ** 2 + ((yn - cy) / sy) ** 2 <= 1
        elif kind == 1:  # rotated rectangle
            a = rng.uniform(0, np.pi)
            u = (xn - cx) * np.cos(a) + (yn - cy) * np.sin(a)
            v = -(xn - cx) * np.sin(a) + (yn - cy) * np.cos(a)
            m = (np.abs(u) <= sx) & (np.abs(v) <= sy)
        else:  # half-plane band (a wall edge)
            a = rng.uniform(0, 2 * np.pi)
            m = (xn - cx) * np.cos(a) + (yn - cy) * np.sin(a) > 0
        sgx, sgy = rng.uniform(-0.2, 0.2, size=2) * (d_near - d_far) * 0.3
        val = np.clip(lv + sgx * (xn - cx) + sgy * (yn - cy), d_far, d_near)
        dpt = np.where(m, val, dpt)
        ids = np.where(m, k, ids)
    return (1.0 / dpt).astype(np.float32), ids


def random_focus_stack(
    rng: np.random.Generator,
    size: tuple[int, int] = (256, 256),
    n_frames: int = 5,
    *,
    depth_range_m: tuple[float, float] | None = None,
    lens: ThinLens | None = None,
    pixel_pitch_m: float | None = None,
    max_coc_px: float | None = None,
    noise: bool = True,
) -> dict:
    """A random synthetic focus stack with exact depth and CoC, for pretraining DFF networks.

    size: (H, W). Random dead-leaves scene with multi-scale textures, random lens, focus
    distances increasing and evenly spaced in diopters over the scene's depth range.
    Returns {"stack": (S, H, W, 3) uint8, "focus_m": (S,) float32 increasing,
    "depth_m": (H, W) float32, "coc_px": (S, H, W) float32, "lens": ThinLens, "pixel_pitch_m": float}.
    """
    H, W = int(size[0]), int(size[1])
    if H < 8 or W < 8 or n_frames < 1:
        raise DfdcapError(f"random_focus_stack: need size >= 8x8 and n_frames >= 1, got {size}, {n_frames}")
    if depth_range_m is None:
        near = float(rng.uniform(0.1, 0.6))
        far = float(min(near * rng.uniform(2.0, 8.0), 3.0))
        far = max(far, near * 1.5)
    else:
        near, far = map(float, depth_range_m)
    if lens is None:
        lens = ThinLens(float(rng.uniform(3.5e-3, 8e-3)), float(rng.uniform(1.4, 2.8)))
    depth, ids = _random_depth_map(rng, H, W, near, far)
    # focus evenly in diopters inside the depth range, with a small random offset
    dn, df = 1.0 / near, 1.0 / far
    margin = 0.1 * (dn - df)
    f_d = np.linspace(dn - margin * rng.uniform(0, 1), df + margin * rng.uniform(0, 1), n_frames) if n_frames > 1 else np.array([(dn + df) / 2])
    focus_m = (1.0 / f_d).astype(np.float64)
    focus_m = np.maximum(focus_m, lens.focal_length_m * 1.5)
    if pixel_pitch_m is None:
        target = float(rng.uniform(6.0, 16.0)) if max_coc_px is None else float(max_coc_px)
        cmax = max(float(np.nanmax(lens.coc_m(np.array([near, far]), F))) for F in focus_m)
        pixel_pitch_m = cmax / target if cmax > 0 else 1.4e-6
    # texture: one per region, blended by region id
    tex = np.empty((H, W, 3), np.float32)
    for k in range(int(ids.max()) + 1):
        m = ids == k
        if m.any():
            t = random_texture(rng, H, W, fine_px=float(rng.uniform(1.0, 2.0)))
            tex[m] = t[m]
    stack = np.empty((n_frames, H, W, 3), np.uint8)
    coc = np.empty((n_frames, H, W), np.float32)
    sn = SensorNoise(read_sigma=float(rng.uniform(0.002, 0.01)), shot_gain=float(rng.uniform(0, 0.001))) if noise else None
    for s, F in enumerate(focus_m):
        img = render_defocus(tex, depth, lens, float(F), pixel_pitch_m, layer_px=1.0, max_layers=24, noise=sn, rng=rng)
        stack[s] = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
        coc[s] = lens.coc_px(depth, F, pixel_pitch_m).astype(np.float32)
    return {
        "stack": stack,
        "focus_m": focus_m.astype(np.float32),
        "depth_m": depth,
        "coc_px": coc,
        "lens": lens,
        "pixel_pitch_m": float(pixel_pitch_m),
    }
