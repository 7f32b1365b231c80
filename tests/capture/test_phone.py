"""The phone over ADB, end to end through the REAL adb server (Debian's `adb`, private port).

A simulated phone (dfdcap.sim SimPhone) runs the companion app's reference implementation
behind a fake device daemon; the host side (AdbPhone, list_phones, resume_pull) reaches it
only through `adb` and `adbutils`, as it would reach a phone on a cable.
"""

from __future__ import annotations

import hashlib
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from dfdcap.capture.phone import AdbPhone, list_phones, remote_sha256, resume_pull
from dfdcap.capture.phone_protocol import (
    PROTOCOL_VERSION,
    ProtocolError,
    VersionMismatch,
    check_relative_name,
    parse_phone_csv,
    schedule_from_message,
    schedule_to_message,
)
from dfdcap.capture.session import DeviceInfo, PhoneFrameRecord, Session, SessionWriter
from dfdcap.errors import DeviceError
from dfdcap.lens import FocusSchedule
from dfdcap.sim.adbd import PrivateAdbServer
from dfdcap.sim.companion import CompanionApp, SimAdbPhone

pytestmark = pytest.mark.skipif(shutil.which("adb") is None, reason="needs Debian's adb (apt install adb)")

PHONE_SIZE = (64, 48)
PHONE_FPS = 60.0
SCHEDULE = FocusSchedule(near_m=0.15, far_m=1.0, steps=4, ramps=2)


def make_sim_phone():
    """The simulated phone of a small simulated rig (64x48 frames, 60 fps)."""
    from dfdcap.sim.rig import RigConfig, SimRig

    rig = SimRig(RigConfig(phone_size=PHONE_SIZE, phone_fps=PHONE_FPS))
    return rig, rig.phone()


@pytest.fixture(scope="module")
def adb_server():
    """Our own adb server on a free port with a temporary HOME; killed at the end."""
    srv = PrivateAdbServer()
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
    assert not srv.running


@pytest.fixture
def adb_env(adb_server, monkeypatch):
    """Code that asks for the default server (AdbPhone(serial), `dfdcap pull`) gets ours."""
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(adb_server.port))
    return adb_server


def _sweep(phone: AdbPhone, writer: SessionWriter, schedule: FocusSchedule, fps: float, probe_s: float = 0.05) -> int:
    """A minimal recording loop: probes before, during (every probe_s) and after the sweep; returns how many."""
    writer.write_phone_camera(phone.hello())
    n = 0
    for _ in range(3):
        writer.append_probe(phone.probe())
        n += 1
    phone.start(schedule, fps)
    while not phone.is_done():
        writer.append_probe(phone.probe())
        n += 1
        time.sleep(probe_s)
    for _ in range(3):
        writer.append_probe(phone.probe())
        n += 1
    phone.stop()
    return n


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


# --- pure protocol checks ------------------------------------------------------------------------


class TestNames:
    @pytest.mark.parametrize("name", ["frames/0.png", "frames/12.jpg", "frames/a_b-c.png"])
    def test_plain_names_accepted(self, name):
        assert check_relative_name(name) == name

    @pytest.mark.parametrize("name", [
        "../evil", "/etc/passwd", "frames/../../evil", "frames/./0.png", "frames//0.png", "frames\\0.png",
        "frames/.hidden", "evil.png", "truth/0.npz", "", "frames/0.png\x00", "frames/",
    ])
    def test_unsafe_names_refused(self, name):
        with pytest.raises(ProtocolError):
            check_relative_name(name)

    def test_csv_with_unsafe_name_refused_whole(self):
        from dfdcap.capture.phone_protocol import PHONE_CSV_COLUMNS, format_phone_csv_row

        good = PhoneFrameRecord(0, 1, 2.0, 2.0, 1, 100, "STATIONARY", 0, 0, "frames/0.png")
        evil = PhoneFrameRecord(1, 2, 3.0, 3.0, 1, 100, "STATIONARY", 0, 1, "../evil")
        header = ",".join(PHONE_CSV_COLUMNS) + "\n"
        rows = [format_phone_csv_row(r, 10, "a" * 64) + "\n" for r in (good, evil)]
        with pytest.raises(ProtocolError, match="evil"):
            parse_phone_csv(header + "".join(rows), "frames.csv")
        (row,) = parse_phone_csv(header + rows[0], "frames.csv")
        assert (row.record, row.size_bytes, row.sha256) == (good, 10, "a" * 64)


