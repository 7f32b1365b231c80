"""Write uncompressed OpenNI2 `.oni` recordings ("NI10" container, format version 1.0.1.0).

Why: tests and the playback benchmark need `.oni` files with known content, and OpenNI's
own recorder cannot make them without a camera (recordings of the Dummy device carry no
cropping record, so the file player drops every frame). The layout follows OpenNI2's file
player (Source/Drivers/OniFile: PlayerNode, DataRecords) and recorder (Source/Core):

    file header  "NI10", version 1.0.1.0, max timestamp (us), max node id      24 bytes
    per stream   NODE_ADDED (name, type, codec, frames, min/max ts, seek table pos),
                 property records (video mode, pixel format, cropping, ...), STATE_READY
    per stream   NODE_DATA_BEGIN
    frames       NEW_DATA (timestamp us, frame number 1..N, raw pixels as payload)
    per stream   NODE_REMOVED, SEEK_TABLE ((N + 1) entries, entry 0 empty)
    END

Every record starts with a 28-byte header: magic "NIR\\0", type, node id, fields size
(header included), payload size, undo position (u64). All little-endian, packed.
NODE_ADDED records are written with placeholders and patched at close, as OpenNI does.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dfdcap.errors import DeviceError
from dfdcap.fileio import atomic_path

# record types (DataRecords.h)
_INT_PROPERTY, _GENERAL_PROPERTY = 0x03, 0x06
_NODE_REMOVED, _NODE_DATA_BEGIN, _NODE_STATE_READY = 0x07, 0x08, 0x09
_NEW_DATA, _END, _NODE_ADDED, _SEEK_TABLE = 0x0A, 0x0B, 0x0D, 0x0E
_MAGIC = 0x0052494E  # "NIR\0"
_CODEC_NONE = int.from_bytes(b"NONE", "little")

# OpenNI 1 node types and OpenNI 2 pixel formats (OniCEnums.h)
NODE_DEPTH, NODE_IMAGE = 2, 3
PIXEL_FORMAT_DEPTH_1_MM = 100
PIXEL_FORMAT_DEPTH_100_UM = 101
PIXEL_FORMAT_RGB888 = 200
_XN_PIXEL_FORMAT = {PIXEL_FORMAT_DEPTH_1_MM: 4, PIXEL_FORMAT_DEPTH_100_UM: 4, PIXEL_FORMAT_RGB888: 1}
_BYTES_PER_PIXEL = {PIXEL_FORMAT_DEPTH_1_MM: 2, PIXEL_FORMAT_DEPTH_100_UM: 2, PIXEL_FORMAT_RGB888: 3}
_MAX_FRAME_BYTES = 1600 * 1200 * 3  # the player's record buffer (PlayerNode::DATA_MAX_SIZE)


@dataclass(frozen=True)
class OniStream:
    """One stream of the file. kind "depth" (uint16 (H, W)) or "color" (uint8 (H, W, 3) RGB);
    hfov_rad/vfov_rad become the player's HORIZONTAL/VERTICAL_FOV properties (0 = not written)."""

    kind: str
    width: int
    height: int
    fps: int = 30
    pixel_format: int | None = None
    hfov_rad: float = 0.0
    vfov_rad: float = 0.0
    max_depth: int = 10000

    @property
    def oni_pixel_format(self) -> int:
        if self.pixel_format is not None:
            return self.pixel_format
        return PIXEL_FORMAT_DEPTH_1_MM if self.kind == "depth" else PIXEL_FORMAT_RGB888

    @property
    def frame_bytes(self) -> int:
        return self.width * self.height * _BYTES_PER_PIXEL[self.oni_pixel_format]


def _string(s: str) -> bytes:
    b = s.encode("ascii") + b"\0"
    return struct.pack("<I", len(b)) + b


def _record(rtype: int, node_id: int, fields: bytes = b"", payload_size: int = 0, undo_pos: int = 0) -> bytes:
    """Header + fields (the payload, if any, follows separately)."""
    return struct.pack("<IIIIIQ", _MAGIC, rtype, node_id, 28 + len(fields), payload_size, undo_pos) + fields


def _general_prop(node_id: int, name: str, data: bytes, rtype: int = _GENERAL_PROPERTY) -> bytes:
    return _record(rtype, node_id, _string(name) + struct.pack("<I", len(data)) + data)


