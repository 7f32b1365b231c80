"""The simulated phone (schedule, metadata, clock, probes, fetch) and the rig's ground truth."""

import time

import numpy as np
import pytest

from dfdcap.cameras import CameraModel, rotation_angle_deg
from dfdcap.capture.base import Phone
from dfdcap.capture.session import Session, SessionWriter
from dfdcap.errors import DeviceError, DfdcapError
from dfdcap.lens import FocusSchedule
import dfdcap.sim.phone as sim_phone
from dfdcap.sim.rig import RigConfig, SimRig, shared_rig
from dfdcap.sim.scene import wall_scene


def _rig(**kw):
    kw.setdefault("scene", wall_scene(np.random.default_rng(0), 0.8))
    kw.setdefault("phone_size", (160, 120))
    return SimRig(RigConfig(**kw))


def _wait(phone):
    while not phone.is_done():
        sim_phone.time.sleep(0.005)  # the virtual clock's


class VirtualTime:
    """The host clock the simulated phone reads, advanced only by its sleeps (and the test's): the
    phone's schedule, stops and probe round trips are then exact, whatever the host's load."""

    def __init__(self):
        self.now = time.monotonic_ns()

    def monotonic_ns(self) -> int:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += int(round(s * 1e9))


@pytest.fixture(autouse=True)
def virtual_time(monkeypatch):
    vt = VirtualTime()
    monkeypatch.setattr(sim_phone, "time", vt)
    return vt


class TestSimPhone:
    def test_metadata_follows_schedule(self):
        rig = _rig()
        phone = rig.phone()
        assert isinstance(phone, Phone)
        sched = FocusSchedule(0.1, 1.0, steps=5, ramps=3)
        fps = 200.0
        phone.start(sched, fps)
        assert not phone.is_done()
        _wait(phone)
        out = list(phone.recorded_frames())
        assert len(out) == sched.n_frames
        want = sched.focus_diopters()
        sigma = rig.config.phone_focus_error_diopters
        for k, (rec, rgb, depth) in enumerate(out):
            assert rec.index == k and (rec.ramp, rec.step) == divmod(k, 5)
            assert rec.focus_diopters_requested == pytest.approx(want[rec.ramp, rec.step])
            assert abs(rec.focus_diopters - rec.focus_diopters_requested) < 5 * sigma
            assert rec.exposure_ns > 0 and rec.iso > 0 and rec.lens_state == "STATIONARY"
            assert rec.file == f"frames/{k}.jpg"  # JPEG by default, as phones store frames
            assert rgb.shape == (120, 160, 3) and rgb.dtype == np.uint8
            assert depth.dtype == np.float32 and np.allclose(depth, 0.8, rtol=0.05)
        # phone timestamps map through the true clock to the planned exposure times
        m = rig.truth_rig()["clocks"]["phone"]
        t_phone = np.array([r.t_phone_ns for r, _, _ in out], dtype=np.float64)
        host = m["t0_host_ns"] + (t_phone - m["t0_dev_ns"]) * (1 + m["drift_ppm"] * 1e-6)
        planned = np.array([p.t_host_ns for p in phone.planned_frames()], dtype=np.float64)
        assert np.max(np.abs(host - planned)) < 6 * m["residual_ns"] + 2
        # the nominal period plus 0-10 ms of lens settling per frame
        dt = np.diff(planned)
        assert np.all(dt >= 1e9 / fps) and np.all(dt <= 1e9 / fps + 10e6)

    def test_stop_keeps_only_captured_frames(self, virtual_time):
        phone = _rig().phone()
        phone.start(FocusSchedule(0.1, 1.0, 5, 5), fps=20.0)  # 25 frames over 1.25 s
        t_stop = virtual_time.now + 300_000_000
        virtual_time.sleep(0.3)
        phone.stop()
        assert phone.is_done()
        virtual_time.sleep(2.0)  # long past the schedule's end: nothing after the stop counts
        got = [rec for rec, _, _ in phone.recorded_frames()]
        # 50 ms start latency, then a frame every 50 ms + 0-10 ms of settling: frames 0-4 by 0.3 s
        planned = phone.planned_frames()
        assert [rec.index for rec in got] == [0, 1, 2, 3, 4] == [p.record.index for p in planned if p.t_host_ns <= t_stop]
        assert got == [p.record for p in planned[:5]]

    def test_too_close_focus_is_refused(self):
        phone = _rig().phone()
        with pytest.raises(DeviceError, match="closer than the lens"):
            phone.start(FocusSchedule(0.05, 1.0, 3, 1), fps=10)

    def test_probe_round_trip(self):
        rig = _rig()
        phone = rig.phone()
        m = rig.phone_clock
        rtts = []
        for _ in range(15):
            p = phone.probe()
            rtts.append(p.t_host_recv_ns - p.t_host_send_ns)
            t_host = m.host_from_device_ns(p.t_phone_ns)
            assert p.t_host_send_ns - 1e5 <= t_host <= p.t_host_recv_ns + 1e5
        assert np.median(rtts) > 2e6 and np.median(rtts) < 15e6

    def test_fetch_writes_session(self, tmp_path):
        rig = _rig()
        phone = rig.phone()
        sched = FocusSchedule(0.2, 1.0, 3, 2)
        phone.start(sched, 300.0)
        _wait(phone)
        with SessionWriter.create(tmp_path, "sim", rig.sensor(realtime=False).info, phone.info, sched.to_dict()) as w:
            w.write_phone_camera(phone.hello())
            assert phone.fetch(w) == 6
        s = Session(w.path)
        assert s.status == "complete" and len(s.phone_frames) == 6 and s.has_truth
        assert s.phone_camera.image_size == (160, 120)
        rec = s.phone_frames[4]
        assert s.read_phone_frame(rec).shape == (120, 160, 3)
        assert s.read_truth_phone_depth(4).shape == (120, 160)
        assert s.truth_rig()["clocks"]["phone"] == rig.phone_clock.model_dict()


