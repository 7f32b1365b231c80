"""RealSense with the real librealsense and no camera: a virtual camera (rs.software_device)
with real RGB-D content is recorded to .db3 by rs.recorder and played back through
RealSenseSensor: frames, timestamps, intrinsics, extrinsics and depth units come back as injected."""

from __future__ import annotations


import numpy as np
import pytest

from conftest_sensors import real_rgbd_frames, record_virtual_realsense
from dfdcap.errors import DeviceError

rs = pytest.importorskip("pyrealsense2")

N = 20
DEPTH_INTR = dict(fx=150.0, fy=151.0, ppx=79.5, ppy=60.25, coeffs=[0.05, -0.01, 0.001, 0.002, 0.003])
COLOR_INTR = dict(fx=140.0, fy=141.5, ppx=80.5, ppy=59.0, coeffs=[0.0] * 5)
ANGLE = np.radians(2.0)
R_ROWMAJOR = np.array([[np.cos(ANGLE), -np.sin(ANGLE), 0], [np.sin(ANGLE), np.cos(ANGLE), 0], [0, 0, 1.0]])
T_M = [0.018, -0.002, 0.0005]


@pytest.fixture(scope="module")
def db3(tmp_path_factory):
    depth_mm, rgb = real_rgbd_frames(N, (160, 120))
    depth = (depth_mm.astype(np.uint32) * 10).clip(0, 65535).astype(np.uint16)  # 100 um units, as a D405
    path = tmp_path_factory.mktemp("rs") / "virtual.db3"
    DEPTH_INTR["model"] = rs.distortion.brown_conrady
    record_virtual_realsense(path, depth, rgb, DEPTH_INTR, COLOR_INTR, R_ROWMAJOR.T.ravel().tolist(), T_M, 0.0001)
    return path, depth, rgb


class TestPlayback:
    def test_frames_come_back_as_injected(self, db3):
        from dfdcap.capture.realsense import RealSenseSensor

        path, depth, rgb = db3
        with RealSenseSensor(str(path), align=False) as sensor:
            assert sensor.is_file
            got = list(sensor.frames())
        # every frame from the first delivered one on; librealsense's pipeline may drop the first
        # framesets of a file (DEVICE-FACTS.md; seen: up to 4 frames on a loaded 2-core machine); after it, none
        idx = [f.index for f in got]
        assert idx[0] <= N // 2 and idx == list(range(idx[0], N))
        for f in got:
            assert np.array_equal(f.depth, depth[f.index])
            assert np.array_equal(f.rgb, rgb[f.index])
            assert abs(f.t_device_ns - f.index * 1e9 / 30) <= 1000  # ms timestamps, rounded to ns
        assert sensor.timestamp_domain == "hardware_clock"

    def test_intrinsics_extrinsics_depth_units(self, db3):
        from dfdcap.capture.realsense import RealSenseSensor

        path, _, _ = db3
        with RealSenseSensor(str(path), align=False) as sensor:
            intr, info = sensor.intrinsics, sensor.info
        assert intr.depth_scale_m == 0.0001
        assert not intr.depth_registered_to_color
        for cam, d in ((intr.depth, DEPTH_INTR), (intr.color, COLOR_INTR)):
            assert cam.size == (160, 120)
            assert cam.K[0, 0] == pytest.approx(d["fx"]) and cam.K[1, 1] == pytest.approx(d["fy"])
            assert cam.K[0, 2] == pytest.approx(d["ppx"]) and cam.K[1, 2] == pytest.approx(d["ppy"])
            assert np.allclose(cam.dist, d["coeffs"], atol=1e-7)
        # T_color_from_depth agrees with librealsense's own transform of a point
        ext = rs.extrinsics()
        ext.rotation, ext.translation = R_ROWMAJOR.T.ravel().tolist(), T_M
        p = [0.3, -0.2, 1.1]
        expected = rs.rs2_transform_point_to_point(ext, p)
        got = intr.T_color_from_depth @ np.array(p + [1.0])
        assert np.allclose(got[:3], expected, atol=1e-6)
        assert np.allclose(intr.T_color_from_depth[:3, :3], R_ROWMAJOR, atol=1e-6)
        assert info.kind == "realsense-file" and info.serial == "VIRT-405" and "D405" in info.model

    def test_aligned_plane_keeps_its_depth(self, tmp_path):
        """Depth aligned to a colour camera of another size, shifted sideways: a fronto-parallel
        plane must come out at the colour size with its depth value unchanged."""
        from dfdcap.capture.realsense import RealSenseSensor

        n = 10
        depth = np.full((n, 60, 80), 5000, np.uint16)  # 0.5 m at 100 um
        rgb = np.zeros((n, 72, 96, 3), np.uint8)
        rgb[..., 1] = np.arange(n, dtype=np.uint8)[:, None, None] * 20
        path = tmp_path / "plane.db3"
        record_virtual_realsense(path, depth, rgb, dict(fx=70.0, fy=70.0, ppx=39.5, ppy=29.5),
                                 dict(fx=85.0, fy=85.0, ppx=47.5, ppy=35.5), np.eye(3).ravel().tolist(),
                                 [0.01, 0.0, 0.0], 0.0001)
        with RealSenseSensor(str(path)) as sensor:
            got = list(sensor.frames())
            assert sensor.intrinsics.depth_registered_to_color
        # under load librealsense's playback may skip the first framesets (DEVICE-FACTS.md);
        # frame-exact playback is checked above, this test is about alignment
        assert len(got) >= 3
        for f in got:
            assert f.depth.shape == (72, 96) and f.rgb.shape == (72, 96, 3)
            valid = f.depth > 0
            assert valid.mean() > 0.5
            assert np.all(f.depth[valid] == 5000)
            assert np.all(f.rgb[..., 1] == f.index * 20)


