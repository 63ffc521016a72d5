"""PNG previews of a FemurSegment output folder's ``scene.mrb``, drawn by Slicer's displayable
managers offscreen: axial and coronal slices through the femoral heads with the segment
outlines, and the femur surfaces in 3D.

    python -m FemurSegmentLib.preview OUT_DIR [--out PNG_DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from FluoroLandmarksLib.headless import HeadlessApplication
from FluoroLandmarksLib.mrml import load_bundle
from FluoroLandmarksLib.views import SliceView, ThreeDView


def render(app: HeadlessApplication, out: Path) -> list[Path]:
    scene = app.scene
    volume = scene.GetNodesByClass("vtkMRMLScalarVolumeNode").GetItemAsObject(0)
    segmentation = scene.GetNodesByClass("vtkMRMLSegmentationNode").GetItemAsObject(0)
    display = volume.GetDisplayNode()
    display.AutoWindowLevelOff()
    display.SetWindowLevel(1400, 250)
    segmentation.CreateClosedSurfaceRepresentation()
    seg_display = segmentation.GetDisplayNode()
    seg_display.SetOpacity2DFill(0.35)
    seg_display.SetOpacity2DOutline(1.0)
    bounds = np.zeros(6)
    segmentation.GetRASBounds(bounds)
    centre = bounds.reshape(3, 2).mean(1)
    top = np.array([centre[0], centre[1], bounds[5] - 25.0])  # through the femoral heads
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, orientation, point in (("Red", "Axial", top), ("Green", "Coronal", top)):
        view = SliceView(app.app_logic, name, size=(800, 600))
        view.show_volume(volume)
        view.slice_node.SetOrientation(orientation)
        view.logic.FitSliceToBackground()
        view.slice_node.JumpSliceByCentering(*point)
        view.slice_node.SetFieldOfView(380, 285, 1)
        view.slice_node.JumpSliceByCentering(*point)
        paths.append(view.save_png(out / f"femur_{orientation.lower()}.png"))
    three_d = ThreeDView(app.app_logic, size=(800, 600))
    three_d.look_at(centre, centre + np.array([0.0, 600.0, 150.0]))  # from anterior, slightly above
    paths.append(three_d.save_png(out / "femur_3d.png"))
    return paths


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="femur-segment output folder (holds scene.mrb)")
    parser.add_argument("--out", type=Path, help="PNG folder (default: FOLDER/preview)")
    args = parser.parse_args(argv)
    app = HeadlessApplication()
    try:
        load_bundle(app.scene, args.folder / "scene.mrb")
        for path in render(app, args.out or args.folder / "preview"):
            print(path)
    finally:
        app.close()


if __name__ == "__main__":
    main()
