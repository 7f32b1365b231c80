"""The `dfdcap` command line. Thin: parse options, call one stage function, print with rich.

Every DfdcapError becomes one line on stderr and exit code 1.
"""

from __future__ import annotations

import contextlib
import math
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from dfdcap.capture.limits import MAX_STACKS, MAX_STEPS
from dfdcap.errors import DfdcapError
from dfdcap.parse import plain_number

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Record depth-from-focus datasets and train DFF networks.")
console = Console(stderr=True, emoji=False)
out = Console(emoji=False)


@app.callback()
def _root() -> None:
    """dfdcap: record depth-from-focus data with a phone and an RGB-D sensor, and train DFF networks."""


@app.command()
def report(
    path: Path = typer.Argument(..., help="calibration.json, a session folder, dataset.h5 or a run folder"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="PNG to write (default: beside the input)"),
) -> None:
    """Write a PNG report of a calibration, a session's clock sync, a dataset or a training run."""
    from dfdcap.fileio import check_distinct, check_output_file
    from dfdcap.report import write_report

    if output is not None:
        _png_name(check_output_file(output, what="report PNG"), "report")
        check_distinct({"report PNG": output}, [path])
    png = write_report(path, output)
    out.print(f"wrote {png}")


def _png_name(path: Path, what: str) -> Path:
    """A report path must end in .png (the file is a PNG whatever its name says)."""
    if path.suffix.lower() != ".png":
        raise DfdcapError(f"{path}: the {what} is a PNG picture: name it .png")
    return path


# --- commands of each stage are added below; keep each one thin ---------------------------


@app.command()
def record(
    sensor: str = typer.Option("sim", "--sensor", help="sim, openni[:URI], realsense[:SERIAL], or FILE.oni / FILE.bag / FILE.db3"),
    phone: str = typer.Option("sim", "--phone", help="sim, an ADB serial (companion app), or opencamera:SERIAL (Open Camera's Focus Bracketing mode: static scenes only, 0.5 s a photo; opencamera:sim on the simulated rig)"),
    output: Path = typer.Option(Path("sessions"), "-o", "--output", help="folder that receives the session folder"),
    name: Optional[str] = typer.Option(None, "--name", help="session name (letters, digits, . _ -)"),
    stacks: int = typer.Option(5, "--stacks", help=f"focus ramps (one stack each), 1 to {MAX_STACKS}"),
    steps: Optional[int] = typer.Option(None, "--steps", help=f"frames per ramp, 2 to {MAX_STEPS} (default 5; Open Camera: the phone's setting)"),
    near: Optional[float] = typer.Option(None, "--near", help="nearest focus distance, m (default by sensor preset)"),
    far: Optional[float] = typer.Option(None, "--far", help="farthest focus distance, m (default by sensor preset)"),
    spacing: Optional[str] = typer.Option(None, "--spacing", help="diopters or metres (default diopters; not with Open Camera)"),
    scene: Optional[str] = typer.Option(None, "--scene", help="sim: default, close, moving, wall, tabletop"),
    fps: Optional[float] = typer.Option(None, "--fps", help="phone frame rate during the sweep (default 10; not with Open Camera: 0.5 s a photo)"),
    seed: int = typer.Option(0, "--seed", min=0, max=2**32 - 1, help="sim: random seed of scene, noise and clocks"),
    sensor_preset: str = typer.Option("xtion", "--sensor-preset", help="xtion (0.5-3.5 m) or d405 (0.07-0.5 m): the sim sensor and the default --near/--far"),
    phone_size: Optional[str] = typer.Option(None, "--phone-size", help="phone image size WxH (default: the phone's)"),
    sensor_format: str = typer.Option("jpeg", "--sensor-format", help="sensor images: jpeg (depth lossless PNG + colour JPEG q95, ~0.4 MB/pair), png (both lossless PNG), fast (stored PNG, 1.5 MB/pair), compact (OpenCV's PNG, slow)"),
    png: Optional[str] = typer.Option(None, "--png", help="older form of --sensor-format: fast or compact"),
) -> None:
    """Record a session: the sensor streams while the phone sweeps its focus ramps.

    With --phone opencamera:SERIAL the phone runs Open Camera (no companion app): each ramp takes
    0.5 s a photo, so only static scenes give valid stacks; without --near/--far the phone's own
    bracketing settings apply (see README, "A real phone today")."""
    from dfdcap.capture.recorder import RecordStats, SimOptions, parse_size, record_from_specs

    if name is not None and not name.strip():
        raise DfdcapError("--name: empty; give a session name (letters, digits, . _ -) or leave the option out")
    sim = SimOptions(sensor_preset, scene, seed, parse_size(phone_size, "--phone-size") if phone_size else None)
    stats = RecordStats()
    path = record_from_specs(
        sensor, phone, output, name=name, ramps=stacks, steps=steps, near_m=near, far_m=far,
        spacing=spacing, phone_fps=fps, sensor_format=sensor_format, png=png, sim=sim, stats=stats,
    )
    out.print(str(path), soft_wrap=True, highlight=False)
    out.print(
        f"complete: {stats.summary()}; {stats.phone_frames} phone frames, {stats.probes} clock probes, "
        f"{stats.duration_s:.1f} s",
        soft_wrap=True, highlight=False,
    )


MAX_SIM_VIEWS = 1000  # board poses of `sim checkerboard`: a calibration uses 10-50
sim_app = typer.Typer(no_args_is_help=True, help="The simulated rig: calibration board images with ground truth.")
app.add_typer(sim_app, name="sim")


