"""DRR accuracy against analytic phantoms."""

from dataclasses import replace

import numpy as np
import pytest

from FluoroLandmarksLib.dataset import render_coarse
from FluoroLandmarksLib.drr import DRRRenderer, detector_image, hu_to_mu, validate_volume
from FluoroLandmarksLib.geometry import CArmGeometry, Collimation

MU_WATER = 0.02


def random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def voxelize(shape_kji, ijk_to_ras, inside, supersample=4):
    """Partial-volume fraction of each voxel inside the region ``inside(ras) -> bool``."""
    k, j, i = np.meshgrid(*[np.arange(n, dtype=float) for n in shape_kji], indexing="ij")
    frac = np.zeros(shape_kji)
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    for a in offsets:
        for b in offsets:
            for c in offsets:
                ijk = np.stack([i + a, j + b, k + c], axis=-1)
                frac += inside(ijk @ ijk_to_ras[:3, :3].T + ijk_to_ras[:3, 3])
    return frac / supersample ** 3


@pytest.fixture(scope="module")
def ellipsoid():
    """Water ellipsoid in air in an oblique, anisotropic volume (random rotation, 1.1/0.8/1.5 mm)."""
    rng = np.random.default_rng(7)
    ijk_to_ras = np.eye(4)
    ijk_to_ras[:3, :3] = random_rotation(rng) @ np.diag([1.1, 0.8, 1.5])
    ijk_to_ras[:3, 3] = [-30.0, 20.0, 5.0]
    shape = (60, 90, 80)
    centre = ijk_to_ras[:3, :3] @ np.array([39.5, 44.5, 29.5]) + ijk_to_ras[:3, 3]
    axes, rotation = np.array([30.0, 22.0, 18.0]), random_rotation(rng)
    transform = np.diag(1 / axes) @ rotation.T  # RAS offset -> unit-sphere coordinates
    frac = voxelize(shape, ijk_to_ras, lambda ras: (((ras - centre) @ transform.T) ** 2).sum(-1) <= 1)
    return DRRRenderer(MU_WATER * frac, ijk_to_ras), centre, transform


@pytest.mark.parametrize("angles", [(0, 0), (90, 0), (30, 20), (-45, -30), (160, 10)])
def test_ellipsoid_line_integrals_match_exact_chords(ellipsoid, angles):
    renderer, centre, transform = ellipsoid
    g = CArmGeometry(tuple(centre + [3, -2, 4]), *angles, sid_mm=1000, sod_mm=700, detector_size_px=(128, 128),
                     pixel_spacing_mm=(1.0, 1.0))
    line = renderer.render([g])[0]
    vv, uu = np.meshgrid(np.arange(128), np.arange(128), indexing="ij")
    src, dirs = g.rays(np.stack([uu.ravel(), vv.ravel()], axis=1))
    p, d = (src - centre) @ transform.T, dirs @ transform.T  # ray in unit-sphere coordinates
    a, b, c = (d * d).sum(1), 2 * (p * d).sum(1), (p * p).sum() - 1
    disc = b * b - 4 * a * c
    chord = np.where(disc > 0, np.sqrt(np.maximum(disc, 0)) / a, 0.0)  # mm, since |dirs| = 1
    used = chord >= 0.5 * chord.max()
    assert used.sum() > 1000
    relative = (line.ravel()[used] - MU_WATER * chord[used]) / (MU_WATER * chord[used])
    assert np.sqrt(np.mean(relative ** 2)) <= 0.01


def test_views_are_batched_identically(ellipsoid):
    renderer, centre, _ = ellipsoid
    gs = [CArmGeometry(tuple(centre), p, s, 1000, 700, (64, 48), (2.0, 2.0)) for p, s in [(0, 0), (5, 3), (90, 0)]]
    together = renderer.render(gs)
    for g, image in zip(gs, together):
        np.testing.assert_allclose(image, renderer.render([g])[0], rtol=1e-5, atol=1e-6)


