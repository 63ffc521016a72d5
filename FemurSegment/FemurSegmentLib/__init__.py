"""FemurSegment logic, free of Qt: V-Net proximal-femur segmentation (Zhao et al.) with volume and
QCT bone-density measurement. Algorithm files import numpy/torch/SimpleITK/MONAI only; ``mrml``,
``pipeline`` and ``cli`` are the bridge to Slicer's MRML (slicer-core)."""
