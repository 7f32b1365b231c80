"""OpenNI2 with the real library and no hardware: .oni files written by dfdcap's writer played
back through OpenNISensor (every frame, byte-identical, device timestamps), the built-in Dummy
device through the live path, a device that goes silent, and recording a session from a file."""

from __future__ import annotations

import math
import struct
import time

import numpy as np
import pytest

from conftest_sensors import private_openni_redist, real_rgbd_frames
from dfdcap.capture.oni_file import PIXEL_FORMAT_DEPTH_100_UM, OniStream, OniWriter, write_oni
from dfdcap.errors import DeviceError

HFOV, VFOV = math.radians(58.0), math.radians(45.0)


@pytest.fixture(scope="module", autouse=True)
def _openni_file_and_dummy_drivers(tmp_path_factory):
    private_openni_redist(tmp_path_factory.mktemp("openni2"))


@pytest.fixture(scope="module")
def frames30():
    depth, rgb = real_rgbd_frames(30, (160, 120))
    rng = np.random.default_rng(7)
    # device clock in us: starts far from 0, ~30 fps with jitter, strictly increasing
    t_us = 5_000_000 + np.cumsum(33_333 + rng.integers(-2000, 2000, 30))
    return depth, rgb, t_us.astype(np.int64)


@pytest.fixture(scope="module")
def oni30(tmp_path_factory, frames30):
    depth, rgb, t_us = frames30
    path = tmp_path_factory.mktemp("oni") / "real30.oni"
    write_oni(path, depth, rgb, t_us, hfov_rad=HFOV, vfov_rad=VFOV)
    return path


class TestOniPlayback:
    def test_every_frame_byte_identical_with_timestamps(self, oni30, frames30):
        from dfdcap.capture.openni import OpenNISensor

        depth, rgb, t_us = frames30
        with OpenNISensor(str(oni30)) as sensor:
            assert sensor.is_file
            got = list(sensor.frames())
        assert [f.index for f in got] == list(range(1, 31))  # OpenNI numbers frames from 1
        for f in got:
            i = f.index - 1
            assert f.depth.dtype == np.uint16 and f.rgb.dtype == np.uint8
            assert np.array_equal(f.depth, depth[i])
            assert np.array_equal(f.rgb, rgb[i])
            assert f.t_device_ns == int(t_us[i]) * 1000
        t_host = [f.t_host_ns for f in got]
        assert all(b >= a for a, b in zip(t_host, t_host[1:]))
        assert sensor.dropped == 0

    def test_intrinsics_from_recorded_field_of_view(self, oni30):
        from dfdcap.capture.openni import OpenNISensor

        with OpenNISensor(str(oni30)) as sensor:
            intr, info = sensor.intrinsics, sensor.info
        # fx = (W / 2) / tan(HFOV / 2) = 80 / tan(29 deg)
        assert intr.color.fx == pytest.approx(80 / math.tan(HFOV / 2), rel=1e-5)
        assert intr.color.fy == pytest.approx(60 / math.tan(VFOV / 2), rel=1e-5)
        assert intr.color.size == (160, 120)
        assert intr.depth_scale_m == 0.001
        assert intr.depth_registered_to_color  # same size: dfdcap records registered
        assert info.kind == "openni-file" and info.serial == str(oni30)

    def test_100um_depth_unit(self, tmp_path):
        from dfdcap.capture.openni import OpenNISensor

        depth, rgb = real_rgbd_frames(4, (64, 48))
        path = write_oni(tmp_path / "um.oni", depth * 10, rgb, np.arange(4) * 33_333, pixel_format_depth=PIXEL_FORMAT_DEPTH_100_UM)
        with OpenNISensor(str(path)) as sensor:
            assert sensor.intrinsics.depth_scale_m == 0.0001
            got = list(sensor.frames())
        assert len(got) == 4 and np.array_equal(got[3].depth, depth[3] * 10)
        assert got[0].t_device_ns == 0  # a first timestamp of 0 is a frame too (only frame 0 at t 0 is ignored)

    def test_crashed_recording_plays_the_frames_it_holds(self, tmp_path, frames30):
        """A recording cut short (the recorder crashed mid-frame): playback ends without a hang,
        every complete frame intact."""
        from dfdcap.capture.openni import OpenNISensor

        depth, rgb, t_us = frames30
        w = OniWriter(tmp_path / "never.oni", [OniStream("depth", 160, 120), OniStream("color", 160, 120)])
        for i in range(12):
            w.write_frame(0, depth[i], int(t_us[i]))
            w.write_frame(1, rgb[i], int(t_us[i]))
        w.flush()
        data = w.partial_path.read_bytes()
        w.abort()
        cut = tmp_path / "crashed.oni"
        cut.write_bytes(data[:-1000])  # the last colour frame is torn
        t0 = time.monotonic()
        with OpenNISensor(str(cut), timeout_s=0.5) as sensor:
            got = list(sensor.frames())
        assert time.monotonic() - t0 < 300  # a hang guard: the torn frame ends the file, it is not waited for forever
        assert [f.index for f in got] == list(range(1, 12))
        assert all(np.array_equal(f.depth, depth[f.index - 1]) and np.array_equal(f.rgb, rgb[f.index - 1]) for f in got)

    def test_bad_files_are_device_errors(self, tmp_path):
        from dfdcap.capture.openni import OpenNISensor

        with pytest.raises(DeviceError, match="not found"):
            OpenNISensor(str(tmp_path / "missing.oni"))
        junk = tmp_path / "junk.oni"
        junk.write_bytes(b"not an oni file" * 10)
        with pytest.raises(DeviceError, match="junk.oni"):
            OpenNISensor(str(junk))


