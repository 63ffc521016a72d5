"""PNG previews of a ``fluoro-landmarks drr`` output folder, rendered offscreen with VTK.

* ``drr_NNN.png``: the DRR (bone bright) with the 2D landmarks (orange in field, grey outside).
* ``scene_3d.png``: CT bone surface, 3D landmarks, X-ray sources, beams and every DRR on its
  detector plane, in patient RAS.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import vtk
from vtk.util import numpy_support

from . import mrml
from .geometry import CArmGeometry
from .headless import HeadlessApplication


def _write_png(rgb: np.ndarray, path: Path) -> None:
    image = vtk.vtkImageData()
    image.SetDimensions(rgb.shape[1], rgb.shape[0], 1)
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(np.ascontiguousarray(rgb[::-1]).reshape(-1, 3)))
    writer = vtk.vtkPNGWriter()
    writer.SetFileName(str(path))
    writer.SetInputData(image)
    writer.Write()


def _grey(image: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(image, [1, 99.5])
    return (np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)


def drr_png(drr: np.ndarray, rows: list[dict], path: Path, scale: int = 2) -> None:
    """DRR (nv, nu) with landmark crosses; out-of-image landmarks are drawn at the border."""
    g = np.kron(_grey(drr), np.ones((scale, scale), np.uint8))
    rgb = np.stack([g] * 3, axis=-1)
    h, w = g.shape
    for row in rows:
        u, v = (float(row["u"]) + 0.5) * scale, (float(row["v"]) + 0.5) * scale
        color = [255, 140, 0] if row["in_field"] == "1" else [150, 150, 150]
        cu, cv = int(np.clip(round(u), 0, w - 1)), int(np.clip(round(v), 0, h - 1))
        rgb[max(cv - 5, 0):cv + 6, cu] = color
        rgb[cv, max(cu - 5, 0):cu + 6] = color
    _write_png(rgb, path)


def scene_png(app_logic, ct_node, landmarks_node, views: list[tuple], path: Path, size=(900, 700)) -> None:
    """3D render: bone surface, landmarks, sources, beams and DRR planes. ``views`` holds
    (drr array, geometry dict) pairs."""
    renderer = vtk.vtkRenderer()
    renderer.SetBackground(0.08, 0.08, 0.12)
    surface = mrml.add_surface_model(app_logic.GetMRMLScene(), "bone", ct_node, 300.0)
    actor = vtk.vtkActor()
    actor.SetMapper(vtk.vtkPolyDataMapper())
    actor.GetMapper().SetInputData(surface.GetPolyData())
    actor.GetProperty().SetColor(0.95, 0.92, 0.84)
    renderer.AddActor(actor)

    def sphere(center, radius, color):
        source = vtk.vtkSphereSource()
        source.SetCenter(*center)
        source.SetRadius(radius)
        a = vtk.vtkActor()
        a.SetMapper(vtk.vtkPolyDataMapper())
        a.GetMapper().SetInputConnection(source.GetOutputPort())
        a.GetProperty().SetColor(*color)
        renderer.AddActor(a)

    if landmarks_node is not None:
        labels, points = mrml.markups_to_numpy(landmarks_node)
        for label, p in zip(labels, points):
            sphere(p, 3.0, (0.2, 0.6, 1.0) if label.startswith("eye_lens") else (1.0, 0.5, 0.0))
    for drr, geometry in views:
        sphere(geometry["source_ras"], 12.0, (1.0, 1.0, 0.3))
        beam = mrml.add_beam_model(app_logic.GetMRMLScene(), "beam", CArmGeometry.from_dict(geometry))
        a = vtk.vtkActor()
        a.SetMapper(vtk.vtkPolyDataMapper())
        a.GetMapper().SetInputData(beam.GetPolyData())
        a.GetProperty().SetColor(1.0, 1.0, 0.3)
        renderer.AddActor(a)
        g = _grey(drr)
        image = vtk.vtkImageData()
        image.SetDimensions(g.shape[1], g.shape[0], 1)
        image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(g.ravel()))
        plane = vtk.vtkImageActor()
        plane.GetMapper().SetInputData(image)
        matrix = vtk.vtkMatrix4x4()
        for r, row in enumerate(geometry["detector_ijk_to_ras"]):
            for c, value in enumerate(row):
                matrix.SetElement(r, c, value)
        plane.SetUserMatrix(matrix)
        renderer.AddActor(plane)
    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(*size)
    window.AddRenderer(renderer)
    camera = renderer.GetActiveCamera()
    camera.SetPosition(900, 1300, 700)  # from anterior-right-superior
    camera.SetFocalPoint(0, 0, 0)
    camera.SetViewUp(0, 0, 1)
    renderer.ResetCamera()
    camera.Zoom(1.3)
    window.Render()
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.Update()
    writer = vtk.vtkPNGWriter()
    writer.SetFileName(str(path))
    writer.SetInputConnection(grab.GetOutputPort())
    writer.Write()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("drr_dir", help="output folder of fluoro-landmarks drr")
    parser.add_argument("--ct", required=True)
    parser.add_argument("--landmarks")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    src, out = Path(args.drr_dir), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    app = HeadlessApplication()
    ct = mrml.load_volume(app.app_logic, args.ct, "CT")
    landmarks = mrml.load_markups(app.app_logic, args.landmarks) if args.landmarks else None
    views = []
    for drr_path in sorted(src.glob("drr*.nrrd")):
        suffix = drr_path.name[3:-5]
        drr = mrml.volume_to_numpy(mrml.load_volume(app.app_logic, drr_path))[0][0]
        geometry = json.loads((src / f"geometry{suffix}.json").read_text())
        csv_path = src / f"landmarks_2d{suffix}.csv"
        rows = list(csv.DictReader(csv_path.open())) if csv_path.exists() else []
        drr_png(drr, rows, out / f"drr{suffix}.png")
        views.append((drr, geometry))
    scene_png(app.app_logic, ct, landmarks, views, out / "scene_3d.png")
    app.close()
    print(f"wrote {len(views)} DRR previews and scene_3d.png to {out}")


if __name__ == "__main__":
    main()
