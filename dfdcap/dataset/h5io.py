"""The dataset file (HDF5): writer, and a reader for our files and the original DDFF-12 files.

Layout (DESIGN.md "Dataset file"), one group of keys per split (train, val, test, ...):
  stack_<split>       (N, S, H, W, 3) uint8   RGB focus stacks, focus increasing (DDFF-12's key)
  depth_<split>       (N, H, W) float32       metres, phone camera z-depth at the stack's reference
                                              frame (attr `reference_frame`), 0 = invalid
  mask_<split>        (N, H, W) uint8         1 where the depth is trustworthy
  focus_<split>       (N, S) float32          focus distance of each frame, metres
  coc_<split>         (N, S, H, W) float32    circle of confusion diameter, output pixels (optional: written
                                              with build-dataset --coc; the reader derives the same maps
                                              from depth, focus and the lens attributes when it is absent)
  provenance_<split>  (N,) UTF-8 JSON string  session, phone/sensor frame indices, time gaps, fusion
  align_<split>       (N, S, 3, 3) float32    each slice's map of its pixels to the reference slice's pixels
                                              (the stored slices are already resampled with it; dataset/align.py)
  align_residual_<split> (N, S) float32       1 - ECC correlation after registration (nan: not registered)
  align_correction_<split> (N, S) float32     registration's move away from the focus model's warp, RMS px
Root attributes: format="dfdcap", schema, focal_length_m, f_number, pixel_pitch_m (of the output
images), reference_frame, image_size, calibration (JSON), camera (JSON, output phone model).

The file is written under a temporary name beside the target and renamed when complete.

DDFF-12 (Hazirbas et al., ACCV 2018) files hold stack_<split> (N, 10, 383, 552, 3) uint8 and
disp_<split> (N, 383, 552) float32 *disparity* of the light-field sub-apertures. Its relation
is depth_m = B * f / disp with B * f = DDFF12_BASELINE_X_FOCAL (baseline K2 / flens * 1e-3 m from
the toolbox's IntParamLF.mat, K2 = 1982.0250823695178, flens = 7317.020641763665, and the
sub-aperture focal length f = 521.4052 px). Its 10 focal planes are spaced evenly in disparity
between 0.5 m and 7 m. The reader converts to metres by default (`ddff_units="m"`); with
`ddff_units="disparity"` it hands the values through unchanged.

mDFF (the same group's phone data set, Hazirbas et al. 2018) uses DDFF-12's keys but stores
float32 stacks (0-255) and `disp_<split>` in *metres* (0.1-4 m, 0 = invalid). The reader tells
the two apart by the stack dtype (DDFF-12: uint8; mDFF: float) and reads mDFF depth as metres.
mDFF files hold no focus distances: reading focus_m of one raises a DatasetError unless the file
has `focus_<split>` (N, S) metres. A uint8 (DDFF-12-looking) file whose `disp_*` holds values
above DDFF12_MAX_DISPARITY (i.e. depth nearer than 14 cm) is refused rather than misread.

Foreign stacks: uint16 stacks are 16-bit images, scaled to uint8 by 255 / 65535 (one holding only
0-255 is refused: 8-bit values in uint16); float stacks must lie in 0-1 or 0-255; other dtypes are
refused. Depth must be float metres (integer depth, a valid depth above MAX_DEPTH_M or a focus
distance above MAX_FOCUS_M is another unit, refused with a hint; so is a stack whose median valid depth
lies UNIT_RATIO x beyond its farthest focus distance or below its nearest one: millimetres of a
close-range scene stay under MAX_DEPTH_M). Every key is opened and read
through one guard, so a dangling link or a damaged chunk is a DatasetError naming the file and key.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from dfdcap.errors import DatasetError
from dfdcap.fileio import json_default, atomic_path

FORMAT = "dfdcap"
SCHEMA = 1
DDFF12_BASELINE_X_FOCAL = 1982.0250823695178 / 7317.020641763665 * 1e-3 * 521.4052  # metres * pixels
DDFF12_FOCUS_RANGE_M = (0.5, 7.0)
MAX_DEPTH_M = 1000.0  # a valid depth beyond it is another unit (millimetres), not a scene
MAX_FOCUS_M = 1e4  # a focus distance beyond it is another unit, not a lens setting
UNIT_RATIO = 100.0  # a stack's median depth this far beyond its sweep (either way) is another unit
DDFF12_MAX_DISPARITY = 1.0  # DDFF-12's disparities lie in 0.02-0.28 px; 1.0 px would be 0.14 m


def ddff12_disparity_to_depth_m(disp: np.ndarray) -> np.ndarray:
    """DDFF-12 disparity (pixels) -> metres; disparity <= 0 gives 0 (invalid)."""
    disp = np.asarray(disp, dtype=np.float32)
    with np.errstate(divide="ignore"):
        return np.where(disp > 0, np.float32(DDFF12_BASELINE_X_FOCAL) / disp, np.float32(0)).astype(np.float32)


def ddff12_focus_m(n_frames: int = 10) -> np.ndarray:
    """(n_frames,) float32 focus distances of DDFF-12's stacks, increasing (metres)."""
    near, far = DDFF12_FOCUS_RANGE_M
    disp = np.linspace(DDFF12_BASELINE_X_FOCAL / near, DDFF12_BASELINE_X_FOCAL / far, n_frames)
    return (DDFF12_BASELINE_X_FOCAL / disp).astype(np.float32)


