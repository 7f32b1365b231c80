"""DDFFNet (Hazirbas et al., "Deep Depth From Focus", ACCV 2018), stack-length free.

A VGG16-style (group norm) encoder-decoder runs on every frame of the stack; each frame gets a
per-pixel focus score; a softmax over the stack turns the scores into weights and the depth
is the weighted mean of the frames' focus in diopters, so any stack length S and any frame
order work at inference. No ImageNet weights: trains from scratch or from pretraining.
"""

from __future__ import annotations

import torch
from torch import nn

from dfdcap.models.blocks import (
    CocDecoder,
    UNetDecoder,
    check_inputs,
    conv_norm_relu,
    depth_from_weights,
    pad_to,
)

VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


class VGGEncoder(nn.Module):
    """VGG16's five conv blocks (group norm) (channels x width), a 2x max-pool between blocks.

    forward: (N, c_in, H, W), H and W multiples of 16 -> five features, finest first.
    """

    def __init__(self, c_in: int = 3, width: float = 1.0):
        super().__init__()
        self.channels = [max(4, int(round(c * width))) for c, _ in VGG16_BLOCKS]
        blocks = []
        c_prev = c_in
        for c, (_, n) in zip(self.channels, VGG16_BLOCKS):
            layers = [conv_norm_relu(c_prev if i == 0 else c, c) for i in range(n)]
            blocks.append(nn.Sequential(*layers))
            c_prev = c
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for i, block in enumerate(self.blocks):
            if i:
                x = self.pool(x)
            x = block(x)
            feats.append(x)
        return feats


class DDFFNet(nn.Module):
    """stack (B, S, 3, H, W) in [0, 1], focus_m (B, S) -> {"depth": (B, 1, H, W) m[, "coc"]}."""

    def __init__(self, width: float = 0.25, coc: bool = False):
        super().__init__()
        self.encoder = VGGEncoder(3, width)
        ch = self.encoder.channels
        self.decoder = UNetDecoder(ch)
        self.score = nn.Conv2d(ch[0], 1, 1)
        self.coc_decoder = CocDecoder(ch) if coc else None

    def forward(self, stack: torch.Tensor, focus_m: torch.Tensor) -> dict[str, torch.Tensor]:
        check_inputs(stack, focus_m)
        b, s = stack.shape[:2]
        x, (h, w) = pad_to(stack, 16)
        feats = self.encoder(x.flatten(0, 1) - 0.5)
        scores = self.score(self.decoder(feats)).view(b, s, *x.shape[-2:])
        out = {"depth": depth_from_weights(torch.softmax(scores, dim=1), focus_m)[..., :h, :w]}
        if self.coc_decoder is not None:
            out["coc"] = self.coc_decoder(feats).view(b, s, 1, *x.shape[-2:])[..., :h, :w]
        return out
