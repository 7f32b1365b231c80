"""Crash-safe file writing: everything goes to a temporary name in the same folder, then rename."""

from __future__ import annotations

import contextlib
import hashlib
import json
import errno
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Hashable, Iterable, Iterator, Sequence, TypeVar

import numpy as np

from dfdcap.errors import DfdcapError


_UMASK: int | None = None


def file_mode() -> int:
    """The mode a plain open() would give a new file (0o644 under the usual umask 022).

    mkstemp creates 0600 files; renamed into place they would hide sessions and datasets from the
    rest of a lab, so atomic writes chmod their temporary file to this before the rename.
    """
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0o022)
        os.umask(_UMASK)
    return 0o666 & ~_UMASK


def temp_prefix(path: Path) -> str:
    """The hidden prefix of a temporary sibling of `path`: short enough that a name the file system
    takes (up to 255 bytes) still leaves room for the random part and the suffix."""
    return f".{path.name[:48]}."


def name_the_target(e: BaseException, tmp: Path, target: Path) -> None:
    """An OSError about a temporary path, or about no path at all (a full disk on write()), is made to
    name the user's path instead: the one-line error should say which output could not be written."""
    if not isinstance(e, OSError):
        return
    if e.filename is None:
        e.filename = str(target)
        return
    with contextlib.suppress(ValueError):
        rel = Path(e.filename).relative_to(tmp)
        e.filename = str(target if rel == Path(".") else target / rel)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    if is_special_file(path):  # /dev/null, /dev/stdout, a FIFO: written into; a rename would replace the node
        yield path  # checked before resolving links: /dev/stdout into a pipe resolves to 'pipe:[N]', no path
        return
    if path.is_symlink():  # write where the link points; a rename would replace the link itself
        path = Path(os.path.realpath(path))
    if path.is_dir():  # else the error would name the temporary file, not the user's path
        raise DfdcapError(f"{path}: is a folder, expected a file name")
    try:
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent)
    except OSError as e:
        e.filename = str(path)
        raise
    try:
        os.fchmod(fd, file_mode())
    finally:
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        name_the_target(e, tmp_path, path)
        raise


def is_special_file(path: str | os.PathLike) -> bool:
    """Whether `path` exists as something written into rather than replaced: a device or a FIFO."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode)


def nearest_existing(path: str | os.PathLike) -> Path:
    """`path` (absolute) or its nearest ancestor that exists: where missing folders would be made."""
    p = Path(path).absolute()
    while not p.exists():
        p = p.parent
    return p


def check_output_file(path: str | os.PathLike, *, force: bool = True, what: str = "output", create_parent: bool = False) -> Path:
    """Refuse, before any work starts, an output file that could not be written at the end.

    Checks: the parent folder exists and is a folder, `path` is not a folder, an existing file only
    with force=True (create_parent: the nearest existing folder instead), and the folder takes a new file (a probe file, created and removed: this finds a
    read-only mount and a full inode table even for root, whom permission bits do not stop).
    """
    path = Path(path)
    if is_special_file(path):  # /dev/null, a FIFO: written into as it is (atomic_path), its folder is not ours
        return path
    parent = path.absolute().parent
    if create_parent:  # the writer makes missing folders: check the nearest one that exists
        parent = nearest_existing(parent)
        if not parent.is_dir():
            raise DfdcapError(f"{path}: cannot create its folder ({parent} is a file)")
    if parent.exists() and not parent.is_dir():
        raise DfdcapError(f"{path}: {parent} is a file, not a folder")
    if not parent.is_dir():
        raise DfdcapError(f"{path}: {what} folder {parent} does not exist (create it first)")
    if path.is_dir():
        raise DfdcapError(f"{path}: {what} is a folder, expected a file name")
    if path.exists() and not force:
        raise DfdcapError(f"{path}: {what} exists (use --force to overwrite)")
    check_writable_folder(parent, f"{what} folder")
    return path


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether two paths name one file (the same inode when both exist, else the same absolute path)."""
    a, b = Path(a), Path(b)
    with contextlib.suppress(OSError):
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    return Path(os.path.abspath(a)) == Path(os.path.abspath(b))


