"""The DDFF-12 depth metrics on masked pixels (pure numpy).

Definitions follow the DDFF-12 benchmark's evaluation (Hazirbas et al.):
MSE and RMS in m^2 / m, log RMS on natural logs, AbsRel = mean |p - g| / g,
SqrRel = mean (p - g)^2 / g, accuracy delta<t = % of pixels with max(p/g, g/p) < t for
t = 1.25, 1.25^2, 1.25^3, badpix = % of pixels with |p - g| > 0.07 m, bumpiness =
100 x mean of min(0.05, ||Hessian(p - g)||_F) with Scharr derivatives (4D light-field
benchmark). The thesis's "accuracy" (94.98 % for LSTM-DDFF on synthetic data) is the
delta<1.25 figure; the table names it so.

Over a data set the sums are pooled over all valid pixels (pixel-weighted means).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

BADPIX_THRESHOLD_M = 0.07
BUMPINESS_CLIP = 0.05
DELTAS = (1.25, 1.25**2, 1.25**3)

METRIC_NAMES = ("mse", "rms", "log_rms", "abs_rel", "sqr_rel", "delta1", "delta2", "delta3", "badpix", "bumpiness")
METRIC_LABELS = {
    "mse": "MSE (m²)",
    "rms": "RMS (m)",
    "log_rms": "log RMS",
    "abs_rel": "AbsRel",
    "sqr_rel": "SqrRel (m)",
    "delta1": "δ<1.25 % (thesis accuracy)",
    "delta2": "δ<1.25² %",
    "delta3": "δ<1.25³ %",
    "badpix": "badpix(0.07 m) %",
    "bumpiness": "bumpiness",
}

_SCHARR_Y = np.array([[3, 10, 3], [0, 0, 0], [-3, -10, -3]], dtype=np.float64) / 32.0
_SCHARR_X = _SCHARR_Y.T


def hessian_norm(diff: np.ndarray) -> np.ndarray:
    """(H, W) -> (H, W) Frobenius norm of the Hessian from repeated Scharr derivatives."""
    d = np.asarray(diff, dtype=np.float64)
    dx = ndimage.correlate(d, _SCHARR_X, mode="nearest")
    dy = ndimage.correlate(d, _SCHARR_Y, mode="nearest")
    dxx = ndimage.correlate(dx, _SCHARR_X, mode="nearest")
    dxy = ndimage.correlate(dx, _SCHARR_Y, mode="nearest")
    dyx = ndimage.correlate(dy, _SCHARR_X, mode="nearest")
    dyy = ndimage.correlate(dy, _SCHARR_Y, mode="nearest")
    return np.sqrt(dxx**2 + dxy**2 + dyx**2 + dyy**2)


def valid_mask(gt_m: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Pixels with finite, positive ground truth (and mask, if given)."""
    m = np.isfinite(gt_m) & (np.nan_to_num(gt_m) > 0)
    return m if mask is None else m & np.asarray(mask, dtype=bool)


@dataclass
class MetricAccumulator:
    """Pools the metric sums over many images; `result()` gives the pixel-weighted metrics."""

    sums: dict[str, float] = field(default_factory=lambda: {k: 0.0 for k in METRIC_NAMES if k != "rms"})
    n: int = 0

    def add(self, pred_m: np.ndarray, gt_m: np.ndarray, mask: np.ndarray | None = None) -> None:
        """pred_m, gt_m: (H, W) metres; mask: (H, W) bool or None. Predictions <= 0 are clipped to 1 mm."""
        pred_m = np.asarray(pred_m, dtype=np.float64)
        gt_m = np.asarray(gt_m, dtype=np.float64)
        if pred_m.shape != gt_m.shape or pred_m.ndim != 2:
            raise ValueError(f"pred and ground truth must be equal (H, W), got {pred_m.shape} and {gt_m.shape}")
        m = valid_mask(gt_m, mask)
        if not m.any():
            return
        p = np.clip(np.nan_to_num(pred_m, nan=1e-3), 1e-3, None)
        pv, gv = p[m], gt_m[m]
        err = pv - gv
        ratio = np.maximum(pv / gv, gv / pv)
        s = self.sums
        s["mse"] += float(np.sum(err**2))
        s["log_rms"] += float(np.sum((np.log(pv) - np.log(gv)) ** 2))
        s["abs_rel"] += float(np.sum(np.abs(err) / gv))
        s["sqr_rel"] += float(np.sum(err**2 / gv))
        for i, t in enumerate(DELTAS, 1):
            s[f"delta{i}"] += float(np.sum(ratio < t))
        s["badpix"] += float(np.sum(np.abs(err) > BADPIX_THRESHOLD_M))
        # curvature of the error uses every pixel with ground truth (the mask only selects which
        # pixels count), so a mask edge does not look like a bump
        diff = np.where(valid_mask(gt_m), p - np.nan_to_num(gt_m), 0.0)
        s["bumpiness"] += float(np.sum(np.minimum(hessian_norm(diff), BUMPINESS_CLIP)[m]))
        self.n += int(m.sum())

    def result(self) -> dict[str, float]:
        """Metric name -> value; percentages for delta*, badpix and bumpiness (x100). NaN if no pixels."""
        if self.n == 0:
            return {k: float("nan") for k in METRIC_NAMES}
        s, n = self.sums, self.n
        r = {
            "mse": s["mse"] / n,
            "rms": float(np.sqrt(s["mse"] / n)),
            "log_rms": float(np.sqrt(s["log_rms"] / n)),
            "abs_rel": s["abs_rel"] / n,
            "sqr_rel": s["sqr_rel"] / n,
        }
        for i in (1, 2, 3):
            r[f"delta{i}"] = 100.0 * s[f"delta{i}"] / n
        r["badpix"] = 100.0 * s["badpix"] / n
        r["bumpiness"] = 100.0 * s["bumpiness"] / n
        return {k: r[k] for k in METRIC_NAMES}


def depth_metrics(pred_m: np.ndarray, gt_m: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """The metric set for one (H, W) depth map against its ground truth on masked pixels."""
    acc = MetricAccumulator()
    acc.add(pred_m, gt_m, mask)
    return acc.result()
