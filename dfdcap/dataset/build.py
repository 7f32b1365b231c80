"""`dfdcap build-dataset`: sessions + calibration + sync.json -> one HDF5 dataset file.

For every session: its phone frames are grouped into focus stacks by ramp (stacks.py); the
sensor depth frame paired (sync.json) with each stack's reference frame (the middle one) --
or the fusion of the depth frames paired with all its frames -- is reprojected into the phone
view at the output geometry (reproject.py); CoC maps follow from depth, focus and the phone's
lens. Everything is checked before anything is written; the file appears only when complete.
"""

from __future__ import annotations

import math
import os
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from dfdcap import __version__
from dfdcap.cameras import CameraModel
from dfdcap.capture.session import Session
from dfdcap.breathing import FocusModel
from dfdcap.dataset.align import align_dataset_stack
from dfdcap.dataset.fusion import FUSE_MODES, fuse_depth
from dfdcap.dataset.h5io import Sample, write_dataset
from dfdcap.dataset.reproject import Reprojected, reproject_depth_averaged
from dfdcap.dataset.stack_pool import SampleLayout, ordered_samples
from dfdcap.dataset.stacks import REFERENCE_FRAME, OutputGeometry, coc_maps, make_geometry, reference_position, split_ramps
from dfdcap.dataset.validate import check_depth_png, check_files_exist
from dfdcap.dataset.visibility import hidden_from_sensor, warm_up
from dfdcap.errors import DatasetError, DfdcapError
from dfdcap.interrupts import raise_if_pressed


MAX_PLAUSIBLE_BASELINE_M = 1.0  # a phone clamped to an RGB-D sensor: centimetres; beyond 1 m, a unit error


@dataclass(frozen=True)
class RigGeometry:
    """What the reprojection needs of a calibration: both cameras and T_phone_from_sensor (4x4, metres)."""

    phone: CameraModel
    sensor: CameraModel
    T_phone_from_sensor: np.ndarray
    source: str = "calibration"
    focus_model: FocusModel | None = None  # the phone's K(focus); phone holds at its ref_diopters

    @classmethod
    def from_calibration(cls, cal, source: str = "calibration") -> "RigGeometry":
        """From a dfdcap.calib.io.Calibration (or anything with phone, sensor, T_phone_from_sensor)."""
        return cls(cal.phone, cal.sensor, np.asarray(cal.T_phone_from_sensor, np.float64), source,
                   getattr(cal, "focus_model", None))

    @classmethod
    def from_truth(cls, rig: dict) -> "RigGeometry":
        """From a simulated session's truth/rig.json content (for tests of the simulator only)."""
        fm = rig.get("phone_breathing")
        return cls(
            CameraModel.from_dict(rig["phone"]), CameraModel.from_dict(rig["sensor"]),
            np.asarray(rig["T_phone_from_sensor"], np.float64), "truth", None if fm is None else FocusModel.from_dict(fm),
        )

    @property
    def baseline_m(self) -> float:
        """|t| of T_phone_from_sensor: how far apart the two cameras are (a few cm on a real rig)."""
        return float(np.linalg.norm(np.asarray(self.T_phone_from_sensor)[:3, 3]))

    def baseline_warning(self) -> str | None:
        """A line saying the cameras are implausibly far apart (likely a board square in mm or board
        units), or None; a warning only, since a wide rig is possible and its depth may still land."""
        if self.baseline_m <= MAX_PLAUSIBLE_BASELINE_M:
            return None
        return (f"{self.source}: T_phone_from_sensor puts the cameras {self.baseline_m:.3g} m apart (|t|); a rig's "
                "cameras are centimetres apart: was the board square given in mm or board units? (--square is in metres)")

    def phone_at(self, focus_diopters: float) -> CameraModel:
        """The phone camera at a focus setting (the calibrated one without a focus model)."""
        return self.phone if self.focus_model is None else self.focus_model.camera_at(self.phone, focus_diopters)


