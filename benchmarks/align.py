"""Benchmark: what slice alignment (focus breathing) adds to build-dataset, per phone frame, at 1008x756.

One simulated session (Xtion rig, 12 ramps x 5 steps focused 0.5-2.5 m) whose phone frames are
rendered with the breathing lens (each focus step its own camera, rendered once and reused) and
defocused; build-dataset runs on it with `align=none` (the peer: the build without alignment),
`prior` (the focus model's warp) and `ecc` (warp + registration, the default), same workers.
Goal: ecc adds at most 50 % to the time per phone frame.

Run: python benchmarks/align.py [--ramps 12] [--workers 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from build_dataset import _cpu_s  # noqa: E402  (CPU of this process and its stack workers)


def write_breathing_session(out: Path, ramps: int, steps: int) -> Path:
    from build_dataset import write_sim_session

    from dfdcap.capture.session import Session
    from dfdcap.fileio import write_image
    from dfdcap.lens import FocusSchedule
    from dfdcap.sim.render import render_defocus
    from dfdcap.sim.rig import RigConfig, SimRig

    path = write_sim_session(out, ramps, steps)  # the build benchmark's session: one sharp frame everywhere
    rig = SimRig(RigConfig())
    cfg = rig.config
    fm = FocusSchedule(0.5, 2.5, steps, ramps).focus_m()
    frames = {}
    for st in range(steps):  # each focus step: the breathing camera's render, defocused
        rgb, depth = rig.render_phone_sharp(rig.t0_host_ns, 1 / fm[0, st])
        img = render_defocus(rgb, depth, cfg.phone_lens, float(fm[0, st]), cfg.phone_pixel_pitch_m())
        frames[st] = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    s = Session(path)
    for rec in s.phone_frames:
        write_image(path / "phone" / rec.file, frames[rec.step])
    return path


MODES = ("none", "prior", "ecc")


def main() -> None:
    from dfdcap.capture.session import Session
    from dfdcap.dataset.build import BuildOptions, RigGeometry, build_dataset

    ap = argparse.ArgumentParser()
    ap.add_argument("--ramps", type=int, default=12)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="builds per mode (the fastest is reported)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        session = write_breathing_session(tmp, args.ramps, args.steps)
        rig = RigGeometry.from_truth(Session(session).truth_rig())
        frames = 0
        wall: dict[str, list[float]] = {m: [] for m in MODES}
        cpu: dict[str, list[float]] = {m: [] for m in MODES}
        build_dataset([session], rig, tmp / "d.h5", BuildOptions(workers=args.workers, align="none"),
                      force=True, pairing="truth")  # warms caches and kernels
        for _ in range(args.rounds):  # modes take turns, so a change in the machine's load hits all alike
            for mode in MODES:
                out = tmp / f"{mode}.h5"  # a new file each time, as in build_dataset.py
                t0, cpu0 = time.perf_counter(), _cpu_s()
                summary = build_dataset([session], rig, out, BuildOptions(workers=args.workers, align=mode), pairing="truth")
                wall[mode].append(time.perf_counter() - t0)
                cpu[mode].append(_cpu_s() - cpu0)
                out.unlink()
                frames = summary.phone_frames
        best = {m: (1e3 * min(wall[m]) / frames, 1e3 * min(cpu[m]) / frames) for m in MODES}
        for mode in MODES:
            print(f"align={mode:5s}: {frames} frames, fastest of {args.rounds}: {best[mode][0]:.1f} ms/frame wall, "
                  f"{best[mode][1]:.1f} ms/frame CPU (all processes)")
        for mode in ("prior", "ecc"):
            print(f"align={mode}: adds {100 * (best[mode][0] / best['none'][0] - 1):+.0f} % wall, "
                  f"{100 * (best[mode][1] / best['none'][1] - 1):+.0f} % CPU per phone frame "
                  f"(goal <= +50 %; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f})")

if __name__ == "__main__":
    main()