def test_bead_lands_at_its_projected_position():
    spacing = np.array([0.7, 0.9, 1.2])
    ijk_to_ras = np.diag([-spacing[0], -spacing[1], spacing[2], 1.0])
    bead = np.array([-11.3, -17.9, 23.6])  # RAS mm, off the voxel grid
    frac = voxelize((40, 50, 60), ijk_to_ras, lambda ras: ((ras - bead) ** 2).sum(-1) <= 1.5 ** 2)
    renderer = DRRRenderer(2.0 * frac, ijk_to_ras)
    for angles in [(0, 0), (90, 0), (-30, 25)]:
        g = CArmGeometry((-20.0, -22.0, 24.0), *angles, 1000, 700, (128, 128), (0.5, 0.5))
        line = renderer.render([g])[0]
        expected = g.project(bead[None])[0][0]
        vv, uu = np.mgrid[0:128, 0:128]
        window = (np.abs(uu - expected[0]) < 12) & (np.abs(vv - expected[1]) < 12)
        weights = line * window
        centroid = np.array([(weights * uu).sum(), (weights * vv).sum()]) / weights.sum()
        assert np.linalg.norm(centroid - expected) <= 0.5, (angles, centroid, expected)
        assert weights.sum() > 0.99 * line.sum()  # all signal near the projected position


def test_detector_image_collimation_and_noise():
    g = CArmGeometry((0.0, 0.0, 0.0), 0, 0, 1000, 750, (64, 64), (1.0, 1.0),
                     Collimation("circle", (31.5, 31.5), radius_px=20))
    line = np.full((64, 64), 2.0, dtype=np.float32)
    clean = detector_image(line, g)
    assert clean[32, 32] == pytest.approx(2.0, abs=1e-6)
    assert clean[0, 0] == pytest.approx(-np.log(1e-4), rel=1e-5)  # shuttered: white
    noisy = detector_image(line, g, photons_per_pixel=1e4, rng=np.random.default_rng(0))
    inside = noisy[22:42, 22:42]
    assert inside.mean() == pytest.approx(2.0, abs=0.01)
    # Poisson: var(-ln(N/N0)) ~ 1 / (N0 exp(-L))
    assert inside.std() == pytest.approx(np.sqrt(np.exp(2.0) / 1e4), rel=0.15)
    with pytest.raises(ValueError, match="shape"):
        detector_image(np.zeros((10, 10)), g)


def test_only_rays_inside_the_collimated_field_are_traced(ellipsoid):
    renderer, centre, _ = ellipsoid
    open_view = CArmGeometry(tuple(centre), 20, 10, 1000, 750, (48, 40), (2.0, 2.0))
    field = Collimation("circle", (20.0, 22.0), radius_px=12)
    full, shuttered = renderer.render([open_view, replace(open_view, collimation=field)])
    inside = field.field((48, 40))
    assert 0 < inside.sum() < inside.size and (full[inside] > 0.5).any()
    np.testing.assert_allclose(shuttered[inside], full[inside], atol=1e-5)  # the same rays inside ...
    assert (shuttered[~inside] == 0).all() and (full[~inside] > 0).any()  # ... none outside: no primary beam


def test_half_resolution_rays_of_a_collimated_view_cover_its_field(ellipsoid):
    # Training DRRs trace rays on a 2x coarser detector, only inside the field grown by 1.5 coarse px:
    # every detector pixel in the field then reads the same values as without the collimation.
    renderer, centre, _ = ellipsoid
    view = CArmGeometry(tuple(centre), 20, 10, 1000, 750, (64, 64), (1.5, 1.5))
    for field in (Collimation("rect", (30.5, 25.0), (31.0, 21.0)), Collimation("circle", (33.0, 30.5), radius_px=17.0)):
        full, shuttered = render_coarse(renderer, [view, replace(view, collimation=field)], 2)
        inside = field.field((64, 64))
        assert (full[inside] > 0.5).any()
        np.testing.assert_allclose(shuttered[inside], full[inside], atol=1e-5)


def test_hu_to_mu():
    np.testing.assert_allclose(hu_to_mu(np.array([-1000, 0, 1000, -1024])), [0, 0.02, 0.04, 0], atol=1e-9)


@pytest.mark.parametrize("array, matrix, message", [
    (np.zeros((4, 4)), np.eye(4), "3D"),
    (np.zeros((1, 4, 4)), np.eye(4), "single-slice"),
    (np.full((3, 4, 4), np.nan), np.eye(4), "NaN"),
    (np.zeros((3, 4, 4)), np.diag([1, 0, 1, 1]), "spacing"),
    (np.zeros((3, 4, 4)), np.eye(3), "4x4"),
    (np.zeros((3, 4, 4), dtype=bool), np.eye(4), "real scalar"),
])
def test_bad_volumes_are_refused(array, matrix, message):
    with pytest.raises(ValueError, match=message):
        validate_volume(array, matrix)


def test_negative_attenuation_is_refused():
    with pytest.raises(ValueError, match="hu_to_mu"):
        DRRRenderer(-np.ones((3, 4, 5)), np.eye(4))
