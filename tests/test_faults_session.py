"""Bad values inside a session folder's files: `sync`, `build-dataset` and `report` refuse them with
one line naming the file (and the CSV line) and write nothing, instead of crashing, pairing frames
wrongly or building a dataset of garbage.

One tiny simulated session (2 ramps x 3 frames, 64x48 phone), synced, and a calibration holding
the rig's true cameras are made once; each case copies the session and breaks one thing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from faults_helpers import assert_one_line_error, calibration_from_truth, snapshot

BIG = "99999999999999999999999999"


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    from dfdcap.capture.recorder import SimOptions, record_from_specs
    from dfdcap.fileio import atomic_write_json
    from dfdcap.sync.io import sync_session

    tmp = tmp_path_factory.mktemp("faults_session")
    session = record_from_specs("sim", "sim", tmp / "sessions", name="a", ramps=2, steps=3,
                                sim=SimOptions("xtion", None, 0, (64, 48)), progress=False)
    sync_session(session)
    atomic_write_json(tmp / "calibration.json", calibration_from_truth(Path(session)))
    return {"session": Path(session), "cal": tmp / "calibration.json"}


@pytest.fixture
def sess(world, tmp_path) -> Path:
    """A fresh copy of the synced session."""
    dst = tmp_path / world["session"].name
    shutil.copytree(world["session"], dst)
    return dst


def _set_field(path: Path, line: int, column: str, value: str) -> None:
    """Set one field of a CSV index (line counts from 1, the header being line 1)."""
    lines = path.read_text().splitlines()
    cols = lines[0].split(",")
    row = lines[line - 1].split(",")
    row[cols.index(column)] = value
    lines[line - 1] = ",".join(row)
    path.write_text("\n".join(lines) + "\n")


def _edit_json(path: Path, **changes) -> None:
    doc = json.loads(path.read_text())
    for k, v in changes.items():
        if v is None:
            doc.pop(k, None)
        else:
            doc[k] = v
    path.write_text(json.dumps(doc))


def _build(cli, world, sess: Path, out: Path):
    return cli("build-dataset", sess, "--calib", world["cal"], "-o", out, "--workers", "1", "--align", "none")


def _refused_everywhere(cli, world, sess: Path, tmp_path: Path, *needles: str, build: bool = True) -> None:
    """sync, build-dataset (which reads no probes) and report each refuse with one line holding the
    needles; nothing written."""
    before = snapshot(sess)
    assert_one_line_error(cli("sync", sess), 1, *needles)
    if build:
        assert_one_line_error(_build(cli, world, sess, tmp_path / "d.h5"), 1, *needles)
    assert_one_line_error(cli("report", sess, "-o", tmp_path / "r.png"), 1, *needles)
    assert snapshot(sess) == before
    assert not list(tmp_path.glob("d.h5*")) and not list(tmp_path.glob("r.png*"))


# ----------------------------------------------------------------- numbers out of range (item 1, 8)

class TestOutOfRange:
    @pytest.mark.parametrize("rel,line,column", [
        ("sensor/frames.csv", 2, "t_host_ns"),
        ("phone/frames.csv", 3, "t_phone_ns"),
        ("phone/frames.csv", 7, "t_phone_ns"),  # the last line: not mistaken for a torn one
        ("clock/phone_probes.csv", 2, "t_host_send_ns"),
    ])
    def test_huge_integer_in_a_csv(self, cli, world, sess, tmp_path, rel, line, column):
        _set_field(sess / rel, line, column, BIG)
        _refused_everywhere(cli, world, sess, tmp_path, f"{rel}:{line}", column, "out of range", build="probes" not in rel)

    @pytest.mark.parametrize("rel,line,column,value", [
        ("sensor/frames.csv", 2, "t_host_ns", str(-(2**63) + 1)),  # wrapped silently in the clock fit, exit 0
        ("phone/frames.csv", 3, "focus_diopters", "1e308"),  # build-dataset blamed the focal length
        ("phone/frames.csv", 3, "ramp", "-1"),
        ("phone/frames.csv", 3, "step", "-1"),
        ("sensor/frames.csv", 2, "index", "-4"),
    ])
    def test_value_no_device_writes(self, cli, world, sess, tmp_path, rel, line, column, value):
        """Values that parse as 64-bit numbers but no clock, lens or counter gives."""
        _set_field(sess / rel, line, column, value)
        _refused_everywhere(cli, world, sess, tmp_path, f"{rel}:{line}", column, "out of range")

    @pytest.mark.parametrize("latency", [10**30, -10**12, 1_000_000_001])
    def test_sensor_latency_beyond_a_second(self, cli, sess, latency):
        _edit_json(sess / "session.json", sensor_latency_ns=latency)
        before = snapshot(sess)
        assert_one_line_error(cli("sync", sess), 1, "session.json", "sensor_latency_ns", "out of range", "1000 ms")
        assert snapshot(sess) == before

    def test_sensor_latency_within_a_second_is_used(self, cli, sess):
        """0.5 ms of stated latency: sync.json records it and every sensor frame maps 0.5 ms earlier."""
        from dfdcap.sync.io import read_sync

        assert "sensor_latency_ns" not in json.loads((sess / "session.json").read_text())
        before = read_sync(sess)  # the fixture's sync, with no stated latency
        _edit_json(sess / "session.json", sensor_latency_ns=500_000)
        rc, out, err = cli("sync", sess)
        assert rc == 0, out + err
        assert json.loads((sess / "sync.json").read_text())["sensor"]["latency_ns"] == 500_000
        t = before.sensor.t0_dev_ns + np.array([0, 10**9])
        shift = read_sync(sess).sensor.to_host_ns(t) - before.sensor.to_host_ns(t)
        assert np.all(np.abs(shift + 500_000) <= 1), shift


# ----------------------------------------------------------------- session.json status (item 2)

class TestStatus:
    def test_missing_status(self, cli, world, sess, tmp_path):
        _edit_json(sess / "session.json", status=None)
        _refused_everywhere(cli, world, sess, tmp_path, "session.json", "'status'")

    def test_unknown_status(self, cli, world, sess, tmp_path):
        _edit_json(sess / "session.json", status="done")
        _refused_everywhere(cli, world, sess, tmp_path, "session.json", "status 'done'", "complete")


# ----------------------------------------------------------------- rows that clash (item 3)

class TestIndexRows:
    @pytest.mark.parametrize("rel,column,value,needle", [
        ("phone/frames.csv", "index", "0", "duplicate index 0"),
        ("sensor/frames.csv", "index", "0", "duplicate index 0"),
        ("phone/frames.csv", "step", "0", "duplicate ramp 0 step 0"),
        ("phone/frames.csv", "file", "@first", "duplicate file"),
        ("phone/frames.csv", "file", "../../x.jpg", "inside phone/"),
        ("phone/frames.csv", "file", "/etc/passwd", "inside phone/"),
        ("sensor/frames.csv", "depth", "../../x.png", "inside sensor/"),
    ])
    def test_refused_with_the_line(self, cli, world, sess, tmp_path, rel, column, value, needle):
        if value == "@first":  # the file line 2 names
            value = (sess / rel).read_text().splitlines()[1].split(",")[-1]
        _set_field(sess / rel, 3, column, value)
        _refused_everywhere(cli, world, sess, tmp_path, f"{rel}:3", needle)


# ----------------------------------------------------------------- camera and sensor files (items 4, 5)

class TestCameraFiles:
    @pytest.mark.parametrize("rel,key,value", [
        ("sensor/intrinsics.json", "depth_scale_m", 0),
        ("sensor/intrinsics.json", "depth_scale_m", -0.001),
        ("phone/camera.json", "f_number", 0),
        ("phone/camera.json", "focal_length_m", -1),
        ("phone/camera.json", "sensor_size_m", [0.005, 0]),
        ("phone/camera.json", "image_size", [0, 48]),
        ("phone/camera.json", "min_focus_diopters", -2),
    ])
    def test_build_refuses_a_bad_value(self, cli, world, sess, tmp_path, rel, key, value):
        _edit_json(sess / rel, **{key: value})
        before = snapshot(sess)
        assert_one_line_error(_build(cli, world, sess, tmp_path / "d.h5"), 1, rel, key, "expected")
        assert snapshot(sess) == before and not list(tmp_path.glob("d.h5*"))


# ----------------------------------------------------------------- sync.json pairs (item 6)

class TestSyncPairs:
    @pytest.mark.parametrize("key,value,needle", [
        ("sensor_index", 9999, "references sensor frame 9999 of"),
        ("sensor_index", -1, "references sensor frame -1 of"),
        ("sensor_index", 6.7, "pairs[2].sensor_index 6.7 is not a whole number"),
        ("phone_index", 0, "pairs phone frame 0 a second time"),
        ("phone_index", 999, "references phone frame 999 of"),
    ])
    def test_build_refuses_a_bad_pair(self, cli, world, sess, tmp_path, key, value, needle):
        doc = json.loads((sess / "sync.json").read_text())
        doc["pairs"][2][key] = value
        (sess / "sync.json").write_text(json.dumps(doc))
        before = snapshot(sess)
        assert_one_line_error(_build(cli, world, sess, tmp_path / "d.h5"), 1, "sync.json", needle)
        assert snapshot(sess) == before and not list(tmp_path.glob("d.h5*"))


# ----------------------------------------------------------------- focus values (item 7)

class TestFocusValues:
    @pytest.mark.parametrize("column", ["focus_diopters", "focus_diopters_requested"])
    @pytest.mark.parametrize("value", ["inf", "-inf", "-1"])
    def test_refused_with_the_line(self, cli, world, sess, tmp_path, column, value):
        _set_field(sess / "phone/frames.csv", 3, column, value)
        _refused_everywhere(cli, world, sess, tmp_path, "phone/frames.csv:3", column, "out of range")

    def test_nan_is_a_frame_without_focus(self, cli, world, sess, tmp_path):
        """NaN stays readable: build-dataset counts it apart in the ramp's note (it was taken for 0 D, infinity)."""
        _set_field(sess / "phone/frames.csv", 3, "focus_diopters", "nan")
        assert cli("sync", sess)[0] == 0
        rc, out, err = _build(cli, world, sess, tmp_path / "d.h5")
        assert rc == 0, out + err
        assert "1 without a focus value (NaN)" in " ".join((out + err).split())


