"""Stereo extrinsics T_phone_from_sensor from paired board views (pure numerics).

OpenCV's stereoCalibrate maps camera 1 into camera 2 (p2 = R p1 + T); here camera 1 is the
sensor's colour camera and camera 2 the phone, so (R, T) is T_phone_from_sensor directly.
The first fit keeps both cameras' intrinsics fixed (CALIB_FIX_INTRINSIC); an optional joint
refinement then frees them too (CALIB_USE_INTRINSIC_GUESS).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from dfdcap.cameras import CameraModel, make_transform, rotation_angle_deg
from dfdcap.errors import CalibrationError


@dataclass(frozen=True)
class StereoFit:
    """T_phone_from_sensor (4x4, board units), overall RMS (px, both cameras' points together),
    per_view_px (V, 2): RMS of each view in [phone, sensor] pixels, and the cameras used
    (changed only by a joint refinement)."""

    T_phone_from_sensor: np.ndarray
    rms_px: float
    per_view_px: np.ndarray
    names: list[str]
    phone: CameraModel
    sensor: CameraModel


def calibrate_stereo(
    object_points: Sequence[np.ndarray],
    phone_points: Sequence[np.ndarray],
    sensor_points: Sequence[np.ndarray],
    names: Sequence[str],
    phone: CameraModel,
    sensor: CameraModel,
) -> StereoFit:
    """Fit the sensor->phone transform with OpenCV, both cameras' intrinsics fixed
    (dfdcap.calib.joint.refine_rig frees them afterwards, with a lens model per camera).

    object_points: V arrays (N_i, 3) float32 board points seen by BOTH cameras in view i;
    phone_points / sensor_points: V arrays (N_i, 2) float32 pixels of the same points.
    """
    import cv2

    if not (len(object_points) == len(phone_points) == len(sensor_points) == len(names)):
        raise CalibrationError("calibrate_stereo: input lists differ in length")
    if len(object_points) < 1:
        raise CalibrationError("stereo calibration needs at least 1 view pair")
    obj = [np.ascontiguousarray(o, np.float32).reshape(-1, 1, 3) for o in object_points]
    p2 = [np.ascontiguousarray(p, np.float32).reshape(-1, 1, 2) for p in phone_points]
    p1 = [np.ascontiguousarray(p, np.float32).reshape(-1, 1, 2) for p in sensor_points]
    crit = (cv2.TERM_CRITERIA_COUNT + cv2.TERM_CRITERIA_EPS, 200, 1e-12)

    try:
        out = cv2.stereoCalibrateExtended(
            obj, p1, p2, sensor.K.copy(), sensor.dist.copy(), phone.K.copy(), phone.dist.copy(), sensor.size,
            None, None, flags=cv2.CALIB_FIX_INTRINSIC, criteria=crit,
        )
    except cv2.error as e:
        raise CalibrationError(f"OpenCV stereo calibration failed on {len(obj)} view pairs: {e.err}") from e
    rms, R, T = out[0], out[5], out[6]
    per_view = np.asarray(out[-1], np.float64).reshape(-1, 2)[:, ::-1]  # OpenCV: [cam1, cam2] -> [phone, sensor]
    return StereoFit(
        T_phone_from_sensor=make_transform(R, T.ravel()),
        rms_px=float(rms),
        per_view_px=per_view.copy(),
        names=list(names),
        phone=phone,
        sensor=sensor,
    )


def relative_rotations(phone_rvecs: np.ndarray, sensor_rvecs: np.ndarray) -> np.ndarray:
    """(V, 3, 3) per-view R_phone_from_sensor = R_phone_from_board @ R_sensor_from_board^T."""
    import cv2

    out = []
    for rp, rs in zip(phone_rvecs, sensor_rvecs):
        Rp, _ = cv2.Rodrigues(np.asarray(rp, np.float64).reshape(3, 1))
        Rs, _ = cv2.Rodrigues(np.asarray(rs, np.float64).reshape(3, 1))
        out.append(Rp @ Rs.T)
    return np.asarray(out).reshape(-1, 3, 3)


def views_to_flip(phone_rvecs: np.ndarray, sensor_rvecs: np.ndarray, tolerance_deg: float = 10.0) -> np.ndarray:
    """Boolean (V,) mask of pairs whose sensor corner order is turned by 180 degrees against the phone's.

    For a point-symmetric checkerboard the two detectors may number the corners from opposite
    ends. Such a pair's relative rotation differs from the consensus by a half turn about the
    board normal; reversing the sensor's corner order (pose R_s -> R_s @ diag(-1,-1,1)) fixes it.
    Consensus = the view whose relative rotation agrees with most others within tolerance_deg.
    phone_rvecs, sensor_rvecs: (V, 3) Rodrigues vectors camera_from_board of each pair.
    """
    R = relative_rotations(phone_rvecs, sensor_rvecs)
    v = len(R)
    if v < 2:
        return np.zeros(v, bool)
    agree = np.array([[rotation_angle_deg(R[i].T @ R[j]) < tolerance_deg for j in range(v)] for i in range(v)])
    ref = R[int(np.argmax(agree.sum(axis=1)))]
    Rz = np.diag([-1.0, -1.0, 1.0])
    flip = np.zeros(v, bool)
    import cv2

    for i, (rp, rs) in enumerate(zip(phone_rvecs, sensor_rvecs)):
        if rotation_angle_deg(ref.T @ R[i]) < tolerance_deg:
            continue
        Rp, _ = cv2.Rodrigues(np.asarray(rp, np.float64).reshape(3, 1))
        Rs, _ = cv2.Rodrigues(np.asarray(rs, np.float64).reshape(3, 1))
        flip[i] = rotation_angle_deg(ref.T @ (Rp @ Rz @ Rs.T)) < tolerance_deg
    return flip