@dataclass
class Sample:
    """One dataset sample.

    stack: (S, H, W, 3) uint8 RGB; focus_m: (S,) metres, increasing; depth_m: (H, W) float32
    metres (0 = invalid); mask: (H, W) bool; coc_px: (S, H, W) float32 or None; provenance: dict.
    """

    stack: np.ndarray
    focus_m: np.ndarray
    depth_m: np.ndarray
    mask: np.ndarray
    coc_px: np.ndarray | None = None
    provenance: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # {key: array}: written as <key>_<split> (e.g. align, align_residual)


class DatasetWriter:
    """Appends samples to per-split datasets of an open h5py.File (use write_dataset())."""

    def __init__(self, h5):
        self._h5 = h5
        self.counts: dict[str, int] = {}

    # room kept free beyond a sample's own bytes: HDF5's metadata and closing writes. HDF5 crashes
    # (segfault) closing a file whose writes failed, so a full disk must be seen before it fills.
    ROOM_MARGIN_BYTES = 4 << 20

    def _check_room(self, sample: Sample) -> None:
        need = sample.stack.nbytes + sample.depth_m.size * 5 + (0 if sample.coc_px is None else sample.coc_px.size * 4)
        folder = Path(self._h5.filename).parent
        free = shutil.disk_usage(folder).free
        if free < need + self.ROOM_MARGIN_BYTES:
            raise DatasetError(
                f"{folder}: no space left on device for the dataset ({free / 1e6:.1f} MB free, a sample needs "
                f"{need / 1e6:.1f} MB + {self.ROOM_MARGIN_BYTES >> 20} MB); free some space or write elsewhere"
            )

    def append(self, split: str, sample: Sample) -> None:
        import h5py

        S, H, W, C = sample.stack.shape
        if C != 3 or sample.stack.dtype != np.uint8:
            raise DatasetError(f"sample stack must be (S, H, W, 3) uint8, got {sample.stack.shape} {sample.stack.dtype}")
        if sample.depth_m.shape != (H, W) or sample.mask.shape != (H, W) or np.shape(sample.focus_m) != (S,):
            raise DatasetError(
                f"sample shapes disagree: stack {sample.stack.shape}, depth {sample.depth_m.shape}, "
                f"mask {sample.mask.shape}, focus {np.shape(sample.focus_m)}"
            )
        h5 = self._h5
        self._check_room(sample)
        n = self.counts.get(split, 0)
        if n == 0:
            if f"stack_{split}" in h5:
                raise DatasetError(f"split {split!r} written twice")
            h5.create_dataset(f"stack_{split}", (0, S, H, W, 3), np.uint8, maxshape=(None, S, H, W, 3), chunks=(1, S, H, W, 3))
            h5.create_dataset(f"depth_{split}", (0, H, W), np.float32, maxshape=(None, H, W), chunks=(1, H, W))
            h5.create_dataset(f"mask_{split}", (0, H, W), np.uint8, maxshape=(None, H, W), chunks=(1, H, W))
            h5.create_dataset(f"focus_{split}", (0, S), np.float32, maxshape=(None, S), chunks=(64, S))
            if sample.coc_px is not None:
                h5.create_dataset(f"coc_{split}", (0, S, H, W), np.float32, maxshape=(None, S, H, W), chunks=(1, S, H, W))
            h5.create_dataset(f"provenance_{split}", (0,), h5py.string_dtype("utf-8"), maxshape=(None,), chunks=(64,))
        else:
            have = h5[f"stack_{split}"].shape[1:]
            if have != sample.stack.shape:
                raise DatasetError(f"split {split!r}: sample stack {sample.stack.shape} differs from earlier samples {have}")
        has_coc = f"coc_{split}" in h5
        if has_coc != (sample.coc_px is not None):
            raise DatasetError(f"split {split!r}: every sample must carry CoC maps or none does")
        values = {  # asarray: no copy of what already has the file's type
            "stack": sample.stack,
            "depth": np.asarray(sample.depth_m, np.float32),
            "mask": sample.mask.view(np.uint8) if sample.mask.dtype == np.bool_ else sample.mask.astype(np.uint8),
            "focus": np.asarray(sample.focus_m, np.float32),
            "provenance": json.dumps(sample.provenance, default=json_default),
        }
        if has_coc:
            values["coc"] = np.asarray(sample.coc_px, np.float32)
        for key, value in sample.extra.items():
            value = np.asarray(value)
            if n == 0:
                h5.create_dataset(f"{key}_{split}", (0, *value.shape), value.dtype, maxshape=(None, *value.shape), chunks=(64, *value.shape))
            values[key] = value
        for key, value in values.items():
            ds = h5[f"{key}_{split}"]
            ds.resize(n + 1, axis=0)
            ds[n] = value
        self.counts[split] = n + 1


