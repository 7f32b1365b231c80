"""Training losses: masked MSE on depth (metres) and on the per-frame CoC (pixels)."""

from __future__ import annotations

import torch


def masked_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the pixels where mask is true (and the target is finite).

    pred, target: (B, 1, H, W) or (B, S, 1, H, W); mask broadcastable to them, bool.
    An empty mask gives 0 that still carries the graph (so a batch without ground truth
    does not break training).
    """
    valid = mask.expand_as(target) & torch.isfinite(target)
    n = valid.sum()
    diff = torch.where(valid, pred - torch.nan_to_num(target), torch.zeros_like(pred))
    return (diff * diff).sum() / n.clamp_min(1)


def dff_loss(
    out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], coc_weight: float = 1e-3
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Depth MSE plus coc_weight x CoC MSE where the model predicts CoC and the batch has it.

    The CoC weight is small because CoC errors are in pixels (order 1) while depth errors are
    in metres (order 0.01-0.1). Returns (total, {"depth": ..., "coc": ...}).
    """
    mask = batch["mask"]
    parts = {"depth": masked_mse(out["depth"], batch["depth_m"], mask)}
    total = parts["depth"]
    if "coc" in out and "coc_px" in batch:
        parts["coc"] = masked_mse(out["coc"], batch["coc_px"], mask[:, None])
        total = total + coc_weight * parts["coc"]
    return total, parts
