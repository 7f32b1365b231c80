"""The session folder of DESIGN.md: a crash-safe writer and a reader.

Every frame is its own file, written under a temporary name and renamed; index lines are
appended and flushed after their file exists; `session.json` says how the session ended.
The reader loads complete and interrupted sessions alike (an interrupted one's torn last index line is skipped).
"""

from __future__ import annotations

import csv
import json
import io
import math
import os
import threading
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

import numpy as np

from dfdcap import __version__
from dfdcap.cameras import CameraModel
from dfdcap.errors import DfdcapError, SessionError
from dfdcap.fileio import atomic_write_bytes, atomic_write_json, encode_image, json_default, read_image, read_json
from dfdcap.capture.sensor_models import DepthRule, clear_invalid_depth
from dfdcap.lens import ThinLens

SCHEMA = 1
SENSOR_COLUMNS = ["index", "t_host_ns", "t_device_ns", "rgb", "depth"]
PHONE_COLUMNS = [
    "index", "t_phone_ns", "focus_diopters_requested", "focus_diopters", "exposure_ns",
    "iso", "lens_state", "ramp", "step", "file",
]
PROBE_COLUMNS = ["t_host_send_ns", "t_phone_ns", "t_host_recv_ns"]
STALE_PAIR_COLUMNS = ["index", "t_depth_device_ns", "t_color_device_ns", "gap_ns"]
STATUSES = ("recording", "complete", "interrupted")
MAX_FOCAL_LENGTH_M = 0.5  # camera.json: larger is a unit error (a phone lens is ~4 mm, a DSLR's < 0.5 m)
MAX_SENSOR_SIDE_M = 0.1  # camera.json: a side larger than 10 cm is a unit error (phones: ~5 mm, full frame: 36 mm)
LOCK_NAME = "recording.lock"  # held (flock) by the writing process while status is "recording"


@dataclass(frozen=True)
class SensorFormat:
    """How sensor frames are stored: depth is always a 16-bit PNG (lossless); colour is a PNG
    or a JPEG (rgb_ext ".png" | ".jpg"); *_params are OpenCV imwrite flags. See
    dfdcap.capture.recorder.sensor_format for the named presets."""

    name: str = "png"
    rgb_ext: str = ".png"
    rgb_params: tuple[int, ...] = ()
    depth_params: tuple[int, ...] = ()


@dataclass(frozen=True)
class DeviceInfo:
    kind: str
    model: str
    serial: str


