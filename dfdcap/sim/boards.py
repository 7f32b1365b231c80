"""Calibration board image pairs (checkerboard and ChArUco) rendered through both rig cameras.

Board frame = OpenCV's object points: checkerboard inner corner (i, j) at (i*square, j*square, 0)
(cols x rows inner corners); ChArUco: origin at the board's outer top-left corner, chessboard
corner k at CharucoBoard.getChessboardCorners()[k]. x right, y down on the printed board,
z into the board. Each view: the board at a random pose that both cameras see whole,
rendered with distortion, thin-lens defocus (the phone focused near the board) and noise.
A corrupted view renders the phone image with the board moved (a few degrees and cm) from
where the rig geometry puts it: every corner is still detected, but the pair is inconsistent.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from dfdcap.cameras import CameraModel, make_transform
from dfdcap.errors import DfdcapError
from dfdcap.fileio import atomic_write_bytes, atomic_write_json, atomic_write_text
from dfdcap.interrupts import CtrlCFlag
from dfdcap.lens import ThinLens
from dfdcap.sim.render import composite_layers, layer_indices, random_texture
from dfdcap.sim.scene import _Rays, fast_pixel_rays

# the sensor color camera: a small fixed-focus lens (nearly everything sharp)
SENSOR_LENS = ThinLens(2.9e-3, 2.2)
SENSOR_FOCUS_M = 1.5


@dataclass(frozen=True)
class BoardSpec:
    """A calibration board. checkerboard: cols x rows INNER corners (as OpenCV counts);
    charuco: cols x rows squares, markers of marker_m from `dictionary`."""

    kind: str = "checkerboard"
    cols: int = 9
    rows: int = 6
    square_m: float = 0.025
    marker_m: float | None = None
    dictionary: str = "DICT_5X5_100"

    def __post_init__(self) -> None:
        if self.kind not in ("checkerboard", "charuco"):
            raise DfdcapError(f"board: kind must be checkerboard or charuco, got {self.kind!r}")
        if self.cols < 2 or self.rows < 2 or not self.square_m > 0:
            raise DfdcapError(f"board: need cols, rows >= 2 and square > 0, got {self.cols}x{self.rows}, {self.square_m} m")
        if self.kind == "charuco":
            if self.marker_m is None:
                object.__setattr__(self, "marker_m", 0.75 * self.square_m)
            if not 0 < self.marker_m < self.square_m:
                raise DfdcapError(f"board: marker {self.marker_m} m must be smaller than the square {self.square_m} m")
            if not hasattr(cv2.aruco, self.dictionary):
                raise DfdcapError(f"board: unknown ArUco dictionary {self.dictionary!r}")

    @property
    def squares(self) -> tuple[int, int]:
        """(squares across, squares down)."""
        return (self.cols + 1, self.rows + 1) if self.kind == "checkerboard" else (self.cols, self.rows)

    @property
    def origin_offset_m(self) -> float:
        """Board-frame coordinate of the printed pattern's top-left outer corner (both axes)."""
        return -self.square_m if self.kind == "checkerboard" else 0.0

    def charuco_board(self):
        d = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary))
        return cv2.aruco.CharucoBoard((self.cols, self.rows), self.square_m, self.marker_m, d)

    def object_points(self) -> np.ndarray:
        """(N, 3) float64 corner coordinates in the board frame (OpenCV's order)."""
        if self.kind == "checkerboard":
            j, i = np.mgrid[0 : self.rows, 0 : self.cols]
            return np.stack([i.ravel() * self.square_m, j.ravel() * self.square_m, np.zeros(i.size)], axis=1)
        return np.asarray(self.charuco_board().getChessboardCorners(), dtype=np.float64).reshape(-1, 3)

    def outline_m(self, margin_squares: float = 0.0) -> np.ndarray:
        """(4, 3) corners of the printed pattern (grown by margin squares), board frame."""
        sx, sy = self.squares
        o = self.origin_offset_m - margin_squares * self.square_m
        w = sx * self.square_m + 2 * margin_squares * self.square_m
        h = sy * self.square_m + 2 * margin_squares * self.square_m
        return np.array([[o, o, 0], [o + w, o, 0], [o + w, o + h, 0], [o, o + h, 0]], dtype=np.float64)

    def to_dict(self) -> dict:
        d = {"type": self.kind, "cols": self.cols, "rows": self.rows, "square_m": self.square_m}
        if self.kind == "charuco":
            d["marker_m"] = self.marker_m
            d["dictionary"] = self.dictionary
        return d

    def texture(self, px_per_square: int = 128, margin_squares: float = 1.0) -> tuple[np.ndarray, float]:
        """(gray float32 image of the printed board with a white margin, texture px per metre).

        Texture pixel (x, y) centre is at board coordinates
        (origin_offset - margin + (x + 0.5) / px_per_m, same for y).
        """
        sx, sy = self.squares
        m = int(round(margin_squares * px_per_square))
        if self.kind == "checkerboard":
            yy, xx = np.mgrid[0 : sy * px_per_square, 0 : sx * px_per_square]
            pat = (((xx // px_per_square) + (yy // px_per_square)) % 2 == 1).astype(np.float32)
        else:
            img = self.charuco_board().generateImage((sx * px_per_square, sy * px_per_square), marginSize=0, borderBits=1)
            pat = (img > 127).astype(np.float32)
        tex = np.ones((pat.shape[0] + 2 * m, pat.shape[1] + 2 * m), np.float32)
        tex[m : m + pat.shape[0], m : m + pat.shape[1]] = pat
        return tex, px_per_square / self.square_m


class _BoardTexture:
    """A box-filtered pyramid of the board texture, to sample without aliasing at any scale."""

    def __init__(self, board: BoardSpec, px_per_square: int = 128, margin_squares: float = 1.0):
        tex, ppm = board.texture(px_per_square, margin_squares)
        self.origin = board.origin_offset_m - margin_squares * board.square_m
        self.texels_per_px = 1.0
        self.levels = [(tex, ppm)]
        while self.levels[-1][1] * board.square_m > 8 and min(self.levels[-1][0].shape) > 32:
            t, p = self.levels[-1]
            h2, w2 = t.shape[0] // 2, t.shape[1] // 2
            t2 = t[: 2 * h2, : 2 * w2].reshape(h2, 2, w2, 2).mean(axis=(1, 3))
            self.levels.append((t2, p / 2))

    def level(self, px_per_m_on_image: float) -> tuple[np.ndarray, float]:
        """The coarsest pyramid level still holding >= texels_per_px texels per image pixel."""
        tex, ppm = self.levels[0]
        for t, p in self.levels:
            if p >= self.texels_per_px * px_per_m_on_image:
                tex, ppm = t, p
        return tex, ppm


_RAYS: dict[tuple, _Rays] = {}


def _rays(camera: CameraModel) -> _Rays:
    key = (camera.K.tobytes(), camera.dist.tobytes(), camera.size)
    r = _RAYS.get(key)
    if r is None:
        if len(_RAYS) > 6:
            _RAYS.clear()
        r = _RAYS[key] = _Rays(fast_pixel_rays(camera))
    return r


def render_board_view(
    camera: CameraModel,
    T_cam_from_board: np.ndarray,
    board: BoardSpec,
    lens: ThinLens,
    focus_m: float,
    pixel_pitch_m: float,
    rng: np.random.Generator,
    *,
    background: np.ndarray | None = None,
    background_depth_m: float = 2.5,
    noise: tuple[float, float] = (0.004, 0.0004),
    texture: _BoardTexture | None = None,
    supersample: int = 1,
    max_internal_width: int = 2048,
) -> tuple[np.ndarray, np.ndarray]:
    """Render the board seen by `camera`. Returns (rgb uint8 (H, W, 3), depth_m (H, W) float32).

    background: (H, W, 3) float32 image behind the board (a smooth wall at background_depth_m);
    the board window is defocused occlusion-aware; the smooth wall is left as is. Cameras wider
    than max_internal_width are rendered at half size and upsampled (geometry stays exact: the
    half-size model is camera.scaled(0.5) and cv2.resize keeps pixel centres consistent), then
    noise is added at full size.
    """
    if camera.width > max_internal_width:
        half = camera.scaled(0.5)
        bg_half = None if background is None else cv2.resize(background, half.size, interpolation=cv2.INTER_AREA)
        img, depth = _render_board_float(
            half, T_cam_from_board, board, lens, focus_m, pixel_pitch_m * 2, bg_half, background_depth_m, texture, supersample
        )
        img = cv2.resize(_to_uint8(img), camera.size, interpolation=cv2.INTER_LINEAR)
        depth = cv2.resize(depth, camera.size, interpolation=cv2.INTER_NEAREST)
    else:
        img, depth = _render_board_float(
            camera, T_cam_from_board, board, lens, focus_m, pixel_pitch_m, background, background_depth_m, texture, supersample
        )
    return _finish(img, noise, rng), depth


def _render_board_float(
    camera: CameraModel,
    T_cam_from_board: np.ndarray,
    board: BoardSpec,
    lens: ThinLens,
    focus_m: float,
    pixel_pitch_m: float,
    background: np.ndarray | None,
    background_depth_m: float,
    texture: _BoardTexture | None,
    supersample: int,
) -> tuple[np.ndarray, np.ndarray]:
    """render_board_view before noise: (rgb float32 (H, W, 3) in [0, 1], depth_m (H, W))."""
    W, H = camera.size
    tex = texture or _BoardTexture(board)
    if supersample > 1:
        cam_ss = camera.scaled(supersample)
    else:
        cam_ss = camera
    rays = _rays(cam_ss)
    R, t = T_cam_from_board[:3, :3], T_cam_from_board[:3, 3]
    outline = board.outline_m(1.0) @ R.T + t
    centre = outline.mean(axis=0)
    radius = float(np.linalg.norm(outline - centre, axis=1).max())
    win = rays.window(centre, radius)
    if background is None:
        background = np.full((H, W, 3), 0.55, np.float32)
    img = background.copy()
    depth = np.full((H, W), background_depth_m, np.float32)
    if win is None:
        return img, depth
    v0, v1, u0, u1 = win
    ss = max(int(supersample), 1)
    Hs, Ws = rays.x.shape
    # align the window to whole output pixels (ss x ss blocks), inside the supersampled image
    v0, u0 = v0 // ss * ss, u0 // ss * ss
    v1, u1 = min(-(-v1 // ss) * ss, Hs // ss * ss), min(-(-u1 // ss) * ss, Ws // ss * ss)
    if v1 <= v0 or u1 <= u0:
        return img, depth
    x, y = rays.x[v0:v1, u0:u1], rays.y[v0:v1, u0:u1]
    # ray (x, y, 1) hits the board plane at z = (n.t) / (n.r); its board coordinates are
    # q = R^T (z r - t) = (n.t) R^T r / (n.r) - R^T t  (a homography of (x, y)); in-place
    # float32 arithmetic keeps this memory-bound pass cheap at 12 Mpx
    n = R[:, 2].astype(np.float32)
    k = float(R[:, 2] @ t)
    c = R.T @ t
    zmin = float(outline[:, 2].min())
    tex_img, ppm = tex.level(cam_ss.fx / max(zmin, 1e-3))
    f32 = np.float32
    inv = n[0] * x
    inv += n[1] * y
    inv += n[2]
    with np.errstate(divide="ignore"):
        np.divide(f32(1.0), inv, out=inv)
    z = inv * f32(k)

    def board_map(col: int, off: float) -> np.ndarray:
        m = f32(R[0, col]) * x
        m += f32(R[1, col]) * y
        m += f32(R[2, col])
        m *= inv
        m *= f32(k * ppm)
        m += f32(off)
        return m

    mx = board_map(0, (-c[0] - tex.origin) * ppm - 0.5)
    my = board_map(1, (-c[1] - tex.origin) * ppm - 0.5)
    th, tw = tex_img.shape
    inside = z > 0
    inside &= mx >= -0.5
    inside &= my >= -0.5
    inside &= mx <= tw - 0.5
    inside &= my <= th - 0.5
    val = cv2.remap(tex_img, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    del mx, my
    paper, ink = f32(0.85), f32(0.08)
    cov = inside.astype(np.float32)
    val *= paper - ink
    val += ink
    val *= cov
    z *= cov
    if ss > 1:
        # box-filter down to the camera's pixels (scaled() keeps pixel centres consistent)
        hh, ww = (v1 - v0) // ss, (u1 - u0) // ss
        area = cv2.INTER_AREA  # an exact ss x ss box filter for an integer factor
        cov = cv2.resize(cov, (ww, hh), interpolation=area)
        sval = cv2.resize(val, (ww, hh), interpolation=area)
        sz = cv2.resize(z, (ww, hh), interpolation=area) / np.maximum(cov, 1e-6)
        v0, v1, u0, u1 = v0 // ss, v0 // ss + hh, u0 // ss, u0 // ss + ww
    else:
        sval, sz = val, z
    bgw = img[v0:v1, u0:u1]
    img[v0:v1, u0:u1] = sval[..., None] + (1 - cov[..., None]) * bgw
    depth[v0:v1, u0:u1] = np.where(cov > 0.5, sz, background_depth_m)
    # defocus the board window (grown by the largest CoC) occlusion-aware
    cmax = float(np.nanmax(lens.coc_px(np.array([zmin, float(np.nanmax(sz)) if sz.size else zmin, background_depth_m]), focus_m, pixel_pitch_m)))
    g = int(math.ceil(cmax)) + 2
    y0, y1, x0, x1 = max(v0 - g, 0), min(v1 + g, H), max(u0 - g, 0), min(u1 + g, W)
    idx, lc = layer_indices(depth[y0:y1, x0:x1], lens, focus_m, pixel_pitch_m, layer_px=1.0, max_layers=24)
    img[y0:y1, x0:x1] = composite_layers(img[y0:y1, x0:x1], idx, lc)
    return img, depth


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return cv2.convertScaleAbs(img, alpha=255.0)  # rounds and saturates; img >= 0


def _finish(img: np.ndarray, noise: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """Quantise to uint8 and add Gaussian noise of the mean Poisson-Gaussian level (cv2's fast
    RNG, seeded from rng). img: (H, W, 3) float32 [0, 1] or uint8."""
    u8 = img if img.dtype == np.uint8 else _to_uint8(img)
    read, shot = noise
    if read > 0 or shot > 0:
        sigma = math.sqrt(read**2 + shot * 0.5) * 255.0
        n = np.empty(u8.shape, np.int16)
        cv2.setRNGSeed(int(rng.integers(0, 2**31)))
        cv2.randn(n, 0.0, sigma)
        u8 = cv2.add(u8, n, dtype=cv2.CV_8U)
    return u8


def _board_visible(camera: CameraModel, T_cam_from_board: np.ndarray, board: BoardSpec, border_px: float) -> bool:
    """The whole printed pattern plus a little white margin projects inside the image, facing the camera."""
    pts = board.outline_m(0.3)
    # densify the outline so distortion cannot hide a bulge
    dense = np.concatenate([np.linspace(pts[k], pts[(k + 1) % 4], 9)[:-1] for k in range(4)])
    pc = dense @ T_cam_from_board[:3, :3].T + T_cam_from_board[:3, 3]
    if np.any(pc[:, 2] < 0.05):
        return False
    n = T_cam_from_board[:3, 2]
    view = (pts.mean(0) @ T_cam_from_board[:3, :3].T + T_cam_from_board[:3, 3])
    cosang = abs(n @ view) / np.linalg.norm(view)
    if cosang < math.cos(math.radians(60)):
        return False
    # points beyond the undistortion's valid range fold back; check the normalised radius too
    r_ok = np.hypot(pc[:, 0] / pc[:, 2], pc[:, 1] / pc[:, 2]) < 1.2 * math.hypot(camera.width / camera.fx, camera.height / camera.fy) / 2
    if not r_ok.all():
        return False
    uv, _ = camera.project(pc)
    W, H = camera.size
    return bool(np.all((uv[:, 0] > border_px) & (uv[:, 0] < W - 1 - border_px) & (uv[:, 1] > border_px) & (uv[:, 1] < H - 1 - border_px)))


def random_board_pose(
    rng: np.random.Generator, board: BoardSpec, sensor: CameraModel, phone: CameraModel, T_phone_from_sensor: np.ndarray,
    max_tries: int = 2000,
) -> np.ndarray:
    """T_sensor_from_board for a random pose seen whole by both cameras (tilts up to ~40 deg)."""
    sx, sy = board.squares
    bw, bh = sx * board.square_m, sy * board.square_m
    c_board = np.array([board.origin_offset_m + bw / 2, board.origin_offset_m + bh / 2, 0.0])
    for _ in range(max_tries):
        frac = rng.uniform(0.35, 0.75)  # board width as a fraction of the sensor image width
        z = sensor.fx * bw / (frac * sensor.width)
        ang = np.radians([rng.uniform(-35, 35), rng.uniform(-35, 35), rng.uniform(-20, 20)])
        R = make_transform(ang, np.zeros(3))[:3, :3]
        # put the board centre on a random ray near the image centre
        ux, uy = rng.uniform(-0.25, 0.25) * sensor.width / sensor.fx, rng.uniform(-0.25, 0.25) * sensor.height / sensor.fy
        centre = np.array([ux * z, uy * z, z])
        T = make_transform(R, centre - R @ c_board)
        if _board_visible(sensor, T, board, 8) and _board_visible(phone, T_phone_from_sensor @ T, board, 8 * phone.width / 640):
            return T
    raise DfdcapError(f"board pairs: no pose found where both cameras see the whole {board.cols}x{board.rows} board")


def _perturb(rng: np.random.Generator, T_cam_from_board: np.ndarray, board: BoardSpec) -> np.ndarray:
    """The board rotated 3-6 degrees about its centre and shifted 1.5-3 cm: a geometric outlier."""
    sx, sy = board.squares
    c = np.array([board.origin_offset_m + sx * board.square_m / 2, board.origin_offset_m + sy * board.square_m / 2, 0.0])
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    dR = make_transform(axis * np.radians(rng.uniform(3, 6)), np.zeros(3))[:3, :3]
    shift = rng.normal(size=3)
    shift = shift / np.linalg.norm(shift) * rng.uniform(0.015, 0.03)
    # p' = dR (p - c) + c + shift, in board coordinates, then the original pose
    T_move = make_transform(dR, c - dR @ c + shift)
    return T_cam_from_board @ T_move


def _smooth_background(rng: np.random.Generator, W: int, H: int) -> np.ndarray:
    """A low-contrast, low-frequency wall (so leaving it un-blurred is accurate)."""
    small = random_texture(rng, 48, 64, fine_px=4.0)
    small = 0.45 + 0.35 * (small - small.mean())
    return cv2.resize(small, (W, H), interpolation=cv2.INTER_CUBIC).astype(np.float32)


def _board_focus_settings(board: BoardSpec, sensor: CameraModel, focus_diopters: Sequence[float] | None) -> tuple[list[float], float]:
    """(each view's focus cycle in diopters, the focus of truth's "phone" camera)."""
    if focus_diopters is None:
        z_mid = sensor.fx * board.squares[0] * board.square_m / (0.55 * sensor.width)  # random_board_pose's middle
        d = round(1.0 / z_mid, 3)
        return [d], d
    vals = [float(v) for v in focus_diopters]
    if not vals or any(not math.isfinite(v) or v < 0 for v in vals):
        raise DfdcapError(f"board pairs: focus settings must be diopters >= 0, got {vals}")
    return vals, float(np.median(sorted(set(vals))))


def write_board_pairs(
    out_dir: str | os.PathLike,
    n_views: int,
    board: BoardSpec,
    rig=None,
    phone_size: tuple[int, int] | None = None,
    seed: int = 0,
    n_corrupt: int = 0,
    progress: bool = False,
    jpeg_quality: int | None = None,
    focus_diopters: Sequence[float] | None = None,
) -> dict:
    """Render n_views board image pairs into out_dir/phone/view_NNN.png and out_dir/sensor/view_NNN.png,
    and out_dir/truth.json with both cameras, T_phone_from_sensor, the board and each view's poses.

    rig: a RigConfig (default RigConfig()). phone_size: (w, h) of the phone images (default the
    rig's). n_corrupt views (chosen at random) get a phone image of a displaced board.
    jpeg_quality: write JPEG (.jpg) at this quality instead of lossless PNG, as phones do.
    Returns the truth dict.

    Focus and breathing: with focus_diopters None the phone's focus is locked at one setting for
    all views (1 / the middle board distance), so its camera (truth "phone") is the same in every
    view although the lens breathes. With a list, view k is taken at focus_diopters[k % len] (each
    view's camera K in truth "views"; truth "phone" is the camera at the median listed focus,
    "phone_focus_diopters" says which). out_dir/phone/focus.csv (name,focus_diopters) is the
    sidecar `dfdcap calibrate` reads the focus of each view from.
    """
    from dfdcap.sim.rig import RigConfig

    if n_views < 1:
        raise DfdcapError(f"board pairs: n_views must be >= 1, got {n_views}")
    if not 0 <= n_corrupt <= n_views:
        raise DfdcapError(f"board pairs: n_corrupt must be in 0..{n_views}, got {n_corrupt}")
    cfg = rig if rig is not None else RigConfig()
    if not isinstance(cfg, RigConfig):
        cfg = getattr(cfg, "config", cfg)  # a SimRig
    if jpeg_quality is not None and not 1 <= jpeg_quality <= 100:
        raise DfdcapError(f"board pairs: JPEG quality must be 1..100, got {jpeg_quality}")
    if not (math.isfinite(board.square_m) and board.square_m > 0):
        raise DfdcapError(f"board pairs: square side must be a positive finite length, got {board.square_m}")
    psize = tuple(phone_size) if phone_size is not None else tuple(cfg.phone_size)
    sensor = cfg.sensor_camera_model()
    focus_list, ref_d = _board_focus_settings(board, sensor, focus_diopters)  # checked before any folder is made
    out = Path(out_dir)
    try:
        (out / "phone").mkdir(parents=True, exist_ok=True)
        (out / "sensor").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DfdcapError(f"{out}: cannot create output folder ({e.strerror})") from None
    phone = cfg.phone_camera_model(psize, ref_d)
    pitch_p = cfg.phone_pixel_pitch_m(psize)
    pitch_s = SENSOR_LENS.focal_length_m / sensor.fx
    lens_p = cfg.phone_lens
    T_ps = cfg.T_phone_from_sensor
    rng = np.random.default_rng(seed)
    corrupt = set(rng.choice(n_views, size=n_corrupt, replace=False).tolist()) if n_corrupt else set()
    tex = _BoardTexture(board)
    bg_depth = 2.5 if cfg.sensor == "xtion" else 0.8
    bg_s = _smooth_background(rng, *sensor.size)
    bg_p = _smooth_background(rng, *phone.size)
    ss_s = 3
    ss_p = 2
    png_fast = [cv2.IMWRITE_PNG_COMPRESSION, 1]
    views = []
    pool = ThreadPoolExecutor(max_workers=2)
    futures = []

    ext = ".png" if jpeg_quality is None else ".jpg"
    params = png_fast if jpeg_quality is None else [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]

    def save(path: Path, rgb: np.ndarray) -> None:
        ok, buf = cv2.imencode(ext, np.ascontiguousarray(rgb[..., ::-1]), params)
        if not ok:
            raise DfdcapError(f"{path}: {ext} encoding failed")
        atomic_write_bytes(path, buf.tobytes())

    bar = None
    if progress:
        from rich.progress import Progress

        bar = Progress()
        bar.start()
        task = bar.add_task("rendering board pairs", total=n_views)
    stop = CtrlCFlag()
    try:
        for k in range(n_views):
            stop.check()
            T_sb = random_board_pose(rng, board, sensor, phone, T_ps)
            T_pb_rig = T_ps @ T_sb
            T_pb = T_pb_rig
            if k in corrupt:
                for _ in range(200):
                    cand = _perturb(rng, T_pb_rig, board)
                    if _board_visible(phone, cand, board, 8 * phone.width / 640):
                        T_pb = cand
                        break
                else:
                    raise DfdcapError("board pairs: could not place a corrupted view in the phone image")
            centre_b = np.array([board.origin_offset_m + board.squares[0] * board.square_m / 2, board.origin_offset_m + board.squares[1] * board.square_m / 2, 0])
            zc = float((T_pb[:3, :3] @ centre_b + T_pb[:3, 3])[2])
            rng.uniform(math.log(0.8), math.log(1.25))  # was the per-view focus; kept so poses and noise stay put
            focus_d = focus_list[k % len(focus_list)]
            focus = 1.0 / focus_d if focus_d > 0 else math.inf
            phone_k = cfg.phone_camera_model(psize, focus_d)
            img_s, _ = render_board_view(
                sensor, T_sb, board, SENSOR_LENS, SENSOR_FOCUS_M, pitch_s, rng,
                background=bg_s, background_depth_m=bg_depth, noise=cfg.sensor_noise, texture=tex, supersample=ss_s,
            )
            img_p, _ = render_board_view(
                phone_k, T_pb, board, lens_p, focus, pitch_p, rng,
                background=bg_p, background_depth_m=bg_depth, noise=cfg.phone_noise, texture=tex, supersample=ss_p,
            )
            name = f"view_{k:03d}"
            futures.append(pool.submit(save, out / "sensor" / f"{name}{ext}", img_s))
            futures.append(pool.submit(save, out / "phone" / f"{name}{ext}", img_p))
            v = {
                "name": name,
                "T_phone_from_board": T_pb.tolist(),
                "T_sensor_from_board": T_sb.tolist(),
                "corrupted": k in corrupt,
                "phone_focus_m": focus,
                "phone_focus_diopters": focus_d,
                "phone_K": phone_k.K.tolist(),
            }
            if k in corrupt:
                v["T_phone_from_board_rig"] = T_pb_rig.tolist()
            views.append(v)
            while len(futures) > 4:
                futures.pop(0).result()
            if bar is not None:
                bar.advance(task)
        for f in futures:
            f.result()
        stop.check()
    finally:
        stop.restore()
        pool.shutdown(wait=True)
        if bar is not None:
            bar.stop()
    truth = {
        "phone": phone.to_dict(),
        "sensor": sensor.to_dict(),
        "T_phone_from_sensor": T_ps.tolist(),
        "board": board.to_dict(),
        "views": views,
        "phone_lens": {"focal_length_m": lens_p.focal_length_m, "f_number": lens_p.f_number, "pixel_pitch_m": pitch_p},
        "seed": seed,
        "phone_focus_diopters": ref_d,
        "phone_breathing": None if (fm := cfg.phone_focus_model(psize)) is None else fm.to_dict(),
    }
    atomic_write_text(out / "phone" / "focus.csv", "name,focus_diopters\n"
                      + "".join(f"{v['name']},{v['phone_focus_diopters']:.6f}\n" for v in views))
    atomic_write_json(out / "truth.json", truth)
    return truth