def check_distinct(outputs: dict[str, str | os.PathLike | None], inputs: Sequence[str | os.PathLike] = (),
                   hint: str = "choose another name") -> None:
    """Refuse, before any work starts, an output that names one of the inputs or another output:
    writing it would destroy the input (or the first output) and still report success.

    outputs: {what: path or None}, e.g. {"calibration file": "cal.json", "--report PNG": None}."""
    given = [(what, Path(p)) for what, p in outputs.items() if p is not None]
    for i, (what, p) in enumerate(given):
        for q in inputs:
            if same_file(p, q):
                raise DfdcapError(f"{p}: the {what} would overwrite the input {q}; {hint}")
        for what2, p2 in given[i + 1:]:
            if same_file(p, p2):
                raise DfdcapError(f"{p}: the {what} and the {what2} name the same file; choose two names")


T = TypeVar("T")


def content_key(*parts) -> bytes:
    """16-byte digest of the bytes-like parts: equal for copies, different for anything else in practice."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        h.update(part)
    return h.digest()


def repeats(keyed: Iterable[tuple[Hashable, T]]) -> Iterator[tuple[T, T]]:
    """(first, later) for each item whose key an earlier item had, in order: copies among inputs."""
    first: dict[Hashable, T] = {}
    for key, item in keyed:
        if key in first:
            yield first[key], item
        else:
            first[key] = item


def check_writable_folder(folder: str | os.PathLike, what: str = "folder") -> Path:
    """Probe that `folder` takes a new file (created and removed at once); one-line error if not."""
    folder = Path(folder)
    try:
        fd, probe = tempfile.mkstemp(prefix=".dfdcap-probe.", dir=folder)
    except OSError as e:
        raise DfdcapError(f"{folder}: {what} cannot be written ({e.strerror or e})") from None
    os.close(fd)
    os.unlink(probe)
    return folder


def check_output_folder(path: str | os.PathLike, *, force: bool = False, what: str = "output folder") -> Path:
    """Refuse, before any work starts, an output folder that is a file, that holds files already
    (unless force), or whose nearest existing parent takes no new entry."""
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise DfdcapError(f"{path}: {what} exists and is not a folder")
        if not force and any(path.iterdir()):
            raise DfdcapError(f"{path}: {what} exists and is not empty (use --force to replace it)")
    parent = nearest_existing(path.parent)
    if not parent.is_dir():
        raise DfdcapError(f"{path}: cannot create the {what} ({parent} is a file, not a folder)")
    check_writable_folder(parent, f"{what}'s parent folder")
    return path


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, *, force: bool = False, what: str = "output folder") -> Iterator[Path]:
    """Yield a new empty folder beside `path` to build in; when the block succeeds it is renamed to
    `path` (an existing `path`, allowed by check_output_folder, is replaced only then). A failed or
    interrupted block leaves nothing behind: not the temporary folder, not the parents it made."""
    path = Path(path).absolute()
    check_output_folder(path, force=force, what=what)
    made: list[Path] = []  # missing parents, deepest first: removed again if the block fails
    parent = path.parent
    while not parent.exists():
        made.append(parent)
        parent = parent.parent
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent))
        try:
            os.chmod(tmp, file_mode() | (file_mode() & 0o444) >> 2)  # 0755 under umask 022, as mkdir gives
            yield tmp
            _replace_folder(tmp, path)
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            name_the_target(e, tmp, path)
            raise
    except BaseException:
        for d in made:
            with contextlib.suppress(OSError):
                d.rmdir()
        raise


def _replace_folder(new: Path, path: Path) -> None:
    """Rename folder `new` to `path`; an existing non-empty `path` is moved aside first and removed after."""
    try:
        os.rename(new, path)  # path absent or an empty folder
        return
    except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    old = Path(tempfile.mkdtemp(prefix=temp_prefix(path), suffix=".old", dir=path.parent))
    os.rename(path, old / "replaced")
    try:
        os.rename(new, path)
    except BaseException:
        os.rename(old / "replaced", path)  # put the old folder back
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=json_default) + "\n")


def json_default(o):
    """json.dumps(default=...) for numpy arrays and scalars and paths."""
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: str | os.PathLike) -> dict:
    """A JSON file (UTF-8, with or without the byte-order mark Windows editors add); one-line errors."""
    path = Path(path)
    try:
        data = path.read_bytes()
        if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
            raise DfdcapError(f"{path}: UTF-16 text; save it as UTF-8")
        return json.loads(data.decode("utf-8-sig"))
    except FileNotFoundError:
        raise DfdcapError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise DfdcapError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except UnicodeDecodeError:
        raise DfdcapError(f"{path}: binary data, expected a JSON text file") from None


def encode_image(image: np.ndarray, ext: str = ".png", params: Sequence[int] = ()) -> bytes:
    """Encode an RGB uint8 (H, W, 3), a gray (H, W) or a uint16 (H, W) image with OpenCV.

    params: OpenCV imwrite flags, e.g. (cv2.IMWRITE_PNG_COMPRESSION, 0); empty = OpenCV's defaults.
    """
    import cv2

    if image.ndim == 3 and image.shape[2] == 3:
        img = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)  # 30x faster than [..., ::-1] + copy
    else:
        img = np.ascontiguousarray(image[..., ::-1] if image.ndim == 3 else image)
    ok, buf = cv2.imencode(ext, img, list(params))
    if not ok:
        raise DfdcapError(f"could not encode a {image.shape} {image.dtype} image as {ext}")
    return buf.tobytes()


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an image atomically; RGB in memory, BGR on disk (OpenCV)."""
    atomic_write_bytes(path, encode_image(image, Path(path).suffix or ".png"))


