"""PoolNet and PoolNet-CoC: permutation-invariant focus-stack networks.

PoolNet follows Aittala and Durand's burst network: every frame (RGB plus its focus position
as a fourth channel) runs through the same encoder; at each level the frame's features are
joined with the max over the whole stack, so frames exchange information while the order of
frames never matters; the deepest level and the skips are max-pooled across the stack and a
single decoder decodes them. Each frame then gets a score from its own finest features
joined with the decoder's output through a nonlinearity (3x3 convolution of the
concatenation, ReLU, 1x1 convolution): were the decoded context merely added to every
frame's score, the softmax over frames would cancel it and the decoder would learn nothing.
The softmax over the stack weights the frames' focus in diopters into depth, as in DDFFNet
(sum over frames: order-free). Group norm throughout.

PoolNet-CoC (DefocusNet, Maximov et al. CVPR 2020) puts two such networks in sequence: the
first predicts every frame's circle of confusion (pixels), the second predicts depth from the
predicted CoC maps and the focus positions alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dfdcap.models.blocks import (
    UNetDecoder,
    check_inputs,
    conv_norm_relu,
    depth_from_weights,
    group_norm,
    pad_to,
    unit_focus,
)


class PoolEncoder(nn.Module):
    """Per-frame encoder with a global max over the stack at every level.

    Each level: z = CNR(z) per frame; p = max over the stack of z; z = ReLU(GN(A z + B p)),
    which is a convolution of the concatenation [z, p] written so that B p is computed once
    per stack instead of once per frame.
    forward: (B, S, C_in, H, W), H and W multiples of 2**(levels-1) -> per level
    (B, S, c_l, H_l, W_l) per-frame features that already carry the stack's max.
    """

    def __init__(self, c_in: int, width: int, levels: int):
        super().__init__()
        self.channels = [width * 2**i for i in range(levels)]
        self.inp = nn.ModuleList()
        self.mix_frame = nn.ModuleList()
        self.mix_pool = nn.ModuleList()
        self.mix_norm = nn.ModuleList()
        c_prev = c_in
        for c in self.channels:
            self.inp.append(conv_norm_relu(c_prev, c))
            self.mix_frame.append(nn.Conv2d(c, c, 3, padding=1, bias=False))
            self.mix_pool.append(nn.Conv2d(c, c, 3, padding=1, bias=False))
            self.mix_norm.append(group_norm(c))
            c_prev = c

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        b, s = x.shape[:2]
        z = x.flatten(0, 1)
        feats = []
        for i in range(len(self.channels)):
            if i:
                z = F.max_pool2d(z, 2)
            z = self.inp[i](z)
            pooled = stack_max(z.view(b, s, *z.shape[1:]))
            mixed = self.mix_frame[i](z).view(b, s, *z.shape[1:]) + self.mix_pool[i](pooled)[:, None]
            z = F.relu(self.mix_norm[i](mixed.flatten(0, 1)))
            feats.append(z.view(b, s, *z.shape[1:]))
        return feats


def stack_max(x: torch.Tensor) -> torch.Tensor:
    """(B, S, ...) -> (B, ...) max over the stack (elementwise maximum: faster than max(dim))."""
    m = x[:, 0]
    for i in range(1, x.shape[1]):
        m = torch.maximum(m, x[:, i])
    return m


class PoolNet(nn.Module):
    """stack (B, S, 3, H, W) in [0, 1], focus_m (B, S) -> {"depth": (B, 1, H, W) m[, "coc"]}.

    Permutation invariant: reordering the frames (with their focus distances) gives the same
    depth. c_in lets PoolNet-CoC reuse it on (CoC, focus) inputs via `forward_features`.
    """

    def __init__(self, width: int = 6, levels: int = 4, coc: bool = False, c_in: int = 3):
        super().__init__()
        self.levels = levels
        self.encoder = PoolEncoder(c_in + 1, width, levels)
        ch = self.encoder.channels
        self.decoder = UNetDecoder(ch)
        # per-frame focus score = conv1x1(ReLU(conv3x3([frame features, decoded stack]))); the
        # 3x3 convolution is split in two so that the decoded part is computed once per stack
        self.score_frame = nn.Conv2d(ch[0], ch[0], 3, padding=1)
        self.score_stack = nn.Conv2d(ch[0], ch[0], 3, padding=1, bias=False)
        self.head = nn.Conv2d(ch[0], 1, 1)
        self.coc_decoder = UNetDecoder(ch) if coc else None
        self.coc_head = nn.Conv2d(ch[0], 1, 1) if coc else None

    def forward_features(self, x: torch.Tensor, focus_m: torch.Tensor) -> dict[str, torch.Tensor]:
        """x: (B, S, c_in, H, W) already normalised; H, W multiples of 2**(levels-1)."""
        b, s = x.shape[:2]
        u = unit_focus(focus_m)[:, :, None, None, None].expand(b, s, 1, *x.shape[-2:])
        feats = self.encoder(torch.cat([x, u - 0.5], dim=2))
        pooled = [stack_max(f) for f in feats]
        dec = self.decoder(pooled)  # (B, c0, H, W)
        f0 = feats[0]
        hidden = self.score_frame(f0.flatten(0, 1)).view(f0.shape) + self.score_stack(dec)[:, None]
        scores = self.head(F.relu(hidden).flatten(0, 1)).view(b, s, *x.shape[-2:])
        out = {"depth": depth_from_weights(torch.softmax(scores, dim=1), focus_m)}
        if self.coc_decoder is not None:
            c = self.coc_head(self.coc_decoder([f.flatten(0, 1) for f in feats]))
            out["coc"] = F.softplus(c).view(b, s, 1, *x.shape[-2:])
        return out

    def forward(self, stack: torch.Tensor, focus_m: torch.Tensor) -> dict[str, torch.Tensor]:
        check_inputs(stack, focus_m)
        x, (h, w) = pad_to(stack, 2 ** (self.levels - 1))
        out = self.forward_features(x - 0.5, focus_m)
        return {k: v[..., :h, :w] for k, v in out.items()}


class PoolNetCoC(nn.Module):
    """DefocusNet: CoC maps for every frame first, then depth from the predicted CoC.

    Returns {"depth": (B, 1, H, W) m, "coc": (B, S, 1, H, W) px}. coc_scale_px divides the
    CoC before the depth network sees it (a typical CoC size, for conditioning only).
    """

    def __init__(self, width: int = 6, levels: int = 4, coc_scale_px: float = 8.0):
        super().__init__()
        self.levels = levels
        self.coc_scale_px = coc_scale_px
        self.coc_net = PoolNet(width, levels, coc=True)
        self.depth_net = PoolNet(width, levels, coc=False, c_in=1)

    def forward(self, stack: torch.Tensor, focus_m: torch.Tensor) -> dict[str, torch.Tensor]:
        check_inputs(stack, focus_m)
        x, (h, w) = pad_to(stack, 2 ** (self.levels - 1))
        coc = self.coc_net.forward_features(x - 0.5, focus_m)["coc"]
        depth = self.depth_net.forward_features(coc / self.coc_scale_px - 0.5, focus_m)["depth"]
        return {"depth": depth[..., :h, :w], "coc": coc[..., :h, :w]}
