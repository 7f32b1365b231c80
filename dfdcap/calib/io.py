"""The calibration file (DESIGN.md "Calibration file"): dataclasses, save, load, OpenCV YAML export.

Stereo file:
  {"schema": 1, "board": {"type", "cols", "rows", "square_m", ...},
   "phone":  {"K", "dist", "size", "rms_px", "std", "per_view_px", "view_names"},
   "sensor": {"K", "dist", "size", "rms_px", "std", "per_view_px", "view_names"},
   "stereo": {"rms_px", "per_view_px" ([phone, sensor] per used pair), "views_used", "views_dropped",
              "drop_reasons", "refined", "outlier_rule",
              "distortion_models": {"phone"|"sensor": {"chosen", "folds", "rule", "candidates": {name:
                  {"cv_rms_px", "cv_se_px", "train_rms_px", "free_coefficients", "failed"}}, "focus_refit"} or
                  {"chosen", "forced": true}},
              "uncertainty": {"rotation_std_deg", "translation_std", "translation_unit", "covariance_rt" (6x6,
                  Rodrigues r then t), "depth_range", "reprojection_shift_px_2sigma", "tolerance_px", "method"}},
   "T_phone_from_sensor": 4x4 (translation in metres, or board units when square_m = 1),
   "versions": {"dfdcap", "opencv"},
   "views": {"phone": [{"name", "corners_px", "residuals_px"}], "sensor": [...]}}
`view_names` and `views` (observed corners and residuals projected - observed, for the report)
are additions beyond DESIGN.md's keys; readers that do not know them ignore them.
K and dist are the final ones (after the joint refinement when "stereo.refined"); rms_px, std,
per_view_px and the residuals belong to each camera's own fit (calibrateCameraExtended).
A candidate that has no held-out score (its fit failed, or its terms cancel) has null cv_rms_px and
cv_se_px and a "failed" reason (earlier files held Infinity there, which is still read).
A single-camera file (`dfdcap calibrate --single`) has "camera" instead of phone/sensor/stereo
("camera" then holds "distortion_model" as above).
A camera's "dist" has 5, 8 or 12 coefficients (OpenCV order) by its chosen model; coefficients
the model holds fixed are stored as 0. The exception: a phone whose model was chosen automatically
and then refitted with a focus model (the choice was made on views at mixed focus, whose breathing
hides small terms); its entry's "focus_refit" names the model the refit used (every stored
coefficient free).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dfdcap.breathing import FocusModel
from dfdcap.cameras import CameraModel
from dfdcap.errors import CalibrationError, DfdcapError
from dfdcap.fileio import atomic_write_json, atomic_write_text, read_json

SCHEMA = 1


@dataclass(frozen=True)
class CameraFit:
    """Quality of one camera's intrinsics: overall RMS (px), standard deviations of the parameters
    ({"fx","fy","cx","cy": px, "dist": [...]}), per-view RMS (px) in the order of view_names."""

    rms_px: float
    std: dict
    per_view_px: np.ndarray
    view_names: list[str]


@dataclass(frozen=True)
class ViewResiduals:
    """One view's observed corners (N, 2) px and residuals projected - observed (N, 2) px."""

    name: str
    corners_px: np.ndarray
    residuals_px: np.ndarray


@dataclass(frozen=True)
class Calibration:
    """Phone + sensor colour camera calibration; T_phone_from_sensor maps sensor-camera points to the phone's."""

    phone: CameraModel
    sensor: CameraModel
    T_phone_from_sensor: np.ndarray
    board: dict
    phone_fit: CameraFit
    sensor_fit: CameraFit
    stereo: dict
    versions: dict = field(default_factory=dict)
    views: dict = field(default_factory=dict)  # {"phone": [ViewResiduals], "sensor": [...]}
    focus_model: FocusModel | None = None  # phone K(focus) (calib/focus_model.py); phone K holds at its ref_diopters
    focus_fit_rms_px: float | None = None

    @property
    def baseline_m(self) -> float:
        return float(np.linalg.norm(np.asarray(self.T_phone_from_sensor)[:3, 3]))