@sim_app.command("checkerboard")
def sim_checkerboard(
    out_dir: Path = typer.Argument(..., help="folder to write phone/, sensor/ and truth.json into"),
    views: int = typer.Option(20, "--views", help=f"board poses (image pairs), at most {MAX_SIM_VIEWS}"),
    board: str = typer.Option("9x6", "--board", help="inner corners COLSxROWS (ChArUco: squares)"),
    square: float = typer.Option(0.025, "--square", help="square side, m"),
    charuco: bool = typer.Option(False, "--charuco", help="a ChArUco board instead of a checkerboard"),
    phone_size: Optional[str] = typer.Option(None, "--phone-size", help="phone image size WxH"),
    corrupt: int = typer.Option(0, "--corrupt", help="views to corrupt (for testing outlier rejection)"),
    seed: int = typer.Option(0, "--seed", min=0, max=2**32 - 1, help="random seed of the poses and noise"),
    sensor_preset: str = typer.Option("xtion", "--sensor-preset", help="xtion or d405: the sim sensor seen by the boards (as in record)"),
    phone_dist: Optional[str] = typer.Option(None, "--phone-dist", help="phone distortion K1,K2,P1,P2,K3 (OpenCV order; default the sim phone's)"),
    baseline: Optional[float] = typer.Option(None, "--baseline", help="phone-sensor baseline, m (default 0.04)"),
    jpeg_quality: Optional[int] = typer.Option(None, "--jpeg-quality", help="write JPEG at this quality (1-100) instead of PNG"),
    focus_diopters: Optional[str] = typer.Option(None, "--focus-diopters", help="phone focus settings cycled over the views, diopters: 0.5,2,3.5 (default: one locked setting); `calibrate` then fits K(focus)"),
    force: bool = typer.Option(False, "--force", help="replace an earlier board folder OUT_DIR (one with truth.json), after the new one is complete"),
) -> None:
    """Write calibration board image pairs (phone + sensor) at random poses, with the true poses.

    Built in a temporary folder beside OUT_DIR and renamed at the end: a refused or interrupted run
    leaves nothing; an existing OUT_DIR with files is replaced (--force) only after success."""
    from dfdcap.calib.boards import check_square, parse_board_size
    from dfdcap.capture.recorder import parse_size
    from dfdcap.fileio import atomic_folder, check_output_folder

    if not 1 <= views <= MAX_SIM_VIEWS:
        raise DfdcapError(f"--views {views}: need --views >= 1 and at most {MAX_SIM_VIEWS}")
    if not 0 <= corrupt <= views:
        raise DfdcapError(f"--corrupt {corrupt}: need 0 <= --corrupt <= --views ({views})")
    cols, rows = parse_board_size(board, "--board", "charuco" if charuco else "checkerboard")
    check_square(square, "--square")
    size = parse_size(phone_size, "--phone-size") if phone_size else None
    check_output_folder(out_dir, force=force, what="board folder")
    if force and out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / "truth.json").is_file():
        # --force replaces the whole folder: only one written here before (a session or `sessions/` would be lost)
        raise DfdcapError(f"{out_dir}: holds files but no truth.json, so it is no board folder of `dfdcap sim "
                          "checkerboard`; --force replaces only such a folder: choose another OUT_DIR")
    from dfdcap.sim.boards import BoardSpec, write_board_pairs

    from dfdcap.sim.rig import SENSOR_PRESETS, RigConfig

    from dfdcap.sim.rig import default_T_phone_from_sensor

    if sensor_preset not in SENSOR_PRESETS:
        raise DfdcapError(f"--sensor-preset: unknown {sensor_preset!r}; use one of {', '.join(SENSOR_PRESETS)}")
    rig = RigConfig(sensor=sensor_preset)
    if phone_dist is not None:
        rig.phone_dist = _parse_floats(phone_dist, "--phone-dist", 5)
        if max(map(abs, rig.phone_dist)) > 10:  # real lenses: |k| < 1; beyond, the projection overflows
            raise DfdcapError(f"--phone-dist {phone_dist!r}: coefficients beyond +-10 are no lens (a phone's are below 1)")
    if baseline is not None:
        if not 0 < baseline < 1:
            raise DfdcapError(f"--baseline {baseline}: expected a distance in metres between 0 and 1")
        rig.T_phone_from_sensor = default_T_phone_from_sensor(baseline)
    spec = BoardSpec("charuco" if charuco else "checkerboard", cols, rows, square)
    focus_list = None
    if focus_diopters is not None:
        nearest = rig.phone_min_focus_diopters  # the sim phone's closest focus
        try:
            focus_list = [plain_number(v) for v in focus_diopters.split(",") if v.strip()]
        except ValueError:
            focus_list = []
        if not focus_list or not all(0 <= v <= nearest for v in focus_list):
            raise DfdcapError(f"--focus-diopters {focus_diopters!r}: expected comma-separated diopters from 0 (infinity) "
                              f"to {nearest:g} (the sim phone's closest focus), e.g. 0.5,2,3.5")
    with atomic_folder(out_dir, force=force, what="board folder") as tmp:
        write_board_pairs(
            tmp, views, spec, rig=rig, phone_size=size, seed=seed, n_corrupt=corrupt, progress=True, jpeg_quality=jpeg_quality,
            focus_diopters=focus_list,
        )
    out.print(f"wrote {views} board view pairs to {out_dir} (truth in {out_dir / 'truth.json'})", soft_wrap=True, highlight=False)


@app.command()
def sync(
    session: Path = typer.Argument(..., help="a session folder (from `dfdcap record`)"),
    mode: str = typer.Option("many-to-one", "--mode", help="pairing: many-to-one (each phone frame its nearest depth) or one-to-one"),
    max_gap_ms: Optional[float] = typer.Option(None, "--max-gap-ms", help="largest phone-sensor gap to pair (default: half the longest sensor frame spacing short of a dropout, ~half the period)"),
    sensor_latency_ms: Optional[float] = typer.Option(None, "--sensor-latency-ms", help="fixed sensor latency subtracted from the arrival envelope (default: the session's, else 0)"),
) -> None:
    """Fit the phone and sensor clocks of a session, pair phone frames with depth frames, write sync.json."""
    from dfdcap.errors import SyncError
    from dfdcap.fileio import check_output_file
    from dfdcap.sync.io import MAX_GAP_NS, sync_session
    from dfdcap.sync.summary import print_sync_summary

    if max_gap_ms is not None and not 0 < max_gap_ms <= MAX_GAP_NS / 1e6:
        raise SyncError(f"--max-gap-ms: expected a gap in (0, {MAX_GAP_NS / 1e6:g}] ms, got {max_gap_ms}")
    if sensor_latency_ms is not None and not abs(sensor_latency_ms) <= 1000:
        raise SyncError(f"--sensor-latency-ms: expected a latency within +-1000 ms, got {sensor_latency_ms}")
    if (session / "session.json").is_file():
        check_output_file(session / "sync.json", what="sync.json")
    result = sync_session(
        session, mode=mode,
        max_gap_ns=None if max_gap_ms is None else int(round(max_gap_ms * 1e6)),
        sensor_latency_ns=None if sensor_latency_ms is None else int(round(sensor_latency_ms * 1e6)),
    )
    print_sync_summary(result, out)


