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

    def test_an_empty_existing_folder_is_used(self, cli, tmp_path):
        out = tmp_path / "b"
        out.mkdir()
        assert cli("sim", "checkerboard", out, "--views", "1", *SMALL)[0] == 0
        assert (out / "truth.json").is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["b"]

    @pytest.mark.parametrize("opt, needle", [
        (("--square", "1e308"), "--square"),
        (("--phone-dist", "1e308,0,0,0,0"), "board"),
        (("--focus-diopters", "1e308"), "--focus-diopters"),
        (("--focus-diopters", "0.5,11"), "to 10"),
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
        assert_one_line_error(cli("sim", "checkerboard", out, "--views", "1", "--force", "--phone-dist", "1e308,0,0,0,0",
                                  *SMALL), 1)
        assert snapshot(tmp_path) == before

    def test_ctrl_c_leaves_no_folder(self, tmp_path):
        proc = dfdcap_process("sim", "checkerboard", str(tmp_path / "b"), "--views", "200")
        wait_for(lambda: any((d / "phone").glob("view_*") for d in tmp_path.glob(".b.*")), proc, "a first view")
        proc.send_signal(signal.SIGINT)
        out, err = finish(proc)
        assert proc.returncode == 130 and "Traceback" not in out + err, out + err
        assert list(tmp_path.iterdir()) == []

