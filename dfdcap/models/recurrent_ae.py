"""Recurrent autoencoder (Chaitanya et al., SIGGRAPH 2017) with the thesis's changes.

An encoder-decoder that reads the stack one frame at a time (sorted inside by increasing
focus distance, so the input order does not matter);
every block keeps a hidden state and feeds it back into itself at the next frame:
h_t = ReLU(conv([GN(conv(x_t)), h_{t-1}])). The thesis's modifications: normalisation (here group norm), more channels,
transposed convolutions for upsampling. The depth is read out after the last frame; with
the CoC decoder each frame's decoder output also predicts that frame's CoC. The head's
sigmoid is the position between the farthest and the nearest focus in diopters, so depth
stays inside the swept range. Any S works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dfdcap.models.blocks import (
    check_inputs,
    conv_norm_relu,
    depth_from_position,
    pad_to,
    sort_by_focus,
    take_frames,
    unit_focus,
)


class RecurrentBlock(nn.Module):
    """conv-GN-ReLU on the input, then a recurrent conv-ReLU on [x_t, h_{t-1}] (h_{-1} = 0).

    Group norm sits on the per-frame input convolution only: the recurrent convolution sees
    h = 0 at the first frame and a full state later, and batch statistics pooled over such
    different steps made evaluation (running statistics) far worse than training.
    """

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.inp = conv_norm_relu(c_in, c_out)
        self.rec = nn.Sequential(nn.Conv2d(2 * c_out, c_out, 3, padding=1), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor, h: torch.Tensor | None) -> torch.Tensor:
        x = self.inp(x)
        if h is None:
            h = torch.zeros_like(x)
        return self.rec(torch.cat([x, h], dim=1))


class RecurrentAE(nn.Module):
    """stack (B, S, 3, H, W) in [0, 1], focus_m (B, S) -> {"depth": (B, 1, H, W) m[, "coc"]}."""

    def __init__(self, width: int = 24, levels: int = 4, coc: bool = False):
        super().__init__()
        self.levels = levels
        ch = [width * 2**i for i in range(levels)]
        self.channels = ch
        self.enc = nn.ModuleList([RecurrentBlock(4 if i == 0 else ch[i - 1], c) for i, c in enumerate(ch)])
        self.ups = nn.ModuleList([nn.ConvTranspose2d(ch[i], ch[i - 1], 2, stride=2) for i in range(levels - 1, 0, -1)])
        self.dec = nn.ModuleList([RecurrentBlock(2 * ch[i - 1], ch[i - 1]) for i in range(levels - 1, 0, -1)])
        self.head = nn.Conv2d(ch[0], 1, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.coc_head = nn.Conv2d(ch[0], 1, 1) if coc else None

    def forward(self, stack: torch.Tensor, focus_m: torch.Tensor) -> dict[str, torch.Tensor]:
        check_inputs(stack, focus_m)
        b, s = stack.shape[:2]
        stack, focus_m, order = sort_by_focus(stack, focus_m)
        x, (h, w) = pad_to(stack, 2 ** (self.levels - 1))
        u = unit_focus(focus_m)
        enc_h: list[torch.Tensor | None] = [None] * self.levels
        dec_h: list[torch.Tensor | None] = [None] * (self.levels - 1)
        cocs = []
        for t in range(s):
            ut = u[:, t, None, None, None].expand(b, 1, *x.shape[-2:])
            z = torch.cat([x[:, t] - 0.5, ut - 0.5], dim=1)
            for i, block in enumerate(self.enc):
                if i:
                    z = F.max_pool2d(z, 2)
                z = enc_h[i] = block(z, enc_h[i])
            for j, (up, block) in enumerate(zip(self.ups, self.dec)):
                skip = enc_h[self.levels - 2 - j]
                z = dec_h[j] = block(torch.cat([up(z), skip], dim=1), dec_h[j])
            if self.coc_head is not None:
                cocs.append(F.softplus(self.coc_head(z)))
        out = {"depth": depth_from_position(torch.sigmoid(self.head(z)), focus_m)[..., :h, :w]}
        if self.coc_head is not None:
            out["coc"] = take_frames(torch.stack(cocs, dim=1)[..., :h, :w], torch.argsort(order, dim=1))
        return out
