"""A real phone today: focus stacks from Open Camera's Focus Bracketing mode, over ADB or from a folder.

No companion app needed: Open Camera (net.sourceforge.opencamera) sweeps N photos from a source
to a target focus distance when its volume-up key is pressed. The host
- checks the app is installed and, from the newest settings backup the app saved under
  Android/data/net.sourceforge.opencamera/files/backups/, that it is in Focus Bracketing mode
  with the source, target and N asked for. It cannot change the app's settings by itself
  (they are app-private): it pushes an edited backup there, and the user restores it once on
  the phone (Settings > Settings manager > Restore settings; the app restarts);
- wakes the screen and brings the app to the front (`am start`), then triggers each ramp with
  `input keyevent 24` (a second key press during a ramp cancels it, so the host never presses
  again before all N photos are there), waits for the ramp's N files
  `IMG_yyyyMMdd_HHmmss[.SSS]_i.jpg` in /sdcard/DCIM/OpenCamera (timeout N x 0.5 s + slack,
  longer while photos keep arriving),
  and pulls every complete ramp with ADB sync, checked against `sha256sum` on the phone,
  resumable (files already in the session with the right size and checksum are kept);
- writes each frame's focus from the app's own rule (opencamera_focus; `focus_source`
  "formula": nothing on the phone records it) and its time from EXIF DateTimeOriginal +
  SubSecTimeOriginal (ms, the phone's wall clock; `timestamp_source` "EXIF"), and probes the
  phone's wall clock with `adb shell date +%s%N` round trips, so `dfdcap sync` maps both to
  the host clock. lens_state is UNKNOWN.
At 0.5 s per photo a 5-photo ramp spans ~2.5 s: static scenes only.

The photos on the phone are the user's: they are never deleted.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from dfdcap.capture.base import Phone
from dfdcap.capture.exif import MAX_UTC_OFFSET_H, ExifInfo, local_to_epoch_ns, parse_utc_offset, read_exif
from dfdcap.capture.opencamera_focus import (
    BACKUP_DIR,
    FRAME_PERIOD_S,
    PACKAGE,
    PHOTO_DIR,
    BracketingSettings,
    PhotoName,
    check_settings,
    parse_photo_name,
    parse_settings_xml,
    settings_to_xml,
)
from dfdcap.capture.session import ClockProbe, DeviceInfo, PhoneCamera, PhoneFrameRecord, SessionWriter
from dfdcap.errors import DeviceError, DfdcapError, SessionError
from dfdcap.fileio import atomic_path, atomic_write_json, jpeg_complete
from dfdcap.lens import FocusSchedule

OPENCAMERA_FPS = 1.0 / FRAME_PERIOD_S
KEYCODE_VOLUME_UP = 24
KEYCODE_WAKEUP = 224
DIAGONAL_35MM_M = 43.2666e-3
SIDECAR = "phone/opencamera.json"  # in the session: the phone's file of each frame, the settings, provenance


@dataclass
class RampFiles:
    """One ramp on the phone: its time stamp and its photos {i: (name, size)}."""

    stamp: str
    files: dict[int, tuple[str, int]] = field(default_factory=dict)

    def complete(self, n: int) -> bool:
        return all(i in self.files and self.files[i][1] > 0 for i in range(n))


# --- pure: frames of a ramp from its photos' EXIF ---------------------------------------------------


def camera_from_exif(info: ExifInfo, settings: BracketingSettings, where: str) -> PhoneCamera:
    """The phone camera from a photo's EXIF: focal length, f-number, image size, and the sensor width
    from the 35 mm equivalent focal length (diagonal 43.27 mm)."""
    values = (("FocalLength", info.focal_length_m), ("FNumber", info.f_number),
              ("FocalLengthIn35mmFilm", info.focal_length_35mm), ("image size", info.image_size))
    missing = [k for k, v in values if v is None]
    if missing:
        raise SessionError(f"{where}: EXIF lacks {', '.join(missing)}; dfdcap needs them for the lens model "
                           f"(photos straight from Open Camera have them)")
    invalid = [f"{k} {v}" for k, v in values if not (min(v) if isinstance(v, tuple) else v) > 0]
    if invalid:
        raise SessionError(f"{where}: EXIF {', '.join(invalid)} is invalid (must be > 0); dfdcap needs it for the lens model")
    w, h = info.image_size
    diag_m = info.focal_length_m * DIAGONAL_35MM_M / (info.focal_length_35mm * 1e-3)
    sensor = (diag_m * w / math.hypot(w, h), diag_m * h / math.hypot(w, h))
    return PhoneCamera(info.focal_length_m, info.f_number, sensor, (w, h),
                       max(settings.source_diopters, settings.target_diopters), "UNCALIBRATED", "EXIF")


def frame_time_ns(info: ExifInfo, name: PhotoName, step: int, utc_offset_s: int | None, use_exif: bool = True) -> tuple[int, bool]:
    """(t_phone_ns on the phone's wall clock, from_exif): EXIF DateTimeOriginal + SubSecTimeOriginal
    (OffsetTimeOriginal, else the phone's UTC offset); without them (or use_exif=False) the ramp's
    name time + step x 0.5 s."""
    offset = parse_utc_offset(info.offset_original or "")
    offset = offset if offset is not None else (utc_offset_s or 0)
    local = info.local_time()
    if use_exif and local is not None and (info.subsec_original or "").strip().isdigit():
        return local_to_epoch_ns(local, offset), True
    return local_to_epoch_ns(name.local_time, offset) + int(step * FRAME_PERIOD_S * 1e9), False


def _time_warned(info: ExifInfo) -> bool:
    """Whether check_photo already warned that this photo's EXIF time is unusable (not a date, wrong type)."""
    return bool((info.datetime_original and info.local_time() is None)
                or {"DateTimeOriginal", "SubSecTimeOriginal"} & set(info.ignored))


def ramp_records(infos: list[ExifInfo], names: list[PhotoName], settings: BracketingSettings, ramp: int,
                 first_index: int, utc_offset_s: int | None, warnings: list[str] | None = None,
                 wheres: list[str] | None = None) -> tuple[list[PhoneFrameRecord], bool]:
    """The frames.csv records of one ramp (focus from Open Camera's rule), and whether every time came from EXIF.

    A ramp's photos are taken one after another (FRAME_PERIOD_S apart): when their EXIF times do not
    increase (edited photos, or a camera that stamps a burst once), the whole ramp takes its times
    from its name instead, and a note naming the photo (wheres[i] or its name) goes into `warnings`."""
    focus = settings.focus_diopters()
    times = [frame_time_ns(info, names[0], step, utc_offset_s) for step, info in enumerate(infos)]
    stuck = next((k for k in range(1, len(times)) if times[k][1] and times[k - 1][1] and times[k][0] <= times[k - 1][0]), None)
    # a photo without an EXIF time among photos with one (edited, re-saved): its name time is another clock
    # (whole seconds, and the UTC offset of --utc-offset rather than the photos' own), so mixed times can go backwards
    bare = next((k for k, (_, exif) in enumerate(times) if not exif), None) if any(e for _, e in times) else None
    if stuck is not None or bare is not None:
        k = stuck if stuck is not None else bare
        info, where = infos[k], wheres[k] if wheres else names[k].name
        if warnings is not None and (stuck is not None or not _time_warned(info)):
            why = (f"EXIF time {info.datetime_original}.{info.subsec_original} is not after the previous photo's"
                   if stuck is not None else "no EXIF time (DateTimeOriginal + SubSecTimeOriginal), unlike the others")
            warnings.append(f"{where}: {why} in its focus bracket; the bracket's times are taken from its name "
                            f"+ {FRAME_PERIOD_S} s a photo")
        # one UTC offset for the whole bracket: the first the photos state, else --utc-offset
        offset = next((o for o in (parse_utc_offset(i.offset_original or "") for i in infos) if o is not None),
                      utc_offset_s or 0)
        times = [frame_time_ns(info, names[0], step, offset, use_exif=False) for step, info in enumerate(infos)]
    recs = [PhoneFrameRecord(first_index + step, t, focus[step], focus[step], info.exposure_ns or 0, info.iso or 0,
                             "UNKNOWN", ramp, step, f"frames/{first_index + step}.{name.ext}")
            for step, ((t, _), info, name) in enumerate(zip(times, infos, names))]
    return recs, all(from_exif for _, from_exif in times)


def group_ramps(names: list[str], n: int, ignore: set[str] = frozenset()) -> list[RampFiles]:
    """Open Camera photos among names (others ignored), grouped by ramp stamp, oldest first."""
    ramps: dict[str, RampFiles] = {}
    for name in names:
        if name in ignore:
            continue
        p = parse_photo_name(name)
        if p is None or p.index >= n:
            continue
        ramps.setdefault(p.stamp, RampFiles(p.stamp)).files[p.index] = (name, 1)
    return [ramps[k] for k in sorted(ramps)]


def check_bracket_length(names: list[str], stamps: set[str], n: int, folder: Path) -> None:
    """A bracket (one stamp) holding a photo _i with i >= n was taken with more than n photos: its focus
    follows Open Camera's rule for that count, so reading its first n with -n n gives each the wrong focus."""
    for name in names:
        p = parse_photo_name(name)
        if p is not None and p.stamp in stamps and p.index >= n:
            count = 1 + max(q.index for q in map(parse_photo_name, names) if q is not None and q.stamp == p.stamp)
            raise SessionError(f"{folder / name}: focus bracket {p.stamp} has at least {count} photos, not -n {n}: "
                               f"give the bracket's photo count (Open Camera's focus per photo depends on it)")


def check_photo(info: ExifInfo, path: Path, first: tuple[ExifInfo, Path] | None, warnings: list[str] | None) -> None:
    """Refuse a cut-short JPEG and a photo whose size differs from the first's; warn (into `warnings`)
    when DateTimeOriginal is there but no date (its time then comes from the name)."""
    if not jpeg_complete(path):
        raise SessionError(f"{path}: JPEG is cut short (no end-of-image marker): an interrupted copy?")
    if first is not None and info.image_size != first[0].image_size:
        size = "x".join(map(str, info.image_size or ("?", "?")))
        size0 = "x".join(map(str, first[0].image_size or ("?", "?")))
        raise SessionError(f"{path}: {size} px, but {first[1]} is {size0}: the photos of a session must have one size")
    if warnings is not None and info.ignored:
        timing = {"DateTimeOriginal", "SubSecTimeOriginal"} & set(info.ignored)
        warnings.append(f"{path}: EXIF {', '.join(info.ignored)} stored with an unexpected TIFF type; ignored"
                        + (f" (its time is taken from the file name + {FRAME_PERIOD_S} s a photo)" if timing else ""))
    if warnings is not None and info.datetime_original and info.local_time() is None:
        warnings.append(f"{path}: EXIF DateTimeOriginal {info.datetime_original!r} is not a date; its time is "
                        f"taken from the file name + {FRAME_PERIOD_S} s a photo")


def write_stack_session(writer: SessionWriter, ramps: list[list[Path]], settings: BracketingSettings,
                        utc_offset_s: int | None, extra: dict, warnings: list[str] | None = None) -> int:
    """Index frames already placed at phone/frames/<index>.<ext> (ramps of local paths, in order):
    EXIF per frame -> frames.csv rows (those not indexed yet), camera.json from the first frame,
    phone/opencamera.json (settings, provenance, and `extra`: e.g. each ramp's file names on the
    phone). Returns the number of frames; notes on odd photos go into `warnings`."""
    from dfdcap.capture.session import Session

    n = settings.n_images
    ramp_names = [r.get("files") for r in extra.get("ramps", [])]
    all_exif, camera, count, first = True, None, 0, None
    try:
        indexed = {r.index for r in Session(writer.path).phone_frames}
    except SessionError:
        indexed = set()
    for k, paths in enumerate(ramps):
        infos = [read_exif(p.read_bytes(), str(p)) for p in paths]
        for info, p in zip(infos, paths):
            check_photo(info, p, first, warnings)
            first = first or (info, p)
        # the photos' own names (the local copies are <index>.jpg): their time is the fallback for EXIF's
        originals = (ramp_names[k] if k < len(ramp_names) else None) or [p.name for p in paths]
        names = [parse_photo_name(Path(o).name) or _local_name(p, i) for i, (p, o) in enumerate(zip(paths, originals))]
        if camera is None:
            camera = camera_from_exif(infos[0], settings, str(paths[0]))
        recs, exif_ok = ramp_records(infos, names, settings, k, k * n, utc_offset_s, warnings, [str(p) for p in paths])
        all_exif &= exif_ok
        for r in recs:
            if r.index not in indexed:
                writer.append_phone_record(r)
            count += 1
    if camera is not None:
        if not all_exif:
            camera = PhoneCamera(**{**asdict(camera), "timestamp_source": "UNKNOWN"})
        write_phone_camera_with_provenance(writer, camera)
    atomic_write_json(writer.path / SIDECAR, {
        "package": PACKAGE, "settings": asdict(settings), "focus_source": "formula",
        "focus_rule": "Open Camera CameraController2.setupFocusBracketingDistances (v1.55)",
        "timestamp_source": "EXIF" if all_exif else "file name + 0.5 s per frame", "utc_offset_s": utc_offset_s,
    } | extra)
    return count


def _local_name(p: Path, i: int) -> PhotoName:
    return PhotoName(p.name, "", datetime.fromtimestamp(p.stat().st_mtime), i, p.suffix.lstrip("."))


def write_phone_camera_with_provenance(writer: SessionWriter, camera: PhoneCamera) -> None:
    """camera.json plus `focus_source` (where frames.csv's focus comes from)."""
    atomic_write_json(writer.path / "phone" / "camera.json", camera.to_dict() | {
        "focus_source": "formula",
        "focus_source_note": "Open Camera's focus bracketing rule; the lens reaching it is not checked (UNCALIBRATED)",
    })


# --- over ADB ----------------------------------------------------------------------------------------


class OpenCameraPhone(Phone):
    """Open Camera in Focus Bracketing mode on a phone over ADB (see the module doc).

    serial: ADB serial (None: the only phone). settings: the bracketing wanted (None: whatever the
    phone's newest settings backup says). frame_period_s: the app's 0.5 s per photo (the simulator
    may run faster); slack_s: added to each ramp's N x frame_period_s before it is given up.
    """

    def __init__(self, serial: str | None = None, *, adb_port: int | None = None,
                 settings: BracketingSettings | None = None, frame_period_s: float = FRAME_PERIOD_S,
                 slack_s: float = 10.0, poll_s: float = 0.1, progress: bool = True):
        from dfdcap.capture.phone import _shell, adb_client, app_installed, find_device

        self._shell = _shell
        self._device = find_device(adb_client(adb_port), serial)
        self.serial = self._device.serial
        self.where = f"phone {self.serial}"
        if not app_installed(self._device, PACKAGE):
            raise DeviceError(f"{self.where}: Open Camera ({PACKAGE}) is not installed; install it (F-Droid or "
                              f"Google Play), choose Focus Bracketing, and save its settings once")
        model = _shell(self._device, ["getprop", "ro.product.model"], self.where).strip() or "unknown"
        self.info = DeviceInfo("opencamera", model, self.serial)
        self.frame_period_s, self.slack_s, self.poll_s, self.progress = frame_period_s, slack_s, poll_s, progress
        self.backup_name, self._prefs, self.settings = self._read_settings()
        if settings is not None:
            self._require(settings)
        if not self.settings.is_bracketing:
            raise DeviceError(f"{self.where}: Open Camera's photo mode is {self.settings.photo_mode!r} (settings backup "
                              f"{self.backup_name}), not Focus Bracketing; choose it, then Settings > Settings manager > "
                              f"Save settings, and run again")
        check_settings(self.settings, f"{self.where} ({self.backup_name})")
        self.utc_offset_s = parse_utc_offset(_shell(self._device, ["date", "+%z"], self.where))
        self.ramps: list[RampFiles] = []
        self._ramps_total = 0
        self._baseline: set[str] = set()
        self._current: RampFiles | None = None
        self._t_trigger = self._t_last_photo = 0.0
        self._seen = 0
        self._last_sizes: dict[str, int] = {}
        self._stopped = False
        self.notes: list[str] = []  # what fetch noticed in the photos (e.g. an undated EXIF): the recorder shows them

    # settings ---------------------------------------------------------------------------------
    def _read_settings(self) -> tuple[str, dict, BracketingSettings]:
        from dfdcap.capture.phone import SyncConnection

        with SyncConnection(self._device, self.where) as sync:
            # newest first; within one second (mtime has 1 s steps) a backup dfdcap pushed wins
            xmls = [(mtime, name.startswith("dfdcap_"), name) for name, mode, _size, mtime in sync.list_dir(BACKUP_DIR)
                    if name.endswith(".xml") and "/" not in name and not name.startswith(".")]
            if not xmls:
                raise DeviceError(f"{self.where}: no Open Camera settings backup in {BACKUP_DIR}; on the phone: "
                                  f"Settings > Settings manager > Save settings (dfdcap reads the mode from it)")
            name = max(xmls)[2]
            text = sync.read_bytes(f"{BACKUP_DIR}/{name}").decode("utf-8", "replace")
        prefs, s = parse_settings_xml(text, f"{self.where}:{BACKUP_DIR}/{name}")
        return name, prefs, s

    def _require(self, want: BracketingSettings) -> None:
        """Settings other than `want`: push an edited backup and tell the user to restore it (one tap)."""
        have = self.settings
        same = (have.is_bracketing and have.n_images == want.n_images
                and math.isclose(have.source_diopters, want.source_diopters, rel_tol=1e-4)
                and math.isclose(have.target_diopters, want.target_diopters, rel_tol=1e-4))
        if same:
            return
        check_settings(want, self.where)
        name = f"dfdcap_{datetime.now().strftime('%Y%m%d_%H%M%S')}.xml"
        self.push_settings(want, name)
        raise DeviceError(
            f"{self.where}: Open Camera is set to {_describe(have)}, asked {_describe(want)}; pushed {BACKUP_DIR}/{name}: "
            f"on the phone restore it (Settings > Settings manager > Restore settings > {name}; the app restarts), "
            f"then run again")

    def push_settings(self, want: BracketingSettings, name: str) -> str:
        """Write the phone's newest backup with the bracketing keys of `want` as BACKUP_DIR/name."""
        data = settings_to_xml(self._prefs, want).encode("utf-8")
        remote = f"{BACKUP_DIR}/{name}"
        try:
            import io

            self._device.sync.push(io.BytesIO(data), remote)
        except Exception as e:  # adbutils raises its own and OSError
            raise DeviceError(f"{self.where}: cannot push {remote} ({e})") from None
        return remote

    def schedule(self, ramps: int) -> FocusSchedule:
        """The FocusSchedule that describes these settings (near/far/steps; the spacing is the app's own)."""
        s = self.settings
        near, far = 1.0 / max(s.source_diopters, s.target_diopters), 1.0 / min(s.source_diopters, s.target_diopters)
        return FocusSchedule(near, far, s.n_images, ramps)

    def bracketing_schedule(self, ramps: int, wanted: FocusSchedule | None,
                            steps: int | None = None) -> tuple[FocusSchedule, float]:
        """(schedule, frames per second) of a recording of `ramps` ramps. wanted (near/far/steps given
        by the user): Open Camera must be set to source 1/near D, target 1/far D, steps photos, or an
        edited backup is pushed and DeviceError says how to restore it. None: the phone's settings,
        with `steps` photos if given (the phone's source and target kept)."""
        if wanted is not None:
            self._require(BracketingSettings(1.0 / wanted.near_m, 1.0 / wanted.far_m, wanted.steps))
        elif steps is not None:
            self._require(BracketingSettings(self.settings.source_diopters, self.settings.target_diopters, steps))
        return self.schedule(ramps), 1.0 / self.frame_period_s

    # Phone interface --------------------------------------------------------------------------------
    def hello(self) -> PhoneCamera:
        """A provisional camera (the focus range of the settings); fetch() rewrites camera.json from
        the first photo's EXIF (focal length, f-number, size)."""
        return PhoneCamera(0.0, 0.0, (0.0, 0.0), (0, 0), max(self.settings.source_diopters, self.settings.target_diopters),
                           "UNCALIBRATED", "EXIF")

    def probe(self, tries: int = 3) -> ClockProbe:
        """`date +%s%N` on the phone (its wall clock, CLOCK_REALTIME: the clock of EXIF times), the
        fastest of `tries` round trips: a shell round trip over ADB is slow and uneven (5-30 ms),
        and the fastest bounds the phone's reading most tightly."""
        best = None
        for _ in range(tries):
            t_send = time.monotonic_ns()
            out = self._shell(self._device, ["date", "+%s%N"], self.where)
            t_recv = time.monotonic_ns()
            text = out.strip()
            if not text.isdigit() or len(text) < 16:
                raise DeviceError(f"{self.where}: `date +%s%N` printed {text[:40]!r}, expected nanoseconds since 1970 "
                                  f"(toybox date, Android 7+)")
            if best is None or t_recv - t_send < best.t_host_recv_ns - best.t_host_send_ns:
                best = ClockProbe(t_send, int(text), t_recv)
        return best

    def start(self, schedule: FocusSchedule, fps: float) -> None:
        """Trigger the first of schedule.ramps ramps (the app's own focus rule and pace apply)."""
        self._ramps_total = schedule.ramps
        self._baseline = {name for name, *_ in self._list_photos()}
        # the key presses go to the app in front: wake the screen, bring Open Camera forward, let its camera open
        self._shell(self._device, ["input", "keyevent", str(KEYCODE_WAKEUP)], self.where)
        out = self._shell(self._device, ["am", "start", "-n", f"{PACKAGE}/.MainActivity"], self.where)
        if "Error" in out:
            raise DeviceError(f"{self.where}: cannot start Open Camera ({out.strip()[:160]})")
        time.sleep(2 * self.frame_period_s)
        self._trigger()

    def _trigger(self) -> None:
        self._current = None
        self._last_sizes = {}
        self._t_trigger = self._t_last_photo = time.monotonic()
        self._seen = 0
        self._shell(self._device, ["input", "keyevent", str(KEYCODE_VOLUME_UP)], self.where)

    def _list_photos(self) -> list[tuple[str, int, int, int]]:
        from dfdcap.capture.phone import SyncConnection

        with SyncConnection(self._device, self.where) as sync:
            return sync.list_dir(PHOTO_DIR)

    def timeout_s(self) -> float:
        """A ramp is given up after N x 0.5 s + slack, or later while its photos keep arriving
        (each new photo allows another 0.5 s + slack: a slow image saver is not a stall)."""
        return self.settings.n_images * self.frame_period_s + self.slack_s

    def is_done(self) -> bool:
        """Poll the photo folder; a finished ramp triggers the next. DeviceError when a ramp stalls."""
        if self._stopped or len(self.ramps) >= self._ramps_total:
            return True
        n = self.settings.n_images
        listing = {name: size for name, _mode, size, _mtime in self._list_photos() if name not in self._baseline}
        found = group_ramps(sorted(listing), n)
        if found:
            ramp = next((r for r in found if 0 in r.files), found[0])
            ramp.files = {i: (name, listing[name]) for i, (name, _) in ramp.files.items()}
            self._current = ramp
            stable = all(self._last_sizes.get(name) == size for name, size in ramp.files.values())
            self._last_sizes = {name: size for name, size in ramp.files.values()}
            if ramp.complete(n) and stable:  # every photo there, none still growing
                self.ramps.append(ramp)
                self._baseline |= set(listing)
                if len(self.ramps) >= self._ramps_total:
                    return True
                self._trigger()
                return False
        now = time.monotonic()
        if self._current is not None and len(self._current.files) > self._seen:  # still arriving: wait on
            self._seen, self._t_last_photo = len(self._current.files), now
        waited = now - self._t_trigger
        if now > max(self._t_trigger + self.timeout_s(), self._t_last_photo + self.frame_period_s + self.slack_s):
            have = len(self._current.files) if self._current else 0
            raise DeviceError(
                f"{self.where}: ramp {len(self.ramps) + 1} of {self._ramps_total}: {have} of {n} photos in {PHOTO_DIR} "
                f"after {waited:.0f} s (cancelled by a second key press? Open Camera in front, screen on?); "
                f"the {len(self.ramps)} complete ramps are kept")
        return False

    def stop(self) -> None:
        """Stop polling (no key is pressed: during a ramp a press would cancel it, after one start another)."""
        self._stopped = True

    def fetch(self, writer: SessionWriter) -> int:
        """Pull every complete ramp (verified, resumable) and index it; returns the frame count.
        phone/opencamera.json names the ramps' photos first, so `dfdcap pull SESSION` can resume."""
        n = self.settings.n_images
        if not self.ramps:
            return 0
        ramps = [{"stamp": r.stamp, "files": [r.files[i][0] for i in range(n)],
                  "sizes": [r.files[i][1] for i in range(n)]} for r in self.ramps]
        atomic_write_json(writer.path / SIDECAR, {"package": PACKAGE, "serial": self.serial,
                                                   "settings": asdict(self.settings), "settings_backup": self.backup_name,
                                                   "utc_offset_s": self.utc_offset_s, "ramps": ramps})
        return fetch_ramps(self._device, writer, ramps, self.settings, self.utc_offset_s, self.where,
                           {"serial": self.serial, "settings_backup": self.backup_name}, self.notes)[0]


def fetch_ramps(device, writer: SessionWriter, ramps: list[dict], settings: BracketingSettings,
                utc_offset_s: int | None, where: str, extra: dict, warnings: list[str] | None = None) -> tuple[int, int, int]:
    """Pull the ramps ({"files", "sizes"} each, in order) into the session and index what is new.
    Returns (frames, photos pulled now, bytes pulled now); notes on odd photos go into `warnings`."""
    from dfdcap.capture.phone import SyncConnection

    n = settings.n_images
    local, pulled, nbytes = [], 0, 0
    with SyncConnection(device, where) as sync:
        for k, r in enumerate(ramps):
            paths, p, b = pull_photos(device, sync, r["files"], r["sizes"], writer.path / "phone" / "frames", k * n, where)
            local.append(paths)
            pulled, nbytes = pulled + p, nbytes + b
    return write_stack_session(writer, local, settings, utc_offset_s, extra | {"ramps": ramps}, warnings), pulled, nbytes


def resume_opencamera_pull(session_dir, serial: str | None = None, *, adb_port: int | None = None):
    """`dfdcap pull SESSION` for an Open Camera session: pull the photos phone/opencamera.json names
    that the session lacks (verified; present ones are kept; the phone's photos stay). Returns a
    dfdcap.capture.phone.PullResult."""
    from dfdcap.capture.phone import PullResult, adb_client, find_device
    from dfdcap.capture.session import Session
    from dfdcap.fileio import read_json

    session = Session(session_dir)
    side_path = session.path / SIDECAR
    if not side_path.is_file():
        raise SessionError(f"{side_path}: missing; the recording ended before any ramp was complete (nothing to pull)")
    side = read_json(side_path)
    try:
        settings = BracketingSettings(**side["settings"])
        ramps, utc = side["ramps"], side.get("utc_offset_s")
    except (KeyError, TypeError) as e:
        raise SessionError(f"{side_path}: malformed ({e})") from None
    if "imported_from" in side:  # no phone to ask: "no phone connected" would send the user looking for one
        raise SessionError(f"{session.path}: made by import-opencamera from {side['imported_from']}, which copied "
                           "its photos into the session; there is nothing on a phone to pull")
    if side.get("serial") is not None and not isinstance(side["serial"], str):
        raise SessionError(f"{side_path}: serial {side['serial']!r} is not text; fix it or give --phone SERIAL")
    if not isinstance(ramps, list) or not all(isinstance(r, dict) and isinstance(r.get("files"), list)
                                              and isinstance(r.get("sizes"), list) for r in ramps):
        raise SessionError(f"{side_path}: ramps: expected a list of {{\"files\": [...], \"sizes\": [...]}}, one per ramp")
    device = find_device(adb_client(adb_port), serial or side.get("serial"))
    where = f"phone {device.serial} ({session.path.name})"
    t0 = time.monotonic()
    writer = SessionWriter(session.path, session.meta)
    notes: list[str] = []
    try:
        n, pulled, nbytes = fetch_ramps(device, writer, ramps, settings, utc, where,
                                        {k: side[k] for k in ("serial", "settings_backup") if k in side}, notes)
    finally:
        for f in writer._indexes.values():
            f.close()
    meta = read_json(session.path / "session.json")
    res = PullResult(n, pulled, n - pulled, nbytes, 0, False, round(time.monotonic() - t0, 3), notes)
    meta["phone_pull"] = asdict(res) | {"finished_utc": datetime.now().astimezone().isoformat()}
    atomic_write_json(session.path / "session.json", meta)
    return res


def _describe(s: BracketingSettings) -> str:
    mode = "Focus Bracketing" if s.is_bracketing else s.photo_mode
    return f"{mode} {s.source_diopters:g} D -> {s.target_diopters:g} D, {s.n_images} photos"


def pull_photos(device, sync, names: list[str], sizes: list[int], frames_dir: Path, first_index: int,
                where: str) -> tuple[list[Path], int, int]:
    """Pull one ramp's photos to frames_dir/<first_index + i>.jpg; returns (those paths, photos
    pulled, bytes pulled).

    Names are checked first (only Open Camera's photo names; nothing is written otherwise). The
    phone's `sha256sum` of the photos runs while they stream (its own ADB connection), each to a
    temporary name; a photo is renamed into place only once it matches the phone's checksum
    (one re-pull on a mismatch). A photo already in the session with the right size and checksum
    is not pulled again, so an interrupted fetch resumes.
    """
    from dfdcap.capture.phone import _inside, _sha256_file

    parsed = [parse_photo_name(nm) for nm in names]
    if any(p is None for p in parsed):
        bad = next(nm for nm, p in zip(names, parsed) if p is None)
        raise DeviceError(f"{where}: refused file name {bad!r} (not an Open Camera photo name)")
    if any(p.ext != "jpg" for p in parsed):
        raise DeviceError(f"{where}: {names[0]}...: RAW (.dng) photos are not supported; turn RAW off in Open Camera")
    remotes = [f"{PHOTO_DIR}/{nm}" for nm in names]
    frames_dir.mkdir(parents=True, exist_ok=True)
    dests = [_inside(frames_dir, f"{first_index + i}.jpg") for i in range(len(names))]
    with ThreadPoolExecutor(1, thread_name_prefix="dfdcap-sha256sum") as pool, contextlib.ExitStack() as temps:
        sums_later = pool.submit(_remote_sha256s, device, remotes, where)  # the phone hashes while we pull
        have = [dest.is_file() and dest.stat().st_size == size for dest, size in zip(dests, sizes)]
        for remote, present in zip(remotes, have):  # every request in flight at once: no round trip a photo
            if not present:
                sync.send_recv(remote)
        got: list[tuple[Path | None, str]] = []
        pulled = nbytes = 0
        for remote, size, dest, present in zip(remotes, sizes, dests, have):
            if present:
                got.append((None, _sha256_file(dest)))  # checked against the phone's sum below
                continue
            tmp = temps.enter_context(atomic_path(dest))
            got.append((tmp, _stream_to(sync, remote, tmp, size, requested=True)))
            pulled, nbytes = pulled + 1, nbytes + size
        sums = sums_later.result()
        for i, (tmp, sha) in enumerate(got):
            if sha == sums[remotes[i]]:
                continue
            if tmp is None:  # a stale copy in the session: pull it again
                tmp = temps.enter_context(atomic_path(dests[i]))
            if _stream_to(sync, remotes[i], tmp, sizes[i]) != sums[remotes[i]]:
                raise DeviceError(f"{where}: {remotes[i]} does not match the phone's sha256sum twice (changing on "
                                  f"the phone, or a bad cable); nothing of this ramp was kept")
    return dests, pulled, nbytes


def _remote_sha256s(device, remotes: list[str], where: str) -> dict[str, str]:
    from dfdcap.capture.phone import _shell

    out = _shell(device, ["sha256sum", *remotes], where, timeout_s=120.0)
    sums = {}
    for line in out.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and len(parts[0]) == 64:
            sums[parts[1].strip()] = parts[0].lower()
    gone = [r for r in remotes if r not in sums]
    if gone:
        raise DeviceError(f"{where}: {gone[0]} is gone from the phone (sha256sum: {out.strip()[:120]})")
    return sums


def _stream_to(sync, remote: str, path: Path, size: int, requested: bool = False) -> str:
    """Pull remote into path (requested: its RECV was sent already); its sha256, or '' when its
    length is not `size`."""
    h, n = hashlib.sha256(), 0
    with open(path, "wb") as f:
        for chunk in (sync.iter_recv_reply(remote) if requested else sync.iter_file(remote)):
            n += len(chunk)
            h.update(chunk)
            f.write(chunk)
    return h.hexdigest() if n == size else ""


# --- photos taken by hand: a folder -------------------------------------------------------------------


@dataclass
class ImportResult:
    path: Path
    ramps: int
    frames: int
    skipped_incomplete: list[str]
    warnings: list[str] = field(default_factory=list)


def import_opencamera(folder: str | Path, settings: BracketingSettings, out_dir: str | Path, *,
                      name: str = "opencamera", utc_offset: str | None = None) -> ImportResult:
    """A phone-only session (no sensor, no clock probes) from Open Camera focus bracketing photos in
    `folder` (as copied off the phone): complete ramps only, oldest first; focus from the app's rule,
    time from EXIF (OffsetTimeOriginal, else utc_offset '+HH:MM', else UTC)."""
    from dfdcap.capture.recorder import check_output_dir, check_session_name

    folder = Path(folder)
    if not folder.is_dir():
        raise SessionError(f"{folder}: not a folder of Open Camera photos")
    check_settings(settings, str(folder))
    check_session_name(name)
    check_output_dir(out_dir)
    offset_s = None
    if utc_offset is not None:
        offset_s = parse_utc_offset(utc_offset)
        if offset_s is None:
            raise SessionError(f"--utc-offset {utc_offset!r}: expected +HH:MM or -HH:MM with hours 0 to "
                               f"{MAX_UTC_OFFSET_H} and minutes 0 to 59, e.g. +05:30")
    n = settings.n_images
    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    groups = group_ramps(names, n)
    complete = [g for g in groups if g.complete(n)]
    check_bracket_length(names, {g.stamp for g in complete}, n, folder)
    skipped = [g.stamp for g in groups if not g.complete(n)]
    if not complete:
        raise SessionError(f"{folder}: no complete focus bracket of {n} photos IMG_<date>_<time>_0..{n - 1}.jpg "
                           f"({len(groups)} incomplete); check -n")
    if any(g.files[0][0].endswith(".dng") for g in complete):
        raise SessionError(f"{folder}: RAW (.dng) photos are not supported; use the JPEGs")
    s = FocusSchedule(1 / max(settings.source_diopters, settings.target_diopters),
                      1 / min(settings.source_diopters, settings.target_diopters), n, len(complete))
    writer = SessionWriter.create(out_dir, name, DeviceInfo("none", "", ""), DeviceInfo("opencamera", "unknown", ""),
                                  s.to_dict(), extra={"source": f"import-opencamera {folder}"})
    sources: dict[str, str] = {}  # copy -> the user's photo, to name the latter in errors
    try:
        local = []
        for k, g in enumerate(complete):
            paths = []
            for i in range(n):
                dest = writer.path / "phone" / "frames" / f"{k * n + i}.jpg"
                with atomic_path(dest) as tmp:
                    shutil.copyfile(folder / g.files[i][0], tmp)
                sources[str(dest)] = str(folder / g.files[i][0])
                paths.append(dest)
            local.append(paths)
        extra = {"imported_from": str(folder), "ramps": [{"stamp": g.stamp, "files": [g.files[i][0] for i in range(n)]}
                                                          for g in complete]}
        warnings: list[str] = []
        frames = write_stack_session(writer, local, settings, offset_s, extra, warnings)
    except BaseException as e:
        # an import is rerun, not resumed: a failed one leaves no half session behind (the photos are copies)
        shutil.rmtree(writer.path, ignore_errors=True)
        if isinstance(e, DfdcapError):
            msg = str(e)
            for copy, src in sources.items():
                msg = msg.replace(copy, src)
            raise SessionError(msg) from None
        raise
    writer.finish("complete")
    for copy, src in sources.items():
        warnings = [w.replace(copy, src) for w in warnings]
    return ImportResult(writer.path, len(complete), frames, skipped, warnings)

