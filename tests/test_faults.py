"""Fault injection across the CLI: every bad input or failing disk gives exit 1 (2 for usage), one
line without a traceback, no partial output, and leaves every earlier good file as it was.

The inputs are one tiny simulated session (2 ramps x 3 frames, 64x48 phone), its sync.json, a
calibration with the rig's true cameras, a dataset built from it, rendered calibration boards and
a one-epoch tiny run folder, all made once for the module. Each case copies what it breaks.
Signals (SIGINT, kill -9) of record and finetune are in test_faults_signals.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import pytest
from typer.testing import CliRunner

from faults_helpers import (
    assert_one_line_error, assert_usage_error, calibration_from_truth, dfdcap_process, snapshot, tmpfs,
)


def _ok(args: list) -> str:
    from dfdcap.cli import app

    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, f"dfdcap {args}: {res.output}"
    return res.output


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """The good inputs every case starts from (about 15 s on 2 cores)."""
    import torch

    from dfdcap.capture.recorder import SimOptions, record_from_specs
    from dfdcap.fileio import atomic_write_json
    from dfdcap.models.train import finetune
    from dfdcap.sync.io import sync_session

    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("faults")
    session, other = (
        record_from_specs("sim", "sim", tmp / "sessions", name=name, ramps=2, steps=3,
                          sim=SimOptions("xtion", None, seed, (64, 48)), progress=False)
        for name, seed in (("a", 0), ("b", 1))
    )
    for s in (session, other):
        sync_session(s)
    atomic_write_json(tmp / "calibration.json", calibration_from_truth(session))
    # fine-tuning needs a val split (a second session): it never selects on train or test
    _ok(["build-dataset", session, other, "--calib", tmp / "calibration.json", "--val", Path(other).name, "-o", tmp / "d.h5"])
    _ok(["sim", "checkerboard", tmp / "boards", "--views", "5", "--phone-size", "320x240"])
    finetune("poolnet", tmp / "d.h5", tmp / "run", epochs=1, batch_size=2, crop=32, tiny=True, progress=False)
    return {"tmp": tmp, "session": session, "cal": tmp / "calibration.json", "h5": tmp / "d.h5",
            "boards": tmp / "boards", "run": tmp / "run", "ckpt": tmp / "run" / "best.pt"}


def _copy(src: Path, dst_dir: Path) -> Path:
    dst = dst_dir / src.name
    shutil.copytree(src, dst) if src.is_dir() else shutil.copy2(src, dst)
    return dst


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


# ------------------------------------------------------------------------------ record

class TestRecord:
    ARGS = ["record", "--stacks", "2", "--steps", "3", "--phone-size", "64x48"]

    def test_output_is_a_file(self, cli, tmp_path):
        (tmp_path / "f").write_text("keep")
        assert_one_line_error(cli(*self.ARGS, "-o", tmp_path / "f"), 1, "not a folder")
        assert (tmp_path / "f").read_text() == "keep"

    def test_output_below_a_file(self, cli, tmp_path):
        (tmp_path / "f").write_text("keep")
        assert_one_line_error(cli(*self.ARGS, "-o", tmp_path / "f" / "sessions"), 1)
        assert snapshot(tmp_path) == {str(tmp_path / "f"): snapshot(tmp_path / "f")[str(tmp_path / "f")]}

    def test_read_only_output(self, cli, tmp_path):
        (tmp_path / "sessions").mkdir()
        with tmpfs(read_only_copy_of=tmp_path / "sessions") as mnt:
            before = snapshot(mnt)
            assert_one_line_error(cli(*self.ARGS, "-o", mnt / "sessions"), 1, "writable")
            assert snapshot(mnt) == before

    @pytest.mark.parametrize("opt", [["--stacks", "abc"], ["--fps", "x"], ["--bogus"]])
    def test_usage(self, cli, tmp_path, opt):
        assert_usage_error(cli(*self.ARGS, "-o", tmp_path, *opt))
        assert not any(tmp_path.iterdir())

    @pytest.mark.parametrize("opt", [["--phone-size", "64by48"], ["--stacks", "0"], ["--name", "a/b"],
                                     ["--sensor", "nosuch.oni"], ["--scene", "nosuch"], ["--png", "nosuch"]])
    def test_bad_value_writes_nothing(self, cli, tmp_path, opt):
        assert_one_line_error(cli(*self.ARGS, "-o", tmp_path / "s", *opt), 1)
        assert not (tmp_path / "s").exists()

    def test_disk_full_marks_the_session(self, cli):
        """~100 KB free: the first 640x480 sensor PNG does not fit. One line, exit 1, and session.json
        says the session ended (interrupted), not "recording"."""
        with tmpfs("100k") as mnt:
            res = cli(*self.ARGS, "-o", mnt)
            assert_one_line_error(res, 1)
            sessions = list(mnt.iterdir())
            assert len(sessions) == 1
            meta = json.loads((sessions[0] / "session.json").read_text())
            assert meta["status"] == "interrupted", meta
            assert not list(sessions[0].rglob("*.tmp"))


# ------------------------------------------------------------------------------ calibrate

class TestCalibrate:
    def args(self, world, out):
        return ["calibrate", world["boards"], "--board", "9x6", "--square", "0.025", "-o", out]

    def test_missing_output_folder(self, cli, world, tmp_path):
        assert_one_line_error(cli(*self.args(world, tmp_path / "no" / "c.json")), 1, "does not exist")
        assert not (tmp_path / "no").exists()

    def test_output_is_a_folder(self, cli, world, tmp_path):
        assert_one_line_error(cli(*self.args(world, tmp_path)), 1, "folder")

    def test_existing_output_needs_force(self, cli, world, tmp_path):
        good = _copy(world["cal"], tmp_path)
        before = snapshot(tmp_path)
        assert_one_line_error(cli(*self.args(world, good)), 1, "--force")
        assert snapshot(tmp_path) == before
        rc, out, err = cli(*self.args(world, good), "--force")
        assert rc == 0, err
        assert json.loads(good.read_text())["board"]["cols"] == 9 and "views" in json.loads(good.read_text())

    def test_read_only_output(self, cli, world, tmp_path):
        (tmp_path / "o").mkdir()
        with tmpfs(read_only_copy_of=tmp_path / "o") as mnt:
            assert_one_line_error(cli(*self.args(world, mnt / "o" / "c.json")), 1, "cannot be written")
            assert not (mnt / "o" / "c.json").exists()

    def test_disk_full(self, cli, world):
        with tmpfs("8k") as mnt:
            assert_one_line_error(cli(*self.args(world, mnt / "c.json")), 1, "space")
            assert list(mnt.iterdir()) == []

    @pytest.mark.parametrize("opt", ["--yaml", "--report"])
    def test_extra_output_checked_before_the_work(self, cli, world, tmp_path, opt):
        """A bad --yaml/--report path used to fail after calibration.json was written."""
        assert_one_line_error(cli(*self.args(world, tmp_path / "c.json"), opt, tmp_path / "no" / "x"), 1, "does not exist")
        assert not (tmp_path / "c.json").exists()

    @pytest.mark.parametrize("value, encoding, expect", [
        ("nan", "utf-8", "focus.csv:3: focus_diopters 'nan'"), ("inf", "utf-8", "focus.csv:3: focus_diopters 'inf'"),
        ("-2", "utf-8", "focus.csv:3: focus_diopters '-2'"), ("2000", "utf-8", "focus.csv:3: focus_diopters '2000'"),
        ("2.5", "utf-16", "save it as UTF-8"), ("2.5", "latin-1", "save it as UTF-8"),
    ])
    def test_bad_focus_csv(self, cli, world, tmp_path, value, encoding, expect):
        """NaN/inf focus crashed the focus-model fit ("Residuals are not finite"), -2 and 2000 D were taken
        as they were, and a UTF-16 or Latin-1 focus.csv raised UnicodeDecodeError."""
        boards = _copy(world["boards"], tmp_path)
        lines = (boards / "phone" / "focus.csv").read_text().splitlines()
        lines[2] = f"{lines[2].split(',')[0]},{value}"
        lines.append("vue_\u00e9,2.0")  # a name outside ASCII: Latin-1 then is not UTF-8
        (boards / "phone" / "focus.csv").write_text("\n".join(lines) + "\n", encoding=encoding)
        args = ["calibrate", boards, "--board", "9x6", "--square", "0.025", "-o", tmp_path / "c.json"]
        assert_one_line_error(cli(*args), 1, str(boards / "phone" / "focus.csv"), expect)
        assert not (tmp_path / "c.json").exists()

    def test_missing_input(self, cli, world, tmp_path):
        assert_one_line_error(cli("calibrate", tmp_path / "nothing", "--board", "9x6", "-o", tmp_path / "c.json"), 1)

    def test_bad_subpix_window(self, cli, world, tmp_path):
        """OpenCV's cornerSubPix asserts on a window under 1 px, deep inside the detection threads."""
        assert_one_line_error(cli(*self.args(world, tmp_path / "c.json"), "--subpix-window", "0"), 1, "--subpix-window")
        assert not (tmp_path / "c.json").exists()

    @pytest.mark.parametrize("how", ["truncated", "empty", "text"])
    def test_corrupt_board_image(self, cli, world, tmp_path, how):
        """A broken board image (one view of five) is skipped with a warning naming it, the other four
        calibrate; never a crash. (Every image broken: test_every_jpeg_cut_short.)"""
        boards = _copy(world["boards"], tmp_path)
        img = sorted((boards / "phone").glob("view_*"))[0]  # not phone/focus.csv, which sorts first
        if how == "truncated":
            _truncate(img)
        else:
            img.write_bytes(b"" if how == "empty" else b"hello")
        rc, out, err = cli("calibrate", boards, "--board", "9x6", "--square", "0.025", "-o", tmp_path / "c.json")
        assert rc == 0 and "Traceback" not in out + err, err
        assert f"skipped {img}: unreadable" in err.replace("\n", ""), err
        if how == "truncated":  # said as read_image says it, and without libpng's own error line
            assert "PNG cut short" in err.replace("\n", "") and "libpng" not in out + err, err
        used = json.loads((tmp_path / "c.json").read_text())["stereo"]["views_used"]
        assert sorted(used) == [f"view_{k:03d}" for k in range(1, 5)]

    def test_broken_link_is_named(self, cli, world, tmp_path):
        """A board view that is a link to a missing file was skipped without a word (an unreadable one warns)."""
        boards = _copy(world["boards"], tmp_path)
        img = sorted((boards / "phone").glob("view_*"))[0]
        img.unlink()
        img.symlink_to(tmp_path / "elsewhere" / img.name)
        rc, out, err = cli("calibrate", boards, "--board", "9x6", "--square", "0.025", "-o", tmp_path / "c.json")
        assert rc == 0 and "Traceback" not in out + err
        assert img.name in out + err and "does not exist" in out + err
        assert img.stem not in json.loads((tmp_path / "c.json").read_text())["stereo"]["views_used"]

    def test_every_jpeg_cut_short(self, cli, world, tmp_path):
        """Views cut short by an interrupted copy are skipped as such; when none is left the error says
        so (it said "no board found ... wrong board size?", as libjpeg decodes the stub with a grey bottom)."""
        _ok(["sim", "checkerboard", tmp_path / "b", "--views", "3", "--phone-size", "320x240", "--jpeg-quality", "90"])
        for img in (tmp_path / "b" / "phone").glob("*.jpg"):
            _truncate(img)
        res = cli("calibrate", tmp_path / "b", "--board", "9x6", "--square", "0.025", "-o", tmp_path / "c.json")
        assert_one_line_error(res, 1, "none of the 3 phone images could be read")
        assert "cut short" in res[2] and "view_000.jpg" in res[2]
        assert not (tmp_path / "c.json").exists()

    def test_corrupt_session_json(self, cli, world, tmp_path):
        s = _copy(world["session"], tmp_path)
        _truncate(s / "session.json")
        assert_one_line_error(cli("calibrate", s, "--board", "9x6", "--square", "0.025", "-o", tmp_path / "c.json"), 1, "session.json")

    def test_bad_board(self, cli, world, tmp_path):
        assert_one_line_error(cli("calibrate", world["boards"], "--board", "9by6", "-o", tmp_path / "c.json"), 1)

    def test_ctrl_c_keeps_the_earlier_file(self, cli, world, tmp_path, monkeypatch):
        """Ctrl-C during board detection (raised from OpenCV's detector): exit 130, "interrupted",
        the earlier calibration file untouched."""
        import cv2

        good = _copy(world["cal"], tmp_path)
        before = snapshot(tmp_path)

        def interrupted(*a, **k):
            raise KeyboardInterrupt

        monkeypatch.setattr(cv2, "findChessboardCornersSB", interrupted)
        monkeypatch.setattr(cv2, "findChessboardCorners", interrupted)
        rc, out, err = cli(*self.args(world, good), "--force", "--workers", "1")
        assert rc == 130 and "interrupted" in err and "Traceback" not in out + err
        assert snapshot(tmp_path) == before

    def test_ctrl_c_while_drawing_the_report_writes_no_output(self, cli, world, tmp_path, monkeypatch):
        """The calibration, its YAML and its report are written as a set: Ctrl-C while the report
        is drawn used to leave c.json and c.yaml (so a rerun was refused: "exists, use --force")."""
        import dfdcap.calib.report as report

        def interrupted(*a, **k):
            raise KeyboardInterrupt

        monkeypatch.setattr(report, "write_calibration_report", interrupted)
        rc, out, err = cli(*self.args(world, tmp_path / "c.json"), "--yaml", tmp_path / "c.yaml",
                           "--report", tmp_path / "c.png")
        assert rc == 130 and "interrupted" in err and "Traceback" not in out + err
        assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------ sync

