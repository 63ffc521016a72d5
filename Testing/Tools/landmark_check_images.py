"""Render check images of a landmark file on its CT: for each landmark, the axial, coronal and
sagittal slices through it (bone window, 50 mm field) with a crosshair, tiled into one PNG.

    python Testing/Tools/landmark_check_images.py CT.nrrd LANDMARKS.mrk.json --out checks.png
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import vtk
from vtk.util import numpy_support

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "FluoroLandmarks"))
from FluoroLandmarksLib.headless import read_ct_and_landmarks  # noqa: E402

HALF_MM, PX_PER_MM = 25.0, 3


def resample_plane(array, ras_to_ijk, centre, u, v):
    """Nearest-neighbour slice (rows along -v, columns along u) through ``centre`` (RAS mm)."""
    n = int(2 * HALF_MM * PX_PER_MM)
    s = (np.arange(n) - n / 2) / PX_PER_MM
    ras = centre + s[None, :, None] * u + (-s)[:, None, None] * v
    ijk = np.rint(ras @ ras_to_ijk[:3, :3].T + ras_to_ijk[:3, 3]).astype(int)
    inside = np.all((ijk >= 0) & (ijk < np.array(array.shape[::-1])), axis=-1)
    ijk = np.clip(ijk, 0, np.array(array.shape[::-1]) - 1)
    return np.where(inside, array[ijk[..., 2], ijk[..., 1], ijk[..., 0]], -1024)


def tile(array, ras_to_ijk, point):
    x, y, z = np.eye(3)
    views = [resample_plane(array, ras_to_ijk, point, -x, y),  # axial: patient right on the left, anterior up
             resample_plane(array, ras_to_ijk, point, -x, z),  # coronal
             resample_plane(array, ras_to_ijk, point, y, z)]   # sagittal: anterior on the right
    rgb = []
    for view in views:
        g = np.clip((view + 300) / 1500 * 255, 0, 255).astype(np.uint8)
        img = np.stack([g] * 3, axis=-1)
        c = img.shape[0] // 2
        img[c, np.r_[0:c - 6, c + 7:img.shape[1]]] = [255, 60, 0]
        img[np.r_[0:c - 6, c + 7:img.shape[0]], c] = [255, 60, 0]
        img[:, -1] = img[-1, :] = [255, 255, 0]
        rgb.append(img)
    return np.concatenate(rgb, axis=1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ct")
    parser.add_argument("landmarks")
    parser.add_argument("--out", required=True, help="PNG montage (one row per landmark, in file order)")
    args = parser.parse_args(argv)
    array, ijk_to_ras, labels, points = read_ct_and_landmarks(args.ct, args.landmarks)
    rows = [tile(array, np.linalg.inv(ijk_to_ras), p) for p in points]
    cols = 3
    while len(rows) % cols:
        rows.append(np.zeros_like(rows[0]))
    grid = np.concatenate([np.concatenate(rows[r:r + cols], axis=1) for r in range(0, len(rows), cols)], axis=0)
    image = vtk.vtkImageData()
    image.SetDimensions(grid.shape[1], grid.shape[0], 1)
    image.GetPointData().SetScalars(numpy_support.numpy_to_vtk(grid[::-1].reshape(-1, 3)))
    writer = vtk.vtkPNGWriter()
    writer.SetFileName(args.out)
    writer.SetInputData(image)
    writer.Write()
    for n, label in enumerate(labels):
        print(f"row {n // cols + 1}, column {n % cols + 1}: {label}")


if __name__ == "__main__":
    main()
