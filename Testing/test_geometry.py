from dataclasses import replace

import numpy as np
import pytest

from FluoroLandmarksLib.geometry import CArmGeometry, Collimation, carm_rotation

ISO = (10.0, -20.0, 30.0)


def test_ap_puts_source_posterior():
    g = CArmGeometry(ISO, 0, 0, 1000, 750)
    np.testing.assert_allclose(g.source_ras - ISO, [0, -750, 0], atol=1e-9)
    np.testing.assert_allclose(g.detector_center_ras - ISO, [0, 250, 0], atol=1e-9)


def test_lao90_puts_source_on_patient_right():
    g = CArmGeometry(ISO, 90, 0, 1000, 750)
    np.testing.assert_allclose(g.source_ras - ISO, [750, 0, 0], atol=1e-9)  # RAS +x = right


def test_rao90_puts_source_on_patient_left():
    g = CArmGeometry(ISO, -90, 0, 1000, 750)
    np.testing.assert_allclose(g.source_ras - ISO, [-750, 0, 0], atol=1e-9)


def test_cran30_puts_source_inferior():
    g = CArmGeometry(ISO, 0, 30, 1000, 750)
    d = g.source_ras - np.array(ISO)
    assert d[2] == pytest.approx(-750 * np.sin(np.radians(30)))
    assert d[1] == pytest.approx(-750 * np.cos(np.radians(30)))


def test_ap_image_orientation_patient_right_on_image_left_head_up():
    g = CArmGeometry(ISO, 0, 0, 1000, 750, (101, 101), (1.0, 1.0))
    uv, _ = g.project(np.array([ISO, np.add(ISO, [10, 0, 0]), np.add(ISO, [0, 0, 10])]))
    centre, right, superior = uv
    np.testing.assert_allclose(centre, [50, 50], atol=1e-9)
    assert right[0] < centre[0]  # patient right -> image left
    assert superior[1] < centre[1]  # superior -> image top


@pytest.mark.parametrize("angles", [(0, 0), (90, 0), (-35, 20), (120, -40)])
def test_projection_matrix_is_the_pinhole_model(angles):
    g = CArmGeometry(ISO, *angles, sid_mm=1100, sod_mm=700, detector_size_px=(300, 200), pixel_spacing_mm=(0.8, 0.6))
    rng = np.random.default_rng(1)
    pts = np.array(ISO) + rng.normal(scale=80, size=(50, 3))
    uv, w = g.project(pts)
    h = np.c_[pts, np.ones(len(pts))] @ g.projection_ras_to_px.T
    np.testing.assert_array_equal(uv, h[:, :2] / h[:, 2:])
    # The ray through the projected pixel passes through the point.
    src, dirs = g.rays(uv)
    t = (pts - src) @ dirs.T
    closest = src + np.diag(t)[:, None] * dirs
    np.testing.assert_allclose(closest, pts, atol=1e-6)
    np.testing.assert_allclose(w, (pts - g.source_ras) @ g.beam_direction)
    # Points on the detector plane project onto themselves.
    det = g.detector_point_ras(uv)
    np.testing.assert_allclose(g.project(det)[0], uv, atol=1e-8)


def test_detector_volume_matrix_places_pixels_on_the_detector():
    g = CArmGeometry(ISO, 25, -10, 1000, 750, (64, 48), (1.5, 1.5))
    uv = np.array([[0, 0], [63, 47], [10.5, 3.25]])
    ijk = np.c_[uv, np.zeros(3), np.ones(3)]
    np.testing.assert_allclose((ijk @ g.detector_ijk_to_ras.T)[:, :3], g.detector_point_ras(uv), atol=1e-9)
    assert np.linalg.det(g.detector_ijk_to_ras[:3, :3]) > 0


