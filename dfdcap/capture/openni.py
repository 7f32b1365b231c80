"""RGB-D sensors through OpenNI2 (Asus Xtion and other PS1080 devices) and `.oni` recordings.

One code path for both: open a Device (a URI, None for the first device, or a file path),
create depth and colour streams, then read with `wait_for_any_stream` and pair depth and
colour frames by device timestamp. Differences are only at open:
- live: 640x480 at 30 fps, DEPTH_1_MM + RGB888, hardware depth-to-colour registration,
  mirroring off, depth/colour frame sync; a stream that stays silent raises DeviceError;
- file: manual playback (`set_speed(-1.0)`, a float: an int is packed wrongly), no repeat,
  so every record is delivered once; the end is known from the frame counts (and a timeout
  as a fallback, since `read_frame()` at the end of a file blocks forever).

Traps handled (DEVICE-FACTS.md): `openni2.initialize()` needs the folder of libOpenNI2.so
(found here, or a private folder of symlinks is made when only libOpenNI2.so.0 exists);
URIs are bytes; the Dummy device segfaults when a stream is closed right after stop(), so
close() waits between the two; `playback.seek()` blocks forever, so it is never used.
"""

from __future__ import annotations

import ctypes
import math
import os
import sysconfig
import time
from collections import deque
from pathlib import Path
from typing import Iterator

import numpy as np

from dfdcap.cameras import CameraModel
from dfdcap.capture.base import Sensor, SensorFrame
from dfdcap.capture.session import DeviceInfo, SensorIntrinsics
from dfdcap.errors import DeviceError

ENV_REDIST = "DFDCAP_OPENNI2_REDIST"
XTION_HFOV_RAD = math.radians(58.0)  # nominal Xtion PRO LIVE colour field of view, used when a device reports none
XTION_VFOV_RAD = math.radians(45.0)
LIVE_TIMEOUT_S = 2.0  # a live stream silent this long counts as disconnected
FILE_TIMEOUT_S = 2.0  # a file that delivers nothing this long is over (truncated file)
_STOP_TO_CLOSE_S = 0.1  # Dummy device segfault trap

_LIB = "libOpenNI2.so"


def _openni2():
    try:
        from openni import openni2
    except ImportError as e:
        raise DeviceError(f"the OpenNI2 Python bindings are missing ({e}): pip install openni") from None
    return openni2


def _candidate_dirs() -> list[Path]:
    dirs = []
    for var in (ENV_REDIST, "OPENNI2_REDIST64", "OPENNI2_REDIST"):
        if os.environ.get(var):
            dirs.append(Path(os.environ[var]))
    multiarch = sysconfig.get_config_var("MULTIARCH") or "x86_64-linux-gnu"
    dirs += [Path("/usr/lib") / multiarch, Path("/usr/lib"), Path("/usr/local/lib"), Path("/usr/lib/OpenNI2"), Path("/lib") / multiarch]
    return dirs


def make_redist_dir(folder: str | os.PathLike, drivers: tuple[str, ...] | None = None, lib_dir: str | os.PathLike | None = None) -> Path:
    """Make `folder` an OpenNI2 "redist" folder: symlinks to libOpenNI2 and to the chosen drivers.

    drivers: names like ("OniFile", "DummyDevice") to load only those (no USB probing, fewer
    threads: good for tests and file playback); None links the whole system driver folder.
    """
    folder = Path(folder)
    src = Path(lib_dir) if lib_dir else _system_lib_dir()
    lib = src / _LIB if (src / _LIB).exists() else src / f"{_LIB}.0"
    if not lib.exists():
        raise DeviceError(f"{src}: no {_LIB}(.0) there: install libopenni2-0 (apt)")
    (folder / "OpenNI2").mkdir(parents=True, exist_ok=True)
    link = folder / _LIB
    if not link.exists():
        link.symlink_to(lib.resolve())
    drv_src = src / "OpenNI2" / "Drivers"
    drv_dst = folder / "OpenNI2" / "Drivers"
    if drivers is None:
        if not drv_dst.exists():
            drv_dst.symlink_to(drv_src)
    else:
        drv_dst.mkdir(exist_ok=True)
        for name in drivers:
            so = drv_src / f"lib{name}.so.0"
            if not so.exists():
                so = drv_src / f"lib{name}.so"
            if not so.exists():
                raise DeviceError(f"{drv_src}: OpenNI2 driver lib{name}.so.0 not found: install libopenni2-0 (apt)")
            dst = drv_dst / so.name
            if not dst.exists():
                dst.symlink_to(so.resolve())
    return folder