@dataclass(frozen=True)
class SensorIntrinsics:
    """Both sensor streams' cameras; depth in native units times depth_scale_m is metres."""

    color: CameraModel
    depth: CameraModel
    depth_scale_m: float
    depth_registered_to_color: bool
    T_color_from_depth: np.ndarray = field(default_factory=lambda: np.eye(4))

    def to_dict(self) -> dict:
        return {
            "color": self.color.to_dict(),
            "depth": self.depth.to_dict(),
            "depth_scale_m": self.depth_scale_m,
            "depth_registered_to_color": self.depth_registered_to_color,
            "T_color_from_depth": np.asarray(self.T_color_from_depth).tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "SensorIntrinsics":
        return cls(
            CameraModel.from_dict(d["color"]),
            CameraModel.from_dict(d["depth"]),
            _depth_scale(d),
            _boolean(d, "depth_registered_to_color"),
            np.asarray(d.get("T_color_from_depth", np.eye(4)), dtype=np.float64),
        )


@dataclass(frozen=True)
class PhoneCamera:
    """What the phone's camera reports (Camera2 characteristics) for the chosen image size."""

    focal_length_m: float
    f_number: float
    sensor_size_m: tuple[float, float]
    image_size: tuple[int, int]
    min_focus_diopters: float
    focus_calibration: str = "CALIBRATED"  # CALIBRATED | APPROXIMATE | UNCALIBRATED
    timestamp_source: str = "REALTIME"  # REALTIME | UNKNOWN

    @property
    def pixel_pitch_m(self) -> float:
        return self.sensor_size_m[0] / self.image_size[0]

    @property
    def lens(self) -> ThinLens:
        return ThinLens(self.focal_length_m, self.f_number)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["sensor_size_m"] = list(self.sensor_size_m)
        d["image_size"] = list(self.image_size)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PhoneCamera":
        sensor = _positive_pair(d, "sensor_size_m", "positive finite metres")
        if max(sensor) > MAX_SENSOR_SIDE_M:  # a phone sensor is a few mm; metres typed as mm
            raise BadField(f"sensor_size_m {d['sensor_size_m']!r}: a side above {MAX_SENSOR_SIDE_M:g} m is no camera "
                           "sensor; expected metres (was it given in mm?)")
        size = _positive_pair(d, "image_size", "positive whole pixels", whole=True)
        min_focus = float(d["min_focus_diopters"])
        if not 0 <= min_focus < math.inf:
            raise BadField(f"min_focus_diopters {d['min_focus_diopters']!r}: expected a finite number of diopters >= 0")
        focal = _positive(d, "focal_length_m", "metres")
        if focal >= MAX_FOCAL_LENGTH_M:  # a phone lens is a few mm; mm typed as metres gives negative CoC
            raise BadField(f"focal_length_m {d['focal_length_m']!r}: expected metres below {MAX_FOCAL_LENGTH_M:g} "
                           "(a phone lens is a few mm: 0.0042, not 4.2; was it given in mm?)")
        return cls(
            focal, _positive(d, "f_number", "focal ratio"),
            sensor, tuple(int(v) for v in size), min_focus,
            d.get("focus_calibration", "CALIBRATED"), d.get("timestamp_source", "UNKNOWN"),
        )


@dataclass(frozen=True)
class SensorFrameRecord:
    index: int
    t_host_ns: int
    t_device_ns: int
    rgb: str  # relative to sensor/
    depth: str  # relative to sensor/


@dataclass(frozen=True)
class PhoneFrameRecord:
    index: int
    t_phone_ns: int
    focus_diopters_requested: float
    focus_diopters: float
    exposure_ns: int
    iso: int
    lens_state: str
    ramp: int
    step: int
    file: str  # relative to phone/

    @property
    def focus_m(self) -> float:
        """Focus distance in metres: inf at 0 diopters, NaN for a frame without a focus reading."""
        if math.isnan(self.focus_diopters):
            return math.nan
        return 1.0 / self.focus_diopters if self.focus_diopters > 0 else float("inf")


@dataclass(frozen=True)
class ClockProbe:
    t_host_send_ns: int
    t_phone_ns: int
    t_host_recv_ns: int


class _IndexFile:
    """An append-only CSV/text index: each line is written and flushed at once, under a lock."""

    def __init__(self, path: Path, header: str | None):
        new = not path.exists() or path.stat().st_size == 0
        if not new and header:  # readers take other tools' column orders; appending takes dfdcap's own
            with open(path, encoding="utf-8", newline="") as f:
                first = f.readline().rstrip("\r\n")
            if first != header:
                raise SessionError(f"{path}: header {first!r} is not dfdcap's ({header}); cannot add rows to it")
        self._f = open(path, "a", encoding="utf-8", newline="")
        self._lock = threading.Lock()
        if new and header:
            self.append(header)

    def append(self, line: str) -> None:
        with self._lock:
            self._f.write(line + "\n")
            self._f.flush()
            os.fsync(self._f.fileno()) if os.environ.get("DFDCAP_FSYNC") else None

    def close(self) -> None:
        self._f.close()


def _csv_line(values) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow(values)
    return buf.getvalue()


class BadField(SessionError, ValueError):
    """A field of a session JSON file holds a value out of its range (the message names the field)."""


def _positive(d: dict, key: str, unit: str) -> float:
    """d[key] as a float that must be positive and finite (a lens or scale parameter)."""
    v = float(d[key])
    if not 0 < v < math.inf:
        raise BadField(f"{key} {d[key]!r}: expected a positive finite number ({unit})")
    return v


# RGB-D sensors store depth in 0.1-1 mm codes (Xtion/Kinect/RealSense: 0.001, D405: 0.0001, TUM's
# 1/5000 = 0.0002): a scale of 0.1 m per code is 100x the coarsest of them, so it refuses no real data;
# what it catches is a factor typed as a scale (TUM's 5000 codes per metre) or metres per metre (1.0).
MAX_DEPTH_SCALE_M = 0.1


def _depth_scale(d: dict) -> float:
    """intrinsics.json's depth_scale_m, held to a physical unit (see MAX_DEPTH_SCALE_M)."""
    v = _positive(d, "depth_scale_m", "metres per depth unit")
    if v > MAX_DEPTH_SCALE_M:
        raise BadField(f"depth_scale_m {d['depth_scale_m']!r}: expected metres per depth code, at most "
                       f"{MAX_DEPTH_SCALE_M:g} (0.001 for mm codes, 0.0001 for a D405; a factor in codes per "
                       f"metre such as TUM's 5000 is 1/5000 = 0.0002)")
    return v


def _boolean(d: dict, key: str) -> bool:
    """d[key] as a JSON true/false: the string "false" or the number 0 would read as true (or need a
    guess), so anything else is an error naming the field."""
    v = d[key]
    if not isinstance(v, bool):
        raise BadField(f"{key} {v!r}: expected a JSON boolean, true or false (unquoted)")
    return v


def _positive_pair(d: dict, key: str, what: str, whole: bool = False) -> tuple[float, float]:
    """d[key] as [width, height]: two positive finite numbers (whole ones if `whole`; JSON true is no number)."""
    v = d[key]
    ok = len(v) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x < math.inf
                             and (not whole or float(x).is_integer()) for x in v)
    if not ok:
        raise BadField(f"{key} {v!r}: expected [width, height], {what}")
    return float(v[0]), float(v[1])


