"""Landmark detection on one frame, as MRML nodes and files (bridge: slicer-core + the Lib).

The frame is placed on its detector plane in patient RAS (from its C-arm geometry), so the 2D
landmarks (on that plane), the 3D landmarks and the estimated skull overlay in Slicer's views.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import vtk

from . import mrml
from .geometry import CArmGeometry
from .inference import (DRR_FRAME, PRESENCE_THRESHOLD, Detection, FramePreparation, LandmarkModel, detect,
                        detect_views)
from .landmarks import EYE_LENSES
from .shape import warp_template
from .synthesis import GEOMETRY_ATTRIBUTE, write_text_atomic

SKULL_TEMPLATE_FILE = "skull_template.vtp"


def write_skull_template(app_logic, ct_node, folder: str | os.PathLike, bone_hu: float = 300.0,
                         triangles: int = 20000) -> Path:
    """Bone iso-surface of the template CT, decimated to about ``triangles`` triangles, into the
    model folder (plain VTK XML, points in RAS mm, not Slicer's LPS file convention)."""
    scene = app_logic.GetMRMLScene()
    node = mrml.add_surface_model(scene, "skull template", ct_node, bone_hu, 0.9)
    smaller = vtk.vtkDecimatePro()  # quadric decimation stalls on this non-manifold bone surface
    smaller.PreserveTopologyOff()
    smaller.SetInputData(node.GetPolyData())
    smaller.SetTargetReduction(max(0.0, 1.0 - triangles / max(node.GetPolyData().GetNumberOfCells(), 1)))
    clean = vtk.vtkCleanPolyData()
    clean.SetInputConnection(smaller.GetOutputPort())
    clean.Update()
    template = clean.GetOutput()
    template.GetPointData().SetNormals(None)  # decimation leaves them invalid; recomputed wherever the skull is shown
    path = Path(folder) / SKULL_TEMPLATE_FILE
    tmp = path.with_name(f".tmp-{path.name}")
    writer = vtk.vtkXMLPolyDataWriter()
    writer.SetFileName(str(tmp))
    writer.SetInputData(template)
    writer.SetDataModeToBinary()
    ok = writer.Write()
    scene.RemoveNode(node)
    if not ok:
        raise OSError(f"could not write {path}")
    os.replace(tmp, path)
    return path


def read_skull_template(folder: str | os.PathLike):
    """The template skull (RAS mm) of a model folder."""
    reader = vtk.vtkXMLPolyDataReader()
    path = Path(folder) / SKULL_TEMPLATE_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} missing: the model folder has no skull template")
    reader.SetFileName(str(path))
    reader.Update()
    return reader.GetOutput()


@dataclass
class FrameResult:
    detection: Detection
    geometry: CArmGeometry
    eye_lenses: dict
    nodes: dict = field(default_factory=dict)


def eye_lens_report(d: Detection) -> dict:
    """Whether each eye lens is in the beam: estimated on the image inside the collimated field,
    and seen by the network (presence > ``PRESENCE_THRESHOLD``)."""
    out = {}
    for name in EYE_LENSES:
        if name in d.labels:
            n = d.labels.index(name)
            out[name] = dict(in_field=bool(d.in_image[n] and d.confidence[n] > PRESENCE_THRESHOLD), u=float(d.uv[n, 0]),
                             v=float(d.uv[n, 1]), confidence=float(d.confidence[n]),
                             position_ras=[float(x) for x in d.xyz_ras[n]])
    return out


def detect_frame(app_logic, image: np.ndarray, geometry: CArmGeometry, model: LandmarkModel, model_folder,
                 name: str = "Frame", head_depth_mm: float | None = None,
                 preparation: FramePreparation = DRR_FRAME) -> FrameResult:
    """Run the model on ``image`` (rows, columns) and add the frame, 2D and 3D landmarks, the
    estimated skull, the X-ray source and the beam to the scene. ``head_depth_mm``: the head
    centre's distance from the source along the principal ray if known (else the isocenter's);
    ``preparation``: padding and blur on the way to the network."""
    d = detect(model, image, geometry, head_depth_mm, preparation)
    scene = app_logic.GetMRMLScene()
    result = FrameResult(d, geometry, eye_lens_report(d), _frame_nodes(scene, image, d, geometry, name))
    result.nodes.update(_head_nodes(scene, d, model, model_folder, name))
    return result


