"""Slice alignment on the real focal sweeps (shared/data/focal_stack_pcb): how far SIFT features
still move between two slices after `dfdcap align`, against a feature-based peer.

Issue 15's goal: after alignment, matches between the first and last frames move by <= 1 px
(median, full resolution). Judged by dfdcap.dataset.align_check.feature_motion (SIFT + RANSAC
affine; the registration never sees these features). The peer aligns each frame to its
neighbour nearer the reference with SIFT + RANSAC similarity at full resolution and composes the
maps: the same features the judge uses, so it shows what the data allow, not what ECC misses.

Why one map per frame does not meet the goal on these sweeps (measured; the last lines print it):
the frames are not one similarity (or affine) of each other across the image. On sweep10, SIFT
similarities fitted to the push switch's body (the middle, raised above the board) and to the
board around it differ by +0.3 % in scale on every pair with enough matches (0-5: 1.0836 vs
1.0802): 2-5 px at the borders across the sweep. The first-last matches lie on the switch (frame 9
blurs the board away) while ECC, weighing the whole image, follows the board. On sweep7 the far
top and the near bottom differ by 0.1-0.25 % the other way round, so it is not the simple picture
of an entrance pupil moving with the lens (near things would grow faster): a focus-dependent
distortion or tilt may take part. One map per frame fitted to the judge's own features by least
squares over all SIFT pairs (tried) leaves 1.1 px on sweep7's first-last pair and 3 px on
sweep10's. Nor did a field on top of the maps settle it (tried: a smooth residual field per slice
from DIS optical flow against its aligned neighbour, smoothed with texture weights, 12x16 nodes):
it helps some pairs and hurts others. With 8 % smoothing at 512 px: sweep7 0-3 1.11 -> 0.40 px and
1-5 0.68 -> 0.44, but sweep10 0-9 4.02 -> 5.81 and 5-7 0.59 -> 0.98; other smoothing moves which
pairs gain. Not kept. ECC with a homography (what a tilted plane maps by when the magnification
depends on depth) likewise: sweep7 0-3 1.11 -> 0.45 px and 1-5 0.68 -> 0.49, but 0-6 1.27 -> 1.46
and sweep10 0-9 4.02 -> 10.95 (`dfdcap align --motion homography` offers it).

How far the judge itself can see (the table's brackets): the consensus of a pair is fitted to its
inlier matches, so its own error shrinks with their number. The brackets give the 5-95 % range of
the consensus over bootstrap resamples of the inliers (refitted by least squares), and the inlier
column counts distinct places (SIFT keeps two orientations of one blob as two keypoints). On
sweep7's first-last pair, 15 inliers scattered by ~1.7 px about their affine put the range at
0.85-2.03 px: the judge cannot tell dfdcap's 1.27 px from the goal's 1 px there (the SIFT chain's
maps read 0.54 px, by the same kind of features the judge uses). On sweep10's, 8 inliers sit at 7
places on defocus blobs, and the range is 3.7-9.6 px.

What the judge's first-last matches on sweep10 are (the last lines print it): after alignment, the
few matches with frames 8 and 9 (6-8 inliers) move radially by -0.4 to -1.4 % of their distance
from the image centre, scattered by 2-16 px about that, while pairs of sharper frames move by
<= 0.3 % (scatter 0.6-1.2 px). They lie on the gold pads, whose specular highlights change shape
and place as the pads blur (not a fixed scene point to register).

The judge matches features on the frames as captured and carries them through the maps: SIFT on
resampled slices moves with the resampling filter alone (bilinear and bicubic warps of the same
maps read 1.76 and 2.03 px on sweep10's pair 2-5).

Run: python benchmarks/align_real.py [--max-side 512]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from dfdcap.dataset.align import AlignOptions, align_stack
from dfdcap.dataset.align_check import feature_motion, judged_matches, match_motion, sift_matches
from dfdcap.fileio import read_image

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "focal_stack_pcb"


def feature_chain(frames: list[np.ndarray], ref: int) -> list[np.ndarray]:
    """The peer: slice -> reference maps composed from SIFT similarities between neighbours."""
    import cv2

    maps: list[np.ndarray | None] = [None] * len(frames)
    maps[ref] = np.eye(3)
    for d in range(1, len(frames)):
        for i in (ref - d, ref + d):
            if 0 <= i < len(frames):
                nb = i + 1 if i < ref else i - 1
                pa, pb = sift_matches(frames[i], frames[nb], n_features=8000)
                A, _ = cv2.estimateAffinePartial2D(pa, pb, ransacReprojThreshold=2.0, maxIters=20000, confidence=0.999)
                H = np.eye(3)
                H[:2] = A
                maps[i] = maps[nb] @ H
    return maps  # type: ignore[return-value]


SWITCH_BOX = (620, 490, 1540, 1340)  # sweep10, full resolution: the push switch's body (x0, y0, x1, y1), set by eye


def plane_scales(a: np.ndarray, b: np.ndarray, box: tuple[int, int, int, int]) -> tuple[float, int, float, int]:
    """Scale of the SIFT similarity a -> b fitted to the matches inside `box` and to those outside
    it (robust least median of squares), with their match counts."""
    import cv2

    pa, pb = sift_matches(a, b, n_features=8000, ratio=0.8)
    _, inl = cv2.estimateAffinePartial2D(pa, pb, ransacReprojThreshold=6.0, maxIters=20000, confidence=0.999)
    pa, pb = pa[inl.ravel() > 0], pb[inl.ravel() > 0]
    inside = (pa[:, 0] > box[0]) & (pa[:, 0] < box[2]) & (pa[:, 1] > box[1]) & (pa[:, 1] < box[3])
    out = []
    for m in (inside, ~inside):
        A, _ = cv2.estimateAffinePartial2D(pa[m], pb[m], method=cv2.LMEDS) if m.sum() >= 4 else (None, None)
        out += [float("nan") if A is None else float(np.hypot(A[0, 0], A[1, 0])), int(m.sum())]
    return tuple(out)  # type: ignore[return-value]


def radial_move(a: np.ndarray, b: np.ndarray, map_a: np.ndarray, map_b: np.ndarray) -> tuple[float, float, int]:
    """Matches between two frames carried through their alignment maps (the judge's RANSAC inliers):
    the least-squares radial move per pixel of distance from the image centre (a scale change
    through the centre), the median scatter about it (px), and the number of inliers."""
    pa, pb, A = judged_matches(a, b, map_a, map_b)
    if A is None:
        return float("nan"), float("nan"), 0
    r = pa - np.array([(a.shape[1] - 1) / 2, (a.shape[0] - 1) / 2])
    rn = np.linalg.norm(r, axis=1)
    radial = ((pb - pa) * r).sum(1) / rn
    slope = float((radial * rn).sum() / (rn * rn).sum())
    return slope, float(np.median(np.abs(radial - slope * rn))), len(pa)


def consensus_range(pa: np.ndarray, pb: np.ndarray, n: int = 500, seed: int = 0) -> tuple[float, float]:
    """5-95 % range of the judge's consensus move (median move of the affine a -> b at the inliers)
    over bootstrap resamples of the inlier matches, the affine refitted by least squares."""
    rng = np.random.default_rng(seed)
    X = np.c_[pa, np.ones(len(pa))]
    meds = []
    for _ in range(n):
        k = rng.integers(0, len(pa), len(pa))
        A, *_ = np.linalg.lstsq(X[k], pb[k], rcond=None)
        meds.append(np.median(np.linalg.norm(X @ A - pa, axis=1)))
    lo, hi = np.percentile(meds, [5, 95])
    return float(lo), float(hi)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-side", type=int, default=512, help="registration size, as `dfdcap align --max-side`")
    a = ap.parse_args()
    for name in ("sweep7", "sweep10"):
        paths = sorted(p for p in (DATA / name).iterdir() if p.suffix.lower() == ".jpg" and p.stem != "expected")
        frames = [read_image(p) for p in paths]
        S, ref = len(frames), len(frames) // 2
        t0 = time.perf_counter()
        ours = [r.H for r in align_stack(frames, ref, None, AlignOptions(max_side_px=a.max_side))]
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        peer = feature_chain(frames, ref)
        t_peer = time.perf_counter() - t0
        print(f"{name}: {S} frames {frames[0].shape[1]}x{frames[0].shape[0]}, reference {ref}; "
              f"dfdcap align {t_ours:.1f} s, SIFT chain {t_peer:.1f} s")
        print("  pair   inliers (places)  before (match / consensus px)   dfdcap align [judge's 90 % range]   SIFT chain")
        for i, j in ((0, S - 1), (0, ref), (ref, S - 1), (1, S - 2)):
            pa, pb, A = judged_matches(frames[i], frames[j], ours[i], ours[j])
            row = [feature_motion(frames[i], frames[j]), match_motion(pa, pb, A),
                   feature_motion(frames[i], frames[j], peer[i], peer[j])]
            lo, hi = consensus_range(pa, pb) if len(pa) >= 3 else (float("nan"), float("nan"))
            places = len(np.unique(np.round(pa), axis=0))
            cells = [f"{m:6.2f} / {c:5.2f}" for m, c, _ in row]
            print(f"  {i}-{j:<3d}  {row[1][2]:5d} ({places:4d})    {cells[0]}   {cells[1]} [{lo:.2f}-{hi:.2f}]   {cells[2]}")
            if (i, j) == (0, S - 1):
                m, c, _ = row[1]
        print(f"  first-last after dfdcap align: {m:.2f} px per match, {c:.2f} px consensus "
              f"(goal <= 1: {'MET' if c <= 1.0 else 'NOT MET'})")
        if name == "sweep10":
            print("  depth-dependent breathing: SIFT similarity scale on the switch body vs the board")
            for i, j in ((0, 5), (1, 5), (2, 5)):
                s_in, n_in, s_out, n_out = plane_scales(frames[i], frames[j], SWITCH_BOX)
                print(f"    {i}-{j}: switch {s_in:.4f} ({n_in} matches), board {s_out:.4f} ({n_out}): "
                      f"{100 * (s_in / s_out - 1):+.2f} %")
            print("  after dfdcap align: radial move of the matches per px from the centre (scatter, inliers)")
            for i, j in ((0, 5), (2, 5), (5, 7), (5, 8), (5, 9), (0, 9)):
                k, spread, n = radial_move(frames[i], frames[j], ours[i], ours[j])
                print(f"    {i}-{j}: {100 * k:+.2f} % ({spread:.2f} px, {n})")


if __name__ == "__main__":
    main()
