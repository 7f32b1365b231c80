"""The simulated rig: an RGB-D sensor and a phone at a known pose, one scene, true clocks.

World frame = the sensor color camera's frame at scene time 0. Scene time t_s is measured from
the rig's start `t0_host_ns` (host CLOCK_MONOTONIC). Both devices' clocks are SimClocks with
that same reference, so `truth_rig()` gives the exact device -> host models.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from dfdcap.breathing import FocusModel, thin_lens_model
from dfdcap.cameras import CameraModel, invert_transform, make_transform
from dfdcap.capture.session import PhoneCamera
from dfdcap.errors import DfdcapError
from dfdcap.lens import ThinLens
from dfdcap.sim.clock import SimClock
from dfdcap.sim.scene import Scene, make_scene


@dataclass(frozen=True)
class ClockSpec:
    """A device clock: offset (device minus host at the rig's start, ns), drift (ppm), jitter (ns)."""

    offset_ns: int = 0
    drift_ppm: float = 0.0
    jitter_ns: float = 0.0


@dataclass(frozen=True)
class SensorPreset:
    """Working range and depth model of an RGB-D sensor kind.

    Depth is measured as disparity d = fx_depth * baseline / z (pixels) with Gaussian noise
    sigma_disp_px and quantisation to 1/subpixel px, so the error grows as z^2.
    """

    model: str
    min_m: float
    max_m: float
    depth_scale_m: float
    fx: float
    baseline_m: float
    sigma_disp_px: float
    subpixel: int
    dist: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)


SENSOR_PRESETS: dict[str, SensorPreset] = {
    # Xtion / Kinect-v1-like structured light: sigma_z ~ 1.4e-3 z^2 m, 1/8 px disparity steps
    "xtion": SensorPreset("SimXtion", 0.5, 3.5, 0.001, 525.0, 0.075, 0.055, 8, (0.02, -0.05, 0.0, 0.0, 0.0)),
    # D405-like short-baseline active stereo: ~0.3 % of z at 0.5 m, 0.07-0.5 m
    "d405": SensorPreset("SimD405", 0.07, 0.5, 0.0001, 385.0, 0.018, 0.05, 16),
}


def default_T_phone_from_sensor(baseline_m: float = 0.04) -> np.ndarray:
    """The phone `baseline_m` (default 4 cm) to the right of the sensor (x), 0.5 cm lower, rotated by about 2 degrees."""
    R = make_transform(np.radians([0.6, -1.8, 0.5]), np.zeros(3))[:3, :3]
    c_sensor = np.array([baseline_m, 0.005, 0.0])  # phone centre in the sensor frame
    return make_transform(R, -R @ c_sensor)


