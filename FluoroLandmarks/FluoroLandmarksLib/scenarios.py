"""Test scenarios run both by pytest (headless scene) and by the module's Slicer self-test.

Each takes an application logic (``slicer.app.applicationLogic()`` in Slicer) and raises
AssertionError when the behaviour is wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from . import mrml
from .detection import detect_frames, detect_run, run_eye_lenses
from .inference import LandmarkModel
from .synthesis import DRRParameters, export_views, synthesize


def _node_state(node) -> tuple:
    """Snapshot (labels or voxels, matrix or positions) of a volume or markups node."""
    if node.IsA("vtkMRMLVolumeNode"):
        return mrml.volume_to_numpy(node)
    labels, points = mrml.markups_to_numpy(node)
    return labels, points


def _same(a: tuple, b: tuple, atol: float = 0.0) -> bool:
    first_equal = (np.array_equal(a[0], b[0]) if isinstance(a[0], np.ndarray) else list(a[0]) == list(b[0]))
    return first_equal and a[1].shape == b[1].shape and np.allclose(a[1], b[1], rtol=0, atol=atol)


def drr_round_trip(app_logic, ct_path: str | Path, landmarks_path: str | Path, out_dir: str | Path,
                   reload_scene: Callable[[Path], object]) -> dict:
    """Synthesize two views (AP and LAO 90) of a CT with landmarks, export them, reload the
    .mrb with ``reload_scene(path) -> scene`` and check nodes and coordinates survive; check the
    2D landmarks are the exact projections P X and that the input nodes were not modified."""
    ct = mrml.load_volume(app_logic, ct_path, "CT")
    landmarks = mrml.load_markups(app_logic, landmarks_path)
    before = (_node_state(ct), _node_state(landmarks))
    params = DRRParameters(views=((0.0, 0.0), (90.0, 0.0)), detector_size_px=(96, 80), pixel_spacing_mm=(3.0, 3.0))
    views = synthesize(app_logic, ct, landmarks, params, name="DRR")
    assert _same(_node_state(ct), before[0]) and _same(_node_state(landmarks), before[1]), "inputs modified"

    labels, points = mrml.markups_to_numpy(landmarks)
    for view in views:
        g = view.geometry
        h = np.c_[points, np.ones(len(points))] @ g.projection_ras_to_px.T
        assert np.array_equal(view.landmarks_px, h[:, :2] / h[:, 2:]), "2D landmarks are not P X"
        _, on_plane = mrml.markups_to_numpy(view.nodes["landmarks_2d"])
        assert np.allclose(g.project(on_plane)[0], view.landmarks_px, atol=1e-6), "2D markups off the DRR"
        assert np.allclose(mrml.volume_to_numpy(view.nodes["drr"])[1], g.detector_ijk_to_ras, atol=1e-9)

    out = Path(out_dir)
    export_views(app_logic.GetMRMLScene(), views, out)
    expected = {}
    for view in views:
        for role, node in view.nodes.items():
            if role in ("drr", "landmarks_2d", "source"):
                expected[node.GetName()] = _node_state(node)
    expected["CT"] = _node_state(ct)
    expected[landmarks.GetName()] = _node_state(landmarks)

    scene = reload_scene(out / "scene.mrb")
    for name, state in expected.items():
        node = scene.GetFirstNodeByName(name)
        assert node is not None, f"node {name!r} missing after reloading the bundle"
        assert _same(_node_state(node), state, atol=1e-6), f"{name}: data or coordinates changed in the bundle"
    browser = scene.GetFirstNodeByClass("vtkMRMLSequenceBrowserNode")
    assert browser is not None and browser.GetNumberOfSynchronizedSequenceNodes() >= 3, "view sequences lost"
    text = scene.GetFirstNodeByName("DRR geometry 001")
    assert text is not None and mrml.geometry_from_text_node(text) == views[1].geometry, "geometry node lost"
    return {"views": len(views), "nodes_checked": len(expected)}


def biplane_detection(app_logic, ct_path: str | Path, landmarks_path: str | Path, model_folder: str | Path) -> dict:
    """Render frontal and lateral X-ray frames of a CT with landmarks, detect the landmarks in both
    frames at once (a biplane C-arm) with the model in ``model_folder``, and check: the inputs are
    unchanged, each frame's 2D landmarks are the projections of the shared 3D landmarks, the 3D
    landmarks lie near the CT's own, and both eye lenses are seen in both (uncollimated) beams."""
    ct = mrml.load_volume(app_logic, ct_path, "CT")
    landmarks = mrml.load_markups(app_logic, landmarks_path)
    before = (_node_state(ct), _node_state(landmarks))
    params = DRRParameters(views=((0.0, 0.0), (90.0, 0.0)), output="image", photons_per_pixel=20000.0)
    views = synthesize(app_logic, ct, landmarks, params, name="Biplane")
    frames = [(mrml.volume_to_numpy(v.nodes["drr"])[0][0], v.geometry, f"plane {n}") for n, v in enumerate(views)]
    results = detect_frames(app_logic, frames, LandmarkModel.load(model_folder), model_folder)
    assert _same(_node_state(ct), before[0]) and _same(_node_state(landmarks), before[1]), "inputs modified"

    labels, truth = mrml.markups_to_numpy(landmarks)
    xyz = results[0].detection.xyz_ras
    assert all(np.array_equal(r.detection.xyz_ras, xyz) for r in results), "the planes disagree in 3D"
    for r in results:
        assert np.allclose(r.geometry.project(xyz)[0], r.detection.uv, atol=1e-6), "2D landmarks are not the 3D ones"
        assert all(lens["in_field"] for lens in r.eye_lenses.values()), "an eye lens in the beam was missed"
    order = [list(results[0].detection.labels).index(label) for label in labels]
    error = np.linalg.norm(xyz[order] - truth, axis=1)
    assert error.mean() < 5.0, f"3D landmarks {error.mean():.1f} mm from the CT's (mean)"
    return {"planes": len(results), "mean_3d_error_mm": float(error.mean())}