@dataclass(frozen=True)
class PairInfo:
    """A phone frame's sensor partner: sensor frame index (None = none) and gap (sensor - phone host time, ns)."""

    sensor_index: int | None
    gap_ns: int | None


@dataclass(frozen=True)
class BuildOptions:
    """frames: S per stack (None = whole ramp); size 'WxH'; crop 'WxH' | 'X,Y,W,H'; fuse none|median|tsdf;
    val/test: session names (folder or session.json name) for those splits, or fractions of the sessions."""

    frames: int | None = None
    size: str | None = None
    crop: str | None = None
    fuse: str = "none"
    coc: bool = False  # store CoC maps (readers derive them from depth and focus when they are absent)
    val: tuple[str, ...] = ()
    test: tuple[str, ...] = ()
    val_fraction: float = 0.0
    test_fraction: float = 0.0
    edge_rel: float = 0.03
    workers: int | None = None  # stack-building processes; None = one per core
    align: str = "ecc"  # slices to the reference's geometry: ecc | prior (focus model only) | none (dataset/align.py)


@dataclass
class SessionPlan:
    """A checked session: its stacks (lists of phone frame records) and each frame's pairing."""

    session: Session
    split: str
    stacks: list[list] = field(default_factory=list)
    pairs: dict[int, PairInfo] = field(default_factory=dict)
    skipped_unpaired: int = 0
    sensor_by_index: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # ramps that gave no stack, and why
    suspect: list[str] = field(default_factory=list)  # sync.json quality reasons (empty = ok)


@dataclass(frozen=True)
class BuildSummary:
    path: Path
    counts: dict[str, int]
    phone_frames: int
    skipped_unpaired: int
    seconds: float
    valid_fraction: float
    notes: list[str] = field(default_factory=list)  # "<session>: ramp ... skipped" lines
    suspect: dict[str, list[str]] = field(default_factory=dict)  # session -> sync quality reasons

    @property
    def frames_per_s(self) -> float:
        return self.phone_frames / self.seconds if self.seconds > 0 else float("nan")


def pairs_from_sync(sync) -> dict[int, PairInfo]:
    """{phone_index: PairInfo} from a dfdcap.sync.io.SyncResult."""
    return {int(p.phone_index): PairInfo(p.sensor_index, p.gap_ns) for p in sync.pairs}


def pairs_from_truth(session: Session) -> dict[int, PairInfo]:
    """Nearest sensor frame by the simulator's TRUE clocks (tests before sync exists; never for real data)."""
    from dfdcap.sync.clock import ClockModel

    rig = session.truth_rig()
    phone_clock = ClockModel.from_dict(rig["clocks"]["phone"])
    t_sensor = np.array([r.t_host_ns for r in session.sensor_frames], dtype=np.int64)
    idx = np.array([r.index for r in session.sensor_frames])
    out = {}
    for rec in session.phone_frames:
        t = int(phone_clock.to_host_ns(rec.t_phone_ns))
        k = int(np.argmin(np.abs(t_sensor - t)))
        out[rec.index] = PairInfo(int(idx[k]), int(t_sensor[k] - t))
    return out


def _check_distinct_recordings(sessions: list[Session]) -> None:
    """DatasetError where two session folders hold one recording (a copied folder): in two splits the
    copy puts test stacks into training, in one it doubles them. A recording is known by its phone
    index and first phone frame, byte for byte: phone timestamps and sensor noise make every
    recording's differ, even on the simulator."""
    from dfdcap.fileio import content_key, repeats

    def keyed():
        for s in sessions:
            phone = s.path / "phone"
            try:
                index = (phone / "frames.csv").read_bytes()
                first_frame = (phone / s.phone_frames[0].file).read_bytes() if s.phone_frames else b""
                yield content_key(index, first_frame), s.path
            except OSError:  # a missing file is reported where the build reads it
                continue

    for first, copy in repeats(keyed()):
        raise DatasetError(f"{copy}: the same recording as {first} (identical phone/frames.csv and first phone "
                           "frame): a copied session would put one recording into the dataset twice")


