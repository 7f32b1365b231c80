"""`dfdcap calibrate`: find image pairs, detect the board, fit intrinsics and T_phone_from_sensor.

Inputs:
- a folder with `phone/NAME.*` and `sensor/NAME.*` (paired by NAME; other sub-folder names with
  `dirs=`); images present in only one camera still help that camera's intrinsics;
- a recorded session folder (session.json): phone frames paired with sensor colour frames by
  `sync.json` (dfdcap.sync.io.read_sync) when it exists, else by equal frame index;
- `calibrate_single(folder)`: one camera's images, intrinsics only.

The fit (`fit_rig`, pure given the detections): per-camera intrinsics, pairs whose corner order
is turned by 180 degrees against each other fixed, stereo with fixed intrinsics, outlier views
dropped by intrinsics.OUTLIER_RULE and everything re-fitted, optional joint refinement.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from dfdcap.calib.boards import Board, Detection, detect_files, list_images
from dfdcap.calib.distortion import MODELS, ModelSelection, get_model, select_model
from dfdcap.calib.intrinsics import (
    OUTLIER_RULE, IntrinsicsFit, calibrate_intrinsics, outlier_views, reprojection_residuals,
)
from dfdcap.calib.focus_model import attach_focus_model
from dfdcap.calib.io import Calibration, CameraCalibration, CameraFit, ViewResiduals, versions
from dfdcap.calib.joint import JointFit, refine_rig
from dfdcap.calib.stereo import StereoFit, calibrate_stereo, views_to_flip
from dfdcap.errors import CalibrationError, DfdcapError

MAX_ROUNDS = 5


MIN_VIEWS = 3  # board poses that pin down fx, fy, cx, cy (Zhang's method needs three in general)
MAX_SUBPIX_WINDOW = 60  # px: the largest half-window the automatic choice uses (boards.refine_corners)


@dataclass(frozen=True)
class CalibrateOptions:
    """How to calibrate. distortion: "auto" (each camera's model chosen by held-out error, see
    calib/distortion.py), a model name for both cameras, or "PHONE,SENSOR" (each auto or a name);
    refine: after the fixed-intrinsics stereo fit (which the outlier rule uses),
    refine intrinsics and extrinsics jointly (on rendered boards: rotation error 0.05 -> 0.004 deg,
    because the stereo constraint pins the principal points); min_views: fewest usable views (pairs for stereo) accepted;
    depth_range_m: (near, far) of the sessions the calibration serves, for the uncertainty warning
    (default: the range of board distances seen);
    max_detect_px: long side of the copy the board is searched in; workers: threads (None = all cores);
    subpix_window: 11 reproduces OpenCV's samples (cornerSubPix winSize (11, 11))."""

    board: Board
    distortion: str = "auto"
    refine: bool = True
    reject_outliers: bool = True
    min_views: int = 4
    max_detect_px: int = 1000
    workers: int | None = None
    progress: bool = False
    subpix_window: int | None = None  # fixed cornerSubPix half-window (px); None = scaled to the corner spacing
    depth_range_m: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.subpix_window is not None and not 1 <= self.subpix_window <= MAX_SUBPIX_WINDOW:  # OpenCV asserts deep inside detection
            raise CalibrationError(f"--subpix-window {self.subpix_window}: expected a half-window of 1 to {MAX_SUBPIX_WINDOW} px")
        if self.min_views < MIN_VIEWS:
            raise CalibrationError(f"--min-views {self.min_views}: the intrinsics fit needs at least {MIN_VIEWS} board views "
                                   f"(Zhang's method; 4 or more for --distortion auto)")
        if self.workers is not None and self.workers < 1:
            raise CalibrationError(f"--workers {self.workers}: expected at least 1 detection thread (or leave it out: all cores)")

    def models(self) -> tuple[str, str]:
        """(phone, sensor) model names or "auto", checked."""
        parts = [p.strip() for p in self.distortion.split(",")]
        if len(parts) == 1:
            parts = parts * 2
        if len(parts) != 2:
            raise CalibrationError(f"distortion {self.distortion!r}: expected auto, a model, or PHONE,SENSOR")
        for p in parts:
            if p != "auto":
                get_model(p)
        return parts[0], parts[1]


# reprojected depth may move by this much (px, 2 sigma) before the calibration is worth a warning
SHIFT_TOLERANCE_PX = 1.0

