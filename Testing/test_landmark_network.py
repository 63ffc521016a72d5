"""Landmark network pieces: shapes, aggregation (in and out of the image), targets, losses,
the head population's label consistency, thin-plate spline, and safe weight loading."""

import numpy as np
import pytest
import torch

from FluoroLandmarksLib.dataset import labels_for, random_geometry, render_coarse
from FluoroLandmarksLib.drr import DRRRenderer, hu_to_mu
from FluoroLandmarksLib.inference import FramePreparation, inference_net, refine_local, to_network_frame
from FluoroLandmarksLib.landmarks import mirror_permutation
from FluoroLandmarksLib.metrics import landmark_report
from FluoroLandmarksLib.network import (OUTPUTS_PER_LANDMARK, PatchFCNN, aggregate, aggregate_passes, densified,
                                         fused, gaussian_blur, landmark_loss, mirrored, patch_targets)
from FluoroLandmarksLib.population import Deformation, HeadPopulation, ShapeVariation
from FluoroLandmarksLib.shape import ThinPlateSpline, warp_template


def test_network_output_shape_and_stride():
    net = PatchFCNN(7)
    out = net(torch.zeros(2, 1, 256, 256))
    assert net.stride == 16
    assert out.shape == (2, 7, OUTPUTS_PER_LANDMARK, 16, 16)


@pytest.mark.parametrize("atrous", [1, 2])
def test_a_densified_network_keeps_the_strided_outputs_and_adds_those_between(atrous):
    torch.manual_seed(0)
    net = PatchFCNN(5, widths=(8, 8, 8, 8, 8), dilations=(2,)).eval()
    for module in net.modules():  # non-trivial batch statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    dense = densified(net, atrous).eval()
    image = torch.randn(2, 1, 128, 96)
    with torch.no_grad():
        coarse, fine = net(image), dense(image)
    step = 2 ** atrous
    assert dense.stride == net.stride // step and fine.shape[-2:] == (8 * step, 6 * step)
    assert torch.allclose(fine[..., ::step, ::step], coarse, atol=1e-4)
    assert (fine[..., 1::step, 1::step] - coarse).abs().max() > 1e-3  # patches in between: computed, not copies


def test_the_fused_inference_copy_gives_the_networks_outputs_and_follows_changed_weights():
    torch.manual_seed(0)
    net = PatchFCNN(5, widths=(8, 8, 8, 8, 8), dilations=(2,), atrous=1)
    for m in net.modules():  # BatchNorm statistics away from the identity, so that folding them matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2), m.weight.data.uniform_(0.5, 2)
    net.eval()
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        copy = fused(net)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in copy.modules())
        assert torch.allclose(copy(x), net(x), atol=1e-4)
        assert inference_net(net) is inference_net(net)  # made once
        for p in net.parameters():
            p.mul_(1.5)
        assert torch.allclose(inference_net(net)(x), net(x), atol=1e-4)  # made again after the in-place change
        assert not torch.allclose(copy(x), net(x), atol=1e-2)


def test_gaussian_blur_keeps_flat_images_and_spreads_an_impulse_by_sigma():
    flat = torch.full((1, 1, 20, 30), 3.0)
    assert torch.allclose(gaussian_blur(flat, 1.5), flat)
    impulse = torch.zeros(1, 1, 41, 41)
    impulse[0, 0, 20, 20] = 1.0
    out = gaussian_blur(impulse, 2.0)[0, 0]
    x = torch.arange(41.0) - 20
    assert abs(float(out.sum()) - 1) < 1e-5
    assert abs(float((out.sum(0) * x ** 2).sum()) - 4.0) < 0.05  # variance sigma^2 along each axis


