"""`dfdcap predict`: depth from a focus stack of image files with a trained checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dfdcap.errors import ModelError
from dfdcap.fileio import read_image, write_image


@dataclass(frozen=True)
class PredictResult:
    colour_png: Path
    depth_png: Path
    depth_m: np.ndarray  # (H, W) float32 metres


def parse_focus(text: str) -> list[float]:
    """"0.1,0.15,0.2" -> [0.1, 0.15, 0.2] metres; ModelError on anything else."""
    try:
        vals = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise ModelError(f"--focus: expected comma-separated distances in metres, got {text!r}") from None
    if not vals or any(not np.isfinite(v) or v <= 0 for v in vals):
        raise ModelError(f"--focus: distances must be positive metres, got {text!r}")
    return vals


def colourise(depth_m: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """(H, W) depth -> (H, W, 3) uint8 RGB with the turbo colour map (near = blue... far = red)."""
    from matplotlib import colormaps

    d = np.asarray(depth_m, dtype=np.float64)
    ok = np.isfinite(d)
    lo = float(np.percentile(d[ok], 1)) if lo is None and ok.any() else (lo or 0.0)
    hi = float(np.percentile(d[ok], 99)) if hi is None and ok.any() else (hi or 1.0)
    t = np.clip((np.nan_to_num(d, nan=lo) - lo) / max(hi - lo, 1e-9), 0, 1)
    rgb = (colormaps["turbo"](t)[..., :3] * 255 + 0.5).astype(np.uint8)
    rgb[~ok] = 0
    return rgb


def depth_to_mm_u16(depth_m: np.ndarray) -> np.ndarray:
    """(H, W) metres -> uint16 millimetres (0 = invalid, clipped at 65.535 m)."""
    d = np.nan_to_num(np.asarray(depth_m, dtype=np.float64), nan=0.0)
    return np.clip(np.round(d * 1000.0), 0, 65535).astype(np.uint16)


def predict_depth(model: torch.nn.Module, frames: list[np.ndarray], focus_m: list[float]) -> np.ndarray:
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


def align_input_stack(frames: list[np.ndarray], focus_m: list[float]) -> list[np.ndarray]:
    """The stack registered to its middle slice by focus distance, as build-dataset stores slices
    (dfdcap.dataset.align; no focus model here, registration only; a slice that fails stays as it is)."""
    from dfdcap.dataset.align import align_stack, warp_to_reference

    order = list(np.argsort(focus_m))
    ref = order[len(order) // 2]
    sorted_frames = [frames[i] for i in order]
    maps = align_stack(sorted_frames, order.index(ref), None)
    out = list(frames)
    for pos, i in enumerate(order):
        out[i] = warp_to_reference(frames[i], maps[pos].H)
    return out


def predict(checkpoint: str | Path, images: list[str | Path], focus_m: list[float], out: str | Path,
            align: bool = True) -> PredictResult:
    """Write <out> (colour-mapped depth PNG) and <out stem>_mm.png (16-bit depth, millimetres)."""
    from dfdcap.models.checkpoint import load_checkpoint

    if len(images) != len(focus_m):
        raise ModelError(f"predict: {len(images)} images but {len(focus_m)} focus distances")
    if len(images) < 2:
        raise ModelError("predict: a focus stack needs at least 2 images")
    model, _ = load_checkpoint(checkpoint)
    frames = [read_image(p) for p in images]
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise ModelError(f"predict: images differ in size: {sorted(shapes)}")
    if align:  # focus breathing: slices to the middle slice's geometry, as in training data
        frames = align_input_stack(frames, focus_m)
    depth = predict_depth(model, frames, focus_m)
    out = Path(out)
    if out.suffix.lower() != ".png":
        out = out.with_suffix(".png")
    out.parent.mkdir(parents=True, exist_ok=True)
    depth_png = out.with_name(out.stem + "_mm.png")
    write_image(out, colourise(depth))
    write_image(depth_png, depth_to_mm_u16(depth))
    return PredictResult(out, depth_png, depth)
