"""Intel RealSense cameras (D4xx, e.g. the close-range D405) and their `.bag`/`.db3` recordings.

One code path: a `rs.pipeline` streaming depth (z16) and colour (rgb8), either from a
device (by serial) or from a file (`enable_device_from_file`, not real time, no repeat),
depth aligned to colour with `rs.align`. Frame data is copied (librealsense reuses buffers).

Traps handled (DEVICE-FACTS.md): with no camera, `pipeline.start()` blocks ~15 s, so the
device list is checked first; playback uses `try_wait_for_frames` (the plain call raises at
the end of a file); the stream setup is read and real time switched off on the resolved
device *before* start (the pipeline may still drop the first 1-3 framesets of a file, never
later ones); `stop()` right after the last callback can abort the process, so
close() waits briefly first.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import numpy as np

from dfdcap.cameras import CameraModel
from dfdcap.capture.base import Sensor, SensorFrame
from dfdcap.capture.session import DeviceInfo, SensorIntrinsics
from dfdcap.errors import DeviceError

LIVE_TIMEOUT_S = 2.0  # a live camera silent this long counts as disconnected
# playback ends when librealsense says "stopped"; this is only a guard against a player that
# hangs, long enough that a busy host (the first frameset can take seconds) never trips it
FILE_TIMEOUT_S = 60.0
_POLL_MS = 100
FILE_RETRIES = 2  # replays of a file whose playback delivered no frameset at all
_STOP_WAIT_S = 0.05
FILE_SUFFIXES = (".bag", ".db3")


def _rs():
    try:
        import pyrealsense2 as rs
    except ImportError as e:
        raise DeviceError(
            f"pyrealsense2 cannot be imported ({e}): pip install pyrealsense2, and apt install libusb-1.0-0"
        ) from None
    return rs


def _rs_message(e: Exception) -> str:
    """librealsense's message on one line."""
    return " ".join(str(e).split()) or type(e).__name__


def camera_from_rs(intr) -> CameraModel:
    """rs.intrinsics -> CameraModel; Brown-Conrady coefficients are OpenCV's (k1, k2, p1, p2, k3)."""
    K = np.array([[intr.fx, 0.0, intr.ppx], [0.0, intr.fy, intr.ppy], [0.0, 0.0, 1.0]])
    return CameraModel(K, np.asarray(list(intr.coeffs)[:5], dtype=np.float64), (intr.width, intr.height))


def transform_from_rs(extr) -> np.ndarray:
    """rs.extrinsics (rotation stored column-major, translation in metres) -> 4x4 T_to_from_from."""
    T = np.eye(4)
    T[:3, :3] = np.asarray(extr.rotation, dtype=np.float64).reshape(3, 3).T
    T[:3, 3] = np.asarray(extr.translation, dtype=np.float64)
    return T


def list_realsense() -> list[dict]:
    """Connected RealSense cameras: [{"serial", "name", "product_line", "firmware"}]."""
    rs = _rs()
    out = []
    try:
        for dev in rs.context().query_devices():
            info = {}
            for key, ci in (("serial", rs.camera_info.serial_number), ("name", rs.camera_info.name),
                            ("product_line", rs.camera_info.product_line), ("firmware", rs.camera_info.firmware_version)):
                info[key] = dev.get_info(ci) if dev.supports(ci) else ""
            out.append(info)
    except Exception as e:
        raise DeviceError(f"librealsense cannot list cameras ({_rs_message(e)})") from None
    return out


class _NoColour(Exception):
    """The file or camera offers no usable colour stream (none, or no depth->colour extrinsics)."""


def depth_preview(depth: np.ndarray) -> np.ndarray:
    """(H, W) uint16 -> (H, W, 3) uint8 grey picture of the depth (near = bright, 0 = black): the
    "colour" image of a depth-only session, so TUM tools and reports still find an image."""
    valid = depth > 0
    if not valid.any():
        return np.zeros(depth.shape + (3,), np.uint8)
    lo, hi = float(depth[valid].min()), float(depth[valid].max())
    g = np.where(valid, 255.0 - 215.0 * (depth.astype(np.float32) - lo) / max(hi - lo, 1.0), 0.0).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


