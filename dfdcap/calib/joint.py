"""Joint refinement of both cameras and T_phone_from_sensor, with each camera's own lens model.

OpenCV's stereoCalibrate applies one set of distortion flags to both cameras, so a phone that
needs the rational model would force it on a VGA sensor that over-fits it. This is the same
bundle adjustment with a model per camera: unknowns are each camera's fx, fy, cx, cy and the
free coefficients of its DistortionModel, T_phone_from_sensor (Rodrigues r, t) and every view's
board pose in the sensor frame; residuals are both cameras' corner reprojection errors. The
Jacobian is analytic (cv2.projectPoints and cv2.composeRT derivatives), so the fit takes
fractions of a second.

Uncertainty: the covariance of the unknowns is s² (JᵀJ)⁻¹ with s² the residual variance per
coordinate; its T_phone_from_sensor block gives the rotation (degrees, the RMS length of the
rotation-error vector) and translation (board units) standard deviations.

Pure numerics: arrays in, a frozen result out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from dfdcap.calib.distortion import DistortionModel
from dfdcap.cameras import CameraModel, make_transform
from dfdcap.errors import CalibrationError


@dataclass(frozen=True)
class JointFit:
    """Refined cameras and T_phone_from_sensor (4x4); rms_px over every corner of both cameras;
    per_view_px (V, 2) [phone, sensor]; rotation_std_deg, translation_std (board units) and the
    6x6 covariance of (r, t) of T_phone_from_sensor (rad², units²)."""

    phone: CameraModel
    sensor: CameraModel
    T_phone_from_sensor: np.ndarray
    rms_px: float
    per_view_px: np.ndarray
    names: list[str]
    rotation_std_deg: float
    translation_std: float
    covariance_rt: np.ndarray
    intrinsics_free: bool


class _Layout:
    """Where each unknown sits in the parameter vector."""

    def __init__(self, models: tuple[DistortionModel, DistortionModel], n_views: int, intrinsics_free: bool):
        self.models = models
        self.free = intrinsics_free
        self.cam_len = [4 + m.complexity if intrinsics_free else 0 for m in models]
        self.cam_off = [0, self.cam_len[0]]
        self.T_off = self.cam_len[0] + self.cam_len[1]
        self.view_off = self.T_off + 6
        self.size = self.view_off + 6 * n_views


def _pack_camera(cam: CameraModel, model: DistortionModel) -> np.ndarray:
    d = np.zeros(model.n_coeffs)
    d[: min(cam.dist.size, model.n_coeffs)] = cam.dist[: model.n_coeffs]
    return np.concatenate([[cam.K[0, 0], cam.K[1, 1], cam.K[0, 2], cam.K[1, 2]], d[list(model.free)]])


def _unpack_camera(x: np.ndarray, base: CameraModel, model: DistortionModel, free: bool) -> tuple[np.ndarray, np.ndarray]:
    if not free:
        d = np.zeros(model.n_coeffs)
        d[: min(base.dist.size, model.n_coeffs)] = base.dist[: model.n_coeffs]
        return base.K.copy(), d
    fx, fy, cx, cy = x[:4]
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    d = np.zeros(model.n_coeffs)
    d[list(model.free)] = x[4:]
    return K, d


def _project(obj, r, t, K, d):
    """(2N,) projections and the (2N, 10 + n) Jacobian [rot, t, f, c, dist] of cv2.projectPoints."""
    import cv2

    p, J = cv2.projectPoints(obj, r, t, K, d)
    return p.reshape(-1), J


class _Problem:
    def __init__(self, obj, pp, sp, phone, sensor, models, intrinsics_free):
        self.obj = [np.asarray(o, np.float64).reshape(-1, 1, 3) for o in obj]
        self.pp = [np.asarray(p, np.float64).reshape(-1) for p in pp]
        self.sp = [np.asarray(s, np.float64).reshape(-1) for s in sp]
        self.base = (phone, sensor)
        self.L = _Layout(models, len(obj), intrinsics_free)
        rows = [2 * len(o) for o in self.obj]
        self.row_off = np.concatenate([[0], np.cumsum(np.repeat(rows, 2))])  # [phone_0, sensor_0, phone_1, ...]

    def cameras(self, x):
        L = self.L
        return [
            _unpack_camera(x[L.cam_off[c]: L.cam_off[c] + L.cam_len[c]], self.base[c], L.models[c], L.free)
            for c in (0, 1)
        ]

    def residuals(self, x, want_jac: bool = False):
        import cv2

        L = self.L
        (Kp, dp), (Ks, ds) = self.cameras(x)
        r_ps, t_ps = x[L.T_off: L.T_off + 3], x[L.T_off + 3: L.T_off + 6]
        res = np.empty(self.row_off[-1])
        J = np.zeros((self.row_off[-1], L.size)) if want_jac else None
        for j, obj in enumerate(self.obj):
            v = L.view_off + 6 * j
            r_j, t_j = x[v: v + 3], x[v + 3: v + 6]
            r3, t3, dr3dr1, dr3dt1, dr3dr2, dr3dt2, dt3dr1, dt3dt1, dt3dr2, dt3dt2 = cv2.composeRT(r_j, t_j, r_ps, t_ps)
            a, b, c = self.row_off[2 * j], self.row_off[2 * j + 1], self.row_off[2 * j + 2]
            proj_p, Jp = _project(obj, r3, t3, Kp, dp)
            proj_s, Js = _project(obj, r_j, t_j, Ks, ds)
            res[a:b] = proj_p - self.pp[j]
            res[b:c] = proj_s - self.sp[j]
            if not want_jac:
                continue
            dpdr3, dpdt3 = Jp[:, 0:3], Jp[:, 3:6]
            J[a:b, v: v + 3] = dpdr3 @ dr3dr1 + dpdt3 @ dt3dr1
            J[a:b, v + 3: v + 6] = dpdr3 @ dr3dt1 + dpdt3 @ dt3dt1
            J[a:b, L.T_off: L.T_off + 3] = dpdr3 @ dr3dr2 + dpdt3 @ dt3dr2
            J[a:b, L.T_off + 3: L.T_off + 6] = dpdr3 @ dr3dt2 + dpdt3 @ dt3dt2
            J[b:c, v: v + 6] = Js[:, 0:6]
            if L.free:
                for cam, (rows, Jc) in enumerate(((slice(a, b), Jp), (slice(b, c), Js))):
                    o = L.cam_off[cam]
                    J[rows, o: o + 4] = Jc[:, 6:10]
                    J[rows, o + 4: o + L.cam_len[cam]] = Jc[:, 10 + np.asarray(L.models[cam].free)]
        return (res, J) if want_jac else res


def _initial_poses(obj, sp, sensor: CameraModel) -> list[np.ndarray]:
    import cv2

    poses = []
    for o, s in zip(obj, sp):
        ok, r, t = cv2.solvePnP(np.asarray(o, np.float64).reshape(-1, 1, 3), np.asarray(s, np.float64).reshape(-1, 1, 2),
                                sensor.K, sensor.dist)
        if not ok:
            raise CalibrationError("joint refinement: could not place a view in the sensor image (solvePnP failed)")
        poses.append(np.concatenate([r.ravel(), t.ravel()]))
    return poses


def refine_rig(
    object_points: Sequence[np.ndarray],
    phone_points: Sequence[np.ndarray],
    sensor_points: Sequence[np.ndarray],
    names: Sequence[str],
    phone: CameraModel,
    sensor: CameraModel,
    T_phone_from_sensor: np.ndarray,
    models: tuple[DistortionModel, DistortionModel],
    intrinsics_free: bool = True,
) -> JointFit:
    """Refine (phone, sensor, T_phone_from_sensor, view poses) by least squares from an initial rig.

    object_points: V arrays (N_i, 3) board points seen by both cameras; phone_points,
    sensor_points: V arrays (N_i, 2) pixels; models: (phone, sensor) distortion models.
    intrinsics_free=False keeps both cameras fixed (then only T and the poses move: the
    uncertainty of T under fixed intrinsics).
    """
    import cv2
    from scipy.optimize import least_squares

    if not (len(object_points) == len(phone_points) == len(sensor_points) == len(names)) or not names:
        raise CalibrationError("joint refinement: need equally many (>= 1) object, phone and sensor point sets")
    prob = _Problem(object_points, phone_points, sensor_points, phone, sensor, models, intrinsics_free)
    L = prob.L
    x0 = np.zeros(L.size)
    if intrinsics_free:
        x0[L.cam_off[0]: L.cam_off[0] + L.cam_len[0]] = _pack_camera(phone, models[0])
        x0[L.cam_off[1]: L.cam_off[1] + L.cam_len[1]] = _pack_camera(sensor, models[1])
    r_ps, _ = cv2.Rodrigues(np.asarray(T_phone_from_sensor, np.float64)[:3, :3])
    x0[L.T_off: L.T_off + 3] = r_ps.ravel()
    x0[L.T_off + 3: L.T_off + 6] = np.asarray(T_phone_from_sensor, np.float64)[:3, 3]
    for j, pose in enumerate(_initial_poses(object_points, sensor_points, sensor)):
        x0[L.view_off + 6 * j: L.view_off + 6 * j + 6] = pose
    sol = least_squares(lambda x: prob.residuals(x), x0, jac=lambda x: prob.residuals(x, True)[1],
                        method="lm", x_scale="jac", xtol=1e-12, ftol=1e-12, gtol=1e-12, max_nfev=200)
    x = sol.x
    res, J = prob.residuals(x, True)
    if not np.all(np.isfinite(res)):
        raise CalibrationError("joint refinement diverged (non-finite residuals)")
    cov_rt = _covariance_rt(J, res, L)
    (Kp, dp), (Ks, ds) = prob.cameras(x)
    R, _ = cv2.Rodrigues(x[L.T_off: L.T_off + 3])
    o = prob.row_off
    per_view = np.array([[_rms(res[o[2 * j]: o[2 * j + 1]]), _rms(res[o[2 * j + 1]: o[2 * j + 2]])] for j in range(len(names))])
    return JointFit(
        phone=CameraModel(Kp, dp, phone.size) if intrinsics_free else phone,
        sensor=CameraModel(Ks, ds, sensor.size) if intrinsics_free else sensor,
        T_phone_from_sensor=make_transform(R, x[L.T_off + 3: L.T_off + 6]),
        rms_px=_rms(res),
        per_view_px=per_view,
        names=list(names),
        rotation_std_deg=float(np.degrees(np.sqrt(np.trace(cov_rt[:3, :3])))),
        translation_std=float(np.sqrt(np.trace(cov_rt[3:, 3:]))),
        covariance_rt=cov_rt,
        intrinsics_free=intrinsics_free,
    )


def _rms(res: np.ndarray) -> float:
    """RMS length of (u, v) residual pairs (as OpenCV reports reprojection RMS)."""
    return float(np.sqrt(np.mean(np.sum(res.reshape(-1, 2) ** 2, axis=1))))


def _covariance_rt(J: np.ndarray, res: np.ndarray, L: _Layout) -> np.ndarray:
    """6x6 covariance of T_phone_from_sensor's (r, t): s² (JᵀJ)⁻¹ block, with column scaling for conditioning."""
    m, n = J.shape
    dof = max(m - n, 1)
    s2 = float(res @ res) / dof
    scale = np.linalg.norm(J, axis=0)
    scale[scale == 0] = 1.0
    Js = J / scale
    # pseudo-inverse of the (n x n) normal matrix: gauge-free problems have no null space, but be safe
    w, V = np.linalg.eigh(Js.T @ Js)
    keep = w > w[-1] * 1e-14
    inv = (V[:, keep] / w[keep]) @ V[:, keep].T
    cov = s2 * inv / np.outer(scale, scale)
    idx = np.arange(L.T_off, L.T_off + 6)
    return cov[np.ix_(idx, idx)]
