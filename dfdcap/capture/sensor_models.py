"""What dfdcap knows about each RGB-D sensor model, by name: depth range, invalid codes, latency.

Why one table: a depth code a sensor uses for "no return" (65535 on a D4xx, beyond its range)
must never reach a session as 65.5 m of valid depth, and a fixed capture-to-host latency that
`dfdcap sync` subtracts must come from a stated source, never from the simulator's own truth.

Rules (`depth_rule(model, depth_scale_m)`):
- 0 is "no data" on every sensor (TUM RGB-D, OpenNI, librealsense);
- a D4xx (librealsense) also reports 65535 for saturated or invalid returns;
- anything beyond the model's max range is no data (the range the maker documents; a
  model not in the table keeps every non-zero code below 65535 it reports).
Known latency (`known_latency_ns(model)`): None for every model today. No maker documents a
capture-to-host latency for these cameras (it depends on USB controller, exposure and host
load), so `sync` maps device time to the earliest arrival seen (capture + the smallest
latency). A measured value (e.g. a LED filmed by both cameras) goes to `dfdcap sync
--sensor-latency-ms`, or into this table with its source.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SensorModelFacts:
    """max_range_m: the farthest depth the maker documents (None: unknown); invalid_codes: raw
    codes that mean no data besides 0; latency_ns: known capture-to-host latency (None: unknown);
    source: where the numbers come from."""

    max_range_m: float | None
    invalid_codes: tuple[int, ...] = ()
    latency_ns: int | None = None
    source: str = ""


_D4XX_INVALID = (65535,)
_INTEL = "Intel RealSense product pages / D400 datasheet (rev. 2023): maximum depth range; 65535 = invalid return"
# Matched as a case-insensitive substring of the device's model name, first match wins.
SENSOR_MODELS: tuple[tuple[str, SensorModelFacts], ...] = (
    ("D405", SensorModelFacts(0.5, _D4XX_INVALID, None, f"{_INTEL} (ideal range 7-50 cm)")),
    ("D415", SensorModelFacts(10.0, _D4XX_INVALID, None, f"{_INTEL} (~10 m)")),
    ("D435", SensorModelFacts(10.0, _D4XX_INVALID, None, f"{_INTEL} (~10 m)")),
    ("D455", SensorModelFacts(20.0, _D4XX_INVALID, None, f"{_INTEL} (~20 m)")),
    ("D4", SensorModelFacts(10.0, _D4XX_INVALID, None, f"{_INTEL}: other D4xx, ~10 m assumed")),
    ("Xtion", SensorModelFacts(3.5, (), None, "Asus Xtion PRO LIVE specification: 0.8-3.5 m")),
    ("PS1080", SensorModelFacts(3.5, (), None, "PrimeSense PS1080 (Xtion, Carmine 1.08): 0.8-3.5 m")),
    ("SimXtion", SensorModelFacts(3.5, (), None, "dfdcap simulated Xtion: documented range 0.5-3.5 m")),
    ("SimD405", SensorModelFacts(0.5, (), None, "dfdcap simulated D405: documented range 0.07-0.5 m")),
)


def sensor_facts(model: str) -> SensorModelFacts:
    """The table row of a model name (substring match, case-insensitive); unknown: no range, no codes."""
    name = (model or "").lower()
    for key, facts in SENSOR_MODELS:
        if key.lower() in name:
            return facts
    return SensorModelFacts(None, (), None, "unknown model: only 0 is no data")


def known_latency_ns(model: str) -> int | None:
    """A documented capture-to-host latency of the model, or None (see module doc)."""
    return sensor_facts(model).latency_ns


@dataclass(frozen=True)
class DepthRule:
    """Raw depth codes of one sensor that are no data: 0, `invalid_codes`, and codes above `max_code`."""

    max_code: int  # the largest valid code (65535: no range limit)
    invalid_codes: tuple[int, ...] = ()

    def to_dict(self) -> dict:
        return {"max_code": self.max_code, "invalid_codes": list(self.invalid_codes)}


def depth_rule(model: str, depth_scale_m: float, device_max_code: int | None = None) -> DepthRule:
    """The rule for a model at its depth unit; device_max_code: the largest code the device
    itself reports as valid (OpenNI's max pixel value), applied when it is tighter."""
    facts = sensor_facts(model)
    max_code = 65535
    if facts.max_range_m is not None and depth_scale_m > 0:
        max_code = min(max_code, int(np.floor(facts.max_range_m / depth_scale_m + 1e-6)))
    if device_max_code is not None and 0 < device_max_code < max_code:
        max_code = int(device_max_code)
    return DepthRule(max_code, tuple(int(c) for c in facts.invalid_codes))


def clear_invalid_depth(depth: np.ndarray, rule: DepthRule) -> tuple[np.ndarray, int]:
    """Set every code the rule calls no data to 0. depth: (H, W) uint16, native units.

    Returns (depth, count of pixels cleared); the input is returned unchanged (not copied) when
    nothing is cleared, so the common case costs one comparison pass."""
    bad = depth > rule.max_code
    for code in rule.invalid_codes:
        if code <= rule.max_code:
            bad |= depth == code
    n = int(np.count_nonzero(bad))
    if n == 0:
        return depth, 0
    out = depth.copy()
    out[bad] = 0
    return out, n
