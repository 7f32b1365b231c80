"""Open Camera's Focus Bracketing as the phone: the focus rule, names, EXIF, settings, and the
host side over the REAL adb server against the simulated Open Camera behind the fake adbd."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from dfdcap.capture.exif import (
    TAG_DATETIME_ORIGINAL,
    TAG_FNUMBER,
    TAG_FOCAL,
    TAG_FOCAL_35,
    TAG_OFFSET_ORIGINAL,
    TAG_SUBSEC_ORIGINAL,
    exif_app1,
    insert_app1,
    local_to_epoch_ns,
    read_exif,
)
from dfdcap.capture.opencamera_focus import (
    BracketingSettings,
    bracketing_alpha,
    bracketing_focus_diopters,
    parse_photo_name,
    parse_settings_xml,
    settings_to_xml,
)
from dfdcap.capture.session import Session
from dfdcap.cli import app
from dfdcap.errors import DeviceError

needs_adb = pytest.mark.skipif(shutil.which("adb") is None, reason="needs Debian's adb (apt install adb)")
PERIOD_S = 0.05  # the simulated app's 0.5 s per photo, scaled down (time_scale 0.1)


# --- pure ----------------------------------------------------------------------------------------


class TestFocusRule:
    def test_open_camera_unit_values(self):
        # issue #14 / Open Camera's own test: 10 D -> 1 D, N = 5
        assert bracketing_focus_diopters(10.0, 1.0, 5) == pytest.approx([10, 4.449, 2.593, 1.633, 1], abs=5e-4)
        assert [bracketing_alpha(i, 5) for i in (1, 2, 3)] == pytest.approx([0.138647, 0.317394, 0.569323], abs=1e-6)
        # the app's test case 10 D -> 0.1 D: d_i = 1 / (alpha_i * (10 - 0.1) + 0.1)
        d = bracketing_focus_diopters(10.0, 0.1, 5)
        want = [10.0] + [1 / (a * 9.9 + 0.1) for a in (0.138647, 0.317394, 0.569323)] + [0.1]
        assert d == pytest.approx(want, rel=1e-5)

    def test_mirrored_when_the_source_is_farther(self):
        # 1 D -> 10 D: the source (1 m) is farther than the target (0.1 m): the same distances, reversed
        up = bracketing_focus_diopters(1.0, 10.0, 5)
        assert up == pytest.approx([1, 1.633, 2.593, 4.449, 10], abs=5e-4)
        assert up == pytest.approx(bracketing_focus_diopters(10.0, 1.0, 5)[::-1], rel=1e-12)
        assert [bracketing_alpha(i, 5, source_farther=True) for i in (1, 2, 3)] == pytest.approx(
            [1 - 0.569323, 1 - 0.317394, 1 - 0.138647], abs=1e-6)
        # without the mirror the inner frames would bunch at the far end instead
        assert bracketing_focus_diopters(1.0, 10.0, 5)[1] < 2.0

    def test_ends_exact_and_clamped_interpolation(self):
        d = bracketing_focus_diopters(0.0, 5.0, 4)  # 0 D = infinity: interpolated from 0.1 D (10 m)
        assert d[0] == 0.0 and d[-1] == 5.0 and all(np.diff(d) > 0)
        assert d[1] == pytest.approx(1 / ((1 - bracketing_alpha(1, 4, True)) * 10 + bracketing_alpha(1, 4, True) * 0.2))
        for n in (2, 3, 8, 20):
            d = bracketing_focus_diopters(8.0, 2.0, n)
            assert len(d) == n and d[0] == 8.0 and d[-1] == 2.0 and all(np.diff(d) < 0)
        with pytest.raises(DeviceError):
            bracketing_focus_diopters(8.0, 2.0, 1)


class TestNames:
    def test_parts(self):
        p = parse_photo_name("IMG_20261202_051203_4.jpg")
        assert (p.stamp, p.index, p.ext, p.local_time.second) == ("20261202_051203", 4, "jpg", 3)
        p = parse_photo_name("IMG_20261202_051203.250_0.dng")
        assert (p.stamp, p.index, p.local_time.microsecond) == ("20261202_051203.250", 0, 250_000)

    @pytest.mark.parametrize("name", [
        "../IMG_20261202_051203_0.jpg", "IMG_20261202_051203_0.jpg/../../x", "/etc/passwd", "IMG_20261202_051203.jpg",
        "IMG_20261202_051203_0.jpg\n", "IMG_20261302_051203_0.jpg", ".pending-IMG_20261202_051203_0.jpg",
        "IMG_20261202_051203_0.jpg;rm -r sdcard", "IMG_20261202_051203_0.png", "",
    ])
    def test_anything_else_is_not_a_photo(self, name):
        assert parse_photo_name(name) is None


def test_exif_round_trip_and_epoch():
    import cv2

    jpeg = cv2.imencode(".jpg", np.zeros((30, 40, 3), np.uint8))[1].tobytes()
    tags = {TAG_DATETIME_ORIGINAL: "2026:12:02 06:01:02", TAG_SUBSEC_ORIGINAL: "045", TAG_OFFSET_ORIGINAL: "+01:00",
            TAG_FOCAL: 4.2, TAG_FNUMBER: 1.7, TAG_FOCAL_35: 26}
    data = insert_app1(jpeg, exif_app1(tags))
    info = read_exif(data, "x.jpg")
    assert info.image_size == (40, 30) and info.focal_length_35mm == 26
    assert info.focal_length_m == pytest.approx(4.2e-3) and info.f_number == pytest.approx(1.7)
    t = local_to_epoch_ns(info.local_time(), 3600)
    assert t == 1_796_187_662_045_000_000  # 2026-12-02 05:01:02.045 UTC
    assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR).shape == (30, 40, 3)
    PIL = pytest.importorskip("PIL.Image")  # an independent reader agrees where installed
    ex = PIL.open(io.BytesIO(data)).getexif().get_ifd(0x8769)
    assert ex[TAG_DATETIME_ORIGINAL] == "2026:12:02 06:01:02" and ex[TAG_SUBSEC_ORIGINAL] == "045"


def test_settings_xml_round_trip_keeps_other_keys():
    text = ("<?xml version='1.0' encoding='UTF-8' standalone='yes' ?><open_camera_prefs>"
            "<boolean key=\"preference_shutter_sound\" value=\"false\" /><string key=\"preference_photo_mode\" "
            "value=\"preference_photo_mode_std\" /></open_camera_prefs>")
    prefs, s = parse_settings_xml(text, "backup.xml")
    assert not s.is_bracketing
    new = settings_to_xml(prefs, BracketingSettings(8.0, 2.5, 10))
    prefs2, s2 = parse_settings_xml(new, "new.xml")
    assert s2 == BracketingSettings(8.0, 2.5, 10) and s2.is_bracketing
    assert prefs2["preference_shutter_sound"] == ("boolean", "false")
    with pytest.raises(DeviceError, match="open_camera_prefs"):
        parse_settings_xml("<map/>", "x.xml")


# --- over the real adb server ------------------------------------------------------------------------


def small_rig():
    from dfdcap.sim.rig import RigConfig, SimRig

    return SimRig(RigConfig(phone_size=(160, 120), sensor="d405"))


@pytest.fixture(scope="module")
def adb_server():
    from dfdcap.sim.adbd import PrivateAdbServer

    with PrivateAdbServer() as srv:
        yield srv


def sim_device(adb_server, **kw):
    from dfdcap.sim.opencamera import SimOpenCameraDevice

    kw.setdefault("time_scale", PERIOD_S / 0.5)
    return SimOpenCameraDevice(small_rig(), server=adb_server, **kw)


def host(dev, **kw):
    from dfdcap.capture.opencamera import OpenCameraPhone

    return OpenCameraPhone(dev.serial, adb_port=dev.adb_port, frame_period_s=PERIOD_S, progress=False, **kw)


def record(phone, tmp_path, ramps: int, **kw):
    from device_fakes import FakeSensor
    from dfdcap.capture.recorder import record_session

    schedule, fps = phone.bracketing_schedule(ramps, None)
    return record_session(FakeSensor(size=(64, 48)), phone, schedule, tmp_path, "oc", phone_fps=fps,
                          probe_interval_s=0.05, edge_probes=5, progress=False, **kw)


@needs_adb
def test_ramps_recorded_pulled_and_indexed(adb_server, tmp_path):
    with sim_device(adb_server) as dev:
        dev.app.press()  # an old bracket already on the phone: not part of this session
        dev.app.wait_idle()
        old = set((dev.storage / "sdcard/DCIM/OpenCamera").iterdir())
        (dev.storage / "sdcard/DCIM/OpenCamera/IMG_20200101_000000_0.jpg;rm -r sdcard").write_bytes(b"x")
        with host(dev) as phone:
            path = record(phone, tmp_path, 2)
        assert dev.app.presses == 3  # one key press per ramp, never a second one during a ramp
        assert "shell:am start -n net.sourceforge.opencamera/.MainActivity" in dev.adbd.opened  # brought to the front
        s = Session(path)
        assert s.status == "complete"
        focus = bracketing_focus_diopters(10.0, 2.0, 5)
        assert [(r.ramp, r.step) for r in s.phone_frames] == [(k, i) for k in range(2) for i in range(5)]
        assert [r.focus_diopters for r in s.phone_frames] == pytest.approx(focus * 2, rel=1e-12)
        assert {r.lens_state for r in s.phone_frames} == {"UNKNOWN"}
        cam = json.loads((path / "phone" / "camera.json").read_text())
        assert cam["focus_source"] == "formula" and cam["timestamp_source"] == "EXIF"
        assert cam["image_size"] == [160, 120] and cam["focal_length_m"] == pytest.approx(4.2e-3)
        assert cam["sensor_size_m"][0] == pytest.approx(5.6448e-3, rel=0.02)  # from the 35 mm equivalent
        side = json.loads((path / "phone" / "opencamera.json").read_text())
        names = [n for r in side["ramps"] for n in r["files"]]
        assert not {dev.storage / "sdcard/DCIM/OpenCamera" / n for n in names} & old
        # byte-identical to the phone's photos; times from EXIF agree with the phone's clock at capture
        for r, n in zip(s.phone_frames, names):
            assert (path / "phone" / r.file).read_bytes() == (dev.storage / "sdcard/DCIM/OpenCamera" / n).read_bytes()
            t_host = dev.app.truth[n][0]
            assert abs(r.t_phone_ns - dev.app.wall_ns(t_host)) < 1_100_000  # EXIF keeps ms; the sim clock jitters 20 us
        # clock probes are `date +%s%N` round trips on the same wall clock
        probes = s.probes()
        assert len(probes) >= 10 and np.all(probes[:, 0] <= probes[:, 2])
        model = dev.truth_rig()["clocks"]["phone"]
        t_host = model["t0_host_ns"] + (probes[:, 1] - model["t0_dev_ns"]) * (1 + model["drift_ppm"] * 1e-6)
        assert np.all(t_host >= probes[:, 0] - 1e6) and np.all(t_host <= probes[:, 2] + 1e6)
        assert not (tmp_path / "sdcard").exists() and not list(tmp_path.glob("IMG_*"))


def _interrupted(adb_server, tmp_path, ramps: int, **dev_kw):
    from dfdcap.capture.recorder import RecordingInterrupted

    with sim_device(adb_server, **dev_kw) as dev:
        with host(dev, slack_s=1.0) as phone:
            with pytest.raises(RecordingInterrupted) as exc:
                record(phone, tmp_path, ramps)
    return exc.value, Session(exc.value.path)


@needs_adb
def test_cancelled_ramp_keeps_the_complete_ones(adb_server, tmp_path):
    # someone presses the volume key again during ramp 2, after its first two photos
    err, s = _interrupted(adb_server, tmp_path, 3, press_before=frozenset({(1, 2)}))
    assert "\n" not in str(err) and "ramp 2 of 3" in str(err) and "complete ramps are kept" in str(err)
    assert s.status == "interrupted"
    assert [(r.ramp, r.step) for r in s.phone_frames] == [(0, i) for i in range(5)]
    assert sorted(p.name for p in (s.path / "phone" / "frames").iterdir()) == [f"{i}.jpg" for i in range(5)]


@needs_adb
def test_missing_file_keeps_the_complete_ramps(adb_server, tmp_path):
    err, s = _interrupted(adb_server, tmp_path, 3, lose_photos=frozenset({(1, 3)}))
    assert "\n" not in str(err) and "ramp 2 of 3: 4 of 5 photos" in str(err)
    assert [r.index for r in s.phone_frames] == list(range(5))


@needs_adb
@pytest.mark.parametrize("case, match", [
    ("not_installed", "Open Camera .net.sourceforge.opencamera. is not installed"),
    ("standard_mode", "not Focus Bracketing"),
    ("unauthorized", "unauthorized; accept the USB debugging prompt"),
])
def test_phone_not_ready_is_one_line_and_writes_nothing(adb_server, tmp_path, monkeypatch, cli, case, match):
    kw = {"not_installed": {"installed": False}, "unauthorized": {"authorized": False},
          "standard_mode": {"settings": BracketingSettings(10.0, 2.0, 5, "preference_photo_mode_std")}}[case]
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(adb_server.port))
    with sim_device(adb_server, **kw) as dev:
        code, _out, err = cli("record", "--sensor", "sim", "--phone", f"opencamera:{dev.serial}", "-o", tmp_path / "s")
        assert code == 1, err
        assert "Traceback" not in err and err.startswith("error:"), err  # one message (rich wraps it at 80 columns)
        flat = " ".join(err.split())
        assert dev.serial in flat and re.search(match, flat), err
        assert dev.app.presses == 0
    assert not (tmp_path / "s").exists() or not list((tmp_path / "s").iterdir())


@needs_adb
def test_other_settings_pushed_then_restored(adb_server, tmp_path):
    from dfdcap.lens import FocusSchedule

    with sim_device(adb_server) as dev:
        with host(dev) as phone:
            with pytest.raises(DeviceError, match="Restore settings > dfdcap_.*xml") as exc:
                phone.bracketing_schedule(2, FocusSchedule(0.125, 0.5, 4, 2))
        name = str(exc.value).split("Restore settings > ")[1].split(";")[0]
        dev.app.restore_settings(name)  # the user's tap
        assert dev.app.settings == BracketingSettings(8.0, 2.0, 4)
        with host(dev) as phone:
            sched, fps = phone.bracketing_schedule(2, FocusSchedule(0.125, 0.5, 4, 2))
            assert (sched.steps, sched.ramps, fps) == (4, 2, 1 / PERIOD_S)


@needs_adb
def test_pull_refuses_names_outside_the_app_pattern(adb_server, tmp_path):
    from dfdcap.capture.opencamera import pull_photos
    from dfdcap.capture.phone import SyncConnection

    with sim_device(adb_server) as dev, host(dev) as phone:
        with SyncConnection(phone._device, "t") as sync:
            for evil in ("../../evil.jpg", "IMG_20260101_000000_0.jpg/../../../x"):
                with pytest.raises(DeviceError, match="refused file name"):
                    pull_photos(phone._device, sync, [evil], [10], tmp_path / "frames", 0, "t")
    assert not list(tmp_path.rglob("*evil*")) and not (tmp_path / "frames").exists()


def test_import_opencamera_folder(tmp_path, cli):
    from dfdcap.sim.opencamera import SimOpenCamera

    rig = small_rig()
    cam = SimOpenCamera(rig.phone(), tmp_path / "phone", settings=BracketingSettings(2.0, 8.0, 4),
                        time_scale=0.02, write_offset_tag=True)
    for _ in range(2):
        cam.press()
        cam.wait_idle()
    folder = tmp_path / "phone" / "sdcard" / "DCIM" / "OpenCamera"
    first = sorted(folder.iterdir())[0].name
    (folder / first.replace("_0.jpg", "_9.jpg").replace("IMG_", "IMG_1")).write_bytes(b"")  # not a ramp of this N
    (folder / "IMG_20200101_000000_0.jpg").write_bytes((folder / first).read_bytes())  # an incomplete bracket
    code, out, err = cli("import-opencamera", folder, "--source-diopters", "2", "--target-diopters", "8",
                         "-n", "4", "-o", tmp_path / "sessions")
    assert code == 0, err
    assert "2 focus brackets, 8 photos; skipped 1 incomplete: 20200101_000000" in " ".join(out.split())
    (path,) = (tmp_path / "sessions").iterdir()
    s = Session(path)
    assert s.status == "complete" and s.sensor_frames == [] and s.meta["rig"]["phone"]["kind"] == "opencamera"
    assert [r.focus_diopters for r in s.phone_frames] == pytest.approx(bracketing_focus_diopters(2, 8, 4) * 2)
    t = [r.t_phone_ns for r in s.phone_frames]
    assert all(b > a for a, b in zip(t, t[1:]))
    truth = sorted(cam.wall_ns(t_host) for t_host, _f, _d in cam.truth.values())
    assert np.abs(np.array(t) - np.array(truth)).max() < 1_100_000  # EXIF (ms) with OffsetTimeOriginal; clock jitter 20 us
    assert s.read_phone_frame(s.phone_frames[0]).shape == (120, 160, 3)
    code, _, err = cli("import-opencamera", folder, "--source-diopters", "2", "--target-diopters", "8",
                       "-n", "7", "-o", tmp_path / "s2")
    assert code == 1 and "Open Camera offers" in err and not (tmp_path / "s2").exists()


def test_import_opencamera_refuses_a_smaller_n_than_the_brackets(tmp_path, cli):
    """Brackets of 4 photos imported with -n 3 (or 2) read as 2 brackets of 3 photos, each given the focus of
    Open Camera's 3-photo rule (exit 0, wrong focus on every photo); now refused, naming a photo beyond -n."""
    from dfdcap.sim.opencamera import SimOpenCamera

    cam = SimOpenCamera(small_rig().phone(), tmp_path / "phone", settings=BracketingSettings(2.0, 8.0, 4), time_scale=0.02)
    for _ in range(2):
        cam.press()
        cam.wait_idle()
    folder = tmp_path / "phone" / "sdcard" / "DCIM" / "OpenCamera"
    for n in ("3", "2"):
        code, out, err = cli("import-opencamera", folder, "--source-diopters", "2", "--target-diopters", "8",
                             "-n", n, "-o", tmp_path / "sessions")
        assert code == 1 and f"has at least 4 photos, not -n {n}" in err and f"_{n}.jpg" in err, err
        assert not (tmp_path / "sessions").exists() or not any((tmp_path / "sessions").iterdir())


