"""A simulated phone: a Galaxy-S7-like camera sweeping focus through a thin lens.

`start(schedule, fps)` plans every frame at once: frame k is exposed at host time
t0 + k / fps (t0 = start + a start latency), with the focus asked by the schedule and reached
with a small lens error; its timestamp is the phone's SimClock reading of that host time.
The scene is a function of time, so frames are rendered later, in `recorded_frames()` /
`fetch()`, exactly as the phone would have seen them. `probe()` is a USB-like round trip
(1-5 ms each way, asymmetric, occasional 50 ms outliers) that really sleeps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from dfdcap.capture.base import Phone
from dfdcap.capture.session import ClockProbe, DeviceInfo, PhoneCamera, PhoneFrameRecord, SessionWriter
from dfdcap.errors import DeviceError
from dfdcap.lens import FocusSchedule
from dfdcap.sim.render import SensorNoise, render_defocus


@dataclass(frozen=True)
class PlannedFrame:
    """One scheduled phone frame: its record and its true exposure start on the host clock."""

    record: PhoneFrameRecord
    t_host_ns: int


class SimPhone(Phone):
    """The rig's phone. Implements dfdcap.capture.base.Phone plus camera(), now_phone_ns(),
    recorded_frames() for the fake adbd companion."""

    def __init__(self, rig, seed: int = 0):
        self.rig = rig
        cfg = rig.config
        self._cfg = cfg
        self.clock = rig.phone_clock
        self.info = DeviceInfo("sim", "SimGalaxyS7", f"sim-phone-{cfg.seed}")
        self._camera = rig.phone_camera()
        self._rng = np.random.default_rng(seed)
        self._render_rng = np.random.default_rng(seed + 1)
        self._planned: list[PlannedFrame] = []
        self._t_stop_ns: int | None = None
        self._started = False
        self.schedule: FocusSchedule | None = None

    # protocol ---------------------------------------------------------------------------
    def hello(self) -> PhoneCamera:
        return self._camera

    def camera(self) -> PhoneCamera:
        return self._camera

    def now_phone_ns(self) -> int:
        return self.clock.now_ns()

    def _link_delay_ns(self) -> int:
        """One direction of a USB/ADB hop: 1-5 ms, skewed, with rare 50 ms stalls."""
        d = 1.0 + self._rng.gamma(2.0, 0.8)
        if self._rng.random() < 0.03:
            d += self._rng.uniform(40.0, 60.0)
        return int(min(d, 5.0 if d < 20 else d) * 1e6)

    def probe(self) -> ClockProbe:
        up, down = self._link_delay_ns(), max(1_000_000, int(self._link_delay_ns() * 0.7))
        t_send = time.monotonic_ns()
        time.sleep(up * 1e-9)
        t_phone = self.clock.device_from_host_ns(time.monotonic_ns())
        time.sleep(down * 1e-9)
        t_recv = time.monotonic_ns()
        return ClockProbe(t_send, int(t_phone), t_recv)

    def start(self, schedule: FocusSchedule, fps: float) -> None:
        if not fps > 0:
            raise DeviceError(f"sim phone: fps must be positive, got {fps}")
        cfg = self._cfg
        focus_d = schedule.focus_diopters()  # (ramps, steps)
        if float(focus_d.max()) > cfg.phone_min_focus_diopters + 1e-9:
            raise DeviceError(
                f"sim phone: the schedule focuses at {1 / focus_d.max():.3f} m, closer than the lens can "
                f"({1 / cfg.phone_min_focus_diopters:.3f} m, {cfg.phone_min_focus_diopters} diopters)"
            )
        t0 = time.monotonic_ns() + cfg.phone_start_latency_ns
        period = 1e9 / fps
        ext = cfg.phone_image_format
        planned = []
        k = 0
        t_host = t0
        for r in range(schedule.ramps):
            for s in range(schedule.steps):
                if k:
                    # Each manual-focus request waits for the lens to settle, so frames come a few
                    # ms later than the nominal rate and their phase against the sensor wanders.
                    t_host += int(round(period)) + int(self._rng.uniform(0, 10_000_000))
                asked = float(focus_d[r, s])
                reached = float(np.clip(asked + self._rng.normal(0, cfg.phone_focus_error_diopters), 0.0, cfg.phone_min_focus_diopters))
                rec = PhoneFrameRecord(
                    index=k,
                    t_phone_ns=int(self.clock.device_from_host_ns(t_host)),
                    focus_diopters_requested=asked,
                    focus_diopters=reached,
                    exposure_ns=int(cfg.phone_exposure_ns),
                    iso=int(cfg.phone_iso),
                    lens_state="STATIONARY",
                    ramp=r,
                    step=s,
                    file=f"frames/{k}.{ext}",
                )
                planned.append(PlannedFrame(rec, t_host))
                k += 1
        self._planned = planned
        self._t_stop_ns = None
        self._started = True
        self.schedule = schedule

    def _captured(self) -> list[PlannedFrame]:
        limit = time.monotonic_ns() if self._t_stop_ns is None else self._t_stop_ns
        return [p for p in self._planned if p.t_host_ns <= limit]

    def is_done(self) -> bool:
        if not self._started:
            return False
        if self._t_stop_ns is not None:
            return True
        return not self._planned or time.monotonic_ns() >= self._planned[-1].t_host_ns

    def stop(self) -> None:
        if self._started and self._t_stop_ns is None:
            self._t_stop_ns = time.monotonic_ns()

    def planned_frames(self) -> list[PlannedFrame]:
        """Every frame of the current schedule (captured or not), with its true host time."""
        return list(self._planned)

    @staticmethod
    def _breathing_diopters(rec: PhoneFrameRecord) -> float:
        """The focus whose magnification a frame is rendered with: the requested one, so that a static
        scene renders once per focus step (the lens error, ~0.02 D, would move the scale by < 1e-4)."""
        return float(rec.focus_diopters_requested)

    def frame_camera(self, rec: PhoneFrameRecord):
        """The true phone camera (CameraModel, with focus breathing) a frame was rendered with."""
        return self.rig.phone_camera_model(self._breathing_diopters(rec))

    def render_frame(self, planned: PlannedFrame) -> tuple[np.ndarray, np.ndarray]:
        """(rgb uint8 (H, W, 3), true depth_m float32 (H, W)) of one planned frame."""
        cfg = self._cfg
        rgb, depth = self.rig.render_phone_sharp(planned.t_host_ns, self._breathing_diopters(planned.record))
        d = planned.record.focus_diopters
        focus_m = 1.0 / d if d > 0 else float("inf")
        img = render_defocus(
            rgb, depth, cfg.phone_lens, focus_m, cfg.phone_pixel_pitch_m(),
            noise=SensorNoise(*cfg.phone_noise), rng=self._render_rng,
        )
        return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8), depth.astype(np.float32)

    def recorded_frames(self) -> Iterator[tuple[PhoneFrameRecord, np.ndarray, np.ndarray]]:
        """(record, rgb uint8, true depth_m) of every frame captured so far, in order."""
        for p in self._captured():
            rgb, depth = self.render_frame(p)
            yield p.record, rgb, depth

    def fetch(self, writer: SessionWriter) -> int:
        """Write the captured frames, phone/frames.csv, truth/phone_depth/<index>.npz and
        (if absent) truth/rig.json into the session. Returns the number of frames. No truth when
        the writer says a real device is in the rig (writer.truth_allowed): the truth would
        describe this simulated sensor and scene, not what the real sensor saw."""
        truth = writer.truth_allowed
        if truth and not (writer.path / "truth" / "rig.json").exists():
            writer.write_truth_rig(self.rig.truth_rig())
        n = 0
        for rec, rgb, depth in self.recorded_frames():
            writer.write_phone_frame(rec, rgb)
            if truth:
                writer.write_truth_phone_depth(rec.index, depth, K=self.frame_camera(rec).K)
            n += 1
        return n
