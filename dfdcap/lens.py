"""Thin-lens model and focus schedules.

All distances in metres unless the name says otherwise; focus as the phone speaks it is in
diopters (1/m, 0 = infinity). CoC diameter: c = A f |D - F| / (D (F - f)), A = f / N.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from dfdcap.errors import DfdcapError


def diopters_to_m(diopters: np.ndarray | float) -> np.ndarray | float:
    """Focus distance in metres from diopters; 0 diopters is infinity."""
    d = np.asarray(diopters, dtype=np.float64)
    with np.errstate(divide="ignore"):
        m = np.where(d > 0, 1.0 / np.where(d > 0, d, 1.0), np.inf)
    return float(m) if m.ndim == 0 else m


def m_to_diopters(distance_m: np.ndarray | float) -> np.ndarray | float:
    """Diopters from a distance in metres; infinity is 0 diopters."""
    m = np.asarray(distance_m, dtype=np.float64)
    d = np.where(np.isinf(m), 0.0, 1.0 / np.where(np.isinf(m), 1.0, m))
    return float(d) if d.ndim == 0 else d


@dataclass(frozen=True)
class ThinLens:
    """A thin lens: focal length and f-number (aperture diameter A = f / N)."""

    focal_length_m: float
    f_number: float

    def __post_init__(self) -> None:
        if not (self.focal_length_m > 0 and self.f_number > 0):
            raise DfdcapError(
                f"lens: focal length and f-number must be positive, got "
                f"{self.focal_length_m} m and f/{self.f_number}"
            )

    @property
    def aperture_m(self) -> float:
        return self.focal_length_m / self.f_number

    def coc_m(self, depth_m: np.ndarray | float, focus_m: np.ndarray | float) -> np.ndarray:
        """CoC diameter on the sensor (metres) of a point at depth_m when focused at focus_m.

        Broadcasts; depth 0/NaN gives NaN. focus_m must exceed the focal length.
        """
        f = self.focal_length_m
        D = np.asarray(depth_m, dtype=np.float64)
        F = np.asarray(focus_m, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            c = np.where(
                np.isinf(F),
                self.aperture_m * f / np.where(D > 0, D - f, np.nan),
                self.aperture_m * f * np.abs(D - F) / (np.where(D > 0, D, np.nan) * (F - f)),
            )
        return c

    def coc_px(
        self, depth_m: np.ndarray | float, focus_m: np.ndarray | float, pixel_pitch_m: float
    ) -> np.ndarray:
        """CoC diameter in pixels for a sensor with the given pixel pitch."""
        return self.coc_m(depth_m, focus_m) / pixel_pitch_m

    def hyperfocal_m(self, coc_limit_m: float) -> float:
        """Focus distance beyond which everything to infinity is acceptably sharp."""
        f = self.focal_length_m
        return f * f / (self.f_number * coc_limit_m) + f

    def depth_of_field(self, focus_m: float, coc_limit_m: float) -> tuple[float, float]:
        """(near, far) limits in metres where the CoC stays below coc_limit_m; far may be inf."""
        f = self.focal_length_m
        H = self.hyperfocal_m(coc_limit_m)
        F = float(focus_m)
        near = F * (H - f) / (H + F - 2 * f)
        far = F * (H - f) / (H - F) if F < H else float("inf")
        return near, far


Spacing = Literal["diopters", "metres"]


@dataclass(frozen=True)
class FocusSchedule:
    """Ramps of `steps` focus distances from near to far, repeated `ramps` times.

    Every ramp goes near -> far (increasing distance); the jump back to near happens only
    between ramps, so a stack never contains a far-to-near step. The thesis default is
    5 ramps of 5 frames.
    """

    near_m: float = 0.1
    far_m: float = 1.0
    steps: int = 5
    ramps: int = 5
    spacing: Spacing = "diopters"

    def __post_init__(self) -> None:
        if self.steps < 1 or self.ramps < 1:
            raise DfdcapError(
                f"focus schedule: steps and ramps must be >= 1, got {self.steps} and {self.ramps}"
            )
        if not (0 < self.near_m < self.far_m):
            raise DfdcapError(
                f"focus schedule: need 0 < near < far, got near {self.near_m} m, far {self.far_m} m"
            )
        if self.spacing not in ("diopters", "metres"):
            raise DfdcapError(f"focus schedule: spacing must be diopters or metres, got {self.spacing!r}")

    def ramp_m(self) -> np.ndarray:
        """(steps,) focus distances of one ramp in metres, increasing."""
        if self.steps == 1:
            return np.array([self.near_m])
        if self.spacing == "metres":
            return np.linspace(self.near_m, self.far_m, self.steps)
        d = np.linspace(1.0 / self.near_m, 1.0 / self.far_m, self.steps)
        return 1.0 / d

    def focus_m(self) -> np.ndarray:
        """(ramps, steps) focus distances in metres."""
        return np.tile(self.ramp_m(), (self.ramps, 1))

    def focus_diopters(self) -> np.ndarray:
        """(ramps, steps) focus in diopters, as sent to the phone."""
        return 1.0 / self.focus_m()

    @property
    def n_frames(self) -> int:
        return self.steps * self.ramps

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FocusSchedule":
        return cls(**{k: d[k] for k in ("near_m", "far_m", "steps", "ramps", "spacing") if k in d})
