"""Segmentation metrics of Zhao et al.'s table on boolean [k, j, i] masks; distances in mm."""

from __future__ import annotations

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance


def overlap(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Dice, sensitivity (TP / true) and specificity (TN / true background) over the arrays given."""
    tp = float(np.logical_and(pred, true).sum())
    fp, fn = float(pred.sum()) - tp, float(true.sum()) - tp
    tn = float(pred.size) - tp - fp - fn
    return {"dice": 2 * tp / max(2 * tp + fp + fn, 1.0), "sensitivity": tp / max(tp + fn, 1.0),
            "specificity": tn / max(tn + fp, 1.0)}


def hd95(pred: np.ndarray, true: np.ndarray, spacing_kji) -> float:
    """95th-percentile symmetric Hausdorff distance (mm) between the masks' surfaces."""
    if not pred.any() or not true.any():
        return float("inf")
    box = tuple(slice(max(0, min(a.min(), b.min()) - 2), max(a.max(), b.max()) + 3)
                for a, b in zip(np.nonzero(pred), np.nonzero(true)))
    p, t = (torch.from_numpy(np.ascontiguousarray(m[box]))[None, None] for m in (pred, true))
    return float(compute_hausdorff_distance(p, t, percentile=95, spacing=list(spacing_kji))[0, 0])


def r_squared(predicted, true) -> float:
    """Coefficient of determination of ``predicted`` as an estimate of ``true`` (1 - SS_res / SS_tot)."""
    predicted, true = np.asarray(predicted, float), np.asarray(true, float)
    ss_tot = float(((true - true.mean()) ** 2).sum())
    return 1.0 - float(((true - predicted) ** 2).sum()) / ss_tot if ss_tot > 0 else float("nan")
