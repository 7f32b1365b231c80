"""Fine-tuning never selects on test; held-out sessions; what evaluate warns about."""

import numpy as np
import pytest

from dfdcap.dataset import h5io
from dfdcap.errors import ModelError
from dfdcap.models.checkpoint import read_checkpoint
from dfdcap.models.splits import plan_finetune_splits, split_sessions, training_use
from dfdcap.models.train import finetune
from dfdcap.sim.render import random_focus_stack


def write_sessions(path, layout: dict[str, list[str]], size=32, seed=5):
    """A dataset file (the dataset stage's writer) whose samples name their session: {split: [session, ...]}."""
    rng = np.random.default_rng(seed)
    with h5io.write_dataset(path, {"focal_length_m": 0.0042, "f_number": 1.7, "pixel_pitch_m": 1.4e-6}) as w:
        for split, sessions in layout.items():
            for i, s in enumerate(sessions):
                d = random_focus_stack(rng, (size, size), 5)
                w.append(split, h5io.Sample(d["stack"], d["focus_m"], d["depth_m"], np.ones((size, size), bool), None,
                                            {"session": s.upper(), "session_dir": s, "ramp": i}))
    return path


class TestPlan:
    def test_val_split_is_used(self, tmp_path):
        p = write_sessions(tmp_path / "d.h5", {"train": ["a", "a"], "val": ["b"], "test": ["c"]})
        plan = plan_finetune_splits(p)
        assert (plan.train_split, plan.val_split, plan.held_out) == ("train", "val", False)
        assert plan.train_sessions == ["a"] and plan.val_sessions == ["b"]

    def test_no_val_holds_out_a_session_never_test(self, tmp_path):
        p = write_sessions(tmp_path / "d.h5", {"train": ["a", "b", "a", "b", "c"], "test": ["t"]})
        plan = plan_finetune_splits(p)
        assert plan.val_split == "train" and plan.held_out
        assert plan.val_sessions == ["c"] and plan.val_indices == [4] and plan.train_indices == [0, 1, 2, 3]
        assert split_sessions(p, "train") == ["a", "b", "a", "b", "c"]

    def test_one_session_and_no_val_refuses_with_the_fix(self, tmp_path):
        p = write_sessions(tmp_path / "d.h5", {"train": ["a", "a"], "test": ["t"]})
        with pytest.raises(ModelError) as e:
            plan_finetune_splits(p)
        msg = str(e.value)
        assert "one session (a)" in msg and "--val SESSION" in msg and "\n" not in msg

    def test_test_is_never_selected_on(self, tmp_path):
        p = write_sessions(tmp_path / "d.h5", {"train": ["a"], "test": ["t"]})
        with pytest.raises(ModelError, match="does not select the checkpoint on the 'test' split"):
            plan_finetune_splits(p, val_split="test")
        with pytest.raises(ModelError, match="does not train on the 'test' split"):
            plan_finetune_splits(p, train_split="test")


def test_finetune_refuses_to_select_on_test(tmp_path):
    p = write_sessions(tmp_path / "d.h5", {"train": ["a", "a"], "test": ["t"]})
    with pytest.raises(ModelError, match="never test"):
        finetune("poolnet", p, tmp_path / "run", epochs=1, crop=32, tiny=True, progress=False, fast_dev_run=True)
    with pytest.raises(ModelError, match="'test' split"):
        finetune("poolnet", p, tmp_path / "run", epochs=1, crop=32, tiny=True, progress=False, fast_dev_run=True,
                 val_split="test")


@pytest.fixture(scope="module")
def held_out_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("held")
    p = write_sessions(d / "d.h5", {"train": ["a", "a", "b"], "test": ["t"]})
    r = finetune("poolnet", p, d / "run", epochs=1, batch_size=2, crop=32, tiny=True, progress=False)
    return p, r


def test_finetune_records_what_it_trained_and_selected_on(held_out_run):
    p, r = held_out_run
    meta = read_checkpoint(r.best_pt)["meta"]
    assert meta["train_split"] == "train" and meta["val_split"] == "train" and meta["held_out_val"]
    assert meta["train_sessions"] == ["a"] and meta["val_sessions"] == ["b"]
    assert meta["data"] == str(p.resolve())
    assert r.global_step == 1  # 2 stacks of session a in one batch of 2: b was not trained on


class TestTrainingUse:
    META = {"data": "/x/d.h5", "train_split": "train", "val_split": "val", "train_sessions": ["a"], "val_sessions": ["b"]}

    def test_by_session(self):
        assert "trained on" in training_use(self.META, "/y/other.h5", "test", ["c", "a"])
        assert "selected" in training_use(self.META, "/y/other.h5", "test", ["b"])
        assert training_use(self.META, "/x/d.h5", "train", ["c"]) is None  # sessions say it is new data

    def test_by_file_and_split_without_sessions(self, tmp_path):
        f = tmp_path / "d.h5"
        f.write_bytes(b"")
        meta = dict(self.META, data=str(f), train_sessions=[], val_sessions=[])
        assert training_use(meta, f, "train", [None]) == "trained on"
        assert training_use(meta, f, "val", [None]) == "selected the checkpoint on"
        assert training_use(meta, f, "test", [None]) is None
        assert training_use({"kind": "pretrain"}, f, "train", ["a"]) is None  # synthetic only: nothing to warn


def test_evaluate_warns_in_yellow_on_trained_split(held_out_run, cli, tmp_path):
    p, r = held_out_run
    code, out, err = cli("evaluate", r.best_pt, "--data", p, "--split", "train", "--json", tmp_path / "e.json")
    assert code == 0, err
    assert "scoring split 'train'" in out
    assert "warning" in err and "trained on" in err and "not held-out" in err
    import json

    assert json.loads((tmp_path / "e.json").read_text())["warnings"]
    code, out, err = cli("evaluate", r.best_pt, "--data", p)
    assert code == 0 and "scoring split 'test'" in out and "warning" not in err
