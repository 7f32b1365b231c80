"""FVNet: a small focus-volume network on top of the classical focus measure.

Frames are sorted by focus inside (so any frame order gives the same output) and normalised
photometrically per stack (mean and spread of each colour over the whole stack: exposure
and contrast changes between rigs do not matter). A shared 2D extractor gives every frame
features; the focus volume holds them, their difference from the stack mean, the frame's
position in the sweep and the log sum-modified-Laplacian of the classical baseline
(baseline.py). Factorised blocks (spatial 3x3 convolutions per frame, then 3-tap
convolutions across the sorted frames) refine it at 1/2 and 1/4 resolution. The per-frame
score is the full-resolution classical prior (a learned scale) plus the learned residual
(upsampled; its last layer starts at zero, so an untrained FVNet already behaves like a soft
classical DFF). A softmax over the frames gives the expected focus position in DIOPTERS
(blur is linear in diopters), returned in metres; the confidence is 1 - the softmax's
standard deviation in diopters over half the swept range.

The ends of the sweep: a softmax never puts all its weight on one frame, so the plain expectation
cannot reach the first or last frame's focus, and a pixel beyond the sweep (common: a scene
rarely ends where the sweep does) reads a little inside it. At the far end that little costs a
lot in metres (see reach below). With end_margin a > 0 the expected position u in [0, 1] is read as
(u - a) / (1 - 2a), clamped to [0, 1]: positions within a of an end are that end frame's focus,
and the output stays inside the swept range. The clamp passes gradients straight through, so a
pixel wrongly clamped still learns. It is off in the shipped weights: it trades the synthetic
stacks (whose scenes often end beyond the sweep) against sessions recorded on the simulated rigs
(backgrounds just inside the far end), and so does longer synthetic training; width helped both.
The measurements are in dfdcap/models/weights/fvnet.json ("tried"). `--set end_margin=...` is for
scenes known to extend past the sweep.

Beyond the sweep: with reach r > 0 the softmax has two more bins, one r x the swept diopter range
beyond each end (the far one at most twice the farthest focus distance). Blur grows linearly in
diopters past an end as well, so how sharp the end frames are against their neighbours says how
far past it a pixel lies: a small head reads that from the end frames' volume features and gives
each extra bin its score relative to its end frame's (starting well below it, so an untrained
extension changes little). The output can then leave the swept range by up to r of it. It is
off in the shipped weights: trained on synthetic stacks (23k more steps) it cut their RMS by
4 % on the test seed and 8-16 % on four other seeds, but its far bin fired on backgrounds inside the sweep in sessions recorded on the
simulated close-range rig (measurements in dfdcap/models/weights/fvnet.json, "tried").
`--set reach=0.25` with `pretrain --init` or a model built from scratch trains it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dfdcap.models.blocks import check_inputs, sort_by_focus

_GRAY = (0.299, 0.587, 0.114)


def normalise_stack(stack: torch.Tensor) -> torch.Tensor:
    """(B, S, 3, H, W) -> zero mean, unit spread per stack and colour (over frames and pixels)."""
    mu = stack.mean(dim=(1, 3, 4), keepdim=True)
    sd = stack.std(dim=(1, 3, 4), keepdim=True)
    return (stack - mu) / (sd + 0.02)


def log_focus_measure(gray: torch.Tensor, window: int = 9) -> torch.Tensor:
    """(N, 1, H, W) -> log of the sum-modified-Laplacian over a window (the baseline's measure).

    Differences by slicing and a separable box filter of summed shifted slices: at 5x256x256,
    2 ms against 13 ms for two stride-1 avg_pool2d calls (same values to float rounding)."""
    g = F.pad(gray, (1, 1, 1, 1), mode="replicate")
    c = g[..., 1:-1, 1:-1]
    ml = (2 * c - g[..., 1:-1, :-2] - g[..., 1:-1, 2:]).abs() + (2 * c - g[..., :-2, 1:-1] - g[..., 2:, 1:-1]).abs()
    p = window // 2
    m = F.pad(ml, (p, p, p, p), mode="replicate")
    return torch.log(_box_sum(_box_sum(m, window, -1), window, -2) / (window * window) + 1e-3)


def _box_sum(x: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """Sums of k consecutive entries along dim (the output is k - 1 shorter there)."""
    n = x.shape[dim] - k + 1
    out = x.narrow(dim, 0, n).clone()
    for i in range(1, k):
        out += x.narrow(dim, i, n)
    return out


class FactorisedBlock(nn.Module):
    """Residual block on a focus volume (B, S, C, H, W): 3x3 per frame, then 3 taps across frames."""

    def __init__(self, c: int, dilation: int = 1):
        super().__init__()
        self.spatial = nn.Conv2d(c, c, 3, padding=dilation, dilation=dilation)
        self.frames = nn.Conv2d(c, c, (3, 1), padding=(1, 0))  # over (sorted frames, pixels)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        b, s, c, h, w = v.shape
        z = F.relu(self.spatial(v.reshape(b * s, c, h, w)), inplace=True)
        z = self.frames(z.view(b, s, c, h * w).transpose(1, 2)).transpose(1, 2).reshape(b, s, c, h, w)
        return F.relu(v + z, inplace=True)


def _down(v: torch.Tensor) -> torch.Tensor:
    b, s = v.shape[:2]
    z = F.avg_pool2d(v.flatten(0, 1), 2, ceil_mode=True)
    return z.view(b, s, *z.shape[1:])


def _up(v: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    b, s = v.shape[:2]
    z = F.interpolate(v.flatten(0, 1), size=size, mode="bilinear", align_corners=False)
    return z.view(b, s, *z.shape[1:])


class FVNet(nn.Module):
    """stack (B, S, 3, H, W) in [0, 1], focus_m (B, S) -> {"depth", "confidence"} (B, 1, H, W).

    depth in metres, within the swept range (with reach: up to reach x its diopter span beyond
    it); confidence in [0, 1] (1: all weight on one frame, 0: weight spread as widely as the
    sweep allows). The prior works at full
    resolution, the learned volume at 1/2 and 1/4 (width and 2 x width channels) and its
    residual is upsampled. window: the prior's focus-measure window (pixels); end_margin and
    reach: see the module's docstring (the ends of the sweep, beyond the sweep).
    """

    def __init__(self, width: int = 8, window: int = 9, end_margin: float = 0.0, reach: float = 0.0):
        super().__init__()
        try:
            end_margin, reach = float(end_margin), float(reach)
        except (TypeError, ValueError):
            raise ValueError(f"fvnet: end_margin and reach must be numbers, got {end_margin!r} and {reach!r}") from None
        if not 0.0 <= end_margin < 0.25:
            raise ValueError(f"fvnet: end_margin must be in [0, 0.25), got {end_margin}")
        if not 0.0 <= reach <= 0.5:
            raise ValueError(f"fvnet: reach must be in [0, 0.5], got {reach}")
        if reach > 0 and end_margin > 0:
            raise ValueError("fvnet: end_margin (clamp to the sweep) and reach (leave it) exclude each other")
        c, c2 = width, 2 * width
        self.window = window
        self.end_margin = end_margin
        self.extract = nn.Sequential(
            nn.Conv2d(3, c, 3, stride=2, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.fuse = nn.Conv2d(2 * c + 2, c, 1)  # [features, features - stack mean, prior, sweep position]
        self.level2 = nn.Sequential(FactorisedBlock(c), FactorisedBlock(c, 2))
        self.to_level4 = nn.Conv2d(c, c2, 1)
        self.level4 = nn.Sequential(FactorisedBlock(c2), FactorisedBlock(c2, 2), FactorisedBlock(c2, 4))
        self.merge = nn.Conv2d(c + c2, c, 1)
        self.head = nn.Conv2d(c, 1, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.prior_scale = nn.Parameter(torch.tensor(3.0))
        self.reach = reach
        if reach > 0:  # scores of the bins beyond the near and the far end, relative to the end frames'
            self.beyond = nn.Conv2d(c, 2, 3, padding=1)
            nn.init.zeros_(self.beyond.weight)
            nn.init.constant_(self.beyond.bias, -3.0)

    def scores(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Normalised sorted stack (B, S, 3, H, W), sweep position u (B, S) -> scores (B, S, H, W),
        or (B, S + 2, H, W) with reach: [beyond the near end, the frames, beyond the far end]."""
        b, s, _, h, w = x.shape
        gray = (x * x.new_tensor(_GRAY).view(1, 1, 3, 1, 1)).sum(dim=2, keepdim=True)
        prior = log_focus_measure(gray.flatten(0, 1), self.window).view(b, s, 1, h, w)
        prior = prior - prior.mean(dim=1, keepdim=True)
        f = _conv_frames(self.extract, x)
        h2, w2 = f.shape[-2:]
        pos = u[:, :, None, None, None].expand(b, s, 1, h2, w2)
        p2 = _down(prior)
        v = torch.cat([f, f - f.mean(dim=1, keepdim=True), p2, pos - 0.5], dim=2)
        v2 = self.level2(F.relu(_conv_frames(self.fuse, v)))
        v4 = self.level4(_conv_frames(self.to_level4, _down(v2)))
        z = F.relu(_conv_frames(self.merge, torch.cat([v2, _up(v4, (h2, w2))], dim=2)))
        res = _up(_conv_frames(self.head, z), (h, w))[:, :, 0]
        score = self.prior_scale * prior[:, :, 0] + res
        if self.reach <= 0:
            return score
        e = self.beyond(torch.cat([z[:, 0], z[:, -1]]))  # the near and the far end frame in one call
        ends = torch.cat([e[:b, :1], e[b:, 1:]], dim=1)  # near-end bin from the near frame, far from the far
        ends = F.interpolate(ends, size=(h, w), mode="bilinear", align_corners=False)
        return torch.cat([score[:, :1] + ends[:, :1], score, score[:, -1:] + ends[:, 1:]], dim=1)

    def forward(self, stack: torch.Tensor, focus_m: torch.Tensor) -> dict[str, torch.Tensor]:
        check_inputs(stack, focus_m)
        x, focus, _ = sort_by_focus(stack, focus_m)
        dpt = 1.0 / focus.clamp_min(1e-4)  # (B, S), decreasing
        lo, hi = dpt.min(dim=1, keepdim=True).values, dpt.max(dim=1, keepdim=True).values
        span = (hi - lo).clamp_min(1e-6)
        u = (dpt - lo) / span
        p = torch.softmax(self.scores(normalise_stack(x), u), dim=1)
        if self.reach > 0:  # frames sorted near to far: diopters decrease, the extra bins go on either side
            beyond_far = torch.maximum(lo - self.reach * span, 0.5 * lo)
            dpt = torch.cat([hi + self.reach * span, dpt, beyond_far], dim=1)
        d = (p * dpt[:, :, None, None]).sum(dim=1, keepdim=True)
        var = (p * (dpt[:, :, None, None] - d) ** 2).sum(dim=1, keepdim=True)
        span4, lo4 = span[:, :, None, None], lo[:, :, None, None]
        conf = (1.0 - 2.0 * var.clamp_min(0).sqrt() / span4).clamp(0.0, 1.0)
        if self.end_margin > 0:
            a = self.end_margin
            pos = ((d - lo4) / span4 - a) / (1.0 - 2.0 * a)
            pos = pos + (pos.clamp(0.0, 1.0) - pos).detach()  # clamped forward, straight-through backward
            d = lo4 + pos * span4
        return {"depth": 1.0 / d.clamp_min(1e-6), "confidence": conf}


def _conv_frames(conv: nn.Module, v: torch.Tensor) -> torch.Tensor:
    """Apply a 2D module to every frame of (B, S, C, H, W)."""
    b, s = v.shape[:2]
    z = conv(v.flatten(0, 1))
    return z.view(b, s, *z.shape[1:])