def _system_lib_dir() -> Path:
    for d in _candidate_dirs():
        if (d / _LIB).exists() or (d / f"{_LIB}.0").exists():
            return d
    raise DeviceError(
        f"OpenNI2 library ({_LIB}) not found in {', '.join(str(d) for d in _candidate_dirs())}: "
        f"install libopenni2-0 and libopenni2-dev (apt), or set {ENV_REDIST} to its folder"
    )


def initialize_openni():
    """Load libOpenNI2 once per process; returns the `openni2` module.

    The folder comes from $DFDCAP_OPENNI2_REDIST, $OPENNI2_REDIST(64) or the system library
    folders; when only the versioned libOpenNI2.so.0 exists (no -dev package), a private
    folder with an unversioned symlink is made under the user's cache.
    """
    openni2 = _openni2()
    if openni2.is_initialized():
        return openni2
    d = _system_lib_dir()
    if not (d / _LIB).exists():
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dfdcap" / "openni2"
        d = make_redist_dir(cache, None, d)
    try:
        openni2.initialize(str(d))
    except Exception as e:
        raise DeviceError(f"{d}: OpenNI2 failed to initialize ({e}); install libopenni2-0 (apt)") from None
    return openni2


def _depth_scale_m(pixel_format) -> float:
    openni2 = _openni2()
    if pixel_format == openni2.PIXEL_FORMAT_DEPTH_1_MM:
        return 0.001
    if pixel_format == openni2.PIXEL_FORMAT_DEPTH_100_UM:
        return 0.0001
    raise DeviceError(f"OpenNI depth stream has pixel format {pixel_format}: dfdcap reads DEPTH_1_MM or DEPTH_100_UM")


def _camera_from_fov(stream, width: int, height: int) -> CameraModel:
    """Pinhole model from the stream's reported field of view (OpenNI2 reports no other intrinsics)."""
    try:
        hfov, vfov = float(stream.get_horizontal_fov()), float(stream.get_vertical_fov())
    except Exception:
        hfov, vfov = 0.0, 0.0
    if not (0 < hfov < math.pi and 0 < vfov < math.pi):
        hfov, vfov = XTION_HFOV_RAD, XTION_VFOV_RAD
    fx = width / 2 / math.tan(hfov / 2)
    fy = height / 2 / math.tan(vfov / 2)
    return CameraModel.from_fov(width, height, fx, fy)


def _frame_array(frame, kind: str) -> np.ndarray:
    """Copy an OniFrame's pixels: depth (H, W) uint16, colour (H, W, 3) uint8."""
    h, w = int(frame.height), int(frame.width)
    nbytes = int(frame.dataSize)
    buf = (ctypes.c_uint8 * nbytes).from_address(frame.data)
    if kind == "depth":
        if nbytes < h * w * 2:
            raise DeviceError(f"OpenNI depth frame {frame.frameIndex}: {nbytes} bytes for {w}x{h}")
        return np.frombuffer(buf, dtype="<u2", count=h * w).reshape(h, w).astype(np.uint16, copy=True)
    if nbytes < h * w * 3:
        raise DeviceError(f"OpenNI colour frame {frame.frameIndex}: {nbytes} bytes for {w}x{h} RGB888")
    return np.frombuffer(buf, dtype=np.uint8, count=h * w * 3).reshape(h, w, 3).copy()