def _from_json(parse, path: Path):
    """parse(read_json(path)), with a wrong or missing field reported as one line naming the file."""
    try:
        return parse(read_json(path))
    except BadField as e:
        raise SessionError(f"{path}: {e}") from None
    except KeyError as k:
        raise SessionError(f"{path}: lacks the field {k}") from None
    except (TypeError, ValueError, AttributeError) as e:
        raise SessionError(f"{path}: a field holds the wrong kind of value ({e})") from None
    except DfdcapError as e:
        if str(path) in str(e):
            raise
        raise SessionError(f"{path}: {e}") from None


class SessionWriter:
    """Writes one session folder as frames arrive. Thread-safe for frame files and index lines.

    Use as a context manager: leaving the block normally marks the session complete, leaving
    it by an exception (KeyboardInterrupt, DeviceError, ...) marks it interrupted.
    """

    def __init__(self, path: Path, meta: dict):
        self.path = path
        self.meta = meta
        self._indexes: dict[str, _IndexFile] = {}
        self.phone_records = 0  # phone frames this writer indexed (what an interrupted recording kept)
        self._lock = threading.Lock()
        self._lock_file = None  # the held recording.lock (see _hold_recording_lock)
        # False when a real device is in the rig: truth/ (written by simulated devices) then stays
        # absent, since it would describe a scene the real device never saw (see Session.has_truth)
        self.truth_allowed = True
        self.sensor_format = SensorFormat()  # how sensor frames are encoded (recorder: the chosen preset)

    def _hold_recording_lock(self) -> None:
        """Hold an exclusive flock on recording.lock until finish(): the kernel drops it when the
        process dies (even by SIGKILL), so a reader can tell a live recording from a dead one."""
        self._lock_file = open(self.path / LOCK_NAME, "w")
        self._lock_file.write(f"{os.getpid()}\n")
        self._lock_file.flush()
        try:
            import fcntl

            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # no flock (Windows): readers cannot tell a dead writer
            pass

    def _release_recording_lock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # closing drops the flock
            self._lock_file = None
            try:
                (self.path / LOCK_NAME).unlink()
            except FileNotFoundError:
                pass

    @classmethod
    def create(
        cls,
        out_dir: str | os.PathLike,
        name: str,
        sensor: DeviceInfo,
        phone: DeviceInfo,
        focus_schedule: dict | None = None,
        extra: dict | None = None,
    ) -> "SessionWriter":
        out_dir = Path(out_dir)
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SessionError(f"{out_dir}: cannot create output folder ({e.strerror})") from None
        if not os.access(out_dir, os.W_OK):
            raise SessionError(f"{out_dir}: output folder is not writable")
        now = datetime.now(timezone.utc)
        stamp = now.strftime("%Y%m%dT%H%M%S_%fZ")
        path = out_dir / f"{stamp}_{name}"
        try:
            path.mkdir()
            for sub in ("sensor/rgb", "sensor/depth", "phone/frames", "clock"):
                (path / sub).mkdir(parents=True)
        except OSError as e:
            raise SessionError(f"{path}: cannot create session folder ({e.strerror})") from None
        meta = {
            "schema": SCHEMA,
            "status": "recording",
            "created_utc": now.isoformat(),
            "name": name,
            "rig": {"sensor": asdict(sensor), "phone": asdict(phone)},
            "focus_schedule": focus_schedule or {},
            "host_clock": "CLOCK_MONOTONIC",
            "dfdcap_version": __version__,
        }
        meta.update(extra or {})
        w = cls(path, meta)
        w._hold_recording_lock()
        atomic_write_json(path / "session.json", meta)
        return w

    def _index(self, rel: str, header: str | None) -> _IndexFile:
        with self._lock:
            if rel not in self._indexes:
                self._indexes[rel] = _IndexFile(self.path / rel, header)
            return self._indexes[rel]

    # sensor ---------------------------------------------------------------------------
    def write_sensor_intrinsics(self, intrinsics: SensorIntrinsics) -> None:
        atomic_write_json(self.path / "sensor" / "intrinsics.json", intrinsics.to_dict())

    def save_sensor_frame(self, index: int, t_host_ns: int, t_device_ns: int, rgb: np.ndarray, depth: np.ndarray) -> SensorFrameRecord:
        """Encode and write one frame's two PNGs (safe to call from worker threads).

        rgb: (H, W, 3) uint8 RGB; depth: (H, W) uint16 in the sensor's native unit, 0 = invalid.
        """
        if depth.dtype != np.uint16 or depth.ndim != 2:
            raise SessionError(f"sensor frame {index}: depth must be (H, W) uint16, got {depth.shape} {depth.dtype}")
        fmt = self.sensor_format
        rec = SensorFrameRecord(index, int(t_host_ns), int(t_device_ns), f"rgb/{t_host_ns}{fmt.rgb_ext}", f"depth/{t_host_ns}.png")
        rgb_path = self.path / "sensor" / rec.rgb
        atomic_write_bytes(rgb_path, encode_image(rgb, fmt.rgb_ext, fmt.rgb_params))
        try:
            atomic_write_bytes(self.path / "sensor" / rec.depth, encode_image(depth, ".png", fmt.depth_params))
        except BaseException:  # a full disk: no colour image without its depth (never indexed) stays behind
            rgb_path.unlink(missing_ok=True)
            raise
        return rec

    def append_stale_pair(self, index: int, t_depth_device_ns: int, t_color_device_ns: int) -> None:
        """Note a frame whose colour image was taken apart from its depth (sensor/stale_pairs.csv):
        the frame is kept (its depth is what ground truth needs), both device stamps are listed."""
        self._index("sensor/stale_pairs.csv", ",".join(STALE_PAIR_COLUMNS)).append(
            f"{index},{int(t_depth_device_ns)},{int(t_color_device_ns)},{int(t_color_device_ns) - int(t_depth_device_ns)}"
        )

    def append_sensor_record(self, rec: SensorFrameRecord) -> None:
        """Index a frame whose files exist (call in frame order to keep rgb.txt sorted)."""
        t_s = f"{rec.t_host_ns / 1e9:.6f}"
        self._index("sensor/frames.csv", ",".join(SENSOR_COLUMNS)).append(
            _csv_line([rec.index, rec.t_host_ns, rec.t_device_ns, rec.rgb, rec.depth])
        )
        self._index("sensor/rgb.txt", "# color images\n# timestamp filename").append(f"{t_s} {rec.rgb}")
        self._index("sensor/depth.txt", "# depth maps\n# timestamp filename").append(f"{t_s} {rec.depth}")

    def write_sensor_frame(self, index: int, t_host_ns: int, t_device_ns: int, rgb: np.ndarray, depth: np.ndarray) -> SensorFrameRecord:
        rec = self.save_sensor_frame(index, t_host_ns, t_device_ns, rgb, depth)
        self.append_sensor_record(rec)
        return rec

    # phone ----------------------------------------------------------------------------
    def write_phone_camera(self, camera: PhoneCamera) -> None:
        atomic_write_json(self.path / "phone" / "camera.json", camera.to_dict())

    def save_phone_frame_bytes(self, rel_file: str, data: bytes) -> None:
        """Write an already-encoded phone frame (e.g. a JPEG pulled from the phone)."""
        atomic_write_bytes(self.path / "phone" / rel_file, data)

    def append_phone_record(self, rec: PhoneFrameRecord) -> None:
        self._index("phone/frames.csv", ",".join(PHONE_COLUMNS)).append(
            _csv_line([getattr(rec, c) for c in PHONE_COLUMNS])
        )
        self.phone_records += 1

    def write_phone_frame(self, rec: PhoneFrameRecord, image: np.ndarray) -> None:
        """Write one phone frame (RGB uint8) under rec.file and index it."""
        self.save_phone_frame_bytes(rec.file, encode_image(image, Path(rec.file).suffix))
        self.append_phone_record(rec)

    # clock ----------------------------------------------------------------------------
    def append_probe(self, probe: ClockProbe) -> None:
        self._index("clock/phone_probes.csv", ",".join(PROBE_COLUMNS)).append(
            f"{probe.t_host_send_ns},{probe.t_phone_ns},{probe.t_host_recv_ns}"
        )

    # truth (simulator only) -----------------------------------------------------------
    def write_truth_rig(self, rig: dict) -> None:
        (self.path / "truth" / "phone_depth").mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.path / "truth" / "rig.json", rig)

    def write_truth_phone_depth(self, index: int, depth_m: np.ndarray, K: np.ndarray | None = None) -> None:
        """truth/phone_depth/<index>.npz: depth_m, and K (3x3, the frame's true phone camera) when given."""
        (self.path / "truth" / "phone_depth").mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        extra = {} if K is None else {"K": np.asarray(K, np.float64)}
        np.savez_compressed(buf, depth_m=depth_m.astype(np.float32), **extra)
        atomic_write_bytes(self.path / "truth" / "phone_depth" / f"{index}.npz", buf.getvalue())

    # end ------------------------------------------------------------------------------
    def finish(self, status: str, message: str | None = None) -> None:
        if status not in STATUSES:
            raise SessionError(f"unknown session status {status!r}")
        for f in self._indexes.values():
            f.close()
        self._indexes.clear()
        self.meta["status"] = status
        if message:
            self.meta["message"] = message
        self.meta["finished_utc"] = datetime.now(timezone.utc).isoformat()
        try:
            try:
                atomic_write_json(self.path / "session.json", self.meta)
            except OSError:
                _rewrite_in_place(self.path / "session.json", self.meta)  # disk full: no room for a temp file
        finally:
            self._release_recording_lock()

    def __enter__(self) -> "SessionWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finish("complete")
        else:
            self.finish("interrupted", f"{exc_type.__name__}: {exc}" if str(exc) else exc_type.__name__)


