"""FemurSegment algorithm files on constructed inputs with known answers: anatomy (sides,
proximal cut), metrics, calibration fit and its errors, input checks, body box, boundary snapping,
patches, model files."""

import copy
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from FemurSegmentLib import anatomy
from FemurSegmentLib.boundary import _fill_slices, close_notches, snap_to_cortex
from FemurSegmentLib.calibration import CalibrationError, fit
from FemurSegmentLib.evaluation import reference_sides
from FemurSegmentLib.inference import labels_from_probability
from FemurSegmentLib.metrics import hd95, overlap, r_squared
from FemurSegmentLib.model import FemurModel
from FemurSegmentLib.network import SmallVNet, for_inference
from FemurSegmentLib.training import PATCH, Case, sample_patch
from FemurSegmentLib.volumes import InputError, body_box, check_ct


def grid(shape_kji, spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)):
    image = sitk.Image([int(s) for s in shape_kji[::-1]], sitk.sitkInt16)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection([float(d) for d in direction])
    return image


def ct_like(shape_kji=(40, 64, 64), spacing=(2.0, 2.0, 3.0)):
    a = np.full(shape_kji, -1000, np.int16)
    a[:, 8:-8, 8:-8] = 40
    a[:, 20:30, 20:30] = 900
    image = sitk.GetImageFromArray(a)
    image.SetSpacing(spacing)
    return image


@pytest.mark.parametrize("flip", [False, True])
def test_split_sides_follows_patient_left_in_lps(flip):
    # Array i runs along LPS +x (to the patient's left), or along -x when flipped.
    g = grid((10, 20, 40), direction=(-1, 0, 0, 0, 1, 0, 0, 0, 1) if flip else (1, 0, 0, 0, 1, 0, 0, 0, 1),
             origin=(20.0, 0, 0) if flip else (-20.0, 0, 0))
    mask = np.zeros((10, 20, 40), bool)
    mask[2:8, 5:15, 2:10] = True     # low i: x < 0 (patient's right) unless flipped
    mask[2:8, 5:15, 30:38] = True    # high i
    sides = anatomy.split_sides(mask, g, midline_x=0.0)
    low, high = ("left", "right") if flip else ("right", "left")
    assert sides[low][2:8, 5:15, 2:10].all() and not sides[low][:, :, 20:].any()
    assert sides[high][2:8, 5:15, 30:38].all() and not sides[high][:, :, :20].any()


def test_split_sides_keeps_only_each_sides_largest_component():
    g = grid((10, 10, 40), origin=(-20.0, 0, 0))
    mask = np.zeros((10, 10, 40), bool)
    mask[1:9, 1:9, 25:35] = True
    mask[0, 0, 39] = True             # a speck on the same side
    sides = anatomy.split_sides(mask, g, 0.0)
    assert sides["left"].sum() == 8 * 8 * 10 and not sides["right"].any()


def test_proximal_cut_is_length_below_the_apex():
    g = grid((60, 4, 4), spacing=(1.0, 1.0, 3.0))    # k -> superior, 3 mm slices
    mask = np.zeros((60, 4, 4), bool)
    mask[5:50] = True
    cut = anatomy.proximal(mask, g, length_mm=60.0)
    k = np.flatnonzero(cut.any(axis=(1, 2)))
    assert k.max() == 49 and k.min() == 49 - 20       # 60 mm = 20 slices below the apex slice


def test_overlap_and_hausdorff_on_known_shapes():
    a = np.zeros((20, 20, 20), bool)
    b = a.copy()
    a[5:15, 5:15, 5:15] = True
    b[5:15, 5:15, 7:17] = True                        # shifted by 2 voxels along i
    m = overlap(a, b)
    assert m["dice"] == pytest.approx(2 * 800 / 2000)
    assert m["sensitivity"] == pytest.approx(0.8)
    assert m["specificity"] == pytest.approx(1 - 200 / (8000 - 1000))
    assert hd95(a, b, (1.0, 1.0, 2.5)) == pytest.approx(5.0, abs=0.01)   # 2 voxels x 2.5 mm
    assert hd95(a, a, (1, 1, 1)) == 0.0


def test_r_squared():
    assert r_squared([1, 2, 3], [1, 2, 3]) == 1.0
    assert r_squared([2, 2, 2], [1, 2, 3]) == pytest.approx(0.0)


