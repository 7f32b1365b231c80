"""Atomic outputs (dfdcap.fileio): a failed write leaves nothing, and its error names the user's path,
never the temporary one (or none: a full disk raises ENOSPC from write() with no file name)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from dfdcap.fileio import atomic_folder, atomic_path, atomic_write_text


def test_full_disk_names_the_output_file(tmp_path):
    target = tmp_path / "sync.json"
    with pytest.raises(OSError) as exc:
        with atomic_path(target) as tmp:
            tmp.write_text("{")
            raise OSError(errno.ENOSPC, "No space left on device")  # as write() raises it: no file name
    assert exc.value.filename == str(target)
    assert list(tmp_path.iterdir()) == []


def test_error_about_the_temporary_folder_names_the_output(tmp_path):
    target = tmp_path / "boards"
    with pytest.raises(OSError) as exc:
        with atomic_folder(target) as tmp:
            (tmp / "phone").mkdir()
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp / "phone" / "view_003.jpg"))
    assert Path(exc.value.filename) == target / "phone" / "view_003.jpg"
    assert list(tmp_path.iterdir()) == []


def test_long_output_name_is_written(tmp_path):
    """A 250-character name is a valid file name; the temporary name built from it (".NAME.xxxxxxxx.tmp")
    was not: "File name too long" about a file the user never named."""
    target = tmp_path / ("a" * 246 + ".txt")
    atomic_write_text(target, "x")
    assert target.read_text() == "x" and len(list(tmp_path.iterdir())) == 1
    with atomic_folder(tmp_path / ("b" * 250)) as tmp:
        (tmp / "f").write_text("y")
    assert (tmp_path / ("b" * 250) / "f").read_text() == "y"


def test_json_from_windows_editors(tmp_path):
    """session.json or calibration.json saved with a byte-order mark was "not valid JSON (Unexpected UTF-8
    BOM)", while the index CSVs take one; UTF-16 is named as such."""
    from dfdcap.errors import DfdcapError
    from dfdcap.fileio import read_json

    (tmp_path / "a.json").write_bytes(b"\xef\xbb\xbf" + b'{"schema": 1}')
    assert read_json(tmp_path / "a.json") == {"schema": 1}
    (tmp_path / "b.json").write_text('{"schema": 1}', encoding="utf-16")
    with pytest.raises(DfdcapError, match="b.json: UTF-16 text; save it as UTF-8"):
        read_json(tmp_path / "b.json")


