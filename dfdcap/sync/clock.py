"""Clock models: a device clock (phone sensor clock, RGB-D device clock) mapped to the host clock.

DESIGN.md form: t_host_ns = t0_host_ns + (t_dev_ns - t0_dev_ns) * (1 + drift_ppm * 1e-6).
t0_dev_ns is chosen near the middle of the data the model was fitted on, so the offset
uncertainty (offset_std_ns) and the drift uncertainty (drift_std_ppm) are uncorrelated there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dfdcap.errors import SyncError


@dataclass(frozen=True)
class ClockModel:
    """Offset + drift mapping of one device clock to the host clock (all times int ns).

    residual_ns: RMS scatter of the fitted samples about the model (what the fit could not explain).
    offset_std_ns / drift_std_ppm: 1-sigma uncertainty of the model at t0 and of the drift.
    extra: method-specific numbers kept in sync.json (counts, latency, ...).
    """

    t0_dev_ns: int
    t0_host_ns: int
    drift_ppm: float
    residual_ns: float = 0.0
    offset_std_ns: float = 0.0
    drift_std_ppm: float = 0.0
    extra: dict = field(default_factory=dict, compare=False)

    def to_host_ns(self, t_dev_ns):
        """Map device time(s) to host time. int -> int; array-like -> (N,) int64."""
        scalar = np.ndim(t_dev_ns) == 0
        dt = np.asarray(t_dev_ns, dtype=np.int64) - np.int64(self.t0_dev_ns)
        # int64 offset part stays exact; only the drift correction (<< 1 s) goes through float.
        corr = np.rint(dt.astype(np.float64) * (self.drift_ppm * 1e-6)).astype(np.int64)
        t = np.int64(self.t0_host_ns) + dt + corr
        return int(t) if scalar else t

    def to_dev_ns(self, t_host_ns):
        """Inverse map: host time(s) to device time. int -> int; array-like -> (N,) int64."""
        scalar = np.ndim(t_host_ns) == 0
        dh = np.asarray(t_host_ns, dtype=np.int64) - np.int64(self.t0_host_ns)
        scale = 1.0 + self.drift_ppm * 1e-6
        corr = np.rint(dh.astype(np.float64) * (1.0 / scale - 1.0)).astype(np.int64)
        t = np.int64(self.t0_dev_ns) + dh + corr
        return int(t) if scalar else t

    def offset_ns_at(self, t_dev_ns: int) -> int:
        """host - device at one device time (the 'offset' a user thinks of)."""
        return int(self.to_host_ns(int(t_dev_ns))) - int(t_dev_ns)

    def to_dict(self) -> dict:
        d = {
            "t0_dev_ns": int(self.t0_dev_ns),
            "t0_host_ns": int(self.t0_host_ns),
            "drift_ppm": float(self.drift_ppm),
            "residual_ns": float(self.residual_ns),
            "offset_std_ns": float(self.offset_std_ns),
            "drift_std_ppm": float(self.drift_std_ppm),
        }
        d.update(self.extra)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ClockModel":
        """Read the DESIGN.md form (the four keys), plus the uncertainty fields when present."""
        try:
            core = {
                "t0_dev_ns": int(d["t0_dev_ns"]),
                "t0_host_ns": int(d["t0_host_ns"]),
                "drift_ppm": float(d["drift_ppm"]),
                "residual_ns": float(d.get("residual_ns", 0.0)),
                "offset_std_ns": float(d.get("offset_std_ns", 0.0)),
                "drift_std_ppm": float(d.get("drift_std_ppm", 0.0)),
            }
        except (KeyError, TypeError, ValueError) as e:
            raise SyncError(f"clock model {d!r}: expected t0_dev_ns, t0_host_ns, drift_ppm ({e})") from None
        extra = {k: v for k, v in d.items() if k not in core}
        return cls(**core, extra=extra)