def _rewrite_in_place(path: Path, meta: dict) -> None:
    """Overwrite session.json where it is, compactly: on a full disk its own blocks still hold the new,
    similar-sized text, so a session never stays "recording" because the final rename had no room."""
    text = json.dumps(meta, separators=(",", ":"), default=json_default).encode()
    with open(path, "r+b") as f:
        f.write(text)
        f.truncate()
        f.flush()
        os.fsync(f.fileno())


class _OutOfRange(Exception):
    """A field that parses but does not fit its type (never a torn line: cutting a line only shortens numbers)."""


def _int64(v: str) -> int:
    """int(v), held to the signed 64-bit range that timestamps and counts are computed in."""
    n = int(v)
    if not -(2**63) <= n < 2**63:
        raise _OutOfRange(f"{v} is out of range (a 64-bit integer, at most {2**63 - 1})")
    return n


def _time_ns(v: str) -> int:
    """A clock reading in ns: within +-2^62 (146 years), so that differences of two stay inside int64
    (a time near -2^63 wrapped silently in the clock fit)."""
    n = int(v)
    if not -(2**62) <= n <= 2**62:
        raise _OutOfRange(f"{v} is out of range (a time in ns, at most 2^62 = {2**62} from 0)")
    return n


def _count(v: str) -> int:
    """An index, ramp, step, exposure or ISO: a whole number >= 0 (0 where a phone does not say)."""
    n = _int64(v)
    if n < 0:
        raise _OutOfRange(f"{v} is out of range (a whole number >= 0)")
    return n


