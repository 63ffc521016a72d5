"""The MRML bridge and DRR synthesis on a real (headless) MRML scene."""

import numpy as np
import pytest

from conftest import SAMPLE_CT, write_volume
from FluoroLandmarksLib import mrml, scenarios
from FluoroLandmarksLib.headless import HeadlessApplication
from FluoroLandmarksLib.synthesis import DRRParameters, synthesize


def phantom_ct(tmp_path, shape=(40, 48, 56)):
    """Oblique head-sized water ellipsoid (HU 0) with a bone shell in air (-1000 HU)."""
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    ijk_to_ras = np.eye(4)
    ijk_to_ras[:3, :3] = q @ np.diag([4.0, 4.5, 5.0])
    k, j, i = np.indices(shape)
    centre = (np.array(shape) - 1) / 2
    r = np.sqrt(((k - centre[0]) / 18) ** 2 + ((j - centre[1]) / 21) ** 2 + ((i - centre[2]) / 25) ** 2)
    hu = np.where(r < 0.9, 0, np.where(r < 1.0, 1000, -1000)).astype(np.int16)
    return write_volume(tmp_path / "phantom.nrrd", hu, ijk_to_ras), ijk_to_ras


def write_landmarks(app, path, labels, points):
    node = mrml.add_points(app.scene, "phantom landmarks", labels, points)
    mrml.save_node(node, path)
    app.scene.RemoveNode(node)
    return path


def test_round_trip_scenario_on_headless_scene(app, tmp_path):
    ct_path, ijk_to_ras = phantom_ct(tmp_path)
    centre = ijk_to_ras[:3, :3] @ (np.array([55, 47, 39]) / 2) + ijk_to_ras[:3, 3]
    points = centre + np.array([[0, 0, 0], [60, 10, -5], [-40, 70, 20], [0, 0, 900]])
    lm_path = write_landmarks(app, tmp_path / "lm.mrk.json", ["centre", "a", "b", "far"], points)

    fresh = []

    def reload_scene(path):
        fresh.append(HeadlessApplication())
        mrml.load_bundle(fresh[-1].scene, path)
        return fresh[-1].scene

    result = scenarios.drr_round_trip(app.app_logic, ct_path, lm_path, tmp_path / "out", reload_scene)
    assert result["views"] == 2 and result["nodes_checked"] >= 8
    for f in fresh:
        f.close()


def test_drr_volume_shows_the_phantom_where_its_centre_projects(app, tmp_path):
    ct_path, ijk_to_ras = phantom_ct(tmp_path)
    ct = mrml.load_volume(app.app_logic, ct_path)
    (view,) = synthesize(app.app_logic, ct, None, DRRParameters(detector_size_px=(120, 100),
                                                                pixel_spacing_mm=(4.0, 4.0)))
    image = mrml.volume_to_numpy(view.nodes["drr"])[0][0]
    vv, uu = np.indices(image.shape)
    centroid = np.array([(image * uu).sum(), (image * vv).sum()]) / image.sum()
    centre = ijk_to_ras[:3, :3] @ (np.array([55, 47, 39]) / 2) + ijk_to_ras[:3, 3]
    assert np.linalg.norm(centroid - view.geometry.project(centre[None])[0][0]) < 1.0


def test_sample_ct_loads_in_ras_with_lps_file_geometry(app):
    ct = mrml.load_volume(app.app_logic, SAMPLE_CT)
    array, ijk_to_ras = mrml.volume_to_numpy(ct)
    assert array.shape == (108, 256, 256)
    np.testing.assert_allclose(np.diag(ijk_to_ras)[:3], [-0.9570312, -0.9570312, 1.5], rtol=1e-6)


def test_missing_and_bad_files_give_clear_errors(app, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        mrml.load_volume(app.app_logic, tmp_path / "nope.nrrd")
    garbage = tmp_path / "garbage.nrrd"
    garbage.write_bytes(b"this is not a volume")
    with pytest.raises(ValueError, match="Could not read"):
        mrml.load_volume(app.app_logic, garbage)
    empty = tmp_path / "empty.mrk.json"
    node = app.scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "empty")
    mrml.save_node(node, empty)
    with pytest.raises(ValueError, match="no control points"):
        mrml.load_markups(app.app_logic, empty)
    with pytest.raises(ValueError, match="no control points"):
        synthesize(app.app_logic, mrml.load_volume(app.app_logic, SAMPLE_CT), node, DRRParameters())


def test_saved_nodes_and_bundles_get_the_usual_file_mode(app, tmp_path):
    import os
    import stat

    node = mrml.add_points(app.scene, "points", ["a"], np.zeros((1, 3)))
    mrml.save_node(node, tmp_path / "points.mrk.json")
    mrml.save_bundle(app.scene, tmp_path / "scene.mrb")
    (tmp_path / "plain.txt").write_text("x")  # what any other writer gets under this umask
    usual = stat.S_IMODE(os.stat(tmp_path / "plain.txt").st_mode)
    for name in ("points.mrk.json", "scene.mrb"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == usual, name
    assert not list(tmp_path.glob(".tmp-*"))
