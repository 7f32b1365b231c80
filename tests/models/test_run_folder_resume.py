"""Run folders without last.ckpt: an earlier run is never silently overwritten, and Ctrl-C before the
first epoch ends says that nothing can be resumed (fuzz findings)."""

import pytest

from dfdcap.errors import ModelError
from dfdcap.models.run_folder import TrainingInterrupted
from dfdcap.models.train import finetune

KW = dict(epochs=1, batch_size=2, crop=32, tiny=True, progress=False)


def _snapshot(run):
    return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, h5_dataset):
    run = tmp_path_factory.mktemp("runs") / "r"
    finetune("poolnet", h5_dataset, run, **KW)
    return run


def test_resume_without_last_ckpt_refuses(finished_run, h5_dataset, tmp_path):
    """It used to start over silently, replacing best.pt and cutting metrics.csv."""
    run = tmp_path / "r"
    run.mkdir()
    for name in ("best.pt", "last.pt", "metrics.csv", "run.json"):
        (run / name).write_bytes((finished_run / name).read_bytes())
    before = _snapshot(run)
    with pytest.raises(ModelError, match=r"holds an earlier run \(best.pt, last.pt, metrics.csv\) but no last.ckpt "
                                         "to resume from; choose a new -o folder or move it aside"):
        finetune("poolnet", h5_dataset, run, **KW)
    assert _snapshot(run) == before


def test_no_resume_lists_what_is_there(h5_dataset, tmp_path, finished_run):
    run = tmp_path / "r"
    run.mkdir()
    (run / "metrics.csv").write_bytes((finished_run / "metrics.csv").read_bytes())
    with pytest.raises(ModelError, match=r"holds an earlier run \(metrics.csv\); choose a new -o folder"):
        finetune("poolnet", h5_dataset, run, resume=False, **KW)
    with pytest.raises(ModelError, match=r"\(last.ckpt, best.ckpt, best.pt, last.pt, metrics.csv\); continue it with --resume"):
        finetune("poolnet", h5_dataset, finished_run, resume=False, **KW)


def test_ctrl_c_in_the_first_epoch_says_nothing_to_resume(h5_dataset, tmp_path):
    """It used to say that last.ckpt held the last complete epoch when there was no last.ckpt."""
    import lightning as L

    class CtrlC(L.Callback):
        def on_train_batch_end(self, *args, **kwargs):
            raise KeyboardInterrupt

    run = tmp_path / "r"
    with pytest.raises(TrainingInterrupted, match="no epoch was complete, so there is no last.ckpt to resume from"):
        finetune("poolnet", h5_dataset, run, callbacks=(CtrlC(),), **KW)
    assert not (run / "last.ckpt").exists()
    finetune("poolnet", h5_dataset, run, **KW)  # the same command starts over
    assert (run / "last.ckpt").is_file() and (run / "best.pt").is_file()
