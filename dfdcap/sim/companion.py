"""The companion app's reference implementation, over the simulated phone (dfdcap.sim SimPhone).

It does what the Android app does (docs/phone-protocol.md): listens on a TCP port of the
phone, answers hello/time/start/status/stop/recordings in line-delimited JSON, and writes each
recording into the phone's storage:

    /sdcard/Android/data/org.dfdcap.companion/files/recordings/<recording_id>/
        recording.json   id, schedule, fps, t_phone_start_ns, state (updated when it ends)
        camera.json      the PhoneCamera of the recording size
        frames/<index>.png|jpg
        frames.csv       session columns + size_bytes, sha256 (a row only after its file exists)
        truth/<index>.npz + truth.csv   (simulator only: the true depth of each frame)

`SimAdbPhone` puts it behind a FakeAdbd that a real adb server connects to, so the host
side (dfdcap.capture.phone.AdbPhone) is exercised through `adb` and `adbutils`.
The simulated phone must offer: camera() -> PhoneCamera, now_phone_ns(), start(schedule, fps),
is_done(), stop(), recorded_frames() -> iterable of (PhoneFrameRecord, rgb uint8, depth_m).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import shutil
import socket
import tempfile
import threading
from pathlib import Path

import numpy as np

from dfdcap.capture.phone_protocol import (
    APP_PACKAGE,
    APP_PORT,
    IMAGE_FORMATS,
    PHONE_CSV_COLUMNS,
    PROTOCOL_VERSION,
    RECORDINGS_ROOT,
    TRUTH_CSV_COLUMNS,
    JsonLineChannel,
    ProtocolError,
    camera_to_hello,
    check_request,
    encode_message,
    format_phone_csv_row,
    recording_dir,
    schedule_from_message,
)
from dfdcap.capture.session import PhoneFrameRecord
from dfdcap.errors import DfdcapError
from dfdcap.fileio import encode_image
from dfdcap.sim.adbd import FakeAdbd, close_listener


class _Recording:
    def __init__(self, rid: str, root: Path, frames_total: int, fps: float, fmt: str, t_start: int):
        self.rid, self.root, self.frames_total, self.fps, self.fmt = rid, root, frames_total, fps, fmt
        self.t_phone_start_ns = t_start
        self.state = "recording"
        self.frames_written = 0
        self.message = ""
        self.stop_requested = threading.Event()
        self.finished = threading.Event()


class CompanionApp:
    """The app: a TCP server on 127.0.0.1 (the phone's loopback) over a SimPhone and a storage folder.

    storage_root plays the phone's `/` (the same folder the FakeAdbd serves). protocol_version
    lets a test play an app of another version.
    """

    def __init__(self, sim_phone, storage_root: str | os.PathLike, *, protocol_version: int = PROTOCOL_VERSION,
                 app_version: str = "sim-1.0", write_truth: bool = True):
        self.sim = sim_phone
        self.storage = Path(storage_root)
        self.protocol_version = protocol_version
        self.app_version = app_version
        self.write_truth = write_truth
        self.camera = sim_phone.camera()
        self.port: int | None = None
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()
        self._current: _Recording | None = None
        self._conns: list[socket.socket] = []
        self.requests: list[str] = []

    # names and paths -------------------------------------------------------------------------------
    def local(self, device_path: str) -> Path:
        return self.storage / device_path.lstrip("/")

    def csv_file_name(self, rec: PhoneFrameRecord) -> str:
        """The name frames.csv lists for a frame (a test subclass plays a misbehaving app here)."""
        return rec.file

    # server --------------------------------------------------------------------------------------
    def start(self) -> int:
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", 0))
        ls.listen(4)
        self._listener, self.port = ls, ls.getsockname()[1]
        threading.Thread(target=self._accept, args=(ls,), daemon=True, name="companion-accept").start()
        return self.port

    def _accept(self, ls: socket.socket) -> None:
        while True:
            try:
                sock, _ = ls.accept()
            except OSError:
                return
            with self._lock:
                self._conns.append(sock)
            threading.Thread(target=self._serve, args=(sock,), daemon=True, name="companion-conn").start()

    def close(self) -> None:
        """Stop serving (the app quits; a running recording is stopped and finished)."""
        close_listener(self._listener)
        self._listener = None
        with self._lock:
            conns, self._conns = self._conns, []
            cur = self._current
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()
        if cur is not None and not cur.finished.is_set():
            cur.stop_requested.set()
            cur.finished.wait(10)

    def _serve(self, sock: socket.socket) -> None:
        chan = JsonLineChannel(sock, "companion", timeout_s=3600)
        sock.settimeout(None)
        agreed = True
        try:
            while True:
                try:
                    msg = chan.recv()
                except ProtocolError as e:
                    chan.send({"id": None, "ok": False, "error": {"code": "bad_request", "message": str(e)}})
                    return
                if msg is None:
                    return
                reply, agreed = self._handle(msg, agreed)
                sock.sendall(encode_message(reply))
        except OSError:
            return
        finally:
            chan.close()

    def _handle(self, msg: dict, agreed: bool) -> tuple[dict, bool]:
        rid = msg.get("id")
        try:
            check_request(msg)
            t = msg["type"]
            self.requests.append(t)
            if t == "hello":
                agreed = msg["protocol"] == self.protocol_version
                return {"id": rid, "ok": True, "type": "hello", **self.hello()}, agreed
            if not agreed:
                return _error(rid, "version_mismatch",
                              f"this app speaks protocol {self.protocol_version}; say hello with it first"), agreed
            if t == "time":
                return {"id": rid, "ok": True, "type": t, "t_phone_ns": int(self.sim.now_phone_ns())}, agreed
            if t == "start":
                return {"id": rid, "ok": True, "type": t, **self.start_recording(msg)}, agreed
            if t == "status":
                return {"id": rid, "ok": True, "type": t, **self.status()}, agreed
            if t == "stop":
                return {"id": rid, "ok": True, "type": t, **self.stop_recording()}, agreed
            if t == "recordings":
                return {"id": rid, "ok": True, "type": t, "recordings": self.list_recordings()}, agreed
        except _AppError as e:
            return _error(rid, e.code, str(e)), agreed
        except (ProtocolError, DfdcapError) as e:
            return _error(rid, "bad_request", str(e)), agreed
        return _error(rid, "unsupported", f"type {msg.get('type')!r}"), agreed

    # requests ------------------------------------------------------------------------------------
    def hello(self) -> dict:
        return {
            "protocol": self.protocol_version,
            "app_version": self.app_version,
            "package": APP_PACKAGE,
            "device": {"manufacturer": "dfdcap", "model": "SimPhone", "android": "14"},
            "camera": camera_to_hello(self.camera),
        }

    def start_recording(self, msg: dict) -> dict:
        sched = schedule_from_message(msg["schedule"], "start.schedule")
        if float(np.max(sched.focus_diopters())) > self.camera.min_focus_diopters + 1e-9:
            raise _AppError("bad_request", f"focus beyond the lens's range (closest {self.camera.min_focus_diopters} D)")
        size = tuple(msg["image"]["size"])
        if size != tuple(self.camera.image_size):
            raise _AppError("bad_request", f"image size {size} not offered")
        rid = msg["recording_id"]
        root = self.local(recording_dir(rid))
        with self._lock:
            if self._current is not None and not self._current.finished.is_set():
                raise _AppError("busy", f"recording {self._current.rid} is running")
            if root.exists():
                raise _AppError("bad_request", f"recording {rid} exists already")
            (root / "frames").mkdir(parents=True)
            (root / "camera.json").write_text(json.dumps(self.camera.to_dict()))
            (root / "frames.csv").write_text(",".join(PHONE_CSV_COLUMNS) + "\n")
            self.sim.start(sched, float(msg["fps"]))
            rec = _Recording(rid, root, sched.n_frames, float(msg["fps"]), msg["image"]["format"],
                             int(self.sim.now_phone_ns()))
            self._current = rec
            self._write_meta(rec, msg)
        threading.Thread(target=self._run, args=(rec, msg), daemon=True, name="companion-rec").start()
        return {"recording_id": rid, "dir": recording_dir(rid), "frames_total": rec.frames_total,
                "t_phone_start_ns": rec.t_phone_start_ns}

    def status(self) -> dict:
        rec = self._current
        if rec is None:
            return {"state": "idle", "frames_captured": 0, "frames_total": 0}
        if rec.state == "recording":  # a progress hint from the phone clock while frames are captured
            captured = int((self.sim.now_phone_ns() - rec.t_phone_start_ns) * 1e-9 * rec.fps)
            captured = max(0, min(rec.frames_total, captured))
        else:
            captured = rec.frames_written
        out = {"state": rec.state, "recording_id": rec.rid, "dir": recording_dir(rec.rid),
               "frames_captured": captured, "frames_total": rec.frames_total}
        if rec.message:
            out["message"] = rec.message
        return out

    def stop_recording(self) -> dict:
        """Stop and answer once every frame and frames.csv are written (the protocol's promise)."""
        rec = self._current
        if rec is None:
            return {"state": "idle", "frames_captured": 0, "frames_total": 0}
        rec.stop_requested.set()
        rec.finished.wait(60)
        return self.status()

    def list_recordings(self) -> list[dict]:
        root = self.local(RECORDINGS_ROOT)
        out = []
        for d in sorted(root.iterdir()) if root.is_dir() else []:
            with contextlib.suppress(OSError, ValueError, KeyError):
                meta = json.loads((d / "recording.json").read_text())
                out.append({k: meta[k] for k in ("recording_id", "dir", "state", "frames_total", "frames_written",
                                                 "t_phone_start_ns")})
        return out

    # the recording thread ----------------------------------------------------------------------
    def _write_meta(self, rec: _Recording, msg: dict | None = None) -> None:
        path = rec.root / "recording.json"
        meta = json.loads(path.read_text()) if path.exists() else {}
        if msg is not None:
            meta.update(recording_id=rec.rid, dir=recording_dir(rec.rid), fps=rec.fps, schedule=msg["schedule"],
                        image=msg["image"], exposure=msg["exposure"], t_phone_start_ns=rec.t_phone_start_ns,
                        frames_total=rec.frames_total)
        meta.update(state=rec.state, frames_written=rec.frames_written)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, path)

    def _run(self, rec: _Recording, msg: dict) -> None:
        """Wait for the sweep (or a stop), then write each captured frame, its CSV row and truth."""
        try:
            while not self.sim.is_done() and not rec.stop_requested.wait(0.005):
                pass
            stopped = not self.sim.is_done()
            if stopped:
                self.sim.stop()
            ext = IMAGE_FORMATS[rec.fmt]
            truth_csv = None
            if self.write_truth:
                (rec.root / "truth").mkdir(exist_ok=True)
                truth_csv = open(rec.root / "truth.csv", "w", encoding="utf-8")
                truth_csv.write(",".join(TRUTH_CSV_COLUMNS) + "\n")
            with open(rec.root / "frames.csv", "a", encoding="utf-8") as fcsv:
                for frec, rgb, depth_m in self.sim.recorded_frames():
                    name = f"frames/{frec.index}{ext}"
                    frec = dataclasses.replace(frec, file=name)
                    data = encode_image(np.asarray(rgb), ext)
                    _write_atomic(rec.root / name, data)
                    row = format_phone_csv_row(dataclasses.replace(frec, file=self.csv_file_name(frec)),
                                               len(data), hashlib.sha256(data).hexdigest())
                    fcsv.write(row + "\n")
                    fcsv.flush()
                    rec.frames_written += 1
                    if truth_csv is not None and depth_m is not None:
                        buf = io.BytesIO()
                        np.savez_compressed(buf, depth_m=np.asarray(depth_m, dtype=np.float32),
                                            K=self.sim.frame_camera(frec).K)  # the frame's true (breathing) camera
                        tname = f"truth/{frec.index}.npz"
                        _write_atomic(rec.root / tname, buf.getvalue())
                        truth_csv.write(f"{frec.index},{tname},{len(buf.getvalue())},"
                                        f"{hashlib.sha256(buf.getvalue()).hexdigest()}\n")
                        truth_csv.flush()
            if truth_csv is not None:
                truth_csv.close()
            rec.state = "stopped" if stopped else "done"
        except Exception as e:  # the camera failed: the host sees state "error" with the message
            rec.state, rec.message = "error", f"{type(e).__name__}: {e}"
        finally:
            with contextlib.suppress(OSError):
                self._write_meta(rec)
            rec.finished.set()


class _AppError(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def _error(rid, code: str, message: str) -> dict:
    return {"id": rid, "ok": False, "error": {"code": code, "message": message}}


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class SimAdbPhone:
    """A simulated phone reachable through a real adb server: CompanionApp + FakeAdbd + connect.

    with SimAdbPhone(rig.phone(), server) as p: AdbPhone(p.serial, adb_port=server.port) ...
    `disconnect()` pulls the cable (the app keeps recording), `reconnect()` plugs it back on the
    same port. Everything started here is stopped on exit; the phone's storage (a temporary
    folder unless given) is removed if it was created here.
    """

    def __init__(self, sim_phone, server, storage: str | os.PathLike | None = None, *,
                 app_cls: type[CompanionApp] = CompanionApp, drop_after_recv: int | None = None, **app_kw):

        self.server = server
        self._own_storage = storage is None
        self.storage = Path(storage) if storage is not None else Path(tempfile.mkdtemp(prefix="dfdcap-phone-"))
        self.app = app_cls(sim_phone, self.storage, **app_kw)
        self.adbd = FakeAdbd(self.storage, packages={APP_PACKAGE: None}, drop_after_recv=drop_after_recv)
        self.serial = ""

    def __enter__(self) -> "SimAdbPhone":
        try:
            port = self.app.start()
            self.adbd.network[APP_PORT] = port
            self.adbd.start()
            self.serial = self.adbd.serial
            self.server.connect(self.serial)
        except BaseException:
            self.close()
            raise
        return self

    def recording_dirs(self) -> list[Path]:
        root = self.app.local(RECORDINGS_ROOT)
        return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []

    def disconnect(self) -> None:
        self.adbd.disconnect()
        self.server.wait_gone(self.serial)

    def reconnect(self) -> None:
        self.adbd.start(self.adbd.port)
        self.server.connect(self.serial)

    def close(self) -> None:
        self.adbd.close()
        self.app.close()
        if self._own_storage:
            shutil.rmtree(self.storage, ignore_errors=True)

    def __exit__(self, *exc) -> None:
        if self.serial:
            with contextlib.suppress(Exception):
                self.server.adb_cmd("disconnect", self.serial)
        self.close()