def test_import_opencamera_photo_without_exif_time_among_others(tmp_path, cli):
    """A photo re-saved without EXIF inside a bracket whose others have EXIF times (with OffsetTimeOriginal)
    took its time from its name in UTC: an hour off its neighbours, the bracket's times going backwards,
    exit 0 and no word. Now the whole bracket takes its times from its name, in the photos' own UTC offset,
    with a warning naming the photo."""
    import cv2

    from dfdcap.sim.opencamera import SimOpenCamera

    cam = SimOpenCamera(small_rig().phone(), tmp_path / "phone", settings=BracketingSettings(2.0, 8.0, 4),
                        time_scale=0.02, write_offset_tag=True)
    cam.press()
    cam.wait_idle()
    folder = tmp_path / "phone" / "sdcard" / "DCIM" / "OpenCamera"
    photo = sorted(folder.glob("IMG_*_1.jpg"))[0]
    assert cv2.imwrite(str(photo), cv2.imread(str(photo)))  # re-saved: no EXIF left
    code, out, err = cli("import-opencamera", folder, "--source-diopters", "2", "--target-diopters", "8",
                         "-n", "4", "-o", tmp_path / "sessions")
    assert code == 0, err
    assert f"{photo}: no EXIF time" in " ".join(err.split()), err
    (path,) = (tmp_path / "sessions").iterdir()
    t = [r.t_phone_ns for r in Session(path).phone_frames]
    assert [b - a for a, b in zip(t, t[1:])] == [500_000_000] * 3, t
    truth = sorted(cam.wall_ns(t_host) for t_host, _f, _d in cam.truth.values())
    assert abs(t[0] - truth[0]) < 1_100_000_000  # the name's whole second, in the photos' own UTC offset


