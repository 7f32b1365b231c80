"""Ray casting: exact depth, distortion honoured, motion over time."""

import math

import numpy as np
import pytest

from dfdcap.cameras import CameraModel, make_transform
from dfdcap.errors import DfdcapError
from dfdcap.sim.scene import Primitive, Scene, constant_texture, fast_pixel_rays, make_scene, wall_scene


def _cam(dist=None):
    return CameraModel.from_fov(160, 120, 130.0, dist=dist)


class TestRender:
    def test_wall_depth_is_exact_z(self):
        cam = _cam((0.1, -0.2, 0.001, 0.0, 0.0))
        rgb, depth = wall_scene(np.random.default_rng(0), 1.25).render(cam, np.eye(4))
        assert rgb.shape == (120, 160, 3) and depth.shape == (120, 160)
        np.testing.assert_allclose(depth, 1.25, rtol=1e-5)

    @pytest.mark.parametrize("dist", [None, (0.15, -0.25, 0.002, -0.001, 0.05)])
    def test_sphere_lands_where_the_camera_projects_it(self, dist):
        cam = _cam(dist)
        c = np.array([0.21, -0.12, 0.6])  # near the image corner, where distortion is strongest
        s = Scene([Primitive("sphere", c, (0.02,), constant_texture((1, 0, 0)))])
        rgb, depth = s.render(cam, np.eye(4))
        (u, v), _ = cam.project(c)
        hit = depth > 0
        vv, uu = np.nonzero(hit)
        assert abs(uu.mean() - u) < 0.5 and abs(vv.mean() - v) < 0.5
        assert depth[int(round(v)), int(round(u))] == pytest.approx(0.6 - 0.02, abs=2e-3)
        assert np.all(rgb[hit][:, 0] == 1.0)

    def test_box_and_plane_occlusion(self):
        box = Primitive("box", np.array([0, 0, 0.5]), (0.05, 0.05, 0.05), constant_texture((0, 1, 0)))
        wall = Primitive("plane", np.array([0, 0, 1.0]), (math.inf, math.inf), constant_texture((0, 0, 1)))
        rgb, depth = Scene([wall, box]).render(_cam(), np.eye(4))
        assert depth[60, 80] == pytest.approx(0.45, abs=1e-4) and rgb[60, 80, 1] == 1.0
        assert depth[5, 5] == pytest.approx(1.0, abs=1e-5) and rgb[5, 5, 2] == 1.0

    def test_pose_and_object_motion(self):
        sph = Primitive("sphere", np.array([0, 0, 1.0]), (0.05,), constant_texture((1, 1, 1)), velocity=np.array([0.1, 0, 0]))
        s = Scene([sph])
        cam = _cam()
        _, d0 = s.render(cam, np.eye(4), t_s=0.0)
        _, d1 = s.render(cam, np.eye(4), t_s=1.0)  # moved 0.1 m to the right
        u0 = np.nonzero(d0 > 0)[1].mean()
        u1 = np.nonzero(d1 > 0)[1].mean()
        assert u1 - u0 == pytest.approx(0.1 * 130.0, abs=0.5)
        # moving the camera instead by the same amount to the left gives the same picture
        _, d2 = s.render(cam, make_transform(np.zeros(3), [-0.1, 0, 0]), t_s=0.0)
        assert np.nonzero(d2 > 0)[1].mean() == pytest.approx(u1, abs=0.2)
        assert not s.is_static

    def test_presets_fill_their_range(self):
        cam = CameraModel.from_fov(320, 240, 262.5)
        for name, lo, hi in [("default", 0.45, 3.6), ("close", 0.07, 0.6)]:
            _, depth = make_scene(name, np.random.default_rng(1)).render(cam, np.eye(4))
            valid = depth[depth > 0]
            assert valid.size > 0.95 * depth.size
            assert np.percentile(valid, 2) >= lo and np.percentile(valid, 98) <= hi
        with pytest.raises(DfdcapError, match="unknown scene"):
            make_scene("nope", np.random.default_rng(0))


def test_fast_pixel_rays_match_opencv():
    cam = CameraModel.from_fov(1400, 1000, 1000.0, dist=(0.05, -0.1, 0.0005, -0.0003, 0.0))
    err = np.abs(fast_pixel_rays(cam) - cam.pixel_rays()).max() * cam.fx
    assert err < 1e-3  # px; measured 1.3e-4 (cubic interpolation of an 8 px grid)
