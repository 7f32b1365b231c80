"""Nearest pairing breaks a tie (a phone frame exactly between two sensor frames) toward the
EARLIER sensor frame, as its docstring and sync.json's readers rely on."""

from __future__ import annotations

import numpy as np

from dfdcap.sync.associate import nearest_associate


def test_tie_goes_to_the_earlier_frame():
    t_sensor = np.array([100, 200, 300, 400], np.int64)
    t_phone = np.array([150, 250, 350, 240], np.int64)  # three exact ties, one clear case
    j, gap = nearest_associate(t_phone, t_sensor, 60)
    assert j.tolist() == [0, 1, 2, 1]
    assert gap.tolist() == [-50, -50, -50, -40]


def test_tie_at_the_max_gap_is_paired_to_the_earlier_frame():
    j, gap = nearest_associate(np.array([15]), np.array([10, 20]), 5)
    assert j.tolist() == [0] and gap.tolist() == [-5]
