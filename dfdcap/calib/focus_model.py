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
                d = float(value)
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


def _stereo_residuals(x, obj, img_p, img_s, K_p, dist_p, ds0, free_s):
    """x = [T_phone_from_sensor (6), sensor fx fy cx cy, the sensor's free dist coefficients, per view sensor_from_board (6)]."""
    import cv2

    T_ps = _pose_T(x[:6])
    fx, fy, cx, cy = x[6:10]
    K_s = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])
    o0 = 10 + int(free_s.sum())
    dist_s = ds0.copy()
    dist_s[free_s] = x[10:o0]
    out = []
    for i in range(len(obj)):
        q = x[o0 + 6 * i : o0 + 6 * i + 6]
        T_pb = T_ps @ _pose_T(q)
        uv_s, _ = cv2.projectPoints(obj[i], q[:3], q[3:], K_s, dist_s)
        uv_p, _ = cv2.projectPoints(obj[i], cv2.Rodrigues(T_pb[:3, :3])[0], T_pb[:3, 3], K_p[i], dist_p)
        out += [(uv_s.reshape(-1, 2) - img_s[i]).ravel(), (uv_p.reshape(-1, 2) - img_p[i]).ravel()]
    return np.concatenate(out)


def refit_extrinsics(board: Board, names: list[str], phone: dict[str, Detection], sensor: dict[str, Detection],
                     K_phone: dict[str, np.ndarray], dist_phone: np.ndarray, sensor_cam: CameraModel,
                     T0: np.ndarray, sensor_model=None) -> tuple[np.ndarray, CameraModel]:
    """(T_phone_from_sensor 4x4, sensor camera) by a stereo bundle in which every phone view has its
    own K (its focus setting's, fixed), over the corners both cameras saw; the sensor's intrinsics
    (the coefficients its lens model `sensor_model` frees) and every pose free (the joint refinement
    before saw one phone K for all focus settings)."""
    import cv2
    from scipy.optimize import least_squares
    from scipy.sparse import lil_matrix

    obj_all = board.object_points().astype(np.float64)
    T0 = np.asarray(T0, np.float64)
    Ksn, ds = sensor_cam.K, np.asarray(sensor_cam.dist, np.float64)
    free_s = _free_mask(ds, sensor_model)
    x0 = [cv2.Rodrigues(T0[:3, :3])[0].ravel(), T0[:3, 3], [Ksn[0, 0], Ksn[1, 1], Ksn[0, 2], Ksn[1, 2]], ds[free_s]]
    obj, ip, is_, Ks = [], [], [], []
    for n in names:
        s_det = sensor[n]
        best = None
        for det in (s_det, s_det.reversed()):  # the stereo fit may have turned the corner order by 180 degrees
            common, a, b = np.intersect1d(phone[n].ids, det.ids, return_indices=True)
            if len(common) < 6:
                continue
            o, p_pts, s_pts = obj_all[common], phone[n].image_points.reshape(-1, 2)[a], det.image_points.reshape(-1, 2)[b]
            ok, r, t = cv2.solvePnP(o, s_pts, sensor_cam.K, sensor_cam.dist)
            if not ok:
                continue
            q = np.r_[r.ravel(), t.ravel()]
            err = float(np.sum(_stereo_residuals(np.concatenate(x0[:4] + [q]), [o], [p_pts], [s_pts], [K_phone[n]],
                                                 dist_phone, ds, free_s) ** 2))
            if best is None or err < best[0]:
                best = (err, o, p_pts, s_pts, q)
        if best is not None:
            obj.append(best[1]), ip.append(best[2]), is_.append(best[3]), Ks.append(K_phone[n]), x0.append(best[4])
    if len(obj) < 3:
        return T0, sensor_cam
    o0 = 10 + int(free_s.sum())
    A = lil_matrix((sum(4 * len(o) for o in obj), o0 + 6 * len(obj)), dtype=np.int8)
    r = 0
    for i, o in enumerate(obj):
        A[r : r + 4 * len(o), o0 + 6 * i : o0 + 6 * i + 6] = 1
        A[r : r + 2 * len(o), 6:o0] = 1  # sensor corners: sensor intrinsics
        A[r + 2 * len(o) : r + 4 * len(o), :6] = 1  # phone corners: T
        r += 4 * len(o)
    sol = least_squares(_stereo_residuals, np.concatenate(x0), jac_sparsity=A, x_scale="jac", method="trf",
                        args=(obj, ip, is_, Ks, dist_phone, ds, free_s), xtol=1e-10, ftol=1e-10, max_nfev=50)
    fx, fy, cx, cy = sol.x[6:10]
    dist_s = ds.copy()
    dist_s[free_s] = sol.x[10:o0]
    cam = CameraModel(np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]]), dist_s, sensor_cam.size)
    return _pose_T(sol.x[:6]), cam


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
    if sensor is not None:
        pairs = [n for n in cal.stereo.get("views_used", []) if n in focus and n in sensor]
        K_by = {n: fit.model.K_at(fit.camera.K, focus[n]) for n in pairs}
        T, sensor_cam = refit_extrinsics(board, pairs, dets, sensor, K_by, fit.camera.dist, cal.sensor, T, models["sensor"])
    return dataclasses.replace(cal, phone=fit.camera, focus_model=fit.model, focus_fit_rms_px=fit.rms_px,
                               T_phone_from_sensor=T, sensor=sensor_cam)
