"""The thin-lens renderer against the CoC formula, and its occlusion handling against a
reference built by compositing separately blurred layers."""

import math

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.signal import fftconvolve

from dfdcap.cameras import CameraModel
from dfdcap.lens import FocusSchedule, ThinLens
from dfdcap.sim.render import disk_kernel, random_focus_stack, render_defocus
from dfdcap.sim.rig import RigConfig, SimRig
from dfdcap.sim.scene import Primitive, Scene, constant_texture, step_edge_scene, two_plane_scene


def disk_esf(x_over_r: float) -> float:
    """Fraction of a uniform disk's area left of x (x in units of the radius)."""
    a = np.clip(x_over_r, -1, 1)
    return 0.5 + (a * math.sqrt(1 - a * a) + math.asin(a)) / math.pi


# 10-90 % width of a disk's edge spread function, in diameters
W1090_PER_DIAMETER = brentq(lambda a: disk_esf(a) - 0.9, 0, 1)  # = half the 10-90 width over the radius


def measure_coc_px(img: np.ndarray, rows: slice) -> float:
    """Disk diameter (px) implied by the 10-90 % width of a vertical step edge."""
    prof = img[rows].astype(np.float64).mean(axis=(0, 2))
    lo, hi = prof[:20].mean(), prof[-20:].mean()
    esf = (prof - lo) / (hi - lo)

    def crossing(level):
        i = int(np.flatnonzero(esf >= level)[0])
        return i - 1 + (level - esf[i - 1]) / (esf[i] - esf[i - 1])

    width = crossing(0.9) - crossing(0.1)
    return width / W1090_PER_DIAMETER


class TestDiskKernel:
    def test_sums_to_one_and_size(self):
        for c in (1.5, 7.0, 20.3):
            k = disk_kernel(c)
            assert k.sum() == pytest.approx(1.0, abs=1e-6)
            assert k.shape[0] >= math.floor(c) and k.shape[0] % 2 == 1

    def test_below_one_pixel_is_identity(self):
        assert disk_kernel(0.4).shape == (1, 1)


class TestEdgeSpreadMatchesCoc:
    """A sharp step edge at a known depth, rendered by the simulated phone out of focus: the
    blur measured from the image matches ThinLens.coc_px within 10 %."""

    @pytest.mark.parametrize("depth_m,focus_m", [(0.3, 0.15), (0.3, 0.1), (1.0, 0.1), (0.15, 0.6)])
    def test_phone_frame(self, depth_m, focus_m):
        cfg = RigConfig(
            scene=step_edge_scene(depth_m), phone_size=(1008, 756), phone_dist=(0, 0, 0, 0, 0),
            T_phone_from_sensor=np.eye(4), phone_noise=(0.003, 0.0), phone_focus_error_diopters=0.0,
        )
        rig = SimRig(cfg)
        phone = rig.phone()
        phone.start(FocusSchedule(focus_m, 2.0, steps=1, ramps=1), fps=1000)
        planned = phone.planned_frames()[0]
        rgb, depth = phone.render_frame(planned)
        assert np.allclose(depth[depth > 0], depth_m, rtol=1e-5)
        expected = float(cfg.phone_lens.coc_px(depth_m, focus_m, cfg.phone_pixel_pitch_m()))
        measured = measure_coc_px(rgb, slice(250, 500))
        assert expected > 4  # visible blur
        assert measured == pytest.approx(expected, rel=0.10), (measured, expected)

    def test_in_focus_edge_stays_sharp(self):
        cam = CameraModel.from_fov(200, 100, 150.0)
        rgb, depth = step_edge_scene(0.5).render(cam, np.eye(4))
        out = render_defocus(rgb, depth, ThinLens(4.2e-3, 1.7), 0.5, 5.6e-6)
        np.testing.assert_allclose(out, rgb, atol=1e-6)


def _layer_reference(scene_fg: Scene, scene_bg: Scene, cam, lens, focus_m, pitch, near_m, far_m):
    """Composite of separately blurred layers: the foreground's premultiplied colour and
    alpha blurred with its disk (FFT convolution), over the whole background (hidden part
    included) blurred with its disk."""
    rgb_f, d_f = scene_fg.render(cam, np.eye(4))
    rgb_b, _ = scene_bg.render(cam, np.eye(4))
    a = (d_f > 0).astype(np.float64)
    c_f = float(lens.coc_px(near_m, focus_m, pitch))
    c_b = float(lens.coc_px(far_m, focus_m, pitch))

    def blur(img, c):
        if c <= 1:
            return img
        k = disk_kernel(c).astype(np.float64)
        pad = k.shape[0]
        p = np.pad(img, [(pad, pad), (pad, pad)] + [(0, 0)] * (img.ndim - 2), mode="edge")
        if p.ndim == 3:
            return np.stack([fftconvolve(p[..., i], k, mode="same") for i in range(p.shape[2])], -1)[pad:-pad, pad:-pad]
        return fftconvolve(p, k, mode="same")[pad:-pad, pad:-pad]

    A = blur(a, c_f)
    C = blur(rgb_f * a[..., None], c_f)
    B = blur(rgb_b.astype(np.float64), c_b)
    return C + (1 - A[..., None]) * B, c_f, c_b


