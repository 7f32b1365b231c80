"""`dfdcap devices` with the real OpenNI2 and librealsense libraries (and no hardware attached)."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest_sensors import private_openni_redist
from dfdcap.capture.devices import list_devices


@pytest.fixture(scope="module", autouse=True)
def _openni_file_and_dummy_drivers(tmp_path_factory):
    private_openni_redist(tmp_path_factory.mktemp("openni2"))


def _openni_raw_uris() -> list[str]:
    """What OpenNI itself lists (dfdcap's list filters it)."""
    import ctypes

    from dfdcap.capture.openni import initialize_openni

    openni2 = initialize_openni()
    pdevs, count = ctypes.POINTER(openni2.c_api.OniDeviceInfo)(), ctypes.c_int()
    openni2.c_api.oniGetDeviceList(ctypes.byref(pdevs), ctypes.byref(count))
    try:
        return [pdevs[i].uri.decode() for i in range(count.value)]
    finally:
        openni2.c_api.oniReleaseDeviceList(pdevs)


def test_libraries_answer_and_open_virtual_devices_are_not_listed(tmp_path):
    """Both libraries load and enumerate; OpenNI lists the devices this process has open, the Dummy
    device and a playback file among them: neither is reported as connected. (Specs of connected
    devices: test_connected_devices_are_listed, with hardware.)"""
    from conftest_sensors import real_rgbd_frames
    from dfdcap.capture.oni_file import write_oni
    from dfdcap.capture.openni import OpenNISensor

    depth, rgb = real_rgbd_frames(3, (32, 24))
    oni = write_oni(tmp_path / "a.oni", depth, rgb, np.array([10, 20, 30]))
    with OpenNISensor("Dummy"), OpenNISensor(str(oni)):
        raw = _openni_raw_uris()
        rep = list_devices(kinds=("openni", "realsense"))
    assert "Dummy" in raw and str(oni) in raw  # OpenNI does list them
    assert rep.problems == [] and rep.checked == ["openni", "realsense"]
    assert not [d for d in rep.devices if d.serial == "Dummy" or d.serial == str(oni)]


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