class TestErrors:
    def test_missing_recording(self, tmp_path):
        from dfdcap.capture.realsense import RealSenseSensor

        with pytest.raises(DeviceError, match="not found"):
            RealSenseSensor(str(tmp_path / "none.db3"))

    def test_no_camera_fails_fast(self, monkeypatch):
        """pipeline.start() would block ~15 s without a camera; the device list is checked first,
        so no pipeline is ever made (checked by what is called, not by a clock)."""
        import pyrealsense2 as rs

        from dfdcap.capture.realsense import RealSenseSensor, list_realsense

        if list_realsense():
            pytest.skip("a RealSense camera is connected")

        def no_pipeline(*a, **k):
            raise AssertionError("a pipeline was made before the device list was checked")

        monkeypatch.setattr(rs, "pipeline", no_pipeline)
        with pytest.raises(DeviceError, match="no RealSense camera connected"):
            RealSenseSensor(None)
        with pytest.raises(DeviceError, match="no RealSense camera connected"):
            RealSenseSensor("123456789")


@pytest.mark.hardware
def test_live_camera_streams_aligned_frames():
    """Needs a RealSense camera: 10 aligned frames with increasing device timestamps."""
    from dfdcap.capture.realsense import RealSenseSensor

    with RealSenseSensor(None) as sensor:
        it = sensor.frames()
        got = [next(it) for _ in range(10)]
        it.close()
    assert all(f.depth.shape == f.rgb.shape[:2] for f in got)
    assert np.all(np.diff([f.t_device_ns for f in got]) > 0)
    assert sensor.timestamp_domain in ("hardware_clock", "global_time", "system_time")


def test_session_from_db3_equals_source(tmp_path, db3, fake_phone):
    """Lossless format: the session holds the file's frames, except depth beyond the D405's
    documented 0.5 m range and its 65535 code, which become 0 (no data)."""
    from dfdcap.capture.realsense import RealSenseSensor
    from dfdcap.capture.recorder import record_session
    from dfdcap.capture.session import Session
    from dfdcap.lens import FocusSchedule

    path, depth, rgb = db3
    with RealSenseSensor(str(path), align=False) as sensor:
        session = record_session(sensor, fake_phone, FocusSchedule(0.1, 0.5, steps=2, ramps=1), tmp_path, "db3",
                                 on_full="wait", progress=False, tail_s=0.0, sensor_format="png", play_to_end=True)
    s = Session(session)
    assert s.status == "complete"
    idx = [r.index for r in s.sensor_frames]
    assert idx[0] <= N // 2 and idx == list(range(idx[0], N))  # see test_frames_come_back_as_injected
    cleared = 0
    for r in s.sensor_frames:
        src = depth[r.index]
        expected = np.where(src > 5000, 0, src)  # 0.5 m at 100 um
        assert np.array_equal(s.read_sensor_depth_raw(r), expected)
        assert np.array_equal(s.read_sensor_rgb(r), rgb[r.index])
        cleared += int(np.count_nonzero(src > 5000))
    assert cleared > 0 and s.meta["recorder"]["depth_pixels_cleared"] == cleared
    assert s.meta["recorder"]["depth_rule"] == {"max_code": 5000, "invalid_codes": [65535]}
    intr = s.sensor_intrinsics
    assert intr.depth_scale_m == 0.0001 and np.allclose(intr.T_color_from_depth[:3, 3], T_M)