def detect_frames(app_logic, frames: list[tuple[np.ndarray, CArmGeometry, str]], model: LandmarkModel,
                  model_folder, preparation: FramePreparation = DRR_FRAME) -> list[FrameResult]:
    """:func:`detect_frame` for several frames (image, geometry, name) of one head that did not move
    between them (e.g. a biplane C-arm's two planes): the shape model is fitted to all at once, and
    the 3D landmarks and skull (added once) are shared by every result's nodes."""
    detections = detect_views(model, [(image, g) for image, g, _ in frames], preparation)
    scene = app_logic.GetMRMLScene()
    results = [FrameResult(d, g, eye_lens_report(d), _frame_nodes(scene, image, d, g, name))
               for d, (image, g, name) in zip(detections, frames)]
    head = _head_nodes(scene, detections[0], model, model_folder, frames[0][2])
    for r in results:
        r.nodes.update(head)
    return results


def detect_run(app_logic, frames: np.ndarray, geometry: CArmGeometry, model: LandmarkModel, model_folder,
               name: str = "Run", head_depth_mm: float | None = None,
               preparation: FramePreparation = DRR_FRAME) -> list[FrameResult]:
    """:func:`detect_frame` on every frame of a run (frames, rows, columns) acquired with one
    ``geometry`` (the head may move between frames: each frame is fitted on its own). Each frame's
    nodes are named "``name`` NNN" and a sequence browser "``name`` run" steps through them by frame."""
    results = [detect_frame(app_logic, image, geometry, model, model_folder, f"{name} {n:03d}", head_depth_mm,
                            preparation) for n, image in enumerate(frames)]
    roles = {role: [r.nodes[role] for r in results] for role in results[0].nodes}
    browser = mrml.add_view_sequences(app_logic, f"{name} run", roles, index_name="frame")
    for r in results:
        r.nodes["browser"] = browser
    return results


def run_eye_lenses(results: list[FrameResult]) -> dict:
    """Per eye lens: the frames with the lens in the beam (:func:`eye_lens_report`), their count and
    share of the run, and each frame's report."""
    out = {}
    for lens in results[0].eye_lenses:
        reports = [r.eye_lenses[lens] for r in results]
        hit = [n for n, rep in enumerate(reports) if rep["in_field"]]
        out[lens] = dict(frames_in_beam=hit, count_in_beam=len(hit), share_in_beam=len(hit) / len(results),
                         frames=reports)
    return out


