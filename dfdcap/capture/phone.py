"""The phone over ADB: the companion app's protocol client, focus sweeps, clock probes, pulls.

The host reaches the app through the adb server (`adbutils`): `adb forward tcp:LOCAL
tcp:48123` and line-delimited JSON (dfdcap.capture.phone_protocol, docs/phone-protocol.md).
Frames and the phone's frames.csv (with size and sha256 per frame) are pulled with ADB sync
into the session folder; a file already there with the right size and checksum is skipped, so
a broken pull resumes; the phone's copy is removed only after every file was verified.
Everything a shell on the phone receives is quoted with shlex.quote; every file name coming
from the phone is checked (phone_protocol.check_relative_name) before anything is written.

adbutils is imported here only, lazily: other commands work without it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shlex
import shutil
import socket
import struct
import subprocess
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from dfdcap.capture.base import Phone, unreachable_focus
from dfdcap.capture.phone_protocol import (
    APP_COMPONENT,
    APP_PACKAGE,
    APP_PORT,
    PROTOCOL_VERSION,
    TRUTH_CSV_COLUMNS,
    JsonLineChannel,
    ProtocolError,
    camera_from_hello,
    check_recording_dir,
    check_recording_id,
    check_relative_name,
    check_sha256,
    parse_phone_csv,
    schedule_to_message,
)
from dfdcap.capture.session import ClockProbe, DeviceInfo, PhoneCamera, Session, SessionWriter
from dfdcap.errors import DeviceError, SessionError
from dfdcap.fileio import atomic_path, atomic_write_json, read_json
from dfdcap.lens import FocusSchedule

DEFAULT_ADB_PORT = 5037
RECORDING_FILE = "phone/recording.json"  # in the session: which phone recording it holds


def _adbutils():
    adb_server_port()  # adbutils reads $ANDROID_ADB_SERVER_PORT with int() (at import, too): say what is wrong first
    try:
        import adbutils
    except ImportError as e:  # pragma: no cover - adbutils is a dependency
        raise DeviceError("the phone needs the Python package adbutils: pip install adbutils") from e
    return adbutils


def _server_alive(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def adb_server_port(adb_port: int | None = None) -> int:
    """The adb server port: the argument, else $ANDROID_ADB_SERVER_PORT, else 5037."""
    if adb_port:
        return int(adb_port)
    env = os.environ.get("ANDROID_ADB_SERVER_PORT")
    if env is None:
        return DEFAULT_ADB_PORT
    port = int(env) if env.strip().isdigit() else -1
    if not 1 <= port <= 65535:
        raise DeviceError(f"ANDROID_ADB_SERVER_PORT={env!r} is not a port number (1 to 65535; unset it for adb's 5037)")
    return port


def adb_client(adb_port: int | None = None, host: str = "127.0.0.1"):
    """An adbutils client on a live adb server; starts `adb -P PORT start-server` if none answers.

    (adbutils would start its own bundled server on the default port otherwise.)
    """
    adbutils = _adbutils()
    port = adb_server_port(adb_port)
    if not _server_alive(host, port):
        adb = shutil.which("adb") or adbutils.adb_path()
        try:
            subprocess.run([adb, "-P", str(port), "start-server"], check=True, capture_output=True,
                           timeout=30, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError) as e:
            raise DeviceError(f"adb server on {host}:{port}: not running and `{adb} -P {port} start-server` failed ({e})") from None
    return adbutils.AdbClient(host=host, port=port, socket_timeout=30)


def find_device(client, serial: str | None):
    """The AdbDevice with this serial, or the only phone attached; clear errors otherwise."""
    adbutils = _adbutils()
    try:
        listed = client.list()
    except (adbutils.AdbError, OSError) as e:
        raise DeviceError(f"adb server {client.host}:{client.port}: cannot list devices ({e})") from None
    states = {d.serial: d.state for d in listed}
    if serial is None:
        ready = [s for s, st in states.items() if st == "device"]
        if not ready:
            other = ", ".join(f"{s} ({st})" for s, st in states.items())
            raise DeviceError("no phone connected over ADB" + (f"; seen but not ready: {other}" if other else
                              " (check the cable and that USB debugging is on: `adb devices`)"))
        if len(ready) > 1:
            raise DeviceError(f"{len(ready)} phones connected ({', '.join(ready)}): name one with --phone SERIAL")
        serial = ready[0]
    elif serial not in states:
        raise DeviceError(f"phone {serial}: not connected (adb lists: {', '.join(states) or 'nothing'})")
    state = states[serial]
    if state == "unauthorized":
        raise DeviceError(f"phone {serial}: unauthorized; accept the USB debugging prompt on the phone")
    if state != "device":
        raise DeviceError(f"phone {serial}: state {state!r}, expected 'device' (reconnect the cable)")
    return client.device(serial)


def _shell(device, argv: list[str], where: str, timeout_s: float = 30.0) -> str:
    """Run argv in the phone's shell, every word quoted; returns its output (stdout+stderr)."""
    adbutils = _adbutils()
    cmd = " ".join(shlex.quote(a) for a in argv)
    try:
        return device.shell(cmd, timeout=timeout_s)
    except (adbutils.AdbError, OSError) as e:
        raise DeviceError(f"{where}: `{cmd}` failed ({e})") from None


