"""MRML bridge for FemurSegment (slicer-core only): volume node -> SimpleITK image, the femur
segmentation node (named segments with terminology, under the input's study), the measurements
table, and Slicer's own labelmap-based segment volume (as the Segment Statistics module computes it).
Volume nodes are read, never modified.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import slicer
import vtk
from vtk.util import numpy_support

from . import anatomy
from .volumes import bounding_box


def image_from_node(node) -> sitk.Image:
    """A copy of a scalar volume node's voxels as a SimpleITK image (LPS geometry)."""
    from FluoroLandmarksLib.mrml import volume_to_numpy

    if node is not None and node.GetParentTransformNode() is not None:
        raise ValueError("harden or remove the input volume's parent transform first")
    array, ijk_to_ras = volume_to_numpy(node)
    ijk_to_lps = np.diag([-1.0, -1.0, 1.0]) @ ijk_to_ras[:3]
    spacing = np.linalg.norm(ijk_to_lps[:, :3], axis=0)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((ijk_to_lps[:, :3] / spacing).ravel().tolist())
    image.SetOrigin(ijk_to_lps[:, 3].tolist())
    return image


def _labelmap_node(scene, mask: np.ndarray, volume_node):
    """A temporary labelmap node (1 inside ``mask`` [k, j, i]) on ``volume_node``'s grid, holding
    only the mask's bounding box (a VTK extent not starting at 0, as Slicer's labelmaps allow)."""
    box = bounding_box(mask)
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "femur labels (temporary)")
    data = vtk.vtkImageData()
    data.SetExtent(box[2].start, box[2].stop - 1, box[1].start, box[1].stop - 1, box[0].start, box[0].stop - 1)
    data.GetPointData().SetScalars(numpy_support.numpy_to_vtk(mask[box].astype(np.uint8).ravel(), deep=True,
                                                              array_type=vtk.VTK_UNSIGNED_CHAR))
    node.SetAndObserveImageData(data)
    m = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(m)
    node.SetIJKToRASMatrix(m)
    return node


def add_segmentation(scene, volume_node, labels: np.ndarray, name: str):
    """Segmentation node from labels [k, j, i] on ``volume_node``'s grid (1 left, 2 right femur),
    with Slicer terminology, colours, and placed under the input volume's study."""
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    segmentation.CreateDefaultDisplayNodes()
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    for side in anatomy.SIDES:
        value = anatomy.LABEL_VALUES[side]
        if not (labels == value).any():
            continue
        labelmap = _labelmap_node(scene, labels == value, volume_node)
        before = segmentation.GetSegmentation().GetNumberOfSegments()
        if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation):
            raise RuntimeError("Slicer could not import the femur labelmap")
        scene.RemoveNode(labelmap)
        segment = segmentation.GetSegmentation().GetNthSegment(before)
        segment.SetName(anatomy.SEGMENT_NAMES[side])
        segment.SetColor(*anatomy.COLORS[side])
        segment.SetTerminology(anatomy.TERMINOLOGY[side])
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    volume_item = hierarchy.GetItemByDataNode(volume_node) if hierarchy is not None else 0
    segmentation_item = hierarchy.GetItemByDataNode(segmentation) if volume_item else 0
    if volume_item and segmentation_item:  # under the input's study (or wherever the input is)
        hierarchy.SetItemParent(segmentation_item, hierarchy.GetItemParent(volume_item))
    return segmentation


def slicer_volumes_cm3(segmentation) -> dict[str, float]:
    """Volume (cm³) of each segment from its binary labelmap: voxel count x voxel volume, the way
    Slicer's Segment Statistics (labelmap plugin) computes ``volume_cm3``."""
    out = {}
    for index in range(segmentation.GetSegmentation().GetNumberOfSegments()):
        segment_id = segmentation.GetSegmentation().GetNthSegmentID(index)
        labelmap = slicer.vtkOrientedImageData()
        segmentation.GetBinaryLabelmapRepresentation(segment_id, labelmap)
        accumulate = vtk.vtkImageAccumulate()
        accumulate.SetInputData(labelmap)
        accumulate.IgnoreZeroOn()
        accumulate.Update()
        out[segmentation.GetSegmentation().GetSegment(segment_id).GetName()] = (
            accumulate.GetVoxelCount() * float(np.prod(labelmap.GetSpacing())) / 1000.0)
    return out


TABLE_COLUMNS = (("segment", "Segment", str), ("volume_cm3", "Volume [cm3]", float),
                 ("voxel_count", "Voxel count", int), ("hu_mean", "Mean [HU]", float), ("hu_sd", "SD [HU]", float),
                 ("vbmd_mg_cm3", "vBMD [mg/cm3 K2HPO4]", float), ("bmc_mg", "BMC [mg]", float))


def add_table(scene, name: str, measurements: dict):
    """Table node with one row per side (columns of ``TABLE_COLUMNS`` that the rows carry)."""
    table = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    rows = list(measurements.values())
    columns = [c for c in TABLE_COLUMNS if rows and c[0] in rows[0]]
    for key, title, kind in columns:
        array = vtk.vtkStringArray() if kind is str else vtk.vtkDoubleArray()
        array.SetName(title)
        for row in rows:
            array.InsertNextValue(row[key] if kind is str else float(row[key]))
        table.AddColumn(array)
    return table
