"""Up-front checks of a session's files before build-dataset reads any pixels.

Cheap by design: a depth PNG is judged by its 26-byte header (signature + IHDR: bit depth and
colour type), an index entry by whether its file exists. A dataset built from 8-bit depth
(values 0-255 in 0.1 mm units: 0 % valid depth) or from an index that names missing files
would otherwise be written with exit 0 or fail half-way.
"""

from __future__ import annotations

import struct
from pathlib import Path

from dfdcap.errors import DatasetError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
GRAY = 0  # IHDR colour type of a single-channel image


def png_header(path: Path) -> tuple[int, int, int, int]:
    """(width, height, bit depth, colour type) from a PNG's IHDR chunk; DatasetError if not a PNG."""
    try:
        with open(path, "rb") as f:
            head = f.read(26)
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing (the index names it, the folder lacks it)") from None
    if len(head) < 26 or head[:8] != PNG_SIGNATURE or head[12:16] != b"IHDR":
        raise DatasetError(f"{path}: not a PNG file; sensor depth must be 16-bit PNG (TUM RGB-D format)")
    w, h, bits, ctype = struct.unpack(">IIBB", head[16:26])
    return w, h, bits, ctype


def check_depth_png(path: Path, size: tuple[int, int] | None = None) -> None:
    """A sensor depth file must be a single-channel 16-bit PNG (uint16 in depth_scale_m units)."""
    w, h, bits, ctype = png_header(path)
    if bits != 16 or ctype != GRAY:
        kind = {0: "grey", 2: "RGB", 3: "palette", 4: "grey+alpha", 6: "RGBA"}.get(ctype, f"colour type {ctype}")
        raise DatasetError(
            f"{path}: depth PNG is {bits}-bit {kind}, expected 16-bit single-channel (uint16 in the sensor's "
            "depth_scale_m units); re-export the depth without converting it to 8 bits"
        )
    if size is not None and (w, h) != tuple(size):
        raise DatasetError(f"{path}: depth is {w}x{h}, the sensor's intrinsics.json says {size[0]}x{size[1]}")


def check_files_exist(session_path: Path, folder: str, files: list[str], index: str) -> None:
    """Every file an index names must exist; names the session, the index and the first missing ones."""
    missing = [f for f in files if not (session_path / folder / f).is_file()]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise DatasetError(
            f"{session_path}: {folder}/{index} names {len(missing)} file(s) the folder lacks "
            f"({', '.join(missing[:3])}{more}); the index and the files disagree: re-copy the session"
        )
