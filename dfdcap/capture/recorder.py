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

from dfdcap.capture.base import Phone, Sensor, SensorFrame, unreachable_focus
from dfdcap.capture.sensor_models import DepthRule, clear_invalid_depth, depth_rule, known_latency_ns, sensor_facts
from dfdcap.capture.session import SensorFormat, SessionWriter
from dfdcap.errors import DeviceError, DfdcapError, SessionError
from dfdcap.interrupts import CtrlCFlag
from dfdcap.lens import FocusSchedule
from dfdcap.parse import plain_number


SENSOR_FORMATS = ("jpeg", "png", "fast", "compact")
DEFAULT_SENSOR_FORMAT = "jpeg"
PNG_PRESETS = ("fast", "compact")  # the values of the older --png option, still accepted
JPEG_QUALITY = 95


def sensor_format(name: str) -> SensorFormat:
    """The storage preset `name` (benchmarks/record_throughput.py measures them; 640x480 pairs):

    jpeg     default: depth 16-bit PNG, deflate level 1 with the SUB filter and RLE strategy
             (lossless, ~7 ms CPU); colour JPEG quality 95 (~4 ms). ~0.4 MB per pair. The
             sensor's colour only serves calibration and pictures; the phone frames carry the
             DFF signal, so a high-quality JPEG loses nothing the dataset needs.
    png      lossless: depth and colour PNG with the same fast deflate.
    fast     stored PNGs (no deflate): least CPU, ~1.5 MB per pair.
    compact  OpenCV's default PNG (deflate level 1, adaptive filters): ~8x the CPU of fast.
    """
    import cv2

    quick = (cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB,
             cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_PNG_STRATEGY_RLE)
    if name == "jpeg":
        return SensorFormat(name, ".jpg", (cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY), quick)
    if name == "png":
        return SensorFormat(name, ".png", quick, quick)
    if name == "fast":
        stored = (cv2.IMWRITE_PNG_COMPRESSION, 0, cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_NONE)
        return SensorFormat(name, ".png", stored, stored)
    if name == "compact":
        return SensorFormat(name, ".png", (), ())
    raise SessionError(f"sensor format {name!r}: expected one of {', '.join(SENSOR_FORMATS)}")


def png_params(preset: str) -> tuple[int, ...]:
    """OpenCV flags of an older --png preset (fast | compact), for both images."""
    if preset not in PNG_PRESETS:
        raise SessionError(f"PNG preset {preset!r}: expected one of {', '.join(PNG_PRESETS)}")
    return sensor_format(preset).depth_params


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
    """Counters of one recording (also stored in session.json under "recorder").

    Frames lost before the recorder saw them (sensor side) and frames the recorder itself
    dropped (its encoding queue was full) are counted apart:
    - sensor_lost: the best estimate of sensor-side losses, the largest of
      sensor_lost_frame_numbers (gaps in the depth frame numbers), sensor_lost_timestamps
      (device stamps more than 1.5 frame periods apart, in missing periods) and
      sensor_device_dropped (the device's or driver's own counter);
    - recorder_dropped: frames the recorder received and did not write.
    stale_pairs: frames kept whose colour and depth stamps lie further apart than half a
    period (listed in sensor/stale_pairs.csv), max_stale_gap_ms the largest such gap.
    depth_pixels_cleared: pixels set to 0 by the sensor's invalid-code rule (depth_rule).
    """

    sensor_frames_written: int = 0
    recorder_dropped: int = 0
    sensor_lost: int = 0
    sensor_lost_frame_numbers: int = 0
    sensor_lost_timestamps: int = 0
    sensor_device_dropped: int = 0
    stale_pairs: int = 0
    max_stale_gap_ms: float = 0.0
    depth_pixels_cleared: int = 0
    phone_frames: int = 0
    probes: int = 0
    max_queue_depth: int = 0
    duration_s: float = 0.0

    def summary(self) -> str:
        """One line for the screen: sensor side and recorder side apart."""
        text = (f"{self.sensor_frames_written} sensor frames written; lost at the sensor {self.sensor_lost} "
                f"(frame numbers {self.sensor_lost_frame_numbers}, timestamps {self.sensor_lost_timestamps}, "
                f"device counter {self.sensor_device_dropped}); dropped by the recorder {self.recorder_dropped}")
        if self.stale_pairs:
            text += f"; {self.stale_pairs} stale depth/colour pairs kept (up to {self.max_stale_gap_ms:.0f} ms apart)"
        if self.depth_pixels_cleared:
            text += f"; {self.depth_pixels_cleared} invalid depth pixels set to 0"
        return text