@dataclass(frozen=True)
class CameraCalibration:
    """Intrinsics of a single camera (`--single`)."""

    camera: CameraModel
    fit: CameraFit
    board: dict
    views_dropped: list[str] = field(default_factory=list)
    versions: dict = field(default_factory=dict)
    views: list = field(default_factory=list)  # [ViewResiduals]
    distortion_model: dict = field(default_factory=dict)  # {"chosen", "candidates": {...}} or {"chosen", "forced"}


def versions() -> dict:
    import cv2

    from dfdcap import __version__

    return {"dfdcap": __version__, "opencv": cv2.__version__}


def _camera_entry(cam: CameraModel, fit: CameraFit) -> dict:
    d = cam.to_dict()
    d.update(
        rms_px=float(fit.rms_px),
        std=fit.std,
        per_view_px=[float(x) for x in np.asarray(fit.per_view_px).ravel()],
        view_names=list(fit.view_names),
    )
    return d


def _views_entry(views: list) -> list[dict]:
    return [
        {
            "name": v.name,
            "corners_px": np.round(np.asarray(v.corners_px, np.float64), 3).tolist(),
            "residuals_px": np.round(np.asarray(v.residuals_px, np.float64), 4).tolist(),
        }
        for v in views
    ]


def calibration_to_dict(cal: Calibration) -> dict:
    stereo = dict(cal.stereo)
    stereo["per_view_px"] = np.asarray(stereo.get("per_view_px", []), np.float64).reshape(-1, 2).tolist()
    return {
        "schema": SCHEMA,
        "board": cal.board,
        "phone": _camera_entry(cal.phone, cal.phone_fit),
        "sensor": _camera_entry(cal.sensor, cal.sensor_fit),
        "stereo": stereo,
        "T_phone_from_sensor": np.asarray(cal.T_phone_from_sensor, np.float64).tolist(),
        "versions": cal.versions or versions(),
        "views": {k: _views_entry(v) for k, v in cal.views.items()},
    } | _with_focus_model(cal)


def _with_focus_model(cal: Calibration) -> dict:
    """{"phone": {..., "focus_model": {...}}} when the phone has a focus model (its K and dist hold at ref_diopters)."""
    if cal.focus_model is None:
        return {}
    return {"phone": _camera_entry(cal.phone, cal.phone_fit)
            | {"focus_model": dict(cal.focus_model.to_dict(), bundle_rms_px=cal.focus_fit_rms_px)}}


def camera_calibration_to_dict(cal: CameraCalibration) -> dict:
    cam = _camera_entry(cal.camera, cal.fit)
    cam["views_dropped"] = list(cal.views_dropped)
    if cal.distortion_model:
        cam["distortion_model"] = cal.distortion_model
    return {
        "schema": SCHEMA,
        "board": cal.board,
        "camera": cam,
        "versions": cal.versions or versions(),
        "views": {"camera": _views_entry(cal.views)},
    }


def save_calibration(cal: Calibration | CameraCalibration, path: str | os.PathLike) -> Path:
    """Write the calibration JSON atomically (nothing is left behind on failure)."""
    path = Path(path)
    d = camera_calibration_to_dict(cal) if isinstance(cal, CameraCalibration) else calibration_to_dict(cal)
    atomic_write_json(path, d)
    return path


def _camera_from(d: dict, key: str, path: Path) -> tuple[CameraModel, CameraFit]:
    try:
        e = d[key]
        cam = CameraModel.from_dict(e)
        fit = CameraFit(
            rms_px=float(e["rms_px"]),
            std=dict(e.get("std", {})),
            per_view_px=np.asarray(e.get("per_view_px", []), np.float64),
            view_names=list(e.get("view_names", [])),
        )
    except KeyError as k:
        raise CalibrationError(f"{path}: calibration entry {key!r} lacks {k}") from None
    except DfdcapError as err:
        raise CalibrationError(f"{path}: {key}: {err}") from None
    except (TypeError, ValueError) as err:
        raise CalibrationError(f"{path}: {key}: a field holds the wrong kind of value ({err})") from None
    for name, v in (("K", cam.K), ("dist", cam.dist)):
        if not np.all(np.isfinite(v)):
            raise CalibrationError(f"{path}: {key} {name} holds non-finite values {np.asarray(v).ravel().tolist()}; recalibrate")
    return cam, fit