@app.command()
def associate(
    first: Path = typer.Argument(..., help="first 'timestamp data' file (e.g. rgb.txt)"),
    second: Path = typer.Argument(..., help="second 'timestamp data' file (e.g. depth.txt)"),
    offset: float = typer.Option(0.0, "--offset", help="seconds added to the second file's timestamps"),
    max_difference: float = typer.Option(0.02, "--max-difference", "--max_difference", help="largest time difference (s) to pair"),
    first_only: bool = typer.Option(False, "--first-only", "--first_only", help="print only the first file's entries"),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="write here instead of stdout"),
) -> None:
    """TUM RGB-D association of two timestamp files (output as the benchmark's associate.py prints it)."""
    from dfdcap.fileio import atomic_write_text, check_distinct, check_output_file
    from dfdcap.sync.io import associate_files

    if output is not None:
        check_output_file(output, what="association file")
        check_distinct({"association file": output}, [first, second])
    text, n, n1, n2 = associate_files(first, second, offset, max_difference, first_only)
    if n == 0:  # stdout stays empty: say why on stderr
        console.print(f"[yellow]warning:[/yellow] no pairs: {n1} x {n2} entries, none within {max_difference:g} s of each other"
                      + (" (a file has no timestamp lines)" if not (n1 and n2) else ""), highlight=False, soft_wrap=True)
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        atomic_write_text(output, text)
        console.print(f"{n} pairs of {n1} x {n2} entries -> {output}")


@app.command()
def calibrate(
    input: Path = typer.Argument(..., help="folder with phone/NAME.* + sensor/NAME.* pairs, a session folder, or (--single) a folder of images"),
    board: Optional[str] = typer.Option(None, "--board", help="checkerboard inner corners COLSxROWS, e.g. 9x6"),
    square: Optional[float] = typer.Option(None, "--square", help="square side in metres (1.0 = board units)"),
    charuco: Optional[str] = typer.Option(None, "--charuco", help="ChArUco board: SQUARESxSQUARES,SQUARE_M,MARKER_M[,DICT_5X5_100]"),
    output: Path = typer.Option(Path("calibration.json"), "-o", "--output", help="calibration file to write"),
    single: bool = typer.Option(False, "--single", help="one camera's intrinsics from the images directly in INPUT"),
    dirs: str = typer.Option("phone,sensor", "--dirs", help="sub-folders holding the phone and sensor images"),
    distortion: str = typer.Option("auto", "--distortion", help="lens model: auto (chosen per camera by held-out error), "
                                   "k1k2, k1k2k3, k1k2+tangential, k1k2k3+tangential, rational, rational+thin-prism, or PHONE,SENSOR"),
    rational: bool = typer.Option(False, "--rational", help="same as --distortion rational"),
    depth_range: Optional[str] = typer.Option(None, "--depth-range", help="NEAR,FAR metres of the sessions to serve: "
                                              "warn when T's uncertainty moves reprojected depth > 1 px there (default: board distances)"),
    refine: bool = typer.Option(True, "--refine/--no-refine", help="jointly refine intrinsics and extrinsics after the fixed-intrinsics stereo fit"),
    no_reject: bool = typer.Option(False, "--no-reject", help="keep outlier views"),
    min_views: int = typer.Option(4, "--min-views", help="fewest usable views (pairs) accepted"),
    subpix_window: Optional[int] = typer.Option(None, "--subpix-window", help="fixed cornerSubPix half-window in px (default: scaled to the squares)"),
    workers: Optional[int] = typer.Option(None, "--workers", help="detection threads (default: all cores)"),
    yaml: Optional[Path] = typer.Option(None, "--yaml", help="also export OpenCV FileStorage YAML here"),
    report_png: Optional[Path] = typer.Option(None, "--report", help="also write the report PNG here"),
    force: bool = typer.Option(False, "--force", help="overwrite existing output files"),
) -> None:
    """Calibrate the phone and the sensor's colour camera (intrinsics + T_phone_from_sensor) from board images."""
    from dfdcap.calib.boards import parse_board
    from dfdcap.calib.calibrate import CalibrateOptions, calibrate_rig, calibrate_single
    from dfdcap.calib.io import Calibration, export_opencv_yaml, save_calibration
    from dfdcap.errors import CalibrationError
    from dfdcap.fileio import atomic_path, check_distinct, check_output_file

    for path, what in ((output, "calibration file"), (yaml, "YAML file"), (report_png, "report PNG")):
        if path is not None:
            check_output_file(path, force=force, what=what)
    if report_png is not None:
        _png_name(report_png, "--report")
    check_distinct({"calibration file": output, "--yaml file": yaml, "--report PNG": report_png})
    names = tuple(d.strip() for d in dirs.split(","))
    if len(names) != 2 or not all(names):
        raise CalibrationError(f"--dirs {dirs!r}: expected PHONE_DIR,SENSOR_DIR")
    if Path(names[0]) == Path(names[1]):
        raise CalibrationError(f"--dirs {dirs!r}: the phone and sensor folders are one folder (it would calibrate a camera "
                               f"against itself); name two")
    options = CalibrateOptions(
        parse_board(board, square, charuco), distortion="rational" if rational else distortion, refine=refine,
        reject_outliers=not no_reject, min_views=min_views, workers=workers, progress=True, subpix_window=subpix_window,
        depth_range_m=_parse_range(depth_range, "--depth-range") if depth_range else None,
    )
    options.models()  # a wrong --distortion fails here, before any image is read
    run = calibrate_single(input, options) if single else calibrate_rig(input, options, names)  # type: ignore[arg-type]
    for w in run.warnings:
        console.print(f"[yellow]warning:[/yellow] {w}", highlight=False, soft_wrap=True)
    cal = run.calibration
    with contextlib.ExitStack() as outputs:  # all or none: each is renamed into place once every one is written
        written = outputs.enter_context(atomic_path(output))
        save_calibration(cal, written)
        if yaml is not None:
            export_opencv_yaml(cal, outputs.enter_context(atomic_path(yaml)))
        if report_png is not None:
            from dfdcap.calib.report import write_calibration_report

            write_calibration_report(written, outputs.enter_context(atomic_path(report_png)))
    if isinstance(cal, Calibration):
        t = cal.T_phone_from_sensor[:3, 3]
        models = cal.stereo["distortion_models"]
        u = cal.stereo["uncertainty"]
        out.print(
            f"phone RMS {cal.phone_fit.rms_px:.3f} px, sensor RMS {cal.sensor_fit.rms_px:.3f} px, "
            f"stereo RMS {cal.stereo['rms_px']:.3f} px over {len(cal.stereo['views_used'])} pairs "
            f"({len(cal.stereo['views_dropped'])} dropped); t = ({t[0]:.4f}, {t[1]:.4f}, {t[2]:.4f}), |t| = {cal.baseline_m:.4f}",
            highlight=False,
        )
        out.print(
            f"lens models: phone {models['phone']['chosen']}"
            + (f" (refitted as {models['phone']['focus_refit']} with the focus model)" if models["phone"].get("focus_refit") else "")
            + f", sensor {models['sensor']['chosen']}; "
            f"T uncertainty (1 sigma): rotation {u['rotation_std_deg']:.4f} deg, translation "
            f"{u['translation_std']:.5f} {u['translation_unit']}", highlight=False,
        )
        if cal.focus_model is not None:
            fm = cal.focus_model
            out.print(f"focus breathing: scale {100 * fm.scale_per_diopter:+.4f} +- {100 * fm.scale_per_diopter_std:.4f} % per diopter "
                      f"around {fm.ref_diopters:g} D, principal point {fm.cx_per_diopter:+.3f}, {fm.cy_per_diopter:+.3f} px/D "
                      f"(bundle RMS {cal.focus_fit_rms_px:.3f} px)", highlight=False)
    else:
        c = cal.camera
        out.print(f"RMS {cal.fit.rms_px:.3f} px over {len(cal.fit.per_view_px)} views; fx {c.fx:.2f} fy {c.fy:.2f} "
                  f"cx {c.cx:.2f} cy {c.cy:.2f}", highlight=False)
    out.print(f"wrote {output}", highlight=False)


