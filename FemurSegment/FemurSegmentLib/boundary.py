"""The femur's boundary on the CT's own grid: the network works on a 1.5 x 1.5 x 3 mm grid, so
its surface is snapped to the cortex of the full-resolution CT.

Within ``BAND_MM`` of the network's surface (either side) a voxel is femur when its HU exceeds
``BONE_HU``; deeper inside it stays femur; cavities enclosed in an axial slice (the marrow) are
then filled.
Chosen as one in-plane working-grid voxel and a usual cortical-bone threshold, and checked on the
shipped model's segmentation of its two training CTs (Dice against the MIT labels 0.87-0.90 ->
0.91-0.92, volume error +7..+18 % -> +1..+6 %); leave-one-case-out figures are in the README.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

BAND_MM = 1.5
BONE_HU = 200.0


def snap_to_cortex(mask: np.ndarray, ct: sitk.Image, band_mm: float = BAND_MM, bone_hu: float = BONE_HU) -> np.ndarray:
    """Refined boolean femur mask [k, j, i] on ``ct``'s grid from a coarse one (same grid)."""
    out = np.zeros(mask.shape, bool)
    if not mask.any():
        return out
    margin = np.ceil(band_mm / np.array(ct.GetSpacing()[::-1])).astype(int) + 1  # voxels per [k, j, i]
    nonzero = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis))) for axis in range(3)]
    lo = np.maximum([n[0] for n in nonzero] - margin, 0)
    hi = np.minimum([n[-1] + 1 for n in nonzero] + margin, mask.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    roi = sitk.RegionOfInterest(ct, [int(x) for x in (hi - lo)[::-1]], [int(x) for x in lo[::-1]])
    image = sitk.GetImageFromArray(mask[box].astype(np.uint8))
    image.CopyInformation(roi)
    distance = sitk.GetArrayFromImage(sitk.SignedMaurerDistanceMap(
        image, insideIsPositive=False, squaredDistance=False, useImageSpacing=True))  # mm, < 0 inside
    hu = sitk.GetArrayFromImage(roi)
    refined = (distance < -band_mm) | ((np.abs(distance) <= band_mm) & (hu > bone_hu))
    out[box] = np.stack([sitk.GetArrayFromImage(sitk.BinaryFillhole(sitk.GetImageFromArray(s.astype(np.uint8))))
                         for s in refined]) > 0  # per axial slice: the shaft's marrow runs out of the scan
    return out