def test_a_non_square_frame_is_padded_with_edges_or_a_collimator_value():
    image = np.ones((64, 128), np.float32)
    image[:, 0] = 3.0  # left edge
    square, scale, offset = to_network_frame(image, fill=7.0)
    assert scale == 0.5 and square.shape == (256, 256)
    assert np.allclose(square[:60], 7.0) and np.allclose(square[-60:], 7.0) and np.allclose(square[100:156, 10:], 1.0)
    edge, _, _ = to_network_frame(image)
    assert np.allclose(edge[:60, 10:], 1.0) and np.allclose(edge[:60, 0], 3.0)
    assert FramePreparation("brightest").fill(image) == 3.0 and FramePreparation("darkest").fill(image) == 1.0
    assert FramePreparation().fill(image) is None
    for bad in (dict(padding="white"), dict(blur_px=-1)):
        with pytest.raises(ValueError, match="padding must be one of|blur must be"):
            FramePreparation(**bad)
    # the network pixel over input pixel (row 10, column 20) maps back to it
    assert np.allclose(np.array([20 + 0.5, 10 + 32 + 0.5]) / scale - 0.5, (np.array([20, 10]) + offset) / scale)


def test_a_finer_local_frame_maps_to_the_same_input_pixels():
    image = np.zeros((300, 200), np.float32)
    image[120:124, 80:84] = 1.0  # a bright square centred on input pixel (u, v) = (81.5, 121.5)
    for size in (256, 768):
        frame, scale, offset = to_network_frame(image, size=size)
        assert frame.shape == (size, size) and np.isclose(scale, 300 / size)
        v, u = np.unravel_index(np.argmax(gaussian_blur(torch.from_numpy(frame)[None, None], 2.0)[0, 0]), frame.shape)
        assert np.allclose(np.array([u, v]) * scale - offset, [81.5, 121.5], atol=1.5 * scale)


def test_refine_local_replaces_only_chosen_landmarks_inside_the_frame():
    from FluoroLandmarksLib.training import crops

    torch.manual_seed(0)
    net = PatchFCNN(3, widths=(8, 8, 8, 8), strides=(1, 2, 2, 2), displacement_scale=16.0).eval()
    frames = torch.randn(2, 1, 96, 160)  # a non-square frame
    uv = torch.tensor([[[40.0, 30.0], [150.0, 90.0], [100.0, 50.0]],
                       [[170.0, 30.0], [20.0, 80.0], [60.0, 50.0]]])  # (1, 0): u beyond the 160 columns
    chosen = torch.tensor([True, True, False])
    with torch.no_grad():
        refined = refine_local(net, frames, uv, chosen)
        changed = (refined != uv).any(-1)
        assert changed.tolist() == [[True, True, False], [False, True, False]]
        patch, origin = crops(frames[1:], uv[1:, 1:2])  # landmark 1 of frame 1, by hand: its crop's own estimate
        expected = aggregate(net(patch)[:, 1:2], net.stride)["uv"][0, 0] + origin[0]
    assert torch.allclose(refined[1, 1], expected, atol=1e-4)