def _split_of(sessions: list[Session], opts: BuildOptions) -> list[str]:
    seen: dict[str, Path] = {}
    for s in sessions:  # the dataset keys sessions by folder name; one given twice would double its stacks
        if s.path.name in seen:
            same = seen[s.path.name].resolve() == s.path.resolve()
            raise DatasetError(f"{s.path}: session given twice" if same else
                               f"{s.path}: a second session folder named {s.path.name!r} (also {seen[s.path.name]}); "
                               "session folder names must differ")
        seen[s.path.name] = s.path
    _check_distinct_recordings(sessions)
    both = sorted({Path(n).name for n in opts.val} & {Path(n).name for n in opts.test})
    if both:
        raise DatasetError(f"session {both[0]!r} is named by both --val and --test; a session belongs to one split")
    names = [{s.path.name, s.name, str(s.path)} for s in sessions]
    known = set().union(*names) if names else set()
    for which in (opts.val, opts.test):
        for n in which:
            if n not in known and Path(n).name not in known:
                raise DatasetError(f"--val/--test session {n!r} is not among the sessions given")
    splits = []
    for s in names:
        if any(n in s or Path(n).name in s for n in opts.test):
            splits.append("test")
        elif any(n in s or Path(n).name in s for n in opts.val):
            splits.append("val")
        else:
            splits.append("train")
    # fractions (of all sessions, rounded to the nearest count, at least one): the last sessions
    # (sorted by path) that are still train move to test, then val
    free = [i for i in sorted(range(len(sessions)), key=lambda i: str(sessions[i].path)) if splits[i] == "train"]
    for frac, name in ((opts.test_fraction, "test"), (opts.val_fraction, "val")):
        if not 0 <= frac < 1:  # NaN too
            raise DatasetError(f"--{name}-fraction {frac}: expected a fraction of the sessions, 0 <= f < 1")
        k = max(1, math.floor(frac * len(sessions) + 0.5)) if frac > 0 else 0  # nearest; 0.34 of 3 is 1
        if k >= len(free) and k > 0:
            raise DatasetError(f"--{name}-fraction {frac} leaves no training session ({len(sessions)} sessions)")
        for i in free[len(free) - k:]:
            splits[i] = name
        free = free[: len(free) - k]
    return splits


