"""Landmark shape model: principal modes of a population and the MAP fit to 2D estimates under
a C-arm's perspective projection (constructed populations with known answers)."""

import numpy as np
import pytest

from FluoroLandmarksLib.geometry import CArmGeometry
from FluoroLandmarksLib.shape_model import ShapeModel, View


def population(rng, n=400, landmarks=20):
    """Heads = one base configuration scaled per axis (0.9-1.1) and shifted, about their centres."""
    base = rng.normal(size=(landmarks, 3)) * [60, 80, 70]
    centres = rng.normal(size=(n, 3)) * 5
    scales = rng.uniform(0.9, 1.1, size=(n, 1, 3))
    return base * scales + centres[:, None], centres, base


def test_modes_are_orthonormal_and_explain_the_population():
    rng = np.random.default_rng(0)
    points, centres, _ = population(rng)
    model = ShapeModel.build(points, centres, n_modes=6)
    flat = model.modes.reshape(6, -1)
    assert np.allclose(flat @ flat.T, np.eye(6), atol=1e-9)
    assert np.all(np.diff(model.variances) <= 0)
    # Three per-axis scalings: three modes carry the variance, the rest is ~0.
    assert model.variances[2] > 100 * model.variances[3]
    x = (points - centres[:, None])[5]
    b = model.modes.reshape(6, -1) @ (x - model.mean).ravel()
    assert np.allclose(model.shape(b), x, atol=1e-6)
    with pytest.raises(ValueError):
        ShapeModel.build(points[:1], centres[:1])


@pytest.mark.parametrize("primary", [0.0, 90.0, -35.0])
def test_fit_recovers_a_head_from_exact_projections_also_where_unseen(primary):
    rng = np.random.default_rng(1)
    points, centres, base = population(rng)
    model = ShapeModel.build(points, centres, n_modes=6)
    head = base * [1.06, 0.94, 1.03]  # a new head, relative to its centre
    g = CArmGeometry((0.0, 0.0, 0.0), primary, 10.0, 1100.0, 800.0, (256, 256), (1.4, 1.4))
    shift_across = 30.0 * g.u_axis - 20.0 * g.v_axis  # the head's centre off the isocenter, across the beam
    truth = head + shift_across
    uv, depth = g.project(truth)
    weight = np.ones(len(uv))
    weight[::3] = 0.0  # these landmarks are not seen (out of the image): their estimates are ignored
    uv_seen = np.where(weight[:, None] > 0, uv, uv + 500.0)
    fit = model.fit(uv_seen, weight, g, sigma_mm=0.5)
    assert np.abs(fit.points_ras - truth).max() < 1.5
    assert np.abs(fit.uv - uv).max() < 0.5
    assert np.abs(fit.depth_mm - depth).max() < 1.5
    assert np.allclose(fit.centre_ras, shift_across, atol=1.0)


def test_fit_resists_an_outlier_and_refuses_bad_shapes():
    rng = np.random.default_rng(2)
    points, centres, base = population(rng)
    model = ShapeModel.build(points, centres, n_modes=6)
    g = CArmGeometry((0.0, 0.0, 0.0), 0.0, 0.0, 1000.0, 750.0)
    uv, _ = g.project(base)
    bad = uv.copy()
    bad[0] += 60.0  # one estimate 60 px off
    fit = model.fit(bad, np.ones(len(uv)), g, sigma_mm=1.0)
    assert np.linalg.norm(fit.uv - uv, axis=1).max() < 3.0
    with pytest.raises(ValueError, match="estimates"):
        model.fit(uv[:5], np.ones(5), g)
    # With no landmark counting the fit is the population mean centred on the isocenter.
    empty = model.fit(uv, np.zeros(len(uv)), g)
    assert np.allclose(empty.points_ras, model.mean, atol=1e-3)


def test_a_known_head_depth_places_the_head_along_the_beam():
    rng = np.random.default_rng(3)
    points, centres, base = population(rng)
    model = ShapeModel.build(points, centres, n_modes=6)
    g = CArmGeometry((0.0, 0.0, 0.0), 30.0, 0.0, 1000.0, 750.0, (256, 256), (1.4, 1.4))
    truth = base + 25.0 * g.beam_direction  # the head 25 mm further from the source than the isocenter
    uv, _ = g.project(truth)
    weight = np.ones(len(uv))
    assumed = model.fit(uv, weight, g, sigma_mm=0.5)
    known = model.fit(uv, weight, g, sigma_mm=0.5, head_depth_mm=g.sod_mm + 25.0, depth_sd_mm=1.0)
    # Seen from one view the shift along the beam is (nearly) a size change: the default prior keeps
    # the head near the isocenter; the known depth puts it where it is.
    assert abs(assumed.centre_ras @ g.beam_direction - 25.0) > 10.0
    assert np.abs(known.centre_ras - 25.0 * g.beam_direction).max() < 2.0
    assert np.linalg.norm(known.points_ras - truth, axis=1).max() < 3.0


def test_a_second_view_places_the_head_along_the_first_beam():
    rng = np.random.default_rng(3)
    points, centres, base = population(rng)
    model = ShapeModel.build(points, centres, n_modes=6)
    frontal = CArmGeometry((0.0, 0.0, 0.0), 0.0, 0.0, 1000.0, 750.0, (256, 256), (1.4, 1.4))
    lateral = CArmGeometry((0.0, 0.0, 0.0), 90.0, 0.0, 1000.0, 750.0, (256, 256), (1.4, 1.4))
    head = base * [1.05, 0.95, 1.02]
    truth = head + 25.0 * frontal.beam_direction  # 25 mm off the isocenter along the frontal beam
    views = [View(frontal.project(truth)[0], np.ones(len(truth)), frontal, frontal.sod_mm),
             View(lateral.project(truth)[0], np.ones(len(truth)), lateral, lateral.sod_mm)]
    one = model.fit_views(views[:1], sigma_mm=0.5)
    both = model.fit_views(views, sigma_mm=0.5)
    # One view leaves the depth to the prior (the isocenter); the lateral view sees it across its beam.
    assert np.linalg.norm(one.points_ras - truth, axis=1).mean() > 10.0
    assert np.linalg.norm(both.points_ras - truth, axis=1).max() < 1.5
    assert np.abs(both.uv - views[0].uv_px).max() < 0.5  # the result's projections are the first view's
    same = model.fit(views[0].uv_px, views[0].weight, frontal, sigma_mm=0.5)
    assert np.allclose(same.points_ras, one.points_ras)  # fit() is fit_views() with one view