# ----------------------------------------------------------------- nothing paired (item 8)

class TestNothingPaired:
    @pytest.mark.parametrize("gap_ms,needle", [("1e-308", "try --max-gap-ms"), ("0.000001", "try --max-gap-ms")])
    def test_tiny_max_gap(self, cli, sess, gap_ms, needle):
        before = snapshot(sess)
        assert_one_line_error(cli("sync", sess, "--max-gap-ms", gap_ms), 1, "0 of 6 phone frames paired", needle,
                              "sync.json left as it was")
        assert snapshot(sess) == before

    def test_streams_apart_in_time(self, cli, sess):
        lines = (sess / "phone/frames.csv").read_text().splitlines()
        for n in range(2, len(lines) + 1):
            t = int(lines[n - 1].split(",")[1])
            _set_field(sess / "phone/frames.csv", n, "t_phone_ns", str(t + 100 * 10**9))
        before = snapshot(sess)
        assert_one_line_error(cli("sync", sess), 1, "0 of 6 phone frames paired", "do not overlap", "phone_probes.csv")
        assert snapshot(sess) == before


# ----------------------------------------------------------------- messages that name the file (item 9)

class TestMessages:
    def test_depth_png_of_the_wrong_size_is_named(self, cli, world, sess, tmp_path):
        import cv2

        for p in (sess / "sensor/depth").glob("*.png"):
            d = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
            cv2.imwrite(str(p), cv2.resize(d, (d.shape[1] // 2, d.shape[0] // 2), interpolation=cv2.INTER_NEAREST))
        msg = assert_one_line_error(_build(cli, world, sess, tmp_path / "d.h5"), 1, "sensor/depth/", ".png: depth is",
                                    "intrinsics.json says")
        assert "reproject_depth" not in msg
        assert not list(tmp_path.glob("d.h5*"))

    def test_wrong_image_size_blames_camera_json(self, cli, world, sess, tmp_path):
        _edit_json(sess / "phone/camera.json", image_size=[100, 100])
        msg = assert_one_line_error(_build(cli, world, sess, tmp_path / "d.h5"), 1, "phone/camera.json: image_size is 100x100")
        assert "phone frames are" not in msg


# ----------------------------------------------------------------- a stale sync.json (item 10)

class TestStaleSync:
    @pytest.mark.parametrize("rel", ["phone/frames.csv", "sensor/frames.csv", "clock/phone_probes.csv", "session.json"])
    def test_build_refuses_after_an_input_changed(self, cli, world, sess, tmp_path, rel):
        if rel == "session.json":
            _edit_json(sess / rel, status="interrupted")
        elif rel == "clock/phone_probes.csv":
            lines = (sess / rel).read_text().splitlines()
            (sess / rel).write_text("\n".join(lines[:-1]) + "\n")  # one probe less
        else:
            t = (sess / rel).read_text().splitlines()[1].split(",")[1]
            _set_field(sess / rel, 2, "t_phone_ns" if rel.startswith("phone") else "t_host_ns", str(int(t) + 1))
        before = snapshot(sess)
        assert_one_line_error(_build(cli, world, sess, tmp_path / "d.h5"), 1, "sync.json is out of date with",
                              rel, f"run `dfdcap sync {sess}` again")
        assert snapshot(sess) == before and not list(tmp_path.glob("d.h5*"))
        rc, out, err = cli("sync", sess)
        assert rc == 0, out + err
        rc, out, err = _build(cli, world, sess, tmp_path / "d.h5")
        assert rc == 0, out + err

    def test_keys_added_after_sync_do_not_count(self, cli, world, sess, tmp_path):
        """`pull` adds phone_pull, `record` finished_utc and a message: none of them is an input of sync."""
        _edit_json(sess / "session.json", phone_pull={"pulled": 0}, message="x", finished_utc="2030-01-01T00:00:00Z")
        rc, out, err = _build(cli, world, sess, tmp_path / "d.h5")
        assert rc == 0, out + err

    def test_older_sync_json_without_fingerprint_is_read(self, cli, world, sess, tmp_path):
        doc = json.loads((sess / "sync.json").read_text())
        assert set(doc["inputs_sha256"]) == {"phone/frames.csv", "sensor/frames.csv", "clock/phone_probes.csv",
                                             "session.json"}
        del doc["inputs_sha256"]
        (sess / "sync.json").write_text(json.dumps(doc))
        _set_field(sess / "phone/frames.csv", 2, "exposure_ns", "1")  # a change it cannot tell
        rc, out, err = _build(cli, world, sess, tmp_path / "d.h5")
        assert rc == 0, out + err


# ----------------------------------------------------------------- index files written by other tools


def _foreign_csv(path: Path) -> None:
    """The index as a spreadsheet might save it: byte-order mark, CRLF, columns reversed, an extra column."""
    import csv

    rows = list(csv.reader(path.read_text().splitlines()))
    out = [list(reversed(r)) + [v] for r, v in zip(rows, ["note"] + ["x"] * (len(rows) - 1))]
    path.write_bytes(b"\xef\xbb\xbf" + "".join(",".join(r) + "\r\n" for r in out).encode())


def test_index_files_with_other_column_orders_read_the_same(cli, world, sess):
    """DESIGN.md: a session written by another tool in this layout must read, sync and build. A BOM,
    another column order or an extra column used to be "header is ..., expected ..."."""
    from dfdcap.capture.session import Session

    before = Session(sess)
    for rel in ("phone/frames.csv", "sensor/frames.csv", "clock/phone_probes.csv"):
        _foreign_csv(sess / rel)
    after = Session(sess)
    assert after.phone_frames == before.phone_frames and after.sensor_frames == before.sensor_frames
    assert (after.probes() == before.probes()).all() and len(after.probes()) > 2
    rc, out, err = cli("sync", sess)
    assert rc == 0, err


@pytest.mark.parametrize("header, why", [("index,t_phone_ns", "lacks focus_diopters_requested"),
                                         (None, "names a column twice")])
def test_index_header_missing_or_repeated_column(cli, world, sess, tmp_path, header, why):
    p = sess / "phone" / "frames.csv"
    lines = p.read_text().splitlines()
    lines[0] = header or lines[0] + ",index"
    lines[1:] = [ln + ",0" for ln in lines[1:]] if header is None else lines[1:]
    p.write_text("\n".join(lines) + "\n")
    _refused_everywhere(cli, world, sess, tmp_path, "phone/frames.csv", why)


def test_rows_are_not_appended_to_another_tools_column_order(world, sess):
    """Reading takes any column order; appending (a resumed pull) writes dfdcap's, so it refuses."""
    from dfdcap.capture.session import SessionError, _IndexFile

    _foreign_csv(sess / "phone" / "frames.csv")
    with pytest.raises(SessionError, match="is not dfdcap's"):
        _IndexFile(sess / "phone" / "frames.csv", "index,t_phone_ns")


# ----------------------------------------------------------------- values of the wrong kind or unit (fuzz pass 2)

class TestWrongKindOrUnit:
    @pytest.mark.parametrize("value", ["false", "true", 0, 1, None])
    def test_registration_flag_must_be_a_json_boolean(self, cli, world, sess, tmp_path, value):
        """"false" (a string) used to read as true."""
        doc = json.loads((sess / "sensor/intrinsics.json").read_text())
        doc["depth_registered_to_color"] = value
        (sess / "sensor/intrinsics.json").write_text(json.dumps(doc))
        before = snapshot(sess)
        assert_one_line_error(_build(cli, world, sess, tmp_path / "d.h5"), 1, "sensor/intrinsics.json",
                              "depth_registered_to_color", "boolean")
        assert snapshot(sess) == before and not list(tmp_path.glob("d.h5*"))

    @pytest.mark.parametrize("key,value,needle", [
        ("focal_length_m", 4.2, "focal_length_m 4.2"),  # mm: negative CoC maps
        ("focal_length_m", 0.3, "nearest focus distance"),  # below 0.5 m, beyond a frame's focus (0.2 m)
        ("sensor_size_m", [5.6, 4.2], "sensor_size_m"),  # mm
    ])
    def test_phone_camera_in_mm_is_refused(self, cli, world, sess, tmp_path, key, value, needle):
        _edit_json(sess / "phone/camera.json", **{key: value})
        _set_field(sess / "phone/frames.csv", 3, "focus_diopters", "5")  # one frame focused at 0.2 m
        before = snapshot(sess)
        assert_one_line_error(cli("build-dataset", sess, "--calib", world["cal"], "-o", tmp_path / "d.h5", "--coc",
                                  "--workers", "1", "--align", "none"), 1, "phone/camera.json", needle, "mm")
        assert snapshot(sess) == before and not list(tmp_path.glob("d.h5*"))

    @pytest.mark.parametrize("value,needle", [(1.0, "at most 0.1"), (5000, "TUM's 5000"),
                                              (0.05, "median valid depth")])
    def test_depth_scale_in_the_wrong_unit(self, cli, world, sess, tmp_path, value, needle):
        """depth_scale_m 1.0 or 5000 (TUM's factor typed as a scale) gave depths of 770-4558 m; 0.05 m per
        code passes the scale bound, but puts the simulated Xtion's scene ~100 m away."""
        _edit_json(sess / "sensor/intrinsics.json", depth_scale_m=value)
        before = snapshot(sess)
        assert_one_line_error(_build(cli, world, sess, tmp_path / "d.h5"), 1, "sensor/intrinsics.json",
                              "depth_scale_m", needle)
        assert snapshot(sess) == before and not list(tmp_path.glob("d.h5*"))


# ----------------------------------------------------------------- no-data depth codes (fuzz pass 2)

def _saturate_depth(sess: Path) -> None:
    """A block of every depth frame set to 65535 (a D4xx's saturated / invalid return)."""
    import cv2

    for p in (sess / "sensor/depth").glob("*.png"):
        d = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)
        d[: d.shape[0] // 2, :] = 65535
        cv2.imwrite(str(p), d)


def _max_valid_depth(path: Path) -> float:
    import h5py

    with h5py.File(path, "r") as f:
        depth, mask = f["depth_train"][()], f["mask_train"][()].astype(bool)
    assert mask.any()
    return float(depth[mask].max())


class TestNoDataCodes:
    @pytest.mark.parametrize("rule", ["recorder", "none", "unknown model"])
    def test_65535_is_no_data(self, cli, world, sess, tmp_path, rule):
        """65535 was kept as 65.5 m of valid depth (the session's recorder.depth_rule was never applied)."""
        _saturate_depth(sess)
        doc = json.loads((sess / "session.json").read_text())
        if rule == "none":  # a session from another recorder
            del doc["recorder"]
        elif rule == "unknown model":  # a rule that bounds nothing
            doc["recorder"]["depth_rule"] = {"max_code": 65535, "invalid_codes": []}
        (sess / "session.json").write_text(json.dumps(doc))
        assert cli("sync", sess)[0] == 0
        rc, out, err = _build(cli, world, sess, tmp_path / "d.h5")
        assert rc == 0, out + err
        assert _max_valid_depth(tmp_path / "d.h5") < 4.0  # the simulated Xtion's scene, not 65.5 m

    def test_codes_above_max_code_are_no_data(self, cli, world, sess, tmp_path):
        doc = json.loads((sess / "session.json").read_text())
        doc["recorder"]["depth_rule"] = {"max_code": 2500, "invalid_codes": []}  # 2.5 m at 1 mm a code
        (sess / "session.json").write_text(json.dumps(doc))
        assert cli("sync", sess)[0] == 0
        rc, out, err = _build(cli, world, sess, tmp_path / "d.h5")
        assert rc == 0, out + err
        assert _max_valid_depth(tmp_path / "d.h5") < 2.6  # reprojection moves depth by the rig's few cm

    def test_a_malformed_rule_is_named(self, cli, world, sess, tmp_path):
        doc = json.loads((sess / "session.json").read_text())
        doc["recorder"]["depth_rule"] = {"max_code": "5000"}
        (sess / "session.json").write_text(json.dumps(doc))
        assert cli("sync", sess)[0] == 0
        assert_one_line_error(_build(cli, world, sess, tmp_path / "d.h5"), 1, "session.json", "recorder.depth_rule")
        assert not list(tmp_path.glob("d.h5*"))


# ----------------------------------------------------------------- damaged index files (fuzz pass 2)

def _edit_last_line(path: Path, edit) -> None:
    lines = path.read_text().splitlines()
    lines[-1] = edit(lines[-1])
    path.write_text("\n".join(lines) + "\n")


def _set_status(sess: Path, status: str) -> None:
    _edit_json(sess / "session.json", status=status)


class TestDamagedIndex:
    @pytest.mark.parametrize("edit,needle", [
        (lambda ln: ",".join(ln.split(",")[:8] + ["two"] + ln.split(",")[9:]), "step 'two' is not a number"),
        (lambda ln: ln + ",x", "11 fields"),
    ])
    def test_malformed_last_line_of_a_complete_session(self, cli, world, sess, tmp_path, edit, needle):
        """The whole last ramp was dropped without a word: only a recording cut mid-write tears a line."""
        _edit_last_line(sess / "phone/frames.csv", edit)
        _refused_everywhere(cli, world, sess, tmp_path, "phone/frames.csv:7", needle)

    def test_malformed_last_line_of_an_interrupted_session_is_skipped(self, sess):
        from dfdcap.capture.session import Session

        _edit_last_line(sess / "phone/frames.csv", lambda ln: ln + ",x")
        _set_status(sess, "interrupted")
        assert len(Session(sess).phone_frames) == 5

    def test_cut_off_last_line_of_a_complete_session_is_skipped(self, sess):
        """No newline at the end: a plausible cut-off (the line's write did not finish)."""
        from dfdcap.capture.session import Session

        p = sess / "phone/frames.csv"
        lines = p.read_text().splitlines()
        p.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:15])  # cut inside t_phone_ns
        assert len(Session(sess).phone_frames) == 5

    def test_blank_lines_are_skipped(self, sess):
        from dfdcap.capture.session import Session

        lines = (sess / "phone/frames.csv").read_text().splitlines()
        (sess / "phone/frames.csv").write_text("\n".join(lines[:3] + ["", "  "] + lines[3:]) + "\n\n\n")
        assert len(Session(sess).phone_frames) == 6

    def test_utf16_index_is_named(self, cli, world, sess, tmp_path):
        p = sess / "phone/frames.csv"
        p.write_bytes(p.read_text().encode("utf-16"))
        _refused_everywhere(cli, world, sess, tmp_path, "phone/frames.csv", "UTF-16", "save it as UTF-8")

    def test_zero_filled_tail_of_a_complete_session(self, cli, world, sess, tmp_path):
        """A power loss's zero-filled tail (one 200 kB field) was a `_csv.Error` traceback."""
        with open(sess / "sensor/frames.csv", "ab") as f:
            f.write(b"\0" * 200_000)
        n = len((sess / "sensor/frames.csv").read_bytes().split(b"\n"))
        _refused_everywhere(cli, world, sess, tmp_path, f"sensor/frames.csv:{n}", "NUL bytes", "power loss")

    def test_zero_filled_tail_of_an_interrupted_session_is_a_torn_line(self, sess):
        from dfdcap.capture.session import Session

        p = sess / "sensor/frames.csv"
        n = len(Session(sess).sensor_frames)
        p.write_bytes(p.read_bytes()[:-5] + b"\0" * 200_000)  # the last line cut by the zeros
        _set_status(sess, "interrupted")
        assert len(Session(sess).sensor_frames) == n - 1

    def test_long_field_without_nul_is_a_line_error(self, cli, world, sess, tmp_path):
        _edit_last_line(sess / "sensor/frames.csv", lambda ln: ln + "x" * 200_000)
        _refused_everywhere(cli, world, sess, tmp_path, "sensor/frames.csv:", "malformed line", "field larger")

    def test_nul_bytes_in_the_middle(self, cli, world, sess, tmp_path):
        lines = (sess / "sensor/frames.csv").read_text().splitlines()
        lines[2] = "\0" * 10
        (sess / "sensor/frames.csv").write_text("\n".join(lines) + "\n")
        _set_status(sess, "interrupted")
        before = snapshot(sess)
        assert_one_line_error(cli("sync", sess), 1, "sensor/frames.csv:3", "NUL bytes")
        assert snapshot(sess) == before


# ----------------------------------------------------------------- a calibration in the wrong unit (fuzz pass 2)

def test_calibration_in_mm_builds_no_dataset(cli, world, sess, tmp_path):
    """t x 1000 (a board square in mm) wrote a dataset with "0 % valid depth" and exit 0."""
    doc = json.loads(world["cal"].read_text())
    T = doc["T_phone_from_sensor"]
    for r in range(3):
        T[r][3] *= 1000
    (tmp_path / "cal_mm.json").write_text(json.dumps(doc))
    before = snapshot(sess)
    res = cli("build-dataset", sess, "--calib", tmp_path / "cal_mm.json", "-o", tmp_path / "d.h5", "--workers", "1",
              "--align", "none")
    assert_one_line_error(res, 1, "no valid depth pixel", "cal_mm.json", "|t| =", "board square given in mm")
    assert "warning:" in res[2] and "m apart" in res[2]  # said before building, too
    assert snapshot(sess) == before and not list(tmp_path.glob("d.h5*"))