def _index_text(path: Path) -> str:
    """The text of an index file: UTF-8 (a byte-order mark allowed); UTF-16 and binary data are errors
    naming what they are, since a decoder's byte offset means nothing to whoever saved the file."""
    data = path.read_bytes()
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise SessionError(f"{path}: UTF-16 text (a byte-order mark FF FE / FE FF); save it as UTF-8")
    try:  # utf-8-sig: a spreadsheet's byte-order mark is not part of the first column's name
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise SessionError(f"{path}:{line}: not a CSV index (binary data at byte {e.start}); the file is damaged") from None


def _drop_zero_tail(path: Path, lines: list[str], torn_ok: bool) -> list[str]:
    """lines without a zero-filled tail (what a power loss leaves past the last flushed line) when the
    session may be torn; NUL bytes anywhere else are a FILE:LINE error."""
    k = next((i for i, ln in enumerate(lines) if "\0" in ln), None)
    if k is None:
        return lines
    tail_is_zeros = not "".join(lines[k:]).split("\0", 1)[1].strip("\0 \t")
    if torn_ok and tail_is_zeros:
        return lines[:k]  # the line the zeros start on was cut by them
    raise SessionError(f"{path}:{k + 1}: binary data (NUL bytes) where text belongs; the file is damaged from "
                       "there (a zero-filled tail is what a power loss while recording leaves)")