def plan_sessions(
    session_dirs: list[str | os.PathLike],
    rig: RigGeometry,
    opts: BuildOptions,
    pairing: str = "sync",
) -> tuple[list[SessionPlan], OutputGeometry, dict]:
    """Check every session (phone frames, sync.json, image sizes) and group its stacks.

    pairing: "sync" (the session's sync.json, the real path) or "truth" (simulator clocks; tests).
    Returns (plans, output geometry, lens attributes). Raises DatasetError naming the problem.
    """
    if not session_dirs:
        raise DatasetError("no sessions given")
    if opts.fuse not in FUSE_MODES:
        raise DatasetError(f"--fuse {opts.fuse!r}: expected one of {', '.join(FUSE_MODES)}")
    sessions = []
    for d in session_dirs:
        try:
            sessions.append(Session(d))
        except DfdcapError as e:
            raise DatasetError(str(e)) from None
    splits = _split_of(sessions, opts)
    plans: list[SessionPlan] = []
    lens_attrs: dict | None = None
    geometry: OutputGeometry | None = None
    for s, split in zip(sessions, splits):
        if not s.phone_frames:
            raise DatasetError(f"{s.path}: session has no phone frames (phone/frames.csv is missing or empty)")
        if not s.sensor_frames:
            raise DatasetError(f"{s.path}: session has no sensor frames (sensor/frames.csv is missing or empty)")
        try:
            cam = s.phone_camera
            intr = s.sensor_intrinsics
            _ = s.depth_rule  # checked here, before any worker reads depth with it
        except DfdcapError as e:
            raise DatasetError(str(e)) from None
        if tuple(cam.image_size) != tuple(rig.phone.size):
            raise DatasetError(
                f"{s.path / 'phone' / 'camera.json'}: image_size is {cam.image_size[0]}x{cam.image_size[1]}, the "
                f"calibration's phone camera is {rig.phone.width}x{rig.phone.height}; calibrate at the recording's image "
                f"size (or correct image_size if the frames are {rig.phone.width}x{rig.phone.height})"
            )
        if tuple(intr.color.size) != tuple(rig.sensor.size):
            raise DatasetError(
                f"{s.path / 'sensor' / 'intrinsics.json'}: color size is {intr.color.width}x{intr.color.height}, the "
                "calibration's sensor camera is "
                f"{rig.sensor.width}x{rig.sensor.height}; calibrate at the recording's image size"
            )
        if not intr.depth_registered_to_color:
            raise DatasetError(f"{s.path}: sensor depth is not registered to its colour camera; record with registration on")
        if pairing == "sync":
            from dfdcap.sync.io import read_sync

            try:
                sync = read_sync(s.path, s)
                pairs = pairs_from_sync(sync)
                suspect = suspect_reasons(sync)
            except DfdcapError as e:
                if not (s.path / "sync.json").is_file():
                    raise DatasetError(f"{s.path}: no sync.json; run `dfdcap sync {s.path}` first") from None
                raise DatasetError(str(e)) from None
        elif pairing == "truth":
            if not s.has_truth:
                raise DatasetError(f"{s.path}: pairing by true clocks needs a simulated session (truth/rig.json)")
            pairs = pairs_from_truth(s)
            suspect = []
        else:
            raise DatasetError(f"pairing {pairing!r}: expected sync or truth")
        g = make_geometry(cam.image_size, opts.crop, opts.size)
        if geometry is not None and g.size != geometry.size:
            raise DatasetError(f"{s.path}: output size {g.size} differs from the other sessions' {geometry.size}")
        geometry = geometry or g
        la = {
            "focal_length_m": cam.focal_length_m,
            "f_number": cam.f_number,
            "pixel_pitch_m": g.pixel_pitch_m(cam.pixel_pitch_m),
        }
        if lens_attrs is not None and any(not np.isclose(la[k], lens_attrs[k], rtol=1e-3) for k in la):
            raise DatasetError(f"{s.path}: lens {la} differs from the other sessions' {lens_attrs}; build separate datasets")
        lens_attrs = lens_attrs or la
        recs = s.phone_frames
        ramps = split_ramps(
            np.array([r.ramp for r in recs]), np.array([r.step for r in recs]),
            np.array([r.focus_m for r in recs]), opts.frames,
        )
        plan = SessionPlan(s, split, pairs=pairs, sensor_by_index={r.index: r for r in s.sensor_frames},
                           notes=[f"{s.path.name}: {n}" for n in ramps.notes], suspect=suspect)
        for g_pos in ramps.stacks:
            stack = [recs[p] for p in g_pos]
            ref = stack[reference_position(len(stack))]
            partner = pairs.get(ref.index, PairInfo(None, None)).sensor_index
            if partner is None or partner not in plan.sensor_by_index:
                plan.skipped_unpaired += 1
                continue
            plan.stacks.append(stack)
        check_plan_files(plan)
        check_depth_scale(plan, intr.depth_scale_m)
        plans.append(plan)
    sizes = {len(st) for p in plans for st in p.stacks}
    if len(sizes) > 1:
        raise DatasetError(f"stacks have different frame counts {sorted(sizes)}; pass --frames S to pick S per stack")
    return plans, geometry, lens_attrs


def suspect_reasons(sync) -> list[str]:
    """'clock: reason' lines of a SyncResult's suspect clocks (empty = trusted or no verdict)."""
    return [f"{clock}: {r}" for clock, reasons in sync.suspect.items() for r in reasons or ["suspect"]]


