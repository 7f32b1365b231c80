"""Open Camera's Focus Bracketing mode on the simulated phone, behind the fake adbd.

What a real phone with Open Camera shows the host, played by a SimPhone:
- `pm list packages` lists net.sourceforge.opencamera (unless installed=False);
- a settings backup (`<open_camera_prefs>` XML) under Android/data/.../files/backups/, as if the
  user had saved the settings once; `restore_settings(name)` is the user's tap on
  Settings > Settings manager > Restore settings;
- `input keyevent 24|25|27|62` starts a ramp: N photos from source to target, each after a
  0.5 s wait (x time_scale), rendered through the thin lens at Open Camera's focus
  distances (plus the sim lens error), saved as IMG_yyyyMMdd_HHmmss[.SSS]_i.jpg in
  /sdcard/DCIM/OpenCamera with EXIF DateTimeOriginal + SubSecTimeOriginal (the phone's wall
  clock, local time), FocalLength, FNumber, FocalLengthIn35mmFilm; a key press during a ramp
  cancels it (the photos taken so far stay). Photos are saved in the background, as the app's
  image saver does: a file may appear after the next exposure. In standard photo mode a press
  takes one photo IMG_<time>.jpg;
- `date +%s%N` (the phone's wall clock: its SimClock plus an epoch offset) and `date +%z`;
- `lose_photos`: photos whose file never appears (a failed save), and `press_before`: photos
  before which the user presses the key again (cancelling that ramp), for tests;
- `cmd media.camera watch` on Android 13+ (sdk >= 33): start/stop/dump, each photo's focus
  distance and lens state as camera server's TagMonitor prints result events
  (`f<frame>:<sensor ns>ns:  0   RES: android.lens.focusDistance: [4.44875097]`, last 100 kept).
  The host does not read it yet (focus comes from Open Camera's rule).

time_scale < 1 makes the 0.5 s per photo shorter, for tests only (`--phone opencamera:sim`
reads DFDCAP_SIM_OPENCAMERA_PERIOD_S; default 0.5 s, the app's own pace).
"""

from __future__ import annotations

import collections
import contextlib
import os
import queue
import shutil
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from dfdcap.capture.exif import (
    TAG_DATETIME_ORIGINAL,
    TAG_EXPOSURE,
    TAG_FNUMBER,
    TAG_FOCAL,
    TAG_FOCAL_35,
    TAG_ISO,
    TAG_OFFSET_ORIGINAL,
    TAG_SUBSEC_ORIGINAL,
    exif_app1,
    insert_app1,
    parse_utc_offset,
)
from dfdcap.capture.opencamera import OpenCameraPhone
from dfdcap.capture.opencamera_focus import (
    BACKUP_DIR,
    FRAME_PERIOD_S,
    PACKAGE,
    PHOTO_DIR,
    BracketingSettings,
    parse_settings_xml,
    settings_to_xml,
)
from dfdcap.capture.session import PhoneFrameRecord, SessionWriter
from dfdcap.errors import DeviceError
from dfdcap.fileio import encode_image
from dfdcap.sim.adbd import FakeAdbd, PrivateAdbServer
from dfdcap.sim.phone import PlannedFrame

EPOCH_OFFSET_NS = 1_790_000_000 * 10**9  # the phone's wall clock = its SimClock + this (late 2026)
TRIGGER_KEYS = {"24", "25", "27", "62", "KEYCODE_VOLUME_UP", "KEYCODE_VOLUME_DOWN", "KEYCODE_CAMERA", "KEYCODE_SPACE"}
PERIOD_ENV = "DFDCAP_SIM_OPENCAMERA_PERIOD_S"


