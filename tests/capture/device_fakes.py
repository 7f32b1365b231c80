"""Fakes at the device boundary for the recorder tests: an RGB-D sensor and a phone that
behave like devices in time (frames at a frame rate, a sweep that takes n/fps seconds, a
phone clock with an offset), with no simulator behind them. A module of its own (not
conftest.py) so that tests import it by a name no other test folder shares."""

from __future__ import annotations

import time

import numpy as np

from dfdcap.cameras import CameraModel
from dfdcap.capture.base import Phone, Sensor, SensorFrame
from dfdcap.capture.session import ClockProbe, DeviceInfo, PhoneCamera, PhoneFrameRecord, SensorIntrinsics
from dfdcap.errors import DeviceError
from dfdcap.lens import FocusSchedule


def _camera(w: int, h: int) -> CameraModel:
    f = 0.9 * w
    K = np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]])
    return CameraModel(K, np.zeros(5), (w, h))


class FakeSensor(Sensor):
    """Frames at `fps` (realtime) or as fast as asked; a slanted plane 0.5-2 m with 1 mm
    quantisation, noise and holes, over a noisy texture. Ends after n_frames (None: never);
    raises DeviceError at frame `fail_at` like a pulled cable."""

    def __init__(self, size=(160, 120), fps=30.0, n_frames=None, realtime=True, fail_at=None,
                 offset_ns=123_456_789, seed=0):
        w, h = size
        self.info = DeviceInfo("fake", "FakeSensor", "FS-1")
        self.intrinsics = SensorIntrinsics(_camera(w, h), _camera(w, h), 0.001, True)
        self.fps, self.n_frames, self.realtime, self.fail_at = fps, n_frames, realtime, fail_at
        self.offset_ns = offset_ns
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:h, 0:w]
        depth_m = 0.5 + 1.5 * xx / w + rng.normal(0, 0.002, (h, w))
        self._depth = [np.where(rng.random((h, w)) < 0.02, 0, np.round(depth_m * 1000)).astype(np.uint16) for _ in range(4)]
        self._rgb = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(4)]
        self.closed = False

    def frames(self):
        t0 = time.monotonic()
        i = 0
        while self.n_frames is None or i < self.n_frames:
            if self.fail_at is not None and i == self.fail_at:
                raise DeviceError(f"sensor {self.info.serial}: no frame for 2 s (cable pulled?)")
            if self.realtime:
                delay = t0 + i / self.fps - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            t_host = time.monotonic_ns()
            yield SensorFrame(i, t_host + self.offset_ns, t_host, self._rgb[i % 4], self._depth[i % 4])
            i += 1

    def close(self) -> None:
        self.closed = True


class FakePhone(Phone):
    """A phone whose sweep takes n_frames / fps seconds of host time; its clock is the host's
    plus offset_ns. fetch() writes the frames captured until stop() as small PNGs."""

    def __init__(self, size=(64, 48), offset_ns=-5_000_000_000, never_done=False):
        self.info = DeviceInfo("fake", "FakePhone", "FP-1")
        self.size, self.offset_ns, self.never_done = size, offset_ns, never_done
        self.t_start = self.t_stop = None
        self.schedule: FocusSchedule | None = None
        self.fps = 0.0
        self.calls: list[str] = []

    def hello(self) -> PhoneCamera:
        self.calls.append("hello")
        return PhoneCamera(0.0042, 1.7, (0.00564, 0.00423), self.size, 10.0)

    def probe(self) -> ClockProbe:
        self.calls.append("probe")
        send = time.monotonic_ns()
        t_phone = time.monotonic_ns() + self.offset_ns
        return ClockProbe(send, t_phone, time.monotonic_ns())

    def start(self, schedule: FocusSchedule, fps: float) -> None:
        self.calls.append("start")
        self.schedule, self.fps, self.t_start = schedule, fps, time.monotonic_ns()

    def _captured(self, t_ns: int) -> int:
        n = int((t_ns - self.t_start) * 1e-9 * self.fps)
        return min(n, self.schedule.n_frames)

    def is_done(self) -> bool:
        self.calls.append("is_done")
        return not self.never_done and self._captured(time.monotonic_ns()) >= self.schedule.n_frames

    def stop(self) -> None:
        self.calls.append("stop")
        if self.t_stop is None and self.t_start is not None:
            self.t_stop = time.monotonic_ns()

    def fetch(self, writer) -> int:
        self.calls.append("fetch")
        n = self._captured(self.t_stop)
        focus = self.schedule.focus_diopters()
        w, h = self.size
        for i in range(n):
            ramp, step = divmod(i, self.schedule.steps)
            t_phone = self.t_start + int(i * 1e9 / self.fps) + self.offset_ns
            rec = PhoneFrameRecord(i, t_phone, float(focus[ramp, step]), float(focus[ramp, step]), 10_000_000,
                                   100, "STATIONARY", ramp, step, f"frames/{i}.png")
            writer.write_phone_frame(rec, np.full((h, w, 3), (i * 10) % 256, np.uint8))
        return n