RIGID_TOL = 1e-6  # |R^T R - I| and |det R - 1|: a JSON round trip keeps ~1e-15, a scaled or sheared T is far off


def check_rigid_transform(value, what: str, tol: float = RIGID_TOL) -> np.ndarray:
    """A 4x4 rigid transform (finite, orthonormal R with det +1, last row 0 0 0 1) as float64, else
    CalibrationError naming `what`. A non-rigid T would scale or shear the reprojected depth silently."""
    try:
        T = np.asarray(value, np.float64)
    except (TypeError, ValueError):
        raise CalibrationError(f"{what}: expected a 4x4 matrix of numbers, found {value!r}") from None
    if T.shape != (4, 4):
        raise CalibrationError(f"{what} has shape {T.shape}, expected 4x4")
    if not np.all(np.isfinite(T)):
        raise CalibrationError(f"{what} holds non-finite values {T.tolist()}; recalibrate")
    R = T[:3, :3]
    ortho = float(np.abs(R.T @ R - np.eye(3)).max())
    det = float(np.linalg.det(R))
    if ortho > tol or abs(det - 1.0) > tol:
        raise CalibrationError(
            f"{what}: rotation part is not a rotation (|R^T R - I| = {ortho:.2e}, det = {det:.6f}; expected orthonormal "
            "with det +1); recalibrate or fix the file"
        )
    if np.abs(T[3] - [0.0, 0.0, 0.0, 1.0]).max() > tol:
        raise CalibrationError(f"{what}: last row is {T[3].tolist()}, expected [0, 0, 0, 1]")
    return T


def _views_from(items: list) -> list[ViewResiduals]:
    return [
        ViewResiduals(v["name"], np.asarray(v["corners_px"], np.float64).reshape(-1, 2),
                      np.asarray(v["residuals_px"], np.float64).reshape(-1, 2))
        for v in items
    ]


# What each section of a calibration file must hold, as rows (key path, check, presence); the loader
# and the report rely on these, so a hand-edited file fails here with one line, not in a reader.
# A key path is dot-separated keys: "*" is every value of an object, "name[]" every item of a list.
# Rows run in order, parents before children: a row only sees values whose parent passed its own row.
# T_phone_from_sensor is then checked rigid (check_rigid_transform); K and dist finite (_camera_from).

REQUIRED, OPTIONAL, NULLABLE = "required", "optional", "nullable"  # NULLABLE: absent or null both mean "none"
Check = Callable[[object], "str | None"]  # None when the value is fine, else the problem in words


def _short(value: object, limit: int = 60) -> str:
    r = repr(value)
    return r if len(r) <= limit else r[: limit - 3] + "..."


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _number(finite: bool = True) -> Check:
    what = "a finite number" if finite else "a number"
    return lambda v: None if _is_number(v) and (not finite or math.isfinite(v)) else f"expected {what}, got {_short(v)}"


def _kind(t: type, what: str) -> Check:
    return lambda v: None if isinstance(v, t) else f"expected {what}, got {_short(v)}"


def _texts(v: object) -> str | None:
    ok = isinstance(v, list) and all(isinstance(x, str) for x in v)
    return None if ok else f"expected a list of strings, got {_short(v)}"


def _texts_or_count(v: object) -> str | None:
    ok = _texts(v) is None or isinstance(v, int) and not isinstance(v, bool) and v >= 0
    return None if ok else f"expected a list of view names or their count, got {_short(v)}"