def test_schedule_message_round_trip():
    msg = schedule_to_message(SCHEDULE)
    assert np.allclose(msg["focus_diopters"], SCHEDULE.focus_diopters())
    assert schedule_from_message(msg) == SCHEDULE
    msg["focus_diopters"][1][2] += 0.01  # explicit values that disagree with near/far/steps
    with pytest.raises(ProtocolError, match=r"focus_diopters\[1\]\[2\]"):
        schedule_from_message(msg)


# --- through the real adb server ----------------------------------------------------------------


def test_hello_and_devices(adb_env):
    rig, sim = make_sim_phone()
    with SimAdbPhone(sim, adb_env) as sp:
        phones = list_phones()
        assert [(p["serial"], p["model"], p["app_answers"]) for p in phones] == [(sp.serial, "SimPhone", True)]
        with AdbPhone() as phone:  # the only phone attached, on the server $ANDROID_ADB_SERVER_PORT names
            assert phone.serial == sp.serial
            assert phone.info == DeviceInfo("adb", "SimPhone", sp.serial)
            assert phone.hello() == sim.camera()
            probe = phone.probe()
            assert probe.t_host_send_ns <= probe.t_host_recv_ns
        # the app was reached over a forwarded port, the package checked with a shell command
        assert "tcp:48123" in sp.adbd.opened
        assert "shell:pm list packages org.dfdcap.companion" in sp.adbd.opened


def test_full_sweep_recorded_and_pulled(adb_server, tmp_path):
    rig, sim = make_sim_phone()
    with SimAdbPhone(sim, adb_server) as sp:
        with AdbPhone(sp.serial, adb_port=adb_server.port, keep_on_phone=True, progress=False) as phone:
            with SessionWriter.create(tmp_path, "sweep", DeviceInfo("none", "-", "-"), phone.info, SCHEDULE.to_dict()) as w:
                n_probes = _sweep(phone, w, SCHEDULE, PHONE_FPS)
                assert phone.fetch(w) == SCHEDULE.n_frames
            (rec_dir,) = sp.recording_dirs()
            s = Session(w.path)
            assert s.status == "complete" and s.phone_camera == sim.camera()
            # metadata matches the schedule: every (ramp, step) once, asked focus as scheduled
            focus = SCHEDULE.focus_diopters()
            assert [(r.ramp, r.step) for r in s.phone_frames] == [divmod(i, SCHEDULE.steps) for i in range(SCHEDULE.n_frames)]
            for r in s.phone_frames:
                assert r.focus_diopters_requested == pytest.approx(focus[r.ramp, r.step], rel=1e-12)
                assert abs(r.focus_diopters - r.focus_diopters_requested) < 0.2
            t = [r.t_phone_ns for r in s.phone_frames]
            assert all(b > a for a, b in zip(t, t[1:]))
            # pulled files are byte-identical to the phone's
            for r in s.phone_frames:
                assert (w.path / "phone" / r.file).read_bytes() == (rec_dir / r.file).read_bytes()
            assert s.read_phone_frame(s.phone_frames[0]).shape == (PHONE_SIZE[1], PHONE_SIZE[0], 3)
            assert len(list((w.path / "truth" / "phone_depth").glob("*.npz"))) == SCHEDULE.n_frames
            # clock probes in clock/phone_probes.csv agree with the simulated phone's true clock
            probes = s.probes()  # every probe _sweep took (their spacing is _sweep's and the host's, not judged here)
            assert len(probes) == n_probes >= 6
            clock = rig.truth_rig()["clocks"]["phone"]
            t_host = clock["t0_host_ns"] + (probes[:, 1] - clock["t0_dev_ns"]) * (1 + clock["drift_ppm"] * 1e-6)
            assert np.all(probes[:, 0] <= probes[:, 2])
            assert np.all(t_host >= probes[:, 0] - 1e6) and np.all(t_host <= probes[:, 2] + 1e6)
            # a second pull of the same recording: nothing moves, the phone's copy goes
            r2 = resume_pull(w.path, adb_port=adb_server.port, progress=False)
            assert (r2.frames, r2.pulled, r2.skipped, r2.deleted_on_phone) == (SCHEDULE.n_frames, 0, SCHEDULE.n_frames, True)
            assert sp.recording_dirs() == []
            assert len(Session(w.path).phone_frames) == SCHEDULE.n_frames


