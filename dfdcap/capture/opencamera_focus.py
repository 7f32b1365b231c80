"""Open Camera's focus bracketing, as pure functions: its focus distances, its file names, its settings XML.

Open Camera (net.sourceforge.opencamera, GPL-3.0) has a Focus Bracketing photo mode that takes
N photos from a source to a target focus distance (diopters, Camera2's LENS_FOCUS_DISTANCE).
Nothing on the phone records which focus a photo was taken at, so dfdcap recomputes it with the
app's own rule (CameraController2.setupFocusBracketingDistances, v1.55; checked against the
app's unit test values below):

- frame 0 is the source and frame N-1 the target, exactly;
- frame i in between interpolates in METRES, d_i = (1 - a) / s' + a / t', with s' and t' the
  source and target clamped to >= 0.1 D (10 m) and a = 1 - ln(N - i) / ln(N);
- when the source is FARTHER than the target (source metres > target metres, e.g. 1 D -> 10 D)
  the rule is mirrored: i -> N-1-i and a -> 1 - a. So a sweep and its reverse take the same
  focus distances in reverse order: both put more frames near the close end.
  (Issue #14 words this "mirrored when the source is nearer"; the app's code and its own test
  mirror when the source's distance in metres is the larger one.)

Example (the app's unit test): 10 D -> 1 D, N = 5: 10, 4.449, 2.593, 1.633, 1 D, with
a = 0.138647, 0.317394, 0.569323 for the inner frames; 1 D -> 10 D gives the reverse.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime

from dfdcap.errors import DeviceError

PACKAGE = "net.sourceforge.opencamera"
PHOTO_DIR = "/sdcard/DCIM/OpenCamera"
BACKUP_DIR = f"/sdcard/Android/data/{PACKAGE}/files/backups"
FRAME_PERIOD_S = 0.5  # the app waits 500 ms after setting each frame's focus
N_IMAGES = (2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 100, 150, 200)
MIN_INTERP_DIOPTERS = 0.1  # both ends are clamped to >= 0.1 D (10 m) for the interpolation

# settings keys (SharedPreferences, as Open Camera's Settings manager saves and restores them)
KEY_PHOTO_MODE = "preference_photo_mode"
FOCUS_BRACKETING_MODE = "preference_photo_mode_focus_bracketing"
KEY_SOURCE = "preference_focus_distance"
KEY_TARGET = "preference_focus_bracketing_target_distance"
KEY_N_IMAGES = "preference_focus_bracketing_n_images"
XML_ROOT = "open_camera_prefs"

# IMG_yyyyMMdd_HHmmss[.SSS]_i.jpg (.dng with RAW): one time per ramp, i = 0..N-1
_NAME = re.compile(r"^IMG_(\d{8})_(\d{6})(?:\.(\d{3}))?_(\d{1,3})\.(jpg|dng)$")


def bracketing_alpha(i: int, n: int, source_farther: bool = False) -> float:
    """Open Camera's interpolation weight of inner frame i (0 < i < n-1) of an n-frame sweep."""
    value = n - 1 - i if source_farther else i
    a = 1.0 - math.log(n - value) / math.log(n)
    return 1.0 - a if source_farther else a


def bracketing_focus_diopters(source_d: float, target_d: float, n: int) -> list[float]:
    """The n focus distances (diopters) Open Camera sets from source_d to target_d, in order."""
    if n < 2:
        raise DeviceError(f"Open Camera focus bracketing: n images must be >= 2, got {n}")
    if source_d < 0 or target_d < 0:
        raise DeviceError(f"Open Camera focus bracketing: focus must be >= 0 D, got {source_d} and {target_d}")
    s_m = 1.0 / max(source_d, MIN_INTERP_DIOPTERS)
    t_m = 1.0 / max(target_d, MIN_INTERP_DIOPTERS)
    farther = s_m > t_m
    out = []
    for i in range(n):
        if i == 0:
            out.append(float(source_d))
        elif i == n - 1:
            out.append(float(target_d))
        else:
            a = bracketing_alpha(i, n, farther)
            out.append(1.0 / ((1.0 - a) * s_m + a * t_m))
    return out


