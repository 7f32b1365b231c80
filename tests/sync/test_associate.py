"""Association: TUM associate.py compatibility (byte for byte), the fast greedy vs the plain one, bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dfdcap.errors import SyncError
from dfdcap.sync.associate import (
    greedy_associate,
    greedy_associate_reference,
    nearest_associate,
    one_to_one_associate,
)
from dfdcap.sync.io import associate_files, parse_timestamp_text

TUM = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "tum_fr1_xyz"


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "dfdcap.cli", "associate", *map(str, args)], capture_output=True, cwd=cwd)


class TestTum:
    def test_cli_output_is_byte_identical_to_associate_py(self):
        r = _cli(TUM / "rgb.txt", TUM / "depth.txt")
        assert r.returncode == 0, r.stderr.decode()
        assert r.stdout == (TUM / "associate_reference.txt").read_bytes()

    def test_output_file_and_counts(self, tmp_path):
        out = tmp_path / "assoc.txt"
        r = _cli(TUM / "rgb.txt", TUM / "depth.txt", "-o", out)
        assert r.returncode == 0, r.stderr.decode()
        assert out.read_bytes() == (TUM / "associate_reference.txt").read_bytes()
        _, n, n1, n2 = associate_files(TUM / "rgb.txt", TUM / "depth.txt")
        assert (n, n1, n2) == (792, 798, 798)

    def test_output_to_dev_stdout_when_stdout_is_a_pipe(self):
        """`-o /dev/stdout` into a pipe: /dev/stdout links to /proc/self/fd/1, which reads 'pipe:[N]'; resolving
        that link named a file that does not exist (error: /proc/N/fd/pipe:[M]: No such file or directory)."""
        r = _cli(TUM / "rgb.txt", TUM / "depth.txt", "-o", "/dev/stdout")
        assert r.returncode == 0, r.stderr.decode()
        assert r.stdout == (TUM / "associate_reference.txt").read_bytes()

    def test_windows_encodings(self, tmp_path):
        """TUM files saved by a Windows editor: a UTF-8 byte-order mark read its '# comment' line as data
        ("'\\ufeff#' is not a timestamp"); UTF-16 gets one line saying so."""
        bom = tmp_path / "rgb.txt"
        bom.write_bytes(b"\xef\xbb\xbf" + (TUM / "rgb.txt").read_bytes())
        assert associate_files(bom, TUM / "depth.txt")[:2] == associate_files(TUM / "rgb.txt", TUM / "depth.txt")[:2]
        wide = tmp_path / "depth.txt"
        wide.write_text((TUM / "depth.txt").read_text(), encoding="utf-16")
        r = _cli(TUM / "rgb.txt", wide)
        err = r.stderr.decode()
        assert r.returncode == 1 and "Traceback" not in err and "depth.txt: UTF-16 text; save it as UTF-8" in " ".join(err.split())

    def test_offset_matches_plain_algorithm(self):
        # with an offset, associate.py prints b - offset; compare with the plain algorithm's text
        text, n, _, _ = associate_files(TUM / "rgb.txt", TUM / "depth.txt", offset=0.013, max_difference=0.01)
        first = parse_timestamp_text((TUM / "rgb.txt").read_text(), "rgb")
        second = parse_timestamp_text((TUM / "depth.txt").read_text(), "depth")
        ref = greedy_associate_reference(first.t.tolist(), second.t.tolist(), 0.01, 0.013)
        lines = ["%f %s %f %s" % (first.t[i], first.data[i], second.t[j] - 0.013, second.data[j]) for i, j in ref]
        assert n == len(ref) > 0
        assert text == "".join(line + "\n" for line in lines)


class TestGreedyEqualsPlain:
    def test_random_inputs_with_ties_and_offsets(self):
        rng = np.random.default_rng(1)
        for trial in range(400):
            n, m = rng.integers(0, 50, 2)
            digits = int(rng.integers(1, 4))  # coarse rounding makes many equal gaps
            a = np.unique(np.round(rng.uniform(0, 3, n), digits))
            b = np.unique(np.round(rng.uniform(0, 3, m), digits))
            md = float(rng.choice([0.005, 0.02, 0.1, 0.5, 5.0]))
            off = float(rng.choice([0.0, 0.1, -0.05, 0.03]))
            i, j = greedy_associate(a, b, md, off)
            assert list(zip(i.tolist(), j.tolist())) == greedy_associate_reference(a.tolist(), b.tolist(), md, off), trial

    def test_integer_nanoseconds(self):
        rng = np.random.default_rng(2)
        for _ in range(100):
            a = np.unique(rng.integers(0, 10_000, 40))
            b = np.unique(rng.integers(0, 10_000, 40))
            i, j = greedy_associate(a, b, 300)
            assert list(zip(i.tolist(), j.tolist())) == greedy_associate_reference(a.tolist(), b.tolist(), 300)

    def test_adversarial_chain_takes_the_sequential_path(self):
        # a0 b0 a1 b1 ... with gaps growing along the chain: one locally smallest edge per round
        d = 0.1 + 1e-4 * np.arange(400)
        x = np.concatenate([[0.0], np.cumsum(d)])
        a, b = x[0::2], x[1::2]
        i, j = greedy_associate(a, b, 0.2)
        ref = greedy_associate_reference(a.tolist(), b.tolist(), 0.2)
        assert list(zip(i.tolist(), j.tolist())) == ref
        assert len(ref) == 200 and ref[0] == (0, 0)

    def test_one_to_one_and_many_to_one(self):
        t1 = np.array([0, 10, 11, 40, 100])
        t2 = np.array([9, 30, 45])
        j, gap = nearest_associate(t1, t2, 10)
        assert j.tolist() == [0, 0, 0, 2, -1] and gap.tolist() == [9, -1, -2, 5, 0]
        j, gap = one_to_one_associate(t1, t2, 10)  # 10 takes 9 (gap 1) before 0 and 11 can
        assert j.tolist() == [-1, 0, -1, 2, -1] and gap.tolist() == [0, -1, 0, 5, 0]
        j, _ = one_to_one_associate(np.array([0]), np.array([10]), 10)  # max gap is inclusive
        assert j.tolist() == [0]


class TestBadInput:
    def test_message_names_the_line(self):
        with pytest.raises(SyncError, match=r"f\.txt:3: .*not a timestamp"):
            parse_timestamp_text("# c\n1.0 a\nx.png y\n", "f.txt")

    def test_dict_semantics(self):
        f = parse_timestamp_text("3 c\n1.0 a\n2\n1.00 b b2\n-0.0 z\n0.0 y\nnan n\n# c\n", "f.txt")
        assert f.t.tolist() == [-0.0, 1.0, 3.0] and np.signbit(f.t[0])  # first key kept (as a dict does)
        assert f.data == ["y", "b b2", "c"]  # the last line's data wins
        assert f.lines.tolist() == [6, 4, 1]

    def test_comment_only_file_is_empty(self):
        assert parse_timestamp_text("# only a comment\n\n", "e.txt").t.size == 0

    def test_cli_writes_nothing_on_error(self, tmp_path):
        bad = tmp_path / "bad.txt"
        bad.write_text("1.0 a\nx.png b\n")
        out = tmp_path / "out.txt"
        r = _cli(TUM / "rgb.txt", bad, "-o", out)
        assert r.returncode == 1
        assert b"bad.txt:2:" in r.stderr and b"\n" == r.stderr[-1:] and r.stderr.count(b"\n") == 1
        assert not out.exists() and not list(tmp_path.glob(".out.txt*"))
        r = _cli(TUM / "rgb.txt", tmp_path / "missing.txt")
        assert r.returncode == 1 and b"file not found" in r.stderr and r.stdout == b""
