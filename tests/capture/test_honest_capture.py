"""Capture on real recordings tells the truth (issue 11): the shared librealsense recording
records with its stale pair reported, invalid depth codes become no data, a D435-like file
without colour frames falls back to depth only, sensor-side losses are counted apart from the
recorder's, sim sessions' session.json holds nothing a real device could not know, and the
default storage format is compact, lossless in depth and readable by TUM tools."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from device_fakes import FakePhone
from conftest_sensors import private_openni_redist, real_rgbd_frames
from dfdcap.capture.sensor_models import DepthRule, clear_invalid_depth, depth_rule, known_latency_ns, sensor_facts
from dfdcap.capture.session import DeviceInfo, Session, SessionWriter
from dfdcap.lens import FocusSchedule

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
BAG = SHARED / "realsense" / "single_depth_color_640x480.bag"


# --- the per-model rule ---------------------------------------------------------------------------


class TestDepthRule:
    def test_d4xx_codes_and_range(self):
        assert depth_rule("Intel RealSense D435", 0.001) == DepthRule(10000, (65535,))
        assert depth_rule("Intel RealSense D405", 0.0001) == DepthRule(5000, (65535,))
        assert depth_rule("unknown thing", 0.001) == DepthRule(65535, ())
        assert depth_rule("oni File", 0.001, device_max_code=10000) == DepthRule(10000, ())  # OpenNI's own max

    def test_clear_invalid_depth(self):
        d = np.array([[0, 1, 9999, 10000], [10001, 65535, 5, 30000]], np.uint16)
        out, n = clear_invalid_depth(d, depth_rule("Intel RealSense D435", 0.001))
        assert n == 3 and out.tolist() == [[0, 1, 9999, 10000], [0, 0, 5, 0]]
        same, n = clear_invalid_depth(out, depth_rule("Intel RealSense D435", 0.001))
        assert n == 0 and same is out

    def test_no_latency_without_a_source(self):
        """Every table row states a source; no model (real or simulated) claims a latency today."""
        for model in ("Intel RealSense D405", "Intel RealSense D435", "PS1080", "SimXtion", "SimD405"):
            assert known_latency_ns(model) is None and sensor_facts(model).source


# --- the shared real RealSense recording ------------------------------------------------------------


@pytest.mark.skipif(not BAG.is_file(), reason="shared librealsense recording missing")
def test_shared_bag_records_with_its_stale_pair_reported(tmp_path, cli):
    pytest.importorskip("pyrealsense2")
    out = tmp_path / "s"
    code, stdout, stderr = cli("record", "--sensor", BAG, "--phone", "sim", "-o", out, "--stacks", "1",
                               "--steps", "2", "--fps", "20", "--phone-size", "64x48")
    assert code == 0, stderr
    s = Session(Path(stdout.splitlines()[0]))
    assert s.status == "complete" and len(s.sensor_frames) >= 1
    for r in s.sensor_frames:
        d = s.read_sensor_depth_m(r)
        assert d.max() <= 10.0  # the D435's documented range; no 65.5 m
    # the 268 ms gap between the frameset's depth (#170) and colour (#162): on screen and in session.json
    assert "268 ms" in stdout and "stale" in stdout and "268 ms" in stderr
    rec = s.meta["recorder"]
    assert rec["stale_pairs"] == 1 and rec["max_stale_gap_ms"] == pytest.approx(268.242, abs=0.01)
    rows = (s.path / "sensor" / "stale_pairs.csv").read_text().splitlines()
    assert rows[1].split(",") == ["170", "360981765000", "360713523000", "-268242000"]
    # a real sensor with the simulated phone: no truth describing a simulated sensor
    assert not (s.path / "truth").exists() and not s.has_truth
    assert "sensor_latency_ns" not in s.meta


def test_d435_file_without_colour_frames_records_depth_only(tmp_path, fake_phone):
    """A D435-like recording with a colour profile but no colour frames and no depth->colour
    extrinsics (librealsense: "Requested extrinsics are not available!"): depth only, a warning,
    and the D4xx invalid code 65535 stored as 0."""
    pytest.importorskip("pyrealsense2")
    from dfdcap.capture.realsense import RealSenseSensor, write_db3
    from dfdcap.capture.recorder import record_session

    depth_mm, rgb = real_rgbd_frames(6, (64, 48))
    depth_mm[:, :4, :4] = 65535
    intr = dict(fx=60.0, fy=60.0, ppx=31.5, ppy=23.5)
    path = tmp_path / "d435.db3"
    write_db3(path, depth_mm, rgb, intr, intr, list(np.eye(3).ravel()), [0.015, 0, 0], 0.001, serial="D435-X",
              name="Intel RealSense D435", color_frames=False, extrinsics=False)
    with RealSenseSensor(str(path)) as sensor:
        assert any("depth only" in n and "extrinsics" in n for n in sensor.notes)
        session = record_session(sensor, fake_phone, FocusSchedule(0.5, 2.0, steps=2, ramps=1), tmp_path / "out",
                                 "nocolour", on_full="wait", play_to_end=True, progress=False, tail_s=0.0)
    s = Session(session)
    assert s.status == "complete" and len(s.sensor_frames) >= 3
    intr_s = s.sensor_intrinsics
    assert intr_s.depth_registered_to_color and np.allclose(intr_s.color.K, intr_s.depth.K)
    for r in s.sensor_frames:
        raw = s.read_sensor_depth_raw(r)
        expected = np.where(depth_mm[r.index] > 10000, 0, depth_mm[r.index])
        assert np.array_equal(raw, expected) and raw[:4, :4].max() == 0
        assert s.read_sensor_rgb(r).shape == (48, 64, 3)
    assert any("extrinsics" in n for n in s.meta["recorder"]["notes"])
    assert s.meta["recorder"]["depth_pixels_cleared"] >= 16 * len(s.sensor_frames)


# --- sensor-side losses ----------------------------------------------------------------------------


def test_sim_sensor_drops_are_reported_apart_from_the_recorder(tmp_path):
    """The simulated driver loses frames (drop probability 0.5; with seed 3 its first two
    delivered frames are 0 and 2, so frame 1 is lost however many frames follow): record
    counts them as sensor-side losses by frame number and by the device counter, 0 recorder drops."""
    from dfdcap.capture.recorder import RecordStats, record_session
    from dfdcap.sim.rig import RigConfig, SimRig

    rig = SimRig(RigConfig(seed=3, sensor_drop_prob=0.5, scene="wall"))
    stats = RecordStats()
    with rig.sensor(realtime=False) as sensor:
        path = record_session(sensor, FakePhone(), FocusSchedule(0.5, 2.0, steps=2, ramps=1), tmp_path, "drops",
                              phone_fps=20.0, tail_s=0.0, on_full="wait", progress=False, stats=stats)
        device_dropped = sensor.dropped
    s = Session(path)
    idx = [r.index for r in s.sensor_frames]
    assert idx[:2] == [0, 2]
    missing = (idx[-1] - idx[0] + 1) - len(idx)
    assert stats.recorder_dropped == 0 and stats.sensor_device_dropped == device_dropped > 0
    assert stats.sensor_lost_frame_numbers == missing > 0
    assert stats.sensor_lost == max(missing, stats.sensor_lost_timestamps, device_dropped)
    assert f"lost at the sensor {stats.sensor_lost} " in stats.summary() and "dropped by the recorder 0" in stats.summary()
    assert s.meta["recorder"]["sensor_lost"] == stats.sensor_lost and s.meta["recorder"]["recorder_dropped"] == 0


def test_oni_with_a_timestamp_gap_reports_lost_frames(tmp_path, cli):
    """An .oni whose device stamps skip two frame periods (frames lost by the device): record's
    output names the loss."""
    private_openni_redist(tmp_path / "redist")
    from dfdcap.capture.oni_file import write_oni

    depth, rgb = real_rgbd_frames(8, (64, 48))
    t_us = (np.array([0, 1, 2, 3, 6, 7, 8, 9]) * 1e6 / 30).astype(np.int64)
    oni = write_oni(tmp_path / "gap.oni", depth, rgb, t_us)
    code, stdout, stderr = cli("record", "--sensor", oni, "--phone", "sim", "-o", tmp_path / "s", "--stacks", "1",
                               "--steps", "2", "--fps", "20", "--phone-size", "64x48")
    assert code == 0, stderr
    assert "lost at the sensor 2 (frame numbers 0, timestamps 2, device counter 0)" in stdout
    assert "dropped by the recorder 0" in stdout
    s = Session(Path(stdout.splitlines()[0]))
    assert len(s.sensor_frames) == 8 and s.meta["recorder"]["sensor_lost_timestamps"] == 2


# --- storage --------------------------------------------------------------------------------------


def test_default_format_is_compact_lossless_depth_and_tum_readable(tmp_path):
    """640x480 real frames in the default format: <= 0.5 MB per pair, depth bit-exact, colour a
    quality-95 JPEG close to the source, rgb.txt / depth.txt name existing files."""
    import cv2

    from dfdcap.capture.recorder import DEFAULT_SENSOR_FORMAT, sensor_format

    depth, rgb = real_rgbd_frames(3, (640, 480))
    dev = DeviceInfo("test", "T", "0")
    w = SessionWriter.create(tmp_path, "fmt", dev, dev)
    w.sensor_format = sensor_format(DEFAULT_SENSOR_FORMAT)
    for i in range(3):
        w.write_sensor_frame(i, 1_000_000_000 + i, i, rgb[i], depth[i])
    w.finish("complete")
    s = Session(w.path)
    size = 0
    for r in s.sensor_frames:
        assert r.rgb.endswith(".jpg") and r.depth.endswith(".png")
        assert np.array_equal(s.read_sensor_depth_raw(r), depth[r.index])
        assert np.abs(s.read_sensor_rgb(r).astype(int) - rgb[r.index]).mean() < 3.0
        size += (s.path / "sensor" / r.rgb).stat().st_size + (s.path / "sensor" / r.depth).stat().st_size
    assert size / 3 <= 0.5e6
    for name in ("rgb.txt", "depth.txt"):  # TUM form: "timestamp filename", files exist
        lines = [ln.split() for ln in (s.path / "sensor" / name).read_text().splitlines() if not ln.startswith("#")]
        assert len(lines) == 3 and all((s.path / "sensor" / f).is_file() for _, f in lines)
        assert cv2.imread(str(s.path / "sensor" / lines[0][1]), cv2.IMREAD_UNCHANGED) is not None


def test_older_png_presets_still_work(cli, tmp_path):
    from dfdcap.capture.recorder import sensor_format_of
    from dfdcap.errors import SessionError

    assert sensor_format_of(None, "fast").name == "fast" and sensor_format_of("jpeg", "compact").name == "compact"
    assert sensor_format_of("png").rgb_ext == ".png" and sensor_format_of(None).rgb_ext == ".jpg"
    with pytest.raises(SessionError, match="disagree"):
        sensor_format_of("png", "fast")
    code, _, stderr = cli("record", "--sensor", "sim", "--png", "huge", "-o", tmp_path)
    assert code == 1 and "huge" in stderr and not any(tmp_path.iterdir())


# --- no truth in session.json ---------------------------------------------------------------------


def _numbers(obj) -> list[float]:
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in _numbers(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in _numbers(v)]
    return [float(obj)] if isinstance(obj, (int, float)) and not isinstance(obj, bool) else []


def _keys(obj, prefix="") -> list[str]:
    if isinstance(obj, dict):
        return [k for key, v in obj.items() for k in [prefix + key, *_keys(v, prefix + key + ".")]]
    return []


def assert_session_json_holds_no_truth(s: Session, config) -> None:
    """session.json's keys are what a real recording has, and none of its numbers is one of
    the simulator's hidden parameters (latencies, clocks, poses, true clocks of truth/rig.json)."""
    meta = json.loads((s.path / "session.json").read_text())
    allowed_top = {"schema", "status", "created_utc", "name", "rig", "focus_schedule", "host_clock",
                   "dfdcap_version", "phone_fps", "recorder", "finished_utc", "message"}
    assert set(meta) <= allowed_top, set(meta) - allowed_top
    for key in _keys(meta):
        leaf = key.rsplit(".", 1)[-1]
        assert not any(word in leaf for word in ("latency", "truth", "clock_", "drift", "offset", "T_", "pose")), key
    hidden = {float(config.sensor_min_latency_ns), *map(float, config.sensor_latency_ns),
              float(config.sensor_clock.offset_ns), float(config.sensor_clock.drift_ppm),
              float(config.sensor_clock.jitter_ns), float(config.phone_clock.offset_ns),
              float(config.phone_clock.drift_ppm), float(config.phone_clock.jitter_ns)}
    hidden |= {x for x in _numbers(s.truth_rig()["clocks"]) if abs(x) > 1}
    hidden |= {x for x in _numbers(s.truth_rig()["T_phone_from_sensor"]) if x not in (0.0, 1.0)}
    leaked = [x for x in _numbers(meta) if x in hidden]
    assert not leaked, leaked