class TestOcclusion:
    W, H = 240, 120
    lens = ThinLens(4.2e-3, 1.7)
    pitch = 5.6e-6

    def _scenes(self, fg_tex, bg_tex, near, far):
        fg = Primitive("plane", np.array([-50.0, 0, near]), (50.0, math.inf), fg_tex, texel_m=near / 300)
        bg = Primitive("plane", np.array([0, 0, far]), (math.inf, math.inf), bg_tex, texel_m=far / 300)
        return Scene([fg, bg]), Scene([fg]), Scene([bg])

    @pytest.mark.parametrize("focus", ["far", "near"])
    def test_matches_layer_reference(self, focus):
        near, far = 0.15, 0.8
        rng = np.random.default_rng(0)
        both = two_plane_scene(rng, near, far)
        fg_only, bg_only = Scene([both.primitives[0]]), Scene([both.primitives[1]])
        cam = CameraModel.from_fov(self.W, self.H, 180.0)
        focus_m = far if focus == "far" else near
        rgb, depth = both.render(cam, np.eye(4))
        out = render_defocus(rgb, depth, self.lens, focus_m, self.pitch)
        ref, c_f, c_b = _layer_reference(fg_only, bg_only, cam, self.lens, focus_m, self.pitch, near, far)
        edge_col = int(np.flatnonzero(depth[self.H // 2] > 0.5 * (near + far))[0])
        cmax = max(c_f, c_b)
        margin = int(cmax) + 2
        cols = np.arange(self.W)
        inner = (cols >= margin) & (cols < self.W - margin)
        band = np.abs(cols - edge_col) <= (c_f + c_b) / 2 + 2
        rows = slice(margin, self.H - margin)
        err = np.abs(out[rows] - ref[rows]).mean(axis=-1)  # (rows, W)
        # away from the boundary the two are the same blur
        assert err[:, inner & ~band].max() < 1e-3  # measured 0.0000 (same blur)
        # at the boundary the renderer only lacks the hidden background texture
        assert err[:, inner & band].mean() < 0.02  # measured 0.011 (fg blurred), 0.004 (bg blurred)

    def test_blurred_foreground_covers_background(self):
        red, green = constant_texture((0.9, 0.1, 0.1)), constant_texture((0.1, 0.9, 0.1))
        both, _, _ = self._scenes(red, green, 0.15, 0.8)
        cam = CameraModel.from_fov(self.W, self.H, 180.0)
        rgb, depth = both.render(cam, np.eye(4))
        out = render_defocus(rgb, depth, self.lens, 0.8, self.pitch)  # background in focus
        c_f = float(self.lens.coc_px(0.15, 0.8, self.pitch))
        edge = int(np.flatnonzero(depth[self.H // 2] > 0.5)[0])
        row = out[self.H // 2]
        # on the (sharp) background next to the edge, the blurred foreground's red shows with the
        # weight of the part of its disk that lies over the foreground: 0.1 + 0.8 * coverage
        R = c_f / 2
        assert R > 4
        for j in range(int(R) + 3):
            coverage = disk_esf(-(j + 0.5) / R)
            assert row[edge + j, 0] == pytest.approx(0.1 + 0.8 * coverage, abs=0.04), j
        # the colour is a mix of the two, never darker than both (no dark halo)
        assert np.all(row[:, 0] + row[:, 1] > 0.95)

    def test_sharp_foreground_not_smeared_by_blurred_background(self):
        red, green = constant_texture((0.9, 0.1, 0.1)), constant_texture((0.1, 0.9, 0.1))
        both, _, _ = self._scenes(red, green, 0.15, 0.8)
        cam = CameraModel.from_fov(self.W, self.H, 180.0)
        rgb, depth = both.render(cam, np.eye(4))
        out = render_defocus(rgb, depth, self.lens, 0.15, self.pitch)  # foreground in focus
        fg = (depth > 0) & (depth < 0.5)
        np.testing.assert_allclose(out[fg], rgb[fg], atol=1e-6)
        # the blurred background next to it stays green (no red pulled in from the sharp foreground)
        bgm = depth > 0.5
        assert out[bgm][:, 0].max() < 0.1 + 1e-3


class TestRandomFocusStack:
    def test_contract(self):
        d = random_focus_stack(np.random.default_rng(1), size=(64, 96), n_frames=5)
        assert d["stack"].shape == (5, 64, 96, 3) and d["stack"].dtype == np.uint8
        assert d["focus_m"].shape == (5,) and d["focus_m"].dtype == np.float32
        assert np.all(np.diff(d["focus_m"]) > 0)
        assert d["depth_m"].shape == (64, 96) and d["depth_m"].dtype == np.float32 and np.all(d["depth_m"] > 0)
        assert d["coc_px"].shape == (5, 64, 96) and d["coc_px"].dtype == np.float32
        lens, pitch = d["lens"], d["pixel_pitch_m"]
        np.testing.assert_allclose(d["coc_px"][2], lens.coc_px(d["depth_m"], d["focus_m"][2], pitch), rtol=1e-4, atol=1e-4)
        assert d["coc_px"].max() > 3  # defocus is visible

    def test_sharpest_frame_tracks_depth(self):
        """Where a pixel is in focus (smallest CoC), local contrast is highest more often than not."""
        import cv2

        hits, total = 0, 0
        for seed in range(3):
            d = random_focus_stack(np.random.default_rng(seed), size=(96, 96), n_frames=5)
            sharp = np.stack([np.abs(cv2.Laplacian(cv2.cvtColor(s, cv2.COLOR_RGB2GRAY).astype(np.float32), cv2.CV_32F, ksize=3)) for s in d["stack"]])
            sharp = np.stack([cv2.blur(s, (9, 9)) for s in sharp])
            best_img = sharp.argmax(0)
            best_coc = d["coc_px"].argmin(0)
            hits += int(np.sum(np.abs(best_img - best_coc) <= 1))
            total += best_img.size
        assert hits / total > 0.6

    def test_seeded(self):
        a = random_focus_stack(np.random.default_rng(7), size=(32, 32))
        b = random_focus_stack(np.random.default_rng(7), size=(32, 32))
        np.testing.assert_array_equal(a["stack"], b["stack"])
