"""Shared fixtures: import paths of the modules' Lib packages, sample data and small phantoms."""

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
for module in ("FluoroLandmarks", "FemurSegment"):
    sys.path.insert(0, str(ROOT / module))

SAMPLE_DIR = ROOT / "FluoroLandmarks" / "Resources" / "SampleData"
SAMPLE_CT = SAMPLE_DIR / "ProMED_CT_0051.nrrd"
SAMPLE_LANDMARKS = SAMPLE_DIR / "ProMED_CT_0051_landmarks.mrk.json"


@pytest.fixture
def app():
    from FluoroLandmarksLib.headless import HeadlessApplication

    application = HeadlessApplication()
    yield application
    application.close()


def write_volume(path: Path, array_kji: np.ndarray, ijk_to_ras: np.ndarray) -> Path:
    """Write a volume with SimpleITK (LPS on disk) from an IJK->RAS matrix."""
    import SimpleITK as sitk

    lps = np.diag([-1.0, -1.0, 1.0]) @ ijk_to_ras[:3, :]
    spacing = np.linalg.norm(lps[:, :3], axis=0)
    image = sitk.GetImageFromArray(array_kji)
    image.SetSpacing(spacing.tolist())
    image.SetDirection((lps[:, :3] / spacing).ravel().tolist())
    image.SetOrigin(lps[:, 3].tolist())
    sitk.WriteImage(image, str(path))
    return path


def nan_gradient(x):
    """``x`` unchanged in the forward pass, NaN gradients in the backward pass: what bfloat16 backward
    passes gave now and then on an AMD EPYC CPU."""
    import torch

    class NaNGradient(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.view_as(x)

        @staticmethod
        def backward(ctx, grad):
            return grad * float("nan")

    return NaNGradient.apply(x)
