"""A simulated RGB-D sensor: 640x480 color + registered uint16 depth at 30 fps, with an error model.

Depth error model (structured light / active stereo): the sensor measures disparity
d = fx * baseline / z in pixels with Gaussian noise (sigma_disp_px) quantised to 1/subpixel px,
so the depth error grows as z^2 (Xtion preset: sigma_z ~ 1.4e-3 z^2 m, steps of ~3 mm at 1 m and
~26 mm at 3 m). Pixels in the projector's shadow beside foreground edges, a sprinkle of pixels at
depth edges, and everything outside the working range are 0 (invalid). Depth is quantised to
the native unit (depth_scale_m). Timing: frame k is captured at host time t0 + k / fps; its
device timestamp comes from the sensor's SimClock; it "arrives" at the host a positive, variable
latency later (t_host_ns), as a driver would stamp it.
"""

from __future__ import annotations

import time
from typing import Iterator

import cv2
import numpy as np

from dfdcap.capture.base import Sensor, SensorFrame
from dfdcap.capture.session import DeviceInfo, SensorIntrinsics
from dfdcap.sim.rig import SensorPreset


def measure_depth(
    depth_m: np.ndarray, preset: SensorPreset, rng: np.random.Generator, edge_dropout: float = 0.5
) -> np.ndarray:
    """The sensor's depth reading of true z-depth.

    depth_m: (H, W) float32 true z-depth in metres (0 = nothing). Returns (H, W) uint16 in
    native units (preset.depth_scale_m), 0 = invalid.
    """
    z = np.asarray(depth_m, dtype=np.float32)
    valid = z > 0
    fb = np.float32(preset.fx * preset.baseline_m)  # disparity (px) * depth (m)
    disp = np.where(valid, fb / np.where(valid, z, 1.0), 0.0).astype(np.float32)
    # projector shadow: a pixel is unlit if a surface to its left reaches further right in the
    # projector (x' + d(x') > x + d(x)); the shadow is as wide as the disparity jump
    H, W = z.shape
    pcol = np.arange(W, dtype=np.float32)[None, :] + disp
    cm = np.maximum.accumulate(pcol, axis=1)
    shadow = np.zeros_like(valid)
    shadow[:, 1:] = cm[:, :-1] > pcol[:, 1:] + 0.5
    # edge dropout: where neighbouring depths differ by more than 3 %
    zz = np.where(valid, z, 0)
    gx = np.zeros_like(valid)
    gx[:, 1:] = np.abs(zz[:, 1:] - zz[:, :-1]) > 0.03 * np.maximum(zz[:, 1:], zz[:, :-1])
    gy = np.zeros_like(valid)
    gy[1:, :] = np.abs(zz[1:, :] - zz[:-1, :]) > 0.03 * np.maximum(zz[1:, :], zz[:-1, :])
    edge = cv2.dilate((gx | gy).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    drop = edge & (rng.random(z.shape, dtype=np.float32) < edge_dropout)
    noisy = disp + rng.standard_normal(z.shape, dtype=np.float32) * np.float32(preset.sigma_disp_px)
    q = np.round(noisy * preset.subpixel) / np.float32(preset.subpixel)
    with np.errstate(divide="ignore", invalid="ignore"):
        zm = np.where(q > 0, fb / q, 0.0)
    ok = valid & ~shadow & ~drop & (q > 0) & (zm >= preset.min_m) & (zm <= preset.max_m)
    raw = np.where(ok, np.round(zm / preset.depth_scale_m), 0)
    return np.clip(raw, 0, 65535).astype(np.uint16)


def depth_sigma_m(z_m: np.ndarray | float, preset: SensorPreset) -> np.ndarray:
    """Expected depth noise sigma (m) at depth z (before quantisation): z^2 sigma_d / (fx b)."""
    z = np.asarray(z_m, dtype=np.float64)
    return z * z * preset.sigma_disp_px / (preset.fx * preset.baseline_m)


class SimSensor(Sensor):
    """The rig's RGB-D sensor. `frames()` yields SensorFrames forever (or max_frames), paced to
    the host clock when realtime (sleeping until each frame's arrival time), as fast as possible
    otherwise; in both cases the timestamps follow the same 30 fps schedule from the first call."""

    def __init__(self, rig, realtime: bool = True, max_frames: int | None = None, seed: int = 0):
        from dfdcap.errors import DeviceError

        if max_frames is not None and max_frames < 0:
            raise DeviceError(f"sim sensor: max_frames must be >= 0, got {max_frames}")
        cfg = rig.config
        self.rig = rig
        self.preset = cfg.sensor_preset
        self.realtime = realtime
        self.max_frames = max_frames
        self.clock = rig.sensor_clock
        self.info = DeviceInfo("sim", self.preset.model, f"sim-{cfg.sensor}-{cfg.seed}")
        cam = rig.sensor_camera_model()
        self.intrinsics = SensorIntrinsics(cam, cam, self.preset.depth_scale_m, True)
        self.fps = float(cfg.sensor_fps)
        self.dropped = 0  # the simulated driver's counter: frames it lost or discarded
        # No known latency: the simulator's true minimum latency is truth a real device does not
        # report (dfdcap.capture.sensor_models holds documented per-model values; none for sims).
        self.true_capture_ns: dict[int, int] = {}  # frame index -> true capture time, host clock
        self._rng = np.random.default_rng(seed)
        self._closed = False
        self._cfg = cfg

    def capture(self, t_capture_host_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """(rgb uint8 (480, 640, 3), depth uint16 (480, 640)) of the scene at host time t_capture_host_ns."""
        rgb_f, depth_true = self.rig.render_sensor_sharp(t_capture_host_ns)
        depth = measure_depth(depth_true, self.preset, self._rng)
        read, shot = self._cfg.sensor_noise
        u8 = cv2.convertScaleAbs(rgb_f, alpha=255.0)
        sigma = float(np.sqrt(read**2 + shot * 0.5) * 255.0)
        n = np.empty(u8.shape, np.int16)
        cv2.setRNGSeed(int(self._rng.integers(0, 2**31)))
        cv2.randn(n, 0.0, sigma)
        return cv2.add(u8, n, dtype=cv2.CV_8U), depth

    def frames(self) -> Iterator[SensorFrame]:
        period = 1e9 / self.fps
        if self.rig.scene.is_static:  # render (and cache) the scene before the clock starts
            self.rig.render_sensor_sharp(time.monotonic_ns())
        t0 = time.monotonic_ns() + int(period)
        mean, sd = self._cfg.sensor_latency_ns
        k = 0
        while not self._closed and (self.max_frames is None or k < self.max_frames):
            t_cap = t0 + int(round(k * period))
            lat = max(self._cfg.sensor_min_latency_ns, int(self._rng.normal(mean, sd)))
            t_arr = t_cap + lat
            index = k
            k += 1
            if self._cfg.sensor_drop_prob > 0 and self._rng.random() < self._cfg.sensor_drop_prob:
                self.dropped += 1
                continue
            if self.realtime:
                # paced by the host clock, but a late consumer gets every frame (stamped with its
                # simulated arrival): dropping late frames would make a recording's content, and the
                # clock fit on it, depend on how busy the host is; drops are sensor_drop_prob's job
                now = time.monotonic_ns()
                if t_arr > now:
                    time.sleep((t_arr - now) * 1e-9)
            rgb, depth = self.capture(t_cap)
            self.true_capture_ns[index] = t_cap
            yield SensorFrame(index, self.clock.device_from_host_ns(t_cap), t_arr, rgb, depth)

    def close(self) -> None:
        self._closed = True
