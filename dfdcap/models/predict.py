"""`dfdcap predict`: depth from a focus stack of image files, by a network or the classical baseline.

The steps, each its own function:
  1. read the frames (all the same size);
  2. align them (focus breathing: the field of view changes with focus) -- `align_input_stack`,
     registration to the middle slice as build-dataset stores slices (`--no-align` skips it);
  3. rescale (`--scale` / `--size`) so the largest blur is about what the network was trained on;
  4. run the network or the classical baseline, in tiles with a margin on large frames so memory
     stays bounded (each tile is computed on its core plus `margin` pixels of context on every
     side, and only the core is kept: for any method whose reach is below the margin the result
     equals the untiled one);
  5. write a colour PNG and a 16-bit PNG.

Focus of each frame: metres (`--focus`), diopters (`--diopters`) or unknown (`--index`: the
frame index is an ordinal focus coordinate). With --index the frames are given stand-in focus
distances evenly spaced in diopters (INDEX_DIOPTERS, in capture order), and the output is the
fractional frame index of best focus (0 = first frame), a relative depth order, not metres.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from dfdcap.errors import ModelError
from dfdcap.fileio import content_key, read_images_one_size, repeats, write_image
from dfdcap.parse import plain_number

INDEX_DIOPTERS = (10.0, 2.0)  # --index: stand-in focus of the first and last frame (0.1 m ... 0.5 m)
DEFAULT_TILE = 1024  # tile core side (pixels) at the run resolution; 0 = never tile
DEFAULT_MARGIN = 64  # context pixels around each tile core
MIN_TILE = 32  # smaller cores would be mostly margin: many thousand tiles, hours of work for nothing


@dataclass(frozen=True)
class FocusCoordinates:
    """focus_m: stand-in or true focus distance per frame (metres); unit: 'm' or 'index'."""

    focus_m: list[float]
    unit: str

    def to_output(self, depth_m: np.ndarray) -> np.ndarray:
        """Depth (metres) -> the output unit: metres, or fractional frame index for --index."""
        if self.unit == "m":
            return depth_m
        near_d, far_d = INDEX_DIOPTERS
        step = (near_d - far_d) / max(len(self.focus_m) - 1, 1)
        with np.errstate(divide="ignore"):
            idx = (near_d - 1.0 / np.asarray(depth_m, np.float64)) / step
        return np.clip(idx, 0, len(self.focus_m) - 1).astype(np.float32)


@dataclass(frozen=True)
class PredictResult:
    colour_png: Path
    depth_png: Path
    depth_m: np.ndarray  # (H, W) float32: metres, or fractional frame index when unit == "index"
    unit: str = "m"
    size: tuple[int, int] = (0, 0)  # (W, H) the method ran at
    tiles: int = 1
    notes: tuple[str, ...] = ()  # warnings: repeated focus values, frames that could not be registered


def parse_focus(text: str, option: str = "--focus", unit: str = "distances in metres") -> list[float]:
    """"0.1,0.15,0.2" -> [0.1, 0.15, 0.2]; ModelError on anything that is not positive numbers."""
    try:
        vals = [plain_number(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise ModelError(f"{option}: expected comma-separated {unit}, got {text!r}") from None
    if not vals or any(not np.isfinite(v) or v <= 0 for v in vals):
        raise ModelError(f"{option}: {unit} must be positive (0 diopters = infinity cannot be a stack frame), got {text!r}")
    return vals


MM_RANGE_M = (0.002, 65.0)  # focus distances whose depth the uint16 mm PNG can hold (0 = invalid, 65535 = clipped)


def focus_coordinates(n_frames: int, focus: str | None = None, diopters: str | None = None,
                      index: bool = False) -> FocusCoordinates:
    """Exactly one of focus (metres), diopters, index -> the frames' focus coordinates."""
    given = [name for name, v in (("--focus", focus), ("--diopters", diopters), ("--index", index)) if v]
    if len(given) != 1:
        raise ModelError(f"predict: give exactly one of --focus METRES, --diopters D or --index (got {', '.join(given) or 'none'})")
    if index:
        d = np.linspace(INDEX_DIOPTERS[0], INDEX_DIOPTERS[1], n_frames)
        return FocusCoordinates([float(1.0 / v) for v in d], "index")
    vals = parse_focus(focus, "--focus") if focus else [1.0 / v for v in parse_focus(diopters, "--diopters", "diopters")]
    if len(vals) != n_frames:
        opt = "--focus" if focus else "--diopters"
        raise ModelError(f"predict: {n_frames} images but {len(vals)} {opt} values (one per image, comma-separated: {opt} a,b,...)")
    if len(set(vals)) < 2:  # one focus distance: no sweep, every pixel would get that distance
        raise ModelError(f"predict: every image has the same focus ({vals[0]:g} m); a focus stack needs at least two")
    if not MM_RANGE_M[0] <= min(vals) <= max(vals) <= MM_RANGE_M[1]:  # the output lies within the focus range
        raise ModelError(f"predict: focus {min(vals):g}-{max(vals):g} m lies outside what the 16-bit millimetre PNG holds "
                         f"({MM_RANGE_M[0]:g}-{MM_RANGE_M[1]:g} m); check the units of {'--focus (metres)' if focus else '--diopters (1/m)'}")
    return FocusCoordinates(vals, "m")


