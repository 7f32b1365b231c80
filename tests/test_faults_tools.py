"""Bad input to the tool commands (sim checkerboard, calibrate, align, import-opencamera, record):
a clear one-line error naming the option or file, and nothing half-written left behind."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.faults_helpers import assert_one_line_error, dfdcap_process, finish, snapshot, wait_for

SMALL = ("--phone-size", "320x240")


@pytest.fixture(scope="module")
def boards(tmp_path_factory) -> Path:
    """Two simulated 9x6 board pairs (enough to detect corners, not to calibrate)."""
    from dfdcap.cli import main

    out = tmp_path_factory.mktemp("boards") / "b"
    main(["sim", "checkerboard", str(out), "--views", "2", *SMALL])  # returns on success
    return out


class TestBoardSize:
    """One board parser for sim checkerboard and calibrate: 3..200 a side (OpenCV finds no 2xN board)."""

    @pytest.mark.parametrize("board", ["2x2", "9x2", "99999999999999999999x2", "201x6", "1000x1000"])
    def test_calibrate_refuses(self, cli, boards, tmp_path, board):
        assert_one_line_error(cli("calibrate", boards, "--board", board, "--square", "0.025", "-o", tmp_path / "c.json"),
                              1, f"--board {board}", "3 to 200")
        assert not (tmp_path / "c.json").exists()

    @pytest.mark.parametrize("board", ["2x2", "99999999999999999999x2", "1000x1000"])
    def test_sim_refuses(self, cli, tmp_path, board):
        assert_one_line_error(cli("sim", "checkerboard", tmp_path / "b", "--views", "1", "--board", board, *SMALL),
                              1, f"--board {board}", "3 to 200")
        assert list(tmp_path.iterdir()) == []

    def test_charuco_squares_are_bounded_too(self, cli, boards, tmp_path):
        assert_one_line_error(cli("calibrate", boards, "--charuco", "2x300,0.04,0.03", "-o", tmp_path / "c.json"),
                              1, "--charuco 2x300", "squares")

    def test_smallest_board_is_found(self):
        from dfdcap.calib.boards import parse_board

        b = parse_board("3x3", 0.02)
        assert (b.cols, b.rows, b.n_corners) == (3, 3, 9)


class TestSimCheckerboardFolder:
    def test_existing_folder_with_files_is_refused_then_replaced_with_force(self, cli, tmp_path):
        out = tmp_path / "b"
        assert cli("sim", "checkerboard", out, "--views", "3", "--board", "7x5", *SMALL)[0] == 0
        before = snapshot(out)
        assert_one_line_error(cli("sim", "checkerboard", out, "--views", "2", *SMALL), 1, str(out), "--force")
        assert snapshot(out) == before
        assert cli("sim", "checkerboard", out, "--views", "2", "--force", *SMALL)[0] == 0
        import json

        truth = json.loads((out / "truth.json").read_text())
        assert sorted(p.name for p in (out / "phone").glob("view_*")) == ["view_000.png", "view_001.png"]  # no stale view
        assert truth["board"]["cols"] == 9 and len(truth["views"]) == 2
        assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no temporary folder left

    def test_force_does_not_replace_a_folder_of_something_else(self, cli, tmp_path):
        """--force replaced any folder that held files: `sim checkerboard sessions --force` deleted every
        recorded session. It replaces only a board folder (one with truth.json) now."""
        out = tmp_path / "sessions"
        (out / "20260101T000000_000000Z_sim").mkdir(parents=True)
        (out / "20260101T000000_000000Z_sim" / "session.json").write_text("{}")
        before = snapshot(tmp_path)
        assert_one_line_error(cli("sim", "checkerboard", out, "--views", "1", "--force", *SMALL), 1, str(out),
                              "no truth.json")
        assert snapshot(tmp_path) == before

    def test_an_empty_existing_folder_is_used(self, cli, tmp_path):
        out = tmp_path / "b"
        out.mkdir()
        assert cli("sim", "checkerboard", out, "--views", "1", *SMALL)[0] == 0
        assert (out / "truth.json").is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["b"]

    @pytest.mark.parametrize("opt, needle", [
        (("--square", "1e308"), "--square"),
        (("--phone-dist", "1e308,0,0,0,0"), "--phone-dist"),
        (("--focus-diopters", "1e308"), "--focus-diopters"),
        (("--focus-diopters", "0.5,11"), "to 10"),
        (("--focus-diopters", "0_5"), "--focus-diopters"),  # float() read 5 D
        (("--phone-dist", "0_1,0,0,0,0"), "--phone-dist"),
        (("--phone-size", "1_008x756"), "--phone-size"),  # int() read 1008
        (("--board", "1000x1000"), "--board"),
        (("--views", "100000000000000000000"), "--views"),
        (("--views", "1001"), "at most 1000"),
    ])
    def test_refused_run_leaves_nothing(self, cli, tmp_path, opt, needle):
        assert_one_line_error(cli("sim", "checkerboard", tmp_path / "new" / "b", "--views", "1", *SMALL, *opt), 1, needle)
        assert list(tmp_path.iterdir()) == []  # not the folder, not its parent, no temporary folder

    def test_refused_run_keeps_the_old_folder(self, cli, tmp_path):
        out = tmp_path / "b"
        assert cli("sim", "checkerboard", out, "--views", "1", *SMALL)[0] == 0
        before = snapshot(tmp_path)
        # fails while rendering, in the temporary folder: no pose lets a d405 1 m away see the board too
        assert_one_line_error(cli("sim", "checkerboard", out, "--views", "1", "--force", "--baseline", "0.99",
                                  "--sensor-preset", "d405", *SMALL), 1, "no pose found")
        assert snapshot(tmp_path) == before

    @pytest.mark.parametrize("when", ["first view", "folder made"])
    def test_ctrl_c_leaves_no_folder(self, tmp_path, when):
        """Ctrl-C while rendering, or as soon as the temporary folder exists: still importing the
        renderer, where a Ctrl-C was once swallowed (in abc's isinstance) and all 200 views rendered."""
        proc = dfdcap_process("sim", "checkerboard", str(tmp_path / "b"), "--views", "200")
        if when == "first view":
            wait_for(lambda: any(any((d / "phone").glob("view_*")) for d in tmp_path.glob(".b.*")), proc, when)
        else:
            wait_for(lambda: any(tmp_path.glob(".b.*")), proc, when)
        proc.send_signal(signal.SIGINT)
        out, err = finish(proc)
        assert proc.returncode == 130 and "Traceback" not in out + err, out + err
        assert list(tmp_path.iterdir()) == []


# --- import-opencamera ---------------------------------------------------------------------------


def _photo(path: Path, size=(40, 30), when="2026:01:01 12:00:00", subsec="000", f_number=1.7, cut=False) -> Path:
    import cv2
    import numpy as np

    from dfdcap.capture.exif import (TAG_DATETIME_ORIGINAL, TAG_FNUMBER, TAG_FOCAL, TAG_FOCAL_35, TAG_SUBSEC_ORIGINAL,
                                     exif_app1, insert_app1)

    w, h = size
    jpeg = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (h, w, 3), np.uint8))[1].tobytes()
    tags = {TAG_DATETIME_ORIGINAL: when, TAG_SUBSEC_ORIGINAL: subsec, TAG_FOCAL: 4.2, TAG_FNUMBER: f_number, TAG_FOCAL_35: 26}
    data = insert_app1(jpeg, exif_app1(tags))
    path.write_bytes(data[: len(data) // 2] if cut else data)
    return path


def _bracket(folder: Path, first: dict | None = None, **second) -> Path:
    """One Open Camera bracket of 2 photos 0.5 s apart; `first`, `second` change a photo."""
    folder.mkdir(parents=True, exist_ok=True)
    _photo(folder / "IMG_20260101_120000_0.jpg", **(first or {}))
    _photo(folder / "IMG_20260101_120000_1.jpg", **{"subsec": "500", **second})
    return folder


def _import(cli, folder: Path, out: Path, *opts):
    return cli("import-opencamera", folder, "--source-diopters", "2", "--target-diopters", "8", "-n", "2", "-o", out, *opts)


class TestImportOpenCamera:
    def test_good_bracket_imports(self, cli, tmp_path):
        """Both photos indexed, their local EXIF times (12:00:00.000 and .500) taken at UTC+05:30."""
        from dfdcap.capture.session import Session

        code, _out, err = _import(cli, _bracket(tmp_path / "p"), tmp_path / "s", "--utc-offset", "+05:30")
        assert code == 0 and "warning" not in err, err
        (path,) = (tmp_path / "s").iterdir()
        frames = Session(path).phone_frames
        utc_0630 = 1_767_249_000 * 10**9  # 2026-01-01 06:30:00 UTC
        assert [(r.ramp, r.step, r.t_phone_ns) for r in frames] == [(0, 0, utc_0630), (0, 1, utc_0630 + 500_000_000)]

    @pytest.mark.parametrize("offset", ["+25:00", "+15:00", "-14:30", "+05:99", "+05:60"])
    def test_utc_offset_out_of_range(self, cli, tmp_path, offset):
        assert_one_line_error(_import(cli, _bracket(tmp_path / "p"), tmp_path / "s", "--utc-offset", offset),
                              1, f"--utc-offset '{offset}'", "minutes 0 to 59")
        assert not (tmp_path / "s").exists()

    @pytest.mark.parametrize("second, needles", [
        ({"cut": True}, ["IMG_20260101_120000_1.jpg", "cut short"]),
        ({"size": (48, 30)}, ["IMG_20260101_120000_1.jpg", "48x30", "40x30"]),
        ({"first": {"f_number": 0.0}}, ["IMG_20260101_120000_0.jpg", "FNumber 0", "invalid"]),
    ])
    def test_bad_photo_is_refused_by_name(self, cli, tmp_path, second, needles):
        out = tmp_path / "s"
        assert_one_line_error(_import(cli, _bracket(tmp_path / "p", **second), out), 1, *needles)
        assert not out.exists() or list(out.iterdir()) == []

    def test_exif_tags_of_another_type(self, cli, tmp_path):
        """A date or sub-second stored as a number, an FNumber as text: tracebacks (strptime on bytes,
        int.strip, float('1/60')). Such a tag now counts as absent: the photo's time comes from its name
        (with the undated warning), and a missing FNumber is the usual one line."""
        code, _out, err = _import(cli, _bracket(tmp_path / "p", first={"when": 20260101, "subsec": 5}), tmp_path / "s")
        assert code == 0 and "Traceback" not in err, err
        assert "IMG_20260101_120000_0.jpg" in err
        res = _import(cli, _bracket(tmp_path / "q", first={"f_number": "1.7"}), tmp_path / "t")
        assert_one_line_error(res, 1, "IMG_20260101_120000_0.jpg", "FNumber")

    def test_equal_exif_times_fall_back_to_the_name(self, cli, tmp_path):
        """Two photos of a bracket with one EXIF time (edited, or stamped once per burst): imported,
        with a warning naming the photo, and the bracket's times from its name, 0.5 s apart."""
        import csv

        code, _out, err = _import(cli, _bracket(tmp_path / "p", subsec="000"), tmp_path / "s")
        assert code == 0, err
        (line,) = [ln for ln in err.splitlines() if ln.startswith("warning:")]
        assert "IMG_20260101_120000_1.jpg" in line and "not after" in line
        (session,) = [d for d in (tmp_path / "s").iterdir() if d.is_dir()]
        rows = list(csv.DictReader(open(session / "phone" / "frames.csv")))
        # 2026-01-01 12:00:00 from IMG_20260101_120000_*.jpg (UTC: no offset given); it was the copies' mtime
        assert [int(r["t_phone_ns"]) for r in rows] == [1_767_268_800_000_000_000, 1_767_268_800_500_000_000]

    def test_sync_of_a_phone_only_session_says_why(self, cli, tmp_path):
        """It said "clock/phone_probes.csv: no clock probes", as if the session were damaged."""
        assert _import(cli, _bracket(tmp_path / "p"), tmp_path / "s")[0] == 0
        (session,) = [d for d in (tmp_path / "s").iterdir() if d.is_dir()]
        for args in (("sync", session), ("report", session, "-o", tmp_path / "r.png")):
            assert_one_line_error(cli(*args), 1, "a phone-only session (no sensor recorded)")

    @pytest.mark.parametrize("when", ["garbage", "0000:00:00 00:00:00"])
    def test_bad_exif_date_warns_naming_the_photo(self, cli, tmp_path, when):
        code, _out, err = _import(cli, _bracket(tmp_path / "p", when=when), tmp_path / "s")
        assert code == 0, err
        (line,) = [ln for ln in err.splitlines() if ln.startswith("warning:")]
        assert "IMG_20260101_120000_1.jpg" in line and repr(when) in line and "file name" in line

    @pytest.mark.parametrize("opt", ["--source-diopters", "--target-diopters"])
    @pytest.mark.parametrize("value", ["inf", "nan", "0", "1e+308"])
    def test_focus_option_named(self, cli, tmp_path, opt, value):
        folder = _bracket(tmp_path / "p")
        args = {"--source-diopters": "2", "--target-diopters": "8", opt: value}
        assert_one_line_error(cli("import-opencamera", folder, *[x for kv in args.items() for x in kv], "-n", "2",
                                  "-o", tmp_path / "s"), 1, f"{opt} {value}")


# --- align ---------------------------------------------------------------------------------------


def _sweep(folder: Path, names: list[str]) -> list[Path]:
    import numpy as np

    from dfdcap.fileio import write_image

    folder.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    for n in names:
        write_image(folder / f"{n}.png", img)
    return [folder / f"{n}.png" for n in names]


class TestAlignOutput:
    def test_earlier_alignment_is_kept_without_force(self, cli, tmp_path):
        out = tmp_path / "out"
        assert cli("align", *_sweep(tmp_path / "a", ["a0", "a1", "a2"]), "-o", out)[0] == 0
        frames = _sweep(tmp_path / "b", ["a0", "a1"])
        before = snapshot(tmp_path)
        assert_one_line_error(cli("align", *frames, "-o", out), 1, "alignment.json", "--force")
        assert snapshot(tmp_path) == before

    def test_force_replaces_the_earlier_frames(self, cli, tmp_path):
        import json

        out = tmp_path / "out"
        assert cli("align", *_sweep(tmp_path / "a", ["a0", "a1", "a2"]), "-o", out)[0] == 0
        (out / "notes.txt").write_text("mine")
        assert cli("align", *_sweep(tmp_path / "b", ["b0", "b1"]), "-o", out, "--force")[0] == 0
        assert sorted(p.name for p in out.iterdir()) == ["alignment.json", "b0.png", "b1.png", "notes.txt"]
        assert [Path(r["frame"]).name for r in json.loads((out / "alignment.json").read_text())["frames"]] == ["b0.png", "b1.png"]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "out"]  # no temporary folder left

    def test_a_frame_name_already_there_is_refused(self, cli, tmp_path):
        out = tmp_path / "out"
        out.mkdir()
        (out / "f1.png").write_bytes(b"someone's picture")
        assert_one_line_error(cli("align", *_sweep(tmp_path / "a", ["f0", "f1"]), "-o", out), 1, "f1.png", "--force")
        assert (out / "f1.png").read_bytes() == b"someone's picture" and len(list(out.iterdir())) == 1


# --- calibrate options ---------------------------------------------------------------------------


class TestCalibrateOptions:
    @pytest.mark.parametrize("opt, needles", [
        (("--subpix-window", "100000"), ["--subpix-window 100000", "1 to 60"]),
        (("--subpix-window", "0"), ["--subpix-window 0"]),
        (("--square", "1e308"), ["--square", "at most 10"]),
        (("--min-views", "0"), ["--min-views 0", "at least 3"]),
        (("--min-views", "-1"), ["--min-views -1", "at least 3"]),
        (("--dirs", "phone,phone"), ["--dirs 'phone,phone'", "one folder"]),
        (("--dirs", "phone,./phone"), ["--dirs", "one folder"]),
    ])
    def test_refused_up_front(self, cli, boards, tmp_path, opt, needles):
        args = {"--square": "0.025", opt[0]: opt[1]}
        assert_one_line_error(cli("calibrate", boards, "--board", "9x6", *[x for kv in args.items() for x in kv],
                                  "-o", tmp_path / "c.json"), 1, *needles)
        assert list(tmp_path.iterdir()) == []

    def test_subpix_window_larger_than_the_image_allows(self, cli, tmp_path):
        small = tmp_path / "b"
        assert cli("sim", "checkerboard", small, "--views", "1", "--phone-size", "100x80")[0] == 0
        assert_one_line_error(cli("calibrate", small, "--board", "9x6", "--square", "0.025", "--subpix-window", "50",
                                  "--min-views", "3", "-o", tmp_path / "c.json"), 1, "--subpix-window 50", "100x80", "at most 37")
        assert not (tmp_path / "c.json").exists()


# --- record counts -------------------------------------------------------------------------------


@pytest.mark.parametrize("opt, needle", [(("--steps", "100000000"), "at most 1000"), (("--steps", "1001"), "at most 1000"),
                                         (("--stacks", "100000000000000000000"), "at most 10000"),
                                         (("--stacks", "10001"), "at most 10000")])
def test_record_counts_are_bounded(cli, tmp_path, opt, needle):
    """--steps 100000000 hung in "phone starting"; --stacks 1e20 was an OverflowError traceback."""
    assert_one_line_error(cli("record", "-o", tmp_path / "s", *opt), 1, f"{opt[0]} {opt[1]}", needle)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("kw, needle", [({"steps": 100000000}, "at most 1000"), ({"ramps": 10001}, "at most 10000"),
                                        ({"steps": 1}, "at least 2 frames"), ({"near_m": 1e-308}, "--near")])
def test_record_from_specs_bounds_its_counts(tmp_path, kw, needle):
    """The limits were in the CLI only: code calling record_from_specs could ask for 10^8 frames a ramp."""
    from dfdcap.capture.recorder import record_from_specs
    from dfdcap.errors import DfdcapError

    with pytest.raises(DfdcapError, match=needle):
        record_from_specs("sim", "sim", tmp_path / "s", **kw)
    assert not (tmp_path / "s").exists()
