"""Ctrl-C (SIGINT), SIGTERM and kill -9 of `dfdcap record` and `dfdcap finetune`, as child processes.

Each waits for real progress by polling files (frames indexed, last.ckpt written), never by a fixed
sleep, so a loaded host only makes it slower. What must hold afterwards: SIGINT exits 130 with an
"interrupted" line and no traceback; whatever was complete is kept, readable and marked; a
killed run's files are consistent and it resumes.
"""

from __future__ import annotations

import csv
import json
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from faults_helpers import csv_lines, dfdcap_process, finish, wait_for

pytestmark = pytest.mark.slow  # child processes: ~10-20 s each on 2 cores


def _session_of(out: Path) -> Path | None:
    found = [p for p in out.iterdir() if p.is_dir()] if out.is_dir() else []
    return found[0] if found else None


def _start_record(out: Path):
    proc = dfdcap_process("record", "--stacks", "60", "--steps", "5", "--phone-size", "64x48", "-o", str(out))
    wait_for(lambda: (s := _session_of(out)) is not None and csv_lines(s / "sensor" / "frames.csv") >= 4, proc,
             "three indexed sensor frames")
    return proc, _session_of(out)


def _assert_indexed_frames_readable(session: Path) -> int:
    from dfdcap.capture.session import Session

    s = Session(session)
    assert s.sensor_frames, "no sensor frame kept"
    for rec in s.sensor_frames:
        assert s.read_sensor_rgb(rec).shape[2] == 3
        assert s.read_sensor_depth_raw(rec).dtype == np.uint16
    return len(s.sensor_frames)


def test_sigint_record_keeps_and_marks_the_session(tmp_path):
    proc, session = _start_record(tmp_path)
    proc.send_signal(signal.SIGINT)
    out, err = finish(proc)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in out + err and "interrupted" in err
    meta = json.loads((session / "session.json").read_text())
    assert meta["status"] == "interrupted"
    assert _assert_indexed_frames_readable(session) >= 3


def test_kill9_record_leaves_a_readable_interrupted_session(tmp_path, cli):
    from dfdcap.capture.session import Session

    proc, session = _start_record(tmp_path)
    proc.kill()
    finish(proc)
    assert proc.returncode == -signal.SIGKILL
    assert Session(session).effective_status == "interrupted"  # the dead writer's lock is free
    assert _assert_indexed_frames_readable(session) >= 3
    rc, out, err = cli("sync", session)  # too few phone frames to sync is fine; a traceback is not
    assert rc in (0, 1) and "Traceback" not in out + err


# ------------------------------------------------------------------------------ finetune

@pytest.fixture(scope="module")
def small_h5(tmp_path_factory) -> Path:
    """4 train + 2 val stacks of 5 frames, 32x32, written with the project's dataset writer."""
    from dfdcap.dataset.h5io import Sample, write_dataset
    from dfdcap.sim.render import random_focus_stack

    path = tmp_path_factory.mktemp("h5") / "d.h5"
    rng = np.random.default_rng(1)
    with write_dataset(path, {"focal_length_m": 0.0042, "f_number": 1.7, "pixel_pitch_m": 1.4e-6}) as w:
        for split, n in (("train", 4), ("val", 2)):
            for _ in range(n):
                d = random_focus_stack(rng, (32, 32), 5)
                w.append(split, Sample(d["stack"], d["focus_m"], d["depth_m"], np.ones((32, 32), bool)))
    return path


def _start_finetune(h5: Path, run: Path):
    proc = dfdcap_process("finetune", "--model", "poolnet", "--set", "width=4", "--set", "levels=3", "--data", str(h5),
                          "-o", str(run), "--epochs", "100000", "--crop", "32", "--batch-size", "2")
    wait_for(lambda: (run / "last.ckpt").is_file(), proc, "the first last.ckpt")
    return proc


def _assert_run_consistent(run: Path) -> int:
    """run.json names the model; last.ckpt loads safely and is that model's; metrics.csv parses.
    Returns last.ckpt's epoch."""
    assert json.loads((run / "run.json").read_text())["model"] == "poolnet"
    ckpt = torch.load(run / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["model_name"] == "poolnet"
    if (run / "metrics.csv").exists():
        rows = list(csv.DictReader(open(run / "metrics.csv")))
        assert all(r["step"] for r in rows)
    return int(ckpt["epoch"])


def _resume_keeps_history(run: Path, h5: Path, epochs: int) -> None:
    from dfdcap.models.train import finetune

    before = list(csv.DictReader(open(run / "metrics.csv"))) if (run / "metrics.csv").exists() else []
    r = finetune("poolnet", h5, run, epochs=epochs, batch_size=2, crop=32, tiny=True, progress=False)
    assert r.resumed_from == run / "last.ckpt" and r.epochs_done == epochs
    after = list(csv.DictReader(open(run / "metrics.csv")))
    steps_before = {r["step"] for r in before if float(r["step"]) < 2}  # the first epoch's rows (2 steps)
    assert steps_before <= {r["step"] for r in after}  # history kept
    assert any(float(r["step"]) >= 2 * (epochs - 1) for r in after)  # and the new epoch logged


def test_sigint_finetune_exits_130_and_resumes(tmp_path, small_h5):
    run = tmp_path / "run"
    proc = _start_finetune(small_h5, run)
    proc.send_signal(signal.SIGINT)
    out, err = finish(proc)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in out + err and "interrupted" in err and "weights_only" not in err
    epoch = _assert_run_consistent(run)
    assert (run / "metrics.csv").exists()  # the interrupted run's metrics were saved
    _resume_keeps_history(run, small_h5, epoch + 2)


def test_sigterm_finetune_says_sigterm_and_resumes(tmp_path, small_h5):
    """Lightning catches SIGTERM (a batch system's stop) like Ctrl-C; it was reported as "stopped by Ctrl-C"."""
    run = tmp_path / "run"
    proc = _start_finetune(small_h5, run)
    proc.send_signal(signal.SIGTERM)
    out, err = finish(proc)
    assert proc.returncode == 143, out + err
    assert "Traceback" not in out + err and "training stopped by SIGTERM" in err and "Ctrl-C" not in err
    epoch = _assert_run_consistent(run)
    _resume_keeps_history(run, small_h5, epoch + 2)


def test_kill9_finetune_leaves_a_consistent_run(tmp_path, small_h5):
    run = tmp_path / "run"
    proc = _start_finetune(small_h5, run)
    proc.kill()
    finish(proc)
    epoch = _assert_run_consistent(run)
    _resume_keeps_history(run, small_h5, epoch + 2)


def test_sigint_pretrain_exits_130_with_a_message(tmp_path):
    """It exited 1 with no message at all (pretrain did not route Lightning's exit through _fit)."""
    out_pt = tmp_path / "p.pt"
    proc = dfdcap_process("pretrain", "--model", "poolnet", "--set", "width=4", "--set", "levels=3", "--steps", "1000000",
                          "--size", "32", "--pool", "2", "--batch-size", "1", "--checks", "1", "-o", str(out_pt))
    wait_for(lambda: (tmp_path / "p_run" / "hparams.yaml").is_file(), proc, "hparams.yaml (written once fitting starts)")
    proc.send_signal(signal.SIGINT)
    out, err = finish(proc)
    assert proc.returncode == 130, out + err
    assert "Traceback" not in out + err and "interrupted" in err and "training stopped by Ctrl-C" in err
    assert not out_pt.exists()  # no check was done: nothing claims to be the best weights