def test_pull_of_an_imported_or_edited_opencamera_session(tmp_path, cli):
    """`dfdcap pull` of an import-opencamera session said 'no phone connected' (with a phone: a KeyError
    traceback, its ramps have no sizes); a hand-edited phone/opencamera.json with a list as serial or
    numbers as ramps gave TypeError tracebacks. Each is now one line naming the session or the file."""
    import json

    from dfdcap.sim.opencamera import SimOpenCamera

    cam = SimOpenCamera(small_rig().phone(), tmp_path / "phone", settings=BracketingSettings(2.0, 8.0, 4), time_scale=0.02)
    cam.press()
    cam.wait_idle()
    folder = tmp_path / "phone" / "sdcard" / "DCIM" / "OpenCamera"
    code, _, err = cli("import-opencamera", folder, "--source-diopters", "2", "--target-diopters", "8",
                       "-n", "4", "-o", tmp_path / "sessions")
    assert code == 0, err
    (path,) = (tmp_path / "sessions").iterdir()
    code, _, err = cli("pull", path)
    assert code == 1 and "made by import-opencamera" in err and "nothing on a phone to pull" in " ".join(err.split()), err
    side = path / "phone" / "opencamera.json"
    doc = json.loads(side.read_text())
    del doc["imported_from"]
    for edit, says in (({"serial": ["a"]}, "serial ['a'] is not text"), ({"serial": "x", "ramps": [1, 2]}, "ramps: expected a list")):
        side.write_text(json.dumps(doc | edit))
        code, _, err = cli("pull", path)
        assert code == 1 and "Traceback" not in err and "opencamera.json" in err and says in " ".join(err.split()), err


