"""The LightningModule around any DFF network, and the callback that writes plain checkpoints.

The network stays a plain nn.Module (registry.build_model); this module only adds the loss
(L1 on the diopter position, losses.py), the optimiser and logging (train/loss, val/loss,
val/rms, val/absrel). Training batches get a random frame subset that keeps both end frames
and a random frame order. One `model_step` serves training and validation.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import lightning as L
import torch

from dfdcap.errors import ModelError
from dfdcap.models.checkpoint import save_checkpoint
from dfdcap.models.losses import dff_loss, masked_mse
from dfdcap.models.pool import shuffle_frames, subsample_keep_ends
from dfdcap.models.registry import build_model


class DFFModule(L.LightningModule):
    """Diopter-L1 depth training with Adam (cosine decay over max_steps when given); stacks of
    `frames` (min, max) frames per batch, both end frames always kept, in random order."""

    def __init__(
        self,
        model_name: str,
        model_config: dict,
        lr: float = 1e-3,
        coc_weight: float = 1e-2,
        frames: tuple[int, int] = (4, 5),
        weight_decay: float = 0.0,
        max_steps: int | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.model = build_model(model_name, **model_config)
        self._rng = random.Random(0)

    def forward(self, stack: torch.Tensor, focus_m: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model(stack, focus_m)

    def model_step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict, dict]:
        out = self.model(batch["stack"], batch["focus_m"])
        loss, parts = dff_loss(out, batch, self.hparams.coc_weight, getattr(self.model, "reach", 0.0))
        return loss, parts, out

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        lo, hi = self.hparams.frames
        k = self._rng.randint(lo, hi)
        batch = shuffle_frames(subsample_keep_ends(batch, k))
        loss, parts, _ = self.model_step(batch)
        if not torch.isfinite(loss.detach()):  # stop at once: every later step and checkpoint would be nan
            raise ModelError(diverged("training loss", float(loss.detach()), self.global_step, self.hparams.lr))
        bs = batch["stack"].shape[0]
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=bs)
        self.log("train/depth", parts["depth"], on_step=False, on_epoch=True, batch_size=bs)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        loss, parts, out = self.model_step(batch)
        valid = batch["mask"] & (batch["depth_m"] > 0)
        # a batch without a valid pixel scores 0: weight 0 keeps it out of the epoch's mean (not skipped:
        # under DDP every rank must log the same keys)
        bs = batch["stack"].shape[0] if bool(valid.any()) else 0
        # sync_dist: under DDP every rank validates its share; the epoch value is their mean, the same on all
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, batch_size=bs, sync_dist=True)
        self.log("val/rms", torch.sqrt(masked_mse(out["depth"], batch["depth_m"], batch["mask"])), on_epoch=True,
                 batch_size=bs, sync_dist=True)
        rel = ((out["depth"] - batch["depth_m"]).abs() / batch["depth_m"].clamp_min(1e-6))[valid]
        self.log("val/absrel", rel.mean() if rel.numel() else rel.sum(), on_epoch=True, batch_size=bs, sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.Adam(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        if not self.hparams.max_steps:
            return opt
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.hparams.max_steps, eta_min=self.hparams.lr * 0.05)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def diverged(what: str, value: float, step: int, lr: float) -> str:
    return (f"training diverged: the {what} is {value} at step {step}; the checkpoints written before "
            f"are kept, nothing after; try a smaller --lr (this run: {lr:g})")


class PlainCheckpoints(L.Callback):
    """After each validation: write last.pt, and best.pt when val/loss improved (plain dicts)."""

    def __init__(self, last_path: Path, best_path: Path, meta: dict | None = None):
        self.last_path, self.best_path = Path(last_path), Path(best_path)
        self.meta = dict(meta or {})
        self.best = math.inf

    def on_validation_end(self, trainer: L.Trainer, module: DFFModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        val = trainer.callback_metrics.get("val/loss")
        if val is None:
            return
        val = float(val)
        if not math.isfinite(val):  # weights gone to inf/nan: saving them would replace good checkpoints
            raise ModelError(diverged("validation loss", val, trainer.global_step, module.hparams.lr))
        meta = dict(self.meta, epoch=trainer.current_epoch, global_step=trainer.global_step, val_loss=val)
        h = module.hparams
        save_checkpoint(self.last_path, h.model_name, dict(h.model_config), module.model, meta)
        if val < self.best:
            self.best = val
            save_checkpoint(self.best_path, h.model_name, dict(h.model_config), module.model, meta)

    def state_dict(self) -> dict:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best = float(state_dict.get("best", math.inf))