@app.command()
def devices() -> None:
    """List connected OpenNI2 sensors, RealSense cameras and ADB phones (say so when there are none)."""
    from rich.table import Table

    from dfdcap.capture.devices import list_devices

    rep = list_devices()
    if rep.devices:
        table = Table("kind", "use as", "model", "serial / URI", "detail")
        for d in rep.devices:
            table.add_row(d.kind, d.spec, d.model, d.serial, d.detail)
        out.print(table)
    names = {"openni": "OpenNI2 sensor", "realsense": "RealSense camera", "phone": "phone"}
    parts = [f"{len(rep.of_kind(k))} {names[k]}(s)" for k in rep.checked]
    unchecked = [names[k] for k in names if k not in rep.checked]
    if not rep.devices:
        out.print("No devices connected" + (f": no {', no '.join(names[k] for k in rep.checked)}" if rep.checked else "")
                  + (f" (could not check: {', '.join(unchecked)})" if unchecked else "") + ".", soft_wrap=True)
    else:
        out.print(", ".join(parts) + (f" (could not check: {', '.join(unchecked)})" if unchecked else "") + ".",
                  soft_wrap=True, highlight=False)
    for problem in rep.problems:
        console.print(f"[yellow]note:[/yellow] {escape(problem)}", highlight=False, soft_wrap=True)


def _parse_floats(text: str, option: str, n: int) -> tuple[float, ...]:
    """'0.1,-0.2,...' -> n finite floats."""
    try:
        vals = tuple(plain_number(x) for x in text.split(","))
    except ValueError:
        raise DfdcapError(f"{option} {text!r}: expected {n} comma-separated numbers") from None
    if len(vals) != n or not all(math.isfinite(v) for v in vals):
        raise DfdcapError(f"{option} {text!r}: expected {n} finite comma-separated numbers, got {len(vals)}")
    return vals


def _parse_range(text: str, option: str) -> tuple[float, float]:
    """'0.1,0.5' -> (0.1, 0.5): two finite positive numbers, the first smaller."""
    try:
        near, far = (plain_number(x) for x in text.split(","))
    except ValueError:
        raise DfdcapError(f"{option} {text!r}: expected NEAR,FAR in metres, e.g. 0.1,0.5") from None
    if not (0 < near < far < float("inf")):
        raise DfdcapError(f"{option} {text!r}: need 0 < NEAR < FAR (finite)")
    return near, far


def _model_options(options: Optional[list[str]]) -> dict:
    """["width=8", "levels=4"] -> {"width": 8, "levels": 4} (numbers and true/false parsed)."""
    from dfdcap.errors import ModelError

    cfg: dict = {}
    for opt in options or []:
        key, sep, val = opt.partition("=")
        if not sep or not key:
            raise ModelError(f"--set: expected KEY=VALUE, got {opt!r}")
        low = val.lower()
        if low in ("true", "false"):
            cfg[key] = low == "true"
        else:
            try:
                cfg[key] = int(val)
            except ValueError:
                try:
                    cfg[key] = float(val)
                except ValueError:
                    cfg[key] = val
            if "_" in val and not isinstance(cfg[key], str):  # int() and float() read "1_6" as 16
                raise ModelError(f"--set {opt}: {val!r} is not a number (no underscores in numbers)")
    return cfg


# where training runs (pretrain and finetune): Lightning's own settings
ACCELERATOR = typer.Option("auto", "--accelerator", help="Lightning accelerator: auto | cpu | gpu | mps")
DEVICES = typer.Option("auto", "--devices", help="devices per node: auto, a count (-1 = all) or ids 0,1")
NUM_NODES = typer.Option(1, "--num-nodes", help="machines (under torchrun / SLURM)")
STRATEGY = typer.Option("auto", "--strategy", help="Lightning strategy: auto | ddp | ddp_spawn | fsdp ...")
WORKERS = typer.Option(0, "--workers", help="DataLoader worker processes per training process")