@dataclass
class RigInputs:
    """Images of each camera as (name, path); equal names are pairs."""

    phone: list[tuple[str, Path]]
    sensor: list[tuple[str, Path]]
    source: str
    warnings: list[str] = field(default_factory=list)


# -------------------------------------------------------------------------------- inputs


def _not_a_folder(path: Path) -> str:
    return "a file, expected a folder of board images" if path.exists() else "no such folder"


def find_folder_pairs(folder: Path, dirs: tuple[str, str] = ("phone", "sensor")) -> RigInputs:
    """Images of `folder/<dirs[0]>` (phone) and `folder/<dirs[1]>` (sensor), paired by file stem."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CalibrationError(f"{folder}: {_not_a_folder(folder)}")
    cams = []
    for d in dirs:
        sub = folder / d
        if not sub.is_dir():
            present = sorted(p.name for p in folder.iterdir() if p.is_dir())
            if not present and not any(folder.iterdir()):
                raise CalibrationError(f"{folder}: empty folder (expected {dirs[0]}/ and {dirs[1]}/ with image pairs, or a session)")
            raise CalibrationError(
                f"{folder}: no {d}/ sub-folder (found {present or 'none'}); expected {dirs[0]}/NAME.* and {dirs[1]}/NAME.*"
            )
        images = list_images(sub)
        if not images:
            raise CalibrationError(f"{sub}: no images (.png, .jpg, ...) in the folder")
        stems: dict[str, Path] = {}
        for p in images:
            if p.stem in stems:
                raise CalibrationError(f"{sub}: two images named {p.stem!r} ({stems[p.stem].name}, {p.name})")
            stems[p.stem] = p
        _refuse_copies(stems.values())
        cams.append(stems)
    phone, sensor = cams
    common = sorted(set(phone) & set(sensor))
    if not common:
        raise CalibrationError(
            f"{folder}: no image pairs: no name in {dirs[0]}/ ({len(phone)} images) matches one in {dirs[1]}/ ({len(sensor)} images)"
        )
    warnings = []
    lonely = sorted(set(phone) ^ set(sensor))
    if lonely:
        warnings.append(f"{len(lonely)} image(s) without a partner (used for one camera's intrinsics only): "
                        + ", ".join(lonely[:8]) + (" ..." if len(lonely) > 8 else ""))
    return RigInputs(sorted(phone.items()), sorted(sensor.items()), str(folder), warnings)


def _refuse_copies(images) -> None:
    """CalibrationError where two files of one camera's folder are byte for byte the same (a copied
    view): it would count twice in the fit and sit on both sides of a cross-validation split, so the
    held-out score that picks the lens model would test it on a view it was fitted to."""
    from dfdcap.fileio import content_key, repeats

    def keyed():
        for p in images:
            try:
                yield content_key(Path(p).read_bytes()), p
            except OSError:  # detection names an unreadable image
                continue

    for first, copy in repeats(keyed()):
        raise CalibrationError(f"{copy}: the same file as {first} (a copied view would count twice); remove one")


def find_session_pairs(session_dir: Path) -> RigInputs:
    """Phone frames paired with sensor colour frames of a recorded session.

    By sync.json (dfdcap.sync.io.read_sync) when it exists, else phone frame i with sensor frame i.
    """
    from dfdcap.capture.session import Session

    session_dir = Path(session_dir)
    try:
        s = Session(session_dir)
    except DfdcapError as e:
        raise CalibrationError(str(e)) from None
    phone_by_index = {r.index: r for r in s.phone_frames}
    sensor_by_index = {r.index: r for r in s.sensor_frames}
    warnings: list[str] = []
    pairs: list[tuple[int, int]] = []
    by_index = True
    if (session_dir / "sync.json").is_file():
        try:
            from dfdcap.sync.io import read_sync
        except ImportError:
            warnings.append(f"{session_dir}/sync.json found but dfdcap.sync is not available: pairing by frame index")
        else:
            try:
                sync = read_sync(session_dir, s)  # up to date with the session, naming its frames
            except DfdcapError as e:
                raise CalibrationError(str(e) if "sync.json" in str(e) else f"{session_dir}/sync.json: {e}") from None
            pairs = [(p.phone_index, p.sensor_index) for p in sync.pairs if p.sensor_index is not None]
            by_index = False
    if by_index:
        pairs = [(i, i) for i in sorted(phone_by_index) if i in sensor_by_index]
    pairs = [(p, q) for p, q in pairs if p in phone_by_index and q in sensor_by_index]
    if not pairs:
        raise CalibrationError(
            f"{session_dir}: no phone/sensor frame pairs ({len(phone_by_index)} phone, {len(sensor_by_index)} sensor frames)"
        )
    phone = [(f"{p:06d}", session_dir / "phone" / phone_by_index[p].file) for p, _ in pairs]
    sensor = [(f"{p:06d}", session_dir / "sensor" / sensor_by_index[q].rgb) for p, q in pairs]
    return RigInputs(phone, sensor, str(session_dir), warnings)


def find_rig_inputs(path: Path, dirs: tuple[str, str] = ("phone", "sensor")) -> RigInputs:
    """A session folder (session.json present) or a folder of image pairs."""
    path = Path(path)
    if path.is_dir() and (path / "session.json").is_file():
        return find_session_pairs(path)
    return find_folder_pairs(path, dirs)


# ----------------------------------------------------------------------------- detection


def _detect(cameras: Sequence[tuple[str, Sequence[tuple[str, Path]]]], options: CalibrateOptions, warnings: list[str]):
    """Detect the board in every camera's images (one thread pool per call, rich progress)."""
    total = sum(len(items) for _, items in cameras)
    results = {}
    progress = None
    if options.progress:
        from rich.console import Console
        from rich.progress import Progress

        progress = Progress(console=Console(stderr=True, emoji=False), transient=True)
        progress.start()
        task = progress.add_task("finding board corners", total=total)
    try:
        for cam, items in cameras:
            found, failed = detect_files(
                items, options.board, options.workers, options.max_detect_px,
                on_done=(lambda: progress.advance(task)) if progress else None,
                half_window=options.subpix_window,
            )
            for name, (path, reason) in sorted(failed.items()):
                warnings.append(f"skipped {path}: {reason}")
            if not found:
                b = options.board
                what = (f"{b.cols}x{b.rows} checkerboard (inner corners)" if b.kind == "checkerboard"
                        else f"{b.cols}x{b.rows}-square ChArUco board ({b.dictionary})")
                unreadable = [(p, r) for _, (p, r) in sorted(failed.items()) if r.startswith("unreadable")]
                if len(unreadable) == len(items):  # no image could be read: say why, not "wrong board"
                    p, r = unreadable[0]
                    raise CalibrationError(f"none of the {len(items)} {cam} images could be read (first: {p}: {r})")
                readable = len(items) - len(unreadable)
                raise CalibrationError(
                    f"no {what} found in any of the {len(items)} {cam} images ({readable} readable): "
                    f"wrong board size or type?"
                )
            _check_sizes(cam, found)
            results[cam] = found
    finally:
        if progress:
            progress.stop()
    return results


