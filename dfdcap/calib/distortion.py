"""Which lens distortion model a camera's board views support, chosen by held-out error.

A model with more coefficients always fits the views it was fitted to better (training RMS only
falls), but on a low-resolution camera the higher-order terms (k3 and beyond) fit the corners'
noise; the stereo rotation then absorbs that error. So each candidate is scored by K-fold
cross-validation over views: fit the intrinsics on the other folds, then place each held-out
view with solvePnP (its pose is free, the intrinsics are not) and measure its reprojection
RMS. The chosen model is the simplest one whose held-out error lies within one standard error
of the best (the one-standard-error rule), so a fancier model must earn its terms. The standard
error is that of the per-view DIFFERENCES to the best model (a paired comparison: every
candidate is scored on the same held-out views, so how hard a view is cancels out). An unpaired
rule is too lenient: on the simulated rig it let k1-k2 stand in for a lens with 0.0005 of
tangential distortion, and the stereo rotation absorbed the misfit (0.078 deg instead of 0.006).

Pure numerics: arrays in, a frozen result out.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from dfdcap.errors import CalibrationError


@dataclass(frozen=True)
class DistortionModel:
    """A named subset of OpenCV's distortion coefficients.

    free: indices into OpenCV's coefficient vector (k1 k2 p1 p2 k3 k4 k5 k6 s1 s2 s3 s4) that
    the fit may move; n_coeffs: the length of the stored vector (5, 8 or 12); complexity: the
    number of free coefficients (the tie-breaker of the one-standard-error rule).
    """

    name: str
    free: tuple[int, ...]
    n_coeffs: int

    @property
    def complexity(self) -> int:
        return len(self.free)

    def flags(self) -> int:
        """cv2.calibrateCamera flags that leave exactly `free` to the fit."""
        import cv2

        flags = 0
        if self.n_coeffs >= 8:
            flags |= cv2.CALIB_RATIONAL_MODEL
        if self.n_coeffs >= 12:
            flags |= cv2.CALIB_THIN_PRISM_MODEL
        if 2 not in self.free:
            flags |= cv2.CALIB_ZERO_TANGENT_DIST
        for idx, flag in ((0, cv2.CALIB_FIX_K1), (1, cv2.CALIB_FIX_K2), (4, cv2.CALIB_FIX_K3)):
            if idx not in self.free:
                flags |= flag
        return flags

    def mask(self) -> np.ndarray:
        """(n_coeffs,) bool: which stored coefficients are free."""
        m = np.zeros(self.n_coeffs, bool)
        m[list(self.free)] = True
        return m


MODELS: dict[str, DistortionModel] = {
    m.name: m
    for m in (
        DistortionModel("k1k2", (0, 1), 5),
        DistortionModel("k1k2k3", (0, 1, 4), 5),
        DistortionModel("k1k2+tangential", (0, 1, 2, 3), 5),
        DistortionModel("k1k2k3+tangential", (0, 1, 2, 3, 4), 5),  # OpenCV's default
        DistortionModel("rational", (0, 1, 2, 3, 4, 5, 6, 7), 8),
        DistortionModel("rational+thin-prism", tuple(range(12)), 12),
    )
}
DEFAULT_MODEL = "k1k2k3+tangential"
CANDIDATES = tuple(MODELS)
SELECTION_RULE = (
    "K-fold cross-validation over views (fold = view index mod K, K = min(5, views)); a held-out view is placed "
    "by solvePnP with the other folds' intrinsics; score = RMS of all held-out corners; chosen: the fewest free "
    "coefficients whose per-view mean square error exceeds the best model's by at most one standard error of "
    "the paired per-view differences"
)


def get_model(name: str) -> DistortionModel:
    try:
        return MODELS[name]
    except KeyError:
        raise CalibrationError(f"unknown distortion model {name!r}; use auto or one of {', '.join(MODELS)}") from None


@dataclass(frozen=True)
class ModelScore:
    """One candidate: held-out RMS (px) and its standard error, training RMS (px) on all views;
    per_view_ms: (V,) held-out mean square error of each view (px²), for paired comparisons;
    failed: why the candidate has no held-out score (cv_rms_px is then inf), "" when it has one."""

    name: str
    cv_rms_px: float
    cv_se_px: float
    train_rms_px: float
    complexity: int
    per_view_ms: tuple[float, ...] = ()
    failed: str = ""


@dataclass(frozen=True)
class ModelSelection:
    chosen: str
    scores: tuple[ModelScore, ...]
    folds: int
    rule: str = SELECTION_RULE

    def to_dict(self) -> dict:
        return {
            "chosen": self.chosen,
            "folds": self.folds,
            "rule": self.rule,
            "candidates": {s.name: _score_dict(s) for s in self.scores},
        }


def _score_dict(s: ModelScore) -> dict:
    """A candidate's scores for the calibration file: a candidate without a held-out score has null
    there and says why ("failed"); JSON has no Infinity (jq, JavaScript and most readers refuse it)."""
    def number(x: float) -> float | None:
        return x if math.isfinite(x) else None

    d = {"cv_rms_px": number(s.cv_rms_px), "cv_se_px": number(s.cv_se_px), "train_rms_px": number(s.train_rms_px),
         "free_coefficients": s.complexity}
    return d | ({"failed": s.failed} if s.failed else {})


def fit_intrinsics_raw(obj: Sequence[np.ndarray], img: Sequence[np.ndarray], size: tuple[int, int], model: DistortionModel):
    """cv2.calibrateCamera with the model's flags: (rms, K, dist (n_coeffs,)); None when OpenCV fails."""
    import cv2

    crit = (cv2.TERM_CRITERIA_COUNT + cv2.TERM_CRITERIA_EPS, 100, 1e-12)
    try:
        rms, K, dist, _r, _t = cv2.calibrateCamera(
            [np.asarray(o, np.float32).reshape(-1, 1, 3) for o in obj],
            [np.asarray(i, np.float32).reshape(-1, 1, 2) for i in img],
            tuple(int(s) for s in size), None, None, flags=model.flags(), criteria=crit,
        )
    except cv2.error:
        return None
    d = np.zeros(model.n_coeffs)
    flat = dist.ravel()[: model.n_coeffs]
    d[: flat.size] = flat
    if not (np.all(np.isfinite(K)) and np.all(np.isfinite(d))):
        return None
    return float(rms), K, d


