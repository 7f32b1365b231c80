"""`dfdcap export`: one sample's depth as a coloured point cloud (.ply) for any 3D viewer."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from dfdcap.cameras import CameraModel
from dfdcap.dataset.h5io import open_dataset
from dfdcap.errors import DatasetError, DfdcapError
from dfdcap.fileio import atomic_path


def depth_to_points(depth_m: np.ndarray, mask: np.ndarray, rgb: np.ndarray, camera: CameraModel) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) depth (m) + mask + (H, W, 3) uint8 colours -> (N, 3) points in the camera frame (m), (N, 3) colours in [0, 1]."""
    P = camera.unproject_depth(np.where(mask, depth_m, 0))
    ok = mask & np.isfinite(P[..., 2])
    return P[ok].astype(np.float64), rgb[ok].astype(np.float64) / 255.0


def export_ply(h5: str | os.PathLike, out: str | os.PathLike, split: str | None = None, index: int = 0, frame: int | None = None) -> tuple[Path, int]:
    """Write sample `index` of `split` (default the first split) as a .ply, coloured by the
    reference frame of its stack (or `frame`). Needs a dfdcap file (it stores the phone camera).
    Returns (path, number of points)."""
    import open3d as o3d

    out = Path(out)
    with open_dataset(h5) as f:
        if split == "":
            raise DatasetError(f"{h5}: --split '' names no split (the file has {', '.join(f.splits)}; leave it out for the first)")
        split = split or f.splits[0]
        if not 0 <= index < f.n(split):
            raise DatasetError(f"{h5}: split {split!r} has {f.n(split)} samples, no index {index}")
        cam_d = f.attrs.get("camera")
        if not isinstance(cam_d, dict):
            raise DatasetError(f"{h5}: no phone camera model stored (not a dfdcap dataset); cannot unproject its depth")
        try:
            cam = CameraModel.from_dict(cam_d)
        except KeyError as e:
            raise DatasetError(f"{h5}: the stored phone camera model lacks {e}") from None
        except DfdcapError as e:
            raise DatasetError(f"{h5}: the stored phone camera model: {e}") from None
        S, H, W, _ = f.stack_shape(split)
        if cam.size != (W, H):
            raise DatasetError(f"{h5}: the stored phone camera is {cam.size[0]}x{cam.size[1]} px, the images {W}x{H}")
        depth = f.depth_m(split, index)
        if depth is None:
            raise DatasetError(f"{h5}: split {split!r} has no depth to export")
        prov = f.provenance(split, index)
        k = prov.get("reference_position") if frame is None else frame
        if frame is None and not (isinstance(k, int) and 0 <= k < S):
            k = S // 2
        if not 0 <= k < S:
            raise DatasetError(f"{h5}: frame {k} outside the stacks' {S} frames")
        pts, col = depth_to_points(depth, f.mask(split, index), f.stack(split, index)[k], cam)
    if len(pts) == 0:
        raise DatasetError(f"{h5}: sample {split}/{index} has no valid depth to export")
    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    pc.colors = o3d.utility.Vector3dVector(col)
    with atomic_path(out) as tmp:
        tmp_ply = tmp.with_suffix(".ply")
        if not o3d.io.write_point_cloud(str(tmp_ply), pc):
            raise DatasetError(f"{out}: Open3D could not write the point cloud")
        os.replace(tmp_ply, tmp)
    return out, len(pts)