def _array(shape: tuple[int, ...], finite: bool = True, sizes: tuple[int, ...] = ()) -> Check:
    """Numbers (not strings or booleans) in nested lists of `shape` (-1: any length; [] is an empty array)."""
    dims = "x".join("N" if n < 0 else str(n) for n in shape)
    what = f"{'finite ' if finite else ''}numbers as " + ("a list" if len(shape) == 1 else f"a{'n' * (dims[0] in 'N8')} {dims} array")
    what += f" of {', '.join(map(str, sizes[:-1]))} or {sizes[-1]}" if sizes else ""

    def check(v: object) -> str | None:
        try:
            a = np.asarray(v)
        except ValueError:  # ragged lists
            return f"expected {what}, got {_short(v)}"
        if a.shape == (0,) and shape[0] < 0:
            return None
        fits = len(a.shape) == len(shape) and all(n < 0 or n == m for n, m in zip(shape, a.shape))
        ok = (fits and a.dtype.kind in "iuf" and (not finite or bool(np.all(np.isfinite(a))))
              and (not sizes or a.size in sizes))
        return None if ok else f"expected {what}, got {_short(v)}"

    return check


MAX_IMAGE_SIDE = 65536  # no camera's side is longer; 10^9 would be allocated as rays by build-dataset


def _image_size(v: object) -> str | None:
    ok = (isinstance(v, list) and len(v) == 2
          and all(_is_number(x) and math.isfinite(x) and 1 <= x <= MAX_IMAGE_SIDE and float(x).is_integer() for x in v))
    return None if ok else (f"expected [width, height] as two whole numbers from 1 to {MAX_IMAGE_SIDE}, "
                            f"got {_short(v)}")


def _one_name_per_view(cam: dict) -> str | None:
    n, names = np.size(cam.get("per_view_px", [])), cam.get("view_names") or []
    return None if not names or len(names) == n else f"{len(names)} view_names for {n} per_view_px values; expected one each"


def _one_residual_per_corner(view: dict) -> str | None:
    n, m = len(view["corners_px"]), len(view["residuals_px"])
    return None if n == m else f"{n} corners_px but {m} residuals_px; expected one residual per corner"


def _camera_rows(key: str) -> list[tuple[str, Check, str]]:
    return [
        (key, _kind(dict, "an object with K, dist, size, rms_px"), REQUIRED),
        (f"{key}.K", _array((3, 3), finite=False), REQUIRED),
        (f"{key}.dist", _array((-1,), finite=False, sizes=(0, 4, 5, 8, 12, 14)), OPTIONAL),
        (f"{key}.size", _image_size, REQUIRED),
        (f"{key}.rms_px", _number(), REQUIRED),
        (f"{key}.std", _kind(dict, "an object"), OPTIONAL),
        *((f"{key}.std.{p}", _number(finite=False), OPTIONAL) for p in ("fx", "fy", "cx", "cy")),
        (f"{key}.per_view_px", _array((-1,)), OPTIONAL),
        (f"{key}.view_names", _texts, OPTIONAL),
        (key, _one_name_per_view, REQUIRED),
    ]


def _model_rows(key: str) -> list[tuple[str, Check, str]]:
    """A distortion model selection entry: {"chosen", "candidates": {name: {"cv_rms_px", "train_rms_px", ...}}}."""
    return [
        (key, _kind(dict, "an object with 'chosen'"), NULLABLE),
        (f"{key}.chosen", _kind(str, "a model name"), REQUIRED),
        (f"{key}.candidates", _kind(dict, "an object {model name: scores}"), NULLABLE),
        (f"{key}.candidates.*", _kind(dict, "an object with cv_rms_px and train_rms_px"), REQUIRED),
        (f"{key}.candidates.*.cv_rms_px", _number(finite=False), NULLABLE),  # null: no held-out score ("failed" says why)
        (f"{key}.candidates.*.train_rms_px", _number(finite=False), NULLABLE),
    ]


