"""The phone's intrinsics as a function of focus (focus breathing) from board views at several focus settings.

Each phone view carries the focus it was taken at: from `phone/focus.csv` (in the phone folder
`--dirs` names; a sidecar with `name,focus_diopters` lines, name = the image's file name with or without
its extension, as `dfdcap sim checkerboard --focus-diopters` writes it) or, for a
recorded session, from `phone/frames.csv`. With at least two focus settings the phone is refitted
in one bundle adjustment over all its views: shared K_ref (fx, fy, cx, cy at the reference focus),
distortion, the breathing slope k and principal-point drift (dfdcap.breathing.FocusModel:
s(D) = 1 / (1 - k (D - D_ref))), and every view's pose. D_ref is the median of the distinct focus
settings (the best-conditioned point). The standard deviations come from the Gauss-Newton
covariance scaled by the residual variance. The principal-point drift is kept only where the data
pins it (its effect over the focus range known to better than 0.5 px); otherwise it is fixed at 0.
With the sensor's detections of the same boards (`calibrate` on a rig), that fit is the start of
one bundle over both cameras (`refine_focus_rig`): each paired view's board pose is shared through
T_phone_from_sensor, which pins the focal length / distance trade-off the phone's corners alone
leave open (K(focus) within 0.1 % on 14 of 15 simulator seeds, against 9 of 15 phone-only).
"""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path

import numpy as np

from dfdcap.breathing import FocusModel
from dfdcap.calib.boards import Board, Detection
from dfdcap.cameras import CameraModel
from dfdcap.errors import CalibrationError
from dfdcap.parse import plain_number

MAX_FOCUS_DIOPTERS = 100.0  # 1 cm: closer than any phone lens focuses; larger values are typos or other units
PIN_PX = 0.5  # keep the principal-point drift when its effect over the range is known to this (px, 1 sigma)


@dataclasses.dataclass(frozen=True)
class FocusFit:
    """The refitted phone (camera at ref_diopters, with distortion), its focus model, and the bundle's RMS (px)."""

    camera: CameraModel
    model: FocusModel
    rms_px: float
    views: int
    poses: dict = dataclasses.field(default_factory=dict)  # view name -> (6,) rvec, tvec of camera_from_board


def read_view_focus(source: Path, names: list[str], phone_dir: str = "phone") -> dict[str, float]:
    """{view name: focus diopters} of the phone views, from <phone_dir>/focus.csv or a session's frames.csv
    ({} if neither). A focus.csv that names none of the views is refused: it was meant for a focus model."""
    source = Path(source)
    sidecar = source / phone_dir / "focus.csv"
    if sidecar.is_file():
        out = read_focus_csv(sidecar)
        found = {n: out[n] for n in names if n in out}
        if out and names and not found:
            raise CalibrationError(f"{sidecar}: names none of the {len(names)} phone views with the board found (its first: "
                                   f"{next(iter(out))!r}; the views: {names[0]!r}, ...): a name is an image's file name")
        return found
    if (source / "session.json").is_file():
        from dfdcap.capture.session import Session

        by_index = {f"{r.index:06d}": float(r.focus_diopters) for r in Session(source).phone_frames}
        return {n: by_index[n] for n in names if n in by_index}
    return {}