def _read_csv(path: Path, columns: list[str], types: dict, unique: tuple[tuple[str, ...], ...] = (),
              paths: tuple[str, ...] = (), torn_ok: bool = True) -> list[dict]:
    """Rows of an index CSV; blank lines are skipped; a malformed middle line is an error.

    A malformed last line is skipped as a torn write only where one can happen: `torn_ok` (the session
    is not "complete": a recording killed mid-write) or a file that does not end with a newline (a
    line cut off); in a complete session's newline-ended file it is a FILE:LINE error like any other.
    An integer beyond 64 bits is an error on any line, naming the line and the column; so is a
    repeated value of a `unique` column group, and a `paths` column that is not a relative path
    inside the session folder (see _check_rows)."""
    if not path.exists():
        return []
    text = _index_text(path)
    lines = _drop_zero_tail(path, text.splitlines(), torn_ok)
    if not lines:
        return []
    torn_ok = torn_ok or not text.endswith(("\n", "\r"))
    # columns by name: another tool may order them otherwise or add its own (ignored)
    header = [h.strip() for h in next(csv.reader(lines[:1]), [])]
    missing = [c for c in columns if c not in header]
    if missing or len(set(header)) != len(header):
        why = f"lacks {', '.join(missing)}" if missing else "names a column twice"
        raise SessionError(f"{path}: header {lines[0]!r} {why}; expected the columns {','.join(columns)}")
    at = [header.index(c) for c in columns]
    body = [(n, ln) for n, ln in enumerate(lines[1:], start=2) if ln.strip()]
    rows, numbers = [], []
    for n, line in body:
        try:
            row = next(csv.reader([line]))
            if len(row) != len(header):
                raise ValueError(f"{len(row)} fields, the header has {len(header)}")
            rows.append({c: _field(c, types.get(c, str), row[i]) for c, i in zip(columns, at)})
            numbers.append(n)
        except _OutOfRange as e:
            raise SessionError(f"{path}:{n}: {e}") from None
        except (ValueError, csv.Error) as e:  # csv.Error: e.g. a field beyond the csv module's 128 KiB limit
            if n == body[-1][0] and torn_ok:
                break  # torn last line of an interrupted session
            raise SessionError(f"{path}:{n}: malformed line ({e})") from None
    _check_rows(path, rows, numbers, unique, paths)
    return rows


def _check_rows(path: Path, rows: list[dict], numbers: list[int], unique: tuple[tuple[str, ...], ...],
                paths: tuple[str, ...]) -> None:
    """FILE:LINE errors for a repeated key (two frames with one index pair wrongly) and for a file
    name that is absolute or climbs out of its folder (the index would read another session's files).
    rows[k] came from line numbers[k]."""
    for n, row in zip(numbers, rows):
        for c in paths:
            p = PurePosixPath(row[c])
            if not row[c] or p.is_absolute() or ".." in p.parts:
                raise SessionError(f"{path}:{n}: {c} {row[c]!r} must name a file inside {path.parent.name}/ "
                                   "(it is empty, absolute or climbs out with '..')")
    for cols in unique:
        seen: dict[tuple, int] = {}
        for n, row in zip(numbers, rows):
            key = tuple(row[c] for c in cols)
            if key in seen:
                what = " ".join(f"{c} {v!r}" if isinstance(v, str) else f"{c} {v}" for c, v in zip(cols, key))
                raise SessionError(f"{path}:{n}: duplicate {what} (line {seen[key]} has it too)")
            seen[key] = n