@app.command()
def pretrain(
    model: str = typer.Option(..., "--model", help="ddff | lstm-ddff | recurrent-ae | poolnet | poolnet-coc | fvnet"),
    output: Path = typer.Option(..., "-o", "--output", help="checkpoint to write (.pt)"),
    steps: int = typer.Option(2000, "--steps", help="optimiser steps"),
    size: int = typer.Option(128, "--size", help="synthetic stack size (pixels, square)"),
    crop: Optional[int] = typer.Option(None, "--crop", help="training crop (pixels; default --size)"),
    pool: int = typer.Option(512, "--pool", help="synthetic stacks rendered once and reused with augmentation"),
    render_workers: Optional[int] = typer.Option(None, "--render-workers", help="processes rendering the pool (default: all cores)"),
    batch_size: int = typer.Option(4, "--batch-size"),
    frames: int = typer.Option(5, "--frames", help="frames per synthetic stack (batches use 3..frames)"),
    lr: float = typer.Option(1e-3, "--lr"),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="model option KEY=VALUE (e.g. width=8, coc=true; with --init: options that keep the weights, e.g. end_margin=0.12, or add layers, e.g. reach=0.25)"),
    seed: int = typer.Option(0, "--seed", min=0, max=2**32 - 1),
    checks: int = typer.Option(5, "--checks", help="validations (and checkpoints) during the run"),
    init: Optional[str] = typer.Option(None, "--init", help="checkpoint of the same model to continue from: a .pt file or a shipped name (fvnet)"),
    accelerator: str = ACCELERATOR,
    devices: str = DEVICES,
    num_nodes: int = NUM_NODES,
    strategy: str = STRATEGY,
    workers: int = WORKERS,
) -> None:
    """Pretrain a DFF network on a pool of synthetic focus stacks from the thin-lens simulator."""
    from dfdcap.fileio import check_distinct, check_output_file
    from dfdcap.models.train import Hardware, parse_devices, pretrain as run

    check_output_file(output, what="checkpoint")
    check_distinct({"checkpoint": output}, [init] if init else [])
    hw = Hardware(accelerator, parse_devices(devices), num_nodes, strategy, workers)
    r = run(model, output, steps=steps, size=size, batch_size=batch_size, frames=frames, lr=lr,
            config=_model_options(set_), seed=seed, pool=pool, crop=crop, render_workers=render_workers,
            n_checks=checks, init=init, hardware=hw)
    if not r.is_global_zero:
        return
    out.print(f"wrote {r.best_pt} (best validation loss {r.best_val_loss:.5f}, diopter position L1, "
              f"{r.global_step} steps); run in {r.run_dir}")


@app.command()
def finetune(
    model: Optional[str] = typer.Option(None, "--model", help="ddff | lstm-ddff | recurrent-ae | poolnet | poolnet-coc | fvnet (default: --init's)"),
    data: Path = typer.Option(..., "--data", help="dataset.h5 (build-dataset's file or DDFF-12)"),
    output: Path = typer.Option(..., "-o", "--output", help="run folder"),
    init: Optional[str] = typer.Option(None, "--init", help="checkpoint to start from: a .pt file (e.g. from pretrain) or a shipped name (fvnet)"),
    epochs: int = typer.Option(20, "--epochs"),
    batch_size: int = typer.Option(2, "--batch-size"),
    crop: int = typer.Option(256, "--crop", help="square random crop side (pixels); a value over the images' shorter side is reduced to it (run.json records the crop used)"),
    lr: float = typer.Option(1e-4, "--lr"),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="continue from the run folder's last.ckpt"),
    seed: int = typer.Option(0, "--seed", min=0, max=2**32 - 1, help="sample order, crops, frame subsets: the same seed trains the same weights"),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="model option KEY=VALUE (without --init)"),
    precision: Optional[str] = typer.Option(None, "--precision", help="Lightning precision, e.g. 16-mixed"),
    accelerator: str = ACCELERATOR,
    devices: str = DEVICES,
    num_nodes: int = NUM_NODES,
    strategy: str = STRATEGY,
    workers: int = WORKERS,
) -> None:
    """Fine-tune a DFF network on a dataset file (diopter-position L1, random crops, 4-5 frames keeping both ends, Adam)."""
    from dfdcap.fileio import read_json
    from dfdcap.models.checkpoint import read_checkpoint
    from dfdcap.models.shipped import resolve_checkpoint
    from dfdcap.models.train import Hardware, finetune as run, parse_devices

    init_path = resolve_checkpoint(init) if init else None
    if model is None:
        if init_path is None:
            raise DfdcapError("finetune: give --model NAME, or --init CHECKPOINT to continue its model")
        model = read_checkpoint(init_path)["model"]
    hw = Hardware(accelerator, parse_devices(devices), num_nodes, strategy, workers)
    r = run(model, data, output, init=init_path, epochs=epochs, batch_size=batch_size, crop=crop, lr=lr,
            resume=resume, config=_model_options(set_), precision=precision, hardware=hw, seed=seed)
    if not r.is_global_zero:
        return
    if r.resumed_from:
        out.print(f"resumed from {r.resumed_from}")
    info = read_json(r.run_dir / "run.json")
    held = " (a held-out session of it)" if info.get("held_out_val") else ""
    out.print(f"best validation loss {r.best_val_loss:.5f} (diopter position L1) -> {r.best_pt}; last -> {r.last_pt}")
    out.print(f"trained on split {info.get('train_split')!r} (sessions: {', '.join(info.get('train_sessions') or []) or '?'}); "
              f"checkpoint selected on {info.get('val_split')!r}{held} (sessions: {', '.join(info.get('val_sessions') or []) or '?'})",
              highlight=False, soft_wrap=True)


@app.command()
def evaluate(
    models: list[str] = typer.Argument(..., help="checkpoint(s): a .pt file (runs/x/best.pt) or a shipped name (fvnet); several -> one column each"),
    data: Path = typer.Option(..., "--data", help="dataset.h5 (build-dataset's file, DDFF-12 or mDFF)"),
    split: Optional[str] = typer.Option(None, "--split", help="default: test, else val, else train"),
    max_samples: Optional[int] = typer.Option(None, "--max-samples", help="score only the split's first N stacks (default: all)"),
    json_out: Optional[Path] = typer.Option(None, "--json", help="also write the metrics here as JSON (deltas, badpix as fractions)"),
) -> None:
    """Print the DDFF-12 metric table of network(s) beside the classical depth-from-focus baseline."""
    from dfdcap.errors import ModelError
    from dfdcap.fileio import atomic_write_json, check_distinct, check_output_file
    from dfdcap.models.evaluate import evaluate as run, metrics_table, result_json

    if max_samples is not None and max_samples < 1:
        raise ModelError(f"--max-samples: expected at least 1 stack, got {max_samples}")
    if json_out is not None:
        check_output_file(json_out, what="--json file")
        check_distinct({"--json file": json_out}, [data, *models])
    r = run(models, data, split=split, max_samples=max_samples)
    out.print(f"scoring split {r.split!r} of {data} ({r.n_samples} stacks)", highlight=False, soft_wrap=True)
    for w in r.warnings:
        console.print(f"[yellow]warning: {escape(w)}[/yellow]", highlight=False, soft_wrap=True)
    out.print(metrics_table(r.metrics, f"{r.source}, {r.n_samples} stacks, masked pixels"))
    if r.disparity is not None:
        out.print(metrics_table(r.disparity, f"{r.source} in DDFF-12 disparity (px; m in the labels reads px)"))
    if json_out is not None:
        atomic_write_json(json_out, result_json(r))
        out.print(f"wrote {json_out}", highlight=False)