class OpenNISensor(Sensor):
    """An OpenNI2 device or `.oni` file as a dfdcap Sensor.

    uri_or_path: None (first device), a device URI (e.g. "Dummy" or a USB URI) or an `.oni` path.
    Frames: depth uint16 in the stream's unit (1 mm or 100 um) registered to colour where the
    device does it, RGB uint8, t_device_ns = the frame's device timestamp (us) * 1000,
    t_host_ns = time.monotonic_ns() when the depth frame arrived, index = depth frame index.
    """

    def __init__(self, uri_or_path: str | None = None, width: int = 640, height: int = 480, fps: int = 30,
                 registered: bool | None = None, timeout_s: float | None = None):
        openni2 = initialize_openni()
        self._openni2 = openni2
        self._streams: list = []
        self._dev = None
        self._closed = False
        self.source = uri_or_path
        is_path = uri_or_path is not None and (uri_or_path.lower().endswith(".oni") or Path(uri_or_path).is_file())
        if is_path and not Path(uri_or_path).is_file():
            raise DeviceError(f"{uri_or_path}: .oni file not found")
        uri = None if uri_or_path is None else os.fsencode(str(Path(uri_or_path).resolve()) if is_path else uri_or_path)
        try:
            self._dev = openni2.Device(uri)
        except Exception as e:
            what = f"{uri_or_path}: cannot open .oni file" if is_path else f"OpenNI device {uri_or_path or '(any)'}: cannot open"
            hint = "" if is_path else "; is it plugged in? `dfdcap devices` lists what OpenNI sees"
            raise DeviceError(f"{what} ({_oni_message(e)}){hint}") from None
        try:
            self.is_file = bool(self._dev.is_file())
            self._open_streams(width, height, fps, registered)
        except DeviceError:
            self.close()
            raise
        except Exception as e:  # any other library error: one line, naming the source
            self.close()
            raise DeviceError(f"{uri_or_path or 'OpenNI device (any)'}: cannot set up the depth and colour streams "
                              f"({_oni_message(e)})") from None
        except BaseException:
            self.close()
            raise
        self.timeout_s = timeout_s if timeout_s is not None else (FILE_TIMEOUT_S if self.is_file else LIVE_TIMEOUT_S)
        self.dropped = 0  # frames without a partner (live only, normally): the device counter the recorder reports

    # opening ------------------------------------------------------------------------------
    def _open_streams(self, width: int, height: int, fps: int, registered: bool | None) -> None:
        openni2, dev = self._openni2, self._dev
        name = self.source or "(first device)"
        if not dev.has_sensor(openni2.SENSOR_DEPTH) or not dev.has_sensor(openni2.SENSOR_COLOR):
            raise DeviceError(f"{name}: needs a depth and a colour stream (has depth: "
                              f"{dev.has_sensor(openni2.SENSOR_DEPTH)}, colour: {dev.has_sensor(openni2.SENSOR_COLOR)})")
        if self.is_file:
            dev.playback.set_repeat_enabled(False)
            dev.playback.set_speed(-1.0)  # manual: one record per wait, nothing dropped
        self._depth = dev.create_depth_stream()
        self._color = dev.create_color_stream()
        self._streams = [self._depth, self._color]
        if not self.is_file:
            self._configure_live(width, height, fps)
            if registered is None:
                registered = self._enable_registration()
        elif registered is None:
            registered = self._file_registration()
        dmode, cmode = self._depth.get_video_mode(), self._color.get_video_mode()
        if cmode.pixelFormat != openni2.PIXEL_FORMAT_RGB888:
            raise DeviceError(f"{name}: colour stream has pixel format {cmode.pixelFormat}, dfdcap reads RGB888")
        scale = _depth_scale_m(dmode.pixelFormat)
        color = _camera_from_fov(self._color, cmode.resolutionX, cmode.resolutionY)
        depth = color if registered else _camera_from_fov(self._depth, dmode.resolutionX, dmode.resolutionY)
        self.intrinsics = SensorIntrinsics(color, depth, scale, bool(registered), np.eye(4))
        self.fps = int(dmode.fps) or 30
        self.pair_tolerance_ns = int(500e6 / self.fps)
        try:  # the largest depth value the device reports as valid (e.g. 10000 mm for a PS1080)
            self.max_depth_code = int(self._depth.get_max_pixel_value()) or None
        except Exception:
            self.max_depth_code = None
        info = dev.get_device_info()
        kind = "openni-file" if self.is_file else "openni"
        model = (info.name or b"").decode(errors="replace") or (info.vendor or b"").decode(errors="replace") or "unknown"
        self.info = DeviceInfo(kind, model, self._serial(info))
        self._n_frames = None
        if self.is_file:
            n = (int(self._depth.get_number_of_frames()), int(self._color.get_number_of_frames()))
            # a recording cut short by a crash says 0xFFFFFFFF (read back as -1): unknown, end by timeout
            self._n_frames = n if all(0 < k < 0x7FFFFFFF for k in n) else None
        for s in self._streams:
            s.start()
        if not self.is_file:
            # Wait for the first frame: it proves the device streams, and stopping streams whose
            # producer thread has not delivered yet segfaults the Dummy device (seen 3 in 10).
            try:
                ready = openni2.wait_for_any_stream(self._streams, LIVE_TIMEOUT_S)
            except Exception as e:
                raise DeviceError(f"OpenNI device {name}: streams failed to start ({_oni_message(e)})") from None
            if ready is None:
                raise DeviceError(f"OpenNI device {name}: opened, but no frame within {LIVE_TIMEOUT_S:.0f} s")

    def _configure_live(self, width: int, height: int, fps: int) -> None:
        openni2 = self._openni2
        wanted = {id(self._depth): openni2.PIXEL_FORMAT_DEPTH_1_MM, id(self._color): openni2.PIXEL_FORMAT_RGB888}
        for s in self._streams:
            fmt = wanted[id(s)]
            modes = s.get_sensor_info().videoModes
            match = [m for m in modes if (m.resolutionX, m.resolutionY, m.fps, m.pixelFormat) == (width, height, fps, fmt)]
            cur = s.get_video_mode()
            if (cur.resolutionX, cur.resolutionY, cur.fps, cur.pixelFormat) != (width, height, fps, fmt):
                if match:
                    try:
                        s.set_video_mode(match[0])
                    except Exception as e:
                        raise DeviceError(f"OpenNI device {self.source or '(any)'}: cannot set {width}x{height}@{fps} ({_oni_message(e)})") from None
                # else: the device offers only its own mode (e.g. the Dummy device's 320x240); keep it
            try:
                s.set_mirroring_enabled(False)
            except Exception:
                pass  # NOT_IMPLEMENTED on devices without mirroring
        try:
            self._dev.set_depth_color_sync_enabled(True)
        except Exception:
            pass  # pairing by timestamp below works without it

    def _enable_registration(self) -> bool:
        openni2 = self._openni2
        mode = openni2.IMAGE_REGISTRATION_DEPTH_TO_COLOR
        try:
            if self._dev.is_image_registration_mode_supported(mode):
                self._dev.set_image_registration_mode(mode)
                return True
        except Exception:
            pass
        return False

    def _file_registration(self) -> bool:
        """A file does not say whether it was recorded registered; dfdcap records with hardware
        registration, so a file whose depth and colour sizes agree is taken as registered."""
        d, c = self._depth.get_video_mode(), self._color.get_video_mode()
        return (d.resolutionX, d.resolutionY) == (c.resolutionX, c.resolutionY)

    def _serial(self, info) -> str:
        if self.is_file:
            return str(self.source)
        try:
            raw = self._dev.get_property(self._openni2.c_api.ONI_DEVICE_PROPERTY_SERIAL_NUMBER, ctypes.c_char * 256)
            serial = bytes(raw).split(b"\0")[0].decode(errors="replace")
            if serial:
                return serial
        except Exception:
            pass
        return (info.uri or b"").decode(errors="replace")

    # reading ------------------------------------------------------------------------------
    def _done(self, counts: list[int]) -> bool:
        return self._n_frames is not None and all(c >= n for c, n in zip(counts, self._n_frames))

    def frames(self) -> Iterator[SensorFrame]:
        """Depth+colour pairs in order. Ends at the end of a file; raises DeviceError when a
        live device is silent for `timeout_s` (cable pulled) or reports an error."""
        openni2 = self._openni2
        if self._closed:
            raise DeviceError(f"{self.source or 'OpenNI device'}: sensor is closed")
        queues = (deque(), deque())  # (t_device_us, index, t_host_ns, array)
        counts = [0, 0]
        tol_us = 0.5e6 / max(self.fps, 1)
        while True:
            if self.is_file and self._done(counts):
                return
            try:
                ready = openni2.wait_for_any_stream(self._streams, self.timeout_s)
            except Exception as e:
                raise DeviceError(f"{self.source or 'OpenNI device'}: stream error ({_oni_message(e)})") from None
            if ready is None:
                if self.is_file:
                    return  # a truncated file: every frame it had was delivered
                raise DeviceError(
                    f"OpenNI device {self.info.serial or self.source}: no frame for {self.timeout_s:.1f} s "
                    f"after {counts[0]} depth / {counts[1]} colour frames (cable pulled or device stopped)"
                )
            k = 0 if ready is self._depth else 1
            t_host_ns = time.monotonic_ns()
            try:
                frame = ready.read_frame()
            except Exception as e:
                raise DeviceError(f"{self.source or 'OpenNI device'}: read failed ({_oni_message(e)})") from None
            try:
                arr = _frame_array(frame, "depth" if k == 0 else "color")
                queues[k].append((int(frame.timestamp), int(frame.frameIndex), t_host_ns, arr))
            finally:
                frame.close()
            counts[k] += 1
            yield from self._pairs(queues, tol_us)

    def _pairs(self, queues, tol_us: float) -> Iterator[SensorFrame]:
        dq, cq = queues
        while dq and cq:
            (td, idx, t_host_ns, depth), (tc, _, _, rgb) = dq[0], cq[0]
            if abs(td - tc) <= tol_us:
                dq.popleft()
                cq.popleft()
                yield SensorFrame(idx, td * 1000, t_host_ns, rgb, depth, tc * 1000)
            elif td < tc:
                dq.popleft()
                self.dropped += 1
            else:
                cq.popleft()
                self.dropped += 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for s in self._streams:
            try:
                s.stop()
            except Exception:
                pass
        time.sleep(_STOP_TO_CLOSE_S)  # closing a stream right after stop() segfaults the Dummy device
        for s in self._streams:
            try:
                s.close()
            except Exception:
                pass
        self._streams = []
        if self._dev is not None:
            try:
                self._dev.close()
            except Exception:
                pass
            self._dev = None


def _oni_message(e: Exception) -> str:
    args = getattr(e, "args", ())
    if len(args) >= 2 and isinstance(args[1], bytes):
        return args[1].decode(errors="replace").strip() or str(args[0])
    return str(e) or type(e).__name__


def list_openni_uris() -> list[dict]:
    """Connected OpenNI devices: [{"uri", "name", "vendor"}] (never the Dummy device or .oni files)."""
    openni2 = initialize_openni()
    out = []
    pdevs = ctypes.POINTER(openni2.c_api.OniDeviceInfo)()
    count = ctypes.c_int()
    openni2.c_api.oniGetDeviceList(ctypes.byref(pdevs), ctypes.byref(count))
    try:
        for i in range(count.value):
            d = pdevs[i]
            uri = d.uri.decode(errors="replace")
            if uri == "Dummy" or d.name == b"oni File" or Path(uri).is_file():
                continue  # OpenNI lists devices this process opened: the virtual one and playback files
            out.append({"uri": uri, "name": d.name.decode(errors="replace"),
                        "vendor": d.vendor.decode(errors="replace")})
    finally:
        openni2.c_api.oniReleaseDeviceList(pdevs)
    return out
