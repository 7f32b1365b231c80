"""Fixtures of the recorder tests: the device fakes of device_fakes.py."""

from __future__ import annotations

import pytest

from device_fakes import FakePhone, FakeSensor


@pytest.fixture
def fake_sensor():
    return FakeSensor()


@pytest.fixture
def fake_phone():
    return FakePhone()
