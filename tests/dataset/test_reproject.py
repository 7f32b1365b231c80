"""Reprojection of sensor depth into another camera: synthetic box-on-plane truth and real Kinect frames."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from dfdcap.cameras import CameraModel, invert_transform, make_transform, transform_points
from dfdcap.dataset.reproject import project_points_f32, reproject_depth
from dfdcap.errors import DatasetError

from dataset_scene import render_depth

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "rgbd_frames"

SENSOR = CameraModel(np.array([[525.0, 0, 319.5], [0, 525, 239.5], [0, 0, 1]]), np.zeros(5), (640, 480))
PHONE = CameraModel(
    np.array([[1500.0, 0, 959.5], [0, 1500, 539.5], [0, 0, 1]]), np.array([0.08, -0.05, 0.001, -0.001, 0.01]), (1920, 1080)
)
T_PS = make_transform(np.array([0.01, -0.03, 0.02]), np.array([-0.06, 0.01, 0.005]))


def covisible(phone, T, depth_phone, sensor, depth_sensor):
    """(H, W) bool: phone pixels whose true surface point the sensor also sees (1 % depth agreement)."""
    P = phone.unproject_depth(depth_phone)
    uv, z = sensor.project(transform_points(invert_transform(T), P))
    ui, vi = np.round(uv[..., 0]), np.round(uv[..., 1])
    inside = (ui >= 0) & (ui < sensor.width) & (vi >= 0) & (vi < sensor.height)
    zs = np.zeros_like(z)
    zs[inside] = depth_sensor[vi[inside].astype(int), ui[inside].astype(int)]
    return inside & (np.abs(zs - z) < 0.01 * z)


def occlusion_leaks(rep, depth_true, surface_id):
    """Valid pixels whose depth is off by > 5 % where the truth is the box, farther than 1 px from its outline."""
    edge = cv2.morphologyEx(surface_id.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    dist = cv2.distanceTransform((~edge).astype(np.uint8), cv2.DIST_L2, 5)
    wrong = rep.mask & (np.abs(rep.depth_m - depth_true) > 0.05 * depth_true)
    return wrong & (dist > 1.0), wrong


class TestProjectF32:
    def test_matches_camera_model_project(self):
        rng = np.random.default_rng(0)
        P = rng.uniform([-0.5, -0.3, 0.5], [0.5, 0.3, 2.0], (1000, 3))
        uv, _ = PHONE.project(P)
        u, v = project_points_f32(PHONE, *(P.T.astype(np.float32)))
        assert np.max(np.abs(u - uv[:, 0])) < 0.01 and np.max(np.abs(v - uv[:, 1])) < 0.01


class TestReprojectSynthetic:
    def test_box_in_front_of_plane_to_shifted_distorted_camera(self):
        depth_s, _ = render_depth(SENSOR, np.eye(4))
        depth_p, sid = render_depth(PHONE, T_PS)
        rep = reproject_depth(depth_s, SENSOR, PHONE, T_PS)
        m = rep.mask
        rel = np.abs(rep.depth_m[m] - depth_p[m]) / depth_p[m]
        assert np.median(rel) < 0.001  # measured 0.012 %
        cov = covisible(PHONE, T_PS, depth_p, SENSOR, depth_s)
        assert (m & cov).sum() / cov.sum() >= 0.95  # measured 99.8 %
        leaks, wrong = occlusion_leaks(rep, depth_p, sid)
        assert leaks.sum() == 0
        assert wrong.sum() < 0.002 * m.sum()
        # the occlusion shadow (phone sees plane the sensor could not) stays invalid
        shadow = (~cov) & (sid == 0)
        assert shadow.sum() > 1000 and rep.mask[shadow].mean() < 0.02

    def test_sparse_source_dense_target_has_no_holes_on_a_plane(self):
        # a fronto-parallel plane seen 3x denser by the target: every pixel must be covered
        depth = np.full((480, 640), 1.2, np.float32)
        rep = reproject_depth(depth, SENSOR, PHONE.scaled(1.0), make_transform(np.zeros(3), [0.0, 0.0, 0.0]))
        inner = rep.mask[200:880, 300:1620]
        assert inner.all()
        assert np.allclose(rep.depth_m[200:880, 300:1620], 1.2, rtol=1e-5)

    @pytest.mark.parametrize("f_px, roll_deg", [(2250.0, 30.0), (3400.0, 45.0), (1500.0, 10.0)])
    def test_no_holes_at_any_scale_and_rotation(self, f_px, roll_deg):
        # a plane seen 4-6.5x denser and rolled: 3x3 footprints alone would leave holes, the
        # interpolated extra points of the large quads must close them
        depth = np.full((480, 640), 1.5, np.float32)
        phone = CameraModel(np.array([[f_px, 0, 959.5], [0, f_px, 539.5], [0, 0, 1]]), PHONE.dist, (1920, 1080))
        T = make_transform(np.radians([0.0, 0.0, roll_deg]), [0.01, 0.0, 0.0])
        rep = reproject_depth(depth, SENSOR, phone, T)
        # phone pixels whose ray hits the plane inside the sensor's view (1.5 source px margin)
        P = phone.unproject_depth(np.ones((1080, 1920), np.float32))
        P = transform_points(invert_transform(T), P * (1.5 - T[2, 3]) / P[..., 2:])  # z = 1.5 in the sensor frame
        uv, _ = SENSOR.project(P)
        seen = (uv[..., 0] > 1.5) & (uv[..., 0] < 637.5) & (uv[..., 1] > 1.5) & (uv[..., 1] < 477.5)
        assert seen.sum() > 100_000
        assert rep.mask[seen].all()
        assert np.allclose(rep.depth_m[seen], 1.5 - T[2, 3], rtol=1e-5)

    def test_identity_is_exact_and_smaller_target(self):
        depth_s, _ = render_depth(SENSOR, np.eye(4))
        rep = reproject_depth(depth_s, SENSOR, SENSOR, np.eye(4))
        m = rep.mask
        assert np.allclose(rep.depth_m[m], depth_s[m], rtol=1e-6, atol=0)  # z-buffer flag bit: 1 ulp
        assert m.mean() > 0.97  # only the 1-px band behind the box edge is marked uncertain
        small = reproject_depth(depth_s, SENSOR, SENSOR.scaled(0.25), np.eye(4))
        assert small.depth_m.shape == (120, 160) and small.mask.mean() > 0.9

    def test_bad_shapes_raise(self):
        with pytest.raises(DatasetError, match="sensor camera is 640x480"):
            reproject_depth(np.zeros((10, 10), np.float32), SENSOR, PHONE, np.eye(4))
        with pytest.raises(DatasetError, match="4x4"):
            reproject_depth(np.zeros((480, 640), np.float32), SENSOR, PHONE, np.eye(3))

    def test_invalid_and_behind_camera_source_pixels_are_ignored(self):
        depth = np.full((480, 640), 1.0, np.float32)
        depth[:, :320] = 0
        depth[:10] = np.nan
        rep = reproject_depth(depth, SENSOR, SENSOR, make_transform(np.zeros(3), [0, 0, -2.0]))
        assert not rep.mask.any()


def _load_rgbd():
    from scipy.spatial.transform import Rotation

    poses = []
    for line in (DATA / "pose.txt").read_text().splitlines():
        if line.strip():
            v = [float(x) for x in line.split()]
            T = np.eye(4)
            T[:3, :3] = Rotation.from_quat(v[3:]).as_matrix()
            T[:3, 3] = v[:3]
            poses.append(T)
    depth = [cv2.imread(str(DATA / "depth_png" / f"{i}.png"), cv2.IMREAD_UNCHANGED).astype(np.float32) / 1000 for i in range(1, 6)]
    cam = CameraModel(np.array([[518.0, 0, 325.5], [0, 519.0, 253.5], [0, 0, 1]]), np.zeros(5), (640, 480))
    return cam, poses, depth


class TestReprojectRealKinect:
    def test_frame_i_into_frame_j_agrees_as_well_as_the_poses_allow(self):
        cam, poses, depth = _load_rgbd()
        assert sum(int((d > 0).sum()) for d in depth) == 1_081_843
        medians = []
        for i, j in [(0, 1), (1, 2), (2, 3), (3, 4), (0, 2), (1, 3), (2, 4)]:
            T_j_from_i = invert_transform(poses[j]) @ poses[i]
            rep = reproject_depth(depth[i], cam, cam, T_j_from_i)
            both = rep.mask & (depth[j] > 0)
            err = np.abs(rep.depth_m[both] - depth[j][both])
            medians.append(float(np.median(err)))
            # moving the depth with the pose explains most of the disagreement of the raw frames
            raw = np.abs(depth[i] - depth[j])[(depth[i] > 0) & (depth[j] > 0)]
            assert np.median(err) < 0.15 * np.median(raw)
            # and the result equals a plain point projection of the same pixels (no footprint)
            P = cam.unproject_depth(depth[i]).reshape(-1, 3)
            P = transform_points(T_j_from_i, P[np.isfinite(P[:, 2])])
            uv, z = cam.project(P)
            ui, vi = np.round(np.nan_to_num(uv[:, 0], nan=-1)).astype(int), np.round(np.nan_to_num(uv[:, 1], nan=-1)).astype(int)
            ok = np.isfinite(uv).all(axis=1)
            ui, vi = np.where(ok, ui, -1), np.where(ok, vi, -1)
            ok &= (ui >= 0) & (ui < 640) & (vi >= 0) & (vi < 480)
            zb = np.full(640 * 480, np.inf)
            np.minimum.at(zb, vi[ok] * 640 + ui[ok], z[ok])
            zb = zb.reshape(480, 640)
            both2 = rep.mask & np.isfinite(zb)
            assert np.median(np.abs(rep.depth_m[both2] - zb[both2])) < 0.002
        # measured: 82.8, 38.5, 32.4, 24.0, 82.3, 39.4, 37.5 mm -- within the 27-103 mm the poses explain
        assert max(medians) < 0.105, medians
        assert min(medians) > 0.015, medians
