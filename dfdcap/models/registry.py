"""Networks by name: `build_model("poolnet", width=8)`; every one has the same interface.

forward(stack (B, S, 3, H, W) float in [0, 1], focus_m (B, S) metres) ->
{"depth": (B, 1, H, W) metres} plus "coc": (B, S, 1, H, W) pixels where the model has the
CoC decoder, and "confidence": (B, 1, H, W) in [0, 1] where the model gives one (fvnet).
"""

from __future__ import annotations

import warnings
from typing import Callable

from torch import nn

from dfdcap.errors import ModelError


def _ddff(**cfg) -> nn.Module:
    from dfdcap.models.ddff import DDFFNet

    return DDFFNet(**cfg)


def _lstm_ddff(**cfg) -> nn.Module:
    from dfdcap.models.lstm_ddff import LSTMDDFFNet

    return LSTMDDFFNet(**cfg)


def _recurrent_ae(**cfg) -> nn.Module:
    from dfdcap.models.recurrent_ae import RecurrentAE

    return RecurrentAE(**cfg)


def _poolnet(**cfg) -> nn.Module:
    from dfdcap.models.poolnet import PoolNet

    return PoolNet(**cfg)


def _poolnet_coc(**cfg) -> nn.Module:
    from dfdcap.models.poolnet import PoolNetCoC

    return PoolNetCoC(**cfg)


def _fvnet(**cfg) -> nn.Module:
    from dfdcap.models.fvnet import FVNet

    return FVNet(**cfg)


MODELS: dict[str, Callable[..., nn.Module]] = {
    "ddff": _ddff,
    "lstm-ddff": _lstm_ddff,
    "recurrent-ae": _recurrent_ae,
    "poolnet": _poolnet,
    "poolnet-coc": _poolnet_coc,
    "fvnet": _fvnet,
}

# Small widths for unit tests: every model builds in milliseconds and runs 32-64 px stacks fast.
TINY_CONFIGS: dict[str, dict] = {
    "ddff": {"width": 0.0625},
    "lstm-ddff": {"width": 0.0625},
    "recurrent-ae": {"width": 4, "levels": 3},
    "poolnet": {"width": 4, "levels": 3},
    "poolnet-coc": {"width": 4, "levels": 3},
    "fvnet": {"width": 4},
}


def model_names() -> list[str]:
    return list(MODELS)


# Size options and their ranges: (low, high, integer?). Out of range, a network either fails deep in
# torch (levels 0: IndexError) or is built so large that the process is OOM-killed (levels 30, width 10**5).
# levels: each level halves the image, and 2**8 = 256 px already exceeds the training crops.
_INT_WIDTH = (1, 512, True)
SIZE_LIMITS: dict[str, dict[str, tuple[float, float, bool]]] = {
    "ddff": {"width": (0.01, 4.0, False)},
    "lstm-ddff": {"width": (0.01, 4.0, False)},
    "recurrent-ae": {"width": _INT_WIDTH, "levels": (1, 8, True)},
    "poolnet": {"width": _INT_WIDTH, "levels": (1, 8, True)},
    "poolnet-coc": {"width": _INT_WIDTH, "levels": (1, 8, True), "coc_scale_px": (1e-3, 1e3, False)},
    "fvnet": {"width": _INT_WIDTH, "window": (1, 63, True)},
}


def check_sizes(name: str, cfg: dict) -> None:
    """Size options out of range -> ModelError naming the option, before anything is built."""
    for key, (lo, hi, integer) in SIZE_LIMITS.get(name, {}).items():
        if key not in cfg:
            continue
        v = cfg[key]
        ok_type = isinstance(v, int) if integer else isinstance(v, (int, float))
        if isinstance(v, bool) or not ok_type or not (lo <= v <= hi):  # NaN fails lo <= v
            kind = "an integer" if integer else "a number"
            raise ModelError(f"model {name!r}: bad config option {key}={v!r} (expected {kind} from {lo:g} to {hi:g})")


def build_model(name: str, **cfg) -> nn.Module:
    """Build a network by registry name with keyword config; unknown name/option -> ModelError."""
    if name not in MODELS:
        raise ModelError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    check_sizes(name, cfg)
    try:
        with warnings.catch_warnings():  # width=0: torch warns about zero-element init; the check below says it
            warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
            model = MODELS[name](**cfg)
    except (TypeError, ValueError, RuntimeError) as e:  # torch: RuntimeError for a negative width
        raise ModelError(f"model {name!r}: bad config {cfg} ({e})") from None
    if any(p.numel() == 0 for p in model.parameters()):  # e.g. width=0: builds, fails at the first step
        raise ModelError(f"model {name!r}: bad config {cfg} (a layer would have no weights)")
    return model


def has_coc(model: nn.Module) -> bool:
    """Whether the model returns a "coc" output."""
    from dfdcap.models.poolnet import PoolNetCoC

    if isinstance(model, PoolNetCoC):
        return True
    return any(getattr(model, a, None) is not None for a in ("coc_decoder", "coc_head"))
