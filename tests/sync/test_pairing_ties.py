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


def test_a_phone_frame_between_two_regular_sensor_frames_always_has_a_partner():
    """Sensor stamps jitter: a spacing a little longer than the median is still no dropout, and a
    phone frame in its middle pairs (half the median period as the limit left it unpaired: CI saw a
    stack dropped that way). Across a real dropout (two periods) the middle frame stays unpaired."""
    from dfdcap.sync.io import pair_frames

    ms = 1_000_000
    sensor = np.array([0, 33_300_000, 66_600_000, 100_200_000, 133_500_000, 200_100_000], np.int64)
    phone = np.array([83_400_000, 166_800_000], np.int64)  # 16.8 ms from both neighbours; a dropout's middle
    j, gap, max_gap, period = pair_frames(phone, sensor)
    assert period == 33_300_000 and max_gap == 16_800_000
    assert j.tolist() == [2, -1] and abs(gap[0]) == 16.8 * ms
