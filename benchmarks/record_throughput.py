"""How many 640x480 depth+color pairs per second the recorder persists (issue 2, goal >= 150/s,
i.e. 5x a 30 fps sensor, with zero dropped frames, on 2 cores).

Frames: pre-rendered by the simulated sensor (SimRig's SimSensor, realtime=False: textured
scene, depth quantisation, noise and holes, sensor noise on colour), cycled with fresh
timestamps, so the producer costs nothing and never waits.
Measured in one run:
  peer      a naive recorder: one thread encodes (OpenCV default PNG) and writes each pair
            before it takes the next
  max       the recorder's SensorFrameSink (writer thread pool + in-order committer), the
            producer as fast as the sink accepts (on_full="wait"): what it persists per second
  paced     the sink as in a live recording (on_full="drop", bounded queue of 64) with the
            producer at the goal rate of 150 pairs/s for --seconds: dropped must be 0
for both PNG presets of the recorder (fast: stored; compact: OpenCV defaults). CPU time per
pair (all threads) is printed too, since on a shared machine wall-clock rates only show what
this process got of the cores: 2 cores / CPU-per-pair is what 2 free cores would persist.

    python benchmarks/record_throughput.py [--frames 300] [--seconds 3] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from dfdcap.capture.base import SensorFrame
from dfdcap.capture.recorder import PNG_PRESETS, SensorFrameSink, default_workers, png_params
from dfdcap.capture.session import DeviceInfo, Session, SessionWriter

GOAL_FPS = 150.0
SENSOR_FPS = 30.0


def prerender(n: int, seed: int = 0) -> list[SensorFrame]:
    """n frames of the simulated sensor (640x480 RGB uint8 + uint16 depth), rendered up front."""
    from dfdcap.sim.rig import RigConfig, SimRig

    sensor = SimRig(RigConfig(seed=seed, scene="moving")).sensor(realtime=False)
    frames = []
    for f in sensor.frames():
        frames.append(f)
        if len(frames) == n:
            break
    sensor.close()
    return frames


def _frame(frames: list[SensorFrame], i: int) -> SensorFrame:
    f = frames[i % len(frames)]
    t = time.monotonic_ns()
    return SensorFrame(i, t, t, f.rgb, f.depth)


def _writer(root: Path, name: str, params) -> SessionWriter:
    w = SessionWriter.create(root, name, DeviceInfo("sim", "bench", "0"), DeviceInfo("sim", "bench", "0"))
    w.png_params = tuple(params)
    return w


def run_serial(frames, n: int, root: Path, params) -> dict:
    w = _writer(root, "serial", params)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        f = _frame(frames, i)
        w.write_sensor_frame(f.index, f.t_host_ns, f.t_device_ns, f.rgb, f.depth)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    w.finish("complete")
    return {"pairs_s": n / dt, "cpu_ms": 1e3 * cpu / n, "written": n, "dropped": 0, "path": w.path}


def run_sink(frames, n: int, root: Path, params, workers: int, rate: float | None) -> dict:
    """rate None: producer as fast as the sink accepts (on_full="wait"); else paced, dropping."""
    w = _writer(root, "sink", params)
    sink = SensorFrameSink(w, workers=workers, max_pending=64, on_full="wait" if rate is None else "drop")
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(n):
        if rate is not None:
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        sink.submit(_frame(frames, i))
    offered = n / (time.perf_counter() - t0)
    sink.close()
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    w.finish("complete")
    return {"pairs_s": sink.written / dt, "offered_s": offered, "cpu_ms": 1e3 * cpu / max(sink.written, 1),
            "written": sink.written, "dropped": sink.dropped,
            "max_queue": sink.max_depth, "path": w.path}


def _size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in (path / "sensor").rglob("*.png")) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=300, help="pairs per unpaced run")
    ap.add_argument("--seconds", type=float, default=3.0, help="length of the paced run at 150 pairs/s")
    ap.add_argument("--workers", type=int, default=default_workers(), help="writer threads (default: the recorder's)")
    ap.add_argument("--distinct", type=int, default=24, help="distinct pre-rendered frames")
    args = ap.parse_args()

    t = time.perf_counter()
    frames = prerender(args.distinct)
    cores = os.cpu_count() or 2
    print(f"pre-rendered {len(frames)} sim sensor frames {frames[0].rgb.shape[1]}x{frames[0].rgb.shape[0]} "
          f"in {time.perf_counter() - t:.1f} s; {cores} cores, {args.workers} writer threads; load average "
          f"{os.getloadavg()[0]:.1f} (wall-clock rates mean something only well below the core count)")
    root = Path(tempfile.mkdtemp(prefix="dfdcap-bench-"))
    try:
        peer = run_serial(frames, min(args.frames, 100), root, png_params("compact"))
        print(f"\npeer: one thread, OpenCV default PNG (a naive recorder): {peer['pairs_s']:.1f} pairs/s, "
              f"{peer['cpu_ms']:.1f} ms CPU per pair")
        shutil.rmtree(peer["path"])
        for preset in PNG_PRESETS:
            params = png_params(preset)
            best = run_sink(frames, args.frames, root, params, args.workers, None)
            paced = run_sink(frames, int(GOAL_FPS * args.seconds), root, params, args.workers, GOAL_FPS)
            s = Session(paced["path"])
            ok_files = all((s.path / "sensor" / r.depth).is_file() for r in s.sensor_frames)
            mb_pair = _size_mb(best["path"]) / best["written"]
            print(f"\nrecorder, PNG {preset} {list(params) or '(OpenCV defaults)'}: {mb_pair:.2f} MB per pair")
            print(f"  max:   {best['pairs_s']:7.1f} pairs/s = {best['pairs_s'] / SENSOR_FPS:.2f}x 30 fps, "
                  f"{best['pairs_s'] / peer['pairs_s']:.2f}x the peer; {best['cpu_ms']:.1f} ms CPU per pair, "
                  f"i.e. {cores * 1e3 / best['cpu_ms']:.0f} pairs/s if {cores} cores were free")
            print(f"  paced at {GOAL_FPS:.0f}/s (offered {paced['offered_s']:.1f}/s): persisted {paced['written']}/{paced['written'] + paced['dropped']} "
                  f"({paced['pairs_s']:.1f} pairs/s = {paced['pairs_s'] / SENSOR_FPS:.2f}x 30 fps), "
                  f"{paced['cpu_ms']:.1f} ms CPU per pair, dropped {paced['dropped']}, max queue {paced['max_queue']}, index complete: "
                  f"{len(s.sensor_frames) == paced['written'] and ok_files} "
                  f"-> {'PASS' if paced['dropped'] == 0 else 'FAIL'} (goal: >= 150 pairs/s, zero dropped)")
            for r in (best, paced):
                shutil.rmtree(r["path"])
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
