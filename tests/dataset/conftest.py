"""Fixtures of the dataset stage: box-scene session folders (see dataset_scene.py), synced by the real sync stage."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dataset_scene import write_session  # noqa: E402


@pytest.fixture(scope="session")
def box_sessions(tmp_path_factory) -> list[Path]:
    """Two synced box-scene sessions (3 ramps x 5 frames each)."""
    from dfdcap.sync.io import sync_session

    out = tmp_path_factory.mktemp("sessions")
    paths = [write_session(out, "a"), write_session(out, "b")]
    for p in paths:
        sync_session(p)
    return paths
