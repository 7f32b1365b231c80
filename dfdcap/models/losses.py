"""Training losses: L1 on the diopter position in the swept range, and the per-frame CoC (pixels).

Blur is linear in diopters, and a stack can only tell where a pixel is between its nearest
and farthest focus: so depth is scored as its position u = (1/d - 1/f_far) / (1/f_near -
1/f_far) in [0, 1], the target clamped to the swept range (or to what a model can reach beyond it:
fvnet's reach). A 10 cm macro stack and a 3 m room
stack weigh alike (a loss in metres lets far stacks outweigh near ones ~100x).
"""

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


def sweep_position(depth_m: torch.Tensor, focus_m: torch.Tensor) -> torch.Tensor:
    """Depth (B, 1, H, W) metres -> position in the stack's diopter range, 0 = farthest focus, 1 = nearest."""
    dpt = 1.0 / focus_m.clamp_min(1e-4)
    lo = dpt.min(dim=1).values.view(-1, 1, 1, 1)
    span = (dpt.max(dim=1).values.view(-1, 1, 1, 1) - lo).clamp_min(1e-6)
    return (1.0 / depth_m.clamp_min(1e-4) - lo) / span


def diopter_l1(pred_m: torch.Tensor, target_m: torch.Tensor, mask: torch.Tensor, focus_m: torch.Tensor,
               reach: float = 0.0) -> torch.Tensor:
    """Masked mean |u_pred - u_target|, u the sweep position (target clamped to [-reach, 1 + reach])."""
    valid = mask & torch.isfinite(target_m) & (torch.nan_to_num(target_m) > 0)
    tgt = sweep_position(torch.nan_to_num(target_m, nan=1.0).clamp_min(1e-4), focus_m).clamp(-reach, 1.0 + reach)
    err = torch.where(valid, (sweep_position(pred_m, focus_m) - tgt).abs(), torch.zeros_like(pred_m))
    return err.sum() / valid.sum().clamp_min(1)


def dff_loss(
    out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], coc_weight: float = 1e-2, reach: float = 0.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Diopter-position L1 (reach: how far beyond the sweep the model's output can go, in sweep spans)
    plus coc_weight x CoC MSE (pixels²) where the model predicts CoC and the batch has it.

    Returns (total, {"depth": ..., "coc": ...}).
    """
    mask = batch["mask"]
    parts = {"depth": diopter_l1(out["depth"], batch["depth_m"], mask, batch["focus_m"], reach)}
    total = parts["depth"]
    if "coc" in out and "coc_px" in batch:
        parts["coc"] = masked_mse(out["coc"], batch["coc_px"], mask[:, None])
        total = total + coc_weight * parts["coc"]
    return total, parts
