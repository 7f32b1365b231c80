"""`dfdcap calibrate` end to end and its answers to bad input (one line, exit 1, no output file)."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest

from tests.calib.conftest import DATA, NAMES
from tests.faults_helpers import assert_one_line_error


def test_calibrate_writes_file_yaml_and_report(stereo_pairs_dir, tmp_path, monkeypatch, cli):
    out = tmp_path / "calibration.json"
    code, stdout, err = cli(*["calibrate", stereo_pairs_dir, "--board", "9x6", "--square", "1.0", "-o", out,
                                 "--yaml", tmp_path / "c.yaml", "--report", tmp_path / "c.png"])
    assert code == 0, err
    d = json.loads(out.read_text())
    assert d["stereo"]["rms_px"] < 0.25 and len(d["stereo"]["views_used"]) == 13
    assert "stereo RMS" in stdout and "|t| = 3.3" in stdout
    assert cv2.FileStorage(str(tmp_path / "c.yaml"), cv2.FILE_STORAGE_READ).getNode("R").mat().shape == (3, 3)
    assert cv2.imread(str(tmp_path / "c.png")) is not None
    # lens models chosen by held-out error, and T's uncertainty stored, printed, and warned about:
    # at f = 540 px, 0.08 deg of rotation uncertainty alone moves reprojected depth by 1.5 px (2 sigma)
    models = d["stereo"]["distortion_models"]
    assert models["phone"]["chosen"] in models["phone"]["candidates"] and len(models["phone"]["candidates"]) == 6
    u = d["stereo"]["uncertainty"]
    assert 0.01 < u["rotation_std_deg"] < 0.5 and np.asarray(u["covariance_rt"]).shape == (6, 6)
    assert u["reprojection_shift_px_2sigma"] > 1.0 and "T_phone_from_sensor is uncertain" in err
    assert "lens models: phone" in stdout and "rotation" in stdout


def test_fixed_distortion_model_and_bad_names(stereo_pairs_dir, tmp_path, cli):
    out = tmp_path / "c.json"
    code, _, err = cli("calibrate", stereo_pairs_dir, "--board", "9x6", "--square", "1.0", "-o", out,
                       "--distortion", "k1k2,rational")
    assert code == 0, err
    d = json.loads(out.read_text())
    assert len(d["phone"]["dist"]) == 5 and d["phone"]["dist"][2:] == [0, 0, 0]
    assert len(d["sensor"]["dist"]) == 8 and d["stereo"]["distortion_models"]["sensor"] == {"chosen": "rational", "forced": True}
    code, _, err = cli("calibrate", stereo_pairs_dir, "--board", "9x6", "--square", "1.0", "-o", tmp_path / "x.json",
                       "--distortion", "fisheye")
    assert code == 1 and "unknown distortion model 'fisheye'" in err and not (tmp_path / "x.json").exists()
    code, _, err = cli("calibrate", stereo_pairs_dir, "--board", "9x6", "--square", "1.0", "-o", tmp_path / "x.json",
                       "--depth-range", "0.5,nan")
    assert code == 1 and "--depth-range" in err and "Traceback" not in err


def test_dirs_option_pairs_other_folder_names(tmp_path, monkeypatch, cli):
    for n in NAMES:
        for side in ("left", "right"):
            (tmp_path / side).mkdir(exist_ok=True)
            os.symlink(DATA / f"{side}{n}.jpg", tmp_path / side / f"{n}.jpg")
    out = tmp_path / "c.json"
    code, _, err = cli(*["calibrate", tmp_path, "--board", "9x6", "--square", "1", "--dirs", "right,left", "-o", out])
    assert code == 0, err
    assert json.loads(out.read_text())["T_phone_from_sensor"][0][3] == pytest.approx(-3.33, abs=0.02)


def _one_line_error(code, err, *needles):
    assert code == 1
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    for n in needles:
        assert n in err, err


def _pairs(root, names, size=None, broken=()):
    (root / "phone").mkdir(parents=True)
    (root / "sensor").mkdir()
    for n in names:
        for cam, side in (("phone", "right"), ("sensor", "left")):
            src = DATA / f"{side}{n}.jpg"
            if size is not None and cam == "phone" and n == names[0]:
                cv2.imwrite(str(root / cam / f"{n}.png"), cv2.resize(cv2.imread(str(src)), size))
            elif n in broken and cam == "sensor":
                (root / cam / f"{n}.jpg").write_bytes(b"not a jpeg")
            else:
                os.symlink(src, root / cam / f"{n}.jpg")


@pytest.mark.parametrize(
    "case, needles",
    [
        ("empty", ["empty folder"]),
        ("no_pairs", ["no image pairs"]),
        ("too_few", ["too few usable views: 3", "need at least 4"]),
        ("wrong_board", ["no 10x7 checkerboard", "wrong board size"]),
        ("sizes", ["differ in size", "800x600", "640x480"]),
        ("missing", ["no such folder"]),
    ],
)
def test_bad_input(case, needles, tmp_path, monkeypatch, cli):
    root = tmp_path / "in"
    board = "9x6"
    if case == "empty":
        root.mkdir()
    elif case == "no_pairs":
        (root / "phone").mkdir(parents=True)
        (root / "sensor").mkdir()
        os.symlink(DATA / "right01.jpg", root / "phone" / "a.jpg")
        os.symlink(DATA / "left01.jpg", root / "sensor" / "b.jpg")
    elif case == "too_few":
        _pairs(root, NAMES[:4], broken=(NAMES[0],))  # 4 pairs, one sensor image unreadable -> 3
    elif case == "wrong_board":
        _pairs(root, NAMES[:5])
        board = "10x7"
    elif case == "sizes":
        _pairs(root, NAMES[:6], size=(800, 600))
    out = tmp_path / "calibration.json"
    code, _, err = cli(*["calibrate", root, "--board", board, "--square", "0.025", "-o", out])
    _one_line_error(code, err, *needles)
    assert not out.exists() and not list(tmp_path.glob(".calibration.json.*"))


def test_unreadable_image_is_skipped_with_a_warning(tmp_path, monkeypatch, cli):
    root = tmp_path / "in"
    _pairs(root, NAMES[:7], broken=(NAMES[2],))
    out = tmp_path / "c.json"
    code, _, err = cli(*["calibrate", root, "--board", "9x6", "--square", "1", "-o", out])
    assert code == 0, err
    assert f"skipped {root / 'sensor' / (NAMES[2] + '.jpg')}: unreadable" in err.replace("\n", "")
    d = json.loads(out.read_text())
    assert NAMES[2] not in d["stereo"]["views_used"] and NAMES[2] in d["phone"]["view_names"]


def test_session_folder_pairs_by_frame_index(tmp_path, monkeypatch, cli):
    """A recorded session (no sync.json): phone frame i pairs with sensor frame i."""
    from dfdcap.capture.session import DeviceInfo, PhoneFrameRecord, SessionWriter

    with SessionWriter.create(tmp_path, "calib", DeviceInfo("sim", "s", "1"), DeviceInfo("sim", "p", "2")) as w:
        for i, n in enumerate(NAMES):
            rgb_s = cv2.imread(str(DATA / f"left{n}.jpg"))[..., ::-1]
            w.write_sensor_frame(i, 1000 + i, 2000 + i, np.ascontiguousarray(rgb_s), np.zeros((480, 640), np.uint16))
            rgb_p = np.ascontiguousarray(cv2.imread(str(DATA / f"right{n}.jpg"))[..., ::-1])
            w.write_phone_frame(PhoneFrameRecord(i, 3000 + i, 1.0, 1.0, 10_000_000, 100, "STATIONARY", 0, i,
                                                 f"frames/{i}.png"), rgb_p)
        path = w.path
    out = tmp_path / "c.json"
    code, _, err = cli(*["calibrate", path, "--board", "9x6", "--square", "1", "-o", out])
    assert code == 0, err
    d = json.loads(out.read_text())
    assert len(d["stereo"]["views_used"]) == 13
    assert np.linalg.norm(np.array(d["T_phone_from_sensor"])[:3, 3]) == pytest.approx(3.3449, rel=0.01)


def _focus_pairs(tmp_path, dirs=("phone", "sensor"), focus_lines=None):
    """The real pairs (symlinks) in dirs[0]/ and dirs[1]/, and dirs[0]/focus.csv with focus_lines after its header."""
    root = tmp_path / "boards"
    for d, side in zip(dirs, ("right", "left")):
        (root / d).mkdir(parents=True)
        for n in NAMES:
            os.symlink(DATA / f"{side}{n}.jpg", root / d / f"{n}.jpg")
    if focus_lines is not None:
        (root / dirs[0] / "focus.csv").write_text("\n".join(["name,focus_diopters", *focus_lines]) + "\n")
    return root


def test_focus_csv_in_the_dirs_folder_with_file_names(tmp_path, cli):
    """A focus.csv naming views by file name ('01.jpg') or lying in the phone folder --dirs names was
    ignored without a word: no focus model, exit 0. Both are read now."""
    lines = [f"{n}.jpg,{2 + 2 * (i % 3)}" for i, n in enumerate(NAMES)]
    root = _focus_pairs(tmp_path, ("right", "left"), lines)
    out = tmp_path / "c.json"
    code, stdout, err = cli("calibrate", root, "--board", "9x6", "--square", "1.0", "-o", out, "--dirs", "right,left")
    assert code == 0, err
    assert json.loads(out.read_text())["phone"].get("focus_model") and "focus breathing" in stdout
    assert "(refitted as k1k2k3+tangential with the focus model)" in " ".join(stdout.split())  # an automatic choice


@pytest.mark.parametrize("lines, expect", [
    ([f"{n},{2 + 2 * (i % 3)}" for i, n in enumerate(NAMES)] + ["01,9"], "focus.csv:15: '01' has focus_diopters 9"),
    ([f"left{n}.jpg,{2 + 2 * (i % 3)}" for i, n in enumerate(NAMES)], "names none of the 13 phone views"),
    (["01,2", "02,4"], "only 2 of the 13 phone views have a focus setting"),
    (["01,0_5"], "focus.csv:2: expected 'name,focus_diopters' with a number"),  # float() read it as 5 diopters
])
def test_focus_csv_that_cannot_be_meant(tmp_path, cli, lines, expect):
    """A view given two focus settings took the last one silently; a focus.csv naming no view was ignored;
    one giving 2 of 13 views a focus refitted the phone on those 2 (fx +1.2 %, k3 1.2) with exit 0."""
    root = _focus_pairs(tmp_path, focus_lines=lines)
    out = tmp_path / "c.json"
    assert_one_line_error(cli("calibrate", root, "--board", "9x6", "--square", "1.0", "-o", out), 1,
                          str(root / "phone" / "focus.csv"), expect)
    assert not out.exists()


def test_a_copied_view_is_refused(tmp_path, cli):
    """A board view copied under a second name calibrated as 14 views: it counted twice, and in the
    cross-validation that picks the lens model it was held out while its copy was fitted."""
    import shutil

    root = _focus_pairs(tmp_path)
    for side in ("phone", "sensor"):
        shutil.copy(root / side / f"{NAMES[3]}.jpg", root / side / "99.jpg")
    out = tmp_path / "c.json"
    assert_one_line_error(cli("calibrate", root, "--board", "9x6", "--square", "1.0", "-o", out), 1,
                          str(root / "phone" / "99.jpg"), f"the same file as {root / 'phone' / NAMES[3]}.jpg")
    assert not out.exists()


@pytest.mark.parametrize("text, expect", [
    ("name,focus_diopters\n", "a header and no rows"),
    ("", "expected the header 'name,focus_diopters', got 'an empty file'"),
    ("hello\n", "expected the header 'name,focus_diopters', got 'hello'"),
])
def test_focus_csv_without_rows_or_header(tmp_path, cli, text, expect):
    """An empty focus.csv, or one with only a header (its own or another), was ignored without a word:
    calibrate wrote a calibration without the focus model the file was put there for."""
    root = _focus_pairs(tmp_path)
    (root / "phone" / "focus.csv").write_text(text)
    out = tmp_path / "c.json"
    assert_one_line_error(cli("calibrate", root, "--board", "9x6", "--square", "1.0", "-o", out), 1,
                          str(root / "phone" / "focus.csv"), expect)
    assert not out.exists()
