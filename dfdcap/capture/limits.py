"""What one recording may ask for: checked by record_from_specs (so by `dfdcap record` and any other
caller) before a device is opened or a file written."""

from __future__ import annotations

import math

from dfdcap.errors import DfdcapError

MAX_STEPS = 1000  # frames per focus ramp: DFF stacks use 5-100; Open Camera offers at most 200
MAX_STACKS = 10000  # focus ramps per session: ~8 h at 3 s a ramp


def check_record_counts(stacks: int, steps: int, near_m: float | None, far_m: float | None) -> None:
    """DfdcapError (in the CLI's option names) for counts or focus distances no recording can use."""
    if stacks < 1 or steps < 1:
        raise DfdcapError(f"--stacks and --steps must be >= 1, got {stacks} and {steps}")
    if steps == 1:  # build-dataset and every DFF method need two focus settings per stack
        raise DfdcapError("--steps 1: a focus stack needs at least 2 frames")
    if steps > MAX_STEPS:  # the phone would prepare a sweep for hours before the first frame
        raise DfdcapError(f"--steps {steps}: at most {MAX_STEPS} frames per ramp")
    if stacks > MAX_STACKS:
        raise DfdcapError(f"--stacks {stacks}: at most {MAX_STACKS} focus ramps per session (record more sessions)")
    for option, v in (("--near", near_m), ("--far", far_m)):
        if v is not None and not (math.isfinite(v) and v >= 1e-3):  # below 1 mm no lens focuses; 1/v overflows
            raise DfdcapError(f"{option} {v:g}: expected a distance in metres, at least 0.001"
                              + (" (for focus at infinity give a far one such as 100 m)" if option == "--far" else ""))