def check_plan_files(plan: SessionPlan) -> None:
    """The files the plan's stacks will read exist, and their depth PNGs are 16-bit at the size of the
    colour camera they are registered to (DatasetError naming the file otherwise)."""
    s = plan.session
    check_files_exist(s.path, "phone", [r.file for st in plan.stacks for r in st], "frames.csv")
    ids = {plan.pairs[r.index].sensor_index for st in plan.stacks for r in st if r.index in plan.pairs}
    recs = [plan.sensor_by_index[i] for i in sorted(i for i in ids if i in plan.sensor_by_index)]
    check_files_exist(s.path, "sensor", [r.depth for r in recs], "frames.csv")
    size = s.sensor_intrinsics.color.size
    for r in recs:
        check_depth_png(s.path / "sensor" / r.depth, size)


# No RGB-D sensor reports depth beyond ~20 m (D455; Kinect v2: 8 m, Xtion: 3.5 m, D405: 0.5 m), so a
# session whose median valid depth exceeds 50 m has a depth_scale_m in the wrong unit, never real data.
MAX_MEDIAN_DEPTH_M = 50.0


def check_depth_scale(plan: SessionPlan, depth_scale_m: float) -> None:
    """The first stack's depth frame, in metres, must have a physical median (MAX_MEDIAN_DEPTH_M);
    reads one frame per session, before anything is written."""
    if not plan.stacks:
        return
    s = plan.session
    ref = plan.stacks[0][reference_position(len(plan.stacks[0]))]
    depth = s.read_sensor_depth_m(plan.sensor_by_index[plan.pairs[ref.index].sensor_index], depth_scale_m)
    valid = depth[depth > 0]
    if valid.size and float(np.median(valid)) > MAX_MEDIAN_DEPTH_M:
        raise DatasetError(
            f"{s.path / 'sensor' / 'intrinsics.json'}: depth_scale_m {depth_scale_m:g} makes the median valid depth "
            f"{float(np.median(valid)):.0f} m, beyond any RGB-D sensor's range (at most {MAX_MEDIAN_DEPTH_M:g} m); "
            "expected metres per depth code (0.001 for mm codes, 0.0001 for a D405)"
        )


