"""Benchmark: one 640x480 sensor depth map into a 1920x1080 distorted phone view.

Ours (dfdcap.dataset.reproject.reproject_depth) against cv2.registerDepth (OpenCV 5, top
level, with and without its depth dilation) and Open3D's tensor API
(PointCloud.create_from_depth_image + project_to_depth_image), same input, same run.
Input and truth come from the simulator's scene: the sensor colour camera's true depth (pinhole,
so every method gets an input it can model) and the phone's true depth at the same instant.
Prints each method's time (median wall and CPU time of interleaved runs, and the fastest
wall time: the machine may be shared), its speed ratio to ours, its median absolute relative
error against the truth on the pixels it fills (and on the pixels plain cv2.registerDepth
fills, the same pixels for all), and how many of the pixels both cameras see it fills.
Every method runs a few times before timing: ours compiles its numba kernels on first use
(or loads them from numba's on-disk cache).

Goal (issue 5): >= 10x faster than cv2.registerDepth and >= 2x faster than Open3D, with lower
error than both.

Run: python benchmarks/reproject.py [--repeat 41] [--cores 1|all] [--keep-heap]
By default the process is pinned to one core: ours is single-threaded, and Open3D's TBB pool on
a loaded 2-core VM is slower than one core (7 ms pinned, 15-30 ms with both cores in our runs);
--cores all lets every library use what it finds.
On machines where a page fault is expensive (VMs), fresh output arrays dominate every method's
time; --keep-heap shows the steady state of a long-running process.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def _time_all(methods, repeat: int, warmup: int = 3) -> dict:
    """(median wall s, median CPU s, fastest wall s, output) of each method; `warmup` untimed
    calls first (JIT compilation, caches); then the methods take turns in every round, so that
    a change in the machine's load during the run hits all of them alike."""
    outs = {name: fn() for name, fn in methods}
    for _ in range(warmup - 1):
        for _, fn in methods:
            fn()
    ts = {name: [] for name, _ in methods}
    cpu = {name: [] for name, _ in methods}
    for _ in range(repeat):
        for name, fn in methods:
            t, c = time.perf_counter(), time.process_time()
            fn()
            ts[name].append(time.perf_counter() - t)
            cpu[name].append(time.process_time() - c)
    return {name: (float(np.median(ts[name])), float(np.median(cpu[name])), float(np.min(ts[name])), outs[name])
            for name, _ in methods}


