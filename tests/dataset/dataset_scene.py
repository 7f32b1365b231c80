"""A tiny analytic scene for the dataset tests: a box in front of a slanted plane, ray cast exactly,
and a session folder of it written with the real SessionWriter."""

from __future__ import annotations

import numpy as np

from pathlib import Path

from dfdcap.cameras import CameraModel, invert_transform, make_transform
from dfdcap.capture.session import (
    ClockProbe, DeviceInfo, PhoneCamera, PhoneFrameRecord, SensorIntrinsics, SessionWriter,
)

BOX_MIN = np.array([-0.18, -0.12, 0.9])
BOX_MAX = np.array([0.12, 0.14, 1.2])


def render_depth(cam: CameraModel, T_cam_from_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) float32 z-depth in `cam`'s frame of the scene, and (H, W) int8 surface id (1 box, 0 plane).

    World: the plane z = 1.6 + 0.25 x (metres), and an axis-aligned box BOX_MIN..BOX_MAX.
    """
    rays = cam.pixel_rays()
    d_cam = np.concatenate([rays, np.ones(rays.shape[:2] + (1,))], axis=-1)  # (H, W, 3), z = 1
    T_wc = invert_transform(T_cam_from_world)
    o = T_wc[:3, 3]
    d = d_cam @ T_wc[:3, :3].T
    # plane: z - 0.25 x = 1.6
    n = np.array([-0.25, 0.0, 1.0])
    s_plane = (1.6 - o @ n) / (d @ n)
    with np.errstate(divide="ignore", invalid="ignore"):
        t0 = (BOX_MIN - o) / d
        t1 = (BOX_MAX - o) / d
    tmin = np.nanmax(np.minimum(t0, t1), axis=-1)
    tmax = np.nanmin(np.maximum(t0, t1), axis=-1)
    hit_box = (tmax >= tmin) & (tmin > 0) & (tmin < s_plane)
    s = np.where(hit_box, tmin, s_plane)  # ray parameter; z in camera frame = s (d_cam z = 1)
    return s.astype(np.float32), hit_box.astype(np.int8)


SENSOR = CameraModel(np.array([[262.5, 0, 159.5], [0, 262.5, 119.5], [0, 0, 1]]), np.zeros(5), (320, 240))
PHONE = CameraModel(
    np.array([[400.0, 0, 239.5], [0, 400.0, 134.5], [0, 0, 1]]), np.array([0.06, -0.03, 0.0005, -0.0005, 0.0]), (480, 270)
)
T_PS = make_transform(np.array([0.01, -0.02, 0.01]), np.array([-0.05, 0.008, 0.004]))
PHONE_OFFSET_NS = 7_123_456_789  # phone clock = host clock - offset
DEPTH_SCALE_M = 0.001


def write_session(out_dir: Path, name: str, ramps: int = 3, steps: int = 5, phone_frames: bool = True) -> Path:
    depth_s, _ = render_depth(SENSOR, np.eye(4))
    depth_p, _ = render_depth(PHONE, T_PS)
    rng = np.random.default_rng(sum(map(ord, name)))
    w = SessionWriter.create(out_dir, name, DeviceInfo("sim", "box", "0"), DeviceInfo("sim", "box", "1"))
    with w:
        w.write_sensor_intrinsics(SensorIntrinsics(SENSOR, SENSOR, DEPTH_SCALE_M, True))
        w.write_phone_camera(PhoneCamera(4.0e-3, 1.8, (4.8e-3, 2.7e-3), PHONE.size, 10.0))
        t0 = 1_000_000_000_000
        n_sensor = ramps * steps * 3 + 6
        raw = np.round(depth_s / DEPTH_SCALE_M).astype(np.uint16)
        rgb_s = (rng.random((240, 320, 3)) * 255).astype(np.uint8)
        for k in range(n_sensor):
            t = t0 + k * 33_333_333
            w.write_sensor_frame(k, t + int(rng.integers(0, 2_000_000)), t - 3_000_000_000, rgb_s, raw)
        for k in range(40):
            send = t0 + k * 50_000_000
            w.append_probe(ClockProbe(send, send + 400_000 - PHONE_OFFSET_NS, send + 800_000))
        if phone_frames:
            focus_d = 1.0 / np.linspace(0.5, 2.5, steps)
            idx = 0
            for r in range(ramps):
                for s in range(steps):
                    t_host = t0 + 50_000_000 + idx * 100_000_000
                    rec = PhoneFrameRecord(idx, t_host - PHONE_OFFSET_NS, focus_d[s], focus_d[s], 10_000_000, 100,
                                           "STATIONARY", r, s, f"frames/{idx}.png")
                    img = (rng.random((270, 480, 3)) * 255).astype(np.uint8)
                    w.write_phone_frame(rec, img)
                    w.write_truth_phone_depth(idx, depth_p)
                    idx += 1
        clock = {"t0_dev_ns": 0, "t0_host_ns": PHONE_OFFSET_NS, "drift_ppm": 0.0, "residual_ns": 0.0}
        w.write_truth_rig({
            "phone": PHONE.to_dict(), "sensor": SENSOR.to_dict(), "T_phone_from_sensor": T_PS.tolist(),
            "clocks": {"phone": clock, "sensor": {"t0_dev_ns": 0, "t0_host_ns": 0, "drift_ppm": 0.0, "residual_ns": 0.0}},
        })
    return w.path