@contextlib.contextmanager
def write_dataset(path: str | os.PathLike, attrs: dict, force: bool = False) -> Iterator[DatasetWriter]:
    """Open a dataset file for writing; it appears at `path` only if the block succeeds.

    attrs: root attributes (lens: focal_length_m, f_number, pixel_pitch_m; dicts become JSON).
    An existing `path` is an error unless force=True.
    """
    import h5py

    path = Path(path)
    if path.exists() and not force:
        raise DatasetError(f"{path}: exists; pass --force to overwrite it")
    if not path.parent.is_dir():
        raise DatasetError(f"{path.parent}: output folder does not exist")
    hook = sys.unraisablehook
    sys.unraisablehook = _quiet_h5_write_failures(hook)
    try:
        with atomic_path(path) as tmp:
            h5 = h5py.File(tmp, "w")
            try:
                h5.attrs["format"] = FORMAT
                h5.attrs["schema"] = SCHEMA
                for k, v in attrs.items():
                    h5.attrs[k] = json.dumps(v, default=json_default) if isinstance(v, (dict, list)) else v
                writer = DatasetWriter(h5)
                yield writer
                if not writer.counts:
                    raise DatasetError(f"{path}: no samples to write (no complete focus stack with paired depth)")
                h5.attrs["splits"] = json.dumps(writer.counts)
            except BaseException:
                # the file is discarded: empty it first, so that HDF5's writes while closing find room on a
                # full disk (closing after failed writes has crashed the HDF5 library)
                with contextlib.suppress(OSError):
                    os.truncate(tmp, 0)
                with contextlib.suppress(Exception):
                    h5.close()
                raise
            h5.close()
    except (OSError, RuntimeError) as e:
        if "file write failed" not in str(e):
            raise
        raise DatasetError(f"{path}: writing the dataset failed ({_h5_write_reason(e)}); free some space or write elsewhere") from None
    finally:
        sys.unraisablehook = hook


def _first_line(e: BaseException) -> str:
    """The first line of an h5py/HDF5 message (they run over several lines), without KeyError's quotes."""
    text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
    return (text.strip().splitlines() or [type(e).__name__])[0][:200]


def _h5_write_reason(e: BaseException) -> str:
    """HDF5's multi-line write error -> its 'error message' part ('No space left on device')."""
    m = re.search(r"error message = '([^']*)'", str(e))
    return m.group(1) if m else " ".join(str(e).split())[:160]


