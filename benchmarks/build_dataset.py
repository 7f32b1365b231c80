"""Benchmark: build-dataset throughput (phone frames per second) on a simulated session.

The session is written with the real SessionWriter from the simulator's renders (SimRig: the
sensor colour camera's depth in millimetres, the phone's sharp frames as PNG, truth/rig.json);
frames are paired by the simulator's true clocks (the pairing costs nothing next to reading
frames and reprojecting). Goal: >= 50 phone frames/s.

Run: python benchmarks/build_dataset.py [--ramps 12] [--steps 5] [--size 504x378]
"""

from __future__ import annotations

import argparse
import os
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
                                   "STATIONARY", r, st, f"frames/{i}.png")
            w.write_phone_frame(rec, img)
    return w.path


def main() -> None:
    from dfdcap.dataset.build import BuildOptions, RigGeometry, build_dataset

    ap = argparse.ArgumentParser()
    ap.add_argument("--ramps", type=int, default=12)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--size", default=None, help="output WxH (default: full phone frames)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        session = write_sim_session(tmp, args.ramps, args.steps)
        from dfdcap.capture.session import Session

        rig = RigGeometry.from_truth(Session(session).truth_rig())
        for size in ([None, args.size] if args.size else [None, "504x378"]):
            cpu0 = time.process_time()
            summary = build_dataset([session], rig, tmp / "d.h5", BuildOptions(size=size, workers=args.workers),
                                    force=True, pairing="truth")
            cpu = time.process_time() - cpu0
            print(f"output {size or 'full ' + 'x'.join(map(str, rig.phone.size))}: {summary.phone_frames} phone frames in "
                  f"{summary.seconds:.2f} s = {summary.frames_per_s:.1f} frames/s (goal >= 50); CPU {cpu:.2f} s = "
                  f"{summary.phone_frames / cpu:.1f} frames per CPU-second ({args.workers} workers, "
                  f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}); "
                  f"{100 * summary.valid_fraction:.1f} % valid depth")


if __name__ == "__main__":
    main()