def app_installed(device, package: str = APP_PACKAGE) -> bool:
    out = _shell(device, ["pm", "list", "packages", package], f"phone {device.serial}")
    return f"package:{package}" in out.split()


def remote_sha256(device, path: str, where: str) -> str:
    out = _shell(device, ["sha256sum", path], where)
    first = out.split()[0] if out.split() else ""
    try:
        return check_sha256(first, f"{where}: sha256sum {path}")
    except ProtocolError:
        raise DeviceError(f"{where}: sha256sum {path} failed: {out.strip()[:200]}") from None


def _open_channel(device, package: str, device_port: int, timeout_s: float, where: str, launch: bool):
    """Forward a local port to the app's port and connect; start the app once if it does not answer.

    Returns (channel, hello_reply, local_port). Raises VersionMismatch for another protocol.
    """
    local_port = _free_local_port()
    adbutils = _adbutils()
    try:
        device.forward(f"tcp:{local_port}", f"tcp:{device_port}")
    except (adbutils.AdbError, OSError) as e:
        raise DeviceError(f"{where}: adb forward tcp:{local_port} tcp:{device_port} failed ({e})") from None
    try:
        return _hello_over(device, package, local_port, device_port, timeout_s, where, launch) + (local_port,)
    except BaseException:
        _remove_forward(device, local_port)
        raise


def _remove_forward(device, local_port: int) -> None:
    with contextlib.suppress(Exception):
        device.forward_remove(f"tcp:{local_port}", raise_non_found=False)


def _hello_over(device, package: str, local_port: int, device_port: int, timeout_s: float, where: str,
                launch: bool) -> tuple[JsonLineChannel, dict]:
    tried_launch = False
    deadline = time.monotonic()
    while True:
        sock = None
        try:
            sock = socket.create_connection(("127.0.0.1", local_port), timeout=timeout_s)
            chan = JsonLineChannel(sock, where, timeout_s)
            reply, _, _ = chan.request("hello", protocol=PROTOCOL_VERSION, host=f"dfdcap {_version()}")
            return chan, reply
        except (OSError, ConnectionError, DeviceError) as e:
            if sock is not None:
                sock.close()
            if isinstance(e, DeviceError):
                raise
            if not launch:
                raise DeviceError(f"{where}: the companion app does not answer on its port {device_port} ({e})") from None
            if not tried_launch:
                component = APP_COMPONENT if package == APP_PACKAGE else f"{package}/.RemoteActivity"
                _shell(device, ["am", "start", "-n", component], where)
                tried_launch, deadline = True, time.monotonic() + 5.0
            elif time.monotonic() > deadline:
                raise DeviceError(
                    f"{where}: the companion app {package} is installed but does not answer on its port "
                    f"{device_port}, even after `am start`; open it on the phone"
                ) from None
            time.sleep(0.1)