def test_bf16_autocast_keeps_the_head_and_weights_in_float32():
    torch.manual_seed(0)
    net = PatchFCNN(3, widths=(8, 8, 8, 8, 8)).eval()
    image = torch.randn(1, 1, 64, 64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        features, out = net.features(image), net(image)
    assert features.dtype == torch.bfloat16 and out.dtype == torch.float32
    with torch.no_grad():
        head = net.head(features.float()).view(out.shape)  # float32 head on the same features
    assert torch.allclose(out[:, :, 2:], head[:, :, 2:], rtol=0, atol=1e-6)  # a bf16 head would round at ~1e-3
    assert torch.allclose(out[:, :, :2], head[:, :, :2] * net.displacement_scale, rtol=0, atol=1e-4)


def tiny_training_data():
    """Four random 64-px images with two landmarks each, their depths and geometry."""
    rng = np.random.default_rng(0)
    return dict(images=rng.random((4, 64, 64), dtype=np.float32), uv=rng.uniform(0, 64, (4, 2, 2)).astype(np.float32),
                in_image=np.ones((4, 2), bool), depth=rng.uniform(900, 1100, (4, 2)),
                sid_sod=np.tile([1200.0, 1000.0], (4, 1)))


def test_bf16_training_updates_float32_weights_and_records_its_precision():
    from FluoroLandmarksLib.training import train_global

    data = tiny_training_data()
    net = PatchFCNN(2, widths=(8, 8, 8, 8, 8))
    before = [p.detach().clone() for p in net.parameters()]
    net, info = train_global(data, 2, steps=2, batch=2, init=net, bf16=True, log=lambda *_: None)
    assert info["precision"] == "bfloat16 autocast"
    assert all(p.dtype == torch.float32 for p in net.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_a_mirrored_training_sample_keeps_each_label_on_its_structure():
    from FluoroLandmarksLib.training import mirrored_samples, train_global

    uv = torch.tensor([[[10.0, 3.0], [50.0, 40.0]]]).repeat(2, 1, 1)  # a right and a left landmark, 64-px images
    images = torch.zeros(2, 64, 64)
    images[:, 3, 10], images[:, 40, 50] = 1.0, 2.0  # the right landmark's structure reads 1, the left one's 2
    labels = dict(uv=uv, depth=torch.tensor([[0.1, 0.2]]).repeat(2, 1), in_image=torch.tensor([[True, False]]).repeat(2, 1))
    out, new = mirrored_samples(images, labels, [1, 0], torch.tensor([True, False]))
    assert torch.equal(out[1], images[1]) and all(torch.equal(new[k][1], labels[k][1]) for k in labels)
    (u0, v0), (u1, v1) = new["uv"][0].long().tolist()
    assert (u0, v0) == (63 - 50, 40) and out[0, v0, u0] == 2.0  # the mirrored left structure is a right one now
    assert (u1, v1) == (63 - 10, 3) and out[0, v1, u1] == 1.0
    assert new["depth"][0].tolist() == pytest.approx([0.2, 0.1]) and new["in_image"][0].tolist() == [False, True]
    assert torch.equal(images[0, 3, 10], torch.tensor(1.0)) and torch.equal(uv[0, 0], torch.tensor([10.0, 3.0]))  # inputs kept
    _, info = train_global(tiny_training_data(), 2, steps=2, batch=2, init=PatchFCNN(2, widths=(8, 8, 8, 8, 8)),
                           mirror=[1, 0], log=lambda *_: None)
    assert info["mirror_augmentation"]


def test_an_update_with_non_finite_gradients_is_skipped_and_persistent_ones_fail():
    from FluoroLandmarksLib.training import _check_skipped, _update

    layer = torch.nn.Linear(3, 1)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=0.1)
    before = [p.detach().clone() for p in layer.parameters()]
    x = torch.tensor([[1.0, float("nan"), 0.0]])
    assert _update(optimizer, layer(x).sum(), "t", 1, 10, {}, 0.0, print) is False
    assert all(torch.equal(a, b) for a, b in zip(before, layer.parameters()))
    assert _update(optimizer, layer(torch.ones(1, 3)).sum(), "t", 1, 10, {}, 0.0, print) is True
    assert not all(torch.equal(a, b) for a, b in zip(before, layer.parameters()))
    _check_skipped(1, 3, "global")  # one bad step is tolerated, also in a short run
    _check_skipped(2, 20, "global")
    with pytest.raises(RuntimeError, match="non-finite gradients in 3 of 20 steps"):
        _check_skipped(3, 20, "global")


@pytest.mark.parametrize("depth_weight", [10.0, 0.0])
def test_the_depth_loss_can_be_left_out(depth_weight):
    from FluoroLandmarksLib.training import train_global

    lines = []
    _, info = train_global(tiny_training_data(), 2, steps=1, batch=2, architecture=dict(widths=(8, 8, 8, 8, 8)),
                           depth_weight=depth_weight, log=lines.append)
    assert info["depth_weight"] == depth_weight
    assert ("depth" in lines[0]) == (depth_weight > 0)


def constructed_output(votes_uv, logits, h=4, w=4, stride=16):
    """Output (1, 1, 4, h, w) whose patches vote for ``votes_uv`` (h*w, 2) with ``logits``."""
    from FluoroLandmarksLib.network import patch_centres

    centres = patch_centres(h, w, stride)
    out = torch.zeros(1, 1, OUTPUTS_PER_LANDMARK, h * w)
    out[0, 0, :2] = (torch.as_tensor(votes_uv, dtype=torch.float32) - centres).T
    out[0, 0, 2] = torch.as_tensor(logits, dtype=torch.float32)
    return out.reshape(1, 1, OUTPUTS_PER_LANDMARK, h, w)


def test_aggregation_is_presence_weighted_average():
    votes = torch.zeros(16, 2)
    votes[5] = torch.tensor([20.0, 30.0])
    votes[6] = torch.tensor([40.0, 50.0])
    logits = torch.full((16,), -50.0)
    logits[5] = logits[6] = 0.0  # equal presence: the average of the two votes
    est = aggregate(constructed_output(votes, logits), 16)
    assert torch.allclose(est["uv"][0, 0], torch.tensor([30.0, 40.0]), atol=1e-4)
    logits[6] = np.log(3.0)  # three times the odds: three times the weight
    est = aggregate(constructed_output(votes, logits), 16)
    assert torch.allclose(est["uv"][0, 0], torch.tensor([35.0, 45.0]), atol=1e-4)
    assert float(est["presence"][0, 0]) == 1.0  # 0.5 + 0.75, capped
    logits[5] = -50.0
    assert abs(float(aggregate(constructed_output(votes, logits), 16)["presence"][0, 0]) - 0.75) < 1e-5


def test_out_of_image_landmark_without_present_patch_is_still_estimated():
    target = torch.tensor([-40.0, 100.0])  # left of a 64x64 image
    votes = target + torch.randn(16, 2) * 0.5
    logits = torch.full((16,), -8.0)  # no patch believes it contains the landmark
    est = aggregate(constructed_output(votes, logits), 16)
    assert torch.allclose(est["uv"][0, 0], target, atol=0.5)
    assert float(est["presence"][0, 0]) < 0.01


def test_mirror_partners_swap_left_and_right_and_need_both_sides():
    assert mirror_permutation(["eye_lens_right", "nasion", "eye_lens_left"]) == [2, 1, 0]
    with pytest.raises(ValueError, match="eye_lens_left"):
        mirror_permutation(["eye_lens_right", "nasion"])


def test_a_mirrored_pass_is_read_back_in_the_image_frame_in_and_out_of_the_image():
    # 3 landmarks (right, midline, left) in a 64x64 image; the right one is outside it
    truth = torch.tensor([[-40.0, 20.0], [30.0, 50.0], [10.0, 5.0]])
    partners = [2, 1, 0]
    in_mirror = torch.stack([63.0 - truth[partners, 0], truth[partners, 1]], -1)  # where each label lies mirrored
    logits = torch.randn(3, 16) * 3
    out = torch.cat([constructed_output(in_mirror[n].expand(16, 2), logits[n]) for n in range(3)], 1)
    back = mirrored(out, partners)
    assert torch.allclose(aggregate(back, 16)["uv"][0], truth, atol=1e-4)
    assert torch.allclose(aggregate(back, 16)["presence"][0], aggregate(out, 16)["presence"][0, partners])
    assert torch.equal(mirrored(back, partners), out)  # mirroring twice is the identity


def test_passes_vote_together_by_their_presence_odds():
    one = constructed_output(torch.tensor([20.0, 30.0]).expand(16, 2), torch.zeros(16))
    three = constructed_output(torch.tensor([40.0, 50.0]).expand(16, 2), torch.full((16,), float(np.log(3.0))))
    est = aggregate_passes([one, three], 16)
    assert torch.allclose(est["uv"][0, 0], torch.tensor([35.0, 45.0]), atol=1e-4)
    assert torch.allclose(est["presence"], (aggregate(one, 16)["presence"] + aggregate(three, 16)["presence"]) / 2)
    same = aggregate_passes([three, three], 16)
    assert all(torch.allclose(same[k], aggregate(three, 16)[k]) for k in ("uv", "depth_offset", "presence"))


def test_patch_targets_mark_the_containing_patch_only():
    uv = torch.tensor([[[37.0, 5.0], [-3.0, 10.0]]])
    displacement, presence = patch_targets(uv, 4, 4, 16)
    assert presence[0, 0].sum() == 1 and presence[0, 0, 0 * 4 + 2] == 1  # column 2, row 0
    assert presence[0, 1].sum() == 0  # outside the image
    assert torch.allclose(displacement[0, 0, 2], torch.tensor([37.0 - 39.5, 5.0 - 7.5]))


def test_loss_is_lower_for_the_right_answer():
    uv = torch.tensor([[[37.0, 5.0]]])
    votes = torch.tensor([37.0, 5.0]).expand(16, 2)
    logits = torch.full((16,), -6.0)
    logits[2] = 6.0
    good = landmark_loss(constructed_output(votes, logits), 16, uv)[0]
    bad = landmark_loss(constructed_output(votes + 20, torch.roll(logits, 5)), 16, uv)[0]
    assert good < bad


def bead_volume():
    """Water head-sized ellipsoid (HU 0) in air with a 2.5 mm very dense bead."""
    shape = (40, 64, 64)
    ijk_to_ras = np.diag([2.0, 2.0, 3.0, 1.0])
    ijk_to_ras[:3, 3] = [-63.0, -63.0, -58.5]
    k, j, i = np.indices(shape)
    ras = np.stack([i, j, k], -1) @ ijk_to_ras[:3, :3].T + ijk_to_ras[:3, 3]
    hu = np.where((ras ** 2 / np.array([55.0, 60.0, 50.0]) ** 2).sum(-1) < 1, 0.0, -1000.0)
    bead = np.array([20.0, -25.0, 10.0])
    hu[np.linalg.norm(ras - bead, axis=-1) <= 2.5] = 30000.0  # dominates the ellipsoid chords
    return hu.astype(np.float32), ijk_to_ras, bead


def test_deformation_inverse():
    rng = np.random.default_rng(4)
    box = np.array([[-100.0, -100, -100], [100, 100, 100]])
    d = Deformation.random(rng, np.zeros(3), box)
    points = rng.uniform(-80, 80, size=(50, 3))
    assert np.abs(d.to_template(d.to_variant(points)) - points).max() < 1e-3
    wide = ShapeVariation((0.85, 1.15), 15.0)  # the largest field the option allows
    d = Deformation.random(rng, np.zeros(3), box, wide.scale, elastic_mm=wide.elastic_mm)
    assert np.abs(d.to_template(d.to_variant(points)) - points).max() < 0.05


def test_dataset_label_lies_on_the_rendered_bead_of_a_deformed_head():
    hu, ijk_to_ras, bead = bead_volume()
    population = HeadPopulation(hu, ijk_to_ras, bead[None], factor=1)
    rng = np.random.default_rng(7)
    checked = 0
    for _ in range(4):
        variant = population.sample(rng, vessel_probability=0.0)
        renderer = DRRRenderer(hu_to_mu(np.maximum(variant.hu, -1000)), variant.ijk_to_ras)
        g = random_geometry(rng, population.centre, size=128)
        g = type(g)(g.isocenter_ras, g.primary_deg, g.secondary_deg, g.sid_mm, g.sod_mm, (128, 128), (2.0, 2.0))
        line = render_coarse(renderer, [g], 1)[0]
        label = labels_for(g, variant.landmarks_ras)
        if not label["in_image"][0]:
            continue
        u, v = label["uv"][0]
        window = line[int(v) - 6:int(v) + 7, int(u) - 6:int(u) + 7]
        peak = np.unravel_index(np.argmax(window), window.shape)
        assert np.hypot(peak[1] + int(u) - 6 - u, peak[0] + int(v) - 6 - v) <= 1.5
        checked += 1
    assert checked >= 2


def test_thin_plate_spline_interpolates_and_reproduces_affine():
    rng = np.random.default_rng(1)
    source = rng.normal(size=(12, 3)) * 50
    target = source + rng.normal(size=(12, 3)) * 3
    tps = ThinPlateSpline(source, target)
    assert np.allclose(tps(source), target, atol=1e-6)
    a = np.array([[1.1, 0.1, 0], [0, 0.9, 0.05], [0, 0, 1.0]])
    affine = ThinPlateSpline(source, source @ a.T + [5, -3, 2])
    points = rng.normal(size=(30, 3)) * 40
    assert np.allclose(affine(points), points @ a.T + [5, -3, 2], atol=1e-6)
    # A low-confidence landmark pulls less.
    moved = target.copy()
    moved[0] += 30
    firm = warp_template(source[:1], source, moved)
    loose = warp_template(source[:1], source, moved, confidence=np.r_[0.1, np.ones(11)])
    assert np.linalg.norm(firm - moved[0]) < np.linalg.norm(loose - moved[0])
    with pytest.raises(ValueError):
        ThinPlateSpline(source[:3], target[:3])


def test_crops_are_image_windows_zero_outside():
    from FluoroLandmarksLib.training import crops

    x = torch.arange(2 * 10 * 12, dtype=torch.float32).reshape(2, 1, 10, 12)
    out, origin = crops(x, torch.tensor([[[5.0, 5.0]], [[11.2, 8.6]]]), 4)
    assert origin.tolist() == [[3.0, 3.0], [9.0, 7.0]]
    assert torch.equal(out[0, 0], x[0, 0, 3:7, 3:7])
    assert torch.equal(out[1, 0, :3, :3], x[1, 0, 7:10, 9:12]) and out[1, 0, 3:].abs().sum() == 0


def test_geometry_from_dicom_tags_overrides_the_options():
    from FluoroLandmarksLib.frames import geometry_from_tags

    defaults = dict(sid_mm=1000.0, sod_mm=750.0, pixel_spacing_mm=1.2, primary_deg=0.0, secondary_deg=0.0,
                    isocenter_ras=(0.0, 0.0, 0.0))
    tags = {"0018|1110": "1195.5", "0018|1111": "810", "0018|1510": "-30.5", "0018|1511": "12",
            "0018|1164": "0.308\\0.308"}
    g, source = geometry_from_tags(tags, (480, 640), defaults)
    assert (g.sid_mm, g.sod_mm, g.primary_deg, g.secondary_deg) == (1195.5, 810.0, -30.5, 12.0)
    assert g.pixel_spacing_mm == (0.308, 0.308) and g.detector_size_px == (640, 480)
    assert set(source.values()) == {"dicom", "option"} and source["isocenter_ras"] == "option"
    g, source = geometry_from_tags({}, (480, 640), defaults)
    assert g.sid_mm == 1000.0 and set(source.values()) == {"option"}


def test_collimated_field_from_dicom_tags():
    from FluoroLandmarksLib.frames import geometry_from_tags

    defaults = dict(sid_mm=1000.0, sod_mm=750.0, pixel_spacing_mm=1.2, primary_deg=0.0, secondary_deg=0.0,
                    isocenter_ras=(0.0, 0.0, 0.0))
    rect = {"0018|1700": "RECTANGULAR", "0018|1702": "101", "0018|1704": "501", "0018|1706": "51", "0018|1708": "351"}
    g, source = geometry_from_tags(rect, (480, 640), defaults)
    assert g.collimation.shape == "rect" and source["collimation"] == "dicom"
    assert g.in_field_px(np.array([[100.0, 50.0], [500.0, 350.0], [300.0, 200.0]])).all()
    assert not g.in_field_px(np.array([[99.0, 200.0], [300.0, 351.0]])).any()
    circle = {"0018|1700": "CIRCULAR", "0018|1710": "241\\321", "0018|1712": "100"}  # centre row 241, column 321
    g, _ = geometry_from_tags(circle, (480, 640), defaults)
    assert g.collimation.center_px == (320.0, 240.0) and g.collimation.radius_px == 100.0
    assert g.in_field_px(np.array([[320.0, 145.0]])).all() and not g.in_field_px(np.array([[320.0, 130.0]])).any()
    g, source = geometry_from_tags({"0018|1700": "RECTANGULAR"}, (480, 640), defaults)  # edges missing
    assert g.collimation.shape == "none" and "collimation" not in source


def test_landmark_report_splits_each_landmark_in_and_out_of_the_image():
    err2d = np.array([[1.0, 20.0], [3.0, 2.0], [30.0, 4.0]])  # (B=3 images, L=2 landmarks) mm
    inside = np.array([[True, False], [True, True], [False, True]])
    r = landmark_report(["a", "b"], err2d, 2 * err2d, inside)["per_landmark"]
    assert r["a"]["2d_in_image"]["mre_mm"] == 2.0 and r["a"]["2d_out_of_image"]["mre_mm"] == 30.0
    assert r["b"]["2d_in_image"]["within_10mm"] == 1.0 and r["b"]["2d_out_of_image"]["within_10mm"] == 0.0
    assert r["b"]["3d_out_of_image"]["mre_mm"] == 40.0 and r["a"]["in_image_share"] == 2 / 3
