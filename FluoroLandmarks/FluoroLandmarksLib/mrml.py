"""MRML bridge: MRML nodes <-> numpy, using only what slicer-core provides.

Works on any ``vtkMRMLApplicationLogic`` with the Volumes/Markups/Models/Sequences/Texts module
logics registered: Slicer's (``slicer.app.applicationLogic()``) or :class:`.headless.HeadlessApplication`.
All coordinates are RAS mm (Slicer's world frame); arrays are indexed [k, j, i].
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from .geometry import CArmGeometry


def _matrix_to_numpy(m: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def _numpy_to_matrix(a: np.ndarray) -> vtk.vtkMatrix4x4:
    m = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, float(a[r, c]))
    return m


def _readable(path: str | os.PathLike, what: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} file not found: {p}")
    if not os.access(p, os.R_OK):
        raise PermissionError(f"{what} file is not readable: {p}")
    return str(p)


# -- reading ----------------------------------------------------------------------------------
def load_volume(app_logic, path: str | os.PathLike, name: str = "") -> "slicer.vtkMRMLScalarVolumeNode":
    """Load a scalar volume file (NRRD, NIfTI, MHA, ...) with Slicer's Volumes logic."""
    path = _readable(path, "Volume")
    single_file = 4  # loading-option bit: never read numbered neighbours (drr_000, drr_001...) as a series
    node = app_logic.GetModuleLogic("Volumes").AddArchetypeVolume(path, name or Path(path).name.split(".")[0],
                                                                   single_file)
    if node is None or node.GetImageData() is None:
        raise ValueError(f"Could not read a volume from {path}")
    return node


def load_markups(app_logic, path: str | os.PathLike) -> "slicer.vtkMRMLMarkupsNode":
    """Load a markups file (.mrk.json / .fcsv); raises if it is unreadable or has no points."""
    path = _readable(path, "Landmarks")
    scene = app_logic.GetMRMLScene()
    node_id = app_logic.GetModuleLogic("Markups").LoadMarkups(path, Path(path).name.split(".")[0])
    node = scene.GetNodeByID(node_id) if node_id else None
    if node is None:
        raise ValueError(f"Could not read markups from {path}")
    if node.GetNumberOfControlPoints() == 0:
        scene.RemoveNode(node)
        raise ValueError(f"Landmarks file has no control points: {path}")
    return node


def volume_to_numpy(node) -> tuple[np.ndarray, np.ndarray]:
    """(copy of the voxel array [k, j, i], 4x4 IJK->RAS in mm). Parent transforms are not applied."""
    image = node.GetImageData() if node is not None else None
    if image is None or image.GetPointData().GetScalars() is None:
        raise ValueError("The volume node has no image data")
    if image.GetNumberOfScalarComponents() != 1:
        raise ValueError("A scalar (single-component) volume is required")
    dims = image.GetDimensions()
    array = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[::-1]).copy()
    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return array, _matrix_to_numpy(m)


def markups_to_numpy(node) -> tuple[list[str], np.ndarray]:
    """(labels, (N, 3) world RAS mm positions) of a markups node's control points."""
    n = node.GetNumberOfControlPoints()
    points = np.array([node.GetNthControlPointPositionWorld(i) for i in range(n)], dtype=float).reshape(n, 3)
    return [node.GetNthControlPointLabel(i) for i in range(n)], points


# -- creating ---------------------------------------------------------------------------------
def add_image_volume(scene, name: str, image: np.ndarray, ijk_to_ras: np.ndarray):
    """Scalar volume from a (nv, nu) or (k, j, i) float array with the given 4x4 IJK->RAS."""
    a = np.ascontiguousarray(image, dtype=np.float32)
    a3 = a[None] if a.ndim == 2 else a
    data = vtk.vtkImageData()
    data.SetDimensions(a3.shape[2], a3.shape[1], a3.shape[0])
    data.GetPointData().SetScalars(numpy_support.numpy_to_vtk(a3.ravel(), deep=True, array_type=vtk.VTK_FLOAT))
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    node.SetAndObserveImageData(data)
    node.SetIJKToRASMatrix(_numpy_to_matrix(ijk_to_ras))
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID("vtkMRMLColorTableNodeGrey")
    display.AutoWindowLevelOn()
    return node


def add_points(scene, name: str, labels: list[str], points_ras: np.ndarray, in_field: np.ndarray | None = None,
               color=(1.0, 0.5, 0.0), glyph_scale: float = 2.0):
    """Locked fiducial list. Points with ``in_field`` False are unselected (drawn grey)."""
    node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
    node.CreateDefaultDisplayNodes()
    wasModifying = node.StartModify()
    for i, (label, p) in enumerate(zip(labels, np.asarray(points_ras, dtype=float))):
        node.AddControlPoint(vtk.vtkVector3d(*p), label)
        if in_field is not None:
            node.SetNthControlPointSelected(i, bool(in_field[i]))
    node.SetLocked(True)
    node.EndModify(wasModifying)
    display = node.GetDisplayNode()
    display.SetSelectedColor(*color)
    display.SetColor(0.6, 0.6, 0.6)
    display.SetGlyphScale(glyph_scale)
    display.SetTextScale(glyph_scale)
    return node


