"""Classical depth from focus: the sharpest frame per pixel, refined between frames.

Focus measure: the modified Laplacian |2I - I(x-1) - I(x+1)| + |2I - I(y-1) - I(y+1)|
summed over a window (sum-modified-Laplacian, Nayar and Nakagawa 1994). The best frame per
pixel is refined by a parabola through the measures of it and its two neighbours, and the
fractional frame index is mapped to a focus distance by linear interpolation in diopters
(focus schedules are evenly spaced in diopters, and the CoC is linear in 1/depth).
"""

from __future__ import annotations

import cv2
import numpy as np

from dfdcap.errors import ModelError


def focus_measure(gray: np.ndarray, window: int = 9) -> np.ndarray:
    """(H, W) float image -> (H, W) sum-modified-Laplacian over a window x window box."""
    g = np.asarray(gray, dtype=np.float32)
    kx = np.array([[-1.0, 2.0, -1.0]], dtype=np.float32)
    mlx = np.abs(cv2.filter2D(g, -1, kx, borderType=cv2.BORDER_REFLECT))
    mly = np.abs(cv2.filter2D(g, -1, kx.T, borderType=cv2.BORDER_REFLECT))
    return cv2.boxFilter(mlx + mly, -1, (window, window), normalize=True, borderType=cv2.BORDER_REFLECT)


def to_gray(stack: np.ndarray) -> np.ndarray:
    """(S, H, W, 3) uint8/float or (S, 3, H, W) float -> (S, H, W) float32 in [0, 1]."""
    a = np.asarray(stack)
    if a.ndim != 4:
        raise ModelError(f"classical DFF: stack must be S x H x W x 3 (or S x 3 x H x W), got {a.shape}")
    if a.shape[1] == 3 and a.shape[-1] != 3:
        a = np.moveaxis(a, 1, -1)
    if a.shape[-1] != 3:
        raise ModelError(f"classical DFF: stack must have 3 colour channels, got {a.shape}")
    a = a.astype(np.float32)
    if np.asarray(stack).dtype == np.uint8:
        a /= 255.0
    return a @ np.array([0.299, 0.587, 0.114], dtype=np.float32)


def best_focus_index(measures: np.ndarray) -> np.ndarray:
    """(S, H, W) focus measures -> (H, W) fractional frame index of the peak (parabolic fit)."""
    s = measures.shape[0]
    i = np.argmax(measures, axis=0)
    if s < 3:
        return i.astype(np.float32)
    ic = np.clip(i, 1, s - 2)
    take = lambda k: np.take_along_axis(measures, k[None], axis=0)[0]  # noqa: E731
    fm, f0, fp = take(ic - 1), take(ic), take(ic + 1)
    denom = fm - 2 * f0 + fp
    with np.errstate(divide="ignore", invalid="ignore"):
        off = np.where(denom < 0, 0.5 * (fm - fp) / denom, 0.0)
    off = np.clip(np.nan_to_num(off), -0.5, 0.5)
    inner = (i > 0) & (i < s - 1)
    return np.where(inner, i + off, i).astype(np.float32)


def classical_dff(stack: np.ndarray, focus_m: np.ndarray, window: int = 9) -> np.ndarray:
    """Depth (H, W) float32 metres from a stack (S, H, W, 3) and its focus distances (S,) metres.

    Depth can only fall inside the swept focus range: pixels sharpest in the first or last
    frame get that frame's focus distance. Frames are sorted by focus first: the sub-frame fit
    reads each frame's neighbours in the sweep, so any frame order gives the same depth.
    """
    focus_m = np.asarray(focus_m, dtype=np.float64).reshape(-1)
    gray = to_gray(stack)
    if gray.shape[0] != focus_m.size:
        raise ModelError(f"classical DFF: {gray.shape[0]} frames but {focus_m.size} focus distances")
    if not np.all(focus_m > 0):
        raise ModelError(f"classical DFF: focus distances must be > 0 m, got {focus_m}")
    order = np.argsort(focus_m, kind="stable")
    gray, focus_m = gray[order], focus_m[order]
    measures = np.stack([focus_measure(g, window) for g in gray])
    idx = best_focus_index(measures)
    diopters = np.interp(idx, np.arange(focus_m.size), 1.0 / focus_m)
    return (1.0 / diopters).astype(np.float32)
