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
FILE_TIMEOUT_S = 2.0  # playback that delivers nothing this long (and is not stopped) is over
_POLL_MS = 100
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
    for dev in rs.context().query_devices():
        info = {}
        for key, ci in (("serial", rs.camera_info.serial_number), ("name", rs.camera_info.name),
                        ("product_line", rs.camera_info.product_line), ("firmware", rs.camera_info.firmware_version)):
            info[key] = dev.get_info(ci) if dev.supports(ci) else ""
        out.append(info)
    return out


class RealSenseSensor(Sensor):
    """A RealSense camera or recording as a dfdcap Sensor.

    serial_or_path: None (first camera), a serial number, or a `.bag`/`.db3` path.
    align: depth resampled into the colour camera (rs.align); False keeps raw depth pixels.
    Frames: depth uint16 in depth units (`intrinsics.depth_scale_m`, 0.0001 m on a D405),
    RGB uint8, t_device_ns = frame timestamp (ms) * 1e6 in `timestamp_domain`
    (hardware_clock, global_time or system_time), t_host_ns at arrival, index = depth frame number.
    """

    def __init__(self, serial_or_path: str | None = None, width: int = 640, height: int = 480, fps: int = 30,
                 align: bool = True, timeout_s: float | None = None):
        rs = _rs()
        self._rs = rs
        self._pipe = None
        self._closed = False
        self.source = serial_or_path
        self.is_file = serial_or_path is not None and (
            Path(serial_or_path).suffix.lower() in FILE_SUFFIXES or Path(serial_or_path).is_file()
        )
        self.timeout_s = timeout_s if timeout_s is not None else (FILE_TIMEOUT_S if self.is_file else LIVE_TIMEOUT_S)
        cfg = rs.config()
        if self.is_file:
            path = Path(serial_or_path)
            if not path.is_file():
                raise DeviceError(f"{path}: RealSense recording not found")
            cfg.enable_device_from_file(str(path.resolve()), repeat_playback=False)
        else:
            serial = self._pick_device(serial_or_path)
            cfg.enable_device(serial)
            cfg.enable_stream(rs.stream.depth, width, height, rs.format.z16, fps)
            cfg.enable_stream(rs.stream.color, width, height, rs.format.rgb8, fps)
        self._pipe = rs.pipeline()
        what = f"{serial_or_path}: cannot play RealSense recording" if self.is_file else \
            f"RealSense {serial_or_path or '(first camera)'}: cannot start {width}x{height}@{fps} depth z16 + colour rgb8"
        try:
            resolved = cfg.resolve(rs.pipeline_wrapper(self._pipe))
        except Exception as e:
            self._pipe = None
            raise DeviceError(f"{what} ({e})") from None
        # Everything is read from the resolved profile and playback is set to not-real-time
        # *before* start, so a file is not played in real time while we set up. The pipeline
        # still drops the first 1-3 framesets of a file in a few runs out of 30 under load (a race
        # inside librealsense; its syncer-only path is worse): later frames are never dropped.
        self._setup(resolved, align)
        try:
            self._pipe.start(cfg)
        except Exception as e:
            self._pipe = None
            raise DeviceError(f"{what} ({e})") from None

    def _pick_device(self, serial: str | None) -> str:
        """Check the device list first: pipeline.start() without a camera blocks ~15 s."""
        rs = self._rs
        devices = rs.context().query_devices()
        serials = [d.get_info(rs.camera_info.serial_number) for d in devices if d.supports(rs.camera_info.serial_number)]
        if not serials:
            raise DeviceError("no RealSense camera connected (librealsense sees none): check the USB 3 cable; `dfdcap devices` lists cameras")
        if serial is None:
            return serials[0]
        if serial not in serials:
            raise DeviceError(f"RealSense {serial}: not connected (connected: {', '.join(serials)})")
        return serial

    def _setup(self, profile, align: bool) -> None:
        rs = self._rs
        dev = profile.get_device()
        if self.is_file:
            self._playback = dev.as_playback()
            self._playback.set_real_time(False)  # every frame, as fast as we read
        else:
            self._playback = None
        try:
            dstream = profile.get_stream(rs.stream.depth).as_video_stream_profile()
            cstream = profile.get_stream(rs.stream.color).as_video_stream_profile()
        except Exception as e:
            raise DeviceError(f"{self.source or 'RealSense'}: needs a depth and a colour stream ({e})") from None
        if cstream.format() not in (rs.format.rgb8, rs.format.bgr8):
            raise DeviceError(f"{self.source or 'RealSense'}: colour stream is {cstream.format()}, dfdcap reads rgb8/bgr8")
        self._bgr = cstream.format() == rs.format.bgr8
        color = camera_from_rs(cstream.get_intrinsics())
        depth = camera_from_rs(dstream.get_intrinsics())
        T = transform_from_rs(dstream.get_extrinsics_to(cstream))
        scale = float(dev.first_depth_sensor().get_depth_scale())
        scale = float(f"{scale:.6g}")  # stored as float32 (1e-4 reads 9.9999997e-05)
        self.intrinsics = SensorIntrinsics(color, depth, scale, bool(align), T)
        self._align = rs.align(rs.stream.color) if align else None
        self.fps = int(dstream.fps())
        self._pair_tol_ms = 500.0 / max(self.fps, 1)  # depth and colour of one pair: < half a frame apart
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
            except Exception as e:
                raise DeviceError(f"RealSense {self.info.serial}: stream error ({e})") from None
            if ok:
                return fs
            if self.is_file:
                if self._playback.current_status() == self._rs.playback_status.stopped or time.monotonic() > deadline:
                    return None
                continue
            raise DeviceError(f"RealSense {self.info.serial}: no frames for {self.timeout_s:.1f} s (cable pulled or camera stopped)")

    def frames(self) -> Iterator[SensorFrame]:
        """Depth+colour pairs in order; ends at the end of a file, DeviceError when a camera goes silent."""
        if self._closed:
            raise DeviceError(f"{self.source or 'RealSense'}: sensor is closed")
        while True:
            fs = self._wait()
            if fs is None:
                return
            t_host_ns = time.monotonic_ns()
            d, c = fs.get_depth_frame(), fs.get_color_frame()
            if not d or not c:
                self.dropped += 1  # an incomplete frameset (start of a recording)
                continue
            if abs(d.get_timestamp() - c.get_timestamp()) > self._pair_tol_ms:
                self.dropped += 1  # the syncer paired a stale colour frame (seen in playback: depth 5 with colour 0)
                continue
            if self._align is not None:
                fs = self._align.process(fs)
                d, c = fs.get_depth_frame(), fs.get_color_frame()
            depth = np.asanyarray(d.get_data()).copy()
            rgb = np.asanyarray(c.get_data()).copy()
            if self._bgr:
                rgb = np.ascontiguousarray(rgb[..., ::-1])
            if self.timestamp_domain is None:
                self.timestamp_domain = str(d.get_frame_timestamp_domain()).split(".")[-1]
            yield SensorFrame(int(d.get_frame_number()), int(round(d.get_timestamp() * 1e6)), t_host_ns, rgb, depth)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._pipe is not None:
            time.sleep(_STOP_WAIT_S)  # stopping right after the last callback can abort the process
            try:
                self._pipe.stop()
            except Exception:
                pass
            self._pipe = None