class RealSenseSensor(Sensor):
    """A RealSense camera or recording as a dfdcap Sensor.

    serial_or_path: None (first camera), a serial number, or a `.bag`/`.db3` path.
    align: depth resampled into the colour camera (rs.align); False keeps raw depth pixels.
    Frames: depth uint16 in depth units (`intrinsics.depth_scale_m`, 0.0001 m on a D405),
    RGB uint8, t_device_ns = depth frame timestamp (ms) * 1e6 in `timestamp_domain`
    (hardware_clock, global_time or system_time), t_color_device_ns the colour frame's,
    t_host_ns at arrival, index = depth frame number.

    What the file has decides (a warning in `notes` each time): without depth->colour
    extrinsics (a D435 bag with a colour profile but no colour frames) or without a colour
    stream the session is depth-only: the depth camera stands in as the colour camera and the
    colour images are depth previews. A depth/colour pair further apart than half a frame
    (librealsense's syncer pairs a stale colour frame) is kept with both stamps: depth is what
    ground truth needs. Library errors become one-line DeviceErrors.
    """

    def __init__(self, serial_or_path: str | None = None, width: int = 640, height: int = 480, fps: int = 30,
                 align: bool = True, timeout_s: float | None = None):
        rs = _rs()
        self._rs = rs
        self._pipe = None
        self._closed = False
        self.source = serial_or_path
        self.notes: list[str] = []
        self.is_file = serial_or_path is not None and (
            Path(serial_or_path).suffix.lower() in FILE_SUFFIXES or Path(serial_or_path).is_file()
        )
        self.timeout_s = timeout_s if timeout_s is not None else (FILE_TIMEOUT_S if self.is_file else LIVE_TIMEOUT_S)
        if self.is_file and not Path(serial_or_path).is_file():
            raise DeviceError(f"{serial_or_path}: RealSense recording not found")
        self._serial = None if self.is_file else self._pick_device(serial_or_path)
        what = f"{serial_or_path}: cannot play RealSense recording" if self.is_file else \
            f"RealSense {serial_or_path or '(first camera)'}: cannot start {width}x{height}@{fps} depth z16 + colour rgb8"
        mode = (width, height, fps)
        self._reopen_args = (mode, what, align)
        # Everything is read from the resolved profile and playback is set to not-real-time
        # *before* start, so a file is not played in real time while we set up. The pipeline
        # still drops the first 1-3 framesets of a file in a few runs out of 30 under load (a race
        # inside librealsense; its syncer-only path is worse): later frames are never dropped.
        cfg, resolved = self._resolve(mode, False, what)
        try:
            self._setup(resolved, align)
        except _NoColour as e:
            self.notes.append(f"{self.source or 'RealSense'}: {e}; recording depth only (the depth camera stands in "
                              f"as the colour camera, colour images are depth previews)")
            cfg, resolved = self._resolve(mode, True, what)
            self._setup(resolved, align, depth_only=True)
        try:
            self._pipe.start(cfg)
        except Exception as e:
            self._pipe = None
            raise DeviceError(f"{what} ({_rs_message(e)})") from None

    def _resolve(self, mode: tuple[int, int, int], depth_only: bool, what: str):
        """A fresh pipeline and config (file or camera; depth only or depth + colour), resolved."""
        rs = self._rs
        width, height, fps = mode
        try:
            cfg = rs.config()
            if self.is_file:
                cfg.enable_device_from_file(str(Path(self.source).resolve()), repeat_playback=False)
                if depth_only:
                    cfg.enable_stream(rs.stream.depth)
            else:
                cfg.enable_device(self._serial)
                cfg.enable_stream(rs.stream.depth, width, height, rs.format.z16, fps)
                if not depth_only:
                    cfg.enable_stream(rs.stream.color, width, height, rs.format.rgb8, fps)
            self._pipe = rs.pipeline()
            return cfg, cfg.resolve(rs.pipeline_wrapper(self._pipe))
        except Exception as e:
            self._pipe = None
            raise DeviceError(f"{what} ({_rs_message(e)})") from None

    def _pick_device(self, serial: str | None) -> str:
        """Check the device list first: pipeline.start() without a camera blocks ~15 s."""
        rs = self._rs
        try:
            devices = rs.context().query_devices()
            serials = [d.get_info(rs.camera_info.serial_number) for d in devices if d.supports(rs.camera_info.serial_number)]
        except Exception as e:
            raise DeviceError(f"librealsense cannot list cameras ({_rs_message(e)}): check the USB connection and udev rules") from None
        if not serials:
            raise DeviceError("no RealSense camera connected (librealsense sees none): check the USB 3 cable; `dfdcap devices` lists cameras")
        if serial is None:
            return serials[0]
        if serial not in serials:
            raise DeviceError(f"RealSense {serial}: not connected (connected: {', '.join(serials)})")
        return serial

    def _setup(self, profile, align: bool, depth_only: bool = False) -> None:
        """Read cameras, extrinsics, depth unit and names from the resolved profile.
        Raises _NoColour where the colour stream cannot be used."""
        try:
            self._read_profile(profile, align, depth_only)
        except (DeviceError, _NoColour):
            raise
        except Exception as e:
            raise DeviceError(f"{self.source or 'RealSense'}: cannot read the stream setup ({_rs_message(e)})") from None

    def _read_profile(self, profile, align: bool, depth_only: bool) -> None:
        rs = self._rs
        self._bgr = False
        dev = profile.get_device()
        self._playback = dev.as_playback() if self.is_file else None
        if self._playback is not None:
            self._playback.set_real_time(False)  # every frame, as fast as we read
        streams = {s.stream_type(): s for s in profile.get_streams()}
        if rs.stream.depth not in streams:
            raise DeviceError(f"{self.source or 'RealSense'}: has no depth stream (streams: "
                              f"{', '.join(str(k).split('.')[-1] for k in streams) or 'none'})")
        dstream = streams[rs.stream.depth].as_video_stream_profile()
        depth = camera_from_rs(dstream.get_intrinsics())
        self._depth_only = depth_only
        if depth_only:
            color, T, align = depth, np.eye(4), False
        else:
            if rs.stream.color not in streams:
                raise _NoColour("no colour stream")
            cstream = streams[rs.stream.color].as_video_stream_profile()
            if cstream.format() not in (rs.format.rgb8, rs.format.bgr8):
                raise _NoColour(f"colour stream is {str(cstream.format()).split('.')[-1]}, dfdcap reads rgb8/bgr8")
            try:
                T = transform_from_rs(dstream.get_extrinsics_to(cstream))
            except RuntimeError as e:  # "Requested extrinsics are not available!"
                raise _NoColour(f"no depth->colour extrinsics ({_rs_message(e)})") from None
            self._bgr = cstream.format() == rs.format.bgr8
            color = camera_from_rs(cstream.get_intrinsics())
        scale = float(dev.first_depth_sensor().get_depth_scale())
        scale = float(f"{scale:.6g}")  # stored as float32 (1e-4 reads 9.9999997e-05)
        self.intrinsics = SensorIntrinsics(color, depth, scale, bool(align) or depth_only, T)
        self._align = rs.align(rs.stream.color) if align else None
        self.fps = int(dstream.fps())
        self.pair_tolerance_ns = int(500e6 / max(self.fps, 1))  # depth and colour of one pair: < half a frame apart
        self.dropped = 0
        name = dev.get_info(rs.camera_info.name) if dev.supports(rs.camera_info.name) else "RealSense"
        serial = dev.get_info(rs.camera_info.serial_number) if dev.supports(rs.camera_info.serial_number) else ""
        self.info = DeviceInfo("realsense-file" if self.is_file else "realsense", name, serial or str(self.source or ""))
        self.timestamp_domain: str | None = None  # set from the first frame

    def _wait(self):
        """Next frameset, or None at the end of a file; DeviceError when a camera goes silent."""
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                ok, fs = self._pipe.try_wait_for_frames(_POLL_MS if self.is_file else int(self.timeout_s * 1000))
                if ok:
                    return fs
                stopped = self.is_file and self._playback.current_status() == self._rs.playback_status.stopped
            except Exception as e:
                raise DeviceError(f"RealSense {self.info.serial}: stream error ({_rs_message(e)})") from None
            if self.is_file:
                if stopped or time.monotonic() > deadline:
                    return None
                continue
            raise DeviceError(f"RealSense {self.info.serial}: no frames for {self.timeout_s:.1f} s (cable pulled or camera stopped)")

    def frames(self) -> Iterator[SensorFrame]:
        """Depth+colour pairs in order; ends at the end of a file, DeviceError when a camera goes silent."""
        if self._closed:
            raise DeviceError(f"{self.source or 'RealSense'}: sensor is closed")
        seen = retries = 0
        while True:
            fs = self._wait()
            if fs is None:
                if self.is_file and seen == 0 and retries < FILE_RETRIES:
                    retries += 1  # librealsense may skip the first framesets: a 1-frameset file then plays nothing
                    self._replay()
                    continue
                return
            seen += 1
            t_host_ns = time.monotonic_ns()
            try:
                frame = self._frame(fs, t_host_ns)
            except DeviceError:
                raise
            except Exception as e:
                raise DeviceError(f"RealSense {self.info.serial}: cannot read a frameset ({_rs_message(e)})") from None
            if frame is None:
                self.dropped += 1  # an incomplete frameset (start of a recording, a lost colour frame)
                continue
            yield frame

    def _replay(self) -> None:
        """Play the file again from its start (a fresh pipeline, as at open)."""
        mode, what, align = self._reopen_args
        self._stop_pipe()
        cfg, resolved = self._resolve(mode, self._depth_only, what)
        self._setup(resolved, align, depth_only=self._depth_only)
        try:
            self._pipe.start(cfg)
        except Exception as e:
            self._pipe = None
            raise DeviceError(f"{what} ({_rs_message(e)})") from None

    def _frame(self, fs, t_host_ns: int) -> SensorFrame | None:
        """One SensorFrame of a frameset; None when it lacks depth (or colour, unless depth-only)."""
        d = fs.get_depth_frame()
        c = None if self._depth_only else fs.get_color_frame()
        if not d or (not self._depth_only and not c):
            return None
        t_depth_ns = int(round(d.get_timestamp() * 1e6))
        t_color_ns = int(round(c.get_timestamp() * 1e6)) if c else None
        if self._align is not None:
            fs = self._align.process(fs)
            d, c = fs.get_depth_frame(), fs.get_color_frame()
        depth = np.asanyarray(d.get_data()).copy()
        if c:
            rgb = np.asanyarray(c.get_data()).copy()
            if self._bgr:
                rgb = np.ascontiguousarray(rgb[..., ::-1])
        else:
            rgb = depth_preview(depth)
        if self.timestamp_domain is None:
            self.timestamp_domain = str(d.get_frame_timestamp_domain()).split(".")[-1]
        return SensorFrame(int(d.get_frame_number()), t_depth_ns, t_host_ns, rgb, depth, t_color_ns)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop_pipe()

    def _stop_pipe(self) -> None:
        if self._pipe is not None:
            time.sleep(_STOP_WAIT_S)  # stopping right after the last callback can abort the process
            try:
                self._pipe.stop()
            except Exception:
                pass
            self._pipe = None


