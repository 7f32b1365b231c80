"""Fixtures of the sync tests: a session folder holding a simulated recording's timestamps."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from simclocks import SimStamps, simulate  # noqa: E402

from dfdcap.capture.session import ClockProbe, DeviceInfo, PhoneFrameRecord, SensorFrameRecord, SessionWriter  # noqa: E402

def write_stamp_session(out_dir: Path, s: SimStamps, steps: int = 5) -> Path:
    """Index files of a session (no image files: sync reads only the indexes and probes)."""
    dev = DeviceInfo("sim", "sim", "0")
    with SessionWriter.create(out_dir, "stamps", dev, dev) as w:
        for row in s.probes:
            w.append_probe(ClockProbe(int(row[0]), int(row[1]), int(row[2])))
        for k in range(s.sensor_dev.size):
            t = int(s.sensor_arrival[k])
            w.append_sensor_record(SensorFrameRecord(int(s.sensor_index[k]), t, int(s.sensor_dev[k]), f"rgb/{t}.png", f"depth/{t}.png"))
        for k in range(s.phone_stamp.size):
            i = int(s.phone_index[k])
            w.append_phone_record(PhoneFrameRecord(i, int(s.phone_stamp[k]), 2.0, 2.0, 10_000_000, 100, "STATIONARY",
                                                   i // steps, i % steps, f"frames/{i}.png"))
        w.write_truth_rig({"clocks": {"phone": s.phone_clock.model_dict(), "sensor": s.sensor_clock.model_dict()}})
        return w.path


@pytest.fixture(scope="module")
def stamps_60s() -> SimStamps:
    return simulate(seed=11, duration_s=60.0)


@pytest.fixture
def stamp_session(tmp_path, stamps_60s) -> Path:
    return write_stamp_session(tmp_path, stamps_60s)
