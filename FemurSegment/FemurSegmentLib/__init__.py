"""FemurSegment logic, free of Qt. The V-Net model, inference and measurements arrive with issue 4;
until then the module and the command line state plainly that no model is installed."""

MODEL_AVAILABLE = False
NO_MODEL_MESSAGE = ("No proximal-femur segmentation model is installed in this version of FemurSegment "
                    "(the V-Net model is planned, see the project's issue tracker).")