def _free_local_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _version() -> str:
    from dfdcap import __version__

    return __version__


@dataclass
class PullResult:
    """What one pull did: frames listed by the phone, pulled now, already present, bytes moved;
    notes: what it noticed in the frames (Open Camera: an undated EXIF, ...), for the user to see."""

    frames: int
    pulled: int
    skipped: int
    bytes_pulled: int
    truth_files: int
    deleted_on_phone: bool
    seconds: float
    notes: list[str] = field(default_factory=list)


class AdbPhone(Phone):
    """A phone running the companion app, reached over ADB (docs/phone-protocol.md).

    serial: the ADB serial, or None for the only phone attached. adb_port: the adb server's
    port (default $ANDROID_ADB_SERVER_PORT or 5037). image_size: (w, h) to record, default the
    app's. image_format: jpeg (default: what a phone's camera pipeline encodes at video rates) or png.
    Opening checks the app is installed and answers with this protocol version.
    keep_on_phone: leave the recording on the phone after a verified pull (default: delete it).
    """

    def __init__(
        self,
        serial: str | None = None,
        *,
        adb_port: int | None = None,
        image_size: tuple[int, int] | None = None,
        image_format: str = "jpeg",
        exposure: dict | None = None,
        package: str = APP_PACKAGE,
        device_port: int = APP_PORT,
        timeout_s: float = 5.0,
        progress: bool = True,
        keep_on_phone: bool = False,
    ):
        self._client = adb_client(adb_port)
        self._device = find_device(self._client, serial)
        self.serial: str = self._device.serial
        self.where = f"phone {self.serial}"
        self.package = package
        self.image_format = image_format
        self.exposure = exposure or {"mode": "auto"}
        self.progress = progress
        self.keep_on_phone = keep_on_phone
        if not app_installed(self._device, package):
            raise DeviceError(f"{self.where}: the companion app {package} is not installed (see docs/phone-protocol.md)")
        model = _shell(self._device, ["getprop", "ro.product.model"], self.where).strip() or "unknown"
        self.info = DeviceInfo("adb", model, self.serial)
        self._chan, self._hello, self._local_port = _open_channel(
            self._device, package, device_port, timeout_s, self.where, launch=True)
        try:
            self.camera = camera_from_hello(self._hello, image_size, self.where)
        except BaseException:
            self.close()
            raise
        self.recording_id: str | None = None
        self.remote_dir: str | None = None
        self._fps = 0.0
        self._frames_total = 0
        self._lost: str | None = None

    # protocol -----------------------------------------------------------------------------------
    def _request(self, type_: str, **fields) -> tuple[dict, int, int]:
        if self._lost is not None:
            raise DeviceError(self._lost)
        try:
            return self._chan.request(type_, **fields)
        except (OSError, ConnectionError) as e:
            msg = f"{self.where}: lost the connection to the companion app during {type_!r} ({e or type(e).__name__})"
            if self.recording_id is not None:
                msg += (f"; the phone keeps recording {self.recording_id} and keeps its frames: reconnect it and "
                        f"run `dfdcap pull SESSION` to fetch them")
            self._lost = msg
            raise DeviceError(msg) from None

    def hello(self) -> PhoneCamera:
        reply, _, _ = self._request("hello", protocol=PROTOCOL_VERSION, host=f"dfdcap {_version()}")
        self._hello = reply
        self.camera = camera_from_hello(reply, self.camera.image_size, self.where)
        return self.camera

    @property
    def app_version(self) -> str:
        return self._hello["app_version"]

    def probe(self) -> ClockProbe:
        reply, t_send, t_recv = self._request("time")
        return ClockProbe(t_send, reply["t_phone_ns"], t_recv)

    def start(self, schedule: FocusSchedule, fps: float) -> None:
        why = unreachable_focus(schedule, self.camera)
        if why:
            raise DeviceError(f"{self.where}: {why}")
        rid = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "_" + secrets.token_hex(3)
        reply, _, _ = self._request(
            "start",
            recording_id=rid,
            schedule=schedule_to_message(schedule),
            fps=float(fps),
            image={"size": list(self.camera.image_size), "format": self.image_format},
            exposure=self.exposure,
        )
        if reply["recording_id"] != rid:
            raise ProtocolError(f"{self.where}: started recording {reply['recording_id']!r}, asked for {rid!r}")
        self.recording_id, self.remote_dir = rid, reply["dir"]
        self._fps, self._frames_total = float(fps), reply["frames_total"]

    def status(self) -> dict:
        reply, _, _ = self._request("status")
        return reply

    def is_done(self) -> bool:
        st = self.status()
        if st["state"] == "error":
            raise DeviceError(f"{self.where}: the app reports a camera error: {st.get('message', 'no message')}")
        return st["state"] in ("done", "stopped")

    def stop(self) -> None:
        """Stop the sweep; the reply comes once the app has written every frame and frames.csv."""
        self._request("stop")

    def recordings(self) -> list[dict]:
        reply, _, _ = self._request("recordings")
        return reply["recordings"]

    # files --------------------------------------------------------------------------------------
    def fetch(self, writer: SessionWriter) -> int:
        """Pull the recording into the session (resumable), verify, then delete it on the phone."""
        if self.recording_id is None:
            raise DeviceError(f"{self.where}: nothing recorded to fetch (start() was not called)")
        atomic_write_json(writer.path / RECORDING_FILE, {
            "serial": self.serial, "recording_id": self.recording_id, "dir": self.remote_dir,
            "package": self.package, "app_version": self.app_version, "protocol": PROTOCOL_VERSION,
        })
        if self._lost is not None:
            raise DeviceError(self._lost)
        res = pull_recording(self._device, self.remote_dir, writer, self.where, delete=not self.keep_on_phone,
                             progress=self.progress)
        return res.frames

    def close(self) -> None:
        self._chan.close()
        _remove_forward(self._device, self._local_port)


