"""A 2-process DDP fine-tune on CPU (gloo) launched with torchrun, as a multi-GPU run would be."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from h5_files import write_h5

RUNNER = Path(__file__).with_name("ddp_finetune_run.py")
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_process_ddp_finetune_trains_both_ranks_and_writes_once(tmp_path):
    data = tmp_path / "d.h5"
    write_h5(data, {"train": 8, "val": 2})
    run_dir, rec = tmp_path / "run", tmp_path / "ranks"
    rec.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(RUNNER),
           str(data), str(run_dir), str(rec)]
    # a hang (a DataLoader worker forked beside gloo's threads once waited forever) fails, not stalls CI
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                          start_new_session=True) as p:
        try:
            stdout, stderr = p.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)  # torchrun, both ranks and their loader workers
            stdout, stderr = p.communicate()
            pytest.fail(f"torchrun did not finish in 900 s: {stdout[-2000:]} {stderr[-2000:]}")
    assert p.returncode == 0, stdout[-3000:] + stderr[-3000:]

    ranks = [json.loads((rec / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["rank"] for r in ranks] == [0, 1] and {r["world_size"] for r in ranks} == {2}
    assert ranks[0]["pid"] != ranks[1]["pid"]
    # each rank trained on its own half of the 8 training samples (DistributedSampler)
    assert all(r["sampler"] == "DistributedSampler" for r in ranks)
    idx = [set(r["indices"][0]) for r in ranks]
    assert idx[0].isdisjoint(idx[1]) and idx[0] | idx[1] == set(range(8))
    assert [r["batches"] for r in ranks] == [2, 2] and [r["samples"] for r in ranks] == [4, 4]
    # gradients were averaged: both ranks end with the same weights
    assert ranks[0]["weights"] == pytest.approx(ranks[1]["weights"], rel=1e-9, abs=1e-9)

    # only rank 0 wrote: one of each file, no per-rank copies or version folders
    names = sorted(p.name for p in run_dir.iterdir())
    assert names == ["best.ckpt", "best.pt", "hparams.yaml", "last.ckpt", "last.pt", "metrics.csv", "run.json"], names
    assert json.loads((run_dir / "run.json").read_text())["world_size"] == 2
    ckpt = torch.load(run_dir / "last.pt", weights_only=True)
    assert ckpt["meta"]["global_step"] == 2
    rows = (run_dir / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith(("epoch", "step")) or "val/loss" in rows[0]
    assert sum("," in r for r in rows[1:]) >= 1


class TestHardwareOptions:
    def test_parse_devices(self):
        from dfdcap.errors import ModelError
        from dfdcap.models.train import parse_devices

        assert parse_devices("auto") == "auto" and parse_devices("2") == 2 and parse_devices("-1") == -1
        assert parse_devices("0,2") == (0, 2)
        with pytest.raises(ModelError, match="--devices 'two'"):
            parse_devices("two")

    def test_distributed_runs_start_loader_workers_from_a_fork_server(self, monkeypatch):
        """A worker forked from a rank that runs gloo's threads hung inside fork() (py-spy: popen_fork,
        0 CPU seconds), and the other rank waited for it forever. Distributed runs fork from a fork
        server instead; a single process keeps plain fork (its pool is shared copy-on-write)."""
        from dfdcap.models.train import Hardware, _loader_kw

        monkeypatch.delenv("WORLD_SIZE", raising=False)
        for hw in (Hardware(strategy="ddp", workers=2), Hardware(devices=2, workers=1), Hardware(devices=(0, 1), workers=1),
                   Hardware(devices=-1, workers=1), Hardware(num_nodes=2, workers=1)):
            assert _loader_kw(hw)["multiprocessing_context"] == "forkserver", hw
        for hw in (Hardware(workers=2), Hardware(devices=1, workers=2), Hardware(strategy="ddp", workers=0)):
            assert "multiprocessing_context" not in _loader_kw(hw), hw
        monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun or SLURM started the ranks
        assert _loader_kw(Hardware(workers=1))["multiprocessing_context"] == "forkserver"

    def test_unavailable_accelerator_is_one_line_error(self, tmp_path):
        from dfdcap.errors import ModelError
        from dfdcap.models.train import Hardware, finetune

        data = tmp_path / "d.h5"
        write_h5(data, {"train": 2, "val": 1})
        with pytest.raises(ModelError) as e:
            finetune("poolnet", data, tmp_path / "run", epochs=1, crop=32, tiny=True, progress=False,
                     hardware=Hardware(accelerator="cpu", devices=2, strategy="no-such-strategy"))
        assert "no-such-strategy" in str(e.value) and "\n" not in str(e.value)
        assert not (tmp_path / "run" / "run.json").exists()
