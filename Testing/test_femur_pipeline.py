"""FemurSegment on a real MRML scene (slicer-core): segmentation node, Slicer's own volumes, the
shipped model on the sample pelvis CT, the command line and its bad-input errors."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import nan_gradient
from FemurSegmentLib import anatomy, mrml
from FemurSegmentLib.cli import main
from FemurSegmentLib.inference import resolve_precision
from FemurSegmentLib.model import FemurModel
from FemurSegmentLib.scenarios import segment_and_check

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "FemurSegment" / "Resources" / "SampleData"
SAMPLE_CT, SAMPLE_FEMUR = SAMPLE / "PelvicRef005_hips.nrrd", SAMPLE / "PelvicRef005_hips_femur_yutahi.nrrd"
HEAD_CT = ROOT / "FluoroLandmarks" / "Resources" / "SampleData" / "ProMED_CT_0051.nrrd"


@pytest.fixture(scope="module")
def model():
    return FemurModel.load()


def load(app, path):
    from FluoroLandmarksLib.mrml import load_volume

    return load_volume(app.app_logic, path)


def test_segmentation_node_names_terminology_and_slicer_volume(app, tmp_path):
    volume = load(app, SAMPLE_CT)
    labels = np.zeros(volume.GetImageData().GetDimensions()[::-1], np.uint8)
    labels[10:30, 50:90, 40:80] = 1
    labels[12:20, 60:70, 150:200] = 2
    node = mrml.add_segmentation(app.scene, volume, labels, "test femur")
    segmentation = node.GetSegmentation()
    names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
    assert names == ["Left femur", "Right femur"]
    assert "71341001" in segmentation.GetNthSegment(0).GetTerminology()
    assert "7771000" in segmentation.GetNthSegment(0).GetTerminology()
    assert "24028007" in segmentation.GetNthSegment(1).GetTerminology()
    voxel_cm3 = float(np.prod(volume.GetSpacing())) / 1000
    volumes = mrml.slicer_volumes_cm3(node)
    assert volumes["Left femur"] == pytest.approx((labels == 1).sum() * voxel_cm3, rel=1e-9)
    assert volumes["Right femur"] == pytest.approx((labels == 2).sum() * voxel_cm3, rel=1e-9)


def test_image_from_node_keeps_geometry(app):
    volume = load(app, SAMPLE_CT)
    image, disk = mrml.image_from_node(volume), sitk.ReadImage(str(SAMPLE_CT))
    assert np.allclose(image.GetOrigin(), disk.GetOrigin()) and np.allclose(image.GetSpacing(), disk.GetSpacing())
    assert np.allclose(image.GetDirection(), disk.GetDirection())
    assert np.array_equal(sitk.GetArrayViewFromImage(image), sitk.GetArrayViewFromImage(disk))


def test_shipped_model_on_the_sample_ct(app, model):
    volume = load(app, SAMPLE_CT)
    checked = segment_and_check(app.scene, volume, model)
    m = checked["result"].measurements
    assert set(m["sides"]) == {"left", "right"}
    for row in m["sides"].values():
        assert 50 < row["volume_cm3"] < 400 and 150 < row["hu_mean"] < 900
    # Sides follow the patient: the left femur lies at larger LPS x (smaller RAS x) than the right.
    seg = checked["result"].segmentation.GetSegmentation()
    centres = {}
    for i in range(seg.GetNumberOfSegments()):
        bounds = [0.0] * 6
        seg.GetNthSegment(i).GetBounds(bounds)
        centres[seg.GetNthSegment(i).GetName()] = (bounds[0] + bounds[1]) / 2
    assert centres["Left femur"] < centres["Right femur"]   # RAS x


def test_cancel_is_honoured_inside_the_network_stage(model):
    from FemurSegmentLib.inference import Cancelled, segment

    calls = []

    def progress(fraction, stage):
        calls.append((fraction, stage))
        return not (stage == "network" and fraction > 0.2)  # cancel after the first window

    with pytest.raises(Cancelled):
        segment(model, sitk.ReadImage(str(SAMPLE_CT)), progress=progress)
    assert [s for _, s in calls] == ["network", "network"] and calls[-1][0] < 0.8


def test_cli_writes_every_output_and_reloads(tmp_path):
    out = tmp_path / "run"
    # "auto": bfloat16 where the CPU has it natively; emulated bfloat16 takes tens of minutes here
    assert main([str(SAMPLE_CT), "--out", str(out), "--side", "left", "--mirror", "--precision", "auto"]) == 0
    m = json.loads((out / "measurements.json").read_text())
    assert set(m["sides"]) == {"left"} and m["runtime_s"] > 0 and m["peak_memory_mb"] > 0 and m["mirrored_pass"]
    assert m["network_precision"] == resolve_precision("auto")
    assert m["left_volume_cm3"] == m["sides"]["left"]["volume_cm3"]
    assert (out / "measurements.csv").read_text().splitlines()[0].startswith("side,segment,volume_cm3")
    from FluoroLandmarksLib.headless import HeadlessApplication
    from FluoroLandmarksLib.mrml import load_bundle

    app = HeadlessApplication()
    try:
        load_bundle(app.scene, out / "scene.mrb")
        segs = app.scene.GetNodesByClass("vtkMRMLSegmentationNode")
        assert segs.GetNumberOfItems() == 1
        volumes = mrml.slicer_volumes_cm3(segs.GetItemAsObject(0))
        assert volumes["Left femur"] == pytest.approx(m["sides"]["left"]["volume_cm3"], rel=1e-3)
    finally:
        app.close()
    labels = sitk.ReadImage(str(out / "segmentation.seg.nrrd"))
    assert labels.GetMetaData("Segment0_Name") == "Left femur"


def test_cli_runs_the_shipped_ensemble_by_default_and_one_model_with_single(tmp_path, capsys):
    from FemurSegmentLib.model import SHIPPED_ENSEMBLE

    single, both = tmp_path / "single", tmp_path / "both"
    assert main([str(SAMPLE_CT), "--out", str(single), "--single"]) == 0
    assert main([str(SAMPLE_CT), "--out", str(both)]) == 0
    one, two = (json.loads((d / "measurements.json").read_text()) for d in (single, both))
    assert two["model_sha256"] == [FemurModel.load(f).card["sha256"] for f in SHIPPED_ENSEMBLE]
    assert len(set(two["model_sha256"])) == 2 and one["model_sha256"] == two["model_sha256"][:1]
    for side in anatomy.SIDES:  # the same femurs, not the same voxels
        assert two[f"{side}_volume_cm3"] == pytest.approx(one[f"{side}_volume_cm3"], rel=0.1)
        assert two[f"{side}_volume_cm3"] != one[f"{side}_volume_cm3"]
    with pytest.raises(SystemExit):
        main([str(SAMPLE_CT), "--out", str(tmp_path / "x"), "--single", "--model", str(SHIPPED_ENSEMBLE[0])])
    assert "not allowed with" in capsys.readouterr().err


def test_cli_evaluate_writes_the_table_keys(tmp_path):
    report_path = tmp_path / "eval.json"
    assert main(["evaluate", "--images", str(SAMPLE_CT), "--labels", str(SAMPLE_FEMUR), "--label-value", "1",
                 "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    case = report["cases"][SAMPLE_CT.name]
    for side in anatomy.SIDES:
        assert {"dice", "sensitivity", "specificity", "hd95_mm", "volume_pred_cm3", "volume_true_cm3"} <= set(case[side])
    assert "volume_r2" in report


def test_cli_train_in_bf16_writes_a_loadable_float32_model(tmp_path, capsys, monkeypatch):
    import torch

    from FemurSegmentLib import training
    from FemurSegmentLib.network import SmallVNet

    # patches 8x smaller than training's: a CPU without native bf16 emulates it (3 steps took 222 s there)
    monkeypatch.setattr(training, "PATCH", (16, 32, 32))

    out = tmp_path / "model"
    code = main(["train", "--images", str(SAMPLE_CT), "--labels", str(SAMPLE_FEMUR), "--negatives", str(HEAD_CT),
                 "--out", str(out), "--steps", "3", "--seed", "4", "--bf16"])
    if code == 2:  # training's clear error, and no model written
        assert "non-finite gradients" in capsys.readouterr().err and not out.exists()
        pytest.skip("bfloat16 backward passes gave NaN gradients in 2 of 3 steps on this CPU (README)")
    assert code == 0
    model = FemurModel.load(out)
    assert model.card["training"]["precision"] == "bfloat16 autocast" and model.card["training"]["steps"] == 3
    assert model.card["training"]["patch_kji"] == [16, 32, 32]
    assert np.isfinite(model.card["training"]["final_loss"]) and "--bf16" in model.card["command"]
    torch.manual_seed(4)
    start = SmallVNet(**model.card["architecture"]).state_dict()
    trained = model.net.state_dict()
    assert all(v.dtype == torch.float32 for v in trained.values() if v.is_floating_point())
    assert any(not torch.equal(start[k], trained[k]) for k in start)


def nan_gradients_on(monkeypatch, bad: set[int]) -> list:
    """Makes training's network give NaN gradients (a finite forward pass) on the forward calls
    numbered in ``bad`` (1-based); returns the list of calls so far (clear it to count again)."""
    from FemurSegmentLib import training

    calls = []

    class Flaky(training.SmallVNet):
        def forward(self, x):
            calls.append(1)
            out = super().forward(x)
            return nan_gradient(out) if len(calls) in bad else out

    monkeypatch.setattr(training, "SmallVNet", Flaky)
    return calls


def test_training_skips_a_step_with_non_finite_gradients_and_fails_when_they_persist(monkeypatch):
    import torch

    from FemurSegmentLib import training

    bad = set()
    calls = nan_gradients_on(monkeypatch, bad)
    SMALL = {"channels": 2, "convs": (1, 1, 1)}
    femur = np.zeros((40, 80, 80), np.uint8)
    femur[10:30, 30:50, 30:50] = 1
    case = training.Case("c", np.random.default_rng(0).normal(0, 0.1, femur.shape).astype(np.float32) + femur, femur)
    bad.add(2)  # 1 step in 11: within the 10 % allowed
    net, summary = training.train([case], steps=11, batch=1, seed=0, log=None, network=SMALL)
    assert summary["skipped_steps"] == 1
    assert all(torch.isfinite(v).all() for v in net.state_dict().values() if v.is_floating_point())
    calls.clear()
    bad.update({1, 3})
    with pytest.raises(training.TrainingError, match="non-finite gradients in 3 of 11 steps"):
        training.train([case], steps=11, batch=1, seed=0, log=None, network=SMALL)


def test_cli_train_that_fails_is_a_clear_error_and_writes_no_model(tmp_path, capsys, monkeypatch):
    nan_gradients_on(monkeypatch, {1, 2, 3})
    out = tmp_path / "model"
    assert main(["train", "--images", str(SAMPLE_CT), "--labels", str(SAMPLE_FEMUR), "--out", str(out),
                 "--steps", "3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("femur-segment: error: non-finite gradients in 3 of 3 steps") and "Traceback" not in err
    assert not out.exists()


def write(tmp_path, name, array, spacing=(2.0, 2.0, 3.0)):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing[: array.ndim])
    path = tmp_path / name
    sitk.WriteImage(image, str(path))
    return path


@pytest.mark.parametrize("case, message", [
    ("mr", "Hounsfield"), ("2d", "3D"), ("tiny", "too small"), ("nan", "NaN"), ("head", "no femur found"),
    ("missing", "not found"),
])
def test_cli_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, capsys, case, message):
    ct = sitk.GetArrayFromImage(sitk.ReadImage(str(SAMPLE_CT)))
    path = {
        "mr": lambda: write(tmp_path, "mr.nrrd", np.clip(ct + 1024, 0, 1500).astype(np.int16) // 3),
        "2d": lambda: write(tmp_path, "slice.nrrd", ct[30]),
        "tiny": lambda: write(tmp_path, "tiny.nrrd", ct[:8, :16, :16]),
        "nan": lambda: write(tmp_path, "nan.nrrd", np.where(ct == ct.max(), np.nan, ct).astype(np.float32)),
        "head": lambda: HEAD_CT,
        "missing": lambda: tmp_path / "nothing.nrrd",
    }[case]()
    assert main([str(path), "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "measurements.json").exists()


def test_console_script_is_installed():
    result = subprocess.run([str(Path(sys.executable).with_name("femur-segment")), "--help"], capture_output=True,
                            text=True)
    assert result.returncode == 0 and "--calibration" in result.stdout
