"""Per-side femur measurements: volume (cm³), voxel count, HU mean/SD and, with a QCT calibration,
vBMD (mg/cm³ K2HPO4) and BMC (mg = vBMD x volume)."""

from __future__ import annotations

import numpy as np

from . import anatomy
from .calibration import Calibration


def measure(hu: np.ndarray, labels: np.ndarray, voxel_mm3: float, calibration: Calibration | None = None) -> dict:
    """``hu`` and ``labels`` [k, j, i] on one grid (labels 1 left, 2 right); ``voxel_mm3`` = product of spacing."""
    out = {}
    for side, value in anatomy.LABEL_VALUES.items():
        mask = labels == value
        count = int(mask.sum())
        if not count:
            continue
        values = hu[mask].astype(np.float64)
        row = {"segment": anatomy.SEGMENT_NAMES[side], "voxel_count": count,
               "volume_cm3": count * voxel_mm3 / 1000.0, "hu_mean": float(values.mean()), "hu_sd": float(values.std())}
        if calibration is not None:
            row["vbmd_mg_cm3"] = float(calibration.density(row["hu_mean"]))
            row["bmc_mg"] = row["vbmd_mg_cm3"] * row["volume_cm3"]
        out[side] = row
    return out
