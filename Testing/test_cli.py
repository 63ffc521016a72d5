"""fluoro-landmarks drr: files written, bad input refused clearly, inputs untouched."""

import csv
import hashlib
import json

import numpy as np
import pytest

from conftest import write_volume
from FluoroLandmarksLib import mrml
from FluoroLandmarksLib.cli import main


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def inputs(app, tmp_path):
    hu = np.full((30, 40, 50), -1000, np.int16)
    hu[5:25, 8:32, 10:40] = 40
    ct = write_volume(tmp_path / "ct.nrrd", hu, np.diag([-2.0, -2.0, 2.5, 1.0]))
    node = mrml.add_points(app.scene, "lm", ["in", "out"], np.array([[-50.0, -40.0, 37.0], [400.0, 0.0, 0.0]]))
    mrml.save_node(node, tmp_path / "lm.mrk.json")
    return ct, tmp_path / "lm.mrk.json"


def test_single_view_outputs(inputs, tmp_path, capsys):
    ct, lm = inputs
    hashes = (sha(ct), sha(lm))
    out = tmp_path / "out"
    assert main(["drr", str(ct), "--out", str(out), "--landmarks", str(lm), "--detector-size", "64", "48",
                 "--pixel-spacing", "3"]) == 0
    assert {p.name for p in out.iterdir()} == {"drr.nrrd", "landmarks_2d.mrk.json", "landmarks_2d.csv",
                                                "geometry.json", "scene.mrb"}
    assert (sha(ct), sha(lm)) == hashes
    geometry = json.loads((out / "geometry.json").read_text())
    P = np.array(geometry["projection_ras_to_px"])
    rows = list(csv.DictReader((out / "landmarks_2d.csv").open()))
    assert [r["label"] for r in rows] == ["in", "out"]
    assert [r["in_field"] for r in rows] == ["1", "0"]
    h = P @ np.array([-50.0, -40.0, 37.0, 1.0])
    assert float(rows[0]["u"]) == pytest.approx(h[0] / h[2], abs=1e-4)
    assert float(rows[0]["v"]) == pytest.approx(h[1] / h[2], abs=1e-4)
    assert np.allclose(geometry["source_ras"], np.array(geometry["isocenter_ras"]) + [0, -750, 0])
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp")]
    assert "1/2 landmarks in the field" in capsys.readouterr().out


def test_several_views_get_suffixes_and_a_sequence(inputs, tmp_path):
    ct, lm = inputs
    out = tmp_path / "out"
    assert main(["drr", str(ct), "--out", str(out), "--landmarks", str(lm), "--primary-angle", "0", "90", "-30",
                 "--secondary-angle", "0", "0", "20", "--detector-size", "32", "32", "--pixel-spacing", "5",
                 "--output", "image", "--photons", "1000", "--collimation-circle", "16", "16", "12"]) == 0
    names = {p.name for p in out.iterdir()}
    for n in range(3):
        assert {f"drr_{n:03d}.nrrd", f"geometry_{n:03d}.json", f"landmarks_2d_{n:03d}.csv",
                f"landmarks_2d_{n:03d}.mrk.json"} <= names
    angles = [json.loads((out / f"geometry_{n:03d}.json").read_text())["primary_deg"] for n in range(3)]
    assert angles == [0, 90, -30]


@pytest.mark.parametrize("extra, message", [
    (["--sid", "700", "--sod", "750"], "SID"),
    (["--pixel-spacing", "0"], "pixel spacing"),
    (["--primary-angle", "0", "10", "--secondary-angle", "0", "0", "0"], "angles"),
])
def test_bad_options(inputs, tmp_path, capsys, extra, message):
    ct, _ = inputs
    assert main(["drr", str(ct), "--out", str(tmp_path / "o")] + extra) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_bad_input_files(app, inputs, tmp_path, capsys):
    ct, lm = inputs
    cases = {}
    cases["missing"] = ([str(tmp_path / "none.nrrd")], "not found")
    garbage = tmp_path / "garbage.nrrd"
    garbage.write_text("NRRD0004\nnot really\n")
    cases["unreadable"] = ([str(garbage)], "Could not read")
    flat = write_volume(tmp_path / "xray.nrrd", np.zeros((1, 64, 64), np.int16), np.diag([-1.0, -1, 1, 1]))
    cases["2d"] = ([str(flat)], "single-slice")
    nan = np.zeros((8, 8, 8), np.float32)
    nan[4, 4, 4] = np.nan
    cases["nan"] = ([str(write_volume(tmp_path / "nan.nrrd", nan, np.eye(4)))], "NaN")
    empty = tmp_path / "empty.mrk.json"
    mrml.save_node(app.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "e"), empty)
    cases["empty landmarks"] = ([str(ct), "--landmarks", str(empty)], "no control points")
    for name, (args, message) in cases.items():
        out = tmp_path / f"out_{name.replace(' ', '_')}"
        assert main(["drr", *args, "--out", str(out)]) == 2, name
        assert message in capsys.readouterr().err, name
        assert not (out / "scene.mrb").exists(), name
