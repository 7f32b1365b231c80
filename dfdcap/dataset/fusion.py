"""Combining the sensor depth frames paired with one static focus stack, in the sensor's own view.

While a stack is recorded the rig stands still, so every depth frame paired with its frames
sees the same scene from the same place: fusing them in the sensor view (before the single
reprojection into the phone view) cuts noise and fills dropouts.
- "median": per-pixel median of the valid values; a pixel is valid when at least half the
  frames saw it (a surface seen once is more likely a flying pixel than a surface).
- "tsdf": Open3D's TSDF volume integrates all frames; its surface is ray cast back into the
  sensor camera (exact rays, distortion included).
"""

from __future__ import annotations

import numpy as np

from dfdcap.cameras import CameraModel
from dfdcap.errors import DatasetError

FUSE_MODES = ("none", "median", "tsdf")


def fuse_median(depths_m: np.ndarray, min_fraction: float = 0.5) -> np.ndarray:
    """depths_m: (K, H, W) float32 metres, 0/NaN invalid -> (H, W) float32 median, 0 where too few saw it."""
    d = np.asarray(depths_m, dtype=np.float32)
    if d.ndim != 3:
        raise DatasetError(f"fuse_median: expected (K, H, W) depth frames, got {d.shape}")
    if d.shape[0] == 1:
        return np.where(d[0] > 0, d[0], np.float32(0))
    valid = d > 0
    n = valid.sum(axis=0)
    # median of the valid values: sort with invalid as +inf, pick the middle of the valid ones
    s = np.sort(np.where(valid, d, np.float32(np.inf)), axis=0)
    lo = np.clip((n - 1) // 2, 0, d.shape[0] - 1)
    hi = np.clip(n // 2, 0, d.shape[0] - 1)
    med = 0.5 * (np.take_along_axis(s, lo[None], 0)[0] + np.take_along_axis(s, hi[None], 0)[0])
    ok = n >= max(1, int(np.ceil(min_fraction * d.shape[0])))
    return np.where(ok, med, np.float32(0)).astype(np.float32)


def fuse_tsdf(depths_m: np.ndarray, camera: CameraModel, voxel_m: float | None = None) -> np.ndarray:
    """Integrate (K, H, W) depth frames of one static view in a TSDF volume, ray cast it back.

    camera: the sensor colour camera the depth is registered to. voxel_m: voxel size; default
    the median depth / 300 (3.3 mm at 1 m). Returns (H, W) float32 metres, 0 where nothing was hit.
    """
    import open3d as o3d

    d = np.asarray(depths_m, dtype=np.float32)
    if d.ndim != 3 or d.shape[1:] != (camera.height, camera.width):
        raise DatasetError(f"fuse_tsdf: expected (K, {camera.height}, {camera.width}) depth frames, got {d.shape}")
    d = np.where(d > 0, d, np.float32(0))
    valid = d[d > 0]
    if valid.size == 0:
        return np.zeros(d.shape[1:], np.float32)
    med = float(np.median(valid))
    voxel = voxel_m or med / 300.0
    # undistorted pinhole integration: Open3D's TSDF has no distortion model, so the depth is
    # first resampled to ideal pinhole rays when the camera has distortion
    pin = o3d.camera.PinholeCameraIntrinsic(camera.width, camera.height, camera.fx, camera.fy, camera.cx, camera.cy)
    vol = o3d.pipelines.integration.ScalableTSDFVolume(
        voxel_length=voxel, sdf_trunc=4 * voxel, color_type=o3d.pipelines.integration.TSDFVolumeColorType.NoColor
    )
    grey = o3d.geometry.Image(np.zeros(d.shape[1:], np.uint8))
    for frame in d:
        img = _undistort_depth(frame, camera) if camera.has_distortion else frame
        rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
            grey, o3d.geometry.Image(np.ascontiguousarray(img)), depth_scale=1.0,
            depth_trunc=float(valid.max()) * 1.01, convert_rgb_to_intensity=True,
        )
        vol.integrate(rgbd, pin, np.eye(4))
    mesh = vol.extract_triangle_mesh()
    if len(mesh.triangles) == 0:
        raise DatasetError("TSDF fusion produced no surface from valid depth frames; use --fuse median or none")
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.t.geometry.TriangleMesh.from_legacy(mesh))
    rays_xy = camera.pixel_rays().astype(np.float32)  # exact rays of the distorted camera
    rays = np.zeros(rays_xy.shape[:2] + (6,), np.float32)
    rays[..., 3:5] = rays_xy
    rays[..., 5] = 1.0
    hit = scene.cast_rays(o3d.core.Tensor(rays))["t_hit"].numpy()  # direction z = 1, so t = z
    out = np.where(np.isfinite(hit), hit, 0).astype(np.float32)
    if not (out > 0).any():
        raise DatasetError("TSDF fusion: ray casting hit no surface; use --fuse median or none")
    return out


def _undistort_depth(depth_m: np.ndarray, camera: CameraModel) -> np.ndarray:
    """Resample a depth map of a distorted camera onto the ideal pinhole grid (nearest, keeps edges)."""
    import cv2

    m1, m2 = cv2.initUndistortRectifyMap(camera.K, camera.dist, None, camera.K, camera.size, cv2.CV_32FC1)
    return cv2.remap(depth_m, m1, m2, cv2.INTER_NEAREST, borderValue=0)


def fuse_depth(depths_m: np.ndarray, mode: str, camera: CameraModel) -> np.ndarray:
    """Dispatch: mode "none" takes the first frame (the reference frame's partner)."""
    if mode not in FUSE_MODES:
        raise DatasetError(f"fuse mode {mode!r}: expected one of {', '.join(FUSE_MODES)}")
    d = np.asarray(depths_m, dtype=np.float32)
    if mode == "none" or d.shape[0] == 1:
        return np.where(d[0] > 0, d[0], np.float32(0))
    if mode == "median":
        return fuse_median(d)
    return fuse_tsdf(d, camera)
