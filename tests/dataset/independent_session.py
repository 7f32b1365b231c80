"""An independent session generator: DESIGN.md's session layout written with numpy, cv2 and json
only (none of dfdcap's writers, recorder or simulator), plus the truth to check sync and the dataset.

What it holds that dfdcap's own writers do not produce: far->near focus ramps (diopters increasing,
as phones count focus), no optional session.json keys (no recording.lock, sensor_latency_ns,
phone_fps or recorder stats), 0.1 mm depth units (depth_scale_m 0.0001, as a D405), a distorted
phone camera, JPEG images, a 4 s sensor stream whose arrival latency is 2 ms + a heavy tail
(lognormal body, Pareto spikes that queue the frames behind them), clocks with offsets and drift,
and clock probes whose up-link is slower than the down-link. The scene is dataset_scene's box in
front of a slanted plane (ray cast exactly), so the true phone-view depth is known.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from dataset_scene import PHONE, SENSOR, T_PS, render_depth

from dfdcap.sync.clock import ClockModel

MS = 1_000_000
DEPTH_SCALE_M = 0.0001
SENSOR_FIXED_LATENCY_NS = 2 * MS  # the transport minimum; the tail comes on top
SENSOR_PERIOD_NS = 33_333_333
PHONE_PERIOD_NS = 100 * MS


@dataclass(frozen=True)
class Truth:
    phone_clock: ClockModel  # phone clock -> host, DESIGN.md form
    sensor_clock: ClockModel  # sensor device clock -> host capture time
    sensor_t_device_ns: np.ndarray  # (M,)
    phone_depth_m: np.ndarray  # (H, W) float32: the scene is static, one depth for every phone frame


def _csv(path: Path, header: str, rows) -> None:
    path.write_text(header + "\n" + "".join(",".join(str(v) for v in r) + "\n" for r in rows))


def _json(doc: dict, path: Path) -> None:
    path.write_text(json.dumps(doc))


def _jpg(path: Path, rgb: np.ndarray) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95]):
        raise OSError(f"cannot write {path}")
    return path.name


def _camera(cam) -> dict:
    return {"K": np.asarray(cam.K).tolist(), "dist": np.asarray(cam.dist).tolist(), "size": list(cam.size)}


def _sensor_stream(rng, h0: int, clock: ClockModel, seconds: float = 4.0):
    """(capture host, device stamp, arrival host) of a 30 fps stream: arrival = capture + 2 ms +
    lognormal (median 0.4 ms) with 4 % Pareto spikes of 5-200 ms; frames queue behind a late one."""
    n = int(round(seconds * 1e9 / SENSOR_PERIOD_NS))
    capture = h0 + np.arange(n, dtype=np.int64) * SENSOR_PERIOD_NS + rng.integers(-200_000, 200_000, n)
    tail = rng.lognormal(np.log(0.4 * MS), 0.9, n)
    spikes = rng.random(n) < 0.04
    tail[spikes] += np.minimum(5 * MS * (1 + rng.pareto(1.5, spikes.sum())), 200 * MS)
    arrival = capture + SENSOR_FIXED_LATENCY_NS + tail.astype(np.int64)
    for k in range(1, n):  # one FIFO: a frame arrives after the one before it (>= 50 us later)
        arrival[k] = max(arrival[k], arrival[k - 1] + 50_000)
    return capture, clock.to_dev_ns(capture), arrival


def _probes(rng, clock: ClockModel, start: int, stop: int) -> np.ndarray:
    """Round trips every 100 ms: up-link 0.3 ms + Exp(1.5 ms), down-link 0.2 ms + Exp(0.3 ms)."""
    send = np.arange(start, stop, 100 * MS, dtype=np.int64)
    up = (0.3 * MS + rng.exponential(1.5 * MS, send.size)).astype(np.int64)
    down = (0.2 * MS + rng.exponential(0.3 * MS, send.size)).astype(np.int64)
    return np.stack([send, clock.to_dev_ns(send + up), send + up + down], axis=1)


def write_independent_session(
    out_dir: Path,
    name: str = "foreign",
    ramps: int = 4,
    steps: int = 5,
    partial_last: int = 0,
    depth_dtype=np.uint16,
    seed: int = 0,
) -> tuple[Path, Truth]:
    """Write one session folder under out_dir; returns (its path, the truth).

    ramps x steps far->near phone frames at 10 fps, then `partial_last` frames of one more ramp
    (then session.json says "interrupted", as a stopped recording would). depth_dtype: np.uint8
    writes 8-bit depth PNGs (a broken export) for the validation test."""
    rng = np.random.default_rng(seed)
    path = Path(out_dir) / f"20260101T000000_000000Z_{name}"
    for sub in ("sensor/rgb", "sensor/depth", "phone/frames", "clock"):
        (path / sub).mkdir(parents=True)
    h0 = 2_000_000_000_000 + int(rng.integers(0, 10**9))
    phone_clock = ClockModel(t0_dev_ns=h0 - 3_456_789_012, t0_host_ns=h0, drift_ppm=45.0)
    sensor_clock = ClockModel(t0_dev_ns=987_654_321, t0_host_ns=h0, drift_ppm=-30.0)

    depth_s, _ = render_depth(SENSOR, np.eye(4))
    depth_p, _ = render_depth(PHONE, T_PS)
    raw = np.round(depth_s / DEPTH_SCALE_M).astype(np.uint16)
    if depth_dtype == np.uint8:
        raw = (raw >> 8).astype(np.uint8)
    rgb_s = (rng.random((SENSOR.height, SENSOR.width, 3)) * 255).astype(np.uint8)
    capture, t_dev, arrival = _sensor_stream(rng, h0, sensor_clock)
    rgb_bytes = cv2.imencode(".jpg", rgb_s[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    depth_bytes = cv2.imencode(".png", raw)[1].tobytes()  # static scene: every frame the same images
    rows = []
    for k in range(capture.size):
        t = int(arrival[k])
        (path / "sensor" / "rgb" / f"{t}.jpg").write_bytes(rgb_bytes)
        (path / "sensor" / "depth" / f"{t}.png").write_bytes(depth_bytes)
        rows.append((k, t, int(t_dev[k]), f"rgb/{t}.jpg", f"depth/{t}.png"))
    _csv(path / "sensor" / "frames.csv", "index,t_host_ns,t_device_ns,rgb,depth", rows)
    for kind in ("rgb", "depth"):
        (path / "sensor" / f"{kind}.txt").write_text(
            f"# {kind}\n# timestamp filename\n" + "".join(f"{r[1] / 1e9:.6f} {r[3 if kind == 'rgb' else 4]}\n" for r in rows))
    _json({"color": _camera(SENSOR), "depth": _camera(SENSOR), "depth_scale_m": DEPTH_SCALE_M,
           "depth_registered_to_color": True}, path / "sensor" / "intrinsics.json")

    diopters = np.linspace(0.4, 2.0, steps)  # far (2.5 m) -> near (0.5 m)
    n_phone = ramps * steps + partial_last
    t_phone_host = h0 + 500 * MS + np.arange(n_phone, dtype=np.int64) * PHONE_PERIOD_NS
    t_phone = phone_clock.to_dev_ns(t_phone_host)
    rows = []
    for i in range(n_phone):
        r, s = divmod(i, steps)
        img = (rng.random((PHONE.height, PHONE.width, 3)) * 255).astype(np.uint8)
        _jpg(path / "phone" / "frames" / f"{i}.jpg", img)
        d = float(diopters[s])
        rows.append((i, int(t_phone[i]), d, round(d + 0.002, 6), 10_000_000, 200, "STATIONARY", r, s, f"frames/{i}.jpg"))
    _csv(path / "phone" / "frames.csv",
         "index,t_phone_ns,focus_diopters_requested,focus_diopters,exposure_ns,iso,lens_state,ramp,step,file", rows)
    _json({"focal_length_m": 4.0e-3, "f_number": 1.8, "sensor_size_m": [4.8e-3, 2.7e-3], "image_size": list(PHONE.size),
           "min_focus_diopters": 10.0, "focus_calibration": "CALIBRATED", "timestamp_source": "REALTIME"},
          path / "phone" / "camera.json")

    probes = _probes(rng, phone_clock, h0 - 300 * MS, int(arrival[-1]) + 300 * MS)
    _csv(path / "clock" / "phone_probes.csv", "t_host_send_ns,t_phone_ns,t_host_recv_ns", probes.tolist())
    _json({
        "schema": 1, "status": "interrupted" if partial_last else "complete", "created_utc": "2026-01-01T00:00:00+00:00",
        "name": name, "rig": {"sensor": {"kind": "realsense", "model": "D405", "serial": "000"},
                              "phone": {"kind": "adb", "model": "Pixel", "serial": "abc"}},
        "focus_schedule": {"near_m": 0.5, "far_m": 2.5, "steps": steps, "ramps": ramps + (1 if partial_last else 0)},
        "host_clock": "CLOCK_MONOTONIC", "dfdcap_version": "independent-generator",
    }, path / "session.json")
    return path, Truth(phone_clock, sensor_clock, t_dev, depth_p)


def write_calibration(path: Path) -> Path:
    """A calibration file of the true rig in the documented format (as a calibration tool would write it)."""
    cam = lambda c: _camera(c) | {"rms_px": 0.2, "std": {}, "per_view_px": []}  # noqa: E731
    _json({"schema": 1, "board": {"type": "checkerboard", "cols": 9, "rows": 6, "square_m": 0.025},
           "phone": cam(PHONE), "sensor": cam(SENSOR),
           "stereo": {"rms_px": 0.3, "per_view_px": [], "views_used": 20, "views_dropped": []},
           "T_phone_from_sensor": np.asarray(T_PS).tolist(), "versions": {}}, path)
    return path