class SensorLossTracker:
    """Sees every frame the sensor delivers, in order (caller's thread, O(1) per frame), and
    counts what is missing between them: frame-number gaps, device-timestamp gaps (by the
    nominal fps) and stale depth/colour pairs (noted in the session with both stamps)."""

    def __init__(self, writer: SessionWriter, fps: float | None, pair_tolerance_ns: int | None):
        self._writer = writer
        self.period_ns = 1e9 / fps if fps else None
        self.tol_ns = pair_tolerance_ns if pair_tolerance_ns is not None else (
            int(self.period_ns / 2) if self.period_ns else 16_666_667)
        self.last_index: int | None = None
        self.last_t_ns: int | None = None
        self.lost_numbers = 0
        self.lost_times = 0
        self.stale = 0
        self.max_stale_ns = 0

    def observe(self, frame: SensorFrame) -> str | None:
        """Count the gaps before `frame`; returns a warning line for a stale pair, else None."""
        if self.last_index is not None and frame.index > self.last_index + 1:
            self.lost_numbers += frame.index - self.last_index - 1
        if self.last_t_ns is not None and self.period_ns:
            dt = frame.t_device_ns - self.last_t_ns
            if dt > 1.5 * self.period_ns:
                self.lost_times += int(round(dt / self.period_ns)) - 1
        self.last_index, self.last_t_ns = frame.index, frame.t_device_ns
        tc = frame.t_color_device_ns
        if tc is None or abs(tc - frame.t_device_ns) <= self.tol_ns:
            return None
        gap = abs(tc - frame.t_device_ns)
        self.stale += 1
        self.max_stale_ns = max(self.max_stale_ns, gap)
        self._writer.append_stale_pair(frame.index, frame.t_device_ns, tc)
        return (f"sensor frame {frame.index}: colour taken {(tc - frame.t_device_ns) / 1e6:+.0f} ms from its depth "
                f"(more than {self.tol_ns / 1e6:.0f} ms); kept, both stamps in sensor/stale_pairs.csv")


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
        rule: DepthRule | None = None,
    ):
        if workers < 1 or max_pending < 1:
            raise SessionError(f"recorder: workers and max_pending must be >= 1, got {workers} and {max_pending}")
        if on_full not in ("drop", "wait"):
            raise SessionError(f"recorder: on_full must be 'drop' or 'wait', got {on_full!r}")
        self._writer = writer
        self._rule = rule
        self.cleared = 0  # depth pixels set to 0 by the rule
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
        fut = self._pool.submit(self._save, frame)
        self._order.put(fut)
        self.submitted += 1
        self.max_depth = max(self.max_depth, self.depth)
        return True

    def _save(self, frame: SensorFrame):
        """Worker thread: apply the invalid-depth rule, encode and write both images."""
        depth, n = (frame.depth, 0) if self._rule is None else clear_invalid_depth(frame.depth, self._rule)
        rec = self._writer.save_sensor_frame(frame.index, frame.t_host_ns, frame.t_device_ns, frame.rgb, depth)
        return rec, n

    def _commit_loop(self) -> None:
        while True:
            fut = self._order.get()
            if fut is None:
                return
            try:
                rec, n = fut.result()
                self._writer.append_sensor_record(rec)
                self.cleared += n
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


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]recording[/bold]"),
        BarColumn(),
        TimeElapsedColumn(),
        TextColumn(
            "sensor {task.fields[written]} written, lost at sensor {task.fields[lost]}, "
            "recorder dropped {task.fields[dropped]}, queue {task.fields[queue]}; phone {task.fields[phone]}"
        ),
        console=Console(stderr=True, emoji=False),
        disable=not enabled,
        refresh_per_second=5,
    )


