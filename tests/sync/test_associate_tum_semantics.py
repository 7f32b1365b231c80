"""`dfdcap associate` against associate.py's algorithm (written out here from its documented
semantics) byte for byte, on the inputs where the two could part: bare timestamps, comment-only
files, unsorted and repeated stamps, ties, offsets; and non-finite options are errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dfdcap.sync.io import associate_files

TUM = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "tum_fr1_xyz"


def tum_read_file_list(text: str) -> dict:
    """associate.py's read_file_list: ',' and tab are spaces, '#' lines skipped, len(l) > 1 kept, a dict."""
    lines = text.replace(",", " ").replace("\t", " ").split("\n")
    rows = [[v.strip() for v in line.split(" ") if v.strip() != ""] for line in lines if len(line) > 0 and line[0] != "#"]
    return dict([(float(r[0]), r[1:]) for r in rows if len(r) > 1])


def tum_associate(first: dict, second: dict, offset: float, max_difference: float) -> list:
    """associate.py's associate: every pair under max_difference, sorted, taken greedily, sorted."""
    first_keys, second_keys = list(first), list(second)
    potential = sorted((abs(a - (b + offset)), a, b) for a in first_keys for b in second_keys if abs(a - (b + offset)) < max_difference)
    matches = []
    for _, a, b in potential:
        if a in first_keys and b in second_keys:
            first_keys.remove(a)
            second_keys.remove(b)
            matches.append((a, b))
    return sorted(matches)


def tum_output(first_text: str, second_text: str, offset: float = 0.0, max_difference: float = 0.02, first_only: bool = False) -> str:
    first, second = tum_read_file_list(first_text), tum_read_file_list(second_text)
    out = []
    for a, b in tum_associate(first, second, offset, max_difference):
        if first_only:
            out.append("%f %s\n" % (a, " ".join(first[a])))
        else:
            out.append("%f %s %f %s\n" % (a, " ".join(first[a]), b - offset, " ".join(second[b])))
    return "".join(out)


def _ours(tmp_path, first: str, second: str, **kw) -> str:
    (tmp_path / "a.txt").write_text(first)
    (tmp_path / "b.txt").write_text(second)
    return associate_files(tmp_path / "a.txt", tmp_path / "b.txt", **kw)[0]


CASES = {
    "stamp-only lines": ("# rgb\n1.00 a.png\n1.05\n1.10 c.png\n", "1.01 x.png\n1.06 y.png\n1.09\n"),
    "comment-only file": ("# nothing\n# here\n", "1.0 x.png\n"),
    "both comment-only": ("#\n", "# \n\n"),
    "unsorted": ("3.0 c\n1.0 a\n2.0 b\n", "2.01 y\n0.99 x\n3.02 z\n"),
    "duplicates: later data wins": ("1.0 a\n2.0 b\n1.0 a2\n1.000 a3\n", "1.005 x\n2.0 y\n2.0 y2\n"),
    "ties in gap": ("1.0 a\n1.2 b\n", "1.1 x\n"),
    "commas, tabs, CRLF, blanks": ("1.0,a.png\r\n\r\n1.5\tb.png   extra\r\n", "1.01 x\n  \n1.49,y,z\n"),
    "signed zero and exponents": ("-0.0 a\n0.0 b\n1e-3 c\n", "0.0 x\n0.001 y\n"),
    "non-finite stamps": ("nan a\n1.0 b\ninf c\n", "1.0 x\n-inf y\n"),
    "empty second": ("1.0 a\n", ""),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("offset, max_difference, first_only", [(0.0, 0.02, False), (0.05, 0.1, False), (-0.01, 0.5, True)])
def test_byte_identical_on_crafted_inputs(tmp_path, name, offset, max_difference, first_only):
    first, second = CASES[name]
    want = tum_output(first, second, offset, max_difference, first_only)
    assert _ours(tmp_path, first, second, offset=offset, max_difference=max_difference, first_only=first_only) == want


def test_byte_identical_on_random_messy_files(tmp_path):
    rng = np.random.default_rng(4)
    for _ in range(60):
        texts = []
        for _side in range(2):
            stamps = np.round(rng.uniform(0, 2, int(rng.integers(0, 25))), int(rng.integers(1, 4)))
            lines = []
            for k, t in enumerate(stamps):  # unsorted, repeated (coarse rounding), some bare
                lines.append(f"{t}" if rng.random() < 0.1 else f"{t} f{k}.png")
                if rng.random() < 0.1:
                    lines.append("# comment")
            texts.append("\n".join(lines) + "\n")
        off, md = float(rng.choice([0.0, 0.02, -0.03])), float(rng.choice([0.01, 0.05, 0.3]))
        assert _ours(tmp_path, *texts, offset=off, max_difference=md) == tum_output(*texts, off, md)


def test_byte_identical_on_tum_fr1_xyz(tmp_path):
    rgb, depth = (TUM / "rgb.txt").read_text(), (TUM / "depth.txt").read_text()
    want = tum_output(rgb, depth)
    assert want.encode() == (TUM / "associate_reference.txt").read_bytes()  # the reference is right
    assert associate_files(TUM / "rgb.txt", TUM / "depth.txt")[0] == want
    # the same list shuffled, with a repeated line and a bare stamp: the same output
    lines = rgb.splitlines()
    body = [x for x in lines if not x.startswith("#")]
    shuffled = np.random.default_rng(0).permutation(body).tolist()
    messy = "\n".join(lines[:3] + [body[5]] + shuffled + [body[7].split()[0]]) + "\n"
    assert _ours(tmp_path, messy, depth) == tum_output(messy, depth) == want


@pytest.mark.parametrize("opt, value", [("--offset", "nan"), ("--offset", "inf"), ("--max-difference", "nan"), ("--max-difference", "inf")])
def test_non_finite_options_are_one_line_errors(cli, opt, value):
    code, out, err = cli("associate", TUM / "rgb.txt", TUM / "depth.txt", opt, value)
    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1 and opt in err, (code, err)
