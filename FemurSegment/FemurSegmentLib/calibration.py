"""QCT calibration: a linear HU -> mg/cm³ K2HPO4 fit from phantom rod regions.

Calibration file (JSON), paths relative to the file::

    {"labelmap": "rods.nrrd",                             # rod regions (any grid; optional)
     "rods": [{"label": 1, "density_mg_cm3": 0},           # a label value of the labelmap, or
              {"roi": "rod2.mrk.json", "density_mg_cm3": 100}]}  # a Slicer markups ROI file
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .volumes import resample


class CalibrationError(ValueError):
    pass


@dataclass
class Calibration:
    """HU = slope * density + intercept (density in mg/cm³ K2HPO4); ``r2`` of the fit over the rods."""
    slope_hu_per_mg_cm3: float
    intercept_hu: float
    r2: float
    rods: list[dict]

    def density(self, hu):
        """mg/cm³ K2HPO4 of HU values."""
        return (np.asarray(hu, float) - self.intercept_hu) / self.slope_hu_per_mg_cm3

    def as_dict(self) -> dict:
        return {"slope_hu_per_mg_cm3": self.slope_hu_per_mg_cm3, "intercept_hu": self.intercept_hu,
                "r2": self.r2, "rods": self.rods}


def fit(densities, mean_hu, names=None) -> Calibration:
    """Least-squares line through (density, mean HU) of each rod. Needs at least two rods whose mean
    HU rises strictly with density."""
    d, h = np.asarray(densities, float), np.asarray(mean_hu, float)
    if len(d) < 2:
        raise CalibrationError(f"calibration needs at least two rods, got {len(d)}")
    if not (np.isfinite(d).all() and np.isfinite(h).all()):
        raise CalibrationError("calibration rods have missing or non-finite values (is a rod region empty?)")
    order = np.argsort(d)
    if np.any(np.diff(d[order]) <= 0):
        raise CalibrationError("calibration rod densities must all differ")
    if np.any(np.diff(h[order]) <= 0):
        raise CalibrationError(f"rod HU is not monotonic in density: densities {d[order].tolist()} mg/cm³ "
                               f"have mean HU {np.round(h[order], 1).tolist()}")
    slope, intercept = np.polyfit(d, h, 1)
    residual = h - (slope * d + intercept)
    total = ((h - h.mean()) ** 2).sum()
    rods = [{"name": n, "density_mg_cm3": float(a), "mean_hu": float(b)}
            for n, a, b in zip(names or [str(i + 1) for i in range(len(d))], d, h)]
    return Calibration(float(slope), float(intercept), float(1 - (residual ** 2).sum() / total), rods)


def roi_mask(path: Path, grid: sitk.Image) -> np.ndarray:
    """Boolean [k, j, i] mask on ``grid`` of the ROIs (centre, size, orientation) in a Slicer markups file."""
    doc = json.loads(path.read_text())
    shape = np.array(grid.GetSize()[::-1])
    matrix = np.array(grid.GetDirection()).reshape(3, 3) * np.array(grid.GetSpacing())  # ijk -> LPS
    origin = np.array(grid.GetOrigin())
    mask = np.zeros(shape, bool)
    for markup in doc.get("markups", []):
        if markup.get("type") != "ROI":
            continue
        flip = np.diag([-1.0, -1.0, 1.0]) if markup.get("coordinateSystem", "LPS") == "RAS" else np.eye(3)
        centre = flip @ np.asarray(markup["center"], float)
        axes = flip @ np.asarray(markup.get("orientation", np.eye(3).ravel()), float).reshape(3, 3)
        half = np.asarray(markup["size"], float) / 2
        corners = centre + (np.array(np.meshgrid(*[(-1, 1)] * 3)).reshape(3, -1).T * half) @ axes.T
        ijk = np.linalg.solve(matrix, (corners - origin).T).T
        low = np.clip(np.floor(ijk.min(0)).astype(int)[::-1], 0, shape)
        high = np.clip(np.ceil(ijk.max(0)).astype(int)[::-1] + 1, 0, shape)
        kji = np.indices(high - low).reshape(3, -1).T + low
        local = (kji[:, ::-1] @ matrix.T + origin - centre) @ axes
        mask[tuple(kji[np.all(np.abs(local) <= half, axis=1)].T)] = True
    return mask


def from_file(path: str | os.PathLike, ct: sitk.Image) -> Calibration:
    """Fit the calibration described by a calibration JSON file on ``ct`` (HU)."""
    path = Path(path)
    try:
        spec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CalibrationError(f"cannot read calibration file {path}: {error}") from error
    rods = spec.get("rods") or []
    hu = sitk.GetArrayViewFromImage(ct)
    labels = None
    if "labelmap" in spec:
        labels = sitk.GetArrayFromImage(resample(sitk.ReadImage(str(path.parent / spec["labelmap"])), ct, label=True))
    names, densities, means = [], [], []
    for rod in rods:
        if "roi" in rod:
            name, region = rod["roi"], roi_mask(path.parent / rod["roi"], ct)
        elif "label" in rod and labels is not None:
            name, region = f"label {rod['label']}", labels == int(rod["label"])
        else:
            raise CalibrationError(f"{path}: each rod needs 'roi' (a markups ROI file) or 'label' (with 'labelmap')")
        if not region.any():
            raise CalibrationError(f"{path}: rod {name!r} has no voxels in the CT")
        names.append(name)
        densities.append(float(rod["density_mg_cm3"]))
        means.append(float(hu[region].mean()))
    return fit(densities, means, names)