def test_sim_session_json_holds_nothing_a_real_device_could_not_know(tmp_path, cli):
    from dfdcap.sim.rig import RigConfig

    code, stdout, stderr = cli("record", "--sensor", "sim", "--phone", "sim", "-o", tmp_path, "--stacks", "1",
                               "--steps", "2", "--fps", "20", "--phone-size", "64x48", "--seed", "5")
    assert code == 0, stderr
    s = Session(Path(stdout.splitlines()[0]))
    assert s.has_truth  # the fully simulated rig keeps its truth/ (tests and dataset checks use it)
    assert "sensor_latency_ns" not in s.meta
    assert_session_json_holds_no_truth(s, RigConfig(seed=5))


@pytest.mark.parametrize("suffix", [".bag", ".db3", ".oni"])
def test_broken_recording_file_is_one_line_device_error(tmp_path, cli, suffix):
    """A file the vendor library cannot read: exit 1, one line naming the file, no traceback."""
    if suffix == ".oni":
        private_openni_redist(tmp_path / "redist")
    else:
        pytest.importorskip("pyrealsense2")
    bad = tmp_path / f"broken{suffix}"
    bad.write_bytes(b"not a recording\n" * 64)
    code, stdout, stderr = cli("record", "--sensor", bad, "--phone", "sim", "-o", tmp_path / "s")
    assert code == 1 and str(bad) in stderr and "Traceback" not in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1