def test_calibration_fit_recovers_a_line():
    d = np.array([0.0, 50, 100, 200])
    c = fit(d, 1.2 * d - 15)
    assert c.slope_hu_per_mg_cm3 == pytest.approx(1.2) and c.intercept_hu == pytest.approx(-15)
    assert c.r2 == pytest.approx(1.0) and c.density(105.0) == pytest.approx(100.0)


@pytest.mark.parametrize("densities, hu, message", [
    ([100.0], [120.0], "at least two rods"),
    ([0.0, 100, 200], [10.0, 130, 90], "not monotonic"),
    ([0.0, 100, 100], [10.0, 130, 140], "must all differ"),
    ([0.0, 100], [10.0, float("nan")], "non-finite"),
])
def test_calibration_rejects_bad_rods(densities, hu, message):
    with pytest.raises(CalibrationError, match=message):
        fit(densities, hu)


def test_check_ct_accepts_a_ct():
    check_ct(ct_like())


@pytest.mark.parametrize("make, message", [
    (lambda: sitk.GetImageFromArray(np.random.default_rng(0).uniform(0, 1200, (40, 64, 64)).astype(np.float32)),
     "Hounsfield"),
    (lambda: sitk.GetImageFromArray(np.zeros((256, 256), np.int16)), "3D"),
    (lambda: sitk.GetImageFromArray(np.zeros((10, 10, 10), np.int16)), "too small"),
    (lambda: sitk.GetImageFromArray(np.where(np.arange(40 * 64 * 64).reshape(40, 64, 64) == 5, np.nan,
                                             sitk.GetArrayFromImage(ct_like()).astype(np.float32))), "NaN"),
])
def test_check_ct_rejects_bad_input(make, message):
    image = make()
    image.SetSpacing([3.0] * image.GetDimension()) if message != "too small" else None
    with pytest.raises(InputError, match=message):
        check_ct(image)


def test_check_ct_rejects_a_huge_volume(monkeypatch):
    import FemurSegmentLib.volumes as volumes

    monkeypatch.setattr(volumes, "MAX_VOXELS", 1000)
    with pytest.raises(InputError, match="too large"):
        volumes.check_ct(ct_like())