def colourise(depth_m: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """(H, W) depth -> (H, W, 3) uint8 RGB with the turbo colour map (near = blue... far = red).

    Through a 256-entry lookup table, so a 12 MP map costs bytes per pixel, not a float RGBA image.
    """
    from matplotlib import colormaps

    d = np.asarray(depth_m, dtype=np.float32)
    ok = np.isfinite(d)
    sample = d[ok][:: max(1, int(ok.sum()) // 1_000_000)]  # percentiles from at most ~1e6 pixels
    lo = float(np.percentile(sample, 1)) if lo is None and sample.size else (lo or 0.0)
    hi = float(np.percentile(sample, 99)) if hi is None and sample.size else (hi or 1.0)
    lut = (colormaps["turbo"](np.linspace(0, 1, 256))[:, :3] * 255 + 0.5).astype(np.uint8)
    t = np.clip((np.nan_to_num(d, nan=lo) - lo) * np.float32(255.0 / max(hi - lo, 1e-9)) + 0.5, 0, 255).astype(np.uint8)
    rgb = lut[t]
    rgb[~ok] = 0
    return rgb


def depth_to_mm_u16(depth_m: np.ndarray) -> np.ndarray:
    """(H, W) metres -> uint16 millimetres (0 = invalid, clipped at 65.535 m)."""
    d = np.nan_to_num(np.asarray(depth_m, dtype=np.float64), nan=0.0)
    return np.clip(np.round(d * 1000.0), 0, 65535).astype(np.uint16)


def index_to_u16(index: np.ndarray, n_frames: int) -> np.ndarray:
    """(H, W) fractional frame index -> uint16, 0 = first frame ... 65535 = last frame."""
    t = np.nan_to_num(np.asarray(index, np.float64), nan=0.0) / max(n_frames - 1, 1)
    return np.clip(np.round(t * 65535.0), 0, 65535).astype(np.uint16)


def predict_depth(model: torch.nn.Module, frames: list[np.ndarray] | np.ndarray, focus_m: list[float]) -> np.ndarray:
    """frames: S images (H, W, 3) uint8 RGB; focus_m: S metres -> depth (H, W) float32 metres.

    Frames are sorted by focus distance first (the recurrent models read the stack in order).
    """
    order = np.argsort(focus_m)
    stack = np.stack([frames[i] for i in order]).astype(np.float32) / 255.0
    x = torch.from_numpy(stack.transpose(0, 3, 1, 2))[None]
    f = torch.tensor([focus_m[i] for i in order], dtype=torch.float32)[None]
    model.eval().to(memory_format=torch.channels_last)  # faster CPU convolutions, same numbers
    with torch.inference_mode():
        return model(x, f)["depth"][0, 0].numpy().astype(np.float32)


def align_input_stack(frames: list[np.ndarray], focus_m: list[float]) -> tuple[list[np.ndarray], dict[int, str]]:
    """The stack registered to its middle slice by focus distance, as build-dataset stores slices
    (dfdcap.dataset.align; no focus model here, registration only), and {frame: why} of the frames
    that could not be registered: they stay as they are."""
    from dfdcap.dataset.align import align_stack, warp_to_reference

    order = list(np.argsort(focus_m))
    ref = order[len(order) // 2]
    sorted_frames = [frames[i] for i in order]
    maps = align_stack(sorted_frames, order.index(ref), None)
    out = list(frames)
    failed = {}
    for pos, i in enumerate(order):
        out[i] = warp_to_reference(frames[i], maps[pos].H)
        if maps[pos].status.startswith("fallback"):
            failed[int(i)] = maps[pos].status.removeprefix("fallback: ")
    return out, failed


def tile_windows(h: int, w: int, tile: int, margin: int) -> list[tuple[slice, slice, slice, slice]]:
    """Cores that partition an h x w image (side <= tile) and their windows (core + margin, clipped).

    Returns (window_y, window_x, core_y_in_window, core_x_in_window) per tile; tile <= 0: one tile.
    """
    if tile <= 0 or (h <= tile and w <= tile):
        return [(slice(0, h), slice(0, w), slice(0, h), slice(0, w))]
    out = []
    for y0 in range(0, h, tile):
        y1 = min(h, y0 + tile)
        wy0, wy1 = max(0, y0 - margin), min(h, y1 + margin)
        for x0 in range(0, w, tile):
            x1 = min(w, x0 + tile)
            wx0, wx1 = max(0, x0 - margin), min(w, x1 + margin)
            out.append((slice(wy0, wy1), slice(wx0, wx1), slice(y0 - wy0, y1 - wy0), slice(x0 - wx0, x1 - wx0)))
    return out


def run_tiled(method: Callable[[np.ndarray], np.ndarray], stack: np.ndarray, tile: int = DEFAULT_TILE,
              margin: int = DEFAULT_MARGIN, progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, int]:
    """Apply method ((S, h, w, 3) uint8 -> (h, w)) tile by tile over stack (S, H, W, 3); -> ((H, W), tiles)."""
    _, h, w, _ = stack.shape
    windows = tile_windows(h, w, tile, margin)
    out = np.zeros((h, w), np.float32)
    for k, (wy, wx, cy, cx) in enumerate(windows):
        res = method(np.ascontiguousarray(stack[:, wy, wx]))
        out[wy, wx][cy, cx] = res[cy, cx]
        if progress is not None:
            progress(k + 1, len(windows))
    return out, len(windows)


def parse_scale(scale: float | None, size: str | None, w: int, h: int) -> tuple[int, int]:
    """(W, H) to run at: --scale factor, or --size WxH (or W: height keeps the aspect), else (w, h)."""
    if scale is not None and size is not None:
        raise ModelError("predict: give --scale or --size, not both")
    if scale is not None:
        if not (np.isfinite(scale) and 0 < scale <= 4):
            raise ModelError(f"--scale: expected a factor in (0, 4], got {scale}")
        return max(8, round(w * scale)), max(8, round(h * scale))
    if size is None:
        return w, h
    try:
        parts = [plain_number(v, int) for v in size.lower().split("x")]
    except ValueError:
        raise ModelError(f"--size: expected WxH or W in pixels, got {size!r}") from None
    if len(parts) not in (1, 2) or min(parts) < 8:
        raise ModelError(f"--size: expected WxH or W (at least 8 pixels), got {size!r}")
    out = (parts[0], parts[1]) if len(parts) == 2 else (parts[0], max(8, round(h * parts[0] / w)))
    if out[0] > 4 * w or out[1] > 4 * h:  # as --scale: at most 4x the images (99999x99999 is 30 GB a frame)
        raise ModelError(f"--size {size}: at most 4x the {w}x{h} images on each side")
    return out


def rescale(frames: list[np.ndarray], size: tuple[int, int]) -> list[np.ndarray]:
    """Resize every frame to size (W, H); area averaging when shrinking."""
    import cv2

    w, h = size
    if frames[0].shape[1] == w and frames[0].shape[0] == h:
        return frames
    interp = cv2.INTER_AREA if w < frames[0].shape[1] else cv2.INTER_LINEAR
    return [cv2.resize(f, (w, h), interpolation=interp) for f in frames]


def read_frames(images: list[str | Path]) -> list[np.ndarray]:
    """The stack's image files as RGB uint8 (H, W, 3), all one size (ModelError otherwise)."""
    missing = next((p for p in images if not Path(p).exists()), None)
    if missing is not None:  # e.g. a shell pattern that matched nothing, passed on as it was written
        raise ModelError(f"{missing}: no such image file")
    if len(images) < 2:
        raise ModelError("predict: a focus stack needs at least 2 images")
    frames = read_images_one_size(images)
    check_distinct_frames(images, frames)
    return frames


def repeated_focus_notes(images: list[str | Path], coords: FocusCoordinates) -> list[str]:
    """A warning for each frame given the focus of an earlier one: a typo, usually; but a lens held
    at the end of its range repeats its focus, so it is not refused."""
    if coords.unit != "m":
        return []
    return [f"{images[i]} and {images[j]} are given the same focus ({coords.focus_m[j]:g} m): a typo? "
            "(a lens held at the end of its range does repeat its focus)"
            for i, j in repeats((f, i) for i, f in enumerate(coords.focus_m))]


def check_distinct_frames(images: list[str | Path], frames: list[np.ndarray]) -> None:
    """ModelError where two frames hold the same pixels (one file given twice, or a copy): a focus
    stack's frames differ in focus, and a repeated frame only skews the depth toward its focus."""
    for first, path in repeats((content_key(np.ascontiguousarray(f).data), p) for p, f in zip(images, frames)):
        what = "is given twice" if Path(first) == Path(path) else f"holds the same pixels as {first}"
        raise ModelError(f"{path}: {what}; the frames of a focus stack are focused at different distances")


def stack_method(checkpoint: str | Path | None, focus_m: list[float], window: int = 9) -> Callable[[np.ndarray], np.ndarray]:
    """The depth method on (S, h, w, 3) uint8 -> (h, w) metres: a checkpoint's network, or classical (None)."""
    if checkpoint is None:
        from dfdcap.models.baseline import classical_dff

        return lambda st: classical_dff(st, np.asarray(focus_m), window)
    from dfdcap.models.checkpoint import load_checkpoint
    from dfdcap.models.shipped import resolve_checkpoint

    model, _ = load_checkpoint(resolve_checkpoint(checkpoint))

    def method(st: np.ndarray) -> np.ndarray:
        depth = predict_depth(model, st, focus_m)
        if not np.isfinite(depth).all():  # would be written as 0 mm and "frame index nan"
            raise ModelError(f"{checkpoint}: the network's depth is NaN or infinite on these frames "
                             "(damaged or diverged weights?); nothing written")
        return depth

    return method


def output_paths(out: str | Path, unit: str = "m") -> tuple[Path, Path]:
    """The colour picture (`out`: .png, or .jpg / .jpeg as asked; no suffix: .png) and the 16-bit PNG
    beside it: <stem>_mm.png (unit "m") or <stem>_index.png. Another suffix is refused: writing
    x.png for -o x.tiff would leave the user looking for a file that is not there."""
    out = Path(out)
    if out.is_dir():  # else "-o results/" wrote results.png and results_mm.png beside the folder
        raise ModelError(f"{out}: is a folder; name the depth picture, e.g. -o {out / 'depth.png'}")
    if not out.suffix:
        out = out.with_suffix(".png")
    elif out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise ModelError(f"{out}: the depth picture is written as PNG or JPEG: name it .png or .jpg (got {out.suffix!r})")
    return out, out.with_name(out.stem + ("_mm.png" if unit == "m" else "_index.png"))


def write_outputs(out: str | Path, result: np.ndarray, coords: FocusCoordinates) -> tuple[Path, Path]:
    """<out> (colour) and <stem>_mm.png (metres -> uint16 mm) or <stem>_index.png (index -> uint16);
    both files or neither."""
    out, second = output_paths(out, coords.unit)
    data = depth_to_mm_u16(result) if coords.unit == "m" else index_to_u16(result, len(coords.focus_m))
    write_image(out, colourise(result))
    try:
        write_image(second, data)
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    return out, second


def predict(
    checkpoint: str | Path | None,
    images: list[str | Path],
    coords: FocusCoordinates | list[float],
    out: str | Path,
    *,
    scale: float | None = None,
    size: str | None = None,
    tile: int = DEFAULT_TILE,
    margin: int = DEFAULT_MARGIN,
    progress: Callable[[int, int], None] | None = None,
    align: bool = True,
) -> PredictResult:
    """Write <out> (colour PNG or JPEG) and a 16-bit PNG beside it; checkpoint None = the classical baseline.

    coords: a FocusCoordinates, or plain focus distances in metres (one per image).
    """
    if not isinstance(coords, FocusCoordinates):
        coords = FocusCoordinates([float(v) for v in coords], "m")
    if len(images) != len(coords.focus_m):
        raise ModelError(f"predict: {len(images)} images but {len(coords.focus_m)} focus distances")
    if tile < 0 or 0 < tile < MIN_TILE:
        raise ModelError(f"--tile: expected 0 (whole image) or at least {MIN_TILE} pixels, got {tile}")
    out = Path(out)
    method = stack_method(checkpoint, coords.focus_m)  # a bad checkpoint fails before any image is read
    frames = read_frames(images)
    notes = repeated_focus_notes(images, coords)
    if align:  # focus breathing: slices to the middle slice's geometry, as in training data
        frames, failed = align_input_stack(frames, coords.focus_m)
        notes += [f"{images[i]}: not registered to the middle frame ({why}); used as it is" for i, why in sorted(failed.items())]
    run_size = parse_scale(scale, size, frames[0].shape[1], frames[0].shape[0])
    stack = np.stack(rescale(frames, run_size))
    del frames
    depth, n_tiles = run_tiled(method, stack, tile, margin, progress)
    result = coords.to_output(depth)
    out.parent.mkdir(parents=True, exist_ok=True)  # only now: a failed run leaves no empty folders (the CLI checked it can)
    colour_png, data_png = write_outputs(out, result, coords)
    return PredictResult(colour_png, data_png, result, coords.unit, run_size, n_tiles, tuple(notes))
