"""PNG previews of a ``fluoro-landmarks drr`` or ``detect`` output folder, drawn offscreen by
Slicer's own displayable managers from the folder's ``scene.mrb``.

* ``drr_NNN.png``: a slice view in the plane of each DRR, with its 2D landmarks (in field:
  orange, outside: grey).
* ``scene_3d.png``: the 3D view: CT bone surface, 3D landmarks, X-ray sources, beams and every
  DRR on its detector plane, in patient RAS.

    python -m FluoroLandmarksLib.preview DRR_DIR --out DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from vtkmodules.vtkCommonCore import vtkCollection

from . import mrml
from .headless import HeadlessApplication
from .views import SliceView, ThreeDView

BONE_HU = 300.0


def _nodes(scene, class_name: str) -> list:
    return [scene.GetNthNodeByClass(n, class_name) for n in range(scene.GetNumberOfNodesByClass(class_name))]


def render_previews(app: HeadlessApplication, out: Path, bone_hu: float = BONE_HU) -> list[Path]:
    """Render the scene loaded in ``app`` (a ``drr`` bundle) to PNGs in ``out``."""
    scene = app.scene
    proxies = set()
    for browser in _nodes(scene, "vtkMRMLSequenceBrowserNode"):  # the browsed copies of the views
        sequences = vtkCollection()
        browser.GetSynchronizedSequenceNodes(sequences, True)
        proxies |= {browser.GetProxyNode(sequences.GetItemAsObject(n)).GetID() for n in range(sequences.GetNumberOfItems())}
    volumes = [v for v in _nodes(scene, "vtkMRMLScalarVolumeNode") if v.GetID() not in proxies]
    drrs = [v for v in volumes if v.GetImageData().GetDimensions()[2] == 1]
    cts = [v for v in volumes if v not in drrs]
    markups = _nodes(scene, "vtkMRMLMarkupsFiducialNode")
    for node in markups + _nodes(scene, "vtkMRMLModelNode"):
        if node.GetID() in proxies:
            node.GetDisplayNode().SetVisibility(False)
    out.mkdir(parents=True, exist_ok=True)
    written, slice_views = [], []
    for n, drr in enumerate(drrs):
        view = SliceView(app.app_logic, name=f"DRR{n}")
        view.show_volume(drr)
        view.slice_node.SetSliceVisible(True)
        written.append(view.save_png(out / f"drr_{n:03d}.png"))
        slice_views.append(view)  # keep: their slice models show the DRRs in 3D
    for node in markups:  # in 3D, only single points (the sources) keep their labels
        if node.GetNumberOfControlPoints() > 1:
            node.GetDisplayNode().SetPointLabelsVisibility(False)
    clouds = sorted((m for m in markups if m.GetNumberOfControlPoints() > 1), key=lambda m: "3D" not in m.GetName())
    centre = mrml.markups_to_numpy(clouds[0])[1].mean(0) if clouds else np.zeros(3)  # 3D landmarks first
    if cts:
        mrml.add_surface_model(scene, "bone", cts[0], bone_hu).GetDisplayNode().SetColor(0.95, 0.92, 0.84)
        bounds = [0.0] * 6
        cts[0].GetRASBounds(bounds)
        centre = np.array(bounds).reshape(3, 2).mean(1)
    three_d = ThreeDView(app.app_logic)
    # From anterior-right-superior: far enough for the sources of a DRR scene; close to the head
    # (estimated skull, landmarks) in a detection scene.
    direction = np.array([900.0, 1300.0, 700.0]) / np.linalg.norm([900.0, 1300.0, 700.0])
    three_d.look_at(centre, centre + direction * (1730.0 if cts else 700.0), view_angle_deg=35.0)
    written.append(three_d.save_png(out / "scene_3d.png"))
    return written


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("drr_dir", type=Path, help="output folder of fluoro-landmarks drr (with scene.mrb)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    app = HeadlessApplication()
    try:
        mrml.load_bundle(app.scene, args.drr_dir / "scene.mrb")
        written = render_previews(app, args.out)
    finally:
        app.close()
    print(f"wrote {', '.join(p.name for p in written)} to {args.out}")


if __name__ == "__main__":
    main()
