"""Focus stacks from phone frames: grouping by ramp, output geometry (crop + resize), CoC maps.

Pure numerics and bookkeeping; no file I/O. A stack is S phone frames of one focus ramp, stored
with strictly increasing focus distance (near->far) whichever way the ramp swept. Its depth map is taken at the stack's *reference frame*,
the middle one (index S // 2): the thesis used one depth map per stack, and the middle frame
is closest in time to all the others.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dfdcap.cameras import CameraModel
from dfdcap.errors import DatasetError
from dfdcap.lens import ThinLens
from dfdcap.parse import plain_number

REFERENCE_FRAME = "middle"


def reference_position(n_frames: int) -> int:
    """Position inside a stack of the frame whose depth the sample carries (the middle one)."""
    return n_frames // 2


@dataclass(frozen=True)
class RampStacks:
    """Focus stacks cut from a session's ramps: stacks[k] (S,) positions into the frame arrays,
    ordered by increasing focus distance; notes: one line per ramp that gave no stack, and why."""

    stacks: list[np.ndarray]
    notes: list[str]


def monotone_run(pos: np.ndarray, focus_m: np.ndarray) -> np.ndarray:
    """The frames of one ramp (pos in step order) that keep its sweep direction, near->far order.

    A ramp runs near->far (focus distance increasing, diopters decreasing) or far->near (as phones
    count focus: diopters increasing); the direction is the one most steps take. Frames that turn
    back against it (lens not settled) are dropped; the run is returned with focus increasing."""
    f = focus_m[pos]
    with np.errstate(invalid="ignore"):
        d = np.diff(f)
    sign = 1.0 if int((d > 0).sum()) >= int((d < 0).sum()) else -1.0
    keep = [pos[0]]
    for p in pos[1:]:
        if sign * focus_m[p] > sign * focus_m[keep[-1]]:
            keep.append(p)
    run = np.asarray(keep)
    return run if sign > 0 else run[::-1]


def split_ramps(ramps: np.ndarray, steps: np.ndarray, focus_m: np.ndarray, frames: int | None = None) -> RampStacks:
    """Split phone frames into focus stacks, one per ramp.

    ramps, steps: (N,) int, the phone's ramp and step number of each frame.
    focus_m: (N,) float metres (inf allowed), the focus distance each frame reports.
    frames: frames per stack S; None = the full ramp (the longest ramp's monotone run). A ramp
        with more frames than S gives S frames spread evenly over it; a ramp with fewer (a partial
        last ramp of a stopped recording, a ramp that lost frames) is skipped with a note.
    Ramps may sweep either way (see monotone_run); every stack comes out near->far.
    """
    ramps = np.asarray(ramps)
    steps = np.asarray(steps)
    focus_m = np.asarray(focus_m, dtype=np.float64)
    if not (ramps.shape == steps.shape == focus_m.shape) or ramps.ndim != 1:
        raise DatasetError(f"split_ramps: ramps, steps, focus_m must be equal 1-D, got {ramps.shape}, {steps.shape}, {focus_m.shape}")
    if frames is not None and frames < 2:
        raise DatasetError(f"a focus stack needs at least 2 frames, got --frames {frames}")
    runs = []
    for r in np.unique(ramps):
        pos = np.flatnonzero(ramps == r)
        pos = pos[np.argsort(steps[pos], kind="stable")]
        read = pos[~np.isnan(focus_m[pos])]  # a frame without a focus reading cannot be placed in the sweep
        runs.append((int(r), len(pos), len(pos) - len(read), monotone_run(read, focus_m) if len(read) else read))
    full = max((len(run) for *_, run in runs), default=0)
    s = full if frames is None else frames
    last = runs[-1][0] if runs else None
    out, notes = [], []
    for r, n, unread, run in runs:
        if len(run) < max(s, 2):
            what = "partial last ramp" if r == last else "ramp"
            back = n - unread - len(run)
            lost = (f", {back} against the sweep" if back else "") + (f", {unread} without a focus value (NaN)" if unread else "")
            notes.append(f"{what} {r}: {len(run)} usable of {n} frames{lost}, a stack needs {max(s, 2)}: skipped")
            continue
        pick = np.round(np.linspace(0, len(run) - 1, s)).astype(int)
        out.append(run[pick])
    return RampStacks(out, notes)


@dataclass(frozen=True)
class OutputGeometry:
    """Where the dataset's images come from in the phone frame: crop (x, y, w, h) then resize to size (W, H)."""

    crop: tuple[int, int, int, int]
    size: tuple[int, int]

    @property
    def scale_xy(self) -> tuple[float, float]:
        return self.size[0] / self.crop[2], self.size[1] / self.crop[3]

    def camera(self, phone: CameraModel) -> CameraModel:
        """The phone camera model of the output images (principal point moved, focal scaled)."""
        x, y, _, _ = self.crop
        sx, sy = self.scale_xy
        K = phone.K.copy()
        K[0, 2] -= x
        K[1, 2] -= y
        K[0, 0] *= sx
        K[0, 1] *= sx
        K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
        K[1, 1] *= sy
        K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
        return CameraModel(K, phone.dist.copy(), self.size)

    def pixel_pitch_m(self, phone_pixel_pitch_m: float) -> float:
        """Pixel pitch of the output images (metres); the mean of x and y if they differ."""
        sx, sy = self.scale_xy
        return phone_pixel_pitch_m / (0.5 * (sx + sy))

    def apply(self, image: np.ndarray) -> np.ndarray:
        """Crop and resize one phone image (H, W[, C]) (area averaging when shrinking)."""
        import cv2

        x, y, w, h = self.crop
        img = image[y : y + h, x : x + w]
        if (w, h) == self.size:
            return np.ascontiguousarray(img)
        interp = cv2.INTER_AREA if self.size[0] < w else cv2.INTER_LINEAR
        return cv2.resize(img, self.size, interpolation=interp)


def parse_size(text: str) -> tuple[int, int]:
    """'WxH' -> (W, H)."""
    try:
        w, h = (plain_number(v, int) for v in text.lower().split("x"))
    except ValueError:
        raise DatasetError(f"size {text!r}: expected WIDTHxHEIGHT, e.g. 640x360") from None
    if w <= 0 or h <= 0:
        raise DatasetError(f"size {text!r}: width and height must be positive")
    return w, h


def make_geometry(image_size: tuple[int, int], crop: str | None = None, size: str | tuple[int, int] | None = None) -> OutputGeometry:
    """Output geometry from the phone image size and the user's options.

    crop: None (whole frame), 'WxH' (centred) or 'X,Y,W,H' (phone pixels).
    size: None (crop size; if no crop either, the whole frame) or 'WxH' / (W, H) output pixels.
    """
    iw, ih = image_size
    if crop is None:
        c = (0, 0, iw, ih)
    elif "," in crop:
        try:
            c = tuple(plain_number(v, int) for v in crop.split(","))
        except ValueError:
            c = ()
        if len(c) != 4:
            raise DatasetError(f"crop {crop!r}: expected X,Y,W,H or WxH")
    else:
        cw, ch = parse_size(crop)
        c = ((iw - cw) // 2, (ih - ch) // 2, cw, ch)
    x, y, w, h = c
    if x < 0 or y < 0 or w <= 0 or h <= 0 or x + w > iw or y + h > ih:
        raise DatasetError(f"crop {c} does not fit in the {iw}x{ih} phone frames")
    out = (w, h) if size is None else (parse_size(size) if isinstance(size, str) else tuple(size))
    if out[0] > w or out[1] > h:  # upsampling adds no information, and a huge size only runs out of memory
        raise DatasetError(f"--size {out[0]}x{out[1]}: larger than the {w}x{h} phone pixels it is made from; at most {w}x{h}")
    return OutputGeometry((x, y, w, h), (int(out[0]), int(out[1])))


def coc_maps(depth_m: np.ndarray, focus_m: np.ndarray, lens: ThinLens, pixel_pitch_m: float) -> np.ndarray:
    """CoC diameter per frame in output pixels (ThinLens.coc_px, in float32 for speed).

    depth_m: (H, W) float32 metres, 0 = invalid; focus_m: (S,) metres (inf allowed).
    Returns (S, H, W) float32 pixels, 0 where depth is invalid.
    With c = A f |D - F| / (D (F - f)) = k_F |1 - F / D|, k_F = A f / ((F - f) pitch), each
    frame is four float32 passes over 1 / D.
    """
    d = np.fmax(np.asarray(depth_m, dtype=np.float32), np.float32(0))  # NaN, negative -> 0
    valid = (d > 0).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.float32(1) / d
        inv *= valid  # 1/0 = inf -> inf * 0 = NaN; replaced next
    np.nan_to_num(inv, copy=False, nan=0.0, posinf=0.0)
    f = lens.focal_length_m
    af = lens.aperture_m * f / pixel_pitch_m
    focus = np.asarray(focus_m, dtype=np.float64)
    out = np.empty((focus.size,) + d.shape, np.float32)
    for s, F in enumerate(focus):
        c = out[s]
        if np.isinf(F):  # focused at infinity: c = A f / (D - f)
            with np.errstate(divide="ignore", invalid="ignore"):
                np.divide(np.float32(af) * inv, np.float32(1) - np.float32(f) * inv, out=c)
            c *= valid
            continue
        np.multiply(inv, np.float32(-F), out=c)
        c += np.float32(1)
        np.abs(c, out=c)
        c *= valid
        c *= np.float32(af / (F - f))
    return out
