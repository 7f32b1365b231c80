"""Calibration of the simulated rig (H1's rendered boards: distortion, defocus, noise) against its truth."""

from __future__ import annotations

import numpy as np
import pytest

from dfdcap.calib.boards import Board
from dfdcap.calib.calibrate import CalibrateOptions, calibrate_rig
from dfdcap.cameras import rotation_angle_deg

pytestmark = pytest.mark.slow  # rendering the boards takes ~0.5 s per view pair


def _render(tmp_path_factory, name, n_views, n_corrupt, seed, board_spec):
    from dfdcap.sim.boards import write_board_pairs

    out = tmp_path_factory.mktemp(name)
    truth = write_board_pairs(out, n_views, board_spec, phone_size=(1008, 756), seed=seed, n_corrupt=n_corrupt)
    return out, truth


@pytest.fixture(scope="module")
def clean_rig(tmp_path_factory):
    from dfdcap.sim.boards import BoardSpec

    return _render(tmp_path_factory, "sim_clean", 12, 0, 3, BoardSpec("checkerboard", 9, 6, 0.025))


@pytest.fixture(scope="module")
def corrupted_rig(tmp_path_factory):
    from dfdcap.sim.boards import BoardSpec

    return _render(tmp_path_factory, "sim_corrupt", 14, 3, 4, BoardSpec("checkerboard", 9, 6, 0.025))


def _errors(cal, truth):
    T = np.asarray(truth["T_phone_from_sensor"])
    rot_deg = rotation_angle_deg(T[:3, :3].T @ cal.T_phone_from_sensor[:3, :3])
    trans_mm = 1000 * float(np.linalg.norm(T[:3, 3] - cal.T_phone_from_sensor[:3, 3]))
    f_rel = []
    for cam in ("phone", "sensor"):
        K = np.asarray(truth[cam]["K"])
        Ke = getattr(cal, cam).K
        f_rel += [abs(Ke[0, 0] / K[0, 0] - 1), abs(Ke[1, 1] / K[1, 1] - 1)]
    return rot_deg, trans_mm, max(f_rel)


def test_clean_views_recover_the_rig(clean_rig):
    out, truth = clean_rig
    run = calibrate_rig(out, CalibrateOptions(Board("checkerboard", 9, 6, 0.025)))
    cal = run.calibration
    rot_deg, trans_mm, f_rel = _errors(cal, truth)
    assert rot_deg <= 0.05 and trans_mm <= 1.0 and f_rel <= 0.002, (rot_deg, trans_mm, f_rel)
    assert cal.stereo["views_dropped"] == [] and len(cal.stereo["views_used"]) == 12
    assert cal.phone_fit.rms_px < 0.2 and cal.sensor_fit.rms_px < 0.2


def test_joint_refinement_beats_fixed_intrinsics(clean_rig):
    """With each camera's own intrinsics fixed, the principal points' errors (~0.2 px) tilt the
    rotation (0.067 deg on these 12 views); the joint refinement pins them and is the default."""
    out, truth = clean_rig
    fixed = calibrate_rig(out, CalibrateOptions(Board("checkerboard", 9, 6, 0.025), refine=False)).calibration
    joint = calibrate_rig(out, CalibrateOptions(Board("checkerboard", 9, 6, 0.025), refine=True)).calibration
    assert _errors(joint, truth)[0] < 0.5 * _errors(fixed, truth)[0] < 0.1
    assert joint.stereo["rms_px"] <= fixed.stereo["rms_px"] and joint.stereo["refined"] and not fixed.stereo["refined"]


def test_corrupted_views_are_dropped(corrupted_rig):
    out, truth = corrupted_rig
    bad = sorted(v["name"] for v in truth["views"] if v["corrupted"])
    assert len(bad) == 3
    # without the rule the corrupted pairs ruin the extrinsics
    kept = calibrate_rig(out, CalibrateOptions(Board("checkerboard", 9, 6, 0.025), reject_outliers=False)).calibration
    assert _errors(kept, truth)[0] > 0.2 or _errors(kept, truth)[1] > 2.0
    run = calibrate_rig(out, CalibrateOptions(Board("checkerboard", 9, 6, 0.025)))
    cal = run.calibration
    assert cal.stereo["views_dropped"] == bad
    assert all("stereo outlier" in cal.stereo["drop_reasons"][n] for n in bad)
    rot_deg, trans_mm, f_rel = _errors(cal, truth)
    assert rot_deg <= 0.05 and trans_mm <= 1.0 and f_rel <= 0.002, (rot_deg, trans_mm, f_rel)