# --- the whole chain ------------------------------------------------------------------------------


def _calibration_from_truth(rig: dict, path: Path) -> Path:
    """A calibration file holding the simulator's true cameras (this test judges recording + sync, not calibration)."""
    path.write_text(json.dumps({
        "schema": 1, "board": {"type": "checkerboard", "cols": 9, "rows": 6, "square_m": 0.025},
        "phone": rig["phone"] | {"rms_px": 0.0}, "sensor": rig["sensor"] | {"rms_px": 0.0},
        "T_phone_from_sensor": rig["T_phone_from_sensor"], "stereo": {"rms_px": 0.0},
    }))
    return path


@needs_adb
def test_record_steps_alone_is_asked_of_open_camera(tmp_path, monkeypatch, cli):
    """`record --phone opencamera:sim --steps 4` with the app set to 5 photos recorded stacks of 5 (exit 0):
    only --near/--far were compared with the phone's settings. --steps alone now asks for that photo count
    (the phone's source and target kept): an edited backup is pushed and the record stops, writing nothing."""
    monkeypatch.setenv("DFDCAP_SIM_OPENCAMERA_PERIOD_S", str(PERIOD_S))
    code, _, err = cli("record", "--phone", "opencamera:sim", "--stacks", "1", "--steps", "4", "--phone-size", "64x48",
                       "-o", tmp_path / "sessions")
    err = " ".join(err.split())
    assert code == 1 and "asked Focus Bracketing 10 D -> 2 D, 4 photos" in err and "Restore settings" in err, err
    assert not (tmp_path / "sessions").exists() or not any((tmp_path / "sessions").iterdir())