_VIEW_ROWS = [
    ("views", _kind(dict, "an object {camera: [views]}"), NULLABLE),
    ("views.*", _kind(list, "a list of views"), REQUIRED),
    ("views.*[]", _kind(dict, "an object with name, corners_px, residuals_px"), REQUIRED),
    ("views.*[].name", _kind(str, "a string"), REQUIRED),
    ("views.*[].corners_px", _array((-1, 2)), REQUIRED),
    ("views.*[].residuals_px", _array((-1, 2)), REQUIRED),
    ("views.*[]", _one_residual_per_corner, REQUIRED),
]
_COMMON_ROWS = [
    ("board", _kind(dict, "an object with type, cols, rows, square_m"), REQUIRED),
    ("board.square_m", _number(), OPTIONAL),
    ("versions", _kind(dict, "an object {name: version}"), OPTIONAL),
]
STEREO_ROWS = [
    *_COMMON_ROWS, *_camera_rows("phone"), *_camera_rows("sensor"),
    ("T_phone_from_sensor", _array((4, 4), finite=False), REQUIRED),  # then check_rigid_transform
    ("phone.focus_model", _kind(dict, "an object"), NULLABLE),
    ("phone.focus_model.bundle_rms_px", _number(finite=False), NULLABLE),
    ("stereo", _kind(dict, "an object with rms_px, per_view_px, views_used, views_dropped"), REQUIRED),
    ("stereo.rms_px", _number(finite=False), OPTIONAL),
    ("stereo.per_view_px", _array((-1, 2)), OPTIONAL),
    ("stereo.views_used", _texts_or_count, OPTIONAL),  # other tools write the count
    ("stereo.views_dropped", _texts, OPTIONAL),
    ("stereo.distortion_models", _kind(dict, "an object {camera: model selection}"), NULLABLE),
    *_model_rows("stereo.distortion_models.*"),
    ("stereo.uncertainty", _kind(dict, "an object"), NULLABLE),
    *((f"stereo.uncertainty.{k}", _number(finite=False), REQUIRED)
      for k in ("rotation_std_deg", "translation_std", "reprojection_shift_px_2sigma")),
    ("stereo.uncertainty.translation_unit", _kind(str, "a unit name"), REQUIRED),
    *_VIEW_ROWS,
]
SINGLE_ROWS = [
    *_COMMON_ROWS, *_camera_rows("camera"),
    ("camera.views_dropped", _texts, OPTIONAL),
    *_model_rows("camera.distortion_model"),
    *_VIEW_ROWS,
]


def _places(doc: object, parts: list[str]) -> list[tuple[str, object]]:
    """(concrete key path, value) of each value a key path names in doc; absent keys are skipped."""
    found = [("", doc)]
    for part in parts:
        key, items = (part[:-2], True) if part.endswith("[]") else (part, False)
        step = []
        for where, obj in found:
            if not isinstance(obj, dict):
                continue
            keys = list(obj) if key == "*" else [key] if key in obj else []
            for k in keys:
                w = f"{where}.{k}" if where else str(k)
                if not items:
                    step.append((w, obj[k]))
                elif isinstance(obj[k], list):
                    step += [(f"{w}[{i}]", x) for i, x in enumerate(obj[k])]
        found = step
    return found


def check_calibration_doc(doc: dict, rows: list[tuple[str, Check, str]], path: Path) -> None:
    """Raise CalibrationError "FILE: key.path: expected ..., got ..." at the first row a value breaks."""
    for key_path, check, presence in rows:
        *parents, last = key_path.split(".")
        for where, parent in _places(doc, parents):
            if not isinstance(parent, dict):  # a null NULLABLE parent: nothing below it to check
                continue
            name = f"{where}.{last}" if where else last
            if last == "*" or last.endswith("[]"):
                places = _places(parent, [last])
                places = [(f"{where}.{w}" if where else w, v) for w, v in places]
            elif last in parent:
                places = [(name, parent[last])]
            elif presence == REQUIRED:
                raise CalibrationError(f"{path}: lacks {name}")
            else:
                places = []
            for w, value in places:
                if value is None and presence == NULLABLE:
                    continue
                problem = check(value)
                if problem:
                    raise CalibrationError(f"{path}: {w}: {problem}")


