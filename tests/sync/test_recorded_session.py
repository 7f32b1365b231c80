"""A session recorded by `dfdcap record --sensor sim --phone sim` gets a sync.json matching the rig's true clocks.

What is compared (a ~12 s recording, 50 phone frames at 5 fps, ~300 sensor frames, ~21 probes):
- sensor: the fitted model against truth/rig.json's sensor clock at the sensor frames' median
  stamp, <= 0.5 ms. The simulator's sensor arrives at least `RigConfig.sensor_min_latency_ns`
  after capture; that fixed latency is the known latency handed to `dfdcap sync
  --sensor-latency-ms` (the envelope alone maps to capture + minimal latency).
- phone: at the model's t0 the true clock must lie inside the probe band, |error| <= half the
  band width (a hard bound: every probe has send <= true host time <= recv), and at the phone
  frames' median stamp within 1 ms. The 0.2 ms bound of issue 4 is not asserted here: the
  recorder's default ~21 probes (5 + 1/s + 5) leave the fastest trips' asymmetry at ~0.1-0.4 ms
  (in an offline replica of the simulator's link, 33 % of such sessions exceed 0.2 ms; 3 % with
  60 probes); the 5-minute tests in test_clock.py assert 0.2 ms and 1 ppm.
- drift: only loosely (<= 80 ppm): 1 ppm over 12 s is 12 us, far below the probes' scatter.
- pairing: equal to the pairing by the true clocks for every frame whose true nearest and
  second-nearest sensor frames differ by > 2 ms (and whose gap is > 1 ms from the max gap).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from dfdcap.capture.session import Session
from dfdcap.sync.associate import nearest_associate
from dfdcap.sync.clock import ClockModel
from dfdcap.sync.io import read_sync

MS = 1_000_000


@pytest.mark.slow
def test_recorded_sim_session_sync_matches_truth(tmp_path):
    from dfdcap.sim.rig import RigConfig

    r = subprocess.run([sys.executable, "-m", "dfdcap.cli", "record", "--sensor", "sim", "--phone", "sim", "-o", tmp_path,
                        "--stacks", "10", "--steps", "5", "--fps", "5", "--phone-size", "64x48", "--seed", "3"],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    (path,) = [p for p in tmp_path.iterdir() if (p / "session.json").is_file()]
    latency_ms = RigConfig().sensor_min_latency_ns / 1e6
    r = subprocess.run([sys.executable, "-m", "dfdcap.cli", "sync", path, "--sensor-latency-ms", str(latency_ms)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    sync = read_sync(path)
    s = Session(path)
    truth = {k: ClockModel.from_dict(v) for k, v in s.truth_rig()["clocks"].items()}
    t_phone = np.array([f.t_phone_ns for f in s.phone_frames])
    t_dev = np.array([f.t_device_ns for f in s.sensor_frames])
    # Deterministic by construction: the simulated sensor stamps every frame with its simulated
    # arrival and never drops a late one, so a busy host changes nothing the fit sees.
    mid = int(np.median(t_dev))
    err = sync.sensor.to_host_ns(mid) - truth["sensor"].to_host_ns(mid)
    assert abs(err) <= 0.5 * MS, ("sensor", err / MS)
    assert abs(sync.sensor.drift_ppm - truth["sensor"].drift_ppm) <= 80.0
    t0 = sync.phone.t0_dev_ns
    err0 = sync.phone.to_host_ns(t0) - truth["phone"].to_host_ns(t0)
    assert abs(err0) <= sync.phone.extra["band_width_ns"] / 2 + 100_000, (err0, sync.phone.extra)
    mid = int(np.median(t_phone))
    assert abs(sync.phone.to_host_ns(mid) - truth["phone"].to_host_ns(mid)) <= 1.0 * MS
    assert abs(sync.phone.drift_ppm - truth["phone"].drift_ppm) <= 80.0
    # pairing by the true clocks (capture times), same max gap; frames whose true nearest and
    # second-nearest sensor frames lie within 2 ms of each other (or whose gap is within 1 ms of the
    # max gap) are decided by timing noise, not by the clocks, and are left out
    tp, ts = truth["phone"].to_host_ns(t_phone), truth["sensor"].to_host_ns(t_dev)
    j, _ = nearest_associate(tp, ts, sync.max_gap_ns)
    d = np.sort(np.abs(tp[:, None] - ts[None, :]), axis=1)
    clear = (d[:, 1] - d[:, 0] > 2 * MS) & (np.abs(d[:, 0] - sync.max_gap_ns) > 1 * MS)
    sidx = np.array([f.index for f in s.sensor_frames])
    want = np.array([-1 if k < 0 else int(sidx[k]) for k in j])
    got = np.array([-1 if p.sensor_index is None else p.sensor_index for p in sync.pairs])
    assert len(got) == len(s.phone_frames) == 50 and clear.sum() >= 35
    np.testing.assert_array_equal(got[clear], want[clear])