def write_db3(path: Path, depth: np.ndarray, rgb: np.ndarray, depth_intr: dict, color_intr: dict,
              rotation_colmajor: list[float], translation_m: list[float], depth_units_m: float,
              fps: int = 30, serial: str = "VIRT-405") -> list[int]:
    """Record arrays as a RealSense recording: a virtual camera (rs.software_device, depth z16 +
    colour rgb8) recorded to `path` with rs.recorder (librealsense 2.59 writes only .db3).
    Why: tests and the playback benchmark need recordings with known content and no camera.

    depth (N, Hd, Wd) uint16, rgb (N, Hc, Wc, 3) uint8; *_intr: dict(fx, fy, ppx, ppy, coeffs, model);
    frame i gets frame number i and timestamp i * 1000 / fps ms (so the syncer pairs them).
    Returns the injected frame numbers."""
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
    dprof.register_extrinsics_to(cprof, ext)
    dev.register_info(rs.camera_info.name, "dfdcap virtual D405")
    dev.register_info(rs.camera_info.serial_number, serial)
    recorder = rs.recorder(str(path), dev)
    sync = rs.syncer()
    dsens.open(dprof)
    csens.open(cprof)
    dsens.start(sync)
    csens.start(sync)
    for i in range(n):
        for sens, prof, arr, bpp, w in ((dsens, dprof, depth[i], 2, wd), (csens, cprof, rgb[i], 3, wc)):
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