@app.command()
def predict(
    args: list[str] = typer.Argument(..., metavar="MODEL IMAGES...", help="a .pt checkpoint or a shipped name (fvnet), then the stack's images; with --classical only the images"),
    focus: Optional[str] = typer.Option(None, "--focus", help="focus distance of each image, metres: 0.1,0.15,..."),
    diopters: Optional[str] = typer.Option(None, "--diopters", help="focus of each image in diopters (1/m): 10,6.7,..."),
    index: bool = typer.Option(False, "--index", help="focus unknown: frame order is the focus order; output = frame index of best focus"),
    classical: bool = typer.Option(False, "--classical", help="the classical DFF baseline instead of a network (no MODEL)"),
    scale: Optional[float] = typer.Option(None, "--scale", help="run at this fraction of the image size (blur shrinks with it)"),
    size: Optional[str] = typer.Option(None, "--size", help="run at WxH (or W, keeping the aspect)"),
    tile: int = typer.Option(1024, "--tile", help="tile side in pixels at the run size (bounded memory); 0 = whole image"),
    output: Path = typer.Option(Path("depth.png"), "-o", "--output", help="colour picture (.png or .jpg); 16-bit PNG beside it (_mm: mm, _index: 0..65535 = first..last frame)"),
    no_align: bool = typer.Option(False, "--no-align", help="do not register the slices to the middle one (focus breathing) first"),
) -> None:
    """Predict depth from a focus stack: a colour-mapped picture and a 16-bit PNG (mm, or frame index with --index)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from dfdcap.fileio import check_distinct, check_output_file
    from dfdcap.models.predict import focus_coordinates, output_paths, predict as run
    from dfdcap.models.shipped import shipped_names

    model, images = (None, args) if classical else (args[0], args[1:])
    if classical and not Path(args[0]).is_file() and (args[0] in shipped_names() or args[0].endswith(".pt")):
        raise DfdcapError(f"predict --classical takes only the stack's images: drop the model {args[0]!r}")
    coords = focus_coordinates(len(images), focus, diopters, index)
    colour, raw = output_paths(output, coords.unit)
    for path in (colour, raw):
        check_output_file(path, what="depth PNG", create_parent=True)
    check_distinct({"depth picture": colour, "16-bit depth PNG": raw}, [*images, *([model] if model else [])])
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as bar:  # reading and registering the frames, then the tiles
        task = bar.add_task("depth tiles", total=None)
        r = run(model, images, coords, output, scale=scale, size=size, tile=tile, align=not no_align,
                progress=lambda done, total: bar.update(task, completed=done, total=total))
    for note in r.notes:
        console.print(f"[yellow]warning:[/yellow] {escape(note)}", highlight=False, soft_wrap=True)
    d = r.depth_m
    what = f"depth {d.min():.3f}-{d.max():.3f} m" if r.unit == "m" else f"best-focus frame index {d.min():.2f}-{d.max():.2f}"
    out.print(f"wrote {r.colour_png} and {r.depth_png} ({r.size[0]}x{r.size[1]}, {r.tiles} tile(s), {what})",
              highlight=False, soft_wrap=True)


@app.command()
def pull(
    session: Path = typer.Argument(..., help="session folder whose phone frames are missing (interrupted recording or pull)"),
    phone: Optional[str] = typer.Option(None, "--phone", help="ADB serial (default: the session's phone, or the only one)"),
    recording: Optional[str] = typer.Option(None, "--recording", help="the phone's recording id (default: found from the session)"),
    keep_on_phone: bool = typer.Option(False, "--keep-on-phone", help="do not delete the recording on the phone after the verified pull"),
) -> None:
    """Fetch a session's phone frames that are still on the phone (resumes; verifies size and sha256)."""
    from dfdcap.capture.phone import resume_pull

    for option, value in (("--phone", phone), ("--recording", recording)):
        if value is not None and not value.strip():
            raise DfdcapError(f"{option}: empty; give a value or leave the option out")
    r = resume_pull(session, phone, recording, delete=not keep_on_phone)
    for note in r.notes:  # kept in session.json's phone_pull as well
        console.print(f"[yellow]warning:[/yellow] {escape(note)}", highlight=False, soft_wrap=True)
    out.print(
        f"{session}: {r.frames} phone frames ({r.pulled} pulled, {r.skipped} already here, "
        f"{r.bytes_pulled / 1e6:.1f} MB in {r.seconds:.1f} s); "
        + ("removed from the phone" if r.deleted_on_phone else "kept on the phone"),
        highlight=False,
    )


