"""FemurSegment: proximal-femur V-Net segmentation on CT/QCT with volume and bone-density measurement.

Thin Slicer module (Module, Widget, Logic, Test). The work is in the Qt-free FemurSegmentLib.
"""

import importlib.util
from pathlib import Path
from typing import Annotated

import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

SHIPPED_MODEL = Path(__file__).parent / "Resources" / "Models" / "femur"

SAMPLE_CT = Path(__file__).parent / "Resources" / "SampleData" / "PelvicRef005_hips.nrrd"


class FemurSegment(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Femur Segment")
        self.parent.categories = [_("Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["FluoroLandmarks developers"]
        self.parent.helpText = _(
            "Segmentation of the left and right proximal femur on CT/QCT (V-Net) with volume, HU and, with a "
            "phantom calibration, vBMD (mg/cm3 K2HPO4) and BMC per side.")
        self.parent.acknowledgementText = _(
            "Method: Zhao et al., V-Net with Dice + L2 loss. Training CTs: TCIA Pelvic-Reference-Data (CC BY); "
            "femur labels: yuta-hi/pelvic-annonation (MIT).")


@parameterNodeWrapper
class FemurSegmentParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    side: Annotated[str, Choice(["both", "left", "right"])] = "both"
    proximalOnly: bool = True
    mirroredPass: bool = False  # also the left-right mirrored CT through the network (twice its time)
    ensemble: bool = True  # the shipped two-model ensemble (twice the network time of one model)
    calibrationFile: Path  # QCT calibration JSON; empty (".") for none


class FemurSegmentWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._cancelRequested = False

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/FemurSegment.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = FemurSegmentLogic()
        self.ui.applyButton.connect("clicked(bool)", self.onApply)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancel)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.setParameterNode(self.logic.getParameterNode())
        if not (SHIPPED_MODEL / "weights.pt").is_file():
            self.ui.statusLabel.text = _("No femur model found in {path}").format(path=SHIPPED_MODEL)

    def cleanup(self) -> None:
        self.removeObservers()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateApply)
            self._updateApply()

    def _updateApply(self, caller=None, event=None) -> None:
        ready = bool(self._parameterNode and self._parameterNode.inputVolume) and (SHIPPED_MODEL / "weights.pt").is_file()
        self.ui.applyButton.enabled = ready

    def _progress(self, fraction: float, stage: str) -> bool:
        self.ui.progressBar.value = int(100 * fraction)
        self.ui.statusLabel.text = _("Running: {stage}").format(stage=stage)
        slicer.app.processEvents()
        return not self._cancelRequested

    def onCancel(self) -> None:
        self._cancelRequested = True

    def onApply(self) -> None:
        from FemurSegmentLib.inference import Cancelled

        p = self._parameterNode
        self._cancelRequested = False
        self.ui.applyButton.enabled, self.ui.cancelButton.enabled = False, True
        try:
            with slicer.util.tryWithErrorDisplay(_("Femur segmentation failed."), waitCursor=True):
                calibration = p.calibrationFile if str(p.calibrationFile) not in ("", ".") else None
                try:
                    result = self.logic.process(p.inputVolume, p.side, p.proximalOnly, calibration, self._progress,
                                                p.mirroredPass, p.ensemble)
                except Cancelled:
                    self.ui.statusLabel.text = _("Cancelled; nothing was added to the scene.")
                    return
                self.logic.show(result)
                m = result.measurements
                self.ui.statusLabel.text = " | ".join(
                    [f"{r['segment']}: {r['volume_cm3']:.1f} cm³" for r in m["sides"].values()] + m["warnings"]
                    + [f"{m['runtime_s']:.1f} s ({m['network_precision']})"])
                self.ui.progressBar.value = 100
        finally:
            self.ui.cancelButton.enabled = False
            self._updateApply()


class FemurSegmentLogic(ScriptedLoadableModuleLogic):
    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._models = {}

    def getParameterNode(self):
        return FemurSegmentParameterNode(super().getParameterNode())

    @staticmethod
    def ensureDependencies() -> None:
        """PyTorch and MONAI in Slicer's Python (installed on first use, as other AI extensions do)."""
        missing = [spec for module, spec in (("torch", "torch"), ("monai", "monai==1.6.1"))
                   if importlib.util.find_spec(module) is None]
        if missing and slicer.util.confirmOkCancelDisplay(
                _("FemurSegment needs {packages}. Install now?").format(packages=", ".join(missing))):
            slicer.util.pip_install(missing)

    def model(self, ensemble=True):
        """The shipped model, or with ``ensemble`` the list of the shipped ensemble's models (loaded once)."""
        if ensemble not in self._models:
            self.ensureDependencies()
            from FemurSegmentLib.model import SHIPPED_ENSEMBLE, FemurModel, load_models

            self._models[ensemble] = load_models(SHIPPED_ENSEMBLE) if ensemble else FemurModel.load(SHIPPED_MODEL)
        return self._models[ensemble]

    def process(self, volume, side="both", proximal=True, calibration=None, progress=None, mirror=False,
                ensemble=True):
        """New segmentation + table nodes for ``volume`` (a ``pipeline.Result``); the input node is not modified."""
        model = self.model(ensemble)
        from FemurSegmentLib import pipeline

        return pipeline.run(slicer.mrmlScene, volume, model, side, proximal, calibration, progress, mirror)

    def show(self, result) -> None:
        result.segmentation.CreateClosedSurfaceRepresentation()
        slicer.app.layoutManager().setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpTableView)
        selection = slicer.app.applicationLogic().GetSelectionNode()
        selection.SetActiveTableID(result.table.GetID())
        slicer.app.applicationLogic().PropagateTableSelection()


class FemurSegmentTest(ScriptedLoadableModuleTest):
    def runTest(self):
        slicer.mrmlScene.Clear()
        self.test_segment_sample()

    def test_segment_sample(self):
        self.delayDisplay("Segmenting the sample pelvis CT")
        model = FemurSegmentLogic().model()
        from FemurSegmentLib import scenarios

        volume = slicer.util.loadVolume(str(SAMPLE_CT))
        checked = scenarios.segment_and_check(slicer.mrmlScene, volume, model)
        self.assertEqual(sorted(checked["result"].measurements["sides"]), ["left", "right"])
        self.delayDisplay("Test passed")
