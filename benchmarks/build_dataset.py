"""Benchmark: build-dataset throughput (phone frames per second) on a simulated session.

The session is written with the real SessionWriter from the simulator's renders (SimRig: the
sensor colour camera's depth in millimetres, the phone's sharp frames as JPEG at quality 95 as the
recorder stores them by default (the simulated phone, Open Camera, the companion app), truth/rig.json);
frames are paired by the simulator's true clocks (the pairing costs nothing next to reading
frames and reprojecting). Goal: >= 50 phone frames/s at 1008x756 on 2 cores, and the first build
of a process (kernels loaded from numba's cache, which scripts/setup.sh fills) within 2 s of later
ones. Every build writes a new file (replacing an existing 300 MB file would time the file system's
freeing of the old one, not the build). Wall time suffers on a shared machine, so the CPU seconds of all processes (this one and
its stack workers) are printed too, with the frames/s they allow on idle cores.

Run: python benchmarks/build_dataset.py [--ramps 12] [--steps 5] [--size 504x378] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np


def write_sim_session(out: Path, ramps: int, steps: int) -> Path:
    from dfdcap.capture.session import DeviceInfo, PhoneFrameRecord, SensorIntrinsics, SessionWriter
    from dfdcap.lens import FocusSchedule
    from dfdcap.sim.rig import RigConfig, SimRig

    rig = SimRig(RigConfig())
    t0 = rig.t0_host_ns if hasattr(rig, "t0_host_ns") else 0
    cal = rig.truth_rig()
    sched = FocusSchedule(0.5, 2.5, steps, ramps)
    w = SessionWriter.create(out, "bench", DeviceInfo("sim", "xtion", "0"), DeviceInfo("sim", "phone", "0"))
    pclock, sclock = rig.phone_clock, rig.sensor_clock
    with w:
        s = rig.sensor_camera_model()
        w.write_sensor_intrinsics(SensorIntrinsics(s, s, 0.001, True))
        w.write_phone_camera(rig.phone_camera())
        w.write_truth_rig(cal)
        rgb_s, depth_s = rig.render_sensor_sharp(t0)
        raw = np.round(np.nan_to_num(depth_s) / 0.001).astype(np.uint16)
        rgb_s = (np.clip(rgb_s, 0, 1) * 255).astype(np.uint8) if rgb_s.dtype != np.uint8 else rgb_s
        n = ramps * steps
        for k in range(n * 3 + 3):
            t = t0 + k * 33_333_333
            w.write_sensor_frame(k, t, sclock.device_from_host_ns(t), rgb_s, raw)
        rgb_p, _ = rig.render_phone_sharp(t0)
        img = (np.clip(rgb_p, 0, 1) * 255).astype(np.uint8) if rgb_p.dtype != np.uint8 else rgb_p
        fm = sched.focus_m()
        for i in range(n):
            r, st = divmod(i, steps)
            t = t0 + i * 100_000_000 + 16_000_000
            rec = PhoneFrameRecord(i, pclock.device_from_host_ns(t), 1 / fm[r, st], 1 / fm[r, st], 10_000_000, 100,
                                   "STATIONARY", r, st, f"frames/{i}.jpg")
            w.write_phone_frame(rec, img)
    return w.path


def _cpu_s() -> float:
    """CPU seconds of this process and of its finished (joined) children: the worker processes."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _timed_build(session, rig, out: Path, size, workers):
    """One build into a new file `out` (removed afterwards, outside the timing)."""
    from dfdcap.dataset.build import BuildOptions, build_dataset

    cpu0, t0 = _cpu_s(), time.perf_counter()
    summary = build_dataset([session], rig, out, BuildOptions(size=size, workers=workers), pairing="truth")
    wall, cpu = time.perf_counter() - t0, _cpu_s() - cpu0
    out.unlink()
    return summary, wall, cpu


def main() -> None:
    from dfdcap.capture.session import Session
    from dfdcap.dataset.build import RigGeometry, resolve_workers

    ap = argparse.ArgumentParser()
    ap.add_argument("--ramps", type=int, default=12)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--size", default=None, help="also build at this output WxH (default: 504x378)")
    ap.add_argument("--workers", type=int, default=None, help="stack processes (default: one per core)")
    ap.add_argument("--repeat", type=int, default=3, help="later runs (the fastest is reported)")
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        session = write_sim_session(tmp, args.ramps, args.steps)
        rig = RigGeometry.from_truth(Session(session).truth_rig())
        workers = resolve_workers(args.workers, args.ramps)
        # the first build of this process loads (or, without a warm cache, compiles) the kernels
        first, first_wall, first_cpu = _timed_build(session, rig, tmp / "first.h5", None, workers)
        for size in [None, args.size or "504x378"]:
            runs = [_timed_build(session, rig, tmp / f"d{k}.h5", size, workers) for k in range(args.repeat)]
            summary, wall, _ = min(runs, key=lambda r: r[1])
            cpu = min(r[2] for r in runs)
            n = summary.phone_frames
            print(f"output {size or 'full ' + 'x'.join(map(str, rig.phone.size))}: {n} phone frames, fastest of {args.repeat}: "
                  f"{wall:.2f} s = {n / wall:.1f} frames/s (goal >= 50); CPU (all processes) {cpu:.2f} s = "
                  f"{n / cpu:.1f} frames per CPU-second, so {min(workers, cores) * n / cpu:.0f} frames/s on "
                  f"{min(workers, cores)} idle cores; {workers} workers, {cores} cores, "
                  f"load average {os.getloadavg()[0]:.1f}; {100 * summary.valid_fraction:.1f} % valid depth")
            if size is None:
                later = wall
        print(f"first build in this process: {first_wall:.2f} s (CPU {first_cpu:.2f} s) vs later {later:.2f} s: "
              f"+{first_wall - later:.2f} s (goal <= 2 s; setup.sh's warm_up() fills numba's cache)")


if __name__ == "__main__":
    main()
