"""Distortion model selection by held-out error, and the joint rig fit's uncertainty, on synthetic corners."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dfdcap.calib.distortion import MODELS, get_model, select_model
from dfdcap.calib.joint import refine_rig
from dfdcap.cameras import CameraModel, make_transform, rotation_angle_deg
from dfdcap.errors import CalibrationError

BOARD = np.array([[i * 0.03, j * 0.03, 0.0] for j in range(6) for i in range(9)], np.float64)


def _poses(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """T_cam_from_board: the board 0.35-0.7 m away, tilted up to 35 deg, spread over the image."""
    out = []
    for _ in range(n):
        R = make_transform(np.radians(rng.uniform([-35, -35, -20], [35, 35, 20])), np.zeros(3))[:3, :3]
        c = np.array([rng.uniform(-0.08, 0.08), rng.uniform(-0.06, 0.06), rng.uniform(0.35, 0.7)])
        out.append(make_transform(R, c - R @ BOARD.mean(axis=0)))
    return out


def _observe(cam: CameraModel, T: np.ndarray, rng: np.random.Generator, sigma_px: float) -> np.ndarray:
    r, _ = cv2.Rodrigues(T[:3, :3])
    p, _ = cv2.projectPoints(BOARD, r, T[:3, 3], cam.K, cam.dist)
    return p.reshape(-1, 2) + rng.normal(0, sigma_px, (len(BOARD), 2))


def _camera(dist) -> CameraModel:
    K = np.array([[800.0, 0, 322.0], [0, 800.0, 238.0], [0, 0, 1]])
    return CameraModel(K, np.asarray(dist, np.float64), (640, 480))


def _views(cam: CameraModel, n: int, seed: int, sigma_px: float = 0.1):
    rng = np.random.default_rng(seed)
    poses = _poses(rng, n)
    return [BOARD] * n, [_observe(cam, T, rng, sigma_px) for T in poses], poses


class TestModels:
    def test_flags_leave_exactly_the_free_coefficients(self):
        """Fitting each model to views of a k1-k2 lens moves only its free coefficients."""
        obj, img, _ = _views(_camera([-0.2, 0.08, 0, 0, 0]), 12, 0)
        for name, m in MODELS.items():
            _, _, d, _, _ = cv2.calibrateCamera([o.astype(np.float32) for o in obj], [i.astype(np.float32) for i in img],
                                                (640, 480), None, None, flags=m.flags())
            d = d.ravel()[: m.n_coeffs]
            assert np.all(d[~m.mask()] == 0), name
            assert d.size == m.n_coeffs

    def test_unknown_model_is_a_clear_error(self):
        with pytest.raises(CalibrationError, match="unknown distortion model 'k9'"):
            get_model("k9")


class TestSelectModel:
    def test_radial_lens_gets_a_radial_model(self):
        """A lens with only k1, k2: no tangential terms (they would only fit noise)."""
        obj, img, _ = _views(_camera([-0.25, 0.1, 0, 0, 0]), 16, 1)
        sel = select_model(obj, img, (640, 480))
        assert sel.chosen in ("k1k2", "k1k2k3"), sel.to_dict()
        assert set(sel.to_dict()["candidates"]) == set(MODELS)

    def test_decentred_lens_keeps_its_tangential_terms(self):
        """0.002 of tangential distortion is ~1 px at the corners: the held-out error demands p1, p2."""
        obj, img, _ = _views(_camera([-0.25, 0.1, 0.002, -0.0015, 0]), 16, 2)
        sel = select_model(obj, img, (640, 480))
        assert "tangential" in sel.chosen or sel.chosen.startswith("rational"), sel.to_dict()

    def test_training_rms_always_falls_but_held_out_does_not(self):
        """The reason for cross-validation: more coefficients never fit the training views worse."""
        obj, img, _ = _views(_camera([-0.25, 0.1, 0, 0, 0]), 10, 3, sigma_px=0.3)
        sel = select_model(obj, img, (640, 480))
        s = {x.name: x for x in sel.scores}
        assert s["rational+thin-prism"].train_rms_px <= s["k1k2"].train_rms_px
        assert s["rational+thin-prism"].cv_rms_px > s["k1k2"].cv_rms_px

    def test_too_few_views(self):
        obj, img, _ = _views(_camera([0, 0, 0, 0, 0]), 3, 4)
        with pytest.raises(CalibrationError, match="at least 4 views"):
            select_model(obj, img, (640, 480))

    def test_a_sensor_view_shared_by_several_pairs_counts_once(self):
        """In a session a faster phone pairs several of its frames with one sensor frame. The sensor's
        model is chosen on its distinct views: a view counted twice would be fitted in one fold and
        held out in another."""
        from dfdcap.calib.boards import Board, Detection
        from dfdcap.calib.calibrate import _choose_model

        obj, img, _ = _views(_camera([-0.25, 0.1, 0, 0, 0]), 8, 5)
        board = Board("checkerboard", 9, 6, 0.03)
        assert np.allclose(board.object_points(), BOARD)
        ids = np.arange(len(BOARD), dtype=np.int32)
        sensor_of_pair = [0, 0, 1, 2, 2, 2, 3, 4, 5, 5, 6, 7]  # 12 pairs, 8 sensor frames
        dets = {f"{p:06d}": Detection(f"{p:06d}", f"/s/sensor/{q:06d}.png", (640, 480), ids, img[q].astype(np.float32))
                for p, q in enumerate(sensor_of_pair)}
        chosen, sel = _choose_model(board, dets, list(dets), "auto")
        alone = select_model(obj, [i.astype(np.float32) for i in img], (640, 480))
        assert sel.folds == 5 and all(len(s.per_view_ms) in (0, 8) for s in sel.scores)
        assert chosen == alone.chosen
        assert [s.cv_rms_px for s in sel.scores] == pytest.approx([s.cv_rms_px for s in alone.scores], rel=1e-4)  # float32 board


class TestRefineRig:
    def _rig(self, seed: int, sigma_px: float):
        rng = np.random.default_rng(seed)
        phone = CameraModel(np.array([[1500.0, 0, 1010], [0, 1500.0, 752], [0, 0, 1]]),
                            np.array([-0.28, 0.13, 0.0012, -0.0009, -0.035]), (2016, 1512))
        sensor = _camera([0.02, -0.05, 0, 0, 0])
        T = make_transform(np.radians([1.5, -3.0, 1.0]), np.array([-0.09, 0.01, 0.002]))
        poses = _poses(rng, 14)
        sp = [_observe(sensor, P, rng, sigma_px) for P in poses]
        pp = [_observe(phone, T @ P, rng, sigma_px) for P in poses]
        return phone, sensor, T, sp, pp

    def test_recovers_the_rig_from_a_perturbed_start_with_honest_uncertainty(self):
        """Per-camera models (phone 5 coefficients, sensor k1-k2) and T from a start 0.5 deg / 5 mm off;
        over 8 noise draws the rotation error stays within 3 reported sigmas."""
        errors, sigmas = [], []
        for seed in range(8):
            phone, sensor, T, sp, pp = self._rig(seed, 0.15)
            T0 = make_transform(np.radians([0.3, 0.2, -0.3]), np.array([0.003, -0.002, 0.004])) @ T
            p0 = CameraModel(phone.K * [[1.01], [1.01], [1]], phone.dist * 0.9, phone.size)
            fit = refine_rig([BOARD] * 14, pp, sp, [str(i) for i in range(14)], p0, sensor, T0,
                             (get_model("k1k2k3+tangential"), get_model("k1k2")))
            errors.append(rotation_angle_deg(T[:3, :3].T @ fit.T_phone_from_sensor[:3, :3]))
            sigmas.append(fit.rotation_std_deg)
            assert np.linalg.norm(fit.T_phone_from_sensor[:3, 3] - T[:3, 3]) < 5e-4
            assert fit.phone.fx == pytest.approx(1500, rel=1e-3)
            assert fit.sensor.dist[2:].tolist() == [0, 0, 0]  # k1-k2 model: p1, p2, k3 stay 0
            assert fit.rms_px == pytest.approx(0.15 * np.sqrt(2), rel=0.15)
        errors, sigmas = np.array(errors), np.array(sigmas)
        assert np.all(errors < 3 * sigmas), (errors, sigmas)
        # the reported sigma is the scatter's size, not a loose bound: RMS error within a factor 2.5 of it
        assert np.sqrt(np.mean(errors ** 2)) > np.mean(sigmas) / 2.5

    def test_noise_free_corners_give_the_exact_rig(self):
        phone, sensor, T, sp, pp = self._rig(0, 0.0)
        fit = refine_rig([BOARD] * 14, pp, sp, [str(i) for i in range(14)], phone, sensor,
                         make_transform(np.radians([0.2, 0, 0]), np.zeros(3)) @ T,
                         (get_model("k1k2k3+tangential"), get_model("k1k2")), intrinsics_free=False)
        assert rotation_angle_deg(T[:3, :3].T @ fit.T_phone_from_sensor[:3, :3]) < 1e-6
        assert fit.rms_px < 1e-6


def test_a_fit_whose_terms_cancel_is_no_lens():
    """A rational fit to a distortion-free VGA sensor (simulated d405 boards) came out with k1..k3 ~ k4..k6
    (numerator and denominator cancel over the board's corners, a pole inside the image); selection chose it
    by a held-out error 0.4 % below k1-k2's and the stereo fit then diverged (sensor errors of 1e9 px)."""
    from dfdcap.calib.distortion import maps_image_one_to_one

    K = np.array([[385.0, 0, 320.8], [0, 385.0, 238.7], [0, 0, 1]])
    cancelling = [-6.848, 15.724, -6e-5, -1e-4, -11.852, -6.848, 15.724, -11.852]
    assert not maps_image_one_to_one(K, cancelling, (640, 480))
    assert maps_image_one_to_one(K, [0, 0, 0, 0, 0], (640, 480))
    strong = np.array([[1500.0, 0, 1010], [0, 1500.0, 752], [0, 0, 1]])  # the foreign rig's phone lens
    assert maps_image_one_to_one(strong, [-0.28, 0.13, 0.0012, -0.0009, -0.035], (2016, 1512))
    assert not maps_image_one_to_one(strong, [-0.9, 0, 0, 0, 0], (2016, 1512))  # folds over before the corners
