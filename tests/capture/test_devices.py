"""`dfdcap devices` with the real OpenNI2 and librealsense libraries (and no hardware attached)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from conftest_sensors import private_openni_redist
from dfdcap.capture.devices import list_devices


@pytest.fixture(scope="module", autouse=True)
def _openni_file_and_dummy_drivers(tmp_path_factory):
    private_openni_redist(tmp_path_factory.mktemp("openni2"))


def test_libraries_answer_and_specs_are_usable():
    rep = list_devices(kinds=("openni", "realsense"))
    assert rep.problems == [] and rep.checked == ["openni", "realsense"]  # both libraries load and enumerate
    for d in rep.devices:
        assert d.kind in ("openni", "realsense")
        assert d.spec.startswith(d.kind + ":") and d.spec.split(":", 1)[1] == d.serial
    # the Dummy device is opened by URI only, never listed as connected
    assert all("Dummy" not in d.serial for d in rep.devices)


def test_cli_says_plainly_when_nothing_is_connected(monkeypatch):
    from dfdcap.cli import app

    if list_devices(kinds=("openni", "realsense")).devices:
        pytest.skip("a sensor is connected")
    # an adb server port that cannot be used: the phone probe fails without starting a server
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", "not-a-port")
    result = CliRunner().invoke(app, ["devices"])
    assert result.exit_code == 0, result.output
    assert "No devices connected: no OpenNI2 sensor, no RealSense camera (could not check: phone)." in result.output
    assert "phone:" in result.output  # the failing phone probe is reported, not hidden


@pytest.mark.hardware
def test_connected_devices_are_listed():
    """Needs a sensor or phone attached: it is listed with a spec `dfdcap record` accepts."""
    from dfdcap.capture.sources import parse_phone_spec, parse_sensor_spec

    rep = list_devices()
    assert rep.devices
    for d in rep.devices:
        (parse_phone_spec if d.kind == "phone" else parse_sensor_spec)(d.spec)