def _int_prop(node_id: int, name: str, value: int) -> bytes:
    return _general_prop(node_id, name, struct.pack("<Q", value), _INT_PROPERTY)


def _header(max_ts: int, max_node_id: int) -> bytes:
    return b"NI10" + struct.pack("<BBHIQI", 1, 0, 1, 0, max_ts, max_node_id)


def _node_added(node_id: int, stream: OniStream, n_frames: int, max_ts: int, seek_pos: int) -> bytes:
    node_type = NODE_DEPTH if stream.kind == "depth" else NODE_IMAGE
    name = "Depth" if stream.kind == "depth" else "Image"
    fields = _string(name) + struct.pack("<IIIQQQ", node_type, _CODEC_NONE, n_frames, 0, max_ts, seek_pos)
    return _record(_NODE_ADDED, node_id, fields)


class OniWriter:
    """Write frames into an `.oni` file; use as a context manager (the file appears on success only).

    `write_frame(stream_index, data, t_device_us)` appends one frame; frame numbers count
    1, 2, ... per stream, as OpenNI's player reports them (OniFrame.frameIndex).
    """

    def __init__(self, path: str | os.PathLike, streams: list[OniStream]):
        if not streams or len({s.kind for s in streams}) != len(streams):
            raise DeviceError(f"{path}: an .oni file needs one depth and/or one color stream, got {[s.kind for s in streams]}")
        for s in streams:
            if s.kind not in ("depth", "color") or s.oni_pixel_format not in _BYTES_PER_PIXEL:
                raise DeviceError(f"{path}: unsupported stream {s}")
            if s.frame_bytes > _MAX_FRAME_BYTES:
                raise DeviceError(f"{path}: {s.width}x{s.height} frames exceed OpenNI's player buffer (1600x1200x3 bytes)")
        self.path = Path(path)
        self.streams = list(streams)
        self._atomic = atomic_path(self.path)
        self._tmp = self._atomic.__enter__()
        self._f = open(self._tmp, "wb")
        self._node_pos: list[int] = []
        self._index: list[list[tuple[int, int]]] = [[] for _ in streams]  # (timestamp us, file position)
        self._last_data_pos = [0] * len(streams)
        self._max_ts = 0
        self._closed = False
        # provisional header as OpenNI's recorder writes it (max timestamp unknown): a file cut
        # short by a crash still opens and plays the frames it holds; patched at close
        self._f.write(_header(2**64 - 1, len(self.streams)))
        for i, s in enumerate(self.streams):
            self._write_node(i + 1, s)
        for i in range(len(self.streams)):
            self._f.write(_record(_NODE_DATA_BEGIN, i + 1, struct.pack("<IQ", 0xFFFFFFFF, 2**64 - 1)))

    def _write_node(self, node_id: int, s: OniStream) -> None:
        f = self._f
        self._node_pos.append(f.tell())
        f.write(_node_added(node_id, s, 0xFFFFFFFF, 2**64 - 1, 0))
        fmt = s.oni_pixel_format
        f.write(_int_prop(node_id, "oniRequiredFrameSize", s.frame_bytes))
        f.write(_int_prop(node_id, "xnIsGenerating", 1))
        if s.kind == "depth":
            f.write(_int_prop(node_id, "xnDeviceMaxDepth", s.max_depth))
        mode = struct.pack("<III", s.width, s.height, s.fps)
        f.write(_int_prop(node_id, "xnSupportedMapOutputModesCount", 1))
        f.write(_general_prop(node_id, "xnSupportedMapOutputModes", mode))
        f.write(_general_prop(node_id, "xnMapOutputMode", mode))
        f.write(_int_prop(node_id, "xnPixelFormat", _XN_PIXEL_FORMAT[fmt]))
        f.write(_int_prop(node_id, "oniPixelFormat", fmt))
        if s.hfov_rad > 0 and s.vfov_rad > 0:
            f.write(_general_prop(node_id, "xnFOV", struct.pack("<dd", s.hfov_rad, s.vfov_rad)))
        # Without the cropping property the player drops every frame (DEVICE-FACTS.md).
        f.write(_int_prop(node_id, "Cropping", 1))
        f.write(_general_prop(node_id, "xnCropping", struct.pack("<iHHHH", 0, 0, 0, s.width, s.height)))
        f.write(_int_prop(node_id, "Mirror", 1))
        f.write(_int_prop(node_id, "xnMirror", 0))
        f.write(_record(_NODE_STATE_READY, node_id))

    def write_frame(self, stream_index: int, data: np.ndarray, t_device_us: int) -> int:
        """Append one frame; returns its frame number (1-based). t_device_us: device clock, microseconds."""
        s = self.streams[stream_index]
        shape = (s.height, s.width) if s.kind == "depth" else (s.height, s.width, 3)
        dtype = np.uint16 if s.kind == "depth" else np.uint8
        if data.shape != shape or data.dtype != dtype:
            raise DeviceError(f"{self.path}: {s.kind} frame must be {shape} {np.dtype(dtype)}, got {data.shape} {data.dtype}")
        t = int(t_device_us)
        if t < 0 or (self._index[stream_index] and t < self._index[stream_index][-1][0]):
            raise DeviceError(f"{self.path}: {s.kind} timestamps must be >= 0 and increasing, got {t} us")
        payload = np.ascontiguousarray(data).astype("<u2" if s.kind == "depth" else np.uint8, copy=False).tobytes()
        number = len(self._index[stream_index]) + 1
        pos = self._f.tell()
        self._f.write(_record(_NEW_DATA, stream_index + 1, struct.pack("<QI", t, number), len(payload),
                              self._last_data_pos[stream_index]))
        self._f.write(payload)
        self._last_data_pos[stream_index] = pos
        self._index[stream_index].append((t, pos))
        self._max_ts = max(self._max_ts, t)
        return number

    @property
    def partial_path(self) -> Path:
        """The file being written (published under `path` at close): after flush() it holds
        what a crash at this moment would leave behind."""
        return self._tmp

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        """Write seek tables and the end record, patch the node records and header, publish the file."""
        if self._closed:
            return
        self._closed = True
        f = self._f
        try:
            seek_pos = []
            for i, s in enumerate(self.streams):
                f.write(_record(_NODE_REMOVED, i + 1, undo_pos=self._node_pos[i]))
                seek_pos.append(f.tell())
                table = b"\0" * 20 + b"".join(struct.pack("<QIQ", t, 0, p) for t, p in self._index[i])
                f.write(_record(_SEEK_TABLE, i + 1, payload_size=len(table)))
                f.write(table)
            f.write(_record(_END, 0))
            for i, s in enumerate(self.streams):
                f.seek(self._node_pos[i])
                n = len(self._index[i])
                f.write(_node_added(i + 1, s, n, self._index[i][-1][0] if n else 0, seek_pos[i] if n else 0))
            f.seek(0)
            f.write(_header(self._max_ts, len(self.streams)))
            f.close()
        except BaseException as e:
            f.close()
            self._atomic.__exit__(type(e), e, e.__traceback__)
            raise
        self._atomic.__exit__(None, None, None)

    def abort(self) -> None:
        """Drop the half-written file."""
        if self._closed:
            return
        self._closed = True
        self._f.close()
        err = RuntimeError("aborted")
        try:
            self._atomic.__exit__(RuntimeError, err, None)
        except RuntimeError:
            pass

    def __enter__(self) -> "OniWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_oni(path: str | os.PathLike, depth: np.ndarray | None, rgb: np.ndarray | None,
              t_device_us: np.ndarray, fps: int = 30, hfov_rad: float = 0.0, vfov_rad: float = 0.0,
              pixel_format_depth: int = PIXEL_FORMAT_DEPTH_1_MM) -> Path:
    """Write a whole recording at once: depth (N, H, W) uint16 and/or rgb (N, H, W, 3) uint8,
    t_device_us (N,) increasing; depth and colour frame i share timestamp i (interleaved)."""
    streams, arrays = [], []
    if depth is not None:
        n, h, w = depth.shape
        streams.append(OniStream("depth", w, h, fps, pixel_format_depth, hfov_rad, vfov_rad))
        arrays.append(depth)
    if rgb is not None:
        n, h, w, _ = rgb.shape
        streams.append(OniStream("color", w, h, fps, None, hfov_rad, vfov_rad))
        arrays.append(rgb)
    if not arrays:
        raise DeviceError(f"{path}: nothing to write")
    n = len(arrays[0])
    if any(len(a) != n for a in arrays) or len(t_device_us) != n:
        raise DeviceError(f"{path}: depth, rgb and timestamps must have the same length")
    with OniWriter(path, streams) as w:
        for i in range(n):
            for k, a in enumerate(arrays):
                w.write_frame(k, a[i], int(t_device_us[i]))
    return Path(path)