SESSION_CORRUPTIONS = {
    "session.json truncated": ("session.json", lambda p: _truncate(p)),
    "session.json a list": ("session.json", lambda p: p.write_text("[]")),
    "session.json missing": ("session.json", lambda p: p.unlink()),
    "phone frames.csv torn middle line": ("phone/frames.csv", lambda p: p.write_text(
        "\n".join(ln[: len(ln) // 2] if i == 2 else ln for i, ln in enumerate(p.read_text().splitlines())) + "\n")),
    "phone frames.csv wrong header": ("phone/frames.csv", lambda p: p.write_text("a,b,c\n1,2,3\n")),
    "phone frames.csv not a number": ("phone/frames.csv", lambda p: p.write_text(
        p.read_text().replace(p.read_text().splitlines()[1].split(",")[1], "soon", 1))),
    "phone frames.csv empty": ("phone/frames.csv", lambda p: p.write_text("")),
    "sensor frames.csv garbage": ("sensor/frames.csv", lambda p: p.write_bytes(b"\x00\xff" * 100)),
    "sensor frames.csv header only": ("sensor/frames.csv", lambda p: p.write_text(p.read_text().splitlines()[0] + "\n")),
    "probes csv not a number": ("clock/phone_probes.csv", lambda p: p.write_text(
        p.read_text().splitlines()[0] + "\n1,x,3\n" + "\n".join(p.read_text().splitlines()[2:]) + "\n")),
    "probes csv missing": ("clock/phone_probes.csv", lambda p: p.unlink()),
    "probes csv header only": ("clock/phone_probes.csv", lambda p: p.write_text(p.read_text().splitlines()[0] + "\n")),
}


class TestSync:
    @pytest.mark.parametrize("case", list(SESSION_CORRUPTIONS))
    def test_corrupt_session(self, cli, world, tmp_path, case):
        s = _copy(world["session"], tmp_path)
        rel, corrupt = SESSION_CORRUPTIONS[case]
        corrupt(s / rel)
        before = snapshot(s)
        assert_one_line_error(cli("sync", s), 1)
        assert snapshot(s) == before  # the earlier sync.json kept, nothing added

    def test_read_only_session(self, cli, world):
        with tmpfs("256m", read_only_copy_of=world["session"]) as mnt:
            s = mnt / world["session"].name
            before = snapshot(s)
            assert_one_line_error(cli("sync", s), 1, "sync.json")
            assert snapshot(s) == before

    def test_sync_json_is_a_folder(self, cli, world, tmp_path):
        s = _copy(world["session"], tmp_path)
        (s / "sync.json").unlink()
        (s / "sync.json").mkdir()
        assert_one_line_error(cli("sync", s), 1, "folder")

    def test_not_a_session(self, cli, tmp_path):
        assert_one_line_error(cli("sync", tmp_path), 1)

    def test_bad_mode(self, cli, world, tmp_path):
        s = _copy(world["session"], tmp_path)
        before = snapshot(s)
        assert_one_line_error(cli("sync", s, "--mode", "nosuch"), 1)
        assert snapshot(s) == before

    @pytest.mark.parametrize("opt", [("--max-gap-ms", "nan"), ("--max-gap-ms", "-5"), ("--sensor-latency-ms", "1e12")])
    def test_bad_number(self, cli, world, tmp_path, opt):
        s = _copy(world["session"], tmp_path)
        before = snapshot(s)
        assert_one_line_error(cli("sync", s, *opt), 1, opt[0])
        assert snapshot(s) == before


# ------------------------------------------------------------------------------ associate

class TestAssociate:
    def files(self, world):
        return world["session"] / "sensor" / "rgb.txt", world["session"] / "sensor" / "depth.txt"

    def test_missing_output_folder(self, cli, world, tmp_path):
        assert_one_line_error(cli("associate", *self.files(world), "-o", tmp_path / "no" / "a.txt"), 1, "does not exist")

    def test_output_is_a_folder(self, cli, world, tmp_path):
        assert_one_line_error(cli("associate", *self.files(world), "-o", tmp_path), 1, "folder")

    def test_read_only_output(self, cli, world, tmp_path):
        (tmp_path / "o").mkdir()
        with tmpfs(read_only_copy_of=tmp_path / "o") as mnt:
            assert_one_line_error(cli("associate", *self.files(world), "-o", mnt / "o" / "a.txt"), 1)

    def test_missing_input(self, cli, world, tmp_path):
        assert_one_line_error(cli("associate", tmp_path / "x.txt", self.files(world)[1]), 1, "x.txt")

    # (a stamp-only line such as b"1.0\n" is no fault: associate.py skips it, and so do we)
    @pytest.mark.parametrize("content", [b"1.0 a.png\nsoon b.png\n", b"\x00\x01\x02\xff\xfe", b"1.0 a.png\n\xff\xfe b\n"])
    def test_corrupt_tum_text(self, cli, world, tmp_path, content):
        bad = tmp_path / "bad.txt"
        bad.write_bytes(content)
        (tmp_path / "a.txt").write_text("keep")
        assert_one_line_error(cli("associate", bad, self.files(world)[1], "-o", tmp_path / "a.txt"), 1, "bad.txt")
        assert (tmp_path / "a.txt").read_text() == "keep"


# ------------------------------------------------------------------------------ build-dataset

class TestBuildDataset:
    def args(self, session, cal, out, *extra):
        return ["build-dataset", session, "--calib", cal, "-o", out, *extra]

    def test_missing_output_folder(self, cli, world, tmp_path):
        assert_one_line_error(cli(*self.args(world["session"], world["cal"], tmp_path / "no" / "d.h5")), 1, "does not exist")

    @pytest.mark.parametrize("name", ["d.txt", "d.json", "d"])
    def test_output_not_named_h5(self, cli, world, tmp_path, name):
        """It wrote HDF5 under any name."""
        assert_one_line_error(cli(*self.args(world["session"], world["cal"], tmp_path / name)), 1, "name it .h5")
        assert list(tmp_path.iterdir()) == []

    @pytest.mark.parametrize("name", ["c.pcd", "c.txt"])
    def test_point_cloud_not_named_ply(self, cli, world, tmp_path, name):
        """export and --ply wrote PLY under any name (a .pcd that was not one)."""
        assert_one_line_error(cli("export", world["h5"], "-o", tmp_path / name), 1, "name it .ply")
        args = self.args(world["session"], world["cal"], tmp_path / "d.h5", "--ply", tmp_path / name)
        assert_one_line_error(cli(*args), 1, "name it .ply")
        assert list(tmp_path.iterdir()) == []

    def test_output_is_a_folder_even_with_force(self, cli, world, tmp_path):
        assert_one_line_error(cli(*self.args(world["session"], world["cal"], tmp_path, "--force")), 1, "folder")

    def test_existing_output_needs_force(self, cli, world, tmp_path):
        good = _copy(world["h5"], tmp_path)
        before = snapshot(tmp_path)
        assert_one_line_error(cli(*self.args(world["session"], world["cal"], good)), 1, "--force")
        assert snapshot(tmp_path) == before

    def test_ply_checked_before_the_work(self, cli, world, tmp_path):
        assert_one_line_error(cli(*self.args(world["session"], world["cal"], tmp_path / "d.h5", "--ply", tmp_path / "no" / "p.ply")), 1)
        assert not (tmp_path / "d.h5").exists()

    def test_disk_full(self, cli, world):
        with tmpfs("32k") as mnt:
            assert_one_line_error(cli(*self.args(world["session"], world["cal"], mnt / "d.h5")), 1)
            assert list(mnt.iterdir()) == []

    @pytest.mark.parametrize("opt, expect", [
        (["--size", "99999x99999"], "at most 64x48"), (["--size", "65x48"], "at most 64x48"),
        (["--val-fraction", "nan"], "--val-fraction"), (["--test-fraction", "-1"], "--test-fraction"),
        (["--val-fraction", "1"], "--val-fraction"),
    ])
    def test_bad_option_writes_nothing(self, cli, world, tmp_path, opt, expect):
        assert_one_line_error(cli(*self.args(world["session"], world["cal"], tmp_path / "d.h5", *opt)), 1, expect)
        assert list(tmp_path.iterdir()) == []

    @pytest.mark.parametrize("case", ["truncated", "missing key", "T not 4x4", "not a dict", "single camera"])
    def test_corrupt_calibration(self, cli, world, tmp_path, case):
        cal = _copy(world["cal"], tmp_path)
        d = json.loads(cal.read_text())
        if case == "truncated":
            _truncate(cal)
        elif case == "missing key":
            del d["sensor"]
            cal.write_text(json.dumps(d))
        elif case == "T not 4x4":
            d["T_phone_from_sensor"] = [[1, 0], [0, 1]]
            cal.write_text(json.dumps(d))
        elif case == "not a dict":
            cal.write_text("[1, 2]")
        else:
            d["camera"] = d.pop("phone")
            cal.write_text(json.dumps(d))
        assert_one_line_error(cli(*self.args(world["session"], cal, tmp_path / "d.h5")), 1, cal.name)
        assert not (tmp_path / "d.h5").exists()

    @pytest.mark.parametrize("case, says", [
        ("sync.json truncated", "sync.json: not valid JSON"), ("sync.json empty object", "sync.json: schema"),
        ("intrinsics.json truncated", "intrinsics.json: not valid JSON"), ("camera.json truncated", "camera.json: not valid JSON"),
        ("phone JPEG truncated", "frames/0.jpg: JPEG is cut short"), ("phone JPEG not an image", "frames/0.jpg: cannot read image"),
        ("sensor depth PNG truncated", ".png: PNG is cut short"), ("sensor depth PNG missing", "file(s) the folder lacks (depth/"),
        ("phone PNG truncated", "frames/0.png: PNG is cut short"),
    ])
    def test_corrupt_session_file(self, cli, world, tmp_path, case, says):
        s = _copy(world["session"], tmp_path)
        phone0 = s / "phone" / "frames" / "0.jpg"  # the recorder stores phone frames as JPEG by default
        depth_files = sorted((s / "sensor" / "depth").iterdir())
        if case == "sync.json truncated":
            _truncate(s / "sync.json")
        elif case == "sync.json empty object":
            (s / "sync.json").write_text("{}")
        elif case == "intrinsics.json truncated":
            _truncate(s / "sensor" / "intrinsics.json")
        elif case == "camera.json truncated":
            _truncate(s / "phone" / "camera.json")
        elif case == "phone JPEG truncated":
            _truncate(phone0, 0.6)
        elif case == "phone JPEG not an image":
            phone0.write_text("not an image")
        elif case == "sensor depth PNG truncated":
            for p in depth_files:
                _truncate(p)
        elif case == "sensor depth PNG missing":
            for p in depth_files:
                p.unlink()
        else:  # the phone frames as PNG (the recorder's lossless option), one of them cut short
            import cv2

            csv = (s / "phone" / "frames.csv").read_text()
            for p in sorted((s / "phone" / "frames").glob("*.jpg")):
                cv2.imwrite(str(p.with_suffix(".png")), cv2.imread(str(p)))
                p.unlink()
            (s / "phone" / "frames.csv").write_text(csv.replace(".jpg", ".png"))
            from dfdcap.sync.io import sync_session

            sync_session(s)  # sync.json follows the edited index (else: "sync.json is out of date", not the PNG)
            _truncate(s / "phone" / "frames" / "0.png")
        before = snapshot(s)
        assert_one_line_error(cli(*self.args(s, world["cal"], tmp_path / "d.h5")), 1, says)
        assert not (tmp_path / "d.h5").exists() and snapshot(s) == before


# ------------------------------------------------------------------------------ finetune

def _corrupt_h5(kind: str, path: Path, world) -> None:
    if kind == "truncated":
        shutil.copy2(world["h5"], path)
        _truncate(path)
    elif kind == "not HDF5":
        path.write_text("hello")
    elif kind == "no stacks":
        with h5py.File(path, "w") as f:
            f["x"] = [1, 2, 3]
    else:  # empty file
        path.write_bytes(b"")


H5_CORRUPTIONS = ["truncated", "not HDF5", "no stacks", "empty"]


class TestFinetune:
    def args(self, world, out, *extra, model="poolnet", data=None):
        return ["finetune", "--model", model, "--data", data or world["h5"], "-o", out, "--epochs", "1",
                "--crop", "32", "--set", "width=4", "--set", "levels=3", *extra]

    @pytest.mark.parametrize("kind", H5_CORRUPTIONS)
    def test_corrupt_dataset(self, cli, world, tmp_path, kind):
        _corrupt_h5(kind, tmp_path / "bad.h5", world)
        assert_one_line_error(cli(*self.args(world, tmp_path / "run", data=tmp_path / "bad.h5")), 1, "bad.h5")
        assert not (tmp_path / "run").exists()

    def test_missing_dataset(self, cli, world, tmp_path):
        assert_one_line_error(cli(*self.args(world, tmp_path / "run", data=tmp_path / "nothing.h5")), 1)
        assert not (tmp_path / "run").exists()

    @pytest.mark.parametrize("opt", [("--batch-size", "0"), ("--crop", "0"), ("--epochs", "0"), ("--lr", "-1"),
                                     ("--lr", "nan"), ("--devices", "99")])
    def test_bad_number_writes_nothing(self, cli, world, tmp_path, opt):
        """torch and Lightning would answer these with a traceback or, for 99 CPU processes, never finish."""
        assert_one_line_error(cli(*self.args(world, tmp_path / "run", *opt)), 1, opt[0].lstrip("-").split("-")[0])
        assert not (tmp_path / "run").exists()

    def test_run_folder_is_a_file(self, cli, world, tmp_path):
        (tmp_path / "run").write_text("keep")
        assert_one_line_error(cli(*self.args(world, tmp_path / "run")), 1, "file")
        assert (tmp_path / "run").read_text() == "keep"

    def test_run_folder_below_a_file(self, cli, world, tmp_path):
        """`-o runs/x` makes runs/ too; below a file it is one line and nothing changes."""
        (tmp_path / "no").write_text("keep")
        assert_one_line_error(cli(*self.args(world, tmp_path / "no" / "run")), 1, "not a folder")
        assert (tmp_path / "no").read_text() == "keep"

    def test_read_only_run_folder(self, cli, world):
        with tmpfs("256m", read_only_copy_of=world["run"]) as mnt:
            before = snapshot(mnt)
            assert_one_line_error(cli(*self.args(world, mnt / "run")), 1, "cannot be written")
            assert snapshot(mnt) == before

    def test_resume_with_another_model_changes_nothing(self, cli, world, tmp_path):
        run = _copy(world["run"], tmp_path)
        before = snapshot(run)
        msg = assert_one_line_error(cli(*self.args(world, run, model="ddff")[:-4]), 1, "'poolnet'")
        assert "--model poolnet" in msg
        assert snapshot(run) == before

    def test_resume_on_other_data_changes_nothing(self, cli, world, tmp_path):
        run = _copy(world["run"], tmp_path)
        other = shutil.copy2(world["h5"], tmp_path / "other.h5")
        before = snapshot(run)
        assert_one_line_error(cli(*self.args(world, run, data=other)), 1, "trained on")
        assert snapshot(run) == before

    def test_no_resume_onto_an_earlier_run(self, cli, world, tmp_path):
        run = _copy(world["run"], tmp_path)
        before = snapshot(run)
        assert_one_line_error(cli(*self.args(world, run, "--no-resume")), 1, "earlier run")
        assert snapshot(run) == before

    @pytest.mark.parametrize("name", ["last.ckpt", "run.json"])
    def test_corrupt_run_file(self, cli, world, tmp_path, name):
        run = _copy(world["run"], tmp_path)
        _truncate(run / name)
        before = snapshot(run)
        assert_one_line_error(cli(*self.args(world, run)), 1, name)
        assert snapshot(run) == before

    @pytest.mark.parametrize("kind", ["truncated", "unsafe pickle", "not a checkpoint dict"])
    def test_bad_init(self, cli, world, tmp_path, kind):
        bad = tmp_path / "init.pt"
        _bad_checkpoint(kind, bad, world)
        msg = assert_one_line_error(cli("finetune", "--model", "poolnet", "--data", world["h5"], "-o", tmp_path / "run",
                                        "--init", bad), 1, "init.pt")
        assert "weights_only" not in msg
        assert not (tmp_path / "run").exists()


def _bad_checkpoint(kind: str, path: Path, world) -> None:
    import torch

    if kind == "truncated":
        shutil.copy2(world["ckpt"], path)
        _truncate(path)
    elif kind == "unsafe pickle":
        class Payload:
            def __reduce__(self):
                return (print, ("this must never run",))

        torch.save({"model": "poolnet", "config": {}, "state_dict": {}, "x": Payload()}, path)
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        torch.save({"weights": torch.zeros(3)}, path)


# ------------------------------------------------------------------------------ evaluate

class TestExport:
    def test_session_folder_instead_of_a_dataset(self, cli, world, tmp_path):
        """HDF5's error for a folder runs over several lines; the user gets one."""
        assert_one_line_error(cli("export", world["session"], "-o", tmp_path / "x.ply"), 1, "folder")
        assert not (tmp_path / "x.ply").exists()

    def test_empty_split_name(self, cli, world, tmp_path):
        """--split '' exported the first split, as if the option were left out."""
        assert_one_line_error(cli("export", world["h5"], "--split", "", "-o", tmp_path / "x.ply"), 1, "names no split")
        assert not (tmp_path / "x.ply").exists()


class TestEvaluate:
    @pytest.mark.parametrize("kind", ["truncated", "unsafe pickle", "not a checkpoint dict", "empty"])
    def test_bad_checkpoint(self, cli, world, tmp_path, kind):
        bad = tmp_path / "m.pt"
        _bad_checkpoint(kind, bad, world)
        rc, out, err = res = cli("evaluate", bad, "--data", world["h5"])
        msg = assert_one_line_error(res, 1, "m.pt")
        assert "weights_only" not in msg and "this must never run" not in out + err

    @pytest.mark.parametrize("kind", H5_CORRUPTIONS)
    def test_corrupt_dataset(self, cli, world, tmp_path, kind):
        _corrupt_h5(kind, tmp_path / "bad.h5", world)
        assert_one_line_error(cli("evaluate", world["ckpt"], "--data", tmp_path / "bad.h5"), 1, "bad.h5")

    def test_missing_checkpoint(self, cli, world, tmp_path):
        assert_one_line_error(cli("evaluate", tmp_path / "none.pt", "--data", world["h5"]), 1, "none.pt")

    def test_unknown_split(self, cli, world):
        assert_one_line_error(cli("evaluate", world["ckpt"], "--data", world["h5"], "--split", "nosuch"), 1, "nosuch")

    def test_no_samples(self, cli, world):
        assert_one_line_error(cli("evaluate", world["ckpt"], "--data", world["h5"], "--max-samples", "0"), 1, "--max-samples")

    def test_json_is_a_folder(self, cli, world, tmp_path):
        (tmp_path / "m.json").mkdir()
        msg = assert_one_line_error(cli("evaluate", world["ckpt"], "--data", world["h5"], "--json", tmp_path / "m.json"), 1, "m.json")
        assert ".tmp" not in msg and list(tmp_path.iterdir()) == [tmp_path / "m.json"]


# ------------------------------------------------------------------------------ predict

class TestPredict:
    def frames(self, world, tmp_path, n=3) -> list[Path]:
        return [_copy(p, tmp_path) for p in sorted((world["session"] / "phone" / "frames").glob("*.jpg"))[:n]]

    def args(self, world, frames, out):
        return ["predict", world["ckpt"], *frames, "--focus", ",".join(["0.5", "1.0", "2.0"][: len(frames)]), "-o", out]

    def test_output_is_a_folder(self, cli, world, tmp_path):
        (tmp_path / "o.png").mkdir()
        assert_one_line_error(cli(*self.args(world, self.frames(world, tmp_path), tmp_path / "o.png")), 1, "folder")

    def test_read_only_output(self, cli, world, tmp_path):
        frames = self.frames(world, tmp_path)
        (tmp_path / "o").mkdir()
        with tmpfs(read_only_copy_of=tmp_path / "o") as mnt:
            assert_one_line_error(cli(*self.args(world, frames, mnt / "o" / "d.png")), 1, "cannot be written")

    @pytest.mark.parametrize("kind", ["PNG truncated", "PNG empty", "JPEG truncated", "text"])
    def test_corrupt_image(self, cli, world, tmp_path, kind):
        import cv2

        frames = self.frames(world, tmp_path)  # JPEG, as the recorder stores them
        if kind.startswith("JPEG"):
            _truncate(frames[1], 0.6)
        else:
            png = frames[1].with_suffix(".png")
            cv2.imwrite(str(png), cv2.imread(str(frames[1])))
            frames[1] = png
        if kind == "PNG truncated":
            _truncate(frames[1])
        else:
            frames[1].write_bytes(b"" if kind == "PNG empty" else b"hello")
        (tmp_path / "d.png").write_text("earlier")
        assert_one_line_error(cli(*self.args(world, frames, tmp_path / "d.png")), 1, frames[1].name)
        assert (tmp_path / "d.png").read_text() == "earlier" and not (tmp_path / "d_mm.png").exists()

    def test_focus_mismatch(self, cli, world, tmp_path):
        frames = self.frames(world, tmp_path)
        args = self.args(world, frames, tmp_path / "d.png")
        args[args.index("--focus") + 1] = "0.5,1.0"
        assert_one_line_error(cli(*args), 1)
        assert not (tmp_path / "d.png").exists()


# ------------------------------------------------------------------------------ report

class TestReport:
    def test_missing_output_folder(self, cli, world, tmp_path):
        assert_one_line_error(cli("report", world["cal"], "-o", tmp_path / "no" / "r.png"), 1, "does not exist")

    def test_output_is_a_folder(self, cli, world, tmp_path):
        assert_one_line_error(cli("report", world["cal"], "-o", tmp_path), 1, "folder")

    def test_corrupt_calibration(self, cli, world, tmp_path):
        cal = _copy(world["cal"], tmp_path)
        _truncate(cal)
        assert_one_line_error(cli("report", cal, "-o", tmp_path / "r.png"), 1, cal.name)
        assert not (tmp_path / "r.png").exists()

    @pytest.mark.parametrize("kind", ["truncated", "no stacks"])
    def test_corrupt_dataset(self, cli, world, tmp_path, kind):
        _corrupt_h5(kind, tmp_path / "bad.h5", world)
        assert_one_line_error(cli("report", tmp_path / "bad.h5", "-o", tmp_path / "r.png"), 1, "bad.h5")
        assert not (tmp_path / "r.png").exists()

    def test_session_with_corrupt_sync_json(self, cli, world, tmp_path):
        s = _copy(world["session"], tmp_path)
        _truncate(s / "sync.json")
        before = snapshot(s)
        assert_one_line_error(cli("report", s, "-o", tmp_path / "r.png"), 1, "sync.json")
        assert snapshot(s) == before and not (tmp_path / "r.png").exists()

    def test_run_with_corrupt_metrics(self, cli, world, tmp_path):
        run = _copy(world["run"], tmp_path)
        (run / "metrics.csv").write_bytes(b"\x00\xff\x00garbage")
        rc, out, err = res = cli("report", run, "-o", tmp_path / "r.png")
        assert_one_line_error(res, 1, "metrics.csv")
        assert not (tmp_path / "r.png").exists()


# --- align: bad frames, in a child process (the image libraries write to file descriptor 2) ---


class TestAlign:
    @pytest.fixture()
    def good(self, tmp_path):
        import numpy as np

        from dfdcap.fileio import write_image

        img = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
        write_image(tmp_path / "good.jpg", img)
        return tmp_path / "good.jpg"

    @pytest.mark.parametrize("case", ["missing", "JPEG cut short", "PNG not an image", "JPEG not an image"])
    def test_bad_frame_is_one_line_and_writes_nothing(self, good, tmp_path, case):
        bad = {"missing": tmp_path / "gone.jpg", "JPEG cut short": tmp_path / "cut.jpg",
               "PNG not an image": tmp_path / "text.png", "JPEG not an image": tmp_path / "text.jpg"}[case]
        if case == "JPEG cut short":
            bad.write_bytes(good.read_bytes()[:300])
        elif case.endswith("not an image"):  # a .jpg that is no JPEG at all is not called "cut short"
            bad.write_text("not an image")
        proc = dfdcap_process("align", str(bad), str(good), "-o", str(tmp_path / "out"))
        out, err = proc.communicate(timeout=600)  # ends a hang only
        assert_one_line_error((proc.returncode, out, err), 1, bad.name)
        assert len(err.strip().splitlines()) == 1, err  # no decoder warning before it
        assert ("cut short" in err) == (case == "JPEG cut short"), err
        assert not (tmp_path / "out" / "alignment.json").exists()

    @pytest.mark.parametrize("side", ["0", "-5"])
    def test_bad_max_side(self, cli, good, tmp_path, side):
        """--max-side 0 was a ZeroDivisionError; a negative one ran as if it were 1."""
        other = shutil.copy2(good, tmp_path / "other.jpg")
        assert_one_line_error(cli("align", good, other, "-o", tmp_path / "out", "--max-side", side), 1, "--max-side")
        assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------ an output that names an input

def _frames(folder: Path, n: int) -> list[Path]:
    """n random 56x40 PNG frames f0.png ... in folder."""
    import numpy as np

    from dfdcap.fileio import write_image

    rng = np.random.default_rng(0)
    frames = [folder / f"f{i}.png" for i in range(n)]
    for f in frames:
        write_image(f, rng.integers(0, 255, (40, 56, 3), dtype=np.uint8))
    return frames


class TestOutputNamesAnInput:
    """Every command refuses, before any work, to write over one of its inputs or to give two of its
    outputs one name: each case here overwrote the input and reported success."""

    def test_evaluate_json_onto_the_dataset(self, cli, world, tmp_path):
        data = _copy(world["h5"], tmp_path)
        before = snapshot(data)
        assert_one_line_error(cli("evaluate", world["ckpt"], "--data", data, "--json", data), 1, "overwrite the input")
        assert snapshot(data) == before

    def test_predict_picture_onto_a_frame(self, cli, world, tmp_path):
        frames = _frames(tmp_path, 3)
        before = snapshot(tmp_path)
        assert_one_line_error(cli("predict", "--classical", *frames, "--index", "-o", frames[1]), 1, "f1.png")
        assert snapshot(tmp_path) == before

    def test_align_into_the_frames_folder(self, cli, world, tmp_path):
        frames = _frames(tmp_path, 3)
        before = snapshot(tmp_path)
        assert_one_line_error(cli("align", *frames, "-o", tmp_path), 1, "another output folder")
        assert snapshot(tmp_path) == before

    @pytest.mark.parametrize("extra", ["--yaml", "--report"])
    def test_calibrate_two_outputs_one_name(self, cli, world, tmp_path, extra):
        out = tmp_path / ("c.png" if extra == "--report" else "c.json")
        assert_one_line_error(cli("calibrate", world["boards"], "--board", "9x6", "--square", "0.025", "-o", out,
                                  extra, out), 1, "same file")
        assert not out.exists()

    def test_build_dataset_ply_onto_the_dataset(self, cli, world, tmp_path):
        out = tmp_path / "d.h5"
        assert_one_line_error(cli("build-dataset", world["session"], "--calib", world["cal"], "-o", out, "--ply", out),
                              1, "same file")
        assert not out.exists()

    def test_report_needs_a_png_name(self, cli, world, tmp_path):
        assert_one_line_error(cli("report", world["cal"], "-o", tmp_path / "r.jpg"), 1, ".png")
        assert not (tmp_path / "r.jpg").exists()


# ------------------------------------------------------------------------------ files other tools wrote wrong

def _broken_h5(world, path: Path, case: str) -> Path:
    import numpy as np

    shutil.copy2(world["h5"], path)
    with h5py.File(path, "a") as f:
        n, S = f["stack_train"].shape[:2]
        if case == "focus of fewer frames":
            del f["focus_train"]
            f["focus_train"] = np.ones((n, S - 1), np.float32)
        elif case == "NaN focus":
            f["focus_train"][0, 1] = np.nan
        elif case == "one focus":
            f["focus_train"][0] = 0.5
        elif case == "no mask":
            del f["mask_train"]
        elif case == "depth of another size":
            del f["depth_train"]
            f["depth_train"] = np.ones((n, 5, 7), np.float32)
        elif case == "grey stacks":
            grey = f["stack_train"][..., 0]
            del f["stack_train"]
            f["stack_train"] = grey
        elif case == "a group as stacks":
            del f["stack_train"]
            f.create_group("stack_train")
        elif case == "no format attribute":
            del f.attrs["format"]
        elif case == "lens attribute text":
            f.attrs["f_number"] = "fast"
    return path


class TestDatasetFileLayout:
    """HDF5 files whose arrays do not fit together: one line naming the file and the array, never
    a numpy traceback or a table of nan, and no run folder."""

    CASES = ["focus of fewer frames", "NaN focus", "one focus", "no mask", "depth of another size", "grey stacks",
             "a group as stacks", "no format attribute", "lens attribute text"]

    @pytest.mark.parametrize("case", CASES)
    def test_evaluate(self, cli, world, tmp_path, case):
        bad = _broken_h5(world, tmp_path / "bad.h5", case)
        assert_one_line_error(cli("evaluate", world["ckpt"], "--data", bad, "--split", "train"), 1, "bad.h5")

    @pytest.mark.parametrize("case", ["focus of fewer frames", "NaN focus", "no mask", "lens attribute text"])
    def test_finetune_makes_no_run_folder(self, cli, world, tmp_path, case):
        bad = _broken_h5(world, tmp_path / "bad.h5", case)
        assert_one_line_error(cli(*TestFinetune().args(world, tmp_path / "run", data=bad)), 1, "bad.h5")
        assert not (tmp_path / "run").exists()

    @pytest.mark.parametrize("case", ["depth of another size", "no mask"])
    def test_export_and_report(self, cli, world, tmp_path, case):
        bad = _broken_h5(world, tmp_path / "bad.h5", case)
        assert_one_line_error(cli("export", bad, "-o", tmp_path / "x.ply"), 1, "bad.h5")
        assert_one_line_error(cli("report", bad, "-o", tmp_path / "x.png"), 1, "bad.h5")
        assert not (tmp_path / "x.ply").exists() and not (tmp_path / "x.png").exists()

    def test_no_valid_depth_is_no_result(self, cli, world, tmp_path):
        """Every mask empty: evaluate printed a table of nan and finetune trained at loss 0, both exit 0."""
        bad = shutil.copy2(world["h5"], tmp_path / "bad.h5")
        with h5py.File(bad, "a") as f:
            for split in ("train", "val"):
                f[f"mask_{split}"][...] = 0
        assert_one_line_error(cli("evaluate", world["ckpt"], "--data", bad), 1, "no valid depth")
        assert_one_line_error(cli(*TestFinetune().args(world, tmp_path / "run", data=bad)), 1, "no valid depth")
        assert not (tmp_path / "run").exists()


def _single_camera(d: dict) -> dict:
    """The stereo calibration turned into a single-camera file (the phone's), as `calibrate --single` writes."""
    for key in ("sensor", "stereo", "T_phone_from_sensor"):
        del d[key]
    d["camera"] = d.pop("phone") | {"distortion_model": {"chosen": "k1k2", "candidates": {}}}
    return d


_VIEW = {"name": "v0", "corners_px": [[1.0, 2.0], [3.0, 4.0]], "residuals_px": [[0.1, 0.0], [0.0, 0.1]]}


class TestHandEditedCalibration:
    """A calibration section of the wrong type or shape crashed build-dataset and report with a
    traceback (ValueError, TypeError, KeyError, AttributeError, OverflowError): now one line naming
    the file and the key path."""

    @pytest.mark.parametrize("edit, where", [
        (lambda d: d.update(board="9x6"), "board:"),
        (lambda d: d.update(stereo=None), "stereo:"),
        (lambda d: d["stereo"].update(per_view_px=[0.1, 0.2, 0.3]), "stereo.per_view_px:"),
        (lambda d: d.update(versions="opencv 4.10"), "versions:"),
        (lambda d: d.update(views=[1]), "views:"),
        (lambda d: d.update(views={"phone": [{"name": "v0", "corners_px": [[1.0, 2.0]]}]}), "views.phone[0].residuals_px"),
        (lambda d: d.update(views={"phone": [_VIEW | {"residuals_px": [[0.1, 0.0]]}]}), "views.phone[0]:"),
        (lambda d: d.update(views={"sensor": [_VIEW | {"corners_px": "here"}]}), "views.sensor[0].corners_px:"),
        (lambda d: d["phone"].update(size=[float("inf"), 240]), "phone.size:"),
        (lambda d: d["phone"].update(size=[320.5, 240]), "phone.size:"),
        (lambda d: d["phone"].update(K=[[100, 0, 32], [0, 100, 24]]), "phone.K:"),
        (lambda d: d["phone"].update(K=[["100", 0, 32], [0, 100, 24], [0, 0, 1]]), "phone.K:"),
        (lambda d: d["sensor"].update(dist=[0.1, 0.2, 0.3]), "sensor.dist:"),
        (lambda d: d["T_phone_from_sensor"][0].__setitem__(3, "0.1"), "T_phone_from_sensor:"),
        (lambda d: d["phone"].update(rms_px="0.1"), "phone.rms_px:"),
        (lambda d: d["phone"].update(per_view_px=[float("nan")]), "phone.per_view_px:"),
        (lambda d: d["phone"].update(view_names=["v0", "v1"]), "phone:"),
        (lambda d: d["sensor"].update(std=[0.1]), "sensor.std:"),
        (lambda d: d["stereo"].update(views_used="v0"), "stereo.views_used:"),
        (lambda d: d["stereo"].update(uncertainty={"rotation_std_deg": 0.1}), "stereo.uncertainty.translation_std"),
        (lambda d: d["stereo"].update(distortion_models={"phone": {"chosen": "k1k2", "candidates": {"k1k2": 3}}}),
         "stereo.distortion_models.phone.candidates.k1k2:"),
        (lambda d: _single_camera(d)["camera"].update(distortion_model=[1]), "camera.distortion_model:"),
        (lambda d: _single_camera(d)["camera"].update(views_dropped="v0"), "camera.views_dropped:"),
    ], ids=lambda x: x if isinstance(x, str) else "")
    def test_wrong_section(self, cli, world, tmp_path, edit, where):
        doc = json.loads(world["cal"].read_text())
        edit(doc)
        bad = tmp_path / "cal.json"
        bad.write_text(json.dumps(doc))  # inf and NaN as Python's JSON writes them
        assert_one_line_error(cli("report", bad, "-o", tmp_path / "r.png"), 1, "cal.json: ", where)
        if "camera" not in doc:
            assert_one_line_error(cli("build-dataset", world["session"], "--calib", bad, "-o", tmp_path / "d.h5"),
                                  1, "cal.json: ", where)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["cal.json"]

    def test_null_optional_sections_still_read(self, cli, world, tmp_path):
        """views, uncertainty, distortion models and focus_model may be null: the readers treat that as absent."""
        doc = json.loads(world["cal"].read_text())
        doc["views"] = None
        doc["phone"]["focus_model"] = None
        doc["stereo"].update(uncertainty=None, distortion_models={"phone": None}, views_used=1)  # a count, as other tools write
        good = tmp_path / "cal.json"
        good.write_text(json.dumps(doc))
        rc, out, err = cli("report", good, "-o", tmp_path / "r.png")
        assert rc == 0 and (tmp_path / "r.png").exists(), out + err


class TestWrongFieldTypes:
    @pytest.mark.parametrize("field, value", [("K", [["abc", 0, 1], [0, 1, 1], [0, 0, 1]]), ("dist", "x"),
                                              ("size", [0, 0]), ("K", [[-5, 0, 32], [0, 50, 24], [0, 0, 1]]),
                                              ("size", [10**9, 10**9])])  # the report drew it; build-dataset allocated rays
    def test_calibration_camera_field(self, cli, world, tmp_path, field, value):
        doc = json.loads(world["cal"].read_text())
        doc["phone"][field] = value
        bad = tmp_path / "cal.json"
        bad.write_text(json.dumps(doc))
        assert_one_line_error(cli("report", bad, "-o", tmp_path / "r.png"), 1, "cal.json", "phone")
        assert_one_line_error(cli("build-dataset", world["session"], "--calib", bad, "-o", tmp_path / "d.h5"), 1, "cal.json")
        assert not (tmp_path / "d.h5").exists()

    def test_session_rig_null(self, cli, world, tmp_path):
        s = _copy(Path(world["session"]), tmp_path)
        meta = json.loads((s / "session.json").read_text())
        meta["rig"] = None
        (s / "session.json").write_text(json.dumps(meta))
        rc, out, err = cli("sync", s)  # rig: null says nothing of the devices (Session.rig_entry): synced as without it
        assert rc == 0 and "Traceback" not in out + err, err
        from dfdcap.sync.io import read_sync

        assert len(read_sync(s).pairs) == len(json.loads((Path(world["session"]) / "sync.json").read_text())["pairs"])

    def test_phone_camera_field(self, cli, world, tmp_path):
        s = _copy(Path(world["session"]), tmp_path)
        (s / "phone" / "camera.json").write_text(json.dumps({"focal_length_m": "x"}))
        assert_one_line_error(cli("build-dataset", s, "--calib", world["cal"], "-o", tmp_path / "d.h5"), 1, "camera.json")


class TestBuildDatasetSessions:
    def test_same_session_twice(self, cli, world, tmp_path):
        assert_one_line_error(cli("build-dataset", world["session"], world["session"], "--calib", world["cal"],
                                  "-o", tmp_path / "d.h5"), 1, "twice")
        assert not (tmp_path / "d.h5").exists()

    def test_val_and_test_one_session(self, cli, world, tmp_path):
        name = Path(world["session"]).name
        assert_one_line_error(cli("build-dataset", world["session"], "--calib", world["cal"], "--val", name,
                                  "--test", name, "-o", tmp_path / "d.h5"), 1, "both --val and --test")


class TestNumbersOutOfReach:
    @pytest.mark.parametrize("opt", [("--far", "inf"), ("--steps", "1"), ("--near", "nan"), ("--near", "1e-308"), ("--near", "0")])
    def test_record(self, cli, tmp_path, opt):
        assert_one_line_error(cli("record", "--stacks", "1", "-o", tmp_path / "s", *opt), 1, opt[0])
        assert not (tmp_path / "s").exists()

    @pytest.mark.parametrize("opt", [("--jpeg-quality", "0"), ("--square", "inf"), ("--focus-diopters", "nan,1"),
                                     ("--phone-dist", "1e308,0,0,0,0")])
    def test_sim_checkerboard_leaves_no_folder(self, cli, tmp_path, opt):
        assert_one_line_error(cli("sim", "checkerboard", tmp_path / "b", "--views", "2", *opt), 1)
        assert not (tmp_path / "b").exists()

    @pytest.mark.parametrize("opt", [("--focus", "1000,2000"), ("--diopters", "1000,2000")])
    def test_predict_focus_beyond_the_png(self, cli, tmp_path, opt):
        frames = _frames(tmp_path, 2)
        assert_one_line_error(cli("predict", "--classical", *frames, *opt, "-o", tmp_path / "d.png"), 1, opt[0])
        assert not (tmp_path / "d.png").exists()


def test_pull_of_a_simulated_session_says_why(cli, world):
    """It said "no phone connected" although the simulated phone never had frames to pull."""
    assert_one_line_error(cli("pull", world["session"]), 1, "simulated phone", "nothing")
