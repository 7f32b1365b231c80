"""A session that dfdcap did not write (independent_session.py) syncs and builds through the CLI:
sensor clock within 0.5 ms of the truth, median depth error within 0.5 %, stacks near->far."""

from __future__ import annotations

import json

import numpy as np
import pytest
from independent_session import SENSOR_FIXED_LATENCY_NS, write_calibration, write_independent_session

from dfdcap.dataset.h5io import open_dataset
from dfdcap.sync.io import read_sync

MS = 1_000_000


def _words(text: str) -> str:
    return " ".join(text.split())  # rich wraps long lines at the terminal width


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    d = tmp_path_factory.mktemp("foreign")
    path, truth = write_independent_session(d / "sessions")
    return path, truth, write_calibration(d / "calibration.json")


def test_foreign_session_has_no_optional_keys(foreign):
    path, _, _ = foreign
    meta = json.loads((path / "session.json").read_text())
    assert not {"sensor_latency_ns", "phone_fps", "recorder", "phone_pull"} & set(meta)
    assert not (path / "recording.lock").exists() and not (path / "truth").exists()


def test_foreign_session_syncs_within_half_a_millisecond(foreign, cli):
    path, truth, _ = foreign
    code, out, err = cli("sync", path, "--sensor-latency-ms", SENSOR_FIXED_LATENCY_NS / MS)
    assert code == 0, err
    sync = read_sync(path)
    t_dev = truth.sensor_t_device_ns
    err_ns = sync.sensor.to_host_ns(t_dev) - truth.sensor_clock.to_host_ns(t_dev)
    assert np.abs(err_ns).max() <= 0.5 * MS, np.abs(err_ns).max()
    assert sync.stats["n_matched"] == sync.stats["n_phone_frames"] == 20
    assert sync.quality["sensor"]["verdict"] == "ok", sync.quality
    assert "suspect" not in out


@pytest.mark.slow  # ~7 s on a busy 2-core machine (the first reprojection compiles its kernel)
def test_foreign_session_builds_with_depth_within_half_a_percent(foreign, cli, tmp_path):
    path, truth, calib = foreign
    if not (path / "sync.json").exists():
        assert cli("sync", path, "--sensor-latency-ms", SENSOR_FIXED_LATENCY_NS / MS)[0] == 0
    out_h5 = tmp_path / "foreign.h5"
    code, out, err = cli("build-dataset", path, "--calib", calib, "-o", out_h5)
    assert code == 0, err
    assert "suspect" not in out and "note:" not in out
    with open_dataset(out_h5) as f:
        assert f.n("train") == 4 and f.stack_shape("train")[0] == 5  # 4 far->near ramps of 5 frames
        for i in range(4):
            focus = f.focus_m("train", i)
            assert np.all(np.diff(focus) > 0), focus  # stored near->far
            prov = f.provenance("train", i)
            assert prov["phone_indices"] == sorted(prov["phone_indices"], reverse=True)  # the ramp ran far->near
            m = f.mask("train", i)
            assert m.mean() > 0.5
            rel = np.abs(f.depth_m("train", i)[m] - truth.phone_depth_m[m]) / truth.phone_depth_m[m]
            assert np.median(rel) <= 0.005, np.median(rel)


def test_partial_last_ramp_is_skipped_with_a_note(tmp_path, cli):
    path, _ = write_independent_session(tmp_path / "s", "partial", ramps=2, partial_last=3, seed=1)
    calib = write_calibration(tmp_path / "calibration.json")
    assert cli("sync", path, "--sensor-latency-ms", 2)[0] == 0
    code, out, err = cli("build-dataset", path, "--calib", calib, "-o", tmp_path / "p.h5")
    assert code == 0, err
    text = _words(out)
    assert "partial last ramp 2: 3 usable of 3 frames" in text and "skipped" in text
    assert "suspect sync" in text and "interrupted session" in text  # status interrupted: named in the summary
    with open_dataset(tmp_path / "p.h5") as f:
        assert f.n("train") == 2 and f.stack_shape("train")[0] == 5


def test_8_bit_depth_png_is_a_one_line_error(tmp_path, cli):
    path, _ = write_independent_session(tmp_path / "s", "eight", ramps=1, depth_dtype=np.uint8, seed=2)
    calib = write_calibration(tmp_path / "calibration.json")
    assert cli("sync", path)[0] == 0
    code, out, err = cli("build-dataset", path, "--calib", calib, "-o", tmp_path / "e.h5")
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert "8-bit" in err and "16-bit" in err and not (tmp_path / "e.h5").exists()


def test_index_naming_missing_files_names_the_session(tmp_path, cli):
    path, _ = write_independent_session(tmp_path / "s", "holes", ramps=1, seed=3)
    calib = write_calibration(tmp_path / "calibration.json")
    assert cli("sync", path)[0] == 0
    (path / "phone" / "frames" / "2.jpg").unlink()
    code, _, err = cli("build-dataset", path, "--calib", calib, "-o", tmp_path / "h.h5")
    assert code == 1 and len(err.strip().splitlines()) == 1, err
    assert _words(err).count(path.name) >= 1 and "frames/2.jpg" in _words(err)


def test_non_rigid_calibration_is_a_one_line_error(foreign, cli, tmp_path):
    path, _, calib = foreign
    doc = json.loads(calib.read_text())
    doc["T_phone_from_sensor"][0][0] *= 1.05  # a scaled rotation
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(doc))
    code, _, err = cli("build-dataset", path, "--calib", bad, "-o", tmp_path / "b.h5")
    assert code == 1 and "not a rotation" in err and len(err.strip().splitlines()) == 1, err
