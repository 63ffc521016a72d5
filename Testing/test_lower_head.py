"""Synthetic lower head below the sample CT: the CT's own voxels stay where they were, the new
anatomy lies where the landmarks put it (mandible in front of the spine, airway between them),
and bad templates are refused."""

import numpy as np
import pytest
from conftest import SAMPLE_CT, SAMPLE_LANDMARKS

from FluoroLandmarksLib.lower_head import ANCHORS, LowerHead
from FluoroLandmarksLib.population import HeadPopulation


@pytest.fixture(scope="module")
def sample():
    from FluoroLandmarksLib.headless import read_ct_and_landmarks

    return read_ct_and_landmarks(SAMPLE_CT, SAMPLE_LANDMARKS)


def test_extension_keeps_the_ct_and_puts_anatomy_below_it(sample):
    hu, ijk_to_ras, labels, points = sample
    lower = LowerHead.from_landmarks(labels, points, depth_mm=90)
    extended, m = lower.extend(hu, ijk_to_ras, np.random.default_rng(0))
    added = extended.shape[0] - hu.shape[0]
    assert added == int(np.ceil(90 / ijk_to_ras[2, 2]))
    assert np.array_equal(extended[added:], hu)  # the CT's voxels, unchanged ...
    assert np.allclose(m @ [3, 4, added, 1], ijk_to_ras @ [3, 4, 0, 1])  # ... at the same RAS positions
    ras_to_ijk = np.linalg.inv(m)

    def hu_at(ras):
        i, j, k = np.round(ras_to_ijk[:3, :3] @ ras + ras_to_ijk[:3, 3]).astype(int)
        return extended[k, j, i]

    a = lower.anchors_ras
    edge_z = ijk_to_ras[2, 3]
    mid = (a["zygion_right"][0] + a["zygion_left"][0]) / 2
    below = extended[:added]
    assert (below > 800).sum() > 2000  # mandible and teeth (voxels of ~1 mm x 1 mm x 1.5 mm)
    bone_k, bone_j, bone_i = np.nonzero(below > 800)
    bone_ras = np.c_[bone_i, bone_j, bone_k, np.ones_like(bone_i)] @ m.T
    assert np.median(bone_ras[:, 1]) > a["dens_tip"][1] + 10  # in front of the spine (anterior = +y)
    spine = np.array([mid, a["dens_tip"][1], edge_z - 40])
    assert 200 < hu_at(spine) < 500  # a cervical vertebral body below the dens
    assert hu_at(spine + [0, 23, 10]) == -1000  # the airway in front of it
    assert -50 < hu_at(spine + [35, 0, -20]) < 120  # neck soft tissue beside it
    assert hu_at(spine + [0, 90, -45]) == -1000  # air in front of the neck, below the chin
    assert -1000 <= below.min() and below.max() <= 2800 and np.isfinite(below).all()


def test_population_with_lower_head_keeps_identity_variant_and_landmarks(sample):
    hu, ijk_to_ras, labels, points = sample
    plain = HeadPopulation(hu, ijk_to_ras, points, factor=2)
    lower = HeadPopulation(hu, ijk_to_ras, points, factor=2, lower_head=LowerHead.from_landmarks(labels, points, 60))
    assert np.allclose(plain.centre, lower.centre)  # views stay centred on the CT's head
    a, b = plain.sample(np.random.default_rng(1), identity=True), lower.sample(np.random.default_rng(1), identity=True)
    added = b.hu.shape[0] - a.hu.shape[0]
    assert added == 20 and np.abs(b.hu[added:] - a.hu).max() < 0.05  # HU (float32 grid coordinates)
    assert np.allclose(b.landmarks_ras, points) and np.allclose(b.ijk_to_ras @ [0, 0, added, 1], a.ijk_to_ras @ [0, 0, 0, 1])
    varied = lower.sample(np.random.default_rng(2))
    assert varied.hu.shape == b.hu.shape and not np.allclose(varied.landmarks_ras, points)


def test_tube_distance_is_exact_within_reach():
    from FluoroLandmarksLib.lower_head import _tube

    m = np.diag([-1.9, -1.9, 3.0, 1.0])
    m[:3, 3] = [80.0, 60.0, -40.0]
    kk, jj, ii = np.meshgrid(np.arange(14), np.arange(40), np.arange(45), indexing="ij")
    grid = (np.stack([ii, jj, kk, np.ones_like(ii)], -1) @ m.T)[..., :3]
    t = np.linspace(0, 1, 90)[:, None]
    curves = [np.array([0.0, 0.0, -20.0]) + t * [30, -20, 10], np.array([10.0, 20.0, -30.0]) + t * [-40, 5, 0]]
    brute = np.linalg.norm(grid[..., None, :] - np.concatenate(curves), axis=-1).min(-1)
    near = brute <= 6.0
    got = _tube(grid, curves, 6.0)
    assert near.sum() > 500 and np.abs(got[near] - brute[near]).max() < 1e-4
    assert (got[~near] > 6.0).all()  # beyond reach: never closer than it


def test_lower_head_refuses_missing_anchors_and_non_axial_templates(sample):
    hu, ijk_to_ras, labels, points = sample
    keep = [n for n, label in enumerate(labels) if label != ANCHORS[0]]
    with pytest.raises(ValueError, match=ANCHORS[0]):
        LowerHead.from_landmarks([labels[n] for n in keep], points[keep], 50)
    lower = LowerHead.from_landmarks(labels, points, 50)
    flipped = ijk_to_ras.copy()
    flipped[:3, 2] *= -1  # k runs inferior
    with pytest.raises(ValueError, match="superior"):
        lower.extend(hu, flipped, np.random.default_rng(0))