def build_sample(
    plan: SessionPlan,
    stack: list,
    rig: RigGeometry,
    geometry: OutputGeometry,
    lens_attrs: dict,
    opts: BuildOptions,
    depth_scale_m: float,
    out_camera: CameraModel,
) -> Sample:
    """Read one stack's phone frames and paired depth, and make the sample (pure apart from reading)."""
    from dfdcap.lens import ThinLens

    s = plan.session
    S = len(stack)
    ref_pos = reference_position(S)
    ref = stack[ref_pos]
    by_index = plan.sensor_by_index
    ref_pair = plan.pairs[ref.index]
    if opts.fuse == "none":
        sensor_ids = [ref_pair.sensor_index]
    else:
        sensor_ids = [ref_pair.sensor_index] + sorted(
            {plan.pairs[r.index].sensor_index for r in stack if plan.pairs.get(r.index) and plan.pairs[r.index].sensor_index is not None}
            - {ref_pair.sensor_index}
        )
    if rig.focus_model is not None:  # focus breathing: depth goes into the reference slice's own camera
        out_camera = geometry.camera(rig.phone_at(ref.focus_diopters))
    depths = np.stack([s.read_sensor_depth_m(by_index[i], depth_scale_m) for i in sensor_ids])
    depth_sensor = fuse_depth(depths, opts.fuse, rig.sensor)
    rep = reproject_depth_averaged(depth_sensor, rig.sensor, out_camera, rig.T_phone_from_sensor, edge_rel=opts.edge_rel)
    hidden = hidden_from_sensor(rep.depth_m, out_camera, depth_sensor, rig.sensor, rig.T_phone_from_sensor, opts.edge_rel)
    rep = Reprojected(np.where(hidden, np.float32(0), rep.depth_m), rep.mask & ~hidden)
    frames = []
    for r in stack:
        img = s.read_phone_frame(r)
        if (img.shape[1], img.shape[0]) != tuple(rig.phone.size):
            raise DatasetError(
                f"{s.path / 'phone' / r.file}: image is {img.shape[1]}x{img.shape[0]}, calibration says "
                f"{rig.phone.width}x{rig.phone.height}"
            )
        frames.append(geometry.apply(img))
    K_slices = None if rig.focus_model is None else [geometry.camera(rig.phone_at(r.focus_diopters)).K for r in stack]
    aligned = align_dataset_stack(frames, ref_pos, K_slices, opts.align)
    focus_m = np.array([r.focus_m for r in stack], np.float32)
    coc = None
    if opts.coc:
        lens = ThinLens(lens_attrs["focal_length_m"], lens_attrs["f_number"])
        coc = coc_maps(rep.depth_m, focus_m, lens, lens_attrs["pixel_pitch_m"])
    gaps = [plan.pairs.get(r.index, PairInfo(None, None)) for r in stack]
    prov = {
        "session": s.name,
        "session_dir": s.path.name,
        "ramp": int(ref.ramp),
        "phone_indices": [int(r.index) for r in stack],
        "phone_files": [r.file for r in stack],
        "t_phone_ns": [int(r.t_phone_ns) for r in stack],
        "sensor_indices": [p.sensor_index for p in gaps],
        "gap_ns": [p.gap_ns for p in gaps],
        "reference_position": ref_pos,
        "reference_phone_index": int(ref.index),
        "depth_sensor_indices": [int(i) for i in sensor_ids],
        "fuse": opts.fuse if len(sensor_ids) > 1 or opts.fuse == "none" else f"{opts.fuse} (1 frame: none)",
        "rig": rig.source,
        "valid_fraction": float((rep.mask & aligned.covered).mean()),
        "hidden_from_sensor_px": int(hidden.sum()),
        "align": {"mode": opts.align, "status": aligned.status, "focus_model": rig.focus_model is not None,
                  "reference_camera_K": out_camera.K.tolist()},
    }
    extra = {"align": aligned.maps, "align_residual": aligned.residual, "align_correction": aligned.correction_px}
    return Sample(aligned.frames, focus_m, rep.depth_m, rep.mask & aligned.covered, coc, prov, extra)


def resolve_workers(workers: int | None, n_jobs: int) -> int:
    """Processes for n_jobs stacks: `workers` (None = the cores this process may use), at most n_jobs."""
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if workers < 1:
        raise DatasetError(f"--workers {workers}: expected 1 or more")
    return max(1, min(int(workers), n_jobs))


@dataclass(frozen=True)
class _StackContext:
    """What every stack job needs besides its (plan, stack) numbers; a worker process gets it once."""

    plans: list[SessionPlan]
    rig: RigGeometry
    geometry: OutputGeometry
    lens_attrs: dict
    opts: BuildOptions
    scales: list[float]
    out_camera: CameraModel

    def make(self, job: tuple[int, int]) -> tuple[str, Sample]:
        """(split, sample) of stack j of plan i: build_sample, the per-stack work."""
        i, j = job
        p = self.plans[i]
        return p.split, build_sample(p, p.stacks[j], self.rig, self.geometry, self.lens_attrs, self.opts,
                                     self.scales[i], self.out_camera)


def _no_valid_depth(rig: RigGeometry, n_stacks: int) -> str:
    """Why no stack got a valid depth pixel: a far-off translation (a calibration in the wrong unit
    reprojects every point out of the phone's view) is the likely cause when there is one."""
    head = f"no valid depth pixel in any of the {n_stacks} stacks (the dataset would be empty of ground truth)"
    if rig.baseline_m > MAX_PLAUSIBLE_BASELINE_M:
        return (f"{head}: {rig.source}'s phone-sensor translation |t| = {rig.baseline_m:.3g} m, but a rig's cameras "
                "are centimetres apart: was the board square given in mm or board units? Recalibrate with --square "
                "in metres")
    return (f"{head}: the sensor depth does not land in the phone's view; check {rig.source} "
            f"(|t| = {rig.baseline_m:.3g} m) and the sessions' sensor depth")