def export_run(scene, results: list[FrameResult], out_dir: str | os.PathLike) -> list[Path]:
    """A run's files in ``out_dir``: ``run_landmarks_2d.csv`` (frame,label,u,v,in_image,confidence),
    ``run_landmarks_3d.csv`` (frame,label,r,a,s mm RAS,confidence), ``run_eye_lenses.json``,
    ``geometry.json`` and ``scene.mrb`` (every frame's nodes and the browser)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    text_2d, text_3d = io.StringIO(), io.StringIO()
    w2, w3 = csv.writer(text_2d, lineterminator="\n"), csv.writer(text_3d, lineterminator="\n")
    w2.writerow(["frame", "label", "u", "v", "in_image", "confidence"])
    w3.writerow(["frame", "label", "r", "a", "s", "confidence"])
    for n, r in enumerate(results):
        d = r.detection
        for label, (u, v), inside, c, xyz in zip(d.labels, d.uv, d.in_image, d.confidence, d.xyz_ras):
            w2.writerow([n, label, f"{u:.3f}", f"{v:.3f}", int(inside), f"{c:.4f}"])
            w3.writerow([n, label, *(f"{x:.3f}" for x in xyz), f"{c:.4f}"])
    files = {"run_landmarks_2d.csv": text_2d.getvalue(), "run_landmarks_3d.csv": text_3d.getvalue(),
             "run_eye_lenses.json": json.dumps(run_eye_lenses(results), indent=2),
             "geometry.json": json.dumps(results[0].geometry.to_dict(), indent=2)}
    for filename, text in files.items():
        write_text_atomic(out / filename, text)
    mrml.save_bundle(scene, out / "scene.mrb")
    return [out / f for f in (*files, "scene.mrb")]


def _frame_nodes(scene, image: np.ndarray, d: Detection, geometry: CArmGeometry, name: str) -> dict:
    """The frame on its detector plane, its 2D landmarks (seen: selected), the source and the beam."""
    nodes = {"frame": mrml.add_image_volume(scene, name, image, geometry.detector_ijk_to_ras)}
    nodes["frame"].SetAttribute(GEOMETRY_ATTRIBUTE, json.dumps(geometry.to_dict()))
    nodes["landmarks_2d"] = mrml.add_points(scene, f"{name} landmarks 2D", d.labels, geometry.detector_point_ras(d.uv),
                                            _seen(d))
    nodes["source"] = mrml.add_points(scene, f"{name} source", ["X-ray source"], geometry.source_ras[None],
                                      color=(1.0, 1.0, 0.3), glyph_scale=4.0)
    nodes["beam"] = mrml.add_beam_model(scene, f"{name} beam", geometry)
    return nodes


def _head_nodes(scene, d: Detection, model: LandmarkModel, model_folder, name: str) -> dict:
    """The 3D landmarks and the template skull warped to them."""
    nodes = {"landmarks_3d": mrml.add_points(scene, f"{name} landmarks 3D", d.labels, d.xyz_ras, _seen(d),
                                             color=(0.2, 0.8, 1.0))}
    template = read_skull_template(model_folder)
    skull = warp_template(mrml.polydata_points(template), np.asarray(model.card["template_landmarks_ras"]),
                          d.xyz_ras, d.confidence)
    nodes["skull"] = mrml.add_model(scene, f"{name} estimated skull", mrml.with_points(template, skull))
    nodes["skull"].GetDisplayNode().SetOpacity(0.5)
    return nodes


def _seen(d: Detection) -> np.ndarray:
    return d.in_image & (d.confidence > PRESENCE_THRESHOLD)


def landmarks_csv(d: Detection) -> str:
    """label,u,v,in_image,confidence (u = column, v = row of the input image, 0 = first pixel centre)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["label", "u", "v", "in_image", "confidence"])
    for label, (u, v), inside, c in zip(d.labels, d.uv, d.in_image, d.confidence):
        writer.writerow([label, f"{u:.3f}", f"{v:.3f}", int(inside), f"{c:.4f}"])
    return out.getvalue()


def export_frame(scene, result: FrameResult, out_dir: str | os.PathLike, head: bool = True) -> list[Path]:
    """The frame's files in ``out_dir``: 2D landmarks, CSV, eye lenses and geometry, and with ``head``
    the 3D landmarks, the skull and the scene (``scene.mrb``), which several frames of one head share."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n = result.nodes
    nodes = {"landmarks_2d.mrk.json": n["landmarks_2d"]}
    if head:
        nodes.update({"landmarks_3d.mrk.json": n["landmarks_3d"], "skull.vtp": n["skull"]})
    for filename, node in nodes.items():
        mrml.save_node(node, out / filename)
    write_text_atomic(out / "landmarks_2d.csv", landmarks_csv(result.detection))
    write_text_atomic(out / "eye_lenses.json", json.dumps(result.eye_lenses, indent=2))
    write_text_atomic(out / "geometry.json", json.dumps(result.geometry.to_dict(), indent=2))
    if head:
        mrml.save_bundle(scene, out / "scene.mrb")
    return [out / f for f in (*nodes, "landmarks_2d.csv", "eye_lenses.json", "geometry.json")
            + (("scene.mrb",) if head else ())]