def load_any_calibration(path: str | os.PathLike) -> Calibration | CameraCalibration:
    """Read a stereo or a single-camera calibration file."""
    path = Path(path)
    try:
        d = read_json(path)
    except DfdcapError as e:
        raise CalibrationError(str(e)) from None
    if not isinstance(d, dict) or d.get("schema") != SCHEMA:
        raise CalibrationError(f"{path}: not a dfdcap calibration file (schema {d.get('schema') if isinstance(d, dict) else None!r}, expected {SCHEMA})")
    single = "camera" in d and "phone" not in d
    check_calibration_doc(d, SINGLE_ROWS if single else STEREO_ROWS, path)
    views = d.get("views") or {}
    if single:
        cam, fit = _camera_from(d, "camera", path)
        return CameraCalibration(cam, fit, dict(d["board"]), list(d["camera"].get("views_dropped", [])),
                                 dict(d.get("versions", {})), _views_from(views.get("camera", [])),
                                 dict(d["camera"].get("distortion_model") or {}))
    phone, phone_fit = _camera_from(d, "phone", path)
    sensor, sensor_fit = _camera_from(d, "sensor", path)
    T = check_rigid_transform(d["T_phone_from_sensor"], f"{path}: T_phone_from_sensor")
    stereo = dict(d["stereo"])
    stereo["per_view_px"] = np.asarray(stereo.get("per_view_px", []), np.float64).reshape(-1, 2)
    return Calibration(
        phone=phone, sensor=sensor, T_phone_from_sensor=T, board=dict(d["board"]),
        phone_fit=phone_fit, sensor_fit=sensor_fit, stereo=stereo, versions=dict(d.get("versions", {})),
        views={k: _views_from(v) for k, v in views.items()},
        focus_model=None if d["phone"].get("focus_model") is None else FocusModel.from_dict(d["phone"]["focus_model"], f"{path}: phone.focus_model"),
        focus_fit_rms_px=(d["phone"].get("focus_model") or {}).get("bundle_rms_px"),
    )


def load_calibration(path: str | os.PathLike) -> Calibration:
    """Read a phone + sensor calibration file (a single-camera file is refused with a clear error)."""
    cal = load_any_calibration(path)
    if isinstance(cal, CameraCalibration):
        raise CalibrationError(f"{path}: a single-camera calibration; a phone + sensor (stereo) calibration is needed")
    return cal


def export_opencv_yaml(cal: Calibration | CameraCalibration, path: str | os.PathLike) -> Path:
    """Write the calibration as OpenCV FileStorage YAML (atomically).

    Stereo: phone_K/phone_dist/phone_size, sensor_K/..., R and T (T_phone_from_sensor's parts),
    T_phone_from_sensor (4x4), rms values; also M1/D1 (sensor, camera 1), M2/D2 (phone, camera 2)
    as OpenCV's stereo samples name them. Single camera: camera_matrix, distortion_coefficients,
    image_width, image_height, avg_reprojection_error (as OpenCV's calibration sample writes).
    """
    import cv2

    path = Path(path)
    fs = cv2.FileStorage(".yaml", cv2.FILE_STORAGE_WRITE | cv2.FILE_STORAGE_MEMORY)
    if isinstance(cal, CameraCalibration):
        fs.write("image_width", int(cal.camera.width))
        fs.write("image_height", int(cal.camera.height))
        fs.write("camera_matrix", cal.camera.K)
        fs.write("distortion_coefficients", cal.camera.dist.reshape(1, -1))
        fs.write("avg_reprojection_error", float(cal.fit.rms_px))
    else:
        for name, cam, fit in (("phone", cal.phone, cal.phone_fit), ("sensor", cal.sensor, cal.sensor_fit)):
            fs.write(f"{name}_K", cam.K)
            fs.write(f"{name}_dist", cam.dist.reshape(1, -1))
            fs.write(f"{name}_size", np.array([[cam.width, cam.height]], np.int32))
            fs.write(f"{name}_rms_px", float(fit.rms_px))
        T = np.asarray(cal.T_phone_from_sensor, np.float64)
        fs.write("T_phone_from_sensor", T)
        fs.write("R", T[:3, :3].copy())
        fs.write("T", T[:3, 3].reshape(3, 1).copy())
        fs.write("stereo_rms_px", float(cal.stereo.get("rms_px", float("nan"))))
        fs.write("M1", cal.sensor.K)
        fs.write("D1", cal.sensor.dist.reshape(1, -1))
        fs.write("M2", cal.phone.K)
        fs.write("D2", cal.phone.dist.reshape(1, -1))
    fs.write("square_m", float(cal.board.get("square_m", float("nan"))))
    text = fs.releaseAndGetString()
    atomic_write_text(path, text)
    return path
