"""Per case and side comparison of a segmentation with a reference labelmap (Zhao et al.'s table).

Reference formats: ``femur_value=None`` -> a sided labelmap (1 left, 2 right, as this tool
writes and as the clinician contours are stored); ``femur_value=V`` -> a both-sides femur label
V (e.g. yuta-hi's 2), split by patient side like the prediction. With ``proximal`` the reference
gets the same proximal cut as the prediction; with ``reference_slices`` both masks are compared
only on the axial slices the reference covers on that side (for contours whose lower end is
arbitrary).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from . import anatomy
from .metrics import hd95, overlap, r_squared


def reference_sides(reference: sitk.Image, femur_value: int | None, proximal: bool,
                    midline_x: float) -> dict[str, np.ndarray]:
    """Reference femur per side: labels 1 (left) / 2 (right), or with ``femur_value`` the femur
    voxels of that value split at the body's sagittal midline ``midline_x`` (LPS mm, from the CT:
    :func:`anatomy.midline`), so that a label holding one femur keeps its true side."""
    labels = sitk.GetArrayFromImage(reference)
    if femur_value is None:
        sides = {side: labels == anatomy.LABEL_VALUES[side] for side in anatomy.SIDES}
    else:
        sides = anatomy.split_sides(labels == femur_value, reference, midline_x)
    if proximal:
        sides = {side: anatomy.proximal(m, reference) for side, m in sides.items()}
    return sides


def compare(predicted: np.ndarray, reference: dict[str, np.ndarray], grid: sitk.Image,
            reference_slices: bool = False, exclude: dict[str, list[int]] | None = None) -> dict[str, dict]:
    """Metrics per side present in the reference. ``predicted``: labels [k, j, i] (1 left, 2 right)."""
    voxel_cm3 = float(np.prod(grid.GetSpacing())) / 1000.0
    spacing_kji = grid.GetSpacing()[::-1]
    out = {}
    for side, true in reference.items():
        if not true.any():
            continue
        pred = predicted == anatomy.LABEL_VALUES[side]
        keep = np.ones(true.shape[0], bool)
        if reference_slices:
            k = np.flatnonzero(true.any(axis=(1, 2)))
            keep[:] = False
            keep[k.min():k.max() + 1] = True
        keep[[k for k in (exclude or {}).get(side, []) if k < len(keep)]] = False
        p, t = pred[keep], true[keep]
        out[side] = dict(overlap(p, t), hd95_mm=hd95(p, t, spacing_kji),
                         volume_pred_cm3=float(p.sum()) * voxel_cm3, volume_true_cm3=float(t.sum()) * voxel_cm3,
                         slices=[int(np.flatnonzero(keep).min()), int(np.flatnonzero(keep).max())])
    return out


def summarize(per_case: dict[str, dict[str, dict]]) -> dict:
    """Means over cases and sides plus the volume R² (Zhao et al.'s summary row)."""
    rows = [m for sides in per_case.values() for m in sides.values()]
    keys = ("dice", "sensitivity", "specificity", "hd95_mm")
    summary = {f"mean_{k}": float(np.mean([r[k] for r in rows])) for k in keys} if rows else {}
    summary["volume_r2"] = r_squared([r["volume_pred_cm3"] for r in rows], [r["volume_true_cm3"] for r in rows]) \
        if len(rows) > 1 else float("nan")
    summary["volume_error_percent"] = [100 * (r["volume_pred_cm3"] / r["volume_true_cm3"] - 1) for r in rows]
    return summary