def test_unaugmented_patch_samples_the_volume_around_a_femur_voxel():
    k, j, i = np.indices((80, 160, 160)).astype(np.float32)
    ramp = k + 2 * j + 3 * i                          # trilinear interpolation reproduces it exactly
    femur = np.zeros(ramp.shape, np.uint8)
    femur[36:44, 76:84, 76:84] = 1
    x, y = sample_patch(Case("ramp", ramp, femur), np.random.default_rng(1), augment=False, positive=1.0)
    assert x.shape == PATCH and y.shape == PATCH
    assert all(np.allclose(np.diff(x, axis=a), g, atol=1e-3) for a, g in ((0, 1), (1, 2), (2, 3)))
    centre = x[PATCH[0] // 2, PATCH[1] // 2, PATCH[2] // 2] - (1 + 2 + 3) / 2  # patch centre is half a voxel before
    assert y[PATCH[0] // 2, PATCH[1] // 2, PATCH[2] // 2] and y.sum() == pytest.approx(femur.sum(), rel=0.5)
    kc = [v for v in np.argwhere(femur) if np.isclose(ramp[tuple(v)], centre)]
    assert kc, "the patch is not centred on a femur voxel"


def test_network_shapes():
    net = SmallVNet().eval()
    with torch.no_grad():
        assert net(torch.zeros(1, 1, 16, 32, 24)).shape == (1, 2, 16, 32, 24)


def test_inference_copy_folds_batch_norm_and_computes_the_same_function():
    torch.manual_seed(0)
    net = SmallVNet()
    for bn in (m for m in net.modules() if isinstance(m, torch.nn.BatchNorm3d)):  # statistics far from identity
        bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.2, 3), bn.weight.data.uniform_(0.5, 2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fused = for_inference(net)
    count = lambda m: sum(isinstance(x, torch.nn.BatchNorm3d) for x in m.modules())  # noqa: E731
    assert count(fused) < count(net) // 2  # the convolutions' BatchNorms are gone
    assert net.training and all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())  # net untouched
    x = torch.randn(1, 1, 16, 32, 24)
    with torch.no_grad():
        expected = net.eval()(x)
        assert torch.allclose(fused(x.contiguous(memory_format=torch.channels_last_3d)), expected, atol=1e-4)
        identity = copy.deepcopy(net)  # the same convolutions with identity BatchNorms: a different function
        for bn in (m for m in identity.modules() if isinstance(m, torch.nn.BatchNorm3d)):
            bn.reset_running_stats(), bn.reset_parameters()
        assert not torch.allclose(identity(x), expected, atol=1e-2)


def test_model_round_trip_and_tampered_weights(tmp_path):
    folder = FemurModel(SmallVNet(), {}).save(tmp_path / "m", {"name": "test"})
    loaded = FemurModel.load(folder)
    assert loaded.card["sha256"] and loaded.card["parameters"] > 0
    weights = folder / "weights.pt"
    weights.write_bytes(weights.read_bytes()[:-1] + bytes([weights.read_bytes()[-1] ^ 1]))
    with pytest.raises(ValueError, match="sha256"):
        FemurModel.load(folder)
    card = json.loads((folder / "model_card.json").read_text())
    assert card["architecture"] == SmallVNet().config


def test_compare_on_reference_slices_and_excluded_slices():
    from FemurSegmentLib.evaluation import compare, summarize

    g = grid((20, 10, 10), spacing=(1.0, 1.0, 2.0))
    true = np.zeros((20, 10, 10), bool)
    true[5:10, 2:8, 2:8] = True
    predicted = np.zeros((20, 10, 10), np.uint8)
    predicted[0:15, 2:8, 2:8] = anatomy.LABEL_VALUES["left"]      # extends 5 slices beyond the reference each way
    everywhere = compare(predicted, {"left": true}, g)["left"]
    assert everywhere["dice"] == pytest.approx(2 * 180 / (540 + 180))
    on_slices = compare(predicted, {"left": true}, g, reference_slices=True)["left"]
    assert on_slices["dice"] == 1.0 and on_slices["slices"] == [5, 9]
    assert on_slices["volume_true_cm3"] == pytest.approx(180 * 2.0 / 1000)
    excluded = compare(predicted, {"left": true}, g, reference_slices=True, exclude={"left": [5, 6]})["left"]
    assert excluded["volume_true_cm3"] == pytest.approx(108 * 2.0 / 1000)
    assert summarize({"a": {"left": everywhere}, "b": {"left": on_slices}})["mean_dice"] == pytest.approx(
        (everywhere["dice"] + 1.0) / 2)


def test_proximal_labels_cut_each_side_at_its_own_apex():
    g = grid((60, 4, 8), spacing=(1.0, 1.0, 3.0))
    labels = np.zeros((60, 4, 8), np.uint8)
    labels[0:50, :, :4] = 1
    labels[0:40, :, 4:] = 2
    cut = anatomy.proximal_labels(labels, g, length_mm=30.0)
    assert np.flatnonzero((cut == 1).any(axis=(1, 2))).tolist() == list(range(39, 50))
    assert np.flatnonzero((cut == 2).any(axis=(1, 2))).tolist() == list(range(29, 40))


def test_snap_to_cortex_recovers_a_bone_from_a_coarse_mask():
    # A "femur" cylinder along k: cortex 900 HU (radius 8..10 mm), marrow 60 HU, in muscle 50 HU.
    shape = (20, 60, 60)
    k, j, i = np.indices(shape)
    r = np.hypot((j - 30) * 0.8, (i - 30) * 0.8)                       # mm, 0.8 mm pixels
    hu = np.where(r <= 10, np.where(r >= 8, 900, 60), 50).astype(np.int16)
    ct = sitk.GetImageFromArray(hu)
    ct.SetSpacing((0.8, 0.8, 2.0))
    truth = r <= 10
    for coarse in (r <= 11.2, r <= 9.4):                                # 1.2 mm too big / 0.6 mm too small
        refined = snap_to_cortex(coarse, ct)
        assert overlap(refined, truth)["dice"] > 0.99 > overlap(coarse, truth)["dice"]
    assert not snap_to_cortex(np.zeros(shape, bool), ct).any()


def test_notches_are_closed_where_the_cortex_is_thin():
    # A solid "femoral head" (trabecular bone 300 HU, radius 12 mm) whose cortex is missing over a
    # 4 mm wide sector, where 150 HU bone reaches the surface; the coarse mask follows the bone
    # but is cut 3 mm deep there, as the network's low probability cuts it.
    shape = (10, 60, 60)
    k, j, i = np.indices(shape)
    r = np.hypot(j - 30.0, i - 30.0)                                    # mm, 1 mm pixels
    notch = (np.abs(j - 30) <= 2) & (i > 30)
    hu = np.where(r <= 12, np.where(notch & (r > 7), 150, 300), 40).astype(np.int16)
    ct = sitk.GetImageFromArray(hu)
    ct.SetSpacing((1.0, 1.0, 3.0))
    truth = r <= 12
    coarse = truth & ~(notch & (r > 9))
    open_ = snap_to_cortex(coarse, ct)
    closed = close_notches(open_, ct)
    gap = notch & truth
    assert (closed & gap).sum() >= 0.75 * gap.sum() > (open_ & gap).sum()  # 47 vs 31 of 56 voxels per slice
    assert overlap(closed, truth)["dice"] > overlap(open_, truth)["dice"] + 0.005
    assert not (closed & (r > 13)).any()                               # nothing added outside the bone


def test_slice_filling_matches_a_fill_of_each_slice_alone():
    mask = np.zeros((4, 12, 14), bool)
    mask[0, 2:9, 2:9] = True
    mask[0, 4:7, 4:7] = False       # an enclosed hole: filled
    mask[1, 0:6, 0:6] = True
    mask[1, 0:3, 0:3] = False       # open to the slice's border: kept
    mask[2, 3:11, 5:12] = True
    mask[2, 5:8, 8:14] = False      # a notch running out of the slice: kept
    mask[3] = np.random.default_rng(0).random((12, 14)) > 0.45
    expected = np.stack([sitk.GetArrayFromImage(sitk.BinaryFillhole(sitk.GetImageFromArray(s.astype(np.uint8)))) > 0
                         for s in mask])
    filled = _fill_slices(mask)
    assert filled[0, 4:7, 4:7].all() and not filled[1, 0:3, 0:3].any()
    np.testing.assert_array_equal(filled, expected)


def test_body_box_leaves_out_the_table_but_keeps_both_legs():
    hu = np.full((30, 80, 100), -1000.0)
    hu[:, 10:50, 10:45] = 40          # left leg
    hu[:, 10:50, 55:90] = 40          # right leg, not touching
    hu[:, 62, :] = 300                # table, below the body, separate (7 % of a leg)
    box = body_box(hu, margin=2)
    assert box[1] == slice(8, 52) and box[2] == slice(8, 92)
    with pytest.raises(InputError):
        body_box(np.full((5, 5, 5), -1000.0))


def test_labels_from_probability_thresholds_and_assigns_sides():
    # Two "femurs" (cylinders along k, 400 HU, radius 25 mm) left and right of the midline in a 0 HU body; the
    # probability falls off linearly from 1 on the axes to 0 at 40 mm.
    shape = (60, 100, 160)
    k, j, i = np.indices(shape)
    hu = np.full(shape, -1000, np.int16)
    hu[:, 10:90, 5:155] = 0
    distance = np.minimum(np.hypot(j - 50, i - 40), np.hypot(j - 50, i - 120)) * 1.5  # mm, 1.5 mm pixels
    hu[distance <= 25] = 400
    ct = sitk.GetImageFromArray(hu)
    ct.SetSpacing((1.5, 1.5, 3.0))
    probability = sitk.GetImageFromArray(np.clip(1 - distance / 40, 0, 1).astype(np.float32))
    probability.CopyInformation(ct)
    volumes = {}
    for threshold in (0.5, 0.3):
        seg = labels_from_probability(probability, ct, proximal=False, snap=False, threshold=threshold)
        assert sorted(seg.sides) == ["left", "right"]
        # Patient left = larger LPS x = larger i here: label 1 on the i > 80 cylinder.
        assert (seg.labels[:, 50, 120] == anatomy.LABEL_VALUES["left"]).all()
        assert (seg.labels[:, 50, 40] == anatomy.LABEL_VALUES["right"]).all()
        volumes[threshold] = (seg.labels > 0).sum()
        expected = (np.clip(1 - distance / 40, 0, 1) > threshold).sum()
        assert volumes[threshold] == expected
    assert volumes[0.3] > volumes[0.5]
    with pytest.raises(InputError, match="no femur found"):
        labels_from_probability(probability, ct, threshold=1.0)


def test_a_femur_joined_to_the_pelvis_falls_back_to_a_higher_threshold():
    # Two femur cylinders (k 0..29, probability 0.9) under a "pelvis" slab (k 30..59, 400 HU) that touches both;
    # the network gives the slab 0.02: above the shipped threshold, below the first fallback. LPS z grows with k.
    shape = (60, 100, 160)
    k, j, i = np.indices(shape)
    hu = np.full(shape, -1000, np.int16)
    hu[:, 10:90, 5:155] = 0
    femur = (np.minimum(np.hypot(j - 50, i - 40), np.hypot(j - 50, i - 120)) * 1.5 <= 25) & (k < 30)
    pelvis = (k >= 30) & (j > 20) & (j < 80) & (i > 10) & (i < 150)
    hu[femur | pelvis] = 400
    ct = sitk.GetImageFromArray(hu)
    ct.SetSpacing((1.5, 1.5, 3.0))
    p = np.where(femur, 0.9, np.where(pelvis, 0.02, 0.0)).astype(np.float32)
    probability = sitk.GetImageFromArray(p)
    probability.CopyInformation(ct)
    seg = labels_from_probability(probability, ct, proximal=False, snap=False, threshold=0.01)
    assert sorted(seg.sides) == ["left", "right"] and not seg.labels[30:].any()
    assert ((seg.labels > 0) == femur).all()
    assert any("joined to the pelvis" in w for w in seg.warnings)
    # Without the slab's probability the shipped threshold stands and nothing is reported.
    sound = sitk.GetImageFromArray(np.where(femur, 0.9, 0.0).astype(np.float32))
    sound.CopyInformation(ct)
    seg = labels_from_probability(sound, ct, proximal=False, snap=False, threshold=0.01)
    assert ((seg.labels > 0) == femur).all() and not seg.warnings
    # A slab over the right femur only (i < 80: patient right, smaller LPS x): that side falls back, the
    # left one keeps the shipped threshold and with it its 0.02 rim.
    rim = (np.hypot(j - 50, i - 120) * 1.5 > 25) & (np.hypot(j - 50, i - 120) * 1.5 <= 30) & (k < 30)
    hu[rim] = 400
    ct = sitk.GetImageFromArray(hu)
    ct.SetSpacing((1.5, 1.5, 3.0))
    one = sitk.GetImageFromArray(np.where(femur, 0.9, np.where((pelvis & (i < 80)) | rim, 0.02, 0.0)).astype(np.float32))
    one.CopyInformation(ct)
    seg = labels_from_probability(one, ct, proximal=False, snap=False, threshold=0.01)
    assert ((seg.labels == 2) == (femur & (i < 80))).all() and ((seg.labels == 1) == ((femur | rim) & (i >= 80))).all()
    assert len(seg.warnings) == 1 and seg.warnings[0].startswith("the right femur at probability > 0.01")


@pytest.mark.parametrize("flip", [False, True])
def test_a_reference_label_holding_one_femur_keeps_its_side(flip):
    # A body across the whole width with one femur at low i: the patient's right (LPS x < 0) unless flipped.
    hu = np.full((10, 40, 80), -1000, np.int16)
    hu[:, 5:35, 2:78] = 0
    hu[:, 15:25, 10:20] = 400
    ct = sitk.GetImageFromArray(hu)
    ct.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, 1) if flip else (1, 0, 0, 0, 1, 0, 0, 0, 1))
    ct.SetOrigin((40.0, 0, 0) if flip else (-40.0, 0, 0))
    label = sitk.GetImageFromArray((hu == 400).astype(np.uint8) * 2)
    label.CopyInformation(ct)
    sides = reference_sides(label, 2, False, anatomy.midline(hu, ct))
    side, other = ("left", "right") if flip else ("right", "left")
    assert (sides[side] == (hu == 400)).all() and not sides[other].any()