def maps_image_one_to_one(K: np.ndarray, dist: np.ndarray, size: tuple[int, int]) -> bool:
    """Whether the radial part of the lens model maps rays to image radii one-to-one out to the image's
    corners: r_d(r) = r (1 + k1 r² + k2 r⁴ + k3 r⁶) / (1 + k4 r² + k5 r⁴ + k6 r⁶) rises, with a positive
    denominator, until it reaches the farthest corner's normalised radius. A lens does; a fit whose
    terms cancel (rational k1..k3 ~ k4..k6, ~10 each, on a distortion-free VGA lens: a pole inside the
    image) matches the board's corners but sends the rest of the image, and a stereo fit, astray.
    (Tangential and thin-prism terms are left out: they are small next to the radial ones.)"""
    w, h = size
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    r_corner = max(np.hypot((u - cx) / fx, (v - cy) / fy) for u in (0, w - 1) for v in (0, h - 1))
    c = np.zeros(8)
    d = np.ravel(dist)[:8]
    c[: d.size] = d
    k1, k2, p1, p2, k3, k4, k5, k6 = c
    r = np.linspace(0.0, 3.0 * r_corner, 3001)
    r2 = r * r
    den = 1 + r2 * (k4 + r2 * (k5 + r2 * k6))
    g = r * (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / np.where(den > 0, den, 1.0)
    bad = (den <= 0)[1:] | (np.diff(g) <= 0)
    reach = np.nonzero(g >= r_corner)[0]
    end = reach[0] if reach.size else len(r) - 1  # never reached (a strong barrel lens): what was sampled must hold
    return not bool(bad[:end].any())


def held_out_sq_errors(obj: np.ndarray, img: np.ndarray, K: np.ndarray, dist: np.ndarray) -> np.ndarray | None:
    """Squared reprojection errors (N,) px² of one view placed by solvePnP under fixed intrinsics."""
    import cv2

    o = np.asarray(obj, np.float64).reshape(-1, 1, 3)
    i = np.asarray(img, np.float64).reshape(-1, 1, 2)
    try:
        ok, r, t = cv2.solvePnP(o, i, K, dist, flags=cv2.SOLVEPNP_ITERATIVE)
        if not ok:
            return None
        r, t = cv2.solvePnPRefineLM(o, i, K, dist, r, t)
        proj, _ = cv2.projectPoints(o, r, t, K, dist)
    except cv2.error:
        return None
    e = (proj.reshape(-1, 2) - i.reshape(-1, 2)) ** 2
    s = e.sum(axis=1)
    return s if np.all(np.isfinite(s)) else None


def cross_validate(obj: Sequence[np.ndarray], img: Sequence[np.ndarray], size: tuple[int, int],
                   model: DistortionModel, folds: int) -> np.ndarray | None:
    """(V,) held-out mean square error (px²) of every view under `model`, in view order; None when a fold fails."""
    from concurrent.futures import ThreadPoolExecutor

    v = len(obj)

    def fold(k: int) -> list[float] | None:
        test = [j for j in range(v) if j % folds == k]
        train = [j for j in range(v) if j % folds != k]
        fit = fit_intrinsics_raw([obj[j] for j in train], [img[j] for j in train], size, model)
        if fit is None:
            return None
        _, K, d = fit
        out = []
        for j in test:
            sq = held_out_sq_errors(obj[j], img[j], K, d)
            if sq is None:
                return None
            out.append(float(sq.mean()))
        return out

    with ThreadPoolExecutor(max_workers=min(folds, os.cpu_count() or 1)) as pool:  # OpenCV releases the GIL
        results = list(pool.map(fold, range(folds)))
    if any(r is None for r in results):
        return None
    ms = np.empty(v)
    for k, r in enumerate(results):
        ms[[j for j in range(v) if j % folds == k]] = r
    return ms


def _se(x: np.ndarray) -> float:
    return float(np.std(x, ddof=1) / np.sqrt(len(x))) if len(x) > 1 else 0.0


def select_model(obj: Sequence[np.ndarray], img: Sequence[np.ndarray], size: tuple[int, int],
                 candidates: Sequence[str] = CANDIDATES, max_folds: int = 5) -> ModelSelection:
    """Score every candidate by held-out error and pick one (see the module docstring).

    obj: V arrays (N_i, 3) board points; img: V arrays (N_i, 2) pixels; size: (width, height).
    A candidate with more free coefficients than a training fold's views can pin is skipped.
    """
    v = len(obj)
    if v < 4:
        raise CalibrationError(f"distortion model selection needs at least 4 views, got {v}")
    folds = min(max_folds, v)
    min_points = min(len(o) for o in obj)
    scores = []
    for name in candidates:
        m = get_model(name)
        # each training fold must hold clearly more equations than unknowns (4 + free + 6 per view)
        n_train = v - -(-v // folds)
        if 2 * min_points * n_train < 3 * (4 + m.complexity + 6 * n_train):
            continue
        full = fit_intrinsics_raw(obj, img, size, m)
        if full is None:
            continue
        if not maps_image_one_to_one(full[1], full[2], size):  # its terms cancel: no lens, whatever its held-out error
            scores.append(ModelScore(name, float("inf"), float("inf"), full[0], m.complexity,
                                     failed="its terms cancel: does not map the image one-to-one"))
            continue
        ms = cross_validate(obj, img, size, m, folds)
        if ms is None or not np.all(np.isfinite(ms)):
            scores.append(ModelScore(name, float("inf"), float("inf"), full[0], m.complexity,
                                     failed="a cross-validation fold could not be fitted or placed"))
            continue
        rms = float(np.sqrt(ms.mean()))
        # standard error of the mean square, carried to the RMS (d sqrt(x) = dx / (2 sqrt(x)))
        scores.append(ModelScore(name, rms, _se(ms) / (2 * rms) if rms > 0 else 0.0, full[0], m.complexity,
                                 tuple(float(e) for e in ms)))
    finite = [s for s in scores if np.isfinite(s.cv_rms_px)]
    if not finite:
        raise CalibrationError(f"no distortion model could be fitted to the {v} views (too few corners or degenerate views)")
    best = min(finite, key=lambda s: s.cv_rms_px)
    best_ms = np.asarray(best.per_view_ms)

    def close_to_best(s: ModelScore) -> bool:
        d = np.asarray(s.per_view_ms) - best_ms
        return float(d.mean()) <= _se(d)

    chosen = min((s for s in finite if close_to_best(s)), key=lambda s: (s.complexity, s.cv_rms_px))
    return ModelSelection(chosen.name, tuple(scores), folds)
