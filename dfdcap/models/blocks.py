"""Building blocks shared by the DFF networks: conv blocks, a U-Net decoder, the depth head.

Every network predicts depth relative to the stack's own focus range, so one set of weights
serves a 10 cm macro stack and a 2 m room stack alike, and in DIOPTERS (1 / metres), in which
blur and focus schedules are linear: either softmax weights over the frames, whose expected
focus in diopters is the depth (`depth_from_weights`), or a position y in [0, 1] (sigmoid)
between the farthest (y = 0) and the nearest (y = 1) focus (`depth_from_position`). Either
way the depth stays inside the swept range. The networks' inputs still carry each frame's
place in the log focus range (`unit_focus`, 0 = nearest) as a channel.
Normalisation is group norm (per sample): training batches are 2-8 stacks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dfdcap.errors import ModelError


def group_norm(c: int) -> nn.GroupNorm:
    """Group norm with up to 4 groups (batch statistics are useless with batches of 2-4)."""
    return nn.GroupNorm(math.gcd(4, c), c)


def conv_norm_relu(c_in: int, c_out: int, k: int = 3) -> nn.Sequential:
    """3x3 (or kxk) convolution, group norm, ReLU; keeps the spatial size."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False),
        group_norm(c_out),
        nn.ReLU(inplace=True),
    )


def check_inputs(stack: torch.Tensor, focus_m: torch.Tensor) -> None:
    """stack: (B, S, 3, H, W) float in [0, 1]; focus_m: (B, S) metres, > 0."""
    if stack.ndim != 5 or stack.shape[2] != 3:
        raise ModelError(f"stack must be B x S x 3 x H x W, got {tuple(stack.shape)}")
    if focus_m.shape != stack.shape[:2]:
        raise ModelError(f"focus_m must be B x S = {tuple(stack.shape[:2])}, got {tuple(focus_m.shape)}")


def log_focus_range(focus_m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, S) focus distances -> (lo, span) of log focus, each (B, 1, 1, 1); span >= 0.05."""
    lf = torch.log(focus_m.clamp_min(1e-4))
    lo = lf.min(dim=1).values
    hi = lf.max(dim=1).values
    span = (hi - lo).clamp_min(0.05)
    return lo.view(-1, 1, 1, 1), span.view(-1, 1, 1, 1)


def unit_focus(focus_m: torch.Tensor) -> torch.Tensor:
    """(B, S) focus -> (B, S) position in the stack's log focus range, 0 = nearest, 1 = farthest."""
    lo, span = log_focus_range(focus_m)
    return (torch.log(focus_m.clamp_min(1e-4)) - lo.view(-1, 1)) / span.view(-1, 1)


def take_frames(x: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """x (B, S, ...) with its frames reordered per stack by order (B, S)."""
    idx = order.view(*order.shape, *([1] * (x.ndim - 2))).expand_as(x)
    return torch.gather(x, 1, idx)


def sort_by_focus(stack: torch.Tensor, focus_m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Frames (B, S, ...) and distances (B, S) ordered by focus distance, nearest first, per stack.

    Returns (stack, focus_m, order); `take_frames(y, argsort(order))` puts per-frame outputs
    back in the input order. Networks that read the frames in sequence sort first, so that
    any input order gives the same output."""
    order = torch.argsort(focus_m, dim=1, stable=True)
    return take_frames(stack, order), torch.gather(focus_m, 1, order), order


def focus_diopters(focus_m: torch.Tensor) -> torch.Tensor:
    """(B, S) focus distances metres -> diopters."""
    return 1.0 / focus_m.clamp_min(1e-4)


def depth_from_weights(weights: torch.Tensor, focus_m: torch.Tensor) -> torch.Tensor:
    """Weights (B, S, H, W) summing to 1 over frames -> depth (B, 1, H, W) m at the expected diopters."""
    d = (weights * focus_diopters(focus_m)[:, :, None, None]).sum(dim=1, keepdim=True)
    return 1.0 / d.clamp_min(1e-6)


def depth_from_position(y: torch.Tensor, focus_m: torch.Tensor) -> torch.Tensor:
    """y: (B, 1, H, W) in [0, 1], 0 = farthest focus, 1 = nearest, linear in diopters -> depth metres."""
    dpt = focus_diopters(focus_m)
    lo = dpt.min(dim=1).values.view(-1, 1, 1, 1)
    hi = dpt.max(dim=1).values.view(-1, 1, 1, 1)
    return 1.0 / (lo + y * (hi - lo)).clamp_min(1e-6)


def pad_to(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Reflect-pad the last two dims up to a multiple; returns the padded tensor and (H, W)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        shape = x.shape
        x2 = x.reshape(-1, *shape[-3:])
        mode = "reflect" if min(h, w) > max(ph, pw) else "replicate"
        x2 = F.pad(x2, (0, pw, 0, ph), mode=mode)
        x = x2.reshape(*shape[:-2], h + ph, w + pw)
    return x, (h, w)


class UNetDecoder(nn.Module):
    """Decoder of a U-Net: transposed-conv upsampling, concatenation with the skip, two convs.

    channels: encoder channels finest first, e.g. [16, 32, 64, 128]; forward takes the
    features at those levels (finest first, each half the size of the previous) and returns
    (N, channels[0], H0, W0) at the finest level's size.
    """

    def __init__(self, channels: list[int]):
        super().__init__()
        self.ups = nn.ModuleList()
        self.convs = nn.ModuleList()
        for lvl in range(len(channels) - 1, 0, -1):
            c_deep, c_skip = channels[lvl], channels[lvl - 1]
            self.ups.append(nn.ConvTranspose2d(c_deep, c_skip, 2, stride=2))
            self.convs.append(nn.Sequential(conv_norm_relu(2 * c_skip, c_skip), conv_norm_relu(c_skip, c_skip)))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = feats[-1]
        for i, (up, conv) in enumerate(zip(self.ups, self.convs)):
            skip = feats[-2 - i]
            x = up(x)
            if x.shape[-2:] != skip.shape[-2:]:
                x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = conv(torch.cat([x, skip], dim=1))
        return x


class CocDecoder(nn.Module):
    """The CoC decoder that any encoder-decoder can add for extra supervision.

    Takes one frame's encoder features (finest first) and predicts that frame's circle of
    confusion in pixels, (N, 1, H, W) >= 0, at the finest level's size.
    """

    def __init__(self, channels: list[int]):
        super().__init__()
        self.decoder = UNetDecoder(channels)
        self.head = nn.Conv2d(channels[0], 1, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return F.softplus(self.head(self.decoder(feats)))