def test_mirrored_inference_flips_the_mirrored_pass_back():
    """With a pointwise network (femur logit = a * HU + b, blind to position) the mirrored pass
    must give back exactly the plain probability on a left-right asymmetric CT; had its flip not
    been undone, the mean would be the CT's mirror image blended in."""
    from FemurSegmentLib.inference import femur_probability

    a = np.full((30, 80, 80), -1000, np.int16)
    a[:, 10:-10, 10:-10] = 40
    a[5:25, 30:50, 15:35] = 900  # bone on one side only
    ct = sitk.GetImageFromArray(a)
    ct.SetSpacing((2.0, 2.0, 3.0))
    net = torch.nn.Conv3d(1, 2, 1)
    with torch.no_grad():
        net.weight.zero_()
        net.weight[1, 0] = 3.0
        net.bias.copy_(torch.tensor([0.0, -1.0]))
    model = FemurModel(net, {})
    plain = sitk.GetArrayFromImage(femur_probability(model, ct, {}))
    mirrored = sitk.GetArrayFromImage(femur_probability(model, ct, {}, mirror=True))
    assert plain.std() > 0.05 and not np.allclose(plain, plain[:, :, ::-1], atol=0.1)
    assert np.allclose(mirrored, plain, atol=1e-5)


def pointwise_model(gain: float, bias: float) -> FemurModel:
    """A network blind to position: femur logit = gain * normalized HU + bias."""
    net = torch.nn.Conv3d(1, 2, 1)
    with torch.no_grad():
        net.weight.zero_()
        net.weight[1, 0] = gain
        net.bias.copy_(torch.tensor([0.0, bias]))
    return FemurModel(net, {"sha256": f"{gain}/{bias}"})


