"""Tiny end-to-end run of the landmark pipeline on the sample CT: make-dataset -> train ->
evaluate -> detect, the MRML outputs reloaded from the .mrb, and safe loading of weights."""

import csv
import json

import numpy as np
import pytest

from conftest import SAMPLE_CT, SAMPLE_LANDMARKS
from FluoroLandmarksLib import cli, mrml
from FluoroLandmarksLib.inference import LandmarkModel


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("landmarks")
    for name, count, seed in (("train", 48, 1), ("test", 16, 99)):
        assert cli.main(["make-dataset", "--ct", str(SAMPLE_CT), "--landmarks", str(SAMPLE_LANDMARKS), "--count",
                         str(count), "--seed", str(seed), "--per-variant", "16", "--out", str(root / name)]) == 0
    assert cli.main(["train", "--data", str(root / "train"), "--out", str(root / "model"), "--global-steps", "3",
                     "--local-steps", "3", "--batch", "4", "--test", str(root / "test")]) == 0
    return root


def test_model_card_and_safe_loading(tiny_model, tmp_path):
    card = json.loads((tiny_model / "model" / "model_card.json").read_text())
    assert card["sha256"] and card["data"]["samples"] == 48 and "metrics" in card
    assert len(card["template_landmarks_ras"]) == len(card["labels"]) == 30
    model = LandmarkModel.load(tiny_model / "model")
    assert model.local_net is not None
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    for f in ("model_card.json", "skull_template.vtp"):
        (tampered / f).write_bytes((tiny_model / "model" / f).read_bytes())
    weights = bytearray((tiny_model / "model" / "weights.pt").read_bytes())
    weights[-100] ^= 0xFF
    (tampered / "weights.pt").write_bytes(bytes(weights))
    with pytest.raises(ValueError, match="sha256"):
        LandmarkModel.load(tampered)


def test_evaluate_writes_the_required_keys(tiny_model, tmp_path):
    out = tmp_path / "eval.json"
    assert cli.main(["evaluate", "--model", str(tiny_model / "model"), "--data", str(tiny_model / "test"),
                     "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    for key in ("within_10mm_2d", "within_10mm_3d", "mre_2d_mm", "mre_3d_mm"):
        assert np.isfinite(report[key])
    assert 0 <= report["within_10mm_2d"] <= 1 and report["skull_surface"]["n"] > 0


def test_detect_on_a_drr_writes_every_output_and_the_bundle_reloads(tiny_model, tmp_path, app):
    drr_dir = tmp_path / "drr"
    assert cli.main(["drr", str(SAMPLE_CT), "--landmarks", str(SAMPLE_LANDMARKS), "--primary-angle", "90",
                     "--output", "image", "--out", str(drr_dir)]) == 0
    out = tmp_path / "detect"
    assert cli.main(["detect", str(drr_dir / "drr.nrrd"), "--geometry", str(drr_dir / "geometry.json"),
                     "--model", str(tiny_model / "model"), "--out", str(out)]) == 0
    for name in ("landmarks_2d.mrk.json", "landmarks_2d.csv", "landmarks_3d.mrk.json", "skull.vtp",
                 "eye_lenses.json", "scene.mrb"):
        assert (out / name).stat().st_size > 0, name
    rows = list(csv.DictReader((out / "landmarks_2d.csv").open()))
    assert len(rows) == 30 and set(rows[0]) == {"label", "u", "v", "in_image", "confidence"}
    assert set(json.loads((out / "eye_lenses.json").read_text())) == {"eye_lens_right", "eye_lens_left"}
    mrml.load_bundle(app.scene, out / "scene.mrb")
    names = {app.scene.GetNthNode(i).GetName() for i in range(app.scene.GetNumberOfNodes())}
    assert {"drr landmarks 2D", "drr landmarks 3D", "drr estimated skull"} <= names
    saved = mrml.load_markups(app.app_logic, out / "landmarks_3d.mrk.json")
    reloaded = app.scene.GetFirstNodeByName("drr landmarks 3D")
    assert np.allclose(mrml.markups_to_numpy(saved)[1], mrml.markups_to_numpy(reloaded)[1], atol=1e-3)


def test_detect_refuses_bad_input(tiny_model, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert cli.main(["detect", str(bad), "--model", str(tiny_model / "model"), "--out", str(tmp_path / "o")]) == 2
    assert "cannot read image" in capsys.readouterr().err
    assert cli.main(["detect", str(tmp_path / "missing.png"), "--model", str(tiny_model / "model"),
                     "--out", str(tmp_path / "o")]) == 2