def add_beam_model(scene, name: str, geometry: CArmGeometry):
    """Model of the X-ray beam: lines from the source to the detector corners, and the detector
    outline (RAS mm)."""
    nu, nv = geometry.detector_size_px
    corners = geometry.detector_point_ras(np.array([[-0.5, -0.5], [nu - 0.5, -0.5], [nu - 0.5, nv - 0.5],
                                                    [-0.5, nv - 0.5]]))
    pts = vtk.vtkPoints()
    pts.InsertNextPoint(*geometry.source_ras)
    for c in corners:
        pts.InsertNextPoint(*c)
    lines = vtk.vtkCellArray()
    for i in range(4):
        lines.InsertNextCell(2, [0, i + 1])
        lines.InsertNextCell(2, [i + 1, (i + 1) % 4 + 1])
    poly = vtk.vtkPolyData()
    poly.SetPoints(pts)
    poly.SetLines(lines)
    node = add_model(scene, name, poly, (1.0, 1.0, 0.3))
    node.GetDisplayNode().SetLineWidth(2)
    return node


def add_model(scene, name: str, polydata, color=(0.95, 0.92, 0.84)):
    """Model node of a vtkPolyData in RAS mm."""
    node = scene.AddNewNodeByClass("vtkMRMLModelNode", name)
    node.SetAndObservePolyData(polydata)
    node.CreateDefaultDisplayNodes()
    node.GetDisplayNode().SetColor(*color)
    return node


def polydata_points(polydata) -> np.ndarray:
    return numpy_support.vtk_to_numpy(polydata.GetPoints().GetData()).astype(float)


def with_points(polydata, points_ras: np.ndarray):
    """Copy of ``polydata`` with its points replaced (same topology)."""
    out = vtk.vtkPolyData()
    out.DeepCopy(polydata)
    out.GetPoints().SetData(numpy_support.numpy_to_vtk(np.ascontiguousarray(points_ras, dtype=np.float32), deep=True))
    normals = vtk.vtkPolyDataNormals()
    normals.SetInputData(out)
    normals.Update()
    return normals.GetOutput()


def add_surface_model(scene, name: str, volume_node, threshold: float, decimate: float = 0.7):
    """Iso-surface model (RAS) of a volume at ``threshold`` (e.g. bone at 300 HU)."""
    _, ijk_to_ras = volume_to_numpy(volume_node)
    surface = vtk.vtkFlyingEdges3D()
    image = vtk.vtkImageData()
    image.ShallowCopy(volume_node.GetImageData())
    image.SetOrigin(0, 0, 0)
    image.SetSpacing(1, 1, 1)
    surface.SetInputData(image)
    surface.SetValue(0, threshold)
    smaller = vtk.vtkQuadricDecimation()
    smaller.SetInputConnection(surface.GetOutputPort())
    smaller.SetTargetReduction(decimate)
    to_ras = vtk.vtkTransformPolyDataFilter()
    transform = vtk.vtkTransform()
    transform.SetMatrix(_numpy_to_matrix(ijk_to_ras))
    to_ras.SetTransform(transform)
    to_ras.SetInputConnection(smaller.GetOutputPort())
    normals = vtk.vtkPolyDataNormals()
    normals.SetInputConnection(to_ras.GetOutputPort())
    normals.Update()
    return add_model(scene, name, normals.GetOutput())


def add_text(scene, name: str, text: str):
    node = scene.AddNewNodeByClass("vtkMRMLTextNode", name)
    node.SetText(text)
    return node


def geometry_from_text_node(node) -> CArmGeometry:
    return CArmGeometry.from_dict(json.loads(node.GetText()))


def add_view_sequences(app_logic, name: str, views: dict[str, list], index_name: str = "view"):
    """Sequences (one per entry of ``views``: role -> one node per view, or per frame of a run)
    synchronised by a browser node; the view index is the sequence value (``index_name``).
    Returns the browser node."""
    scene = app_logic.GetMRMLScene()
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", name)
    for role, nodes in views.items():
        sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", f"{name} {role}")
        sequence.SetIndexName(index_name)
        sequence.SetIndexUnit("")
        for index, node in enumerate(nodes):
            sequence.SetDataNodeAtValue(node, str(index))
        browser.AddSynchronizedSequenceNode(sequence)
    app_logic.GetModuleLogic("Sequences").UpdateProxyNodesFromSequences(browser)
    return browser


# -- writing (atomic: temporary file in the target folder, then rename) ------------------------
def _atomic_target(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes the file private (0600); outputs get the usual mode
    return Path(tmp)


def save_node(node, path: str | os.PathLike) -> None:
    """Write a storable node with its default storage node (format from the file extension)."""
    path = Path(path)
    tmp = _atomic_target(path)
    storage = node.CreateDefaultStorageNode()
    storage.SetFileName(str(tmp))
    try:
        if not storage.WriteData(node):
            raise OSError(f"Slicer could not write {node.GetName()} to {path}")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_bundle(scene, path: str | os.PathLike) -> None:
    """Write the whole scene as a Medical Reality Bundle (.mrb)."""
    path = Path(path)
    tmp = _atomic_target(path)
    try:
        if not scene.WriteToMRB(str(tmp)):
            raise OSError(f"Slicer could not write the scene bundle {path}")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_bundle(scene, path: str | os.PathLike) -> None:
    """Read a .mrb into ``scene`` (which needs a data I/O manager, as Slicer's or the headless one)."""
    if not scene.ReadFromMRB(str(Path(_readable(path, "Scene bundle")).resolve())):  # needs an absolute path
        raise ValueError(f"Could not read the scene bundle {path}")