def build_dataset(
    session_dirs: list[str | os.PathLike],
    rig: RigGeometry,
    out_path: str | os.PathLike,
    opts: BuildOptions = BuildOptions(),
    force: bool = False,
    pairing: str = "sync",
    progress: Callable[[int, int], None] | None = None,
    calibration_doc: dict | None = None,
) -> BuildSummary:
    """Build the dataset file; progress(done_stacks, total_stacks) is called as samples are written."""
    import time

    out_path = Path(out_path)
    if out_path.exists() and not force:
        raise DatasetError(f"{out_path}: exists; pass --force to overwrite it")
    t0 = time.perf_counter()
    plans, geometry, lens_attrs = plan_sessions(session_dirs, rig, opts, pairing)
    jobs = [(i, j) for i, p in enumerate(plans) for j in range(len(p.stacks))]
    if not jobs:
        skipped = sum(p.skipped_unpaired for p in plans)
        notes = [n for p in plans for n in p.notes]
        raise DatasetError(
            f"no complete focus stack with a paired depth frame in {len(plans)} session(s)"
            + (f" ({skipped} stacks had no sensor partner)" if skipped else "")
            + (f"; e.g. {notes[0]}" if notes else "")
        )
    out_camera = geometry.camera(rig.phone)
    scales = [p.session.sensor_intrinsics.depth_scale_m for p in plans]
    attrs = dict(lens_attrs)
    attrs.update(
        reference_frame=REFERENCE_FRAME,
        image_size=list(geometry.size),
        crop=list(geometry.crop),
        camera=out_camera.to_dict(),
        T_phone_from_sensor=np.asarray(rig.T_phone_from_sensor).tolist(),
        rig_source=rig.source,
        fuse=opts.fuse,
        depth="phone camera z-depth in metres at the reference (middle) frame of each stack; 0 = invalid",
        sessions=[str(p.session.path.name) for p in plans],
        session_splits={p.session.path.name: p.split for p in plans},
        dfdcap_version=__version__,
    )
    if rig.focus_model is not None:  # then each sample's camera is its provenance's align.reference_camera_K
        attrs["phone_focus_model"] = rig.focus_model.to_dict()
    if calibration_doc is not None:
        attrs["calibration"] = calibration_doc
    n_frames = 0
    valid = []
    ctx = _StackContext(plans, rig, geometry, lens_attrs, opts, scales, out_camera)
    layout = SampleLayout(len(plans[jobs[0][0]].stacks[0]), geometry.size[1], geometry.size[0], opts.coc)
    samples = ordered_samples(ctx.make, jobs, resolve_workers(opts.workers, len(jobs)), layout, warm_up)
    try:  # the workers fork before the output file is opened
        first = next(samples)
        with write_dataset(out_path, attrs, force=force) as w:
            for k, (split, sample) in enumerate(itertools.chain([first], samples)):
                w.append(split, sample)
                n_frames += sample.stack.shape[0]
                valid.append(sample.provenance["valid_fraction"])
                raise_if_pressed()
                if progress:
                    progress(k + 1, len(jobs))
            if max(valid) == 0:  # raised inside the block: the file is discarded
                raise DatasetError(_no_valid_depth(rig, len(valid)))
            counts = dict(w.counts)
    finally:
        samples.close()
    return BuildSummary(
        out_path, counts, n_frames, sum(p.skipped_unpaired for p in plans),
        time.perf_counter() - t0, float(np.mean(valid)),
        [n for p in plans for n in p.notes], {p.session.path.name: p.suspect for p in plans if p.suspect},
    )