# --- pulling ---------------------------------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _inside(root: Path, rel: str) -> Path:
    """root/rel, refused unless it resolves inside root (names were checked already: defence in depth)."""
    root_r = root.resolve()
    p = (root_r / rel).resolve()
    if root_r not in p.parents:
        raise ProtocolError(f"{rel!r} would be written outside {root}")
    return p


class SyncConnection:
    """One ADB sync session (adbutils connection, `sync:` service) for many STAT/RECV requests.

    adbutils opens a new connection (and a version query) per file; one session avoids ~20 ms a
    file. Any transport failure becomes DeviceError naming the file and how to resume.
    """

    def __init__(self, device, where: str, timeout_s: float = 30.0):
        adbutils = _adbutils()
        self.where = where
        self._errors = (adbutils.AdbError, OSError, EOFError)
        try:
            self._c = device.open_transport(timeout=timeout_s)
            self._c.send_command("sync:")
            self._c.check_okay()
        except self._errors as e:
            raise DeviceError(f"{where}: cannot open an ADB sync session ({e or type(e).__name__})") from None

    def _broke(self, what: str, e: BaseException) -> DeviceError:
        return DeviceError(f"{self.where}: {what} broke ({e or type(e).__name__}); run `dfdcap pull SESSION` to resume")

    def _request(self, cmd: bytes, path: str) -> None:
        b = path.encode("utf-8")
        self._c.conn.sendall(cmd + struct.pack("<I", len(b)) + b)

    def stat(self, path: str) -> tuple[int, int]:
        """(mode, size); mode 0 when the path does not exist."""
        try:
            self._request(b"STAT", path)
            reply = self._c.read_exact(16)
        except self._errors as e:
            raise self._broke(f"stat of {path}", e) from None
        if reply[:4] != b"STAT":
            raise DeviceError(f"{self.where}: stat of {path}: unexpected sync reply {reply[:4]!r}")
        mode, size, _mtime = struct.unpack("<III", reply[4:])
        return mode, size

    def exists(self, path: str) -> bool:
        return self.stat(path)[0] != 0

    def list_dir(self, path: str) -> list[tuple[str, int, int, int]]:
        """(name, mode, size, mtime) of each entry of a folder (sync LIST; names are raw, unchecked,
        '.' and '..' left out); [] for a folder that does not exist."""
        try:
            self._request(b"LIST", path)
            out = []
            while True:
                head = self._c.read_exact(20)
                if head[:4] == b"DONE":
                    return out
                if head[:4] != b"DENT":
                    raise DeviceError(f"{self.where}: listing {path}: unexpected sync reply {head[:4]!r}")
                mode, size, mtime, n = struct.unpack("<IIII", head[4:])
                name = self._c.read_exact(n).decode("utf-8", "replace")
                if name not in (".", ".."):
                    out.append((name, mode, size, mtime))
        except self._errors as e:
            raise self._broke(f"listing of {path}", e) from None

    def _recv_exact(self, n: int) -> bytearray:
        """n bytes from the socket, received in place (adbutils' read_exact grows a bytes object
        chunk by chunk: quadratic in the 64 KiB DATA packets, ~35 % of a pull's time)."""
        buf = bytearray(n)
        view, got, sock = memoryview(buf), 0, self._c.conn
        while got < n:
            k = sock.recv_into(view[got:], n - got)
            if k == 0:
                raise EOFError(f"connection closed after {got} of {n} bytes")
            got += k
        return buf

    def iter_file(self, path: str) -> Iterator[bytes]:
        """The file's bytes in chunks; read it to the end (the session stays in step)."""
        self.send_recv(path)
        yield from self.iter_recv_reply(path)

    def send_recv(self, path: str) -> None:
        """Ask for a file without waiting: several requests may be in flight (pipelined, as `adb
        pull` of a folder does); read each reply in order with iter_recv_reply."""
        try:
            self._request(b"RECV", path)
        except self._errors as e:
            raise self._broke(f"pull of {path}", e) from None

    def iter_recv_reply(self, path: str) -> Iterator[bytes]:
        """The bytes of the next RECV reply (for `path`) in chunks; read it to the end."""
        try:
            while True:
                head = self._recv_exact(8)
                kind, n = bytes(head[:4]), struct.unpack("<I", head[4:])[0]
                if kind == b"DATA":
                    yield self._recv_exact(n)
                elif kind == b"DONE":
                    return
                elif kind == b"FAIL":
                    msg = self._recv_exact(n).decode("utf-8", "replace")
                    raise DeviceError(f"{self.where}: cannot read {path} on the phone ({msg})")
                else:
                    raise DeviceError(f"{self.where}: reading {path}: unexpected sync reply {kind!r}")
        except self._errors as e:
            raise self._broke(f"pull of {path}", e) from None

    def read_bytes(self, path: str) -> bytes:
        return b"".join(self.iter_file(path))

    def close(self) -> None:
        with contextlib.suppress(*self._errors):
            self._c.conn.sendall(b"QUIT" + bytes(4))
        with contextlib.suppress(*self._errors):
            self._c.close()

    def __enter__(self) -> "SyncConnection":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Mismatch(Exception):
    pass


