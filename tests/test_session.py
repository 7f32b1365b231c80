import numpy as np
import pytest

from dfdcap.cameras import CameraModel
from dfdcap.capture.session import (
    ClockProbe, DeviceInfo, PhoneCamera, PhoneFrameRecord, SensorIntrinsics, Session, SessionWriter,
)
from dfdcap.errors import SessionError


def _writer(tmp_path):
    return SessionWriter.create(tmp_path, "t", DeviceInfo("sim", "x", "1"), DeviceInfo("sim", "p", "2"), {"steps": 2})


def test_write_then_read(tmp_path):
    cam = CameraModel(np.array([[500.0, 0, 319.5], [0, 500, 239.5], [0, 0, 1]]), np.zeros(5), (640, 480))
    rng = np.random.default_rng(0)
    depth = rng.integers(0, 4000, (480, 640)).astype(np.uint16)
    rgb = rng.integers(0, 255, (480, 640, 3)).astype(np.uint8)
    with _writer(tmp_path) as w:
        w.write_sensor_intrinsics(SensorIntrinsics(cam, cam, 0.001, True))
        w.write_sensor_frame(0, 1_000_000_000, 5, rgb, depth)
        w.write_phone_camera(PhoneCamera(0.0042, 1.7, (0.00564, 0.00423), (1008, 756), 10.0))
        w.write_phone_frame(PhoneFrameRecord(0, 7, 10.0, 9.9, 10_000_000, 100, "STATIONARY", 0, 0, "frames/0.png"), rgb)
        w.append_probe(ClockProbe(1, 2, 3))
    s = Session(w.path)
    assert s.status == "complete"
    assert [r.index for r in s.sensor_frames] == [0]
    np.testing.assert_array_equal(s.read_sensor_depth_raw(s.sensor_frames[0]), depth)
    np.testing.assert_array_equal(s.read_sensor_rgb(s.sensor_frames[0]), rgb)
    np.testing.assert_allclose(s.read_sensor_depth_m(s.sensor_frames[0]), depth * np.float32(0.001))
    np.testing.assert_array_equal(s.read_phone_frame(s.phone_frames[0]), rgb)
    assert s.phone_frames[0].focus_m == pytest.approx(1 / 9.9)
    assert s.phone_camera.pixel_pitch_m == pytest.approx(0.00564 / 1008)
    np.testing.assert_array_equal(s.probes(), [[1, 2, 3]])
    lines = (w.path / "sensor" / "rgb.txt").read_text().splitlines()
    assert lines[-1] == "1.000000 rgb/1000000000.png"


def test_exception_marks_interrupted_and_keeps_frames(tmp_path):
    depth = np.ones((4, 4), np.uint16)
    with pytest.raises(KeyboardInterrupt):
        with _writer(tmp_path) as w:
            w.write_sensor_frame(0, 10, 1, np.zeros((4, 4, 3), np.uint8), depth)
            raise KeyboardInterrupt
    s = Session(w.path)
    assert s.status == "interrupted" and len(s.sensor_frames) == 1


def test_torn_last_line_is_skipped_but_torn_middle_is_an_error(tmp_path):
    w = _writer(tmp_path)
    for i in range(2):
        w.write_sensor_frame(i, 10 + i, i, np.zeros((4, 4, 3), np.uint8), np.ones((4, 4), np.uint16))
    w.finish("interrupted")
    csv = w.path / "sensor" / "frames.csv"
    csv.write_text(csv.read_text() + "2,12,2,rgb/12.pn")
    assert len(Session(w.path).sensor_frames) == 2
    lines = csv.read_text().splitlines()
    lines.insert(1, "garbage")
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(SessionError, match="frames.csv:2"):
        Session(w.path)


def test_not_a_session(tmp_path):
    with pytest.raises(SessionError, match="no session.json"):
        Session(tmp_path)


def test_depth_must_be_uint16(tmp_path):
    with pytest.raises(SessionError, match="uint16"):
        _writer(tmp_path).write_sensor_frame(0, 1, 1, np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), np.float32))


def test_failed_depth_write_leaves_no_colour_file(tmp_path):
    """A full disk between a frame's two files left a colour image with no depth and no index row."""
    from dfdcap.errors import DfdcapError

    with pytest.raises(KeyboardInterrupt):
        with _writer(tmp_path) as w:
            (w.path / "sensor" / "depth" / "10.png").mkdir(parents=True)  # the depth file cannot be written
            with pytest.raises(DfdcapError, match="10.png"):
                w.write_sensor_frame(0, 10, 1, np.zeros((4, 4, 3), np.uint8), np.ones((4, 4), np.uint16))
            raise KeyboardInterrupt
    assert not any((w.path / "sensor" / "rgb").iterdir())
    assert Session(w.path).sensor_frames == []
