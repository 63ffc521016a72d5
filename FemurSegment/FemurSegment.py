"""FemurSegment: proximal-femur segmentation (V-Net) on CT/QCT with volume measurement.

Thin Slicer module. The model is not shipped yet: Apply stays disabled and says why.
"""

from typing import Annotated

import slicer
from slicer import vtkMRMLScalarVolumeNode
from slicer.i18n import tr as _
from slicer.parameterNodeWrapper import Choice, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin

from FemurSegmentLib import MODEL_AVAILABLE, NO_MODEL_MESSAGE


class FemurSegment(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Femur Segment")
        self.parent.categories = [_("Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["FluoroLandmarks developers"]
        self.parent.helpText = _("Segmentation of the left and right proximal femur on CT/QCT with volume measurement.")
        self.parent.acknowledgementText = _("Method: Zhao et al., V-Net with Dice + L2 loss.")


@parameterNodeWrapper
class FemurSegmentParameterNode:
    inputVolume: vtkMRMLScalarVolumeNode
    side: Annotated[str, Choice(["both", "left", "right"])] = "both"
    proximalOnly: bool = True


class FemurSegmentWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/FemurSegment.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = FemurSegmentLogic()
        self.ui.applyButton.enabled = MODEL_AVAILABLE
        self.ui.applyButton.toolTip = NO_MODEL_MESSAGE
        self.ui.statusLabel.text = NO_MODEL_MESSAGE
        self.setParameterNode(self.logic.getParameterNode())

    def cleanup(self) -> None:
        self.removeObservers()
        self.setParameterNode(None)

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)


class FemurSegmentLogic(ScriptedLoadableModuleLogic):
    def getParameterNode(self):
        return FemurSegmentParameterNode(super().getParameterNode())


class FemurSegmentTest(ScriptedLoadableModuleTest):
    def runTest(self):
        slicer.mrmlScene.Clear()
        self.assertFalse(MODEL_AVAILABLE)
        self.delayDisplay("FemurSegment has no model yet; nothing else to test")
