"""FluoroLandmarks: DRR synthesis with projected landmarks for a C-arm geometry.

Thin Slicer module (Module, Widget, Logic, Test). The work is in the Qt-free FluoroLandmarksLib.
"""

import json
import tempfile
from pathlib import Path
from typing import Annotated

import slicer
import vtk
from slicer import vtkMRMLMarkupsFiducialNode, vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

from FluoroLandmarksLib import mrml, scenarios
from FluoroLandmarksLib.detection import detect_frame, detect_frames, detect_run, run_eye_lenses
from FluoroLandmarksLib.geometry import CArmGeometry, Collimation
from FluoroLandmarksLib.inference import PADDINGS, REAL_IMAGE_BLUR_PX, SHIPPED_MODEL, FramePreparation, LandmarkModel
from FluoroLandmarksLib.synthesis import GEOMETRY_ATTRIBUTE, OUTPUT_KINDS, DRRParameters, parse_views, synthesize

SAMPLE_DIR = Path(__file__).parent / "Resources" / "SampleData"


class FluoroLandmarks(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Fluoro Landmarks")
        self.parent.categories = [_("Registration")]
        self.parent.dependencies = []
        self.parent.contributors = ["FluoroLandmarks developers"]
        self.parent.helpText = _(
            "Synthesize digitally reconstructed radiographs (DRRs) of a CT for a C-arm geometry "
            "(LAO+/CRAN+, source posterior at 0/0) and project the CT's 3D landmarks as 2D markups "
            "on the detector plane.")
        self.parent.acknowledgementText = _(
            "Methods: Fum et al. 2024 (Med Phys 51:7191); Noothout et al. 2020 (IEEE TMI). Sample head CT: "
            "InVesalius (CTI Renato Archer), GPL-2.")


@parameterNodeWrapper
class FluoroLandmarksParameterNode:
    """GUI state. Angles in degrees, distances and spacing in mm, detector size in pixels."""

    inputVolume: vtkMRMLScalarVolumeNode
    inputLandmarks: vtkMRMLMarkupsFiducialNode
    primaryAngle: Annotated[float, WithinRange(-180, 180)] = 0.0
    secondaryAngle: Annotated[float, WithinRange(-90, 90)] = 0.0
    sourceDetectorDistance: Annotated[float, WithinRange(100, 3000)] = 1000.0
    sourceIsocenterDistance: Annotated[float, WithinRange(50, 2900)] = 750.0
    detectorColumns: Annotated[int, WithinRange(8, 4096)] = 256
    detectorRows: Annotated[int, WithinRange(8, 4096)] = 256
    pixelSpacing: Annotated[float, WithinRange(0.01, 10)] = 1.2
    outputKind: Annotated[str, Choice(list(OUTPUT_KINDS))] = "line-integral"
    additionalViews: str = ""  # more primary/secondary pairs, e.g. "90/0, 30/15"
    collimationShape: Annotated[str, Choice(["none", "rect", "circle"])] = "none"
    collimationFraction: Annotated[float, WithinRange(0.05, 1.0)] = 0.8
    inputFrame: vtkMRMLScalarVolumeNode  # 2D X-ray / fluoroscopy frame for landmark detection
    headDepth: Annotated[float, WithinRange(0, 3000)] = 0.0  # mm source to head centre; 0 = unknown (isocenter)
    framePadding: Annotated[str, Choice(list(PADDINGS))] = "edge"  # of a non-square frame (inference.FramePreparation)
    inputBlur: Annotated[float, WithinRange(0, 16)] = REAL_IMAGE_BLUR_PX  # network px; 0 for DRRs
    secondFrame: vtkMRMLScalarVolumeNode  # optional: the same head's frame from the biplane's other plane
    mirrorAveraging: bool = True  # the network also reads the mirrored frame (twice its time; LandmarkModel.mirror)


class FluoroLandmarksWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/FluoroLandmarks.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = FluoroLandmarksLogic()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.detectButton.connect("clicked(bool)", self.onDetectButton)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None) -> None:
        ready = bool(self._parameterNode and self._parameterNode.inputVolume)
        self.ui.applyButton.enabled = ready
        self.ui.applyButton.toolTip = _("Render the DRR") if ready else _("Select a CT volume")
        frame = bool(self._parameterNode and self._parameterNode.inputFrame)
        self.ui.detectButton.enabled = frame
        self.ui.detectButton.toolTip = _("Detect landmarks") if frame else _("Select a 2D frame")

    def onApplyButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to synthesize the DRR."), waitCursor=True):
            views = self.logic.process(self._parameterNode)
            self.showView(views[0].nodes["drr"])
            self.ui.statusLabel.text = "\n".join(
                _("{primary:+.0f}/{secondary:+.0f}: {inside}/{total} landmarks in the field").format(
                    primary=v.geometry.primary_deg, secondary=v.geometry.secondary_deg,
                    inside=int(v.in_field.sum()), total=len(v.labels)) for v in views)

    def onDetectButton(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Landmark detection failed."), waitCursor=True):
            results = self.logic.detect(self._parameterNode)
            self.showView(results[0].nodes["frame"])
            if "browser" in results[0].nodes:  # a run: how many of its frames had each lens in the beam
                lines = [_("{name}: {count} frames").format(name=self._parameterNode.inputFrame.GetName(),
                                                           count=len(results))]
                lines += [_("{name}: in beam in {k} of {n} frames").format(name=name, k=r["count_in_beam"],
                                                                         n=len(results))
                          for name, r in run_eye_lenses(results).items()]
                self.ui.detectStatusLabel.text = "\n".join(lines)
                return
            lines = []
            for result in results:
                lenses = ", ".join(f"{name}: {_('in beam') if r['in_field'] else _('not in beam')}"
                                   for name, r in result.eye_lenses.items())
                lines.append(_("{name}: {inside}/{total} landmarks in the image; {lenses}").format(
                    name=result.nodes["frame"].GetName(), inside=int(result.detection.in_image.sum()),
                    total=len(result.detection.labels), lenses=lenses))
            self.ui.detectStatusLabel.text = "\n".join(lines)

    @staticmethod
    def showView(drrNode) -> None:
        """Red slice view in the DRR's plane (also shown in 3D), 3D view reset to the scene."""
        sliceWidget = slicer.app.layoutManager().sliceWidget("Red")
        sliceWidget.sliceLogic().GetSliceCompositeNode().SetBackgroundVolumeID(drrNode.GetID())
        sliceNode = sliceWidget.mrmlSliceNode()
        matrix = vtk.vtkMatrix4x4()
        drrNode.GetIJKToRASDirectionMatrix(matrix)
        column = [matrix.GetElement(r, 0) for r in range(3)]
        up = [-matrix.GetElement(r, 1) for r in range(3)]  # image rows run downwards
        normal = [0.0, 0.0, 0.0]
        vtk.vtkMath.Cross(column, up, normal)
        sliceNode.SetSliceToRASByNTP(*normal, *column, *drrNode.GetOrigin(), 0)
        sliceWidget.sliceLogic().FitSliceToBackground()
        sliceNode.SetSliceVisible(True)
        slicer.app.layoutManager().threeDWidget(0).threeDView().resetFocalPoint()


class FluoroLandmarksLogic(ScriptedLoadableModuleLogic):
    """Reads the parameter node and calls FluoroLandmarksLib.synthesis on Slicer's scene."""

    def getParameterNode(self):
        return FluoroLandmarksParameterNode(super().getParameterNode())

    def process(self, p: FluoroLandmarksParameterNode):
        detector = (p.detectorColumns, p.detectorRows)
        params = DRRParameters(
            views=((p.primaryAngle, p.secondaryAngle),) + parse_views(p.additionalViews),
            sid_mm=p.sourceDetectorDistance, sod_mm=p.sourceIsocenterDistance, detector_size_px=detector,
            pixel_spacing_mm=(p.pixelSpacing, p.pixelSpacing), output=p.outputKind,
            collimation=Collimation.centred(p.collimationShape, p.collimationFraction, detector))
        return synthesize(slicer.app.applicationLogic(), p.inputVolume, p.inputLandmarks, params)


    def geometry(self, p: FluoroLandmarksParameterNode, frameNode):
        """The frame's C-arm geometry: its own (a DRR made here carries it) or the GUI's values."""
        text = frameNode.GetAttribute(GEOMETRY_ATTRIBUTE)
        if text:
            return CArmGeometry.from_dict(json.loads(text))
        columns, rows = frameNode.GetImageData().GetDimensions()[:2]
        return CArmGeometry((0.0, 0.0, 0.0), p.primaryAngle, p.secondaryAngle, p.sourceDetectorDistance,
                            p.sourceIsocenterDistance, (columns, rows), (p.pixelSpacing, p.pixelSpacing))

    def detect(self, p: FluoroLandmarksParameterNode):
        """One result per frame: the input frame, and the second frame if one is selected (fitted together);
        a multi-slice input is a fluoroscopy run, every slice a frame (one geometry, each fitted alone)."""
        model = LandmarkModel.load(SHIPPED_MODEL, p.mirrorAveraging)
        preparation = FramePreparation(p.framePadding, p.inputBlur)
        run = mrml.volume_to_numpy(p.inputFrame)[0]
        if len(run) > 1:
            if p.secondFrame:
                raise ValueError(_("A run (several frames) cannot be combined with a second frame"))
            return detect_run(slicer.app.applicationLogic(), run, self.geometry(p, p.inputFrame), model,
                              SHIPPED_MODEL, p.inputFrame.GetName(), p.headDepth or None, preparation)
        frame = run[0]
        if not p.secondFrame:
            return [detect_frame(slicer.app.applicationLogic(), frame, self.geometry(p, p.inputFrame), model,
                                 SHIPPED_MODEL, p.inputFrame.GetName(), p.headDepth or None, preparation)]
        if not p.secondFrame.GetAttribute(GEOMETRY_ATTRIBUTE):
            raise ValueError(_("The second frame has no C-arm geometry of its own (DRRs made here carry it)"))
        frames = [(frame, self.geometry(p, p.inputFrame), p.inputFrame.GetName()),
                  (self.image(p.secondFrame), self.geometry(p, p.secondFrame), p.secondFrame.GetName())]
        return detect_frames(slicer.app.applicationLogic(), frames, model, SHIPPED_MODEL, preparation)

    @staticmethod
    def image(frameNode):
        """(rows, columns) pixels of a single-slice volume."""
        frame = mrml.volume_to_numpy(frameNode)[0]
        if frame.shape[0] != 1:
            raise ValueError(_("Select a 2D image (a single-slice volume) as the frame"))
        return frame[0]


class FluoroLandmarksTest(ScriptedLoadableModuleTest):
    """Runs the same scenarios as the pytest suite, on slicer.mrmlScene."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_drr_round_trip()
        self.setUp()
        self.test_biplane_detection()
        self.setUp()
        self.test_run_detection()

    def test_drr_round_trip(self):
        def reload_scene(path):
            slicer.mrmlScene.Clear()
            mrml.load_bundle(slicer.mrmlScene, path)
            return slicer.mrmlScene

        with tempfile.TemporaryDirectory() as out:
            result = scenarios.drr_round_trip(
                slicer.app.applicationLogic(), SAMPLE_DIR / "ProMED_CT_0051.nrrd",
                SAMPLE_DIR / "ProMED_CT_0051_landmarks.mrk.json", out, reload_scene)
        self.delayDisplay(f"DRR round trip passed: {result}")

    def test_biplane_detection(self):
        result = scenarios.biplane_detection(slicer.app.applicationLogic(), SAMPLE_DIR / "ProMED_CT_0051.nrrd",
                                             SAMPLE_DIR / "ProMED_CT_0051_landmarks.mrk.json", SHIPPED_MODEL)
        self.delayDisplay(f"Biplane detection passed: {result}")

    def test_run_detection(self):
        result = scenarios.run_detection(slicer.app.applicationLogic(), SAMPLE_DIR / "ProMED_CT_0051.nrrd",
                                         SAMPLE_DIR / "ProMED_CT_0051_landmarks.mrk.json", SHIPPED_MODEL)
        self.delayDisplay(f"Run detection passed: {result}")