@pytest.mark.parametrize("opt, says", [(("--fps", "5"), "--fps 5.0: Open Camera takes a photo every 0.5 s"),
                                       (("--spacing", "metres"), "--spacing metres: Open Camera spaces the focus")])
def test_record_refuses_options_open_camera_does_not_take(tmp_path, monkeypatch, cli, opt, says):
    """--fps and --spacing with --phone opencamera:... were silently ignored (exit 0: 2 photos/s, the app's
    own focus rule), the user believing they applied. Now refused, before any device starts."""
    monkeypatch.setenv("DFDCAP_SIM_OPENCAMERA_PERIOD_S", str(PERIOD_S))
    code, _, err = cli("record", "--phone", "opencamera:sim", "--stacks", "1", *opt, "-o", tmp_path / "sessions")
    assert code == 1 and says in " ".join(err.split()), err
    assert not (tmp_path / "sessions").exists()


@pytest.mark.parametrize("value", ["abc", "nan", "0", "-1", "inf", "1e6"])
def test_bad_sim_period_variable_is_named(tmp_path, monkeypatch, cli, value):
    """$DFDCAP_SIM_OPENCAMERA_PERIOD_S=abc gave a ValueError traceback, nan an AttributeError, 0 a
    ZeroDivisionError, -1/inf 'recorder: need phone_fps > 0 ...' (naming no variable), 1e6 waited for ever.
    Now one line naming the variable, before any device starts."""
    monkeypatch.setenv("DFDCAP_SIM_OPENCAMERA_PERIOD_S", value)
    code, _, err = cli("record", "--phone", "opencamera:sim", "--stacks", "1", "-o", tmp_path / "sessions")
    assert code == 1 and f"DFDCAP_SIM_OPENCAMERA_PERIOD_S={value!r}: expected seconds per photo" in err, err
    assert not (tmp_path / "sessions").exists()


