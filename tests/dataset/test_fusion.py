"""Fusion of the depth frames paired with one static stack: median and Open3D TSDF, on noisy
box-scene frames with dropouts (the truth is the noise-free ray cast)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dataset_scene import SENSOR, render_depth
from dfdcap.cameras import CameraModel
from dfdcap.dataset.fusion import fuse_depth, fuse_median, fuse_tsdf
from dfdcap.errors import DatasetError

DISTORTED = CameraModel(SENSOR.K, np.array([0.02, -0.05, 0.0, 0.0, 0.0]), SENSOR.size)


def noisy_frames(cam: CameraModel, n: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, H, W) frames: truth * (1 + 0.4 % noise), millimetre steps, 10 % random dropouts; and the truth."""
    rng = np.random.default_rng(seed)
    truth, _ = render_depth(cam, np.eye(4))
    frames = []
    for _ in range(n):
        f = np.round(truth * (1 + rng.normal(0, 0.004, truth.shape)) / 0.001) * 0.001
        f[rng.random(truth.shape) < 0.1] = 0
        frames.append(f.astype(np.float32))
    return np.stack(frames), truth


def rel_err(d: np.ndarray, truth: np.ndarray) -> float:
    m = d > 0
    return float(np.median(np.abs(d[m] - truth[m]) / truth[m]))


def check_tsdf_cuts_noise_and_fills_holes_of_a_distorted_camera() -> None:
    frames, truth = noisy_frames(DISTORTED)
    fused = fuse_tsdf(frames, DISTORTED)
    assert fused.shape == truth.shape and fused.dtype == np.float32
    single = frames[0]
    # measured: 0.15 % vs 0.27 % median error, 91.9-93 % vs 90 % of the pixels valid
    # (Open3D's multithreaded integration varies the coverage a little from run to run)
    assert rel_err(fused, truth) < 0.7 * rel_err(single, truth)
    assert (fused > 0).mean() > (single > 0).mean() + 0.01
    # resampled back into the distorted camera: no shift of the box outline
    assert np.median(np.abs(fused - truth)[fused > 0]) < 0.003


class TestFusion:
    def test_tsdf_cuts_noise_and_fills_holes_of_a_distorted_camera(self):
        """Run in a fresh process with a time limit: Open3D's VoxelBlockGrid.ray_cast sometimes
        never returns (isl-org/Open3D#6821), which we saw only late in a long test process."""
        code = "import test_fusion as t; t.check_tsdf_cuts_noise_and_fills_holes_of_a_distorted_camera()"
        for attempt in range(2):
            try:
                r = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent,
                                   capture_output=True, text=True, timeout=900)
                break
            except subprocess.TimeoutExpired:
                if attempt == 1:
                    pytest.fail("Open3D TSDF ray casting hung twice (isl-org/Open3D#6821)")
        assert r.returncode == 0, r.stderr[-3000:]

    def test_median_needs_half_the_frames(self):
        frames, truth = noisy_frames(SENSOR, n=4, seed=1)
        fused = fuse_median(frames)
        assert rel_err(fused, truth) < 0.8 * rel_err(frames[0], truth)
        assert (fused > 0).mean() > 0.99  # 10 % dropouts each: nearly every pixel seen twice
        frames[1:, :5] = 0  # seen by one frame of four only
        assert not (fuse_median(frames)[:5] > 0).any()

    def test_dispatch_and_bad_input(self):
        frames, _ = noisy_frames(SENSOR, n=2)
        assert np.array_equal(fuse_depth(frames, "none", SENSOR), frames[0])
        with pytest.raises(DatasetError, match="fuse mode"):
            fuse_depth(frames, "mean", SENSOR)
        with pytest.raises(DatasetError, match="expected"):
            fuse_tsdf(frames[:, :10], SENSOR)
        assert not fuse_tsdf(np.zeros_like(frames), SENSOR).any()