def _diopters(v: str) -> float:
    """A focus value: finite and >= 0 (0 = infinity), or NaN for a frame without a focus reading."""
    d = float(v)
    if not (0 <= d <= MAX_DIOPTERS) and not math.isnan(d):
        raise _OutOfRange(f"{v} is out of range (diopters: 0 = infinity to {MAX_DIOPTERS:g} = 1 mm; nan = unknown)")
    return d


def _field(column: str, kind, value: str):
    """One CSV field parsed by `kind`; an out-of-range value's message names its column."""
    try:
        return kind(value)
    except _OutOfRange as e:
        raise _OutOfRange(f"{column} {e}") from None
    except ValueError:
        raise ValueError(f"{column} {value[:40]!r} is not a number") from None


MAX_DIOPTERS = 1000.0  # a focus nearer than 1 mm is another unit or a corrupt value, not a lens setting
_SENSOR_TYPES = {"index": _count, "t_host_ns": _time_ns, "t_device_ns": _time_ns}
_PHONE_TYPES = {
    "index": _count, "t_phone_ns": _time_ns, "focus_diopters_requested": _diopters, "focus_diopters": _diopters,
    "exposure_ns": _count, "iso": _count, "ramp": _count, "step": _count,
}


def _writer_alive(lock_path: Path) -> bool:
    """True while some process holds the recording lock (an flock, dropped by the kernel at exit)."""
    try:
        f = open(lock_path, "r")
    except FileNotFoundError:
        return False
    with f:
        try:
            import fcntl
        except ImportError:  # no flock (Windows): cannot tell, so trust session.json
            return True
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        return False