def _check_sizes(cam: str, found: dict[str, Detection]) -> None:
    sizes: dict[tuple[int, int], str] = {}
    for d in found.values():
        sizes.setdefault(d.size, d.path)
    if len(sizes) > 1:
        (s1, p1), (s2, p2) = list(sizes.items())[:2]
        raise CalibrationError(
            f"{cam} images differ in size: {p1} is {s1[0]}x{s1[1]}, {p2} is {s2[0]}x{s2[1]} (one camera, one size)"
        )


# ------------------------------------------------------------------------------ numerics


def _fit_camera(board: Board, dets: dict[str, Detection], names: list[str], model: str) -> IntrinsicsFit:
    obj_all = board.object_points()
    obj = [obj_all[dets[n].ids] for n in names]
    img = [dets[n].image_points for n in names]
    return calibrate_intrinsics(obj, img, dets[names[0]].size, names, model)


def _choose_model(board: Board, dets: dict[str, Detection], names: list[str], wanted: str) -> tuple[str, ModelSelection | None]:
    """The distortion model of one camera: `wanted`, or (auto) the one its views support best."""
    if wanted != "auto":
        return wanted, None
    obj_all = board.object_points()
    views = _distinct_views(dets, names)
    sel = select_model([obj_all[dets[n].ids] for n in views], [dets[n].image_points for n in views], dets[names[0]].size)
    return sel.chosen, sel


def _distinct_views(dets: dict[str, Detection], names: list[str]) -> list[str]:
    """One name per image file, first come. In a session a faster phone pairs several of its frames
    with one sensor frame; counted once per pair, that sensor view would be fitted in one fold and
    held out in another, and the cross-validation would reward the model that memorises it."""
    first: dict[str, str] = {}
    for n in names:
        first.setdefault(dets[n].path, n)
    return list(first.values())


