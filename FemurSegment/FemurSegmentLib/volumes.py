"""CT input checks and resampling between the scan's grid and the network's working grid.

Images are SimpleITK images in LPS (ITK's physical frame); arrays are indexed [k, j, i].
The working grid has identity direction (axes L, P, S) and ``WORK_SPACING`` mm.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

WORK_SPACING = (1.5, 1.5, 3.0)  # mm along LPS x, y, z
HU_WINDOW = (-250.0, 1750.0)    # clipped, then mapped to [-0.5, 1.5]
MIN_EXTENT_MM = 60.0
MAX_VOXELS = 1_500_000_000


class InputError(ValueError):
    """The input is not a CT this tool can segment; the message says why."""


def check_ct(image: sitk.Image) -> None:
    """Raise :class:`InputError` unless ``image`` looks like a 3D CT in Hounsfield units."""
    if image.GetDimension() != 3 or min(image.GetSize()) < 2:
        raise InputError(f"need a 3D CT volume, got size {image.GetSize()}")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError("need a scalar (single-component) CT volume")
    voxels = int(np.prod(image.GetSize()))
    if voxels > MAX_VOXELS:
        raise InputError(f"volume too large ({voxels / 1e6:.0f} M voxels; limit {MAX_VOXELS / 1e6:.0f} M)")
    extent = np.array(image.GetSize()) * np.array(image.GetSpacing())
    if extent.min() < MIN_EXTENT_MM:
        raise InputError(f"volume too small ({' x '.join(f'{e:.0f}' for e in extent)} mm); a proximal femur "
                         f"needs at least {MIN_EXTENT_MM:.0f} mm along every axis")
    values = sitk.GetArrayViewFromImage(image)
    sample = np.asarray(values[:: max(1, values.shape[0] // 32)], dtype=np.float32)
    if not np.isfinite(values).all():
        raise InputError("volume contains NaN or infinite values")
    low, high = np.percentile(sample, [1, 99.9])
    if low > -50 or high < 300:
        raise InputError(f"intensities do not look like CT Hounsfield units (1st percentile {low:.0f}, 99.9th "
                         f"{high:.0f}; a CT around the hips has fat or air below -50 HU and bone above 300 HU). "
                         "MR or a rescaled image cannot be segmented.")


def working_grid(image: sitk.Image, spacing=WORK_SPACING) -> sitk.Image:
    """An empty image with identity direction covering ``image``'s physical bounding box."""
    size = np.array(image.GetSize())
    corners = np.array([image.TransformContinuousIndexToPhysicalPoint([float(c) for c in corner])
                        for corner in np.stack(np.meshgrid(*[(-0.5, s - 0.5) for s in size], indexing="ij"),
                                               -1).reshape(-1, 3)])
    low, high = corners.min(0), corners.max(0)
    spacing = np.asarray(spacing, float)
    shape = np.maximum(1, np.round((high - low) / spacing)).astype(int)
    grid = sitk.Image([int(s) for s in shape], sitk.sitkFloat32)
    grid.SetSpacing(spacing.tolist())
    grid.SetOrigin((low + spacing / 2).tolist())
    return grid


def resample(image: sitk.Image, reference: sitk.Image, label: bool = False, default: float = -1024.0) -> sitk.Image:
    """``image`` on ``reference``'s grid (linear for intensities, nearest neighbour for labels)."""
    interpolator = sitk.sitkNearestNeighbor if label else sitk.sitkLinear
    pixel = sitk.sitkUInt8 if label else sitk.sitkFloat32
    return sitk.Resample(image, reference, sitk.Transform(), interpolator, 0.0 if label else default, pixel)


def normalize(hu: np.ndarray) -> np.ndarray:
    """HU -> network input: clip to ``HU_WINDOW`` and map to [-0.5, 1.5] (float32)."""
    low, high = HU_WINDOW
    return ((np.clip(hu, low, high) - low) / (high - low) * 2.0 - 0.5).astype(np.float32)


def body_box(hu: np.ndarray, margin: int = 4, part: float = 0.2) -> tuple[slice, ...]:
    """Bounding box (slices into ``hu``) of the body, plus ``margin`` voxels: the connected
    regions above -500 HU at least ``part`` times as large as the largest one (both legs of a
    lower-limb scan count; the table and small objects do not)."""
    inside = hu > -500
    if not inside.any():
        raise InputError("no body found (no voxel above -500 HU)")
    labels = sitk.GetArrayFromImage(sitk.RelabelComponent(sitk.ConnectedComponent(
        sitk.GetImageFromArray(inside.astype(np.uint8)))))
    sizes = np.bincount(labels.ravel())[1:]
    return bounding_box((labels > 0) & (labels <= int((sizes >= part * sizes[0]).sum())), margin)


def bounding_box(mask: np.ndarray, margin=0) -> tuple[slice, ...]:
    """Bounding box (slices into ``mask``) of a non-empty boolean array, grown by ``margin``
    voxels (one number, or one per axis) and clipped to the array."""
    margin = np.broadcast_to(margin, (mask.ndim,))
    box = []
    for axis in range(mask.ndim):
        idx = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(max(0, int(idx[0] - margin[axis])), min(mask.shape[axis], int(idx[-1] + margin[axis] + 1))))
    return tuple(box)
