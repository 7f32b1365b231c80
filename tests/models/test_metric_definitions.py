"""The DDFF-12 metrics on hand-computed values: SqrRel squares the error, and delta<t counts
ratios strictly below t (a ratio of exactly 1.25 is not within 1.25)."""

from __future__ import annotations

import numpy as np
import pytest

from dfdcap.models.metrics import MetricAccumulator


def _metrics(pred, gt):
    acc = MetricAccumulator()
    acc.add(np.array(pred, np.float64), np.array(gt, np.float64))
    return acc.result()


def test_sqr_rel_squares_the_error():
    # errors 2 m and 0.5 m on 1 m and 2 m: SqrRel = (4/1 + 0.25/2) / 2 = 2.0625; AbsRel = (2 + 0.25) / 2
    m = _metrics([[3.0, 2.5]], [[1.0, 2.0]])
    assert m["sqr_rel"] == pytest.approx(2.0625)
    assert m["abs_rel"] == pytest.approx(1.125)


def test_sqr_rel_of_an_underestimate():
    m = _metrics([[0.5]], [[1.0]])  # error -0.5 m: SqrRel 0.25, not 0.5 (|err|) or -0.5
    assert m["sqr_rel"] == pytest.approx(0.25)


def test_delta_threshold_is_strict():
    # ratios 1.25 (exactly, in binary), 1.25 (under-estimate 0.8 of 1.0 -> 1/0.8 = 1.25), 1.0
    m = _metrics([[1.25, 0.8, 2.0]], [[1.0, 1.0, 2.0]])
    assert 1.0 / 0.8 == 1.25  # the float ratio is exactly the threshold
    assert m["delta1"] == pytest.approx(100.0 / 3)
    assert m["delta2"] == pytest.approx(100.0)