def _model_entry(name: str, sel: ModelSelection | None) -> dict:
    return sel.to_dict() if sel is not None else {"chosen": name, "forced": True}


def _stereo_inputs(board: Board, phone: dict[str, Detection], sensor: dict[str, Detection], names: list[str]):
    obj_all = board.object_points()
    obj, pp, sp, used = [], [], [], []
    for n in names:
        common, ip, is_ = np.intersect1d(phone[n].ids, sensor[n].ids, return_indices=True)
        if len(common) < 6:
            continue
        obj.append(obj_all[common])
        pp.append(phone[n].image_points[ip])
        sp.append(sensor[n].image_points[is_])
        used.append(n)
    return obj, pp, sp, used


def _too_few(found: int, needed: int, what: str) -> CalibrationError:
    return CalibrationError(f"too few usable views: {found} {what}, need at least {needed} (take more pictures of the board)")


def _residual_views(board: Board, dets: dict[str, Detection], fit: IntrinsicsFit) -> list[ViewResiduals]:
    obj_all = board.object_points()
    obj = [obj_all[dets[n].ids] for n in fit.names]
    img = [dets[n].image_points for n in fit.names]
    res = reprojection_residuals(fit, obj, img)
    return [ViewResiduals(n, np.asarray(i, np.float64), r) for n, i, r in zip(fit.names, img, res)]


def _camera_fit(fit: IntrinsicsFit) -> CameraFit:
    return CameraFit(fit.rms_px, fit.std, fit.per_view_px.copy(), list(fit.names))


def fit_rig(
    phone: dict[str, Detection],
    sensor: dict[str, Detection],
    options: CalibrateOptions,
    warnings: list[str] | None = None,
) -> Calibration:
    """Calibrate both cameras and T_phone_from_sensor from detections (name -> Detection; equal names pair).

    Rounds: intrinsics of each camera on all its views; stereo with fixed intrinsics on the
    pairs; outliers by OUTLIER_RULE (per-camera intrinsics errors and stereo errors) dropped;
    repeat until nothing is dropped (at most MAX_ROUNDS). A dropped pair leaves both cameras.
    """
    warnings = warnings if warnings is not None else []
    board = options.board
    sensor = dict(sensor)
    P = sorted(phone)
    S = sorted(sensor)
    dropped: dict[str, str] = {}
    flipped_checked = board.kind != "checkerboard"
    stereo: StereoFit | None = None
    want_p, want_s = options.models()
    for cam, names in (("phone", P), ("sensor", S)):
        if len(names) < options.min_views:
            raise _too_few(len(names), options.min_views, f"{cam} images with the board found")
    model_p, sel_p = _choose_model(board, phone, P, want_p)
    model_s, sel_s = _choose_model(board, sensor, S, want_s)
    for round_ in range(MAX_ROUNDS + 1):
        for cam, names in (("phone", P), ("sensor", S)):
            if len(names) < options.min_views:
                raise _too_few(len(names), options.min_views, f"{cam} images with the board found")
        fit_p = _fit_camera(board, phone, P, model_p)
        fit_s = _fit_camera(board, sensor, S, model_s)
        pairs = [n for n in P if n in sensor]
        if not flipped_checked:
            flipped_checked = True
            idx_p = {n: i for i, n in enumerate(fit_p.names)}
            idx_s = {n: i for i, n in enumerate(fit_s.names)}
            if len(pairs) >= 2:
                flip = views_to_flip(fit_p.rvecs[[idx_p[n] for n in pairs]], fit_s.rvecs[[idx_s[n] for n in pairs]])
                for n in np.asarray(pairs)[flip]:
                    sensor[str(n)] = sensor[str(n)].reversed()
                if flip.any():
                    warnings.append(f"{int(flip.sum())} pair(s) had the corner order turned by 180 degrees in one camera; fixed")
                    fit_s = _fit_camera(board, sensor, S, model_s)
        obj, pp, sp, used = _stereo_inputs(board, phone, sensor, pairs)
        if len(used) < options.min_views:
            raise _too_few(len(used), options.min_views, "pairs with the board found in both cameras")
        stereo = calibrate_stereo(obj, pp, sp, used, fit_p.camera, fit_s.camera)
        if not options.reject_outliers or round_ == MAX_ROUNDS:
            break
        new: dict[str, str] = {}
        for fit, cam in ((fit_p, "phone"), (fit_s, "sensor")):
            for n, e in zip(np.asarray(fit.names)[outlier_views(fit.per_view_px)], fit.per_view_px[outlier_views(fit.per_view_px)]):
                new.setdefault(str(n), f"{cam} intrinsics outlier ({e:.3f} px)")
        bad = outlier_views(stereo.per_view_px)
        for n, e in zip(np.asarray(stereo.names)[bad], stereo.per_view_px[bad]):
            new.setdefault(str(n), f"stereo outlier (phone {e[0]:.3f} px, sensor {e[1]:.3f} px)")
        if not new:
            break
        remaining_pairs = [n for n in used if n not in new]
        if len(remaining_pairs) < options.min_views:
            warnings.append(f"outlier rule would leave {len(remaining_pairs)} pairs (< {options.min_views}); kept them")
            break
        dropped.update(new)
        P = [n for n in P if n not in new]
        S = [n for n in S if n not in new]
    if stereo is None:  # unreachable: the loop runs at least once
        raise CalibrationError("stereo calibration did not run")
    models = (get_model(model_p), get_model(model_s))
    final, joint = _final_fit(obj, pp, sp, used, fit_p, fit_s, stereo, models, options, warnings)
    uncertainty = _uncertainty(joint, final, fit_s, options, warnings)
    for n, why in sorted(dropped.items()):
        warnings.append(f"dropped view {n}: {why}")
    return Calibration(
        phone=final.phone,
        sensor=final.sensor,
        T_phone_from_sensor=final.T_phone_from_sensor,
        board=board.to_dict(),
        phone_fit=_camera_fit(fit_p),
        sensor_fit=_camera_fit(fit_s),
        stereo={
            "rms_px": final.rms_px,
            "per_view_px": final.per_view_px,
            "views_used": list(final.names),
            "views_dropped": sorted(dropped),
            "drop_reasons": dict(sorted(dropped.items())),
            "refined": bool(getattr(final, "intrinsics_free", False)),
            "distortion_models": {"phone": _model_entry(model_p, sel_p), "sensor": _model_entry(model_s, sel_s)},
            "uncertainty": uncertainty,
            "outlier_rule": OUTLIER_RULE if options.reject_outliers else "off",
        },
        versions=versions(),
        views={"phone": _residual_views(board, phone, fit_p), "sensor": _residual_views(board, sensor, fit_s)},
    )