def test_ensemble_is_the_mean_of_its_models_run_alone():
    """Two networks with a 5x5x5 receptive field (window borders matter) and a mirrored pass: the
    ensemble's probability is the mean of the two models' own."""
    from FemurSegmentLib.inference import femur_probability

    ct = ct_like((60, 100, 200))

    def model(seed):
        torch.manual_seed(seed)
        net = torch.nn.Conv3d(1, 2, 5, padding=2)
        with torch.no_grad():
            net.weight.mul_(0.2)
            net.weight[1, 0, 2, 2, 2] += 3.0
            net.bias.copy_(torch.tensor([0.0, -1.0]))
        return FemurModel(net, {})

    first, second = model(1), model(2)
    for mirror in (False, True):
        p1, p2 = (sitk.GetArrayFromImage(femur_probability(m, ct, {}, mirror=mirror)) for m in (first, second))
        both = sitk.GetArrayFromImage(femur_probability([first, second], ct, {}, mirror=mirror))
        assert np.abs(p1 - p2).max() > 0.02 and np.allclose(both, (p1 + p2) / 2, atol=1e-6)


def test_precision_auto_follows_the_cpu_and_bfloat16_stays_close_to_float32(monkeypatch):
    """"auto" takes bfloat16 only where the CPU has it natively; a bfloat16 pass really runs in
    bfloat16 (it differs from float32) yet returns float32 probabilities within 0.02 of them."""
    from FemurSegmentLib import inference

    for native, expected in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(inference, "native_bf16", lambda native=native: native)
        assert inference.resolve_precision("auto") == expected
        assert inference.resolve_precision("float32") == "float32"
        assert inference.resolve_precision("bfloat16") == "bfloat16"
    with pytest.raises(ValueError, match="precision must be one of"):
        inference.resolve_precision("float16")
    ct = ct_like((40, 60, 80))
    torch.manual_seed(0)
    net = torch.nn.Conv3d(1, 2, 5, padding=2)
    with torch.no_grad():
        net.weight[1, 0, 2, 2, 2] += 3.0
    model = FemurModel(net, {})
    single, half = (inference.femur_probability(model, ct, {}, precision=p) for p in ("float32", "bfloat16"))
    assert half.GetPixelID() == sitk.sitkFloat32
    difference = np.abs(sitk.GetArrayFromImage(single) - sitk.GetArrayFromImage(half))
    assert 1e-4 < difference.max() < 0.02


def test_sliding_windows_span_the_bodys_cross_section_up_to_a_cap():
    from FemurSegmentLib.inference import MAX_WINDOW_PX, WINDOW_SLICES, _Windows, window_for

    assert window_for((137, 161, 267)) == (WINDOW_SLICES, 168, 272)  # rounded up to the V-Net's multiple of 8
    assert window_for((20, 900, 300)) == (WINDOW_SLICES, MAX_WINDOW_PX, 304)
    assert _Windows(None, (137, 161, 267), passes=2).total == 2 * 4  # 4 windows along k, one across
    assert _Windows(None, (137, 900, 267), passes=1).total == 4 * 3
