"""One CT volume node -> femur segmentation node, measurements table and measurements dict;
and writing them as files. Used by the widget's logic, the command line and the tests alike."""

from __future__ import annotations

import csv
import io
import json
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from . import anatomy, mrml
from .calibration import from_file as calibration_from_file
from .inference import Progress, segment
from .measurement import measure
from .model import FemurModel


@dataclass
class Result:
    segmentation: object   # vtkMRMLSegmentationNode
    table: object          # vtkMRMLTableNode
    measurements: dict     # JSON-ready: per side figures, calibration, timings, warnings


def run(scene, volume_node, model: FemurModel | list[FemurModel], side: str = "both", proximal: bool = True,
        calibration_file: str | os.PathLike | None = None, progress: Progress | None = None,
        mirror: bool = False, precision: str = "auto") -> Result:
    """Segment and measure the femurs of ``volume_node`` (HU) into new nodes; the input is not modified.
    Several models: their ensemble (``inference.femur_probability``). ``mirror``: also run the network on
    the left-right mirrored CT and average (twice the network time). ``precision``: ``inference.PRECISIONS``."""
    start = time.perf_counter()
    models = [model] if isinstance(model, FemurModel) else list(model)
    ct = mrml.image_from_node(volume_node)
    calibration = calibration_from_file(calibration_file, ct) if calibration_file else None
    seg = segment(models, ct, side, proximal, progress, mirror=mirror, precision=precision)
    t = time.perf_counter()
    figures = measure(sitk.GetArrayViewFromImage(ct), seg.labels, float(np.prod(ct.GetSpacing())), calibration)
    name = volume_node.GetName()
    segmentation = mrml.add_segmentation(scene, volume_node, seg.labels, f"{name} femur")
    table = mrml.add_table(scene, f"{name} femur measurements", figures)
    seg.timings["measure_and_nodes_s"] = time.perf_counter() - t
    measurements = {
        "input": name, "side": side, "region": "proximal" if proximal else "whole",
        "proximal_definition_mm": anatomy.PROXIMAL_LENGTH_MM if proximal else None, "mirrored_pass": mirror,
        "network_precision": seg.precision,
        "sides": figures, "calibration": calibration.as_dict() if calibration else None,
        "warnings": seg.warnings, "timings_s": seg.timings, "runtime_s": time.perf_counter() - start,
        "peak_memory_mb": peak_memory_mb(), "model_sha256": [m.card.get("sha256") for m in models],
    }
    measurements.update({f"{s}_volume_cm3": f["volume_cm3"] for s, f in figures.items()})
    return Result(segmentation, table, measurements)


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measurements_csv(measurements: dict) -> str:
    keys = ["side", "segment", "volume_cm3", "voxel_count", "hu_mean", "hu_sd", "vbmd_mg_cm3", "bmc_mg"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, keys, extrasaction="ignore")
    writer.writeheader()
    for side, row in measurements["sides"].items():
        writer.writerow(dict(row, side=side))
    return buffer.getvalue()


def write_outputs(scene, result: Result, out_dir: str | os.PathLike) -> list[Path]:
    """segmentation.seg.nrrd, measurements.csv/.json and scene.mrb in ``out_dir`` (each written atomically)."""
    from FluoroLandmarksLib.mrml import save_bundle, save_node
    from FluoroLandmarksLib.synthesis import write_text_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "segmentation.seg.nrrd", out / "measurements.csv", out / "measurements.json", out / "scene.mrb"]
    save_node(result.segmentation, paths[0])
    write_text_atomic(paths[1], measurements_csv(result.measurements))
    result.measurements["peak_memory_mb"] = peak_memory_mb()
    write_text_atomic(paths[2], json.dumps(result.measurements, indent=2))
    save_bundle(scene, paths[3])
    return paths
