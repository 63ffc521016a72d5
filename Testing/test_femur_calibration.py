"""QCT calibration on a synthetic phantom inserted into the real sample pelvis CT: rods given as a
labelmap or as Slicer markups ROIs; a known-density insert must be recovered within 1 %."""

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from FemurSegmentLib.calibration import CalibrationError, from_file
from FemurSegmentLib.measurement import measure

SAMPLE_CT = Path(__file__).resolve().parents[1] / "FemurSegment" / "Resources" / "SampleData" / "PelvicRef005_hips.nrrd"
RODS = (0.0, 75.0, 150.0, 300.0)     # mg/cm³ K2HPO4
SLOPE, INTERCEPT = 1.12, -8.0        # the phantom's true HU = SLOPE * density + INTERCEPT
INSERT = 200.0


def phantom(tmp_path: Path):
    """(CT with rods and an insert, rod labelmap path, insert labels [k, j, i], rod boxes in LPS mm)."""
    ct = sitk.ReadImage(str(SAMPLE_CT))
    hu = sitk.GetArrayFromImage(ct).astype(np.float32)
    rng = np.random.default_rng(7)
    rods = np.zeros(hu.shape, np.uint8)
    boxes = []
    for n, density in enumerate(RODS):
        region = (slice(10, 50), slice(140, 150), slice(40 + 30 * n, 50 + 30 * n))
        rods[region] = n + 1
        hu[region] = SLOPE * density + INTERCEPT + rng.normal(0, 15, hu[region].shape)
        low = ct.TransformIndexToPhysicalPoint([region[2].start, region[1].start, region[0].start])
        high = ct.TransformIndexToPhysicalPoint([region[2].stop - 1, region[1].stop - 1, region[0].stop - 1])
        boxes.append((np.array(low), np.array(high)))
    insert = np.zeros(hu.shape, np.uint8)
    insert[20:40, 60:80, 100:130] = 1
    hu[insert > 0] = SLOPE * INSERT + INTERCEPT + rng.normal(0, 15, int(insert.sum()))
    image = sitk.GetImageFromArray(np.round(hu).astype(np.int16))
    image.CopyInformation(ct)
    label_image = sitk.GetImageFromArray(rods)
    label_image.CopyInformation(ct)
    sitk.WriteImage(label_image, str(tmp_path / "rods.nrrd"), useCompression=True)
    return image, insert, boxes


def write_rois(app, tmp_path: Path, boxes) -> list[str]:
    from FluoroLandmarksLib.mrml import save_node

    names = []
    for n, (low, high) in enumerate(boxes):
        roi = app.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", f"rod{n}")
        centre_lps, size = (low + high) / 2, np.abs(high - low) + 0.5     # half a voxel margin inside the rod
        roi.SetCenter(-centre_lps[0], -centre_lps[1], centre_lps[2])      # RAS
        roi.SetSize(*size)
        save_node(roi, tmp_path / f"rod{n}.mrk.json")
        names.append(f"rod{n}.mrk.json")
    return names


@pytest.mark.parametrize("regions", ["labelmap", "rois"])
def test_calibration_recovers_a_known_density(tmp_path, app, regions):
    ct, insert, boxes = phantom(tmp_path)
    if regions == "labelmap":
        spec = {"labelmap": "rods.nrrd", "rods": [{"label": n + 1, "density_mg_cm3": d} for n, d in enumerate(RODS)]}
    else:
        files = write_rois(app, tmp_path, boxes)
        spec = {"rods": [{"roi": f, "density_mg_cm3": d} for f, d in zip(files, RODS)]}
    (tmp_path / "calibration.json").write_text(json.dumps(spec))
    calibration = from_file(tmp_path / "calibration.json", ct)
    assert calibration.slope_hu_per_mg_cm3 == pytest.approx(SLOPE, rel=0.01)
    assert calibration.r2 > 0.999
    figures = measure(sitk.GetArrayViewFromImage(ct), insert, float(np.prod(ct.GetSpacing())), calibration)
    assert figures["left"]["vbmd_mg_cm3"] == pytest.approx(INSERT, rel=0.01)
    assert figures["left"]["bmc_mg"] == pytest.approx(figures["left"]["vbmd_mg_cm3"] * figures["left"]["volume_cm3"])


def test_calibration_file_errors(tmp_path):
    ct, _, _ = phantom(tmp_path)
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({"labelmap": "rods.nrrd", "rods": [{"label": 1, "density_mg_cm3": 0}]}))
    with pytest.raises(CalibrationError, match="at least two rods"):
        from_file(path, ct)
    path.write_text(json.dumps({"labelmap": "rods.nrrd", "rods": [{"label": 1, "density_mg_cm3": 300},
                                                                   {"label": 4, "density_mg_cm3": 0}]}))
    with pytest.raises(CalibrationError, match="not monotonic"):
        from_file(path, ct)
    path.write_text(json.dumps({"labelmap": "rods.nrrd", "rods": [{"label": 1, "density_mg_cm3": 0},
                                                                   {"label": 9, "density_mg_cm3": 100}]}))
    with pytest.raises(CalibrationError, match="no voxels"):
        from_file(path, ct)
    path.write_text("{not json")
    with pytest.raises(CalibrationError, match="cannot read"):
        from_file(path, ct)