@dataclass
class RigConfig:
    """Everything that defines a simulated rig. Defaults: an Xtion and a Galaxy S7 main camera."""

    sensor: str = "xtion"  # "xtion" | "d405"
    scene: str | Scene | None = None  # preset name or a Scene; None: "default" (xtion) / "close" (d405)
    seed: int = 0
    # phone (Galaxy S7: f 4.2 mm, f/1.7, 1/2.55" sensor 5.64 x 4.23 mm, 4032 x 3024 native)
    phone_size: tuple[int, int] = (1008, 756)
    phone_fps: float = 10.0
    phone_focal_length_m: float = 4.2e-3
    phone_f_number: float = 1.7
    phone_sensor_size_m: tuple[float, float] = (5.6448e-3, 4.2336e-3)
    phone_dist: tuple[float, ...] = (0.05, -0.1, 0.0005, -0.0003, 0.0)
    phone_principal_offset: tuple[float, float] = (0.004, -0.003)  # of the image size, from the centre
    phone_min_focus_diopters: float = 10.0
    # focus breathing (dfdcap.breathing): magnification v(D) / v(ref) of the thin lens, ref = infinity
    # (0 D: truth/rig.json's "phone" K is the camera focused at infinity), plus a principal-point drift
    # of (x, y) * image (width, height) per diopter
    phone_breathing: bool = True
    phone_breathing_ref_diopters: float = 0.0
    phone_principal_drift_per_diopter: tuple[float, float] = (2.0e-4, -1.5e-4)
    phone_focus_error_diopters: float = 0.02  # sigma of focus reached minus asked
    phone_exposure_ns: int = 16_666_667
    phone_iso: int = 100
    phone_noise: tuple[float, float] = (0.004, 0.0004)  # read sigma, shot gain on [0, 1] intensities
    phone_image_format: str = "jpg"  # "jpg" (JPEG at OpenCV's quality 95, as phones store frames) | "png"
    phone_start_latency_ns: int = 50_000_000
    T_phone_from_sensor: np.ndarray = field(default_factory=default_T_phone_from_sensor)
    phone_clock: ClockSpec = ClockSpec(offset_ns=-1_234_567_891, drift_ppm=42.0, jitter_ns=20_000.0)
    # sensor
    sensor_fps: float = 30.0
    sensor_clock: ClockSpec = ClockSpec(offset_ns=987_654_321, drift_ppm=-23.0, jitter_ns=100_000.0)
    sensor_latency_ns: tuple[int, int] = (12_000_000, 4_000_000)  # mean, sigma of host arrival latency
    sensor_min_latency_ns: int = 4_000_000
    sensor_drop_prob: float = 0.0
    sensor_noise: tuple[float, float] = (0.006, 0.0006)

    def __post_init__(self) -> None:
        if self.sensor not in SENSOR_PRESETS:
            raise DfdcapError(f"sim rig: unknown sensor {self.sensor!r}: choose one of {', '.join(SENSOR_PRESETS)}")
        w, h = self.phone_size
        if w < 16 or h < 16 or w > 8192 or h > 8192:
            raise DfdcapError(f"sim rig: phone size {w}x{h} out of range 16..8192")
        if not self.phone_fps > 0 or not self.sensor_fps > 0:
            raise DfdcapError(f"sim rig: fps must be positive, got phone {self.phone_fps}, sensor {self.sensor_fps}")
        if self.phone_image_format not in ("png", "jpg"):
            raise DfdcapError(f"sim rig: phone image format must be png or jpg, got {self.phone_image_format!r}")
        T = np.asarray(self.T_phone_from_sensor, dtype=np.float64)
        if T.shape != (4, 4):
            raise DfdcapError(f"sim rig: T_phone_from_sensor must be 4x4, got {T.shape}")
        self.T_phone_from_sensor = T

    @property
    def sensor_preset(self) -> SensorPreset:
        return SENSOR_PRESETS[self.sensor]

    @property
    def phone_lens(self) -> ThinLens:
        return ThinLens(self.phone_focal_length_m, self.phone_f_number)

    def phone_pixel_pitch_m(self, size: tuple[int, int] | None = None) -> float:
        w = (size or self.phone_size)[0]
        return self.phone_sensor_size_m[0] / w

    def phone_focus_model(self, size: tuple[int, int] | None = None) -> FocusModel | None:
        """The phone's true breathing at `size` (None when phone_breathing is off)."""
        if not self.phone_breathing:
            return None
        w, h = size or self.phone_size
        dx, dy = self.phone_principal_drift_per_diopter
        return thin_lens_model(self.phone_focal_length_m, self.phone_breathing_ref_diopters, dx * w, dy * h)

    def phone_camera_model(self, size: tuple[int, int] | None = None, focus_diopters: float | None = None) -> CameraModel:
        """The phone's pinhole + distortion model at `size` (default phone_size), focused at
        focus_diopters (None: the breathing reference, infinity by default)."""
        w, h = size or self.phone_size
        f_px = self.phone_focal_length_m / self.phone_pixel_pitch_m((w, h))
        cx = (w - 1) / 2 + self.phone_principal_offset[0] * w
        cy = (h - 1) / 2 + self.phone_principal_offset[1] * h
        K = np.array([[f_px, 0, cx], [0, f_px, cy], [0, 0, 1.0]])
        cam = CameraModel(K, np.asarray(self.phone_dist, dtype=np.float64), (w, h))
        fm = self.phone_focus_model((w, h))
        return cam if fm is None or focus_diopters is None else fm.camera_at(cam, float(focus_diopters))

    def sensor_camera_model(self) -> CameraModel:
        """The sensor color camera (depth is registered to it), 640 x 480."""
        p = self.sensor_preset
        K = np.array([[p.fx, 0, 319.5 + 1.3], [0, p.fx, 239.5 - 0.8], [0, 0, 1.0]])
        return CameraModel(K, np.asarray(p.dist, dtype=np.float64), (640, 480))

    def phone_camera(self) -> PhoneCamera:
        return PhoneCamera(
            focal_length_m=self.phone_focal_length_m,
            f_number=self.phone_f_number,
            sensor_size_m=tuple(self.phone_sensor_size_m),
            image_size=tuple(self.phone_size),
            min_focus_diopters=self.phone_min_focus_diopters,
            focus_calibration="CALIBRATED",
            timestamp_source="REALTIME",
        )


