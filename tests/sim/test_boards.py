"""Board image pairs: OpenCV finds the corners in both images where the true poses put them."""

import json

import cv2
import numpy as np
import pytest

from dfdcap.cameras import CameraModel
from dfdcap.errors import DfdcapError
from dfdcap.sim.boards import BoardSpec, write_board_pairs
from dfdcap.sim.rig import RigConfig


def _project(cam: CameraModel, T: np.ndarray, obj: np.ndarray) -> np.ndarray:
    uv, _ = cam.project(obj @ np.asarray(T)[:3, :3].T + np.asarray(T)[:3, 3])
    return uv


def _checker_corners(path, board: BoardSpec) -> np.ndarray | None:
    gray = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    ok, c = cv2.findChessboardCorners(gray, (board.cols, board.rows), cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE)
    if not ok:
        return None
    c = cv2.cornerSubPix(gray, c, (5, 5), (-1, -1), (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_COUNT, 50, 1e-3))
    return c.reshape(-1, 2)


def _err(found: np.ndarray, uv: np.ndarray) -> float:
    """Max corner error, allowing OpenCV's reversed ordering of a checkerboard."""
    return float(min(np.abs(found - uv).max(), np.abs(found[::-1] - uv).max()))


@pytest.fixture(scope="module")
def checker_pairs(tmp_path_factory):
    out = tmp_path_factory.mktemp("boards")
    board = BoardSpec("checkerboard", 9, 6, 0.025)
    truth = write_board_pairs(out, 4, board, RigConfig(), phone_size=(640, 480), seed=3, n_corrupt=1)
    return out, board, truth


class TestCheckerboardPairs:
    def test_files_and_truth(self, checker_pairs):
        out, board, truth = checker_pairs
        on_disk = json.loads((out / "truth.json").read_text())
        assert on_disk["board"] == {"type": "checkerboard", "cols": 9, "rows": 6, "square_m": 0.025}
        assert [v["name"] for v in on_disk["views"]] == [f"view_{k:03d}" for k in range(4)]
        assert sum(v["corrupted"] for v in on_disk["views"]) == 1
        for v in on_disk["views"]:
            assert (out / "phone" / f"{v['name']}.png").is_file() and (out / "sensor" / f"{v['name']}.png").is_file()
        assert cv2.imread(str(out / "phone" / "view_000.png")).shape == (480, 640, 3)

    def test_corners_match_true_poses(self, checker_pairs):
        out, board, truth = checker_pairs
        obj = board.object_points()
        errs = []
        for cam_name in ("sensor", "phone"):
            cam = CameraModel.from_dict(truth[cam_name])
            for v in truth["views"]:
                found = _checker_corners(out / cam_name / f"{v['name']}.png", board)
                assert found is not None, (cam_name, v["name"])
                errs.append(_err(found, _project(cam, v[f"T_{cam_name}_from_board"], obj)))
        assert max(errs) < 0.5, errs

    def test_corrupted_view_is_inconsistent_with_the_rig(self, checker_pairs):
        out, board, truth = checker_pairs
        obj = board.object_points()
        phone = CameraModel.from_dict(truth["phone"])
        T_ps = np.asarray(truth["T_phone_from_sensor"])
        for v in truth["views"]:
            found = _checker_corners(out / "phone" / f"{v['name']}.png", board)
            via_rig = _project(phone, T_ps @ np.asarray(v["T_sensor_from_board"]), obj)
            if v["corrupted"]:
                assert _err(found, via_rig) > 5.0
                np.testing.assert_allclose(T_ps @ np.asarray(v["T_sensor_from_board"]), v["T_phone_from_board_rig"], atol=1e-9)
            else:
                assert _err(found, via_rig) < 0.5


def test_charuco_pairs(tmp_path):
    board = BoardSpec("charuco", 7, 5, 0.04)
    truth = write_board_pairs(tmp_path, 2, board, RigConfig(), phone_size=(800, 600), seed=5)
    assert truth["board"]["type"] == "charuco" and truth["board"]["marker_m"] == pytest.approx(0.03)
    obj = board.object_points()
    det = cv2.aruco.CharucoDetector(board.charuco_board())
    for cam_name in ("sensor", "phone"):
        cam = CameraModel.from_dict(truth[cam_name])
        for v in truth["views"]:
            gray = cv2.imread(str(tmp_path / cam_name / f"{v['name']}.png"), cv2.IMREAD_GRAYSCALE)
            corners, ids, _, _ = det.detectBoard(gray)
            assert ids is not None and len(ids) >= 0.8 * len(obj), (cam_name, v["name"])
            uv = _project(cam, v[f"T_{cam_name}_from_board"], obj)[ids.ravel()]
            assert np.abs(corners.reshape(-1, 2) - uv).max() < 0.5


def test_bad_arguments(tmp_path):
    with pytest.raises(DfdcapError, match="n_corrupt"):
        write_board_pairs(tmp_path, 2, BoardSpec(), n_corrupt=3)
    with pytest.raises(DfdcapError, match="board"):
        BoardSpec("circles")
    assert not (tmp_path / "truth.json").exists()
