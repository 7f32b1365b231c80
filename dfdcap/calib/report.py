"""`dfdcap report calibration.json`: a PNG that shows whether to take more board pictures, and where.

One column per camera (phone, sensor; or the single camera):
1. per-view RMS reprojection error as bars, with the overall RMS and the outlier threshold;
2. coverage: where the corners fell on the image (a grid of cells; empty cells are where
   the board has not been yet; view outlines drawn over it);
3. residual vectors (projected - observed) at the corners, magnified; the scale is printed;
4. the distortion models tried: held-out (cross-validated) and training RMS of each, the chosen
   one marked (a fancier model that only lowers the training bar is over-fitting).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dfdcap.calib.intrinsics import outlier_threshold
from dfdcap.calib.io import CameraCalibration, CameraFit, ViewResiduals, load_any_calibration
from dfdcap.cameras import CameraModel
from dfdcap.fileio import atomic_path

COVERAGE_CELLS = (8, 6)  # cells across, down


def coverage_grid(corners_px: np.ndarray, size: tuple[int, int], cells: tuple[int, int] = COVERAGE_CELLS) -> np.ndarray:
    """(cells_y, cells_x) int counts of corners per image cell. corners_px: (N, 2) pixels; size: (w, h)."""
    w, h = size
    cx, cy = cells
    counts = np.zeros((cy, cx), np.int64)
    if len(corners_px):
        ix = np.clip((corners_px[:, 0] / w * cx).astype(int), 0, cx - 1)
        iy = np.clip((corners_px[:, 1] / h * cy).astype(int), 0, cy - 1)
        np.add.at(counts, (iy, ix), 1)
    return counts


def _count(views: list | int) -> int:
    """How many views a list of names (dfdcap's files) or a count (other tools') stands for."""
    return views if isinstance(views, int) else len(views)


def _bars(ax, title: str, fit: CameraFit, dropped: list[str]) -> None:
    e = np.asarray(fit.per_view_px, np.float64)
    names = list(fit.view_names) or [str(i) for i in range(len(e))]
    thr = outlier_threshold(e)
    colors = ["tab:red" if x > thr else "tab:blue" for x in e]
    ax.bar(np.arange(len(e)), e, color=colors)
    ax.axhline(fit.rms_px, color="k", lw=1, label=f"overall RMS {fit.rms_px:.3f} px")
    if np.isfinite(thr):
        ax.axhline(thr, color="tab:red", lw=1, ls="--", label=f"outlier threshold {thr:.3f} px")
    ax.set_xticks(np.arange(len(e)))
    ax.set_xticklabels(names, rotation=90, fontsize=6 if len(e) > 25 else 8)
    ax.set_ylabel("RMS reprojection error (px)")
    extra = f"; dropped: {', '.join(dropped[:6])}{' ...' if len(dropped) > 6 else ''}" if dropped else ""
    ax.set_title(f"{title}: {len(e)} views{extra}", fontsize=10)
    ax.legend(fontsize=8, loc="upper right")


def _coverage(ax, title: str, cam: CameraModel, views: list[ViewResiduals]) -> None:
    w, h = cam.size
    pts = np.concatenate([v.corners_px for v in views]) if views else np.zeros((0, 2))
    counts = coverage_grid(pts, cam.size)
    ax.imshow(counts > 0, cmap="Greens", vmin=0, vmax=1.6, extent=(0, w, h, 0), alpha=0.6, interpolation="nearest")
    import matplotlib.cm as cm

    colors = cm.viridis(np.linspace(0, 1, max(1, len(views))))
    for v, c in zip(views, colors):
        p = v.corners_px
        if len(p) >= 3:
            from scipy.spatial import ConvexHull

            try:
                hull = p[ConvexHull(p).vertices]
                ax.fill(hull[:, 0], hull[:, 1], facecolor="none", edgecolor=c, lw=0.8)
            except Exception:  # degenerate (collinear) corner set: skip its outline
                pass
        ax.plot(p[:, 0], p[:, 1], ".", ms=1.5, color=c)
    cy, cx = counts.shape
    for i in range(1, cx):
        ax.axvline(i * w / cx, color="0.7", lw=0.5)
    for j in range(1, cy):
        ax.axhline(j * h / cy, color="0.7", lw=0.5)
    empty = int((counts == 0).sum())
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_aspect("equal")
    ax.set_title(f"{title}: corner coverage, {empty} of {counts.size} cells empty (white: add views there)", fontsize=10)


def _residuals(ax, title: str, cam: CameraModel, views: list[ViewResiduals]) -> None:
    w, h = cam.size
    if not views:
        ax.set_title(f"{title}: no residuals stored", fontsize=10)
        return
    p = np.concatenate([v.corners_px for v in views])
    r = np.concatenate([v.residuals_px for v in views])
    mag = np.linalg.norm(r, axis=1)
    p95 = float(np.percentile(mag, 95)) if len(mag) else 0.0
    # magnify so that the 95th-percentile residual is drawn 4 % of the image width long
    gain = 0.04 * w / p95 if p95 > 0 else 1.0
    ax.quiver(p[:, 0], p[:, 1], r[:, 0] * gain, r[:, 1] * gain, mag, angles="xy", scale_units="xy", scale=1,
              cmap="plasma", width=0.002)
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_aspect("equal")
    ax.set_title(f"{title}: residuals (projected - observed) x{gain:.0f}; 95th pct {p95:.3f} px, max {mag.max():.3f} px",
                 fontsize=10)


def _px(v) -> float:
    """A score from the file: null (no score) as nan."""
    return float("nan") if v is None else float(v)


def _models(ax, title: str, entry: dict) -> None:
    cands = entry.get("candidates") or {}
    if not cands:
        ax.set_title(f"{title}: distortion model {entry.get('chosen', '?')} (given, not selected)", fontsize=10)
        ax.axis("off")
        return
    names = list(cands)
    x = np.arange(len(names))
    cv = np.array([_px(cands[n].get("cv_rms_px")) for n in names], np.float64)
    tr = np.array([_px(cands[n].get("train_rms_px")) for n in names], np.float64)
    cv_plot = np.where(np.isfinite(cv), cv, np.nan)
    ax.bar(x - 0.2, tr, 0.4, color="0.7", label="training RMS")
    colors = ["tab:green" if n == entry["chosen"] else "tab:blue" for n in names]
    ax.bar(x + 0.2, cv_plot, 0.4, color=colors, label="held-out RMS (chosen: green)")
    finite = np.concatenate([tr[np.isfinite(tr)], cv[np.isfinite(cv)]])
    if finite.size:
        lo, hi = float(finite.min()), float(finite.max())
        bottom = max(0.0, lo - 0.5 * (hi - lo) - 1e-3)
        ax.set_ylim(bottom, hi + 0.15 * (hi - lo) + 1e-3)
        for k in np.flatnonzero(~np.isfinite(cv)):  # no held-out score: say so where its bar would stand
            ax.text(x[k] + 0.2, bottom, " no held-out score", rotation=90, ha="center", va="bottom", fontsize=7,
                    color="tab:red")
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=20, fontsize=7)
    ax.set_ylabel("RMS (px)")
    ax.set_title(f"{title}: distortion model {entry['chosen']} ({entry.get('folds', '?')}-fold cross-validation)", fontsize=10)
    ax.legend(fontsize=8, loc="upper right")


def write_calibration_report(path: str | os.PathLike, png: str | os.PathLike) -> Path:
    """Render the calibration file at `path` to `png` (written atomically). Returns the png path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cal = load_any_calibration(path)
    png = Path(png)
    if isinstance(cal, CameraCalibration):
        columns = [("camera", cal.camera, cal.fit, cal.views)]
        dropped = {"camera": list(cal.views_dropped)}
        c = cal.camera
        summary = (f"single camera {c.width}x{c.height}: RMS {cal.fit.rms_px:.3f} px, fx {c.fx:.2f} "
                   f"(+-{cal.fit.std.get('fx', float('nan')):.2f}) fy {c.fy:.2f} cx {c.cx:.2f} cy {c.cy:.2f}, "
                   f"{len(cal.fit.per_view_px)} views")
    else:
        columns = [("phone", cal.phone, cal.phone_fit, cal.views.get("phone", [])),
                   ("sensor", cal.sensor, cal.sensor_fit, cal.views.get("sensor", []))]
        drop = list(cal.stereo.get("views_dropped", []))
        dropped = {"phone": drop, "sensor": drop}
        t = np.asarray(cal.T_phone_from_sensor)[:3, 3]
        import cv2

        rvec, _ = cv2.Rodrigues(np.asarray(cal.T_phone_from_sensor)[:3, :3])
        unit = "m" if cal.board.get("square_m", 1.0) != 1.0 else "squares"
        u = cal.stereo.get("uncertainty") or {}
        unc = (f"; T uncertainty (1 sigma): rotation {u['rotation_std_deg']:.4f} deg, translation "
               f"{u['translation_std']:.5f} {u['translation_unit']} -> up to {u['reprojection_shift_px_2sigma']:.2f} px "
               f"(2 sigma) of reprojected depth" if u else "")
        summary = (
            f"stereo RMS {cal.stereo.get('rms_px', float('nan')):.3f} px over {_count(cal.stereo.get('views_used', []))} pairs "
            f"({len(drop)} dropped); phone RMS {cal.phone_fit.rms_px:.3f} px, sensor RMS {cal.sensor_fit.rms_px:.3f} px; "
            f"T_phone_from_sensor t = ({t[0]:.4f}, {t[1]:.4f}, {t[2]:.4f}) {unit}, |t| = {np.linalg.norm(t):.4f} {unit}, "
            f"rotation {np.degrees(np.linalg.norm(rvec)):.2f} deg{unc}"
        )
    if isinstance(cal, CameraCalibration):
        model_entries = {"camera": cal.distortion_model}
    else:
        model_entries = cal.stereo.get("distortion_models") or {}
    fig = Figure(figsize=(7.5 * len(columns), 20), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(4, len(columns), squeeze=False, gridspec_kw={"height_ratios": [1, 1.3, 1.3, 0.8]})
    for k, (name, cam, fit, views) in enumerate(columns):
        label = f"{name} {cam.width}x{cam.height}"
        _bars(axes[0, k], label, fit, dropped[name])
        _coverage(axes[1, k], label, cam, views)
        _residuals(axes[2, k], label, cam, views)
        _models(axes[3, k], label, model_entries.get(name) or {})
    import textwrap

    fig.suptitle(f"{Path(path).name}\n" + "\n".join(textwrap.wrap(summary, 170)), fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png")
    return png