class SimOpenCamera:
    """The app on a SimPhone; `commands()` are its shell commands for a FakeAdbd over `storage`."""

    def __init__(self, sim_phone, storage: str | os.PathLike, *,
                 settings: BracketingSettings = BracketingSettings(10.0, 2.0, 5), time_scale: float = 1.0,
                 utc_offset: str = "+0100", write_offset_tag: bool = False, android_sdk: int = 34, seed: int = 0,
                 lose_photos: frozenset[tuple[int, int]] = frozenset(),
                 press_before: frozenset[tuple[int, int]] = frozenset()):
        self.sim = sim_phone
        self.storage = Path(storage)
        self.period_s = FRAME_PERIOD_S * time_scale
        self.utc_offset = utc_offset
        self.write_offset_tag = write_offset_tag
        self.android_sdk = android_sdk
        self._rng = np.random.default_rng(seed)
        self._lock = threading.Lock()
        self._running: threading.Thread | None = None
        self._cancel = threading.Event()
        self.truth: dict[str, tuple[int, float, np.ndarray]] = {}  # photo name -> (t_host_ns, focus reached, depth)
        self.presses = 0
        self.ramps_started = 0
        self.lose_photos = lose_photos  # (ramp, step) whose file never reaches storage (a failed save)
        self.press_before = press_before  # (ramp, step) before which the key is pressed again, in the ramp's own
        # time: a test thread watching the ramp could wake after it ended on a busy host
        self._watch: collections.deque | None = None
        self._frame_number = 0
        self._stamps: set[str] = set()
        self._saves: queue.Queue = queue.Queue()
        self._saver: threading.Thread | None = None
        self.prefs: dict[str, tuple[str, str]] = {"preference_camera_api": ("string", "preference_camera_api_camera2")}
        self.settings = settings
        self.save_settings("opencamera_settings.xml")

    # the phone's storage and clocks ------------------------------------------------------------
    def local(self, device_path: str) -> Path:
        return self.storage / device_path.lstrip("/")

    def wall_ns(self, t_host_ns: int | None = None) -> int:
        t = time.monotonic_ns() if t_host_ns is None else t_host_ns
        return int(self.sim.clock.device_from_host_ns(t)) + EPOCH_OFFSET_NS

    def local_time(self, wall_ns: int) -> datetime:
        off = parse_utc_offset(self.utc_offset) or 0
        return datetime.fromtimestamp(wall_ns // 10**9, timezone.utc).replace(tzinfo=None) + timedelta(
            seconds=off, microseconds=(wall_ns % 10**9) // 1000)

    # settings -----------------------------------------------------------------------------------
    def save_settings(self, name: str) -> Path:
        """Settings manager > Save settings: the backup XML the host reads."""
        path = self.local(f"{BACKUP_DIR}/{name}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(settings_to_xml(self.prefs, self.settings), encoding="utf-8")
        return path

    def restore_settings(self, name: str) -> None:
        """Settings manager > Restore settings (the user's tap): the app takes the file's settings."""
        self.prefs, self.settings = parse_settings_xml(self.local(f"{BACKUP_DIR}/{name}").read_text("utf-8"), name)

    # shell commands -----------------------------------------------------------------------------
    def commands(self) -> dict:
        return {"input": self._input, "date": self._date, "cmd": self._cmd}

    def _input(self, args: list[str]) -> tuple[bytes, int]:
        if len(args) == 2 and args[0] == "keyevent":
            if args[1] in TRIGGER_KEYS:
                self.press()
            return b"", 0
        return b"usage: input keyevent KEYCODE\n", 1

    def _date(self, args: list[str]) -> tuple[bytes, int]:
        now = self.wall_ns()
        if args == ["+%s%N"]:
            return f"{now}\n".encode(), 0
        if args == ["+%z"]:
            return f"{self.utc_offset}\n".encode(), 0
        return self.local_time(now).strftime("%a %b %d %H:%M:%S %Y\n").encode(), 0

    def _cmd(self, args: list[str]) -> tuple[bytes, int]:
        if args[:2] != ["media.camera", "watch"]:
            return f"cmd: Can't find service: {args[0] if args else ''}\n".encode(), 20
        if self.android_sdk < 33:
            return b"Unknown command: watch\n", 1
        sub = args[2] if len(args) > 2 else ""
        if sub == "start":
            self._watch = collections.deque(maxlen=100)
            return b"Started watching.\n", 0
        if sub == "stop":
            self._watch = None
            return b"Stopped watching.\n", 0
        if sub in ("dump", "print") and self._watch is not None:
            return "".join(self._watch).encode(), 0
        return b"Not watching.\n", 1

    # the camera ---------------------------------------------------------------------------------
    def press(self) -> None:
        """A volume key: start a ramp, or cancel the running one."""
        with self._lock:
            self.presses += 1
            if self._running is not None and self._running.is_alive():
                self._cancel.set()
                return
            self._cancel.clear()
            target = self._ramp if self.settings.is_bracketing else self._single
            self._running = threading.Thread(target=target, daemon=True, name="opencamera-ramp")
            self._running.start()

    def wait_idle(self, timeout_s: float = 60.0) -> None:
        """Until the running ramp is captured and every photo is saved."""
        t = self._running
        if t is not None:
            t.join(timeout_s)
        deadline = time.monotonic() + timeout_s
        while (self._saves.unfinished_tasks or not self._saves.empty()) and time.monotonic() < deadline:
            time.sleep(0.005)

    def _stamp(self, wall_ns: int, suffix: str) -> str:
        t = self.local_time(wall_ns)
        stamp = t.strftime("%Y%m%d_%H%M%S")
        if stamp in self._stamps:  # a second ramp in the same second
            stamp += f".{t.microsecond // 1000:03d}"
        self._stamps.add(stamp)
        return stamp

    def _ramp(self) -> None:
        focus = self.settings.focus_diopters()
        stamp = self._stamp(self.wall_ns(), "_")
        ramp, self.ramps_started = self.ramps_started, self.ramps_started + 1
        for i, f in enumerate(focus):
            if (ramp, i) in self.press_before:
                self.press()
            time.sleep(self.period_s)  # the app waits 500 ms after setting the focus
            if self._cancel.is_set():
                return
            if (ramp, i) not in self.lose_photos:
                self._capture(f"IMG_{stamp}_{i}.jpg", f, i)

    def _single(self) -> None:
        self._capture(f"IMG_{self._stamp(self.wall_ns(), '.')}.jpg", None, 0)

    def _capture(self, name: str, focus_d: float | None, step: int) -> None:
        """The exposure: its time and the focus the lens reached; the photo is saved in the
        background (as the app's image saver does), so its file may appear later."""
        cfg = self.sim.rig.config
        t_host = time.monotonic_ns()
        asked = focus_d if focus_d is not None else 1.0
        reached = float(np.clip(asked + self._rng.normal(0, cfg.phone_focus_error_diopters), 0.0, cfg.phone_min_focus_diopters))
        if self._watch is not None:  # TagMonitor's result lines: frame number, sensor timestamp (boot clock)
            self._frame_number += 1
            t_sensor = int(self.sim.clock.device_from_host_ns(t_host))
            head = f"f{self._frame_number}:{t_sensor}ns: {'0':>2}{'RES:':>30}"
            self._watch.append(f"{head} android.lens.focusDistance: [{reached:0.8f}]\n")
            self._watch.append(f"{head} android.lens.state: [STATIONARY]\n")
        if self._saver is None:
            self._saver = threading.Thread(target=self._save_loop, daemon=True, name="opencamera-saver")
            self._saver.start()
        self._saves.put((name, asked, reached, step, t_host))

    def _save_loop(self) -> None:
        while True:
            item = self._saves.get()
            try:
                self._save(*item)
            finally:
                self._saves.task_done()

    def _save(self, name: str, asked: float, reached: float, step: int, t_host: int) -> None:
        cfg = self.sim.rig.config
        rec = PhoneFrameRecord(0, 0, asked, reached, int(cfg.phone_exposure_ns), int(cfg.phone_iso), "STATIONARY", 0, step, "")
        rgb, depth = self.sim.render_frame(PlannedFrame(rec, t_host))
        data = insert_app1(encode_image(rgb, ".jpg"), exif_app1(self._exif_tags(self.wall_ns(t_host))))
        folder = self.local(PHOTO_DIR)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".pending-{name}"
        tmp.write_bytes(data)
        os.replace(tmp, folder / name)
        self.truth[name] = (t_host, reached, depth)

    def _exif_tags(self, wall_ns: int) -> dict:
        cfg = self.sim.rig.config
        t = self.local_time(wall_ns)
        diag = float(np.hypot(*cfg.phone_sensor_size_m))
        tags = {
            TAG_DATETIME_ORIGINAL: t.strftime("%Y:%m:%d %H:%M:%S"),
            TAG_SUBSEC_ORIGINAL: f"{t.microsecond // 1000:03d}",
            TAG_FOCAL: float(cfg.phone_focal_length_m * 1e3),
            TAG_FNUMBER: float(cfg.phone_f_number),
            TAG_FOCAL_35: int(round(cfg.phone_focal_length_m / diag * 43.2666)),  # mm, by the diagonal
            TAG_EXPOSURE: float(cfg.phone_exposure_ns * 1e-9),
            TAG_ISO: int(cfg.phone_iso),
        }
        if self.write_offset_tag:
            off = self.utc_offset.replace(":", "")
            tags[TAG_OFFSET_ORIGINAL] = f"{off[:3]}:{off[3:]}"
        return tags


class SimOpenCameraDevice:
    """The app + a FakeAdbd + (by default) a private adb server, connected: `serial`, `adb_port`.

    installed=False: the phone has no Open Camera; authorized=False: the adb server lists it
    "unauthorized". Use with `with`; everything started here is stopped on exit.
    """

    def __init__(self, rig, *, server: PrivateAdbServer | None = None, installed: bool = True,
                 authorized: bool = True, storage: str | os.PathLike | None = None, **app_kw):
        self.rig = rig
        self._own_server = server is None
        self.server = server or PrivateAdbServer()
        self._own_storage = storage is None
        self.storage = Path(storage) if storage is not None else Path(tempfile.mkdtemp(prefix="dfdcap-opencamera-"))
        self.app = SimOpenCamera(rig.phone(), self.storage, **app_kw)
        self.adbd = FakeAdbd(self.storage, model="SimGalaxyS7", packages={PACKAGE: None} if installed else {},
                             commands=self.app.commands(), authorized=authorized)
        self.serial = ""

    @property
    def adb_port(self) -> int:
        return self.server.port

    def __enter__(self) -> "SimOpenCameraDevice":
        try:
            if self._own_server:
                self.server.start()
            self.adbd.start()
            self.serial = self.adbd.serial
            if self.adbd.authorized:
                self.server.connect(self.serial)
            else:
                with contextlib.suppress(Exception):
                    self.server.adb_cmd("connect", self.serial)
                deadline = time.monotonic() + 10
                while self.server.devices().get(self.serial) != "unauthorized" and time.monotonic() < deadline:
                    time.sleep(0.02)
        except BaseException:
            self.close()
            raise
        return self

    def truth_rig(self) -> dict:
        """The rig's truth with the phone clock as the wall clock the photos and `date` use."""
        rig = self.rig.truth_rig()
        rig["clocks"]["phone"] = dict(rig["clocks"]["phone"], t0_dev_ns=rig["clocks"]["phone"]["t0_dev_ns"] + EPOCH_OFFSET_NS)
        return rig

    def close(self) -> None:
        self.app.wait_idle()
        if self.serial:
            with contextlib.suppress(Exception):
                self.server.adb_cmd("disconnect", self.serial)
        self.adbd.close()
        if self._own_server:
            self.server.stop()
        if self._own_storage:
            shutil.rmtree(self.storage, ignore_errors=True)

    def __exit__(self, *exc) -> None:
        self.close()


def _period_from_env() -> float:
    """The simulated app's seconds per photo: $DFDCAP_SIM_OPENCAMERA_PERIOD_S (tests shorten it), else 0.5 s."""
    text = os.environ.get(PERIOD_ENV)
    if text is None:
        return FRAME_PERIOD_S
    try:
        period = float(text)
    except ValueError:
        period = float("nan")
    if not 0.001 <= period <= 10:  # nan, inf, 0 and negatives too
        raise DeviceError(f"{PERIOD_ENV}={text!r}: expected seconds per photo from 0.001 to 10 (unset: Open Camera's 0.5)")
    return period


class SimOpenCameraPhone(OpenCameraPhone):
    """`--phone opencamera:sim`: the host side (OpenCameraPhone) against a SimOpenCameraDevice it owns;
    fetch() also writes the simulator's truth (rig.json with the wall clock, each frame's true depth)."""

    def __init__(self, rig, *, time_scale: float | None = None, **kw):
        if time_scale is None:
            time_scale = _period_from_env() / FRAME_PERIOD_S
        self.device = SimOpenCameraDevice(rig, time_scale=time_scale).__enter__()
        try:
            super().__init__(self.device.serial, adb_port=self.device.adb_port,
                             frame_period_s=FRAME_PERIOD_S * time_scale, **kw)
        except BaseException:
            self.device.close()
            raise

    def fetch(self, writer: SessionWriter) -> int:
        n = super().fetch(writer)
        if not (writer.path / "truth" / "rig.json").exists():
            writer.write_truth_rig(self.device.truth_rig())
        per_ramp = self.settings.n_images
        for k, ramp in enumerate(self.ramps):
            for i in range(per_ramp):
                name = ramp.files[i][0]
                if name in self.device.app.truth:
                    writer.write_truth_phone_depth(k * per_ramp + i, self.device.app.truth[name][2])
        return n

    def close(self) -> None:
        self.device.close()