def _status(enabled: bool, text: str):
    """A rich spinner on stderr for work without a frame count (e.g. pulling the phone's frames)."""
    import contextlib

    from rich.console import Console

    return Console(stderr=True, emoji=False).status(text) if enabled else contextlib.nullcontext()


def _phone_notes(phone: Phone, notes: list[str], progress: bool) -> None:
    """What the phone noticed while fetching (Open Camera: photos with an undated EXIF, ...): shown,
    and kept in session.json's recorder notes."""
    for note in getattr(phone, "notes", ()):
        if note not in notes:
            _warn(progress, note)
            notes.append(note)


def _warn(enabled: bool, text: str) -> None:
    """A yellow warning line on stderr (shown above a live progress bar)."""
    if enabled:
        from rich.console import Console

        from rich.markup import escape

        Console(stderr=True, emoji=False).print(f"[yellow]warning:[/yellow] {escape(text)}", soft_wrap=True, highlight=False, markup=True)


def _session_extra(sensor: Sensor, phone_fps: float) -> dict:
    """session.json extras. Only what the devices themselves report or the recorder measures:
    a known sensor latency only from the per-model table (dfdcap.capture.sensor_models, with
    its source), never from a simulator's configuration."""
    extra: dict = {"phone_fps": phone_fps}
    latency = known_latency_ns(sensor.info.model)
    if latency is not None:
        extra["sensor_latency_ns"] = int(latency)
        extra["sensor_latency_source"] = sensor_facts(sensor.info.model).source
    return extra


@dataclass
class _Stream:
    """What the sensor loop shares with record_session's cleanup."""

    sink: SensorFrameSink
    tracker: SensorLossTracker
    notes: list[str]
    progress: bool
    play_to_end: bool = False  # a recording file: every frame of it, not only the sweep's time
    phone_started: bool = False

    def submit(self, frame: SensorFrame) -> None:
        warning = self.tracker.observe(frame)
        if warning is not None:
            if self.tracker.stale <= 3:
                _warn(self.progress, warning)
            if self.tracker.stale == 1:
                self.notes.append(warning)
        self.sink.submit(frame)


def _device_dropped(sensor: Sensor) -> int:
    return int(getattr(sensor, "dropped", 0) or 0)


def _sensor_lost(tracker: SensorLossTracker, sensor: Sensor) -> int:
    """The best estimate of frames lost before the recorder: the largest of the three counts."""
    return max(tracker.lost_numbers, tracker.lost_times, _device_dropped(sensor))


def _update_stats(stats: RecordStats, stream: _Stream, sensor: Sensor) -> None:
    sink, tr = stream.sink, stream.tracker
    stats.sensor_frames_written = sink.written
    stats.recorder_dropped = sink.dropped
    stats.max_queue_depth = sink.max_depth
    stats.depth_pixels_cleared = sink.cleared
    stats.sensor_lost_frame_numbers = tr.lost_numbers
    stats.sensor_lost_timestamps = tr.lost_times
    stats.sensor_device_dropped = _device_dropped(sensor)
    stats.sensor_lost = _sensor_lost(tr, sensor)
    stats.stale_pairs = tr.stale
    stats.max_stale_gap_ms = round(tr.max_stale_ns / 1e6, 3)