class TestOniWriter:
    def test_header_and_records(self, tmp_path):
        depth, rgb = real_rgbd_frames(3, (32, 24))
        path = write_oni(tmp_path / "h.oni", depth, rgb, np.array([10, 20, 30]))
        data = path.read_bytes()
        magic, major, minor, maint, build, max_ts, max_node = struct.unpack_from("<4sBBHIQI", data)
        assert (magic, major, minor, maint, build, max_ts, max_node) == (b"NI10", 1, 0, 1, 0, 30, 2)
        # 6 frames of raw pixels are in the file, plus records
        assert len(data) > 3 * (32 * 24 * 2 + 32 * 24 * 3)
        assert data.count(b"xnCropping") == 2

    def test_rejects_wrong_frames(self, tmp_path):
        with pytest.raises(DeviceError, match="uint16"):
            with OniWriter(tmp_path / "x.oni", [OniStream("depth", 8, 6)]) as w:
                w.write_frame(0, np.zeros((6, 8), np.float32), 0)
        assert not (tmp_path / "x.oni").exists()  # nothing half-written
        with pytest.raises(DeviceError, match="increasing"):
            with OniWriter(tmp_path / "y.oni", [OniStream("depth", 8, 6)]) as w:
                w.write_frame(0, np.zeros((6, 8), np.uint16), 100)
                w.write_frame(0, np.zeros((6, 8), np.uint16), 50)


class TestDummyDeviceLivePath:
    def test_reads_frames_through_the_live_path(self):
        from dfdcap.capture.openni import OpenNISensor

        with OpenNISensor("Dummy") as sensor:
            assert not sensor.is_file
            it = sensor.frames()
            got = [next(it) for _ in range(6)]
            it.close()
        assert sensor.info.kind == "openni"
        assert sensor.intrinsics.color.size == (320, 240)
        assert not sensor.intrinsics.depth_registered_to_color  # the Dummy device cannot register
        idx = [f.index for f in got]
        assert idx == list(range(idx[0], idx[0] + 6))
        dt_ms = np.diff([f.t_device_ns for f in got]) / 1e6
        assert np.allclose(dt_ms, 1000 / 30, atol=1.0)  # device clock at 30 fps
        for f in got:
            assert f.depth.shape == (240, 320) and f.rgb.shape == (240, 320, 3)
            assert f.depth.max() > 0

    def test_silent_device_raises_device_error(self):
        """Like a pulled cable: the device stops delivering, frames() raises a clear DeviceError."""
        from dfdcap.capture.openni import OpenNISensor

        with OpenNISensor("Dummy", timeout_s=0.3) as sensor:
            it = sensor.frames()
            first = next(it)
            for s in sensor._streams:  # the device side goes quiet
                s.stop()
            with pytest.raises(DeviceError, match="no frame for 0.3 s"):
                for _ in range(100):
                    next(it)
        assert first.index >= 1

    def test_unknown_uri(self):
        from dfdcap.capture.openni import OpenNISensor

        with pytest.raises(DeviceError, match="cannot open"):
            OpenNISensor("usb/no/such")


