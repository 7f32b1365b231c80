import cv2
import numpy as np
import pytest

from dfdcap.cameras import CameraModel, invert_transform, make_transform, rotation_angle_deg, transform_points
from dfdcap.errors import DfdcapError

K = np.array([[500.0, 0, 320], [0, 505.0, 240], [0, 0, 1]])
DIST = np.array([0.08, -0.15, 0.001, -0.0005, 0.05])


class TestProject:
    def test_matches_opencv(self):
        cam = CameraModel(K, DIST, (640, 480))
        rng = np.random.default_rng(0)
        pts = rng.uniform([-0.5, -0.4, 0.5], [0.5, 0.4, 3.0], (200, 3))
        uv, z = cam.project(pts)
        ref, _ = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), K, DIST)
        np.testing.assert_allclose(uv, ref.reshape(-1, 2), atol=1e-9)
        np.testing.assert_allclose(z, pts[:, 2])

    def test_behind_camera_is_nan(self):
        uv, _ = CameraModel(K).project(np.array([[0.0, 0.0, -1.0]]))
        assert np.isnan(uv).all()

    def test_unproject_round_trip(self):
        cam = CameraModel(K, DIST, (64, 48)).scaled(1.0)
        depth = np.full((48, 64), 1.5, np.float32)
        depth[0, 0] = 0
        pts = cam.unproject_depth(depth)
        assert np.isnan(pts[0, 0]).all()
        uv, z = cam.project(pts.reshape(-1, 3)[1:])
        u, v = np.meshgrid(np.arange(64), np.arange(48))
        np.testing.assert_allclose(uv, np.stack([u.ravel(), v.ravel()], -1)[1:], atol=1e-4)

    def test_bad_shapes(self):
        with pytest.raises(DfdcapError):
            CameraModel(np.eye(2))
        with pytest.raises(DfdcapError):
            CameraModel(K, np.zeros(3))
        with pytest.raises(DfdcapError):
            CameraModel(K, size=(640, 480)).unproject_depth(np.zeros((10, 10), np.float32))

    def test_scaled_keeps_pixel_centres(self):
        cam = CameraModel(K, size=(640, 480)).scaled(0.5)
        assert cam.size == (320, 240)
        assert cam.fx == 250 and cam.cx == pytest.approx((320 + 0.5) * 0.5 - 0.5)

    @pytest.mark.parametrize("dist", [DIST, [-0.3, 0.12, 0.001, 0.001, -0.02], [0.05, -0.1, 0, 0, 0, 0.01, -0.02, 0.03]])
    @pytest.mark.parametrize("size", [(640, 480), (1008, 756), (1001, 333)])
    def test_interpolated_rays_match_the_exact_ones(self, dist, size):
        """The grid-interpolated rays (cached per camera by build-dataset) stay within 1e-3 px of the
        iterative undistortion of every pixel, up to the last row and column (odd sizes too)."""
        w, h = size
        cam = CameraModel(np.array([[0.8 * w, 1.5, w / 2 + 3.2], [0, 0.81 * w, h / 2 - 2.7], [0, 0, 1]]), np.array(dist), size)
        fast, exact = cam.pixel_rays_interpolated(), cam.pixel_rays()
        assert fast.shape == exact.shape == (h, w, 2)
        assert np.abs(fast - exact).max() * cam.fx < 1e-3  # measured 5e-5 .. 2e-4 px

    def test_interpolated_rays_of_small_or_undistorted_cameras_are_the_exact_ones(self):
        for cam in (CameraModel(K, DIST, (64, 48)), CameraModel(K, size=(640, 480))):
            np.testing.assert_array_equal(cam.pixel_rays_interpolated(), cam.pixel_rays())

    def test_dict_round_trip(self):
        cam = CameraModel(K, DIST, (640, 480))
        back = CameraModel.from_dict(cam.to_dict())
        np.testing.assert_array_equal(back.K, cam.K)
        np.testing.assert_array_equal(back.dist, cam.dist)
        assert back.size == cam.size


def test_transforms():
    T = make_transform(np.array([0.01, -0.02, 0.03]), [0.04, 0.0, 0.001])
    p = np.random.default_rng(1).normal(size=(10, 3))
    np.testing.assert_allclose(transform_points(invert_transform(T), transform_points(T, p)), p, atol=1e-12)
    assert rotation_angle_deg(T[:3, :3]) == pytest.approx(np.degrees(np.linalg.norm([0.01, -0.02, 0.03])))
