"""A real MRML scene with Slicer's application and module logics, without Qt (slicer-core).

Inside the Slicer application use ``slicer.app.applicationLogic()`` instead; everything in
:mod:`.mrml` takes a ``vtkMRMLApplicationLogic`` and works the same with either.
"""

from __future__ import annotations

import tempfile

import numpy as np
import slicer
from vtkmodules.vtkCommonCore import vtkCollection, vtkFileOutputWindow, vtkOutputWindow

_LOGICS = {
    "Colors": "vtkMRMLColorLogic",
    "Volumes": "vtkSlicerVolumesLogic",
    "Markups": "vtkSlicerMarkupsLogic",
    "Models": "vtkSlicerModelsLogic",
    "Segmentations": "vtkSlicerSegmentationsModuleLogic",
    "Sequences": "vtkSlicerSequencesLogic",
    "SubjectHierarchy": "vtkSlicerSubjectHierarchyModuleLogic",
    "Texts": "vtkSlicerTextsLogic",
    "Tables": "vtkSlicerTablesLogic",
}


class HeadlessApplication:
    """Scene + application logic + the module logics this extension uses + data I/O (.mrb).

    Keep the object alive as long as the scene is used (it owns the remote-I/O cache folder).
    """

    def __init__(self):
        self._cache = tempfile.TemporaryDirectory(prefix="slicer-cache-")
        # VTK's messages (e.g. one line per file zipped into a .mrb) go to a log file; failures
        # surface as Python exceptions from the bridge.
        log = vtkFileOutputWindow()
        log.SetFileName(f"{self._cache.name}/vtk.log")
        vtkOutputWindow.SetInstance(log)
        self.scene = slicer.vtkMRMLScene()
        self.app_logic = slicer.vtkSlicerApplicationLogic()
        self.app_logic.SetMRMLScene(self.scene)
        self.app_logic.SetSliceLogics(vtkCollection())
        self.app_logic.SetViewLogics(vtkCollection())
        self.app_logic.GetColorLogic().SetMRMLScene(self.scene)
        self.app_logic.GetColorLogic().AddDefaultColorNodes()
        self.logics = {}
        for name, class_name in _LOGICS.items():
            logic = getattr(slicer, class_name)()
            logic.SetMRMLScene(self.scene)
            logic.SetMRMLApplicationLogic(self.app_logic)
            self.app_logic.SetModuleLogic(name, logic)
            self.logics[name] = logic
        # Data I/O manager with a cache folder: needed to read .mrb bundles.
        self._remote_io = slicer.vtkMRMLRemoteIOLogic()
        self._remote_io.SetMRMLScene(self.scene)
        self._remote_io.SetMRMLApplicationLogic(self.app_logic)
        self._remote_io.GetCacheManager().SetRemoteCacheDirectory(self._cache.name)
        self._io_logic = slicer.vtkDataIOManagerLogic()
        self._io_logic.SetMRMLScene(self.scene)
        self._io_logic.SetMRMLApplicationLogic(self.app_logic)
        self._io_logic.SetAndObserveDataIOManager(self._remote_io.GetDataIOManager())
        self._remote_io.AddDataIOToScene()
        slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(self.scene, True)

    def close(self) -> None:
        self.scene.Clear(True)
        self._cache.cleanup()


def read_ct_and_landmarks(ct_path, landmarks_path) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """(HU array [k, j, i], 4x4 IJK->RAS mm, landmark labels, (L, 3) landmarks RAS mm), read with
    Slicer's readers in a scene of their own."""
    from . import mrml

    app = HeadlessApplication()
    try:
        hu, ijk_to_ras = mrml.volume_to_numpy(mrml.load_volume(app.app_logic, str(ct_path), "CT"))
        labels, points = mrml.markups_to_numpy(mrml.load_markups(app.app_logic, str(landmarks_path)))
    finally:
        app.close()
    return hu, ijk_to_ras, labels, points
