"""Offscreen Slicer views: a 3D view and a slice view drawn by Slicer's own displayable managers
(the classes the desktop application's views use), for PNG snapshots of a real MRML scene.

The desktop application's Qt view widgets are not available without Qt; these two small
classes assemble the same pieces (view/slice logic, view node, displayable manager group) on
an offscreen VTK render window. Inside Slicer, use the application's views instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import slicer
from vtkmodules.vtkCommonMath import vtkMatrix4x4
from vtkmodules.vtkIOImage import vtkPNGWriter
from vtkmodules.vtkRenderingCore import (vtkActor2D, vtkImageMapper, vtkRenderer, vtkRenderWindow,
                                         vtkRenderWindowInteractor,
                                         vtkWindowToImageFilter)

import vtkmodules.vtkRenderingOpenGL2  # noqa: F401  (registers the OpenGL render window)
import vtkmodules.vtkRenderingVolumeOpenGL2  # noqa: F401
import vtkmodules.vtkRenderingFreeType  # noqa: F401  (text for markups labels)

_THREE_D_MANAGERS = ["vtkMRMLCameraDisplayableManager", "vtkMRMLViewDisplayableManager",
                     "vtkMRMLModelDisplayableManager", "vtkMRMLThreeDReformatDisplayableManager",
                     "vtkMRMLVolumeRenderingDisplayableManager", "vtkMRMLMarkupsDisplayableManager",
                     "vtkMRMLSegmentationsDisplayableManager3D"]
_SLICE_MANAGERS = ["vtkMRMLModelSliceDisplayableManager", "vtkMRMLMarkupsDisplayableManager",
                   "vtkMRMLSegmentationsDisplayableManager2D"]


class _OffscreenView:
    def __init__(self, size: tuple[int, int]):
        self.renderer = vtkRenderer()
        self.window = vtkRenderWindow()
        self.window.SetOffScreenRendering(1)
        self.window.SetSize(*size)
        self.window.AddRenderer(self.renderer)
        self.interactor = vtkRenderWindowInteractor()  # the markups widgets expect one
        self.interactor.SetRenderWindow(self.window)
        self.group = slicer.vtkMRMLDisplayableManagerGroup()

    def _initialize(self, factory, app_logic, managers: list[str], logic, logics) -> None:
        """Displayable managers from ``factory``; ``logic`` (view or slice logic) joins the
        application's collection ``logics`` and the scene."""
        factory.SetMRMLApplicationLogic(app_logic)
        for name in managers:
            if not factory.IsDisplayableManagerRegistered(name):
                factory.RegisterDisplayableManager(name)
        self.group.Initialize(factory, self.renderer)
        self.logic = logic
        logic.SetMRMLApplicationLogic(app_logic)
        logics.AddItem(logic)
        logic.SetMRMLScene(app_logic.GetMRMLScene())

    def save_png(self, path: str | Path) -> Path:
        """Render and write the view to ``path`` (PNG)."""
        self.group.RequestRender()
        self.window.Render()
        grab = vtkWindowToImageFilter()
        grab.SetInput(self.window)
        grab.Update()
        writer = vtkPNGWriter()
        writer.SetFileName(str(path))
        writer.SetInputConnection(grab.GetOutputPort())
        writer.Write()
        return Path(path)


class ThreeDView(_OffscreenView):
    """Slicer's 3D view: models, markups, volume rendering, slices in 3D, segmentations."""

    def __init__(self, app_logic, name: str = "1", size: tuple[int, int] = (900, 700)):
        super().__init__(size)
        self._initialize(slicer.vtkMRMLThreeDViewDisplayableManagerFactory.GetInstance(), app_logic,
                         _THREE_D_MANAGERS, slicer.vtkMRMLViewLogic(), app_logic.GetViewLogics())
        self.view_node = self.logic.AddViewNode(name)
        self.view_node.SetBoxVisible(False)
        self.view_node.SetAxisLabelsVisible(False)
        self.view_node.SetBackgroundColor(0.08, 0.08, 0.12)
        self.view_node.SetBackgroundColor2(0.08, 0.08, 0.12)
        self.group.SetMRMLDisplayableNode(self.view_node)

    def look_at(self, focal_ras, position_ras, view_up_ras=(0.0, 0.0, 1.0), view_angle_deg: float = 30.0):
        """Place the camera (RAS mm)."""
        camera = self.group.GetDisplayableManagerByClassName("vtkMRMLCameraDisplayableManager").GetCameraNode()
        camera.SetFocalPoint(*focal_ras)
        camera.SetPosition(*position_ras)
        camera.SetViewUp(*view_up_ras)
        camera.SetViewAngle(view_angle_deg)
        camera.ResetClippingRange()


class SliceView(_OffscreenView):
    """Slicer's slice view showing ``background_volume`` in its own plane, with the markups,
    models and segmentations that the displayable managers draw on that plane."""

    def __init__(self, app_logic, name: str = "Red", size: tuple[int, int] = (600, 600)):
        super().__init__(size)
        self.renderer.GetActiveCamera().ParallelProjectionOn()
        # The blended layers of the slice logic (CTK's light-box manager shows them in the app).
        self.image = vtkActor2D()
        self.image.SetMapper(vtkImageMapper())
        self.image.GetMapper().SetColorWindow(255)
        self.image.GetMapper().SetColorLevel(127.5)
        self.image.GetProperty().SetDisplayLocationToBackground()
        self.renderer.AddViewProp(self.image)
        self._initialize(slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance(), app_logic,
                         _SLICE_MANAGERS, slicer.vtkMRMLSliceLogic(), app_logic.GetSliceLogics())
        self.slice_node = self.logic.AddSliceNode(name)
        self.group.SetMRMLDisplayableNode(self.slice_node)
        self.logic.ResizeSliceNode(*size)

    def show_volume(self, volume_node) -> None:
        """Background volume, fitted to the view. A single-slice (2D image) volume is shown in its
        own plane as an image viewer would: column axis to the right, row axis downwards."""
        self.logic.GetSliceCompositeNode().SetBackgroundVolumeID(volume_node.GetID())
        if volume_node.GetImageData().GetDimensions()[2] == 1:
            ijk_to_ras = vtkMatrix4x4()
            volume_node.GetIJKToRASMatrix(ijk_to_ras)
            column = np.array([ijk_to_ras.GetElement(r, 0) for r in range(3)])
            row = np.array([ijk_to_ras.GetElement(r, 1) for r in range(3)])
            origin = np.array([ijk_to_ras.GetElement(r, 3) for r in range(3)])
            normal = np.cross(column, -row)
            self.slice_node.SetSliceToRASByNTP(*normal, *column, *origin, 0)
        else:
            self.logic.RotateSliceToLowestVolumeAxes(False)
        self.logic.FitSliceToBackground()
        self.logic.SnapSliceOffsetToIJK()
        self.image.GetMapper().SetInputConnection(self.logic.GetImageDataConnection())
