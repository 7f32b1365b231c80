"""sync.json's quality verdicts on whole sessions: clean, cut short, killed while recording."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest

from dfdcap.capture.session import LOCK_NAME
from dfdcap.errors import SyncError
from dfdcap.sync.io import read_sync, sync_session

HOLD_LOCK = """
import fcntl, sys, time
f = open(sys.argv[1], "w")
fcntl.flock(f.fileno(), fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.read()  # hold the lock until killed or stdin closes
"""


def _set_meta(session, **kv):
    p = session / "session.json"
    meta = json.loads(p.read_text())
    meta.update(kv)
    p.write_text(json.dumps(meta))


def test_clean_session_is_ok(stamp_session, stamps_60s):
    res = sync_session(stamp_session, sensor_latency_ns=stamps_60s.fixed_latency_ns)
    assert res.quality["phone"] == {"verdict": "ok", "reasons": []}
    assert res.quality["sensor"] == {"verdict": "ok", "reasons": []}
    assert read_sync(stamp_session).quality == res.quality and res.suspect == {}


def test_phone_index_cut_mid_file_is_suspect(stamp_session, stamps_60s, cli):
    n_phone = stamps_60s.phone_stamp.size
    _set_meta(stamp_session, recorder={"phone_frames": n_phone, "sensor_frames_written": stamps_60s.sensor_dev.size,
                                       "probes": len(stamps_60s.probes)})
    index = stamp_session / "phone" / "frames.csv"
    text = index.read_text()
    index.write_text(text[: len(text) // 2])  # cut inside a line: the torn last line is skipped
    res = sync_session(stamp_session, sensor_latency_ns=stamps_60s.fixed_latency_ns)
    assert res.stats["n_phone_frames"] < n_phone
    assert res.quality["phone"]["verdict"] == "suspect"
    assert any("phone/frames.csv holds" in r and f"says {n_phone}" in r for r in res.quality["phone"]["reasons"])
    assert res.quality["sensor"]["verdict"] == "ok"
    code, out, err = cli("sync", stamp_session)
    out = " ".join(out.split())  # rich wraps at the terminal width
    assert code == 0, err
    assert "phone clock: suspect" in out and "cut short" in out


def test_session_killed_while_recording_is_interrupted(stamp_session):
    _set_meta(stamp_session, status="recording")
    lock = stamp_session / LOCK_NAME
    child = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        live = sync_session(stamp_session)
        assert any("still being recorded" in r for r in live.quality["sensor"]["reasons"])
        child.send_signal(signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    res = sync_session(stamp_session)
    for clock in ("phone", "sensor"):
        assert res.quality[clock]["verdict"] == "suspect"
        assert any("interrupted session (killed" in r for r in res.quality[clock]["reasons"])


def test_live_session_without_phone_frames_says_it_is_still_recording(stamp_session):
    """At the start of a recording (no phone frame indexed yet) sync said only "no phone frames"."""
    _set_meta(stamp_session, status="recording")
    index = stamp_session / "phone" / "frames.csv"
    index.write_text(index.read_text().splitlines(keepends=True)[0])  # the header alone
    lock = stamp_session / LOCK_NAME
    child = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(lock)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(SyncError, match="no phone frames yet: the session is still being recorded"):
            sync_session(stamp_session)
    finally:
        child.kill()
        child.wait()
    with pytest.raises(SyncError, match=r"no phone frames$"):  # writer gone: nothing more will come
        sync_session(stamp_session)