def _final_fit(obj, pp, sp, used, fit_p: IntrinsicsFit, fit_s: IntrinsicsFit, stereo: StereoFit, models,
               options: CalibrateOptions, warnings: list[str]) -> tuple[StereoFit | JointFit, JointFit]:
    """The rig to keep and the joint fit whose covariance gives T's uncertainty.

    With refine, both cameras (each under its own distortion model), T and the view poses are
    refined together; a refinement that ends worse than the fixed-intrinsics fit is dropped.
    Without, OpenCV's fixed-intrinsics stereo fit is kept (its uncertainty from the same fit).
    """
    fixed = refine_rig(obj, pp, sp, used, fit_p.camera, fit_s.camera, stereo.T_phone_from_sensor, models,
                       intrinsics_free=False)
    if not options.refine:
        return stereo, fixed
    joint = refine_rig(obj, pp, sp, used, fit_p.camera, fit_s.camera, stereo.T_phone_from_sensor, models)
    if joint.rms_px <= fixed.rms_px * 1.0001:
        return joint, joint
    # more freedom cannot fit worse: the optimiser went astray, keep the fixed-intrinsics fit
    warnings.append(f"joint refinement ended worse ({joint.rms_px:.4f} px > {fixed.rms_px:.4f} px); "
                    "kept the per-camera intrinsics")
    return stereo, fixed


