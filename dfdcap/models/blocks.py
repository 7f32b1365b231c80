"""Building blocks shared by the DFF networks: conv blocks, a U-Net decoder, the depth head.

Every network predicts depth relative to the stack's own focus range, so one set of weights
serves a 10 cm macro stack and a 2 m room stack alike: an output y maps to
depth_m = exp(log f_min + y * (log f_max - log f_min)), y = 0 at the nearest focus distance,
y = 1 at the farthest; y may leave [0, 1] to reach depths outside the swept range.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dfdcap.errors import ModelError


def conv_bn_relu(c_in: int, c_out: int, k: int = 3) -> nn.Sequential:
    """3x3 (or kxk) convolution, batch norm, ReLU; keeps the spatial size."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False),
        nn.BatchNorm2d(c_out),
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


def depth_from_unit(y: torch.Tensor, focus_m: torch.Tensor) -> torch.Tensor:
    """y: (B, 1, H, W) position in the log focus range -> depth (B, 1, H, W) metres."""
    lo, span = log_focus_range(focus_m)
    return torch.exp(lo + span * y.clamp(-3.0, 4.0))


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
            self.convs.append(nn.Sequential(conv_bn_relu(2 * c_skip, c_skip), conv_bn_relu(c_skip, c_skip)))

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
