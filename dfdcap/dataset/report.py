"""`dfdcap report dataset.h5`: a PNG grid of a few samples: focus stack frames, depth, mask, CoC."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dfdcap.dataset.h5io import open_dataset
from dfdcap.fileio import atomic_path


def _pick(f, n_samples: int) -> list[tuple[str, int]]:
    """Up to n_samples (split, index) pairs spread over the splits and their samples."""
    out = []
    per = max(1, n_samples // max(1, len(f.splits)))
    for split in f.splits:
        n = f.n(split)
        out += [(split, int(i)) for i in np.unique(np.linspace(0, n - 1, min(per, n)).round().astype(int))]
    return out[:n_samples]


def write_dataset_report(h5: str | os.PathLike, png: str | os.PathLike, n_samples: int = 4, max_frames: int = 5) -> Path:
    """One row per sample: up to max_frames stack frames (focus in m), depth (m), mask, CoC of the
    nearest- and farthest-focused frames (px). Returns the PNG path. A sample without valid depth
    draws empty panels (NumPy's all-NaN warnings say nothing the picture does not)."""
    import warnings

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return _write_dataset_report(h5, png, n_samples, max_frames)


def _write_dataset_report(h5: str | os.PathLike, png: str | os.PathLike, n_samples: int, max_frames: int) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    png = Path(png)
    with open_dataset(h5) as f:
        picks = _pick(f, n_samples)
        # splits may hold stacks of different lengths: frames are picked per row, columns fit the longest
        nf = max(min(f.stack_shape(s)[0], max_frames) for s, _ in picks)
        has_coc = any(f.has_coc(s) for s, _ in picks)
        has_align = any(f"align_{s}" in f._h5 for s, _ in picks)
        ncol = nf + 2 + (2 if has_coc else 0) + (1 if has_align else 0)
        H, W = f.stack_shape(picks[0][0])[1:3]
        cw = 2.6
        fig, axes = plt.subplots(len(picks), ncol, figsize=(cw * ncol, cw * H / W * len(picks) + 0.8), squeeze=False)
        for row, (split, i) in enumerate(picks):
            stack, focus = f.stack(split, i), f.focus_m(split, i)
            depth, mask = f.depth_m(split, i), f.mask(split, i)
            prov = f.provenance(split, i)
            ax = axes[row]
            S = len(stack)
            fi = np.unique(np.linspace(0, S - 1, min(S, max_frames)).round().astype(int))
            for c, k in enumerate(fi):
                ax[c].imshow(stack[k])
                ax[c].set_title(f"focus {focus[k]:.2f} m", fontsize=8)
            c = nf
            valid = depth[mask] if depth is not None and mask is not None and mask.any() else np.array([0.0, 1.0])
            lo, hi = np.percentile(valid, [1, 99])
            if depth is not None:
                im = ax[c].imshow(np.where(mask, depth, np.nan), cmap="turbo", vmin=lo, vmax=hi)
                fig.colorbar(im, ax=ax[c], fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
            ax[c].set_title("depth (m)", fontsize=8)
            if mask is not None:
                ax[c + 1].imshow(mask, cmap="gray", vmin=0, vmax=1)
                ax[c + 1].set_title(f"mask {100 * mask.mean():.0f} % valid", fontsize=8)
            if has_coc:
                coc = f.coc_px(split, i)
                for j, k in enumerate((0, S - 1)):
                    if coc is None:
                        continue
                    im = ax[c + 2 + j].imshow(np.where(mask, coc[k], np.nan), cmap="magma", vmin=0,
                                              vmax=max(1.0, float(np.nanpercentile(np.where(mask, coc, np.nan), 99))))
                    fig.colorbar(im, ax=ax[c + 2 + j], fraction=0.046, pad=0.02).ax.tick_params(labelsize=6)
                    ax[c + 2 + j].set_title(f"CoC (px) @ {focus[k]:.2f} m", fontsize=8)
            if has_align:
                _draw_alignment(ax[-1], f, split, i, prov)
            sess = prov.get("session", "")
            ax[0].set_ylabel(f"{split} #{i}\n{sess}\nframes {prov.get('phone_indices', '')}", fontsize=7)
            for a in (ax[:-1] if has_align else ax):
                a.set_xticks([])
                a.set_yticks([])
        attrs = f.attrs
        title = f"{Path(h5).name}: {f.kind}, " + ", ".join(f"{s} {f.n(s)}" for s in f.splits)
        lens = f.coc_lens()  # None without all three lens attributes; a DatasetError when they are no numbers
        if lens is not None:
            title += (f"; lens f={1e3 * lens[0].focal_length_m:.2f} mm f/{lens[0].f_number:.1f}, "
                      f"pitch {1e6 * lens[1]:.2f} um; depth at the {attrs.get('reference_frame', '?')} frame")
        elif f.kind == "dfdcap":
            title += "; lens attributes incomplete (focal_length_m, f_number, pixel_pitch_m)"
        fig.suptitle(title, fontsize=9)
        fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return png


def _draw_alignment(ax, f, split: str, i: int, prov: dict) -> None:
    """Per slice: the scale of its map to the reference (%, left axis) and the registration's
    correction of the focus-model warp (px, right axis); x marks slices left unregistered."""
    S = f.stack_shape(split)[0]
    key, ckey = f"align_{split}", f"align_correction_{split}"
    shape = getattr(f._node(key), "shape", None) if key in f._h5 else None
    if shape != (f.n(split), S, 3, 3):  # a foreign or damaged array: say so in its panel, draw the rest
        ax.set_axis_off()
        ax.set_title(f"alignment not drawn: {key} " + ("absent" if shape is None else f"has shape {shape}, "
                     f"expected {(f.n(split), S, 3, 3)}"), fontsize=7, wrap=True)
        return
    maps = f._read(key, i).astype(np.float64)
    cshape = getattr(f._node(ckey), "shape", None) if ckey in f._h5 else None
    corr = f._read(ckey, i).astype(np.float64) if cshape == (f.n(split), S) else np.zeros(len(maps))
    scale = np.sqrt(np.abs(np.linalg.det(maps[:, :2, :2])))
    k = np.arange(len(maps))
    ax.plot(k, 100 * (scale - 1), "o-", color="tab:blue", ms=3)
    info = prov.get("align") if isinstance(prov.get("align"), dict) else {}
    status = info.get("status") if isinstance(info.get("status"), list) else []
    bad = [j for j, st in enumerate(status[:len(maps)]) if str(st).startswith("fallback")]
    if bad:
        ax.plot(bad, 100 * (scale[bad] - 1), "x", color="red", ms=7)
    ax.set_xlabel("slice", fontsize=7)
    ax.set_ylabel("scale to ref - 1 (%)", fontsize=7, color="tab:blue")
    ax.tick_params(labelsize=6)
    ax2 = ax.twinx()
    ax2.bar(k, corr, color="tab:orange", alpha=0.4, width=0.5)
    ax2.set_ylabel("registration correction (px)", fontsize=6, color="tab:orange")
    ax2.tick_params(labelsize=6)
    ax.set_title(f"alignment ({info.get('mode', '?')})", fontsize=8)
