"""A simulated device clock: offset, drift and read jitter against the host clock.

The TRUE relation (no jitter) is the DESIGN.md clock model, device -> host:
    t_host_ns = t0_host_ns + (t_dev_ns - t0_dev_ns) * (1 + drift_ppm * 1e-6)
with t0_dev_ns = t0_host_ns + offset_ns, i.e. `offset_ns` is device minus host at t0_host_ns.
A timestamp the device reports is the true device time plus Gaussian jitter (sigma jitter_ns),
as a device that latches its clock with a little noise would.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from dfdcap.errors import DfdcapError


class SimClock:
    """A device clock running at (1 + drift_ppm*1e-6)^-1 times the host rate, offset by offset_ns.

    offset_ns: device time minus host time at t0_host_ns (ns).
    drift_ppm: the model's drift: host ns per device ns is (1 + drift_ppm * 1e-6).
    jitter_ns: standard deviation (ns) of the noise added to each reported device timestamp.
    t0_host_ns: reference host time (default: time.monotonic_ns() at construction).
    """

    def __init__(
        self,
        offset_ns: int = 0,
        drift_ppm: float = 0.0,
        jitter_ns: float = 0.0,
        seed: int | None = 0,
        t0_host_ns: int | None = None,
    ):
        if jitter_ns < 0:
            raise DfdcapError(f"sim clock: jitter must be >= 0 ns, got {jitter_ns}")
        if not abs(drift_ppm) < 1e5:
            raise DfdcapError(f"sim clock: drift {drift_ppm} ppm is not a plausible clock")
        self.offset_ns = int(offset_ns)
        self.drift_ppm = float(drift_ppm)
        self.jitter_ns = float(jitter_ns)
        self.t0_host_ns = int(time.monotonic_ns() if t0_host_ns is None else t0_host_ns)
        self.t0_dev_ns = self.t0_host_ns + self.offset_ns
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()

    @property
    def rate(self) -> float:
        """Host nanoseconds per device nanosecond."""
        return 1.0 + self.drift_ppm * 1e-6

    def true_device_from_host_ns(self, t_host_ns):
        """Exact device time (no jitter) at host time(s) t_host_ns; int or int64 array."""
        t = np.asarray(t_host_ns, dtype=np.int64)
        dev = self.t0_dev_ns + np.round((t - self.t0_host_ns).astype(np.float64) / self.rate).astype(np.int64)
        return int(dev) if dev.ndim == 0 else dev

    def host_from_device_ns(self, t_dev_ns):
        """True host time of device time(s) t_dev_ns (the clock model, no jitter)."""
        t = np.asarray(t_dev_ns, dtype=np.int64)
        host = self.t0_host_ns + np.round((t - self.t0_dev_ns).astype(np.float64) * self.rate).astype(np.int64)
        return int(host) if host.ndim == 0 else host

    def device_from_host_ns(self, t_host_ns):
        """The device timestamp reported for an event at host time(s) t_host_ns (with jitter)."""
        dev = np.asarray(self.true_device_from_host_ns(t_host_ns), dtype=np.int64)
        if self.jitter_ns > 0:
            with self._lock:
                noise = self._rng.normal(0.0, self.jitter_ns, size=dev.shape)
            dev = dev + np.round(noise).astype(np.int64)
        return int(dev) if dev.ndim == 0 else dev

    def now_ns(self) -> int:
        """The device clock read now (with jitter)."""
        return self.device_from_host_ns(time.monotonic_ns())

    def model_dict(self) -> dict:
        """The true device -> host model in DESIGN.md form; residual_ns is the jitter sigma."""
        return {
            "t0_dev_ns": int(self.t0_dev_ns),
            "t0_host_ns": int(self.t0_host_ns),
            "drift_ppm": float(self.drift_ppm),
            "residual_ns": float(self.jitter_ns),
        }

    def __repr__(self) -> str:
        return f"SimClock(offset_ns={self.offset_ns}, drift_ppm={self.drift_ppm}, jitter_ns={self.jitter_ns})"
