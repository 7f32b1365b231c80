from pathlib import Path

import cv2
import numpy as np
import pytest

from dfdcap.errors import ModelError
from dfdcap.lens import ThinLens
from dfdcap.models.baseline import best_focus_index, classical_dff


def planar_scene(h=96, w=160, near_m=0.3, far_m=0.6, frames=7, seed=0):
    """A textured plane tilted left (near) to right (far), imaged through a thin lens.

    Each column has one depth; every frame blurs each column with a Gaussian of
    sigma = CoC / 2.5 (px) of that column's depth (interpolated between precomputed blurs).
    """
    rng = np.random.default_rng(seed)
    tex = cv2.GaussianBlur(rng.uniform(0, 1, (h, w)).astype(np.float32), (0, 0), 0.7)
    tex = (tex - tex.min()) / (tex.max() - tex.min())
    depth_col = 1.0 / np.linspace(1 / near_m, 1 / far_m, w)  # even in diopters
    lens, pitch = ThinLens(0.0042, 1.8), 1.4e-6
    focus_m = 1.0 / np.linspace(1 / (near_m * 0.95), 1 / (far_m * 1.05), frames)
    sigmas = np.linspace(0, 6, 61)
    blurred = np.stack([tex if s == 0 else cv2.GaussianBlur(tex, (0, 0), s) for s in sigmas])
    stack = np.empty((frames, h, w, 3), np.uint8)
    for i, f in enumerate(focus_m):
        sig = np.clip(lens.coc_px(depth_col, f, pitch) / 2.5, 0, sigmas[-1])
        k = np.interp(sig, sigmas, np.arange(len(sigmas)))
        k0 = np.floor(k).astype(int)
        k1 = np.minimum(k0 + 1, len(sigmas) - 1)
        t = k - k0
        cols = np.arange(w)
        img = blurred[k0, :, cols].T * (1 - t) + blurred[k1, :, cols].T * t
        stack[i] = np.repeat((img * 255 + 0.5).clip(0, 255).astype(np.uint8)[..., None], 3, axis=2)
    return stack, focus_m, np.tile(depth_col, (h, 1)).astype(np.float32)


class TestClassicalDFF:
    def test_planar_scene_depth(self):
        """Tolerance: median relative error < 3 %, 90th percentile < 5 % (inner region; measured 1.6 % and 2.6 %)."""
        stack, focus_m, depth = planar_scene()
        est = classical_dff(stack, focus_m, window=9)
        assert est.shape == depth.shape and est.dtype == np.float32
        inner = (slice(8, -8), slice(8, -8))
        rel = np.abs(est[inner] - depth[inner]) / depth[inner]
        assert np.median(rel) < 0.03, np.median(rel)
        assert np.percentile(rel, 90) < 0.05, np.percentile(rel, 90)
        # sub-frame interpolation at work: more distinct depths than frames
        assert len(np.unique(np.round(est[inner], 4))) > 5 * len(focus_m)

    def test_parabola_peak(self):
        # measures 1, 3, 2 around index 1: vertex at 1 + 0.5*(1-2)/(1-6+2) = 1 + 1/6
        m = np.array([1.0, 3.0, 2.0, 0.5]).reshape(4, 1, 1)
        assert best_focus_index(m)[0, 0] == pytest.approx(1 + 1 / 6)
        # peak at the end stays at the end
        assert best_focus_index(m[::-1].copy())[0, 0] == pytest.approx(3 - 1 - 1 / 6)
        assert best_focus_index(np.array([0.0, 1.0, 5.0]).reshape(3, 1, 1))[0, 0] == 2.0

    def test_frame_count_mismatch(self):
        with pytest.raises(ModelError, match="3 frames but 2 focus"):
            classical_dff(np.zeros((3, 8, 8, 3), np.uint8), [0.1, 0.2])


PCB = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "focal_stack_pcb" / "sweep10"


@pytest.mark.skipif(not PCB.is_dir(), reason="shared real data not present")
def test_real_pcb_sweep_orders_surfaces():
    """Real sweep of a push button on a circuit board (focus distances unknown: frame index as
    the focus coordinate). The button's top is nearest, the switch body next, the board last,
    so they come into focus at increasing frames. Measured (512x384): button top 6.0, body
    4.0, board 2.7-2.9 frames."""
    from dfdcap.fileio import read_image

    frames = np.stack([cv2.resize(read_image(p), (512, 384), interpolation=cv2.INTER_AREA)
                       for p in sorted(PCB.glob("pcb_*.JPG"))])
    assert len(frames) == 10
    # focus "distance" 1/(k+1) m is k+1 diopters, so 1/depth - 1 gives back the frame index
    idx = 1.0 / classical_dff(frames, 1.0 / np.arange(1.0, 11.0)) - 1.0
    button = np.median(idx[165:195, 250:280])
    body = np.median(np.concatenate([idx[135:165, 170:230].ravel(), idx[260:290, 290:350].ravel()]))
    board = np.median(np.concatenate([idx[10:50, 150:350].ravel(), idx[330:370, 150:350].ravel()]))
    assert button > body + 1.0 and body > board + 0.5, (button, body, board)


@pytest.mark.skipif(not PCB.is_dir(), reason="shared real data not present")
def test_frame_order_does_not_change_depth():
    """`predict --classical` on the same real frames in another order differed by 2.9 mm mean (15 % of the
    pixels by > 5 mm): the sub-frame fit read whatever frames it was handed as neighbours."""
    from dfdcap.fileio import read_image

    frames = np.stack([cv2.resize(read_image(p), (256, 192), interpolation=cv2.INTER_AREA)
                       for p in sorted(PCB.glob("pcb_*.JPG"))[:7]])
    focus = np.linspace(0.10, 0.22, 7)
    perm = np.array([3, 0, 6, 1, 5, 2, 4])
    np.testing.assert_array_equal(classical_dff(frames[perm], focus[perm]), classical_dff(frames, focus))
