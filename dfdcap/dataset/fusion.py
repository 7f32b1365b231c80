"""Combining the sensor depth frames paired with one static focus stack, in the sensor's own view.

While a stack is recorded the rig stands still, so every depth frame paired with its frames
sees the same scene from the same place: fusing them in the sensor view (before the single
reprojection into the phone view) cuts noise and fills dropouts.
- "median": per-pixel median of the valid values; a pixel is valid when at least half the
  frames saw it (a surface seen once is more likely a flying pixel than a surface).
- "tsdf": Open3D's TSDF voxel block grid integrates all frames; its surface is ray cast back
  into the sensor camera (distortion handled by resampling to and from the pinhole grid).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from dfdcap.cameras import CameraModel
from dfdcap.dataset.reproject import camera_rays, to_pinhole_grid
from dfdcap.errors import DatasetError

if TYPE_CHECKING:
    import open3d as o3d

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
    the median depth / 400 (2.5 mm at 1 m). Open3D's tensor VoxelBlockGrid integrates every
    frame from the same (identity) pose, then ray casts the surface into the camera; a pixel
    keeps the surface only where at least half the frames voted for it (TSDF weight) and where
    the frames support it (_reject_bridges: no ramps across depth edges).
    Open3D knows no lens distortion: a distorted camera's frames are resampled onto its ideal
    pinhole grid first and the ray cast is resampled back (nearest, edges stay sharp).
    Returns (H, W) float32 metres, 0 where nothing was hit.
    Only the grid's active blocks are ray cast (active_block_keys).
    Measured on a demo train session (D405-like sim sensor, 5 depth frames per stack, 1008x756
    phone view, against the true phone depth, before build-dataset's visibility check): median
    error 0.23 % (median fusion 0.30 %, one frame 0.42 %), but 72.5 % of the phone pixels valid
    (median 75.5 %), ~40 % more pixels off by > 5 % away from depth edges than median fusion, and
    4.5 s to build its 5 stacks (median 1.2 s); prefer median.
    """
    import open3d as o3d

    d = np.asarray(depths_m, dtype=np.float32)
    if d.ndim != 3 or d.shape[1:] != (camera.height, camera.width):
        raise DatasetError(f"fuse_tsdf: expected (K, {camera.height}, {camera.width}) depth frames, got {d.shape}")
    d = np.where(d > 0, d, np.float32(0))  # NaN -> 0
    valid = d[d > 0]
    if valid.size == 0:
        return np.zeros(d.shape[1:], np.float32)
    med = float(np.median(valid))
    voxel = float(voxel_m or med / 400.0)
    depth_max = float(valid.max()) * 1.05
    dev = o3d.core.Device("CPU:0")
    K = o3d.core.Tensor(camera.K, o3d.core.float64)
    E = o3d.core.Tensor(np.eye(4), o3d.core.float64)
    level = o3d.utility.get_verbosity_level()
    o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)  # block re-allocation notes
    try:
        grid = o3d.t.geometry.VoxelBlockGrid(
            attr_names=("tsdf", "weight"), attr_dtypes=(o3d.core.float32, o3d.core.float32),
            attr_channels=((1), (1)), voxel_size=voxel, block_resolution=8, block_count=50_000, device=dev,
        )
        for frame in d:
            img = to_pinhole_grid(frame, camera) if camera.has_distortion else frame
            depth = o3d.t.geometry.Image(o3d.core.Tensor(np.ascontiguousarray(img), device=dev))
            blocks = grid.compute_unique_block_coordinates(depth, K, E, 1.0, depth_max, trunc_voxel_multiplier=4.0)
            grid.integrate(blocks, depth, K, E, 1.0, depth_max, trunc_voxel_multiplier=4.0)
        keys = active_block_keys(grid)
        if keys.shape[0] == 0:
            raise DatasetError("TSDF fusion: no voxel was touched by the depth frames; use --fuse median or none")
        cast = grid.ray_cast(
            block_coords=keys, intrinsic=K, extrinsic=E, width=camera.width, height=camera.height,
            render_attributes=["depth"], depth_scale=1.0, depth_min=float(valid.min()) * 0.9, depth_max=depth_max,
            weight_threshold=max(1.0, 0.5 * d.shape[0]), trunc_voxel_multiplier=4.0,
        )
        out = cast["depth"].numpy()[..., 0].astype(np.float32)
    finally:
        o3d.utility.set_verbosity_level(level)
    out = np.where(np.isfinite(out) & (out > 0), out, np.float32(0))
    if camera.has_distortion:
        out = _redistort_depth(out, camera)
    out = _reject_bridges(out, d)
    if not (out > 0).any():
        raise DatasetError("TSDF fusion: ray casting hit no surface; use --fuse median or none")
    return out


def active_block_keys(grid: "o3d.t.geometry.VoxelBlockGrid") -> "o3d.core.Tensor":
    """The coordinates of the blocks a VoxelBlockGrid holds. Its hash map's key buffer has a row
    for every slot, used or not; the unused ones hold stale memory, and ray casting those as
    blocks sends the rays marching to garbage ranges (minutes per stack, or forever)."""
    import open3d as o3d

    hashmap = grid.hashmap()
    return hashmap.key_tensor()[hashmap.active_buf_indices().to(o3d.core.int64)]


def _reject_bridges(fused: np.ndarray, frames: np.ndarray, rel: float = 0.02) -> np.ndarray:
    """Drop fused depth that no frame supports: a TSDF's zero crossing bridges a depth edge with
    a ramp between the two surfaces, which would later pass for a surface. A pixel keeps its
    fused depth where it lies within `rel` of the frames' median there, or (a hole in every
    frame) where its 3x3 neighbourhood of medians is one surface that the fused depth lies on."""
    import cv2

    med = fuse_median(frames, min_fraction=0.0)
    k = np.ones((3, 3), np.uint8)
    lo = cv2.erode(np.where(med > 0, med, np.float32(np.inf)), k, borderType=cv2.BORDER_REPLICATE)
    hi = cv2.dilate(med, k, borderType=cv2.BORDER_REPLICATE)
    r = np.float32(rel)
    own = (med > 0) & (np.abs(fused - med) <= r * med)
    hole = (med == 0) & (hi > 0) & (hi - lo <= 2 * r * lo) & (fused >= lo * (1 - r)) & (fused <= hi * (1 + r))
    return np.where(own | hole, fused, np.float32(0)).astype(np.float32)


def _redistort_depth(pinhole_depth_m: np.ndarray, camera: CameraModel) -> np.ndarray:
    """Inverse of to_pinhole_grid: a depth map on the ideal pinhole grid -> the distorted camera's pixels (nearest)."""
    import cv2

    rx, ry = camera_rays(camera)  # each distorted pixel's ray, as pinhole coordinates (cached)
    mx = rx * np.float32(camera.fx) + np.float32(camera.cx)
    my = ry * np.float32(camera.fy) + np.float32(camera.cy)
    return cv2.remap(pinhole_depth_m, mx, my, cv2.INTER_NEAREST, borderValue=0)


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