class Session:
    """A session folder loaded back: metadata, frame indexes, cameras, probes, truth."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not (self.path / "session.json").is_file():
            raise SessionError(f"{self.path}: not a session folder (no session.json)")
        self.meta = read_json(self.path / "session.json")
        if not isinstance(self.meta, dict):
            raise SessionError(f"{self.path}/session.json: expected a JSON object, found {type(self.meta).__name__}")
        if self.meta.get("schema") != SCHEMA:
            raise SessionError(f"{self.path}/session.json: schema {self.meta.get('schema')!r}, this dfdcap reads {SCHEMA}")
        if "status" not in self.meta:  # DESIGN.md: a required key; sync and report judge the session by it
            raise SessionError(f"{self.path}/session.json: lacks the field 'status' (expected one of {', '.join(STATUSES)})")
        if self.meta["status"] not in STATUSES:
            raise SessionError(f"{self.path}/session.json: status {self.meta['status']!r}, expected one of {', '.join(STATUSES)}")
        self.sensor_frames = [
            SensorFrameRecord(**r)
            for r in _read_csv(self.path / "sensor" / "frames.csv", SENSOR_COLUMNS, _SENSOR_TYPES,
                               unique=(("index",),), paths=("rgb", "depth"), torn_ok=self.torn_ok)
        ]
        self.sensor_frames.sort(key=lambda r: r.index)
        self.phone_frames = [
            PhoneFrameRecord(**r)
            for r in _read_csv(self.path / "phone" / "frames.csv", PHONE_COLUMNS, _PHONE_TYPES,
                               unique=(("index",), ("file",), ("ramp", "step")), paths=("file",),
                               torn_ok=self.torn_ok)
        ]
        self.phone_frames.sort(key=lambda r: r.index)

    @property
    def torn_ok(self) -> bool:
        """Whether an index may end in a torn line: only a session that did not end cleanly was cut mid-write."""
        return self.meta["status"] != "complete"

    @property
    def status(self) -> str:
        """The status as written in session.json (see effective_status for a crashed recording)."""
        return self.meta["status"]

    @property
    def effective_status(self) -> str:
        """status, except that a "recording" session whose writer is gone (crash, SIGKILL, power
        loss: no live holder of recording.lock) is "interrupted"; its indexed frames are all there."""
        if self.status != "recording":
            return self.status
        return "recording" if _writer_alive(self.path / LOCK_NAME) else "interrupted"

    @property
    def name(self) -> str:
        return self.meta.get("name", self.path.name)

    def rig_entry(self, device: str) -> dict:
        """session.json's rig.<device> ("phone", "sensor"): what the recorder knew of it; {} when
        the file says nothing, or something other than an object (a hand-edited "rig": null)."""
        rig = self.meta.get("rig")
        entry = rig.get(device) if isinstance(rig, dict) else None
        return entry if isinstance(entry, dict) else {}

    @property
    def sensor_intrinsics(self) -> SensorIntrinsics:
        return _from_json(SensorIntrinsics.from_dict, self.path / "sensor" / "intrinsics.json")

    @property
    def phone_camera(self) -> PhoneCamera:
        """camera.json, checked against the frames: a lens cannot focus nearer than its focal length,
        so a focal length at or beyond a recorded focus distance is a wrong value (the CoC turns negative)."""
        path = self.path / "phone" / "camera.json"
        cam = _from_json(PhoneCamera.from_dict, path)
        near = max((r.focus_diopters for r in self.phone_frames if r.focus_diopters > 0), default=0.0)
        if near > 0 and cam.focal_length_m >= 1.0 / near:
            raise SessionError(f"{path}: focal_length_m {cam.focal_length_m:g} is not below the nearest focus distance "
                               f"of phone/frames.csv ({1.0 / near:.4g} m); a lens cannot focus nearer than its focal "
                               "length: expected metres (was it given in mm?)")
        return cam

    def probes(self) -> np.ndarray:
        """(N, 3) int64: t_host_send_ns, t_phone_ns, t_host_recv_ns."""
        rows = _read_csv(self.path / "clock" / "phone_probes.csv", PROBE_COLUMNS, {c: _time_ns for c in PROBE_COLUMNS},
                         torn_ok=self.torn_ok)
        return np.array([[r[c] for c in PROBE_COLUMNS] for r in rows], dtype=np.int64).reshape(-1, 3)

    def read_sensor_rgb(self, rec: SensorFrameRecord) -> np.ndarray:
        return read_image(self.path / "sensor" / rec.rgb)

    def read_sensor_depth_raw(self, rec: SensorFrameRecord) -> np.ndarray:
        """(H, W) uint16 in native units, 0 = invalid."""
        return read_image(self.path / "sensor" / rec.depth, unchanged=True)

    @property
    def depth_rule(self) -> DepthRule:
        """The raw depth codes that are no data: session.json's recorder.depth_rule (codes above max_code
        and those in invalid_codes) when present, and 65535 always: the all-ones code is the "invalid"
        marker of 16-bit depth (RealSense D4xx, Kinect-style sensors), never 65.5 m of real depth."""
        rec = self.meta.get("recorder")
        doc = rec.get("depth_rule") if isinstance(rec, dict) else None
        if doc is None:
            return DepthRule(65535, (65535,))
        where = f"{self.path / 'session.json'}: recorder.depth_rule"
        code = lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 65535  # noqa: E731
        if not isinstance(doc, dict) or not code(doc.get("max_code")):
            raise SessionError(f"{where} {doc!r}: expected {{\"max_code\": 1-65535, \"invalid_codes\": [codes]}}")
        codes = doc.get("invalid_codes", [])
        if not isinstance(codes, list) or not all(code(c) for c in codes):
            raise SessionError(f"{where}.invalid_codes {codes!r}: expected a list of depth codes 1-65535")
        return DepthRule(doc["max_code"], tuple(sorted(set(codes) | {65535})))

    def read_sensor_depth_m(self, rec: SensorFrameRecord, depth_scale_m: float | None = None) -> np.ndarray:
        """(H, W) float32 metres, 0 = invalid (codes the session's depth_rule calls no data included)."""
        scale = self.sensor_intrinsics.depth_scale_m if depth_scale_m is None else depth_scale_m
        raw, _ = clear_invalid_depth(self.read_sensor_depth_raw(rec), self.depth_rule)
        return raw.astype(np.float32) * np.float32(scale)

    def read_phone_frame(self, rec: PhoneFrameRecord) -> np.ndarray:
        return read_image(self.path / "phone" / rec.file)

    @property
    def has_truth(self) -> bool:
        """True for a session of the fully simulated rig (sim sensor AND sim phone): truth/rig.json
        then holds both cameras, T_phone_from_sensor and both true clocks, and truth/phone_depth
        the true depth of the scene the sensor saw, which is what its consumers (pairing by true
        clocks, the sync and dataset checks) assume. A session with any real device has no truth/."""
        return (self.path / "truth" / "rig.json").is_file()

    def truth_rig(self) -> dict:
        return read_json(self.path / "truth" / "rig.json")

    def read_truth_phone_depth(self, index: int) -> np.ndarray:
        with np.load(self.path / "truth" / "phone_depth" / f"{index}.npz") as z:
            return z["depth_m"]
