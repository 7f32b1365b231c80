"""Focus ramps -> stacks (stacks.split_ramps): either sweep direction, unsettled frames, partial ramps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dfdcap.dataset.stacks import split_ramps
from dfdcap.errors import DatasetError


def _frames(diopters_per_ramp):
    ramps, steps, focus = [], [], []
    for r, ds in enumerate(diopters_per_ramp):
        for s, d in enumerate(ds):
            ramps.append(r)
            steps.append(s)
            focus.append(1.0 / d if d > 0 else np.inf)
    return np.array(ramps), np.array(steps), np.array(focus)


NEAR_FAR = [2.0, 1.5, 1.0, 0.5, 0.0]  # diopters falling: focus distance increasing, to infinity


class TestSplitRamps:
    def test_near_to_far_and_far_to_near_give_the_same_order(self):
        a = split_ramps(*_frames([NEAR_FAR, NEAR_FAR]))
        b = split_ramps(*_frames([NEAR_FAR[::-1], NEAR_FAR[::-1]]))
        assert not a.notes and not b.notes
        assert [s.tolist() for s in a.stacks] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
        assert [s.tolist() for s in b.stacks] == [[4, 3, 2, 1, 0], [9, 8, 7, 6, 5]]  # stored near->far
        focus = _frames([NEAR_FAR[::-1]])[2]
        assert np.all(np.diff(focus[b.stacks[0]]) > 0)

    def test_frame_against_the_sweep_is_dropped(self):
        # far->near with one frame that went back (lens not settled): 4 usable frames
        r = split_ramps(*_frames([[0.5, 1.0, 0.8, 1.5, 2.0]]))
        assert r.stacks[0].tolist() == [4, 3, 1, 0] and not r.notes

    def test_partial_last_ramp_is_skipped_with_a_note(self):
        r = split_ramps(*_frames([NEAR_FAR[::-1], NEAR_FAR[::-1], NEAR_FAR[::-1][:3]]))
        assert len(r.stacks) == 2 and all(len(s) == 5 for s in r.stacks)
        assert r.notes == ["partial last ramp 2: 3 usable of 3 frames, a stack needs 5: skipped"]

    def test_frames_option_spreads_and_skips(self):
        r = split_ramps(*_frames([NEAR_FAR, NEAR_FAR[:2]]), frames=3)
        assert [s.tolist() for s in r.stacks] == [[0, 2, 4]]
        assert "partial last ramp 1: 2 usable of 2 frames" in r.notes[0]
        assert [s.tolist() for s in split_ramps(*_frames([NEAR_FAR]), frames=3).stacks] == [[0, 2, 4]]

    def test_bad_input(self):
        with pytest.raises(DatasetError, match="at least 2"):
            split_ramps(*_frames([NEAR_FAR]), frames=1)
        with pytest.raises(DatasetError, match="equal 1-D"):
            split_ramps(np.zeros(3), np.zeros(2), np.zeros(3))


class TestSessionSplits:
    """build._split_of: named sessions first, then fractions of all sessions (nearest count, at
    least one) taken from the last sessions still in train."""

    @staticmethod
    def splits(n: int, **opts) -> list[str]:
        from types import SimpleNamespace

        from dfdcap.dataset.build import BuildOptions, _split_of

        sessions = [SimpleNamespace(path=Path(f"/s/{i}"), name=f"s{i}") for i in range(n)]
        return _split_of(sessions, BuildOptions(**opts))  # type: ignore[arg-type]

    def test_fractions_round_to_the_nearest_count(self):
        assert self.splits(3, val_fraction=0.34, test_fraction=0.34) == ["train", "val", "test"]
        assert self.splits(10, val_fraction=0.25) == ["train"] * 7 + ["val"] * 3
        assert self.splits(10, val_fraction=0.01) == ["train"] * 9 + ["val"]  # at least one
        assert self.splits(3, val=("s0",), test_fraction=0.3) == ["val", "train", "test"]

    @pytest.mark.parametrize("frac", [float("nan"), -0.1, 1.0, 2.0])
    def test_bad_fraction(self, frac):
        with pytest.raises(DatasetError, match="--val-fraction"):
            self.splits(3, val_fraction=frac)

    def test_no_training_session_left(self):
        with pytest.raises(DatasetError, match="leaves no training session"):
            self.splits(2, val_fraction=0.5, test_fraction=0.5)


@pytest.mark.parametrize("size, crop", [("2_40x135", None), (None, "1_0,0,64,64"), (None, "6_4x64")])
def test_size_and_crop_refuse_numbers_with_underscores(size, crop):
    """int() reads "2_40" as 240: `build-dataset --size 2_40x135` built 240x135 stacks without a word."""
    from dfdcap.dataset.stacks import make_geometry

    with pytest.raises(DatasetError, match="expected"):
        make_geometry((1008, 756), crop=crop, size=size)
    assert make_geometry((1008, 756), crop="10,0,64,64", size="32x32").crop == (10, 0, 64, 64)
