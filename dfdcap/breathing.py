"""Focus breathing: the phone camera's intrinsics as a function of its focus setting (diopters).

A lens focused at distance d forms its image at v = 1 / (1/f - 1/d) = f / (1 - f D) (D = 1/d
diopters), so the image scales by v(D) / v(D_ref) = (1 - f D_ref) / (1 - f D) against the
reference focus D_ref. Written with k = f / (1 - f D_ref) this is

    s(D) = 1 / (1 - k (D - D_ref))        (thin lens: 1/s is linear in diopters)

and k ("scale_per_diopter") is the first-order slope ds/dD at D_ref (s ~ 1 + k (D - D_ref)).
The image scales about the principal point, which may drift linearly:
    K(D) = [[s fx, s skew, cx + cx_per_diopter (D - D_ref)], [0, s fy, cy + cy_per_diopter (D - D_ref)], [0, 0, 1]]
with K(D_ref) the calibrated K. Distortion is a function of the normalised image coordinates, so
it scales with the image and its coefficients stay the same. Between two focus settings the
pixel mapping is therefore exactly the affine map K(D_b) K(D_a)^-1 (`pixel_map`).

Units: diopters (1/m; 0 = infinity), pixels of the calibrated image size.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from dfdcap.cameras import CameraModel
from dfdcap.errors import CalibrationError


@dataclass(frozen=True)
class FocusModel:
    """K(focus) of a breathing lens around the calibrated K (valid at ref_diopters)."""

    ref_diopters: float
    scale_per_diopter: float
    cx_per_diopter: float = 0.0
    cy_per_diopter: float = 0.0
    scale_per_diopter_std: float = 0.0
    cx_per_diopter_std: float = 0.0
    cy_per_diopter_std: float = 0.0
    diopter_range: tuple[float, float] = (0.0, 0.0)
    model: str = "thin_lens"

    def scale(self, focus_diopters) -> np.ndarray | float:
        """Magnification s(D) against the reference focus (1 at ref_diopters)."""
        d = np.asarray(focus_diopters, np.float64) - self.ref_diopters
        s = 1.0 / (1.0 - self.scale_per_diopter * d)
        return float(s) if np.ndim(s) == 0 else s

    def K_at(self, K_ref: np.ndarray, focus_diopters: float) -> np.ndarray:
        """(3, 3) intrinsics at focus_diopters from the calibrated K_ref (at ref_diopters)."""
        K = np.array(K_ref, np.float64, copy=True)
        s = self.scale(focus_diopters)
        dd = float(focus_diopters) - self.ref_diopters
        K[0, :2] *= s
        K[1, 1] *= s
        K[0, 2] += self.cx_per_diopter * dd
        K[1, 2] += self.cy_per_diopter * dd
        return K

    def camera_at(self, camera: CameraModel, focus_diopters: float) -> CameraModel:
        """The calibrated camera moved to another focus setting (same distortion and size)."""
        return CameraModel(self.K_at(camera.K, focus_diopters), camera.dist.copy(), camera.size)

    def pixel_map(self, K_ref: np.ndarray, from_diopters: float, to_diopters: float) -> np.ndarray:
        """(3, 3) affine map of pixels seen at focus `from_diopters` to where focus `to_diopters` sees them."""
        return self.K_at(K_ref, to_diopters) @ np.linalg.inv(self.K_at(K_ref, from_diopters))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["diopter_range"] = [float(v) for v in self.diopter_range]
        return {k: (float(v) if isinstance(v, (float, np.floating)) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict, where: str = "focus_model") -> "FocusModel":
        try:
            return cls(
                float(d["ref_diopters"]), float(d["scale_per_diopter"]),
                float(d.get("cx_per_diopter", 0.0)), float(d.get("cy_per_diopter", 0.0)),
                float(d.get("scale_per_diopter_std", 0.0)), float(d.get("cx_per_diopter_std", 0.0)),
                float(d.get("cy_per_diopter_std", 0.0)), tuple(float(v) for v in d.get("diopter_range", (0.0, 0.0))),
                str(d.get("model", "thin_lens")),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise CalibrationError(f"{where}: expected ref_diopters and scale_per_diopter numbers, got {d!r} ({e})") from None


def thin_lens_model(focal_length_m: float, ref_diopters: float = 0.0, cx_per_diopter: float = 0.0,
                    cy_per_diopter: float = 0.0) -> FocusModel:
    """The exact breathing of an ideal thin lens of focal length f: k = f / (1 - f D_ref)."""
    f = float(focal_length_m)
    return FocusModel(float(ref_diopters), f / (1.0 - f * float(ref_diopters)), float(cx_per_diopter), float(cy_per_diopter))


def grid_rms_px(H_a: np.ndarray, H_b: np.ndarray, size: tuple[int, int], n: int = 16) -> float:
    """RMS distance (px) between where two 3x3 pixel maps send an n x n grid over an image of size (W, H)."""
    W, Hh = size
    u, v = np.meshgrid(np.linspace(0, W - 1, n), np.linspace(0, Hh - 1, n))
    p = np.stack([u.ravel(), v.ravel(), np.ones(u.size)])
    a, b = np.asarray(H_a, np.float64) @ p, np.asarray(H_b, np.float64) @ p
    d = a[:2] / a[2] - b[:2] / b[2]
    return float(np.sqrt(np.mean(np.sum(d * d, axis=0))))