class EvilApp(CompanionApp):
    """An app whose frames.csv names a file outside the recording."""

    evil_name = "../evil"

    def csv_file_name(self, rec):
        return self.evil_name if rec.index == 1 else rec.file


@pytest.mark.parametrize("evil", ["../evil", "/etc/passwd", "frames/../../../evil"])
def test_file_names_from_phone_checked(adb_server, tmp_path, evil):
    rig, sim = make_sim_phone()
    app = type("App", (EvilApp,), {"evil_name": evil})
    out = tmp_path / "sessions"
    with SimAdbPhone(sim, adb_server, app_cls=app) as sp:
        with AdbPhone(sp.serial, adb_port=adb_server.port, progress=False) as phone:
            w = SessionWriter.create(out, "evil", DeviceInfo("none", "-", "-"), phone.info, SCHEDULE.to_dict())
            before = _files(tmp_path)
            _sweep(phone, w, SCHEDULE, PHONE_FPS)
            with pytest.raises(ProtocolError, match="refused file name"):
                phone.fetch(w)
            w.finish("interrupted", "bad names")
        assert len(sp.recording_dirs()) == 1  # nothing verified, nothing deleted on the phone
    new = _files(tmp_path) - before
    assert all(w.path in p.parents for p in new)  # nothing outside the session
    assert not list((w.path / "phone" / "frames").iterdir())  # and no frame written at all
    assert not (tmp_path / "evil").exists() and not (out / "evil").exists()


def test_shell_arguments_quoted(adb_server):
    rig, sim = make_sim_phone()
    with SimAdbPhone(sim, adb_server) as sp:
        name = "/sdcard/a b; rm -r sdcard $(x) 'q'"
        data = b"quoted\n"
        path = sp.adbd.device_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        with AdbPhone(sp.serial, adb_port=adb_server.port) as phone:
            assert remote_sha256(phone._device, name, "test") == hashlib.sha256(data).hexdigest()
        assert path.read_bytes() == data  # the `rm` inside the name never ran


