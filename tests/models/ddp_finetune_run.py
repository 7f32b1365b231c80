"""Run under torchrun by test_ddp.py: one tiny DDP fine-tune; every rank records what it trained on.

    torchrun --standalone --nproc-per-node 2 ddp_finetune_run.py DATA.h5 RUN_DIR RECORD_DIR
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import lightning as L
import torch

from dfdcap.models.train import Hardware, finetune


class RecordRank(L.Callback):
    """Writes RECORD_DIR/rank<R>.json: world size, the sample indices of its sampler in each epoch,
    the batches it trained on, and a checksum of its weights at the end (equal on all ranks under DDP)."""

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.rec = {"indices": [], "batches": 0, "samples": 0}

    def on_train_epoch_start(self, trainer, module):
        sampler = trainer.train_dataloader.sampler
        self.rec["sampler"] = type(sampler).__name__
        self.rec["indices"].append([int(i) for i in iter(sampler)])

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.rec["batches"] += 1
        self.rec["samples"] += int(batch["stack"].shape[0])

    def on_train_end(self, trainer, module):
        self.rec.update(rank=trainer.global_rank, world_size=trainer.world_size, pid=os.getpid(),
                        weights=float(sum(p.double().sum() for p in module.parameters())))
        (self.out_dir / f"rank{trainer.global_rank}.json").write_text(json.dumps(self.rec))


def main() -> None:
    data, run_dir, record_dir = sys.argv[1:4]
    torch.set_num_threads(1)
    finetune("poolnet", data, run_dir, epochs=1, batch_size=2, crop=32, tiny=True, progress=False, lr=1e-3,
             hardware=Hardware(accelerator="cpu", devices=2, strategy="ddp", workers=1),
             callbacks=(RecordRank(Path(record_dir)),))


if __name__ == "__main__":
    main()