def _ends_with_marker(path: str | os.PathLike, magic: bytes, end: bytes) -> bool:
    """False only for a file that starts with `magic` and lacks `end` in its last 64 bytes (cut short);
    a file of another kind is not judged here: the decoder says what it is."""
    with open(path, "rb") as f:
        if f.read(len(magic)) != magic:
            return True
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 64))
        return end in f.read()


def jpeg_complete(path: str | os.PathLike) -> bool:
    """OpenCV decodes a cut-short JPEG with a grey bottom and no error: check its end marker (FFD9)."""
    return _ends_with_marker(path, b"\xff\xd8", b"\xff\xd9")


def png_complete(path: str | os.PathLike) -> bool:
    """A cut-short PNG makes libpng print "libpng error: Read Error" on stderr beside dfdcap's own line:
    check for the IEND chunk first."""
    return _ends_with_marker(path, b"\x89PNG\r\n\x1a\n", b"IEND")


MAX_IMAGE_PIXELS = 1 << 30  # OpenCV's own limit (CV_IO_MAX_IMAGE_PIXELS): 3 GB a colour frame


def imread(path: str | os.PathLike, flag: int) -> np.ndarray | None:
    """cv2.imread, with an image larger than OpenCV decodes (a header claiming 50000x30000 px, a
    decompression bomb of a few MB) refused in one line: OpenCV raises an assertion for it. OpenCV's
    own warnings (a float TIFF: "can not handle images with 32-bit samples") are kept quiet: the
    caller says what is wrong in one line."""
    import cv2

    log = cv2.utils.logging
    level = log.getLogLevel()
    log.setLogLevel(log.LOG_LEVEL_ERROR)
    try:
        return cv2.imread(str(path), flag)
    except cv2.error as e:
        if "CV_IO_MAX_IMAGE_PIXELS" in str(e):
            raise DfdcapError(f"{path}: image larger than {MAX_IMAGE_PIXELS:,} pixels (what OpenCV decodes); "
                              "shrink it first") from None
        raise DfdcapError(f"{path}: cannot read image ({(e.err or str(e)).strip()[:100]})") from None
    finally:
        log.setLogLevel(level)


def read_image(path: str | os.PathLike, unchanged: bool = False, keep_depth: bool = False) -> np.ndarray:
    """Read an image as RGB uint8 (or as stored, e.g. uint16 depth, with unchanged=True; keep_depth: RGB
    as uint16 where the file holds 16 bits, uint8 otherwise)."""
    import cv2

    # checked before decoding: OpenCV and libjpeg print their own warnings on these, a second line
    if not Path(path).is_file():
        raise DfdcapError(f"{path}: {'a folder, expected an image file' if Path(path).is_dir() else 'no such image file'}")
    if Path(path).suffix.lower() in (".jpg", ".jpeg") and not jpeg_complete(path):
        raise DfdcapError(f"{path}: JPEG is cut short (no end-of-image marker): an interrupted copy or pull?")
    if Path(path).suffix.lower() == ".png" and not png_complete(path):
        raise DfdcapError(f"{path}: PNG is cut short (no IEND chunk): an interrupted copy or write?")
    # the stored pixel grid, as the camera's sensor saw it: calibration, depth and every slice of a stack
    # are in that frame, so an EXIF Orientation tag (which IMREAD_COLOR would apply) must not turn one image
    # (IMREAD_UNCHANGED ignores the tag already)
    flag = cv2.IMREAD_UNCHANGED if unchanged else cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION
    if keep_depth and not unchanged:
        flag |= cv2.IMREAD_ANYDEPTH
    img = imread(path, flag)
    if img is None:
        stored = imread(path, cv2.IMREAD_UNCHANGED)  # decodes what IMREAD_COLOR refuses: 32-bit samples
        if stored is not None and stored.dtype not in (np.uint8, np.uint16):
            raise DfdcapError(f"{path}: {stored.dtype} pixels; expected 8- or 16-bit images (convert it to 8 or 16 bits)")
        raise DfdcapError(f"{path}: cannot read image (not an image, or damaged)")
    if keep_depth and not unchanged and img.dtype not in (np.uint8, np.uint16):  # a float TIFF: no agreed scale
        raise DfdcapError(f"{path}: {img.dtype} pixels; expected 8- or 16-bit images")
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)  # 6x faster than a strided numpy copy
    return img