@app.command("build-dataset")
def build_dataset_cmd(
    sessions: list[Path] = typer.Argument(..., help="session folders (each synced with `dfdcap sync`)"),
    calib: Path = typer.Option(..., "--calib", help="calibration.json from `dfdcap calibrate`"),
    output: Path = typer.Option(..., "-o", "--output", help="dataset .h5 to write"),
    size: Optional[str] = typer.Option(None, "--size", help="output WxH (after --crop); default the crop / full frame"),
    crop: Optional[str] = typer.Option(None, "--crop", help="phone-pixel crop: WxH (centred) or X,Y,W,H"),
    frames: Optional[int] = typer.Option(None, "--frames", help="frames per stack (default: the whole ramp)"),
    fuse: str = typer.Option("none", "--fuse", help="depth of a stack: none (reference frame's) | median | tsdf"),
    val: Optional[list[str]] = typer.Option(None, "--val", help="session (folder name) for the val split; repeatable"),
    test: Optional[list[str]] = typer.Option(None, "--test", help="session for the test split; repeatable"),
    val_fraction: float = typer.Option(0.0, "--val-fraction", help="fraction of sessions for val (nearest count, at least 1)"),
    test_fraction: float = typer.Option(0.0, "--test-fraction", help="fraction of sessions for test (nearest count, at least 1)"),
    coc: bool = typer.Option(False, "--coc/--no-coc", help="also store CoC maps (by default readers derive them from depth and focus; files are about half the size)"),
    ply: Optional[Path] = typer.Option(None, "--ply", help="also write the first sample as a coloured point cloud"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing output file"),
    workers: Optional[int] = typer.Option(None, "--workers", help="processes building stacks (default: one per core)"),
    align: str = typer.Option("ecc", "--align", help="slices to the reference slice's geometry: ecc (focus model + registration) | prior (focus model only) | none"),
) -> None:
    """Reproject sensor depth into the phone view and write focus stacks + depth + mask (HDF5)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from dfdcap.calib.io import load_calibration
    from dfdcap.dataset.build import BuildOptions, RigGeometry, build_dataset
    from dfdcap.errors import DatasetError
    from dfdcap.fileio import check_distinct, check_output_file, read_json

    check_output_file(output, force=force, what="dataset")
    if output.suffix.lower() not in (".h5", ".hdf5"):  # an HDF5 file under another name misleads every reader
        raise DfdcapError(f"{output}: the dataset is an HDF5 file: name it .h5 (or .hdf5)")
    if ply:
        check_output_file(ply, what="point cloud")
    check_distinct({"dataset": output, "--ply point cloud": ply}, [calib])
    if ply and ply.suffix.lower() != ".ply":  # the file is PLY whatever its name
        raise DfdcapError(f"{ply}: --ply writes a PLY point cloud: name it .ply")
    try:
        cal = load_calibration(calib)
    except DfdcapError as e:
        raise DatasetError(str(e)) from None
    opts = BuildOptions(frames=frames, size=size, crop=crop, fuse=fuse, coc=coc, val=tuple(val or ()),
                        test=tuple(test or ()), val_fraction=val_fraction, test_fraction=test_fraction, workers=workers,
                        align=align)
    rig = RigGeometry.from_calibration(cal, str(calib))
    if (w := rig.baseline_warning()) is not None:
        console.print(f"[yellow]warning:[/yellow] {escape(w)}", highlight=False, soft_wrap=True)
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("stacks", total=None)
        summary = build_dataset(
            sessions, rig, output, opts, force=force,
            progress=lambda done, total: bar.update(task, completed=done, total=total), calibration_doc=read_json(calib),
        )
    splits = ", ".join(f"{k} {v}" for k, v in summary.counts.items())
    out.print(
        f"wrote {summary.path}: {splits} stacks, {summary.phone_frames} phone frames in {summary.seconds:.1f} s "
        f"({summary.frames_per_s:.0f} frames/s), {100 * summary.valid_fraction:.0f} % valid depth"
        + (f"; {summary.skipped_unpaired} stacks without a sensor partner skipped" if summary.skipped_unpaired else "")
    )
    for note in summary.notes:
        out.print(f"note: {note}", markup=False, highlight=False)
    for name, reasons in summary.suspect.items():
        out.print(f"suspect sync: {name}: {'; '.join(reasons)}", style="yellow", markup=False, highlight=False)
    if ply:
        from dfdcap.dataset.export import export_ply

        path, n = export_ply(output, ply)
        out.print(f"wrote {path} ({n} points)")


@app.command()
def export(
    dataset: Path = typer.Argument(..., help="dataset .h5 written by build-dataset"),
    output: Path = typer.Option(..., "-o", "--output", help=".ply point cloud to write"),
    split: Optional[str] = typer.Option(None, "--split", help="split (default: the first)"),
    index: int = typer.Option(0, "--index", help="sample index in the split"),
) -> None:
    """Write one stack's depth as a coloured point cloud (.ply) for a look in any 3D viewer."""
    from dfdcap.dataset.export import export_ply
    from dfdcap.fileio import check_distinct, check_output_file

    check_output_file(output, what="point cloud")
    check_distinct({"point cloud": output}, [dataset])
    if output.suffix.lower() != ".ply":  # the file is PLY whatever its name: x.pcd would mislead a viewer
        raise DfdcapError(f"{output}: export writes a PLY point cloud: name it .ply")
    path, n = export_ply(dataset, output, split, index)
    out.print(f"wrote {path} ({n} points)")


@app.command("import-opencamera")
def import_opencamera_cmd(
    folder: Path = typer.Argument(..., help="folder with Open Camera's focus bracketing photos IMG_<date>_<time>_<i>.jpg"),
    source: float = typer.Option(..., "--source-diopters", help="the bracket's source focus, diopters (Open Camera's manual focus)"),
    target: float = typer.Option(..., "--target-diopters", help="the bracket's target focus, diopters"),
    n: int = typer.Option(..., "-n", "--n-images", help="photos per bracket (Open Camera's setting)"),
    output: Path = typer.Option(Path("sessions"), "-o", "--output", help="folder that receives the session folder"),
    name: str = typer.Option("opencamera", "--name", help="session name (letters, digits, . _ -)"),
    utc_offset: Optional[str] = typer.Option(None, "--utc-offset", help="the phone's UTC offset +HH:MM when the photos lack OffsetTimeOriginal (default UTC)"),
) -> None:
    """Make a phone-only session from Open Camera focus brackets taken by hand (no ADB, no sensor):
    focus per photo from Open Camera's rule, time from EXIF. Static scenes only."""
    from dfdcap.capture.opencamera import import_opencamera
    from dfdcap.capture.opencamera_focus import BracketingSettings

    for option, v in (("--source-diopters", source), ("--target-diopters", target)):
        if not 0 < v <= 100:  # 100 D = 1 cm, far nearer than a phone focuses
            raise DfdcapError(f"{option} {v:g}: expected a focus in diopters above 0 and at most 100 "
                              f"(0 D = infinity gives no finite stack; 100 D = 1 cm)")
    r = import_opencamera(folder, BracketingSettings(source, target, n), output, name=name, utc_offset=utc_offset)
    for w in r.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(w)}", highlight=False, soft_wrap=True)
    out.print(str(r.path), soft_wrap=True, highlight=False)
    out.print(f"{r.ramps} focus brackets, {r.frames} photos"
              + (f"; skipped {len(r.skipped_incomplete)} incomplete: {', '.join(r.skipped_incomplete)}" if r.skipped_incomplete else ""),
              soft_wrap=True, highlight=False)