@needs_adb
@pytest.mark.slow
def test_record_sync_build_against_truth(tmp_path, monkeypatch):
    """`dfdcap record --phone opencamera:sim`, `dfdcap sync`, `dfdcap build-dataset` (one sensor frame a
    stack, the default) and `--fuse median`: the dataset depth in the phone's view against the
    simulator's true depth. The 252x189 phone view is coarser than the sensor (~4 sensor points a
    pixel): the nearest-point z-buffer alone gave a median error of 0.6-0.7 % without --fuse."""
    from dfdcap.dataset.h5io import open_dataset

    monkeypatch.setenv("DFDCAP_SIM_OPENCAMERA_PERIOD_S", str(PERIOD_S))
    runner = CliRunner()
    res = runner.invoke(app, ["record", "--sensor", "sim", "--phone", "opencamera:sim", "--stacks", "3",
                              "--sensor-preset", "d405", "--phone-size", "252x189", "-o", str(tmp_path / "sessions")])
    assert res.exit_code == 0, res.output
    (path,) = (tmp_path / "sessions").iterdir()
    s = Session(path)
    assert s.status == "complete" and len(s.phone_frames) == 15 and s.meta["rig"]["phone"]["kind"] == "opencamera"
    assert res.exit_code == 0 and runner.invoke(app, ["sync", str(path)]).exit_code == 0
    cal = _calibration_from_truth(s.truth_rig(), tmp_path / "cal.json")
    for fuse in ("none", "median"):
        out = tmp_path / f"d_{fuse}.h5"
        res = runner.invoke(app, ["build-dataset", str(path), "--calib", str(cal), "--fuse", fuse, "-o", str(out)])
        assert res.exit_code == 0, res.output
        with open_dataset(out) as f:
            n = f.n("train")
            assert n >= 1  # a stack whose middle photo has no sensor frame within half a period is skipped
            for i in range(n):
                prov = f.provenance("train", i)
                depth, mask = f.depth_m("train", i), f.mask("train", i)
                truth = s.read_truth_phone_depth(prov["reference_phone_index"])
                assert mask.mean() > 0.3
                rel = np.abs(depth[mask] - truth[mask]) / truth[mask]
                assert np.median(rel) <= 0.005, (fuse, np.median(rel))


