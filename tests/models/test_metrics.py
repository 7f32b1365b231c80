import numpy as np
import pytest

from dfdcap.models.metrics import MetricAccumulator, depth_metrics, hessian_norm


class TestDepthMetrics:
    def test_hand_computed_2x2(self):
        pred = np.array([[1.0, 2.0], [3.0, 4.0]])
        gt = np.array([[1.0, 1.0], [4.0, 4.0]])
        m = depth_metrics(pred, gt)
        # errors 0, 1, -1, 0
        assert m["mse"] == pytest.approx(0.5)
        assert m["rms"] == pytest.approx(np.sqrt(0.5))
        assert m["log_rms"] == pytest.approx(np.sqrt((np.log(2) ** 2 + np.log(0.75) ** 2) / 4))
        assert m["abs_rel"] == pytest.approx((1 / 1 + 1 / 4) / 4)
        assert m["sqr_rel"] == pytest.approx((1 / 1 + 1 / 4) / 4)
        # ratios 1, 2, 4/3, 1: delta<1.25 -> 2 of 4; < 1.5625 -> 3; < 1.953 -> 3
        assert m["delta1"] == pytest.approx(50.0)
        assert m["delta2"] == pytest.approx(75.0)
        assert m["delta3"] == pytest.approx(75.0)
        assert m["badpix"] == pytest.approx(50.0)  # |err| > 0.07 m at 2 of 4

    def test_mask_and_invalid_truth_ignored(self):
        pred = np.array([[1.0, 9.0], [2.0, 5.0]])
        gt = np.array([[1.0, 1.0], [0.0, np.nan]])  # 0 and NaN = no ground truth
        mask = np.array([[True, False], [True, True]])
        m = depth_metrics(pred, gt, mask)
        assert m["mse"] == 0.0 and m["delta1"] == 100.0 and m["badpix"] == 0.0

    def test_no_valid_pixels_is_nan(self):
        m = depth_metrics(np.ones((2, 2)), np.zeros((2, 2)))
        assert np.isnan(m["rms"])

    def test_bumpiness_plane_and_quadratic(self):
        y, x = np.mgrid[0:20, 0:20].astype(float)
        gt = np.full((20, 20), 1.0)
        inner = np.zeros((20, 20), bool)
        inner[3:-3, 3:-3] = True
        # a tilted plane of error has no curvature: bumpiness 0
        assert depth_metrics(gt + 0.01 * x + 0.02 * y, gt, inner)["bumpiness"] == pytest.approx(0, abs=1e-9)
        # error a*x^2: d2/dx2 = 2a = 0.02 (< clip 0.05) -> 100 * 0.02 = 2.0
        assert depth_metrics(gt + 0.01 * x**2, gt, inner)["bumpiness"] == pytest.approx(2.0, rel=1e-6)
        # error 0.1*x^2: 2a = 0.2, clipped at 0.05 -> 5.0
        assert depth_metrics(gt + 0.1 * x**2, gt, inner)["bumpiness"] == pytest.approx(5.0, rel=1e-6)

    def test_hessian_mixed_term(self):
        y, x = np.mgrid[0:12, 0:12].astype(float)
        h = hessian_norm(0.5 * x * y)  # dxy = dyx = 0.5, dxx = dyy = 0
        assert h[4:-4, 4:-4] == pytest.approx(np.full((4, 4), np.sqrt(0.5)), rel=1e-9)

    def test_accumulator_pools_pixels(self):
        rng = np.random.default_rng(0)
        a_p, a_g = rng.uniform(0.5, 2, (4, 6)), rng.uniform(0.5, 2, (4, 6))
        b_p, b_g = rng.uniform(0.5, 2, (4, 2)), rng.uniform(0.5, 2, (4, 2))
        acc = MetricAccumulator()
        acc.add(a_p, a_g)
        acc.add(b_p, b_g)
        pooled = acc.result()
        joint = depth_metrics(np.hstack([a_p, b_p]), np.hstack([a_g, b_g]))
        for k in ("mse", "rms", "log_rms", "abs_rel", "sqr_rel", "delta1", "badpix"):
            assert pooled[k] == pytest.approx(joint[k])
