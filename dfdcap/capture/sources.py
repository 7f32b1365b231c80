"""Open a sensor or a phone from the short spec a user types (`--sensor`, `--phone`).

Sensor specs: "sim", "openni" (first device), "openni:URI", "realsense" (first device),
"realsense:SERIAL", or a recording file: PATH.oni (OpenNI2), PATH.bag / PATH.db3 (RealSense).
Phone specs: "sim", an ADB serial (the companion app), or "opencamera:SERIAL" (Open Camera's
Focus Bracketing mode, no companion app; "opencamera:sim" plays it on the simulated rig).

The vendor modules (openni.py, realsense.py, phone.py and the libraries behind them) are
imported only when their spec is opened, so other commands work without them.
`parse_sensor_spec` / `parse_phone_spec` check a spec without opening anything, so the CLI can
refuse bad input before it writes a byte.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dfdcap.errors import DeviceError

if TYPE_CHECKING:  # pragma: no cover
    from dfdcap.capture.base import Phone, Sensor

SENSOR_NAMES = ("sim", "openni", "realsense")
SENSOR_FILE_KINDS = {".oni": "openni", ".bag": "realsense", ".db3": "realsense"}
SENSOR_ACCEPTED = "sim, openni[:URI], realsense[:SERIAL], or a recording file PATH.oni, PATH.bag, PATH.db3"
PHONE_ACCEPTED = "sim, an ADB serial (see `adb devices`), or opencamera:SERIAL / opencamera:sim"


@dataclass(frozen=True)
class SourceSpec:
    """A parsed spec: kind ("sim" | "openni" | "realsense" | "adb" | "opencamera"), an argument (URI, serial,
    file path or None), and whether it is a recording file (played back, not live)."""

    kind: str
    arg: str | None = None
    is_file: bool = False


def parse_sensor_spec(spec: str) -> SourceSpec:
    """Check a --sensor spec; raise a one-line DeviceError naming it and the accepted values."""
    s = spec.strip()
    if not s:
        raise DeviceError(f"sensor spec is empty: expected {SENSOR_ACCEPTED}")
    if s in SENSOR_NAMES:
        return SourceSpec(s)
    head, sep, tail = s.partition(":")
    if sep and head in ("openni", "realsense") and tail:
        return SourceSpec(head, tail)
    suffix = Path(s).suffix.lower()
    if suffix in SENSOR_FILE_KINDS:
        path = Path(s)
        if not path.exists():
            raise DeviceError(f"sensor recording {s}: file not found")
        if not path.is_file():
            raise DeviceError(f"sensor recording {s}: not a file")
        return SourceSpec(SENSOR_FILE_KINDS[suffix], str(path), is_file=True)
    if Path(s).exists():
        raise DeviceError(f"sensor recording {s}: unsupported file type {suffix or '(none)'!r}; expected .oni, .bag or .db3")
    raise DeviceError(f"unknown sensor {spec!r}: expected {SENSOR_ACCEPTED}")


def parse_phone_spec(spec: str) -> SourceSpec:
    """Check a --phone spec: "sim" or something shaped like an ADB serial (no spaces)."""
    s = spec.strip()
    if s == "sim":
        return SourceSpec("sim")
    if not s or any(c.isspace() for c in s) or s.startswith("-"):
        raise DeviceError(f"unknown phone {spec!r}: expected {PHONE_ACCEPTED}")
    head, sep, tail = s.partition(":")
    if head == "opencamera":
        if not tail:
            raise DeviceError(f"phone {spec!r}: name the phone, opencamera:SERIAL (see `adb devices`) or opencamera:sim")
        return SourceSpec("opencamera", tail)
    return SourceSpec("adb", s)


def open_sensor(spec: str, rig=None, realtime: bool = True) -> "Sensor":
    """Open the sensor a spec names (see module doc). Caller closes it (`with`).

    rig: the dfdcap.sim.rig.SimRig to take a "sim" sensor from (so sensor and phone share one
    scene and clock truth); None: the process's shared default rig (dfdcap.sim.rig.shared_rig). realtime: the sim sensor
    paces frames at its frame rate (False: as fast as it renders).
    """
    p = parse_sensor_spec(spec)
    if p.kind == "sim":
        if rig is None:
            from dfdcap.sim.rig import shared_rig

            rig = shared_rig()
        return rig.sensor(realtime=realtime)
    if p.kind == "openni":
        from dfdcap.capture.openni import OpenNISensor

        return OpenNISensor(p.arg)
    from dfdcap.capture.realsense import RealSenseSensor

    return RealSenseSensor(p.arg)


def open_phone(spec: str, rig=None, image_size: tuple[int, int] | None = None) -> "Phone":
    """Open the phone a spec names: the simulated phone of `rig` (None: the shared default rig,
    the same one open_sensor("sim") uses; its size is the rig's phone_size) or the phone with
    that ADB serial, recording at image_size (w, h; None: the app's default)."""
    p = parse_phone_spec(spec)
    if p.kind == "sim":
        if rig is None:
            from dfdcap.sim.rig import shared_rig

            rig = shared_rig()
        return rig.phone()
    if p.kind == "opencamera":
        if p.arg == "sim":
            from dfdcap.sim.opencamera import SimOpenCameraPhone
            from dfdcap.sim.rig import shared_rig

            return SimOpenCameraPhone(rig if rig is not None else shared_rig())
        from dfdcap.capture.opencamera import OpenCameraPhone

        return OpenCameraPhone(p.arg)
    from dfdcap.capture.phone import AdbPhone

    return AdbPhone(p.arg, image_size=image_size)