@needs_adb
def test_record_shows_what_the_photos_lack(adb_server, tmp_path, monkeypatch):
    """A camera that writes an undated DateTimeOriginal: the photos still index (times from their
    names), and `record` shows why and keeps it in session.json's notes (the pull dropped it)."""
    from dfdcap.sim.opencamera import SimOpenCamera

    exif_tags = SimOpenCamera._exif_tags
    monkeypatch.setattr(SimOpenCamera, "_exif_tags",
                        lambda self, wall_ns: {**exif_tags(self, wall_ns), TAG_DATETIME_ORIGINAL: "garbage"})
    with sim_device(adb_server) as dev:
        with host(dev) as phone:
            path = record(phone, tmp_path, 1)
    s = Session(path)
    assert s.status == "complete" and len(s.phone_frames) == 5
    notes = [n for n in s.meta["recorder"]["notes"] if "is not a date" in n]
    assert len(notes) == 5 and "'garbage'" in notes[0]
    assert json.loads((path / "phone" / "camera.json").read_text())["timestamp_source"] == "UNKNOWN"


@needs_adb
def test_cable_pulled_during_the_pull_then_dfdcap_pull_resumes(adb_server, tmp_path, monkeypatch, cli):
    from dfdcap.capture.recorder import RecordingInterrupted

    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(adb_server.port))
    with sim_device(adb_server) as dev:
        with host(dev) as phone:
            dev.adbd.drop_after_recv = dev.adbd.recv_count + 7  # the cable goes during ramp 2's photos
            with pytest.raises(RecordingInterrupted) as exc:
                record(phone, tmp_path, 2)
        s = Session(exc.value.path)
        assert s.status == "interrupted" and "dfdcap pull SESSION" in s.meta["message"] and s.phone_frames == []
        kept = {p.name: p.read_bytes() for p in (s.path / "phone" / "frames").iterdir()}
        assert sorted(kept) == [f"{i}.jpg" for i in range(5)]  # ramp 1 verified and renamed; ramp 2 not at all
        dev.adbd.start(dev.adbd.port)
        adb_server.connect(dev.serial)
        code, out, err = cli("pull", s.path)
        assert code == 0, err
        assert "10 phone frames (5 pulled, 5 already here" in " ".join(out.split())
        s = Session(s.path)
        assert [r.index for r in s.phone_frames] == list(range(10))
        assert all((s.path / "phone" / "frames" / n).read_bytes() == b for n, b in kept.items())
        side = json.loads((s.path / "phone" / "opencamera.json").read_text())
        for r in s.phone_frames:
            name = side["ramps"][r.ramp]["files"][r.step]
            assert (s.path / "phone" / r.file).read_bytes() == (dev.storage / "sdcard/DCIM/OpenCamera" / name).read_bytes()
        assert s.meta["phone_pull"]["pulled"] == 5