def read_focus_csv(path: Path) -> dict[str, float]:
    """{name: focus diopters} of a focus.csv sidecar; FILE:LINE errors for values the bundle fit cannot take
    (NaN or inf make its residuals non-finite) and one line for a file not saved as UTF-8."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark (Excel's UTF-8) is fine
        bad = data.find(b"\x00")  # UTF-16 without a byte-order mark decodes, with NULs between the letters
    except UnicodeDecodeError as e:
        text, bad = "", e.start
    if bad >= 0:
        utf16 = data[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in data
        raise CalibrationError(f"{path}: not UTF-8 text (byte {bad}{': UTF-16?' if utf16 else ': Latin-1?'}); save it as UTF-8")
    from dfdcap.calib.boards import IMAGE_SUFFIXES

    out: dict[str, float] = {}
    lines: dict[str, int] = {}
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        for row in reader:
            line = reader.line_num
            try:
                name, value = row["name"].strip(), row["focus_diopters"].strip()
                d = plain_number(value)
            except (KeyError, TypeError, ValueError, AttributeError):
                raise CalibrationError(f"{path}:{line}: expected 'name,focus_diopters' with a number, got {row}") from None
            if not 0.0 <= d <= MAX_FOCUS_DIOPTERS:  # NaN fails too
                raise CalibrationError(f"{path}:{line}: focus_diopters {value!r} of {name!r} is out of range (expected a "
                                       f"finite number of diopters from 0 = infinity to {MAX_FOCUS_DIOPTERS:g} = 1 cm)")
            if Path(name).suffix.lower() in IMAGE_SUFFIXES:  # "v01.jpg": the view is named by its stem
                name = Path(name).stem
            if name in out and out[name] != d:
                raise CalibrationError(f"{path}:{line}: {name!r} has focus_diopters {value} here but {out[name]:g} at line "
                                       f"{lines[name]}; one focus per view")
            out[name], lines[name] = d, line
    except csv.Error as e:
        raise CalibrationError(f"{path}:{reader.line_num}: not a CSV line ({e})") from None
    header = [f.strip() for f in reader.fieldnames or []]
    if not {"name", "focus_diopters"} <= set(header):  # an empty file, or one header line of something else
        raise CalibrationError(f"{path}:1: expected the header 'name,focus_diopters', got {','.join(header) or 'an empty file'!r}")
    if not out:
        raise CalibrationError(f"{path}: a header and no rows; give each phone view's focus (name,focus_diopters) "
                               f"or remove the file")
    return out


def _unpack(x: np.ndarray, dist0: np.ndarray, free: np.ndarray, drift: bool):
    """x -> K entries, k, drift, the full distortion vector (dist0 with its `free` entries from x), poses."""
    fx, fy, cx, cy, k = x[:5]
    dcx, dcy = (x[5], x[6]) if drift else (0.0, 0.0)
    o = 7 if drift else 5
    nd = int(free.sum())
    dist = dist0.copy()
    dist[free] = x[o : o + nd]
    return (fx, fy, cx, cy), k, (dcx, dcy), dist, x[o + nd :].reshape(-1, 6)


def _free_mask(dist: np.ndarray, model) -> np.ndarray:
    """Which of the stored coefficients the fit may move: the chosen lens model's (DistortionModel or its
    name; None = all). A coefficient the model fixes (k3 of k1k2+tangential) stays as it is."""
    from dfdcap.calib.distortion import get_model

    free = np.ones(len(dist), bool) if model is None else np.zeros(len(dist), bool)
    if model is not None:
        m = get_model(model) if isinstance(model, str) else model
        free[[i for i in m.free if i < len(dist)]] = True
    return free


def _residuals(x, obj, img, focus, d_ref, dist0, free, drift):
    import cv2

    (fx, fy, cx, cy), k, (dcx, dcy), dist, poses = _unpack(x, dist0, free, drift)
    out = []
    for i in range(len(obj)):
        dd = focus[i] - d_ref
        s = 1.0 / (1.0 - k * dd)
        K = np.array([[s * fx, 0, cx + dcx * dd], [0, s * fy, cy + dcy * dd], [0, 0, 1.0]])
        p, _ = cv2.projectPoints(obj[i], poses[i, :3], poses[i, 3:], K, dist)
        out.append((p.reshape(-1, 2) - img[i]).ravel())
    return np.concatenate(out)


def _sparsity(n_pts: list[int], n_intr: int):
    from scipy.sparse import lil_matrix

    m, v = 2 * sum(n_pts), len(n_pts)
    A = lil_matrix((m, n_intr + 6 * v), dtype=np.int8)
    A[:, :n_intr] = 1
    r = 0
    for i, n in enumerate(n_pts):
        A[r : r + 2 * n, n_intr + 6 * i : n_intr + 6 * i + 6] = 1
        r += 2 * n
    return A


def _bundle(obj, img, focus, d_ref, camera: CameraModel, drift: bool, free: np.ndarray):
    """Least squares over K_ref, k, [drift], the free distortion coefficients, poses. Returns (x, std of x, rms_px)."""
    import cv2
    from scipy.optimize import least_squares

    K, dist = camera.K, np.asarray(camera.dist, np.float64)
    poses = []
    for o, p in zip(obj, img):
        ok, r, t = cv2.solvePnP(o, p, K, dist)
        if not ok:
            raise CalibrationError("focus model: a board view's pose could not be found (solvePnP)")
        poses.append(np.r_[r.ravel(), t.ravel()])
    x0 = np.r_[K[0, 0], K[1, 1], K[0, 2], K[1, 2], 0.0, [0.0, 0.0] if drift else [], dist[free], np.ravel(poses)]
    n_intr = 5 + (2 if drift else 0) + int(free.sum())
    res = least_squares(
        _residuals, x0, jac_sparsity=_sparsity([len(o) for o in obj], n_intr), x_scale="jac", method="trf",
        args=(obj, img, focus, d_ref, dist, free, drift), xtol=1e-12, ftol=1e-12, max_nfev=200,
    )
    r = res.fun
    dof = max(len(r) - len(res.x), 1)
    J = res.jac.toarray() if hasattr(res.jac, "toarray") else res.jac
    JtJ = J.T @ J
    cov = np.linalg.pinv(JtJ) * float(r @ r) / dof
    return res.x, np.sqrt(np.maximum(np.diag(cov), 0)), float(np.sqrt(np.mean(r.reshape(-1, 2) ** 2) * 2))


def fit_focus_model(board: Board, dets: dict[str, Detection], focus_by_name: dict[str, float],
                    camera: CameraModel, model=None) -> FocusFit:
    """K(focus) of the phone from its board detections and each view's focus (diopters).

    camera: the phone's fit over all views (the starting point); model: its lens model (a
    DistortionModel or name; the coefficients it fixes stay fixed; None = all free). Needs >= 2 focus settings.
    """
    names = sorted(n for n in dets if n in focus_by_name)
    settings = sorted({round(focus_by_name[n], 6) for n in names})
    if len(settings) < 2:
        raise CalibrationError(f"focus model: views at {len(settings)} focus setting(s); need at least 2")
    obj_all = board.object_points().astype(np.float64)
    obj = [obj_all[dets[n].ids] for n in names]
    img = [np.asarray(dets[n].image_points, np.float64).reshape(-1, 2) for n in names]
    focus = np.array([focus_by_name[n] for n in names], np.float64)
    d_ref = float(np.median(settings))
    span = max(abs(settings[-1] - d_ref), abs(settings[0] - d_ref))
    dist0 = np.asarray(camera.dist, np.float64).ravel()
    free = _free_mask(dist0, model)
    x, std, rms = _bundle(obj, img, focus, d_ref, camera, drift=True, free=free)
    drift = len(settings) >= 3 and max(std[5], std[6]) * span < PIN_PX
    if not drift:
        x, std, rms = _bundle(obj, img, focus, d_ref, camera, drift=False, free=free)
    (fx, fy, cx, cy), k, (dcx, dcy), dist, poses = _unpack(x, dist0, free, drift)
    K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])
    model = FocusModel(
        d_ref, float(k), float(dcx), float(dcy), float(std[4]),
        float(std[5]) if drift else 0.0, float(std[6]) if drift else 0.0, (settings[0], settings[-1]),
    )
    return FocusFit(CameraModel(K, np.asarray(dist, np.float64), camera.size), model, rms, len(names),
                    {n: poses[i].copy() for i, n in enumerate(names)})


def _pose_T(p: np.ndarray) -> np.ndarray:
    import cv2

    from dfdcap.cameras import make_transform

    return make_transform(cv2.Rodrigues(np.asarray(p[:3], np.float64))[0], p[3:])


class _RigLayout:
    """Where each unknown of the joint focus bundle sits: phone fx fy cx cy k [dcx dcy] + its free distortion
    coefficients, sensor fx fy cx cy + its free coefficients, T_phone_from_sensor (r, t), one 6-pose per view
    (sensor_from_board for a view both cameras saw, phone_from_board for a phone-only view)."""

    def __init__(self, free_p: np.ndarray, free_s: np.ndarray, drift: bool, n_views: int):
        self.drift = drift
        self.np_ = 5 + (2 if drift else 0) + int(free_p.sum())
        self.s_off = self.np_
        self.T_off = self.s_off + 4 + int(free_s.sum())
        self.v_off = self.T_off + 6
        self.size = self.v_off + 6 * n_views


def _rig_residuals(x, L: _RigLayout, views, d_ref, dp0, free_p, ds0, free_s):
    """Corner residuals of every view: (sensor corners of a paired view), phone corners."""
    import cv2

    fx, fy, cx, cy, k = x[:5]
    dcx, dcy = (x[5], x[6]) if L.drift else (0.0, 0.0)
    o = 7 if L.drift else 5
    dist_p = dp0.copy()
    dist_p[free_p] = x[o : L.s_off]
    sfx, sfy, scx, scy = x[L.s_off : L.s_off + 4]
    K_s = np.array([[sfx, 0, scx], [0, sfy, scy], [0, 0, 1.0]])
    dist_s = ds0.copy()
    dist_s[free_s] = x[L.s_off + 4 : L.T_off]
    T_ps = _pose_T(x[L.T_off : L.v_off])
    out = []
    for i, (obj_p, img_p, obj_s, img_s, focus) in enumerate(views):
        q = x[L.v_off + 6 * i : L.v_off + 6 * i + 6]
        dd = focus - d_ref
        s = 1.0 / (1.0 - k * dd)
        K_p = np.array([[s * fx, 0, cx + dcx * dd], [0, s * fy, cy + dcy * dd], [0, 0, 1.0]])
        if obj_s is not None:
            uv_s, _ = cv2.projectPoints(obj_s, q[:3], q[3:], K_s, dist_s)
            out.append((uv_s.reshape(-1, 2) - img_s).ravel())
            T_pb = T_ps @ _pose_T(q)
            r, t = cv2.Rodrigues(T_pb[:3, :3])[0], T_pb[:3, 3]
        else:
            r, t = q[:3], q[3:]
        uv_p, _ = cv2.projectPoints(obj_p, r, t, K_p, dist_p)
        out.append((uv_p.reshape(-1, 2) - img_p).ravel())
    return np.concatenate(out)


def refine_focus_rig(board: Board, fit: FocusFit, focus_by_name: dict[str, float], phone: dict[str, Detection],
                     sensor: dict[str, Detection], pairs: list[str], sensor_cam: CameraModel, T0: np.ndarray,
                     phone_model=None, sensor_model=None) -> tuple[FocusFit, np.ndarray, CameraModel]:
    """(phone FocusFit, T_phone_from_sensor, sensor camera) of one bundle over both cameras: the phone's
    K_ref, breathing slope, principal-point drift (where `fit` kept it) and distortion, the sensor's
    intrinsics, T and every view's pose, from all corners of the views in `fit` (a view in `pairs` with
    its sensor corners, its board pose shared through T). The phone-only bundle leaves each view's
    focal length / distance trade-off to the phone's corners alone: at 504x378 its K(focus) scattered
    by up to 0.18 % over simulator seeds; the sensor's views of the same boards pin it (<= 0.1 %).
    Needs >= 3 pairs; otherwise `fit`, T0 and sensor_cam come back unchanged. Lens models: the
    coefficients they fix stay fixed (None = all free)."""
    import cv2
    from scipy.optimize import least_squares
    from scipy.sparse import lil_matrix

    obj_all = board.object_points().astype(np.float64)
    T0 = np.asarray(T0, np.float64)
    dp0, ds0 = np.asarray(fit.camera.dist, np.float64).ravel(), np.asarray(sensor_cam.dist, np.float64).ravel()
    free_p, free_s = _free_mask(dp0, phone_model), _free_mask(ds0, sensor_model)
    fm = fit.model
    names = sorted(fit.poses)
    views, poses, n_pairs = [], [], 0
    for n in names:
        obj_p = obj_all[phone[n].ids]
        img_p = np.asarray(phone[n].image_points, np.float64).reshape(-1, 2)
        K_p = fm.K_at(fit.camera.K, focus_by_name[n])
        best = None
        if n in pairs and len(sensor[n].ids) >= 6:
            for det in (sensor[n], sensor[n].reversed()):  # the stereo fit may have turned the corner order by 180 degrees
                obj_s = obj_all[det.ids]
                img_s = np.asarray(det.image_points, np.float64).reshape(-1, 2)
                ok, r, t = cv2.solvePnP(obj_s, img_s, sensor_cam.K, sensor_cam.dist)
                if not ok:
                    continue
                T_pb = T0 @ _pose_T(np.r_[r.ravel(), t.ravel()])
                uv, _ = cv2.projectPoints(obj_p, cv2.Rodrigues(T_pb[:3, :3])[0], T_pb[:3, 3], K_p, dp0)
                err = float(np.sum((uv.reshape(-1, 2) - img_p) ** 2))
                if best is None or err < best[0]:
                    best = (err, obj_s, img_s, np.r_[r.ravel(), t.ravel()])
        if best is not None:
            views.append((obj_p, img_p, best[1], best[2], focus_by_name[n]))
            poses.append(best[3])
            n_pairs += 1
        else:
            views.append((obj_p, img_p, None, None, focus_by_name[n]))
            poses.append(np.asarray(fit.poses[n], np.float64))
    if n_pairs < 3:
        return fit, T0, sensor_cam
    drift = fm.cx_per_diopter_std > 0 or fm.cy_per_diopter_std > 0  # fit_focus_model kept the drift
    L = _RigLayout(free_p, free_s, drift, len(views))
    Kp, Ks = fit.camera.K, sensor_cam.K
    x0 = np.r_[Kp[0, 0], Kp[1, 1], Kp[0, 2], Kp[1, 2], fm.scale_per_diopter,
               [fm.cx_per_diopter, fm.cy_per_diopter] if drift else [], dp0[free_p],
               Ks[0, 0], Ks[1, 1], Ks[0, 2], Ks[1, 2], ds0[free_s],
               cv2.Rodrigues(T0[:3, :3])[0].ravel(), T0[:3, 3], np.ravel(poses)]
    rows = sum(2 * len(v[0]) + (0 if v[2] is None else 2 * len(v[2])) for v in views)
    A = lil_matrix((rows, L.size), dtype=np.int8)
    r = 0
    for i, (obj_p, _, obj_s, _, _) in enumerate(views):
        if obj_s is not None:
            A[r : r + 2 * len(obj_s), L.s_off : L.T_off] = 1  # sensor corners: sensor intrinsics, the view's pose
            A[r : r + 2 * len(obj_s), L.v_off + 6 * i : L.v_off + 6 * i + 6] = 1
            r += 2 * len(obj_s)
            A[r : r + 2 * len(obj_p), L.T_off : L.v_off] = 1  # phone corners of a pair: T too
        A[r : r + 2 * len(obj_p), : L.s_off] = 1
        A[r : r + 2 * len(obj_p), L.v_off + 6 * i : L.v_off + 6 * i + 6] = 1
        r += 2 * len(obj_p)
    sol = least_squares(_rig_residuals, x0, jac_sparsity=A, x_scale="jac", method="trf",
                        args=(L, views, fm.ref_diopters, dp0, free_p, ds0, free_s), xtol=1e-12, ftol=1e-12, max_nfev=200)
    x, res = sol.x, sol.fun
    J = sol.jac.toarray() if hasattr(sol.jac, "toarray") else sol.jac
    std = np.sqrt(np.maximum(np.diag(np.linalg.pinv(J.T @ J) * float(res @ res) / max(len(res) - len(x), 1)), 0))
    # the phone's residuals alone (the focus model's bundle_rms_px is the phone's)
    phone_res, r = [], 0
    for obj_p, _, obj_s, _, _ in views:
        r += 0 if obj_s is None else 2 * len(obj_s)
        phone_res.append(res[r : r + 2 * len(obj_p)])
        r += 2 * len(obj_p)
    phone_res = np.concatenate(phone_res)
    o = 7 if drift else 5
    dist_p, dist_s = dp0.copy(), ds0.copy()
    dist_p[free_p] = x[o : L.s_off]
    dist_s[free_s] = x[L.s_off + 4 : L.T_off]
    model = dataclasses.replace(
        fm, scale_per_diopter=float(x[4]), scale_per_diopter_std=float(std[4]),
        cx_per_diopter=float(x[5]) if drift else 0.0, cy_per_diopter=float(x[6]) if drift else 0.0,
        cx_per_diopter_std=float(std[5]) if drift else 0.0, cy_per_diopter_std=float(std[6]) if drift else 0.0,
    )
    T = _pose_T(x[L.T_off : L.v_off])
    phone_poses = {}
    for i, n in enumerate(names):
        q = x[L.v_off + 6 * i : L.v_off + 6 * i + 6]
        if views[i][2] is not None:
            T_pb = T @ _pose_T(q)
            q = np.r_[cv2.Rodrigues(T_pb[:3, :3])[0].ravel(), T_pb[:3, 3]]
        phone_poses[n] = q.copy()
    phone_cam = CameraModel(np.array([[x[0], 0, x[2]], [0, x[1], x[3]], [0, 0, 1.0]]), dist_p, fit.camera.size)
    sfx, sfy, scx, scy = x[L.s_off : L.s_off + 4]
    sensor_out = CameraModel(np.array([[sfx, 0, scx], [0, sfy, scy], [0, 0, 1.0]]), dist_s, sensor_cam.size)
    rms = float(np.sqrt(np.mean(phone_res.reshape(-1, 2) ** 2) * 2))
    return FocusFit(phone_cam, model, rms, fit.views, phone_poses), T, sensor_out


def attach_focus_model(cal, board: Board, dets: dict[str, Detection], source: Path, warnings: list[str],
                       sensor: dict[str, Detection] | None = None, phone_dir: str = "phone", min_views: int = 4):
    """The calibration with its phone refitted as K(focus) when the views carry >= 2 focus settings
    (phone K and dist become those at the model's ref_diopters; with the sensor's detections,
    T_phone_from_sensor is refitted on the bundle's phone poses); unchanged otherwise. The refit
    uses only the views with a focus setting: fewer than min_views (--min-views) are refused."""
    focus = read_view_focus(source, sorted(dets), phone_dir)
    used = [n for n in cal.phone_fit.view_names if n in dets] or sorted(dets)
    focus = {n: focus[n] for n in used if n in focus}
    if len({round(v, 6) for v in focus.values()}) < 2:
        return cal
    missing = len(used) - len(focus)
    if len(focus) < min_views:  # 2 of 13 views gave fx +1.2 % and k3 1.2 on OpenCV's stereo set
        raise CalibrationError(f"{source / phone_dir / 'focus.csv'}: only {len(focus)} of the {len(used)} phone views have a "
                               f"focus setting; the focus model refits the phone on them and needs at least {min_views} "
                               f"(--min-views): give every view its focus")
    if missing:
        warnings.append(f"focus model: {missing} phone view(s) without a focus setting left out of it")
    # the lens models the calibration names stay: coefficients they fix stay fixed. The one exception is
    # an automatic choice for the phone: it was made on views at mixed focus, whose breathing hides small
    # terms (a simulated lens's tangential 5e-4 chose k1k2), so the bundle frees the stored coefficients
    entries = cal.stereo.get("distortion_models") or {}
    models = {c: entries.get(c, {}).get("chosen") for c in ("phone", "sensor")}
    if not entries.get("phone", {}).get("forced"):
        models["phone"] = None
    fit = fit_focus_model(board, {n: dets[n] for n in focus}, focus, cal.phone, models["phone"])
    T, sensor_cam = cal.T_phone_from_sensor, cal.sensor
    if sensor is not None:  # one bundle over both cameras: the sensor's views pin the phone's K(focus) and T
        pairs = [n for n in cal.stereo.get("views_used", []) if n in focus and n in sensor]
        fit, T, sensor_cam = refine_focus_rig(board, fit, focus, dets, sensor, pairs, cal.sensor, T,
                                              models["phone"], models["sensor"])
    stereo = cal.stereo
    if models["phone"] is None and "phone" in entries:  # say so in the file: dist may hold terms "chosen" fixes
        stereo = {**stereo, "distortion_models": {**entries, "phone": {**entries["phone"],
                                                                       "focus_refit": _all_free_model(fit.camera.dist)}}}
    return dataclasses.replace(cal, phone=fit.camera, focus_model=fit.model, focus_fit_rms_px=fit.rms_px,
                               T_phone_from_sensor=T, sensor=sensor_cam, stereo=stereo)


def _all_free_model(dist: np.ndarray) -> str:
    """The lens model that frees every coefficient of a stored vector of this length (5, 8 or 12)."""
    from dfdcap.calib.distortion import MODELS

    n = len(np.ravel(dist))
    return next(m.name for m in MODELS.values() if m.n_coeffs == n and m.complexity == n)