@dataclass(frozen=True)
class PhotoName:
    """A parsed Open Camera photo name: the ramp's local time, the frame index i, the extension."""

    name: str
    stamp: str  # "yyyyMMdd_HHmmss[.SSS]": the ramp's key
    local_time: datetime
    index: int
    ext: str


def parse_photo_name(name: str) -> PhotoName | None:
    """The parts of `IMG_yyyyMMdd_HHmmss[.SSS]_i.jpg|dng`, or None for any other name.

    Only such names are ever pulled: a name with a slash, '..', a NUL or anything else is not
    one of the app's photos and is ignored (the pull writes to names it makes itself)."""
    m = _NAME.fullmatch(name)
    if m is None:
        return None
    date, time_, ms, idx, ext = m.groups()
    try:
        t = datetime.strptime(date + time_, "%Y%m%d%H%M%S").replace(microsecond=int(ms or 0) * 1000)
    except ValueError:
        return None
    return PhotoName(name, f"{date}_{time_}" + (f".{ms}" if ms else ""), t, int(idx), ext)


@dataclass(frozen=True)
class BracketingSettings:
    """Focus bracketing settings: source and target (diopters), N images, and the photo mode."""

    source_diopters: float
    target_diopters: float
    n_images: int
    photo_mode: str = FOCUS_BRACKETING_MODE

    @property
    def is_bracketing(self) -> bool:
        return self.photo_mode == FOCUS_BRACKETING_MODE

    def focus_diopters(self) -> list[float]:
        return bracketing_focus_diopters(self.source_diopters, self.target_diopters, self.n_images)


def check_settings(s: BracketingSettings, where: str) -> BracketingSettings:
    """One-line errors for settings Open Camera would not take or dfdcap cannot use."""
    if s.n_images not in N_IMAGES:
        raise DeviceError(f"{where}: {s.n_images} images per focus bracket; Open Camera offers {', '.join(map(str, N_IMAGES))}")
    if not (s.source_diopters > 0 and s.target_diopters > 0) or s.source_diopters == s.target_diopters:
        raise DeviceError(f"{where}: focus bracketing from {s.source_diopters} D to {s.target_diopters} D; need two "
                          f"different focus distances > 0 D (0 D = infinity gives no finite stack)")
    return s


def parse_settings_xml(text: str, where: str) -> tuple[dict[str, tuple[str, str]], BracketingSettings]:
    """Open Camera's settings backup (`<open_camera_prefs><float key=.. value=../>...`):
    ({key: (type, value)}, the bracketing settings in it). Missing keys take the app's defaults."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise DeviceError(f"{where}: not an Open Camera settings file ({e})") from None
    if root.tag != XML_ROOT:
        raise DeviceError(f"{where}: root element <{root.tag}>, expected <{XML_ROOT}> (Open Camera's Settings manager)")
    prefs = {el.get("key", ""): (el.tag, el.get("value", "")) for el in root if el.get("key")}

    def value(key: str, default: str) -> str:
        return prefs.get(key, ("", default))[1]

    try:
        s = BracketingSettings(float(value(KEY_SOURCE, "0")), float(value(KEY_TARGET, "0")),
                               int(value(KEY_N_IMAGES, "3")), value(KEY_PHOTO_MODE, "preference_photo_mode_std"))
    except ValueError as e:
        raise DeviceError(f"{where}: a focus bracketing setting is not a number ({e})") from None
    return prefs, s


def settings_to_xml(prefs: dict[str, tuple[str, str]], s: BracketingSettings) -> str:
    """The backup with the bracketing keys set to s (other keys kept), in the app's own form."""
    out = dict(prefs)
    out[KEY_PHOTO_MODE] = ("string", s.photo_mode)
    out[KEY_SOURCE] = ("float", repr(float(s.source_diopters)))
    out[KEY_TARGET] = ("float", repr(float(s.target_diopters)))
    out[KEY_N_IMAGES] = ("string", str(int(s.n_images)))
    root = ET.Element(XML_ROOT)
    for key, (tag, val) in out.items():
        ET.SubElement(root, tag, {"key": key, "value": val})
    return "<?xml version='1.0' encoding='UTF-8' standalone='yes' ?>" + ET.tostring(root, encoding="unicode")
