"""Evaluation of a landmark model on a synthetic dataset: 2D error at the isocenter plane, 3D
error, in/out-of-image split, per landmark, and the estimated skull's surface error."""

from __future__ import annotations

import time

import numpy as np

from .dataset import geometry_from_arrays
from .inference import LandmarkModel, predict_network_frame
from .metrics import error_2d_mm, landmark_report, summary
from .population import Deformation
from .shape import TemplateWarp


def predict_dataset(model: LandmarkModel, data: dict, batch: int = 64) -> dict[str, np.ndarray]:
    """Predictions for every sample: ``uv`` (B, L, 2) px, ``xyz_ras`` (B, L, 3), ``confidence``."""
    parts = [predict_network_frame(model, data["images"][s:s + batch]) for s in range(0, len(data["images"]), batch)]
    p = {key: np.concatenate([q[key] for q in parts]) for key in parts[0]}
    depth = data["sid_sod"][:, 1:] + p["depth_offset"]
    xyz = np.stack([geometry_from_arrays(data, n).backproject(p["uv"][n], depth[n]) for n in range(len(depth))])
    return dict(uv=p["uv"], xyz_ras=xyz, confidence=p["confidence"], depth=depth)


def skull_errors(data: dict, xyz_pred: np.ndarray, confidence: np.ndarray, template_vertices: np.ndarray,
                 template_landmarks: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """Mean distance (mm) per sample between the warped template skull and the sample's true skull
    (the template moved by the sample's head-variant deformation), vertex to corresponding vertex."""
    out, warp = [], TemplateWarp(template_vertices, template_landmarks)
    for n in samples:
        d = Deformation(data["def_matrix"][n], data["def_centre"][n], data["def_offset"][n], data["def_field"][n],
                        data["def_box"][n])
        truth = d.to_variant(template_vertices)
        warped = warp(xyz_pred[n], confidence[n])
        out.append(np.linalg.norm(warped - truth, axis=1).mean())
    return np.array(out)


def evaluate(model: LandmarkModel, meta: dict, data: dict, template_vertices: np.ndarray | None = None,
             template_landmarks: np.ndarray | None = None, skull_samples: int = 200) -> dict:
    if list(meta["labels"]) != list(model.labels):
        raise ValueError("the dataset's landmarks differ from the model's")
    start = time.perf_counter()
    pred = predict_dataset(model, data)
    seconds = time.perf_counter() - start
    magnification = data["sid_sod"][:, 0] / data["sid_sod"][:, 1]
    err2d = error_2d_mm(pred["uv"], data["uv"], data["spacing"][:, 0], magnification)
    err3d = np.linalg.norm(pred["xyz_ras"] - data["xyz_ras"], axis=-1)
    in_image = data["in_image"].astype(bool)
    report = landmark_report(list(model.labels), err2d, err3d, in_image)
    eyes = [model.labels.index(n) for n in ("eye_lens_right", "eye_lens_left") if n in model.labels]
    if eyes:
        predicted_in = pred["confidence"][:, eyes] > 0.5
        report["eye_lens_in_field_accuracy"] = float((predicted_in == in_image[:, eyes]).mean())
    if template_vertices is not None:
        chosen = np.linspace(0, len(err2d) - 1, min(skull_samples, len(err2d))).astype(int)
        report["skull_surface"] = summary(skull_errors(data, pred["xyz_ras"], pred["confidence"], template_vertices,
                                                       template_landmarks, chosen))
    report.update(samples=int(len(err2d)), within_10mm_2d=report["2d"]["within_10mm"],
                  within_10mm_3d=report["3d"]["within_10mm"], mre_2d_mm=report["2d"]["mre_mm"],
                  mre_3d_mm=report["3d"]["mre_mm"], frames_per_second_batched=len(err2d) / seconds)
    return report
