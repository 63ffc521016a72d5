"""Make FemurSegment's sample data from the shared TCIA pelvis CT (CC BY) and its MIT-licensed
yuta-hi labels: the hip region of Pelvic-Ref005 (proximal femurs with margin), resampled to
2 x 2 x 3 mm. Never uses the clinician contours (no licence).

    python Testing/Tools/make_femur_sample.py --data ../shared/data/hip_ct
"""

import argparse
from pathlib import Path

import numpy as np
import SimpleITK as sitk

OUT = Path(__file__).resolve().parents[2] / "FemurSegment" / "Resources" / "SampleData"
CASE, FEMUR = "Pelvic-Ref005", 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    args = parser.parse_args()
    ct = sitk.ReadImage(str(args.data / f"{CASE}_ct.nrrd"))
    femur = sitk.ReadImage(str(args.data / f"{CASE}_yutahi_28labels.nrrd")) == FEMUR
    labels = sitk.GetArrayViewFromImage(femur)
    k = np.flatnonzero(labels.any(axis=(1, 2)))
    top = min(ct.GetSize()[2], k.max() + 1 + 12)          # 36 mm above the femoral heads
    bottom = max(0, k.max() + 1 - 50)                      # 150 mm below them
    body = sitk.GetArrayViewFromImage(ct)[bottom:top] > -500
    j, i = np.flatnonzero(body.any(axis=(0, 2))), np.flatnonzero(body.any(axis=(0, 1)))
    index = [int(i.min()), int(j.min()), int(bottom)]
    size = [int(i.max() - i.min() + 1), int(j.max() - j.min() + 1), int(top - bottom)]
    roi_ct, roi_femur = (sitk.RegionOfInterest(x, size, index) for x in (ct, femur))
    spacing = (2.0, 2.0, 3.0)
    shape = [int(round(n * s / t)) for n, s, t in zip(roi_ct.GetSize(), roi_ct.GetSpacing(), spacing)]
    reference = sitk.Image(shape, sitk.sitkInt16)
    reference.SetSpacing(spacing)
    reference.SetOrigin(roi_ct.TransformContinuousIndexToPhysicalPoint([(s / 2 - 0.5) for s in spacing[:2]] + [0.0]))
    reference.SetDirection(roi_ct.GetDirection())
    out_ct = sitk.Resample(roi_ct, reference, sitk.Transform(), sitk.sitkLinear, -1024, sitk.sitkInt16)
    out_femur = sitk.Resample(roi_femur, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    OUT.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(out_ct, str(OUT / "PelvicRef005_hips.nrrd"), useCompression=True)
    sitk.WriteImage(out_femur, str(OUT / "PelvicRef005_hips_femur_yutahi.nrrd"), useCompression=True)
    print(f"{out_ct.GetSize()} voxels of {spacing} mm written to {OUT}")


if __name__ == "__main__":
    main()
