"""Record one session: sensor frames streamed to disk while the phone sweeps its focus.

Threads, and why:
- the caller's thread pulls sensor frames and never waits on PNG encoding: each frame goes to
  a writer thread pool (cv2.imencode releases the GIL, so the encoders use every core);
- one committer thread appends index lines in frame order, each only after both of its PNGs
  exist (a single in-order committer of futures), so a crash loses at most frames in flight;
- one phone monitor thread does every phone call during the sweep (clock probes at least every
  `probe_interval_s`, polling is_done), so a slow phone link never stalls the sensor stream.
At most `max_pending` frames wait for encoding; beyond that a live sensor's frame is dropped
and counted (`on_full="drop"`), a recording file's producer waits instead (`on_full="wait"`).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Literal

from dfdcap.capture.base import Phone, Sensor, SensorFrame
from dfdcap.capture.session import SessionWriter
from dfdcap.errors import DeviceError, DfdcapError, SessionError
from dfdcap.lens import FocusSchedule


PNG_PRESETS = ("fast", "compact")


def png_params(preset: str) -> tuple[int, ...]:
    """OpenCV PNG flags of a preset. fast: stored (no deflate, no filter), ~1.5 ms CPU and
    1.5 MB per 640x480 pair; compact: OpenCV's defaults (deflate level 1, RLE), ~13 ms CPU and
    ~0.8 MB per pair on noisy frames (benchmarks/record_throughput.py). Both are lossless."""
    import cv2

    if preset == "fast":
        return (cv2.IMWRITE_PNG_COMPRESSION, 0, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE)
    if preset == "compact":
        return ()
    raise SessionError(f"PNG preset {preset!r}: expected one of {', '.join(PNG_PRESETS)}")


def default_workers() -> int:
    """PNG writer threads: the core count plus 2, at least 4. Encoding releases the GIL and file
    writes may block on the disk, so a few more threads than cores keep every core busy."""
    return max(4, (os.cpu_count() or 2) + 2)


class RecordingInterrupted(SessionError):
    """The recording stopped early (Ctrl-C, a device error); the session was kept, marked
    interrupted, with every finished frame indexed. `path` is the session folder."""

    def __init__(self, message: str, path: Path):
        super().__init__(message)
        self.path = path


@dataclass
class RecordStats:
    """Counters of one recording (also stored in session.json under "recorder")."""

    sensor_frames_written: int = 0
    sensor_frames_dropped: int = 0
    phone_frames: int = 0
    probes: int = 0
    max_queue_depth: int = 0
    duration_s: float = 0.0


class SensorFrameSink:
    """Encodes sensor frames in a thread pool and indexes them in frame order.

    submit() returns at once (or drops the frame when `max_pending` frames are still being
    encoded and on_full="drop"); close() waits for every submitted frame and indexes it.
    """

    def __init__(
        self,
        writer: SessionWriter,
        workers: int,
        max_pending: int,
        on_full: Literal["drop", "wait"] = "drop",
    ):
        if workers < 1 or max_pending < 1:
            raise SessionError(f"recorder: workers and max_pending must be >= 1, got {workers} and {max_pending}")
        if on_full not in ("drop", "wait"):
            raise SessionError(f"recorder: on_full must be 'drop' or 'wait', got {on_full!r}")
        self._writer = writer
        self._wait = on_full == "wait"
        self._slots = threading.Semaphore(max_pending)
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="dfdcap-png")
        self._order: queue.SimpleQueue[Future | None] = queue.SimpleQueue()
        self._committer = threading.Thread(target=self._commit_loop, name="dfdcap-index", daemon=True)
        self._committer.start()
        self.submitted = 0
        self.written = 0
        self.dropped = 0
        self.max_depth = 0
        self.error: BaseException | None = None
        self._failed = 0
        self._closed = False

    @property
    def depth(self) -> int:
        """Frames submitted and not yet indexed."""
        return self.submitted - self.written - self._failed

    def submit(self, frame: SensorFrame) -> bool:
        """Queue one frame for writing; False if it was dropped. Raises the first write error."""
        if self.error is not None:
            raise SessionError(f"{self._writer.path}: writing sensor frames failed ({self.error})") from self.error
        if not self._slots.acquire(blocking=self._wait):
            self.dropped += 1
            return False
        fut = self._pool.submit(
            self._writer.save_sensor_frame, frame.index, frame.t_host_ns, frame.t_device_ns, frame.rgb, frame.depth
        )
        self._order.put(fut)
        self.submitted += 1
        self.max_depth = max(self.max_depth, self.depth)
        return True

    def _commit_loop(self) -> None:
        while True:
            fut = self._order.get()
            if fut is None:
                return
            try:
                rec = fut.result()
                self._writer.append_sensor_record(rec)
                self.written += 1
            except BaseException as e:  # disk full, permission: stop the recording, keep the rest
                self._failed += 1
                if self.error is None:
                    self.error = e
            finally:
                self._slots.release()

    def close(self) -> None:
        """Wait until every submitted frame is written and indexed; stop the threads."""
        if self._closed:
            return
        self._closed = True
        self._order.put(None)
        self._committer.join()
        self._pool.shutdown(wait=True)


class PhoneMonitor(threading.Thread):
    """Talks to the phone during the sweep: a clock probe every `probe_interval_s` and is_done
    polls every `poll_s`. `done_host_ns` is set (host clock) when the phone reports done."""

    def __init__(self, phone: Phone, writer: SessionWriter, probe_interval_s: float, poll_s: float = 0.05):
        super().__init__(name="dfdcap-phone", daemon=True)
        self.phone = phone
        self.writer = writer
        self.probe_interval_s = probe_interval_s
        self.poll_s = poll_s
        self.probes = 0
        self.done_host_ns: int | None = None
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            next_probe = time.monotonic()
            while not self._stop_event.is_set():
                now = time.monotonic()
                if now >= next_probe:
                    self.writer.append_probe(self.phone.probe())
                    self.probes += 1
                    next_probe = now + self.probe_interval_s
                if self.done_host_ns is None and self.phone.is_done():
                    self.done_host_ns = time.monotonic_ns()
                self._stop_event.wait(max(0.0, min(self.poll_s, next_probe - time.monotonic())))
        except BaseException as e:
            self.error = e

    def stop(self) -> None:
        self._stop_event.set()
        self.join()


def _progress(enabled: bool, total_s: float):
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]recording[/bold]"),
        BarColumn(),
        TimeElapsedColumn(),
        TextColumn(
            "sensor {task.fields[written]} written, queue {task.fields[queue]}, "
            "dropped {task.fields[dropped]}; phone {task.fields[phone]}"
        ),
        console=Console(stderr=True),
        disable=not enabled,
        refresh_per_second=5,
    )


def _status(enabled: bool, text: str):
    """A rich spinner on stderr for work without a frame count (e.g. pulling the phone's frames)."""
    import contextlib

    from rich.console import Console

    return Console(stderr=True).status(text) if enabled else contextlib.nullcontext()


def _session_extra(sensor: Sensor, phone_fps: float) -> dict:
    """session.json extras; a sensor that knows its fixed transport latency states it, so that
    `dfdcap sync` maps device stamps to capture time rather than to the earliest arrival."""
    extra: dict = {"phone_fps": phone_fps}
    if sensor.known_latency_ns is not None:
        extra["sensor_latency_ns"] = int(sensor.known_latency_ns)
    return extra


def record_session(
    sensor: Sensor,
    phone: Phone,
    schedule: FocusSchedule,
    out_dir: str | os.PathLike,
    name: str,
    *,
    phone_fps: float = 10.0,
    probe_interval_s: float = 0.25,
    edge_probes: int = 25,
    tail_s: float = 0.2,
    truth_rig: Callable[[], dict] | dict | None = None,
    workers: int | None = None,
    max_pending: int = 64,
    on_full: Literal["drop", "wait"] = "drop",
    png: str = "fast",
    timeout_s: float | None = None,
    progress: bool = True,
    stats: RecordStats | None = None,
) -> Path:
    """Record one session into a new folder under out_dir and return its path.

    Order: session.json (recording) -> sensor intrinsics, phone camera -> truth/rig.json (sim) ->
    `edge_probes` clock probes -> the sensor stream starts -> phone.start(schedule, phone_fps)
    -> frames stream, probes every probe_interval_s -> the phone is done (+ tail_s of sensor
    frames, so the sensor covers the last phone frame) -> probes -> phone.stop, phone.fetch ->
    session.json complete. When encoding falls max_pending frames behind, a live sensor's new
    frames are dropped and counted (on_full="drop", stats and session.json "recorder"); a
    recording file's playback waits instead (on_full="wait"). png: "fast" or "compact"
    (see png_params). workers: PNG writer threads (default: default_workers()).

    Ctrl-C or a DfdcapError (a sensor that stops delivering, a phone that does not finish within
    timeout_s, default 2x the sweep + 10 s) ends the recording: finished frames are indexed,
    the phone's frames so far are fetched, the session is marked interrupted, and
    RecordingInterrupted (with .path) is raised. The caller owns and closes sensor and phone.
    """
    if phone_fps <= 0 or probe_interval_s <= 0 or edge_probes < 1 or tail_s < 0:
        raise SessionError(
            f"recorder: need phone_fps > 0, probe_interval_s > 0, edge_probes >= 1, tail_s >= 0; got "
            f"{phone_fps}, {probe_interval_s}, {edge_probes}, {tail_s}"
        )
    params = png_params(png)
    workers = workers or default_workers()
    sweep_s = schedule.n_frames / phone_fps
    timeout_s = timeout_s if timeout_s is not None else 2 * sweep_s + 10.0
    stats = stats if stats is not None else RecordStats()
    writer = SessionWriter.create(
        out_dir, name, sensor.info, phone.info, schedule.to_dict(), extra=_session_extra(sensor, phone_fps)
    )
    writer.png_params = params
    t_start = time.monotonic()
    status, message, cause = "interrupted", None, None
    notes: list[str] = []
    started_phone = False
    try:
        writer.write_sensor_intrinsics(sensor.intrinsics)
        writer.write_phone_camera(phone.hello())
        if truth_rig is not None:
            writer.write_truth_rig(truth_rig() if callable(truth_rig) else truth_rig)
        for _ in range(edge_probes):
            writer.append_probe(phone.probe())
            stats.probes += 1

        sink = SensorFrameSink(writer, workers, max_pending, on_full)
        monitor = PhoneMonitor(phone, writer, probe_interval_s)
        frames = iter(sensor.frames())
        try:
            with _progress(progress, sweep_s) as bar:
                task = bar.add_task("rec", total=sweep_s, written=0, queue=0, dropped=0, phone="starting")
                first = next(frames, None)  # the sensor streams before the sweep starts
                if first is None:
                    raise DeviceError(f"sensor {sensor.info.model} {sensor.info.serial}: delivered no frames")
                sink.submit(first)
                phone.start(schedule, phone_fps)
                started_phone = True
                t_sweep = time.monotonic()
                monitor.start()
                last_ui = 0.0
                for frame in frames:
                    sink.submit(frame)
                    now = time.monotonic()
                    if monitor.error is not None:
                        raise monitor.error
                    done_ns = monitor.done_host_ns
                    # the tail is measured on the frames' stamps, not the wall clock: a sensor stream
                    # that runs late (a busy host) still covers the phone's last frame
                    if done_ns is not None and frame.t_host_ns - done_ns >= tail_s * 1e9:
                        break
                    if done_ns is None and now - t_sweep > timeout_s:
                        raise DeviceError(
                            f"phone {phone.info.serial}: did not finish the sweep of {schedule.n_frames} frames "
                            f"within {timeout_s:.0f} s"
                        )
                    if now - last_ui >= 0.1:
                        last_ui = now
                        bar.update(
                            task, completed=min(now - t_sweep, sweep_s), written=sink.written, queue=sink.depth,
                            dropped=sink.dropped, phone="done" if done_ns else "sweeping",
                        )
                else:  # the sensor stream ended (end of a recording file): let the phone finish
                    notes.append(f"sensor stream ended after {sink.submitted + sink.dropped} frames")
                    while monitor.done_host_ns is None:
                        if monitor.error is not None:
                            raise monitor.error
                        if time.monotonic() - t_sweep > timeout_s:
                            raise DeviceError(
                                f"phone {phone.info.serial}: did not finish the sweep of {schedule.n_frames} "
                                f"frames within {timeout_s:.0f} s"
                            )
                        time.sleep(0.02)
                bar.update(task, completed=sweep_s, written=sink.written, queue=sink.depth, dropped=sink.dropped, phone="done")
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()  # stop the sensor stream (generator cleanup)
            if monitor.is_alive():
                monitor.stop()
            stats.probes += monitor.probes
            sink.close()  # every submitted frame written and indexed, in order
            stats.sensor_frames_written = sink.written
            stats.sensor_frames_dropped = sink.dropped
            stats.max_queue_depth = sink.max_depth
        if sink.error is not None:
            raise SessionError(f"{writer.path}: writing sensor frames failed ({sink.error})") from sink.error

        for _ in range(edge_probes):
            writer.append_probe(phone.probe())
            stats.probes += 1
        phone.stop()
        with _status(progress, f"fetching the phone's {schedule.n_frames} frames"):
            stats.phone_frames = phone.fetch(writer)
        status = "complete"
    except KeyboardInterrupt:
        message = "stopped by Ctrl-C"
    except DfdcapError as e:
        message, cause = str(e), e
    except BaseException as e:  # a bug or an OSError: still leave a readable session
        message, cause = f"{type(e).__name__}: {e}", e
        raise
    finally:
        try:
            if status != "complete" and started_phone:
                message = (message or "") + _salvage_phone(phone, writer, stats)
        finally:
            stats.duration_s = round(time.monotonic() - t_start, 3)
            writer.meta["recorder"] = asdict(stats) | {"notes": notes, "png": png}
            writer.finish(status, message)
    if status != "complete":
        err = RecordingInterrupted(
            f"recording interrupted ({message}); session kept as {writer.path} (status interrupted, "
            f"{stats.sensor_frames_written} sensor frames, {stats.phone_frames} phone frames)",
            writer.path,
        )
        if cause is None:  # Ctrl-C: the CLI exits 130
            err.exit_code = 130
        raise err from cause
    return writer.path


def _salvage_phone(phone: Phone, writer: SessionWriter, stats: RecordStats) -> str:
    """After an interruption: stop the phone and fetch the frames it has; returns a note."""
    try:
        phone.stop()
        stats.phone_frames = phone.fetch(writer)
        return ""
    except (DfdcapError, OSError) as e:
        return f"; the phone's frames could not be fetched ({e})"


# --- `dfdcap record`: check every input, then open the devices, then record ---------------

_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
SENSOR_PRESET_FOCUS_M = {"xtion": (0.5, 2.0), "d405": (0.1, 0.5)}  # default near/far focus per preset


def check_output_dir(out_dir: str | os.PathLike) -> Path:
    """Refuse an output folder that cannot be created or written, without creating anything."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise SessionError(f"{out_dir}: output path exists and is not a folder")
        if not os.access(out_dir, os.W_OK | os.X_OK):
            raise SessionError(f"{out_dir}: output folder is not writable")
        return out_dir
    parent = out_dir.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise SessionError(f"{out_dir}: cannot create output folder ({parent} is a file, not a folder)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SessionError(f"{out_dir}: cannot create output folder ({parent} is not writable)")
    return out_dir


def check_session_name(name: str) -> str:
    if not name or not set(name) <= _NAME_CHARS or name in (".", ".."):
        raise SessionError(f"session name {name!r}: use letters, digits, '.', '_' and '-' only")
    return name


def parse_size(text: str, what: str, form: str = "WIDTHxHEIGHT", example: str = "640x480") -> tuple[int, int]:
    """'640x480' -> (640, 480); a one-line error naming `what` otherwise."""
    w, sep, h = text.lower().partition("x")
    try:
        size = (int(w), int(h))
    except ValueError:
        size = (0, 0)
    if not sep or size[0] < 1 or size[1] < 1:
        raise DfdcapError(f"{what} {text!r}: expected {form} with positive integers, e.g. {example}")
    return size


@dataclass(frozen=True)
class SimOptions:
    """Rig options: sensor_preset picks the sim sensor and the default focus range (also for a
    real sensor); scene and seed apply to the simulator; phone_size to any phone."""

    sensor_preset: str = "xtion"
    scene: str | None = None  # None: the preset's default scene
    seed: int = 0
    phone_size: tuple[int, int] | None = None


def build_sim_rig(opts: SimOptions, phone_fps: float):
    """The SimRig for a recording from the simulator (sensor preset, scene, seed, phone size)."""
    from dfdcap.sim.rig import RigConfig, SimRig

    kwargs = {"sensor": opts.sensor_preset, "seed": opts.seed, "phone_fps": phone_fps}
    if opts.scene is not None:
        kwargs["scene"] = opts.scene
    if opts.phone_size is not None:
        kwargs["phone_size"] = opts.phone_size
    return SimRig(RigConfig(**kwargs))


def record_from_specs(
    sensor_spec: str,
    phone_spec: str,
    out_dir: str | os.PathLike,
    *,
    name: str | None = None,
    ramps: int = 5,
    steps: int = 5,
    near_m: float | None = None,
    far_m: float | None = None,
    spacing: str = "diopters",
    phone_fps: float = 10.0,
    png: str = "fast",
    sim: SimOptions = SimOptions(),
    progress: bool = True,
    stats: RecordStats | None = None,
) -> Path:
    """What `dfdcap record` does: check every input (nothing is written if one is bad), open the
    sensor and the phone, record one session, close the devices; returns the session folder."""
    from dfdcap.capture.sources import open_phone, open_sensor, parse_phone_spec, parse_sensor_spec

    s_spec, p_spec = parse_sensor_spec(sensor_spec), parse_phone_spec(phone_spec)
    uses_sim = "sim" in (s_spec.kind, p_spec.kind)
    if sim.sensor_preset not in SENSOR_PRESET_FOCUS_M:
        raise DfdcapError(f"sensor preset {sim.sensor_preset!r}: expected one of {', '.join(SENSOR_PRESET_FOCUS_M)}")
    if not uses_sim and sim.scene is not None:
        raise DfdcapError("--scene applies only to the simulated rig (--sensor sim or --phone sim)")
    if sim.scene is not None:
        from dfdcap.sim.scene import SCENE_PRESETS

        if sim.scene not in SCENE_PRESETS:
            raise DfdcapError(f"unknown scene {sim.scene!r}: expected one of {', '.join(SCENE_PRESETS)}")
    if ramps < 1 or steps < 1:
        raise DfdcapError(f"--stacks and --steps must be >= 1, got {ramps} and {steps}")
    if not phone_fps > 0:
        raise DfdcapError(f"--fps must be > 0, got {phone_fps}")
    png_params(png)
    default_near, default_far = SENSOR_PRESET_FOCUS_M[sim.sensor_preset]
    schedule = FocusSchedule(
        near_m if near_m is not None else default_near, far_m if far_m is not None else default_far,
        steps, ramps, spacing,  # type: ignore[arg-type]
    )
    name = check_session_name(name or ("sim" if s_spec.kind == "sim" else s_spec.kind))
    check_output_dir(out_dir)

    rig = build_sim_rig(sim, phone_fps) if uses_sim else None
    with open_sensor(sensor_spec, rig=rig) as sensor, open_phone(phone_spec, rig=rig, image_size=sim.phone_size) as phone:
        return record_session(
            sensor, phone, schedule, out_dir, name, phone_fps=phone_fps,
            truth_rig=rig.truth_rig if rig is not None and s_spec.kind == p_spec.kind == "sim" else None,
            on_full="wait" if s_spec.is_file else "drop", png=png, progress=progress, stats=stats,
        )
