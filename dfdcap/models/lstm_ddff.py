"""LSTM-DDFF: DDFFNet with a recurrent module between encoder and decoder (the thesis's variant).

The VGG encoder runs on every frame; at the bottleneck a two-layer LSTM runs over the stack
(frames sorted by increasing focus distance inside, so the input order does not matter), one sequence per bottleneck pixel (the H x W
positions are flattened into the LSTM's batch); its last output is decoded to depth.
Encoder skips are merged across the stack by max and mean; the last (deepest) skip gets a
3x3 convolution, the others a 1x1. The head's sigmoid is the position between the farthest
and the nearest focus in diopters: depth stays inside the swept range. Any stack length S works.
"""

from __future__ import annotations

import torch
from torch import nn

from dfdcap.models.blocks import (
    CocDecoder,
    UNetDecoder,
    check_inputs,
    conv_norm_relu,
    depth_from_position,
    pad_to,
    sort_by_focus,
    take_frames,
    unit_focus,
)
from dfdcap.models.ddff import VGGEncoder


class LSTMDDFFNet(nn.Module):
    """stack (B, S, 3, H, W) in [0, 1], focus_m (B, S) -> {"depth": (B, 1, H, W) m[, "coc"]}."""

    def __init__(self, width: float = 0.25, coc: bool = False):
        super().__init__()
        self.encoder = VGGEncoder(4, width)  # RGB + focus position channel
        ch = self.encoder.channels
        self.lstm = nn.LSTM(ch[-1], ch[-1], num_layers=2, batch_first=True)
        self.skip_merge = nn.ModuleList(
            [conv_norm_relu(2 * c, c, k=3 if i == len(ch) - 2 else 1) for i, c in enumerate(ch[:-1])]
        )
        self.decoder = UNetDecoder(ch)
        self.head = nn.Conv2d(ch[0], 1, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.coc_decoder = CocDecoder(ch) if coc else None

    def forward(self, stack: torch.Tensor, focus_m: torch.Tensor) -> dict[str, torch.Tensor]:
        check_inputs(stack, focus_m)
        b, s = stack.shape[:2]
        stack, focus_m, order = sort_by_focus(stack, focus_m)
        x, (h, w) = pad_to(stack, 16)
        u = unit_focus(focus_m)[:, :, None, None, None].expand(b, s, 1, *x.shape[-2:])
        feats = self.encoder(torch.cat([x - 0.5, u - 0.5], dim=2).flatten(0, 1))
        deep = feats[-1]
        c, hh, ww = deep.shape[1:]
        seq = deep.view(b, s, c, hh * ww).permute(0, 3, 1, 2).reshape(b * hh * ww, s, c)
        last = self.lstm(seq)[0][:, -1]  # (B*hh*ww, C)
        bottleneck = last.view(b, hh * ww, c).permute(0, 2, 1).reshape(b, c, hh, ww)
        skips = []
        for f, merge in zip(feats[:-1], self.skip_merge):
            fs = f.view(b, s, *f.shape[1:])
            skips.append(merge(torch.cat([fs.max(dim=1).values, fs.mean(dim=1)], dim=1)))
        y = torch.sigmoid(self.head(self.decoder(skips + [bottleneck])))
        out = {"depth": depth_from_position(y, focus_m)[..., :h, :w]}
        if self.coc_decoder is not None:
            coc = self.coc_decoder(feats).view(b, s, 1, *x.shape[-2:])[..., :h, :w]
            out["coc"] = take_frames(coc, torch.argsort(order, dim=1))
        return out
