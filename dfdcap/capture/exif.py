"""The few EXIF tags a focus stack needs, read from (and written into) a JPEG, in pure Python.

Read: DateTimeOriginal + SubSecTimeOriginal (+ OffsetTimeOriginal where the phone writes it),
FocalLength, FNumber, FocalLengthIn35mmFilm, ExposureTime, ISO, and the image size from the
JPEG's SOF marker. OpenCV does not read EXIF tags, and these are all a TIFF IFD walk away.
Write: a minimal APP1 segment with the same tags (the simulated Open Camera's photos).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from fractions import Fraction

from dfdcap.errors import SessionError

TAG_EXIF_IFD = 0x8769
TAG_EXPOSURE = 0x829A
TAG_FNUMBER = 0x829D
TAG_ISO = 0x8827
TAG_DATETIME_ORIGINAL = 0x9003
TAG_OFFSET_ORIGINAL = 0x9011
TAG_SUBSEC_ORIGINAL = 0x9291
TAG_FOCAL = 0x920A
TAG_FOCAL_35 = 0xA405
_TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 7: 1, 9: 4, 10: 8}


@dataclass(frozen=True)
class ExifInfo:
    """What one photo says about itself; None where the tag is absent."""

    image_size: tuple[int, int] | None = None  # (w, h) from the SOF marker
    datetime_original: str | None = None  # "YYYY:MM:DD HH:MM:SS", the phone's local time
    subsec_original: str | None = None  # digits: fractions of that second
    offset_original: str | None = None  # "+HH:MM"
    focal_length_m: float | None = None
    f_number: float | None = None
    focal_length_35mm: int | None = None
    exposure_ns: int | None = None
    iso: int | None = None
    ignored: tuple[str, ...] = ()  # tags above stored with another TIFF type than theirs (read as absent)

    def local_time(self) -> datetime | None:
        """DateTimeOriginal plus SubSecTimeOriginal as a naive local datetime (None if absent or malformed)."""
        if not self.datetime_original:
            return None
        try:
            t = datetime.strptime(self.datetime_original.strip(), "%Y:%m:%d %H:%M:%S")
        except ValueError:
            return None
        sub = (self.subsec_original or "").strip()
        if sub.isdigit():
            t += timedelta(microseconds=int(round(int(sub) / 10 ** len(sub) * 1e6)))
        return t


def local_to_epoch_ns(local: datetime, utc_offset_s: int) -> int:
    """A naive local time and its UTC offset -> ns since the epoch (the phone's CLOCK_REALTIME)."""
    aware = local.replace(tzinfo=timezone(timedelta(seconds=utc_offset_s)))
    whole = int(aware.replace(microsecond=0).timestamp())
    return whole * 1_000_000_000 + local.microsecond * 1000


MAX_UTC_OFFSET_H = 14  # the world's offsets run from -12:00 to +14:00


def parse_utc_offset(text: str) -> int | None:
    """'+0100', '+01:00', '-0530' -> seconds east of UTC; None if not such a form, or if the hours
    exceed MAX_UTC_OFFSET_H or the minutes 59."""
    t = text.strip().replace(":", "")
    if len(t) != 5 or t[0] not in "+-" or not t[1:].isdigit():
        return None
    hours, minutes = int(t[1:3]), int(t[3:5])
    if minutes > 59 or hours * 60 + minutes > MAX_UTC_OFFSET_H * 60:
        return None
    s = hours * 3600 + minutes * 60
    return s if t[0] == "+" else -s


def read_exif(data: bytes, where: str) -> ExifInfo:
    """The tags above from a JPEG's bytes; SessionError if it is not a JPEG. A tag stored with a TIFF
    type other than its own (a date as UNDEFINED bytes, a sub-second as LONG, an exposure as ASCII text)
    is treated as absent: the callers then say what is missing, and no tag crashes them."""
    if data[:2] != b"\xff\xd8":
        raise SessionError(f"{where}: not a JPEG (no SOI marker)")
    pos, tags, size = 2, {}, None
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker in (0xD9, 0xDA):  # end of image / start of scan: no more headers
            break
        (length,) = struct.unpack(">H", data[pos + 2:pos + 4])
        seg = data[pos + 4:pos + 2 + length]
        if marker == 0xE1 and seg[:6] == b"Exif\x00\x00" and not tags:
            tags = _read_tiff(seg[6:], where)
        elif marker in (0xC0, 0xC1, 0xC2) and len(seg) >= 5:
            h, w = struct.unpack(">HH", seg[1:5])
            size = (w, h)
        pos += 2 + length
    text = {t: v for t, v in tags.items() if t in _TEXT_TAGS and isinstance(v, str)}
    num = {t: v for t, v in tags.items() if t in _NUMBER_TAGS and isinstance(v, (int, Fraction))}
    ignored = tuple(name for t, name in {**_TEXT_TAGS, **_NUMBER_TAGS}.items() if t in tags and t not in text and t not in num)
    exposure = num.get(TAG_EXPOSURE)
    return ExifInfo(
        image_size=size,
        datetime_original=text.get(TAG_DATETIME_ORIGINAL),
        subsec_original=text.get(TAG_SUBSEC_ORIGINAL),
        offset_original=text.get(TAG_OFFSET_ORIGINAL),
        focal_length_m=float(num[TAG_FOCAL]) * 1e-3 if TAG_FOCAL in num else None,
        f_number=float(num[TAG_FNUMBER]) if TAG_FNUMBER in num else None,
        focal_length_35mm=int(num[TAG_FOCAL_35]) if TAG_FOCAL_35 in num else None,
        exposure_ns=int(round(float(exposure) * 1e9)) if exposure is not None else None,
        iso=int(num[TAG_ISO]) if TAG_ISO in num else None,
        ignored=ignored,
    )


_TEXT_TAGS = {TAG_DATETIME_ORIGINAL: "DateTimeOriginal", TAG_SUBSEC_ORIGINAL: "SubSecTimeOriginal",
              TAG_OFFSET_ORIGINAL: "OffsetTimeOriginal"}
_NUMBER_TAGS = {TAG_FOCAL: "FocalLength", TAG_FNUMBER: "FNumber", TAG_FOCAL_35: "FocalLengthIn35mmFilm",
                TAG_EXPOSURE: "ExposureTime", TAG_ISO: "ISOSpeedRatings"}


def _read_tiff(tiff: bytes, where: str) -> dict:
    """Tags of IFD0 and the Exif IFD (first value of each), ASCII decoded, rationals as Fraction."""
    if tiff[:2] not in (b"II", b"MM") or len(tiff) < 8:
        raise SessionError(f"{where}: malformed EXIF (byte order {tiff[:2]!r})")
    e = "<" if tiff[:2] == b"II" else ">"
    out: dict = {}
    seen: set[int] = set()

    def ifd(off: int) -> None:
        if off in seen or off + 2 > len(tiff):
            return
        seen.add(off)
        (n,) = struct.unpack(e + "H", tiff[off:off + 2])
        for k in range(n):
            ent = tiff[off + 2 + 12 * k: off + 14 + 12 * k]
            if len(ent) < 12:
                return
            tag, typ, count = struct.unpack(e + "HHI", ent[:8])
            nbytes = _TYPE_SIZE.get(typ, 0) * count
            raw = ent[8:8 + nbytes] if nbytes <= 4 else tiff[struct.unpack(e + "I", ent[8:])[0]:][:nbytes]
            if len(raw) < nbytes or nbytes == 0:
                continue
            out[tag] = _value(raw, typ, e)
        if TAG_EXIF_IFD in out and isinstance(out[TAG_EXIF_IFD], int):
            ifd(out.pop(TAG_EXIF_IFD))

    ifd(struct.unpack(e + "I", tiff[4:8])[0])
    return out


def _value(raw: bytes, typ: int, e: str):
    if typ == 2:
        return raw.split(b"\x00", 1)[0].decode("ascii", "replace")
    if typ == 3:
        return struct.unpack(e + "H", raw[:2])[0]
    if typ in (4, 9):
        return struct.unpack(e + ("I" if typ == 4 else "i"), raw[:4])[0]
    if typ in (5, 10):
        num, den = struct.unpack(e + ("II" if typ == 5 else "ii"), raw[:8])
        return Fraction(num, den) if den else Fraction(0)
    return raw


def exif_app1(tags: dict[int, str | int | float]) -> bytes:
    """A JPEG APP1 segment (marker included) with IFD0 -> Exif IFD holding `tags`:
    str -> ASCII, int -> LONG (SHORT for ISO and the 35 mm focal length), float -> RATIONAL."""
    items = sorted(tags.items())
    n = len(items)
    ifd0_off, exif_off = 8, 8 + 2 + 12 + 4
    data_off = exif_off + 2 + 12 * n + 4
    entries, blob = b"", b""
    for tag, val in items:
        if isinstance(val, str):
            raw, typ, count = val.encode("ascii") + b"\x00", 2, len(val) + 1
        elif isinstance(val, float):
            f = Fraction(val).limit_denominator(1_000_000)
            raw, typ, count = struct.pack("<II", f.numerator, f.denominator), 5, 1
        elif tag in (TAG_ISO, TAG_FOCAL_35):
            raw, typ, count = struct.pack("<H", val), 3, 1
        else:
            raw, typ, count = struct.pack("<I", val), 4, 1
        if len(raw) <= 4:
            entries += struct.pack("<HHI", tag, typ, count) + raw.ljust(4, b"\x00")
        else:
            entries += struct.pack("<HHII", tag, typ, count, data_off + len(blob))
            blob += raw + (b"\x00" if len(raw) % 2 else b"")
    tiff = (b"II*\x00" + struct.pack("<I", ifd0_off)
            + struct.pack("<H", 1) + struct.pack("<HHII", TAG_EXIF_IFD, 4, 1, exif_off) + struct.pack("<I", 0)
            + struct.pack("<H", n) + entries + struct.pack("<I", 0) + blob)
    body = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(body) + 2) + body


def insert_app1(jpeg: bytes, app1: bytes) -> bytes:
    """The JPEG with app1 right after its SOI marker."""
    if jpeg[:2] != b"\xff\xd8":
        raise SessionError("insert_app1: not a JPEG")
    return jpeg[:2] + app1 + jpeg[2:]
