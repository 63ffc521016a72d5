"""Scenarios shared by pytest (headless slicer-core scene) and the module's self-test (Slicer's
scene): each runs the real pipeline on a volume node and raises AssertionError on a failed check."""

from __future__ import annotations

import hashlib

import numpy as np
import vtk
from vtk.util import numpy_support

from . import mrml
from .model import FemurModel
from .pipeline import run


def _fingerprint(node) -> tuple:
    data = node.GetImageData()
    voxels = hashlib.sha256(numpy_support.vtk_to_numpy(data.GetPointData().GetScalars()).tobytes()).hexdigest()
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return voxels, tuple(m.GetElement(r, c) for r in range(4) for c in range(4)), node.GetName()


def segment_and_check(scene, volume_node, model: FemurModel, **options) -> dict:
    """Segment ``volume_node``; check that it is unchanged and that every side's volume equals its
    voxel count x voxel volume and Slicer's labelmap-based segment volume within 0.1 %."""
    before = _fingerprint(volume_node)
    result = run(scene, volume_node, model, **options)
    assert _fingerprint(volume_node) == before, "the input volume node was modified"
    spacing = np.array(volume_node.GetSpacing())
    slicer_volumes = mrml.slicer_volumes_cm3(result.segmentation)
    for side, row in result.measurements["sides"].items():
        expected = row["voxel_count"] * float(np.prod(spacing)) / 1000.0
        assert abs(row["volume_cm3"] - expected) <= 1e-9 * expected, f"{side}: volume != voxel count x voxel volume"
        slicer_cm3 = slicer_volumes[row["segment"]]
        assert abs(row["volume_cm3"] - slicer_cm3) <= 1e-3 * slicer_cm3, \
            f"{side}: {row['volume_cm3']:.3f} cm³ vs Slicer's labelmap volume {slicer_cm3:.3f} cm³"
    assert result.table.GetNumberOfRows() == len(result.measurements["sides"])
    return {"result": result, "slicer_volumes_cm3": slicer_volumes}
