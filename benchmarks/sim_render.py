"""Speed of the simulated rig's renderers, on this machine.

Peer: one plain full-frame disk blur (cv2.filter2D with the largest CoC of the frame) of the
same image -- what a renderer without depth layers or occlusion handling would cost. Prints
each timing and the ratio of the occlusion-aware renderer to that peer.

    python benchmarks/sim_render.py [--boards N]   (N board pairs at 4032x3024, default 0)
"""

from __future__ import annotations

import argparse
import tempfile
import time

import cv2
import numpy as np

from dfdcap.cameras import CameraModel
from dfdcap.sim.render import disk_kernel, random_focus_stack, render_defocus
from dfdcap.sim.rig import RigConfig
from dfdcap.sim.scene import make_scene


def best_of(fn, n=5):
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--boards", type=int, default=0)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    rng = np.random.default_rng(0)
    cfg = RigConfig()
    scene = make_scene("wide", rng)
    for name, cam in [("sensor 640x480", cfg.sensor_camera_model()), ("phone 1008x756", cfg.phone_camera_model())]:
        scene.render(cam, np.eye(4))
        t = best_of(lambda: scene.render(cam, np.eye(4)))
        print(f"ray cast {name} ({len(scene.primitives)} primitives, distorted): {t * 1e3:.1f} ms")
    cam = cfg.phone_camera_model()
    rgb, depth = scene.render(cam, np.eye(4))
    lens, pitch = cfg.phone_lens, cfg.phone_pixel_pitch_m()
    for focus in (0.15, 0.5):
        t_ours = best_of(lambda: render_defocus(rgb, depth, lens, focus, pitch), 3)
        cmax = float(np.nanmax(lens.coc_px(depth[depth > 0], focus, pitch)))
        k = disk_kernel(cmax)
        t_peer = best_of(lambda: cv2.filter2D(rgb, -1, k), 3)
        print(f"defocus 1008x756 focus {focus} m (CoC up to {cmax:.1f} px): {t_ours * 1e3:.0f} ms, "
              f"plain blur {t_peer * 1e3:.0f} ms, ratio {t_ours / t_peer:.1f}")
    g = np.random.default_rng(1)
    t = best_of(lambda: random_focus_stack(g, (128, 128), 5), 10)
    print(f"random_focus_stack 5x128x128: {t * 1e3:.1f} ms")
    t = best_of(lambda: random_focus_stack(g, (256, 256), 5), 3)
    print(f"random_focus_stack 5x256x256: {t * 1e3:.1f} ms")
    if args.boards:
        from dfdcap.sim.boards import BoardSpec, write_board_pairs

        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            write_board_pairs(d, args.boards, BoardSpec("checkerboard", 9, 6, 0.025), cfg, phone_size=(4032, 3024), seed=0)
            dt = time.perf_counter() - t
        print(f"board pairs (phone 4032x3024 + sensor 640x480): {args.boards} in {dt:.1f} s ({dt / args.boards:.2f} s/pair)")


if __name__ == "__main__":
    main()