class SimRig:
    """A simulated sensor + phone sharing one scene, one time base and true clocks."""

    def __init__(self, config: RigConfig | None = None, t0_host_ns: int | None = None):
        self.config = config or RigConfig()
        cfg = self.config
        self.t0_host_ns = int(time.monotonic_ns() if t0_host_ns is None else t0_host_ns)
        rng = np.random.default_rng(cfg.seed)
        if isinstance(cfg.scene, Scene):
            self.scene = cfg.scene
        else:
            name = cfg.scene or ("close" if cfg.sensor == "d405" else "default")
            self.scene = make_scene(name, rng)
        seeds = rng.integers(0, 2**31, size=4)
        pc, sc = cfg.phone_clock, cfg.sensor_clock
        self.phone_clock = SimClock(pc.offset_ns, pc.drift_ppm, pc.jitter_ns, int(seeds[0]), self.t0_host_ns)
        self.sensor_clock = SimClock(sc.offset_ns, sc.drift_ppm, sc.jitter_ns, int(seeds[1]), self.t0_host_ns)
        self._seeds = seeds
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    # time and poses --------------------------------------------------------------------
    def scene_time_s(self, t_host_ns: int) -> float:
        return (int(t_host_ns) - self.t0_host_ns) * 1e-9

    def T_world_from_sensor(self, t_host_ns: int) -> np.ndarray:
        return self.scene.T_world_from_rig(self.scene_time_s(t_host_ns))

    def T_world_from_phone(self, t_host_ns: int) -> np.ndarray:
        return self.T_world_from_sensor(t_host_ns) @ invert_transform(self.config.T_phone_from_sensor)

    # cameras ---------------------------------------------------------------------------
    def phone_camera_model(self, focus_diopters: float | None = None) -> CameraModel:
        return self.config.phone_camera_model(focus_diopters=focus_diopters)

    def sensor_camera_model(self) -> CameraModel:
        return self.config.sensor_camera_model()

    def phone_camera(self) -> PhoneCamera:
        return self.config.phone_camera()

    def render_phone_sharp(self, t_host_ns: int, focus_diopters: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Sharp (rgb float32 (H, W, 3), depth_m (H, W)) seen by the phone at host time t_host_ns with
        its lens focused at focus_diopters (the breathing camera; None = the reference camera).

        Static scenes are rendered once per focus setting (treat the arrays as read-only)."""
        key = "phone" if focus_diopters is None or not self.config.phone_breathing else f"phone@{float(focus_diopters):.9g}"
        with self._lock:
            if self.scene.is_static and key in self._cache:
                return self._cache[key]
            out = self.scene.render(self.phone_camera_model(focus_diopters), self.T_world_from_phone(t_host_ns),
                                    self.scene_time_s(t_host_ns))
            if self.scene.is_static:
                self._cache[key] = out
            return out

    def render_sensor_sharp(self, t_host_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """Sharp (rgb, depth_m) seen by the sensor color camera at host time t_host_ns (cached if static)."""
        with self._lock:
            if self.scene.is_static and "sensor" in self._cache:
                return self._cache["sensor"]
            out = self.scene.render(self.sensor_camera_model(), self.T_world_from_sensor(t_host_ns), self.scene_time_s(t_host_ns))
            if self.scene.is_static:
                self._cache["sensor"] = out
            return out

    # devices ---------------------------------------------------------------------------
    def sensor(self, realtime: bool = True, max_frames: int | None = None):
        """A SimSensor (dfdcap.capture.base.Sensor) of this rig."""
        from dfdcap.sim.sensor import SimSensor

        return SimSensor(self, realtime=realtime, max_frames=max_frames, seed=int(self._seeds[2]))

    def phone(self):
        """A SimPhone (dfdcap.capture.base.Phone) of this rig."""
        from dfdcap.sim.phone import SimPhone

        return SimPhone(self, seed=int(self._seeds[3]))

    # truth -----------------------------------------------------------------------------
    def truth_rig(self) -> dict:
        """The content of truth/rig.json: both cameras, T_phone_from_sensor, the true clocks."""
        return {
            "phone": self.phone_camera_model().to_dict(),
            "sensor": self.sensor_camera_model().to_dict(),
            "T_phone_from_sensor": self.config.T_phone_from_sensor.tolist(),
            "clocks": {"phone": self.phone_clock.model_dict(), "sensor": self.sensor_clock.model_dict()},
            "phone_breathing": None if (fm := self.config.phone_focus_model()) is None else fm.to_dict(),
            "phone_lens": {
                "focal_length_m": self.config.phone_focal_length_m,
                "f_number": self.config.phone_f_number,
                "pixel_pitch_m": self.config.phone_pixel_pitch_m(),
            },
            "sensor_model": self.config.sensor_preset.model,
            "scene": self.scene.name,
            "seed": self.config.seed,
        }


_shared: dict[str, SimRig] = {}
_shared_lock = threading.Lock()


def shared_rig(config: RigConfig | None = None, key: str = "default") -> SimRig:
    """One SimRig per process and key, so that `open_sensor("sim")` and `open_phone("sim")`
    see the same scene, time base and clocks. A config given on first use defines it."""
    with _shared_lock:
        rig = _shared.get(key)
        if rig is None or (config is not None and rig.config is not config):
            rig = SimRig(config)
            _shared[key] = rig
        return rig
