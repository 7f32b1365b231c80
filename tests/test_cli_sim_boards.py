import json
import subprocess
import sys


def _run(*args):
    return subprocess.run([sys.executable, "-m", "dfdcap.cli", *args], capture_output=True, text=True)


def test_boards_follow_the_sensor_preset(tmp_path):
    out = tmp_path / "boards"
    r = _run("sim", "checkerboard", str(out), "--views", "1", "--sensor-preset", "d405", "--phone-size", "504x378")
    assert r.returncode == 0, r.stderr
    truth = json.loads((out / "truth.json").read_text())
    assert truth["sensor"]["K"][0][0] == 385.0  # the D405-like colour camera, as `record --sensor-preset d405` uses


def test_unknown_preset_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "boards"
    r = _run("sim", "checkerboard", str(out), "--views", "1", "--sensor-preset", "kinect")
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1 and "kinect" in r.stderr
    assert not out.exists()
