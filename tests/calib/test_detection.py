"""Board corner detection: the downscaled path, canonical corner order, board specs, outlier rule."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dfdcap.calib.boards import Board, canonical_checkerboard_order, find_checkerboard, parse_board
from dfdcap.calib.intrinsics import outlier_views
from dfdcap.calib.stereo import views_to_flip
from dfdcap.errors import CalibrationError
from tests.calib.conftest import DATA


@pytest.fixture(scope="module")
def left01():
    img = cv2.imread(str(DATA / "left01.jpg"), cv2.IMREAD_GRAYSCALE)
    if img is None:
        pytest.skip("real data missing")
    return img


def test_downscaled_detection_matches_full_resolution(left01):
    """A 3x upscaled 1920x1440 image searched on a 1000 px copy gives the full-resolution corners x3,
    to well within the corners' own noise (0.18 px RMS reprojection error on this set)."""
    ref = find_checkerboard(left01, 9, 6, max_detect_px=2000)
    big = cv2.resize(left01, (1920, 1440), interpolation=cv2.INTER_CUBIC)
    pts = find_checkerboard(big, 9, 6, max_detect_px=1000)
    expected = (ref + 0.5) * 3 - 0.5
    err = np.linalg.norm(pts - expected, axis=1) / 3  # in pixels of the original image
    assert err.max() < 0.3 and np.sqrt((err ** 2).mean()) < 0.12


def test_canonical_order_undoes_flips_and_mirrors(left01):
    pts = find_checkerboard(left01, 9, 6)
    g = pts.reshape(6, 9, 2)
    for variant in (g[::-1, ::-1], g[:, ::-1], g[::-1, :]):  # turned 180 deg, mirrored along rows / columns
        out = canonical_checkerboard_order(left01, variant.reshape(-1, 2), 9, 6)
        np.testing.assert_array_equal(out, pts)
    # the outer square at corner 0 is dark: the quad between corners 0, 1, 9, 10 is darker than its neighbour
    q0 = pts[[0, 1, 9, 10]].mean(0).round().astype(int)
    q1 = pts[[1, 2, 10, 11]].mean(0).round().astype(int)
    assert left01[q0[1], q0[0]] < left01[q1[1], q1[0]]


def test_boardless_image_gives_none():
    rng = np.random.default_rng(0)
    noise = (rng.random((480, 640)) * 255).astype(np.uint8)
    assert find_checkerboard(noise, 9, 6) is None


def test_parse_board():
    b = parse_board("9x6", 0.025)
    assert (b.kind, b.cols, b.rows, b.square_m, b.n_corners) == ("checkerboard", 9, 6, 0.025, 54)
    assert b.object_points()[10].tolist() == pytest.approx([0.025, 0.025, 0.0])
    c = parse_board(None, None, "7x5,0.04,0.03,DICT_4X4_50")
    assert (c.kind, c.inner_cols, c.inner_rows, c.marker_m, c.dictionary) == ("charuco", 6, 4, 0.03, "DICT_4X4_50")
    assert c.to_dict()["cols"] == 6 and Board.from_dict(c.to_dict()) == c
    for bad in (("9by6", 0.02, None), ("9x6", None, None), (None, None, "7x5,0.04,0.05"), (None, None, "7x5,0.04,0.03,DICT_NOPE")):
        with pytest.raises(CalibrationError):
            parse_board(*bad)


def test_outlier_rule_by_hand():
    e = np.array([0.20, 0.21, 0.19, 0.22, 0.20, 0.61, 0.18])
    # median 0.20, MAD 0.01 -> threshold max(0.60, 0.20 + 3 * 1.4826 * 0.01 = 0.2445) = 0.60
    assert outlier_views(e).tolist() == [False] * 5 + [True, False]
    assert not outlier_views(np.array([0.2, 0.2, 5.0])).any()  # fewer than 4 views: never
    two = np.stack([e, np.roll(e, 1)], axis=1)  # an outlier in either camera flags the view
    assert outlier_views(two).tolist() == [False] * 5 + [True, True]


def test_flip_detection():
    """A pair whose sensor pose is turned 180 deg about the board normal is found."""
    rng = np.random.default_rng(1)
    R_ps, _ = cv2.Rodrigues(np.array([[0.01], [0.2], [-0.02]]))
    rp, rs = [], []
    for i in range(6):
        Rs, _ = cv2.Rodrigues(rng.normal(0, 0.3, (3, 1)))
        if i == 4:  # both cameras numbered the board from the other end: consistent, no flip
            Rs = Rs @ np.diag([-1.0, -1.0, 1.0])
        Rp = R_ps @ Rs
        rp.append(cv2.Rodrigues(Rp)[0].ravel())
        rs.append(cv2.Rodrigues(Rs)[0].ravel())
    rs[2] = cv2.Rodrigues(cv2.Rodrigues(rs[2])[0] @ np.diag([-1.0, -1.0, 1.0]))[0].ravel()
    assert views_to_flip(np.array(rp), np.array(rs)).tolist() == [False, False, True, False, False, False]


def test_12_bit_views_in_16_bit_files_give_the_8_bit_corners(tmp_path):
    """OpenCV's real stereo views stored as 12-bit data in 16-bit PNGs (a RealSense's Y16 infrared or a raw
    conversion stores such): OpenCV's 8-bit read kept 16 grey levels and the corners moved (stereo RMS
    0.197 -> 0.201 px on this set). Read by the bits they use, they give the 8-bit views' corners exactly."""
    from dfdcap.calib.boards import detect_file

    if not DATA.is_dir():
        pytest.skip(f"{DATA} missing")
    board = Board("checkerboard", 9, 6, 1.0)
    for name in ("left01", "right07"):
        wide = tmp_path / f"{name}.png"
        cv2.imwrite(str(wide), cv2.imread(str(DATA / f"{name}.jpg"), cv2.IMREAD_GRAYSCALE).astype(np.uint16) * 16)
        a, b = detect_file(DATA / f"{name}.jpg", name, board), detect_file(wide, name, board)
        assert a.size == b.size == (640, 480) and np.array_equal(a.image_points, b.image_points)