# A rig unlike the default one: another board and baseline, a strongly distorted 2016x1512 phone,
# JPEG views (the phone defocused around the board as always), the VGA sensor.
FOREIGN_PHONE_DIST = "-0.28,0.13,0.0012,-0.0009,-0.035"


@pytest.fixture(scope="module")
def foreign_rig(tmp_path_factory, cli):
    import json

    out = tmp_path_factory.mktemp("sim_foreign")
    code, _, err = cli("sim", "checkerboard", out, "--views", "12", "--board", "8x5", "--square", "0.03",
                       "--phone-size", "2016x1512", "--phone-dist", FOREIGN_PHONE_DIST, "--baseline", "0.09",
                       "--jpeg-quality", "85", "--seed", "1")
    assert code == 0, err
    assert len(list((out / "phone").glob("*.jpg"))) == 12
    return out, json.loads((out / "truth.json").read_text())


@pytest.fixture(scope="module")
def cli():
    """The in-process CLI (tests/conftest.py's fixture is function-scoped; this module's fixtures are not)."""
    from dfdcap.cli import main

    def run(*args):
        try:
            main([str(a) for a in args])
            return 0, "", ""
        except SystemExit as e:
            return e.code, "", ""

    return run


def test_foreign_rig_rotation_within_0_05_deg(foreign_rig):
    """Per-camera lens models chosen by held-out error keep the rotation <= 0.05 deg (the fixed
    5-coefficient model on both cameras gave 0.031 deg on this rig and up to 0.0755 deg on others)."""
    out, truth = foreign_rig
    run = calibrate_rig(out, CalibrateOptions(Board("checkerboard", 8, 5, 0.03)))
    cal = run.calibration
    rot_deg, trans_mm, _ = _errors(cal, truth)
    fx_rel = abs(cal.phone.fx / np.asarray(truth["phone"]["K"])[0, 0] - 1)
    assert rot_deg <= 0.05 and trans_mm <= 1.0 and fx_rel <= 0.002, (rot_deg, trans_mm, fx_rel)
    models = cal.stereo["distortion_models"]
    assert models["sensor"]["chosen"] in ("k1k2", "k1k2k3")  # the VGA sensor's lens is radial only
    assert "tangential" in models["phone"]["chosen"] or models["phone"]["chosen"].startswith("rational")
    # the reported uncertainty is of the size of the actual error
    u = cal.stereo["uncertainty"]
    assert rot_deg < 3 * u["rotation_std_deg"] + 0.005 and u["rotation_std_deg"] < 0.05


def test_focus_model_within_0_1_percent_on_another_board_set(tmp_path, cli):
    """K(focus) of the breathing chain's construction (d405, 504x378, 15 views at 2, 5, 8 D) on another
    board seed: the phone-only bundle left each view's focal length / distance trade-off to the phone's
    corners and missed by 0.18 % here (0.10-0.18 % on 6 of 15 seeds); the bundle over both cameras holds it."""
    import json

    from dfdcap.calib.io import load_calibration

    code, _, _ = cli("sim", "checkerboard", tmp_path / "b", "--views", "15", "--phone-size", "504x378", "--seed", "3",
                     "--sensor-preset", "d405", "--focus-diopters", "2,5,8")
    assert code == 0
    code, _, _ = cli("calibrate", tmp_path / "b", "--board", "9x6", "--square", "0.025", "-o", tmp_path / "c.json")
    assert code == 0
    cal = load_calibration(tmp_path / "c.json")
    truth = json.loads((tmp_path / "b" / "truth.json").read_text())
    for D in (2.0, 5.0, 8.0):
        K_true = np.asarray(next(v["phone_K"] for v in truth["views"] if v["phone_focus_diopters"] == D))
        K_est = cal.focus_model.K_at(cal.phone.K, D)
        assert abs(K_est[0, 0] / K_true[0, 0] - 1) < 1e-3 and abs(K_est[1, 1] / K_true[1, 1] - 1) < 1e-3, (D, K_est, K_true)