def stage_times(depth_s, sensor, phone, T, pc_fn, proj_fn, repeat: int) -> dict:
    """Median CPU ms of each stage of ours (the kernels reproject_depth runs, called directly) and
    of Open3D's two calls, interleaved like _time_all: where the time goes, and why the ratio
    to Open3D is what it is (ours fills footprints and keeps a flagged z-buffer per pixel,
    Open3D writes one pixel per point and leaves the rest empty)."""
    from dfdcap.dataset import reproject as R

    h, w = depth_s.shape
    W, H = phone.size
    ws = R._workspace(h, w, H, W)
    lin = (sensor.fx, sensor.fy, sensor.cx, sensor.cy, float(sensor.K[0, 1]))
    M = np.ascontiguousarray(T[:3], np.float32)
    c = R._projection_params(phone)
    depth = np.empty((H, W), np.float32)
    mask = np.empty((H, W), bool)

    def prepare():
        R._prepare_all(depth_s, R._NO_RAYS, R._NO_RAYS, lin, M, c, 0.03, 12.0, H, ws.arrays)

    def render():  # boxes, drawing, finishing rows; into arrays already paged in
        R._render(0.03, 12.0, 1.0, ws.arrays, ws.ring, R._RING - 1, depth.view(np.int32), mask)

    def fresh_outputs():  # what a call pays for its new output arrays (page faults), as Open3D does
        np.empty((H, W), np.float32).fill(0)
        np.empty((H, W), bool).fill(0)

    state = {}

    def o3d_points():
        state["pc"] = pc_fn()

    def o3d_project():
        proj_fn(state["pc"])

    stages = [("ours: _prepare_all (positions, flags, quads)", prepare), ("ours: _render (boxes, draw, finish)", render),
              ("ours: fresh output arrays", fresh_outputs), ("open3d: create_from_depth_image", o3d_points),
              ("open3d: project_to_depth_image", o3d_project)]
    for _, fn in stages:
        fn()
    cpu = {name: [] for name, _ in stages}
    for _ in range(repeat):
        for name, fn in stages:
            t = time.process_time()
            fn()
            cpu[name].append(time.process_time() - t)
    return {name: 1e3 * float(np.median(v)) for name, v in cpu.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=41)
    ap.add_argument("--scene", default="default")
    ap.add_argument("--cores", default="1",
                    help="'1' (default): pin the process to one core, so every method runs single-threaded (ours "
                         "is; Open3D's TBB threads are slower than one core on a 2-core VM); 'all': no pinning")
    ap.add_argument("--keep-heap", action="store_true",
                    help="glibc mallopt: keep freed memory in the heap (no page faults on reuse), for every method alike")
    args = ap.parse_args()
    if args.cores != "all":  # before Open3D starts its TBB thread pool, which sizes itself by the affinity
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: int(args.cores)])

    import cv2
    import open3d as o3d

    from dfdcap.cameras import CameraModel, invert_transform, transform_points
    from dfdcap.dataset.reproject import reproject_depth
    from dfdcap.sim.rig import RigConfig, SimRig

    if args.keep_heap:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD: large arrays from the heap, not fresh mmaps
        libc.mallopt(-1, 1 << 31)  # M_TRIM_THRESHOLD: never hand freed heap back to the kernel

    rig = SimRig(RigConfig(phone_size=(1920, 1080), scene=args.scene))
    t = rig.t0_host_ns if hasattr(rig, "t0_host_ns") else 0
    s_cam = rig.sensor_camera_model()
    sensor = CameraModel(s_cam.K, np.zeros(5), s_cam.size)  # pinhole: registerDepth and Open3D know no source distortion
    phone = rig.phone_camera_model()
    T = np.asarray(rig.config.T_phone_from_sensor, np.float64)
    ts = rig.scene_time_s(t)
    _, depth_s = rig.scene.render(sensor, rig.T_world_from_sensor(t), ts)
    _, truth = rig.scene.render(phone, rig.T_world_from_phone(t), ts)
    depth_s = depth_s.astype(np.float32)
    # pixels both cameras see: the phone's true surface point is the sensor's surface at its pixel
    P = transform_points(invert_transform(T), phone.unproject_depth(truth))
    uv, z = sensor.project(P)
    ui = np.round(np.nan_to_num(uv[..., 0], nan=-1)).astype(int)
    vi = np.round(np.nan_to_num(uv[..., 1], nan=-1)).astype(int)
    inside = (ui >= 0) & (ui < sensor.width) & (vi >= 0) & (vi < sensor.height)
    zs = np.zeros_like(z)
    zs[inside] = depth_s[vi[inside], ui[inside]]
    covis = inside & (np.abs(zs - z) < 0.01 * z)

    Kf = sensor.K.astype(np.float32)
    Kp = phone.K.astype(np.float32)
    dist = phone.dist.astype(np.float32)
    Rt = T.astype(np.float32)
    W, H = phone.size

    def ours():
        return reproject_depth(depth_s, sensor, phone, T).depth_m

    def reg(dilate):
        return lambda: cv2.registerDepth(Kf, Kp, dist, Rt, depth_s, (W, H), depthDilation=dilate)

    dev = o3d.core.Device("CPU:0")
    Ko = o3d.core.Tensor(sensor.K, o3d.core.float64)
    Kpo = o3d.core.Tensor(phone.K, o3d.core.float64)
    To = o3d.core.Tensor(T, o3d.core.float64)
    img = o3d.t.geometry.Image(o3d.core.Tensor(depth_s, device=dev))

    def o3d_points():
        return o3d.t.geometry.PointCloud.create_from_depth_image(img, Ko, depth_scale=1.0, depth_max=100.0)

    def o3d_project(pc):
        return pc.project_to_depth_image(W, H, Kpo, To, depth_scale=1.0, depth_max=100.0).as_tensor().numpy()[..., 0]

    def open3d():
        return o3d_project(o3d_points())

    methods = [("ours", ours), ("cv2.registerDepth", reg(False)), ("cv2.registerDepth dilate", reg(True)), ("open3d t.geometry", open3d)]
    results = {}
    timed = _time_all(methods, args.repeat)
    filled_reg = np.asarray(timed["cv2.registerDepth"][3], np.float32) > 0
    for name, (sec, cpu, best, d) in timed.items():
        d = np.asarray(d, np.float32)
        valid = d > 0
        rel = np.abs(d - truth) / truth
        both = valid & filled_reg
        results[name] = (sec, cpu, best, float(np.median(rel[valid])), float(np.mean(rel[valid] > 0.05)),
                         float((valid & covis).sum() / covis.sum()), float(np.median(rel[both])))
    import numba

    print(f"scene {args.scene!r}: {sensor.width}x{sensor.height} depth -> {W}x{H} phone view (dist {np.round(phone.dist, 4).tolist()}),"
          f" {args.repeat} interleaved runs after warm-up, cv2 {cv2.__version__}, open3d {o3d.__version__}, numba {numba.__version__};"
          f" CPUs: {len(os.sched_getaffinity(0))} (ours: one thread)")
    print(f"{'method':26s} {'wall ms':>8s} {'x ours':>7s} {'CPU ms':>8s} {'x ours':>7s} {'best ms':>8s} {'x ours':>7s}"
          f" {'med |rel| err':>14s} {'>5% wrong':>10s} {'co-visible filled':>18s} {'err on registerDepth px':>24s}")
    t_ours, c_ours, b_ours = results["ours"][:3]
    for name, (sec, cpu, best, med, wrong, cov, med_common) in results.items():
        print(f"{name:26s} {1e3 * sec:8.2f} {sec / t_ours:7.2f} {1e3 * cpu:8.2f} {cpu / c_ours:7.2f} {1e3 * best:8.2f} {best / b_ours:7.2f}"
              f" {1e6 * med:11.2f} ppm {100 * wrong:9.3f}% {100 * cov:17.1f}% {1e6 * med_common:20.2f} ppm")
    others = [n for n in results if n != "ours"]
    print("speed-up of ours (median wall): " + ", ".join(f"{results[n][0] / t_ours:.1f}x vs {n}" for n in others))
    print("speed-up of ours (median CPU time, all threads): " + ", ".join(f"{results[n][1] / c_ours:.1f}x vs {n}" for n in others))
    print("speed-up of ours (fastest wall): " + ", ".join(f"{results[n][2] / b_ours:.1f}x vs {n}" for n in others))
    stages = stage_times(depth_s, sensor, phone, T, o3d_points, o3d_project, args.repeat)
    print("where the time goes (median CPU ms of each stage, interleaved):")
    for name, ms in stages.items():
        print(f"  {name:46s} {ms:7.2f}")
    print(f"  ours, stages summed {sum(v for k, v in stages.items() if k.startswith('ours')):.2f} ms; "
          f"open3d {sum(v for k, v in stages.items() if k.startswith('open3d')):.2f} ms "
          f"(its projection writes one pixel per point: {100 * results['open3d t.geometry'][5]:.1f} % of the co-visible "
          f"pixels filled, ours {100 * results['ours'][5]:.1f} %)")
    print("median |rel| error of each / ours (on the pixels each fills): "
          + ", ".join(f"{results[n][3] / max(results['ours'][3], 1e-12):.3g}x for {n}" for n in others))


if __name__ == "__main__":
    main()