@app.command()
def align(
    frames: list[Path] = typer.Argument(..., help="a focal sweep's frames, in sweep order"),
    output: Path = typer.Option(..., "-o", "--output", help="folder for the aligned frames (PNG) and alignment.json"),
    reference: Optional[int] = typer.Option(None, "--reference", help="frame to align to (position; default the middle one)"),
    motion: str = typer.Option("affine", "--motion", help="affine | similarity | homography | translation"),
    max_side: int = typer.Option(512, "--max-side", help="most pixels on the long side of the copies registration runs on (shrunk by a whole factor); maps apply at full size"),
    force: bool = typer.Option(False, "--force", help="replace an earlier alignment in the output folder (its frames and alignment.json)"),
) -> None:
    """Register a focal sweep's frames to one of them (focus breathing): aligned frames + alignment.json."""
    from dfdcap.dataset.align import AlignOptions, align_files

    doc = align_files(frames, output, reference, AlignOptions(motion=motion, max_side_px=max_side), force=force)
    rows = doc["frames"]
    bad = [r for r in rows if r["status"].startswith("fallback")]
    out.print(f"aligned {len(rows)} frames to {doc['reference_frame']}: scale {rows[0]['scale']:.4f} .. {rows[-1]['scale']:.4f}"
              + (f"; {len(bad)} not registered (left as they are)" if bad else "") + f" -> {output / 'alignment.json'}",
              highlight=False, soft_wrap=True)


def _click_classes(name: str) -> tuple[type, ...]:
    """click's exception class `name` from typer's vendored click (typer >= 0.20) and the real one;
    typer's copy has no Abort (it raises KeyboardInterrupt)."""
    types: list[type] = []
    for mod in ("typer._click.exceptions", "click.exceptions"):
        try:
            cls = getattr(__import__(mod, fromlist=[name]), name, None)
        except ImportError:
            continue
        if cls is not None:
            types.append(cls)
    return tuple(types)


def _os_error_line(e: OSError) -> str:
    """'PATH: what went wrong' for an OSError (disk full, read-only, missing folder, ...)."""
    import errno
    import os

    what = (e.strerror or os.strerror(e.errno)) if e.errno else str(e)
    if e.errno == errno.ENOSPC:
        what += " (free some space or write elsewhere)"
    elif e.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        what += " (check the folder's permissions or write elsewhere)"
    name = e.filename if e.filename is not None else "file"
    return f"{name}: {what}"


def _out_of_memory(detail: str) -> None:
    console.print(f"[red]error:[/red] out of memory{': ' + escape(detail) if detail else ''} "
                  "(ask for smaller sizes or counts)", highlight=False, soft_wrap=True)
    sys.exit(1)


def _refuse_underscores(cmd) -> None:  # type: ignore[no-untyped-def]
    """Make every number parameter of `cmd` and its sub-commands refuse "1_0".

    Python's int() and float() read "1_0" as 10, so `--stacks 1_0` or `--fps 1_0` would quietly run
    with 10: a typo nobody means as a number. Checked on the parsed value (a number from a string with
    an underscore), so it holds for the real click and for typer's own copy of it alike."""
    for param in cmd.params:
        param.process_value = _no_underscores(param, param.process_value)
    for sub in getattr(cmd, "commands", {}).values():
        _refuse_underscores(sub)


def _no_underscores(param, process_value):  # type: ignore[no-untyped-def]
    def check(ctx, value):  # type: ignore[no-untyped-def]
        rv = process_value(ctx, value)
        if isinstance(value, str) and "_" in value and isinstance(rv, (int, float)) and not isinstance(rv, bool):
            raise typer.BadParameter(f"{value!r} is not a number (no underscores in numbers)", ctx=ctx, param=param)
        return rv

    return check


def command():  # type: ignore[no-untyped-def]
    """The click command of the whole CLI, as main() runs it (numbers refuse underscores)."""
    cmd = typer.main.get_command(app)
    _refuse_underscores(cmd)
    return cmd


def main(args: Optional[list[str]] = None) -> None:
    """The entry point: one error path for the whole CLI.

    Usage errors print as click prints them (exit 2); DfdcapError and OSError become one red line
    (exit 1); Ctrl-C prints "interrupted" (exit 130). Never a traceback for any of these.
    """
    import errno

    from dfdcap.interrupts import CtrlCFlag

    try:
        with CtrlCFlag() as ctrl_c:  # a Ctrl-C a finalizer swallowed is neither printed nor lost
            rv = command()(args=args, prog_name="dfdcap", standalone_mode=False)
        if ctrl_c.pressed and not (isinstance(rv, int) and rv != 0):
            raise KeyboardInterrupt  # the command ran on to its end: its outputs are complete
    except DfdcapError as e:
        code = getattr(e, "exit_code", 1)
        label = "[yellow]interrupted:[/yellow]" if code in (130, 143) else "[red]error:[/red]"
        console.print(f"{label} {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(code)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
        sys.exit(130)
    except MemoryError as e:  # sizes or counts beyond this machine: say so, no traceback
        _out_of_memory(str(e))
    except RuntimeError as e:  # PyTorch's allocators raise RuntimeError (torch.OutOfMemoryError on CUDA)
        msg = str(e).strip()
        if "can't allocate memory" not in msg and "out of memory" not in msg.lower():
            raise
        _out_of_memory(msg.splitlines()[0][:160] if msg else "")
    except OSError as e:
        if e.errno == errno.EPIPE:  # `dfdcap associate ... | head`
            sys.exit(1)
        console.print(f"[red]error:[/red] {escape(_os_error_line(e))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except _click_classes("ClickException") as e:
        e.show()  # type: ignore[attr-defined]
        sys.exit(e.exit_code)  # type: ignore[attr-defined]
    except _click_classes("Abort"):
        console.print("[yellow]interrupted[/yellow]")
        sys.exit(130)
    if isinstance(rv, int) and rv != 0:  # typer turns Ctrl-C into Exit(130) and returns the code
        if rv == 130:
            console.print("[yellow]interrupted[/yellow]")
        sys.exit(rv)


def run() -> None:
    """The `dfdcap` program: main(), and after Ctrl-C (exit 130) an immediate exit.

    By then the work has stopped and cleaned up after itself and the message is printed; tearing
    the interpreter down as well let OpenCV's native threads abort the process now and then
    (SIGABRT, "FATAL: exception not rethrown", exit 134: 2 of 40 runs of an interrupted `calibrate`).
    main() itself only raises SystemExit, for callers in this process (tests, notebooks)."""
    import os

    try:
        main()
    except SystemExit as e:
        if e.code != 130:
            raise
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)


if __name__ == "__main__":
    run()
