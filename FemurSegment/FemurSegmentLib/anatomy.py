"""Femur anatomy on label arrays: left/right split, the proximal-femur definition, terminology.

Arrays are [k, j, i] on a grid with known LPS geometry (SimpleITK image). "Left" is the patient's
left: larger LPS x (smaller RAS x).

Proximal femur (this project's definition, used in training, inference and evaluation alike): the
femur from the apex of the femoral head down to the axial plane ``PROXIMAL_LENGTH_MM`` below
the apex (patient superior-inferior axis). 100 mm covers the head, neck, both trochanters and
the shaft just below the lesser trochanter in adults, the region a QCT hip analysis measures;
it is a fixed-length stand-in for "a plane below the lesser trochanter", which would need a
landmark detector.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .volumes import bounding_box

PROXIMAL_LENGTH_MM = 100.0
# Plausibility of a predicted femur (per side); anything else is reported as "no femur found".
MAX_FEMUR_MEAN_HU = 600.0  # head, neck and trochanters are mostly marrow and trabecular bone (~150-450 HU)
MIN_FEMUR_CM3 = 40.0  # less predicted femur than this on a side is "no femur found" (adult proximal femur: 100-250 cm³)
# A femur whose top lies further than this above the network's confident femur (probability > 0.5)
# has joined the pelvis (leave-one-case-out: at most 9 mm when sound, 126 mm when joined).
MAX_RISE_MM = 30.0
SIDES = ("left", "right")
SEGMENT_NAMES = {"left": "Left femur", "right": "Right femur"}
LABEL_VALUES = {"left": 1, "right": 2}
# DICOM/SNOMED CT codes, in Slicer's terminology-entry string format.
_FEMUR_TYPE = "SCT^71341001^Femur"
_MODIFIER = {"left": "SCT^7771000^Left", "right": "SCT^24028007^Right"}
TERMINOLOGY = {side: ("Segmentation category and type - DICOM master list~SCT^123037004^Anatomical Structure~"
                      f"{_FEMUR_TYPE}~{_MODIFIER[side]}~Anatomic codes - DICOM master list~^^~^^")
               for side in SIDES}
COLORS = {"left": (0.95, 0.85, 0.55), "right": (0.55, 0.75, 0.95)}


def voxel_lps(grid: sitk.Image, kji: np.ndarray) -> np.ndarray:
    """LPS mm of voxel indices (N, 3) given as [k, j, i]."""
    ijk = np.asarray(kji, float)[:, ::-1]
    direction = np.array(grid.GetDirection()).reshape(3, 3)
    return ijk * np.array(grid.GetSpacing()) @ direction.T + np.array(grid.GetOrigin())


def split_sides(mask: np.ndarray, grid: sitk.Image, midline_x: float, candidates: int = 8) -> dict[str, np.ndarray]:
    """Left and right femur from a both-sides femur mask: of the ``candidates`` largest connected
    components (26-connected), the largest whose centroid lies on each side of the sagittal plane
    LPS x = ``midline_x`` mm (patient's left: x > midline)."""
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    image.CopyInformation(grid)
    labels = sitk.RelabelComponent(sitk.ConnectedComponent(image, True))  # 1 = largest
    shapes = sitk.LabelShapeStatisticsImageFilter()
    shapes.Execute(labels)
    chosen: dict[str, int] = {}
    for n in range(1, min(shapes.GetNumberOfLabels(), candidates) + 1):
        chosen.setdefault("left" if shapes.GetCentroid(n)[0] > midline_x else "right", n)  # centroid in LPS mm
    array = sitk.GetArrayViewFromImage(labels)
    return {side: array == chosen[side] if side in chosen else np.zeros(mask.shape, bool) for side in SIDES}


def midline(hu: np.ndarray, grid: sitk.Image) -> float:
    """LPS x (mm) of the body's centre: the mean x of voxels above -300 HU."""
    kji = np.argwhere(hu[:: 4, :: 4, :: 4] > -300) * 4
    return float(voxel_lps(grid, kji).mean(0)[0]) if len(kji) else 0.0


def top_mm(mask: np.ndarray, grid: sitk.Image) -> float:
    """LPS z (mm; patient superior) of the mask's most superior voxel, -inf when empty."""
    return float(voxel_lps(grid, _indices(mask))[:, 2].max()) if mask.any() else -np.inf


def proximal(mask: np.ndarray, grid: sitk.Image, length_mm: float = PROXIMAL_LENGTH_MM) -> np.ndarray:
    """The part of one side's femur mask within ``length_mm`` below its most superior voxel."""
    if not mask.any():
        return mask
    kji = _indices(mask)
    z = voxel_lps(grid, kji)[:, 2]
    out = np.zeros_like(mask, bool)
    out[tuple(kji[z >= z.max() - length_mm].T)] = True
    return out


def _indices(mask: np.ndarray) -> np.ndarray:
    """[k, j, i] indices (N, 3) of a mask's voxels, searched only within its bounding box."""
    box = bounding_box(mask)
    return np.argwhere(mask[box]) + [b.start for b in box]


def proximal_labels(labels: np.ndarray, grid: sitk.Image, length_mm: float = PROXIMAL_LENGTH_MM) -> np.ndarray:
    """A sided labelmap (1 left, 2 right) with each side cut to its proximal part."""
    out = np.zeros_like(labels)
    for value in LABEL_VALUES.values():
        out[proximal(labels == value, grid, length_mm)] = value
    return out