def _stream_until_done(frames, stream: _Stream, sensor: Sensor, phone: Phone, monitor: "PhoneMonitor",
                       schedule: FocusSchedule, phone_fps: float, tail_s: float, timeout_s: float) -> None:
    """The sensor loop: first frame, phone start, frames until the phone is done + tail_s (or
    the end of a recording file, then wait for the phone). Ctrl-C also sets a flag checked once a frame:
    its KeyboardInterrupt can be lost in a finalizer (sim checkerboard's was, 1 loaded run in 12)."""
    sweep_s = schedule.n_frames / phone_fps
    sink = stream.sink

    def timed_out(t_sweep: float) -> None:
        if time.monotonic() - t_sweep > timeout_s:
            raise DeviceError(f"phone {phone.info.serial}: did not finish the sweep of {schedule.n_frames} frames "
                              f"within {timeout_s:.0f} s")

    with CtrlCFlag() as ctrl_c, _progress(stream.progress) as bar:
        fields = lambda phone_state: dict(  # noqa: E731
            written=sink.written, queue=sink.depth, dropped=sink.dropped, phone=phone_state,
            lost=_sensor_lost(stream.tracker, sensor))
        task = bar.add_task("rec", total=sweep_s, **fields("starting"))
        first = next(frames, None)  # the sensor streams before the sweep starts
        if first is None:
            raise DeviceError(f"sensor {sensor.info.model} {sensor.info.serial}: delivered no frames")
        stream.submit(first)
        phone.start(schedule, phone_fps)
        stream.phone_started = True
        t_sweep = time.monotonic()
        monitor.start()
        last_ui = 0.0
        for frame in frames:
            ctrl_c.check()
            stream.submit(frame)
            if monitor.error is not None:
                raise monitor.error
            done_ns = monitor.done_host_ns
            # the tail is measured on the frames' stamps, not the wall clock: a sensor stream
            # that runs late (a busy host) still covers the phone's last frame
            if done_ns is not None and not stream.play_to_end and frame.t_host_ns - done_ns >= tail_s * 1e9:
                break
            if done_ns is None:
                timed_out(t_sweep)
            now = time.monotonic()
            if now - last_ui >= 0.1:
                last_ui = now
                bar.update(task, completed=min(now - t_sweep, sweep_s), **fields("done" if done_ns else "sweeping"))
        else:  # the sensor stream ended (end of a recording file): let the phone finish
            stream.notes.append(f"sensor stream ended after {sink.submitted + sink.dropped} frames")
            while monitor.done_host_ns is None:
                ctrl_c.check()
                if monitor.error is not None:
                    raise monitor.error
                timed_out(t_sweep)
                time.sleep(0.02)
        bar.update(task, completed=sweep_s, **fields("done"))


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
    play_to_end: bool = False,
    sensor_format: str = DEFAULT_SENSOR_FORMAT,
    png: str | None = None,
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
    frames are dropped and counted (on_full="drop"); a recording file's playback waits instead
    (on_full="wait"). play_to_end: keep reading the sensor until its stream ends (a recording
    file, played as fast as it decodes: its length, not the host's speed, decides what is kept).
    Sensor-side losses are counted apart (RecordStats). Depth codes the
    sensor's model calls invalid become 0 (dfdcap.capture.sensor_models). sensor_format: a
    preset of sensor_format() (png: an older --png preset, used instead when given).
    truth_rig: only for the fully simulated rig; without it the session gets no truth/ at all.
    workers: writer threads (default: default_workers()).

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
    fmt = sensor_format_of(sensor_format, png)
    workers = workers or default_workers()
    timeout_s = timeout_s if timeout_s is not None else 2 * schedule.n_frames / phone_fps + 10.0
    stats = stats if stats is not None else RecordStats()
    rule = depth_rule(sensor.info.model, sensor.intrinsics.depth_scale_m, sensor.max_depth_code)
    camera = phone.hello()
    why = unreachable_focus(schedule, camera)  # checked here, before the session folder exists and the sensor starts
    if why:
        raise SessionError(f"--near {schedule.near_m:g} m: {why}")
    writer = SessionWriter.create(
        out_dir, name, sensor.info, phone.info, schedule.to_dict(), extra=_session_extra(sensor, phone_fps)
    )
    writer.sensor_format = fmt
    writer.truth_allowed = truth_rig is not None
    t_start = time.monotonic()
    status, message, cause = "interrupted", None, None
    notes: list[str] = list(getattr(sensor, "notes", ()) or ())
    for note in notes:
        _warn(progress, note)
    started_phone = False
    stream: _Stream | None = None
    try:
        writer.write_sensor_intrinsics(sensor.intrinsics)
        writer.write_phone_camera(camera)
        if truth_rig is not None:
            writer.write_truth_rig(truth_rig() if callable(truth_rig) else truth_rig)
        for _ in range(edge_probes):
            writer.append_probe(phone.probe())
            stats.probes += 1

        stream = _Stream(SensorFrameSink(writer, workers, max_pending, on_full, rule),
                         SensorLossTracker(writer, sensor.fps, sensor.pair_tolerance_ns), notes, progress, play_to_end)
        monitor = PhoneMonitor(phone, writer, probe_interval_s)
        frames = iter(sensor.frames())
        try:
            _stream_until_done(frames, stream, sensor, phone, monitor, schedule, phone_fps, tail_s, timeout_s)
        finally:
            started_phone = stream.phone_started  # an interruption then fetches what the phone has
            close = getattr(frames, "close", None)
            if close is not None:
                close()  # stop the sensor stream (generator cleanup)
            if monitor.is_alive():
                monitor.stop()
            stats.probes += monitor.probes
            stream.sink.close()  # every submitted frame written and indexed, in order
            _update_stats(stats, stream, sensor)
        if stream.sink.error is not None:
            raise SessionError(f"{writer.path}: writing sensor frames failed ({stream.sink.error})") from stream.sink.error

        for _ in range(edge_probes):
            writer.append_probe(phone.probe())
            stats.probes += 1
        phone.stop()
        with _status(progress, f"fetching the phone's {schedule.n_frames} frames"):
            stats.phone_frames = phone.fetch(writer)
        _phone_notes(phone, notes, progress)
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
            if stream is not None:  # again: a Ctrl-C that lands inside the stream's own finally skips these there
                stream.sink.close()  # (a no-op when done) every submitted frame indexed before the count is taken
                _update_stats(stats, stream, sensor)
            if status != "complete" and started_phone:
                message = (message or "") + _salvage_phone(phone, writer, stats)
                _phone_notes(phone, notes, progress)
            if status != "complete":  # a fetch that failed part way (a full disk) indexed some frames
                stats.phone_frames = writer.phone_records
        finally:
            stats.duration_s = round(time.monotonic() - t_start, 3)
            writer.meta["recorder"] = asdict(stats) | {"notes": notes, "sensor_format": fmt.name, "depth_rule": rule.to_dict()}
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


def sensor_format_of(name: str | None, png: str | None = None) -> SensorFormat:
    """The SensorFormat of --sensor-format, or of the older --png preset when that is given."""
    if png is not None:
        if name not in (None, DEFAULT_SENSOR_FORMAT, png):
            raise SessionError(f"--png {png} and --sensor-format {name} disagree: give one of them")
        png_params(png)  # checks the value
        return sensor_format(png)
    return sensor_format(name or DEFAULT_SENSOR_FORMAT)


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
    from dfdcap.fileio import nearest_existing

    parent = nearest_existing(out_dir.parent)
    if not parent.is_dir():
        raise SessionError(f"{out_dir}: cannot create output folder ({parent} is a file, not a folder)")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SessionError(f"{out_dir}: cannot create output folder ({parent} is not writable)")
    return out_dir


MAX_SESSION_NAME = 200  # the folder is <28-character UTC stamp>_<name>, and a file name holds 255 bytes


def check_session_name(name: str) -> str:
    if not name or not set(name) <= _NAME_CHARS or name in (".", ".."):
        raise SessionError(f"session name {name!r}: use letters, digits, '.', '_' and '-' only")
    if len(name) > MAX_SESSION_NAME:
        raise SessionError(f"session name {name[:20]}... ({len(name)} characters): at most {MAX_SESSION_NAME}")
    return name


def parse_size(text: str, what: str, form: str = "WIDTHxHEIGHT", example: str = "640x480") -> tuple[int, int]:
    """'640x480' -> (640, 480); a one-line error naming `what` otherwise."""
    w, sep, h = text.lower().partition("x")
    try:
        size = (plain_number(w, int), plain_number(h, int))
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
    steps: int | None = None,
    near_m: float | None = None,
    far_m: float | None = None,
    spacing: str | None = None,
    phone_fps: float | None = None,
    sensor_format: str = DEFAULT_SENSOR_FORMAT,
    png: str | None = None,
    sim: SimOptions = SimOptions(),
    progress: bool = True,
    stats: RecordStats | None = None,
) -> Path:
    """What `dfdcap record` does: check every input (nothing is written if one is bad), open the
    sensor and the phone, record one session, close the devices; returns the session folder.
    steps None: 5 frames a ramp (Open Camera: the phone's own photo count); spacing None: diopters;
    phone_fps None: 10 frames/s. Open Camera has its own pace and focus rule: spacing and phone_fps are refused."""
    from dfdcap.capture.limits import check_record_counts
    from dfdcap.capture.sources import open_phone, open_sensor, parse_phone_spec, parse_sensor_spec

    s_spec, p_spec = parse_sensor_spec(sensor_spec), parse_phone_spec(phone_spec)
    uses_sim = "sim" in (s_spec.kind, p_spec.kind) or p_spec.arg == "sim"
    if sim.sensor_preset not in SENSOR_PRESET_FOCUS_M:
        raise DfdcapError(f"sensor preset {sim.sensor_preset!r}: expected one of {', '.join(SENSOR_PRESET_FOCUS_M)}")
    if not uses_sim and sim.scene is not None:
        raise DfdcapError("--scene applies only to the simulated rig (--sensor sim or --phone sim)")
    if sim.scene is not None:
        from dfdcap.sim.scene import SCENE_PRESETS

        if sim.scene not in SCENE_PRESETS:
            raise DfdcapError(f"unknown scene {sim.scene!r}: expected one of {', '.join(SCENE_PRESETS)}")
    steps_given, steps = steps is not None, 5 if steps is None else steps
    if p_spec.kind == "opencamera":  # options the app does not take: silently ignored, the user would think they applied
        for option, v, why in (("--spacing", spacing, "spaces the focus by its own rule"),
                               ("--fps", phone_fps, "takes a photo every 0.5 s")):
            if v is not None:
                raise DfdcapError(f"{option} {v}: Open Camera {why}; leave {option} out")
    spacing = "diopters" if spacing is None else spacing
    phone_fps = 10.0 if phone_fps is None else phone_fps
    check_record_counts(ramps, steps, near_m, far_m)
    if not 0.1 <= phone_fps <= 1000:  # 1e-6 fps would wait days for the second frame
        raise DfdcapError(f"--fps must be between 0.1 and 1000 frames/s, got {phone_fps}")
    sensor_format_of(sensor_format, png)
    default_near, default_far = SENSOR_PRESET_FOCUS_M[sim.sensor_preset]
    schedule = FocusSchedule(
        near_m if near_m is not None else default_near, far_m if far_m is not None else default_far,
        steps, ramps, spacing,  # type: ignore[arg-type]
    )
    name = check_session_name(name or ("sim" if s_spec.kind == "sim" else s_spec.kind))
    check_output_dir(out_dir)

    rig = build_sim_rig(sim, phone_fps) if uses_sim else None
    with open_sensor(sensor_spec, rig=rig) as sensor, open_phone(phone_spec, rig=rig, image_size=sim.phone_size) as phone:
        if p_spec.kind == "opencamera":  # Open Camera's own focus rule and pace (capture/opencamera.py)
            schedule, phone_fps = phone.bracketing_schedule(ramps, schedule if near_m or far_m else None,
                                                            steps if steps_given else None)
        return record_session(
            sensor, phone, schedule, out_dir, name, phone_fps=phone_fps,
            truth_rig=rig.truth_rig if rig is not None and s_spec.kind == p_spec.kind == "sim" else None,
            on_full="wait" if s_spec.is_file else "drop", play_to_end=s_spec.is_file, sensor_format=sensor_format, png=png, progress=progress, stats=stats,
            timeout_s=float("inf") if p_spec.kind == "opencamera" else None,  # it gives up a stalled ramp itself
        )
