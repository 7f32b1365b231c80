"""Fixtures for the models stage: tiny synthetic stacks and a small dataset file in the
build-dataset layout (CONTRACTS.md / DESIGN.md), written with h5py directly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dfdcap.models.data import item_from_sim
from dfdcap.sim.render import random_focus_stack
from h5_files import write_h5

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def sim_items() -> list[dict]:
    """Four synthetic 32x32 stacks of 5 frames with depth and CoC."""
    rng = np.random.default_rng(7)
    return [item_from_sim(random_focus_stack(rng, (32, 32), 5)) for _ in range(4)]


@pytest.fixture(scope="session")
def h5_dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "dataset.h5"
    write_h5(path, {"train": 4, "val": 2})
    return path
