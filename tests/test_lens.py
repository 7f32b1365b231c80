import numpy as np
import pytest

from dfdcap.errors import DfdcapError
from dfdcap.lens import FocusSchedule, ThinLens, diopters_to_m, m_to_diopters


class TestCoc:
    def test_hand_computed(self):
        # f = 4.2 mm, f/1.7 -> A = 2.470588 mm; F = 0.2 m, D = 0.5 m
        lens = ThinLens(0.0042, 1.7)
        A = 0.0042 / 1.7
        expected = A * 0.0042 * 0.3 / (0.5 * (0.2 - 0.0042))
        assert lens.coc_m(0.5, 0.2) == pytest.approx(expected, rel=1e-12)
        assert expected == pytest.approx(3.1804e-05, rel=1e-3)  # ~31.8 um on the sensor

    def test_in_focus_is_zero_and_pixels(self):
        lens = ThinLens(0.0042, 1.7)
        assert lens.coc_m(0.3, 0.3) == 0
        assert lens.coc_px(0.5, 0.2, 1.4e-6) == pytest.approx(lens.coc_m(0.5, 0.2) / 1.4e-6)

    def test_infinity_focus(self):
        lens = ThinLens(0.05, 2.0)
        # focused at infinity, c = A f / (D - f)
        assert lens.coc_m(1.0, np.inf) == pytest.approx(0.025 * 0.05 / 0.95)

    def test_invalid_depth_is_nan(self):
        assert np.isnan(ThinLens(0.0042, 1.7).coc_m(0.0, 0.2))

    def test_depth_of_field_brackets_focus(self):
        lens = ThinLens(0.0042, 1.7)
        near, far = lens.depth_of_field(0.3, 2.8e-6)
        assert near < 0.3 < far
        assert lens.coc_m(near, 0.3) == pytest.approx(2.8e-6, rel=1e-6)
        assert lens.coc_m(far, 0.3) == pytest.approx(2.8e-6, rel=1e-6)


def test_diopters_round_trip():
    assert diopters_to_m(4.0) == 0.25
    assert np.isinf(diopters_to_m(0.0))
    assert m_to_diopters(np.inf) == 0.0
    np.testing.assert_allclose(m_to_diopters(diopters_to_m(np.array([0.5, 2, 10]))), [0.5, 2, 10])


class TestSchedule:
    def test_thesis_default(self):
        s = FocusSchedule()
        f = s.focus_m()
        assert f.shape == (5, 5) and s.n_frames == 25
        assert np.all(np.diff(f, axis=1) > 0)  # every ramp goes near -> far
        np.testing.assert_allclose(f[:, 0], 0.1)
        np.testing.assert_allclose(f[:, -1], 1.0)
        np.testing.assert_allclose(np.diff(s.focus_diopters()[0]), -2.25)  # even in diopters

    def test_metres_spacing(self):
        f = FocusSchedule(0.2, 1.0, 5, 2, "metres").focus_m()
        np.testing.assert_allclose(f[1], [0.2, 0.4, 0.6, 0.8, 1.0])

    @pytest.mark.parametrize("kw", [dict(steps=0), dict(ramps=-1), dict(near_m=1.0, far_m=0.5)])
    def test_bad(self, kw):
        with pytest.raises(DfdcapError):
            FocusSchedule(**kw)