def run_detection(app_logic, ct_path: str | Path, landmarks_path: str | Path, model_folder: str | Path,
                  doses: tuple[float, ...] = (1.0, 0.6, 1.5)) -> dict:
    """Render a lateral X-ray frame of a CT, make a fluoroscopy run of it at several ``doses``
    (grey-value scales), detect every frame with the model in ``model_folder`` and check: the
    input nodes are unchanged, a sequence browser steps through the frames in order, the estimates
    do not depend on the dose (frames are normalised), and both eye lenses are in the beam in every
    frame."""
    ct = mrml.load_volume(app_logic, ct_path, "CT")
    landmarks = mrml.load_markups(app_logic, landmarks_path)
    before = (_node_state(ct), _node_state(landmarks))
    params = DRRParameters(views=((90.0, 0.0),), output="image", photons_per_pixel=20000.0)
    view = synthesize(app_logic, ct, landmarks, params, name="Lateral")[0]
    frame = mrml.volume_to_numpy(view.nodes["drr"])[0][0]
    run = np.stack([dose * frame for dose in doses])
    results = detect_run(app_logic, run, view.geometry, LandmarkModel.load(model_folder), model_folder, "Run")
    assert _same(_node_state(ct), before[0]) and _same(_node_state(landmarks), before[1]), "inputs modified"
    sequence = results[0].nodes["browser"].GetMasterSequenceNode()
    assert sequence.GetNumberOfDataNodes() == len(doses), "the browser does not hold every frame"
    for n, dose in enumerate(doses):
        assert np.allclose(mrml.volume_to_numpy(sequence.GetNthDataNode(n))[0][0], dose * frame), "frames out of order"
        assert np.allclose(results[n].detection.uv, results[0].detection.uv, atol=0.05), "the dose moved the landmarks"
    lenses = run_eye_lenses(results)
    assert all(r["count_in_beam"] == len(doses) for r in lenses.values()), f"an eye lens was missed: {lenses}"
    return {"frames": len(results), "lenses_in_beam": {k: r["count_in_beam"] for k, r in lenses.items()}}
