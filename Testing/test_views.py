"""Offscreen Slicer views (displayable managers) and the demo's previews."""

import numpy as np
import vtk
from vtk.util import numpy_support

from conftest import SAMPLE_CT, SAMPLE_LANDMARKS
from FluoroLandmarksLib import mrml, preview
from FluoroLandmarksLib.synthesis import DRRParameters, export_views, synthesize
from FluoroLandmarksLib.views import SliceView


def read_png(path):
    reader = vtk.vtkPNGReader()
    reader.SetFileName(str(path))
    reader.Update()
    image = reader.GetOutput()
    nx, ny, _ = image.GetDimensions()
    pixels = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    return pixels.reshape(ny, nx, -1)[::-1, :, :3]  # rows top to bottom


def test_slice_view_draws_drr_and_2d_landmarks_where_they_project(app, tmp_path):
    ct = mrml.load_volume(app.app_logic, SAMPLE_CT, "CT")
    landmarks = mrml.load_markups(app.app_logic, SAMPLE_LANDMARKS)
    view = synthesize(app.app_logic, ct, landmarks, DRRParameters(views=((90.0, 0.0),)))[0]
    slice_view = SliceView(app.app_logic, size=(400, 400))
    slice_view.show_volume(view.nodes["drr"])
    rgb = read_png(slice_view.save_png(tmp_path / "drr.png")).astype(int)
    assert rgb[150:250, 150:250].mean() > 60  # the DRR (skull) fills the centre
    ras_to_xy = vtk.vtkMatrix4x4()
    vtk.vtkMatrix4x4.Invert(slice_view.slice_node.GetXYToRAS(), ras_to_xy)
    index = view.labels.index("sella")
    sella = view.nodes["landmarks_2d"].GetNthControlPointPositionWorld(index)
    x, y = ras_to_xy.MultiplyPoint((*sella, 1.0))[:2]
    assert abs(ras_to_xy.MultiplyPoint((*sella, 1.0))[2]) < 0.5  # on the shown plane
    patch = rgb[400 - int(round(y)) - 4:400 - int(round(y)) + 5, int(round(x)) - 4:int(round(x)) + 5]
    orange = (patch[..., 0] > 200) & (patch[..., 1] > 60) & (patch[..., 1] < 180) & (patch[..., 2] < 80)
    assert orange.any(), "the sella glyph is not drawn at its projected position"


def test_preview_renders_every_view_from_the_bundle(app, tmp_path):
    ct = mrml.load_volume(app.app_logic, SAMPLE_CT, "CT")
    landmarks = mrml.load_markups(app.app_logic, SAMPLE_LANDMARKS)
    views = synthesize(app.app_logic, ct, landmarks, DRRParameters(views=((0.0, 0.0), (90.0, 0.0))))
    export_views(app.scene, views, tmp_path / "drr")
    preview.main([str(tmp_path / "drr"), "--out", str(tmp_path / "png")])
    names = sorted(p.name for p in (tmp_path / "png").glob("*.png"))
    assert names == ["drr_000.png", "drr_001.png", "scene_3d.png"]
    scene = read_png(tmp_path / "png" / "scene_3d.png").astype(int)
    background = scene[0, 0]
    assert (np.abs(scene - background).sum(-1) > 60).mean() > 0.05  # surfaces, beams, DRRs drawn
