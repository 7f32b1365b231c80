"""Alignment of a focus stack's slices to its reference slice (focus breathing, small hand shake).

A phone lens changes its magnification as it focuses, so slice i of a sweep sees the scene scaled
(and slightly shifted) against the reference slice (the stack's middle one, S // 2, whose camera
the depth is reprojected into). Each slice gets a 3x3 map H_i of its pixels to the reference's
pixels, in two steps:

1. prior: from the calibration's focus model, H_i = K(D_ref) K(D_i)^-1 (exact for a pure breathing
   lens, distortion included: dfdcap.breathing); identity without one.
2. registration (ECC, cv2.findTransformECC, affine by default): on downscaled, blurred grey
   images, so that the different defocus of two slices matters little (defocus keeps local means;
   ECC's correlation ignores contrast; the blur evens out sharpness), from the prior. Slices
   are registered directly to the reference, starting from the neighbour's (nearer the reference)
   result, so large sweeps (10 % scale) converge. The finest level's map is then checked tile by
   tile: tiles whose content moves otherwise (aliasing moire, a moving object) are left out and
   ECC runs again without them (_consistent_ecc). A registration that fails, correlates poorly or
   moves far from its start falls back to the prior, and says so in `status`.

Pure numerics (arrays in, arrays out) except `align_files`, the I/O entry of `dfdcap align`.
Speed: registration runs at <= 256 px on the long side by default, one ECC level (a whole-factor
downscale: 252x189 at 1008x756). A findTransformECC call costs ~5 ms there, about half of it fixed,
so every level and retry counts: on the simulated breathing sweep the maps stay within 0.06 px of
the truth (0.05 px at 336 px or with a coarser level first, for 1.5-2x the time). Slices start from
the prior or their neighbour's map, a few pixels off at most, so one level converges; `levels`
adds coarser ones for sweeps without either. The full-resolution work is one grey conversion and
one warp per slice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dfdcap.breathing import grid_rms_px
from dfdcap.errors import DatasetError

MOTIONS = ("affine", "similarity", "homography", "translation", "none")


@dataclass(frozen=True)
class AlignOptions:
    """motion: what registration fits ("none" = prior only); max_side_px: most pixels on the long side of the finest
    registration level; min_cc: lowest accepted ECC correlation; max_correction: largest accepted
    move away from the starting estimate, as a fraction of the image diagonal (RMS over the image);
    tile_grid, outlier_px, outlier_spread, outlier_rounds: the check of ECC's map tile by tile
    (rows x cols; a tile whose shift after the map lies off the tiles' common affine field by more
    than outlier_px finest-level px and outlier_spread x the tiles' median is left out and ECC runs
    again, at most outlier_rounds times; outlier_rounds 0 = no check)."""

    motion: str = "affine"
    max_side_px: int = 256
    levels: int = 1
    blur_sigma_px: float = 1.5
    min_cc: float = 0.5
    max_correction: float = 0.03
    iterations: int = 40
    eps: float = 1e-4
    tile_grid: tuple[int, int] = (6, 8)
    outlier_px: float = 0.25
    outlier_rounds: int = 2
    outlier_spread: float = 5.0

    def __post_init__(self) -> None:
        if self.max_side_px < 16 or self.levels < 1 or self.iterations < 1:  # 0 px was a ZeroDivisionError
            raise DatasetError(f"align: need --max-side >= 16 px, levels >= 1 and iterations >= 1 "
                               f"(got {self.max_side_px}, {self.levels}, {self.iterations})")


@dataclass(frozen=True)
class SliceAlignment:
    """H: (3, 3) slice pixels -> reference pixels; prior: the focus model's H (identity without one);
    status: reference | registered | prior (no registration asked) | fallback: <why>;
    cc: ECC correlation at the finest level (nan if not registered); correction_px: RMS px (over
    the image) between H and the prior."""

    H: np.ndarray
    prior: np.ndarray
    status: str
    cc: float
    correction_px: float

    @property
    def scale(self) -> float:
        """Mean linear scale of the map (sqrt of the determinant of its 2x2 part)."""
        return float(math.sqrt(abs(np.linalg.det(self.H[:2, :2]))))

    def shift_px(self, size: tuple[int, int]) -> tuple[float, float]:
        """Where the image centre moves (px), (dx, dy)."""
        c = np.array([(size[0] - 1) / 2, (size[1] - 1) / 2, 1.0])
        p = self.H @ c
        return float(p[0] / p[2] - c[0]), float(p[1] / p[2] - c[1])


def level_scales(shape: tuple[int, ...], opts: "AlignOptions") -> list[float]:
    """Scales of the registration levels, coarse to fine. The finest level shrinks the image by a
    whole factor to at most max_side_px on the long side: OpenCV's area resampling has a fast path
    for whole factors (at 1008x756: 0.4 ms for 1/3 against 2 ms for 384/1008), and each coarser
    level halves the one above it."""
    factor = max(1, math.ceil(max(shape[:2]) / opts.max_side_px))
    return [1.0 / (factor * 2**k) for k in range(opts.levels - 1, -1, -1)]


def registration_pyramid(rgb: np.ndarray, opts: "AlignOptions") -> list[np.ndarray]:
    """(H, W, 3) uint8 -> float32 blurred grey images at level_scales, coarse to fine (area-downscaled).

    Intensities, not gradients: defocus keeps the local mean of an image but not its gradient
    magnitude, so two slices blurred alike agree far better in intensity (on the simulated d405
    sweep: 0.03-0.07 px against 0.1-0.3 px and failures with gradient magnitude)."""
    import cv2

    sigma = opts.blur_sigma_px
    g = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY) if rgb.ndim == 3 else rgb
    h, w = rgb.shape[:2]
    out = []
    for s in reversed(level_scales(rgb.shape, opts)):  # fine to coarse, each from the one above
        size = (max(8, round(w * s)), max(8, round(h * s)))
        if size != (g.shape[1], g.shape[0]):
            g = cv2.resize(g, size, interpolation=cv2.INTER_AREA)
        f = g.astype(np.float32)
        out.append(cv2.GaussianBlur(f, (0, 0), sigma) if sigma > 0 else f)
    return out[::-1]


def _rescale(s: float) -> np.ndarray:
    """Pixels of an image -> pixels of that image scaled by s (pixel centres kept: x' = s (x + 0.5) - 0.5)."""
    return np.array([[s, 0, 0.5 * s - 0.5], [0, s, 0.5 * s - 0.5], [0, 0, 1.0]])


def _scaled(H: np.ndarray, s: float) -> np.ndarray:
    """H in the coordinates of an image scaled by s."""
    return _rescale(s) @ H @ _rescale(1.0 / s)


def _ecc(ref: np.ndarray, src: np.ndarray, H0: np.ndarray, motion: str, opts: AlignOptions,
         src_mask: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    """ECC: H (src -> ref pixels) refined from H0 on one level, on the src pixels where src_mask
    (uint8, src's shape) is set (all without one). Raises cv2.error when it fails."""
    import cv2

    mode = {"affine": cv2.MOTION_AFFINE, "similarity": cv2.MOTION_AFFINE, "homography": cv2.MOTION_HOMOGRAPHY,
            "translation": cv2.MOTION_TRANSLATION}[motion]
    W = np.linalg.inv(H0)  # ECC's warp maps template (ref) pixels to input (src) pixels
    W = (W / W[2, 2]).astype(np.float32)
    warp = W if motion == "homography" else W[:2].copy()
    crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, opts.iterations, opts.eps)
    cc, warp = cv2.findTransformECC(ref, src, warp, mode, crit, src_mask, 1)
    Wf = np.eye(3)
    Wf[: warp.shape[0]] = warp
    if motion == "similarity":  # project the affine onto scale + rotation + shift
        A = Wf[:2, :2]
        a, b = 0.5 * (A[0, 0] + A[1, 1]), 0.5 * (A[1, 0] - A[0, 1])
        Wf[:2, :2] = [[a, -b], [b, a]]
    return np.linalg.inv(Wf), float(cc)


def tile_shifts(ref: np.ndarray, src: np.ndarray, H: np.ndarray, grid: tuple[int, int]
                ) -> tuple[np.ndarray, list, np.ndarray]:
    """Where the content of each tile of ref (grid rows x cols) still moves after src is warped by
    H (src -> ref pixels, one level's images): pyramidal Lucas-Kanade on each tile as one window,
    (rows, cols, 2) px, nan where the tile has too little texture to tell; the tiles' ((row, col),
    slice); and their centres (rows, cols, 2) px."""
    import cv2

    h, w = ref.shape
    warped = cv2.warpPerspective(src, H, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    rows, cols = grid
    tiles, centres = [], []
    for a in range(rows):
        for b in range(cols):
            y0, y1, x0, x1 = a * h // rows, (a + 1) * h // rows, b * w // cols, (b + 1) * w // cols
            tiles.append(((a, b), np.s_[y0:y1, x0:x1]))
            centres.append(((x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2))
    win = (max(5, (w // cols) | 1), max(5, (h // rows) | 1))
    p0 = np.array(centres, np.float32).reshape(-1, 1, 2)
    u8 = [np.clip(x, 0, 255).astype(np.uint8) for x in (ref, warped)]
    p1, st, _ = cv2.calcOpticalFlowPyrLK(u8[0], u8[1], p0, None, winSize=win, maxLevel=2,
                                         criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.01),
                                         minEigThreshold=1e-3)
    d = (p1 - p0).reshape(rows, cols, 2).astype(np.float64)
    d[st.reshape(rows, cols) == 0] = np.nan
    return d, tiles, p0.reshape(rows, cols, 2).astype(np.float64)


def _consistent_ecc(r: np.ndarray, m: np.ndarray, H: np.ndarray, cc: float, start: np.ndarray, opts: AlignOptions
                    ) -> tuple[np.ndarray, float]:
    """ECC's map H on one level, refitted without the tiles whose content does not follow it.

    ECC fits one map to the whole image, so a region whose content moves otherwise between slices
    pulls the map off everywhere else: moire of a fine texture (its pattern depends on where the
    pixels sample the scene, so it moves many times as far as the scene when the magnification
    changes), a moving object, a highlight. Measured on the simulated breathing sweep (seed 9, a
    striped floor aliased into chevrons): the floor's tiles move 2-7 level px against the rest's
    <= 0.1 and pull the affine map 0.8 px (full resolution) off the truth; ECC does the same on the
    sharp frames and not on 4x supersampled ones, so it is aliasing, not defocus.

    Each tile's remaining shift after H (tile_shifts) is compared with the affine field that the
    tiles' shifts follow (least median of squares: what H still misses everywhere). Tiles further
    off that field than opts.outlier_px and opts.outlier_spread x the tiles' median distance are
    left out, with the registration blur's reach around them, and ECC runs again from `start`;
    up to opts.outlier_rounds times. When more than half of the textured tiles would go, H stays
    (nothing tells the scene from the outliers). Cost: one Lucas-Kanade call for all tiles (~1 ms a
    slice at 252x189: a 5-slice stack 16 -> 21 ms), and one more ECC per round that drops tiles
    (seed 9: 20 -> 47 ms). Simulated seeds 0-14: max error 0.85 -> 0.15 px (seed 9), 0.27 -> 0.12
    (seed 11), the rest within 0.08 px of before (<= 0.15); real PCB sweeps: unchanged within the
    SIFT judge's scatter."""
    import cv2

    bad = None
    for _ in range(opts.outlier_rounds):
        t, tiles, centres = tile_shifts(r, m, H, opts.tile_grid)
        textured = np.isfinite(t[..., 0])
        if textured.sum() < 6:
            break
        # the tiles' shifts that one affine explains (least median of squares) are what H still
        # misses everywhere; a tile far off that field moves otherwise
        c, moved = centres[textured], centres[textured] + t[textured]
        A, _ = cv2.estimateAffine2D(c, moved, method=cv2.LMEDS)
        if A is None:
            break
        dev = np.full(textured.shape, np.nan)
        dev[textured] = np.linalg.norm(moved - (c @ A[:, :2].T + A[:, 2]), axis=1)
        limit = max(opts.outlier_px, opts.outlier_spread * float(np.median(dev[textured])))
        new = textured & (dev > limit)
        if bad is not None:
            new |= bad
        if not new.any() or (bad is not None and (new == bad).all()) or new.sum() * 2 > textured.sum():
            break
        bad = new
        keep = np.ones(r.shape, np.uint8)
        for (a, b), sl in tiles:
            if bad[a, b]:
                keep[sl] = 0
        # and the registration blur's reach beside them: their content leaks that far into the rest
        reach = 2 * math.ceil(3 * opts.blur_sigma_px) + 1
        keep = cv2.erode(keep, np.ones((reach, reach), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=1)
        src_mask = cv2.warpPerspective(keep, np.linalg.inv(H), (m.shape[1], m.shape[0]), flags=cv2.INTER_NEAREST)
        try:
            H, cc = _ecc(r, m, start, opts.motion, opts, src_mask)
        except cv2.error:
            break
    return H, cc


def register(ref_rgb: np.ndarray, src_rgb: np.ndarray, H0: np.ndarray, opts: AlignOptions = AlignOptions(),
             pyramid_ref: list[np.ndarray] | None = None) -> tuple[np.ndarray, float]:
    """H (3, 3) mapping src pixels to ref pixels, refined coarse to fine from H0; and the final ECC
    correlation. Raises DatasetError when ECC fails at the finest level."""
    import cv2

    scales = level_scales(ref_rgb.shape, opts)
    refs = pyramid_ref if pyramid_ref is not None else registration_pyramid(ref_rgb, opts)
    srcs = registration_pyramid(src_rgb, opts)
    H, cc = np.asarray(H0, np.float64), float("nan")
    for li, (s, r, m) in enumerate(zip(scales, refs, srcs)):
        try:
            Hs, cc = _ecc(r, m, _scaled(H, s), opts.motion, opts)
        except cv2.error as e:
            if li == len(scales) - 1:
                raise DatasetError(f"ECC registration did not converge ({(e.err or str(e)).strip()[:100]})") from None
            continue
        if li == len(scales) - 1 and opts.outlier_rounds > 0:
            Hs, cc = _consistent_ecc(r, m, Hs, cc, _scaled(H, s), opts)
        H = _scaled(Hs, 1.0 / s)
    return H, cc


def _order_from_reference(S: int, ref_pos: int) -> list[tuple[int, int]]:
    """(slice, its neighbour nearer the reference) in an order where the neighbour comes first."""
    out = []
    for d in range(1, S):
        for i in (ref_pos - d, ref_pos + d):
            if 0 <= i < S:
                out.append((i, i + 1 if i < ref_pos else i - 1))
    return out


def align_stack(frames, ref_pos: int, priors: list[np.ndarray] | None = None,
                opts: AlignOptions = AlignOptions()) -> list[SliceAlignment]:
    """Maps of every slice to the reference slice.

    frames: S images (H, W, 3) uint8 (one size); ref_pos: the reference's position;
    priors: S (3, 3) slice -> reference maps from the focus model, or None (identity).
    """
    S = len(frames)
    if not 0 <= ref_pos < S:
        raise DatasetError(f"align: reference position {ref_pos} outside a stack of {S}")
    if opts.motion not in MOTIONS:
        raise DatasetError(f"align: motion {opts.motion!r}: expected one of {', '.join(MOTIONS)}")
    h, w = frames[0].shape[:2]
    size = (w, h)
    priors = [np.eye(3) if priors is None else np.asarray(priors[i], np.float64) for i in range(S)]
    out: list[SliceAlignment | None] = [None] * S
    out[ref_pos] = SliceAlignment(np.eye(3), np.eye(3), "reference", float("nan"), 0.0)
    pyr = registration_pyramid(frames[ref_pos], opts) if opts.motion != "none" else None
    for i, nb in _order_from_reference(S, ref_pos):
        prior = priors[i]
        if opts.motion == "none":
            out[i] = SliceAlignment(prior, prior, "prior", float("nan"), 0.0)
            continue
        # start from the neighbour's estimate carried over by the priors' step between the two slices
        start = out[nb].H @ np.linalg.inv(priors[nb]) @ prior
        out[i] = _register_slice(frames[ref_pos], frames[i], start, prior, opts, pyr, size)
    return out  # type: ignore[return-value]


def _register_slice(ref, src, start, prior, opts: AlignOptions, pyr, size) -> SliceAlignment:
    """One slice: ECC from `start`; when it correlates poorly (very different defocus), once more on
    images blurred 3x as much; the prior when neither is accepted."""
    diag = math.hypot(*size)
    why = ""
    for attempt in range(2):
        o = opts if attempt == 0 else dataclasses.replace(opts, blur_sigma_px=3 * opts.blur_sigma_px)
        try:
            H, cc = register(ref, src, start, o, pyr if attempt == 0 else None)
        except DatasetError as e:
            why = str(e)
            continue
        moved = grid_rms_px(H, start, size)
        if moved > opts.max_correction * diag:
            why = f"diverged ({moved:.1f} px from the start)"
        elif not cc >= opts.min_cc:
            why = f"low correlation {cc:.2f} < {opts.min_cc}"
        else:
            return SliceAlignment(H, prior, "registered", cc, grid_rms_px(H, prior, size))
    return SliceAlignment(prior, prior, f"fallback: {why}", float("nan"), 0.0)


def warp_to_reference(image: np.ndarray, H: np.ndarray, dst: np.ndarray | None = None) -> np.ndarray:
    """A slice resampled into the reference's pixels (outside = edge pixels repeated): upsampled 2x
    bicubic, then sampled bilinearly.

    Not bilinear alone: a breathing slice is rescaled by ~1-2 %, so the sampling phase drifts across
    the frame, and bilinear weights at half-pixel phase are a [0.5, 0.5] blur. That blur comes and
    goes in bands ~60 px apart on a 1008-px frame and is largest on the sharpest slices, so it reads
    as defocus (on 24 simulated d405 sessions, bilinear against bicubic: classical DFF RMS 0.0801 m
    against 0.0714 m). On the 2x grid that blur is a quarter of a source pixel wide: on the same
    sessions this warp gives 0.0722 m, and fvnet 0.0293 m against 0.0294 m after a bicubic warp.
    And not OpenCV's bicubic warp itself: it has no SIMD path (12.8 ms per 1008x756 RGB slice on one
    core, against 4.1 ms for the 2x bicubic resize and 1.7 ms for the bilinear warp).
    dst: an array of the image's shape and type to write into (returned), e.g. a slot of a stack."""
    import cv2

    h, w = image.shape[:2]
    Hn = np.asarray(H, np.float64) / H[2, 2]
    if np.allclose(Hn, np.eye(3), atol=1e-9):
        if dst is None:
            return image
        dst[...] = image
        return dst
    up = cv2.resize(image, (2 * w, 2 * h), interpolation=cv2.INTER_CUBIC)
    M = Hn @ _rescale(0.5)  # 2x-grid pixels -> slice pixels -> reference pixels
    if np.allclose(M[2], [0, 0, 1], atol=1e-12):
        return cv2.warpAffine(up, M[:2], (w, h), dst=dst, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return cv2.warpPerspective(up, M, (w, h), dst=dst, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def covered_mask(maps: list[np.ndarray], size: tuple[int, int], margin_px: float = 1.0) -> np.ndarray:
    """(H, W) bool: reference pixels that every slice saw (inside its frame by margin_px).

    Each slice's frame maps to a convex quadrilateral in the reference (affine or homography);
    the intersection is drawn polygon by polygon (cheap at any image size)."""
    import cv2

    w, h = size
    m = margin_px
    corners = np.array([[m, m, 1], [w - 1 - m, m, 1], [w - 1 - m, h - 1 - m, 1], [m, h - 1 - m, 1]], np.float64).T
    ok = np.ones((h, w), np.uint8)
    for H in maps:
        if np.allclose(H, np.eye(3)):
            continue
        q = np.asarray(H, np.float64) @ corners
        poly = np.round((q[:2] / q[2]).T * 16).astype(np.int32)  # 4 fractional bits
        one = np.zeros((h, w), np.uint8)
        cv2.fillConvexPoly(one, poly, 1, lineType=cv2.LINE_8, shift=4)
        ok &= one
    if margin_px > 0:  # the polygon's edge pixels may lie just outside: leave them out
        ok = cv2.erode(ok, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=1)
    return ok.astype(bool)


# ----------------------------------------------------------------------------- I/O entry


def alignment_record(a: SliceAlignment, size: tuple[int, int], name: str) -> dict:
    """One frame's entry of alignment.json."""
    dx, dy = a.shift_px(size)
    return {
        "frame": name, "status": a.status, "scale": a.scale, "shift_px": [dx, dy],
        "residual": None if not np.isfinite(a.cc) else 1.0 - a.cc, "ecc_cc": None if not np.isfinite(a.cc) else a.cc,
        "correction_px": a.correction_px, "H": np.asarray(a.H).tolist(),
    }


def align_files(paths: list[str | os.PathLike], out_dir: str | os.PathLike, reference: int | None = None,
                opts: AlignOptions = AlignOptions(), progress=None, force: bool = False) -> dict:
    """`dfdcap align`: register a focal sweep's frames (given in sweep order) to its middle frame
    (or `reference`), write the aligned frames (same names, RGB PNG, 16-bit for 16-bit inputs) and
    alignment.json into out_dir.

    An out_dir that holds alignment.json or a frame of the same name is refused unless force; then
    the earlier alignment's frames go and the new ones take their place. Everything is written in a
    temporary folder first and moved in at the end: a refused or interrupted run changes nothing."""
    from dfdcap.fileio import (atomic_write_json, check_distinct, check_writable_folder, nearest_existing,
                               name_the_target, read_images_one_size, temp_prefix, write_image)

    if len(paths) < 2:
        raise DatasetError("align: give at least 2 frames of a focal sweep")
    out = Path(out_dir)
    names = [Path(p).stem for p in paths]
    if len(set(names)) != len(names):
        raise DatasetError(f"align: two frames share a name ({sorted(n for n in names if names.count(n) > 1)[0]!r}); they would overwrite each other")
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out}: exists and is not a folder")
    outputs = {f"aligned frame {n}.png": out / f"{n}.png" for n in names}
    check_distinct({**outputs, "alignment.json": out / "alignment.json"}, paths, hint="choose another output folder")
    taken = [q for q in (out / "alignment.json", *outputs.values()) if q.exists()]
    if taken and not force:
        raise DatasetError(f"{taken[0]}: exists (use --force to replace the alignment in {out})")
    ref = len(paths) // 2 if reference is None else int(reference)
    if not 0 <= ref < len(paths):
        raise DatasetError(f"align: --reference {ref} outside the {len(paths)} frames (0..{len(paths) - 1})")
    if opts.motion not in MOTIONS:
        raise DatasetError(f"align: motion {opts.motion!r}: expected one of {', '.join(MOTIONS)}")
    check_writable_folder(nearest_existing(out.parent), "output folder's parent")  # before the work, not after it
    frames = read_images_one_size(paths, keep_depth=True)  # 16-bit frames are aligned and written as 16-bit
    as8 = [f if f.dtype == np.uint8 else (f.astype(np.float32) * np.float32(1 / 257) + 0.5).astype(np.uint8) for f in frames]
    result = align_stack(as8, ref, None, opts)
    del as8
    h, w = frames[0].shape[:2]
    doc = {
        "reference": ref, "reference_frame": str(paths[ref]), "size": [w, h], "motion": opts.motion,
        "convention": "H maps a frame's pixels to the reference frame's pixels; aligned = frame resampled at H^-1",
        "frames": [alignment_record(a, (w, h), str(p)) for a, p in zip(result, paths)],
    }
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(out), suffix=".tmp", dir=nearest_existing(out.parent)))
    try:
        for k, (img, a) in enumerate(zip(frames, result)):
            write_image(tmp / f"{names[k]}.png", warp_to_reference(img, a.H))
            if progress:
                progress(k + 1, len(frames))
        atomic_write_json(tmp / "alignment.json", doc)
        _move_alignment_in(tmp, out, [f"{n}.png" for n in names])
    except OSError as e:
        name_the_target(e, tmp, out)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return doc


def _move_alignment_in(tmp: Path, out: Path, frame_files: list[str]) -> None:
    """Move a finished alignment (frame_files + alignment.json in tmp) into out, made only now; the
    frames an earlier alignment.json in out lists go first, so none stays beside the new one."""
    earlier: list[str] = []
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        earlier = [Path(r["frame"]).stem + ".png" for r in json.loads((out / "alignment.json").read_text())["frames"]]
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        (out / "alignment.json").unlink()  # first: no alignment.json ever describes a mix of frames
    for name in set(earlier) - set(frame_files):
        if Path(name).name == name:  # a name the earlier file lists, never a path elsewhere
            with contextlib.suppress(FileNotFoundError):
                (out / name).unlink()
    for name in frame_files:
        os.replace(tmp / name, out / name)
    os.replace(tmp / "alignment.json", out / "alignment.json")


# --------------------------------------------------------------------- dataset glue (pure)

ALIGN_MODES = ("ecc", "prior", "none")


@dataclass(frozen=True)
class StackAlignment:
    """A stack's slices in the reference's pixels, and what it took: maps (S, 3, 3) float32 slice ->
    reference pixels, residual (S,) float32 1 - ECC correlation (nan where not registered),
    correction_px (S,) float32 registration's move from the focus-model prior, status (S,) str,
    covered (H, W) bool: reference pixels every slice saw."""

    frames: np.ndarray
    maps: np.ndarray
    residual: np.ndarray
    correction_px: np.ndarray
    status: list[str]
    covered: np.ndarray


def focus_priors(K_by_slice: list[np.ndarray] | None, ref_pos: int, S: int) -> list[np.ndarray] | None:
    """Slice -> reference maps K_ref K_i^-1 from each slice's camera matrix (None: no focus model)."""
    if K_by_slice is None:
        return None
    K_ref = np.asarray(K_by_slice[ref_pos], np.float64)
    return [K_ref @ np.linalg.inv(np.asarray(K_by_slice[i], np.float64)) for i in range(S)]


def align_dataset_stack(frames: list[np.ndarray], ref_pos: int, K_by_slice: list[np.ndarray] | None, mode: str = "ecc",
                        opts: AlignOptions = AlignOptions()) -> StackAlignment:
    """build-dataset's step: frames (S images (H, W, 3) uint8 at the output geometry) aligned to the
    reference slice; K_by_slice: each slice's camera matrix at the output geometry from the focus
    model (None without one). mode: ecc (prior + registration) | prior (the focus model's warp only) | none."""
    if mode not in ALIGN_MODES:
        raise DatasetError(f"--align {mode!r}: expected one of {', '.join(ALIGN_MODES)}")
    S = len(frames)
    h, w = frames[0].shape[:2]
    if mode == "none":
        eye = np.broadcast_to(np.eye(3, dtype=np.float32), (S, 3, 3)).copy()
        nan = np.full(S, np.nan, np.float32)
        return StackAlignment(np.stack(frames), eye, nan, np.zeros(S, np.float32), ["none"] * S, np.ones((h, w), bool))
    priors = focus_priors(K_by_slice, ref_pos, S)
    o = opts if mode == "ecc" else dataclasses.replace(opts, motion="none")
    res = align_stack(frames, ref_pos, priors, o)
    maps = [a.H for a in res]
    warped = np.empty((S, *frames[0].shape), frames[0].dtype)
    for i, (f, H) in enumerate(zip(frames, maps)):
        warp_to_reference(f, H, warped[i])
    return StackAlignment(
        warped,
        np.stack(maps).astype(np.float32),
        np.array([1.0 - a.cc for a in res], np.float32),
        np.array([a.correction_px for a in res], np.float32),
        [a.status for a in res],
        covered_mask(maps, (w, h)),
    )
