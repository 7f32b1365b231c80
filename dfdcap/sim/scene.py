"""Ray-cast scenes of textured planes, boxes and spheres, optionally moving, with exact depth.

World frame: the rig frame at t = 0 (= the sensor color camera's frame at t = 0), metres,
OpenCV axes (x right, y down, z forward). Objects move linearly (velocity in m/s); the rig
moves with a linear and an angular velocity. `Scene.render(camera, T_world_from_camera, t_s)`
casts one ray per pixel through `CameraModel.pixel_rays()` (so distortion is honoured) and
returns the sharp image and the z-depth in the camera frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Literal

import cv2
import numpy as np

from dfdcap.cameras import CameraModel, make_transform
from dfdcap.errors import DfdcapError
from dfdcap.sim.render import random_texture

TextureFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class Primitive:
    """One textured object.

    kind: "plane" (local z = 0, half extents `size[:2]`, inf = unbounded), "box" (half extents
    `size`), "sphere" (radius `size[0]`). R: (3, 3) rotation world_from_local; center: (3,) m
    at t = 0; velocity: (3,) m/s. texture: (T, T, 3) float32 image tiled with `texel_m` metres
    per texel (bilinear), or a function (u_m, v_m) -> (N, 3) float32 of surface coordinates.
    """

    kind: Literal["plane", "box", "sphere"]
    center: np.ndarray
    size: tuple[float, ...]
    texture: np.ndarray | TextureFn
    R: np.ndarray = field(default_factory=lambda: np.eye(3))
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(3))
    texel_m: float = 0.001

    def __post_init__(self) -> None:
        if self.kind not in ("plane", "box", "sphere"):
            raise DfdcapError(f"scene: unknown primitive kind {self.kind!r}")
        self.center = np.asarray(self.center, dtype=np.float64)
        self.R = np.asarray(self.R, dtype=np.float64)
        self.velocity = np.asarray(self.velocity, dtype=np.float64)
        if not callable(self.texture):
            self.texture = np.ascontiguousarray(self.texture, dtype=np.float32)

    def center_at(self, t_s: float) -> np.ndarray:
        return self.center + self.velocity * t_s

    def bounding_radius(self) -> float:
        """Radius (m) of a sphere about `center` holding the object (inf if unbounded)."""
        if self.kind == "sphere":
            return float(self.size[0])
        if self.kind == "plane":
            return float(math.hypot(self.size[0], self.size[1]))
        return float(np.linalg.norm(self.size[:3]))


@dataclass
class Scene:
    """Primitives plus the rig's motion (linear m/s, angular rad/s about its own origin)."""

    primitives: list[Primitive]
    rig_velocity_mps: np.ndarray = field(default_factory=lambda: np.zeros(3))
    rig_angular_velocity_rps: np.ndarray = field(default_factory=lambda: np.zeros(3))
    background: tuple[float, float, float] = (0.5, 0.5, 0.5)
    name: str = "custom"

    def __post_init__(self) -> None:
        self.rig_velocity_mps = np.asarray(self.rig_velocity_mps, dtype=np.float64)
        self.rig_angular_velocity_rps = np.asarray(self.rig_angular_velocity_rps, dtype=np.float64)
        self._ray_cache: dict[tuple, np.ndarray] = {}

    @property
    def is_static(self) -> bool:
        """True when neither objects nor the rig move (renders depend only on the pose)."""
        return (
            not np.any(self.rig_velocity_mps)
            and not np.any(self.rig_angular_velocity_rps)
            and not any(np.any(p.velocity) for p in self.primitives)
        )

    def T_world_from_rig(self, t_s: float) -> np.ndarray:
        """(4, 4) pose of the rig (sensor color camera) at scene time t_s seconds."""
        return make_transform(self.rig_angular_velocity_rps * t_s, self.rig_velocity_mps * t_s)

    def rays(self, camera: CameraModel) -> "_Rays":
        """Undistorted normalized ray coordinates of every pixel, cached per camera."""
        key = (camera.K.tobytes(), camera.dist.tobytes(), camera.size)
        r = self._ray_cache.get(key)
        if r is None:
            r = _Rays(fast_pixel_rays(camera))
            if len(self._ray_cache) > 8:
                self._ray_cache.clear()
            self._ray_cache[key] = r
        return r

    def render(
        self, camera: CameraModel, T_world_from_camera: np.ndarray, t_s: float = 0.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Sharp image and depth seen by `camera` at pose T_world_from_camera at time t_s.

        Returns (rgb (H, W, 3) float32 in [0, 1], depth_m (H, W) float32 z-depth in the camera
        frame, 0 where no object is hit).
        """
        rays = self.rays(camera)
        W, H = camera.size
        T = np.asarray(T_world_from_camera, dtype=np.float64)
        Rwc, o = T[:3, :3], T[:3, 3]
        best_t = np.full((H, W), np.inf, np.float32)
        best_id = np.full((H, W), -1, np.int16)
        frames = []
        for k, p in enumerate(self.primitives):
            c = p.center_at(t_s)
            o_l = (p.R.T @ (o - c)).astype(np.float32)
            M = (p.R.T @ Rwc).astype(np.float32)  # camera -> local rotation
            frames.append((o_l, M))
            win = rays.window(Rwc.T @ (c - o), p.bounding_radius())
            if win is None:
                continue
            v0, v1, u0, u1 = win
            x, y = rays.x[v0:v1, u0:u1], rays.y[v0:v1, u0:u1]
            d = [M[j, 0] * x + M[j, 1] * y + M[j, 2] for j in range(3)]
            t = _intersect(p, o_l, d)
            bt = best_t[v0:v1, u0:u1]
            closer = t < bt
            bt[closer] = t[closer]
            best_id[v0:v1, u0:u1][closer] = k
        rgb = np.empty((H * W, 3), np.float32)
        rgb[:] = np.asarray(self.background, np.float32)
        bid = best_id.ravel()
        bt = best_t.ravel()
        xr, yr = rays.x.ravel(), rays.y.ravel()
        for k, p in enumerate(self.primitives):
            sel = np.flatnonzero(bid == k)
            if sel.size == 0:
                continue
            o_l, M = frames[k]
            d = np.stack([xr[sel], yr[sel], np.ones(sel.size, np.float32)], axis=1) @ M.T
            pts = o_l + bt[sel, None] * d
            u, v = _surface_uv(p, pts)
            rgb[sel] = _sample_texture(p, u, v)
        depth = np.where(np.isfinite(best_t), best_t, 0.0).astype(np.float32)
        return rgb.reshape(H, W, 3), depth


def fast_pixel_rays(camera: CameraModel) -> np.ndarray:
    """CameraModel.pixel_rays() for large distorted cameras (the interpolated rays, within 1e-4 px
    of the exact ones, as float32: 12 MP of float64 rays would take 190 MB) and the exact rays
    below 1 MP, where they are cheap enough. (H, W, 2)."""
    W, H = camera.size
    if not camera.has_distortion or W * H <= 1_000_000:
        return camera.pixel_rays()
    return camera.pixel_rays_interpolated().astype(np.float32)


class _Rays:
    """Per-pixel normalized rays (x/z, y/z) as two (H, W) float32 grids, plus per-row/column
    bounds used to find the pixel window that can see a bounding sphere."""

    def __init__(self, xy: np.ndarray):
        self.x = np.ascontiguousarray(xy[..., 0], dtype=np.float32)
        self.y = np.ascontiguousarray(xy[..., 1], dtype=np.float32)
        self.col_min, self.col_max = self.x.min(axis=0), self.x.max(axis=0)
        self.row_min, self.row_max = self.y.min(axis=1), self.y.max(axis=1)

    def window(self, c_cam: np.ndarray, radius: float) -> tuple[int, int, int, int] | None:
        """(v0, v1, u0, u1) pixel window whose rays may hit a sphere (c_cam (3,) m, radius m) in the
        camera frame; the whole image for unbounded or too-close objects, None if out of view."""
        H, W = self.x.shape
        if not math.isfinite(radius) or c_cam[2] - radius <= 1e-3:
            return 0, H, 0, W
        zs = (c_cam[2] - radius, c_cam[2] + radius)
        xs = [(c_cam[0] + sx * radius) / z for sx in (-1, 1) for z in zs]
        ys = [(c_cam[1] + sy * radius) / z for sy in (-1, 1) for z in zs]
        xmin, xmax, ymin, ymax = min(xs), max(xs), min(ys), max(ys)
        cols = np.flatnonzero((self.col_max >= xmin) & (self.col_min <= xmax))
        rows = np.flatnonzero((self.row_max >= ymin) & (self.row_min <= ymax))
        if cols.size == 0 or rows.size == 0:
            return None
        return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _intersect(p: Primitive, o: np.ndarray, d: list[np.ndarray]) -> np.ndarray:
    """Ray parameter t of the first hit (inf if none) for rays o + t d in the local frame.

    o: (3,) float32, d: three (h, w) float32 direction components. The camera rays have unit z
    in the camera frame, so t is the z-depth in the camera frame.
    """
    eps = np.float32(1e-4)
    inf = np.float32(np.inf)
    dx, dy, dz = d
    if p.kind == "plane":
        with np.errstate(divide="ignore", invalid="ignore"):
            t = -o[2] / dz
        hx, hy = p.size[0], p.size[1]
        ok = t > eps
        if math.isfinite(hx):
            ok &= np.abs(o[0] + t * dx) <= hx
        if math.isfinite(hy):
            ok &= np.abs(o[1] + t * dy) <= hy
        return np.where(ok, t, inf)
    if p.kind == "sphere":
        r = np.float32(p.size[0])
        a = dx * dx + dy * dy + dz * dz
        b = o[0] * dx + o[1] * dy + o[2] * dz
        c = np.float32(o @ o) - r * r
        disc = b * b - a * c
        with np.errstate(invalid="ignore"):
            sq = np.sqrt(np.maximum(disc, 0))
        t0 = (-b - sq) / a
        t = np.where(t0 > eps, t0, (-b + sq) / a)
        return np.where((disc >= 0) & (t > eps), t, inf)
    # box: slab method, one axis at a time
    tmin = np.full(dx.shape, -np.inf, np.float32)
    tmax = np.full(dx.shape, np.inf, np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        for j, dj in enumerate(d):
            h = np.float32(p.size[j])
            inv = np.float32(1.0) / dj
            ta = (-h - o[j]) * inv
            tb = (h - o[j]) * inv
            np.maximum(tmin, np.minimum(ta, tb), out=tmin)
            np.minimum(tmax, np.maximum(ta, tb), out=tmax)
    t = np.where(tmin > eps, tmin, tmax)
    return np.where((tmax >= tmin) & (t > eps), t, inf)


def _surface_uv(p: Primitive, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Surface coordinates in metres of local-frame hit points (N, 3)."""
    if p.kind == "plane":
        return pts[:, 0], pts[:, 1]
    if p.kind == "sphere":
        r = np.float32(p.size[0])
        lon = np.arctan2(pts[:, 1], pts[:, 0]) * r
        lat = np.arcsin(np.clip(pts[:, 2] / r, -1, 1)) * r
        return lon, lat
    h = np.asarray(p.size[:3], np.float32)
    face = np.argmax(np.abs(pts) / h, axis=1)
    u = np.where(face == 0, pts[:, 1], pts[:, 0])
    v = np.where(face == 2, pts[:, 1], pts[:, 2])
    # shift each face's texture so faces do not look alike
    u = u + face.astype(np.float32) * np.float32(0.37)
    return u, v


def _sample_texture(p: Primitive, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    if callable(p.texture):
        return np.asarray(p.texture(u, v), dtype=np.float32).reshape(-1, 3)
    tex = p.texture
    scale = np.float32(1.0 / p.texel_m)
    mx = (u * scale).astype(np.float32).reshape(-1, 1)
    my = (v * scale).astype(np.float32).reshape(-1, 1)
    # remap maps are limited to 32767 rows; sample in chunks
    out = np.empty((u.size, 3), np.float32)
    step = 32000
    for s in range(0, u.size, step):
        out[s : s + step] = cv2.remap(
            tex, mx[s : s + step], my[s : s + step], cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP
        ).reshape(-1, 3)
    return out


# --- procedural textures ----------------------------------------------------------------


def step_texture(dark: float = 0.1, bright: float = 0.9, axis: int = 0, at_m: float = 0.0) -> TextureFn:
    """A sharp step edge: `dark` where the surface coordinate (u if axis=0 else v) < at_m."""

    def fn(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        c = u if axis == 0 else v
        val = np.where(c < at_m, np.float32(dark), np.float32(bright)).astype(np.float32)
        return np.repeat(val[:, None], 3, axis=1)

    return fn


def constant_texture(rgb: tuple[float, float, float]) -> TextureFn:
    col = np.asarray(rgb, np.float32)

    def fn(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return np.broadcast_to(col, (u.size, 3)).copy()

    return fn


# --- scene presets ------------------------------------------------------------------------


def _facing_rotation(rng: np.random.Generator, max_tilt_deg: float) -> np.ndarray:
    """A rotation whose local z axis points roughly back at the camera (tilted up to max_tilt)."""
    tilt = np.radians(rng.uniform(-max_tilt_deg, max_tilt_deg, size=3))
    R, _ = cv2.Rodrigues(tilt.reshape(3, 1))
    return R


def random_scene(
    rng: np.random.Generator,
    near_m: float = 0.3,
    far_m: float = 3.0,
    n_objects: int = 6,
    motion: bool = False,
    rig_motion: bool = False,
    wall: bool = True,
    floor: bool = True,
    fov_deg: tuple[float, float] = (55.0, 42.0),
    texture_px: int = 512,
    name: str = "random",
) -> Scene:
    """Random planes, boxes and spheres between near_m and far_m inside a camera's field of view.

    Object distances are uniform in diopters (so near objects, where defocus shows, are common);
    textures have detail at about one pixel of a 640-wide camera at the object's distance.
    """
    if not (0 < near_m < far_m):
        raise DfdcapError(f"random scene: need 0 < near < far, got {near_m}, {far_m}")
    prims: list[Primitive] = []
    texel_per_m = 1.0 / 600.0  # about one pixel of a 525-750 px focal length camera

    def tex():
        return random_texture(rng, texture_px, texture_px, fine_px=float(rng.uniform(1.0, 2.0)))

    if wall:
        R = _facing_rotation(rng, 8.0)
        prims.append(Primitive("plane", np.array([0.0, 0.0, far_m]), (math.inf, math.inf), tex(), R=R, texel_m=far_m * texel_per_m))
    if floor:
        h = rng.uniform(0.35, 0.6) * far_m / 3.0 + 0.05 * far_m
        # local z = world -y (normal pointing up, towards the camera above it)
        R = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])
        prims.append(Primitive("plane", np.array([0.0, h, 0.0]), (math.inf, math.inf), tex(), R=R, texel_m=0.5 * far_m * texel_per_m))
    hx, hy = math.tan(math.radians(fov_deg[0] / 2)), math.tan(math.radians(fov_deg[1] / 2))
    dpt = rng.uniform(1.0 / (far_m * 0.9), 1.0 / near_m, size=n_objects)
    for k in range(n_objects):
        z = 1.0 / dpt[k]
        x, y = rng.uniform(-0.8, 0.8) * hx * z, rng.uniform(-0.8, 0.6) * hy * z
        s = z * rng.uniform(0.06, 0.16)
        kind = ["plane", "box", "sphere"][k % 3]
        vel = rng.normal(0, 0.05 * z, size=3) if motion else np.zeros(3)
        if kind == "plane":
            size = (s * rng.uniform(0.8, 1.6), s * rng.uniform(0.8, 1.6))
            R = _facing_rotation(rng, 35.0)
        elif kind == "box":
            size = tuple(s * rng.uniform(0.5, 1.0, size=3))
            R = _facing_rotation(rng, 45.0)
        else:
            size = (s * rng.uniform(0.5, 0.9),)
            R = np.eye(3)
        prims.append(Primitive(kind, np.array([x, y, z + size[0] * 0.5]), size, tex(), R=R, velocity=vel, texel_m=z * texel_per_m))
    rig_v = rng.normal(0, 0.03, size=3) if rig_motion else np.zeros(3)
    rig_w = rng.normal(0, 0.02, size=3) if rig_motion else np.zeros(3)
    return Scene(prims, rig_v, rig_w, name=name)


def wall_scene(rng: np.random.Generator, distance_m: float = 1.0, texture_px: int = 512) -> Scene:
    """One fronto-parallel textured wall at distance_m (for depth and focus checks)."""
    t = random_texture(rng, texture_px, texture_px, fine_px=1.5)
    return Scene([Primitive("plane", np.array([0, 0, distance_m]), (math.inf, math.inf), t, texel_m=distance_m / 600.0)], name="wall")


def step_edge_scene(distance_m: float, dark: float = 0.1, bright: float = 0.9) -> Scene:
    """A fronto-parallel plane at distance_m with a vertical sharp step edge through the optical axis."""
    return Scene([Primitive("plane", np.array([0, 0, distance_m]), (math.inf, math.inf), step_texture(dark, bright))], name="step")


def two_plane_scene(
    rng: np.random.Generator, near_m: float, far_m: float, edge_x_m: float = 0.0, texture_px: int = 512
) -> Scene:
    """A textured half-plane (x < edge_x_m at near_m) in front of a textured wall at far_m."""
    fg = Primitive(
        "plane", np.array([edge_x_m - 50.0, 0, near_m]), (50.0, math.inf),
        random_texture(rng, texture_px, texture_px, 1.5), texel_m=near_m / 600.0,
    )
    bg = Primitive("plane", np.array([0, 0, far_m]), (math.inf, math.inf), random_texture(rng, texture_px, texture_px, 1.5), texel_m=far_m / 600.0)
    return Scene([fg, bg], name="two_plane")


SCENE_PRESETS = ("default", "close", "wide", "moving", "wall", "tabletop")


def make_scene(name: str, rng: np.random.Generator) -> Scene:
    """A named scene: default (0.5-3 m, an Xtion's range), close (0.08-0.42 m, for a D405),
    wide (0.1-3 m), moving (default with moving objects and rig), wall (a wall at 1 m),
    tabletop (0.15-1.2 m)."""
    if name == "default":
        return random_scene(rng, 0.5, 3.0, n_objects=7, name=name)
    if name == "wide":
        return random_scene(rng, 0.1, 3.0, n_objects=8, name=name)
    if name == "close":
        return random_scene(rng, 0.08, 0.42, n_objects=6, name=name)
    if name == "moving":
        return random_scene(rng, 0.5, 3.0, n_objects=7, motion=True, rig_motion=True, name=name)
    if name == "wall":
        return wall_scene(rng, 1.0)
    if name == "tabletop":
        return random_scene(rng, 0.15, 1.2, n_objects=8, name=name)
    raise DfdcapError(f"unknown scene {name!r}: choose one of {', '.join(SCENE_PRESETS)}")
