"""An EXIF Orientation tag must not turn an image: calibration, depth reprojection and every slice of a
stack work in the sensor's stored pixel grid. OpenCV's IMREAD_COLOR applies the tag, so a phone frame
tagged 180 degrees was stored rotated against its depth (exit 0), and a tagged board view calibrated
with a shifted principal point."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from dfdcap.fileio import read_image


def _orientation_app1(value: int) -> bytes:
    """An APP1 segment whose IFD0 holds only Orientation (0x0112, SHORT)."""
    tiff = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 1) + struct.pack("<HHIHH", 0x0112, 3, 1, value, 0) + struct.pack("<I", 0)
    body = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body


def _tagged_jpeg(path, rgb: np.ndarray, orientation: int) -> None:
    data = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 100])[1].tobytes()
    path.write_bytes(data[:2] + _orientation_app1(orientation) + data[2:])


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_read_image_ignores_exif_orientation(tmp_path, orientation):
    rgb = np.zeros((30, 40, 3), np.uint8)
    rgb[:10, :20] = (255, 0, 0)  # top-left block
    _tagged_jpeg(tmp_path / "a.jpg", rgb, 1)
    _tagged_jpeg(tmp_path / "b.jpg", rgb, orientation)
    turned = cv2.imread(str(tmp_path / "b.jpg"))  # OpenCV's default applies the tag
    assert turned.shape != (30, 40, 3) or not np.array_equal(turned, cv2.imread(str(tmp_path / "a.jpg")))
    a, b = read_image(tmp_path / "a.jpg"), read_image(tmp_path / "b.jpg")
    assert b.shape == (30, 40, 3) and np.array_equal(a, b)


def test_board_detection_ignores_exif_orientation(tmp_path):
    """A real board view (OpenCV's stereo set) tagged 180 degrees: the same corners as untagged."""
    from pathlib import Path

    from dfdcap.calib.boards import Detection, detect_file, parse_board

    src = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "opencv_stereo_chessboard" / "left01.jpg"
    data = src.read_bytes()
    (tmp_path / "tagged.jpg").write_bytes(data[:2] + _orientation_app1(3) + data[2:])
    board = parse_board("9x6", 0.025)
    plain, tagged = detect_file(src, "a", board), detect_file(tmp_path / "tagged.jpg", "b", board)
    assert isinstance(plain, Detection) and isinstance(tagged, Detection)
    assert tagged.size == plain.size
    np.testing.assert_array_equal(tagged.ids, plain.ids)
    np.testing.assert_allclose(tagged.image_points, plain.image_points, atol=1e-6)
