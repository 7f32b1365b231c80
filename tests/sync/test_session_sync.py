"""`dfdcap sync` on session folders: sync.json content vs the simulator's truth, report, bad sessions."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from simclocks import MS

from dfdcap.capture.session import Session
from dfdcap.errors import SyncError
from dfdcap.sync.clock import ClockModel
from dfdcap.sync.io import read_sync, sync_session


def _run(*args):
    return subprocess.run([sys.executable, "-m", "dfdcap.cli", *map(str, args)], capture_output=True, text=True)


def test_sync_json_matches_truth(stamp_session, stamps_60s):
    s = stamps_60s
    res = sync_session(stamp_session, sensor_latency_ns=s.fixed_latency_ns)
    back = read_sync(stamp_session)
    assert back.phone == res.phone and back.sensor == res.sensor and back.pairs == res.pairs
    truth = Session(stamp_session).truth_rig()["clocks"]
    for name, t_dev, tol in (("phone", s.phone_stamp, 0.2 * MS), ("sensor", s.sensor_dev, 0.5 * MS)):
        mid = int(np.median(t_dev))
        err = getattr(back, name).to_host_ns(mid) - ClockModel.from_dict(truth[name]).to_host_ns(mid)
        assert abs(err) <= tol, (name, err)
    # pairs: one per phone frame, in index order, equal to the true pairing
    assert [p.phone_index for p in back.pairs] == s.phone_index.tolist()
    want = [None if j < 0 else int(s.sensor_index[j]) for j in s.true_j]
    assert [p.sensor_index for p in back.pairs] == want
    assert all((p.gap_ns is None) == (p.sensor_index is None) for p in back.pairs)
    assert all(abs(p.gap_ns) <= back.max_gap_ns for p in back.matched)
    doc = json.loads((stamp_session / "sync.json").read_text())
    assert doc["stats"]["n_unmatched"] == sum(j < 0 for j in s.true_j) > 0
    assert doc["stats"]["sensor_frame_gaps"] and doc["stacks"][0]["n_frames"] >= 1
    assert {p["ramp"] for p in doc["pairs"]} == {int(i) // 5 for i in s.phone_index}


def test_cli_sync_prints_summary_and_report(stamp_session, tmp_path):
    r = _run("sync", stamp_session, "--sensor-latency-ms", "0.8", "--mode", "one-to-one")
    assert r.returncode == 0, r.stderr
    assert "phone" in r.stdout and "sensor" in r.stdout and "matched" in r.stdout
    assert read_sync(stamp_session).mode == "one-to-one"
    png = tmp_path / "sync.png"
    r = _run("report", stamp_session, "-o", png)
    assert r.returncode == 0, r.stderr
    assert png.stat().st_size > 20_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_sessions(stamp_session, tmp_path):
    (stamp_session / "clock" / "phone_probes.csv").write_text("t_host_send_ns,t_phone_ns,t_host_recv_ns\n")
    with pytest.raises(SyncError, match="no clock probes"):
        sync_session(stamp_session)
    assert not (stamp_session / "sync.json").exists()
    with pytest.raises(SyncError, match="not a session folder"):
        sync_session(tmp_path / "nowhere")
    with pytest.raises(SyncError, match="run `dfdcap sync"):
        read_sync(stamp_session)
    r = _run("sync", stamp_session)
    assert r.returncode == 1 and "no clock probes" in r.stderr


@pytest.mark.parametrize("doc, says", [
    ([], "expected a JSON object, found list"),
    ({"association": "x"}, "association 'x' is not an object"),
    ({"association": {"max_gap_ns": "abc"}}, "association.max_gap_ns 'abc' is not a whole number"),
    ({"association": {"max_gap_ns": -5}}, "association.max_gap_ns -5 is out of range"),
    ({"association": {"max_gap_ns": 0}}, "association.max_gap_ns 0 is out of range"),
    ({"sensor": {"latency_ns": 1e30}}, "sensor.latency_ns .* is out of range"),
    ({"sensor": []}, "sensor \\[\\] is not an object"),
])
def test_report_refuses_malformed_sync_settings(stamp_session, tmp_path, cli, doc, says):
    """report SESSION recomputes the sync with the settings of the session's sync.json: a hand-edited one
    gave an AttributeError/ValueError/OverflowError traceback, or (max gap 0) a plot of nothing paired."""
    import re

    (stamp_session / "sync.json").write_text(json.dumps(doc))
    png = tmp_path / "sync.png"
    code, _, err = cli("report", stamp_session, "-o", png)
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert re.search(says, err) and "sync.json" in err, err
    assert not png.exists()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 2.5, "x"])
def test_sync_ignores_a_recorder_count_that_is_no_whole_number(stamp_session, cli, value):
    """session.json's recorder.sensor_frames_written as NaN (JSON NaN, hand-edited) gave 'ValueError: cannot
    convert float NaN to integer' in sync and report; inf an OverflowError. A count that is no whole number
    now says nothing (as a missing one does)."""
    from dfdcap.sync.io import stated_counts

    meta = json.loads((stamp_session / "session.json").read_text())
    meta.setdefault("recorder", {})["sensor_frames_written"] = value
    (stamp_session / "session.json").write_text(json.dumps(meta))
    assert stated_counts(meta)["sensor"] is None
    code, _, err = cli("sync", stamp_session)
    assert code == 0 and "Traceback" not in err, err
    assert (stamp_session / "sync.json").is_file()


def test_report_png_not_written_among_the_recorded_frames(stamp_session, cli):
    """report SESSION -o SESSION/sensor/depth/<t>.png replaced a recorded depth frame with the report picture
    (exit 0: 'wrote ...'); an output inside sensor/, phone/, clock/ or truth/ is now refused."""
    import cv2

    frame = stamp_session / "sensor" / "depth" / "1000.png"
    frame.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(frame), np.full((4, 6), 1234, np.uint16))
    before = frame.read_bytes()
    code, _, err = cli("report", stamp_session, "-o", frame)
    assert code == 1 and "recorded data (sensor/)" in err and "Traceback" not in err, err
    assert frame.read_bytes() == before
    code, _, err = cli("report", stamp_session, "-o", stamp_session / "phone" / "new.png")
    assert code == 1 and not (stamp_session / "phone" / "new.png").exists(), err
    code, _, err = cli("report", stamp_session, "-o", stamp_session / "beside.png")
    assert code == 0 and (stamp_session / "beside.png").is_file(), err


def test_report_of_a_session_file_names_the_session(stamp_session, tmp_path, cli):
    """report SESSION/sync.json was taken for a calibration file (it has a 'phone' key) and said only
    '...sync.json: lacks board'; session.json 'not a calibration file, ...'. Both now name the session
    folder to give instead."""
    sync_session(stamp_session)
    for name in ("sync.json", "session.json"):
        code, _, err = cli("report", stamp_session / name, "-o", tmp_path / "r.png")
        err = " ".join(err.split())
        assert code == 1 and f"a file of the session {stamp_session}; give the session folder" in err, err
    assert not (tmp_path / "r.png").exists()


def test_sync_refuses_phone_times_that_do_not_increase_in_a_ramp(stamp_session, cli):
    """A phone frame whose t_phone_ns repeats its predecessor's in the ramp (an edited or damaged index) was
    paired with the depth of another moment, exit 0; 0 was just 'unmatched'. Now one line naming the frames."""
    path = stamp_session / "phone" / "frames.csv"
    lines = path.read_text().splitlines()
    head = lines[0].split(",")
    t = head.index("t_phone_ns")
    rows = [r.split(",") for r in lines[1:]]
    ramp, step = head.index("ramp"), head.index("step")
    k = next(k for k in range(1, len(rows)) if rows[k][ramp] == rows[k - 1][ramp])
    rows[k][t] = rows[k - 1][t]  # two frames of one ramp: one time
    path.write_text("\n".join([lines[0]] + [",".join(r) for r in rows]) + "\n")
    code, _, err = cli("sync", stamp_session)
    err = " ".join(err.split())
    assert code == 1 and f"frame {rows[k][0]} (ramp {rows[k][ramp]}, step {rows[k][step]})" in err, err
    assert f"not after frame {rows[k - 1][0]}" in err, err
    assert not (stamp_session / "sync.json").exists()