def test_disconnect_mid_recording_then_resumed_pull(adb_env, tmp_path, fake_sensor):
    from typer.testing import CliRunner

    from dfdcap.capture.recorder import RecordingInterrupted, record_session
    from dfdcap.cli import app

    rig, sim = make_sim_phone()
    schedule = FocusSchedule(near_m=0.15, far_m=1.0, steps=4, ramps=4)  # 16 frames, ~0.27 s at 60 fps
    pulled = threading.Event()

    class CableFirst(CompanionApp):
        def _run(self, rec, msg) -> None:  # the sweep is not over before the cable goes, however late that
            pulled.wait(60)  # thread wakes on a busy host (the recording could otherwise complete first)
            super()._run(rec, msg)

    with SimAdbPhone(sim, adb_env, app_cls=CableFirst) as sp:
        phone = AdbPhone(sp.serial, progress=False)

        def pull_cable() -> None:  # once the sweep runs, the cable goes
            while "start" not in sp.app.requests:
                time.sleep(0.005)
            time.sleep(0.05)
            sp.disconnect()
            pulled.set()

        puller = threading.Thread(target=pull_cable)
        puller.start()
        with pytest.raises(RecordingInterrupted) as exc:
            record_session(fake_sensor, phone, schedule, tmp_path, "cable", phone_fps=PHONE_FPS,
                           probe_interval_s=0.05, progress=False)
        puller.join()
        phone.close()
        session = Session(exc.value.path)
        assert session.status == "interrupted"
        assert "dfdcap pull SESSION" in session.meta["message"] and sp.serial in session.meta["message"]
        assert session.phone_frames == []

        # plugged back; the pull breaks after a few files (the cable again) ...
        sp.reconnect()
        sp.adbd.drop_after_recv = 6
        with pytest.raises(DeviceError, match="broke"):
            resume_pull(session.path, progress=False)
        partial = len(Session(session.path).phone_frames)
        assert 0 < partial < schedule.n_frames
        assert len(sp.recording_dirs()) == 1  # not verified: still on the phone

        # ... and `dfdcap pull SESSION` fetches what remained, then clears the phone
        sp.reconnect()
        before = {p: p.read_bytes() for p in (session.path / "phone" / "frames").iterdir()}
        (rec_dir,) = sp.recording_dirs()
        phone_copy = {p.name: p.read_bytes() for p in (rec_dir / "frames").iterdir()}
        result = CliRunner().invoke(app, ["pull", str(session.path)])
        assert result.exit_code == 0, result.output
        assert f"{schedule.n_frames} phone frames" in result.output and f"{partial} already here" in result.output
    s = Session(session.path)
    assert [r.index for r in s.phone_frames] == list(range(schedule.n_frames))
    assert {p.name: p.read_bytes() for p in (s.path / "phone" / "frames").iterdir()} == phone_copy
    assert all(p.read_bytes() == b for p, b in before.items())
    assert s.meta["phone_pull"]["pulled"] == schedule.n_frames - partial
    assert s.meta["phone_pull"]["deleted_on_phone"] is True


def test_other_protocol_version_is_a_clear_error(adb_server):
    rig, sim = make_sim_phone()
    with SimAdbPhone(sim, adb_server, protocol_version=PROTOCOL_VERSION + 1) as sp:
        with pytest.raises(VersionMismatch) as exc:
            AdbPhone(sp.serial, adb_port=adb_server.port)
        msg = str(exc.value)
        assert f"protocol version {PROTOCOL_VERSION + 1}" in msg and f"speaks {PROTOCOL_VERSION}" in msg
        assert sp.serial in msg
        assert sp.app.requests == ["hello"]  # it stopped right there
        (entry,) = list_phones(adb_port=adb_server.port)
        assert entry["app_installed"] and not entry["app_answers"] and "protocol version" in entry["problem"]


def test_app_not_running_is_started(adb_server):
    rig, sim = make_sim_phone()
    with SimAdbPhone(sim, adb_server) as sp:
        sp.app.close()  # installed, not running: nothing listens on the phone's port

        def launch() -> None:
            sp.adbd.network[48123] = sp.app.start()

        sp.adbd.packages["org.dfdcap.companion"] = launch
        with AdbPhone(sp.serial, adb_port=adb_server.port) as phone:
            assert phone.hello() == sim.camera()
        assert "shell:am start -n org.dfdcap.companion/.RemoteActivity" in sp.adbd.opened


def test_no_phone_and_missing_app_are_clear_errors(adb_server):
    with pytest.raises(DeviceError, match="no phone connected"):
        AdbPhone(adb_port=adb_server.port)
    with pytest.raises(DeviceError, match="not connected"):
        AdbPhone("127.0.0.1:1", adb_port=adb_server.port)
    rig, sim = make_sim_phone()
    with SimAdbPhone(sim, adb_server) as sp:
        sp.adbd.packages.clear()
        with pytest.raises(DeviceError, match="not installed"):
            AdbPhone(sp.serial, adb_port=adb_server.port)


