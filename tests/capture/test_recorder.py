"""The recorder: complete and consistent sessions, crash safety (SIGKILL, Ctrl-C, a failing
sensor), bounded memory (drops counted), and `dfdcap record` refusing bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from dfdcap.capture.recorder import PhoneMonitor, RecordingInterrupted, RecordStats, SensorFrameSink, record_session
from dfdcap.capture.session import LOCK_NAME, ClockProbe, Session, SessionWriter
from dfdcap.capture.sources import parse_phone_spec, parse_sensor_spec
from dfdcap.errors import DeviceError
from dfdcap.lens import FocusSchedule
from device_fakes import FakePhone, FakeSensor
from faults_helpers import default_sigint

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]




# --- helpers: what every session must satisfy --------------------------------------------------


def assert_indexes_consistent(s: Session) -> None:
    """Every index line names an existing file; sensor lines in frame order; TUM files match."""
    idx = [r.index for r in s.sensor_frames]
    t = [r.t_host_ns for r in s.sensor_frames]
    assert idx == sorted(set(idx)) and t == sorted(t)
    for r in s.sensor_frames:
        assert (s.path / "sensor" / r.rgb).is_file() and (s.path / "sensor" / r.depth).is_file()
    for r in s.phone_frames:
        assert (s.path / "phone" / r.file).is_file()
    for kind, attr in (("rgb", "rgb"), ("depth", "depth")):
        lines = (s.path / "sensor" / f"{kind}.txt").read_text().splitlines()
        comments = [ln for ln in lines if ln.startswith("#")]
        body = [ln for ln in lines if not ln.startswith("#")]
        assert comments and all(ln.startswith("# ") for ln in comments)
        assert lines[: len(comments)] == comments, "TUM: comments come first"
        stamps = [float(ln.split(" ")[0]) for ln in body]
        files = [ln.split(" ")[1] for ln in body]
        assert all(len(ln.split(" ")) == 2 for ln in body)
        assert stamps == sorted(stamps)
        # the TUM lines are the indexed frames (a crash may tear at most the last of them)
        n = len(body)
        assert len(s.sensor_frames) - 1 <= n <= len(s.sensor_frames) + 1
        for rec, stamp, f in zip(s.sensor_frames, stamps, files):
            assert f == getattr(rec, attr)
            assert stamp == pytest.approx(rec.t_host_ns / 1e9, abs=1e-6)
            assert (s.path / "sensor" / f).is_file()


def _wait_for_lines(path: Path, n: int, proc: subprocess.Popen, timeout_s: float = 600.0) -> int:  # a hang guard only
    """Wait until the index file has more than n lines (header + n frames)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if proc.poll() is not None:
            raise AssertionError(f"recorder exited early: {proc.communicate()}")
        if path.exists():
            lines = len(path.read_text().splitlines())
            if lines > n:
                return lines - 1
        time.sleep(0.05)
    raise AssertionError(f"{path} did not reach {n} lines in {timeout_s} s")