def test_cut_short_png_is_one_line(tmp_path, capfd):
    """libpng printed its own "libpng error: Read Error" line beside dfdcap's."""
    import cv2
    import numpy as np

    from dfdcap.errors import DfdcapError
    from dfdcap.fileio import read_image

    data = cv2.imencode(".png", np.arange(4800, dtype=np.uint16).reshape(60, 80))[1].tobytes()
    (tmp_path / "d.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DfdcapError, match="d.png: PNG is cut short"):
        read_image(tmp_path / "d.png", unchanged=True)
    assert "libpng" not in capfd.readouterr().err


def test_fifo_is_written_into_not_replaced(tmp_path):
    """`--json /dev/null` (run as root) replaced the system's /dev/null with a plain file: a device or a
    FIFO is written into, never renamed over. A FIFO stands in for the device here."""
    import os
    import stat
    import threading

    fifo = tmp_path / "out"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    atomic_write_text(fifo, "hello")
    reader.join(timeout=30)
    assert got == [b"hello"] and stat.S_ISFIFO(os.stat(fifo).st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_symlink_is_written_through(tmp_path):
    """A link to an output file was replaced by a plain file (the link lost, its target never written)."""
    (tmp_path / "data").mkdir()
    link = tmp_path / "out.json"
    link.symlink_to(tmp_path / "data" / "out.json")  # dangling until written
    atomic_write_text(link, "{}")
    assert link.is_symlink() and (tmp_path / "data" / "out.json").read_text() == "{}"


def _huge_png(path: Path, w: int = 50000, h: int = 30000) -> Path:
    """A PNG whose header claims w x h pixels (1.5 G: beyond OpenCV's limit) around a few bytes of data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))
    return path


SWEEP = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "focal_stack_pcb" / "sweep7"


@pytest.mark.parametrize("command", ["predict", "align", "calibrate"])
def test_image_beyond_opencvs_limit_is_one_line(tmp_path, cli, command):
    """OpenCV raises an assertion (CV_IO_MAX_IMAGE_PIXELS) for such a header: predict and align printed a
    traceback, and calibrate stopped with OpenCV's assertion text. Now one line naming the file
    (calibrate: the view is skipped as unreadable, with the reason)."""
    from tests.faults_helpers import assert_one_line_error

    huge = _huge_png(tmp_path / "huge.png")
    if command == "predict":
        res = cli("predict", "--classical", SWEEP / "pcb_001.jpg", huge, "--focus", "0.1,0.2", "-o", tmp_path / "d.png")
        assert_one_line_error(res, 1, str(huge), "larger than 1,073,741,824 pixels")
    elif command == "align":
        res = cli("align", SWEEP / "pcb_001.jpg", huge, "-o", tmp_path / "out")
        assert_one_line_error(res, 1, str(huge), "larger than 1,073,741,824 pixels")
        assert not (tmp_path / "out").exists()
    else:
        (tmp_path / "single").mkdir()
        huge.rename(tmp_path / "single" / "huge.png")
        res = cli("calibrate", "--single", tmp_path / "single", "--board", "9x6", "--square", "1", "-o", tmp_path / "c.json")
        assert_one_line_error(res, 1, "huge.png: unreadable (image larger than")


@pytest.mark.parametrize("dtype", ["float32", "int32"])
def test_32_bit_tiff_is_named_one_line(tmp_path, capfd, dtype):
    """A float or 32-bit integer TIFF printed OpenCV's "[ WARN ...] can not handle images with 32-bit samples"
    beside "cannot read image (not an image, or damaged)": two lines, the second wrong."""
    import cv2
    import numpy as np

    from dfdcap.errors import DfdcapError
    from dfdcap.fileio import read_image

    assert cv2.imwrite(str(tmp_path / "f.tiff"), (np.random.default_rng(0).random((20, 30, 3)) * 1000).astype(dtype))
    with pytest.raises(DfdcapError, match=f"f.tiff: {dtype} pixels; expected 8- or 16-bit images"):
        read_image(tmp_path / "f.tiff")
    assert "WARN" not in capfd.readouterr().err


@pytest.mark.parametrize("command", ["predict", "align"])
def test_images_that_would_fill_memory_are_refused_before_decoding(tmp_path, cli, command, monkeypatch):
    """Frames just under OpenCV's pixel limit, or very many frames, were decoded until the process was killed.
    Here: 600x400 headers against a machine said to have 2 MB, so 3 frames (2.2 MB decoded) must not fit."""
    import dfdcap.fileio as fileio
    from tests.faults_helpers import assert_one_line_error

    monkeypatch.setattr(fileio, "physical_memory_bytes", lambda: 2_000_000)
    frames = [_huge_png(tmp_path / f"f{i}.png", 600, 400) for i in range(3)]
    args = ["--classical", *frames, "--index", "-o", tmp_path / "d.png"] if command == "predict" else [*frames, "-o", tmp_path / "out"]
    res = cli(command, *args)
    assert_one_line_error(res, 1, str(frames[0]), "these 3 images need", "more than half of this machine's")
    assert not (tmp_path / "out").exists() and not (tmp_path / "d.png").exists()


SWEEP7 = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "focal_stack_pcb" / "sweep7"


def test_12_bit_sweeps_in_16_bit_files_read_as_their_8_bit_originals(tmp_path):
    """A real sweep stored as 12-bit data in 16-bit PNGs (values 0-4080, as raw converters write them)
    read as 8 bits: OpenCV's own read kept the top 8 of 16 bits, 16 grey levels, and `predict` gave
    another depth map. One shift for the whole sweep gives back the 8-bit frames exactly."""
    import cv2
    import numpy as np

    from dfdcap.fileio import read_images_one_size

    if not SWEEP7.is_dir():
        pytest.skip(f"{SWEEP7} missing")
    originals, wide = [], []
    for k, src in enumerate(sorted(SWEEP7.glob("pcb_*.jpg"))[:3]):
        rgb8 = cv2.resize(cv2.imread(str(src)), (256, 192), interpolation=cv2.INTER_AREA)
        originals.append(cv2.cvtColor(rgb8, cv2.COLOR_BGR2RGB))
        wide.append(tmp_path / f"f{k}.png")
        cv2.imwrite(str(wide[-1]), rgb8.astype(np.uint16) * 16)
    assert max(int(f.max()) for f in originals) > 127  # the brightest pixel sets the shift: 12 bits here
    frames = read_images_one_size(wide)
    assert all(f.dtype == np.uint8 and np.array_equal(f, o) for f, o in zip(frames, originals))
    full = tmp_path / "full.png"  # a full-range 16-bit file reads as before: its top 8 bits
    cv2.imwrite(str(full), cv2.cvtColor(originals[0], cv2.COLOR_RGB2BGR).astype(np.uint16) * 257)
    assert np.array_equal(read_images_one_size([full])[0], originals[0])


def test_repeats_and_content_key_find_every_copy_in_order():
    """The copy checks of predict, build-dataset and calibrate: each later item whose key an earlier one had."""
    from dfdcap.fileio import content_key, repeats

    items = [b"a", b"b", b"a", b"c", b"b", b"a"]
    keyed = ((content_key(x), k) for k, x in enumerate(items))
    assert list(repeats(keyed)) == [(0, 2), (1, 4), (0, 5)]
    assert content_key(b"ab") == content_key(b"a", b"b") != content_key(b"ba")