def test_in_field_with_collimation():
    pts = np.array([ISO, np.add(ISO, [0, 0, 60]), np.add(ISO, [0, 0, 1000]), np.add(ISO, [0, -800, 0])])
    g = CArmGeometry(ISO, 0, 0, 1000, 750, (256, 256), (1.2, 1.2))
    np.testing.assert_array_equal(g.in_field(pts), [True, True, False, False])  # far out; behind the source
    circle = Collimation("circle", (127.5, 127.5), radius_px=40)
    gc = CArmGeometry(ISO, 0, 0, 1000, 750, (256, 256), (1.2, 1.2), circle)
    np.testing.assert_array_equal(gc.in_field(pts), [True, False, False, False])  # 60 mm -> 66.7 px > 40
    rect = Collimation("rect", (127.5, 60.0), (100, 50))
    gr = CArmGeometry(ISO, 0, 0, 1000, 750, (256, 256), (1.2, 1.2), rect)
    np.testing.assert_array_equal(gr.in_field(pts), [False, True, False, False])


def test_json_round_trip():
    g = CArmGeometry(ISO, 12, -7, 1200, 800, (120, 90), (0.5, 0.7), Collimation("rect", (50, 40), (30, 20)))
    assert CArmGeometry.from_dict(g.to_dict()) == g


@pytest.mark.parametrize("kwargs, message", [
    (dict(sid_mm=700, sod_mm=750), "SID"),
    (dict(sid_mm=750, sod_mm=750), "SID"),
    (dict(sod_mm=-1), "SOD"),
    (dict(pixel_spacing_mm=(0, 1)), "pixel spacing"),
    (dict(detector_size_px=(0, 10)), "detector size"),
    (dict(primary_deg=float("nan")), "finite"),
])
def test_bad_geometry_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CArmGeometry(ISO, **kwargs)


def test_centred_collimation_covers_the_requested_fraction():
    rect = Collimation.centred("rect", 0.5, (200, 100))
    assert rect.contains(np.array([[99.5, 49.5], [149.0, 74.0]])).tolist() == [True, True]
    assert rect.contains(np.array([[150.0, 49.5], [99.5, 75.0]])).tolist() == [False, False]
    circle = Collimation.centred("circle", 1.0, (200, 100))
    assert circle.radius_px == 50.0
    with pytest.raises(ValueError, match="fraction"):
        Collimation.centred("rect", 0.0, (200, 100))


@pytest.mark.parametrize("field", [Collimation(), Collimation("rect", (30.2, 20.5), (21.0, 9.0)),
                                   Collimation("circle", (10.5, 25.0), radius_px=13.0)])
def test_field_mask_is_contains_on_the_pixel_centres(field):
    vv, uu = np.mgrid[0:40, 0:50]
    mask = field.field((50, 40))
    assert mask.shape == (40, 50) and np.array_equal(mask, field.contains(np.stack([uu, vv], -1)))


def test_parse_views():
    from FluoroLandmarksLib.synthesis import parse_views

    assert parse_views(" 90/0, -30/15.5;0/0 ") == ((90.0, 0.0), (-30.0, 15.5), (0.0, 0.0))
    assert parse_views("") == ()
    with pytest.raises(ValueError, match="PRIMARY/SECONDARY"):
        parse_views("90")


def test_backproject_inverts_project():
    g = CArmGeometry(ISO, 37.0, -12.0, 1100.0, 800.0, (200, 300), (1.3, 1.1))
    points = np.random.default_rng(0).normal(ISO, 60.0, size=(20, 3))
    uv, depth = g.project(points)
    assert np.allclose(g.backproject(uv, depth), points, atol=1e-9)


def test_cached_matrices_are_read_only_and_follow_a_replaced_geometry():
    g = CArmGeometry((0.0, 0.0, 0.0), 30.0, 10.0)
    assert g.world_to_camera is g.world_to_camera  # computed once
    with pytest.raises(ValueError):
        g.world_to_camera[0, 0] = 5.0  # shared by every caller: not writable
    turned = replace(g, primary_deg=60.0)
    assert np.allclose(turned.rotation, carm_rotation(60.0, 10.0))
    assert not np.allclose(turned.world_to_camera, g.world_to_camera)
    assert turned == replace(g, primary_deg=60.0) and g.to_dict() == CArmGeometry.from_dict(g.to_dict()).to_dict()