def _pull_verified(sync: SyncConnection, remote: str, dest: Path, size: int, sha: str, where: str) -> int:
    """Pull one file to a temporary name, check size and sha256, rename; one retry. Returns bytes."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    problem = ""
    for _ in range(2):
        h, n = hashlib.sha256(), 0
        try:
            with atomic_path(dest) as tmp:
                with open(tmp, "wb") as f:
                    for chunk in sync.iter_file(remote):
                        n += len(chunk)
                        if n <= size:  # a file larger than listed is read to its end, not kept
                            h.update(chunk)
                            f.write(chunk)
                if n != size or h.hexdigest() != sha:
                    raise _Mismatch(f"got {n} bytes sha256 {h.hexdigest()[:12]}..., "
                                    f"the phone lists {size} bytes {sha[:12]}...")
            return n
        except _Mismatch as e:
            problem = str(e)
    raise DeviceError(f"{where}: {remote} does not match the phone's frames.csv ({problem})")


def _read_remote_verified(device, sync: SyncConnection, remote: str, where: str) -> bytes:
    """A small file read whole over sync and checked against sha256sum run on the phone."""
    data = sync.read_bytes(remote)
    want = remote_sha256(device, remote, where)
    if hashlib.sha256(data).hexdigest() != want:
        raise DeviceError(f"{where}: {remote} changed or was damaged in transfer (sha256 mismatch)")
    return data


def _progress(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    return Progress(TextColumn("[bold]pulling[/bold] {task.description}"), BarColumn(), DownloadColumn(),
                    TransferSpeedColumn(), console=Console(stderr=True, emoji=False), disable=not enabled, transient=True)


def pull_recording(device, remote_dir: str, writer: SessionWriter, where: str, *, delete: bool = True,
                   progress: bool = True) -> PullResult:
    """Pull one phone recording into writer's session; resumable; delete on the phone when verified.

    Order: the phone's frames.csv (checked by sha256sum on the phone) -> every row's name
    validated (nothing written before) -> each frame skipped if present with the right size and
    sha256, else pulled to a temporary name, verified, renamed, indexed -> camera.json ->
    sim truth (truth.csv) -> `rm -r` of the recording folder on the phone.
    """
    t0 = time.monotonic()
    rid = remote_dir.rsplit("/", 1)[-1]
    check_recording_dir(remote_dir, check_recording_id(rid, where), where)
    with SyncConnection(device, where) as sync:
        csv_remote = f"{remote_dir}/frames.csv"
        if not sync.exists(csv_remote):
            raise DeviceError(f"{where}: {csv_remote} not found on the phone (already pulled and deleted, or never recorded)")
        rows = parse_phone_csv(_read_remote_verified(device, sync, csv_remote, where).decode("utf-8"),
                               f"{where}:{csv_remote}")
        truth_rows: list[tuple[int, str, int, str]] = []
        truth_remote = f"{remote_dir}/truth.csv"
        if writer.truth_allowed and sync.exists(truth_remote):  # a simulated phone's truth, fully sim rig only
            truth_rows = _parse_truth_csv(_read_remote_verified(device, sync, truth_remote, where).decode("utf-8"),
                                          f"{where}:{truth_remote}")
        phone_dir = writer.path / "phone"
        dests = [_inside(phone_dir, r.record.file) for r in rows]  # every name checked before any write
        truth_dir = writer.path / "truth" / "phone_depth"
        truth_dests = [_inside(truth_dir, f"{idx}.npz") for idx, *_ in truth_rows]

        if not (phone_dir / "camera.json").is_file():
            raw = _read_remote_verified(device, sync, f"{remote_dir}/camera.json", where)
            try:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                writer.write_phone_camera(PhoneCamera.from_dict(json.loads(raw)))
            except (KeyError, TypeError, ValueError, AttributeError) as e:
                raise ProtocolError(f"{where}: {remote_dir}/camera.json malformed ({e})") from None

        try:
            indexed = {r.index for r in Session(writer.path).phone_frames}
        except SessionError:
            indexed = set()
        pulled = skipped = nbytes = 0
        total_bytes = sum(r.size_bytes for r in rows) + sum(t[2] for t in truth_rows)
        with _progress(progress) as bar:
            task = bar.add_task(rid, total=total_bytes)
            for row, dest in zip(rows, dests):
                if dest.is_file() and dest.stat().st_size == row.size_bytes and _sha256_file(dest) == row.sha256:
                    skipped += 1
                else:
                    nbytes += _pull_verified(sync, f"{remote_dir}/{row.record.file}", dest, row.size_bytes, row.sha256, where)
                    pulled += 1
                if row.record.index not in indexed:
                    writer.append_phone_record(row.record)
                    indexed.add(row.record.index)
                bar.advance(task, row.size_bytes)
            for (idx, name, size, sha), dest in zip(truth_rows, truth_dests):
                if not (dest.is_file() and dest.stat().st_size == size and _sha256_file(dest) == sha):
                    nbytes += _pull_verified(sync, f"{remote_dir}/{name}", dest, size, sha, where)
                bar.advance(task, size)
        deleted = False
        if delete:
            _shell(device, ["rm", "-r", remote_dir], where)
            deleted = not sync.exists(remote_dir)
    return PullResult(len(rows), pulled, skipped, nbytes, len(truth_rows), deleted, round(time.monotonic() - t0, 3))


def _parse_truth_csv(text: str, where: str) -> list[tuple[int, str, int, str]]:
    lines = text.splitlines()
    if not lines:
        return []
    if lines[0].split(",") != TRUTH_CSV_COLUMNS:
        raise ProtocolError(f"{where}: header {lines[0]!r}, expected {','.join(TRUTH_CSV_COLUMNS)}")
    out = []
    for n, line in enumerate(lines[1:], start=2):
        parts = line.split(",")
        if len(parts) != 4:
            raise ProtocolError(f"{where}:{n}: {len(parts)} fields, expected 4")
        try:
            idx, size = int(parts[0]), int(parts[2])
        except ValueError as e:
            raise ProtocolError(f"{where}:{n}: {e}") from None
        out.append((idx, check_relative_name(parts[1], ("truth",), f"{where}:{n}"), size,
                    check_sha256(parts[3], f"{where}:{n}")))
    return out


# --- resume, listing --------------------------------------------------------------------------------


def _match_recording(recordings: list[dict], probes, where: str) -> dict:
    """The phone recording that started within the session's clock probes (phone clock)."""
    if len(probes) == 0:
        raise DeviceError(f"{where}: the session has no clock probes to find its recording by; name it with --recording")
    lo, hi = int(probes[:, 1].min()), int(probes[:, 1].max()) + 5_000_000_000
    hits = [r for r in recordings if isinstance(r.get("t_phone_start_ns"), int) and lo <= r["t_phone_start_ns"] <= hi]
    if len(hits) != 1:
        ids = ", ".join(r["recording_id"] for r in recordings) or "none"
        raise DeviceError(f"{where}: {len(hits)} recordings on the phone started during this session "
                          f"(on the phone: {ids}); name one with --recording")
    return hits[0]


