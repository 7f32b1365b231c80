"""The two device interfaces every source implements: an RGB-D sensor and a phone.

Sensors: sim (dfdcap.sim), OpenNI2 (openni.py), RealSense (realsense.py).
Phones: sim in-process (dfdcap.sim), over ADB (phone.py).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from dfdcap.capture.session import ClockProbe, DeviceInfo, PhoneCamera, SensorIntrinsics, SessionWriter
from dfdcap.lens import FocusSchedule


def unreachable_focus(schedule: FocusSchedule, camera: PhoneCamera) -> str | None:
    """Why the lens cannot follow `schedule` (its nearest focus is closer than the lens focuses), else None."""
    nearest_d = float(schedule.focus_diopters().max())
    if nearest_d <= camera.min_focus_diopters + 1e-9:
        return None
    return (f"the schedule's nearest focus {schedule.near_m:.3f} m ({nearest_d:.2f} D) is closer than the lens can "
            f"focus ({camera.min_focus_diopters:.2f} D = {1 / camera.min_focus_diopters:.3f} m)")


@dataclass(frozen=True)
class SensorFrame:
    """One RGB-D frame.

    rgb: (H, W, 3) uint8 RGB; depth: (H, W) uint16 in the sensor's native unit
    (SensorIntrinsics.depth_scale_m), registered to the color camera, 0 = invalid.
    t_device_ns: the sensor's own clock (the depth frame's); t_host_ns: host CLOCK_MONOTONIC at
    arrival; index: the depth frame number. t_color_device_ns: the colour frame's own stamp where
    the device gives it (None: the same as depth's); a pair further apart than the sensor's
    pair_tolerance_ns is stale and noted by the recorder, not dropped.
    """

    index: int
    t_device_ns: int
    t_host_ns: int
    rgb: np.ndarray
    depth: np.ndarray
    t_color_device_ns: int | None = None


class _Device(abc.ABC):
    """Devices close on leaving a `with` block (never in __del__)."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Sensor(_Device):
    """An RGB-D source. Use with `with`; `frames()` ends (StopIteration) at the end of a
    recording and raises DeviceError when a live device stops delivering."""

    info: DeviceInfo
    intrinsics: SensorIntrinsics
    fps: float | None = None  # nominal frame rate (None: unknown); the recorder finds timestamp gaps with it
    # Frames the device or its driver lost before they reached us (its own counter: a driver
    # that kept only the newest frame, an incomplete or unpaired frameset); the recorder reports
    # it beside the frame-number and timestamp gaps it sees itself.
    dropped: int = 0
    # depth and colour stamps further apart than this make a stale pair (None: half a frame period)
    pair_tolerance_ns: int | None = None
    # the largest depth code the device itself calls valid (None: the model table decides)
    max_depth_code: int | None = None
    # one-line notes about what was read (a fallback taken), copied into session.json
    notes: tuple[str, ...] = ()

    @abc.abstractmethod
    def frames(self) -> Iterator[SensorFrame]: ...


class Phone(_Device):
    """A phone running the companion protocol (docs/phone-protocol.md)."""

    info: DeviceInfo

    @abc.abstractmethod
    def hello(self) -> PhoneCamera:
        """Camera characteristics for the recording size."""

    @abc.abstractmethod
    def probe(self) -> ClockProbe:
        """One round-trip clock probe: host send time, phone sensor-clock time, host receive time."""

    @abc.abstractmethod
    def start(self, schedule: FocusSchedule, fps: float) -> None:
        """Start a focus sweep; returns at once."""

    @abc.abstractmethod
    def is_done(self) -> bool:
        """True once every frame of the schedule was captured."""

    @abc.abstractmethod
    def stop(self) -> None: ...

    @abc.abstractmethod
    def fetch(self, writer: SessionWriter) -> int:
        """Copy the recorded frames and their metadata into the session; returns the count."""