def _uncertainty(joint: JointFit, final, fit_s: IntrinsicsFit, options: CalibrateOptions, warnings: list[str]) -> dict:
    """T_phone_from_sensor's standard deviations and what they do to reprojected depth.

    A rotation error moves a reprojected depth pixel by about f * angle at any depth; a
    translation error by f * |dt| / z, worst at the nearest depth; the two are independent, so
    they add in quadrature. Warn when the 2-sigma shift exceeds SHIFT_TOLERANCE_PX.
    """
    if options.depth_range_m is not None:
        near, far = options.depth_range_m
        source = "option"
    else:
        z = np.abs(fit_s.tvecs[:, 2])
        near, far = float(z.min()), float(z.max())
        source = "board distances"
    f_px = float(final.phone.K[0, 0])
    rot_rad = np.radians(joint.rotation_std_deg)
    shift_1s = f_px * float(np.hypot(rot_rad, joint.translation_std / max(near, 1e-9)))
    out = {
        "rotation_std_deg": joint.rotation_std_deg,
        "translation_std": joint.translation_std,
        "translation_unit": "m" if options.board.square_m != 1.0 else "squares",
        "covariance_rt": np.asarray(joint.covariance_rt, np.float64).tolist(),
        "depth_range": [near, far],
        "depth_range_source": source,
        "reprojection_shift_px_2sigma": 2 * shift_1s,
        "tolerance_px": SHIFT_TOLERANCE_PX,
        "method": "covariance of the joint least-squares fit, s^2 (J^T J)^-1"
                  + (" (intrinsics free)" if joint.intrinsics_free else " (intrinsics fixed)"),
    }
    if 2 * shift_1s > SHIFT_TOLERANCE_PX:
        warnings.append(
            f"T_phone_from_sensor is uncertain: rotation +-{joint.rotation_std_deg:.4f} deg, translation "
            f"+-{joint.translation_std:.5f} {out['translation_unit']} (1 sigma) move reprojected depth by up to "
            f"{2 * shift_1s:.2f} px (2 sigma) at {near:.3g}; more board views, closer and more tilted, would help"
        )
    return out


def fit_camera(dets: dict[str, Detection], options: CalibrateOptions, warnings: list[str] | None = None) -> CameraCalibration:
    """Intrinsics of one camera from its detections, with the same outlier rounds as fit_rig."""
    warnings = warnings if warnings is not None else []
    names = sorted(dets)
    dropped: dict[str, str] = {}
    if len(names) < options.min_views:
        raise _too_few(len(names), options.min_views, "images with the board found")
    model, sel = _choose_model(options.board, dets, names, options.models()[0])
    for round_ in range(MAX_ROUNDS + 1):
        if len(names) < options.min_views:
            raise _too_few(len(names), options.min_views, "images with the board found")
        fit = _fit_camera(options.board, dets, names, model)
        if not options.reject_outliers or round_ == MAX_ROUNDS:
            break
        bad = outlier_views(fit.per_view_px)
        if not bad.any():
            break
        if len(names) - int(bad.sum()) < options.min_views:
            warnings.append(f"outlier rule would leave {len(names) - int(bad.sum())} views (< {options.min_views}); kept them")
            break
        for n, e in zip(np.asarray(fit.names)[bad], fit.per_view_px[bad]):
            dropped[str(n)] = f"outlier ({e:.3f} px)"
        names = [n for n in names if n not in dropped]
    for n, why in sorted(dropped.items()):
        warnings.append(f"dropped view {n}: {why}")
    return CameraCalibration(fit.camera, _camera_fit(fit), options.board.to_dict(), sorted(dropped), versions(),
                             _residual_views(options.board, dets, fit), _model_entry(model, sel))


# ------------------------------------------------------------------------ entry points


@dataclass
class CalibrationRun:
    """A finished calibration and what was noticed on the way (skipped images, dropped views)."""

    calibration: Calibration | CameraCalibration
    warnings: list[str]
    n_images: int


def calibrate_rig(path: Path, options: CalibrateOptions, dirs: tuple[str, str] = ("phone", "sensor")) -> CalibrationRun:
    """Calibrate phone + sensor from a folder of pairs or a session (nothing is written)."""
    inputs = find_rig_inputs(Path(path), dirs)
    warnings = list(inputs.warnings)
    found = _detect([("phone", inputs.phone), ("sensor", inputs.sensor)], options, warnings)
    cal = fit_rig(found["phone"], found["sensor"], options, warnings)
    cal = attach_focus_model(cal, options.board, found["phone"], Path(path), warnings, found["sensor"], dirs[0],
                             options.min_views)  # views at >= 2 focus settings
    return CalibrationRun(cal, warnings, len(inputs.phone) + len(inputs.sensor))


def calibrate_single(path: Path, options: CalibrateOptions) -> CalibrationRun:
    """Intrinsics of one camera from the images directly in `path` (nothing is written)."""
    path = Path(path)
    if not path.is_dir():
        raise CalibrationError(f"{path}: {_not_a_folder(path)}")
    images = list_images(path)
    if not images:
        raise CalibrationError(f"{path}: no images (.png, .jpg, ...) in the folder")
    warnings: list[str] = []
    found = _detect([("camera", [(p.stem, p) for p in images])], options, warnings)
    cal = fit_camera(found["camera"], options, warnings)
    return CalibrationRun(cal, warnings, len(images))