def write_db3(path: Path, depth: np.ndarray, rgb: np.ndarray, depth_intr: dict, color_intr: dict,
              rotation_colmajor: list[float], translation_m: list[float], depth_units_m: float,
              fps: int = 30, serial: str = "VIRT-405", name: str = "dfdcap virtual D405",
              color_frames: bool = True, extrinsics: bool = True) -> list[int]:
    """Record arrays as a RealSense recording: a virtual camera (rs.software_device, depth z16 +
    colour rgb8) recorded to `path` with rs.recorder (librealsense 2.59 writes only .db3).
    Why: tests and the playback benchmark need recordings with known content and no camera.

    depth (N, Hd, Wd) uint16, rgb (N, Hc, Wc, 3) uint8; *_intr: dict(fx, fy, ppx, ppy, coeffs, model);
    frame i gets frame number i and timestamp i * 1000 / fps ms (so the syncer pairs them).
    color_frames=False / extrinsics=False make a file like a D435 bag whose colour profile has no
    frames, or no depth->colour extrinsics. Returns the injected frame numbers."""
    rs = _rs()
    path = Path(path)
    if path.suffix.lower() != ".db3":
        raise DeviceError(f"{path}: librealsense {rs.__version__} records only .db3 files")
    if depth.ndim != 3 or depth.dtype != np.uint16 or rgb.ndim != 4 or rgb.dtype != np.uint8 or len(depth) != len(rgb):
        raise DeviceError(f"{path}: need depth (N, H, W) uint16 and rgb (N, H, W, 3) uint8, got "
                          f"{depth.shape} {depth.dtype} and {rgb.shape} {rgb.dtype}")

    def intrinsics(w, h, d):
        it = rs.intrinsics()
        it.width, it.height = w, h
        it.fx, it.fy, it.ppx, it.ppy = d["fx"], d["fy"], d["ppx"], d["ppy"]
        it.model = d.get("model", rs.distortion.none)
        it.coeffs = list(d.get("coeffs", [0.0] * 5))
        return it

    def video_stream(kind, uid, w, h, bpp, fmt, intr):
        vs = rs.video_stream()
        vs.type, vs.index, vs.uid = kind, 0, uid
        vs.width, vs.height, vs.fps, vs.bpp, vs.fmt = w, h, fps, bpp, fmt
        vs.intrinsics = intr
        return vs

    n, hd, wd = depth.shape
    _, hc, wc, _ = rgb.shape
    dev = rs.software_device()
    dsens, csens = dev.add_sensor("Depth"), dev.add_sensor("Color")
    dprof = dsens.add_video_stream(video_stream(rs.stream.depth, 0, wd, hd, 2, rs.format.z16, intrinsics(wd, hd, depth_intr)))
    cprof = csens.add_video_stream(video_stream(rs.stream.color, 1, wc, hc, 3, rs.format.rgb8, intrinsics(wc, hc, color_intr)))
    dsens.add_read_only_option(rs.option.depth_units, depth_units_m)
    ext = rs.extrinsics()
    ext.rotation, ext.translation = list(rotation_colmajor), list(translation_m)
    if extrinsics:
        dprof.register_extrinsics_to(cprof, ext)
    dev.register_info(rs.camera_info.name, name)
    dev.register_info(rs.camera_info.serial_number, serial)
    recorder = rs.recorder(str(path), dev)
    sync = rs.syncer()
    dsens.open(dprof)
    csens.open(cprof)
    dsens.start(sync)
    csens.start(sync)
    for i in range(n):
        pairs = ((dsens, dprof, depth[i], 2, wd), (csens, cprof, rgb[i], 3, wc))
        for sens, prof, arr, bpp, w in pairs if color_frames else pairs[:1]:
            f = rs.software_video_frame()
            f.pixels = np.ascontiguousarray(arr).tobytes()
            f.bpp, f.stride = bpp, w * bpp
            f.timestamp = i * 1000.0 / fps
            f.domain = rs.timestamp_domain.hardware_clock
            f.frame_number = i
            f.profile = prof.as_video_stream_profile()
            sens.on_video_frame(f)
        sync.try_wait_for_frames(1000)
    time.sleep(0.1)  # stopping right after the last callback can abort the process
    dsens.stop()
    csens.stop()
    dsens.close()
    csens.close()
    del recorder, dsens, csens, dprof, cprof, dev  # the file is complete when the recorder is destroyed
    import gc

    gc.collect()
    if not path.is_file():
        raise DeviceError(f"{path}: librealsense wrote no recording")
    return list(range(n))
