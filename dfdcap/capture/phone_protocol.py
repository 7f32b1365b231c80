"""The companion-app protocol (docs/phone-protocol.md), shared by the host and the simulated app.

Line-delimited JSON over one TCP connection that the host reaches through `adb forward`:
each request is one UTF-8 JSON object on one line with `id`, `type` and the fields of that
type; each reply carries the same `id`, `ok`, and either the reply fields or `error`.
Pure code only: message building, validation, safe names. No sockets except `JsonLineChannel`.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from dataclasses import dataclass
from typing import Any

from dfdcap.capture.session import PHONE_COLUMNS, PhoneCamera, PhoneFrameRecord
from dfdcap.errors import DeviceError
from dfdcap.lens import FocusSchedule

PROTOCOL_VERSION = 1
APP_PACKAGE = "org.dfdcap.companion"
APP_COMPONENT = "org.dfdcap.companion/.RemoteActivity"
APP_PORT = 48123  # TCP port the app listens on, on the phone's loopback interface
RECORDINGS_ROOT = f"/sdcard/Android/data/{APP_PACKAGE}/files/recordings"
MAX_LINE_BYTES = 64 * 1024

REQUEST_TYPES = ("hello", "time", "start", "status", "stop", "recordings")
STATES = ("idle", "recording", "done", "stopped", "error")
FOCUS_CALIBRATIONS = ("CALIBRATED", "APPROXIMATE", "UNCALIBRATED")
TIMESTAMP_SOURCES = ("REALTIME", "UNKNOWN")
IMAGE_FORMATS = {"png": ".png", "jpeg": ".jpg"}
EXPOSURE_MODES = ("auto", "locked")

# frames.csv as the phone writes it: the session's columns plus what the host verifies with.
PHONE_CSV_COLUMNS = PHONE_COLUMNS + ["size_bytes", "sha256"]
TRUTH_CSV_COLUMNS = ["index", "file", "size_bytes", "sha256"]  # simulator only

_NAME_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_RECORDING_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ProtocolError(DeviceError):
    """The companion app answered something this host does not understand or accept."""


class VersionMismatch(ProtocolError):
    """The app speaks another protocol version."""


# --- names coming from the phone --------------------------------------------------------------


def check_relative_name(name: str, top: tuple[str, ...] = ("frames",), where: str = "phone") -> str:
    """A file name from the phone, accepted only as `<top>/<part>[/<part>...]` of plain parts.

    Refuses absolute paths, `..`, `.`, backslashes, empty parts, NUL and anything outside `top`,
    so joining it under the session folder can never leave that folder.
    """
    if not isinstance(name, str) or not name:
        raise ProtocolError(f"{where}: empty or non-text file name {name!r}")
    if name.startswith("/") or "\\" in name or "\x00" in name:
        raise ProtocolError(f"{where}: refused file name {name!r} (absolute or with \\ or NUL)")
    parts = name.split("/")
    if any(p in ("", ".", "..") or not _NAME_PART.match(p) for p in parts):
        raise ProtocolError(f"{where}: refused file name {name!r} (only plain names, no '..')")
    if len(parts) < 2 or parts[0] not in top:
        raise ProtocolError(f"{where}: refused file name {name!r} (must be inside {'/'.join(top)}/)")
    return name


def check_recording_id(recording_id: str, where: str = "phone") -> str:
    if not isinstance(recording_id, str) or not _RECORDING_ID.match(recording_id) or ".." in recording_id:
        raise ProtocolError(f"{where}: refused recording id {recording_id!r}")
    return recording_id


def recording_dir(recording_id: str) -> str:
    """Where the app keeps one recording on the phone (a device path)."""
    return f"{RECORDINGS_ROOT}/{check_recording_id(recording_id)}"


def check_recording_dir(path: str, recording_id: str, where: str = "phone") -> str:
    """The app's answer for a recording's folder must be exactly RECORDINGS_ROOT/<id>."""
    if path != recording_dir(recording_id):
        raise ProtocolError(f"{where}: recording folder {path!r} is not {recording_dir(recording_id)!r}")
    return path


def check_sha256(value: str, where: str) -> str:
    if not isinstance(value, str) or not _SHA256.match(value):
        raise ProtocolError(f"{where}: {value!r} is not a lower-case hex sha256")
    return value


# --- messages ---------------------------------------------------------------------------------


def encode_message(msg: dict) -> bytes:
    """One JSON object as one line (no newline inside: json.dumps escapes them)."""
    data = json.dumps(msg, separators=(",", ":"), allow_nan=False).encode("utf-8") + b"\n"
    if len(data) > MAX_LINE_BYTES:
        raise ProtocolError(f"message {msg.get('type')!r} is {len(data)} bytes, over the {MAX_LINE_BYTES} limit")
    return data


def decode_line(line: bytes, where: str) -> dict:
    try:
        msg = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProtocolError(f"{where}: not a JSON line ({e}): {line[:80]!r}") from None
    if not isinstance(msg, dict):
        raise ProtocolError(f"{where}: a message must be a JSON object, got {type(msg).__name__}")
    return msg


def _need(msg: dict, key: str, types, where: str) -> Any:
    if key not in msg:
        raise ProtocolError(f"{where}: field {key!r} missing")
    v = msg[key]
    if isinstance(v, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise ProtocolError(f"{where}: field {key!r} is a boolean, expected {types}")
    if not isinstance(v, types):
        raise ProtocolError(f"{where}: field {key!r} is {type(v).__name__}, expected {types}")
    return v


def check_reply(req: dict, reply: dict, where: str) -> dict:
    """Validate a reply to `req`; an error reply becomes a DeviceError with the app's message."""
    if reply.get("id") != req["id"]:
        raise ProtocolError(f"{where}: reply id {reply.get('id')!r} does not match request {req['id']}")
    if reply.get("ok") is not True:
        err = reply.get("error") or {}
        code = err.get("code", "error") if isinstance(err, dict) else "error"
        text = err.get("message", str(err)) if isinstance(err, dict) else str(err)
        if code == "version_mismatch":
            raise VersionMismatch(f"{where}: {text}")
        raise DeviceError(f"{where}: the app refused {req['type']!r} ({code}: {text})")
    t = req["type"]
    w = f"{where}: reply to {t!r}"
    if t == "hello":
        proto = _need(reply, "protocol", int, w)
        if proto != PROTOCOL_VERSION:
            raise VersionMismatch(
                f"{where}: the companion app speaks protocol version {proto}, this dfdcap speaks "
                f"{PROTOCOL_VERSION}; install the matching app or dfdcap version"
            )
        _need(reply, "app_version", str, w)
        camera_from_hello(reply, None, w)
    elif t == "time":
        _need(reply, "t_phone_ns", int, w)
    elif t == "start":
        rid = check_recording_id(_need(reply, "recording_id", str, w), w)
        check_recording_dir(_need(reply, "dir", str, w), rid, w)
        _need(reply, "frames_total", int, w)
    elif t in ("status", "stop"):
        state = _need(reply, "state", str, w)
        if state not in STATES:
            raise ProtocolError(f"{w}: unknown state {state!r}")
        _need(reply, "frames_captured", int, w)
    elif t == "recordings":
        recs = _need(reply, "recordings", list, w)
        for r in recs:
            if not isinstance(r, dict):
                raise ProtocolError(f"{w}: recording entries must be objects")
            rid = check_recording_id(_need(r, "recording_id", str, w), w)
            check_recording_dir(_need(r, "dir", str, w), rid, w)
    return reply