def _quiet_h5_write_failures(hook):
    """An unraisable hook that drops h5py's per-object "file write failed" noise while a failed file
    closes (the one error that matters is raised as DatasetError)."""
    def quiet(u):
        if isinstance(u.exc_value, RuntimeError) and "file write failed" in str(u.exc_value):
            return
        hook(u)
    return quiet


class DatasetFile:
    """Read access to a dfdcap, DDFF-12 or mDFF file (kind = 'dfdcap' | 'ddff12' | 'mdff').

    Arrays come back per sample: stack (S, H, W, 3) uint8, focus_m (S,) float32 metres,
    depth_m (H, W) float32 metres (0 = invalid; None for a split without ground truth),
    mask (H, W) bool, coc_px (S, H, W) float32 or None, provenance dict.
    """

    def __init__(self, path: str | os.PathLike, ddff_units: str = "m"):
        import h5py

        self.path = Path(path)
        if ddff_units not in ("m", "disparity"):
            raise DatasetError(f"ddff_units must be 'm' or 'disparity', got {ddff_units!r}")
        self.ddff_units = ddff_units
        if self.path.is_dir():
            raise DatasetError(f"{self.path}: a folder, expected a dataset .h5 file")
        try:
            self._h5 = h5py.File(self.path, "r")
        except FileNotFoundError:
            raise DatasetError(f"{self.path}: no such dataset file") from None
        except OSError as e:  # HDF5's messages can run over several lines: the first says what failed
            raise DatasetError(f"{self.path}: cannot read it as HDF5 ({str(e).splitlines()[0]}): not an HDF5 file, or one cut short") from None
        keys = list(self._h5.keys())
        self.splits = sorted(k[len("stack_"):] for k in keys if k.startswith("stack_"))
        if not self.splits:
            self._h5.close()
            raise DatasetError(f"{self.path}: no stack_<split> datasets; not a dfdcap or DDFF-12 file (keys: {keys[:8]})")
        self._checked: set[str] = set()
        self.kind = self._detect_kind()
        order = {"train": 0, "val": 1, "test": 2}
        self.splits.sort(key=lambda s: (order.get(s, 9), s))

    def _detect_kind(self) -> str:
        """dfdcap (our attrs), mdff (DDFF-12 keys, float stacks, metres) or ddff12 (uint8 stacks, disparity)."""
        import h5py

        try:
            fmt = self._h5.attrs.get("format")
        except (OSError, RuntimeError, KeyError, TypeError, ValueError) as e:
            self._h5.close()
            raise DatasetError(f"{self.path}: attribute 'format' cannot be read ({_first_line(e)})") from None
        fmt = fmt.decode(errors="replace") if isinstance(fmt, bytes) else fmt
        if fmt is not None and not isinstance(fmt, str):  # an array's truth value is ambiguous: refuse it
            self._h5.close()
            raise DatasetError(f"{self.path}: attribute 'format' is {np.asarray(fmt).dtype} {np.shape(fmt)}, "
                               f"expected the string {FORMAT!r}")
        if fmt == FORMAT:
            return "dfdcap"
        try:
            first = self._node(f"stack_{self.splits[0]}")
        except DatasetError:
            self._h5.close()
            raise
        if not isinstance(first, h5py.Dataset):
            self._h5.close()
            raise DatasetError(f"{self.path}: stack_{self.splits[0]} is a group, expected an array of stacks")
        if any(k.startswith("depth_") for k in self._h5.keys()):  # depth_* in metres is our layout, not DDFF-12's disp_*
            self._h5.close()
            raise DatasetError(f"{self.path}: holds depth_* arrays like a dfdcap dataset but lacks its format attribute "
                               f"({FORMAT!r}); it was not written by build-dataset, or the attribute was lost")
        return "mdff" if np.issubdtype(first.dtype, np.floating) else "ddff12"

    # context manager / lifetime --------------------------------------------------------
    def close(self) -> None:
        self._h5.close()

    def __enter__(self) -> "DatasetFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # metadata --------------------------------------------------------------------------
    @property
    def attrs(self) -> dict:
        out = {}
        for k, v in self._h5.attrs.items():
            if isinstance(v, bytes):
                v = v.decode()
            if isinstance(v, str) and v[:1] in "{[":
                try:
                    v = json.loads(v)
                except json.JSONDecodeError:
                    pass
            out[k] = v.item() if isinstance(v, np.generic) else v
        return out

    def _node(self, key: str):
        """self._h5[key]; a dangling external link, a soft-link loop or a damaged object header is a
        DatasetError naming the key (h5py raises KeyError, RuntimeError or OSError)."""
        try:
            return self._h5[key]
        except (KeyError, RuntimeError, OSError, ValueError) as e:
            raise DatasetError(f"{self.path}: {key} cannot be opened ({_first_line(e)}): a dangling link, "
                               "a link loop or a damaged file") from None

    def _read(self, key: str, index=()):
        """self._h5[key][index]; a chunk that cannot be read (a failing compression filter, a file cut
        short) is a DatasetError naming the key and sample, never h5py's bare OSError."""
        ds = self._node(key)
        try:
            return ds[index]
        except (OSError, RuntimeError, ValueError, TypeError) as e:
            where = key if index == () else f"{key}[{index}]"
            raise DatasetError(f"{self.path}: {where} is damaged ({_first_line(e)})") from None

    def _split(self, split: str) -> str:
        if split not in self.splits:
            raise DatasetError(f"{self.path}: no split {split!r} (has {', '.join(self.splits)})")
        if split not in self._checked:
            self._check_layout(split)
            self._checked.add(split)
        return split

    def _array(self, key: str, ndims: tuple[int, ...], what: str):
        """The h5py dataset `key`, refused with one line unless it is an array of numbers with one of ndims."""
        import h5py

        a = self._node(key)
        if not isinstance(a, h5py.Dataset):
            raise DatasetError(f"{self.path}: {key} is a group, expected an array ({what})")
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_) or a.ndim not in ndims:
            raise DatasetError(f"{self.path}: {key} is {a.dtype} of shape {a.shape}, expected {what}")
        return a

    def _check_layout(self, split: str) -> None:
        """Refuse a split whose arrays do not fit together, with one line naming the file and the array,
        before a reader indexes past an end or broadcasts two shapes (once per split; shapes, and the
        focus distances' values, which are small)."""
        import h5py

        st = self._array(f"stack_{split}", (5,), "stacks (N, frames, H, W, 3)")
        n, S, H, W, C = st.shape
        if C != 3:
            raise DatasetError(f"{self.path}: stack_{split} has {C} colour channels (shape {st.shape}), expected 3 (RGB)")
        if S < 2:
            raise DatasetError(f"{self.path}: stack_{split} holds stacks of {S} frame(s); depth from focus needs at least 2")
        if st.dtype not in (np.uint8, np.uint16) and not np.issubdtype(st.dtype, np.floating):
            raise DatasetError(f"{self.path}: stack_{split} is {st.dtype}; stacks must be uint8 (0-255), uint16 "
                               "(0-65535) or float (0-1 or 0-255)")
        if n == 0:  # every metric of no stack is nan, which would read as a result
            raise DatasetError(f"{self.path}: split {split!r} holds 0 stacks")
        fkey = f"focus_{split}"
        if fkey in self._h5:
            fa = self._array(fkey, (2,), f"focus distances (N, frames) = ({n}, {S}) in metres")
            if fa.shape != (n, S):
                raise DatasetError(f"{self.path}: {fkey} has shape {fa.shape}, but stack_{split} holds {n} stacks of {S} frames")
            f = self._read(fkey).astype(np.float64)
            bad = ~(np.isfinite(f) & (f > 0))
            if bad.any():
                i = int(np.argwhere(bad)[0][0])
                raise DatasetError(f"{self.path}: {fkey}[{i}] holds {f[i].tolist()}; focus distances must be positive metres")
            if f.size and f.max() > MAX_FOCUS_M:
                i = int(np.argwhere(f > MAX_FOCUS_M)[0][0])
                raise DatasetError(f"{self.path}: {fkey}[{i}] holds focus distances up to {f[i].max():.4g}, beyond "
                                   f"{MAX_FOCUS_M:g} m; focus distances must be metres (millimetres? divide by 1000)")
            flat = np.ptp(f, axis=1) <= 1e-9 * f.max(axis=1) if n else np.zeros(0, bool)
            if flat.any():
                i = int(np.argmax(flat))
                raise DatasetError(f"{self.path}: {fkey}[{i}]: every frame of stack {i} has focus {f[i, 0]:g} m; "
                                   "a focal sweep needs different focus distances")
        ekey = f"depth_{split}" if self.kind == "dfdcap" else f"disp_{split}"
        if ekey in self._h5:
            dims = (3,) if self.kind == "dfdcap" else (3, 4)
            d = self._array(ekey, dims, f"depth maps (N, H, W) = ({n}, {H}, {W})")
            if not np.issubdtype(d.dtype, np.floating) and (self.kind != "ddff12" or d.dtype == np.bool_):
                raise DatasetError(f"{self.path}: {ekey} is {d.dtype}; dfdcap stores depth as float metres (0 = invalid): "
                                   "millimetres (as TUM-style tools store it)? store depth / 1000 as float32")
            hw = d.shape[1:3] if d.ndim == 3 or d.shape[-1] == 1 else d.shape[2:4]
            if d.shape[0] != n or tuple(hw) != (H, W):
                raise DatasetError(f"{self.path}: {ekey} has shape {d.shape}, but stack_{split} holds {n} stacks of {W}x{H} px")
        for key, want, what in ((f"mask_{split}", (n, H, W), "masks"), (f"coc_{split}", (n, S, H, W), "CoC maps")):
            if key in self._h5:
                a = self._array(key, (len(want),), f"{what} {want}")
                if a.shape != want:
                    raise DatasetError(f"{self.path}: {key} has shape {a.shape}, expected {what} {want}")
        pkey = f"provenance_{split}"
        if pkey in self._h5:
            p = self._node(pkey)
            if not isinstance(p, h5py.Dataset) or p.dtype.kind not in "OSU" or p.shape != (n,):
                what = "a group" if not isinstance(p, h5py.Dataset) else f"{p.dtype} of shape {p.shape}"
                raise DatasetError(f"{self.path}: {pkey} is {what}, expected {n} JSON strings (one per stack)")
        if self.kind == "dfdcap" and f"depth_{split}" in self._h5 and f"mask_{split}" not in self._h5:
            raise DatasetError(f"{self.path}: depth_{split} without mask_{split} (which pixels hold valid depth)")

    def __len__(self) -> int:
        return sum(self.n(s) for s in self.splits)

    def n(self, split: str) -> int:
        return int(self._node(f"stack_{self._split(split)}").shape[0])

    def stack_shape(self, split: str) -> tuple[int, int, int, int]:
        """(S, H, W, 3) of the split's stacks."""
        return tuple(self._node(f"stack_{self._split(split)}").shape[1:])

    def has_depth(self, split: str) -> bool:
        return f"depth_{split}" in self._h5 or f"disp_{split}" in self._h5

    def has_coc(self, split: str) -> bool:
        """CoC maps are stored (coc_<split>) or derivable (a dfdcap file with its lens attributes)."""
        return f"coc_{split}" in self._h5 or (self.coc_lens() is not None and f"depth_{split}" in self._h5)

    def has_stored_coc(self, split: str) -> bool:
        return f"coc_{self._split(split)}" in self._h5

    def coc_lens(self) -> tuple | None:
        """(ThinLens, pixel_pitch_m of the output images) of a dfdcap file, else None: what coc_maps needs."""
        from dfdcap.lens import ThinLens

        a = self._h5.attrs
        keys = ("focal_length_m", "f_number", "pixel_pitch_m")
        if self.kind != "dfdcap" or any(k not in a for k in keys):
            return None
        try:
            f, n, pitch = (float(a[k]) for k in keys)
            if not all(np.isfinite(v) and v > 0 for v in (f, n, pitch)):
                raise ValueError
            return ThinLens(f, n), pitch
        except (TypeError, ValueError):
            raise DatasetError(f"{self.path}: lens attributes {', '.join(f'{k}={a[k]}' for k in keys)} "
                               "must be positive numbers") from None

    # per sample ------------------------------------------------------------------------
    def stack(self, split: str, i: int) -> np.ndarray:
        """(S, H, W, 3) uint8. uint16 stacks (16-bit images) are scaled by 255 / 65535; float stacks
        (mDFF: 0-255, or 0-1) are rounded to uint8, and refused when their values fit neither range
        (clipping them would hand on white frames and wrong metrics)."""
        key = f"stack_{self._split(split)}"
        a = self._read(key, i)
        if a.dtype == np.uint8:
            return a
        if a.dtype == np.uint16:
            if a.size and int(a.max()) <= 255:
                raise DatasetError(f"{self.path}: {key}[{i}] is uint16 with values 0-{int(a.max())} only: 8-bit values "
                                   "stored as uint16 (read as 16-bit they are black); store the stacks as uint8")
            return ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
        a = a.astype(np.float32)
        with np.errstate(invalid="ignore"):
            lo, hi = (float(np.nanmin(a)), float(np.nanmax(a))) if a.size and not np.isnan(a).all() else (0.0, 0.0)
        top = 1.0 if hi <= 1.0 else 255.0
        eps = 1e-3 * top
        if not (lo >= -eps and hi <= top + eps):
            raise DatasetError(f"{self.path}: {key}[{i}] holds values {lo:.4g} to {hi:.4g}; float stacks must lie in "
                               "0-1 or 0-255 (convert other ranges to uint8 0-255)")
        a = np.nan_to_num(a) * (255.0 / top)
        return np.clip(np.round(a), 0, 255).astype(np.uint8)

    def focus_m(self, split: str, i: int) -> np.ndarray:
        split = self._split(split)
        key = f"focus_{split}"
        if self.kind == "ddff12" and key not in self._h5:
            return ddff12_focus_m(self.stack_shape(split)[0])
        if key not in self._h5 and self.kind == "dfdcap":
            raise DatasetError(f"{self.path}: dfdcap dataset lacks {key} (focus distance of each frame, metres)")
        if key not in self._h5:
            raise DatasetError(
                f"{self.path}: mDFF-layout file (float stacks, disp_{split} in metres) holds no focus distances; "
                f"add {key} ({self.n(split)} x {self.stack_shape(split)[0]} metres) or convert it with build-dataset"
            )
        return self._read(key, i).astype(np.float32)

    def depth_m(self, split: str, i: int) -> np.ndarray | None:
        """Depth in metres; for DDFF-12 with ddff_units='disparity', its disparity unchanged."""
        split = self._split(split)
        if self.kind in ("ddff12", "mdff"):
            if f"disp_{split}" not in self._h5:
                return None
            disp = self._read(f"disp_{split}", i).astype(np.float32)
            if disp.ndim == 3:  # some DDFF-12 exports keep a channel axis
                disp = disp[..., 0] if disp.shape[-1] == 1 else disp[0]
            if self.kind == "mdff":  # mDFF's disp_* already holds metres
                self._check_depth_range(f"disp_{split}", i, disp)
                return np.where(np.isfinite(disp) & (disp > 0), disp, np.float32(0)).astype(np.float32)
            if np.nanmax(disp, initial=0.0) > DDFF12_MAX_DISPARITY:
                raise DatasetError(
                    f"{self.path}: disp_{split}[{i}] holds values up to {np.nanmax(disp):.3g}, not DDFF-12 disparities "
                    f"(0.02-0.28 px); metres in uint8 stacks is no known layout: store stacks as float (mDFF) or depth_* in metres"
                )
            return disp if self.ddff_units == "disparity" else ddff12_disparity_to_depth_m(disp)
        if f"depth_{split}" not in self._h5:
            return None
        d = self._check_depth_range(f"depth_{split}", i, self._read(f"depth_{split}", i))  # values unchanged
        if f"focus_{split}" in self._h5:
            self._check_depth_units(split, i, d)
        return d

    def _check_depth_units(self, split: str, i: int, d: np.ndarray) -> None:
        """Refuse depth and focus distances in different units: a stack's median valid depth lies within
        UNIT_RATIO x of its sweep in any scene focus can measure; millimetres against metres are 1000 x off."""
        sample = d[::4, ::4]  # a median of every 16th pixel tells a unit apart, at 1/16 of the cost
        with np.errstate(invalid="ignore"):
            valid = sample[np.isfinite(sample) & (sample > 0)]
        if valid.size == 0:
            return
        med = float(np.median(valid))
        focus = self.focus_m(split, i)
        near, far = float(focus.min()), float(focus.max())
        if med > UNIT_RATIO * far or med * UNIT_RATIO < near:
            raise DatasetError(f"{self.path}: depth_{split}[{i}] has median {med:.4g} against focus distances "
                               f"{near:.4g}-{far:.4g} (focus_{split}[{i}]): depth and focus must both be metres "
                               "(one of them in millimetres? divide it by 1000)")

    def _check_depth_range(self, key: str, i: int, d: np.ndarray) -> np.ndarray:
        """d unchanged, refused when a valid (finite, positive) depth exceeds MAX_DEPTH_M: another unit
        read as metres would score RMS errors of kilometres as a result."""
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(d) & (d > 0)
        if valid.any() and float(d[valid].max()) > MAX_DEPTH_M:
            raise DatasetError(f"{self.path}: {key}[{i}] holds depths up to {float(d[valid].max()):.4g}, beyond "
                               f"{MAX_DEPTH_M:g} m; depth must be metres (millimetres? divide by 1000)")
        return d

    def mask(self, split: str, i: int) -> np.ndarray | None:
        if self.kind in ("ddff12", "mdff"):
            d = self.depth_m(split, i)
            return None if d is None else d > 0
        key = f"mask_{self._split(split)}"
        if key not in self._h5:  # a split without ground truth (the layout check refuses depth without mask)
            return None
        return self._read(key, i).astype(bool)

    def coc_px(self, split: str, i: int) -> np.ndarray | None:
        """(S, H, W) float32 pixels: stored, else derived from depth and focus (exactly what build-dataset
        stores: a CoC map is a function of them); None where neither is possible."""
        key = f"coc_{self._split(split)}"
        if key in self._h5:
            return self._read(key, i)
        if not self.has_coc(split):
            return None
        return self.derive_coc(self.depth_m(split, i), self.focus_m(split, i))

    def derive_coc(self, depth_m: np.ndarray, focus_m: np.ndarray) -> np.ndarray:
        """CoC maps (S, H, W) float32 of a depth map (or a crop of one) for the file's lens."""
        from dfdcap.dataset.stacks import coc_maps

        lens = self.coc_lens()
        if lens is None:
            raise DatasetError(f"{self.path}: no lens attributes (focal_length_m, f_number, pixel_pitch_m) to derive CoC maps")
        return coc_maps(depth_m, focus_m, lens[0], lens[1])

    def provenance(self, split: str, i: int) -> dict:
        key = f"provenance_{self._split(split)}"
        if key not in self._h5:
            return {"source": str(self.path), "split": split, "index": int(i)}
        return self._provenance_doc(key, i, self._read(key, i))

    def _provenance_doc(self, key: str, i: int, v) -> dict:
        try:
            d = json.loads(v.decode() if isinstance(v, bytes) else v)
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as e:
            raise DatasetError(f"{self.path}: {key}[{i}] is not JSON ({_first_line(e)})") from None
        if not isinstance(d, dict):
            raise DatasetError(f"{self.path}: {key}[{i}] is a JSON {type(d).__name__}, expected an object {{...}}")
        return d

    def sessions(self, split: str) -> list[str | None]:
        """Per sample, the session folder (else name) its provenance names; None where there is none.
        Malformed provenance is an error: a sample whose session cannot be read could be a training stack."""
        key = f"provenance_{self._split(split)}"
        if key not in self._h5:
            return [None] * self.n(split)
        out: list[str | None] = []
        for i, v in enumerate(self._read(key)):
            d = self._provenance_doc(key, i, v)
            name = d.get("session_dir") or d.get("session")
            out.append(str(name) if name else None)
        return out


def open_dataset(path: str | os.PathLike, ddff_units: str = "m") -> DatasetFile:
    """Open a dfdcap dataset file or an original DDFF-12 file for reading."""
    return DatasetFile(path, ddff_units=ddff_units)