class TestRig:
    def test_default_geometry_and_truth(self):
        rig = SimRig(RigConfig(), t0_host_ns=0)
        T = np.asarray(rig.truth_rig()["T_phone_from_sensor"])
        centre = -T[:3, :3].T @ T[:3, 3]  # phone centre in the sensor frame
        assert np.linalg.norm(centre[:2]) == pytest.approx(0.04, abs=0.006)
        assert 1.5 < rotation_angle_deg(T[:3, :3]) < 2.5
        truth = rig.truth_rig()
        phone = CameraModel.from_dict(truth["phone"])
        assert phone.size == (1008, 756)
        # f 4.2 mm over a 5.64 mm wide sensor
        assert phone.fx == pytest.approx(4.2e-3 / (5.6448e-3 / 1008))
        assert CameraModel.from_dict(truth["sensor"]).size == (640, 480)
        assert set(truth["clocks"]) == {"phone", "sensor"}
        assert truth["clocks"]["phone"]["drift_ppm"] == 42.0

    def test_phone_sees_the_scene_through_the_transform(self):
        rig = SimRig(RigConfig(phone_size=(252, 189), scene="default"))
        _, d_s = rig.render_sensor_sharp(rig.t0_host_ns)
        _, d_p = rig.render_phone_sharp(rig.t0_host_ns)
        # sensor pixels unprojected and moved into the phone frame land on the phone's depth
        pts = rig.sensor_camera_model().unproject_depth(d_s)[::8, ::8].reshape(-1, 3)
        pts = pts[np.isfinite(pts[:, 2])]
        T = rig.config.T_phone_from_sensor
        pp = pts @ T[:3, :3].T + T[:3, 3]
        uv, z = rig.phone_camera_model().project(pp)
        ok = (uv[:, 0] > 2) & (uv[:, 0] < 249) & (uv[:, 1] > 2) & (uv[:, 1] < 186)
        zz = d_p[np.round(uv[ok, 1]).astype(int), np.round(uv[ok, 0]).astype(int)]
        agree = np.abs(zz - z[ok]) < 0.02 * z[ok]
        assert agree.mean() > 0.9  # the rest: occlusion boundaries and pixel rounding

    def test_bad_config(self):
        with pytest.raises(DfdcapError, match="unknown sensor"):
            RigConfig(sensor="kinect")
        with pytest.raises(DfdcapError, match="phone size"):
            RigConfig(phone_size=(0, 10))

    def test_shared_rig_is_one_per_process(self):
        assert shared_rig() is shared_rig()