def check_request(msg: dict, where: str = "request") -> dict:
    """Validate a request as the app receives it (the reference app uses this)."""
    _need(msg, "id", int, where)
    t = _need(msg, "type", str, where)
    if t not in REQUEST_TYPES:
        raise ProtocolError(f"{where}: unknown type {t!r}")
    if t == "hello":
        _need(msg, "protocol", int, where)
    if t == "start":
        check_recording_id(_need(msg, "recording_id", str, where), where)
        sched = _need(msg, "schedule", dict, where)
        schedule_from_message(sched, where)
        fps = _need(msg, "fps", (int, float), where)
        if not 0 < fps <= 240:
            raise ProtocolError(f"{where}: fps {fps} outside (0, 240]")
        image = _need(msg, "image", dict, where)
        size = _need(image, "size", list, where)
        if len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size):
            raise ProtocolError(f"{where}: image size {size!r} is not [width, height]")
        if _need(image, "format", str, where) not in IMAGE_FORMATS:
            raise ProtocolError(f"{where}: image format must be one of {sorted(IMAGE_FORMATS)}")
        exposure = _need(msg, "exposure", dict, where)
        if _need(exposure, "mode", str, where) not in EXPOSURE_MODES:
            raise ProtocolError(f"{where}: exposure mode must be one of {EXPOSURE_MODES}")
        for k in ("exposure_ns", "iso"):
            if k in exposure and (exposure["mode"] != "locked" or not isinstance(exposure[k], int)
                                  or isinstance(exposure[k], bool) or exposure[k] <= 0):
                raise ProtocolError(f"{where}: exposure.{k} must be a positive integer, and only with mode locked")
    return msg


