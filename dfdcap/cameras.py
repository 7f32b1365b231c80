"""Pinhole + OpenCV distortion camera model and rigid transforms.

Convention: `T_a_from_b` (4x4) maps points in frame b to frame a: p_a = T_a_from_b @ p_b.
Camera frames are OpenCV's: x right, y down, z forward, metres.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dfdcap.errors import DfdcapError


def _cubic_weights(n: int, step: int, nodes: int):
    """(n, nodes) sparse matrix of Catmull-Rom weights from values at the nodes (k - 1) * step to
    the positions 0 .. n - 1. With nodes >= (n - 1) // step + 4, node 0 and the last two lie
    beyond the ends, so every position has its four neighbours."""
    from scipy.sparse import csr_matrix

    x = np.arange(n) / step + 1.0  # in node units
    i = np.floor(x).astype(int)
    t = x - i
    w = ((-t**3 + 2 * t**2 - t) / 2, (3 * t**3 - 5 * t**2 + 2) / 2, (-3 * t**3 + 4 * t**2 + t) / 2, (t**3 - t**2) / 2)
    rows = np.repeat(np.arange(n), 4)
    cols = (i[:, None] + np.arange(-1, 3)[None, :]).ravel()
    return csr_matrix((np.stack(w, axis=1).ravel(), (rows, cols)), shape=(n, nodes))


@dataclass(frozen=True)
class CameraModel:
    """Intrinsics K (3x3), OpenCV distortion coefficients and image size (width, height)."""

    K: np.ndarray
    dist: np.ndarray = field(default_factory=lambda: np.zeros(5))
    size: tuple[int, int] = (640, 480)

    def __post_init__(self) -> None:
        try:
            K = np.asarray(self.K, dtype=np.float64)
        except (TypeError, ValueError):
            raise DfdcapError(f"camera model: K must be a 3x3 matrix of numbers, got {self.K!r}") from None
        try:
            dist = np.asarray(self.dist, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            raise DfdcapError(f"camera model: dist must be a list of numbers, got {self.dist!r}") from None
        if K.shape != (3, 3):
            raise DfdcapError(f"camera model: K must be 3x3, got shape {K.shape}")
        if np.all(np.isfinite(K)) and not (K[0, 0] > 0 and K[1, 1] > 0):
            raise DfdcapError(f"camera model: focal lengths fx {K[0, 0]:g}, fy {K[1, 1]:g} must be positive")
        if dist.size not in (0, 4, 5, 8, 12, 14):
            raise DfdcapError(f"camera model: {dist.size} distortion coefficients (OpenCV takes 4, 5, 8, 12 or 14)")
        try:
            w, h = (int(v) for v in self.size)
        except (TypeError, ValueError):
            raise DfdcapError(f"camera model: size must be two whole numbers (width, height), got {self.size!r}") from None
        if w < 1 or h < 1:
            raise DfdcapError(f"camera model: image size {w}x{h} must be positive")
        object.__setattr__(self, "K", K)
        object.__setattr__(self, "dist", dist)
        object.__setattr__(self, "size", (w, h))

    @classmethod
    def from_fov(cls, width: int, height: int, fx: float, fy: float | None = None, dist=None) -> "CameraModel":
        fy = fx if fy is None else fy
        K = np.array([[fx, 0, (width - 1) / 2], [0, fy, (height - 1) / 2], [0, 0, 1.0]])
        return cls(K, np.zeros(5) if dist is None else np.asarray(dist), (width, height))

    @property
    def fx(self) -> float:
        return float(self.K[0, 0])

    @property
    def fy(self) -> float:
        return float(self.K[1, 1])

    @property
    def cx(self) -> float:
        return float(self.K[0, 2])

    @property
    def cy(self) -> float:
        return float(self.K[1, 2])

    @property
    def width(self) -> int:
        return self.size[0]

    @property
    def height(self) -> int:
        return self.size[1]

    @property
    def has_distortion(self) -> bool:
        return bool(np.any(self.dist != 0))

    def scaled(self, factor: float) -> "CameraModel":
        """The same camera with images resized by `factor` (pixel centres stay consistent)."""
        K = self.K.copy()
        K[0, 0] *= factor
        K[1, 1] *= factor
        K[0, 2] = (K[0, 2] + 0.5) * factor - 0.5
        K[1, 2] = (K[1, 2] + 0.5) * factor - 0.5
        size = (int(round(self.size[0] * factor)), int(round(self.size[1] * factor)))
        return CameraModel(K, self.dist.copy(), size)

    def distort_normalized(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Apply the OpenCV distortion model to normalized coordinates (any shape)."""
        d = np.zeros(14)
        d[: self.dist.size] = self.dist
        k1, k2, p1, p2, k3, k4, k5, k6, s1, s2, s3, s4 = d[:12]
        r2 = x * x + y * y
        radial = (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
        xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x) + s1 * r2 + s2 * r2 * r2
        yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y + s3 * r2 + s4 * r2 * r2
        return xd, yd

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project camera-frame points.

        points: (..., 3) metres in this camera's frame.
        Returns (uv (..., 2) pixels, z (...) metres); points with z <= 0 give NaN pixels.
        """
        p = np.asarray(points, dtype=np.float64)
        z = p[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            zi = np.where(z > 0, 1.0 / z, np.nan)
        x, y = p[..., 0] * zi, p[..., 1] * zi
        if self.has_distortion:
            x, y = self.distort_normalized(x, y)
        u = self.K[0, 0] * x + self.K[0, 1] * y + self.K[0, 2]
        v = self.K[1, 1] * y + self.K[1, 2]
        return np.stack([u, v], axis=-1), z

    def pixel_rays(self) -> np.ndarray:
        """(H, W, 2) undistorted normalized coordinates (x/z, y/z) of every pixel centre."""
        import cv2

        u, v = np.meshgrid(np.arange(self.width, dtype=np.float64), np.arange(self.height, dtype=np.float64))
        if not self.has_distortion:
            x = (u - self.cx - self.K[0, 1] * (v - self.cy) / self.fy) / self.fx
            y = (v - self.cy) / self.fy
            return np.stack([x, y], axis=-1)
        pts = np.stack([u.ravel(), v.ravel()], axis=-1).reshape(-1, 1, 2)
        und = cv2.undistortPoints(
            pts, self.K, self.dist, None, None, None, (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 20, 1e-9)
        )
        return und.reshape(self.height, self.width, 2)

    def pixel_rays_interpolated(self, step: int = 8) -> np.ndarray:
        """pixel_rays() at a fraction of the cost for a distorted camera: the iterative undistortion
        runs on a grid every `step` pixels (one node beyond each border) and is interpolated to every
        pixel with Catmull-Rom cubics, separably. The map is smooth, so at step 8 the result agrees
        with pixel_rays() within 1e-4 px (k1 up to 0.3 measured), in 7-13 ms instead of 110-260 ms
        at 1008x756 (benchmarks/camera_rays.py). Small images (under 0.1 MP, where the grid would be coarse against the
        distortion's curvature and the exact path is cheap) and undistorted cameras take pixel_rays().
        (H, W, 2) float64."""
        import cv2

        if not self.has_distortion or self.width * self.height < 100_000:
            return self.pixel_rays()
        W, H = self.size
        nu, nv = (W - 1) // step + 4, (H - 1) // step + 4  # nodes at (k - 1) * step, k = 0 .. n - 1
        gu, gv = np.meshgrid((np.arange(nu) - 1.0) * step, (np.arange(nv) - 1.0) * step)
        pts = np.stack([gu.ravel(), gv.ravel()], axis=-1).reshape(-1, 1, 2)
        und = cv2.undistortPoints(
            pts, self.K, self.dist, None, None, None, (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 20, 1e-9)
        ).reshape(nv, nu, 2)
        Mu, Mv = _cubic_weights(W, step, nu), _cubic_weights(H, step, nv)  # sparse: 4 weights a row
        out = np.empty((H, W, 2))
        for c in range(2):
            out[..., c] = (Mu @ (Mv @ und[..., c]).T).T  # across rows on the small grid, then along each row
        return out

    def unproject_depth(self, depth_m: np.ndarray) -> np.ndarray:
        """depth_m: (H, W) z-depth in metres (0/NaN invalid) -> (H, W, 3) points, NaN where invalid."""
        if depth_m.shape != (self.height, self.width):
            raise DfdcapError(f"unproject_depth: depth is {depth_m.shape[::-1]}, camera is {self.size}")
        rays = self.pixel_rays()
        z = np.where(depth_m > 0, depth_m, np.nan).astype(np.float64)
        return np.stack([rays[..., 0] * z, rays[..., 1] * z, z], axis=-1)

    def to_dict(self) -> dict:
        return {"K": self.K.tolist(), "dist": self.dist.tolist(), "size": list(self.size)}

    @classmethod
    def from_dict(cls, d: dict) -> "CameraModel":
        if not isinstance(d, dict):
            raise DfdcapError(f"camera model: expected an object with K, dist and size, got {d!r}")
        return cls(d["K"], d.get("dist", []), d["size"])


def make_transform(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """4x4 transform from a 3x3 rotation (or a Rodrigues 3-vector) and a translation."""
    R = np.asarray(R, dtype=np.float64)
    if R.shape in ((3,), (3, 1), (1, 3)):
        import cv2

        R, _ = cv2.Rodrigues(R.reshape(3, 1))
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.asarray(t, dtype=np.float64).ravel()
    return T


def invert_transform(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid 4x4 transform."""
    R, t = T[:3, :3], T[:3, 3]
    Ti = np.eye(4)
    Ti[:3, :3] = R.T
    Ti[:3, 3] = -R.T @ t
    return Ti


def transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 transform to (..., 3) points."""
    return points @ T[:3, :3].T + T[:3, 3]


def rotation_angle_deg(R: np.ndarray) -> float:
    """Angle of a rotation matrix in degrees (for comparing two rotations: R_a.T @ R_b)."""
    c = (np.trace(R[:3, :3]) - 1) / 2
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))
