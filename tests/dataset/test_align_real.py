"""Alignment of a real focal sweep: shared/data/focal_stack_pcb/sweep10 (10 frames, 2048x1536, a
small camera focusing through a circuit board; its magnification changes by ~15 % over the sweep).

Registration runs on copies downscaled to 512 px and is applied at full resolution. Judged by SIFT
matches (ratio test 0.75, RANSAC), which the alignment never sees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dfdcap.dataset.align import AlignOptions, align_stack
from dfdcap.dataset.align_check import feature_motion
from dfdcap.fileio import read_image

SWEEP = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "focal_stack_pcb" / "sweep10"

pytestmark = pytest.mark.slow  # ~15 s: ten 3-megapixel frames, SIFT at full resolution


@pytest.fixture(scope="module")
def sweep():
    if not SWEEP.is_dir():
        pytest.skip(f"{SWEEP} missing")
    frames = [read_image(p) for p in sorted(SWEEP.glob("pcb_*.JPG"))]
    assert len(frames) == 10 and frames[0].shape == (1536, 2048, 3)
    res = align_stack(frames, 5, None, AlignOptions(max_side_px=512))  # as `dfdcap align` does
    return frames, res


def test_scale_runs_monotonically_across_the_sweep(sweep):
    _, res = sweep
    assert all(a.status in ("registered", "reference") for a in res), [a.status for a in res]
    scales = np.array([a.scale for a in res])
    assert np.all(np.diff(scales) < 0), scales  # measured 1.081 -> 0.934
    assert scales[0] > 1.05 and scales[-1] < 0.95


def test_features_move_far_less_after_alignment(sweep):
    """Judged on pairs with 40-150 SIFT inliers (frames 7-9 are so defocused that pairs with them
    keep only 10-20). Matched on the frames as captured and carried through the maps (no resampled
    pixels in the judge). Measured (consensus move at the inliers, before -> after): 0-6 74 -> 1.2 px,
    2-5 33 -> 1.7 px, 4-5 9.6 -> 0.8 px. The issue's bound of 1 px holds for neighbours only: ECC on
    the blurred intensities and SIFT on the sharp ones disagree by 1-2 px under strong defocus."""
    frames, res = sweep
    for (i, j), bound in (((0, 6), 2.0), ((2, 5), 2.0), ((4, 5), 1.0)):
        before = feature_motion(frames[i], frames[j])
        after = feature_motion(frames[i], frames[j], res[i].H, res[j].H)
        print(i, j, before, after)
        assert before[1] > 5.0  # tens of px at the corners before
        assert after[1] <= bound, (i, j, before, after)


@pytest.fixture(scope="module")
def sweep7():
    """sweep7: 7 frames, an oblique view from the front connector to the heat sink, focus swept the
    other way."""
    d = SWEEP.parent / "sweep7"
    if not d.is_dir():
        pytest.skip(f"{d} missing")
    frames = [read_image(p) for p in sorted(d.glob("pcb_*.jpg"))]
    return frames, align_stack(frames, len(frames) // 2, None, AlignOptions(max_side_px=512))


def test_scale_runs_monotonically_across_the_other_sweep(sweep7):
    """The magnification runs monotonically there too, here growing (measured 0.980 -> 1.016)."""
    _, res = sweep7
    assert all(a.status in ("registered", "reference") for a in res), [a.status for a in res]
    scales = np.array([a.scale for a in res])
    assert np.all(np.diff(scales) > 0), scales
    assert scales[0] < 0.99 and scales[-1] > 1.01


def test_features_of_the_other_sweep_move_under_a_pixel(sweep7):
    """Pairs with 40-150 SIFT inliers, where the judge's consensus is steady (5-95 % bootstrap
    range 0.24-0.47 px on 3-6 and 0.47-0.98 px on 1-5; benchmarks/align_real.py prints it).
    Measured before -> after: 3-6 14.3 -> 0.30 px, 1-5 15.3 -> 0.68 px."""
    frames, res = sweep7
    for i, j in ((3, 6), (1, 5)):
        before = feature_motion(frames[i], frames[j])
        after = feature_motion(frames[i], frames[j], res[i].H, res[j].H)
        assert before[1] > 10.0 and after[2] >= 30, (i, j, before, after)
        assert after[1] <= 1.0, (i, j, before, after)


def test_a_slice_that_cannot_register_says_why_in_full(tmp_path):
    """A flat frame beside a real slice falls back to the prior; its status gave OpenCV's text cut at 80
    characters, source path included ("…ecc.cpp:589: error: (-7:Iterations do")."""
    import json

    import cv2

    from dfdcap.dataset.align import align_files

    real = read_image(SWEEP / "pcb_000.JPG")[::4, ::4]
    cv2.imwrite(str(tmp_path / "a.png"), real[..., ::-1])
    cv2.imwrite(str(tmp_path / "flat.png"), np.full_like(real, 128))
    align_files([tmp_path / "a.png", tmp_path / "flat.png"], tmp_path / "out", reference=1)
    status = json.loads((tmp_path / "out" / "alignment.json").read_text())["frames"][0]["status"]
    assert status.startswith("fallback: ECC registration did not converge (") and status.endswith(")"), status
    assert ".cpp" not in status and "error: (" not in status, status