@needs_adb
def test_dfdcap_pull_shows_what_the_photos_lack(adb_server, tmp_path, monkeypatch, cli):
    """The resumed pull of undated photos: `dfdcap pull` shows why their times come from their names
    and keeps it in session.json (it dropped the notes that `record` shows)."""
    from dfdcap.capture.recorder import RecordingInterrupted
    from dfdcap.sim.opencamera import SimOpenCamera

    exif_tags = SimOpenCamera._exif_tags
    monkeypatch.setattr(SimOpenCamera, "_exif_tags",
                        lambda self, wall_ns: {**exif_tags(self, wall_ns), TAG_DATETIME_ORIGINAL: "garbage"})
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(adb_server.port))
    with sim_device(adb_server) as dev:
        with host(dev) as phone:
            dev.adbd.drop_after_recv = dev.adbd.recv_count + 2  # the cable goes during ramp 1's photos
            with pytest.raises(RecordingInterrupted) as exc:
                record(phone, tmp_path, 1)
        dev.adbd.start(dev.adbd.port)
        adb_server.connect(dev.serial)
        code, out, err = cli("pull", exc.value.path)
    assert code == 0, err
    shown = " ".join((out + err).split())
    assert shown.count("is not a date") == 5 and "'garbage'" in shown
    s = Session(exc.value.path)
    assert len(s.phone_frames) == 5
    assert sum("is not a date" in n for n in s.meta["phone_pull"]["notes"]) == 5


@pytest.mark.parametrize("sdk", [34, 32])
def test_sim_watch_log_on_android_13(tmp_path, sdk):
    from dfdcap.sim.adbd import FakeAdbd
    from dfdcap.sim.opencamera import SimOpenCamera

    cam = SimOpenCamera(small_rig().phone(), tmp_path, time_scale=0.02, android_sdk=sdk,
                        settings=BracketingSettings(10.0, 1.0, 5))
    adbd = FakeAdbd(tmp_path, commands=cam.commands())
    start = adbd.run_shell("cmd media.camera watch start -m android.lens.focusDistance,android.lens.state "
                           "-c net.sourceforge.opencamera")
    adbd.run_shell("input keyevent 24")
    cam.wait_idle()
    dump = adbd.run_shell("cmd media.camera watch dump").decode()
    if sdk < 33:
        assert b"Unknown command" in start and "focusDistance" not in dump
        return
    got = [float(m.group(1)) for m in re.finditer(r"^f\d+:\d+ns:\s+0\s+RES: android\.lens\.focusDistance: \[([0-9.]+)\]$",
                                                    dump, re.M)]
    assert got == pytest.approx(bracketing_focus_diopters(10.0, 1.0, 5), abs=0.1)  # reached, with the sim lens error
    assert dump.count("android.lens.state: [STATIONARY]") == 5


def test_phone_specs():
    from dfdcap.capture.sources import SourceSpec, parse_phone_spec

    assert parse_phone_spec("opencamera:R58M123") == SourceSpec("opencamera", "R58M123")
    assert parse_phone_spec("opencamera:sim") == SourceSpec("opencamera", "sim")
    assert parse_phone_spec("R58M123") == SourceSpec("adb", "R58M123")
    with pytest.raises(DeviceError, match="opencamera:SERIAL"):
        parse_phone_spec("opencamera:")