def physical_memory_bytes() -> int:
    """This machine's RAM (1 TiB where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 40


def check_decoded_size(paths: Sequence[str | os.PathLike], bytes_per_pixel: int) -> None:
    """Refuse, from the image headers alone, images that decoded together would fill more than half of this
    machine's memory (twenty 30000x30000 frames are 54 GB, a few MB each as files): the process would be
    killed mid-work instead. Files whose header cannot be read are left to the decoder to name."""
    from PIL import Image

    total = 0
    for p in paths:
        try:
            with Image.open(p) as im:
                total += im.size[0] * im.size[1] * bytes_per_pixel
        except Exception:  # noqa: BLE001 - not an image PIL knows: read_image says what is wrong with it
            continue
    ram = physical_memory_bytes()
    if total > ram // 2:
        raise DfdcapError(f"{paths[0]}: these {len(paths)} images need {total / 1e9:.1f} GB decoded, more than half of "
                          f"this machine's {ram / 1e9:.0f} GB; downscale them (or give fewer) first")


def _read_8bit(paths: Sequence[str | os.PathLike]) -> list[np.ndarray]:
    """RGB uint8 frames of one sweep; 16-bit files keep the top 8 of the bits the sweep uses.

    OpenCV's 8-bit read keeps the top 8 of 16 bits: 12-bit data in 16-bit files (0-4095, as raw
    converters and machine-vision cameras write them) came out with 16 grey levels. One shift for
    the whole sweep, from its brightest 16-bit pixel, so the slices keep their relative brightness.
    A 16-bit file is decoded twice (its peak, then its pixels): memory stays one 16-bit frame."""
    frames: list[np.ndarray | None] = []
    peaks: dict[int, int] = {}
    for i, p in enumerate(paths):
        f = read_image(p, keep_depth=True)
        if f.dtype == np.uint16:
            peaks[i], f = int(f.max()), None
        frames.append(f)
    if peaks:
        peak = max(peaks.values())
        for i in peaks:
            frames[i] = top_8_bits(read_image(paths[i], keep_depth=True), peak)
    return frames  # type: ignore[return-value]


def top_8_bits(img: np.ndarray, peak: int | None = None) -> np.ndarray:
    """A 16-bit image as uint8: the top 8 of the bits its data use (those of `peak`, default its own
    maximum), not of all 16. 12-bit data (0-4095) keep 256 levels, not 16; full-range data give
    OpenCV's own 16 -> 8-bit read. uint8 images pass as they are."""
    if img.dtype == np.uint8:
        return img
    peak = int(img.max()) if peak is None else peak
    return (img >> (max(8, peak.bit_length()) - 8)).astype(np.uint8)


def read_images_one_size(paths: Sequence[str | os.PathLike], keep_depth: bool = False) -> list[np.ndarray]:
    """Images that must share one size (a focal sweep): RGB uint8 each, 16-bit files by the sweep's bit
    depth (_read_8bit) (keep_depth: uint16 where a file holds 16 bits); the error names the odd file. Refused before decoding when they would not fit in memory."""
    check_decoded_size(paths, 6 if keep_depth else 3)
    frames = [read_image(p, keep_depth=True) for p in paths] if keep_depth else _read_8bit(paths)
    for p, f in zip(paths[1:], frames[1:]):
        if f.shape[:2] != frames[0].shape[:2]:
            (h, w), (h0, w0) = f.shape[:2], frames[0].shape[:2]
            raise DfdcapError(f"{p}: {w}x{h} px, but {paths[0]} is {w0}x{h0}: a focal sweep's images must have one size")
    return frames