def schedule_to_message(schedule: FocusSchedule) -> dict:
    """The start request's schedule: the summary and the explicit (ramps, steps) diopters."""
    return {
        "ramps": schedule.ramps,
        "steps": schedule.steps,
        "near_m": schedule.near_m,
        "far_m": schedule.far_m,
        "spacing": schedule.spacing,
        "order": "near_to_far",
        "focus_diopters": [[float(v) for v in row] for row in schedule.focus_diopters()],
    }


def schedule_from_message(sched: dict, where: str = "schedule") -> FocusSchedule:
    """Rebuild the FocusSchedule and check the explicit diopters agree with it (1e-9 relative)."""
    try:
        fs = FocusSchedule(
            near_m=float(sched["near_m"]), far_m=float(sched["far_m"]), steps=int(sched["steps"]),
            ramps=int(sched["ramps"]), spacing=sched.get("spacing", "diopters"),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ProtocolError(f"{where}: schedule incomplete or malformed ({e})") from None
    except DeviceError:
        raise
    except Exception as e:  # FocusSchedule's own DfdcapError for bad values
        raise ProtocolError(f"{where}: {e}") from None
    if sched.get("order", "near_to_far") != "near_to_far":
        raise ProtocolError(f"{where}: order {sched.get('order')!r} unsupported (only near_to_far)")
    rows = sched.get("focus_diopters")
    if not isinstance(rows, list) or len(rows) != fs.ramps or any(
        not isinstance(r, list) or len(r) != fs.steps for r in rows
    ):
        raise ProtocolError(f"{where}: focus_diopters must be {fs.ramps} ramps x {fs.steps} steps")
    want = fs.focus_diopters()
    for i, row in enumerate(rows):
        for j, v in enumerate(row):
            if not isinstance(v, (int, float)) or abs(v - want[i, j]) > 1e-9 * max(1.0, abs(want[i, j])):
                raise ProtocolError(f"{where}: focus_diopters[{i}][{j}] = {v!r} disagrees with near/far/steps")
    return fs


def camera_from_hello(reply: dict, image_size: tuple[int, int] | None, where: str) -> PhoneCamera:
    """The PhoneCamera for `image_size` (default: the app's default size) from a hello reply."""
    cam = _need(reply, "camera", dict, where)
    sizes = _need(cam, "sizes", list, where)
    if not sizes or any(not (isinstance(s, list) and len(s) == 2 and all(isinstance(v, int) and v > 0 for v in s)) for s in sizes):
        raise ProtocolError(f"{where}: camera.sizes must be a non-empty list of [width, height]")
    default = _need(cam, "default_size", list, where)
    size = tuple(image_size or default)
    if list(size) not in sizes:
        raise DeviceError(f"{where}: image size {size[0]}x{size[1]} not offered; the phone offers "
                          + ", ".join(f"{w}x{h}" for w, h in sizes))
    calib = _need(cam, "focus_calibration", str, where)
    if calib not in FOCUS_CALIBRATIONS:
        raise ProtocolError(f"{where}: focus_calibration {calib!r} not one of {FOCUS_CALIBRATIONS}")
    src = _need(cam, "timestamp_source", str, where)
    if src not in TIMESTAMP_SOURCES:
        raise ProtocolError(f"{where}: timestamp_source {src!r} not one of {TIMESTAMP_SOURCES}")
    sensor = _need(cam, "sensor_size_m", list, where)
    if len(sensor) != 2 or not all(isinstance(v, (int, float)) and v > 0 for v in sensor):
        raise ProtocolError(f"{where}: sensor_size_m must be [width, height] in metres")
    values = {k: _need(cam, k, (int, float), where) for k in ("focal_length_m", "f_number", "min_focus_diopters")}
    if not all(v > 0 for v in values.values()):
        raise ProtocolError(f"{where}: focal_length_m, f_number, min_focus_diopters must be positive")
    return PhoneCamera(
        float(values["focal_length_m"]), float(values["f_number"]), (float(sensor[0]), float(sensor[1])),
        (int(size[0]), int(size[1])), float(values["min_focus_diopters"]), calib, src,
    )


def camera_to_hello(camera: PhoneCamera, sizes: list[tuple[int, int]] | None = None) -> dict:
    """The hello reply's `camera` object for a PhoneCamera (what the reference app sends)."""
    sizes = sizes or [camera.image_size]
    return {
        "id": "0",
        "focal_length_m": camera.focal_length_m,
        "f_number": camera.f_number,
        "sensor_size_m": list(camera.sensor_size_m),
        "min_focus_diopters": camera.min_focus_diopters,
        "focus_calibration": camera.focus_calibration,
        "timestamp_source": camera.timestamp_source,
        "sizes": [list(s) for s in sizes],
        "default_size": list(camera.image_size),
        "formats": sorted(IMAGE_FORMATS),
    }


# --- the phone's frames.csv -------------------------------------------------------------------


@dataclass(frozen=True)
class PhoneFileRow:
    """One frames.csv row on the phone: the session record plus size and checksum."""

    record: PhoneFrameRecord
    size_bytes: int
    sha256: str


_INT_COLS = {"index", "t_phone_ns", "exposure_ns", "iso", "ramp", "step", "size_bytes"}
_FLOAT_COLS = {"focus_diopters_requested", "focus_diopters"}


def parse_phone_csv(text: str, where: str) -> list[PhoneFileRow]:
    """Parse and validate the phone's frames.csv. Every name is checked before anything is written."""
    import csv

    lines = text.splitlines()
    if not lines:
        return []
    if lines[0].split(",") != PHONE_CSV_COLUMNS:
        raise ProtocolError(f"{where}: header {lines[0]!r}, expected {','.join(PHONE_CSV_COLUMNS)}")
    rows: list[PhoneFileRow] = []
    seen: set[int] = set()
    for n, row in enumerate(csv.reader(lines[1:]), start=2):
        if len(row) != len(PHONE_CSV_COLUMNS):
            raise ProtocolError(f"{where}:{n}: {len(row)} fields, expected {len(PHONE_CSV_COLUMNS)}")
        d = dict(zip(PHONE_CSV_COLUMNS, row))
        try:
            vals = {c: (int(v) if c in _INT_COLS else float(v) if c in _FLOAT_COLS else v) for c, v in d.items()}
        except ValueError as e:
            raise ProtocolError(f"{where}:{n}: {e}") from None
        check_relative_name(vals["file"], ("frames",), f"{where}:{n}")
        check_sha256(vals["sha256"], f"{where}:{n}")
        if vals["size_bytes"] < 0 or vals["index"] < 0 or vals["index"] in seen:
            raise ProtocolError(f"{where}:{n}: negative size or index, or index {vals['index']} repeated")
        seen.add(vals["index"])
        size, sha = vals.pop("size_bytes"), vals.pop("sha256")
        rows.append(PhoneFileRow(PhoneFrameRecord(**vals), size, sha))
    return rows


def format_phone_csv_row(rec: PhoneFrameRecord, size_bytes: int, sha256: str) -> str:
    import csv
    import io

    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow([getattr(rec, c) for c in PHONE_COLUMNS] + [size_bytes, sha256])
    return buf.getvalue()


# --- one connection ---------------------------------------------------------------------------


class JsonLineChannel:
    """Line-delimited JSON over a connected socket; thread-safe request/reply for the host side."""

    def __init__(self, sock: socket.socket, where: str, timeout_s: float = 5.0):
        self.sock = sock
        self.where = where
        self.timeout_s = timeout_s
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(timeout_s)
        self._buf = b""
        self._lock = threading.Lock()
        self._next_id = 1

    def send(self, msg: dict) -> None:
        self.sock.sendall(encode_message(msg))

    def recv(self) -> dict | None:
        """The next message, or None at a clean end of the connection."""
        while b"\n" not in self._buf:
            if len(self._buf) > MAX_LINE_BYTES:
                raise ProtocolError(f"{self.where}: line longer than {MAX_LINE_BYTES} bytes")
            chunk = self.sock.recv(65536)
            if not chunk:
                if self._buf:
                    raise ProtocolError(f"{self.where}: connection closed inside a message")
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return decode_line(line, self.where)

    def request(self, type_: str, **fields) -> tuple[dict, int, int]:
        """Send one request, wait for its reply; returns (reply, t_host_send_ns, t_host_recv_ns)."""
        import time

        with self._lock:
            req = {"id": self._next_id, "type": type_, **fields}
            self._next_id += 1
            data = encode_message(req)
            t_send = time.monotonic_ns()
            self.sock.sendall(data)
            reply = self.recv()
            t_recv = time.monotonic_ns()
        if reply is None:
            raise ConnectionResetError("connection closed by the app")
        return check_reply(req, reply, self.where), t_send, t_recv

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
