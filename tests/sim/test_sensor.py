"""The simulated RGB-D sensor: depth error model, working ranges, holes, timing."""

import math
import time

import numpy as np
import pytest

from dfdcap.capture.base import Sensor
from dfdcap.sim.rig import SENSOR_PRESETS, RigConfig, SimRig
from dfdcap.sim.scene import two_plane_scene, wall_scene
from dfdcap.sim.sensor import depth_sigma_m, measure_depth


def _wall_depth(z, shape=(480, 640)):
    return np.full(shape, z, np.float32)


class TestDepthModel:
    def test_error_grows_with_depth(self):
        p = SENSOR_PRESETS["xtion"]
        rng = np.random.default_rng(0)
        rms = []
        for z in (0.8, 1.6, 3.2):
            raw = measure_depth(_wall_depth(z), p, rng)
            zm = raw[raw > 0].astype(np.float64) * p.depth_scale_m
            assert zm.size > 0.99 * raw.size
            rms.append(float(np.sqrt(np.mean((zm - z) ** 2))))
            # noise + disparity quantisation: rms close to the model's sigma (within x0.6..x2)
            s = float(depth_sigma_m(z, p))
            step = z * z / (p.fx * p.baseline_m * p.subpixel)  # one disparity step in metres
            expected = math.sqrt(s * s + step * step / 12)
            assert 0.6 * expected < rms[-1] < 2.0 * expected, (z, rms[-1], expected)
        assert rms[0] < rms[1] < rms[2]
        assert rms[2] / rms[0] > 8  # ~ z^2: 16x from 0.8 m to 3.2 m

    @pytest.mark.parametrize("kind,inside,outside", [("xtion", (0.6, 3.3), (0.4, 4.0)), ("d405", (0.09, 0.45), (0.05, 0.6))])
    def test_working_range(self, kind, inside, outside):
        p = SENSOR_PRESETS[kind]
        rng = np.random.default_rng(1)
        for z in inside:
            raw = measure_depth(_wall_depth(z, (60, 80)), p, rng)
            assert (raw > 0).mean() > 0.99
            assert np.median(raw) * p.depth_scale_m == pytest.approx(z, rel=0.02)
        for z in outside:
            assert not measure_depth(_wall_depth(z, (60, 80)), p, rng).any()

    def test_depth_scales(self):
        assert SENSOR_PRESETS["xtion"].depth_scale_m == 0.001
        assert SENSOR_PRESETS["d405"].depth_scale_m == 0.0001
        assert (SENSOR_PRESETS["xtion"].min_m, SENSOR_PRESETS["xtion"].max_m) == (0.5, 3.5)
        assert (SENSOR_PRESETS["d405"].min_m, SENSOR_PRESETS["d405"].max_m) == (0.07, 0.5)

    def test_shadow_beside_foreground_edge(self):
        p = SENSOR_PRESETS["xtion"]
        z = np.full((40, 200), 3.0, np.float32)
        z[:, :100] = 1.0  # foreground on the left
        raw = measure_depth(z, p, np.random.default_rng(2), edge_dropout=0.0)
        expected_px = p.fx * p.baseline_m * (1 / 1.0 - 1 / 3.0)  # disparity jump, ~26 px
        holes = (raw[:, 100:] == 0).sum(axis=1)
        assert np.all(np.abs(holes - expected_px) <= 2)
        assert np.all(raw[:, :99] > 0)


class TestSimSensor:
    def test_frames_and_timestamps(self):
        rig = SimRig(RigConfig(scene=wall_scene(np.random.default_rng(0), 1.0)))
        with rig.sensor(realtime=False, max_frames=12) as s:
            assert isinstance(s, Sensor)
            frames = list(s.frames())
        assert [f.index for f in frames] == list(range(12))
        f = frames[0]
        assert f.rgb.shape == (480, 640, 3) and f.rgb.dtype == np.uint8
        assert f.depth.shape == (480, 640) and f.depth.dtype == np.uint16
        assert s.intrinsics.depth_registered_to_color and s.intrinsics.depth_scale_m == 0.001
        assert np.median(f.depth) == pytest.approx(1000, abs=5)
        # device times map through the true clock model to capture times 1/30 s apart, and
        # host arrival is a positive latency after capture
        m = rig.truth_rig()["clocks"]["sensor"]
        dev = np.array([f.t_device_ns for f in frames], dtype=np.float64)
        t_cap = m["t0_host_ns"] + (dev - m["t0_dev_ns"]) * (1 + m["drift_ppm"] * 1e-6)
        np.testing.assert_allclose(np.diff(t_cap), 1e9 / 30, atol=6 * m["residual_ns"] + 1)
        true_cap = np.array([s.true_capture_ns[f.index] for f in frames])
        assert np.max(np.abs(t_cap - true_cap)) < 6 * m["residual_ns"] + 2
        lat = np.array([f.t_host_ns for f in frames]) - t_cap
        assert np.all(lat > 3.5e6 - 6 * m["residual_ns"]) and np.all(lat < 40e6)

    def test_realtime_pacing(self):
        rig = SimRig(RigConfig(scene=wall_scene(np.random.default_rng(0), 1.0)))
        s = rig.sensor(realtime=True, max_frames=9)
        t0 = time.monotonic()
        frames = list(s.frames())
        dt = time.monotonic() - t0
        assert dt >= 8 / 30  # it cannot deliver faster than 30 fps
        for f in frames:
            assert f.t_host_ns <= time.monotonic_ns()
        assert len(frames) + s.dropped == 9

    def test_drops(self):
        rig = SimRig(RigConfig(scene=wall_scene(np.random.default_rng(0), 1.0), sensor_drop_prob=0.3, seed=4))
        s = rig.sensor(realtime=False, max_frames=40)
        idx = [f.index for f in s.frames()]
        assert len(idx) + s.dropped == 40 and s.dropped > 0
        assert idx == sorted(idx)

    def test_edges_have_holes_in_a_scene(self):
        rig = SimRig(RigConfig(scene=two_plane_scene(np.random.default_rng(0), 1.0, 2.5)))
        s = rig.sensor(realtime=False, max_frames=1)
        f = next(iter(s.frames()))
        row = f.depth[240]
        assert (row == 0).sum() >= 10  # projector shadow at the fg/bg step
