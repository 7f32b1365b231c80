"""SimClock follows its configured offset and drift; its exported model is the true one."""

import numpy as np
import pytest

from dfdcap.errors import DfdcapError
from dfdcap.sim.clock import SimClock


def model_to_host(model: dict, t_dev_ns):
    """The DESIGN.md clock model, written out independently of SimClock."""
    t = np.asarray(t_dev_ns, dtype=np.float64)
    return model["t0_host_ns"] + (t - model["t0_dev_ns"]) * (1 + model["drift_ppm"] * 1e-6)


class TestSimClock:
    def test_offset_and_drift_exact_without_jitter(self):
        c = SimClock(offset_ns=5_000_000_000, drift_ppm=100.0, jitter_ns=0, t0_host_ns=1_000_000_000)
        # at t0 the device reads host + offset
        assert c.device_from_host_ns(1_000_000_000) == 6_000_000_000
        # 10 s of host time later the device advanced 10 s / (1 + 100e-6)
        dev = c.device_from_host_ns(11_000_000_000)
        assert dev - 6_000_000_000 == round(10e9 / 1.0001)
        assert (10_000_000_000 - (dev - 6_000_000_000)) == pytest.approx(999_900, abs=2)  # ~1 ms lost in 10 s

    def test_model_dict_maps_device_to_host(self):
        c = SimClock(offset_ns=-123_456_789, drift_ppm=-37.5, jitter_ns=0, t0_host_ns=42)
        host = np.arange(0, 60_000_000_000, 1_000_000_007, dtype=np.int64)
        dev = c.device_from_host_ns(host)
        back = model_to_host(c.model_dict(), dev)
        assert np.max(np.abs(back - host)) <= 1.0
        m = c.model_dict()
        assert set(m) == {"t0_dev_ns", "t0_host_ns", "drift_ppm", "residual_ns"}
        assert m["t0_dev_ns"] - m["t0_host_ns"] == -123_456_789

    def test_jitter_is_zero_mean_with_configured_sigma(self):
        c = SimClock(offset_ns=0, drift_ppm=20.0, jitter_ns=50_000, seed=3, t0_host_ns=0)
        host = np.linspace(0, 1e10, 20_000).astype(np.int64)
        resid = c.device_from_host_ns(host) - c.true_device_from_host_ns(host)
        assert abs(resid.mean()) < 2_000
        assert resid.std() == pytest.approx(50_000, rel=0.05)
        assert c.model_dict()["residual_ns"] == 50_000

    def test_host_from_device_round_trip(self):
        c = SimClock(offset_ns=7, drift_ppm=250.0, t0_host_ns=10**12)
        for t in (10**12, 10**12 + 3_600 * 10**9):
            assert abs(c.host_from_device_ns(c.true_device_from_host_ns(t)) - t) <= 1

    def test_bad_jitter(self):
        with pytest.raises(DfdcapError, match="jitter"):
            SimClock(jitter_ns=-1)