def _saved_recording(path: Path) -> dict:
    """phone/recording.json (which phone and recording the session came from), {} when absent; a hand-edited
    one whose serial, recording_id or dir is not text is a SessionError naming the key."""
    if not path.is_file():
        return {}
    doc = read_json(path)
    if not isinstance(doc, dict):
        raise SessionError(f"{path}: expected a JSON object, found {type(doc).__name__}; delete it and give "
                           "--phone and --recording")
    for key in ("serial", "recording_id", "dir"):
        if doc.get(key) is not None and not isinstance(doc[key], str):
            raise SessionError(f"{path}: {key} {doc[key]!r} is not text; fix it, or delete the file and give "
                               "--phone and --recording")
    return doc


def resume_pull(session_dir: str | os.PathLike, serial: str | None = None, recording_id: str | None = None, *,
                adb_port: int | None = None, delete: bool = True, wait_s: float = 60.0,
                progress: bool = True) -> PullResult:
    """Fetch what a session still lacks from the phone (after a disconnect or a broken pull).

    The recording is found from phone/recording.json, else --recording, else the phone's
    recording that started between the session's first and last clock probe. Frames already in
    the session (right size and sha256) are skipped. A recording still running is waited for.
    """
    session = Session(session_dir)
    path = session.path
    saved = _saved_recording(path / RECORDING_FILE)
    rig_phone = session.rig_entry("phone")
    if rig_phone.get("kind") == "sim":  # no phone to ask: "no phone connected" would send the user looking for one
        raise DeviceError(f"{path}: recorded with the simulated phone, which writes its frames into the session "
                          "itself; there is nothing on a phone to pull")
    if rig_phone.get("kind") == "opencamera":  # no companion app: the photos named in phone/opencamera.json
        from dfdcap.capture.opencamera import resume_opencamera_pull

        return resume_opencamera_pull(path, serial, adb_port=adb_port)
    if serial is None:
        serial = saved.get("serial") or (rig_phone.get("serial") if rig_phone.get("kind") == "adb" else None)
    phone = AdbPhone(serial, adb_port=adb_port, progress=progress)
    try:
        where = f"{phone.where} ({path.name})"
        recordings = phone.recordings()
        rid = recording_id or saved.get("recording_id")
        if rid:
            rec = next((r for r in recordings if r["recording_id"] == rid), None)
            if rec is None:
                raise DeviceError(f"{where}: recording {rid} is not on the phone (already pulled and deleted?)")
        else:
            rec = _match_recording(recordings, session.probes(), where)
        deadline = time.monotonic() + wait_s
        while rec.get("state") == "recording":
            if time.monotonic() > deadline:
                raise DeviceError(f"{where}: recording {rec['recording_id']} still running after {wait_s:.0f} s")
            time.sleep(0.1)
            rec = next((r for r in phone.recordings() if r["recording_id"] == rec["recording_id"]), rec)
        atomic_write_json(path / RECORDING_FILE, {
            "serial": phone.serial, "recording_id": rec["recording_id"], "dir": rec["dir"],
            "package": phone.package, "app_version": phone.app_version, "protocol": PROTOCOL_VERSION,
        })
        writer = SessionWriter(path, session.meta)
        try:
            res = pull_recording(phone._device, rec["dir"], writer, where, delete=delete, progress=progress)
        finally:
            for f in writer._indexes.values():
                f.close()
        meta = read_json(path / "session.json")
        meta["phone_pull"] = asdict(res) | {"recording_id": rec["recording_id"],
                                            "finished_utc": datetime.now(timezone.utc).isoformat()}
        atomic_write_json(path / "session.json", meta)
        return res
    finally:
        phone.close()


def list_phones(adb_port: int | None = None, timeout_s: float = 2.0) -> list[dict]:
    """Every device the adb server sees: serial, state, model, app_installed, app_answers, app_version."""
    adbutils = _adbutils()
    client = adb_client(adb_port)
    try:
        listed = client.list()
    except (adbutils.AdbError, OSError) as e:
        raise DeviceError(f"adb server {client.host}:{client.port}: cannot list devices ({e})") from None
    phones = []
    for d in listed:
        entry = {"serial": d.serial, "state": d.state, "model": "", "app_installed": False,
                 "app_answers": False, "app_version": None, "problem": None}
        if d.state == "device":
            dev = client.device(d.serial)
            where = f"phone {d.serial}"
            try:
                entry["model"] = _shell(dev, ["getprop", "ro.product.model"], where).strip()
                entry["app_installed"] = app_installed(dev)
                if entry["app_installed"]:
                    chan, hello, port = _open_channel(dev, APP_PACKAGE, APP_PORT, timeout_s, where, launch=False)
                    chan.close()
                    _remove_forward(dev, port)
                    entry["app_answers"], entry["app_version"] = True, hello["app_version"]
            except DeviceError as e:
                entry["problem"] = str(e)
        phones.append(entry)
    return phones