RUNNER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {here!r})
    from device_fakes import FakePhone, FakeSensor
    from dfdcap.capture.recorder import RecordingInterrupted, record_session
    from dfdcap.lens import FocusSchedule
    try:
        record_session(FakeSensor(size=(320, 240)), FakePhone(), FocusSchedule(steps=5, ramps=40), {out!r},
                       "crash", phone_fps=20, progress=False)
    except RecordingInterrupted as e:
        print(e)
        sys.exit(3)
    """
)


def _start_runner(out: Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-c", RUNNER.format(here=str(HERE), out=str(out))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO, preexec_fn=default_sigint,
    )


def _only_session(out: Path) -> Path:
    sessions = [p for p in out.iterdir() if p.is_dir()]
    assert len(sessions) == 1
    return sessions[0]


# --- a complete recording ---------------------------------------------------------------------


def test_recorded_session_is_complete_and_consistent(tmp_path):
    sensor, phone = FakeSensor(), FakePhone()
    schedule = FocusSchedule(0.2, 1.0, steps=4, ramps=3)
    stats = RecordStats()
    path = record_session(sensor, phone, schedule, tmp_path, "ok", phone_fps=12, probe_interval_s=0.25,
                          tail_s=0.2, stats=stats, progress=False, sensor_format="png")
    s = Session(path)
    assert s.status == s.effective_status == "complete"
    assert not (path / LOCK_NAME).exists()
    assert_indexes_consistent(s)
    # counts: the phone's frames are the schedule; the sensor covered the sweep plus the tail
    assert len(s.phone_frames) == schedule.n_frames == stats.phone_frames
    assert [(r.ramp, r.step) for r in s.phone_frames] == [divmod(i, 4) for i in range(12)]
    assert stats.recorder_dropped == 0 and stats.sensor_lost_frame_numbers == 0
    assert len(s.sensor_frames) == stats.sensor_frames_written
    assert [r.index for r in s.sensor_frames] == list(range(len(s.sensor_frames)))  # every frame, once
    # the sensor covered the sweep plus the tail, on the frames' own stamps (a busy host only adds frames):
    # its first frame came before the phone's first, its last tail_s after the phone's last
    phone_host_ns = [r.t_phone_ns - phone.offset_ns for r in s.phone_frames]
    assert s.sensor_frames[0].t_host_ns <= phone_host_ns[0] == phone.t_start
    assert s.sensor_frames[-1].t_host_ns >= phone_host_ns[-1] + 0.2e9
    assert s.meta["recorder"]["sensor_frames_written"] == len(s.sensor_frames)
    assert s.meta["focus_schedule"]["ramps"] == 3
    # frames on disk are the frames the sensor gave (lossless PNG, native depth units)
    r = s.sensor_frames[5]
    np.testing.assert_array_equal(s.read_sensor_depth_raw(r), sensor._depth[r.index % 4])
    np.testing.assert_array_equal(s.read_sensor_rgb(r), sensor._rgb[r.index % 4])
    assert r.t_device_ns - r.t_host_ns == sensor.offset_ns
    # clock probes: >= 5 before the sweep, some during it (their spacing: test_phone_monitor_probes_every_interval), >= 5 after
    probes = s.probes()
    start_ns = s.sensor_frames[0].t_host_ns
    assert (probes[:, 0] < start_ns).sum() >= 5
    assert (probes[:, 2] > s.sensor_frames[-1].t_host_ns).sum() >= 5
    assert ((probes[:, 0] > start_ns) & (probes[:, 2] < s.sensor_frames[-1].t_host_ns)).sum() >= 1  # during the sweep too
    assert np.all(probes[:, 1] - probes[:, 0] > phone.offset_ns - 1e7)
    # the phone was driven in protocol order
    calls = [c for c in phone.calls if c not in ("probe", "is_done")]
    assert calls == ["hello", "start", "stop", "fetch"]


class _ClockedPhone(FakePhone):
    """A phone on a virtual host clock that only its is_done() polls advance (50 ms each); done after 1 s."""

    def __init__(self, clock: list[int]):
        super().__init__()
        self.clock = clock

    def probe(self):
        self.calls.append("probe")
        t = self.clock[0]
        return ClockProbe(t, t + self.offset_ns, t)

    def is_done(self) -> bool:
        self.clock[0] += 50_000_000
        return self.clock[0] >= 1_000_000_000


def test_phone_monitor_probes_every_interval(tmp_path, monkeypatch):
    """During the sweep the monitor probes the phone every probe_interval_s, neither more nor less often,
    and notes when the phone reported done. On a virtual clock, so a busy host cannot change the outcome."""
    import types

    import dfdcap.capture.recorder as recorder
    from dfdcap.capture.session import DeviceInfo

    clock = [0]
    monkeypatch.setattr(recorder, "time", types.SimpleNamespace(monotonic=lambda: clock[0] * 1e-9,
                                                                 monotonic_ns=lambda: clock[0]))
    w = SessionWriter.create(tmp_path, "m", DeviceInfo("f", "s", "1"), DeviceInfo("f", "p", "2"))
    monitor = PhoneMonitor(_ClockedPhone(clock), w, probe_interval_s=0.25, poll_s=0.001)
    monitor.start()
    t_guard = time.monotonic() + 600  # the real clock: ends a hang only
    while monitor.done_host_ns is None and monitor.error is None and time.monotonic() < t_guard:
        time.sleep(0.005)
    monitor.stop()
    w.finish("complete")
    assert monitor.error is None and monitor.done_host_ns == 1_000_000_000
    sent = Session(w.path).probes()[:, 0]
    assert sent[:4].tolist() == [0, 250_000_000, 500_000_000, 750_000_000] and monitor.probes == len(sent)
    assert np.all(np.diff(sent) == 250_000_000)


# --- interruptions ----------------------------------------------------------------------------


def test_sensor_device_error_keeps_every_finished_frame(tmp_path):
    with pytest.raises(RecordingInterrupted) as e:
        record_session(FakeSensor(fail_at=20), FakePhone(), FocusSchedule(steps=5, ramps=10), tmp_path, "cable",
                       phone_fps=10, progress=False)
    assert "cable pulled" in str(e.value) and isinstance(e.value.__cause__, DeviceError)
    s = Session(e.value.path)
    assert s.status == s.effective_status == "interrupted"
    assert "cable pulled" in s.meta["message"]
    assert [r.index for r in s.sensor_frames] == list(range(20))  # every frame before the failure
    assert_indexes_consistent(s)
    assert 0 < len(s.phone_frames) < 50  # what the phone had captured was fetched


class _CtrlCSensor(FakeSensor):
    """KeyboardInterrupt arrives in the recording thread at frame `at` (as Ctrl-C does)."""

    def __init__(self, at: int):
        super().__init__()
        self.at = at

    def frames(self):
        for f in super().frames():
            if f.index == self.at:
                raise KeyboardInterrupt
            yield f


def test_ctrl_c_in_process_marks_interrupted(tmp_path):
    with pytest.raises(RecordingInterrupted, match="Ctrl-C") as e:
        record_session(_CtrlCSensor(at=15), FakePhone(), FocusSchedule(steps=5, ramps=10), tmp_path, "c",
                       phone_fps=10, progress=False)
    s = Session(e.value.path)
    assert s.status == "interrupted" and [r.index for r in s.sensor_frames] == list(range(15))
    assert_indexes_consistent(s)


class _BadDepthSensor(FakeSensor):
    """From frame 10 on, depth arrives as float metres (a driver bug): writing it must fail."""

    def frames(self):
        for f in super().frames():
            yield f if f.index < 10 else type(f)(f.index, f.t_device_ns, f.t_host_ns, f.rgb, f.depth * 0.001)


def test_a_frame_that_cannot_be_written_stops_the_recording(tmp_path):
    with pytest.raises(RecordingInterrupted, match="depth must be") as e:
        record_session(_BadDepthSensor(), FakePhone(), FocusSchedule(steps=5, ramps=10), tmp_path, "bad",
                       phone_fps=10, progress=False)
    s = Session(e.value.path)
    assert s.status == "interrupted" and [r.index for r in s.sensor_frames] == list(range(10))
    assert_indexes_consistent(s)


def test_phone_that_never_finishes_times_out(tmp_path):
    with pytest.raises(RecordingInterrupted, match="did not finish the sweep") as e:
        record_session(FakeSensor(), FakePhone(never_done=True), FocusSchedule(steps=2, ramps=1), tmp_path, "t",
                       phone_fps=30, timeout_s=0.5, progress=False)
    assert Session(e.value.path).status == "interrupted"


def test_sigkill_mid_run_leaves_a_loadable_interrupted_session(tmp_path):
    proc = _start_runner(tmp_path)
    try:
        path = None
        t0 = time.monotonic()
        while path is None and time.monotonic() - t0 < 600:  # ends a hang only
            dirs = [p for p in tmp_path.iterdir() if p.is_dir()]
            path = dirs[0] if dirs else None
            time.sleep(0.02)
        assert path is not None
        _wait_for_lines(path / "sensor" / "frames.csv", 15, proc)
        assert Session(path).effective_status == "recording"  # the writer is alive
        proc.send_signal(signal.SIGKILL)
        proc.wait(600)
    finally:
        proc.kill()
    s = Session(path)
    assert s.status == "recording"  # nobody could write the end...
    assert s.effective_status == "interrupted"  # ...but its writer is gone
    assert len(s.sensor_frames) >= 15
    assert_indexes_consistent(s)
    for r in s.sensor_frames:  # every indexed frame is complete, not only present
        assert s.read_sensor_depth_raw(r).shape == (240, 320)
        assert s.read_sensor_rgb(r).shape == (240, 320, 3)
    assert s.sensor_intrinsics.depth_scale_m == 0.001 and s.phone_camera.image_size == (64, 48)


def test_sigint_stops_cleanly_with_frames_kept(tmp_path):
    proc = _start_runner(tmp_path)
    try:
        t0 = time.monotonic()
        while not any(p.is_dir() for p in tmp_path.iterdir()) and time.monotonic() - t0 < 600:  # ends a hang only
            time.sleep(0.02)
        path = _only_session(tmp_path)
        seen = _wait_for_lines(path / "sensor" / "frames.csv", 20, proc)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=600)  # ends a hang only
    finally:
        proc.kill()
    assert proc.returncode == 3, stderr
    assert "Ctrl-C" in stdout and str(path) in stdout and "Traceback" not in stderr
    s = Session(path)
    assert s.status == s.effective_status == "interrupted"
    assert len(s.sensor_frames) >= seen
    assert s.meta["recorder"]["sensor_frames_written"] == len(s.sensor_frames)
    assert 0 < len(s.phone_frames) < 200
    assert_indexes_consistent(s)
    assert not (path / LOCK_NAME).exists()


# --- bounded memory: drop (live) or wait (file) ------------------------------------------------


class _SlowWriter(SessionWriter):
    """Encoding slower than the producer, as an overloaded disk would be."""

    def save_sensor_frame(self, *a, **k):
        time.sleep(0.01)
        return super().save_sensor_frame(*a, **k)


class _StalledWriter(SessionWriter):
    """A disk that accepts nothing until `go` is set (a stalled disk): no frame finishes meanwhile."""

    go: threading.Event

    def save_sensor_frame(self, *a, **k):
        assert self.go.wait(600)  # ends a hang only
        return super().save_sensor_frame(*a, **k)


def test_full_queue_drops_every_frame_beyond_max_pending(tmp_path):
    """A live sensor's frames beyond max_pending are dropped, counted, and never block the producer;
    the frames taken are written in order. The disk is stalled, not slow: the outcome is exact."""
    from dfdcap.capture.session import DeviceInfo

    w = _StalledWriter.create(tmp_path, "q", DeviceInfo("f", "s", "1"), DeviceInfo("f", "p", "2"))
    w.go = threading.Event()
    sink = SensorFrameSink(w, workers=2, max_pending=3, on_full="drop")
    try:
        taken = [sink.submit(f) for f in FakeSensor(n_frames=40, realtime=False).frames()]
        depth = sink.depth
    finally:
        w.go.set()
        sink.close()
    assert taken == [True] * 3 + [False] * 37 and depth == 3
    w.finish("complete")
    s = Session(w.path)
    assert (sink.written, sink.dropped) == (3, 37) and [r.index for r in s.sensor_frames] == [0, 1, 2]
    assert_indexes_consistent(s)


def test_full_queue_waits_for_a_recording_file_and_keeps_order(tmp_path):
    from dfdcap.capture.session import DeviceInfo

    w = _SlowWriter.create(tmp_path, "q", DeviceInfo("f", "s", "1"), DeviceInfo("f", "p", "2"))
    sink = SensorFrameSink(w, workers=2, max_pending=3, on_full="wait")
    sensor = FakeSensor(n_frames=40, realtime=False)
    for f in sensor.frames():
        assert sink.submit(f)
        assert sink.depth <= 3
    sink.close()
    w.finish("complete")
    s = Session(w.path)
    assert (sink.written, sink.dropped) == (40, 0) and [r.index for r in s.sensor_frames] == list(range(40))
    assert_indexes_consistent(s)


# --- specs and the command line ----------------------------------------------------------------


def test_sensor_and_phone_specs(tmp_path):
    assert parse_sensor_spec("sim").kind == "sim"
    assert parse_sensor_spec("openni:usb://1/2").arg == "usb://1/2"
    oni = tmp_path / "a.oni"
    oni.write_bytes(b"NI10")
    p = parse_sensor_spec(str(oni))
    assert (p.kind, p.is_file) == ("openni", True)
    with pytest.raises(DeviceError, match=r"unknown sensor 'kinect': expected sim, openni"):
        parse_sensor_spec("kinect")
    with pytest.raises(DeviceError, match=r"missing\.bag: file not found"):
        parse_sensor_spec(str(tmp_path / "missing.bag"))
    txt = tmp_path / "a.txt"
    txt.write_text("x")
    with pytest.raises(DeviceError, match="unsupported file type"):
        parse_sensor_spec(str(txt))
    assert parse_phone_spec("R58M123ABC").arg == "R58M123ABC"
    with pytest.raises(DeviceError, match="unknown phone"):
        parse_phone_spec("my phone")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--sensor", "kinect"], "unknown sensor 'kinect'"),
        (["--phone", "two words"], "unknown phone"),
        (["--stacks", "-2"], "--stacks and --steps must be >= 1"),
        (["--steps", "0"], "--stacks and --steps must be >= 1"),
        (["--fps", "0"], "--fps must be between"),
        (["--fps", "1e-6"], "--fps must be between"),  # would wait days for the second frame
        (["--near", "0.01", "--far", "1"], "--near 0.01 m: the schedule's nearest focus 0.010 m"),  # was found after the sensor started
        (["--near", "1.5", "--far", "0.5"], "need 0 < near < far"),
        (["--sensor", "nothere.oni"], "nothere.oni: file not found"),
        (["--phone-size", "12"], "--phone-size '12'"),
        (["--scene", "moon"], "unknown scene 'moon'"),
        (["--sensor-preset", "kinect"], "sensor preset 'kinect'"),
        (["--name", "a/b"], "session name 'a/b'"),
        (["--name", "a" * 240], "(240 characters): at most 200"),  # left NEW/ behind, failing on the session folder
        (["--png", "tiny"], "PNG preset 'tiny'"),
    ],
)
def test_record_bad_input_is_one_line_exit_1_and_writes_nothing(tmp_path, monkeypatch, cli, args, message):
    out = tmp_path / "sessions"
    code, stdout, stderr = cli("record", "-o", str(out), *args)
    assert code == 1
    assert len(stderr.strip().splitlines()) == 1 and message in stderr, stderr
    assert not out.exists()


def test_record_unwritable_output_folder(tmp_path, monkeypatch, cli):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, _, stderr = cli("record", "-o", str(blocker / "sessions"))
    assert code == 1 and len(stderr.strip().splitlines()) == 1
    assert f"{blocker}" in stderr and "not a folder" in stderr
    assert blocker.read_text() == "not a folder" and sorted(os.listdir(tmp_path)) == ["file"]
    if os.geteuid() != 0:  # root may write anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        code, _, stderr = cli("record", "-o", str(ro))
        assert code == 1 and "not writable" in stderr and not os.listdir(ro)


# --- the simulated rig through the command line ------------------------------------------------

needs_sim = pytest.mark.skipif(
    not all((REPO / "dfdcap" / "sim" / f).exists() for f in ("rig.py", "sensor.py", "phone.py")),
    reason="dfdcap.sim rig not present",
)


@needs_sim
@pytest.mark.parametrize("preset, scale, range_m", [("xtion", 0.001, (0.5, 3.5)), ("d405", 0.0001, (0.07, 0.5))])
def test_record_sim_session_is_complete_with_truth(tmp_path, monkeypatch, cli, preset, scale, range_m):
    out = tmp_path / "sessions"
    code, stdout, stderr = cli("record", "--sensor", "sim", "--phone", "sim", "-o", str(out),
                                "--name", "t", "--stacks", "2", "--steps", "3", "--phone-size", "160x120",
                                "--fps", "15", "--seed", "3", "--sensor-preset", preset)
    assert code == 0, stderr
    path = Path(stdout.splitlines()[0])
    assert path.parent == out and path.name.endswith("_t")
    s = Session(path)
    assert s.status == s.effective_status == "complete"
    assert_indexes_consistent(s)
    assert len(s.phone_frames) == 6 and [(r.ramp, r.step) for r in s.phone_frames] == [divmod(i, 3) for i in range(6)]
    focus = [r.focus_diopters_requested for r in s.phone_frames]
    assert focus[:3] == focus[3:] and focus[0] > focus[1] > focus[2]  # each ramp near -> far
    assert s.phone_camera.image_size == (160, 120)
    sweep_s = 6 / 15
    assert len(s.sensor_frames) >= 0.5 * 30 * sweep_s  # a 30 fps sensor over the sweep (2 busy cores)
    assert s.sensor_intrinsics.depth_scale_m == scale
    d = s.read_sensor_depth_m(s.sensor_frames[0])
    valid = d[d > 0]
    assert d.shape == (480, 640) and valid.size > 0.2 * d.size
    assert range_m[0] - 1e-3 <= valid.min() and valid.max() <= range_m[1] + 1e-3  # the preset's working range
    assert s.meta["focus_schedule"]["near_m"] >= range_m[0] - 1e-9  # default focus range inside it
    assert s.has_truth and set(s.truth_rig()) >= {"phone", "sensor", "T_phone_from_sensor", "clocks"}
    # the sensor stream covers the whole sweep: started before the first phone frame (true phone
    # clock -> host) and stopped after the last one
    c = s.truth_rig()["clocks"]["phone"]
    phone_host_ns = [c["t0_host_ns"] + (r.t_phone_ns - c["t0_dev_ns"]) * (1 + c["drift_ppm"] * 1e-6) for r in s.phone_frames]
    assert s.sensor_frames[0].t_host_ns < min(phone_host_ns) and s.sensor_frames[-1].t_host_ns > max(phone_host_ns)
    assert s.read_truth_phone_depth(s.phone_frames[0].index).shape == (120, 160)
    assert s.probes().shape[0] >= 10
    assert f"{len(s.sensor_frames)} sensor frames" in stdout and "6 phone frames" in stdout


@needs_sim
def test_record_sim_ctrl_c_via_cli(tmp_path):
    out = tmp_path / "s"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dfdcap.cli", "record", "-o", str(out), "--stacks", "100", "--phone-size", "64x48"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO, preexec_fn=default_sigint,
    )
    try:
        t0 = time.monotonic()
        while not (out.exists() and any(out.iterdir())) and time.monotonic() - t0 < 600:  # ends a hang only
            time.sleep(0.05)
        path = _only_session(out)
        seen = _wait_for_lines(path / "sensor" / "frames.csv", 5, proc)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 130  # Ctrl-C: exit 130, what was recorded kept and marked
    lines = stderr.strip().splitlines()
    assert lines[-1].startswith("interrupted:") and "recording interrupted (stopped by Ctrl-C)" in lines[-1]
    assert str(path) in lines[-1]
    assert "Traceback" not in stderr
    s = Session(path)
    assert s.status == "interrupted" and len(s.sensor_frames) >= seen
    assert_indexes_consistent(s)


def test_sim_checkerboard_writes_pairs_with_truth(tmp_path, monkeypatch, cli):
    out = tmp_path / "boards"
    code, stdout, stderr = cli("sim", "checkerboard", str(out), "--views", "2",
                                "--board", "7x5", "--square", "0.03", "--phone-size", "320x240", "--corrupt", "1")
    assert code == 0, stderr
    from dfdcap.fileio import read_image, read_json

    truth = read_json(out / "truth.json")
    assert len(truth["views"]) == 2 and sum(v["corrupted"] for v in truth["views"]) == 1
    assert truth["board"]["cols"] == 7 and truth["board"]["rows"] == 5
    for v in truth["views"]:
        assert read_image(out / "phone" / f"{v['name']}.png").shape == (240, 320, 3)
        assert read_image(out / "sensor" / f"{v['name']}.png").shape == (480, 640, 3)


@pytest.mark.parametrize(
    "args, message",
    [(["--views", "0"], "--views >= 1"), (["--board", "9"], "--board '9'"), (["--square", "-1"], "--square > 0"),
     (["--views", "2", "--corrupt", "3"], "--corrupt <= --views")],
)
def test_sim_checkerboard_bad_input(tmp_path, monkeypatch, cli, args, message):
    out = tmp_path / "boards"
    code, _, stderr = cli("sim", "checkerboard", str(out), *args)
    assert code == 1 and len(stderr.strip().splitlines()) == 1 and message in stderr
    assert not out.exists()
