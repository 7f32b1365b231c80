"""Intrinsics of one camera from board views (OpenCV model, optional rational model).

Pure numerics: arrays in, a frozen result out. Parameter uncertainty comes from
cv2.calibrateCameraExtended (standard deviations of the intrinsics, in the units of each
parameter: pixels for fx, fy, cx, cy; unitless for distortion coefficients).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from dfdcap.calib.distortion import DEFAULT_MODEL, get_model
from dfdcap.cameras import CameraModel
from dfdcap.errors import CalibrationError

# order of cv2.calibrateCameraExtended's stdDeviationsIntrinsics after fx, fy, cx, cy
_DIST_NAMES = ("k1", "k2", "p1", "p2", "k3", "k4", "k5", "k6", "s1", "s2", "s3", "s4", "tau_x", "tau_y")

MAD_TO_SIGMA = 1.4826
OUTLIER_RULE = (
    "a view is an outlier when its RMS reprojection error exceeds max(3 x median, median + 3 x 1.4826 x MAD) "
    "of all views' RMS errors (per camera; for stereo, in either camera); outliers are dropped and the fit repeated "
    "until none is left (at most 5 rounds)"
)


@dataclass(frozen=True)
class IntrinsicsFit:
    """Result of one camera's calibration.

    per_view_px: (V,) RMS reprojection error of each view (pixels), in the order of `names`;
    rvecs, tvecs: (V, 3) board poses (Rodrigues, board units) camera_from_board;
    std: standard deviations {"fx","fy","cx","cy": px, "dist": [one per coefficient]}.
    """

    camera: CameraModel
    rms_px: float
    per_view_px: np.ndarray
    names: list[str]
    rvecs: np.ndarray
    tvecs: np.ndarray
    std: dict = field(default_factory=dict)


def calibrate_intrinsics(
    object_points: Sequence[np.ndarray],
    image_points: Sequence[np.ndarray],
    size: tuple[int, int],
    names: Sequence[str],
    model: str = DEFAULT_MODEL,
) -> IntrinsicsFit:
    """Fit K and distortion to V views under a distortion model (dfdcap.calib.distortion.MODELS).

    object_points: V arrays (N_i, 3) float32 board points; image_points: V arrays (N_i, 2) float32
    pixels; size: (width, height). Needs V >= 3.
    """
    m = get_model(model)
    import cv2

    if len(object_points) != len(image_points) or len(object_points) != len(names):
        raise CalibrationError("calibrate_intrinsics: object points, image points and names differ in length")
    if len(object_points) < 3:
        raise CalibrationError(f"intrinsics need at least 3 views, got {len(object_points)}")
    obj = [np.ascontiguousarray(o, np.float32).reshape(-1, 1, 3) for o in object_points]
    img = [np.ascontiguousarray(i, np.float32).reshape(-1, 1, 2) for i in image_points]
    crit = (cv2.TERM_CRITERIA_COUNT + cv2.TERM_CRITERIA_EPS, 100, 1e-12)
    try:
        rms, K, dist, rvecs, tvecs, std_i, _std_e, per_view = cv2.calibrateCameraExtended(
            obj, img, tuple(int(s) for s in size), None, None, flags=m.flags(), criteria=crit
        )
    except cv2.error as e:
        raise CalibrationError(f"OpenCV could not calibrate from {len(obj)} views: {e.err}") from e
    dist = dist.ravel()[: m.n_coeffs]  # OpenCV 5 may hand back all 14 slots
    std_i = std_i.ravel()
    std = {
        "fx": float(std_i[0]), "fy": float(std_i[1]), "cx": float(std_i[2]), "cy": float(std_i[3]),
        "dist": [float(x) for x in std_i[4: 4 + dist.size]],
    }
    return IntrinsicsFit(
        camera=CameraModel(K, dist, tuple(int(s) for s in size)),
        rms_px=float(rms),
        per_view_px=np.asarray(per_view, np.float64).ravel(),
        names=list(names),
        rvecs=np.asarray(rvecs, np.float64).reshape(-1, 3),
        tvecs=np.asarray(tvecs, np.float64).reshape(-1, 3),
        std=std,
    )


def outlier_views(errors_px: np.ndarray) -> np.ndarray:
    """Boolean (V,) mask of outlier views under OUTLIER_RULE.

    errors_px: (V,) or (V, C) per-view RMS errors (one column per camera); a view is an outlier
    when it is one in any column. Views are never flagged when fewer than 4 are given.
    """
    e = np.asarray(errors_px, np.float64)
    if e.ndim == 1:
        e = e[:, None]
    if e.shape[0] < 4:
        return np.zeros(e.shape[0], bool)
    med = np.median(e, axis=0)
    mad = np.median(np.abs(e - med), axis=0)
    threshold = np.maximum(3.0 * med, med + 3.0 * MAD_TO_SIGMA * mad)
    return np.any(e > threshold, axis=1)


def outlier_threshold(errors_px: np.ndarray) -> float:
    """The threshold of OUTLIER_RULE for one column of per-view errors (pixels)."""
    e = np.asarray(errors_px, np.float64).ravel()
    if e.size == 0:
        return float("nan")
    med = float(np.median(e))
    mad = float(np.median(np.abs(e - med)))
    return max(3.0 * med, med + 3.0 * MAD_TO_SIGMA * mad)


def reprojection_residuals(fit: IntrinsicsFit, object_points: Sequence[np.ndarray],
                           image_points: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Per view (N_i, 2) residuals projected - observed (pixels) under the fitted model and poses."""
    import cv2

    out = []
    for o, i, r, t in zip(object_points, image_points, fit.rvecs, fit.tvecs):
        proj, _ = cv2.projectPoints(np.asarray(o, np.float64).reshape(-1, 1, 3), r, t, fit.camera.K, fit.camera.dist)
        out.append(proj.reshape(-1, 2) - np.asarray(i, np.float64).reshape(-1, 2))
    return out