class TestRecordFromOni:
    def test_session_from_oni_equals_source(self, tmp_path, oni30, frames30, fake_phone):
        from dfdcap.capture.openni import OpenNISensor
        from dfdcap.capture.recorder import record_session
        from dfdcap.capture.session import Session
        from dfdcap.lens import FocusSchedule

        depth, rgb, t_us = frames30
        schedule = FocusSchedule(0.2, 2.0, steps=2, ramps=1)
        with OpenNISensor(str(oni30)) as sensor:
            path = record_session(sensor, fake_phone, schedule, tmp_path, "oni", phone_fps=30.0, on_full="wait",
                                  progress=False, tail_s=3600.0, play_to_end=True, sensor_format="png")  # the whole file
        s = Session(path)
        assert s.status == "complete"
        assert [r.index for r in s.sensor_frames] == list(range(1, 31))
        for r in s.sensor_frames:
            i = r.index - 1
            assert r.t_device_ns == int(t_us[i]) * 1000
            assert np.array_equal(s.read_sensor_depth_raw(r), depth[i])
            assert np.array_equal(s.read_sensor_rgb(r), rgb[i])
        assert s.sensor_intrinsics.depth_scale_m == 0.001
        assert s.meta["rig"]["sensor"]["kind"] == "openni-file"

    def test_dummy_device_records_a_complete_session(self, tmp_path, fake_phone):
        from dfdcap.capture.openni import OpenNISensor
        from dfdcap.capture.recorder import record_session
        from dfdcap.capture.session import Session
        from dfdcap.lens import FocusSchedule

        with OpenNISensor("Dummy") as sensor:
            path = record_session(sensor, fake_phone, FocusSchedule(0.5, 3.0, steps=3, ramps=1), tmp_path, "dummy",
                                  progress=False)
        s = Session(path)
        assert s.status == "complete" and s.meta["rig"]["sensor"]["kind"] == "openni"
        assert len(s.sensor_frames) >= 5  # 0.1 s sweep + 0.2 s tail at 30 fps
        t_dev = [r.t_device_ns for r in s.sensor_frames]
        assert all(b > a for a, b in zip(t_dev, t_dev[1:]))
        assert s.read_sensor_depth_raw(s.sensor_frames[-1]).shape == (240, 320)
        assert s.sensor_intrinsics.color.size == (320, 240)

    def test_sensor_that_goes_silent_gives_interrupted_session(self, tmp_path, fake_phone):
        from dfdcap.capture.openni import OpenNISensor
        from dfdcap.capture.recorder import RecordingInterrupted, record_session
        from dfdcap.capture.session import Session
        from dfdcap.lens import FocusSchedule

        class PulledCable(OpenNISensor):
            """The Dummy device whose streams stop after 8 pairs (the cable is pulled)."""

            def frames(self):
                for n, f in enumerate(super().frames()):
                    yield f
                    if n == 7:
                        for s in self._streams:
                            s.stop()

        schedule = FocusSchedule(0.2, 2.0, steps=5, ramps=4)  # a sweep longer than the sensor lives
        with PulledCable("Dummy", timeout_s=0.3) as sensor:
            with pytest.raises(RecordingInterrupted, match="no frame for 0.3 s") as exc:
                record_session(sensor, fake_phone, schedule, tmp_path, "pulled", progress=False)
        s = Session(exc.value.path)
        assert s.status == "interrupted"
        assert "no frame" in s.meta["message"]
        assert len(s.sensor_frames) == 8
        assert all(s.read_sensor_depth_raw(r).shape == (240, 320) for r in s.sensor_frames)


def test_cli_record_from_oni_equals_source(tmp_path, oni30, frames30):
    """`dfdcap record --sensor FILE.oni --phone sim`: the session's sensor frames are the file's."""
    from typer.testing import CliRunner

    from dfdcap.capture.session import Session
    from dfdcap.cli import app

    depth, rgb, t_us = frames30
    result = CliRunner().invoke(app, ["record", "--sensor", str(oni30), "--phone", "sim", "-o", str(tmp_path / "s"),
                                      "--stacks", "1", "--steps", "3", "--sensor-format", "png"])
    assert result.exit_code == 0, result.output
    (path,) = (tmp_path / "s").iterdir()
    s = Session(path)
    assert s.status == "complete"
    assert [r.index for r in s.sensor_frames] == list(range(1, 31))
    for r in s.sensor_frames:
        assert r.t_device_ns == int(t_us[r.index - 1]) * 1000
        assert np.array_equal(s.read_sensor_depth_raw(r), depth[r.index - 1])
        assert np.array_equal(s.read_sensor_rgb(r), rgb[r.index - 1])
    assert len(s.phone_frames) == 3


@pytest.mark.hardware
def test_xtion_live_640x480_registered():
    """Needs an Xtion (or another PS1080 device): 640x480 at 30 fps, depth registered to colour."""
    from dfdcap.capture.openni import OpenNISensor

    with OpenNISensor(None) as sensor:
        it = sensor.frames()
        got = [next(it) for _ in range(30)]
        it.close()
    assert sensor.intrinsics.depth_registered_to_color
    assert all(f.depth.shape == (480, 640) and f.rgb.shape == (480, 640, 3) for f in got)
    dt_ms = np.diff([f.t_device_ns for f in got]) / 1e6
    assert np.median(dt_ms) == pytest.approx(1000 / 30, abs=2)