def test_dfdcap_record_with_adb_phone(adb_env, tmp_path):
    """`dfdcap record --sensor sim --phone SERIAL` end to end, then `dfdcap devices` lists the phone."""
    from typer.testing import CliRunner

    from dfdcap.cli import app

    rig, sim = make_sim_phone()
    with SimAdbPhone(sim, adb_env) as sp:
        result = CliRunner().invoke(app, ["record", "--sensor", "sim", "--phone", sp.serial, "--stacks", "2",
                                          "--steps", "3", "--fps", "30", "-o", str(tmp_path)])
        assert result.exit_code == 0, result.output
        listed = CliRunner().invoke(app, ["devices"])
        assert sp.serial in listed.output and "SimPhone" in listed.output
        assert sp.recording_dirs() == []  # verified, then removed from the phone
    (path,) = tmp_path.iterdir()
    s = Session(path)
    assert s.status == "complete" and s.meta["rig"]["phone"] == {"kind": "adb", "model": "SimPhone", "serial": sp.serial}
    assert [(r.ramp, r.step) for r in s.phone_frames] == [(r, st) for r in range(2) for st in range(3)]
    assert len(s.probes()) >= 10 and s.phone_camera == sim.camera()


def test_private_adb_port_is_outside_the_ephemeral_range():
    """`adb start-server` connects to its own port first; a port from the kernel's ephemeral range can be
    that connection's source port, TCP connects it to itself and adb fails with "protocol fault (status
    30 30 30 63?!)": 11 test errors in one of three loaded runs. The private server's port avoids the range."""
    import socket

    from dfdcap.sim.adbd import _ephemeral_ports, free_port

    lo, hi = _ephemeral_ports()
    for _ in range(200):
        port = free_port()
        assert not lo <= port <= hi and not 5555 <= port <= 5585
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))  # and it is free


@pytest.mark.parametrize("doc, says", [
    ("[]", "expected a JSON object, found list"),
    ('{"serial": ["a"]}', "serial ['a'] is not text"),
    ('{"recording_id": 5, "serial": "x"}', "recording_id 5 is not text"),
])
def test_pull_refuses_a_malformed_recording_json(tmp_path, cli, doc, says):
    """A hand-edited phone/recording.json (a list, a serial that is a list) gave an AttributeError or
    TypeError traceback in `dfdcap pull`; now one line naming the file and the key, before any phone is asked."""
    with SessionWriter.create(tmp_path, "edited", DeviceInfo("none", "-", "-"), DeviceInfo("adb", "Pixel", "x"),
                              SCHEDULE.to_dict()) as w:
        pass
    (w.path / "phone" / "recording.json").write_text(doc)
    code, _, err = cli("pull", w.path)
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "recording.json" in err and says in " ".join(err.split()), err


@pytest.mark.parametrize("option", ["--phone", "--recording"])
def test_pull_refuses_an_empty_option(tmp_path, cli, option):
    """--phone '' said "phone : not connected"; --recording '' was taken as not given."""
    code, _, err = cli("pull", tmp_path, option, "")
    assert code == 1 and len(err.strip().splitlines()) == 1 and f"{option}: empty" in err, err


@pytest.mark.parametrize("value", ["abc", "", "-1", "0", "99999"])
def test_bad_adb_server_port_variable_is_named(tmp_path, cli, monkeypatch, value):
    """$ANDROID_ADB_SERVER_PORT=abc (or empty) made adbutils' import fail: `dfdcap devices` noted 'phone:
    ValueError: invalid literal for int()', and -1/0/99999 were handed to `adb -P`, which failed. Each is now
    named as not a port number, by devices and by the commands that talk to a phone."""
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", value)
    code, out, err = cli("devices")
    assert code == 0 and f"ANDROID_ADB_SERVER_PORT={value!r} is not a port number" in " ".join(err.split()), out + err
    with SessionWriter.create(tmp_path, "s", DeviceInfo("none", "-", "-"), DeviceInfo("adb", "Pixel", "x"),
                              SCHEDULE.to_dict()) as w:
        pass
    code, _, err = cli("pull", w.path)
    assert code == 1 and "is not a port number" in err and len(err.strip().splitlines()) == 1, err
